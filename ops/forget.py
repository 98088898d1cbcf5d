"""`vitrine forget`: erase a merchant's images, or one image, and the files vitrine kept.

What goes, in one database transaction: the images rows (predictions, embeddings and
every other image-keyed row by ON DELETE CASCADE, checked afterwards), then the upload
files vitrine itself wrote for them, then an `erasures` audit row, then the commit. A
failure before the files leaves everything as it was; one after some files went (or a
failed commit) leaves rows whose files are gone, and running forget again finishes.
The rows stay locked until the commit, so no worker stores anything for them meanwhile.
A photo the API receives again for another merchant while its file is being removed
can lose its file (that upload then fails, and sending it again stores it again).

Which files are vitrine's own is decided from the URI alone (`owned_upload`): only the
canonical `file:` URI of a regular file under the upload directory, laid out as the API
stores photos (`api/<merchant key>/<sha[:2]>/<sha256>`; `api/<sha[:2]>/<sha256>` before
photos were kept per merchant) or as the CLI stages them (`staged/<32 hex>/<name>`; 16
hex before staged folders were keyed). A merchant's own files anywhere else, symlinks and URLs are
never touched. A staged file is a hard link or a copy, so removing it leaves the
merchant's original. A file another remaining row still names (the same photo uploaded
by another merchant) stays.

`--dry-run` runs the same deletion and checks, counts the files, and rolls back.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from vitrine.db import repository
from vitrine.ops.context import Context
from vitrine.ops.errors import OpsError, UserError
from vitrine.ops.heat_maps import drop_heat_maps
from vitrine.ops.thumbnails import drop_thumbnails

_API_NAME = re.compile(r"[0-9a-f]{64}")
_STAGED_KEY = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}")
_MERCHANT_KEY = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class ForgetReport:
    scope: str  # "merchant" or "image"
    subject: str
    dry_run: bool
    images_deleted: int
    files_deleted: int
    files_shared: int  # vitrine's files another merchant's rows still name: kept
    uris_not_ours: int  # URLs and files vitrine did not write: never touched
    erasure_id: int | None  # the audit row; None on a dry run
    db_user: str | None
    reviews_deleted: int = 0  # shoppers' review photos of the merchant's listings


class IncompleteErasure(OpsError):
    """Rows of the erased images would survive (a table without ON DELETE CASCADE)."""


def owned_upload(uri: str, uploads: Path) -> Path | None:
    """The file behind `uri` if vitrine's API or CLI wrote it under `uploads`, else None.

    The URI must be exactly what vitrine writes (`Path.resolve().as_uri()`), so a path
    with a symlink, `..` or another spelling is not vitrine's, whatever it points at.
    """
    if not uri.startswith("file:"):
        return None
    path = Path(unquote(urlsplit(uri).path))
    if not path.is_absolute() or path.resolve().as_uri() != uri:
        return None
    root = uploads.resolve()
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return None
    if len(parts) not in (3, 4) or path.is_symlink():
        return None
    kind, *folders, name = parts
    if kind == "api" and len(folders) == 2 and not _MERCHANT_KEY.fullmatch(folders[0]):
        return None
    api = kind == "api" and bool(_API_NAME.fullmatch(name)) and folders[-1] == name[:2]
    staged = kind == "staged" and len(folders) == 1 and bool(_STAGED_KEY.fullmatch(folders[0]))
    return path if api or staged else None


def forget(
    ctx: Context,
    *,
    merchant_id: str | None = None,
    image_id: int | None = None,
    dry_run: bool = False,
) -> ForgetReport:
    """Erase by merchant or by image (exactly one); see the module docstring."""
    scope, subject = _scope(merchant_id, image_id)
    uploads = ctx.settings.uploads
    with ctx.engine().connect() as conn:
        deleted = repository.delete_images(conn, scope=scope, subject=subject)
        reviews = (
            repository.delete_reviews(conn, merchant_id=subject) if scope == "merchant" else []
        )
        if not deleted and not reviews:
            raise UserError(_nothing(scope, subject))
        left = repository.image_rows_left(conn, image_ids=[i for i, _ in deleted])
        if left:
            tables = ", ".join(f"{name} ({n} rows)" for name, n in left.items())
            raise IncompleteErasure(
                f"nothing was deleted: {tables} would keep rows of the erased images "
                "(their image_id lacks ON DELETE CASCADE); fix the schema first"
            )
        uris = sorted({uri for _, uri in deleted} | {uri for _, uri in reviews})
        owned = {uri: path for uri in uris if (path := owned_upload(uri, uploads))}
        shared = repository.referenced_uris(conn, uris=list(owned))
        doomed = files_to_remove(owned, shared)
        files = len(doomed) if dry_run else remove_files(doomed)
        if not dry_run:  # the review desk's cached thumbnails go too (not counted)
            drop_thumbnails(ctx, [i for i, _ in deleted])
            drop_heat_maps(ctx, [i for i, _ in deleted])  # and its heat maps
            drop_thumbnails(ctx, [i for i, _ in reviews], kind="reviews")
        report = ForgetReport(
            scope=scope,
            subject=subject,
            dry_run=dry_run,
            images_deleted=len(deleted),
            files_deleted=files,
            files_shared=len(shared),
            uris_not_ours=len(uris) - len(owned),
            erasure_id=None,
            db_user=None,
            reviews_deleted=len(reviews),
        )
        if dry_run:
            conn.rollback()
            return report
        audit = repository.record_erasure(
            conn,
            scope=scope,
            subject=subject,
            os_user=_os_user(),
            images_deleted=len(deleted),
            files_deleted=files,
        )
        conn.commit()
    return replace(report, erasure_id=audit.id, db_user=audit.db_user)


def files_to_remove(owned: dict[str, Path], still_named: set[str]) -> list[Path]:
    """Of vitrine's own files (uri -> path), those no remaining row names and that exist."""
    return [path for uri, path in owned.items() if uri not in still_named and path.is_file()]


def remove_files(paths: list[Path]) -> int:
    """Unlink each file; the number that were there. A staged file's folder, named for
    its source path alone, goes with it when empty; the API's shared fan-out folders stay."""
    removed = 0
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        if path.parent.parent.name == "staged":
            try:
                path.parent.rmdir()
            except OSError:  # not empty: other files staged from the same source path
                pass
    return removed


def _scope(merchant_id: str | None, image_id: int | None) -> tuple[str, str]:
    if (merchant_id is None) == (image_id is None):
        raise UserError("name exactly one of --merchant M or --image ID")
    if merchant_id is not None:
        if not merchant_id.strip():
            raise UserError("--merchant must not be empty")
        return "merchant", merchant_id
    if image_id is None or image_id < 1:
        raise UserError(f"--image must be a positive image id, got {image_id}")
    return "image", str(image_id)


def _nothing(scope: str, subject: str) -> str:
    if scope == "image":
        return f"no image {subject} (nothing was deleted; `vitrine status` lists images)"
    return f"merchant {subject!r} has no images (nothing was deleted)"


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return None

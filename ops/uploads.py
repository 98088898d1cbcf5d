"""Turning what a user names (files, folders, URLs, a manifest) into upload events.

Files named directly are taken as they are (a bad one becomes a `failed` row with its
reason); folders contribute their image files, recursively, in a stable order, or the
rows of their `manifest.csv` when they have one; `http(s)://` URLs pass through to the
workers, which fetch them. Workers read local files only under their file roots, so the
files a user names are staged into the upload directory first (`stage_local_files`).

What vitrine writes under the upload directory is for its own processes only: folders
0750, files 0640 (`private_dir`, `write_private`). A staged hard link shares its inode,
and so its mode, with the user's original; the 0750 folders above it keep others out.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import Engine

from vitrine.db import repository
from vitrine.ops.errors import UserError
from vitrine.pipeline.inference.decode import IMAGE_EXTENSIONS
from vitrine.pipeline.types import Upload
from vitrine.sources.policy import SourcePolicy

MANIFEST_NAME = "manifest.csv"
_URL_SCHEMES = ("http", "https")
#: A host name (letters, digits, hyphens, dots; IDNs as punycode) or an IPv4/IPv6 address.
_HOST = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?|[0-9A-Fa-f:.]+"
)
#: Folder and file modes of what vitrine stores under the upload directory.
DIR_MODE, FILE_MODE = 0o750, 0o640
#: The secret that names staged folders, so no one can guess a staged file's path from
#: the path of its source (kept in the upload directory, mode 0600).
STAGING_KEY = ".staging-key"


def file_uri(path: Path) -> str:
    return path.resolve().as_uri()


def _as_path(source: str) -> Path:
    return Path(unquote(urlsplit(source).path)) if source.startswith("file:") else Path(source)


def image_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


#: How `submit` and `ingest` decide an upload's merchant, as their --help says it.
MERCHANT_RULE = (
    "--merchant, when given, is the merchant of every upload (a manifest's merchant_id "
    "column is then not read); without it each manifest row names its own merchant_id, "
    "and an upload that names none is an error."
)


def collect_uploads(
    sources: Sequence[str],
    *,
    merchant: str | None,
    sku: str | None = None,
    declared_label: str | None = None,
) -> list[Upload]:
    """Upload events for `sources`, in order (`finish_uploads` says whose they are)."""
    uploads: list[Upload] = []
    for source in sources:
        if has_scheme(source):
            uploads.append(Upload(uri=checked_url(source), merchant_id=""))
            continue
        path = _as_path(source)
        if path.is_dir():
            manifest = path / MANIFEST_NAME
            if manifest.is_file():
                uploads.extend(read_manifest(manifest))
            else:
                uploads.extend(Upload(file_uri(f), "") for f in image_files(path))
        elif path.is_file():
            uploads.append(Upload(uri=file_uri(path), merchant_id=""))
        else:
            raise UserError(f"no such file or directory: {source} (nothing was submitted)")
    if not uploads:
        raise UserError("no image files found in the given paths (nothing was submitted)")
    return finish_uploads(uploads, merchant=merchant, sku=sku, declared_label=declared_label)


def finish_uploads(
    uploads: Sequence[Upload],
    *,
    merchant: str | None,
    sku: str | None = None,
    declared_label: str | None = None,
) -> list[Upload]:
    """The one rule of `submit` and `ingest`: MERCHANT_RULE; `sku` names the one upload
    there may then be; `declared_label` is the category of every upload its manifest row
    does not declare. Each upload gets its event (`cli_event_id`)."""
    if merchant is not None and not merchant.strip():
        raise UserError("--merchant must not be empty")
    finished = []
    for upload in uploads:
        owner = merchant or upload.merchant_id
        if not owner:
            raise UserError(
                f"no merchant for {upload.uri}: give --merchant, or a merchant_id column "
                "in its manifest.csv (nothing was submitted)"
            )
        finished.append(replace(upload, merchant_id=owner))
    if sku is not None:
        if len(finished) > 1:
            raise UserError("--sku applies to one image; got several (use a manifest.csv)")
        finished = [replace(finished[0], sku=sku)]
    if declared_label is not None:
        finished = [
            u if u.declared_label else replace(u, declared_label=declared_label) for u in finished
        ]
    return [u if u.event_id else replace(u, event_id=cli_event_id(u)) for u in finished]


def cli_event_id(upload: Upload) -> str:
    """The event a CLI upload is: its merchant, SKU and source. Running the same command
    again is the same events (each already received, nothing twice); another SKU or
    merchant for the same file is another listing image (migration 0013)."""
    key = "\0".join((upload.merchant_id, upload.sku or "", upload.uri))
    return "cli:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def has_scheme(source: str) -> bool:
    """Whether `source` is written as a URL (`ftp://x`, `https://y`), not a path."""
    return "://" in source and bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source))


def checked_url(url: str) -> str:
    """`url` if the workers can fetch it (http or https, a host that is a host name or an
    address, a port that is a number); else UserError, before anything is queued."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UserError(f"{url}: not a valid URL ({exc}; nothing was submitted)") from None
    scheme = parts.scheme.lower()
    if scheme not in _URL_SCHEMES:
        raise UserError(
            f"{url}: unsupported scheme {scheme!r}: give http(s):// URLs, files or folders "
            "(nothing was submitted)"
        )
    host = parts.hostname or ""
    if not host or not _HOST.fullmatch(host) or (port is not None and not 0 < port < 65536):
        raise UserError(f"{url}: not a valid URL: bad host or port (nothing was submitted)")
    return url


def read_manifest(manifest: Path, *, base: Path | None = None) -> list[Upload]:
    """Rows of a CSV with a `file` (relative to `base`, default the CSV's folder) or `uri`
    column, and optional `sku`, `merchant_id` (empty: none, see `finish_uploads`) and
    `declared_label` (the merchant's category, as text) columns."""
    base = base or manifest.parent
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or ())
            if not columns & {"file", "uri"}:
                raise UserError(f"{manifest}: needs a header with a `file` or `uri` column")
            uploads = []
            for line, row in enumerate(reader, start=2):
                uploads.append(
                    Upload(
                        uri=_row_uri(row, base, f"{manifest}:{line}"),
                        merchant_id=(row.get("merchant_id") or "").strip(),
                        sku=(row.get("sku") or "").strip() or None,
                        declared_label=(row.get("declared_label") or "").strip() or None,
                    )
                )
    except OSError as exc:
        raise UserError(f"cannot read manifest {manifest}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{manifest} is not a UTF-8 CSV file ({exc})") from None
    if not uploads:
        raise UserError(f"{manifest} lists no images (nothing was submitted)")
    return uploads


def _row_uri(row: dict[str, str], base: Path, where: str) -> str:
    uri = (row.get("uri") or "").strip()
    if uri:
        if uri.startswith("file:"):
            return uri
        if has_scheme(uri):
            try:
                return checked_url(uri)
            except UserError as exc:
                raise UserError(f"{where}: {exc}") from None
        if Path(uri).is_absolute():
            return file_uri(Path(uri))
        raise UserError(f"{where}: uri {uri!r} is neither http(s)://, file:// nor absolute")
    name = (row.get("file") or "").strip()
    if not name:
        raise UserError(f"{where}: the row names no file or uri")
    return file_uri(base / name)


def register_uploads(
    engine: Engine, uploads: Sequence[Upload], chunk: int = 1000
) -> list[repository.Recorded]:
    """Record upload events as rows (`repository.record_uploads`: the same event again
    finds its row); one `Recorded` per upload, in order, a transaction per chunk."""
    recorded: list[repository.Recorded] = []
    for start in range(0, len(uploads), chunk):
        with engine.begin() as conn:
            recorded.extend(repository.record_uploads(conn, uploads=uploads[start : start + chunk]))
    return recorded


def private_dir(base: Path, folder: Path) -> Path:
    """`folder` (under `base`, the upload directory) and every folder between them, made or
    tightened to DIR_MODE, so nothing vitrine stores is reachable by other accounts."""
    base.mkdir(parents=True, exist_ok=True)  # the data directory above it may be new
    chain = [base, *reversed(folder.relative_to(base).parents), folder]
    for directory in dict.fromkeys(base / part for part in chain):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
        if directory.stat().st_mode & 0o7777 != DIR_MODE:
            directory.chmod(DIR_MODE)
    return folder


def write_private(target: Path, data: bytes) -> None:
    """Write `data` to `target` (its folder made already) with FILE_MODE from the first
    byte, aside and renamed, so readers never see half a file."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(partial, FILE_MODE)  # whatever the umask took away
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def staging_key(uploads: Path) -> bytes:
    """The upload directory's staging secret, made on first use (0600)."""
    path = uploads / STAGING_KEY
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        pass
    private_dir(uploads, uploads)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # another process made it first: theirs wins
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as out:
        out.write(key.hex() + "\n")
    return key


def stage_local_files(
    uploads: Sequence[Upload], policy: SourcePolicy, upload_dir: Path
) -> list[Upload]:
    """Local files outside the workers' file roots, hard-linked (copied across file
    systems) into `upload_dir/staged/`, which is under the default root, so that workers
    may read them.

    The staged folder is named by a keyed hash of the source path (`staging_key`): the
    same file submitted again is the same staged file, yet no one who lacks the key can
    work out where a file was staged. Files already under a root, and URLs, pass unchanged.
    """
    staged: list[Upload] = []
    key: bytes | None = None
    for upload in uploads:
        if not upload.uri.startswith("file:"):
            staged.append(upload)
            continue
        source = Path(unquote(urlsplit(upload.uri).path))
        if policy.file_roots and policy.within_roots(os.path.realpath(source)):
            staged.append(upload)
            continue
        key = key or staging_key(upload_dir)
        folder = hmac.new(key, str(source).encode(), hashlib.sha256).hexdigest()[:32]
        target = upload_dir / "staged" / folder / source.name
        _link_or_copy(source, target, upload_dir)
        staged.append(replace(upload, uri=file_uri(target)))
    return staged


def _link_or_copy(source: Path, target: Path, upload_dir: Path) -> None:
    try:
        if target.exists() and os.path.samefile(source, target):
            return
        private_dir(upload_dir, target.parent)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        try:
            os.link(source, tmp, follow_symlinks=True)
        except OSError:  # another file system, or links not allowed: a copy then
            shutil.copyfile(source, tmp)
            tmp.chmod(FILE_MODE)  # our copy (a link would share the original's mode)
        os.replace(tmp, target)
    except FileNotFoundError:
        raise UserError(f"no such file: {source} (nothing was submitted)") from None
    except OSError as exc:
        raise UserError(f"cannot stage {source} for the workers: {exc.strerror}") from None

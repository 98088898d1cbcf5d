"""Turning what a user names (files, folders, URLs, a manifest) into upload events.

Files named directly are taken as they are (a bad one becomes a `failed` row with its
reason); folders contribute their image files, recursively, in a stable order, or the
rows of their `manifest.csv` when they have one; `http(s)://` URLs pass through to the
workers, which fetch them. Workers read local files only under their file roots, so the
files a user names are staged into the upload directory first (`stage_local_files`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import Engine

from db import repository
from ops.errors import UserError
from pipeline.decode import IMAGE_EXTENSIONS
from pipeline.types import Upload
from worker.sources import SourcePolicy

MANIFEST_NAME = "manifest.csv"
_URL_SCHEMES = ("http", "https")


def file_uri(path: Path) -> str:
    return path.resolve().as_uri()


def is_url(source: str) -> bool:
    return urlsplit(source).scheme.lower() in _URL_SCHEMES


def _as_path(source: str) -> Path:
    return Path(unquote(urlsplit(source).path)) if source.startswith("file:") else Path(source)


def image_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def collect_uploads(
    sources: Sequence[str],
    *,
    merchant: str,
    sku: str | None = None,
    manifest_merchants: bool,
    declared_label: str | None = None,
) -> list[Upload]:
    """Upload events for `sources`, in order; `declared_label` applies to every one that
    its manifest row does not declare.

    `manifest_merchants`: whether a folder's manifest may name each row's merchant
    (`ingest`, a catalog of many shops) or `merchant` applies to every row (`submit`).
    """
    uploads: list[Upload] = []
    for source in sources:
        if is_url(source):
            uploads.append(Upload(uri=source, merchant_id=merchant))
            continue
        path = _as_path(source)
        if path.is_dir():
            manifest = path / MANIFEST_NAME
            if manifest.is_file():
                rows = read_manifest(manifest, merchant=merchant)
                if not manifest_merchants:
                    rows = [replace(u, merchant_id=merchant) for u in rows]
                uploads.extend(rows)
            else:
                uploads.extend(Upload(file_uri(f), merchant) for f in image_files(path))
        elif path.is_file():
            uploads.append(Upload(uri=file_uri(path), merchant_id=merchant))
        else:
            raise UserError(f"no such file or directory: {source} (nothing was submitted)")
    if not uploads:
        raise UserError("no image files found in the given paths (nothing was submitted)")
    if sku is not None:
        if len(uploads) > 1:
            raise UserError("--sku applies to one image; got several (use a manifest.csv)")
        uploads = [replace(uploads[0], sku=sku)]
    if declared_label is not None:
        uploads = [
            u if u.declared_label else replace(u, declared_label=declared_label) for u in uploads
        ]
    return uploads


def read_manifest(manifest: Path, *, merchant: str, base: Path | None = None) -> list[Upload]:
    """Rows of a CSV with a `file` (relative to `base`, default the CSV's folder) or `uri`
    column, and optional `sku`, `merchant_id` (default `merchant`) and `declared_label`
    (the merchant's category, as text) columns."""
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
                        merchant_id=(row.get("merchant_id") or "").strip() or merchant,
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
        if is_url(uri) or uri.startswith("file:"):
            return uri
        if Path(uri).is_absolute():
            return file_uri(Path(uri))
        raise UserError(f"{where}: uri {uri!r} is neither http(s)://, file:// nor absolute")
    name = (row.get("file") or "").strip()
    if not name:
        raise UserError(f"{where}: the row names no file or uri")
    return file_uri(base / name)


def register_uploads(engine: Engine, uploads: Sequence[Upload], chunk: int = 1000) -> list[int]:
    """Record uploads as `pending` rows (idempotent); one image id per upload, in order."""
    ids: list[int] = []
    for start in range(0, len(uploads), chunk):
        with engine.begin() as conn:
            ids.extend(
                repository.upsert_pending_images(conn, uploads=uploads[start : start + chunk])
            )
    return ids


def stage_local_files(
    uploads: Sequence[Upload], policy: SourcePolicy, staging: Path
) -> list[Upload]:
    """Local files outside the workers' file roots, hard-linked (copied across file
    systems) into `staging`, which is under the default root, so that workers may read them.

    The staged name is fixed by the source path (`<hash of the path>/<file name>`), so
    submitting the same file again is the same upload; files already under a root, and
    URLs, pass unchanged.
    """
    staged: list[Upload] = []
    for upload in uploads:
        if not upload.uri.startswith("file:"):
            staged.append(upload)
            continue
        source = Path(unquote(urlsplit(upload.uri).path))
        if policy.file_roots and policy.within_roots(os.path.realpath(source)):
            staged.append(upload)
            continue
        key = hashlib.sha256(str(source).encode()).hexdigest()[:16]
        target = staging / key / source.name
        _link_or_copy(source, target)
        staged.append(replace(upload, uri=file_uri(target)))
    return staged


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        if target.exists() and os.path.samefile(source, target):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        try:
            os.link(source, tmp, follow_symlinks=True)
        except OSError:  # another file system, or links not allowed: a copy then
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except FileNotFoundError:
        raise UserError(f"no such file: {source} (nothing was submitted)") from None
    except OSError as exc:
        raise UserError(f"cannot stage {source} for the workers: {exc.strerror}") from None

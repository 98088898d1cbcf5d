"""Uploads that arrive over HTTP: by reference, or as the photo's bytes.

Unlike the CLI, which may stage any local file its user can read, a remote caller gets
no help reaching the workers' disks: a `file:` URI must already be under the workers'
file roots (VITRINE_FILE_ROOTS), or it is refused here with the reason, before anything
is queued. http(s) URIs are checked by the workers' own rules when fetched (public
addresses only, unless VITRINE_FETCH_ALLOW_NETWORKS says otherwise).

Photos sent as bytes are stored content-addressed under the upload directory (named by
their SHA-256 alone, whatever the client called the file), so the same photo sent twice
by one merchant is one file and one upload; then queued like any other upload.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ops.context import Context
from ops.dispatch import publish_uploads
from ops.errors import UserError
from ops.uploads import file_uri, register_uploads
from pipeline.types import Upload
from worker.client import submit_review
from worker.processing import WorkItem

_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class Queued:
    image_id: int
    task_id: str  # the Celery task: its result says when the upload was processed
    uri: str


def queue_reference(ctx: Context, upload: Upload) -> Queued:
    """Register and queue an upload by URI."""
    return _queue(ctx, replace(upload, uri=checked_uri(ctx, upload.uri)))


def checked_uri(ctx: Context, uri: str) -> str:
    """A URI a remote caller may hand the workers (a bare path becomes a file URI)."""
    uri = uri.strip()
    scheme = urlsplit(uri).scheme.lower()
    if uri.startswith("/"):
        uri, scheme = Path(uri).as_uri(), "file"
    if scheme not in _SCHEMES:
        raise UserError(f"uri must be http(s):// or file:// (got {scheme or 'no'} scheme)")
    if scheme == "file":
        real = os.path.realpath(unquote(urlsplit(uri).path))
        policy = ctx.settings.source_policy
        if not policy.within_roots(real):
            raise UserError(
                "file uri is not under the workers' file roots (VITRINE_FILE_ROOTS); "
                "send the photo itself as multipart `file` instead"
            )
    return uri


def queue_photo(
    ctx: Context,
    data: bytes,
    *,
    merchant_id: str,
    sku: str | None,
    declared_label: str | None = None,
) -> Queued:
    """Store the photo's bytes where workers read them, and queue it."""
    uri = store_photo(ctx, data)
    return _queue(ctx, Upload(uri, merchant_id, sku, declared_label))


def store_photo(ctx: Context, data: bytes) -> str:
    """Store a photo's bytes content-addressed under the upload directory; its file URI."""
    limit = ctx.settings.max_file_bytes
    if not data:
        raise UserError("the file is empty")
    if len(data) > limit:
        raise UserError(f"the file is {len(data)} bytes, over the {limit}-byte limit")
    digest = hashlib.sha256(data).hexdigest()
    name = digest  # the bytes alone name the file: the same photo is one upload
    target = ctx.settings.uploads / "api" / digest[:2] / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{name}.{os.getpid()}.part")
        partial.write_bytes(data)
        os.replace(partial, target)  # readers never see half a file
    return file_uri(target)


def queue_review(
    ctx: Context, *, uri: str, merchant_id: str, sku: str, review_ref: str | None
) -> str:
    """Queue a shopper's review photo (a URI from `checked_uri` or `store_photo`) of the
    listing (merchant_id, sku); the worker creates its `reviews` row. Its task id."""
    ctx.broker_url()
    return str(submit_review(uri, merchant_id=merchant_id, sku=sku, review_ref=review_ref).id)


def _queue(ctx: Context, upload: Upload) -> Queued:
    engine = ctx.engine()
    ctx.broker_url()
    (image_id,) = register_uploads(engine, [upload])
    (result,) = publish_uploads([WorkItem(image_id=image_id, uri=upload.uri)], [upload.merchant_id])
    return Queued(image_id, str(result.id), upload.uri)

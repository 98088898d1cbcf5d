"""Uploads that arrive over HTTP: by reference, or as the photo's bytes.

Unlike the CLI, which may stage any local file its user can read, a remote caller gets
no help reaching the workers' disks. Only a platform client (a token without a merchant:
the platform itself) may name a `file:` URI, and only one already under the workers' file
roots (VITRINE_FILE_ROOTS); a merchant's token may send the photo itself or an http(s)
URL, never a server path, so it can never claim a file another merchant uploaded. Both
are refused here, before anything is queued. http(s) URIs are checked by the workers'
own rules when fetched (public addresses only, unless VITRINE_FETCH_ALLOW_NETWORKS says
otherwise).

Photos sent as bytes are stored per merchant and content-addressed under the upload
directory (`api/<merchant key>/<sha[:2]>/<sha256>`, folders 0750, files 0640), whatever
the client called the file; then queued like any other upload.

What the API queues is the workers' own typed event (`vitrine.worker.events`, re-exported
here for the API, which imports nothing of the worker): `UploadEvent`, `ReviewEvent`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from vitrine.db import repository
from vitrine.ops.context import Context
from vitrine.ops.dispatch import publish_uploads
from vitrine.ops.errors import NotAllowed, UserError
from vitrine.ops.uploads import file_uri, private_dir, write_private
from vitrine.worker.client import submit_review
from vitrine.worker.events import ReviewEvent as ReviewEvent
from vitrine.worker.events import UploadEvent as UploadEvent
from vitrine.worker.processing import WorkItem

_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class Queued:
    image_id: int
    #: The Celery task: its result says when the upload was processed. None when the event
    #: was received before (nothing new was queued).
    task_id: str | None
    uri: str
    created: bool  # False: the same event (Idempotency-Key) was received before
    status: str  # the row's status now


def queue_reference(
    ctx: Context, event: UploadEvent, *, event_id: str | None = None, files_allowed: bool
) -> Queued:
    """Register and queue an upload by URI (`files_allowed`: see `checked_uri`); `event_id`
    names the event (a client's Idempotency-Key)."""
    uri = checked_uri(ctx, event.uri, files_allowed)
    return _queue(ctx, replace(event, uri=uri), event_id)


def checked_uri(ctx: Context, uri: str, files_allowed: bool) -> str:
    """A URI a remote caller may hand the workers (a bare path becomes a file URI).

    `files_allowed` is False for a merchant's token: `file:` URIs and paths are then
    refused whatever they name, so the answer says nothing about what exists.
    """
    uri = uri.strip()
    if "\x00" in uri or "%00" in uri:
        raise UserError("uri must not contain a NUL byte")
    scheme = urlsplit(uri).scheme.lower()
    if uri.startswith("/"):
        uri, scheme = Path(uri).as_uri(), "file"
    if scheme not in _SCHEMES:
        raise UserError(f"uri must be http(s):// or file:// (got {scheme or 'no'} scheme)")
    if scheme == "file":
        if not files_allowed:
            raise NotAllowed(
                "a merchant's token may not name files on the server: send the photo "
                "itself as multipart `file`, or an http(s):// URL"
            )
        real = os.path.realpath(unquote(urlsplit(uri).path))
        if not ctx.settings.source_policy.within_roots(real):
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
    event_id: str | None = None,
) -> Queued:
    """Store the photo's bytes where workers read them, and queue it."""
    uri = store_photo(ctx, data, merchant_id=merchant_id)
    return _queue(ctx, UploadEvent(uri, merchant_id, sku, declared_label), event_id)


def merchant_folder(merchant_id: str) -> str:
    """The folder of one merchant's API photos: merchant ids are any text, folder names
    are not, so a hash of the id names it."""
    return hashlib.sha256(merchant_id.encode()).hexdigest()[:16]


def store_photo(ctx: Context, data: bytes, *, merchant_id: str) -> str:
    """Store a photo's bytes under its merchant's folder, content-addressed; its file URI."""
    limit = ctx.settings.max_file_bytes
    if not data:
        raise UserError("the file is empty")
    if len(data) > limit:
        raise UserError(f"the file is {len(data)} bytes, over the {limit}-byte limit")
    digest = hashlib.sha256(data).hexdigest()
    uploads = ctx.settings.uploads
    target = uploads / "api" / merchant_folder(merchant_id) / digest[:2] / digest
    if not target.exists():
        private_dir(uploads, target.parent)
        write_private(target, data)
    return file_uri(target)


def review_event(uri: str, merchant_id: str, sku: str, review_ref: str | None) -> ReviewEvent:
    """The review event a request asks for; one the workers would refuse (a blank sku) is
    the caller's error, answered before anything is queued."""
    try:
        return ReviewEvent(uri, merchant_id, sku, review_ref)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def queue_review(ctx: Context, event: ReviewEvent) -> str:
    """Queue a shopper's review photo (its URI from `checked_uri` or `store_photo`) of the
    listing (merchant_id, sku); the worker creates its `reviews` row. Its task id."""
    ctx.broker_url()
    return str(submit_review(**event.kwargs()).id)


def _queue(ctx: Context, event: UploadEvent, event_id: str | None) -> Queued:
    """Record the event and queue it; an event received before is not queued again."""
    engine = ctx.engine()
    ctx.broker_url()
    with engine.begin() as conn:
        (recorded,) = repository.record_uploads(conn, uploads=[event.upload(event_id)])
    if not recorded.created:
        return Queued(recorded.image_id, None, event.uri, False, recorded.status)
    item = WorkItem(image_id=recorded.image_id, uri=event.uri)
    (result,) = publish_uploads([item], [event.merchant_id])
    return Queued(recorded.image_id, str(result.id), event.uri, True, recorded.status)

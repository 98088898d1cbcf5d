"""Sending failed uploads again, once their failure was passing trouble (the review desk's
"Failed uploads": a source that timed out or answered 5xx through every retry).

The rows go back to `pending` first (`repository.reset_failed`), then each is published
as the live upload event vitrine's own producers send (`publish_uploads`, as the API's
uploads are), so the workers process it as a fresh delivery with a fresh set of tries. A
broker that does not answer is found before any row changes; one lost between the two
steps leaves `pending` rows with no message, which the workers' reaper sends once they
are stale (`vitrine.worker.reaper`). The caller has checked that whoever asked may see
the images: this writes as the owner.
"""

from __future__ import annotations

from collections.abc import Sequence

from vitrine.db import repository
from vitrine.ops.context import Context
from vitrine.ops.dispatch import publish_uploads
from vitrine.worker.processing import WorkItem


def resend_failed(ctx: Context, *, image_ids: Sequence[int]) -> list[int]:
    """Send again those of `image_ids` that failed on passing trouble; their ids (the
    others, and any another caller sent again meanwhile, are left as they are)."""
    ctx.broker_url()
    with ctx.engine().begin() as conn:
        reset = repository.reset_failed(conn, image_ids=image_ids)
    items = [WorkItem(image_id=r.image_id, uri=r.uri) for r in reset]
    publish_uploads(items, [r.merchant_id for r in reset])
    return [r.image_id for r in reset]

"""Failed uploads: the review desk's list of them, and sending the passing failures again.

A failure is worth sending again when the worker gave up on passing trouble (its reason
starts with `vitrine.pipeline.types.GAVE_UP_PREFIX`: a source that timed out or answered
5xx through every retry, or an upload claimed too often without a result); any other
failure is the photo's own (not an image, a refused source) and would only fail again.

The reads run in the caller's scoped transaction, so a merchant's desk lists and counts
its own uploads only (row-level security); the list is keyset-paginated on image id
(`before`), newest first, as the catalog grid is. `reset_failed` is the write, by the
owner after the caller's transaction said it may see the images: the rows go back to
`pending` as a redelivered event's would (`record_uploads`: error cleared, attempts 0),
for the caller to publish them again (`vitrine.ops.resend`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, select, true, update

from vitrine.db.repository._shared import id_in
from vitrine.db.schema import images
from vitrine.pipeline.types import GAVE_UP_PREFIX

#: SQL: the row's failure was passing trouble (its reason starts with the prefix, matched
#: as itself: LIKE 'gave up after %' with any wildcard in the prefix escaped).
RESENDABLE: ColumnElement[bool] = images.c.error.startswith(GAVE_UP_PREFIX, autoescape=True)
_FAILED = images.c.status == "failed"


@dataclass(frozen=True)
class FailedCount:
    """How many failed uploads there are, and how many of them may be sent again."""

    total: int
    resendable: int


@dataclass(frozen=True)
class ResetUpload:
    """A failed upload put back to `pending`: what publishing it again needs."""

    image_id: int
    uri: str
    merchant_id: str


def _merchant(merchant_id: str | None) -> ColumnElement[bool]:
    return true() if merchant_id is None else images.c.merchant_id == merchant_id


def failed_uploads(
    conn: Connection,
    *,
    merchant_id: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Failed uploads, newest first, with an id below `before` (the page's keyset): id,
    merchant, SKU, URI as stored, when it failed, attempts, the reason, and whether it may
    be sent again (`resendable`)."""
    stmt = (
        select(
            images.c.id.label("image_id"),
            images.c.merchant_id,
            images.c.sku,
            images.c.uri,
            images.c.updated_at.label("failed_at"),
            images.c.attempts,
            images.c.error,
            func.coalesce(RESENDABLE, False).label("resendable"),
        )
        .where(_FAILED, _merchant(merchant_id))
        .order_by(images.c.id.desc())
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.where(images.c.id < before)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def failed_count(conn: Connection, *, merchant_id: str | None = None) -> FailedCount:
    """How many uploads `failed_uploads` pages through, and how many may be sent again."""
    row = conn.execute(
        select(func.count(), func.count().filter(RESENDABLE)).where(_FAILED, _merchant(merchant_id))
    ).one()
    return FailedCount(int(row[0]), int(row[1]))


def resendable(conn: Connection, *, image_ids: Sequence[int]) -> dict[int, tuple[str, bool]]:
    """Of `image_ids`, those the caller may see, each with its status and whether it may
    be sent again (failed, on passing trouble). An id absent from the answer: no such
    image, or none the caller may see."""
    if not image_ids:
        return {}
    may = func.coalesce(and_(_FAILED, RESENDABLE), False)
    rows = conn.execute(
        select(images.c.id, images.c.status, may).where(id_in(images.c.id, image_ids))
    )
    return {int(i): (str(status), bool(ok)) for i, status, ok in rows}


def reset_failed(conn: Connection, *, image_ids: Sequence[int]) -> list[ResetUpload]:
    """Put those of `image_ids` that failed on passing trouble back to `pending` (error
    cleared, attempts 0, as a redelivered event's row); the uploads to publish again, by id.

    The guard is in the statement, so of two people sending the same upload again at once
    only one gets it back to publish; rows are locked in id order, as `claim_images` does,
    so overlapping calls cannot deadlock."""
    if not image_ids:
        return []
    locked = (
        select(images.c.id)
        .where(id_in(images.c.id, image_ids), _FAILED, RESENDABLE)
        .order_by(images.c.id)
        .with_for_update()
        .scalar_subquery()
    )
    stmt = (
        update(images)
        .where(images.c.id.in_(locked), _FAILED)
        .values(status="pending", error=None, attempts=0, updated_at=func.now())
        .returning(images.c.id, images.c.uri, images.c.merchant_id)
    )
    reset = [ResetUpload(int(r.id), str(r.uri), str(r.merchant_id)) for r in conn.execute(stmt)]
    return sorted(reset, key=lambda r: r.image_id)

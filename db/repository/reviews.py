"""Shoppers' review photos of a listing: record, compare with the listing, store, fail.

A review is keyed on (merchant_id, sku, uri), so a re-sent event is the same row: a
`done` one is not processed again, a `failed` one goes back to `pending`. The listing is
every `done` image of the same merchant and sku; the comparison is made in the database,
over the listing's embeddings under the model that read the review photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, case, func, literal, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from vitrine.db.repository.images import MAX_ERROR_CHARS
from vitrine.db.schema import reviews


@dataclass(frozen=True)
class ReviewRow:
    id: int
    status: str


@dataclass(frozen=True)
class ListingMatch:
    """The best cosine similarity to the listing's images and the listing's class (the
    most common label among them); both None when the listing has no done image."""

    match_score: float | None
    listing_label: str | None


_insert = pg_insert(reviews)
_failed = reviews.c.status == "failed"
_UPSERT = _insert.on_conflict_do_update(
    index_elements=[reviews.c.merchant_id, reviews.c.sku, reviews.c.uri],
    set_={
        "review_ref": func.coalesce(_insert.excluded.review_ref, reviews.c.review_ref),
        "status": case((_failed, literal("pending")), else_=reviews.c.status),
        "error": case((_failed, None), else_=reviews.c.error),
    },
).returning(reviews.c.id, reviews.c.status)

_LISTING_MATCH = text("""
SELECT max(1 - (e.embedding <=> CAST(:vec AS vector))) AS match_score,
       mode() WITHIN GROUP (ORDER BY p.label) AS listing_label
  FROM images i
  JOIN embeddings e ON e.image_id = i.id AND e.model_id = :model_id
  JOIN predictions p ON p.image_id = i.id AND p.model_id = :model_id
 WHERE i.merchant_id = :merchant_id AND i.sku = :sku AND i.status = 'done'
""")


def upsert_review(
    conn: Connection, *, merchant_id: str, sku: str, uri: str, review_ref: str | None
) -> ReviewRow:
    """Record a review photo (idempotent); its id and status (`done`: nothing to do)."""
    row = conn.execute(
        _UPSERT, {"merchant_id": merchant_id, "sku": sku, "uri": uri, "review_ref": review_ref}
    ).one()
    return ReviewRow(id=int(row.id), status=str(row.status))


def listing_match(
    conn: Connection,
    *,
    merchant_id: str,
    sku: str,
    model_id: int,
    embedding: npt.NDArray[np.floating[Any]],
) -> ListingMatch:
    """Compare a review photo's embedding with the listing's done images under `model_id`."""
    vec = np.asarray(embedding, dtype=np.float32)
    params = {"vec": vec, "model_id": model_id, "merchant_id": merchant_id, "sku": sku}
    row = conn.execute(_LISTING_MATCH, params).one()
    score = None if row.match_score is None else float(row.match_score)
    return ListingMatch(match_score=score, listing_label=row.listing_label)


def save_review(
    conn: Connection,
    *,
    review_id: int,
    model_id: int,
    label: str,
    confidence: float,
    match: ListingMatch,
) -> None:
    """Store what the worker found; the review is `done`."""
    conn.execute(
        update(reviews)
        .where(reviews.c.id == review_id)
        .values(
            status="done",
            error=None,
            label=label,
            confidence=confidence,
            model_id=model_id,
            listing_label=match.listing_label,
            match_score=match.match_score,
            processed_at=func.now(),
        )
    )


def fail_review(conn: Connection, *, review_id: int, error: str) -> None:
    """The photo could not be read: the review is `failed` with the reason (a done review
    stays done)."""
    conn.execute(
        update(reviews)
        .where(reviews.c.id == review_id, reviews.c.status != "done")
        .values(status="failed", error=error[:MAX_ERROR_CHARS], processed_at=func.now())
    )

"""A shopper's review photo of a listing, in one pass: record, fetch, decode, one forward
pass, compare with the listing's images, store.

Review photos are not catalog images: they live in `reviews`, not `images`, so they never
show up in catalog search, similar_images, duplicates or label counts. The comparison
(`vitrine.db.repository.listing_match`) reads the listing's embeddings under the same model in
the same transaction that stores the result, so the stored match score and class say
what the listing was at that moment (a later listing photo does not change them).

Failures follow the upload rules (`vitrine.worker.failures.classify`): a file that cannot
be read fails the review with the reason; transient trouble (a source's 5xx, a timeout) is
raised as `TransientError` for the task to retry; a `done` review is not processed again
when its event is re-sent. The event is a `vitrine.worker.events.ReviewEvent`.
"""

from __future__ import annotations

from typing import Any

from vitrine.db import repository
from vitrine.pipeline.inference.batch import prepare_batch
from vitrine.settings import get_settings
from vitrine.sources.fetch_many import fetch_all
from vitrine.worker import runtime
from vitrine.worker.events import ReviewEvent
from vitrine.worker.failures import classify


def process_review(event: ReviewEvent) -> dict[str, Any]:
    """Run one review event; the outcome as the task's result."""
    settings = get_settings()
    engine = runtime.engine()
    with engine.begin() as conn:
        row = repository.upsert_review(conn, **event.kwargs())
    if row.status == "done":
        return {"review_id": row.id, "status": "done", "skipped": True}
    target = runtime.serving()
    uri = event.uri
    got = fetch_all(
        [uri],
        settings.source_policy,
        max_workers=1,
        per_host=1,
        deadline_s=settings.fetch_timeout_s,
        batch_deadline_s=settings.fetch_batch_deadline_s,
    )[uri]
    if isinstance(got, Exception) and classify(got).transient:
        raise got
    batch = prepare_batch(
        [uri],
        lambda _: got if isinstance(got, bytes) else _raise(got),
        target.model.spec.preprocess,
        settings.image_limits,
    )
    if batch.failures:
        exc = batch.failures[uri]
        failure = classify(exc)
        if failure.transient:
            raise exc
        error = failure.reason
        with engine.begin() as conn:
            repository.fail_review(conn, review_id=row.id, error=error)
        return {"review_id": row.id, "status": "failed", "error": error}
    (prediction,) = target.model.predict(batch.arrays)
    with engine.begin() as conn:
        match = repository.listing_match(
            conn,
            merchant_id=event.merchant_id,
            sku=event.sku,
            model_id=target.row.id,
            embedding=prediction.embedding,
        )
        repository.save_review(
            conn,
            review_id=row.id,
            model_id=target.row.id,
            label=prediction.label,
            confidence=prediction.confidence,
            match=match,
        )
    return {
        "review_id": row.id,
        "status": "done",
        "label": prediction.label,
        "confidence": prediction.confidence,
        "listing_label": match.listing_label,
        "match_score": match.match_score,
    }


def give_up(event: ReviewEvent, error: str) -> None:
    """Fail a review after the last retry, so that it is not left `pending` for ever."""
    with runtime.engine().begin() as conn:
        row = repository.upsert_review(conn, **event.kwargs())
        repository.fail_review(conn, review_id=row.id, error=error)


def _raise(exc: Exception) -> bytes:
    raise exc

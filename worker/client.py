"""The Python producer: one call publishes one upload event.

    from vitrine.worker.client import submit_upload
    submit_upload("https://cdn.example.com/p/123.jpg", merchant_id="m-42", sku="SKU-123")

Only Redis is needed on the producer side (`REDIS_URL`); the worker creates the `images`
row. Producers in other languages publish the same JSON message: see docs/producers.md.
"""

from __future__ import annotations

from celery.result import AsyncResult

from vitrine.worker.celery_app import app, broker_configured
from vitrine.worker.names import INGEST_TASK, REVIEW_TASK, UPLOADS_QUEUE


def submit_upload(
    uri: str,
    *,
    merchant_id: str,
    sku: str | None = None,
    image_id: int | None = None,
    declared_label: str | None = None,
) -> AsyncResult:
    """Queue one upload for processing; returns the Celery result handle."""
    if not uri or not merchant_id:
        raise ValueError("submit_upload needs a non-empty uri and merchant_id")
    if not broker_configured():
        raise RuntimeError("no broker: set REDIS_URL (e.g. redis://redis:6379/0)")
    kwargs: dict[str, object] = {"uri": uri, "merchant_id": merchant_id, "sku": sku}
    if image_id is not None:
        kwargs["image_id"] = image_id
    if declared_label is not None:
        kwargs["declared_label"] = declared_label
    return app.send_task(INGEST_TASK, kwargs=kwargs, queue=UPLOADS_QUEUE)


def submit_review(
    uri: str, *, merchant_id: str, sku: str, review_ref: str | None = None
) -> AsyncResult:
    """Queue a shopper's review photo of the listing (merchant_id, sku): `vitrine.review`."""
    if not (uri and merchant_id and sku):
        raise ValueError("submit_review needs a non-empty uri, merchant_id and sku")
    if not broker_configured():
        raise RuntimeError("no broker: set REDIS_URL (e.g. redis://redis:6379/0)")
    kwargs = {"uri": uri, "merchant_id": merchant_id, "sku": sku, "review_ref": review_ref}
    return app.send_task(REVIEW_TASK, kwargs=kwargs, queue=UPLOADS_QUEUE)

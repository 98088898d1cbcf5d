"""Celery tasks: thin wrappers that parse the message and call `vitrine.worker.processing`
(`vitrine.worker.live` for the micro-batched upload events).

Message contract (for producers in any language) is documented in docs/producers.md:
task `vitrine.ingest`, kwargs `{"uri": ..., "merchant_id": ..., "sku": ...,
"declared_label": ...}` (the last two optional), queue `uploads`, JSON body; task
`vitrine.review` for a shopper's review photo of a listing (`vitrine.worker.reviews`).

Retries are Celery's own, one policy for every task (`vitrine.worker.failures.RetryPolicy`):
a database error (down, restarting, a deadlock victim) retries the whole task through
`autoretry_for` with exponential backoff and full jitter; images whose source had a
transient problem (timeout, 5xx) are retried alone, with the same backoff formula, and end
`failed` with the last reason once `max_retries` is spent.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery_batches import SimpleRequest

from vitrine.settings import get_settings
from vitrine.sources.fetch import TransientError
from vitrine.worker import metrics, runtime
from vitrine.worker.celery_app import app
from vitrine.worker.events import ReviewEvent
from vitrine.worker.failures import RetryPolicy
from vitrine.worker.live import LiveBatches, handle_events
from vitrine.worker.names import (
    EMBED_BATCH_TASK,
    INGEST_BATCH_TASK,
    INGEST_TASK,
    READY_FD_ENV,
    REHASH_BATCH_TASK,
    REVIEW_TASK,
)
from vitrine.worker.processing import WorkItem, fail_images, process_batch, rehash_batch
from vitrine.worker.reaper import Reaper
from vitrine.worker.reviews import give_up, process_review

log = logging.getLogger(__name__)
_settings = get_settings()
_reaper: Reaper | None = None

RETRYING: dict[str, Any] = RetryPolicy.from_settings(_settings).task_options()


@worker_process_init.connect
def _load_model_in_child(**_: Any) -> None:
    """Runs in each pool process after the fork: the only place the model gets loaded."""
    if _settings.worker_nice:
        runtime.yield_cpu(_settings.worker_nice)  # the pool does the work: it yields the CPU
    runtime.reset_after_fork()
    runtime.configure_threads()
    try:
        active = runtime.serving()
        metrics.set_model(active.row.id, active.row.name, active.row.version)
        log.info("loaded model %s in worker process", active.row.key)
    except Exception:  # the first task will retry and report it properly
        log.exception("could not preload the active model")


@worker_ready.connect
def _on_ready(**_: Any) -> None:
    """In the main process once it consumes: start the reaper, tell a launcher (whose
    pipe READY_FD_ENV names) that this worker is ready; serve its metrics if asked."""
    global _reaper
    metrics.serve(_settings)
    if _settings.reaper_interval_s > 0:
        _reaper = Reaper(app, _settings)
        _reaper.start()
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd:
        os.write(int(fd), b"1")
        os.close(int(fd))


@worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    if _reaper is not None:
        _reaper.stop()
    metrics.shutdown()


@worker_process_shutdown.connect
def _on_child_exit(pid: int | None = None, **_: Any) -> None:
    """In a pool process about to exit: its live gauges leave the metrics."""
    metrics.child_exited(pid or os.getpid())


def _run(task: Task, items: list[WorkItem], model_key: str | None, claim: bool) -> dict[str, Any]:
    try:
        outcome = process_batch(items, model_key=model_key, claim=claim)
    except SoftTimeLimitExceeded:
        limit = _settings.task_soft_time_limit
        fail_images([i.image_id for i in items], f"processing took longer than {limit}s")
        raise
    policy, retries = RetryPolicy.of_task(task), task.request.retries
    if outcome.transient:
        if policy.exhausted(retries):
            for image_id, error in outcome.transient.items():
                fail_images([image_id], policy.gave_up(retries, error))
        else:
            retry_kwargs = dict(task.request.kwargs or {})
            retry_kwargs["items"] = [i.__dict__ for i in items if i.image_id in outcome.transient]
            raise task.retry(
                kwargs=retry_kwargs,
                exc=TransientError("; ".join(outcome.transient.values())),
                countdown=policy.countdown(retries),
            )
    return outcome.as_dict()


@app.task(
    name=INGEST_TASK,
    base=LiveBatches,
    flush_every=_settings.live_batch_size,
    flush_interval=_settings.live_batch_wait_ms / 1000,
    acks_late=True,
)
def ingest(requests: list[SimpleRequest]) -> dict[str, int]:
    """Upload events (kwargs `uri`, `merchant_id`, `sku`, `declared_label`, and `image_id`
    from vitrine's own producers), gathered into micro-batches: see `vitrine.worker.live`."""
    return handle_events(app, requests)


@app.task(name=INGEST_BATCH_TASK, **RETRYING)
def ingest_batch(self: Task, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A chunk of already-registered uploads (bulk ingest): one forward pass for all."""
    return _run(self, [WorkItem(**d) for d in items], None, claim=True)


@app.task(name=EMBED_BATCH_TASK, **RETRYING)
def embed_batch(self: Task, items: list[dict[str, Any]], model_key: str) -> dict[str, Any]:
    """Backfill: (re-)compute predictions and embeddings of done images with `model_key`."""
    return _run(self, [WorkItem(**d) for d in items], model_key, claim=False)


@app.task(name=REHASH_BATCH_TASK, **RETRYING)
def rehash(self: Task, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Backfill: measure done images' perceptual hash and quality again (no forward pass)."""
    return rehash_batch([WorkItem(**d) for d in items]).as_dict()


@app.task(name=REVIEW_TASK, **RETRYING)
def review(self: Task, **kwargs: Any) -> dict[str, Any]:
    """A shopper's review photo of a listing (kwargs `uri`, `merchant_id`, `sku`,
    `review_ref`): prediction and match score in one pass, see `vitrine.worker.reviews`. A source's
    transient trouble retries with the same backoff as uploads, then fails the review."""
    event = ReviewEvent.from_kwargs(kwargs)
    policy, retries = RetryPolicy.of_task(self), self.request.retries
    try:
        return process_review(event)
    except TransientError as exc:
        if policy.exhausted(retries):
            give_up(event, policy.gave_up(retries, str(exc)))
            return {"status": "failed", "error": str(exc)}
        raise self.retry(exc=exc, countdown=policy.countdown(retries)) from None

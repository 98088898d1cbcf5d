"""Celery tasks: thin wrappers that parse the message and call `worker.processing`
(`worker.live` for the micro-batched upload events).

Message contract (for producers in any language) is documented in docs/producers.md:
task `vitrine.ingest`, kwargs `{"uri": ..., "merchant_id": ..., "sku": ...,
"declared_label": ...}` (the last two optional), queue `uploads`, JSON body; task
`vitrine.review` for a shopper's review photo of a listing (`worker.reviews`).

Retries are Celery's own: a database error (down, restarting, a deadlock victim) retries
the whole task through `autoretry_for` with exponential backoff and full jitter; images
whose source had a transient problem (timeout, 5xx) are retried alone, with the same
backoff formula, and end `failed` with the last reason once `max_retries` is spent.
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
from celery.utils.time import get_exponential_backoff_interval
from celery_batches import SimpleRequest
from sqlalchemy.exc import DBAPIError, OperationalError

from worker import metrics, runtime
from worker.celery_app import app
from worker.fetch import TransientError
from worker.live import LiveBatches, handle_events
from worker.names import (
    EMBED_BATCH_TASK,
    INGEST_BATCH_TASK,
    INGEST_TASK,
    READY_FD_ENV,
    REVIEW_TASK,
)
from worker.processing import WorkItem, fail_images, process_batch
from worker.reaper import Reaper
from worker.reviews import give_up, process_review, review_event
from worker.settings import get_settings

log = logging.getLogger(__name__)
_settings = get_settings()
_reaper: Reaper | None = None

RETRYING: dict[str, Any] = {
    "bind": True,
    "autoretry_for": (OperationalError, DBAPIError),
    "max_retries": _settings.max_retries,
    "retry_backoff": _settings.retry_backoff_s,
    "retry_backoff_max": _settings.retry_backoff_max_s,
    "retry_jitter": True,
}


@worker_process_init.connect
def _load_model_in_child(**_: Any) -> None:
    """Runs in each pool process after the fork: the only place the model gets loaded."""
    if _settings.worker_nice:
        os.nice(_settings.worker_nice)  # the pool does the work: it yields the CPU
    runtime.reset_after_fork()
    runtime.configure_threads()
    try:
        active = runtime.active_model()
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


def _countdown(task: Task) -> int:
    """Celery's own backoff formula (what `autoretry_for` uses), for per-image retries."""
    return int(
        get_exponential_backoff_interval(
            factor=task.retry_backoff,
            retries=task.request.retries,
            maximum=task.retry_backoff_max,
            full_jitter=task.retry_jitter,
        )
    )


def _run(task: Task, items: list[WorkItem], model_key: str | None, claim: bool) -> dict[str, Any]:
    try:
        outcome = process_batch(items, model_key=model_key, claim=claim)
    except SoftTimeLimitExceeded:
        limit = _settings.task_soft_time_limit
        fail_images([i.image_id for i in items], f"processing took longer than {limit}s")
        raise
    if outcome.transient:
        if task.request.retries >= task.max_retries:
            for image_id, error in outcome.transient.items():
                fail_images([image_id], f"gave up after {task.request.retries + 1} tries: {error}")
        else:
            retry_kwargs = dict(task.request.kwargs or {})
            retry_kwargs["items"] = [i.__dict__ for i in items if i.image_id in outcome.transient]
            raise task.retry(
                kwargs=retry_kwargs,
                exc=TransientError("; ".join(outcome.transient.values())),
                countdown=_countdown(task),
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
    from vitrine's own producers), gathered into micro-batches: see `worker.live`."""
    return handle_events(app, requests)


@app.task(name=INGEST_BATCH_TASK, **RETRYING)
def ingest_batch(self: Task, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A chunk of already-registered uploads (bulk ingest): one forward pass for all."""
    return _run(self, [WorkItem(**d) for d in items], None, claim=True)


@app.task(name=EMBED_BATCH_TASK, **RETRYING)
def embed_batch(self: Task, items: list[dict[str, Any]], model_key: str) -> dict[str, Any]:
    """Backfill: (re-)compute predictions and embeddings of done images with `model_key`."""
    return _run(self, [WorkItem(**d) for d in items], model_key, claim=False)


@app.task(name=REVIEW_TASK, **RETRYING)
def review(self: Task, **kwargs: Any) -> dict[str, Any]:
    """A shopper's review photo of a listing (kwargs `uri`, `merchant_id`, `sku`,
    `review_ref`): prediction and match score in one pass, see `worker.reviews`. A source's
    transient trouble retries with the same backoff as uploads, then fails the review."""
    event = review_event(kwargs)
    try:
        return process_review(event)
    except TransientError as exc:
        if self.request.retries >= self.max_retries:
            give_up(event, f"gave up after {self.request.retries + 1} tries: {exc}")
            return {"status": "failed", "error": str(exc)}
        raise self.retry(exc=exc, countdown=_countdown(self)) from None

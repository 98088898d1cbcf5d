"""Live uploads, micro-batched: one forward pass and one transaction for many events.

A platform publishes one `vitrine.ingest` event per upload. Handling them one by one costs
a batch-1 forward pass and a transaction each (57 uploads/s on 2 cores); gathering up to
`VITRINE_LIVE_BATCH_SIZE` events makes the live path as fast as the bulk one.

Gathering is celery-batches' consumer strategy (events are buffered in the worker's main
process, then run as one job in a pool process), with one change to when a batch leaves:
as soon as a pool process is free for it. An event that finds a process idle goes at once,
alone (waiting for company would only add latency: at 10 uploads/s a lone event waited
the whole window); while every process is busy, events gather until one returns, or
`VITRINE_LIVE_BATCH_SIZE` of them are there, or the oldest has waited
`VITRINE_LIVE_BATCH_WAIT_MS` (celery-batches' own timer, which also keeps the path going
if the count of busy processes were ever wrong). So batches are as large as the load
makes them, and no process waits idle for a timer while events are buffered.

Its acknowledgement is adjusted so that every promise of the README holds for a batch as
for a single task:

* a message is acknowledged only after the job returned, i.e. after its row committed;
* a job that did not return (pool process killed, hard time limit) hands every message of
  the batch back to the broker (`reject(requeue=True)`), as `task_reject_on_worker_lost`
  does for plain tasks; a job that raised does the same instead of acknowledging;
* re-delivered or re-sent events are harmless: a `done` image is skipped on claim;
* transient trouble (database down, a source's 5xx) re-publishes the event itself with
  Celery's backoff formula and the same task id, so a producer waiting on it still gets
  the final outcome; after `VITRINE_MAX_RETRIES` the image fails with the last reason
  (`vitrine.worker.failures.RetryPolicy`, the tasks' own policy; a batch request has no
  `Task.retry`, so the retries so far travel in the event's `attempt`).

Each message is read once into a `vitrine.worker.events.UploadEvent`; one that is not an
event fails alone (a ValueError, as the result says) and is never retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

from celery import Celery
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from vitrine.db import repository
from vitrine.settings import get_settings
from vitrine.worker import runtime
from vitrine.worker.events import UploadEvent
from vitrine.worker.failures import DATABASE_ERRORS, RetryPolicy
from vitrine.worker.names import INGEST_TASK, UPLOADS_QUEUE
from vitrine.worker.processing import BatchOutcome, WorkItem, fail_images, process_batch

log = logging.getLogger(__name__)


class LiveBatches(Batches):
    """celery-batches, sending a batch when a pool process is free for it, acknowledging
    only what committed and handing back the rest."""

    abstract = True
    _in_flight = 0  # batches handed to the pool whose job has not returned yet
    _in_flight_lock = threading.Lock()

    def Strategy(self, task: Batches, app: Celery, consumer: Any) -> Any:
        buffer_event = super().Strategy(task, app, consumer)

        def on_event(*args: Any, **kwargs: Any) -> None:
            buffer_event(*args, **kwargs)
            self._flush_if_idle()

        return on_event

    def _flush_if_idle(self) -> None:
        """Send what is buffered now if some pool process has no live batch to run."""
        if self._buffer.empty() or self._in_flight >= max(1, self._pool.num_processes):
            return
        self._do_flush()

    def flush(self, requests: Collection[Request]) -> Any:
        """Batches of at most `flush_every` (events gathered while every process was busy
        can be more), each one job."""
        ready = list(requests)
        size = max(1, self.flush_every)
        return [self._send(ready[i : i + size]) for i in range(0, len(ready), size)]

    def _send(self, batch: list[Request]) -> Any:
        settings = get_settings()

        def returned() -> None:
            with self._in_flight_lock:
                self._in_flight -= 1
            self._flush_if_idle()

        def on_return(result: Any) -> None:
            # apply_batches_task returns None when the batch function raised.
            for req in batch:
                if result is None:
                    req.reject(requeue=True)
                else:
                    req.acknowledge()
            returned()

        def on_error(exc_info: Any) -> None:  # the pool process died or ran out of time
            log.warning("live batch of %d lost its process; handing it back", len(batch))
            for req in batch:
                req.reject(requeue=True)
            returned()

        serializable = ([SimpleRequest.from_request(r) for r in batch],)
        with self._in_flight_lock:
            self._in_flight += 1
        return self._pool.apply_async(
            apply_batches_task,
            (self, serializable, 0, None),
            callback=on_return,
            error_callback=on_error,
            soft_timeout=settings.task_soft_time_limit,
            timeout=settings.task_time_limit,
        )


def handle_events(app: Celery, requests: Sequence[SimpleRequest]) -> dict[str, int]:
    """Register, claim, fetch, preprocess, one forward pass, save: for a batch of events."""
    events: list[tuple[SimpleRequest, UploadEvent]] = []
    for req in requests:
        try:
            events.append((req, UploadEvent.from_kwargs(req.kwargs)))
        except ValueError as exc:  # a malformed message fails alone, it is never retried
            app.backend.mark_as_failure(req.id, exc, request=req)
    if not events:
        return {"events": len(requests), "done": 0}
    try:
        ids = _register(events)
        unique = {i: WorkItem(image_id=i, uri=e.uri) for i, (_, e) in zip(ids, events, strict=True)}
        outcome = process_batch(list(unique.values()), claim=True)
    except DATABASE_ERRORS as exc:  # nothing was saved: every event again
        _again(app, events, reason=f"database: {exc.__class__.__name__}")
        return {"events": len(requests), "done": 0, "retried": len(events)}
    retried = _retry_transient(app, events, ids, outcome)
    for (req, _), image_id in zip(events, ids, strict=True):
        if image_id in retried:
            continue
        if not req.ignore_result:
            app.backend.mark_as_done(req.id, _outcome_of(outcome, image_id), request=req)
    return {"events": len(requests), "done": len(outcome.done), "retried": len(retried)}


def _register(events: Sequence[tuple[SimpleRequest, UploadEvent]]) -> list[int]:
    """Image ids for the events; platform events (no `image_id`) get their rows here, named
    by their task id: a redelivered message or a re-published task id finds its row."""
    uploads = [e.upload(event_id=req.id) for req, e in events if e.image_id is None]
    created: list[int] = []
    if uploads:
        with runtime.engine().begin() as conn:
            created = repository.upsert_pending_images(conn, uploads=uploads)
    fresh = iter(created)
    return [e.image_id if e.image_id is not None else next(fresh) for _, e in events]


def _retry_transient(
    app: Celery,
    events: Sequence[tuple[SimpleRequest, UploadEvent]],
    ids: Sequence[int],
    outcome: BatchOutcome,
) -> set[int]:
    """Re-send events whose source had a transient problem; fail those out of tries."""
    if not outcome.transient:
        return set()
    policy = RetryPolicy.from_settings()
    again, retried = [], set()
    for (req, event), image_id in zip(events, ids, strict=True):
        reason = outcome.transient.get(image_id)
        if reason is None:
            continue
        if policy.exhausted(event.attempt):
            error = policy.gave_up(event.attempt, reason)
            fail_images([image_id], error)
            outcome.failed[image_id] = error
            continue
        again.append((req, replace(event, image_id=image_id)))
        retried.add(image_id)
    _again(app, again, reason="transient source error")
    return retried


def _again(app: Celery, events: Sequence[tuple[SimpleRequest, UploadEvent]], reason: str) -> None:
    """Publish each event again, under its task id, after the policy's backoff."""
    policy = RetryPolicy.from_settings()
    for req, event in events:
        app.send_task(
            INGEST_TASK,
            kwargs=replace(event, attempt=event.attempt + 1).kwargs(),
            task_id=req.id,
            countdown=policy.countdown(event.attempt),
            queue=UPLOADS_QUEUE,
        )
    if events:
        log.warning("re-sent %d live upload(s) with backoff: %s", len(events), reason)


def _outcome_of(outcome: BatchOutcome, image_id: int) -> dict[str, Any]:
    """The one-image part of a batch outcome, shaped like a single task's result."""
    return {
        "done": [image_id] if image_id in outcome.done else [],
        "failed": {str(image_id): outcome.failed[image_id]} if image_id in outcome.failed else {},
        "skipped": [image_id] if image_id in outcome.skipped else [],
        "transient": {},
    }

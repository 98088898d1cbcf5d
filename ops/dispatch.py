"""Publishing work and waiting for it: shared by submit, ingest, backfill, requeue and demo.

A bounded window of chunks in flight is what keeps a backfill from starving live
uploads: the queue never holds more than `max_in_flight` backfill chunks, so an upload
waits behind at most that much work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult, ResultSet

from vitrine.ops.context import Context
from vitrine.ops.errors import ServerUnreachable, UserError
from vitrine.ops.progress import ProgressFactory, no_progress
from vitrine.worker.celery_app import app
from vitrine.worker.client import submit_upload
from vitrine.worker.events import UploadEvent
from vitrine.worker.names import BACKFILL_QUEUE, EMBED_BATCH_TASK, INGEST_BATCH_TASK, UPLOADS_QUEUE
from vitrine.worker.processing import WorkItem


class WaitTimedOut(ServerUnreachable):
    """Work was queued but no worker finished it in time (none running, or too slow)."""


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    errors: dict[int, str] = field(default_factory=dict)

    def add(self, result: dict[str, Any]) -> None:
        self.done += len(result.get("done", []))
        self.skipped += len(result.get("skipped", []))
        failed = result.get("failed", {})
        self.failed += len(failed)
        self.errors.update({int(k): v for k, v in failed.items()})

    def as_dict(self) -> dict[str, int]:
        return {"done": self.done, "failed": self.failed, "skipped": self.skipped}


def _chunks(items: Sequence[WorkItem], size: int) -> Iterator[Sequence[WorkItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _timed_out(what: str, timeout: float) -> WaitTimedOut:
    return WaitTimedOut(
        f"{what} did not finish within {timeout:.0f}s; is a worker running (`vitrine "
        "worker`)? Queued work stays queued: rerun to wait again."
    )


def run_chunks(
    items: Sequence[WorkItem],
    *,
    batch_size: int,
    description: str,
    model_key: str | None = None,
    task: str | None = None,
    queue: str | None = None,
    max_in_flight: int = 0,
    timeout: float = 3600.0,
    progress: ProgressFactory = no_progress,
) -> Summary:
    """Publish `items` as batch tasks (one forward pass each) and wait for every one.
    `model_key`: re-embed with that model (backfill queue); `task`: another backfill task
    that takes the items alone (`vitrine.rehash_batch`); `queue`: another queue than the
    task's own (a bench's private worker)."""
    summary = Summary()
    window: deque[tuple[AsyncResult, int]] = deque()
    with progress(description, len(items)) as tick:

        def collect() -> None:
            result, size = window.popleft()
            try:
                value = result.get(timeout=timeout, propagate=False)
            except CeleryTimeoutError:
                raise _timed_out("a batch", timeout) from None
            if isinstance(value, dict):
                summary.add(value)
            else:  # the task itself failed; its images were marked failed by the worker
                summary.failed += size
            tick(size)

        for chunk in _chunks(items, batch_size):
            payload = [{"image_id": i.image_id, "uri": i.uri} for i in chunk]
            kwargs: dict[str, object]
            if task is not None:
                name, kwargs, home = task, {"items": payload}, BACKFILL_QUEUE
            elif model_key is None:
                name, kwargs, home = INGEST_BATCH_TASK, {"items": payload}, UPLOADS_QUEUE
            else:
                name, home = EMBED_BATCH_TASK, BACKFILL_QUEUE
                kwargs = {"items": payload, "model_key": model_key}
            res = app.send_task(name, kwargs=kwargs, queue=queue or home)
            window.append((res, len(chunk)))
            if max_in_flight and len(window) >= max_in_flight:
                collect()
        while window:
            collect()
    return summary


def process_items(
    ctx: Context,
    items: Sequence[WorkItem],
    *,
    workers: int,
    description: str,
    concurrency: int | None = None,
    batch_size: int | None = None,
    model_key: str | None = None,
    task: str | None = None,
    queue: str | None = None,
    max_in_flight: int = 0,
    progress: ProgressFactory = no_progress,
) -> Summary:
    """Run items through `workers` local worker processes (0: whatever workers are running)."""
    ctx.broker_url()
    with ExitStack() as stack:
        if items and workers > 0:
            try:
                from vitrine.embedded.launcher import running_worker
            except ImportError:
                raise UserError(
                    "this installation cannot start local workers (no `embedded` package): "
                    "give --workers 0 and run `vitrine worker` processes"
                ) from None
            urls = ctx.urls()
            for _ in range(workers):
                stack.enter_context(
                    running_worker(
                        urls,
                        concurrency=concurrency or ctx.settings.worker_concurrency,
                        log_path=ctx.settings.data_dir / "logs" / "worker.log",
                    )
                )
        return run_chunks(
            items,
            batch_size=batch_size or ctx.settings.batch_size,
            description=description,
            model_key=model_key,
            task=task,
            queue=queue,
            max_in_flight=max_in_flight,
            progress=progress,
        )


def publish_uploads(items: Sequence[WorkItem], merchants: Sequence[str]) -> list[AsyncResult]:
    """One `vitrine.ingest` event per registered upload, as the platform sends them (with
    the row's `image_id`: the worker need not register it)."""
    events = [
        UploadEvent(item.uri, merchant, image_id=item.image_id)
        for item, merchant in zip(items, merchants, strict=True)
    ]
    return [submit_upload(**event.kwargs()) for event in events]


def wait_for_events(
    results: Sequence[AsyncResult],
    *,
    timeout: float,
    progress: ProgressFactory = no_progress,
) -> None:
    """Block until every event's task finished (done or failed), ticking as each does.
    Nothing to wait for (every event already received) returns at once: Celery's join of
    an empty set raises StopIteration."""
    if not results:
        return
    with progress("processing", len(results)) as tick:
        try:
            ResultSet(list(results), app=app).join_native(
                timeout=timeout, propagate=False, callback=lambda _id, _value: tick(1)
            )
        except CeleryTimeoutError:
            raise _timed_out("not every upload", timeout) from None

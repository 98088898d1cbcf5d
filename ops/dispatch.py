"""Publishing work in chunks and waiting for it: shared by submit, ingest, backfill and demo.

A bounded window of chunks in flight is what keeps a backfill from starving live
uploads: the queue never holds more than `max_in_flight` backfill chunks, so an upload
waits behind at most that much work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine

from cli.output import CliError, err_console
from db import repository
from pipeline.types import Upload
from worker.celery_app import app
from worker.names import BACKFILL_QUEUE, EMBED_BATCH_TASK, INGEST_BATCH_TASK, UPLOADS_QUEUE
from worker.processing import WorkItem

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """Files named directly are taken as they are (a bad one becomes a failed row);
    directories contribute their image files, recursively, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            raise CliError(f"no such file or directory: {path} (nothing was submitted)")
    if not files:
        raise CliError("no image files found in the given paths (nothing was submitted)")
    return files


def file_uri(path: Path) -> str:
    return path.resolve().as_uri()


def register_uploads(engine: Engine, uploads: Sequence[Upload], chunk: int = 1000) -> list[int]:
    ids: list[int] = []
    for start in range(0, len(uploads), chunk):
        with engine.begin() as conn:
            ids.extend(
                repository.upsert_pending_images(conn, uploads=uploads[start : start + chunk])
            )
    return ids


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

    def as_dict(self) -> dict[str, Any]:
        return {"done": self.done, "failed": self.failed, "skipped": self.skipped}


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def _chunks(items: Sequence[WorkItem], size: int) -> Iterator[Sequence[WorkItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_chunks(
    items: Sequence[WorkItem],
    *,
    batch_size: int,
    description: str,
    model_key: str | None = None,
    max_in_flight: int = 0,
    timeout: float = 3600.0,
    show_progress: bool = True,
) -> Summary:
    """Publish `items` as batch tasks and wait for every one; returns what happened."""
    summary = Summary()
    window: deque[tuple[AsyncResult, int]] = deque()
    with progress_bar() as progress:
        bar = progress.add_task(description, total=len(items), rate="", visible=show_progress)

        def collect() -> None:
            result, size = window.popleft()
            try:
                value = result.get(timeout=timeout, propagate=False)
            except CeleryTimeoutError as exc:
                raise CliError(
                    f"a batch did not finish within {timeout:.0f}s; is a worker running "
                    "(`vitrine worker`)? Queued work stays queued; rerun to wait again."
                ) from exc
            if isinstance(value, dict):
                summary.add(value)
            else:  # the task itself failed; its images were marked failed by the worker
                summary.failed += size
            progress.advance(bar, size)
            elapsed = progress.tasks[bar].elapsed or 0
            done = progress.tasks[bar].completed
            progress.update(bar, rate=f"{done / elapsed:.0f} img/s" if elapsed else "")

        for chunk in _chunks(items, batch_size):
            payload = [{"image_id": i.image_id, "uri": i.uri} for i in chunk]
            if model_key is None:
                res = app.send_task(
                    INGEST_BATCH_TASK, kwargs={"items": payload}, queue=UPLOADS_QUEUE
                )
            else:
                res = app.send_task(
                    EMBED_BATCH_TASK,
                    kwargs={"items": payload, "model_key": model_key},
                    queue=BACKFILL_QUEUE,
                )
            window.append((res, len(chunk)))
            if max_in_flight and len(window) >= max_in_flight:
                collect()
        while window:
            collect()
    return summary


def process_items(
    ctx: Any,
    items: Sequence[WorkItem],
    *,
    workers: int,
    description: str,
    concurrency: int | None = None,
    batch_size: int | None = None,
    model_key: str | None = None,
    max_in_flight: int = 0,
) -> Summary:
    """Run items through `workers` local worker processes (0: whatever workers are running)."""
    from contextlib import ExitStack

    from embedded.launcher import running_worker

    size = batch_size or ctx.settings.batch_size
    with ExitStack() as stack:
        for _ in range(max(0, workers)):
            stack.enter_context(
                running_worker(
                    ctx.urls,
                    concurrency=concurrency or ctx.settings.worker_concurrency,
                    log_path=ctx.settings.data_dir / "logs" / "worker.log",
                )
            )
        return run_chunks(
            items,
            batch_size=size,
            description=description,
            model_key=model_key,
            max_in_flight=max_in_flight,
        )

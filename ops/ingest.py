"""What `submit`, `ingest`, `backfill` and `requeue` do, apart from parsing and printing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from db import repository
from db.types import ImageSummary
from ops.context import Context
from ops.dispatch import Summary, process_items, publish_uploads, wait_for_events
from ops.models import find_model
from ops.progress import ProgressFactory, no_progress
from ops.uploads import register_uploads, stage_local_files
from pipeline.types import Upload
from worker.celery_app import app
from worker.processing import WorkItem


@dataclass(frozen=True)
class Submitted:
    image_ids: list[int]
    images: dict[int, ImageSummary] | None  # with --wait: how each one ended


@dataclass(frozen=True)
class RunReport:
    images: int
    summary: Summary
    model: str | None = None
    activated: bool = False
    index_rebuilt: bool = False  # the model's HNSW index built after the load

    def as_dict(self) -> dict[str, object]:
        extra = (
            {}
            if self.model is None
            else {
                "model": self.model,
                "activated": self.activated,
                "index_rebuilt": self.index_rebuilt,
            }
        )
        return {"images": self.images, **self.summary.as_dict(), **extra}


def staged(ctx: Context, uploads: Sequence[Upload]) -> list[Upload]:
    """The user's local files where workers may read them (see `stage_local_files`)."""
    settings = ctx.settings
    return stage_local_files(uploads, settings.source_policy, settings.uploads / "staged")


def workers_online(ctx: Context) -> bool:
    """Whether any worker answers a ping within two seconds."""
    ctx.broker_url()
    return bool(app.control.ping(timeout=2.0, limit=1))


def submit(
    ctx: Context,
    uploads: Sequence[Upload],
    *,
    wait: bool = False,
    timeout: float = 600.0,
    progress: ProgressFactory = no_progress,
) -> Submitted:
    """Register uploads and publish one event each; with `wait`, until each is done/failed."""
    engine = ctx.engine()
    ctx.broker_url()
    uploads = staged(ctx, uploads)
    ids = register_uploads(engine, uploads)
    items = [WorkItem(image_id=i, uri=u.uri) for i, u in zip(ids, uploads, strict=True)]
    results = publish_uploads(items, [u.merchant_id for u in uploads])
    if not wait:
        return Submitted(image_ids=ids, images=None)
    wait_for_events(results, timeout=timeout, progress=progress)
    with engine.connect() as conn:
        return Submitted(image_ids=ids, images=repository.image_summaries(conn, image_ids=ids))


def ingest(
    ctx: Context,
    uploads: Sequence[Upload],
    *,
    workers: int,
    concurrency: int | None = None,
    batch_size: int | None = None,
    progress: ProgressFactory = no_progress,
) -> RunReport:
    """Bulk load: register every upload, process them in batches, one forward pass each."""
    uploads = staged(ctx, uploads)
    ids = register_uploads(ctx.engine(), uploads)
    items = [WorkItem(image_id=i, uri=u.uri) for i, u in zip(ids, uploads, strict=True)]
    summary = process_items(
        ctx,
        items,
        workers=workers,
        concurrency=concurrency,
        batch_size=batch_size,
        description="ingest",
        progress=progress,
    )
    return RunReport(images=len(items), summary=summary)


def backfill(
    ctx: Context,
    *,
    model: str | None,
    activate: bool,
    workers: int,
    batch_size: int | None = None,
    max_in_flight: int = 4,
    progress: ProgressFactory = no_progress,
) -> RunReport:
    """(Re-)embed every done image lacking rows for `model`; activate it if all succeeded.

    A model that serves no searches yet (not active) loses its HNSW index for the
    duration of a bulk backfill and gets it back built at once, both CONCURRENTLY, so
    live writes never wait: maintaining the graph row by row costs several times more
    (docs/sql.md, "Search at catalog scale"). An interrupted backfill leaves the index
    missing until the next backfill of that model finishes.
    """
    engine = ctx.engine()
    chosen = find_model(engine, model)
    with engine.connect() as conn:
        items = [
            WorkItem(image_id=i, uri=u)
            for i, u in repository.iter_images_missing_embeddings(conn, model_id=chosen.id)
        ]
    # Maintaining the graph row by row: 28 s per 20,000 rows; building it after: 5.6 s.
    rebuild = not chosen.is_active and len(items) >= ctx.settings.backfill_index_after_rows
    if rebuild:
        repository.drop_hnsw_index_concurrently(engine, model_id=chosen.id)
    summary = process_items(
        ctx,
        items,
        workers=workers,
        batch_size=batch_size,
        description=f"backfill {chosen.key}",
        model_key=chosen.key,
        max_in_flight=max_in_flight,
        progress=progress,
    )
    if rebuild:
        with progress(f"index {chosen.key}", 1) as tick:
            repository.build_hnsw_index_concurrently(
                engine, model_id=chosen.id, embedding_dim=chosen.embedding_dim
            )
            tick(1)
    activated = activate and summary.failed == 0
    if activated:
        with engine.begin() as conn:
            repository.activate_model(conn, key=chosen.key)
    return RunReport(len(items), summary, chosen.key, activated, index_rebuilt=rebuild)


def requeue(
    ctx: Context, *, older_than_s: float, workers: int, progress: ProgressFactory = no_progress
) -> RunReport:
    """Send again uploads stuck in pending/processing (their message was lost)."""
    with ctx.engine().connect() as conn:
        stale = repository.stale_images(conn, older_than_s=older_than_s, limit=1_000_000)
    items = [WorkItem(image_id=i, uri=u) for i, u in stale]
    summary = process_items(
        ctx, items, workers=workers if items else 0, description="requeue", progress=progress
    )
    return RunReport(images=len(items), summary=summary)

"""What `submit`, `ingest`, `backfill` and `requeue` do, apart from parsing and printing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vitrine.db import repository
from vitrine.db.types import ImageSummary
from vitrine.ops.context import Context
from vitrine.ops.dispatch import Summary, process_items, publish_uploads, wait_for_events
from vitrine.ops.models import find_model
from vitrine.ops.progress import ProgressFactory, no_progress
from vitrine.ops.uploads import register_uploads, stage_local_files
from vitrine.pipeline.types import Upload
from vitrine.worker.celery_app import app
from vitrine.worker.names import REHASH_BATCH_TASK
from vitrine.worker.processing import WorkItem


@dataclass(frozen=True)
class Received:
    """What recording a command's uploads did: how many were new events, how many had been
    received before (the same merchant, SKU and file: running a command again)."""

    uploads: int
    created: int

    @classmethod
    def of(cls, recorded: Sequence[repository.Recorded]) -> Received:
        return cls(len(recorded), sum(r.created for r in recorded))

    def as_dict(self) -> dict[str, int]:
        return {
            "uploads": self.uploads,
            "created": self.created,
            "already_received": self.uploads - self.created,
        }


@dataclass(frozen=True)
class Submitted:
    image_ids: list[int]
    received: Received
    images: dict[int, ImageSummary] | None  # with --wait: how each one ended


@dataclass(frozen=True)
class RunReport:
    images: int  # images sent for processing
    summary: Summary
    model: str | None = None
    activated: bool = False
    index_rebuilt: bool = False  # the model's HNSW index built after the load
    received: Received | None = None  # ingest: the uploads recorded

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
        uploads = self.received.as_dict() if self.received else {}
        return {**uploads, "images": self.images, **self.summary.as_dict(), **extra}


def staged(ctx: Context, uploads: Sequence[Upload]) -> list[Upload]:
    """The user's local files where workers may read them (see `stage_local_files`)."""
    settings = ctx.settings
    return stage_local_files(uploads, settings.source_policy, settings.uploads)


def unknown_categories(ctx: Context, uploads: Sequence[Upload]) -> list[str]:
    """Declared categories (as sent) that match none of the active model's labels, case
    and spaces aside; they are stored all the same."""
    with ctx.engine().connect() as conn:
        active = repository.active_model(conn)
    if active is None:
        return []
    known = {label.lower() for label in active.labels}
    declared = {u.declared_label for u in uploads if u.declared_label}
    return sorted(d for d in declared if d.strip().lower() not in known)


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
    recorded = register_uploads(engine, uploads)
    ids = [r.image_id for r in recorded]
    # An event received before is not published again, unless it has no result yet.
    todo = [(r, u) for r, u in zip(recorded, uploads, strict=True) if _unfinished(r)]
    items = [WorkItem(image_id=r.image_id, uri=u.uri) for r, u in todo]
    results = publish_uploads(items, [u.merchant_id for _, u in todo])
    received = Received.of(recorded)
    if not wait:
        return Submitted(image_ids=ids, received=received, images=None)
    wait_for_events(results, timeout=timeout, progress=progress)
    with engine.connect() as conn:
        images = repository.image_summaries(conn, image_ids=ids)
    return Submitted(image_ids=ids, received=received, images=images)


def _unfinished(recorded: repository.Recorded) -> bool:
    """A new event, or one received before that has no result yet (its message may have
    been lost: sending it again is harmless)."""
    return recorded.created or recorded.status in ("pending", "processing")


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
    recorded = register_uploads(ctx.engine(), uploads)
    items = [
        WorkItem(image_id=r.image_id, uri=u.uri)
        for r, u in zip(recorded, uploads, strict=True)
        if _unfinished(r)
    ]
    summary = process_items(
        ctx,
        items,
        workers=workers,
        concurrency=concurrency,
        batch_size=batch_size,
        description="ingest",
        progress=progress,
    )
    return RunReport(images=len(items), summary=summary, received=Received.of(recorded))


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


def rehash(
    ctx: Context,
    *,
    workers: int,
    batch_size: int | None = None,
    max_in_flight: int = 4,
    progress: ProgressFactory = no_progress,
) -> RunReport:
    """Measure the perceptual hash and quality again of every done image without a hash
    (a migration cleared those the recipe changed for); resumable like a backfill."""
    with ctx.engine().connect() as conn:
        items = [WorkItem(image_id=i, uri=u) for i, u in repository.images_without_hash(conn)]
    summary = process_items(
        ctx,
        items,
        workers=workers if items else 0,
        batch_size=batch_size,
        description="hashes",
        task=REHASH_BATCH_TASK,
        max_in_flight=max_in_flight,
        progress=progress,
    )
    return RunReport(images=len(items), summary=summary)


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

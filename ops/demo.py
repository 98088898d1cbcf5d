"""`vitrine demo`: a sample catalog through the real pipeline, then what an analyst sees.

Photos are made from Fashion-MNIST test items (the slice shipped in the repo) as large
coloured JPEG/PNG/WebP files on white or transparent backgrounds, then ingested through
Redis and real worker processes exactly like merchant uploads. Scores count the demo's own
uploads only, and neighbours are searched within the demo's shop, so a database that
already holds other catalogs gives the same figures.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

from vitrine.db import repository
from vitrine.db.types import Neighbour
from vitrine.ops.context import Context
from vitrine.ops.dispatch import Summary, process_items
from vitrine.ops.errors import UserError
from vitrine.ops.ingest import staged
from vitrine.ops.pictures import neighbour_sheet
from vitrine.ops.progress import ProgressFactory, no_progress
from vitrine.ops.uploads import file_uri, finish_uploads, register_uploads
from vitrine.pipeline.synthetic.foreign import write_foreign
from vitrine.pipeline.synthetic.photos import write_catalog
from vitrine.pipeline.training.datasets import FashionMNIST, load_fashion_mnist
from vitrine.pipeline.types import Upload
from vitrine.settings import SAMPLE_FASHION_DIR
from vitrine.worker.processing import WorkItem

MERCHANT = "demo-shop"
NEIGHBOURS = 5
PICKS = 3


@dataclass(frozen=True)
class Neighbourhood:
    image_id: int
    true_label: str
    sql: str
    neighbours: list[tuple[Neighbour, str]]  # each with its true class ("?" if not ours)


@dataclass(frozen=True)
class DemoReport:
    images: int
    summary: Summary
    correct: int
    labels: list[tuple[str, int]]
    neighbourhoods: list[Neighbourhood]
    sheet: Path
    wall_seconds: float

    @property
    def same_class(self) -> tuple[int, int]:
        pairs = [(n, label) for h in self.neighbourhoods for n, label in h.neighbours]
        hits = sum(1 for h in self.neighbourhoods for _, t in h.neighbours if t == h.true_label)
        return hits, len(pairs)


#: Default seeds of `vitrine photos`: each style has its own set.
PHOTO_SEEDS = {"merchant": 2024, "studio": 2025, "foreign": 2026}


def write_photos(
    data: FashionMNIST,
    out: Path,
    *,
    n: int,
    seed: int | None = None,
    style: str = "merchant",
    progress: ProgressFactory = no_progress,
) -> Path:
    """Merchant-like (or studio) photos of test items, or photos of foreign things (none of
    the categories, `vitrine.pipeline.synthetic.foreign`), with progress; returns manifest.csv."""
    if style not in PHOTO_SEEDS:
        raise UserError(f"--style must be one of {', '.join(PHOTO_SEEDS)}, not {style!r}")
    seed = PHOTO_SEEDS[style] if seed is None else seed
    if style == "foreign":
        with progress("writing photos", n) as tick:
            return write_foreign(out, n=n, seed=seed, progress=lambda _done: tick(1))
    with progress("writing photos", n) as tick:
        written = 0

        def advance(done: int) -> None:
            nonlocal written
            tick(done - written)
            written = done

        return write_catalog(
            data.x_test, data.y_test, out, n=n, seed=seed, style=style, progress=advance
        )


def _catalog(directory: Path, n: int, seed: int, progress: ProgressFactory) -> list[dict[str, str]]:
    """The demo's photos: reused when a previous run wrote exactly these."""
    manifest = directory / "manifest.csv"
    if manifest.exists():
        with manifest.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if len(rows) == n and all((directory / r["file"]).exists() for r in rows):
            return rows
    write_photos(
        load_fashion_mnist(SAMPLE_FASHION_DIR), directory, n=n, seed=seed, progress=progress
    )
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))


def run_demo(
    ctx: Context,
    *,
    n: int,
    workers: int,
    seed: int,
    out: Path | None,
    progress: ProgressFactory = no_progress,
) -> DemoReport:
    started = time.perf_counter()
    demo_dir = out or ctx.settings.data_dir / "demo"
    catalog = demo_dir / "catalog"
    rows = _catalog(catalog, n, seed, progress)
    photos = finish_uploads(  # events named as the CLI's: a second demo records nothing twice
        [Upload(file_uri(catalog / r["file"]), MERCHANT, r["sku"]) for r in rows],
        merchant=MERCHANT,
    )
    uploads = staged(ctx, photos)
    truth = {u.uri: r["label"] for u, r in zip(uploads, rows, strict=True)}
    engine = ctx.engine()
    ids = [r.image_id for r in register_uploads(engine, uploads)]
    items = [WorkItem(image_id=i, uri=u.uri) for i, u in zip(ids, uploads, strict=True)]
    summary = process_items(ctx, items, workers=workers, description="ingesting", progress=progress)

    uri_of = {i: u.uri for i, u in zip(ids, uploads, strict=True)}
    picks: list[int] = []
    for image_id in ids:  # the first item of each of the first PICKS classes
        if truth[uri_of[image_id]] not in {truth[uri_of[p]] for p in picks}:
            picks.append(image_id)
        if len(picks) == PICKS:
            break
    with engine.connect() as conn:
        predicted = repository.labels_for(conn, image_ids=ids)
        labels = repository.label_counts(conn, image_ids=ids)
        neighbourhoods = [
            Neighbourhood(
                image_id=p,
                true_label=truth[uri_of[p]],
                sql=repository.similar_sql(p, NEIGHBOURS, merchant_id=MERCHANT),
                neighbours=[
                    (nb, truth.get(nb.uri, "?"))
                    for nb in repository.similar(
                        conn, image_id=p, k=NEIGHBOURS, merchant_id=MERCHANT
                    )
                ],
            )
            for p in picks
        ]
    correct = sum(1 for i, got in predicted.items() if got.label == truth[uri_of[i]])
    sheet = neighbour_sheet(
        engine, picks, NEIGHBOURS, demo_dir / "neighbours.png", merchant_id=MERCHANT
    )
    return DemoReport(
        images=len(ids),
        summary=summary,
        correct=correct,
        labels=labels,
        neighbourhoods=neighbourhoods,
        sheet=sheet,
        wall_seconds=round(time.perf_counter() - started, 1),
    )

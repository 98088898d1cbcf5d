"""`vitrine demo`: a sample catalog through the real pipeline, then what an analyst sees.

Photos are made from Fashion-MNIST test items (the slice shipped in the repo) as large
coloured JPEG/PNG/WebP files on white or transparent backgrounds, then ingested through
Redis and real worker processes exactly like merchant uploads.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import typer
from rich.table import Table

from cli.output import emit_json, out_console
from db import repository
from ops.context import open_context
from ops.dispatch import file_uri, process_items, progress_bar, register_uploads
from ops.pictures import neighbour_sheet
from pipeline.datasets import FashionMNIST, load_fashion_mnist
from pipeline.photos import write_catalog
from pipeline.types import Upload
from worker.processing import WorkItem
from worker.settings import SAMPLE_FASHION_DIR

MERCHANT = "demo-shop"


def write_photos(data: FashionMNIST, out: Path, *, n: int, seed: int) -> Path:
    """Merchant-like photos of test items, with a progress bar; returns manifest.csv."""
    with progress_bar() as progress:
        bar = progress.add_task("writing photos", total=n, rate="")
        return write_catalog(
            data.x_test,
            data.y_test,
            out,
            n=n,
            seed=seed,
            progress=lambda done: progress.update(bar, completed=done),
        )


def _catalog(directory: Path, n: int, seed: int) -> list[dict[str, str]]:
    manifest = directory / "manifest.csv"
    if manifest.exists():
        with manifest.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if len(rows) == n and all((directory / r["file"]).exists() for r in rows):
            return rows
    write_photos(load_fashion_mnist(SAMPLE_FASHION_DIR), directory, n=n, seed=seed)
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))


def demo(
    n: int = typer.Option(300, help="How many sample product photos."),
    workers: int = typer.Option(1, help="Worker processes to start."),
    seed: int = typer.Option(7),
    out: Path = typer.Option(None, help="Where photos and PNGs go (default: DATA_DIR/demo)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Write a sample catalog, ingest it, print labels and nearest neighbours."""
    started = time.perf_counter()
    ctx = open_context()
    demo_dir = out or ctx.settings.data_dir / "demo"
    catalog = demo_dir / "catalog"
    rows = _catalog(catalog, n, seed)
    uploads = [
        Upload(uri=file_uri(catalog / r["file"]), merchant_id=MERCHANT, sku=r["sku"]) for r in rows
    ]
    truth = {u.uri: r["label"] for u, r in zip(uploads, rows, strict=True)}
    ids = register_uploads(ctx.engine, uploads)
    items = [WorkItem(image_id=i, uri=u.uri) for i, u in zip(ids, uploads, strict=True)]
    summary = process_items(ctx, items, workers=workers, description="ingesting")

    with ctx.engine.connect() as conn:
        counts = conn.exec_driver_sql(
            "SELECT label, count(*) FROM image_labels WHERE image_id = ANY(%(ids)s) "
            "GROUP BY label ORDER BY count(*) DESC",
            {"ids": ids},
        ).all()
        correct = sum(
            1
            for uri, label in conn.exec_driver_sql(
                "SELECT uri, label FROM image_labels WHERE image_id = ANY(%(ids)s)", {"ids": ids}
            ).all()
            if truth.get(uri) == label
        )
        picks, seen = [], set()
        for image_id, upload in zip(ids, uploads, strict=True):
            if truth[upload.uri] not in seen:
                seen.add(truth[upload.uri])
                picks.append(image_id)
            if len(picks) == 3:
                break
        neighbours = {p: repository.similar(conn, image_id=p, k=5) for p in picks}

    uri_by_id = {i: u.uri for i, u in zip(ids, uploads, strict=True)}
    same_class = sum(
        1 for p, ns in neighbours.items() for nb in ns if truth.get(nb.uri) == truth[uri_by_id[p]]
    )
    png = neighbour_sheet(ctx.engine, picks, 5, demo_dir / "neighbours.png")
    wall = time.perf_counter() - started
    result = {
        "images": len(ids),
        **summary.as_dict(),
        "accuracy_vs_truth": round(correct / max(1, len(ids)), 4),
        "labels": {label: count for label, count in counts},
        "neighbours_same_class": f"{same_class}/{sum(len(v) for v in neighbours.values())}",
        "contact_sheet": str(png),
        "wall_seconds": round(wall, 1),
    }
    if json_out:
        emit_json(result)
        return
    table = Table("label", "images", title=f"{len(ids)} sample uploads by predicted label")
    for label, count in counts:
        table.add_row(label, str(count))
    out_console.print(table)
    for p in picks:
        out_console.print(
            f"\nnearest neighbours of image {p} (true class: {truth[uri_by_id[p]]}), found by:"
        )
        out_console.print(f"  {repository.similar_sql(p, 5)}", style="cyan", highlight=False)
        t = Table("image", "predicted label", "true class", "cosine distance")
        for nb in neighbours[p]:
            t.add_row(
                str(nb.image_id), nb.label or "", truth.get(nb.uri, "?"), f"{nb.distance:.4f}"
            )
        out_console.print(t)
    out_console.print(
        f"\nlabels match the items' true class for {correct}/{len(ids)} uploads; "
        f"neighbours of the same class: {result['neighbours_same_class']}"
    )
    out_console.print(f"contact sheet: {png}")
    out_console.print(f"demo finished in {wall:.0f}s")

"""`vitrine eval`: accuracy, per-class precision/recall and retrieval quality of a model.

Raw test arrays measure the network; `--images/--manifest` runs the full upload path
(decode, orientation, background, trimming) on files, so the gap between the two is the
cost of real photos.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection

from db.engine import make_engine
from ops.context import Context
from ops.data import fashion_mnist
from ops.errors import UserError
from ops.evaluation_report import write_report
from ops.models import check_model_dir
from pipeline.batch import failure_reason, prepare_batch
from pipeline.datasets import FashionMNIST
from pipeline.evaluate import classification_report, exact_neighbours, retrieval_metrics
from pipeline.model import LoadedModel, load_model_dir
from pipeline.preprocess import raw_to_model_input
from pipeline.types import ImageLimits


@dataclass(frozen=True)
class PhotoSet:
    """A folder of photos and the CSV (columns file,label) that says what each shows."""

    images: Path
    manifest: Path


def _read_labels(photos: PhotoSet, labels: tuple[str, ...]) -> list[tuple[Path, int]]:
    manifest = photos.manifest
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = {"file", "label"} - set(reader.fieldnames or [])
            if missing:
                raise UserError(
                    f"{manifest}: header lacks column(s) {sorted(missing)}; need file,label"
                )
            rows = []
            for line, row in enumerate(reader, start=2):
                if row["label"] not in labels:
                    raise UserError(
                        f"{manifest}:{line}: unknown label {row['label']!r}; "
                        f"labels are {', '.join(labels)}"
                    )
                rows.append((photos.images / row["file"], labels.index(row["label"])))
    except OSError as exc:
        raise UserError(f"cannot read {manifest}: {exc.strerror}") from None
    if not rows:
        raise UserError(f"{manifest} lists no images")
    return rows


def _named(name: str, reason: str) -> str:
    return reason if name in reason else f"{name}: {reason}"


def photo_inputs(
    model: LoadedModel, photos: PhotoSet, limits: ImageLimits
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Preprocess every listed file the way a worker would; unreadable ones are reported."""
    rows = _read_labels(photos, model.spec.labels)
    batch = prepare_batch(
        range(len(rows)), lambda i: rows[i][0].read_bytes(), model.spec.preprocess, limits
    )
    problems = [_named(rows[i][0].name, failure_reason(exc)) for i, exc in batch.failures.items()]
    if not batch.keys:
        raise UserError(f"no image in {photos.manifest} could be read: {problems[:3]}")
    return batch.arrays, np.array([rows[i][1] for i in batch.keys]), problems


def evaluate(
    model: LoadedModel,
    *,
    data: FashionMNIST | None,
    photos: PhotoSet | None,
    limits: ImageLimits,
    retrieval: bool,
    k: int,
    gallery_limit: int | None,
    hnsw_conn: Connection | None,
    report_dir: Path | None,
) -> dict[str, Any]:
    """Classification (and, on Fashion-MNIST, retrieval) metrics as one JSON-able dict."""
    spec = model.spec
    result: dict[str, Any] = {"model": spec.key}
    if photos is not None:
        x, y, problems = photo_inputs(model, photos, limits)
        result["source"] = {
            "images": str(photos.images),
            "manifest": str(photos.manifest),
            "unreadable": problems,
        }
    elif data is not None:
        x, y = raw_to_model_input(data.x_test, spec.preprocess), data.y_test
        result["source"] = {"data": "fashion-mnist", "fingerprint": data.fingerprint}
    else:
        raise UserError("give --data DIR (Fashion-MNIST IDX files) or --images/--manifest")
    started = time.perf_counter()
    probs, embeddings = model.forward(x)
    result["forward_images_per_s"] = round(len(x) / (time.perf_counter() - started), 1)
    report = classification_report(y, probs.argmax(axis=1), spec.labels)
    result.update(report)

    if retrieval and data is not None and photos is None:
        result["retrieval"] = _retrieval(model, data, embeddings, k, gallery_limit, hnsw_conn)
    if report_dir is not None:
        write_report(report_dir, report, spec.labels, x, y, embeddings, probs)
        result["report"] = str(report_dir)
    return result


def _retrieval(
    model: LoadedModel,
    data: FashionMNIST,
    queries: np.ndarray,
    k: int,
    limit: int | None,
    conn: Connection | None,
) -> dict[str, Any]:
    """Test images as queries against the training images as gallery: exact, then HNSW."""
    gx, gy = data.x_train, data.y_train
    if limit:
        gx, gy = gx[:limit], gy[:limit]
    _, gallery = model.forward(raw_to_model_input(gx, model.spec.preprocess))
    counts = dict(Counter(int(v) for v in gy))
    exact = retrieval_metrics(gy[exact_neighbours(queries, gallery, k)], data.y_test, counts)
    out: dict[str, Any] = {"k": k, "gallery": int(len(gy)), "queries": int(len(queries))}
    out["exact"] = {f"precision_at_{k}": exact["precision_at_k"], f"map_at_{k}": exact["map_at_k"]}
    out[f"precision_at_{k}"] = exact["precision_at_k"]
    out[f"map_at_{k}"] = exact["map_at_k"]
    if conn is not None:
        from db.retrieval_eval import hnsw_neighbour_labels

        started = time.perf_counter()
        labels = hnsw_neighbour_labels(
            conn, gallery=gallery, gallery_labels=gy, queries=queries, k=k
        )
        hnsw = retrieval_metrics(labels, data.y_test, counts)
        out["hnsw"] = {
            f"precision_at_{k}": hnsw["precision_at_k"],
            f"map_at_{k}": hnsw["map_at_k"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        out[f"precision_at_{k}"] = hnsw["precision_at_k"]
        out[f"map_at_{k}"] = hnsw["map_at_k"]
    return out


@dataclass(frozen=True)
class EvalRequest:
    model: Path | None = None
    data: Path | None = None
    images: Path | None = None
    manifest: Path | None = None
    retrieval: bool = True
    hnsw: bool = True
    k: int = 10
    gallery_limit: int | None = None
    report: Path | None = None


def run_eval(ctx: Context, req: EvalRequest) -> dict[str, Any]:
    """`vitrine eval`: checks cheapest first (arguments, model dir, data), then measures.

    Only retrieval through HNSW needs the database (temporary tables, nothing stored).
    """
    if (req.images is None) != (req.manifest is None):
        raise UserError("--images and --manifest go together")
    model_dir = req.model or ctx.settings.model_dir
    check_model_dir(model_dir)
    photos = PhotoSet(req.images, req.manifest) if req.images and req.manifest else None
    data = None if photos else fashion_mnist(req.data, option="--data")
    loaded = load_model_dir(model_dir)

    def run(conn: Connection | None) -> dict[str, Any]:
        return evaluate(
            loaded,
            data=data,
            photos=photos,
            limits=ctx.settings.image_limits,
            retrieval=req.retrieval,
            k=req.k,
            gallery_limit=req.gallery_limit,
            hnsw_conn=conn,
            report_dir=req.report,
        )

    if not (req.retrieval and req.hnsw and data is not None):
        return run(None)
    engine = make_engine(ctx.database_url())
    try:
        with engine.begin() as conn:
            return run(conn)
    finally:
        engine.dispose()

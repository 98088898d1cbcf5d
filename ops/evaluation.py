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

from vitrine.db.engine import make_engine
from vitrine.ops.context import Context
from vitrine.ops.data import fashion_mnist
from vitrine.ops.errors import UserError
from vitrine.ops.evaluation_report import write_report
from vitrine.ops.models import check_model_dir
from vitrine.ops.uploads import image_files
from vitrine.pipeline.evaluation.evaluate import (
    classification_report,
    exact_neighbours,
    retrieval_metrics,
)
from vitrine.pipeline.evaluation.shop_floor import roc_auc
from vitrine.pipeline.inference.batch import failure_reason, prepare_batch
from vitrine.pipeline.inference.model import LoadedModel, load_model_dir
from vitrine.pipeline.inference.preprocess import raw_to_model_input
from vitrine.pipeline.synthetic.foreign import FOREIGN_LABEL
from vitrine.pipeline.training.datasets import FashionMNIST
from vitrine.pipeline.types import ImageLimits


@dataclass(frozen=True)
class PhotoSet:
    """A folder of photos and, optionally, the CSV (columns file,label) that says what each
    shows: one of the model's labels, or `foreign` (none of its categories)."""

    images: Path
    manifest: Path | None


#: A manifest row's label for a photo of none of the model's categories.
FOREIGN = FOREIGN_LABEL


def _read_labels(photos: PhotoSet, labels: tuple[str, ...]) -> list[tuple[Path, int]]:
    """(file, label index) per row; -1 for a `foreign` row, -2 for every file of a folder
    without a manifest (nothing known about it)."""
    manifest = photos.manifest
    if manifest is None:
        files = image_files(photos.images)
        if not files:
            raise UserError(f"no image files in {photos.images}")
        return [(f, -2) for f in files]
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
                if row["label"] == FOREIGN:
                    rows.append((photos.images / row["file"], -1))
                    continue
                if row["label"] not in labels:
                    raise UserError(
                        f"{manifest}:{line}: unknown label {row['label']!r}; "
                        f"labels are {', '.join(labels)} (or {FOREIGN})"
                    )
                rows.append((photos.images / row["file"], labels.index(row["label"])))
    except OSError as exc:
        raise UserError(f"cannot read {manifest}: {exc.strerror}") from None
    if not rows:
        raise UserError(f"{manifest} lists no images")
    return rows


def _named(name: str, reason: str) -> str:
    return reason if name in reason else f"{name}: {reason}"


@dataclass(frozen=True)
class PhotoInputs:
    x: np.ndarray  # model inputs
    y: np.ndarray  # label index; -1 foreign, -2 not known
    views: np.ndarray | None  # object views, when the model has an unknown detector
    problems: list[str]


def photo_inputs(model: LoadedModel, photos: PhotoSet, limits: ImageLimits) -> PhotoInputs:
    """Preprocess every listed file the way a worker would; unreadable ones are reported."""
    rows = _read_labels(photos, model.spec.labels)
    batch = prepare_batch(
        range(len(rows)),
        lambda i: rows[i][0].read_bytes(),
        model.spec.preprocess,
        limits,
        view_size=model.view_size,
    )
    problems = [_named(rows[i][0].name, failure_reason(exc)) for i, exc in batch.failures.items()]
    if not batch.keys:
        raise UserError(
            f"no image in {photos.manifest or photos.images} could be read: {problems[:3]}"
        )
    y = np.array([rows[i][1] for i in batch.keys])
    return PhotoInputs(batch.arrays, y, batch.views, problems)


def unknown_report(model: LoadedModel, inputs: PhotoInputs) -> dict[str, Any]:
    """How many photos the model flags as none of its categories, and (when the labels
    say which photos are foreign) how well: recall on foreign, false alarms on the rest,
    AUROC of the score."""
    scores = model.unknown_scores(inputs.x, inputs.views)
    if model.unknown is None or scores is None:
        return {"unknown_rate": None, "unknown": "this model has no unknown detector"}
    y = inputs.y
    flagged = scores > model.unknown.threshold
    out: dict[str, Any] = {"unknown_rate": round(float(flagged.mean()), 4)}
    foreign, known = y == -1, y >= 0
    if foreign.any():
        out["unknown_recall"] = round(float(flagged[foreign].mean()), 4)
    if known.any():
        out["unknown_false_rate"] = round(float(flagged[known].mean()), 4)
    if foreign.any() and known.any():
        both = foreign | known
        out["unknown_auroc"] = round(roc_auc(scores[both], foreign[both]), 4)
    out["unknown_threshold"] = round(model.unknown.threshold, 6)
    return out


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
        inputs = photo_inputs(model, photos, limits)
        result["source"] = {
            "images": str(photos.images),
            "manifest": str(photos.manifest) if photos.manifest else None,
            "unreadable": inputs.problems,
        }
        result.update(unknown_report(model, inputs))
        keep = inputs.y >= 0  # accuracy: on the photos of the model's own categories
        if not keep.any():
            result["n"] = int(len(inputs.y))
            return result
        x, y = inputs.x[keep], inputs.y[keep]
    elif data is not None:
        if not spec.is_fashion_mnist:
            raise UserError(
                f"{spec.key} has classes of its own, not Fashion-MNIST's: score it on your "
                "photos with --images DIR (and --manifest CSV of file,label)"
            )
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
        from vitrine.db.retrieval_eval import hnsw_neighbour_labels

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
    if req.manifest is not None and req.images is None:
        raise UserError("--manifest goes with --images (the folder its files are in)")
    model_dir = req.model or ctx.settings.model_dir
    check_model_dir(model_dir)
    photos = None
    if req.images is not None:
        manifest = req.manifest
        if manifest is None and (req.images / "manifest.csv").is_file():
            manifest = req.images / "manifest.csv"
        photos = PhotoSet(req.images, manifest)
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

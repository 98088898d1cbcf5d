"""`vitrine eval`: accuracy, per-class precision/recall and retrieval quality of a model.

Raw test arrays measure the network; `--images/--manifest` runs the full upload path
(decode, orientation, background, trimming) on files, so the gap between the two is the
cost of real photos.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cli.output import CliError
from pipeline.datasets import FashionMNIST
from pipeline.evaluate import classification_report, exact_neighbours, retrieval_metrics
from pipeline.model import LoadedModel
from pipeline.preprocess import BadImageError, preprocess_bytes, raw_to_model_input
from pipeline.report import confusion_matrix_image, contact_sheet
from worker.settings import get_settings


def _read_manifest(images: Path, manifest: Path, labels: tuple[str, ...]) -> list[tuple[Path, int]]:
    try:
        with manifest.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"file", "label"} - set(reader.fieldnames or [])
            if missing:
                raise CliError(
                    f"{manifest}: header lacks column(s) {sorted(missing)}; need file,label"
                )
            rows = []
            for line, row in enumerate(reader, start=2):
                if row["label"] not in labels:
                    raise CliError(
                        f"{manifest}:{line}: unknown label {row['label']!r}; "
                        f"labels are {', '.join(labels)}"
                    )
                rows.append((images / row["file"], labels.index(row["label"])))
    except OSError as exc:
        raise CliError(f"cannot read {manifest}: {exc.strerror}") from exc
    if not rows:
        raise CliError(f"{manifest} lists no images")
    return rows


def photos_inputs(
    model: LoadedModel, images: Path, manifest: Path
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Preprocess every listed file the way a worker would; unreadable files are errors."""
    settings = get_settings()
    rows = _read_manifest(images, manifest, model.spec.labels)
    arrays, ys, problems = [], [], []
    for path, y in rows:
        try:
            array, _ = preprocess_bytes(
                path.read_bytes(),
                model.spec.preprocess,
                max_pixels=settings.max_image_pixels,
                max_bytes=settings.max_file_bytes,
            )
        except FileNotFoundError:
            problems.append(f"{path.name}: file not found")
            continue
        except BadImageError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        arrays.append(array)
        ys.append(y)
    if not arrays:
        raise CliError(f"no image in {manifest} could be read: {problems[:3]}")
    return np.stack(arrays), np.array(ys), problems


def evaluate(
    model: LoadedModel,
    *,
    data: FashionMNIST | None,
    images: Path | None,
    manifest: Path | None,
    retrieval: bool,
    k: int,
    gallery_limit: int | None,
    hnsw_conn: Any | None,
    report_dir: Path | None,
) -> dict[str, Any]:
    spec = model.spec
    result: dict[str, Any] = {"model": spec.key}
    if images is not None or manifest is not None:
        if images is None or manifest is None:
            raise CliError("--images and --manifest go together")
        x, y, problems = photos_inputs(model, images, manifest)
        result["source"] = {
            "images": str(images),
            "manifest": str(manifest),
            "unreadable": problems,
        }
        data = None
    else:
        if data is None:
            raise CliError("give --data DIR (Fashion-MNIST IDX files) or --images/--manifest")
        x, y = raw_to_model_input(data.x_test, spec.preprocess), data.y_test
        result["source"] = {"data": "fashion-mnist", "fingerprint": data.fingerprint}
    started = time.perf_counter()
    probs, embeddings = model.forward(x)
    result["forward_images_per_s"] = round(len(x) / (time.perf_counter() - started), 1)
    report = classification_report(y, probs.argmax(axis=1), spec.labels)
    result.update(report)

    if retrieval and data is not None:
        result["retrieval"] = _retrieval(model, data, embeddings, k, gallery_limit, hnsw_conn)
    if report_dir is not None:
        _write_report(report_dir, report, spec.labels, x, y, embeddings, probs)
        result["report"] = str(report_dir)
    return result


def _retrieval(
    model: LoadedModel, data: Any, queries: np.ndarray, k: int, limit: int | None, conn: Any
) -> dict[str, Any]:
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


def _write_report(
    directory: Path,
    report: dict[str, Any],
    labels: tuple[str, ...],
    x: np.ndarray,
    y: np.ndarray,
    embeddings: np.ndarray,
    probs: np.ndarray,
) -> None:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    confusion_matrix_image(np.array(report["confusion_matrix"]), labels).save(
        directory / "confusion_matrix.png"
    )

    def tile(i: int) -> Image.Image:
        arr = x[i, ..., 0] if x.shape[-1] == 1 else x[i]
        scaled = np.clip(arr / max(float(arr.max()), 1e-6) * 255, 0, 255).astype(np.uint8)
        return Image.fromarray(255 - scaled if x.shape[-1] == 1 else scaled)

    rng = np.random.default_rng(0)
    queries = rng.choice(len(x), size=min(8, len(x)), replace=False)
    neighbours = exact_neighbours(embeddings[queries], embeddings, 7)
    rows = []
    for q, ns in zip(queries, neighbours, strict=True):
        ns = [n for n in ns if n != q][:6]
        rows.append(
            ((tile(q), f"{labels[y[q]]}"), [(tile(n), f"{labels[probs[n].argmax()]}") for n in ns])
        )
    contact_sheet(rows, thumb=96).save(directory / "neighbours.png")

"""The pictures `vitrine eval --report DIR` writes: a confusion matrix and neighbours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitrine.pipeline.evaluation.evaluate import exact_neighbours
from vitrine.pipeline.evaluation.report import Tile, confusion_matrix_image, contact_sheet


def _tile(x: np.ndarray, i: int) -> Image.Image:
    """Model input back to something people recognise (dark product on white)."""
    grey = x.shape[-1] == 1
    arr = x[i, ..., 0] if grey else x[i]
    scaled = np.clip(arr / max(float(arr.max()), 1e-6) * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(255 - scaled if grey else scaled)


def write_report(
    directory: Path,
    report: dict[str, Any],
    labels: tuple[str, ...],
    x: np.ndarray,
    y: np.ndarray,
    embeddings: np.ndarray,
    probs: np.ndarray,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    confusion_matrix_image(np.array(report["confusion_matrix"]), labels).save(
        directory / "confusion_matrix.png"
    )
    rng = np.random.default_rng(0)
    queries = rng.choice(len(x), size=min(8, len(x)), replace=False)
    neighbours = exact_neighbours(embeddings[queries], embeddings, 7)
    rows: list[tuple[Tile, list[Tile]]] = []
    for q, found in zip(queries, neighbours, strict=True):
        others = [n for n in found if n != q][:6]
        predicted = [(_tile(x, n), labels[int(probs[n].argmax())]) for n in others]
        rows.append(((_tile(x, q), labels[int(y[q])]), predicted))
    contact_sheet(rows, thumb=96).save(directory / "neighbours.png")

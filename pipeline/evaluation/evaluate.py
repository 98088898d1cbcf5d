"""Metrics with known definitions, so numbers in model.json and `vitrine eval` mean one thing.

Retrieval: every query's k nearest gallery items by cosine distance; `precision_at_k` is
the share of them in the query's class; `map_at_k` averages AP@k, where
AP@k = sum_i P@i * rel_i / min(k, R) and R is how many gallery items share the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return matrix


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    actual = matrix.sum(axis=1).astype(float)
    per_class = {
        label: {
            "precision": round(float(tp[i] / predicted[i]), 4) if predicted[i] else 0.0,
            "recall": round(float(tp[i] / actual[i]), 4) if actual[i] else 0.0,
            "support": int(actual[i]),
        }
        for i, label in enumerate(labels)
    }
    total = matrix.sum()
    return {
        "accuracy": round(float(tp.sum() / total), 4) if total else 0.0,
        "n": int(total),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def exact_neighbours(
    queries: np.ndarray, gallery: np.ndarray, k: int, *, chunk: int = 1024
) -> np.ndarray:
    """Indices of the k most cosine-similar gallery rows for each query (rows L2-normalised)."""
    k = min(k, len(gallery))
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ gallery.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out[start : start + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def retrieval_metrics(
    neighbour_labels: np.ndarray, query_labels: np.ndarray, class_counts: dict[int, int]
) -> dict[str, float]:
    """precision@k and mAP@k from the labels of each query's ranked neighbours."""
    neighbour_labels = np.asarray(neighbour_labels)
    if neighbour_labels.size == 0:
        return {"precision_at_k": 0.0, "map_at_k": 0.0}
    k = neighbour_labels.shape[1]
    relevant = neighbour_labels == np.asarray(query_labels)[:, None]
    precision_at_i = np.cumsum(relevant, axis=1) / np.arange(1, k + 1)
    denominators = np.array([min(k, class_counts.get(int(q), 0)) or 1 for q in query_labels])
    ap = (precision_at_i * relevant).sum(axis=1) / denominators
    return {
        "precision_at_k": round(float(relevant.mean()), 4),
        "map_at_k": round(float(ap.mean()), 4),
    }

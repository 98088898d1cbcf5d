"""A model's own "none of our classes" detector, fitted on its training photos.

A model of a merchant's own classes (`vitrine train --data`) must say "unknown" for a
photo of none of them, as the shipped Fashion-MNIST model does
(`vitrine.pipeline.inference.unknown`). Its catalogue is its training photos, so the
detector is fitted on them: EfficientNet-Lite0's features of each photo's object view,
at most 512 centroids (one per `PHOTOS_PER_CENTROID` photos), and a threshold that flags
`unknown.TARGET_RATE` of the photos when each fold is scored against centroids made
from the other folds. Scored against centroids made with it, a photo is its own
neighbour: the threshold would come out so low that most new uploads were flagged.
A lite0 model reads the features from its own forward pass; any other model's detector
runs the backbone on the object view beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vitrine.pipeline.inference import unknown
from vitrine.pipeline.types import ModelSpec

Log = Callable[[str], None]

#: Folds for the threshold: each photo scored against centroids made without it.
FOLDS = 5
#: Photos per centroid (a photo's nearest neighbours, not a class average, are what
#: "like the catalogue" means; 512 centroids at most, as the Fashion-MNIST detector has).
PHOTOS_PER_CENTROID = 2


def fit_and_save(
    spec: ModelSpec,
    out_dir: Path,
    features: np.ndarray,
    *,
    seed: int,
    from_model: bool,
    log: Log,
) -> ModelSpec:
    """Give the model in `out_dir` its "none of our classes" detector, fitted on its own
    training photos' backbone `features` (`fit_detector`); `from_model`: the model's own
    forward pass gives the features (lite0), else the detector runs the backbone on the
    object view beside the model (the CNN). Returns the spec as saved."""
    centroids, threshold = fit_detector(features, seed=seed)
    settings = {
        **({"features": unknown.FEATURES_FROM_MODEL} if from_model else {}),
        "view_size": unknown.VIEW_SIZE if not from_model else int(spec.preprocess.size),
        "threshold": threshold,
        "centroids": int(len(centroids)),
        "reference_photos": int(len(features)),
        "target_rate": unknown.TARGET_RATE,
        "folds": FOLDS,
        "seed": seed,
    }
    unknown.save(out_dir, centroids, settings)
    log(f"unknown detector: {len(centroids)} centroids, threshold {threshold:.4f}")
    return ModelSpec.from_dict({**spec.to_dict(), "unknown": settings})


def view_features(images: np.ndarray, log: Log, *, size: int = unknown.VIEW_SIZE) -> np.ndarray:
    """Each photo's unit-length backbone features with progress (about 6 ms a photo):
    uint8 object views, or a lite0 model's input (already scaled)."""
    backbone = unknown.Backbone.pretrained(size)
    scaled = images.dtype != np.uint8
    step = max(1, len(images) // 10)
    parts = []
    for start in range(0, len(images), step):
        chunk = images[start : start + step]
        parts.append(backbone.features_of_input(chunk) if scaled else backbone.features(chunk))
        log(f"backbone features: {min(start + step, len(images))}/{len(images)} photos")
    return np.concatenate(parts)


def centroid_count(photos: int) -> int:
    """Centroids for `photos` reference photos (`PHOTOS_PER_CENTROID` each, 512 at most)."""
    return max(1, min(unknown.CENTROIDS, photos // PHOTOS_PER_CENTROID))


def fit_detector(features: np.ndarray, *, seed: int) -> tuple[np.ndarray, float]:
    """Centroids of every photo's features, and the threshold that flags
    `unknown.TARGET_RATE` of the photos when each fold is scored against centroids made
    from the other folds: a photo is never its own reference, as a new upload is not."""
    order = np.random.default_rng(seed).permutation(len(features))
    folds = np.array_split(order, min(FOLDS, len(features)))
    scores = []
    for fold in folds:
        rest = np.setdiff1d(order, fold)
        if not len(rest):
            continue
        centroids = unknown.spherical_kmeans(features[rest], centroid_count(len(rest)), seed=seed)
        scores.append(1.0 - (features[fold] @ centroids.T).max(axis=1))
    centroids = unknown.spherical_kmeans(features, centroid_count(len(features)), seed=seed)
    if not scores:
        return centroids, 1.0
    threshold = float(np.quantile(np.concatenate(scores), 1.0 - unknown.TARGET_RATE))
    return centroids, threshold

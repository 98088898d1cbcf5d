"""A merchant's own taxonomy on EfficientNet-Lite0's ImageNet features (`train --backbone lite0`).

The CNN trained from scratch sees a 28x28 grey thumbnail and only the merchant's few
photos; EfficientNet-Lite0 has seen ImageNet and looks at the object's colour view. On
the same photos its features with a linear head beat the CNN by 3 to 6 points at 50 and
200 photos per class (docs/training.md, "A backbone that knows the world"). So this
recipe freezes the backbone, computes each photo's features once (the unknown detector's
own network and view, run by XNNPACK: about 6 ms a photo), trains vitrine's heads on them
with the one training loop (`train.train_folder`: epochs, ETA, checkpoints, resume), then puts
the heads onto the backbone as one network (`model.build_lite0_model`). Served, that
network's forward pass gives the label, the embedding and the features; the features
feed the model's own "none of our categories" detector, fitted here on the same photos:
centroids of their features and a threshold that flags `unknown.TARGET_RATE` of them
when each is scored against centroids made without it (five folds). So a merchant's
model says "unknown" for what is none of their classes, with no second backbone pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitrine.pipeline.inference import efficientnet_lite, unknown
from vitrine.pipeline.inference.model import (
    LITE0,
    backbone_key,
    build_feature_head,
    build_lite0_model,
)
from vitrine.pipeline.types import ModelSpec, PreprocessSpec

Log = Callable[[str], None]

#: The object view's side: the unknown detector's, where its AUROC was measured.
VIEW_SIZE = unknown.VIEW_SIZE
#: Folds for the detector's threshold: each photo scored against centroids made without it.
FOLDS = 5
#: Photos per centroid (a photo's nearest neighbours, not a class average, are what
#: "like the catalogue" means; 512 centroids at most, as the Fashion-MNIST detector has).
PHOTOS_PER_CENTROID = 2


def is_lite0(backbone: str | None) -> bool:
    """Whether `--backbone` names this recipe (`lite0`, `efficientnet-lite0`, any case)."""
    return backbone is not None and backbone_key(backbone) in (LITE0, "efficientnetlite0")


def preprocess_spec(input_size: int | None) -> PreprocessSpec:
    """The object view at `input_size` px (default 160), scaled as the backbone was
    trained: (x - 127) / 128."""
    return PreprocessSpec(
        size=input_size or VIEW_SIZE,
        channels=3,
        invert=False,
        autocontrast=False,
        scale=1.0 / 128.0,
        offset=-127.0 / 128.0,
        view=True,
    )


@dataclass(frozen=True)
class Lite0Recipe:
    """What the one training loop (`train._train`) needs to train a lite0 model: the
    photos' backbone features as its input, the heads to fit on them, and how the fitted
    heads go onto the backbone to make the network that is saved and served."""

    features: np.ndarray
    build: Callable[[], Any]
    serve: Callable[[Any], Any]
    recipe: dict[str, Any]


def lite0_recipe(
    images: np.ndarray, *, num_classes: int, size: int, embedding_dim: int, log: Log
) -> Lite0Recipe:
    """The pieces for view inputs `images` (`preprocess_spec` at `size` px)."""
    features = view_features(images, log, size=size)
    state = efficientnet_lite.read_legacy_pth(efficientnet_lite.weights_path())

    def build() -> Any:
        return build_feature_head(
            num_features=features.shape[1], num_classes=num_classes, embedding_dim=embedding_dim
        )

    def serve(head: Any) -> Any:
        whole = build_lite0_model(
            num_classes=num_classes, input_size=size, embedding_dim=embedding_dim
        )
        efficientnet_lite.load(whole, state)
        for layer in head.layers:
            if layer.weights:
                whole.get_layer(layer.name).set_weights(layer.get_weights())
        return whole

    recipe = {
        "recipe": "folder",
        "backbone": LITE0,
        "weights_file": Path(efficientnet_lite.WEIGHTS_FILE).name,
    }
    return Lite0Recipe(features, build, serve, recipe)


def own_detector(
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
        "view_size": VIEW_SIZE if not from_model else int(spec.preprocess.size),
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


def view_features(images: np.ndarray, log: Log, *, size: int = VIEW_SIZE) -> np.ndarray:
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

""" "None of our categories": how far a photo lies from every photo the catalogue expects.

The classifier always answers with one of its labels, and a softmax is confident far
from its training data: a circuit board came out "Bag 0.9999", and on generated photos of
mugs, clocks, phones, plants and the like, max-softmax separates them from the catalogue's
own photos with an AUROC of 0.74 only. The model's 28x28 grey input has lost what would
tell them apart: a kNN score in its own embedding reaches 0.93, but flags 45 % of foreign
photos at the 2 % false-alarm rate the catalogue can bear.

So the photo is looked at by a network that has seen the world: EfficientNet-Lite0 with
ImageNet weights (`vitrine.pipeline.inference.efficientnet_lite`), on the object cropped from its
backdrop
and padded square (`vitrine.pipeline.inference.preprocess.object_view`, 160 px). The score is the
cosine
distance from its 1,280 features to the nearest of 512 centroids (spherical k-means) of
in-catalogue photos: photos made from the training items in every style the catalogue
has (white, transparent cut-outs, studio). The threshold is calibrated on other such
photos, so that 1.5 % of them are flagged. Measured on held-out photos of test items and
on `vitrine.pipeline.synthetic.foreign`'s photos, it is in docs/training.md ("None of our
categories").

A model directory carries the detector as `unknown.npz` (centroids and threshold) with
its settings under "unknown" in `model.json`; a model without one predicts no "unknown".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

UNKNOWN_FILE = "unknown.npz"
VIEW_SIZE = 160
CENTROIDS = 512
#: Share of in-catalogue calibration photos flagged: the detector's threshold, a margin
#: under the 2 % of false alarms the catalogue can bear (held-out photos of test items
#: come out within about half a point of it either way, docs/training.md).
TARGET_RATE = 0.015
FEATURES = 1280  # `vitrine.pipeline.inference.efficientnet_lite.FEATURES`


@cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()  # looks the loaded BLAS libraries up once


def _nearest_cosine(feats: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each row's cosine to its nearest centroid, the product on one BLAS thread.

    A threaded BLAS (numpy's OpenBLAS) leaves a thread per core spinning for more work
    after a product; a process that scores a photo now and then (the API's search by
    photo, a worker between live uploads) paid about 78 ms of a core for each 0.2 ms
    product (docs/performance.md). One thread costs the product nothing at these sizes."""
    with _blas().limit(limits=1, user_api="blas"):
        return (feats @ centroids.T).max(axis=1)


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class Backbone:
    """EfficientNet-Lite0 with ImageNet weights, run by TensorFlow Lite
    (`vitrine.pipeline.inference.lite`)."""

    model: Any
    view_size: int = VIEW_SIZE
    _compiled: Any = field(default=None, repr=False)

    @classmethod
    def pretrained(cls, view_size: int = VIEW_SIZE) -> Backbone:
        from vitrine.pipeline.inference import efficientnet_lite

        return cls(efficientnet_lite.pretrained(view_size), view_size)

    def features(self, views: np.ndarray) -> np.ndarray:
        """uint8 (n, size, size, 3) object views -> L2-normalised (n, 1280) features."""
        return self.features_of_input((np.asarray(views, dtype=np.float32) - 127.0) / 128.0)

    def features_of_input(self, x: np.ndarray) -> np.ndarray:
        """The same from views already scaled as the network wants them, (x - 127) / 128
        (a lite0 model's input, `vitrine train --data --backbone lite0`)."""
        if len(x) == 0:
            return np.zeros((0, FEATURES), np.float32)
        if self._compiled is None:
            from vitrine.pipeline.inference.lite import LiteRunner

            model = self.model
            size = self.view_size
            self._compiled = LiteRunner(lambda t: model(t, training=False), (size, size, 3), model)
        return _normalised(self._compiled(x))


#: `model.json`'s "unknown" block says `"features": "model"` when the model's own forward
#: pass gives the features (a lite0 model, `vitrine train --data --backbone lite0`): the
#: detector then runs no backbone of its own.
FEATURES_FROM_MODEL = "model"


@dataclass
class UnknownDetector:
    """The backbone (None: the model gives the features), the in-catalogue centroids and
    the calibrated threshold."""

    backbone: Backbone | None
    centroids: np.ndarray  # float32 (k, 1280), L2-normalised
    threshold: float

    @property
    def view_size(self) -> int | None:
        """The object view's side its backbone reads; None when it reads the model's."""
        return None if self.backbone is None else self.backbone.view_size

    def scores(self, views: np.ndarray) -> np.ndarray:
        """Cosine distance to the nearest in-catalogue centroid (higher: further)."""
        if self.backbone is None:
            raise ValueError("this detector scores the model's own features (scores_of)")
        return self.scores_of(self.backbone.features(views))

    def scores_of(self, features: np.ndarray) -> np.ndarray:
        """`scores` from the backbone's (n, 1280) features, normalised or not."""
        if len(features) == 0:
            return np.zeros(0, np.float32)
        return (1.0 - _nearest_cosine(_normalised(features), self.centroids)).astype(np.float32)

    @classmethod
    def load(cls, directory: Path, settings: dict[str, Any]) -> UnknownDetector:
        with np.load(Path(directory) / UNKNOWN_FILE) as saved:
            centroids = _normalised(saved["centroids"])
        if settings.get("features") == FEATURES_FROM_MODEL:
            return cls(None, centroids, float(settings["threshold"]))
        size = int(settings.get("view_size", VIEW_SIZE))
        detector = cls(Backbone.pretrained(size), centroids, float(settings["threshold"]))
        detector.scores(np.zeros((1, size, size, 3), np.uint8))  # trace now, not on an upload
        return detector


def spherical_kmeans(x: np.ndarray, k: int, *, seed: int, iterations: int = 30) -> np.ndarray:
    """k unit centroids of unit vectors `x` (cosine k-means, deterministic for a seed)."""
    x = _normalised(x)
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), size=min(k, len(x)), replace=False)].copy()
    for _ in range(iterations):
        nearest = (x @ centroids.T).argmax(axis=1)
        for j in range(len(centroids)):
            members = x[nearest == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
        centroids = _normalised(centroids)
    return centroids


def fit(
    reference: np.ndarray,
    calibration: np.ndarray,
    *,
    k: int = CENTROIDS,
    target_rate: float = TARGET_RATE,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Centroids of `reference` features and the score threshold that flags `target_rate`
    of `calibration` features (other in-catalogue photos, never foreign ones)."""
    centroids = spherical_kmeans(reference, k, seed=seed)
    scores = 1.0 - (_normalised(calibration) @ centroids.T).max(axis=1)
    return centroids, float(np.quantile(scores, 1.0 - target_rate))


def save(directory: Path, centroids: np.ndarray, settings: dict[str, Any]) -> None:
    """Write `unknown.npz` and the "unknown" block of `model.json`."""
    directory = Path(directory)
    partial = directory / f".{UNKNOWN_FILE}.part.npz"  # a reader never sees half a file
    np.savez_compressed(partial, centroids=centroids.astype(np.float16))
    partial.replace(directory / UNKNOWN_FILE)
    spec_path = directory / "model.json"
    data = json.loads(spec_path.read_text())
    data["unknown"] = settings
    written = spec_path.with_name(".model.json.part")
    written.write_text(json.dumps(data, indent=2) + "\n")
    written.replace(spec_path)

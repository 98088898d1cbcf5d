"""`vitrine models calibrate-unknown DIR`: give a model its "none of our categories" detector.

The detector (`vitrine.pipeline.inference.unknown`) needs photos of what the catalogue holds, in
every style
it comes in, to learn where such photos lie, and other such photos to set its threshold.
For a Fashion-MNIST model they are made here from the training items (never the test
items, on which the detector is measured): merchant-style photos (on white, or
transparent cut-outs) and studio photos, written as files and read back through the
workers' own decode, so JPEG, WebP and PNG are what the detector has seen.
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitrine.ops.data import fashion_mnist
from vitrine.ops.errors import UserError
from vitrine.ops.models import check_model_dir
from vitrine.pipeline.inference import unknown
from vitrine.pipeline.inference.decode import BadImageError, decode
from vitrine.pipeline.inference.model import read_spec
from vitrine.pipeline.inference.preprocess import VIEW_SOURCE_SIDE, object_view
from vitrine.pipeline.synthetic.photos import write_catalog
from vitrine.pipeline.types import ImageLimits

Log = Callable[[str], None]
#: Seeds of the reference and the calibration photos (distinct: other items, other draws).
REFERENCE_SEED, CALIBRATION_SEED = 31, 41


@dataclass(frozen=True)
class Calibration:
    model_dir: Path
    reference_photos: int
    calibration_photos: int
    threshold: float
    seconds: float


def calibrate(
    model_dir: Path,
    *,
    fashion: Path | None,
    reference: int,
    calibration: int,
    limits: ImageLimits,
    log: Log,
    view_size: int = unknown.VIEW_SIZE,
) -> Calibration:
    """Fit the detector on generated photos of training items and save it in `model_dir`.
    `view_size`: the object view's side the backbone reads (its cost grows with the
    square: docs/performance.md measures 96-160 px)."""
    check_model_dir(model_dir)
    if not read_spec(model_dir).is_fashion_mnist:
        raise UserError(
            f"{model_dir} has classes of its own: calibrate-unknown fits a detector on photos "
            "of Fashion-MNIST items; `vitrine train --data DIR --backbone lite0` gives a "
            "model of your own classes its detector, fitted on your photos"
        )
    if reference < unknown.CENTROIDS or calibration < 200:
        raise UserError(
            f"--reference must be at least {unknown.CENTROIDS} and --calibration at least 200"
        )
    if not 32 <= view_size <= 512:
        raise UserError(f"--view-size must be 32 to 512 px, got {view_size}")
    started = time.perf_counter()
    data = fashion_mnist(fashion)
    backbone = unknown.Backbone.pretrained(view_size)
    with tempfile.TemporaryDirectory(prefix="vitrine-unknown-") as tmp:
        feats = {}
        for name, n, seed in (
            ("reference", reference, REFERENCE_SEED),
            ("calibration", calibration, CALIBRATION_SEED),
        ):
            views = []
            for style in ("merchant", "studio"):
                folder = Path(tmp) / f"{name}-{style}"
                manifest = write_catalog(
                    data.x_train, data.y_train, folder, n=n // 2, seed=seed, style=style
                )
                views += _views(folder, manifest, limits, view_size)
                log(f"{name}: {len(views)} photos read ({style})")
            feats[name] = backbone.features(np.stack(views))
    centroids, threshold = unknown.fit(feats["reference"], feats["calibration"])
    settings = {
        "method": "EfficientNet-Lite0 (ImageNet) features of the object, cosine distance "
        "to the nearest in-catalogue centroid",
        "view_size": view_size,
        "centroids": int(len(centroids)),
        "threshold": round(threshold, 6),
        "target_rate": unknown.TARGET_RATE,
        "reference_photos": len(feats["reference"]),
        "calibration_photos": len(feats["calibration"]),
    }
    unknown.save(model_dir, centroids, settings)
    seconds = time.perf_counter() - started
    return Calibration(
        model_dir, len(feats["reference"]), len(feats["calibration"]), threshold, seconds
    )


def _views(folder: Path, manifest: Path, limits: ImageLimits, size: int) -> list[np.ndarray]:
    """The object view of every photo in `manifest`, read as a worker reads an upload
    (the JPEG draft and the working copy of `prepare_photo`)."""
    views = []
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                img, _ = decode(
                    (folder / row["file"]).read_bytes(),
                    limits=limits,
                    draft_size=VIEW_SOURCE_SIDE,
                    draft_mode="RGB",
                    draft_longest=True,
                )
            except BadImageError:  # (never for generated photos; kept honest)
                continue
            views.append(object_view(img, size))
    return views

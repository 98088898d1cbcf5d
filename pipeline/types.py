"""Plain data shared by every layer: what an upload is, what a model says about it.

Frozen dataclasses so that results can cross process and thread boundaries without
anyone mutating them on the way; numpy is the only third-party type, so `db/` and
`worker/` can import this module without pulling in TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FASHION_MNIST_LABELS: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class Upload:
    """One merchant upload event, exactly what producers put on the queue."""

    uri: str
    merchant_id: str
    sku: str | None = None
    # The category the merchant declared (any text, as sent); view label_mismatches
    # compares it case-insensitively to the model's labels.
    declared_label: str | None = None
    #: Names the event: a redelivery of the same event is the same row, any other event
    #: another row (migration 0013). None: a new event, named when it is recorded.
    event_id: str | None = None


@dataclass(frozen=True)
class PreprocessSpec:
    """How raw pixels become model input; stored in `model.json` so serving matches training.

    The defaults reproduce how Fashion-MNIST itself was made from product photos:
    grey, trimmed to the object, longest edge scaled to the frame, centred, negated.
    """

    size: int = 28
    channels: int = 1
    invert: bool = True
    trim_background: bool = True
    fit_fraction: float = 1.0
    autocontrast: bool = True
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    #: The input is the object view (`vitrine.pipeline.inference.preprocess.object_view`:
    #: the object alone on white, colour, padded square) at `size`, times `scale` plus
    #: `offset`; the other fields do not apply. A lite0 model's (`train --backbone lite0`).
    view: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "channels": self.channels,
            "invert": self.invert,
            "trim_background": self.trim_background,
            "fit_fraction": self.fit_fraction,
            "autocontrast": self.autocontrast,
            "scale": self.scale,
            "offset": self.offset,
            **({"view": True} if self.view else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True)
class ModelSpec:
    """The metadata half of a model directory (`model.json`)."""

    name: str
    version: str
    labels: tuple[str, ...]
    embedding_dim: int
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    data_fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    keras_file: str = "model.keras"
    #: The "none of our categories" detector's settings (`vitrine.pipeline.inference.unknown`);
    # empty: none.
    unknown: dict[str, Any] = field(default_factory=dict)

    @property
    def is_fashion_mnist(self) -> bool:
        """Whether the model knows Fashion-MNIST's ten classes (what its evaluation set,
        its explanations' evidence, its detector's calibration and the corrections' replay
        are made of), not a merchant's own (`vitrine train --data`)."""
        return self.labels == FASHION_MNIST_LABELS

    @property
    def key(self) -> str:
        """Unique name under which rows are stored: `name@version`."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "embedding_dim": self.embedding_dim,
            "input": {"size": self.preprocess.size, "channels": self.preprocess.channels},
            "preprocess": self.preprocess.to_dict(),
            "data_fingerprint": self.data_fingerprint,
            "metrics": self.metrics,
            "training": self.training,
            "keras_file": self.keras_file,
            **({"unknown": self.unknown} if self.unknown else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            labels=tuple(data["labels"]),
            embedding_dim=int(data["embedding_dim"]),
            preprocess=PreprocessSpec.from_dict(data.get("preprocess", {})),
            data_fingerprint=str(data.get("data_fingerprint", "")),
            metrics=dict(data.get("metrics", {})),
            training=dict(data.get("training", {})),
            keras_file=str(data.get("keras_file", "model.keras")),
            unknown=dict(data.get("unknown", {})),
        )


#: How a worker words a failure it gave up on after trying more than once: "gave up after
#: N tries: <reason>" (a source's passing trouble, a timeout or a 5xx, outlasted the
#: retries: `vitrine.worker.failures.RetryPolicy.gave_up`) or "gave up after N attempts:
#: <reason>" (claimed that many times without a result: `vitrine.worker.processing`). Such
#: an upload may well succeed when sent again; any other failure is the photo's own (not an
#: image, a refused source) and would only fail again. The review desk's "Failed uploads"
#: sends the former alone again (`vitrine.db.repository.failed`).
GAVE_UP_PREFIX = "gave up after "


def worth_resending(error: str | None) -> bool:
    """Whether a failed upload's recorded reason is passing trouble (`GAVE_UP_PREFIX`)."""
    return error is not None and error.startswith(GAVE_UP_PREFIX)


#: The label people read for a photo of none of a model's categories
# (`vitrine.pipeline.inference.unknown`).
UNKNOWN_LABEL = "unknown"


@dataclass(frozen=True, eq=False)
class Prediction:
    """Everything one forward pass says about one image.

    The embedding stays the float32 row the forward pass produced, all the way into
    pgvector: no tuple or list copies of 128 Python floats per image.
    """

    label: str
    label_index: int
    confidence: float
    top_k: tuple[tuple[str, float], ...]
    embedding: npt.NDArray[np.float32]
    #: Every label with its probability; empty where a stored prediction was copied
    #: (known bytes). Only the declared category's is stored.
    scores: tuple[tuple[str, float], ...] = ()
    #: How far the photo lies from every photo the catalogue expects, and whether that is
    #: past the model's threshold ("none of our categories", `vitrine.pipeline.inference.unknown`);
    # None
    #: when the model has no detector.
    unknown_score: float | None = None
    unknown: bool | None = None

    def score_of(self, label: str | None) -> float | None:
        """The probability of `label` (trimmed, any case) if it is one of the labels."""
        if label is None:
            return None
        wanted = label.strip().lower()
        return next((score for name, score in self.scores if name.lower() == wanted), None)


#: Default of `ImageLimits.max_decode_seconds`. The largest uploads the other limits let
#: through (40 Mpx) decode in at most about 1 s on 2 shared cores (measured: WebP 0.90-0.98
#: s, progressive JPEG 0.76-0.84 s, baseline JPEG 0.19-0.33 s, GIF 0.30-0.41 s), so 5 s
#: never refuses an honest photo yet caps what a hostile one can cost a worker.
DEFAULT_MAX_DECODE_SECONDS = 5.0


@dataclass(frozen=True)
class ImageLimits:
    """What an upload may cost before it is refused: bytes on the wire, pixels decoded,
    seconds spent decoding (enforced by `vitrine.pipeline.inference.decode.decode`)."""

    max_bytes: int
    max_pixels: int
    max_decode_seconds: float = DEFAULT_MAX_DECODE_SECONDS


@dataclass(frozen=True)
class ImageQuality:
    """Listing-photo quality facts of one upload (`vitrine.pipeline.inference.quality` says how
    each is
    measured); model-independent, stored in `image_quality` and judged by view
    `quality_issues`. Object facts are None where the backdrop is not plain."""

    longest_side_px: int
    white_background_share: float
    fill_ratio: float | None
    object_span: float | None
    touches_border: bool | None
    sharpness: float
    highlight_luminance: float
    object_luminance: float | None


@dataclass(frozen=True)
class ImageInfo:
    """What decoding learned about the file itself, stored beside the results."""

    sha256: str
    width: int
    height: int
    format: str
    # The product's perceptual hash (`vitrine.pipeline.inference.phash`, '0'/'1' text); None where
    # it was not
    # computed (a result stored before hashes existed, a synthetic row).
    phash: str | None = None
    # Listing-photo quality (`vitrine.pipeline.inference.quality`); None where it was not measured.
    quality: ImageQuality | None = None

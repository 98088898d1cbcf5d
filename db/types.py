"""Rows that cross the `db/` boundary: frozen, plain, free of SQLAlchemy types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pgvector import Vector

from vitrine.pipeline.types import ImageInfo, Prediction


@dataclass(frozen=True)
class ModelRow:
    """One `models` row plus how many embeddings it has stored."""

    id: int
    key: str
    name: str
    version: str
    embedding_dim: int
    labels: tuple[str, ...]
    path: str
    is_active: bool
    created_at: datetime
    n_embeddings: int


@dataclass(frozen=True)
class ClaimedImage:
    """What a worker needs after claiming an image: where to fetch it, how often tried."""

    id: int
    uri: str
    merchant_id: str
    sku: str | None
    attempts: int  # this claim included
    last_error: str | None = None  # what the previous attempt left in `images.error`


@dataclass(frozen=True)
class ImageResult:
    """Everything one successful forward pass produced for one image under one model."""

    image_id: int
    model_id: int
    info: ImageInfo
    prediction: Prediction


@dataclass(frozen=True)
class Neighbour:
    """One row of `similar_images()` / `similar_to_vector()`."""

    image_id: int
    merchant_id: str
    sku: str | None
    uri: str
    label: str | None
    distance: float


@dataclass(frozen=True)
class EmbeddingRow:
    """One row for the bulk loader `copy_embeddings`.

    `embedding` may be a 1-d numpy array (bound as is), a `pgvector.Vector` or a
    sequence of floats (a backfill reading vectors from JSON or another database).
    """

    image_id: int
    model_id: int
    embedding: npt.NDArray[np.floating[Any]] | Vector | Sequence[float]


@dataclass(frozen=True)
class LabelInfo:
    """The active model's verdict on one image (`labels_for`)."""

    label: str
    confidence: float


@dataclass(frozen=True)
class ImageSummary:
    """What a person asking "what became of this upload?" wants in one row.

    `label` is the effective one (a person's decision, else "unknown" or the active
    model's, `label_source` says whose), `confidence` the model's; both None while there
    is none (not processed yet, failed, or no model active).
    """

    image_id: int
    uri: str
    merchant_id: str
    sku: str | None
    status: str
    error: str | None
    label: str | None
    label_source: str | None
    confidence: float | None

    def as_result(self) -> dict[str, Any]:
        """The per-image result `submit --wait --json` prints (the API's field names)."""
        return {
            "image_id": self.image_id,
            "uri": self.uri,
            "status": self.status,
            "label": self.label,
            "label_source": self.label_source,
            "confidence": self.confidence,
            "error": self.error,
        }


@dataclass(frozen=True)
class ApiClient:
    """A client of the HTTP API (`api_clients`); `merchant_id` None: any merchant."""

    id: int
    name: str
    merchant_id: str | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Erasure:
    """One `erasures` row: the audit record of a `vitrine forget`, kept after the data."""

    id: int
    scope: str  # "merchant" or "image"
    subject: str  # the merchant id, or the image id as text
    db_user: str
    os_user: str | None
    images_deleted: int
    files_deleted: int
    erased_at: datetime

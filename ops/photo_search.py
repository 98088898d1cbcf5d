"""A photo that is not in the catalog, embedded the way the workers embed uploads.

`vitrine similar --image` and the API's `POST /v1/search` both need it. The model is
loaded once per process and kept (the API answers many searches); if another model is
activated meanwhile, the next search loads that one, so answers never mix a query
vector of one model with the catalog vectors of another.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from db import repository
from db.types import ModelRow
from ops.context import Context
from ops.errors import UserError
from ops.models import check_model_dir
from pipeline.types import Prediction

if TYPE_CHECKING:
    from pipeline.model import LoadedModel


@dataclass(frozen=True)
class EmbeddedPhoto:
    model: ModelRow
    prediction: Prediction


class PhotoEmbedder:
    """The active model, loaded on first use and reloaded only when another is active."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._loaded: tuple[str, LoadedModel] | None = None

    def active_model(self) -> ModelRow:
        with self._ctx.engine().connect() as conn:
            active = repository.active_model(conn)
        if active is None:
            raise UserError("no active model yet: `vitrine db upgrade` registers the shipped one")
        return active

    def embed(self, data: bytes, *, active: ModelRow | None = None) -> EmbeddedPhoto:
        """The photo's prediction and embedding; `UserError` if it is not a usable image."""
        from pipeline.decode import BadImageError
        from pipeline.preprocess import preprocess_bytes

        active = active or self.active_model()
        model = self._model(active)
        try:
            array, _ = preprocess_bytes(
                data, model.spec.preprocess, limits=self._ctx.settings.image_limits
            )
        except BadImageError as exc:
            raise UserError(str(exc)) from None  # callers say which photo
        (prediction,) = model.predict(array[None])
        return EmbeddedPhoto(active, prediction)

    def model(self, active: ModelRow) -> LoadedModel:
        """The loaded model `embed` runs, for callers that need more than its prediction
        (`ops.explain` takes gradients through it)."""
        return self._model(active)

    def _model(self, active: ModelRow) -> LoadedModel:
        from pipeline.model import load_model_dir

        with self._lock:  # one load, however many requests arrive at once
            if self._loaded is None or self._loaded[0] != active.key:
                check_model_dir(Path(active.path))
                self._loaded = (active.key, load_model_dir(Path(active.path)))
            return self._loaded[1]

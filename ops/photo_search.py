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

from vitrine.db import repository
from vitrine.db.types import ModelRow
from vitrine.ops.context import Context
from vitrine.ops.errors import UserError
from vitrine.ops.models import check_model_dir
from vitrine.pipeline.types import Prediction

if TYPE_CHECKING:
    from vitrine.pipeline.inference.model import LoadedModel


@dataclass(frozen=True)
class EmbeddedPhoto:
    model: ModelRow
    prediction: Prediction


class PhotoEmbedder:
    """The active model, loaded on first use and reloaded only when another is active."""

    def __init__(self, ctx: Context) -> None:
        from vitrine.pipeline.inference.model import ModelCache

        self._ctx = ctx
        self._models = ModelCache(latest_only=True)
        self._warmed = threading.Event()
        self._warm_error = ""
        self._warm_started = False

    def model_row(self) -> ModelRow:
        """The active model's row; `UserError` when there is none."""
        with self._ctx.engine().connect() as conn:
            active = repository.active_model(conn)
        if active is None:
            raise UserError("no active model yet: `vitrine db upgrade` registers the shipped one")
        return active

    def embed(self, data: bytes, *, active: ModelRow | None = None) -> EmbeddedPhoto:
        """The photo's prediction and embedding; `UserError` if it is not a usable image."""
        from vitrine.pipeline.inference.decode import BadImageError
        from vitrine.pipeline.inference.preprocess import prepare_photo

        active = active or self.model_row()
        model = self._model(active)
        try:
            photo = prepare_photo(
                data,
                model.spec.preprocess,
                limits=self._ctx.settings.image_limits,
                view_size=model.view_size,
            )
        except BadImageError as exc:
            raise UserError(str(exc)) from None  # callers say which photo
        views = None if photo.view is None else photo.view[None]
        (prediction,) = model.predict(photo.array[None], views=views)
        return EmbeddedPhoto(active, prediction)

    def warm_in_background(self) -> None:
        """Load the active model in a thread now, so the first search does not pay for
        the load (seconds on a small machine). A failure becomes the first search's
        error and the readiness check's reason, not a failed start-up."""
        self._warm_started = True
        threading.Thread(target=self._warm, name="warm-search-model", daemon=True).start()

    def _warm(self) -> None:
        try:
            self._model(self.model_row())
        except Exception as exc:  # noqa: BLE001  the search route reports it properly
            self._warm_error = f"{type(exc).__name__}: {exc}"
        finally:
            self._warmed.set()

    def warm_state(self) -> str:
        """ "ok" once the active model is loaded (or when no warm-up was asked for),
        "loading" before, or why the load failed."""
        if not self._warm_started:
            return "ok"
        if not self._warmed.is_set():
            return "loading the model for search by photo"
        return self._warm_error or "ok"

    def model(self, active: ModelRow) -> LoadedModel:
        """The loaded model `embed` runs, for callers that need more than its prediction
        (`vitrine.ops.explain` takes gradients through it)."""
        return self._model(active)

    def _model(self, active: ModelRow) -> LoadedModel:
        directory = Path(active.path)
        if directory.resolve() not in self._models.loaded():  # checked once, before the load
            check_model_dir(directory)  # a user error, not a traceback, when it is gone
        return self._models.get(directory)

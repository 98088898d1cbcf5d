"""The API's search model loads in the background at start-up, and readiness says so."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from vitrine.ops.photo_search import PhotoEmbedder


class _BlockingModels:
    """A model cache whose load waits until the test lets it finish (or fail)."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.fail = fail
        self.loads: list[Path] = []

    def loaded(self) -> list[Path]:
        return []

    def get(self, directory: Path) -> Any:
        self.release.wait(timeout=30)
        self.loads.append(directory)
        if self.fail:
            raise OSError("model.keras is truncated")
        return object()


def _embedder(tmp_path: Path, models: _BlockingModels) -> PhotoEmbedder:
    embedder = PhotoEmbedder(SimpleNamespace())  # type: ignore[arg-type]
    embedder._models = models  # type: ignore[assignment]
    row = SimpleNamespace(path=str(tmp_path))
    embedder.model_row = lambda: row  # type: ignore[method-assign,assignment,return-value]
    return embedder


def _check_model_dir_passes(monkeypatch: Any) -> None:
    monkeypatch.setattr("vitrine.ops.photo_search.check_model_dir", lambda directory: None)


def test_readiness_waits_for_the_background_load(tmp_path: Path, monkeypatch: Any) -> None:
    _check_model_dir_passes(monkeypatch)
    models = _BlockingModels()
    embedder = _embedder(tmp_path, models)
    assert embedder.warm_state() == "ok"  # no warm-up asked for: loads on first search
    embedder.warm_in_background()
    assert embedder.warm_state().startswith("loading")
    models.release.set()
    assert embedder._warmed.wait(timeout=30)
    assert embedder.warm_state() == "ok" and models.loads == [tmp_path]


def test_a_failed_load_is_the_readiness_reason(tmp_path: Path, monkeypatch: Any) -> None:
    _check_model_dir_passes(monkeypatch)
    models = _BlockingModels(fail=True)
    models.release.set()
    embedder = _embedder(tmp_path, models)
    embedder.warm_in_background()
    assert embedder._warmed.wait(timeout=30)
    assert embedder.warm_state() == "OSError: model.keras is truncated"

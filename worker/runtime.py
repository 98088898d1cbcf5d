"""Long-lived per-process resources: the database engine and the loaded model.

Built lazily and only in the process that uses them, so a Celery parent never imports
TensorFlow or opens connections that forked children would share.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from db import repository
from db.engine import make_engine
from db.types import ModelRow
from pipeline.model import LoadedModel, ModelCache
from worker.settings import get_settings

_lock = threading.Lock()
_engine: Engine | None = None
_models = ModelCache()


@dataclass(frozen=True)
class ActiveModel:
    row: ModelRow
    model: LoadedModel


def engine() -> Engine:
    global _engine
    with _lock:
        if _engine is None:
            url = get_settings().database_url
            if not url:
                raise RuntimeError("DATABASE_URL is not set in this worker process")
            _engine = make_engine(url)
        return _engine


def reset_after_fork() -> None:
    """Drop connections inherited from a parent; the child opens its own."""
    global _engine
    with _lock:
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = None


def configure_threads() -> None:
    """Split the CPU between worker processes instead of letting each take all cores."""
    settings = get_settings()
    per_process = max(1, (os.cpu_count() or 1) // max(1, settings.worker_concurrency))
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(per_process)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process; keep what it has


def model_for(row: ModelRow) -> LoadedModel:
    return _models.get(Path(row.path))


def active_model() -> ActiveModel:
    with engine().connect() as conn:
        row = repository.active_model(conn)
    if row is None:
        raise RuntimeError("no active model: run `vitrine db upgrade` or `vitrine models activate`")
    return ActiveModel(row=row, model=model_for(row))


def model_by_key(key: str) -> ActiveModel:
    with engine().connect() as conn:
        rows = [r for r in repository.list_models(conn) if r.key == key]
    if not rows:
        raise LookupError(f"unknown model {key!r}")
    return ActiveModel(row=rows[0], model=model_for(rows[0]))

"""What every CLI command needs first: servers up, schema migrated, default model known."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from db import repository
from db.engine import make_engine
from db.migrate import upgrade
from embedded.services import ServiceURLs, ensure_services
from pipeline.model import read_spec
from worker.celery_app import use_broker
from worker.settings import Settings, get_settings


@dataclass(frozen=True)
class Context:
    settings: Settings
    urls: ServiceURLs
    engine: Engine


def register_model_dir(engine: Engine, model_dir: Path, *, activate: bool = False) -> int:
    spec = read_spec(model_dir)
    with engine.begin() as conn:
        model_id = repository.register_model(
            conn, spec=spec, path=str(Path(model_dir).resolve()), activate_if_none=True
        )
        if activate:
            repository.activate_model(conn, key=spec.key)
    return model_id


def open_context(*, migrate: bool = True) -> Context:
    """Start or reuse the servers, point Celery at the broker and bring the schema to head.

    Registers the configured default model (and activates it when none is active), so a
    fresh install can process uploads with no further step.
    """
    settings = get_settings()
    urls = ensure_services(settings)
    use_broker(urls.redis_url)
    engine = make_engine(urls.database_url)
    if migrate:
        upgrade(urls.database_url)
        register_model_dir(engine, settings.model_dir)
    return Context(settings=settings, urls=urls, engine=engine)

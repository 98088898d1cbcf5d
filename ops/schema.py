"""`vitrine db upgrade`: the one place vitrine changes a database's schema.

It also registers the configured model when the database has none, so a fresh install
can process uploads with no further step; an existing registry is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from db import repository
from db.engine import make_engine
from db.migrate import head_revision, upgrade
from ops.models import register_model_dir


@dataclass(frozen=True)
class UpgradeReport:
    revision: str
    registered_model: str | None  # key of the model registered now, if there was none


def upgrade_database(url: str, model_dir: Path) -> UpgradeReport:
    """Migrate to head (idempotent, safe concurrently), then seed the model registry."""
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            empty = repository.model_count(conn) == 0
        key = register_model_dir(engine, model_dir, activate=True) if empty else None
    finally:
        engine.dispose()
    return UpgradeReport(revision=head_revision(), registered_model=key)

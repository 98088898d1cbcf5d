"""`vitrine db upgrade`: the one place vitrine changes a database's schema.

It also registers the configured model when the database has none, so a fresh install
can process uploads with no further step; an existing registry is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vitrine.db import repository
from vitrine.db.engine import make_engine
from vitrine.db.migrate import head_revision, upgrade
from vitrine.ops.models import register_model_dir


@dataclass(frozen=True)
class UpgradeReport:
    revision: str
    registered_model: str | None  # key of the model registered now, if there was none
    #: Done images without a perceptual hash (a migration changed the recipe): what
    #: `vitrine backfill --hashes` measures again.
    hashes_to_measure: int = 0


def upgrade_database(url: str, model_dir: Path) -> UpgradeReport:
    """Migrate to head (idempotent, safe concurrently), then seed the model registry."""
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            empty = repository.model_count(conn) == 0
            unhashed = repository.unhashed_count(conn)
        key = register_model_dir(engine, model_dir, activate=True) if empty else None
    finally:
        engine.dispose()
    return UpgradeReport(revision=head_revision(), registered_model=key, hashes_to_measure=unhashed)

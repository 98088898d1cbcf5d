"""Run vitrine's Alembic migrations from Python, from any working directory.

`upgrade()` holds a session-level PostgreSQL advisory lock while Alembic runs, so every
worker process may call it at start-up: the first one migrates, the others wait for the
lock and then find nothing left to do.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, pool, text

from vitrine.db.engine import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
ALEMBIC_INI = MIGRATIONS_DIR / "alembic.ini"

# Arbitrary but fixed 64-bit key for pg_advisory_lock: ASCII "vitrine" + "M".
MIGRATION_LOCK_KEY = 0x76_69_74_72_69_6E_65_4D


def alembic_config(database_url: str | None = None) -> Config:
    """Alembic `Config` for `db/migrations`, independent of the current directory."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    if database_url is not None:
        # ConfigParser interpolation: a literal '%' (URL-escaped passwords) must be doubled.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    # Don't let env.py's fileConfig() replace the application's logging set-up.
    config.attributes["configure_logger"] = False
    return config


def head_revision() -> str:
    """The newest revision id shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - there is always at least 0001
        raise RuntimeError("no Alembic revisions found in db/migrations/versions")
    return head


def revision_module(filename: str) -> ModuleType:
    """A revision file as a module, so a later revision can reuse or edit its SQL texts
    (revision files are not importable: their names start with digits)."""
    path = MIGRATIONS_DIR / "versions" / filename
    spec = importlib.util.spec_from_file_location(f"vitrine_revision_{path.stem}", path)
    if spec is None or spec.loader is None:  # pragma: no cover - a file we ship
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` up to `revision` (default: newest).

    Safe to call concurrently from several processes: callers serialise on a
    PostgreSQL advisory lock and Alembic skips revisions already applied.
    """
    config = alembic_config(database_url)
    engine = make_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
            _load_pgvector(conn)
            try:
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                if conn.in_transaction():
                    conn.commit()
            finally:
                if conn.in_transaction():
                    conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def _load_pgvector(conn: Connection) -> None:
    """Load pgvector's library into this session when the extension exists.

    Migrations create functions with `SET hnsw.iterative_scan`; PostgreSQL lets a role
    that is not a superuser name an extension's setting only once the extension's library
    is loaded in its session, and using the `vector` type is what loads it.
    """
    exists = conn.execute(text("SELECT to_regtype('vector') IS NOT NULL")).scalar()
    if exists:
        conn.execute(text("SELECT '[1]'::vector"))
    conn.commit()


def schema_revision(conn: Connection) -> str | None:
    """Revision the database behind `conn` is at, or None if it was never migrated.

    Only reads (`alembic_version`), so a SELECT-only role may call it.
    """
    return MigrationContext.configure(conn).get_current_revision()


def current_revision(database_url: str) -> str | None:
    """`schema_revision` of the database at `database_url`."""
    engine = make_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return schema_revision(conn)
    finally:
        engine.dispose()

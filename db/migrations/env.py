"""Alembic environment for vitrine.

Where the connection comes from, first match wins:

1. `config.attributes["connection"]`: an open SQLAlchemy Connection handed over by
   `vitrine.db.migrate.upgrade`, which holds a PostgreSQL advisory lock on it so concurrent
   callers run one after another;
2. `-x url=postgresql://...` on the alembic command line;
3. `sqlalchemy.url` in alembic.ini (or set with `Config.set_main_option`);
4. the `DATABASE_URL` environment variable.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, pool

from vitrine.db.engine import make_engine, normalise_url
from vitrine.db.schema import metadata

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def _database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("DATABASE_URL")
    )
    if not url:
        raise RuntimeError(
            "no database URL: pass -x url=postgresql://..., set sqlalchemy.url or DATABASE_URL"
        )
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=normalise_url(_database_url()),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    shared = config.attributes.get("connection")
    if shared is not None:
        _run(shared)
        return
    engine = make_engine(_database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

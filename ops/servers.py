"""Reaching PostgreSQL and Redis, and saying clearly when they cannot be reached.

A wrong host, a stopped server or a bad password must give one line that names the
server (never its password) and what to check, not a driver's traceback.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis
import sqlalchemy.exc
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import pool
from sqlalchemy.engine import make_url

from vitrine.db.engine import make_engine, normalise_url
from vitrine.db.migrate import schema_revision
from vitrine.ops.errors import ServerUnreachable, UserError

CONNECT_TIMEOUT_S = 5


def redact(url: str) -> str:
    """`url` with any password replaced by `***`, fit for logs and status output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _where(url: str) -> str:
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.hostname or 'localhost'}{port}"


def _reason(exc: BaseException) -> str:
    """The driver's own words, first line, without its 'connection to server at' preamble."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first.rsplit("failed: ", 1)[-1].strip()


def database_revision(url: str) -> str | None:
    """The schema revision of the database at `url`; proves it is reachable on the way."""
    try:
        engine = make_engine(
            normalise_url(url),
            poolclass=pool.NullPool,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        )
    except (ValueError, sqlalchemy.exc.ArgumentError) as exc:
        raise UserError(f"DATABASE_URL is not a PostgreSQL URL ({exc})") from None
    try:
        with engine.connect() as conn:
            return schema_revision(conn)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        raise ServerUnreachable(
            f"cannot reach PostgreSQL at {_where(url)} (DATABASE_URL): {_reason(exc)}; "
            "check that the server runs and that host, port, user and password are right"
        ) from None
    except sqlalchemy.exc.ProgrammingError as exc:
        user = make_url(normalise_url(url)).username or "this role"
        raise UserError(
            f"PostgreSQL at {_where(url)}: {user} may not read vitrine's schema "
            f"({_reason(exc)}); grant it SELECT on vitrine's tables"
        ) from None
    finally:
        engine.dispose()


def check_redis(url: str) -> None:
    """PING the broker at `url` once, with short timeouts and no retries."""
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=CONNECT_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise UserError(f"REDIS_URL is not a Redis URL ({exc})") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServerUnreachable(
            f"cannot reach Redis at {_where(url)} (REDIS_URL): {_reason(exc)}; "
            "check that the server runs and that host, port and password are right"
        ) from None
    finally:
        client.close()

"""The PostgreSQL and Redis vitrine talks to: the user's, or private embedded ones.

`DATABASE_URL` / `REDIS_URL` win when set. Otherwise vitrine runs its own servers with
data under `settings.embedded_dir` (`pg/`, `redis/`). They are started detached, so they
outlive the CLI that started them and later commands (and the Celery worker) reuse them
through `services.json`, which records their ports. They listen on free ports on
127.0.0.1, never on the user's own 5432/6379. A `flock` on `services.lock` serialises
concurrent starts; a recorded server only counts as running when it answers *and*
reports our data directory, so stale pid files, reused pids and reused ports are harmless.

Each server demands its own password of the data directory (`vitrine.embedded.credentials`), and
the URLs handed out carry it, since workers and commands connect through nothing else.
Only `credentials.json`, `pgpass` and `redis/redis.conf` (all 0600) hold them on disk.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from vitrine.embedded import credentials, pg_auth, pg_server, redis_server
from vitrine.embedded.common import ServiceError
from vitrine.settings import Settings

__all__ = [
    "ServiceError",
    "ServiceURLs",
    "ensure_service",
    "ensure_services",
    "services_status",
    "stop_services",
]

LOCK_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ServiceURLs:
    database_url: str  # SQLAlchemy URL (postgresql+psycopg://...)
    redis_url: str


def ensure_service(settings: Settings, name: str) -> str:
    """URL of `name` ("postgres" or "redis"): the configured one when its URL is set
    (nothing is started), else the embedded server, started or reused."""
    configured = {"postgres": settings.database_url, "redis": settings.redis_url}[name]
    if configured:
        return configured
    root = _root(settings)
    with _locked(root):
        state = _read_state(root)
        password = _passwords(root, state).of(name)
        url = _ensure(state, name, root, password, settings.embedded_system_dir)
        _write_state(root, state)
    return url


def ensure_services(settings: Settings) -> ServiceURLs:
    """Both URLs (see `ensure_service`); for worker processes, which need both."""
    return ServiceURLs(ensure_service(settings, "postgres"), ensure_service(settings, "redis"))


def services_status(settings: Settings) -> dict[str, dict[str, object]]:
    """{"postgres": {"embedded", "running", "url", "psql_url", "pid", "data_dir"},
    "redis": {...}} without starting anything.

    `url` is set while an embedded server runs (always for a configured one); `psql_url`
    is the same address spelled for libpq (`psql "$URL"`), for the embedded server with
    the password left in the libpq password file it names, so the URL can be shown;
    `data_dir` is where the embedded server keeps, or would keep, its data. Configured
    servers get a 2-second connection probe for `running`.
    """
    root = _root(settings)
    state = _read_state(root)
    stored = _stored(root)
    external = {"postgres": settings.database_url, "redis": settings.redis_url}
    status: dict[str, dict[str, object]] = {}
    for name, ext_url in external.items():
        password = stored.of(name) if stored else None
        data_dir = str((root / _DIRS[name]).resolve())  # as root maybe elsewhere (pg_account)
        if ext_url:
            running = _probe_external(name, ext_url)
            psql = (
                _configured_psql_url(root, ext_url, state, stored) if name == "postgres" else None
            )
            status[name] = _entry(False, running, ext_url, psql, None, data_dir)
            continue
        port = state.get(name, {}).get("port")
        pid = _probe(name, port, root, password) if port else None
        url = _url(name, port, password) if pid is not None and port else None
        psql = None
        if url and port and name == "postgres":  # no password: a trust cluster of old
            psql = _psql_url(root, port, password) if password else sqlalchemy_to_libpq(url)
        status[name] = _entry(True, pid is not None, url, psql, pid, data_dir)
    return status


def stop_services(settings: Settings, names: Sequence[str] = ("postgres", "redis")) -> list[str]:
    """Stop the embedded servers `names` (pg_ctl stop -m fast; redis SHUTDOWN), return the
    names stopped. Stops ours even when a URL is now set: they are still ours to stop."""
    root = _root(settings)
    if not root.exists():
        return []
    stopped: list[str] = []
    errors: list[str] = []
    with _locked(root):
        state = _read_state(root)
        redis_port = state.get("redis", {}).get("port")
        stored = _stored(root)
        stoppers: dict[str, Callable[[], bool]] = {
            "postgres": partial(
                pg_server.stop, root / _DIRS["postgres"], settings.embedded_system_dir
            ),
            "redis": partial(
                redis_server.stop,
                root / _DIRS["redis"],
                redis_port,
                stored.redis if stored else None,
            ),
        }
        for name, stop in stoppers.items():
            if name not in names:
                continue
            try:  # one failing must not leave the other running
                if stop():
                    stopped.append(name)
                    state.get(name, {}).pop("pid", None)
            except ServiceError as exc:
                errors.append(str(exc))
        _write_state(root, state)
    if errors:
        raise ServiceError("\n".join(errors))
    return stopped


def sqlalchemy_to_libpq(url: str) -> str:
    """`postgresql+psycopg://u@h:p/db` -> `postgresql://u@h:p/db`, which libpq accepts."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


# --- internals --------------------------------------------------------------------------

_DIRS = {"postgres": "pg", "redis": "redis"}


def _root(settings: Settings) -> Path:
    return settings.embedded_dir.expanduser().resolve()


def _entry(
    embedded: bool,
    running: bool,
    url: str | None,
    psql_url: str | None,
    pid: int | None,
    data_dir: str,
) -> dict[str, object]:
    entry: dict[str, object] = {"embedded": embedded, "running": running, "url": url}
    if psql_url:
        entry["psql_url"] = psql_url
    return {**entry, "pid": pid, "data_dir": data_dir}


def _url(name: str, port: int, password: str | None) -> str:
    return pg_auth.url(port, password) if name == "postgres" else redis_server.url(port, password)


def _probe(name: str, port: int, root: Path, password: str | None) -> int | None:
    if name == "postgres":
        return pg_server.probe(port, root / _DIRS[name], password)
    return redis_server.probe(port, root / _DIRS[name], password)


def _passwords(root: Path, state: dict[str, dict[str, Any]]) -> credentials.Passwords:
    """The data directory's passwords, made on first use. Never remade for a database that
    already has one: it would be locked out for good, so that is a one-line error. One
    shared password from older vitrine is split: the broker running with it is shut down
    (cleanly, its queue kept) to restart with its own."""
    passwords = credentials.load(root)
    if passwords is not None:
        if passwords.shared:
            port = state.get("redis", {}).get("port")
            if port:
                redis_server.stop(root / _DIRS["redis"], port, passwords.redis)
            passwords = credentials.separate(root, passwords)
        return passwords
    data = pg_server.PgPaths(root / _DIRS["postgres"]).data
    if pg_auth.has_password(data):
        raise ServiceError(
            f"{root / credentials.CREDENTIALS} is missing and the database in {data} opens "
            f"only with the password it held: restore that file from a backup, or move "
            f"{root / _DIRS['postgres']} away to start with an empty database"
        )
    return credentials.create(root)


def _stored(root: Path) -> credentials.Passwords | None:
    """The passwords if there are usable ones; stopping must work even without them."""
    try:
        return credentials.load(root)
    except ServiceError:
        return None


def _configured_psql_url(
    root: Path, url: str, state: dict[str, dict[str, Any]], stored: credentials.Passwords | None
) -> str:
    """`url` spelled for libpq; when it is our embedded server's own URL (handed to workers
    and test sessions through DATABASE_URL), the password-file form, which can be shown."""
    port = state.get("postgres", {}).get("port")
    if stored and port and url == pg_auth.url(port, stored.postgres):
        return _psql_url(root, port, stored.postgres)
    return sqlalchemy_to_libpq(url)


def _psql_url(root: Path, port: int, password: str) -> str:
    credentials.write_pgpass(root, port, pg_auth.PG_USER, password)
    return credentials.psql_url(root, port, pg_auth.PG_USER, pg_auth.PG_DATABASE)


def _ensure(
    state: dict[str, dict[str, Any]], name: str, root: Path, password: str, system_dir: Path
) -> str:
    """Reuse the recorded server when it answers, else start it (on the old port if free).
    A cluster of older vitrine that still trusts everyone is converted before use."""
    record = state.get(name, {})
    recorded: int | None = record.get("port")
    pid = _probe(name, recorded, root, password) if recorded else None
    if recorded and pid is not None:
        port = recorded
    else:
        if name == "postgres":
            port, pid = pg_server.start(root / _DIRS[name], recorded, password, system_dir)
        else:
            port, pid = redis_server.start(root / _DIRS[name], recorded, password)
        record = {"started_at": time.time()}
    if name == "postgres":
        pg_auth.secure(pg_server.PgPaths(root / _DIRS[name]).data, port, password)
        _psql_url(root, port, password)  # keeps the libpq password file on this port
    record.pop("url", None)  # older vitrine kept URLs here; ours carry the password
    state[name] = {**record, "port": port, "pid": pid}
    return _url(name, port, password)


def _probe_external(name: str, url: str) -> bool:
    try:
        if name == "postgres":
            with psycopg.connect(sqlalchemy_to_libpq(url), connect_timeout=2):
                return True
        client = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure, bad URL included, just means "not reachable"
        return False


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Exclusive flock on services.lock, bounded so a wedged peer can't hang us forever."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (root / "services.lock").open("a") as fh:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"another vitrine process holds {root / 'services.lock'} "
                        f"for over {LOCK_TIMEOUT_S:.0f}s"
                    ) from exc
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_state(root: Path) -> dict[str, dict[str, Any]]:
    """services.json; a missing or corrupt file is just "nothing recorded"."""
    try:
        data = json.loads((root / "services.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def _write_state(root: Path, state: dict[str, dict[str, Any]]) -> None:
    """Atomic replace, so a reader never sees half a file."""
    tmp = root / f"services.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, root / "services.json")

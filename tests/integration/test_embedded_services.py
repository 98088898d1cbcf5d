"""Embedded PostgreSQL (+pgvector) and Redis: start, reuse, status, stop, restart.

Real servers, on free ports, under a fresh temp data dir. Every test stops what it started
(the `settings` fixture's finalizer), so no server outlives the run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from embedded.common import pid_alive, wait_for
from embedded.services import (
    ServiceURLs,
    ensure_services,
    services_status,
    sqlalchemy_to_libpq,
    stop_services,
)
from worker.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

_ENV_URLS = ("DATABASE_URL", "REDIS_URL", "VITRINE_DATABASE_URL", "VITRINE_REDIS_URL")
# cosine distance between [1,2,3] and [1,2,4]
_EXPECTED = 1 - (1 + 4 + 12) / ((1 + 4 + 9) ** 0.5 * (1 + 4 + 16) ** 0.5)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh data dir, deliberately not under pytest's tmp root: as root, the PostgreSQL
    account is given o+x on the path to its data, and every pytest session start (a
    parallel run, a colleague's) chmods /tmp/pytest-of-root back to 0700, which would
    lock that account out of a server under test."""
    path = Path(tempfile.mkdtemp(prefix="vitrine-services-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for var in _ENV_URLS:
        monkeypatch.delenv(var, raising=False)
    s = Settings(data_dir=data_dir, database_url=None, redis_url=None)
    yield s
    stop_services(s)


def _distance(database_url: str) -> float:
    with psycopg.connect(sqlalchemy_to_libpq(database_url), connect_timeout=5) as conn:
        row = conn.execute("SELECT '[1,2,3]'::vector <=> '[1,2,4]'::vector").fetchone()
    assert row is not None
    return float(row[0])


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def _pids(settings: Settings) -> dict[str, object]:
    return {name: entry["pid"] for name, entry in services_status(settings).items()}


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_start_reuse_stop_restart(settings: Settings) -> None:
    urls = ensure_services(settings)
    assert urls.database_url.startswith("postgresql+psycopg://vitrine@127.0.0.1:")
    assert urls.database_url.endswith("/vitrine")
    assert urls.redis_url.startswith("redis://127.0.0.1:")
    assert "5432" not in urls.database_url and "6379" not in urls.redis_url

    assert _distance(urls.database_url) == pytest.approx(_EXPECTED)
    client = _redis(urls.redis_url)
    assert client.ping()
    client.set("vitrine:test", "queued")  # must survive the restart (appendonly)
    with psycopg.connect(sqlalchemy_to_libpq(urls.database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
        conn.execute("INSERT INTO items VALUES (1, '[1,2,3]')")

    status = services_status(settings)
    for name in ("postgres", "redis"):
        assert status[name]["embedded"] is True
        assert status[name]["running"] is True
        assert isinstance(status[name]["pid"], int)
    assert status["postgres"]["url"] == urls.database_url
    assert status["redis"]["url"] == urls.redis_url
    assert status["postgres"]["data_dir"] == str(settings.embedded_dir.resolve() / "pg")
    pids = _pids(settings)

    # Reuse: same URLs, same processes.
    assert ensure_services(settings) == urls
    assert _pids(settings) == pids

    assert sorted(stop_services(settings)) == ["postgres", "redis"]
    for pid in pids.values():
        assert isinstance(pid, int) and not pid_alive(pid)
    status = services_status(settings)
    assert not status["postgres"]["running"] and not status["redis"]["running"]
    assert status["postgres"]["pid"] is None and status["redis"]["url"] is None
    assert stop_services(settings) == []

    # Restart: the old ports were free again, so the URLs are stable; data survived.
    assert ensure_services(settings) == urls
    assert _pids(settings) != pids
    assert _distance(urls.database_url) == pytest.approx(_EXPECTED)
    assert _redis(urls.redis_url).get("vitrine:test") == b"queued"
    with psycopg.connect(sqlalchemy_to_libpq(urls.database_url)) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)


def test_servers_outlive_the_process_that_started_them(settings: Settings) -> None:
    code = (
        "import sys; from pathlib import Path; from worker.settings import Settings; "
        "from embedded.services import ensure_services; "
        "u = ensure_services(Settings(data_dir=Path(sys.argv[1]))); "
        "print(u.database_url); print(u.redis_url)"
    )
    env = {k: v for k, v in os.environ.items() if k not in _ENV_URLS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code, str(settings.data_dir)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout.split()
    assert ensure_services(settings) == ServiceURLs(out[0], out[1])
    assert all(entry["running"] for entry in services_status(settings).values())


def test_dead_servers_are_restarted(settings: Settings) -> None:
    urls = ensure_services(settings)
    pids = _pids(settings)
    for pid in pids.values():
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)  # leaves postmaster.pid / redis.pid behind

    def all_gone() -> bool | None:
        return True if not any(pid_alive(p) for p in pids.values() if isinstance(p, int)) else None

    assert wait_for(all_gone, timeout=10)
    assert not any(entry["running"] for entry in services_status(settings).values())

    assert ensure_services(settings) == urls
    assert _distance(urls.database_url) == pytest.approx(_EXPECTED)
    assert _redis(urls.redis_url).ping()
    assert set(_pids(settings).values()).isdisjoint(pids.values())


def test_lost_state_file_does_not_start_a_second_server(settings: Settings) -> None:
    """Without services.json the running postmaster is found through postmaster.pid and
    adopted; Redis is shut down cleanly and restarted (two servers must never share one
    AOF), keeping its data."""
    urls = ensure_services(settings)
    _redis(urls.redis_url).set("vitrine:test", "kept")
    pids = _pids(settings)
    (settings.embedded_dir / "services.json").unlink()

    again = ensure_services(settings)
    assert again.database_url == urls.database_url
    assert _pids(settings)["postgres"] == pids["postgres"]
    assert _redis(again.redis_url).get("vitrine:test") == b"kept"
    assert isinstance(pids["redis"], int) and not pid_alive(pids["redis"])


def test_never_adopts_the_users_own_servers(settings: Settings) -> None:
    """A state file pointing at 5432/6379 (say, after our servers died and the user's own
    took those ports) must neither be reused nor stopped."""
    users_redis_up, users_pg_up = _listening(6379), _listening(5432)
    root = settings.embedded_dir
    root.mkdir(parents=True)
    (root / "services.json").write_text(
        json.dumps({"postgres": {"port": 5432, "pid": 1}, "redis": {"port": 6379, "pid": 1}})
    )
    assert not any(entry["running"] for entry in services_status(settings).values())

    urls = ensure_services(settings)
    assert ":5432/" not in urls.database_url and ":6379/" not in urls.redis_url
    assert _distance(urls.database_url) == pytest.approx(_EXPECTED)
    assert sorted(stop_services(settings)) == ["postgres", "redis"]
    (root / "services.json").write_text(json.dumps({"redis": {"port": 6379}}))
    assert stop_services(settings) == []
    assert (_listening(6379), _listening(5432)) == (users_redis_up, users_pg_up)


def test_configured_urls_are_returned_and_nothing_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in _ENV_URLS:
        monkeypatch.delenv(var, raising=False)
    db, cache = "postgresql+psycopg://u@127.0.0.1:1/x", "redis://127.0.0.1:1/0"
    s = Settings(data_dir=tmp_path, database_url=db, redis_url=cache)
    assert ensure_services(s) == ServiceURLs(db, cache)
    assert not s.embedded_dir.exists()
    status = services_status(s)
    for name in ("postgres", "redis"):
        assert status[name]["embedded"] is False
        assert status[name]["running"] is False  # nothing listens on port 1
        assert status[name]["pid"] is None
    assert stop_services(s) == []


def test_only_the_unset_service_is_embedded(settings: Settings) -> None:
    db = "postgresql+psycopg://u@127.0.0.1:1/x"
    s = settings.model_copy(update={"database_url": db})
    urls = ensure_services(s)
    assert urls.database_url == db
    assert _redis(urls.redis_url).ping()
    assert not (s.embedded_dir / "pg").exists()
    status = services_status(s)
    assert status["postgres"]["embedded"] is False
    assert status["redis"]["embedded"] is True and status["redis"]["running"] is True
    assert stop_services(s) == ["redis"]

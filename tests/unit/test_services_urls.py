"""Pure helpers of vitrine.embedded.services and the embedded launchers (no servers started)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vitrine.embedded import credentials, pg_auth, redis_server
from vitrine.embedded.common import (
    RESERVED_PORTS,
    ServiceError,
    free_port,
    pid_alive,
    port_is_free,
    process_in_dir,
    read_pid,
    wait_for,
)
from vitrine.embedded.services import (
    ServiceURLs,
    _read_state,
    _write_state,
    ensure_services,
    services_status,
    sqlalchemy_to_libpq,
)
from vitrine.settings import Settings


def test_service_error_is_a_runtime_error() -> None:
    assert issubclass(ServiceError, RuntimeError)


def test_embedded_urls_carry_the_password() -> None:
    assert pg_auth.url(54321, "pw") == "postgresql+psycopg://vitrine:pw@127.0.0.1:54321/vitrine"
    assert redis_server.url(16379, "pw") == "redis://:pw@127.0.0.1:16379/0"
    # A trust cluster of older vitrine, before its conversion: no password to give.
    assert pg_auth.url(54321, None) == "postgresql+psycopg://vitrine@127.0.0.1:54321/vitrine"


def test_credentials_are_made_once_private_and_url_safe(tmp_path: Path) -> None:
    assert credentials.load(tmp_path) is None
    made = credentials.create(tmp_path)
    path = tmp_path / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert credentials.load(tmp_path) == made
    assert made.postgres != made.redis and not made.shared  # one each
    for password in (made.postgres, made.redis):
        assert len(password) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", password)
    assert [p.name for p in tmp_path.iterdir()] == ["credentials.json"]  # no temp left


def test_one_shared_password_of_older_vitrine_is_split_keeping_the_databases(
    tmp_path: Path,
) -> None:
    (tmp_path / "credentials.json").write_text('{"password": "old-shared-password-0123"}')
    old = credentials.load(tmp_path)
    assert old is not None and old.shared and old.of("redis") == "old-shared-password-0123"
    split = credentials.separate(tmp_path, old)
    assert split.postgres == "old-shared-password-0123"  # its SCRAM verifier is stored
    assert split.redis != split.postgres and credentials.load(tmp_path) == split


@pytest.mark.parametrize(
    "text",
    ["{not json", '{"password": 3}', '{"password": "a b:c"}', "[]", '{"postgres": "x" }'],
)
def test_unusable_credentials_are_an_error_not_a_new_password(tmp_path: Path, text: str) -> None:
    (tmp_path / "credentials.json").write_text(text)
    with pytest.raises(ServiceError, match="credentials.json"):
        credentials.load(tmp_path)


def test_pgpass_follows_the_port_and_psql_url_names_it(tmp_path: Path) -> None:
    path = credentials.write_pgpass(tmp_path, 5555, "vitrine", "s3cret")
    assert path.read_text() == "127.0.0.1:5555:*:vitrine:s3cret\n"
    assert path.stat().st_mode & 0o777 == 0o600
    credentials.write_pgpass(tmp_path, 6666, "vitrine", "s3cret")
    assert path.read_text() == "127.0.0.1:6666:*:vitrine:s3cret\n"
    url = credentials.psql_url(tmp_path / "a dir", 6666, "vitrine", "vitrine")
    assert url == (
        f"postgresql://vitrine@127.0.0.1:6666/vitrine?passfile={tmp_path}/a%20dir/pgpass"
    )


def test_trust_rules_become_scram_and_comments_stay() -> None:
    hba = (
        "# a comment that mentions trust\n"
        "local   all   all                  trust\n"
        "host    all   all   127.0.0.1/32   trust  \n"
        "host    all   all   ::1/128        scram-sha-256\n"
        "#local  all   all                  trust\n"
    )
    assert pg_auth.without_trust(hba) == (
        "# a comment that mentions trust\n"
        "local   all   all                  scram-sha-256\n"
        "host    all   all   127.0.0.1/32   scram-sha-256  \n"
        "host    all   all   ::1/128        scram-sha-256\n"
        "#local  all   all                  trust\n"
    )


def test_redis_conf_holds_the_password_and_quotes_paths(tmp_path: Path) -> None:
    paths = redis_server.RedisPaths(tmp_path / 'my "data" dir')
    conf = redis_server._config(paths, 16379, "pw-_0")
    lines = conf.splitlines()
    assert 'requirepass "pw-_0"' in lines and 'bind "127.0.0.1"' in lines
    assert 'appendonly "yes"' in lines and 'save ""' in lines
    assert f'dir "{tmp_path}/my \\"data\\" dir"' in lines


def test_server_binary_is_valkey() -> None:
    binary = redis_server.server_binary()
    assert binary.name == "valkey-server"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert int(re.search(r"v=(\d+)\.", version.stdout)[1]) >= 9  # type: ignore[index]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://vitrine@127.0.0.1:5/vitrine",
            "postgresql://vitrine@127.0.0.1:5/vitrine",
        ),
        ("postgresql+psycopg2://u:p@h/db?sslmode=require", "postgresql://u:p@h/db?sslmode=require"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_sqlalchemy_to_libpq(url: str, expected: str) -> None:
    assert sqlalchemy_to_libpq(url) == expected


def test_free_port_is_free_and_never_reserved() -> None:
    port = free_port()
    assert port not in RESERVED_PORTS
    assert port_is_free(port)
    assert free_port(preferred=port) == port  # a still-free preferred port is kept
    assert free_port(preferred=5432) != 5432


def test_port_in_use_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free(port)
        assert free_port(preferred=port) != port


def test_pid_helpers(tmp_path: Path) -> None:
    assert pid_alive(os.getpid())
    assert process_in_dir(os.getpid(), Path.cwd()) in (True, None)
    assert process_in_dir(os.getpid(), tmp_path) in (False, None)
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not pid_alive(int(done.stdout))  # exited and reaped
    assert not pid_alive(None) and not pid_alive(0)

    (tmp_path / "a.pid").write_text("123\n")
    (tmp_path / "b.pid").write_text("garbage")
    assert read_pid(tmp_path / "a.pid") == 123
    assert read_pid(tmp_path / "b.pid") is None
    assert read_pid(tmp_path / "missing.pid") is None


def test_wait_for() -> None:
    calls = iter([None, None, 7])
    assert wait_for(lambda: next(calls), timeout=5, interval=0.001) == 7
    assert wait_for(lambda: None, timeout=0.05, interval=0.01) is None
    assert wait_for(lambda: None, timeout=60, give_up=lambda: True) is None


def test_state_file_roundtrip_and_corruption(tmp_path: Path) -> None:
    assert _read_state(tmp_path) == {}
    _write_state(tmp_path, {"redis": {"port": 1234, "pid": 5}})
    assert _read_state(tmp_path) == {"redis": {"port": 1234, "pid": 5}}
    assert [p.name for p in tmp_path.iterdir()] == ["services.json"]  # no temp left over
    (tmp_path / "services.json").write_text("{not json")
    assert _read_state(tmp_path) == {}
    (tmp_path / "services.json").write_text('{"redis": 3, "postgres": {"port": 1}}')
    assert _read_state(tmp_path) == {"postgres": {"port": 1}}


def test_configured_urls_start_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DATABASE_URL", "REDIS_URL", "VITRINE_DATABASE_URL", "VITRINE_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    db, cache = "postgresql+psycopg://u@127.0.0.1:1/x", "redis://127.0.0.1:1/0"
    s = Settings(data_dir=tmp_path / "data", database_url=db, redis_url=cache)
    assert ensure_services(s) == ServiceURLs(db, cache)
    assert not (tmp_path / "data").exists()
    status = services_status(s)
    assert status["postgres"] == {
        "embedded": False,
        "running": False,
        "url": db,
        "psql_url": "postgresql://u@127.0.0.1:1/x",  # the same server, spelled for psql
        "pid": None,
        "data_dir": str(tmp_path / "data" / "services" / "pg"),
    }
    assert status["redis"]["embedded"] is False and status["redis"]["running"] is False


def test_status_of_never_started_embedded_services(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, database_url=None, redis_url=None)
    for entry in services_status(s).values():
        assert entry["embedded"] is True
        assert entry["running"] is False
        assert entry["url"] is None and entry["pid"] is None
    assert not s.embedded_dir.exists()  # status creates nothing

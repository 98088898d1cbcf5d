"""A server that cannot be reached: one line naming it (never its password), exit 3.

The "servers" are closed ports on 127.0.0.1: a socket is bound but never listens, so a
connection is refused at once and no traffic leaves the machine.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from vitrine.cli.app import app
from vitrine.ops.errors import ServerUnreachable, UserError
from vitrine.ops.servers import check_redis, database_revision, redact
from vitrine.settings import get_settings

runner = CliRunner()


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        yield int(sock.getsockname()[1])


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _one_line_exit_3(args: list[str], *fragments: str) -> str:
    result = runner.invoke(app, args)
    text = result.output.strip()
    assert result.exit_code == 3, (result.exit_code, text, result.exception)
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    assert "s3cret" not in text
    return text


def test_unreachable_database(env: None, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:s3cret@127.0.0.1:{closed_port}/db")
    monkeypatch.setenv("REDIS_URL", f"redis://:s3cret@127.0.0.1:{closed_port}/0")
    get_settings.cache_clear()
    for command in (["status"], ["similar", "1"], ["models", "list"], ["db", "upgrade"]):
        _one_line_exit_3(command, f"127.0.0.1:{closed_port}", "DATABASE_URL", "Connection refused")


def test_unreachable_broker(closed_port: int) -> None:
    with pytest.raises(ServerUnreachable) as caught:
        check_redis(f"redis://:s3cret@127.0.0.1:{closed_port}/0")
    message = str(caught.value)
    assert f"127.0.0.1:{closed_port}" in message and "REDIS_URL" in message
    assert "s3cret" not in message


def test_database_url_of_another_kind_is_a_user_error() -> None:
    with pytest.raises(UserError, match="DATABASE_URL is not a PostgreSQL URL"):
        database_revision("mysql://u:p@127.0.0.1/db")


def test_redact_hides_passwords_only() -> None:
    assert redact("postgresql+psycopg://u:pw@db:5432/v") == "postgresql+psycopg://u:***@db:5432/v"
    assert redact("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_without_the_embedded_package_unset_urls_are_a_clear_user_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A production install leaves `embedded/` out: the CLI still imports and explains."""
    import os
    import subprocess
    import sys

    script = (
        # as if the embedded extra were not installed
        "import sys; sys.modules['vitrine.embedded'] = None\n"
        "from vitrine.cli.app import app\n"
        "app(['status'], prog_name='vitrine')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["VITRINE_DATA_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "DATABASE_URL is not set" in proc.stderr and "embedded" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing was started or written

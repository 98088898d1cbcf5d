"""Messages naming sources the policy refuses, through a real worker: each fails its own
row at once with the reason, nothing is retried, and the target sees no request."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine, text

from tests.integration.conftest import ALLOWED_HTTP_HOST, vitrine

pytestmark = pytest.mark.integration


class Recorder(http.server.SimpleHTTPRequestHandler):
    """Serves a directory and records every request path it receives."""

    seen: list[str]

    def log_message(self, *args: object) -> None:
        self.seen.append(self.path)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[int, list[str], list[str]]]:
    """One port, two servers: the internal one on 127.0.0.1 (must stay untouched) and an
    allowed one on ALLOWED_HTTP_HOST, which redirects /go to the internal one."""
    Image.new("RGB", (64, 64), "navy").save(tmp_path / "p.png")
    internal_seen: list[str] = []
    allowed_seen: list[str] = []
    internal_handler = type("Internal", (Recorder,), {"seen": internal_seen})
    internal = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(internal_handler, directory=str(tmp_path))
    )
    port = int(internal.server_address[1])

    class Redirecting(Recorder):
        seen = allowed_seen

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/go":
                self.send_response(302)  # (log_message records the request)
                self.send_header("Location", f"http://127.0.0.1:{port}/p.png")
                self.end_headers()
                return
            super().do_GET()

    allowed = http.server.ThreadingHTTPServer(
        (ALLOWED_HTTP_HOST, port), functools.partial(Redirecting, directory=str(tmp_path))
    )
    for server in (internal, allowed):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port, internal_seen, allowed_seen
    for server in (internal, allowed):
        server.shutdown()
        server.server_close()


def _outcome(uri: str, merchant: str) -> dict:  # type: ignore[type-arg]
    from vitrine.worker.client import submit_upload

    return submit_upload(uri, merchant_id=merchant).get(timeout=120)


def test_refused_sources_fail_at_once_and_send_nothing(
    pipeline_env, celery_worker_process, clean_db: Engine, servers, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    port, internal_seen, allowed_seen = servers
    outside = Path(tempfile_outside())
    link = tmp_path / "innocent.png"
    link.symlink_to(outside)
    cases = {
        f"http://127.0.0.1:{port}/p.png": "loopback address",
        f"http://localhost:{port}/p.png": "loopback address",
        f"http://{ALLOWED_HTTP_HOST}:{port}/go": "loopback address",  # redirect inside
        "file:///etc/shadow": "outside the workers' file roots",
        str(link): "through a symlink",
        "gopher://127.0.0.1:70/": "unsupported URI scheme",
    }
    for n, (uri, reason) in enumerate(cases.items()):
        outcome = _outcome(uri, f"m-refused-{n}")
        (error,) = outcome["failed"].values()
        assert reason in error, (uri, error)
        assert outcome["transient"] == {}  # refusals are not retried
    assert internal_seen == []  # the internal service never saw a request
    assert allowed_seen == ["/go"]  # the allowed host was asked once, then its redirect refused
    with clean_db.connect() as conn:
        rows = conn.execute(text("SELECT status, attempts FROM images")).all()
    assert len(rows) == len(cases) and {tuple(r) for r in rows} == {("failed", 1)}


def test_allowed_sources_and_missing_files(
    pipeline_env, celery_worker_process, clean_db: Engine, servers, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    port, internal_seen, allowed_seen = servers
    fetched = _outcome(f"http://{ALLOWED_HTTP_HOST}:{port}/p.png", "m-allowed")
    assert len(fetched["done"]) == 1 and allowed_seen == ["/p.png"] and internal_seen == []
    gone = _outcome(str(tmp_path / "gone.png"), "m-missing")  # inside a root: not found
    (error,) = gone["failed"].values()
    assert error.startswith("file not found")


def test_the_cli_stages_files_from_outside_the_roots(
    pipeline_env, celery_worker_process, clean_db: Engine
) -> None:  # type: ignore[no-untyped-def]
    """A user's own photo anywhere on disk still works: `submit` links it into the upload
    directory, the one root every worker reads by default."""
    elsewhere = Path(tempfile_outside(directory=True))
    photo = elsewhere / "shoe.png"
    Image.new("RGB", (300, 200), "white").save(photo)
    try:
        env = {**pipeline_env, "VITRINE_FILE_ROOTS": ""}  # the CLI's own default roots
        proc = vitrine(env, "submit", str(photo), "--merchant", "m-staged", "--wait", "--json")
        assert proc.returncode == 0, proc.stderr
        (row,) = json.loads(proc.stdout)["results"]
    finally:
        shutil.rmtree(elsewhere)
    uploads = Path(pipeline_env["VITRINE_DATA_DIR"]) / "uploads" / "staged"
    assert row["status"] == "done"
    assert row["uri"].startswith(uploads.as_uri()) and row["uri"].endswith("/shoe.png")


def tempfile_outside(*, directory: bool = False) -> str:
    """A path outside the session's file roots (which cover pytest's temp tree)."""
    import tempfile

    base = Path("/var/tmp")
    if directory:
        return tempfile.mkdtemp(prefix="vitrine-outside-", dir=base)
    handle, name = tempfile.mkstemp(prefix="vitrine-outside-", dir=base)
    import os

    os.write(handle, b"not yours")
    os.close(handle)
    return name

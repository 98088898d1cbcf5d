"""Fetching under the policy, against HTTP servers on loopback addresses this test runs.

The policy refuses loopback by default, so the servers that should be reachable listen on
127.0.0.2 and the tests allow exactly that address; the server on 127.0.0.1 plays the
internal service an attacker aims at, and must see no request at all.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from worker.fetch import PermanentError, RefusedSource, TransientError, fetch_bytes
from worker.sources import SourcePolicy, parse_networks

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"


class Server:
    """A loopback HTTP server whose routes are (status, headers, body)."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requests.append((self.path, self.headers.get("Host", "")))
                status, headers, body = server.routes.get(self.path, (404, {}, b"missing"))
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def allowed() -> Iterator[Server]:
    server = Server("127.0.0.2")
    yield server
    server.close()


@pytest.fixture
def internal(allowed: Server) -> Iterator[Server]:
    """The service to protect, on 127.0.0.1 and on the same port number as `allowed`."""
    server = Server("127.0.0.1", allowed.port)
    yield server
    server.close()


def policy(resolver: object = None, **kwargs: object) -> SourcePolicy:
    extra = {"resolver": resolver} if resolver else {}
    return SourcePolicy(
        allowed_networks=parse_networks(["127.0.0.2"]), timeout=5, **extra, **kwargs
    )  # type: ignore[arg-type]


def test_fetches_an_allowed_address(allowed: Server) -> None:
    allowed.routes["/p.png"] = (200, {}, PNG)
    assert fetch_bytes(f"http://127.0.0.2:{allowed.port}/p.png", policy()) == PNG


def test_refused_by_default_and_nothing_is_sent(internal: Server) -> None:
    internal.routes["/admin"] = (200, {}, PNG)
    with pytest.raises(RefusedSource, match="loopback"):
        fetch_bytes(f"http://127.0.0.1:{internal.port}/admin", SourcePolicy())
    with pytest.raises(RefusedSource, match="loopback"):
        fetch_bytes(f"http://localhost:{internal.port}/admin", SourcePolicy())
    assert internal.requests == []


def test_connects_to_the_checked_address_not_a_second_answer(
    allowed: Server, internal: Server
) -> None:
    """DNS rebinding: the first answer passes the check, a second would point inside."""
    allowed.routes["/p.png"] = (200, {}, PNG)
    internal.routes["/p.png"] = (200, {}, b"internal")

    class Rebinding:
        calls = 0

        def __call__(self, host: str, port: int) -> list[str]:
            self.calls += 1
            return ["127.0.0.2"] if self.calls == 1 else ["127.0.0.1"]

    resolver = Rebinding()
    data = fetch_bytes(f"http://images.example:{allowed.port}/p.png", policy(resolver))
    assert data == PNG and resolver.calls == 1
    assert allowed.requests == [("/p.png", f"images.example:{allowed.port}")]  # Host kept
    assert internal.requests == []


def test_every_redirect_is_checked_again(allowed: Server, internal: Server) -> None:
    target = f"http://127.0.0.1:{internal.port}/secret"
    allowed.routes["/go"] = (302, {"Location": target}, b"")
    allowed.routes["/hop"] = (301, {"Location": "/p.png"}, b"")
    allowed.routes["/p.png"] = (200, {}, PNG)
    with pytest.raises(RefusedSource, match="loopback"):
        fetch_bytes(f"http://127.0.0.2:{allowed.port}/go", policy())
    assert internal.requests == []
    assert fetch_bytes(f"http://127.0.0.2:{allowed.port}/hop", policy()) == PNG  # relative


def test_redirect_loops_and_statuses(allowed: Server) -> None:
    base = f"http://127.0.0.2:{allowed.port}"
    allowed.routes["/loop"] = (302, {"Location": "/loop"}, b"")
    allowed.routes["/busy"] = (503, {}, b"")
    allowed.routes["/slow-down"] = (429, {}, b"")
    allowed.routes["/big"] = (200, {}, b"x" * 2048)
    with pytest.raises(PermanentError, match="more than 5 redirects"):
        fetch_bytes(f"{base}/loop", policy())
    assert len(allowed.requests) == 6  # the first request and five redirects, then stop
    with pytest.raises(PermanentError, match="HTTP 404"):
        fetch_bytes(f"{base}/nothing-here", policy())
    for path in ("/busy", "/slow-down"):
        with pytest.raises(TransientError, match="HTTP"):
            fetch_bytes(f"{base}{path}", policy())
    with pytest.raises(PermanentError, match="over the"):
        fetch_bytes(f"{base}/big", policy(max_bytes=1024))


def test_a_closed_port_is_transient() -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.2", 0))
        port = closed.getsockname()[1]
        with pytest.raises(TransientError, match="could not fetch"):
            fetch_bytes(f"http://127.0.0.2:{port}/p.png", policy())


def test_other_schemes_are_refused() -> None:
    for uri in ("ftp://example.com/a.png", "gopher://127.0.0.1:70/", "data:image/png;base64,AA"):
        with pytest.raises(PermanentError, match="unsupported URI scheme"):
            fetch_bytes(uri, SourcePolicy())


# --------------------------------------------------------------------------- files


def test_file_reads(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "p.png").write_bytes(PNG)
    (root / "dir").mkdir()
    os.mkfifo(root / "pipe")
    (root / "out.png").symlink_to("/etc/passwd")
    files = SourcePolicy(file_roots=(root,))
    assert fetch_bytes((root / "p.png").as_uri(), files) == PNG
    assert fetch_bytes(str(root / "p.png"), files) == PNG  # a plain path
    with pytest.raises(PermanentError, match="file not found"):
        fetch_bytes(str(root / "gone.png"), files)
    with pytest.raises(PermanentError, match="is a directory"):
        fetch_bytes(str(root / "dir"), files)
    with pytest.raises(PermanentError, match="not a regular file"):  # would block for ever
        fetch_bytes(str(root / "pipe"), files)
    with pytest.raises(RefusedSource, match="through a symlink"):
        fetch_bytes(str(root / "out.png"), files)
    with pytest.raises(RefusedSource, match="outside the file roots"):
        fetch_bytes("file:///etc/shadow", files)
    with pytest.raises(PermanentError, match="over the"):
        fetch_bytes(str(root / "p.png"), SourcePolicy(file_roots=(root,), max_bytes=4))

"""Fetching under the policy, against HTTP servers on loopback addresses this test runs.

The policy refuses loopback by default, so the servers that should be reachable listen on
127.0.0.2 and the tests allow exactly that address; the server on 127.0.0.1 plays the
internal service an attacker aims at, and must see no request at all.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vitrine.sources.fetch import PermanentError, RefusedSource, TransientError, fetch_bytes
from vitrine.sources.policy import SourcePolicy, parse_networks

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"

#: A route that answers by itself: the slow and stalling servers of the deadline tests.
Answer = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A loopback HTTP server whose routes are (status, headers, body) or an `Answer`."""

    def __init__(self, host: str, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes] | Answer] = {}
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.released = threading.Event()  # set on close: stalled answers stop waiting
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requests.append((self.path, self.headers.get("Host", "")))
                route = server.routes.get(self.path, (404, {}, b"missing"))
                if callable(route):
                    route(self)
                    return
                status, headers, body = route
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def server_pair() -> tuple[Server, Server]:
    """Servers on 127.0.0.2 and 127.0.0.1 with one port number, tried again on another if
    the number is taken on 127.0.0.1 (by a client socket's source port, say)."""
    for _ in range(50):
        outside = Server("127.0.0.2")
        try:
            return outside, Server("127.0.0.1", outside.port)
        except OSError:
            outside.close()
    raise RuntimeError("no port number free on both 127.0.0.1 and 127.0.0.2")


@pytest.fixture
def pair() -> Iterator[tuple[Server, Server]]:
    servers = server_pair()
    yield servers
    for server in servers:
        server.close()


@pytest.fixture
def allowed(pair: tuple[Server, Server]) -> Server:
    return pair[0]


@pytest.fixture
def internal(pair: tuple[Server, Server]) -> Server:
    """The service to protect, on 127.0.0.1 and on the same port number as `allowed`."""
    return pair[1]


def policy(resolver: object = None, **kwargs: Any) -> SourcePolicy:
    extra: dict[str, Any] = {"resolver": resolver} if resolver else {}
    return SourcePolicy(
        allowed_networks=parse_networks(["127.0.0.2"]), timeout=5, **extra, **kwargs
    )


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
    with pytest.raises(RefusedSource, match="outside the workers. file roots"):
        fetch_bytes("file:///etc/shadow", files)
    with pytest.raises(PermanentError, match="over the"):
        fetch_bytes(str(root / "p.png"), SourcePolicy(file_roots=(root,), max_bytes=4))


# ------------------------------------------------------------------------- deadlines
#
# The policy's socket timeout is 5 s; each fetch gets a 1 s deadline. A trickling server
# sends well within 5 s between bytes, so only the deadline over the whole fetch stops it.

DEADLINE = 1.0
MARGIN = 1.5  # scheduling slack on a shared, busy machine


def trickle(headers_too: bool) -> Answer:
    """A byte every 0.1 s, for 1000 s if nobody hangs up: headers first, or body only."""
    head = b"HTTP/1.0 200 OK\r\nContent-Length: 10000\r\n\r\n"

    def answer(handler: BaseHTTPRequestHandler) -> None:
        if not headers_too:
            handler.wfile.write(head)
        try:
            for byte in head if headers_too else b"x" * 10_000:
                handler.wfile.write(bytes([byte]))  # unbuffered: each byte goes at once
                time.sleep(0.1)  # the fault under test: a server that trickles
        except OSError:  # the client hung up: what the deadline is for
            pass

    return answer


def timed_fetch(uri: str, pol: SourcePolicy) -> float:
    start = time.monotonic()
    with pytest.raises(TransientError, match="not done within 1 s"):
        fetch_bytes(uri, pol, deadline_s=DEADLINE)
    return time.monotonic() - start


@pytest.mark.parametrize("headers_too", [True, False], ids=["headers", "body"])
def test_a_trickling_server_runs_out_of_time(allowed: Server, headers_too: bool) -> None:
    allowed.routes["/slow.png"] = trickle(headers_too)
    took = timed_fetch(f"http://127.0.0.2:{allowed.port}/slow.png", policy())
    assert DEADLINE <= took < DEADLINE + MARGIN


def test_the_deadline_spans_every_redirect(allowed: Server) -> None:
    """Three hops of 0.4 s each: every hop is quick, the fetch as a whole is not."""

    def hop(to: str) -> Answer:
        def answer(handler: BaseHTTPRequestHandler) -> None:
            allowed.released.wait(0.4)  # the fault: a slow hop
            handler.send_response(302)
            handler.send_header("Location", to)
            handler.end_headers()

        return answer

    allowed.routes |= {f"/{i}": hop(f"/{i + 1}") for i in range(3)} | {"/3": (200, {}, PNG)}
    assert timed_fetch(f"http://127.0.0.2:{allowed.port}/0", policy()) < DEADLINE + MARGIN
    assert [path for path, _ in allowed.requests] == ["/0", "/1", "/2"]  # never "/3"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a cert")
def test_tls_handshakes_and_reads_run_out_of_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener that never answers the handshake, then a server that trickles through
    TLS (its test certificate trusted via SSL_CERT_FILE)."""
    with socket.socket() as silent:  # listens, never accepts: the handshake hangs
        silent.bind(("127.0.0.2", 0))
        silent.listen()
        port = silent.getsockname()[1]
        assert timed_fetch(f"https://127.0.0.2:{port}/p.png", policy()) < DEADLINE + MARGIN
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=vitrine-test"
    make += " -addext subjectAltName=IP:127.0.0.2 -keyout KEY -out CERT"
    args = [{"KEY": str(key), "CERT": str(cert)}.get(arg, arg) for arg in make.split()]
    subprocess.run(args, check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = Server("127.0.0.2", tls=tls)
    try:
        server.routes |= {"/p.png": (200, {}, PNG), "/slow.png": trickle(headers_too=False)}
        base = f"https://127.0.0.2:{server.port}"
        assert fetch_bytes(f"{base}/p.png", policy()) == PNG  # the cert is trusted
        assert DEADLINE <= timed_fetch(f"{base}/slow.png", policy()) < DEADLINE + MARGIN
    finally:
        server.close()

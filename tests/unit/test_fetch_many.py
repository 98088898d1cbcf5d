"""A batch of fetches against loopback servers this test runs: slow sources fail alone.

Reachable servers listen on 127.0.0.2 (allowed by the policy), the internal service on
127.0.0.1 must see nothing. Concurrency is pinned with barriers in the handlers: a
handler that waits for `n` partners proves `n` requests were in flight together, and a
counter of requests in flight (raised on arrival, lowered before answering, so always
within the client's slot), with each request held a moment past the barrier, proves
there were never more. Where a server must be slow, the sleep in its handler is the
fault under test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_fetch import DEADLINE, MARGIN, PNG, Answer, Server, server_pair, trickle
from vitrine.sources.fetch import PermanentError, RefusedSource, TransientError
from vitrine.sources.fetch_many import fetch_all
from vitrine.sources.policy import SourcePolicy, parse_networks

HOSTS = {
    "images.example": "127.0.0.2",
    "hangs.example": "127.0.0.2",
    "internal.example": "127.0.0.1",
}


def resolver(host: str, port: int) -> list[str]:
    """No DNS: names map to loopback addresses, IP literals to themselves."""
    return [HOSTS.get(host, host)]


def policy(**kwargs: Any) -> SourcePolicy:
    settings: dict[str, Any] = {"timeout": 5, "resolver": resolver, **kwargs}
    return SourcePolicy(allowed_networks=parse_networks(["127.0.0.2"]), **settings)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Three servers on 127.0.0.2: three hosts, as far as the per-host limit counts."""
    started = [Server("127.0.0.2") for _ in range(3)]
    yield started
    for server in started:
        server.close()


class InFlight:
    """Counts requests in flight on one server and keeps the most seen at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0

    def answer(self, hold: float, together: threading.Barrier | None = None) -> Answer:
        """Hold each request `hold` seconds, after waiting for `together`'s parties: the
        barrier proves that many were in flight at once, the hold is the window in which
        one more, had the client sent it, would be counted."""

        def respond(handler: BaseHTTPRequestHandler) -> None:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                if together is not None:
                    together.wait(timeout=10)
                time.sleep(hold)  # the slow server under test
                status, body = 200, PNG
            except threading.BrokenBarrierError:
                status, body = 500, b"fewer in flight than expected"
            with self.lock:
                self.now -= 1
            handler.send_response(status)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

        return respond


def stall(server: Server) -> Answer:
    """Accept the request and say nothing until the test is over."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        server.released.wait(timeout=30)

    return answer


def test_a_stalled_server_fails_only_its_own_images(servers: list[Server]) -> None:
    fast, slow, _ = servers
    served: list[float] = []

    def quick(handler: BaseHTTPRequestHandler) -> None:
        served.append(time.monotonic())
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(PNG)))
        handler.end_headers()
        handler.wfile.write(PNG)

    fast.routes |= {f"/{i}.png": quick for i in range(10)}
    slow.routes |= {"/stall.png": stall(slow), "/trickle.png": trickle(headers_too=False)}
    uris = [f"http://127.0.0.2:{slow.port}/stall.png", f"http://127.0.0.2:{slow.port}/trickle.png"]
    uris += [f"http://127.0.0.2:{fast.port}/{i}.png" for i in range(10)]

    start = time.monotonic()
    got = fetch_all(uris, policy(), max_workers=4, per_host=2, deadline_s=DEADLINE)
    took = time.monotonic() - start

    assert list(got) == uris
    assert all(got[uri] == PNG for uri in uris[2:])
    assert max(served) - start < DEADLINE  # not held up behind the two stuck fetches
    for uri in uris[:2]:
        assert isinstance(got[uri], TransientError), got[uri]
        assert "not done within 1 s" in str(got[uri])
    assert DEADLINE <= took < DEADLINE + MARGIN


def test_each_image_has_its_own_deadline_and_the_batch_one_caps_them(
    servers: list[Server],
) -> None:
    """One slot for the stalled host: the first image gets 1 s from its own start, the
    second what is left of the 1.5 s batch, the third never starts."""
    slow = servers[0]
    slow.routes |= {f"/{i}.png": stall(slow) for i in range(3)}
    uris = [f"http://127.0.0.2:{slow.port}/{i}.png" for i in range(3)]
    start = time.monotonic()
    got = fetch_all(
        uris, policy(), max_workers=4, per_host=1, deadline_s=DEADLINE, batch_deadline_s=1.5
    )
    took = time.monotonic() - start
    assert all(isinstance(got[uri], TransientError) for uri in uris)
    assert "not done within 1 s" in str(got[uris[0]])
    assert "ran out before its turn" in str(got[uris[2]])
    assert sorted(path for path, _ in slow.requests) == ["/0.png", "/1.png"]  # not the third
    assert 1.5 <= took < 1.5 + MARGIN


def test_no_host_sees_more_than_per_host_requests_at_once(servers: list[Server]) -> None:
    """Nine images on one host, three slots for it, eight overall: three at a time."""
    host = servers[0]
    flight = InFlight()
    answer = flight.answer(0.2, threading.Barrier(3))  # one barrier, shared by every route
    host.routes |= {f"/{i}.png": answer for i in range(9)}
    uris = [f"http://127.0.0.2:{host.port}/{i}.png" for i in range(9)]
    got = fetch_all(uris, policy(), max_workers=8, per_host=3, deadline_s=15)
    assert all(got[uri] == PNG for uri in uris), got
    assert flight.most == 3


def test_the_pool_runs_max_workers_at_once(servers: list[Server]) -> None:
    """Eight 0.4 s images over three hosts, four workers: about 0.8 s, not 3.2 s."""
    flight = InFlight()
    uris = []
    for n, server in enumerate(servers):
        server.routes |= {f"/{i}.png": flight.answer(0.4) for i in range(3)}
        uris += [f"http://127.0.0.2:{server.port}/{i}.png" for i in range(3 if n < 2 else 2)]
    start = time.monotonic()
    got = fetch_all(uris, policy(), max_workers=4, per_host=8, deadline_s=15)
    took = time.monotonic() - start
    assert all(got[uri] == PNG for uri in uris), got
    assert flight.most == 4
    assert 0.8 <= took < 8 * 0.4 / 2


def test_refused_sources_are_refused_and_nothing_reaches_the_internal_service(
    tmp_path: Path,
) -> None:
    good, internal = server_pair()
    try:
        internal.routes["/admin"] = (200, {}, b"secret")
        good.routes["/p.png"] = (200, {}, PNG)
        good.routes["/go"] = (302, {"Location": f"http://127.0.0.1:{good.port}/admin"}, b"")
        refused = [
            f"http://127.0.0.1:{good.port}/admin",
            f"http://internal.example:{good.port}/admin",  # a name that resolves inside
            f"http://images.example:{good.port}/go",  # a redirect that points inside
            "file:///etc/passwd",  # outside the file roots
        ]
        ok = f"http://images.example:{good.port}/p.png"
        got = fetch_all([*refused, ok], policy(file_roots=(tmp_path,)), max_workers=4, per_host=2)
        for uri in refused:
            assert isinstance(got[uri], RefusedSource), (uri, got[uri])
        assert got[ok] == PNG
        assert internal.requests == []
    finally:
        good.close()
        internal.close()


def test_duplicates_are_fetched_once_and_files_read_too(
    servers: list[Server], tmp_path: Path
) -> None:
    host = servers[0]
    host.routes["/p.png"] = (200, {}, PNG)
    (tmp_path / "local.png").write_bytes(b"local")
    uri = f"http://127.0.0.2:{host.port}/p.png"
    local = str(tmp_path / "local.png")
    missing, ftp = f"http://127.0.0.2:{host.port}/gone.png", "ftp://example.com/a.png"
    bad_port = "http://127.0.0.2:http/p.png"
    batch = [uri, local, uri, missing, uri, ftp, local, bad_port]
    got = fetch_all(batch, policy(file_roots=(tmp_path,)), max_workers=2, per_host=1)
    assert list(got) == [uri, local, missing, ftp, bad_port]
    assert got[uri] == PNG and got[local] == b"local"
    assert isinstance(got[missing], PermanentError) and "HTTP 404" in str(got[missing])
    assert isinstance(got[ftp], PermanentError) and "unsupported URI scheme" in str(got[ftp])
    assert isinstance(got[bad_port], PermanentError) and "port is not" in str(got[bad_port])
    assert [path for path, _ in host.requests].count("/p.png") == 1


def test_a_hung_lookup_is_given_up_on_without_holding_the_batch(servers: list[Server]) -> None:
    """No socket timeout bounds a DNS lookup; the batch stops waiting shortly after the
    image's deadline and the stuck thread's late answer is dropped."""
    host = servers[0]
    host.routes["/p.png"] = (200, {}, PNG)
    unblock = threading.Event()

    def hanging(name: str, port: int) -> list[str]:
        if name == "hangs.example":
            unblock.wait(timeout=30)
        return resolver(name, port)

    hung = f"http://hangs.example:{host.port}/p.png"  # resolves to 127.0.0.2, but late
    ok = f"http://127.0.0.2:{host.port}/p.png"
    start = time.monotonic()
    try:
        got = fetch_all(
            [hung, ok], policy(resolver=hanging), max_workers=2, per_host=1, deadline_s=DEADLINE
        )
    finally:
        unblock.set()
    took = time.monotonic() - start
    assert got[ok] == PNG
    assert isinstance(got[hung], TransientError) and "no answer within 1 s" in str(got[hung])
    assert DEADLINE <= took < DEADLINE + MARGIN + 1.0  # + the grace for a late answer


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        fetch_all([], policy(), max_workers=0, per_host=1)
    assert fetch_all([], policy(), max_workers=1, per_host=1) == {}

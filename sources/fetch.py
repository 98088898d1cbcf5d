"""Getting an upload's bytes under the source policy, and sorting failures.

A missing file or a 404 will never succeed, so it fails the row at once; a timeout or a
5xx may, so it is retried with backoff by the task. What the policy refuses
(`vitrine.sources.policy`) fails at once too, before a byte is requested or a file opened.

HTTP is spoken through `http.client` on a socket this module opens to the address the
policy checked, so a second DNS answer can never redirect the request; TLS still
verifies the certificate against the URL's host name (SNI included). Proxies from the
environment are not used: a proxy would make the check meaningless.

One fetch has one deadline (`policy.timeout`, VITRINE_FETCH_TIMEOUT_S) for everything:
every hop, connect, TLS handshake, headers and body. A socket timeout alone bounds each
read, so a server that trickles a byte a second would never trip it and would hold the
worker as long as it liked; here every receive waits only for what is left of the
deadline, and a fetch past it is a TransientError (the image is retried later).
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import stat
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from vitrine.sources.policy import PermanentError, RefusedSource, SourcePolicy, TransientError

__all__ = ["PermanentError", "RefusedSource", "TransientError", "fetch_bytes"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "vitrine/0.1 (image fetcher)"


def fetch_bytes(uri: str, policy: SourcePolicy, *, deadline_s: float | None = None) -> bytes:
    """The upload's bytes, or PermanentError / RefusedSource / TransientError.

    An http(s) fetch takes at most `deadline_s` seconds in all (default `policy.timeout`).
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return _fetch_http(
            uri, policy, _Deadline(policy.timeout if deadline_s is None else deadline_s)
        )
    if scheme in ("", "file"):
        return _read_file(Path(unquote(parts.path) if scheme == "file" else uri), policy)
    raise PermanentError(
        f"unsupported URI scheme {parts.scheme!r} (use a path, file:// or http(s)://)"
    )


def _too_big(size: int, max_bytes: int) -> PermanentError:
    return PermanentError(
        f"file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit "
        "(VITRINE_MAX_FILE_BYTES)"
    )


def _read_file(path: Path, policy: SourcePolicy) -> bytes:
    """Read a regular file under a root. The opened descriptor is checked again, so a
    path swapped for a symlink between the check and the open is still refused."""
    try:
        real = policy.checked_path(path)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise PermanentError(f"file not found: {path}") from None
    except PermissionError:
        raise PermanentError(f"permission denied reading {path}") from None
    except OSError as exc:  # ELOOP: the last component became a symlink after the check
        raise RefusedSource(f"refused to read {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise PermanentError(f"{path} is a directory, not an image file")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise PermanentError(f"{path} is not a regular file")
        opened = f"/proc/self/fd/{fd}"
        if os.path.exists(opened) and not policy.within_roots(os.readlink(opened)):
            raise RefusedSource(f"refused to read {path}: it left the file roots while opening")
        if info.st_size > policy.max_bytes:
            raise _too_big(info.st_size, policy.max_bytes)
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(policy.max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > policy.max_bytes:
        raise _too_big(len(data), policy.max_bytes)
    return data


class _Deadline:
    """The moment one fetch must be over by; `remaining()` is what a wait may still take."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left

    def passed(self) -> bool:
        return time.monotonic() >= self.end


class _DeadlineIO:
    """Mixed into a socket class: each receive or send may wait only for what is left of
    the fetch's deadline. `http.client` reads headers and body through `makefile()`, whose
    reads all land in `recv_into`, so a trickling server runs out of time like a silent one.
    """

    deadline: _Deadline | None = None

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        self._bound()
        return super().recv_into(*args, **kwargs)  # type: ignore[misc, no-any-return]

    def sendall(self, *args: Any, **kwargs: Any) -> None:
        self._bound()
        super().sendall(*args, **kwargs)  # type: ignore[misc]

    def _bound(self) -> None:
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining())  # type: ignore[attr-defined]


class _DeadlineSocket(_DeadlineIO, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineIO, ssl.SSLSocket):
    pass


def _connect(address: str, port: int, deadline: _Deadline) -> _DeadlineSocket:
    """A TCP connection to `address` (an IP literal: no lookup) within the deadline."""
    plain = socket.create_connection((address, port), deadline.remaining())
    sock = _DeadlineSocket(fileno=plain.detach())
    sock.deadline = deadline
    sock.settimeout(deadline.remaining())  # a socket made from a descriptor starts blocking
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to `address`, with `host` in the Host header."""

    def __init__(self, host: str, port: int, address: str, deadline: _Deadline) -> None:
        super().__init__(host, port, timeout=deadline.seconds)
        self._address = address
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = _connect(self._address, self.port, self._deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `address`; the certificate is verified for `host`. The handshake is bounded
    by the socket timeout, which `ssl` applies to the whole handshake, not per read."""

    def __init__(self, host: str, port: int, address: str, deadline: _Deadline) -> None:
        context = ssl.create_default_context()
        context.sslsocket_class = _DeadlineSSLSocket
        super().__init__(host, port, timeout=deadline.seconds, context=context)
        self._address = address
        self._deadline = deadline

    def connect(self) -> None:
        sock = _connect(self._address, self.port, self._deadline)
        tls = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
        tls.deadline = self._deadline
        self.sock = tls


def _fetch_http(uri: str, policy: SourcePolicy, deadline: _Deadline) -> bytes:
    current = uri
    for _hop in range(policy.max_redirects + 1):
        parts = urlsplit(current)
        scheme = parts.scheme.lower()
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise PermanentError(f"cannot fetch {current}: the port is not a number") from None
        if scheme not in ("http", "https") or not parts.hostname:
            raise PermanentError(f"cannot fetch {current}: not an http(s) URL with a host")
        address = policy.checked_address(parts.hostname, port)
        if deadline.passed():  # the lookup itself is not bounded by a socket timeout
            raise _too_slow(current, deadline)
        kind = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        conn = kind(parts.hostname, port, address, deadline)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", target, headers={"User-Agent": _USER_AGENT, "Accept": "image/*"})
            response = conn.getresponse()
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise PermanentError(f"HTTP {response.status} without Location from {current}")
                current = urljoin(current, location)
                continue
            return _body(response, current, policy.max_bytes)
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(f"TLS certificate of {parts.hostname} rejected: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            if deadline.passed():
                raise _too_slow(current, deadline) from None
            raise TransientError(f"could not fetch {current}: {exc}") from None
        finally:
            conn.close()
    raise PermanentError(f"more than {policy.max_redirects} redirects fetching {uri}")


def _too_slow(uri: str, deadline: _Deadline) -> TransientError:
    return TransientError(
        f"gave up fetching {uri}: not done within {deadline.seconds:g} s (VITRINE_FETCH_TIMEOUT_S)"
    )


def _body(response: http.client.HTTPResponse, uri: str, max_bytes: int) -> bytes:
    if response.status >= 500 or response.status in (408, 429):
        raise TransientError(f"HTTP {response.status} fetching {uri}")
    if response.status >= 400 or response.status < 200:
        raise PermanentError(f"HTTP {response.status} fetching {uri}")
    declared = int(response.getheader("Content-Length") or 0)
    if declared > max_bytes:
        raise _too_big(declared, max_bytes)
    data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_big(len(data), max_bytes)
    return data

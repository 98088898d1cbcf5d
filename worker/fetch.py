"""Getting an upload's bytes under the source policy, and sorting failures.

A missing file or a 404 will never succeed, so it fails the row at once; a timeout or a
5xx may, so it is retried with backoff by the task. What the policy refuses
(`worker.sources`) fails at once too, before a byte is requested or a file opened.

HTTP is spoken through `http.client` on a socket this module opens to the address the
policy checked, so a second DNS answer can never redirect the request; TLS still
verifies the certificate against the URL's host name (SNI included). Proxies from the
environment are not used: a proxy would make the check meaningless.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import stat
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from worker.sources import PermanentError, RefusedSource, SourcePolicy, TransientError

__all__ = ["PermanentError", "RefusedSource", "TransientError", "fetch_bytes"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "vitrine/0.1 (image fetcher)"


def fetch_bytes(uri: str, policy: SourcePolicy) -> bytes:
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return _fetch_http(uri, policy)
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


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to `address`, with `host` in the Host header."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `address`; the certificate is verified for `host`."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _fetch_http(uri: str, policy: SourcePolicy) -> bytes:
    current = uri
    for _hop in range(policy.max_redirects + 1):
        parts = urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise PermanentError(f"cannot fetch {current}: not an http(s) URL with a host")
        port = parts.port or (443 if scheme == "https" else 80)
        address = policy.checked_address(parts.hostname, port)
        kind = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        conn = kind(parts.hostname, port, address, policy.timeout)
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
            raise TransientError(f"could not fetch {current}: {exc}") from None
        finally:
            conn.close()
    raise PermanentError(f"more than {policy.max_redirects} redirects fetching {uri}")


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

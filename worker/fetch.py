"""Getting an upload's bytes, and sorting failures into 'retry' and 'give up'.

A missing file or a 404 will never succeed, so it fails the row at once; a timeout or a
5xx may, so it is retried with backoff by the task.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse


class PermanentError(Exception):
    """The upload can never be processed as given; the row fails with this message."""


class TransientError(Exception):
    """Worth trying again later (network, database or broker hiccup)."""


def fetch_bytes(uri: str, *, max_bytes: int, timeout: float) -> bytes:
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        return _fetch_http(uri, max_bytes=max_bytes, timeout=timeout)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
        return _read_file(path, max_bytes=max_bytes)
    raise PermanentError(
        f"unsupported URI scheme {parsed.scheme!r} (use a path, file:// or http(s)://)"
    )


def _too_big(size: int, max_bytes: int) -> PermanentError:
    return PermanentError(
        f"file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit "
        "(VITRINE_MAX_FILE_BYTES)"
    )


def _read_file(path: Path, *, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise _too_big(size, max_bytes)
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise PermanentError(f"file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise PermanentError(f"{path} is a directory, not an image file") from exc
    except PermissionError as exc:
        raise PermanentError(f"permission denied reading {path}") from exc


def _fetch_http(uri: str, *, max_bytes: int, timeout: float) -> bytes:
    request = urllib.request.Request(uri, headers={"User-Agent": "vitrine/0.1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise _too_big(declared, max_bytes)
            data: bytes = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise _too_big(len(data), max_bytes)
            return data
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code in (408, 429):
            raise TransientError(f"HTTP {exc.code} fetching {uri}") from exc
        raise PermanentError(f"HTTP {exc.code} fetching {uri}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise TransientError(f"could not fetch {uri}: {exc}") from exc

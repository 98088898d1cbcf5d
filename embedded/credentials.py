"""The password of the embedded servers, and the libpq password file that lets `psql` in.

Loopback is not a boundary: every local user and process can connect to 127.0.0.1. So
both embedded servers demand one random password per data directory,
generated once and kept in `credentials.json` (mode 0600) next to `services.json`. It
must outlive every restart: PostgreSQL stores only its SCRAM verifier, so a lost file
locks the database, which is why a missing file next to a password-protected cluster is
an error rather than a reason to make up a new one (`embedded.services`).

The password is URL-safe base64, so it goes into URLs, `redis.conf` and the libpq
password file as it is; anything else in the file is refused rather than escaped.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from urllib.parse import quote

from embedded.common import HOST, ServiceError

CREDENTIALS = "credentials.json"
PGPASS = "pgpass"
_SAFE = re.compile(r"[A-Za-z0-9_-]{16,}")


def load(root: Path) -> str | None:
    """The data directory's password, None when none was made yet."""
    path = root / CREDENTIALS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ServiceError(f"{path} is unreadable ({exc}); restore it from a backup") from exc
    password = data.get("password") if isinstance(data, dict) else None
    if not isinstance(password, str) or not _SAFE.fullmatch(password):
        raise ServiceError(f"{path} holds no usable password; restore it from a backup")
    return password


def create(root: Path) -> str:
    """A fresh password, written before any server is given it (callers hold the lock)."""
    password = secrets.token_urlsafe(32)
    write_private(root / CREDENTIALS, json.dumps({"password": password}) + "\n")
    return password


def write_private(path: Path, text: str, *, owner: tuple[int, int] | None = None) -> None:
    """Write `text` to `path` atomically, mode 0600 from the first byte (never readable by
    others, not even between create and chmod); `owner` hands it to another account."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_pgpass(root: Path, port: int, user: str, password: str) -> Path:
    """(Re)write the libpq password file for the server on `port`; rewritten only when
    its line changed, since `psql` may be reading it at any moment."""
    path = root / PGPASS
    line = f"{HOST}:{port}:*:{user}:{password}\n"
    try:
        if path.read_text() == line and (path.stat().st_mode & 0o077) == 0:
            return path
    except OSError:
        pass
    write_private(path, line)
    return path


def psql_url(root: Path, port: int, user: str, database: str) -> str:
    """A libpq URL that authenticates through the password file, so it can be printed,
    logged and pasted (`psql "$URL"`) without giving the password away."""
    passfile = quote(str(root / PGPASS), safe="/")
    return f"postgresql://{user}@{HOST}:{port}/{database}?passfile={passfile}"

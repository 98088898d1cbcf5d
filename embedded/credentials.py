"""The passwords of the embedded servers, and the libpq password file that lets `psql` in.

Loopback is not a boundary: every local user and process can connect to 127.0.0.1. So
both embedded servers demand a random password, one each, generated once per data
directory and kept in `credentials.json` (mode 0600) next to `services.json`. Two, not
one: the broker's password travels in every worker's REDIS_URL and every queued task's
connection, and knowing it must not open the database. They must outlive every restart:
PostgreSQL stores only its SCRAM verifier, so a lost file locks the database, which is
why a missing file next to a password-protected cluster is an error rather than a reason
to make up a new one (`vitrine.embedded.services`). A file written by older vitrine holds one
shared password; `separate` gives the broker a new one and keeps the database's.

Passwords are URL-safe base64, so they go into URLs, `redis.conf` and the libpq password
file as they are; anything else in the file is refused rather than escaped.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from vitrine.embedded.common import HOST, ServiceError

CREDENTIALS = "credentials.json"
PGPASS = "pgpass"
_SAFE = re.compile(r"[A-Za-z0-9_-]{16,}")


@dataclass(frozen=True)
class Passwords:
    postgres: str
    redis: str

    @property
    def shared(self) -> bool:
        """One password for both servers, as older vitrine made them."""
        return self.postgres == self.redis

    def of(self, name: str) -> str:
        """The password of "postgres" or "redis"."""
        return self.postgres if name == "postgres" else self.redis


def load(root: Path) -> Passwords | None:
    """The data directory's passwords, None when none were made yet."""
    path = root / CREDENTIALS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ServiceError(f"{path} is unreadable ({exc}); restore it from a backup") from exc
    if not isinstance(data, dict):
        data = {}
    if "password" in data and "postgres" not in data:  # older vitrine: one for both
        data = {"postgres": data["password"], "redis": data["password"]}
    found = {name: data.get(name) for name in ("postgres", "redis")}
    if not all(isinstance(p, str) and _SAFE.fullmatch(p) for p in found.values()):
        raise ServiceError(f"{path} holds no usable password; restore it from a backup")
    return Passwords(**found)  # type: ignore[arg-type]


def create(root: Path) -> Passwords:
    """Fresh passwords, written before any server is given them (callers hold the lock)."""
    return _write(root, Passwords(secrets.token_urlsafe(32), secrets.token_urlsafe(32)))


def separate(root: Path, old: Passwords) -> Passwords:
    """A shared password split: the database keeps it (its verifier is stored), the
    broker gets a new one (callers restart the broker, holding the lock)."""
    return _write(root, Passwords(old.postgres, secrets.token_urlsafe(32)))


def _write(root: Path, passwords: Passwords) -> Passwords:
    text = json.dumps({"postgres": passwords.postgres, "redis": passwords.redis})
    write_private(root / CREDENTIALS, text + "\n")
    return passwords


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

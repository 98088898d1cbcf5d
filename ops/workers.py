"""`vitrine worker`: become a Celery worker on the servers this context reaches."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from vitrine.ops.context import Context
from vitrine.worker.celery_app import worker_argv, worker_env


def fresh_metrics_dir(base: Path, pid: int) -> Path:
    """An empty `base/worker-PID` for the multiprocess metrics of worker `pid`; those of
    workers no longer running go (their counts ended with them)."""
    from vitrine.worker.metrics import process_alive

    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob("worker-*"):
        number = old.name.removeprefix("worker-")
        if number.isdigit() and (int(number) == pid or not process_alive(int(number))):
            shutil.rmtree(old, ignore_errors=True)
    path = base / f"worker-{pid}"
    path.mkdir()
    return path


def exec_worker(
    ctx: Context,
    *,
    concurrency: int | None,
    queues: Sequence[str],
    loglevel: str,
    nice: int | None = None,
) -> NoReturn:
    """Replace this process with a worker, once the servers answer and the schema is this
    code's (a worker on an older schema would fail every task)."""
    ctx.engine()
    argv = worker_argv(
        concurrency=concurrency or ctx.settings.worker_concurrency, queues=queues, loglevel=loglevel
    )
    env = worker_env(database_url=ctx.database_url(), redis_url=ctx.broker_url())
    if nice is not None:
        env["VITRINE_WORKER_NICE"] = str(nice)
    if ctx.settings.metrics_port:  # exec keeps this process's id: the worker's own directory
        from vitrine.worker.metrics import MULTIPROC_ENV

        metrics = fresh_metrics_dir(ctx.settings.data_dir / "metrics", os.getpid())
        env[MULTIPROC_ENV] = str(metrics)
    os.execvpe(argv[0], argv, env)

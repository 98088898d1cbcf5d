"""`vitrine worker`: become a Celery worker on the servers this context reaches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NoReturn

from ops.context import Context
from worker.celery_app import worker_argv, worker_env


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
    os.execvpe(argv[0], argv, env)

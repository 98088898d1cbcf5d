"""The one place the Celery app is built, and how worker processes are started.

Its settings are declared in `vitrine.worker.celery_config` (delivery settings and why).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.signals import setup_logging

from vitrine.worker.health import Heartbeat
from vitrine.worker.names import ALL_QUEUES

app = Celery("vitrine", include=["vitrine.worker.tasks"])
# Lazy: Celery imports vitrine.worker.celery_config (which reads the settings) on first use of
# `app.conf`, so importing this module reads no environment and cannot fail on it.
app.config_from_object("vitrine.worker.celery_config")
app.steps["consumer"].add(Heartbeat)


@setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """A worker's logs: VITRINE_LOG_FORMAT, credentials redacted (vitrine.worker.logs); and no
    TensorFlow start-up noise in the pool processes, which import it after the fork."""
    from vitrine.settings import get_settings
    from vitrine.worker.logs import configure_logging
    from vitrine.worker.quiet import quiet_tensorflow

    quiet_tensorflow()
    configure_logging(get_settings(), loglevel or "INFO")


def use_broker(url: str) -> Celery:
    """Point the app (and its result backend) at `url`; for processes without REDIS_URL."""
    app.conf.update(broker_url=url, result_backend=url)
    return app


def broker_configured() -> bool:
    return bool(app.conf.broker_url)


def worker_argv(
    *,
    concurrency: int,
    queues: Sequence[str] = ALL_QUEUES,
    loglevel: str = "INFO",
    include: Sequence[str] = (),
) -> list[str]:
    """The command line of a `celery worker` process that serves vitrine's tasks
    (and those of the modules in `include`, e.g. a benchmark's)."""
    extra = ["--include", ",".join(include)] if include else []
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "vitrine.worker.celery_app:app",
        "worker",
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--hostname",
        f"vitrine-{uuid.uuid4().hex[:8]}@%h",
        "--without-gossip",
        "--without-mingle",
        *extra,
    ]


def worker_env(*, database_url: str, redis_url: str) -> dict[str, str]:
    """The environment of a worker process started from here: this one's, plus the URLs."""
    env = dict(os.environ)
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url})
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    return env

"""The one place the Celery app is built and configured.

Delivery settings encode the failure promise: a task is acknowledged only after it
finished (`acks_late`), a worker process that dies mid-task hands its message back
(`task_reject_on_worker_lost`), and each process holds one message at a time
(prefetch 1), so a crash can lose at most the work in hand, and that is redelivered.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu import Queue

from worker.names import (
    ALL_QUEUES,
    BACKFILL_QUEUE,
    EMBED_BATCH_TASK,
    INGEST_BATCH_TASK,
    INGEST_TASK,
    UPLOADS_QUEUE,
)
from worker.settings import Settings, get_settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for vitrine; the result backend shares the broker (`submit --wait`)."""
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "result_expires": 3600,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "task_queues": tuple(Queue(name) for name in ALL_QUEUES),
        "task_default_queue": UPLOADS_QUEUE,
        "task_routes": {
            INGEST_TASK: {"queue": UPLOADS_QUEUE},
            INGEST_BATCH_TASK: {"queue": UPLOADS_QUEUE},
            EMBED_BATCH_TASK: {"queue": BACKFILL_QUEUE},
        },
        # Unacked messages come back after this long if a whole worker host vanishes;
        # must exceed the task time limit or long tasks would run twice.
        "broker_transport_options": {"visibility_timeout": max(300, 3 * settings.task_time_limit)},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


app = Celery("vitrine", include=["worker.tasks"])
# Lazy: Celery reads the mapping on first use of `app.conf`, not at import.
app.config_from_object(celery_config(get_settings()))


def use_broker(url: str) -> Celery:
    """Point the app (and its result backend) at `url`; for processes without REDIS_URL."""
    app.conf.update(broker_url=url, result_backend=url)
    return app


def broker_configured() -> bool:
    return bool(app.conf.broker_url)


def worker_argv(
    *, concurrency: int, queues: Sequence[str] = ALL_QUEUES, loglevel: str = "INFO"
) -> list[str]:
    """The command line of a `celery worker` process that serves vitrine's tasks."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app:app",
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
    ]


def worker_env(*, database_url: str, redis_url: str) -> dict[str, str]:
    """The environment of a worker process started from here: this one's, plus the URLs."""
    env = dict(os.environ)
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url})
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    return env

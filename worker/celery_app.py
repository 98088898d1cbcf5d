"""The one place the Celery app is built and configured.

Delivery settings encode the failure promise: a task is acknowledged only after it
finished (`acks_late`), a worker process that dies mid-task hands its message back
(`task_reject_on_worker_lost`), and each process holds one message at a time
(prefetch 1), so a crash can lose at most the work in hand, and that is redelivered.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from worker.settings import get_settings

UPLOADS_QUEUE = "uploads"
BACKFILL_QUEUE = "backfill"

app = Celery("vitrine", include=["worker.tasks"])


def configure(broker_url: str) -> Celery:
    """Point the app at a broker; the result backend shares it (used by `submit --wait`)."""
    settings = get_settings()
    app.conf.update(
        broker_url=broker_url,
        result_backend=broker_url,
        result_expires=3600,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        task_queues=(Queue(UPLOADS_QUEUE), Queue(BACKFILL_QUEUE)),
        task_default_queue=UPLOADS_QUEUE,
        task_routes={
            "vitrine.ingest": {"queue": UPLOADS_QUEUE},
            "vitrine.ingest_batch": {"queue": UPLOADS_QUEUE},
            "vitrine.embed_batch": {"queue": BACKFILL_QUEUE},
        },
        # Unacked messages come back after this long if a whole worker host vanishes;
        # must exceed the task time limit or long tasks would run twice.
        broker_transport_options={"visibility_timeout": max(300, 3 * settings.task_time_limit)},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


_settings = get_settings()
if _settings.redis_url:
    configure(_settings.redis_url)

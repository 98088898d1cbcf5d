"""Celery's settings, as Celery reads them: the lower-case names of this module.

Imported by Celery itself on the app's first use (`config_from_object`), so the
environment is read then, in the process that uses the app, not when modules import it.

Delivery settings encode the failure promise: a task is acknowledged only after it
finished (`acks_late`) and a worker process that dies mid-task hands its message back
(`task_reject_on_worker_lost`; `vitrine.worker.live` does the same for micro-batches), so a crash
loses nothing: what a worker held unacknowledged goes back to the queue. Prefetch is one
micro-batch per pool process, which a live batch needs to fill.
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from vitrine.settings import Settings, get_settings
from vitrine.worker.names import (
    ALL_QUEUES,
    BACKFILL_QUEUE,
    EMBED_BATCH_TASK,
    INGEST_BATCH_TASK,
    INGEST_TASK,
    REVIEW_TASK,
    UPLOADS_QUEUE,
)


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
        "task_acks_on_failure": True,
        "task_acks_on_timeout": True,
        # Each pool process may hold one micro-batch of live events (vitrine.worker.live) beyond the
        # one it runs; with plain tasks only, 1 would be the right value.
        "worker_prefetch_multiplier": settings.live_batch_size,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "task_queues": tuple(Queue(name) for name in ALL_QUEUES),
        "task_default_queue": UPLOADS_QUEUE,
        "task_routes": {
            INGEST_TASK: {"queue": UPLOADS_QUEUE},
            REVIEW_TASK: {"queue": UPLOADS_QUEUE},
            INGEST_BATCH_TASK: {"queue": UPLOADS_QUEUE},
            EMBED_BATCH_TASK: {"queue": BACKFILL_QUEUE},
        },
        # Unacked messages come back after this long if a whole worker host vanishes;
        # must exceed the task time limit or long tasks would run twice.
        "broker_transport_options": {"visibility_timeout": max(300, 3 * settings.task_time_limit)},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        # A pool process loads the model after the fork (`worker_process_init`): two
        # networks, 2.6 s on an idle core and several seconds more when both children of a
        # loaded 2-core machine start at once. Celery's default of 4 s killed every
        # replacement of a lost child before it said it was up, so the pool never came
        # back (seen in the child-kill fault test).
        "worker_proc_alive_timeout": 120,
        # Task events for Flower and celery-exporter (docs/metrics.md): started, succeeded,
        # failed, retried, and "sent" from producers.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
    }


globals().update(celery_config(get_settings()))

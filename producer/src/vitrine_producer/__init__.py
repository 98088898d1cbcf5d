"""Publish vitrine upload events to Redis without TensorFlow, Celery or vitrine itself.

    from vitrine_producer import submit_upload
    task_id = submit_upload("https://cdn.example.com/p/123.jpg", merchant_id="m-42")

Only the standard library and `redis` are imported, so platform services can install
this package alone; the message is the one in vitrine's docs/producers.md.
"""

from __future__ import annotations

from vitrine_producer.client import Producer, resolve_redis_url, submit_many, submit_upload
from vitrine_producer.errors import (
    BrokerUnavailableError,
    InvalidUpload,
    ProducerConfigError,
    ProducerError,
)
from vitrine_producer.message import ReviewEvent, UploadEvent, build_message
from vitrine_producer.names import INGEST_TASK, REDIS_URL_ENV, REVIEW_TASK, UPLOADS_QUEUE

__version__ = "0.1.0"

__all__ = [
    "INGEST_TASK",
    "REDIS_URL_ENV",
    "REVIEW_TASK",
    "ReviewEvent",
    "UPLOADS_QUEUE",
    "BrokerUnavailableError",
    "InvalidUpload",
    "Producer",
    "ProducerConfigError",
    "ProducerError",
    "UploadEvent",
    "build_message",
    "resolve_redis_url",
    "submit_many",
    "submit_upload",
]

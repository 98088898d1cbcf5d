"""Celery tasks: thin wrappers that parse the message and call `worker.processing`.

Message contract (for producers in any language) is documented in docs/producers.md:
task `vitrine.ingest`, kwargs `{"uri": ..., "merchant_id": ..., "sku": ...}`, queue
`uploads`, JSON body.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready
from sqlalchemy.exc import DBAPIError, OperationalError

from db import repository
from pipeline.types import Upload
from worker import runtime
from worker.celery_app import app
from worker.fetch import TransientError
from worker.names import EMBED_BATCH_TASK, INGEST_BATCH_TASK, INGEST_TASK
from worker.processing import WorkItem, fail_images, process_batch
from worker.settings import get_settings

log = logging.getLogger(__name__)


@worker_process_init.connect
def _load_model_in_child(**_: Any) -> None:
    """Runs in each pool process after the fork: the only place the model gets loaded."""
    runtime.reset_after_fork()
    runtime.configure_threads()
    try:
        active = runtime.active_model()
        log.info("loaded model %s in worker process", active.row.key)
    except Exception:  # the first task will retry and report it properly
        log.exception("could not preload the active model")


@worker_ready.connect
def _announce_ready(**_: Any) -> None:
    """Tell a launching process (see embedded.launcher) that this worker consumes now."""
    fd = os.environ.pop("VITRINE_READY_FD", None)
    if fd:
        os.write(int(fd), b"1")
        os.close(int(fd))


def _backoff(retries: int) -> float:
    return float(min(300, 2 ** (retries + 1)))


def _run(task: Task, items: list[WorkItem], model_key: str | None, claim: bool) -> dict[str, Any]:
    ids = [i.image_id for i in items]
    try:
        outcome = process_batch(items, model_key=model_key, claim=claim)
    except SoftTimeLimitExceeded:
        fail_images(ids, f"processing took longer than {get_settings().task_soft_time_limit}s")
        raise
    except (OperationalError, DBAPIError) as exc:
        # Database down or restarting: nothing was saved, everything can be retried.
        raise task.retry(exc=exc, countdown=_backoff(task.request.retries)) from exc
    if outcome.transient:
        pending = [i for i in items if i.image_id in outcome.transient]
        if task.request.retries >= task.max_retries:
            for image_id, error in outcome.transient.items():
                fail_images([image_id], f"gave up after {task.request.retries + 1} tries: {error}")
        else:
            retry_kwargs = dict(task.request.kwargs or {})
            retry_kwargs["items"] = [i.__dict__ for i in pending]
            raise task.retry(
                kwargs=retry_kwargs,
                exc=TransientError("; ".join(outcome.transient.values())),
                countdown=_backoff(task.request.retries),
            )
    return outcome.as_dict()


@app.task(name=INGEST_TASK, bind=True, max_retries=get_settings().max_retries)
def ingest(
    self: Task,
    uri: str,
    merchant_id: str,
    sku: str | None = None,
    image_id: int | None = None,
    items: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One upload event. `image_id` is set by vitrine's own producers; others omit it."""
    if image_id is None:
        try:
            with runtime.engine().begin() as conn:
                (image_id,) = repository.upsert_pending_images(
                    conn, uploads=[Upload(uri=uri, merchant_id=merchant_id, sku=sku)]
                )
        except (OperationalError, DBAPIError) as exc:
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    work = [WorkItem(**d) for d in items] if items else [WorkItem(image_id=image_id, uri=uri)]
    return _run(self, work, None, claim=True)


@app.task(name=INGEST_BATCH_TASK, bind=True, max_retries=get_settings().max_retries)
def ingest_batch(self: Task, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A chunk of already-registered uploads (bulk ingest): one forward pass for all."""
    return _run(self, [WorkItem(**d) for d in items], None, claim=True)


@app.task(name=EMBED_BATCH_TASK, bind=True, max_retries=get_settings().max_retries)
def embed_batch(self: Task, items: list[dict[str, Any]], model_key: str) -> dict[str, Any]:
    """Backfill: (re-)compute predictions and embeddings of done images with `model_key`."""
    return _run(self, [WorkItem(**d) for d in items], model_key, claim=False)

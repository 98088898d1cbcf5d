"""The failure promise with real processes: a killed worker and a restarted database lose
nothing and duplicate nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from celery.result import AsyncResult
from sqlalchemy import Engine, text

from ops.uploads import file_uri, register_uploads
from pipeline.types import Upload

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def _wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll an external state we cannot subscribe to (a row changing status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_process_redelivers_and_duplicates_nothing(
    ctx, clean_db: Engine, catalog
) -> None:
    from embedded.launcher import running_worker
    from worker.celery_app import app
    from worker.names import INGEST_BATCH_TASK

    directory, truth = catalog
    files = sorted(directory / name for name in truth)[:48]
    ids = register_uploads(clean_db, [Upload(uri=file_uri(f), merchant_id="m-kill") for f in files])
    items = [{"image_id": i, "uri": file_uri(f)} for i, f in zip(ids, files, strict=True)]
    log = ctx.settings.data_dir / "logs" / "kill-worker.log"
    # A worker of its own on a queue of its own, so we know which process holds the task.
    with running_worker(ctx.urls(), concurrency=1, log_path=log, queues=["killtest"]) as proc:
        result = app.send_task(INGEST_BATCH_TASK, kwargs={"items": items}, queue="killtest")

        def claimed() -> bool:
            with clean_db.connect() as conn:
                return bool(
                    conn.execute(
                        text("SELECT count(*) FROM images WHERE status = 'processing'")
                    ).scalar()
                )

        _wait_until(claimed, 120, "the batch to be claimed")
        (child,) = _children(proc.pid)
        os.kill(child, signal.SIGKILL)  # mid-task: images claimed, nothing saved yet
        outcome = AsyncResult(result.id, app=app).get(timeout=180)
        assert proc.poll() is None
    assert sorted(outcome["done"]) == sorted(ids)
    with clean_db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT i.status, i.attempts, (SELECT count(*) FROM predictions p "
                "WHERE p.image_id = i.id) AS n FROM images i"
            )
        ).all()
    assert {r.status for r in rows} == {"done"}
    assert {r.n for r in rows} == {1}  # redelivered, never duplicated
    assert {r.attempts for r in rows} == {2}  # the first delivery died, the second finished


def test_database_restart_is_retried_not_failed(
    ctx, celery_worker_process, clean_db: Engine, catalog
) -> None:
    from embedded import pg_server
    from embedded.services import _root, ensure_services
    from worker.client import submit_upload

    if os.environ.get("VITRINE_EXTERNAL_SERVICES"):
        pytest.skip("needs the embedded PostgreSQL, which the test can stop and start")
    directory, truth = catalog
    photo = directory / sorted(truth)[2]
    embedded_settings = ctx.settings.model_copy(update={"database_url": None, "redis_url": None})
    assert pg_server.stop(_root(embedded_settings) / "pg")
    try:
        result = submit_upload(file_uri(photo), merchant_id="m-restart")
        # The task meets a dead database and schedules a retry with backoff.
        _wait_until(lambda: result.state == "RETRY", 60, "the task to retry")
    finally:
        urls = ensure_services(embedded_settings)
    assert urls.database_url == ctx.database_url()  # same port again
    outcome = result.get(timeout=120)
    assert len(outcome["done"]) == 1
    with clean_db.connect() as conn:
        row = conn.execute(
            text("SELECT status, error FROM images WHERE merchant_id = 'm-restart'")
        ).one()
    assert row.status == "done" and row.error is None


def test_requeue_finishes_uploads_whose_message_was_lost(
    pipeline_env, celery_worker_process, clean_db: Engine, catalog
) -> None:
    from tests.integration.conftest import vitrine

    directory, truth = catalog
    photos = [directory / name for name in sorted(truth)[:3]]
    # Rows registered but never published: what a broker that lost its queue leaves.
    ids = register_uploads(
        clean_db, [Upload(uri=file_uri(p), merchant_id="m-lost") for p in photos]
    )
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE images SET updated_at = now() - interval '1 hour'"))
    proc = vitrine(pipeline_env, "requeue", "--older-than", "60", "--workers", "0", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    assert json.loads(proc.stdout)["done"] == len(ids)
    with clean_db.connect() as conn:
        assert set(conn.execute(text("SELECT status FROM images")).scalars()) == {"done"}

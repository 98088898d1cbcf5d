"""Lost messages: what `vitrine requeue` and the workers' own reaper do about them.

The faults themselves (killed workers, restarted servers) are in test_faults.py."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, text

from vitrine.ops.uploads import file_uri, register_uploads
from vitrine.pipeline.types import Upload

pytestmark = pytest.mark.integration


def _wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll an external state we cannot subscribe to (a row changing status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


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


def test_the_reaper_recovers_lost_messages_without_a_person(ctx, clean_db: Engine, catalog) -> None:  # type: ignore[no-untyped-def]
    from vitrine.embedded.launcher import running_worker

    directory, truth = catalog
    photos = [directory / name for name in sorted(truth)[:5]]
    ids = register_uploads(
        clean_db, [Upload(uri=file_uri(p), merchant_id="m-reaped") for p in photos]
    )
    with clean_db.begin() as conn:  # registered, never published, and long ago
        conn.execute(text("UPDATE images SET updated_at = now() - interval '1 hour'"))
    fast = {"VITRINE_REAPER_INTERVAL_S": "0.5", "VITRINE_STALE_AFTER_S": "30"}
    log = ctx.settings.data_dir / "logs" / "reaper-worker.log"
    with running_worker(ctx.urls(), concurrency=1, log_path=log, extra_env=fast):
        try:
            _wait_until(lambda: _statuses(clean_db) == {"done"}, 120, "the reaper")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; worker log:\n{log.read_text()[-3000:]}") from None
    with clean_db.connect() as conn:
        attempts = conn.execute(text("SELECT attempts FROM images")).scalars().all()
    assert sorted(attempts) == [1] * len(ids)  # sent once each, not once per sweep
    assert "reaper sent 5 stuck upload(s) again" in log.read_text()


def _statuses(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT status FROM images")).scalars())

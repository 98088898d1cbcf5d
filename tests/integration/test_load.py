"""20,000 upload events published at once, as a platform's burst would: the broker's
memory and the workers' memory stay bounded, and every upload ends `done`.

Ten merchants each upload the same 2,000 small photos (20,000 distinct uploads: the
idempotency key is merchant + URI), one `vitrine.ingest` event each, all published before
the worker starts, on a queue of the test's own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from vitrine.ops.uploads import file_uri

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MERCHANTS = 10
LOAD_QUEUE = "load"
#: Bounds the test holds the system to (the measured figures are far below; see README).
MAX_REDIS_MB = 256
MAX_WORKER_RSS_MB = 4096


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, from /proc."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = [int(c) for c in children]
    for child in list(found):
        found += _descendants(child)
    return found


def test_twenty_thousand_uploads_at_once(ctx, engine, small_catalog, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from vitrine.embedded.launcher import running_worker
    from vitrine.worker.celery_app import app
    from vitrine.worker.names import INGEST_TASK

    broker = redis.Redis.from_url(ctx.broker_url())
    broker.config_resetstat()
    started = time.perf_counter()
    for m in range(MERCHANTS):
        for path in small_catalog:
            kwargs = {"uri": file_uri(path), "merchant_id": f"m-load-{m}", "sku": None}
            app.send_task(INGEST_TASK, kwargs=kwargs, queue=LOAD_QUEUE, ignore_result=True)
    published_s = time.perf_counter() - started
    total = MERCHANTS * len(small_catalog)
    assert broker.llen(LOAD_QUEUE) == total  # all of it queued before any worker runs
    redis_peak = broker.info("memory")["used_memory"] / 2**20

    def done() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM images WHERE merchant_id LIKE 'm-load-%'"
                        " AND status IN ('done', 'failed')"
                    )
                ).scalar_one()
            )

    rss_peak = 0.0
    log = ctx.settings.data_dir / "logs" / "load-worker.log"
    with running_worker(ctx.urls(), concurrency=2, log_path=log, queues=[LOAD_QUEUE]) as proc:
        worker_started = time.perf_counter()
        deadline = worker_started + 1200
        while (finished := done()) < total and time.perf_counter() < deadline:
            rss_peak = max(rss_peak, _rss_mb(proc.pid))
            redis_peak = max(redis_peak, broker.info("memory")["used_memory"] / 2**20)
            time.sleep(1.0)  # sampling memory is the point: there is no event to await
        processing_s = time.perf_counter() - worker_started
    assert finished == total, f"{finished}/{total} finished"
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                text(
                    "SELECT status, count(*) FROM images WHERE merchant_id LIKE 'm-load-%'"
                    " GROUP BY status"
                )
            ).all()
        )
        duplicated = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT image_id FROM predictions GROUP BY image_id,"
                " model_id HAVING count(*) > 1) d"
            )
        ).scalar_one()
    report = {
        "uploads": total,
        "published_s": round(published_s, 1),
        "processing_s": round(processing_s, 1),
        "images_per_s": round(total / processing_s, 1),
        "redis_peak_mb": round(redis_peak, 1),
        "redis_used_memory_peak_mb": round(broker.info("memory")["used_memory_peak"] / 2**20, 1),
        "worker_peak_rss_mb": round(rss_peak, 1),
        "statuses": statuses,
    }
    print("load:", json.dumps(report))
    assert statuses == {"done": total} and duplicated == 0, report
    assert report["redis_used_memory_peak_mb"] < MAX_REDIS_MB, report
    assert 0 < rss_peak < MAX_WORKER_RSS_MB, report

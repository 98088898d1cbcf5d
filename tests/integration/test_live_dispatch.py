"""When a live batch leaves the worker's buffer: at once when a pool process is free, and
when one returns while events wait (`vitrine.worker.live.LiveBatches`).

The worker here has a batch window of ten minutes (`VITRINE_LIVE_BATCH_WAIT_MS`), so an
event that waited for the window's timer would not be done within the test's patience:
the lone upload must go at once, and a burst must be carried by the processes' returns.
Its broker is a Redis database of its own, so the session's worker never takes its events.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from sqlalchemy import Engine, text

from vitrine.ops.uploads import file_uri
from vitrine.worker.names import INGEST_TASK, UPLOADS_QUEUE

pytestmark = pytest.mark.integration

DISPATCH_REDIS_DB = 8
TEN_MINUTES_MS = "600000"
BURST = 40


def _broker(ctx) -> str:  # type: ignore[no-untyped-def]
    url = urlsplit(ctx.broker_url())
    return urlunsplit(url._replace(path=f"/{DISPATCH_REDIS_DB}"))


def _publish(ctx, photos: list[Path], merchant: str) -> None:  # type: ignore[no-untyped-def]
    from vitrine.worker.celery_app import app

    with app.connection_for_write(_broker(ctx)) as connection:
        for photo in photos:
            kwargs = {"uri": file_uri(photo), "merchant_id": merchant, "sku": None}
            app.send_task(
                INGEST_TASK,
                kwargs=kwargs,
                queue=UPLOADS_QUEUE,
                connection=connection,
                ignore_result=True,
            )


def _wait_done(engine: Engine, merchant: str, n: int, timeout: float = 90) -> None:
    """Poll the rows (there is no event to subscribe to) until `n` uploads are done."""
    query = text("SELECT count(*) FROM images WHERE merchant_id = :m AND status = 'done'")
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            done = int(conn.execute(query, {"m": merchant}).scalar_one())
        if done >= n:
            return
        assert time.monotonic() < deadline, f"{done} of {n} uploads of {merchant} done"
        time.sleep(0.1)


def _batch_sizes(log: Path, merchant: str) -> list[int]:
    """The `batch` field of each upload's line in the worker's JSON log."""
    sizes = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and merchant in line:
            record = json.loads(line)
            if record.get("merchant_id") == merchant:
                sizes.append(int(record["batch"]))
    return sizes


def test_a_free_process_takes_an_event_at_once_and_returns_carry_a_burst(
    ctx, engine: Engine, small_catalog: list[Path]
) -> None:
    from vitrine.embedded.launcher import running_worker
    from vitrine.embedded.services import ServiceURLs

    with redis.Redis.from_url(_broker(ctx)) as client:
        client.flushdb()
    log = ctx.settings.data_dir / "logs" / "dispatch-worker.log"
    log.unlink(missing_ok=True)
    env = {"VITRINE_LIVE_BATCH_WAIT_MS": TEN_MINUTES_MS, "VITRINE_LOG_FORMAT": "json"}
    urls = ServiceURLs(ctx.urls().database_url, _broker(ctx))
    with running_worker(urls, concurrency=2, log_path=log, queues=[UPLOADS_QUEUE], extra_env=env):
        lone = f"m-dispatch-lone-{uuid.uuid4().hex[:8]}"
        _publish(ctx, small_catalog[:1], lone)
        _wait_done(engine, lone, 1)

        burst = f"m-dispatch-burst-{uuid.uuid4().hex[:8]}"
        _publish(ctx, small_catalog[1 : 1 + BURST], burst)
        _wait_done(engine, burst, BURST)

    assert _batch_sizes(log, lone) == [1]
    sizes = _batch_sizes(log, burst)
    assert len(sizes) == BURST
    # The first events found a process free and went alone; the rest gathered while both
    # processes were busy and left together when one returned.
    assert min(sizes) == 1 and max(sizes) > 1, sizes

"""A real worker's metrics, upload log lines and health check (docs/metrics.md).

One worker with a metrics port, JSON logs and a fast heartbeat consumes a queue of its own
(so the session's worker cannot take its uploads); a few good photos and one broken file
go through it; then /metrics, its log and `vitrine worker-check` are read. The worker is
stopped by the last test, which waits for the heartbeat to go stale.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration._prom import samples
from tests.integration.conftest import vitrine
from vitrine.worker.names import INGEST_TASK

pytestmark = pytest.mark.integration

QUEUE = "metrics-test"
N_GOOD = 4
MAX_AGE = 2.0


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    heartbeat: Path
    env: dict[str, str]
    ids: dict[str, int]  # uri -> image id
    bad_uri: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def run(ctx, engine, catalog, tmp_path_factory) -> Iterator[Run]:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from vitrine.embedded.launcher import running_worker, stop_worker
    from vitrine.worker.celery_app import app

    with engine.begin() as conn:  # no known bytes: every good photo is decoded
        conn.execute(text("TRUNCATE images RESTART IDENTITY CASCADE"))

    here = tmp_path_factory.mktemp("worker-metrics")
    bad = here / "broken.jpg"
    bad.write_bytes(b"this is not a photo at all")
    good = sorted(catalog[0].glob("*.*g"))[:N_GOOD]
    port, log, heartbeat = _free_port(), here / "worker.log", here / "worker.heartbeat"
    extra = {
        "VITRINE_METRICS_PORT": str(port),
        "VITRINE_METRICS_HOST": "127.0.0.1",
        "VITRINE_LOG_FORMAT": "json",
        "VITRINE_HEARTBEAT_FILE": str(heartbeat),
        "VITRINE_HEARTBEAT_INTERVAL_S": "0.3",
        "VITRINE_REAPER_INTERVAL_S": "0",
    }
    with running_worker(
        ctx.urls(), concurrency=2, log_path=log, queues=[QUEUE], extra_env=extra
    ) as proc:
        uris = [str(p) for p in good] + [str(bad)]
        pending = [
            app.send_task(INGEST_TASK, kwargs={"uri": uri, "merchant_id": "m-metrics"}, queue=QUEUE)
            for uri in uris
        ]
        ids = {}
        for uri, result in zip(uris, pending, strict=True):
            outcome = result.get(timeout=180)
            (image_id,) = [*outcome["done"], *map(int, outcome["failed"])]
            ids[uri] = image_id
        env = {**os.environ, "VITRINE_HEARTBEAT_FILE": str(heartbeat)}
        yield Run(proc, port, log, heartbeat, env, ids, str(bad))
        stop_worker(proc)


def _samples(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return samples(resp.read().decode())


def test_metrics_count_every_upload(run: Run) -> None:
    samples = _samples(run.port)
    done = samples['vitrine_uploads_total{reason_class="none",status="done"}']
    failed = {k: v for k, v in samples.items() if k.startswith("vitrine_uploads_total{")}
    assert done == N_GOOD
    assert failed == {
        'vitrine_uploads_total{reason_class="none",status="done"}': N_GOOD,
        'vitrine_uploads_total{reason_class="decode",status="failed"}': 1,
    }
    for stage in ("fetch", "decode", "forward", "write"):
        assert samples[f'vitrine_stage_seconds_count{{stage="{stage}"}}'] >= 1, stage
    assert samples["vitrine_batch_size_count"] >= 1
    assert samples["vitrine_batch_size_sum"] == N_GOOD
    for queue in ("uploads", "backfill"):
        assert f'vitrine_queue_depth{{queue="{queue}"}}' in samples
    info = [k for k, v in samples.items() if k.startswith("vitrine_model_info{") and v == 1]
    assert len(info) == 1 and 'model_id="' in info[0] and 'version="' in info[0]


def test_one_json_line_per_upload_and_no_password(run: Run, ctx) -> None:  # type: ignore[no-untyped-def]
    text = run.log.read_text()
    lines = []
    for raw in text.splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # Celery's start-up banner is printed, not logged
        if record.get("logger") == "vitrine.uploads":
            lines.append(record)
    assert sorted(r["image_id"] for r in lines) == sorted(run.ids.values())
    bad = next(r for r in lines if r["image_id"] == run.ids[run.bad_uri])
    assert bad["status"] == "failed" and bad["reason_class"] == "decode"
    assert bad["merchant_id"] == "m-metrics" and bad["reason"].startswith("not an image")
    good = [r for r in lines if r["status"] == "done"]
    assert len(good) == N_GOOD and all(r["forward_ms"] > 0 for r in good)
    urls = (ctx.database_url(), ctx.broker_url())
    passwords = [p for p in (urlsplit(u).password for u in urls) if p]
    assert passwords, "the embedded servers have passwords"
    assert not any(p in text for p in passwords)
    assert "oneDNN custom operations" not in text and "absl::InitializeLog" not in text


def test_worker_check_follows_the_heartbeat(run: Run) -> None:
    alive = vitrine(run.env, "worker-check", "--max-age", str(MAX_AGE), "--ping", timeout=120)
    assert alive.returncode == 0, alive.stdout + alive.stderr
    from vitrine.embedded.launcher import stop_worker

    stop_worker(run.proc)
    last = run.heartbeat.stat().st_mtime
    time.sleep(max(0.0, last + MAX_AGE + 0.2 - time.time()))  # until it is MAX_AGE old
    assert run.heartbeat.stat().st_mtime == last  # nobody beats any more
    dead = vitrine(run.env, "worker-check", "--max-age", str(MAX_AGE), timeout=120)
    assert dead.returncode == 1
    assert dead.stdout.count("\n") == 1 and "old" in dead.stdout, dead.stdout

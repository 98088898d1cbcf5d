"""`vitrine bench ingest`: every way an upload can travel, timed on the same photos in one run.

* bound: decode + preprocess in every usable CPU's process, then one batched forward
  pass; no queue, no database. What the hardware allows.
* bulk: `vitrine ingest` (registered rows, batch tasks of 64 images).
* live: N single-upload events published at once, as a platform's producer sends them.
* naive: one task per image, `model.predict` on one image, a commit per row (vitrine.bench.naive).
* latency: publish to row committed at a steady rate, alone and while a backfill runs.

Throughput is timed from the first publish to the last `processed_at`, on the database's
clock. Bench rows belong to merchants named `bench-<run>-<path>` and are deleted after.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitrine.bench.db import database_write_rate
from vitrine.bench.measure import (
    CpuMeter,
    PhotoWork,
    RssSampler,
    bench_photos,
    percentile_ms,
    preprocess_in_processes,
    server_pids,
    stage_costs,
    usable_cpus,
)
from vitrine.bench.naive import NAIVE_QUEUE, NAIVE_TASK
from vitrine.db import repository
from vitrine.ops.context import Context
from vitrine.ops.dispatch import run_chunks
from vitrine.ops.ingest import staged
from vitrine.ops.progress import ProgressFactory, no_progress
from vitrine.ops.uploads import file_uri, register_uploads
from vitrine.pipeline.inference.model import load_model_dir
from vitrine.pipeline.types import Upload
from vitrine.worker.celery_app import app
from vitrine.worker.names import BACKFILL_QUEUE, INGEST_TASK, UPLOADS_QUEUE
from vitrine.worker.processing import WorkItem

#: The backfill worker yields the CPU to live uploads (README "Scaling out").
# Every path gets the same photos: each must really be decoded and run through the model.
PROCESS_ALL = {"VITRINE_REUSE_KNOWN_BYTES": "0"}
BACKFILL_NICE = {"VITRINE_WORKER_NICE": "10", **PROCESS_ALL}


@dataclass(frozen=True)
class IngestBench:
    images: int = 1000
    seed: int = 2026
    concurrency: int | None = None  # worker pool processes (default: usable CPUs)
    naive_images: int | None = None  # default: min(images, 200)
    latency_uploads: int = 100
    latency_rate: float = 10.0
    keep_rows: bool = False


class _Run:
    def __init__(self, ctx: Context, req: IngestBench, progress: ProgressFactory) -> None:
        self.ctx, self.req, self.progress = ctx, req, progress
        self.engine = ctx.engine()
        self.tag = f"bench-{uuid.uuid4().hex[:8]}"
        self.merchants: list[str] = []
        self.landed: dict[str, str] = {}  # path -> "done/total"

    def merchant(self, path: str) -> str:
        self.merchants.append(f"{self.tag}-{path}")
        return self.merchants[-1]

    def clock(self) -> float:
        with self.engine.connect() as conn:
            return repository.database_clock(conn)

    def wait_settled(self, merchant: str, total: int, description: str) -> float:
        """Poll until every row of `merchant` finished; the last commit's time."""
        with self.progress(description, total) as tick:
            seen = 0
            while seen < total:
                time.sleep(0.2)  # the rows are all there is to watch
                with self.engine.connect() as conn:
                    finished, _ = repository.settled_counts(conn, merchant_id=merchant)
                tick(finished - seen)
                seen = finished
        with self.engine.connect() as conn:
            committed = repository.commit_times(conn, merchant_id=merchant)
        self.landed[merchant.removeprefix(f"{self.tag}-")] = f"{len(committed)}/{total}"
        if len(committed) < total:
            raise RuntimeError(f"{total - len(committed)} bench upload(s) of {merchant} failed")
        return max(committed.values())

    def publish_events(self, uploads: list[Upload], pace: float = 0.0) -> list[float]:
        """One `vitrine.ingest` event per upload, `pace` seconds apart; local send times."""
        sent = []
        start = time.perf_counter()
        for n, upload in enumerate(uploads):
            if pace:
                time.sleep(max(0.0, start + n * pace - time.perf_counter()))  # the rate itself
            sent.append(time.time())
            kwargs = {"uri": upload.uri, "merchant_id": upload.merchant_id, "sku": None}
            app.send_task(INGEST_TASK, kwargs=kwargs, queue=UPLOADS_QUEUE, ignore_result=True)
        return sent


def run_ingest_bench(
    ctx: Context, req: IngestBench, *, progress: ProgressFactory = no_progress
) -> dict[str, Any]:
    from vitrine.embedded.launcher import running_worker

    run = _Run(ctx, req, progress)
    cpus = usable_cpus()
    concurrency = req.concurrency or cpus
    bench_dir = ctx.settings.uploads / "bench" / f"photos-{req.images}-{req.seed}-500-2000"
    photos = bench_photos(bench_dir, n=req.images, seed=req.seed)
    result: dict[str, Any] = {
        "images": req.images,
        "seed": req.seed,
        "cpus": cpus,
        "concurrency": concurrency,
        "bulk_batch_size": ctx.settings.batch_size,
    }
    result.update(_bound(ctx, photos, cpus))
    urls, logs = ctx.urls(), ctx.settings.data_dir / "logs"
    ctx.broker_url()
    try:
        with ExitStack() as stack:
            live = stack.enter_context(
                running_worker(
                    urls,
                    concurrency=concurrency,
                    log_path=logs / "bench-worker.log",
                    queues=[UPLOADS_QUEUE],
                    extra_env=PROCESS_ALL,
                )
            )
            sampler = stack.enter_context(RssSampler(live.pid))
            _warm_up(run, photos, concurrency)
            pids = {"worker": live.pid, **server_pids(ctx), "bench": os.getpid()}
            with CpuMeter(pids) as bulk_cpu:
                result["bulk_images_per_s"], bulk_items = _bulk(run, photos)
            with CpuMeter(pids) as live_cpu:
                result["live_images_per_s"] = _live(run, photos)
            result["cpu_s"] = {"bulk": bulk_cpu.used, "live": live_cpu.used}
            result["stages"]["write_cpu_ms_per_photo"] = _write_cost(bulk_cpu.used, req.images)
            result["worker_peak_rss_mb"] = round(sampler.peak_mb, 1)
            result.update(_latency(run, photos, "latency"))
            with running_worker(
                urls,
                concurrency=1,
                log_path=logs / "bench-backfill.log",
                queues=[BACKFILL_QUEUE],
                extra_env=BACKFILL_NICE,
            ):
                with _backfilling(run, bulk_items):
                    during = _latency(run, photos, "latency during backfill")
            result["p50_latency_during_backfill_ms"] = during["p50_latency_ms"]
            result["p95_latency_during_backfill_ms"] = during["p95_latency_ms"]
        with running_worker(
            urls,
            concurrency=concurrency,
            log_path=logs / "bench-naive.log",
            queues=[NAIVE_QUEUE],
            include=["vitrine.bench.naive"],
        ):
            _naive(run, photos[: 2 * concurrency], "naive-warm-up")
            result.update(_naive(run, photos))
        result.update(
            database_write_rate(
                run.engine,
                merchant=run.merchant("db"),
                images=4 * req.images,
                batch=ctx.settings.live_batch_size,
                writers=2 * cpus,
            )
        )
    finally:
        if not req.keep_rows:
            with run.engine.begin() as conn:
                repository.delete_merchants(conn, merchant_ids=run.merchants)
    result["landed"] = run.landed
    bound = result["bound_images_per_s"]
    result["ratios"] = {
        "live_vs_bound": round(result["live_images_per_s"] / bound, 3),
        "bulk_vs_bound": round(result["bulk_images_per_s"] / bound, 3),
        "live_vs_naive": round(result["live_images_per_s"] / result["naive_images_per_s"], 2),
    }
    return result


def _bound(ctx: Context, photos: list[Path], cpus: int) -> dict[str, Any]:
    """What the hardware allows: everything the worker computes from a photo (model
    input, hash, quality, object view and, where the model has one, the unknown
    detector's score of the view) in every usable CPU's process, as the worker's pool
    does, then one batched forward pass of the model. Also the per-stage CPU table of one
    process (`stage_costs`), with the forward passes' CPU per photo beside it."""
    work = PhotoWork.of_model(ctx.settings.model_dir, ctx.settings.image_limits)
    pooled = preprocess_in_processes(photos, work, cpus)
    stages = stage_costs(photos, work)
    arrays = np.stack([p.array for p in pooled.prepared])
    model = load_model_dir(ctx.settings.model_dir)
    model.forward(arrays[:64])  # warm-up: tracing and thread pools are not throughput
    forward_s, forward_cpu = _median_timed(model.forward, arrays)
    stages["forward_cpu_ms_per_photo"] = {
        "model": round(1000 * forward_cpu / len(photos), 2),
        "unknown detector": round(1000 * pooled.detector_cpu_s / len(photos), 2),
    }
    return {
        "bound_images_per_s": round(len(photos) / (pooled.seconds + forward_s), 1),
        "bound_repeats": 3,
        "bound_preprocess_s": round(pooled.seconds, 2),
        "bound_forward_s": round(forward_s, 2),
        "stages": stages,
    }


def _median_timed(call: Any, *args: Any) -> tuple[float, float]:
    """Median wall and process CPU seconds of three calls."""
    runs = []
    for _ in range(3):
        cpu = time.process_time()
        wall = _timed(call, *args)
        runs.append((wall, time.process_time() - cpu))
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def _timed(call: Any, *args: Any) -> float:
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


def _write_cost(used: dict[str, float], images: int) -> dict[str, float]:
    """CPU ms per photo, during the bulk path, of what writes results: the database
    server (where it is embedded and so measured) and the worker's main process (the
    consumer that publishes, acknowledges and hands batches over; the pool's processes
    write their rows, counted with the preprocessing and the forward pass)."""
    return {
        name: round(1000 * used[key] / images, 2)
        for name, key in (("database", "postgres"), ("worker main", "worker_main"))
        if key in used
    }


def _uploads(run: _Run, photos: list[Path], path: str, n: int | None = None) -> list[Upload]:
    merchant = run.merchant(path)
    chosen = photos if n is None else [photos[i % len(photos)] for i in range(n)]
    return staged(run.ctx, [Upload(file_uri(p), merchant) for p in chosen])


def _bulk(run: _Run, photos: list[Path]) -> tuple[float, list[WorkItem]]:
    uploads = _uploads(run, photos, "bulk")
    start = run.clock()
    ids = [r.image_id for r in register_uploads(run.engine, uploads)]
    items = [WorkItem(image_id=i, uri=u.uri) for i, u in zip(ids, uploads, strict=True)]
    run_chunks(
        items, batch_size=run.ctx.settings.batch_size, description="bulk", progress=run.progress
    )
    end = run.wait_settled(uploads[0].merchant_id, len(items), "bulk settled")
    return round(len(items) / (end - start), 1), items


def _live(run: _Run, photos: list[Path]) -> float:
    uploads = _uploads(run, photos, "live")
    start = run.clock()
    run.publish_events(uploads)
    end = run.wait_settled(uploads[0].merchant_id, len(uploads), "live")
    return round(len(uploads) / (end - start), 1)


def _latency(run: _Run, photos: list[Path], description: str) -> dict[str, Any]:
    uploads = _uploads(run, photos, description.replace(" ", "-"), run.req.latency_uploads)
    offset = run.clock() - time.time()  # same host or not: map local send times onto it
    sent = run.publish_events(uploads, pace=1.0 / run.req.latency_rate)
    run.wait_settled(uploads[0].merchant_id, len(uploads), description)
    with run.engine.connect() as conn:
        done = repository.commit_times(conn, merchant_id=uploads[0].merchant_id)
    latencies = [done[u.uri] - (t + offset) for u, t in zip(uploads, sent, strict=True)]
    return {
        "p50_latency_ms": percentile_ms(latencies, 50),
        "p95_latency_ms": percentile_ms(latencies, 95),
        "latency_uploads": len(uploads),
        "latency_rate_per_s": run.req.latency_rate,
    }


class _backfilling:
    """A re-embedding backfill of the bulk images, looping until the block ends."""

    def __init__(self, run: _Run, items: list[WorkItem]) -> None:
        self.run, self.items, self.stop = run, items, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with self.run.engine.connect() as conn:
            active = repository.active_model(conn)
        assert active is not None
        while not self.stop.is_set():
            run_chunks(
                self.items,
                batch_size=self.run.ctx.settings.batch_size,
                description="backfill",
                model_key=active.key,
                max_in_flight=2,
            )

    def __enter__(self) -> _backfilling:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _warm_up(run: _Run, photos: list[Path], concurrency: int) -> None:
    """A few events first, so every pool process has loaded and traced its model: start-up
    is not throughput."""
    uploads = _uploads(run, photos, "warm-up", 4 * concurrency)
    run.publish_events(uploads)
    run.wait_settled(uploads[0].merchant_id, len(uploads), "warm-up")


def _naive(run: _Run, photos: list[Path], name: str = "naive") -> dict[str, Any]:
    n = min(len(photos), run.req.naive_images or min(run.req.images, 200))
    merchant = run.merchant(name)
    start = run.clock()
    for photo in photos[:n]:
        app.send_task(
            NAIVE_TASK,
            kwargs={"path": str(photo), "merchant_id": merchant},
            queue=NAIVE_QUEUE,
            ignore_result=True,
        )
    end = run.wait_settled(merchant, n, "naive")
    return {"naive_images_per_s": round(n / (end - start), 1), "naive_images": n}

"""Prometheus metrics of a worker, summed over its pool processes (docs/metrics.md).

Pool processes record; the main process serves /metrics on `VITRINE_METRICS_PORT`.
prometheus_client's multiprocess mode makes that work across the fork: every process writes
its values to files in `PROMETHEUS_MULTIPROC_DIR`, and the main process reads them all
(`MultiProcessCollector`). The directory must be known before prometheus_client is
imported; `vitrine worker` creates a fresh one per worker (`vitrine.ops.workers`), and a worker
started otherwise with a metrics port makes itself a temporary one here, first thing.
Queue depths are read from the broker when scraped, in the serving process.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vitrine.pipeline.types import GAVE_UP_PREFIX
from vitrine.settings import Settings, get_settings
from vitrine.worker.names import ALL_QUEUES

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_own_dir: str | None = None
#: A `celery worker` main process (its pool processes inherit what it sets), not a CLI
#: process that runs `vitrine.worker.processing` itself.
_IS_WORKER = "celery" in sys.argv[0] and "worker" in sys.argv[1:]
if _IS_WORKER and get_settings().metrics_port and not os.environ.get(MULTIPROC_ENV):
    _own_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="vitrine-metrics-")

from prometheus_client import (  # noqa: E402
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

log = logging.getLogger(__name__)
uploads_log = logging.getLogger("vitrine.uploads")

STAGES = ("fetch", "decode", "forward", "write")
#: reason_class label values, in the order `reason_class` tries them.
REASON_CLASSES = ("none", "fetch", "refused", "decode", "limits", "timeout", "worker", "other")

UPLOADS = Counter(
    "vitrine_uploads", "Uploads that ended done or failed.", ["status", "reason_class"]
)
STAGE_SECONDS = Histogram(
    "vitrine_stage_seconds",
    "Seconds one batch spent in a stage (fetch, decode = decode + preprocess, forward, write).",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_SIZE = Histogram(
    "vitrine_batch_size",
    "Images per forward pass.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
MODEL_INFO = Gauge(
    "vitrine_model_info",
    "1 for the model the worker's processes use.",
    ["model_id", "name", "version"],
    multiprocess_mode="livemax",
)

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("worker", r"^each attempt ended without a result"),
        ("timeout", r"^processing took longer than"),
        ("refused", r"^refused to (read|fetch)"),
        ("limits", r"over the .* limit|took longer than the .* limit"),
        ("decode", r"^(empty file|not an image|truncated or corrupt|.* has zero width or height)"),
        (
            "fetch",
            r"^(file not found|permission denied|cannot fetch|could not fetch|gave up "
            r"fetching|HTTP \d|TLS certificate|more than \d+ redirects|unsupported URI "
            r"scheme|cannot resolve|.* resolves to no address|.* is a directory|.* is not "
            r"a regular file)",
        ),
    )
)
_GAVE_UP = re.compile("^" + re.escape(GAVE_UP_PREFIX) + r"\d+ (tries|attempts): ")


def reason_class(reason: str | None) -> str:
    """The small fixed class (`REASON_CLASSES`) of a failure reason as the worker records
    it; "none" for no failure. Retries given up on are classed by their last reason."""
    if not reason:
        return "none"
    while _GAVE_UP.match(reason):
        reason = _GAVE_UP.sub("", reason, count=1)
    for name, pattern in _RULES:
        if pattern.search(reason):
            return name
    return "other"


class StageTimer:
    """Times a batch's stages into `vitrine_stage_seconds` and keeps them for its log lines."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, record: bool = True) -> Iterator[None]:
        """Time the block as stage `name`; `record=False`: a stage with nothing to do."""
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            if record:
                self.seconds[name] = self.seconds.get(name, 0.0) + took
                STAGE_SECONDS.labels(stage=name).observe(took)

    def ms(self) -> dict[str, float]:
        return {f"{name}_ms": round(self.seconds[name] * 1000, 1) for name in self.seconds}


def report_outcomes(
    *,
    done: Sequence[int] = (),
    failed: Mapping[int, str] | None = None,
    merchants: Mapping[int, str] | None = None,
    timings: Mapping[str, float] | None = None,
) -> None:
    """Count uploads that ended now, and log one line each (docs/metrics.md)."""
    merchants, timings = merchants or {}, timings or {}
    outcomes: list[tuple[int, str, str | None]] = [(i, "done", None) for i in done]
    outcomes += [(i, "failed", why) for i, why in (failed or {}).items()]
    for image_id, status, reason in outcomes:
        kind = reason_class(reason)
        UPLOADS.labels(status=status, reason_class=kind).inc()
        fields: dict[str, Any] = {
            "image_id": image_id,
            "merchant_id": merchants.get(image_id),
            "status": status,
            "reason": reason,
            "reason_class": kind,
            "batch": len(outcomes),
            **timings,
        }
        uploads_log.info("upload %s", status, extra={"fields": fields})


_model_labels: dict[str, str] | None = None


def set_model(model_id: int, name: str, version: str) -> None:
    """`vitrine_model_info` of this process: 1 for its model, 0 for one it used before."""
    global _model_labels
    labels = {"model_id": str(model_id), "name": name, "version": version}
    if labels == _model_labels:
        return
    if _model_labels is not None:
        MODEL_INFO.labels(**_model_labels).set(0)
    MODEL_INFO.labels(**labels).set(1)
    _model_labels = labels


def _queue_keys(queue: str) -> list[str]:
    """The Redis lists of one Celery queue: kombu keeps priorities 3, 6, 9 apart."""
    return [queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9))]


class QueueDepthCollector(Collector):
    """`vitrine_queue_depth{queue}`: messages waiting in each queue (LLEN), read when
    scraped. A broker that does not answer leaves the metric out of that scrape."""

    def __init__(self, redis_url: str, queues: Sequence[str] = ALL_QUEUES) -> None:
        import redis

        self.queues = tuple(queues)
        self.client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "vitrine_queue_depth", "Messages waiting in the broker's queue.", labels=["queue"]
        )
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for queue in self.queues:
                    for key in _queue_keys(queue):
                        pipe.llen(key)
                lengths = pipe.execute()
        except Exception as exc:  # a scrape must not fail because the broker is away
            log.warning("queue depth unavailable: %s", exc.__class__.__name__)
            return
        per = len(_queue_keys(""))
        for n, queue in enumerate(self.queues):
            family.add_metric([queue], float(sum(lengths[n * per : (n + 1) * per])))
        yield family


class _LiveProcesses(Collector):
    """Forgets the live gauges of pool processes that died without saying so (killed):
    runs first on every scrape, collects nothing itself."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for pid in {int(m.group(1)) for m in map(_LIVE_FILE.match, _names(self.path)) if m}:
            if not process_alive(pid):
                multiprocess.mark_process_dead(pid, str(self.path))
        return iter(())


_LIVE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def _names(path: Path) -> list[str]:
    try:
        return [p.name for p in path.iterdir()]
    except OSError:
        return []


def process_alive(pid: int) -> bool:
    """Whether `pid` still exists (another user's process counts)."""
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


_server: Any = None


def serve(settings: Settings) -> None:
    """In the worker's main process: /metrics on `settings.metrics_port`, if set. A port
    taken is a warning: the worker still works."""
    global _server
    path = os.environ.get(MULTIPROC_ENV)
    if not settings.metrics_port or _server is not None:
        return
    if not path:
        log.warning("metrics off: %s was not set when the worker started", MULTIPROC_ENV)
        return
    registry = CollectorRegistry()
    registry.register(_LiveProcesses(path))
    multiprocess.MultiProcessCollector(registry, path=path)
    if settings.redis_url:
        registry.register(QueueDepthCollector(settings.redis_url))
    try:
        _server, _ = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=registry
        )
    except OSError as exc:
        log.warning("metrics off: cannot listen on port %s: %s", settings.metrics_port, exc)
        return
    log.info("metrics on http://%s:%s/metrics", settings.metrics_host, settings.metrics_port)


def child_exited(pid: int) -> None:
    """A pool process is exiting: its live gauges go (its counters stay in the sums)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        multiprocess.mark_process_dead(pid, path)


def shutdown() -> None:
    """Stop serving; remove the directory if this module made it."""
    global _server
    if _server is not None:
        _server.shutdown()
        _server = None
    if _own_dir:
        shutil.rmtree(_own_dir, ignore_errors=True)

"""Measuring helpers for `vitrine bench ingest`: the bound, memory, percentiles, photos."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from vitrine.pipeline.inference.preprocess import Prepared, prepare_photo
from vitrine.pipeline.inference.stages import NO_CLOCK, STAGES, StageClock
from vitrine.pipeline.training.datasets import load_fashion_mnist
from vitrine.pipeline.types import ImageLimits, PreprocessSpec
from vitrine.settings import SAMPLE_FASHION_DIR

if TYPE_CHECKING:
    from vitrine.ops.context import Context
    from vitrine.pipeline.inference.unknown import UnknownDetector


def bench_photos(directory: Path, *, n: int, seed: int) -> list[Path]:
    """N merchant-like photos (the `vitrine photos` generator, 500-2,000 px on the longest
    side, JPEG/PNG/WebP), made once and reused."""
    from vitrine.pipeline.synthetic.photos import write_catalog

    manifest = directory / "manifest.csv"
    if manifest.exists():
        files = sorted(p for p in directory.iterdir() if p.name != "manifest.csv")
        if len(files) == n:
            return files
    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    write_catalog(data.x_test, data.y_test, directory, n=n, seed=seed, size_range=(500, 2000))
    return sorted(p for p in directory.iterdir() if p.name != "manifest.csv")


@dataclass(frozen=True)
class PhotoWork:
    """What the worker computes from every photo: the model input, the perceptual hash,
    the quality figures and, when the model has an unknown detector, its object view."""

    spec: PreprocessSpec
    limits: ImageLimits
    view_size: int | None
    #: Where a pool process loads the unknown detector from to score each object view, as
    #: every worker process does; None when the model has no detector.
    detector_dir: Path | None = None

    @classmethod
    def of_model(cls, model_dir: Path, limits: ImageLimits) -> PhotoWork:
        """The work for the model in `model_dir`, read without loading it (no TensorFlow
        before a fork)."""
        from vitrine.pipeline.inference.model import read_spec
        from vitrine.pipeline.inference.unknown import FEATURES_FROM_MODEL, UNKNOWN_FILE, VIEW_SIZE

        spec = read_spec(model_dir)
        if not spec.unknown or not (model_dir / UNKNOWN_FILE).is_file():
            return cls(spec.preprocess, limits, None)
        if spec.unknown.get("features") == FEATURES_FROM_MODEL:  # a lite0 model: its forward
            return cls(spec.preprocess, limits, None)  # pass scores it, no view beside it
        view = int(spec.unknown.get("view_size", VIEW_SIZE))
        return cls(spec.preprocess, limits, view, model_dir)

    def prepare(self, data: bytes, clock: StageClock = NO_CLOCK) -> Prepared:
        return prepare_photo(
            data,
            self.spec,
            limits=self.limits,
            with_phash=True,
            with_quality=True,
            view_size=self.view_size,
            clock=clock,
        )


_work: PhotoWork | None = None
_detector: UnknownDetector | None = None


def _init(work: PhotoWork, blas_threads: int) -> None:
    global _work, _detector
    _work = work
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=blas_threads, user_api="blas")  # as `configure_threads` does
    if work.detector_dir is not None:  # after the fork, as a worker process loads it
        from vitrine.pipeline.inference.model import read_spec
        from vitrine.pipeline.inference.unknown import UnknownDetector

        spec = read_spec(work.detector_dir)
        _detector = UnknownDetector.load(work.detector_dir, spec.unknown or {})


def _prepare(path: Path) -> tuple[Prepared, float]:
    """One photo's work and the CPU seconds its detector score took (0 without one)."""
    assert _work is not None
    prepared = _work.prepare(path.read_bytes())
    if _detector is None or prepared.view is None:
        return prepared, 0.0
    started = time.process_time()
    _detector.scores(prepared.view[None])
    return prepared, time.process_time() - started


@dataclass(frozen=True)
class PoolPass:
    """The median of a pool's timed passes over the photos."""

    prepared: list[Prepared]
    seconds: float
    detector_cpu_s: float  # the detector's scores, summed over the photos


def preprocess_in_processes(
    paths: Sequence[Path], work: PhotoWork, processes: int, repeats: int = 3
) -> PoolPass:
    """Everything the worker computes from each photo (`PhotoWork`), in `processes` forked
    processes, each scoring its photos' object views with the unknown detector as a
    worker process does (one view per call). The pool is started, its detectors loaded
    and warmed first, as a worker's processes are by the time uploads arrive; the median
    of `repeats` passes keeps one disturbed pass on a shared machine from setting the
    bound.

    Forked before this process loads TensorFlow (fork after TF is unsafe)."""
    context = multiprocessing.get_context("fork")
    passes = []
    blas_threads = max(1, usable_cpus() // processes)
    with context.Pool(processes, initializer=_init, initargs=(work, blas_threads)) as pool:
        pool.map(_prepare, paths[: 4 * processes], chunksize=1)
        for _ in range(repeats):
            started = time.perf_counter()
            done = pool.map(_prepare, paths, chunksize=8)
            seconds = time.perf_counter() - started
            passes.append((seconds, [p for p, _ in done], sum(cpu for _, cpu in done)))
    seconds, prepared, detector_cpu = sorted(passes, key=lambda run: run[0])[len(passes) // 2]
    return PoolPass(prepared, seconds, detector_cpu)


def stage_costs(paths: Sequence[Path], work: PhotoWork, n: int = 240) -> dict[str, Any]:
    """CPU ms per photo of each preprocessing stage (`vitrine.pipeline.inference.stages`)
    by file format, in this one process, over the first `n` photos (after 5 to warm up):
    the budget table of `vitrine bench ingest` and docs/performance.md."""
    blobs = [(p.suffix.lstrip(".").lower(), p.read_bytes()) for p in paths[:n]]
    for _, blob in blobs[:5]:
        work.prepare(blob)
    clocks: dict[str, StageClock] = defaultdict(StageClock)
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for fmt, blob in blobs:
        started = time.process_time()
        work.prepare(blob, clocks[fmt])
        totals[fmt] += time.process_time() - started
        counts[fmt] += 1
    table: dict[str, dict[str, float]] = {}
    for fmt in sorted(clocks):
        row = {stage: clocks[fmt].seconds.get(stage, 0.0) for stage in STAGES}
        row["total"] = totals[fmt]
        table[fmt] = {k: round(1000 * v / counts[fmt], 2) for k, v in row.items()}
    overall = {
        stage: round(sum(table[f][stage] * counts[f] for f in table) / len(blobs), 2)
        for stage in (*STAGES, "total")
    }
    return {"photos": dict(counts), "ms_per_photo": {**table, "all": overall}}


class RssSampler(threading.Thread):
    """Peak resident memory of a process tree, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak_mb = pid, interval, 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self.join()


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its descendants, in MB (Linux /proc)."""
    total_kb = 0
    for current in _tree_pids(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:  # ended since the walk
            continue
        total_kb += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
    return total_kb / 1024


def percentile_ms(values_s: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values_s) * 1000, q)), 1)


def usable_cpus() -> int:
    """CPUs this process may really use: affinity capped by a container's CPU quota, as
    the workers count them (`vitrine.worker.runtime.available_cpus`)."""
    from vitrine.worker.runtime import available_cpus

    return available_cpus()


def _tree_pids(pid: int) -> list[int]:
    """`pid` and every live descendant (Linux /proc)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found.append(current)
        pending.extend(int(c) for c in children)
    return found


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one live process (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each named process tree used while the block ran, and the wall time.

    Says where a path's time goes when everything shares the machine: the worker's pool
    processes (the work the bound measures), its main process (Celery's consumer), the
    database, the broker, the publishing process (`alone`: without its children).
    `worker` is split into `worker_main` and `worker_pool`; `idle` is what the machine's
    CPUs had left. Processes that end inside the block are not counted.
    """

    def __init__(self, pids: dict[str, int | None], alone: Sequence[str] = ("bench",)) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.alone = set(alone)  # counted without their children (the bench starts workers)
        self.used: dict[str, float] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        return {
            name: {p: _cpu_s(p) for p in ([pid] if name in self.alone else _tree_pids(pid))}
            for name, pid in self.pids.items()
        }

    def __enter__(self) -> CpuMeter:
        self._wall, self._before = time.perf_counter(), self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        after, wall = self._sample(), time.perf_counter() - self._wall
        for name, times in after.items():
            before, root = self._before.get(name, {}), self.pids[name]
            delta = {p: t - before.get(p, 0.0) for p, t in times.items()}
            if name == "worker":
                self.used["worker_main"] = round(delta.pop(root, 0.0), 2)
                self.used["worker_pool"] = round(sum(delta.values()), 2)
            else:
                self.used[name] = round(sum(delta.values()), 2)
        self.used["wall_s"] = round(wall, 2)
        busy = sum(v for k, v in self.used.items() if k != "wall_s")
        self.used["idle"] = round(max(0.0, wall * usable_cpus() - busy), 2)


def server_pids(ctx: Context) -> dict[str, int | None]:
    """PIDs of the embedded PostgreSQL and Redis; none for servers elsewhere."""
    try:
        from vitrine.embedded.services import services_status
    except ImportError:  # installed without the embedded extra: servers are elsewhere
        return {}
    status = services_status(ctx.settings)
    return {name: entry["pid"] for name, entry in status.items() if entry.get("embedded")}  # type: ignore[misc]

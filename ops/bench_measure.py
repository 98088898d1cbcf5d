"""Measuring helpers for `vitrine bench ingest`: the bound, memory, percentiles, photos."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from pipeline.datasets import load_fashion_mnist
from pipeline.preprocess import preprocess_bytes
from pipeline.types import ImageLimits, PreprocessSpec
from worker.settings import SAMPLE_FASHION_DIR


def bench_photos(directory: Path, *, n: int, seed: int) -> list[Path]:
    """N merchant-like photos (the `vitrine photos` generator, 500-2,000 px on the longest
    side, JPEG/PNG/WebP), made once and reused."""
    from pipeline.photos import write_catalog

    manifest = directory / "manifest.csv"
    if manifest.exists():
        files = sorted(p for p in directory.iterdir() if p.name != "manifest.csv")
        if len(files) == n:
            return files
    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    write_catalog(data.x_test, data.y_test, directory, n=n, seed=seed, size_range=(500, 2000))
    return sorted(p for p in directory.iterdir() if p.name != "manifest.csv")


_spec: PreprocessSpec | None = None
_limits: ImageLimits | None = None


def _init(spec: PreprocessSpec, limits: ImageLimits) -> None:
    global _spec, _limits
    _spec, _limits = spec, limits


def _prepare(path: Path) -> np.ndarray:
    assert _spec is not None and _limits is not None
    return preprocess_bytes(path.read_bytes(), _spec, limits=_limits)[0]


def preprocess_in_processes(
    paths: Sequence[Path], spec: PreprocessSpec, limits: ImageLimits, processes: int
) -> tuple[np.ndarray, float]:
    """Decode and preprocess every photo in `processes` forked processes; (arrays, s).

    Forked before this process loads TensorFlow (fork after TF is unsafe)."""
    started = time.perf_counter()
    context = multiprocessing.get_context("fork")
    with context.Pool(processes, initializer=_init, initargs=(spec, limits)) as pool:
        arrays = pool.map(_prepare, paths, chunksize=8)
    return np.stack(arrays), time.perf_counter() - started


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
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total_kb += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
        pending.extend(int(c) for c in children)
    return total_kb / 1024


def percentile_ms(values_s: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values_s) * 1000, q)), 1)


def usable_cpus() -> int:
    """CPUs this process may run on (affinity), at least 1."""
    return max(1, len(os.sched_getaffinity(0)))

"""The upload path's throughput bound: decode + preprocess N merchant-like photos in P
processes, then one batched forward pass of all of them.

    .venv/bin/python tools/bound.py --n 1000                # 5 repeats, median and spread
    .venv/bin/python tools/bound.py --n 1000 --save out.npz  # also keep inputs and outputs
    .venv/bin/python tools/bound.py --n 1000 --threads       # 2 threads instead of processes
    .venv/bin/python tools/bound.py --n 1000 --worker        # everything the worker does

Photos come from `vitrine.pipeline.synthetic.photos.write_catalog` (Fashion-MNIST test items of the
slice
shipped in vitrine/data, JPEG/PNG/WebP mix, 20% EXIF-rotated, longest side 500-2,000 px),
written once into a cache folder and reused. Each pool process reads its files itself,
as a worker does after a fetch; the pool is started and warmed before any timing. The
forward pass runs in the main process with TensorFlow's default threads, after one
warm-up call. bound = N / (preprocess seconds + forward seconds), per repeat; the report
gives the median and the min-max of the repeats, because the machine is shared, and the
CPU time per image (summed over the pool's tasks; the forward pass's over all its
threads), which another job on the machine disturbs far less than wall time.

Only APIs that predate the performance work are used (`preprocess_bytes`,
`load_model_dir`, `LoadedModel.forward`), so the same script measures older commits:
`git worktree add /tmp/old REV && PYTHONPATH=/tmp/old .venv/bin/python tools/bound.py`.
`--worker` measures what the worker really computes per photo since the quality figures
and the unknown detector came (`prepare_photo` with the hash, the quality figures and the
object view, and the detector's score of each view in the pool process, as a worker
process scores it): commits from 2026-12-05 on.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import multiprocessing
import statistics
import sys
import time
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import numpy as np

from vitrine.settings import SAMPLE_FASHION_DIR

ROOT = Path(__file__).resolve().parents[1]
SLICE = SAMPLE_FASHION_DIR
MODEL = ROOT / "models" / "fashion-cnn"
SIZE_RANGE = (500, 2000)
BATCH = 64  # the worker's bulk batch (`Settings.batch_size`)


def _catalog(folder: Path, n: int, seed: int) -> list[Path]:
    """The photos' paths, writing them first unless `folder` already holds this catalog."""
    from vitrine.pipeline.synthetic.photos import write_catalog
    from vitrine.pipeline.training.datasets import load_fashion_mnist

    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        data = load_fashion_mnist(SLICE)
        write_catalog(data.x_test, data.y_test, folder, n=n, seed=seed, size_range=SIZE_RANGE)
    with manifest.open(newline="", encoding="utf-8") as fh:
        return [folder / row["file"] for row in csv.DictReader(fh)]


_detector: Any = None


def _load_detector(blas_threads: int | None) -> None:
    """Pool initializer for `--worker`: the model's unknown detector, loaded in each pool
    process as a worker process loads it, so its scores run in parallel as they do there;
    with `blas_threads`, numpy's BLAS limited as workers from 2026-12-06 on limit it."""
    global _detector
    if blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=blas_threads, user_api="blas")
    from vitrine.pipeline.inference.unknown import UnknownDetector

    spec = json.loads((MODEL / "model.json").read_text())
    _detector = UnknownDetector.load(MODEL, spec["unknown"])


def _preprocess_file(path: Path, view_size: int | None = None) -> tuple[Any, float]:
    """Model input of one photo file (with `view_size`: everything the worker computes,
    the input and the object view, scored by the unknown detector), and the CPU seconds
    this process spent on it."""
    from vitrine.pipeline.types import ImageLimits, PreprocessSpec

    limits = ImageLimits(max_bytes=40_000_000, max_pixels=40_000_000)
    t0 = time.process_time()
    if view_size:
        from vitrine.pipeline.inference.preprocess import prepare_photo

        prepared = prepare_photo(
            path.read_bytes(),
            PreprocessSpec(),
            limits=limits,
            with_phash=True,
            with_quality=True,
            view_size=view_size,
        )
        return (prepared.array, prepared.view), time.process_time() - t0
    from vitrine.pipeline.inference.preprocess import preprocess_bytes

    array = preprocess_bytes(path.read_bytes(), PreprocessSpec(), limits=limits)[0]
    return (array, None), time.process_time() - t0


def _worker_batch(paths: list[Path], view_size: int) -> list[tuple[Any, float]]:
    """One bulk batch as a worker process runs it: every photo's work, then the unknown
    detector's scores of all the batch's views in one call; the scores' CPU is shared
    out over the batch's photos."""
    done = [_preprocess_file(path, view_size) for path in paths]
    t0 = time.process_time()
    _detector.scores(np.stack([view for (_, view), _ in done]))
    share = (time.process_time() - t0) / len(done)
    return [(result, cpu + share) for result, cpu in done]


def _view_size() -> int:
    """The unknown detector's view side, read from the model's spec (no TensorFlow)."""
    spec = json.loads((MODEL / "model.json").read_text())
    return int(spec.get("unknown", {}).get("view_size", 160))


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    folder = args.photos or Path(f"/tmp/vitrine-bound/n{args.n}-seed{args.seed}")
    paths = _catalog(folder, args.n, args.seed)
    context = multiprocessing.get_context("spawn")  # no TensorFlow state crosses a fork
    pool_type = ThreadPool if args.threads else context.Pool
    if args.worker:  # bulk batches of 64, as the worker's
        task: Any = functools.partial(_worker_batch, view_size=_view_size())
        units: list[Any] = [paths[i : i + BATCH] for i in range(0, len(paths), BATCH)]
    else:
        task, units = _preprocess_file, paths
    setup = _load_detector if args.worker else None
    with pool_type(args.processes, initializer=setup, initargs=(args.blas_threads,)) as pool:
        pool.map(task, units[: 2 * args.processes], chunksize=1)  # warm-up
        chunk = max(1, len(units) // (8 * args.processes))
        pre_s, pre_cpu, arrays = [], [], np.zeros(0)
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            done = pool.map(task, units, chunksize=chunk)
            if args.worker:
                done = [result for batch in done for result in batch]
            pre_s.append(time.perf_counter() - t0)
            arrays = np.stack([array for (array, _), _ in done])
            # (threads: this process's CPU time is theirs; processes: each task's own)
            threads_cpu = time.process_time() - c0
            pre_cpu.append(threads_cpu if args.threads else sum(cpu for _, cpu in done))

    from vitrine.pipeline.inference.model import load_model_dir

    model = load_model_dir(MODEL)
    model.forward(arrays)  # warm-up: tracing and thread pools are not throughput
    fwd_s, fwd_cpu, probs, embs = [], [], np.zeros(0), np.zeros(0)
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        probs, embs = model.forward(arrays)
        fwd_s.append(time.perf_counter() - t0)
        fwd_cpu.append(time.process_time() - c0)
    if args.save:
        names = np.array([p.name for p in paths])
        np.savez_compressed(args.save, files=names, inputs=arrays, probs=probs, embs=embs)
    import vitrine.pipeline

    n = len(paths)
    bounds = [n / (p + f) for p, f in zip(pre_s, fwd_s, strict=True)]
    return {
        "n": n,
        "processes": args.processes,
        "threads_instead_of_processes": args.threads,
        "worker": args.worker,
        "repeat": args.repeat,
        "photos": str(folder),
        "pipeline": str(Path(vitrine.pipeline.__file__).resolve().parent),
        "preprocess_s": _spread(pre_s),
        "preprocess_images_per_s": _spread([n / s for s in pre_s]),
        "preprocess_cpu_ms_per_image": _spread([1000 * c / n for c in pre_cpu]),
        "forward_s": _spread(fwd_s),
        "forward_cpu_ms_per_image": _spread([1000 * c / n for c in fwd_cpu]),
        "forward_images_per_s": _spread([n / s for s in fwd_s]),
        "bound_images_per_s": _spread(bounds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="photos (default 1000)")
    parser.add_argument("--processes", type=int, default=2, help="preprocessing processes")
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument(
        "--threads", action="store_true", help="preprocess in threads of this process instead"
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="everything the worker computes: hash, quality, object view, unknown detector",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        help="with --worker: numpy's BLAS threads per pool process, as the worker of the "
        "tree measured sets them (1 on 2 cores from 2026-12-06 on; older trees: leave out)",
    )
    parser.add_argument("--seed", type=int, default=7, help="catalog seed (default 7)")
    parser.add_argument("--photos", type=Path, help="cache folder for the generated photos")
    parser.add_argument("--save", type=Path, help="write inputs, probs, embs to this .npz")
    result = measure(parser.parse_args(argv))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

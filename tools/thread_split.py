"""Forward-pass throughput of P worker-like processes with T TensorFlow threads each.

    .venv/bin/python tools/thread_split.py --processes 2 --threads 1  # 2 CPUs, 2 workers
    .venv/bin/python tools/thread_split.py --processes 2 --threads 8  # 2 CPUs seen as 16

Each process sets intra-op threads to T (inter-op 1) as `vitrine.worker.runtime.configure_threads`
does, loads the shipped model, warms up, then all run together (a barrier) over their
share of N inputs (the Fashion-MNIST slice, batches of 64), R times. Reported: images per
second of all processes together, per repeat (N / the slowest process's time), as the
median and min-max, because the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from vitrine.settings import SAMPLE_FASHION_DIR

ROOT = Path(__file__).resolve().parents[1]


def _worker(threads: int, share: int, repeat: int, barrier: Any, out: Any) -> None:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from vitrine.pipeline.inference.model import load_model_dir
    from vitrine.pipeline.inference.preprocess import raw_to_model_input
    from vitrine.pipeline.training.datasets import load_fashion_mnist

    model = load_model_dir(ROOT / "models" / "fashion-cnn")
    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    x = raw_to_model_input(np.resize(data.x_test, (share, 28, 28)), model.spec.preprocess)
    model.forward(x[:64])
    for _ in range(repeat):
        barrier.wait()
        t0 = time.perf_counter()
        model.forward(x)
        out.put(time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    parser.add_argument("--n", type=int, default=2000, help="inputs in all (default 2000)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(args.processes), context.Queue()
    share = args.n // args.processes
    procs = [
        context.Process(target=_worker, args=(args.threads, share, args.repeat, barrier, out))
        for _ in range(args.processes)
    ]
    for proc in procs:
        proc.start()
    times = [out.get() for _ in range(args.processes * args.repeat)]
    for proc in procs:
        proc.join()
    # the k-th finisher of each round: group per round by order of arrival
    rounds = [times[i : i + args.processes] for i in range(0, len(times), args.processes)]
    rates = [share * args.processes / max(r) for r in rounds]
    result = {
        "processes": args.processes,
        "threads_per_process": args.threads,
        "n": share * args.processes,
        "images_per_s": {
            "median": round(statistics.median(rates), 1),
            "min": round(min(rates), 1),
            "max": round(max(rates), 1),
        },
    }
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

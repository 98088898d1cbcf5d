"""CPU time of `preprocess_bytes` per image and format, for several source trees, A/B.

    .venv/bin/python tools/preprocess_ab.py --rounds 5 before=/tmp/wt/base after=.
    .venv/bin/python tools/preprocess_ab.py --worker --rounds 3 before=/tmp/old after=.

Each NAME=ROOT names a checkout whose `pipeline/` is measured (`git worktree add
/tmp/wt/base REV` makes one of an older commit). Every round runs each tree once, in a
fresh process (malloc settings and imports are per process), in alternating order, over
the same photos (the `tools/bound.py` catalog, made if missing). Per image CPU time
(`time.process_time`) is what is summed: another job on the machine disturbs it much less
than wall time, and the alternation spreads what remains over all trees alike. The report
gives per tree and format the median ms per image and the min-max over rounds, and the
median of the per-round ratios to the first tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve()


def _child(folder: Path, count: int, worker: bool = False) -> dict[str, float]:
    """In the child: ms per image by file suffix (and "all") over the first `count` files;
    with `worker`, everything the worker computes (hash, quality figures, object view)."""
    import functools

    import vitrine.pipeline
    from vitrine.pipeline.inference.preprocess import prepare_photo, preprocess_bytes
    from vitrine.pipeline.types import ImageLimits, PreprocessSpec

    root = Path(os.environ["PYTHONPATH"]).resolve()
    if not Path(vitrine.pipeline.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"measuring {vitrine.pipeline.__file__}, not the tree under {root}")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png", ".webp"))
    blobs = [(p.suffix, p.read_bytes()) for p in files[:count]]
    limits, spec = ImageLimits(max_bytes=40_000_000, max_pixels=40_000_000), PreprocessSpec()
    if worker:
        preprocess_bytes = functools.partial(  # type: ignore[assignment]
            prepare_photo, with_phash=True, with_quality=True, view_size=160
        )
    for _, blob in blobs[:5]:  # warm-up: imports, first-call set-up
        preprocess_bytes(blob, spec, limits=limits)
    spent: dict[str, float] = defaultdict(float)
    seen: dict[str, int] = defaultdict(int)
    for suffix, blob in blobs:
        t0 = time.process_time()
        preprocess_bytes(blob, spec, limits=limits)
        spent[suffix] += time.process_time() - t0
        seen[suffix] += 1
    result = {s: 1000 * spent[s] / seen[s] for s in spent}
    result["all"] = 1000 * sum(spent.values()) / len(blobs)
    return result


def _run_tree(root: Path, folder: Path, count: int, worker: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, str(HERE), "--child", str(folder), "--count", str(count)]
    cmd += ["--worker"] if worker else []
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", help="NAME=ROOT, the first one is the reference")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=300, help="photos per run (default 300)")
    parser.add_argument("--photos", type=Path, default=Path("/tmp/vitrine-bound/n1000-seed7"))
    parser.add_argument(
        "--worker", action="store_true", help="hash, quality and object view too (2026-12-05 on)"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.count, args.worker)))
        return 0
    if not (args.photos / "manifest.csv").is_file():
        subprocess.run([sys.executable, str(HERE.parent / "bound.py"), "--repeat", "1"], check=True)
    trees = [(name, Path(root).resolve()) for name, root in (t.split("=", 1) for t in args.trees)]
    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    for r in range(args.rounds):
        order = trees[r % len(trees) :] + trees[: r % len(trees)]
        for name, root in order:
            runs[name].append(_run_tree(root, args.photos, args.count, args.worker))
    reference = trees[0][0]
    report: dict[str, dict[str, object]] = {}
    for name, _ in trees:
        per: dict[str, object] = {}
        for key in runs[name][0]:
            values = [run[key] for run in runs[name]]
            ratios = [a[key] / b[key] for a, b in zip(runs[name], runs[reference], strict=True)]
            per[key] = {
                "ms_median": round(statistics.median(values), 2),
                "ms_min": round(min(values), 2),
                "ms_max": round(max(values), 2),
                f"ratio_to_{reference}": round(statistics.median(ratios), 3),
            }
        report[name] = per
    json.dump({"rounds": args.rounds, "count": args.count, "trees": report}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

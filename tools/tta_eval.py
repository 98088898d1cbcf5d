"""Test-time augmentation on the raw Fashion-MNIST test set: a model's accuracy with its
own input alone, + the mirror image, + the mirror and four 1-pixel shifts (softmax
averaged), and what each costs in forward passes. One model directory per argument.

    .venv/bin/python tools/tta_eval.py models/fashion-cnn@1 /work/runs/r20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vitrine.pipeline.inference.model import load_model_dir
from vitrine.pipeline.inference.preprocess import raw_to_model_input
from vitrine.pipeline.training.datasets import DEBIAN_DIR, load_fashion_mnist

SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move the image by (dy, dx) pixels, filling with the edge's background (zeros)."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[:, yd, xd] = x[:, ys, xs]
    return out


def _accuracy(probabilities: np.ndarray, y: np.ndarray) -> float:
    return round(float((probabilities.argmax(axis=1) == y).mean()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--fashion", type=Path, default=Path(DEBIAN_DIR))
    args = parser.parse_args()
    data = load_fashion_mnist(args.fashion)
    results = {}
    for directory in args.models:
        model = load_model_dir(directory)
        x = raw_to_model_input(data.x_test, model.spec.preprocess)
        mirror = x[:, :, ::-1]
        start = time.process_time()
        plain, _ = model.forward(x)
        one_pass_cpu = time.process_time() - start
        flipped, _ = model.forward(mirror)
        shifted = [model.forward(_shift(x, dy, dx))[0] for dy, dx in SHIFTS]
        y = data.y_test
        results[str(directory)] = {
            "plain": _accuracy(plain, y),
            "mirror": _accuracy(plain + flipped, y),
            "mirror+4 shifts": _accuracy(plain + flipped + sum(shifted), y),
            "forward cpu s per 10,000 (one pass)": round(one_pass_cpu, 2),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

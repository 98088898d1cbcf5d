"""Ways to run the shipped model's forward pass over the same inputs, timed alternately.

    .venv/bin/python tools/forward_ab.py --inputs /tmp/bound.npz --repeat 5
    .venv/bin/python tools/forward_ab.py --inputs /tmp/bound.npz --bf16  # see below

Inputs are the model inputs `tools/bound.py --save` wrote (1,000 preprocessed photos), or
the Fashion-MNIST slice without `--inputs`. Variants: Keras' eager call per chunk of 64
(what `LoadedModel.forward` did), `predict_on_batch`, `LoadedModel.forward` (one traced
`tf.function`) with chunks of 64, 256 and 1,000, and the same function with XLA
(`jit_compile`). Each is warmed up once, then all run in turn, `--repeat` times; reported:
seconds per pass (median, min-max), images per second, and the largest difference from the
eager call's probabilities and embeddings and whether every label is the same.
`--bf16` turns on oneDNN's bfloat16 auto-mixed precision for the whole process first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vitrine.settings import SAMPLE_FASHION_DIR

ROOT = Path(__file__).resolve().parents[1]
Outputs = tuple[np.ndarray, np.ndarray]


def _chunked(call: Callable[[np.ndarray], Any], size: int) -> Callable[[np.ndarray], Outputs]:
    def run(x: np.ndarray) -> Outputs:
        outs = [call(x[start : start + size]) for start in range(0, len(x), size)]
        probs = np.concatenate([np.asarray(o["probabilities"], np.float32) for o in outs])
        return probs, np.concatenate([np.asarray(o["embedding"], np.float32) for o in outs])

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=Path, help=".npz from tools/bound.py --save")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="oneDNN bfloat16 mixed precision")
    args = parser.parse_args(argv)
    import tensorflow as tf

    if args.bf16:
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    from vitrine.pipeline.inference.model import load_model_dir
    from vitrine.pipeline.inference.preprocess import raw_to_model_input
    from vitrine.pipeline.training.datasets import load_fashion_mnist

    model = load_model_dir(ROOT / "models" / "fashion-cnn")
    if args.inputs:
        x = np.load(args.inputs)["inputs"]
    else:
        data = load_fashion_mnist(SAMPLE_FASHION_DIR)
        x = raw_to_model_input(data.x_test, model.spec.preprocess)
    keras_model = model.keras_model
    signature = [tf.TensorSpec((None, *x.shape[1:]), tf.float32)]
    xla = tf.function(
        lambda t: keras_model(t, training=False), input_signature=signature, jit_compile=True
    )
    variants: dict[str, Callable[[np.ndarray], Outputs]] = {
        "eager_64": _chunked(lambda c: keras_model(c, training=False), 64),
        "predict_on_batch_64": _chunked(keras_model.predict_on_batch, 64),
        "compiled_64": lambda c: model.forward(c, batch_size=64),
        "compiled_256": lambda c: model.forward(c, batch_size=256),
        "compiled_1000": lambda c: model.forward(c, batch_size=1000),
        "xla_64": _chunked(xla, 64),
    }
    reference = variants["eager_64"](x)
    report: dict[str, dict[str, Any]] = {}
    for name, run in variants.items():
        probs, embs = run(x)  # warm-up, and the outputs to compare
        report[name] = {
            "max_prob_diff": float(np.abs(probs - reference[0]).max()),
            "max_embedding_diff": float(np.abs(embs - reference[1]).max()),
            "same_labels": bool((probs.argmax(1) == reference[0].argmax(1)).all()),
            "seconds": [],
        }
    for _ in range(args.repeat):
        for name, run in variants.items():
            t0 = time.perf_counter()
            run(x)
            report[name]["seconds"].append(time.perf_counter() - t0)
    for entry in report.values():
        seconds = entry.pop("seconds")
        entry["s_median"] = round(statistics.median(seconds), 3)
        entry["s_min"], entry["s_max"] = round(min(seconds), 3), round(max(seconds), 3)
        entry["images_per_s"] = round(len(x) / statistics.median(seconds), 1)
    json.dump({"n": len(x), "bf16": args.bf16, "variants": report}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

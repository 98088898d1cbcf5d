"""`vitrine bench train`: training speed per network and arithmetic, measured in one run.

What decides which model a 2-core machine can train is images per CPU-second, not wall
time alone: a run shares the machine with the tests and the workers. Each network is
compiled as the recipe compiles it (`fitting.compile_trainer`) and fitted on the slice's
images for a fixed number of steps after a warm-up (graph tracing is not throughput), once
in fp32 and once with the bf16 grappler rewrite (`pipeline.training.precision`). The
process's option is put back to fp32 afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from vitrine.pipeline.training import fitting, precision
from vitrine.pipeline.training.datasets import load_fashion_mnist
from vitrine.pipeline.training.train import ARCHITECTURES, TrainConfig, build_fashion_network
from vitrine.settings import SAMPLE_FASHION_DIR

WARMUP_STEPS = 3


def run_training_bench(
    *,
    steps: int,
    batch: int,
    architectures: Sequence[str] = ARCHITECTURES,
    precisions: Sequence[str] = ("fp32", "bf16"),
) -> dict[str, Any]:
    import keras

    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    images = np.resize(data.x_train, ((steps + WARMUP_STEPS) * batch, 28, 28))
    x = (images.astype(np.float32) / 255.0)[..., None]
    y = np.resize(data.y_train, len(x))
    warm, timed = WARMUP_STEPS * batch, slice(WARMUP_STEPS * batch, None)
    results: dict[str, Any] = {
        "steps": steps,
        "batch": batch,
        "cpu_flags": sorted(precision.cpu_flags() & precision.BF16_FLAGS),
        "runs": {},
    }
    for arithmetic in precisions:
        with precision.applied(precision.choose(arithmetic)):
            for architecture in architectures:
                keras.utils.set_random_seed(0)
                config = TrainConfig(architecture=architecture)
                model = build_fashion_network(config, num_classes=10)
                trainer = fitting.compile_trainer(
                    keras,
                    model,
                    epochs=1,
                    steps_per_epoch=steps,
                    learning_rate=config.learning_rate,
                    warmup_epochs=0,
                    weight_decay=config.weight_decay,
                )
                trainer.fit(x[:warm], y[:warm], batch_size=batch, epochs=1, verbose=0)
                wall, cpu = time.perf_counter(), time.process_time()
                trainer.fit(x[timed], y[timed], batch_size=batch, epochs=1, verbose=0)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                n = steps * batch
                results["runs"][f"{architecture}/{arithmetic}"] = {
                    "parameters": int(model.count_params()),
                    "images_per_s": round(n / wall, 1),
                    "images_per_cpu_s": round(n / cpu, 1),
                }
    base = results["runs"].get("cnn/fp32")
    if base:
        for run in results["runs"].values():
            run["vs_cnn_fp32"] = round(run["images_per_cpu_s"] / base["images_per_cpu_s"], 2)
    return results

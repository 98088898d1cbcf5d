"""Fine-tuning a model on the review desk's corrections, with replay so it does not forget.

A few dozen corrected photos are far too few to train on alone: a model fitted only to
them bends every class boundary toward them and loses the rest of what it knew
(catastrophic forgetting). So each fine-tune mixes the corrections with a random sample
of the original training data ("replay"), at least `min_replay` items and
`replay_per_correction` per correction, and gives the corrections a larger sample weight
so that they still move the model. There is no warm-up: the model starts near a good
minimum, and the rate is half the recipe's peak, since at the `--init` fine-tune's tenth
a few epochs leave the corrections unlearnt (measured, `CorrectionsConfig`).

Nothing here reads the database or a file: the caller hands in model input arrays
(photos already through `preprocess_bytes` with the model's own spec, replay items
through `raw_to_model_input`), and gets back the history of a model trained in place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitrine.pipeline.training import fitting

Log = Callable[[str], None]

#: Fewer corrections than this are refused: a fine-tune on two photos is noise.
MIN_CORRECTIONS = 5


@dataclass(frozen=True)
class CorrectionsConfig:
    """Defaults measured on the shipped model, 13 decisions of which 6 relabel a photo to
    the next class (against what it shows), 3 epochs on 2 CPU cores (docs/training.md):
    lr 2e-4 with weight 5 or 20 fits none of the 6 (test sample -0.3 points); lr 1e-3,
    weight 10 fits 4 of 6 for -1.6 points; weight 20 over 6 epochs all 6 for -2.3."""

    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 5e-4
    #: Sample weight of a corrected photo; replay items weigh 1.
    correction_weight: float = 10.0
    replay_per_correction: int = 20
    min_replay: int = 1000
    seed: int = 1234


@dataclass(frozen=True)
class Mix:
    """The fine-tuning set: corrections first, then the replay sample, with weights."""

    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    corrections: int
    replay_indices: np.ndarray  # positions in the replay source, sorted

    @property
    def replay(self) -> int:
        return int(len(self.replay_indices))


def replay_size(corrections: int, available: int, config: CorrectionsConfig) -> int:
    """How many original training items go with `corrections` corrected photos."""
    wanted = max(config.min_replay, config.replay_per_correction * corrections)
    return min(available, wanted)


def mix(
    corrected_x: np.ndarray,
    corrected_y: np.ndarray,
    replay_x: np.ndarray,
    replay_y: np.ndarray,
    *,
    config: CorrectionsConfig,
    rng: np.random.Generator,
    to_input: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Mix:
    """Corrections plus a replay sample drawn without replacement from `replay_x`.

    `to_input` turns the drawn replay items into model input (stored uint8 items ->
    floats); only the sample is converted, never the whole training set.
    """
    if len(corrected_x) != len(corrected_y) or len(replay_x) != len(replay_y):
        raise ValueError("images and labels differ in length")
    n = replay_size(len(corrected_x), len(replay_x), config)
    picked = np.sort(rng.choice(len(replay_x), size=n, replace=False))
    replayed = replay_x[picked] if to_input is None else to_input(replay_x[picked])
    weights = np.concatenate(
        [np.full(len(corrected_x), config.correction_weight, np.float32), np.ones(n, np.float32)]
    )
    return Mix(
        x=np.concatenate([corrected_x, replayed]).astype(np.float32),
        y=np.concatenate([corrected_y, replay_y[picked]]).astype(np.int64),
        weights=weights,
        corrections=int(len(corrected_x)),
        replay_indices=picked,
    )


def fine_tune(model: Any, data: Mix, *, config: CorrectionsConfig, log: Log) -> dict[str, Any]:
    """Train `model` (the Keras model of a loaded directory) in place on `data`.

    Returns what goes into model.json's `training`: per-epoch history, wall time and
    whether BatchNorm statistics were re-estimated (always, for runs this short; on the
    replay items, which are the distribution the rest of the catalog looks like).
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    steps = int(np.ceil(len(data.x) / config.batch_size))
    trainer = fitting.compile_trainer(
        keras,
        model,
        epochs=config.epochs,
        steps_per_epoch=steps,
        warmup_epochs=0,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        fitted = trainer.fit(
            data.x,
            data.y,
            sample_weight=data.weights,
            batch_size=config.batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=True,
            verbose=0,
        )
        row = {key: float(values[-1]) for key, values in fitted.history.items()}
        row["seconds"] = round(time.perf_counter() - t0, 2)
        history.append(row)
        log(
            f"fine-tune epoch {epoch + 1}/{config.epochs}: weighted loss {row['loss']:.4f} "
            f"({row['seconds']:.1f}s)"
        )
    replay_part = data.x[data.corrections :] if data.replay else data.x
    recalibrated = fitting.settle_batchnorm(
        model, replay_part[: fitting.RECALIBRATION_IMAGES], total_steps=config.epochs * steps
    )
    return {
        "history": history,
        "train_seconds": round(time.perf_counter() - started, 1),
        "batchnorm_recalibrated": recalibrated,
        "train_images": int(len(data.x)),
    }


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float | None:
    """Top-1 accuracy, or None for no images (a share of nothing is not 0)."""
    return round(fitting.top1_accuracy(model, x, y), 4) if len(x) else None

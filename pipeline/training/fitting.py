"""The Keras side of the training recipes, written once for both of them.

The compiled trainer (the learning-rate schedule and loss), BatchNorm statistics after
short runs, accuracy of the model as it will be saved, and the environment recorded beside
it. `vitrine.pipeline.training.train` keeps what a recipe decides (data, seed, split, augmentation,
what
goes into model.json); this is how those decisions are carried out in Keras.

Why BatchNorm needs settling, measured on the folder test's shapes at batch size 128 (60
images: one step per epoch): after 20 epochs the saved model scored 0.40 on validation
although its training accuracy was 1.0.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np


def compile_trainer(
    keras: Any,
    model: Any,
    *,
    epochs: int,
    steps_per_epoch: int,
    learning_rate: float,
    warmup_epochs: int,
    weight_decay: float,
) -> Any:
    """A single-output view of the model for training: only the classifier has a loss.

    AdamW with a linear warm-up from a tenth of `learning_rate`, then cosine decay.
    """
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total // 2, warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate / 10 if warmup else learning_rate,
        decay_steps=total - warmup,
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    trainer = keras.Model(model.input, model.output["probabilities"])
    trainer.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return trainer


#: BatchNormalization keeps an exponential moving average (momentum 0.99, a memory of about
#: 100 steps) of batch statistics. Runs shorter than this many steps end with averages still
#: dominated by their initial values and by early weights, and predict near chance in
#: inference mode; they get their statistics re-estimated from the training data instead.
SHORT_RUN_STEPS = 2000
RECALIBRATION_IMAGES = 4096


def settle_batchnorm(model: Any, x: np.ndarray, *, total_steps: int) -> bool:
    """Re-estimate BatchNorm statistics after a run too short for them; True if it did."""
    if total_steps >= SHORT_RUN_STEPS:
        return False
    recalibrate_batchnorm(model, x)
    return True


def recalibrate_batchnorm(
    model: Any, x: np.ndarray, *, chunk: int = 256, limit: int = RECALIBRATION_IMAGES
) -> None:
    """Set every BatchNormalization layer's moving statistics to their mean over `x`.

    Each chunk runs in training mode with momentum i/(i+1), so the moving averages end as
    the plain average of the chunks' statistics under the final weights.
    """
    import keras

    bn_layers = [
        layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    saved = [layer.momentum for layer in bn_layers]
    try:
        for i, start in enumerate(range(0, min(len(x), limit), chunk)):
            for layer in bn_layers:
                layer.momentum = i / (i + 1)
            model(x[start : start + chunk], training=True)
    finally:
        for layer, momentum in zip(bn_layers, saved, strict=True):
            layer.momentum = momentum


def _all_layers(model: Any) -> list[Any]:
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(_all_layers(layer))
    return found


def top1_accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    correct = 0
    for start in range(0, len(x), batch_size):
        out = model(x[start : start + batch_size], training=False)
        pred = np.asarray(out["probabilities"]).argmax(axis=1)
        correct += int((pred == y[start : start + batch_size]).sum())
    return correct / max(1, len(x))


def environment() -> dict[str, str]:
    import keras

    return {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def save_checkpoint(model: Any, directory: Path, *, epoch: int, history: list[Any]) -> None:
    """The model after `epoch`, so a long run on a CPU that is stopped keeps its progress
    (`model.keras` + `progress.json`, replaced whole each epoch)."""
    import json

    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras.tmp.keras")
    (directory / "model.keras.tmp.keras").replace(directory / "model.keras")
    (directory / "progress.json").write_text(json.dumps({"epoch": epoch, "history": history}))


def drop_checkpoint(directory: Path) -> None:
    """Remove the checkpoint once the finished model is saved beside it."""
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


def load_weights_of(directory: str | None) -> Any:
    """The trainable Keras model of a model directory, to fine-tune from (None: none)."""
    from vitrine.pipeline.inference.model import load_model_dir

    return load_model_dir(Path(directory)).keras_model if directory else None


def score(
    model: Any, test: tuple[np.ndarray, np.ndarray] | None, validation: tuple[Any, Any] | None
) -> dict[str, Any]:
    """model.json's metrics: accuracy on the test split (and its size) and on validation."""
    metrics: dict[str, Any] = {}
    if test is not None:
        metrics["test_accuracy"] = round(top1_accuracy(model, *test), 4)
    val_accuracy = top1_accuracy(model, *validation) if validation else None
    metrics["val_accuracy"] = None if val_accuracy is None else round(val_accuracy, 4)
    if test is not None:
        metrics["test_images"] = int(len(test[0]))
    return metrics


def describe(metrics: dict[str, Any]) -> str:
    """ "test accuracy 0.9527, validation accuracy 0.9540" (what there is of it)."""
    scores = [
        f"{what} accuracy {metrics[key]:.4f}"
        for what, key in (("test", "test_accuracy"), ("validation", "val_accuracy"))
        if metrics.get(key) is not None
    ]
    return ", ".join(scores) or "no held-out images"

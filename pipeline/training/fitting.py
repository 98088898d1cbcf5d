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

import json
import platform
import shutil
from dataclasses import dataclass
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
    ema_momentum: float | None = None,
) -> Any:
    """A single-output view of the model for training: only the classifier has a loss.

    AdamW with a linear warm-up from a tenth of `learning_rate`, then cosine decay. With
    `ema_momentum`, the optimizer also keeps an exponential moving average of the weights
    (updated inside each compiled step, stored with its variables, so a checkpoint holds
    it); `use_average` puts it into the model once training is over.
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
    optimizer = (
        keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
        if ema_momentum is None
        else _averaging_adamw(keras)(
            learning_rate=schedule,
            weight_decay=weight_decay,
            use_ema=True,
            ema_momentum=ema_momentum,
        )
    )
    trainer.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return trainer


def _averaging_adamw(keras: Any) -> Any:
    """AdamW whose weight average waits until `use_average` asks for it.

    Keras's own `use_ema` copies the average over the weights when `fit` returns
    (`finalize_variable_values`). The recipe calls `fit` once per epoch, so each epoch
    would restart from the average instead of from where training was: this subclass
    leaves the weights alone at the end of `fit`.
    """

    class AveragingAdamW(keras.optimizers.AdamW):  # type: ignore[misc, name-defined]
        def finalize_variable_values(self, var_list: Any) -> None:
            """Nothing at the end of each `fit`: the average is taken once, at the end."""

        def average_into(self, var_list: Any) -> None:
            super().finalize_variable_values(var_list)

    return AveragingAdamW


def use_average(trainer: Any) -> bool:
    """Put the optimizer's weight average into the model, if it keeps one; True if so.

    BatchNorm's moving statistics were gathered under the live weights, not the average:
    a model that takes the average needs them measured again (`recalibrate_batchnorm`).
    """
    average_into = getattr(trainer.optimizer, "average_into", None)
    if average_into is None:
        return False
    average_into(trainer.trainable_variables)
    return True


#: BatchNormalization keeps an exponential moving average (momentum 0.99, a memory of about
#: 100 steps) of batch statistics. Runs shorter than this many steps end with averages still
#: dominated by their initial values and by early weights, and predict near chance in
#: inference mode; they get their statistics re-estimated from the training data instead.
SHORT_RUN_STEPS = 2000
RECALIBRATION_IMAGES = 4096


def settle_batchnorm(
    model: Any, x: np.ndarray, *, total_steps: int, averaged: bool = False
) -> bool:
    """Re-estimate BatchNorm statistics after a run too short for them, or for weights
    that are an average (their statistics were never gathered); True if it did."""
    if total_steps >= SHORT_RUN_STEPS and not averaged:
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


#: Inside a run's directory while it trains: the state of its last finished epoch.
CHECKPOINT_DIR = "checkpoint"
_POINTER = "progress.json"


@dataclass(frozen=True)
class Checkpoint:
    """What a run needs to go on exactly where it stopped: the weights (with BatchNorm's
    moving statistics and the dropout layers' seed states), the optimizer's variables
    (step count, so the schedule's position, and its moments), the numpy generator that
    draws augmentation and shuffling, and the history and time so far."""

    epoch: int
    history: list[dict[str, float]]
    rng_state: dict[str, Any]
    elapsed_s: float
    state_dir: Path


def save_checkpoint(
    model: Any,
    trainer: Any,
    directory: Path,
    *,
    epoch: int,
    history: list[dict[str, float]],
    rng: np.random.Generator,
    elapsed_s: float,
) -> None:
    """Write the state after `epoch` into its own folder, then point `progress.json` at it
    (one atomic rename), then drop older folders: a run killed at any moment leaves one
    complete checkpoint to resume from."""
    directory.mkdir(parents=True, exist_ok=True)
    state = directory / f"epoch-{epoch:04d}"
    shutil.rmtree(state, ignore_errors=True)  # a half-written one from a killed run
    state.mkdir()
    # model.variables, not model.weights: the dropout layers' seed states are variables
    # that save_weights leaves out, and a resumed run would draw other dropout masks
    np.savez(state / "model.npz", *[np.asarray(v) for v in model.variables])
    np.savez(state / "optimizer.npz", *[np.asarray(v) for v in trainer.optimizer.variables])
    progress = {
        "epoch": epoch,
        "state": state.name,
        "history": history,
        "rng": rng.bit_generator.state,
        "elapsed_s": round(elapsed_s, 3),
    }
    tmp = directory / (_POINTER + ".tmp")
    tmp.write_text(json.dumps(progress))
    tmp.replace(directory / _POINTER)
    for older in directory.glob("epoch-*"):
        if older.name != state.name:
            shutil.rmtree(older, ignore_errors=True)


def read_checkpoint(directory: Path) -> Checkpoint | None:
    """The last complete checkpoint in `directory`, or None when there is none."""
    try:
        progress = json.loads((directory / _POINTER).read_text())
    except (OSError, ValueError):
        return None
    return Checkpoint(
        epoch=int(progress["epoch"]),
        history=list(progress["history"]),
        rng_state=dict(progress["rng"]),
        elapsed_s=float(progress["elapsed_s"]),
        state_dir=directory / str(progress["state"]),
    )


def restore_checkpoint(
    checkpoint: Checkpoint, model: Any, trainer: Any, rng: np.random.Generator
) -> None:
    """Put a freshly built and compiled run back into the state `checkpoint` holds."""
    trainer.optimizer.build(trainer.trainable_variables)
    _assign(model.variables, checkpoint.state_dir / "model.npz")
    _assign(trainer.optimizer.variables, checkpoint.state_dir / "optimizer.npz")
    rng.bit_generator.state = checkpoint.rng_state


def _assign(variables: list[Any], saved_file: Path) -> None:
    with np.load(saved_file) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(variables) or any(
        tuple(v.shape) != value.shape for v, value in zip(variables, values, strict=False)
    ):
        raise ValueError(
            f"{saved_file.name} does not fit this run ({len(values)} saved variables, "
            f"{len(variables)} here): it was made by another network or optimizer"
        )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def drop_checkpoint(directory: Path) -> None:
    """Remove the checkpoint once the finished model is saved beside it."""
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

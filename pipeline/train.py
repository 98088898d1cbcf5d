"""Training recipes: Fashion-MNIST from scratch, or a merchant's labelled folder.

Everything that decides the result (seed, epochs, augmentation, schedule, data
fingerprint, wall time) is written into `model.json`, so a shipped model can be
reproduced and two models can be compared on what went into them.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.model import build_backbone_model, build_cnn, save_model_dir
from pipeline.types import FASHION_MNIST_LABELS, ModelSpec, PreprocessSpec

Log = Callable[[str], None]


@dataclass(frozen=True)
class Augmentation:
    """Label-preserving changes for product images: mirror, small shifts, random erasing,
    and (photo look) softening and tone changes.

    Photos reach the model through resampling and contrast stretching, which leave them a
    little softer and with other mid-tones than the scans of the dataset; blur and gamma
    teach the network that neither changes the class.
    """

    flip: bool = True
    max_shift: int = 3
    erase_probability: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.2)
    blur_probability: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 0.9)
    gamma_probability: float = 0.0
    gamma_range: tuple[float, float] = (0.75, 1.35)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 80
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 2
    seed: int = 1234
    widths: tuple[int, ...] = (64, 128, 256)
    embedding_dim: int = 128
    validation_fraction: float = 0.05
    train_limit: int | None = None
    augmentation: Augmentation = field(default_factory=Augmentation)


def augment(x: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Vectorised augmentation of a (n, h, w) uint8 batch; no Python loop over images."""
    n, h, w = x.shape
    out = x.copy()
    if aug.flip:
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, ::-1]
    if aug.max_shift > 0:
        s = aug.max_shift
        padded = np.pad(out, ((0, 0), (s, s), (s, s)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(1, 2))
        dy = rng.integers(0, 2 * s + 1, n)
        dx = rng.integers(0, 2 * s + 1, n)
        out = windows[np.arange(n), dy, dx]
    if aug.erase_probability > 0:
        area = rng.uniform(*aug.erase_area, n) * h * w
        aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3), n))
        eh = np.clip(np.sqrt(area * aspect), 1, h).astype(int)
        ew = np.clip(np.sqrt(area / aspect), 1, w).astype(int)
        y0 = (rng.random(n) * (h - eh + 1)).astype(int)
        x0 = (rng.random(n) * (w - ew + 1)).astype(int)
        rows, cols = np.arange(h), np.arange(w)
        in_rows: np.ndarray = (rows[None, :] >= y0[:, None]) & (rows[None, :] < (y0 + eh)[:, None])
        in_cols: np.ndarray = (cols[None, :] >= x0[:, None]) & (cols[None, :] < (x0 + ew)[:, None])
        mask = in_rows[:, :, None] & in_cols[:, None, :]
        chosen = np.less(rng.random(n), aug.erase_probability)
        mask &= chosen[:, None, None]
        noise = rng.integers(0, 256, out.shape, dtype=np.uint8)
        out = np.where(mask, noise, out)
    # Draw nothing from `rng` for disabled steps: older recipes stay reproducible.
    if aug.blur_probability > 0:
        chosen = np.flatnonzero(np.less(rng.random(n), aug.blur_probability))
        sigmas = rng.uniform(*aug.blur_sigma, len(chosen))
        out[chosen] = gaussian_blur(out[chosen], sigmas)
    if aug.gamma_probability > 0:
        chosen = np.flatnonzero(np.less(rng.random(n), aug.gamma_probability))
        gammas = rng.uniform(*aug.gamma_range, len(chosen))[:, None, None]
        toned = 255.0 * (out[chosen] / 255.0) ** gammas
        out[chosen] = np.clip(np.rint(toned), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def gaussian_blur(x: np.ndarray, sigmas: np.ndarray, radius: int = 2) -> np.ndarray:
    """Separable Gaussian blur of (n, h, w) uint8 images, each with its own sigma."""
    if len(x) == 0:
        return x
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernels = np.exp(-0.5 * (taps[None, :] / sigmas[:, None].astype(np.float32)) ** 2)
    kernels /= kernels.sum(axis=1, keepdims=True)
    n, h, w = x.shape
    img = x.astype(np.float32)
    padded = np.pad(img, ((0, 0), (0, 0), (radius, radius)))
    img = np.zeros_like(img)
    for k in range(2 * radius + 1):
        img += kernels[:, k, None, None] * padded[:, :, k : k + w]
    padded = np.pad(img, ((0, 0), (radius, radius), (0, 0)))
    img = np.zeros_like(img)
    for k in range(2 * radius + 1):
        img += kernels[:, k, None, None] * padded[:, k : k + h, :]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _split(
    x: np.ndarray, y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    order = rng.permutation(len(x))
    n_val = int(round(len(x) * fraction))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def _compile(keras: Any, model: Any, cfg: TrainConfig, steps_per_epoch: int) -> Any:
    """A single-output view of the model for training: only the classifier has a loss."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total // 2, cfg.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.learning_rate / 10 if warmup else cfg.learning_rate,
        decay_steps=total - warmup,
        warmup_target=cfg.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    trainer = keras.Model(model.input, model.output["probabilities"])
    trainer.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay),
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


def _environment() -> dict[str, str]:
    import keras

    return {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def top1_accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    correct = 0
    for start in range(0, len(x), batch_size):
        out = model(x[start : start + batch_size], training=False)
        pred = np.asarray(out["probabilities"]).argmax(axis=1)
        correct += int((pred == y[start : start + batch_size]).sum())
    return correct / max(1, len(x))


def train_fashion_mnist(
    *,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    fingerprint: str,
    out_dir: Path,
    config: TrainConfig,
    name: str = "fashion-cnn",
    version: str = "1",
    log: Log = print,
    verbose: int = 2,
) -> ModelSpec:
    """Train the default CNN, evaluate it on the test split and write a model directory."""
    import keras

    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.train_limit:
        keep = rng.permutation(len(x_train))[: config.train_limit]
        x_train, y_train = x_train[keep], y_train[keep]
    xt, yt, xv, yv = _split(x_train, y_train, config.validation_fraction, rng)
    spec_pre = PreprocessSpec()
    model = build_cnn(
        num_classes=len(FASHION_MNIST_LABELS),
        widths=config.widths,
        embedding_dim=config.embedding_dim,
    )
    steps = int(np.ceil(len(xt) / config.batch_size))
    trainer = _compile(keras, model, config, steps)

    def scale(a: np.ndarray) -> np.ndarray:
        return (a.astype(np.float32) * spec_pre.scale + spec_pre.offset)[..., None]

    xv_f = scale(xv) if len(xv) else None
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        x_aug = scale(augment(xt, rng, config.augmentation))
        h = trainer.fit(
            x_aug,
            yt,
            batch_size=config.batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            validation_data=(xv_f, yv) if xv_f is not None else None,
            shuffle=True,
            verbose=verbose,
        )
        row = {k: float(v[-1]) for k, v in h.history.items()}
        row["seconds"] = round(time.perf_counter() - t0, 2)
        history.append(row)
        log(
            f"epoch {epoch + 1}/{config.epochs} loss={row.get('loss', 0):.4f} "
            f"acc={row.get('accuracy', 0):.4f} val_acc={row.get('val_accuracy', float('nan')):.4f} "
            f"({row['seconds']:.1f}s)"
        )
    recalibrated = settle_batchnorm(
        model, scale(xt[:RECALIBRATION_IMAGES]), total_steps=config.epochs * steps
    )
    train_seconds = time.perf_counter() - started
    test_accuracy = top1_accuracy(model, scale(x_test), y_test)
    log(f"test accuracy {test_accuracy:.4f} after {train_seconds:.0f}s")
    spec = ModelSpec(
        name=name,
        version=version,
        labels=FASHION_MNIST_LABELS,
        embedding_dim=config.embedding_dim,
        preprocess=spec_pre,
        data_fingerprint=fingerprint,
        metrics={
            "test_accuracy": round(test_accuracy, 4),
            "val_accuracy": history[-1].get("val_accuracy") if history else None,
            "test_images": int(len(x_test)),
        },
        training={
            "recipe": "fashion-mnist",
            "config": _config_dict(config),
            "train_images": int(len(xt)),
            "validation_images": int(len(xv)),
            "train_seconds": round(train_seconds, 1),
            "batchnorm_recalibrated": recalibrated,
            "history": history,
            "environment": _environment(),
            "parameters": int(model.count_params()),
        },
    )
    save_model_dir(model, spec, out_dir)
    return spec


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["widths"] = list(config.widths)
    return d


def train_folder(
    *,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    preprocess: PreprocessSpec,
    fingerprint: str,
    out_dir: Path,
    config: TrainConfig,
    backbone: str | None,
    weights_path: str | None,
    name: str,
    version: str,
    log: Log = print,
    verbose: int = 2,
) -> ModelSpec:
    """Train on a merchant's own taxonomy (already preprocessed arrays).

    With a backbone and weights file, the backbone is fine-tuned; otherwise the default
    CNN is trained from scratch at the spec's input size.
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    xt, yt, xv, yv = _split(images, labels, config.validation_fraction, rng)
    if backbone:
        model = build_backbone_model(
            backbone=backbone,
            num_classes=len(class_names),
            input_size=preprocess.size,
            weights_path=weights_path,
            embedding_dim=config.embedding_dim,
        )
    else:
        model = build_cnn(
            num_classes=len(class_names),
            input_size=preprocess.size,
            channels=preprocess.channels,
            widths=config.widths,
            embedding_dim=config.embedding_dim,
        )
    steps = int(np.ceil(len(xt) / config.batch_size))
    trainer = _compile(keras, model, config, steps)
    started = time.perf_counter()
    h = trainer.fit(
        xt,
        yt,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(xv, yv) if len(xv) else None,
        shuffle=True,
        verbose=verbose,
    )
    recalibrated = settle_batchnorm(model, xt, total_steps=config.epochs * steps)
    train_seconds = time.perf_counter() - started
    val_acc = top1_accuracy(model, xv, yv) if len(xv) else None
    log(f"validation accuracy {val_acc} after {train_seconds:.0f}s")
    spec = ModelSpec(
        name=name,
        version=version,
        labels=tuple(class_names),
        embedding_dim=config.embedding_dim,
        preprocess=preprocess,
        data_fingerprint=fingerprint,
        metrics={"val_accuracy": None if val_acc is None else round(val_acc, 4)},
        training={
            "recipe": "folder",
            "backbone": backbone,
            "weights_file": Path(weights_path).name if weights_path else None,
            "config": _config_dict(config),
            "train_images": int(len(xt)),
            "validation_images": int(len(xv)),
            "train_seconds": round(train_seconds, 1),
            "batchnorm_recalibrated": recalibrated,
            "history": {k: [float(v) for v in vs] for k, vs in h.history.items()},
            "environment": _environment(),
            "parameters": int(model.count_params()),
        },
    )
    save_model_dir(model, spec, out_dir)
    return spec


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipeline.train`: the Fashion-MNIST recipe without the service stack.

    Same function `vitrine train` calls; useful on a training machine that has Keras
    and a backend but not vitrine's worker dependencies.
    """
    import argparse

    from pipeline.datasets import load_fashion_mnist

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--version", default="1")
    parser.add_argument("--widths", default=",".join(map(str, TrainConfig.widths)))
    parser.add_argument("--blur", type=float, default=Augmentation.blur_probability)
    parser.add_argument("--gamma", type=float, default=Augmentation.gamma_probability)
    parser.add_argument("--name", default="fashion-cnn")
    args = parser.parse_args(argv)
    data = load_fashion_mnist(args.data)
    train_fashion_mnist(
        x_train=data.x_train,
        y_train=data.y_train,
        x_test=data.x_test,
        y_test=data.y_test,
        fingerprint=data.fingerprint,
        out_dir=args.out,
        config=TrainConfig(
            epochs=args.epochs,
            seed=args.seed,
            widths=tuple(int(w) for w in args.widths.split(",")),
            augmentation=Augmentation(blur_probability=args.blur, gamma_probability=args.gamma),
        ),
        name=args.name,
        version=args.version,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

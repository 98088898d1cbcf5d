"""Training recipes: Fashion-MNIST from scratch, or a merchant's labelled folder.

Everything that decides the result (seed, epochs, augmentation, schedule, data
fingerprint, wall time) is written into `model.json`, so a shipped model can be
reproduced and two models can be compared on what went into them.

Both recipes run one skeleton, `_train`: seed, limit and split, compile, one `fit` per
epoch (augmenting first when the recipe does), settle BatchNorm, score and save. A recipe
says where its arrays come from, how they become input and which network to build.

A run keeps a checkpoint of its last finished epoch (`fitting.save_checkpoint`) and, asked
to resume, goes on from it exactly: the same weights, optimizer state and random draws as
if it had never stopped. That is why the skeleton shuffles with its own seeded generator
rather than Keras's: TensorFlow's global random state cannot be saved and restored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitrine.pipeline.inference.model import (
    build_backbone_model,
    build_cnn,
    build_resnet,
    save_model_dir,
)
from vitrine.pipeline.training import fitting, lite0, own_detector, precision
from vitrine.pipeline.training.augment import Augmentation, augment
from vitrine.pipeline.training.datasets import FashionMNIST
from vitrine.pipeline.training.photo_views import PhotoViews, photo_views
from vitrine.pipeline.types import FASHION_MNIST_LABELS, ModelSpec, PreprocessSpec

Log = Callable[[str], None]


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
    #: Fine-tune: start from this model directory's weights instead of random ones.
    initial_model: str | None = None
    #: The Fashion-MNIST network: "cnn" (VGG-style, `build_cnn`) or "resnet20"/"resnet32".
    architecture: str = "cnn"
    #: "bf16" or "fp32" (`vitrine.pipeline.training.precision`); the saved model is float32.
    precision: str = "fp32"
    #: Training items also shown as the worker sees photos of them (`photo_views`).
    photo_views: PhotoViews = field(default_factory=PhotoViews)
    #: Save the exponential moving average of the weights (this momentum per step), not
    #: the last step's weights (`fitting.use_average`).
    ema_momentum: float | None = None


def _split(
    x: np.ndarray, y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    order = rng.permutation(len(x))
    n_val = int(round(len(x) * fraction))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["widths"] = list(config.widths)
    return d


def _as_is(x: np.ndarray) -> np.ndarray:
    return x


def _train(
    x: np.ndarray,
    y: np.ndarray,
    *,
    recipe: dict[str, Any],
    labels: tuple[str, ...],
    preprocess: PreprocessSpec,
    build: Callable[[], Any],
    config: TrainConfig,
    fingerprint: str,
    out_dir: Path,
    name: str,
    version: str,
    log: Log,
    verbose: int,
    to_input: Callable[[np.ndarray], np.ndarray] = _as_is,
    augmentation: Augmentation | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    resume: bool = False,
    processes: int = 1,
    serve: Callable[[Any], Any] = _as_is,
) -> ModelSpec:
    """The one training loop: `x`/`y` as stored -> a model directory described by its spec.

    `recipe` opens `training` in model.json; `build` makes the untrained network after
    seeding; `to_input` turns stored arrays into model input; with `augmentation`, each
    epoch trains on `to_input(augment(x_train))` drawn fresh from the seeded rng; `test`
    is a held-out split scored after training. The order of rng draws is part of the
    recipe (train_limit subset, split, then per epoch one `augment` and one permutation):
    changing it changes what a seed trains (the permutation replaced Keras's shuffle when
    runs became resumable). Validation accuracy is that of the model as saved. With
    `resume`, the run goes on from `out_dir`'s checkpoint (from the start where none was
    written yet). `processes` render the photo views, when the config asks for them.
    `serve` turns the trained network into the one saved (a lite0 model's heads, trained
    on features, go onto the backbone: `vitrine.pipeline.training.lite0`).
    """
    import keras

    # The training steps only: the BatchNorm settling and the scores below run as the
    # saved model is served, in float32 (precision.applied).
    with precision.applied(precision.choose(config.precision)):
        keras.utils.set_random_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        if config.train_limit:
            keep = rng.permutation(len(x))[: config.train_limit]
            x, y = x[keep], y[keep]
        xt, yt, xv, yv = _split(x, y, config.validation_fraction, rng)
        checkpoints = out_dir / fitting.CHECKPOINT_DIR
        if config.photo_views.items:
            xt, yt = _with_photo_views(xt, yt, config, preprocess, checkpoints, log, processes)
        model = build()
        steps = int(np.ceil(len(xt) / config.batch_size))
        trainer = fitting.compile_trainer(
            keras,
            model,
            epochs=config.epochs,
            steps_per_epoch=steps,
            learning_rate=config.learning_rate,
            warmup_epochs=config.warmup_epochs,
            weight_decay=config.weight_decay,
            ema_momentum=config.ema_momentum,
        )

        history: list[dict[str, float]] = []
        first, before = 0, 0.0  # the epoch to start at; seconds trained before this process
        checkpoint = fitting.read_checkpoint(checkpoints) if resume else None
        if checkpoint is not None:
            fitting.restore_checkpoint(checkpoint, model, trainer, rng)
            history, first, before = checkpoint.history, checkpoint.epoch, checkpoint.elapsed_s
            log(f"resuming after epoch {first}/{config.epochs} ({_duration(before)} trained)")
        elif resume:  # stopped before its first epoch ended: nothing to keep
            log(f"no epoch had finished: starting again at epoch 1/{config.epochs}")

        validation = (to_input(xv), yv) if len(xv) else None
        unchanged = to_input(xt) if augmentation is None else None  # same input every epoch
        started = time.perf_counter()
        for epoch in range(first, config.epochs):
            t0 = time.perf_counter()
            x_epoch = (
                unchanged if augmentation is None else to_input(augment(xt, rng, augmentation))
            )
            assert x_epoch is not None
            order = rng.permutation(len(xt))
            h = trainer.fit(
                x_epoch[order],
                yt[order],
                batch_size=config.batch_size,
                epochs=epoch + 1,
                initial_epoch=epoch,
                validation_data=validation,
                shuffle=False,  # shuffled above, from the generator a checkpoint keeps
                verbose=verbose,
            )
            row = {k: float(v[-1]) for k, v in h.history.items()}
            row["seconds"] = round(time.perf_counter() - t0, 2)
            history.append(row)
            spent = time.perf_counter() - started
            left = spent / (epoch + 1 - first) * (config.epochs - epoch - 1)
            val_acc = row.get("val_accuracy", float("nan"))
            log(
                f"epoch {epoch + 1}/{config.epochs} loss={row.get('loss', 0):.4f} "
                f"acc={row.get('accuracy', 0):.4f} val_acc={val_acc:.4f} "
                f"({row['seconds']:.1f}s; {_duration(before + spent)} in, ETA {_duration(left)})"
            )
            fitting.save_checkpoint(
                model,
                trainer,
                checkpoints,
                epoch=epoch + 1,
                history=history,
                rng=rng,
                elapsed_s=before + spent,
            )
    recalibrated = fitting.settle_batchnorm(
        model,
        to_input(xt[: fitting.RECALIBRATION_IMAGES]),
        total_steps=config.epochs * steps,
        averaged=fitting.use_average(trainer),
    )
    train_seconds = before + time.perf_counter() - started

    held_out = None if test is None else (to_input(test[0]), test[1])
    metrics = fitting.score(model, held_out, validation)
    log(f"{fitting.describe(metrics)} after {train_seconds:.0f}s")

    served = serve(model)
    spec = ModelSpec(
        name=name,
        version=version,
        labels=labels,
        embedding_dim=config.embedding_dim,
        preprocess=preprocess,
        data_fingerprint=fingerprint,
        metrics=metrics,
        training={
            **recipe,
            "config": _config_dict(config),
            "train_images": int(len(xt)),
            "validation_images": int(len(xv)),
            "train_seconds": round(train_seconds, 1),
            "batchnorm_recalibrated": recalibrated,
            "history": history,
            "environment": fitting.environment(),
            "parameters": int(served.count_params()),
        },
    )
    save_model_dir(served, spec, out_dir)
    fitting.drop_checkpoint(checkpoints)
    return spec


#: Beside a run's checkpoint: its photo views, made once (minutes of CPU) and reused on resume.
_VIEWS_FILE = "photo-views.npz"


def _with_photo_views(
    xt: np.ndarray,
    yt: np.ndarray,
    config: TrainConfig,
    preprocess: PreprocessSpec,
    checkpoints: Path,
    log: Log,
    processes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The training split plus `config.photo_views` of its items as photo views, appended
    (validation items never become views). Made in `processes` processes, kept beside
    the checkpoint for a resumed run (the views are a function of the seed alone)."""
    cache = checkpoints / _VIEWS_FILE
    views_of = config.photo_views
    key = np.array([config.seed, views_of.items, round(views_of.studio_fraction * 1000), len(xt)])
    if cache.is_file():
        with np.load(cache) as stored:
            if np.array_equal(stored["key"], key):
                picks, views = stored["picks"], stored["views"]
                log(f"{len(views)} photo views from {cache}")
                return np.concatenate([xt, views]), np.concatenate([yt, yt[picks]])
    log(f"rendering {config.photo_views.items} training items as photos ({processes} processes)")
    started = time.perf_counter()
    tenths = [0]  # the last tenth of the way logged

    def progress(done: int, total: int) -> None:
        if done * 10 // total > tenths[0]:
            tenths[0] = done * 10 // total
            log(f"photo views {done}/{total} ({_duration(time.perf_counter() - started)})")

    picks, views = photo_views(
        xt,
        config.photo_views,
        seed=config.seed,
        spec=preprocess,
        processes=processes,
        progress=progress,
    )
    checkpoints.mkdir(parents=True, exist_ok=True)
    partial = checkpoints / (_VIEWS_FILE + ".tmp.npz")
    np.savez(partial, key=key, picks=picks, views=views)
    partial.replace(cache)
    return np.concatenate([xt, views]), np.concatenate([yt, yt[picks]])


def _duration(seconds: float) -> str:
    """ "42 s", "12 min", "1 h 35 min": an ETA to read at a glance."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def train_fashion_mnist(
    data: FashionMNIST,
    *,
    out_dir: Path,
    config: TrainConfig,
    name: str = "fashion-cnn",
    version: str = "1",
    log: Log = print,
    verbose: int = 2,
    resume: bool = False,
    processes: int = 1,
) -> ModelSpec:
    """Train the default CNN, evaluate it on the test split and write a model directory.

    The stored uint8 items are augmented every epoch, then scaled to the default spec
    (x/255 with a channel axis: what `raw_to_model_input` gives serving).
    """
    preprocess = PreprocessSpec()

    def scale(a: np.ndarray) -> np.ndarray:
        return (a.astype(np.float32) * preprocess.scale + preprocess.offset)[..., None]

    return _train(
        data.x_train,
        data.y_train,
        recipe={"recipe": "fashion-mnist"},
        labels=FASHION_MNIST_LABELS,
        preprocess=preprocess,
        build=lambda: (
            fitting.load_weights_of(config.initial_model)
            or build_fashion_network(config, num_classes=len(FASHION_MNIST_LABELS))
        ),
        config=config,
        fingerprint=data.fingerprint,
        out_dir=out_dir,
        name=name,
        version=version,
        log=log,
        verbose=verbose,
        to_input=scale,
        augmentation=config.augmentation,
        test=(data.x_test, data.y_test),
        resume=resume,
        processes=processes,
    )


#: `TrainConfig.architecture` -> the CIFAR ResNet depth it names.
RESNET_DEPTHS = {"resnet20": 20, "resnet32": 32}
ARCHITECTURES = ("cnn", *RESNET_DEPTHS)


def build_fashion_network(config: TrainConfig, *, num_classes: int) -> Any:
    """The untrained network `config.architecture` names, for 28x28 grey input."""
    if config.architecture in RESNET_DEPTHS:
        return build_resnet(
            num_classes=num_classes,
            depth=RESNET_DEPTHS[config.architecture],
            embedding_dim=config.embedding_dim,
        )
    if config.architecture != "cnn":
        raise ValueError(f"architecture is one of {', '.join(ARCHITECTURES)}")
    return build_cnn(
        num_classes=num_classes, widths=config.widths, embedding_dim=config.embedding_dim
    )


def folder_preprocess_spec(*, backbone: str | None, input_size: int | None) -> PreprocessSpec:
    """How a labelled folder's photos become input for `train_folder` (and later, serving).

    The default CNN gets the Fashion-MNIST convention at `input_size` (default 28). A
    keras.applications backbone was pretrained on ImageNet photos, so it gets them as they
    are: RGB 0..255 on white, neither negated nor stretched (the backbone rescales its own
    input), at `input_size` (default 96).
    """
    if backbone:
        return PreprocessSpec(
            size=input_size or 96, channels=3, invert=False, autocontrast=False, scale=1.0
        )
    return PreprocessSpec(size=input_size or 28)


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
    resume: bool = False,
) -> ModelSpec:
    """Train on a merchant's own taxonomy (already preprocessed arrays).

    With a backbone and weights file, the backbone is fine-tuned; with `lite0`, heads are
    trained on EfficientNet-Lite0's features and saved on the backbone, with the model's
    own unknown detector (`vitrine.pipeline.training.lite0`);
    otherwise the default CNN is trained from scratch at the spec's input size. The arrays
    are model input already, so they are not augmented (`augment` works on stored uint8
    items).
    """

    def build() -> Any:
        if backbone:
            return build_backbone_model(
                backbone=backbone,
                num_classes=len(class_names),
                input_size=preprocess.size,
                weights_path=weights_path,
                embedding_dim=config.embedding_dim,
            )
        return build_cnn(
            num_classes=len(class_names),
            input_size=preprocess.size,
            channels=preprocess.channels,
            widths=config.widths,
            embedding_dim=config.embedding_dim,
        )

    x = images
    serve: Callable[[Any], Any] = _as_is
    recipe: dict[str, Any] = {
        "recipe": "folder",
        "backbone": backbone,
        "weights_file": Path(weights_path).name if weights_path else None,
    }
    heads_on_lite0 = None
    if lite0.is_lite0(backbone):
        heads_on_lite0 = lite0.lite0_recipe(
            images,
            num_classes=len(class_names),
            size=int(preprocess.size),
            embedding_dim=config.embedding_dim,
            log=log,
        )
        x, build, serve = heads_on_lite0.features, heads_on_lite0.build, heads_on_lite0.serve
        recipe = heads_on_lite0.recipe
    spec = _train(
        x,
        labels,
        recipe=recipe,
        labels=tuple(class_names),
        preprocess=preprocess,
        build=build,
        config=config,
        fingerprint=fingerprint,
        out_dir=out_dir,
        name=name,
        version=version,
        log=log,
        verbose=verbose,
        resume=resume,
        serve=serve,
    )
    if heads_on_lite0 is None:
        return spec
    return own_detector.fit_and_save(
        spec, out_dir, heads_on_lite0.features, seed=config.seed, from_model=True, log=log
    )

"""vitrine.pipeline.training.train: short training runs that must actually learn, and what the
skeleton feeds.

The two training runs are sized for two CPU cores (~15 s each); their bounds are set well
below what they reach and far above chance, with the measured numbers next to them. The
recorded runs replace the Keras trainer with one that keeps what `fit` was given, to pin
the recipes' inputs (and the Fashion recipe's random stream) exactly.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

import vitrine.pipeline.training.fitting
from vitrine.pipeline.inference.model import load_model_dir
from vitrine.pipeline.inference.preprocess import preprocess_bytes, raw_to_model_input
from vitrine.pipeline.training.augment import Augmentation, augment
from vitrine.pipeline.training.datasets import (
    FashionMNIST,
    load_fashion_mnist,
    load_labelled_folder,
)
from vitrine.pipeline.training.train import (
    TrainConfig,
    folder_preprocess_spec,
    train_fashion_mnist,
    train_folder,
)
from vitrine.pipeline.types import FASHION_MNIST_LABELS, ImageLimits, ModelSpec, PreprocessSpec
from vitrine.settings import SAMPLE_FASHION_DIR

SLICE = SAMPLE_FASHION_DIR


@pytest.fixture(scope="module")
def fashion() -> FashionMNIST:
    return load_fashion_mnist(SLICE)


def _as_stored(spec: ModelSpec) -> ModelSpec:
    """The spec as model.json gives it back (JSON has no tuples: erase_area becomes a list)."""
    return ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))


# --------------------------------------------------------------------------- Fashion-MNIST recipe

SHORT = TrainConfig(
    epochs=3,
    widths=(16, 32, 32),
    train_limit=3000,
    validation_fraction=0.1,
    batch_size=64,
    warmup_epochs=0,
)


@pytest.fixture(scope="module")
def short_run(
    fashion: FashionMNIST, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ModelSpec, Path, list[str]]:
    """3 epochs on the 3000 slice training images (~15 s on 2 cores), run once."""
    out = tmp_path_factory.mktemp("fashion-short") / "model"
    messages: list[str] = []
    spec = train_fashion_mnist(
        fashion,
        out_dir=out,
        config=SHORT,
        version="test",
        log=messages.append,
        verbose=0,
    )
    return spec, out, messages


def test_short_fashion_run_writes_a_complete_model_dir(
    short_run: tuple[ModelSpec, Path, list[str]], fashion: FashionMNIST
) -> None:
    spec, out, messages = short_run
    data = json.loads((out / "model.json").read_text())
    assert (out / "model.keras").is_file()
    assert ModelSpec.from_dict(data) == _as_stored(spec)
    assert data["name"] == "fashion-cnn" and data["version"] == "test"
    assert tuple(data["labels"]) == FASHION_MNIST_LABELS
    assert data["data_fingerprint"] == fashion.fingerprint
    assert data["data_fingerprint"].startswith("sha256:")

    metrics = data["metrics"]
    assert metrics["test_images"] == 1000
    assert 0.0 <= metrics["test_accuracy"] <= 1.0

    training = data["training"]
    assert training["recipe"] == "fashion-mnist"
    assert training["config"]["epochs"] == 3
    assert training["config"]["widths"] == [16, 32, 32]
    assert training["config"]["train_limit"] == 3000
    assert training["config"]["batch_size"] == 64
    assert training["config"]["augmentation"]["max_shift"] == 3
    assert training["train_images"] == 2700 and training["validation_images"] == 300
    assert training["train_seconds"] > 0
    assert training["parameters"] > 0
    assert set(training["environment"]) == {"keras", "backend", "python", "machine"}
    history = training["history"]
    assert len(history) == 3
    for row in history:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(row)
    assert len([m for m in messages if m.startswith("epoch ")]) == 3
    assert any(m.startswith("test accuracy") for m in messages)

    loaded = load_model_dir(out)
    assert loaded.spec.embedding_dim == SHORT.embedding_dim
    assert loaded.keras_model.count_params() == training["parameters"]


def test_short_fashion_run_fits_its_training_batches(
    short_run: tuple[ModelSpec, Path, list[str]],
) -> None:
    """Accuracy on the (augmented) training batches, as Keras reports it during fit.

    Measured 0.57-0.59 after 3 epochs (seeds 1234, 1, 2); chance is 0.10.
    """
    history = short_run[0].training["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["accuracy"] >= 0.45


def test_short_fashion_run_generalises_to_the_test_split(
    short_run: tuple[ModelSpec, Path, list[str]],
) -> None:
    # Chance is 0.10. 3 epochs x 43 steps is too short for BatchNormalization's moving
    # averages, so the recipe re-estimates them from the training images after fitting.
    assert short_run[0].training["batchnorm_recalibrated"] is True
    assert short_run[0].metrics["test_accuracy"] >= 0.5


# --------------------------------------------------------------------------- folder recipe

FOLDER_SPEC = PreprocessSpec(size=28)
FOLDER_LIMITS = ImageLimits(max_bytes=10**7, max_pixels=10**7)
SHAPES = ("circle", "square")


def _shape_png(path: Path, shape: str, rng: np.random.Generator) -> None:
    """A dark filled circle or square somewhere on a white "product photo"."""
    side = int(rng.integers(48, 97))
    img = Image.new("RGB", (side, side), "white")
    size = int(rng.integers(side // 3, side * 3 // 4))
    x0, y0 = (int(v) for v in rng.integers(0, side - size, 2))
    grey = int(rng.integers(0, 120))
    draw = ImageDraw.Draw(img)
    box = [x0, y0, x0 + size, y0 + size]
    if shape == "circle":
        draw.ellipse(box, fill=(grey, grey, grey))
    else:
        draw.rectangle(box, fill=(grey, grey, grey))
    img.save(path)


def _shapes_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        (root / shape).mkdir(parents=True)
        for i in range(per_class):
            _shape_png(root / shape / f"{i:03d}.png", shape, rng)
    return root


def _preprocessed(root: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    paths, labels, names = load_labelled_folder(root)
    arrays = [preprocess_bytes(p.read_bytes(), FOLDER_SPEC, limits=FOLDER_LIMITS)[0] for p in paths]
    return np.stack(arrays), labels, names


def test_train_folder_learns_circles_from_squares(tmp_path: Path) -> None:
    x, y, names = _preprocessed(_shapes_folder(tmp_path / "shapes", per_class=40, seed=0))
    assert names == SHAPES and x.shape == (80, 28, 28, 1)
    # batch_size 4 gives 15 steps per epoch, 450 in all: enough for the BatchNormalization
    # moving statistics (momentum 0.99) to settle. With the default batch size of 128 the
    # 60 training images make one step per epoch, and after 20 epochs the saved model scored
    # 0.40 on validation although its training accuracy was 1.0.
    config = TrainConfig(
        epochs=30,
        batch_size=4,
        widths=(8, 16, 16),
        embedding_dim=16,
        validation_fraction=0.25,
        warmup_epochs=0,
    )
    out = tmp_path / "model"
    spec = train_folder(
        images=x,
        labels=y,
        class_names=names,
        preprocess=FOLDER_SPEC,
        fingerprint="sha256:test",
        out_dir=out,
        config=config,
        backbone=None,
        weights_path=None,
        name="shapes",
        version="1",
        log=lambda _: None,
        verbose=0,
    )
    assert spec.labels == SHAPES
    assert spec.training["recipe"] == "folder" and spec.training["backbone"] is None
    assert spec.training["train_images"] == 60 and spec.training["validation_images"] == 20
    history = spec.training["history"]
    assert len(history) == 30
    for row in history:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(row)
    # Chance is 0.5. Measured with data seeds 0/1/2: validation (20 images) 0.90/1.0/1.0,
    # unseen shapes (40 images) 0.825/1.0/1.0; this test uses seed 0. Re-measured after the
    # recipes moved to one `fit` per epoch: 1.0 on both for all three seeds (12.5 s each).
    assert spec.metrics["val_accuracy"] >= 0.7

    # Fresh shapes the model never saw, through the saved directory like a worker would.
    loaded = load_model_dir(out)
    assert loaded.spec == _as_stored(spec)
    fresh, fresh_y, _ = _preprocessed(_shapes_folder(tmp_path / "fresh", per_class=20, seed=99))
    predicted = [SHAPES.index(p.label) for p in loaded.predict(fresh)]
    accuracy = float((np.array(predicted) == fresh_y).mean())
    assert accuracy >= 0.7, f"accuracy {accuracy:.2f} on 40 unseen shapes"


def test_raw_arrays_and_training_scale_agree(fashion: FashionMNIST) -> None:
    """train_fashion_mnist scales x/255 with a channel axis; serving uses raw_to_model_input."""
    spec = PreprocessSpec()
    served = raw_to_model_input(fashion.x_test[:5], spec)
    trained = (fashion.x_test[:5].astype(np.float32) * spec.scale + spec.offset)[..., None]
    np.testing.assert_allclose(served, trained, atol=1e-6)


# --------------------------------------------------------------------------- what fit is fed


class _RecordingTrainer:
    """Stands in for the compiled Keras trainer: keeps every `fit` call, trains nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = []
        self.optimizer = SimpleNamespace(variables=[])  # what a checkpoint saves of it

    def fit(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> SimpleNamespace:
        self.calls.append((x, y, kwargs))
        metrics = ("loss", "accuracy", "val_loss", "val_accuracy")
        return SimpleNamespace(history={k: [0.5] for k in metrics})


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> _RecordingTrainer:
    trainer = _RecordingTrainer()
    monkeypatch.setattr(
        vitrine.pipeline.training.fitting, "compile_trainer", lambda *args, **kwargs: trainer
    )
    return trainer


TINY = TrainConfig(
    epochs=2, widths=(4, 4, 4), embedding_dim=8, train_limit=300, validation_fraction=0.1, seed=7
)


def test_seeded_fashion_run_trains_on_the_same_augmented_arrays(
    fashion: FashionMNIST, recorder: _RecordingTrainer, tmp_path: Path
) -> None:
    """The recipe's draws from its rng, in order: train_limit subset, split, then per epoch
    one augment and one shuffle. Replaying them by hand must give exactly the arrays `fit`
    was given: the generator is the whole random state a checkpoint has to keep."""
    config = replace(TINY, augmentation=Augmentation(blur_probability=0.5, gamma_probability=0.5))
    spec = train_fashion_mnist(
        fashion, out_dir=tmp_path / "model", config=config, log=lambda _: None, verbose=0
    )

    pre = PreprocessSpec()

    def scaled(a: np.ndarray) -> np.ndarray:
        return (a.astype(np.float32) * pre.scale + pre.offset)[..., None]

    rng = np.random.default_rng(7)
    keep = rng.permutation(len(fashion.x_train))[:300]
    x, y = fashion.x_train[keep], fashion.y_train[keep]
    order = rng.permutation(300)
    val, train = order[:30], order[30:]
    assert len(recorder.calls) == 2
    for epoch, (fed_x, fed_y, kwargs) in enumerate(recorder.calls):
        expected = scaled(augment(x[train], rng, config.augmentation))
        shuffled = rng.permutation(270)
        assert fed_x.dtype == np.float32 and fed_x.shape == (270, 28, 28, 1)
        np.testing.assert_array_equal(fed_x, expected[shuffled])
        np.testing.assert_array_equal(fed_y, y[train][shuffled])
        np.testing.assert_array_equal(kwargs["validation_data"][0], scaled(x[val]))
        np.testing.assert_array_equal(kwargs["validation_data"][1], y[val])
        assert (kwargs["initial_epoch"], kwargs["epochs"]) == (epoch, epoch + 1)
        assert kwargs["shuffle"] is False and kwargs["batch_size"] == config.batch_size
    assert not np.array_equal(recorder.calls[0][0], recorder.calls[1][0])  # fresh each epoch
    assert spec.training["train_images"] == 270 and spec.training["validation_images"] == 30
    assert len(spec.training["history"]) == 2


def test_folder_run_trains_on_its_arrays_as_given(
    fashion: FashionMNIST, recorder: _RecordingTrainer, tmp_path: Path
) -> None:
    """Folder arrays are model input already: no augmentation, the same array every epoch
    (shuffled), and the same seeded limit and split as the Fashion recipe."""
    images = raw_to_model_input(fashion.x_test[:400], FOLDER_SPEC)
    labels = fashion.y_test[:400].astype(np.int64)
    messages: list[str] = []
    spec = train_folder(
        images=images,
        labels=labels,
        class_names=FASHION_MNIST_LABELS,
        preprocess=FOLDER_SPEC,
        fingerprint="sha256:test",
        out_dir=tmp_path / "model",
        config=TINY,
        backbone=None,
        weights_path=None,
        name="folder",
        version="1",
        log=messages.append,
        verbose=0,
    )
    rng = np.random.default_rng(7)
    keep = rng.permutation(400)[:300]
    order = rng.permutation(300)
    train = keep[order[30:]]
    assert len(recorder.calls) == 2
    for fed_x, fed_y, kwargs in recorder.calls:
        shuffled = train[rng.permutation(270)]
        np.testing.assert_array_equal(fed_x, images[shuffled])
        np.testing.assert_array_equal(fed_y, labels[shuffled])
        np.testing.assert_array_equal(kwargs["validation_data"][0], images[keep[order[:30]]])
    training = json.loads((tmp_path / "model" / "model.json").read_text())["training"]
    assert training["recipe"] == "folder" and training["weights_file"] is None
    assert {"config", "history", "train_seconds", "batchnorm_recalibrated"} <= set(training)
    assert {"environment", "parameters"} <= set(training)
    assert training["train_images"] == 270 and training["validation_images"] == 30
    assert set(spec.metrics) == {"val_accuracy"} and 0.0 <= spec.metrics["val_accuracy"] <= 1.0
    assert len([m for m in messages if m.startswith("epoch ")]) == 2
    assert messages[-1].startswith("validation accuracy ")


def test_folder_preprocess_spec() -> None:
    assert folder_preprocess_spec(backbone=None, input_size=None) == PreprocessSpec()
    assert folder_preprocess_spec(backbone=None, input_size=40) == PreprocessSpec(size=40)
    backbone = folder_preprocess_spec(backbone="MobileNetV3Small", input_size=None)
    assert (backbone.size, backbone.channels) == (96, 3)
    assert not backbone.invert and not backbone.autocontrast and backbone.trim_background
    assert (backbone.scale, backbone.offset) == (1.0, 0.0)
    assert folder_preprocess_spec(backbone="EfficientNetB0", input_size=64).size == 64


def test_fine_tune_starts_from_the_given_model_and_checkpoints_each_epoch(
    fashion: FashionMNIST, tmp_path: Path
) -> None:
    from vitrine.pipeline.inference.model import load_model_dir

    base = tmp_path / "base"
    train_fashion_mnist(fashion, out_dir=base, config=TINY, log=lambda _: None, verbose=0)
    before = [w.copy() for w in load_model_dir(base).keras_model.get_weights()]

    tuned = tmp_path / "tuned"
    progress: list[int] = []

    def log(message: str) -> None:  # epoch 2's line comes after epoch 1's checkpoint
        marker = tuned / "checkpoint" / "progress.json"
        if message.startswith("epoch 2/"):
            progress.append(json.loads(marker.read_text())["epoch"])

    config = replace(TINY, initial_model=str(base), learning_rate=1e-4, warmup_epochs=0)
    spec = train_fashion_mnist(fashion, out_dir=tuned, config=config, log=log, verbose=0)
    after = load_model_dir(tuned).keras_model.get_weights()
    assert progress == [1]
    assert not (tuned / "checkpoint").exists()  # dropped once the model is saved
    assert spec.training["config"]["initial_model"] == str(base)
    # the tuned weights moved a little from the base model's, not from a fresh random start
    drift = max(float(np.abs(a - b).max()) for a, b in zip(after, before, strict=True))
    assert 0 < drift < 0.1

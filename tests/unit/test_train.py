"""pipeline.train: augmentation, and short training runs that must actually learn.

The two training runs are sized for two CPU cores (~15 s each); their bounds are set well
below what they reach and far above chance, with the measured numbers next to them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.datasets import FashionMNIST, load_fashion_mnist, load_labelled_folder
from pipeline.model import load_model_dir
from pipeline.preprocess import preprocess_bytes, raw_to_model_input
from pipeline.train import Augmentation, TrainConfig, augment, train_fashion_mnist, train_folder
from pipeline.types import FASHION_MNIST_LABELS, ModelSpec, PreprocessSpec

SLICE = Path(__file__).resolve().parents[1] / "data" / "fashion-mnist-slice"
NO_AUGMENTATION = Augmentation(flip=False, max_shift=0, erase_probability=0.0)


@pytest.fixture(scope="module")
def fashion() -> FashionMNIST:
    return load_fashion_mnist(SLICE)


@pytest.fixture(scope="module")
def images(fashion: FashionMNIST) -> np.ndarray:
    return fashion.x_test[:200]


def _as_stored(spec: ModelSpec) -> ModelSpec:
    """The spec as model.json gives it back (JSON has no tuples: erase_area becomes a list)."""
    return ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))


# --------------------------------------------------------------------------- augment


def test_augment_keeps_shape_and_dtype_and_leaves_input_alone(images: np.ndarray) -> None:
    before = images.copy()
    out = augment(images, np.random.default_rng(0), Augmentation())
    assert out.shape == images.shape
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(images, before)
    assert not np.array_equal(out, images)


def test_augment_is_deterministic_for_a_seeded_rng(images: np.ndarray) -> None:
    a = augment(images, np.random.default_rng(42), Augmentation())
    b = augment(images, np.random.default_rng(42), Augmentation())
    c = augment(images, np.random.default_rng(43), Augmentation())
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_augment_with_everything_off_is_the_identity(images: np.ndarray) -> None:
    out = augment(images, np.random.default_rng(0), NO_AUGMENTATION)
    np.testing.assert_array_equal(out, images)
    assert out is not images


def test_flip_mirrors_about_half_and_keeps_pixel_mass(images: np.ndarray) -> None:
    out = augment(images, np.random.default_rng(1), Augmentation(max_shift=0, erase_probability=0))
    same = np.array([np.array_equal(o, x) for o, x in zip(out, images, strict=True)])
    mirrored = np.array([np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images, strict=True)])
    assert (same | mirrored).all()  # each image is itself or its mirror image, nothing else
    assert 0.3 < mirrored.mean() < 0.7
    # a mirror is a permutation of pixels: the mass of every image is exactly kept
    np.testing.assert_array_equal(
        out.reshape(len(out), -1).sum(axis=1), images.reshape(len(images), -1).sum(axis=1)
    )


def test_shift_is_a_translation_within_max_shift(images: np.ndarray) -> None:
    s = 3
    out = augment(
        images, np.random.default_rng(2), Augmentation(flip=False, max_shift=s, erase_probability=0)
    )
    h, w = images.shape[1:]
    moved = 0
    for o, x in zip(out, images, strict=True):
        padded = np.pad(x, s)
        candidates = [
            (dy, dx)
            for dy in range(2 * s + 1)
            for dx in range(2 * s + 1)
            if np.array_equal(o, padded[dy : dy + h, dx : dx + w])
        ]
        assert candidates, "output is not a translation of its input by at most max_shift"
        moved += (s, s) not in candidates
    assert moved > len(images) // 2
    # Fashion-MNIST items often touch the frame, so a shift can push a few rows out; the
    # mass is kept roughly (measured: overall 0.96, worst single image 0.78).
    mass_in = images.reshape(len(images), -1).sum(axis=1).astype(float)
    mass_out = out.reshape(len(out), -1).sum(axis=1)
    assert mass_out.sum() / mass_in.sum() > 0.9
    assert (mass_out / mass_in).min() > 0.65
    assert (mass_out <= mass_in).all()  # shifting in zeros never adds mass


def test_flip_and_shift_together_keep_pixel_mass_roughly(images: np.ndarray) -> None:
    out = augment(images, np.random.default_rng(3), Augmentation(erase_probability=0))
    ratio = out.astype(float).sum() / images.astype(float).sum()
    assert 0.9 < ratio <= 1.0


def test_random_erasing_changes_one_bounded_rectangle(images: np.ndarray) -> None:
    aug = Augmentation(flip=False, max_shift=0, erase_probability=1.0, erase_area=(0.02, 0.2))
    out = augment(images, np.random.default_rng(4), aug)
    h, w = images.shape[1:]
    for o, x in zip(out, images, strict=True):
        changed = np.argwhere(o != x)
        assert len(changed) > 0
        (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
        box = (y1 - y0 + 1) * (x1 - x0 + 1)
        # the erased rectangle is at most 20% of the image (rounding can add a row/column)
        assert box <= 0.2 * h * w + h + w
    never = augment(
        images,
        np.random.default_rng(4),
        Augmentation(flip=False, max_shift=0, erase_probability=0.0),
    )
    np.testing.assert_array_equal(never, images)


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
        x_train=fashion.x_train,
        y_train=fashion.y_train,
        x_test=fashion.x_test,
        y_test=fashion.y_test,
        fingerprint=fashion.fingerprint,
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
    arrays = [
        preprocess_bytes(p.read_bytes(), FOLDER_SPEC, max_pixels=10**7, max_bytes=10**7)[0]
        for p in paths
    ]
    return np.stack(arrays), labels, names


def test_train_folder_learns_circles_from_squares(tmp_path: Path) -> None:
    x, y, names = _preprocessed(_shapes_folder(tmp_path / "shapes", per_class=40, seed=0))
    assert names == SHAPES and x.shape == (80, 28, 28, 1)
    # batch_size 4 gives 15 steps per epoch, 450 in all: enough for the BatchNormalization
    # moving statistics (momentum 0.99) to settle. With the default batch size of 128 the
    # 60 training images make one step per epoch, and after 20 epochs the saved model scored
    # 0.40 on validation although its training accuracy was 1.0 (see the xfail above).
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
    assert len(spec.training["history"]["accuracy"]) == 30
    # Chance is 0.5. Measured with data seeds 0/1/2: validation (20 images) 0.90/1.0/1.0,
    # unseen shapes (40 images) 0.825/1.0/1.0; this test uses seed 0.
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


def test_blur_and_gamma_are_off_by_default_and_draw_nothing() -> None:
    """Recipes written before these steps existed must replay the same random stream."""
    x = np.random.default_rng(1).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    plain = augment(x, np.random.default_rng(7), Augmentation())
    explicit = augment(
        x, np.random.default_rng(7), Augmentation(blur_probability=0.0, gamma_probability=0.0)
    )
    np.testing.assert_array_equal(plain, explicit)


def test_gaussian_blur_matches_its_definition() -> None:
    from pipeline.train import gaussian_blur

    impulse = np.zeros((2, 9, 9), np.uint8)
    impulse[:, 4, 4] = 250
    out = gaussian_blur(impulse, np.array([0.05, 1.0])).astype(float)
    assert out[0, 4, 4] == 250 and out[0].sum() == 250  # tiny sigma: unchanged
    # sigma 1: separable kernel [0.054, 0.244, 0.403, 0.244, 0.054] -> centre 250*0.403^2
    assert abs(out[1, 4, 4] - 250 * 0.4026**2) <= 1
    assert abs(out[1].sum() - 250) <= 3  # mass kept (up to rounding)
    assert out[1, 4, 3] == out[1, 4, 5] == out[1, 3, 4] == out[1, 5, 4]


def test_gamma_changes_mid_tones_only() -> None:
    x = np.array([[[0, 128, 255]]], np.uint8).repeat(4, axis=0)
    out = augment(
        x,
        np.random.default_rng(0),
        Augmentation(flip=False, max_shift=0, erase_probability=0.0, gamma_probability=1.0),
    )
    assert (out[:, 0, 0] == 0).all() and (out[:, 0, 2] == 255).all()
    assert (out[:, 0, 1] != 128).any()

"""vitrine.pipeline.training.augment: label-preserving changes to uint8 training images."""

from __future__ import annotations

import numpy as np
import pytest

from vitrine.pipeline.training.augment import Augmentation, augment, gaussian_blur
from vitrine.pipeline.training.datasets import FashionMNIST, load_fashion_mnist
from vitrine.settings import SAMPLE_FASHION_DIR

SLICE = SAMPLE_FASHION_DIR
NO_AUGMENTATION = Augmentation(flip=False, max_shift=0, erase_probability=0.0)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    fashion: FashionMNIST = load_fashion_mnist(SLICE)
    return fashion.x_test[:200]


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


def test_blur_and_gamma_are_off_by_default_and_draw_nothing() -> None:
    """Recipes written before these steps existed must replay the same random stream."""
    x = np.random.default_rng(1).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    plain = augment(x, np.random.default_rng(7), Augmentation())
    explicit = augment(
        x, np.random.default_rng(7), Augmentation(blur_probability=0.0, gamma_probability=0.0)
    )
    np.testing.assert_array_equal(plain, explicit)


def test_gaussian_blur_matches_its_definition() -> None:
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

"""vitrine.pipeline.training.degrade (tilt/zoom warp, JPEG-like blocks) and their steps in
vitrine.pipeline.training.augment."""

from __future__ import annotations

import numpy as np
import pytest

from vitrine.pipeline.training.augment import Augmentation, augment
from vitrine.pipeline.training.datasets import load_fashion_mnist
from vitrine.pipeline.training.degrade import jpeg_like, quantisation_tables, warp
from vitrine.settings import SAMPLE_FASHION_DIR

SLICE = SAMPLE_FASHION_DIR


@pytest.fixture(scope="module")
def items() -> np.ndarray:
    return load_fashion_mnist(SLICE).x_test[:64]


def test_warp_identity_and_quarter_turns_are_exact(items: np.ndarray) -> None:
    n = len(items)
    same = warp(items, np.zeros(n), np.ones(n))
    np.testing.assert_array_equal(same, items)
    turned = warp(items, np.full(n, 90.0), np.ones(n))
    np.testing.assert_array_equal(turned, np.rot90(items, k=1, axes=(1, 2)))  # anticlockwise


def test_warp_zooms_and_tilts_each_image_by_its_own_amount(items: np.ndarray) -> None:
    n = len(items)
    half = warp(items, np.zeros(n), np.full(n, 0.5))
    mass = items.astype(float).sum(axis=(1, 2))
    assert np.allclose(half.astype(float).sum(axis=(1, 2)) / mass, 0.25, atol=0.04)
    # a vertical bar tilted by 10 degrees: its top moves left, its bottom right (y down)
    bar = np.zeros((2, 28, 28), np.uint8)
    bar[:, 2:26, 13:15] = 255
    tilted = warp(bar, np.array([10.0, 0.0]), np.ones(2))
    top_cols = np.flatnonzero(tilted[0, 3] > 100).mean()
    bottom_cols = np.flatnonzero(tilted[0, 24] > 100).mean()
    assert top_cols < 13.5 - 1.5 and bottom_cols > 13.5 + 1.5
    np.testing.assert_array_equal(tilted[1], bar[1])


def test_quantisation_tables_follow_libjpeg_scaling() -> None:
    tables = quantisation_tables(np.array([50, 100, 10]))
    assert tables[0, 0, 0] == 16 and tables[0, 7, 7] == 99  # quality 50: the table itself
    assert np.all(tables[1] == 1)  # quality 100: no quantisation
    assert tables[2, 0, 0] == 80  # quality 10: 5x coarser


def test_jpeg_like_error_grows_as_quality_falls(items: np.ndarray) -> None:
    n = len(items)
    errors = []
    for quality in (100, 85, 50, 20):
        out = jpeg_like(items, np.full(n, quality))
        assert out.shape == items.shape and out.dtype == np.uint8
        errors.append(float(np.abs(out.astype(int) - items.astype(int)).mean()))
    assert errors[0] < 1.0  # quality 100: rounding only
    assert errors == sorted(errors) and errors[-1] > 3 * errors[1]
    assert jpeg_like(items[:0], np.zeros(0)).shape == (0, 28, 28)


def test_studio_steps_are_off_by_default_and_draw_nothing(items: np.ndarray) -> None:
    """Recipes written before these steps existed replay the same random stream."""
    plain = augment(items, np.random.default_rng(7), Augmentation())
    explicit = augment(
        items, np.random.default_rng(7), Augmentation(tilt_probability=0.0, jpeg_probability=0.0)
    )
    np.testing.assert_array_equal(plain, explicit)


def test_studio_steps_change_about_their_share(items: np.ndarray) -> None:
    base = Augmentation(flip=False, max_shift=0, erase_probability=0.0)
    for step in ("tilt_probability", "jpeg_probability"):
        aug = Augmentation(**{**base.__dict__, step: 0.5})
        out = augment(items, np.random.default_rng(3), aug)
        changed = np.any(out != items, axis=(1, 2)).mean()
        assert 0.3 <= changed <= 0.7, (step, changed)

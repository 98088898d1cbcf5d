"""Photo views: training items rendered as uploads and read back by the worker's path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vitrine.ops.errors import UserError
from vitrine.ops.training import TrainRequest, train
from vitrine.pipeline.training.datasets import load_fashion_mnist
from vitrine.pipeline.training.photo_views import PhotoViews, photo_views
from vitrine.pipeline.types import ImageLimits, PreprocessSpec
from vitrine.settings import SAMPLE_FASHION_DIR


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_a_view_is_its_item_as_the_worker_reads_a_photo_of_it() -> None:
    """Stored like the raw items (bright on black, 28x28 uint8), close to its own item
    and not to others: a view of the wrong item, or in the wrong convention (dark on
    white), would correlate weakly or negatively."""
    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    picks, views = photo_views(data.x_train, PhotoViews(items=24), seed=5, spec=PreprocessSpec())
    assert views.shape == (24, 28, 28) and views.dtype == np.uint8
    assert len(set(picks.tolist())) == 24  # items drawn without replacement
    own = [_correlation(data.x_train[p], v) for p, v in zip(picks, views, strict=True)]
    other = [_correlation(data.x_train[picks[(i + 1) % 24]], v) for i, v in enumerate(views)]
    assert np.median(own) > 0.9 and np.median(other) < 0.6
    assert np.mean(own) > np.mean(other) + 0.3
    # photos, not copies: the round trip leaves its marks on every view
    assert all(not np.array_equal(data.x_train[p], v) for p, v in zip(picks, views, strict=True))


def test_views_depend_on_the_seed_alone_not_on_the_processes() -> None:
    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    spec = PreprocessSpec()
    seen: list[tuple[int, int]] = []
    one = photo_views(data.x_train, PhotoViews(items=6), seed=3, spec=spec)
    two = photo_views(
        data.x_train,
        PhotoViews(items=6),
        seed=3,
        spec=spec,
        processes=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert seen[-1] == (6, 6)
    other = photo_views(data.x_train, PhotoViews(items=6), seed=4, spec=spec)
    assert not np.array_equal(one[1], other[1])


def test_views_need_the_raw_items_convention() -> None:
    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    colour = PreprocessSpec(size=96, channels=3, invert=False, autocontrast=False, scale=1.0)
    with pytest.raises(ValueError, match="grey, inverted"):
        photo_views(data.x_train, PhotoViews(items=2), seed=1, spec=colour)


def test_a_labelled_folder_is_photos_already(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--photo-views applies to Fashion-MNIST runs"):
        train(
            TrainRequest(out=tmp_path / "out", data=tmp_path, photo_views=5),
            limits=ImageLimits(max_bytes=1 << 20, max_pixels=1 << 20),
            log=lambda _: None,
        )
    assert not (tmp_path / "out").exists()  # refused before anything was written

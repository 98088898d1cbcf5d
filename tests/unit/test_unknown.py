"""'None of our categories': the detector's arithmetic, the object view, foreign photos."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitrine.pipeline.inference import unknown
from vitrine.pipeline.inference.preprocess import object_view
from vitrine.pipeline.inference.unknown import Backbone, UnknownDetector, fit, spherical_kmeans
from vitrine.pipeline.synthetic.foreign import (
    FOREIGN_LABEL,
    KINDS,
    STYLES,
    make_foreign_photo,
    write_foreign,
)


class _Identity:
    """A stand-in backbone: an object view's mean colour is its 'feature'."""

    view_size = 8

    def features(self, views: np.ndarray) -> np.ndarray:
        if len(views) == 0:
            return np.zeros((0, 3), np.float32)
        x = np.asarray(views, np.float32).reshape(len(views), -1, 3).mean(axis=1) + 1.0
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_centroids_are_unit_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    a, b = spherical_kmeans(x, 8, seed=3), spherical_kmeans(x, 8, seed=3)
    assert np.array_equal(a, b) and a.shape == (8, 16)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_the_threshold_flags_the_target_share_of_calibration_photos() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(loc=(5, 0, 0, 0), size=(400, 4))
    calibration = rng.normal(loc=(5, 0, 0, 0), size=(1000, 4))
    centroids, threshold = fit(reference, calibration, k=16, target_rate=0.02, seed=0)
    unit = calibration / np.linalg.norm(calibration, axis=1, keepdims=True)
    scores = 1 - (unit @ centroids.T).max(axis=1)
    assert abs(float((scores > threshold).mean()) - 0.02) < 0.005
    other = np.array([0.0, 1.0, 0.0, 0.0])  # another direction: nothing like the reference
    assert 1 - float((centroids @ other).max()) > threshold


def test_scores_grow_with_distance_from_the_catalogue() -> None:
    red = np.zeros((5, 8, 8, 3), np.uint8)
    red[..., 0] = 200
    centroids = _Identity().features(red)[:1]
    detector = UnknownDetector(_Identity(), centroids, threshold=0.05)  # type: ignore[arg-type]
    blue = np.zeros((1, 8, 8, 3), np.uint8)
    blue[..., 2] = 200
    near, far = detector.scores(red[:1])[0], detector.scores(blue)[0]
    assert near < 1e-5 < detector.threshold < far
    assert detector.scores(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0,)
    assert Backbone.__dataclass_fields__["view_size"].default == 160


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_the_nearest_centroid_product_runs_on_one_blas_thread_and_restores_it() -> None:
    """A threaded BLAS spins a core for ~80 ms after each product; the detector's runs on
    one thread, and the process's own setting is back afterwards."""
    seen: list[list[int]] = []

    class Spy(np.ndarray):
        def __rmatmul__(self, other: np.ndarray) -> np.ndarray:
            seen.append(_blas_threads())
            return np.asarray(other) @ np.asarray(self)

    rng = np.random.default_rng(3)
    feats = rng.normal(size=(4, 16)).astype(np.float32)
    centroids = rng.normal(size=(5, 16)).astype(np.float32)
    before = _blas_threads()
    assert before, "numpy's BLAS is loaded and visible to threadpoolctl"
    got = unknown._nearest_cosine(feats, centroids.view(Spy))
    assert seen == [[1] * len(before)]
    assert _blas_threads() == before
    np.testing.assert_allclose(got, (feats @ centroids.T).max(axis=1), rtol=1e-6)


def test_the_object_view_crops_the_product_from_its_backdrop() -> None:
    """A small red square in a corner of a large grey-backdrop photo fills its view."""
    photo = Image.new("RGB", (1000, 800), (200, 200, 205))
    photo.paste((190, 30, 40), (700, 500, 900, 700))
    view = object_view(photo, 64)
    assert view.shape == (64, 64, 3) and view.dtype == np.uint8
    centre = view[28:36, 28:36].reshape(-1, 3).mean(axis=0)
    assert centre[0] > 150 and centre[1] < 90  # the product, not the backdrop
    assert view[1, 1].min() > 240  # padded on white, a tenth of margin
    cut_out = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    cut_out.paste((20, 120, 40, 255), (50, 50, 150, 350))
    corner = object_view(cut_out, 32)[0, 0]
    assert corner.min() > 240  # transparency is white, never the black under it


def test_foreign_photos_are_deterministic_and_every_kind_in_every_style(tmp_path: Path) -> None:
    n = len(KINDS) * len(STYLES)
    manifest = write_foreign(tmp_path / "a", n=n, seed=5)
    again = write_foreign(tmp_path / "b", n=n, seed=5)
    with manifest.open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["label"] for r in rows} == {FOREIGN_LABEL}
    assert {r["kind"] for r in rows} == set(KINDS)
    assert {r["style"] for r in rows} >= {"white", "transparent", "studio", "full frame"}
    for row in rows[:5]:
        assert (tmp_path / "a" / row["file"]).read_bytes() == (
            tmp_path / "b" / row["file"]
        ).read_bytes()
    assert again.read_text() == manifest.read_text()
    cut_out = [r for r in rows if r["style"] == "transparent"][0]
    with Image.open(tmp_path / "a" / cut_out["file"]) as img:
        assert img.mode == "RGBA" and img.getextrema()[3][0] == 0  # really transparent


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_draws_something(kind: str) -> None:
    photo, meta = make_foreign_photo(kind, "white", rng=np.random.default_rng(2))
    assert meta["kind"] == kind
    colours = photo.convert("RGB").getcolors(1_000_000)
    assert colours is not None and len(colours) > 3  # more than a blank frame


@pytest.mark.parametrize("size", [16, 1024])
def test_calibration_refuses_a_view_size_out_of_range(size: int) -> None:
    """`vitrine models calibrate-unknown --view-size` says what is wrong before any photo
    is made or any file written."""
    from vitrine.ops.errors import UserError
    from vitrine.ops.unknown import calibrate
    from vitrine.pipeline.types import ImageLimits
    from vitrine.settings import DEFAULT_MODEL_DIR

    before = (DEFAULT_MODEL_DIR / "model.json").read_bytes()
    with pytest.raises(UserError, match="--view-size must be 32 to 512 px"):
        calibrate(
            DEFAULT_MODEL_DIR,
            fashion=None,
            reference=6000,
            calibration=2000,
            limits=ImageLimits(max_bytes=40_000_000, max_pixels=40_000_000),
            log=lambda line: None,
            view_size=size,
        )
    assert (DEFAULT_MODEL_DIR / "model.json").read_bytes() == before

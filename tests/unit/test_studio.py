"""vitrine.pipeline.synthetic.studio: studio photos (coloured backdrops, vignetting, shadow, tilt,
fill)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitrine.pipeline.synthetic.photos import PALETTE, write_catalog
from vitrine.pipeline.synthetic.studio import (
    BACKDROPS,
    FILL_RANGE,
    MAX_TILT_DEGREES,
    MIN_LUMA_CONTRAST,
    make_studio_photo,
)
from vitrine.pipeline.training.datasets import FashionMNIST, load_fashion_mnist
from vitrine.settings import SAMPLE_FASHION_DIR

SLICE = SAMPLE_FASHION_DIR


@pytest.fixture(scope="module")
def data() -> FashionMNIST:
    return load_fashion_mnist(SLICE)


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _hex(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], np.float32)


def test_studio_photo_is_deterministic_and_within_its_ranges(data: FashionMNIST) -> None:
    for seed in range(12):
        photo, meta = make_studio_photo(
            data.x_test[seed], rng=np.random.default_rng(seed), palette=PALETTE
        )
        again, _ = make_studio_photo(
            data.x_test[seed], rng=np.random.default_rng(seed), palette=PALETTE
        )
        assert np.array_equal(np.asarray(photo), np.asarray(again))
        assert photo.mode == "RGB" and photo.size == (meta["width"], meta["height"])
        assert meta["background"] in BACKDROPS
        assert abs(meta["tilt_degrees"]) <= MAX_TILT_DEGREES
        assert FILL_RANGE[0] <= meta["fill"] <= FILL_RANGE[1]
        pixels = np.asarray(photo, dtype=np.float32)
        # not white: the corners are the backdrop, darkened by the vignette
        corner = pixels[:4, :4].reshape(-1, 3).mean(axis=0)
        assert _luma(corner) < 250
        # the item stands out from the backdrop by at least MIN_LUMA_CONTRAST, and the
        # vignette only darkens the backdrop towards the corners
        item_luma, backdrop_luma = (_luma(_hex(meta[key])) for key in ("rgb", "backdrop_rgb"))
        assert abs(item_luma - backdrop_luma) >= MIN_LUMA_CONTRAST
        assert _luma(corner) <= backdrop_luma + 3
        # the object fills the drawn share of the frame's shorter side
        assert meta["object_size"] == pytest.approx(
            meta["fill"] * min(meta["width"], meta["height"]), abs=2
        )


def test_write_catalog_studio_style(data: FashionMNIST, tmp_path: Path) -> None:
    manifest = write_catalog(data.x_test, data.y_test, tmp_path, n=8, seed=2025, style="studio")
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    for row in rows:
        assert row["file"].endswith(".jpg")
        with Image.open(tmp_path / row["file"]) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
    other = tmp_path / "again"
    write_catalog(data.x_test, data.y_test, other, n=8, seed=2025, style="studio")
    first = sorted(p.read_bytes() for p in tmp_path.glob("*.jpg"))
    assert first == sorted(p.read_bytes() for p in other.glob("*.jpg"))


def test_write_catalog_rejects_an_unknown_style(data: FashionMNIST, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="style"):
        write_catalog(data.x_test, data.y_test, tmp_path, n=1, seed=0, style="catalogue")


def test_vitrine_photos_style_studio(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vitrine.cli.app import app

    result = CliRunner().invoke(
        app, ["photos", str(tmp_path / "set"), "--n", "3", "--sample", "--style", "studio"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 3 studio photos" in " ".join(result.output.split())
    files = sorted(p.name for p in (tmp_path / "set").iterdir())
    assert files[-1] == "manifest.csv" and all(f.endswith(".jpg") for f in files[:-1])
    assert all("SKU-2025-" in f for f in files[:-1])  # the studio set's own seed

"""vitrine.pipeline.synthetic.photos: merchant-like photos generated from Fashion-MNIST items."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from vitrine.pipeline.inference.decode import decode
from vitrine.pipeline.inference.preprocess import to_model_input
from vitrine.pipeline.synthetic.photos import (
    DEFAULT_SIZE_RANGE,
    MANIFEST_HEADER,
    PALETTE,
    make_product_photo,
    rotate_for_exif,
    write_catalog,
)
from vitrine.pipeline.training.datasets import FashionMNIST, load_fashion_mnist
from vitrine.pipeline.types import FASHION_MNIST_LABELS, ImageLimits, PreprocessSpec
from vitrine.settings import SAMPLE_FASHION_DIR

SLICE = SAMPLE_FASHION_DIR


LIMITS = ImageLimits(max_bytes=40_000_000, max_pixels=40_000_000)


@pytest.fixture(scope="module")
def data() -> FashionMNIST:
    return load_fashion_mnist(SLICE)


def read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == MANIFEST_HEADER
        return list(reader)


def test_photo_is_deterministic_and_well_formed(data: FashionMNIST) -> None:
    item = data.x_test[0]
    a, meta_a = make_product_photo(item, rng=np.random.default_rng(42))
    b, meta_b = make_product_photo(item, rng=np.random.default_rng(42))
    assert meta_a == meta_b and a.tobytes() == b.tobytes()

    seen_backgrounds = set()
    for seed in range(40):
        photo, meta = make_product_photo(item, rng=np.random.default_rng(seed))
        seen_backgrounds.add(meta["background"])
        assert 600 <= max(photo.size) <= 1400
        assert 3 / 4 - 0.01 <= photo.width / photo.height <= 4 / 3 + 0.01
        assert (meta["width"], meta["height"]) == photo.size
        x0, y0, side = meta["offset_x"], meta["offset_y"], meta["object_size"]
        assert x0 >= 0.05 * photo.width - 1 and y0 >= 0.05 * photo.height - 1  # margins
        assert x0 + side <= 0.95 * photo.width + 1 and y0 + side <= 0.95 * photo.height + 1
        if meta["background"] == "transparent":
            assert photo.mode == "RGBA"
            assert photo.getpixel((0, 0)) == (0, 0, 0, 0)
        else:
            assert photo.mode == "RGB"
            assert np.asarray(photo)[0, 0].min() >= 245  # white, up to noise
    assert seen_backgrounds == {"white", "transparent"}


def test_photos_are_off_centre(data: FashionMNIST) -> None:
    shifts = []
    for seed in range(30):
        _, meta = make_product_photo(data.x_test[1], rng=np.random.default_rng(seed))
        centre_x = meta["offset_x"] + meta["object_size"] / 2
        shifts.append(abs(centre_x / meta["width"] - 0.5))
    assert max(shifts) > 0.1


def test_colour_is_blended_by_intensity(data: FashionMNIST) -> None:
    """pixel = white * (1 - a) + colour * a, a = item / 255, on a clean white photo."""
    item = data.x_test[2]
    rng = np.random.default_rng(0)
    while True:
        photo, meta = make_product_photo(item, rng=rng)
        if meta["background"] == "white" and not meta["shadow"] and not meta["noise_sigma"]:
            break
    colour = np.array(dict(PALETTE)[meta["colour"]], dtype=np.float32)
    x0, y0, side = meta["offset_x"], meta["offset_y"], meta["object_size"]
    frame = np.asarray(photo, dtype=np.float32)[y0 : y0 + side, x0 : x0 + side]
    alpha = np.asarray(
        Image.fromarray(item).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32
    )
    solid = alpha > 250  # inside the item, the blur changes nothing
    assert solid.sum() > 100
    np.testing.assert_allclose(frame[solid].mean(axis=0), colour, atol=6)


def test_palette_has_no_near_white() -> None:
    for name, rgb in PALETTE:
        luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        assert luma < 215, name


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_restores_upright_pixels(tmp_path: Path, orientation: int) -> None:
    upright = Image.fromarray(np.arange(12 * 20, dtype=np.uint8).reshape(12, 20))
    stored, exif = rotate_for_exif(upright, orientation)
    if orientation != 1:
        assert stored.tobytes() != upright.tobytes()
    path = tmp_path / "p.png"
    stored.save(path, exif=exif)
    with Image.open(path) as reopened:
        assert reopened.getexif().get(0x0112, 1) == orientation
        restored = ImageOps.exif_transpose(reopened)
        assert restored is not None
        assert restored.tobytes() == upright.tobytes()


def test_write_catalog(data: FashionMNIST, tmp_path: Path) -> None:
    calls: list[int] = []
    manifest = write_catalog(
        data.x_test,
        data.y_test,
        tmp_path,
        n=30,
        seed=7,
        exif_rotate_fraction=0.5,
        progress=calls.append,
        workers=2,
    )
    assert manifest == tmp_path / "manifest.csv"
    assert calls == list(range(1, 31))
    rows = read_manifest(manifest)
    assert len(rows) == 30
    files = sorted(p.name for p in tmp_path.iterdir() if p.name != "manifest.csv")
    assert files == sorted(r["file"] for r in rows)
    assert len({r["sku"] for r in rows}) == 30
    assert {Path(f).suffix for f in files} == {".jpg", ".png", ".webp"}

    spec = PreprocessSpec()
    formats, rotated, transparent = set(), 0, 0
    for row in rows:
        index = int(row["index"])
        assert row["label"] == FASHION_MNIST_LABELS[int(data.y_test[index])]
        assert row["merchant_id"].startswith("merchant-")
        blob = (tmp_path / row["file"]).read_bytes()
        with Image.open(tmp_path / row["file"]) as raw:
            formats.add(raw.format)
            orientation = raw.getexif().get(0x0112, 1)
            if raw.mode == "RGBA":
                transparent += 1
                assert raw.format in ("PNG", "WEBP")
        rotated += orientation != 1
        img, _ = decode(blob, limits=LIMITS)
        # upright after EXIF: the preprocessed photo looks like the item it was made from
        arr = to_model_input(img, spec)[..., 0]
        assert np.corrcoef(arr.ravel(), data.x_test[index].ravel())[0, 1] > 0.75, row
    assert formats == {"JPEG", "PNG", "WEBP"}
    assert 5 <= rotated <= 25
    assert transparent >= 1


def test_write_catalog_is_deterministic(data: FashionMNIST, tmp_path: Path) -> None:
    def digest(out: Path, workers: int) -> dict[str, str]:
        write_catalog(data.x_test, data.y_test, out, n=8, seed=3, workers=workers)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}

    assert digest(tmp_path / "a", 1) == digest(tmp_path / "b", 2)


def test_write_catalog_size_range(data: FashionMNIST, tmp_path: Path) -> None:
    """The longest side follows `size_range`; the default is `make_product_photo`'s."""
    manifest = write_catalog(
        data.x_test, data.y_test, tmp_path / "big", n=12, seed=3, size_range=(1800, 2000)
    )
    for row in read_manifest(manifest):
        with Image.open(tmp_path / "big" / row["file"]) as img:
            assert 1800 <= max(img.size) <= 2000, row
    default = write_catalog(data.x_test, data.y_test, tmp_path / "a", n=4, seed=3)
    explicit = write_catalog(
        data.x_test, data.y_test, tmp_path / "b", n=4, seed=3, size_range=DEFAULT_SIZE_RANGE
    )
    assert DEFAULT_SIZE_RANGE == (600, 1400)
    for a, b in zip(read_manifest(default), read_manifest(explicit), strict=True):
        blob_a = (tmp_path / "a" / a["file"]).read_bytes()
        assert blob_a == (tmp_path / "b" / b["file"]).read_bytes()


def test_write_catalog_jpeg_only_flattens_transparency(data: FashionMNIST, tmp_path: Path) -> None:
    manifest = write_catalog(
        data.x_test,
        data.y_test,
        tmp_path,
        n=12,
        seed=5,
        formats=("jpeg",),
        exif_rotate_fraction=0.0,
    )
    for row in read_manifest(manifest):
        assert row["file"].endswith(".jpg")
        with Image.open(tmp_path / row["file"]) as img:
            assert img.mode == "RGB" and img.getexif().get(0x0112) is None


def test_write_catalog_rejects_bad_arguments(data: FashionMNIST, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="formats"):
        write_catalog(data.x_test, data.y_test, tmp_path, n=1, seed=0, formats=("gif",))
    with pytest.raises(ValueError):
        write_catalog(data.x_test[:3], data.y_test[:2], tmp_path, n=1, seed=0)

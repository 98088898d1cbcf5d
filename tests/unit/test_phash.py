"""The perceptual hash: stable under the edits sellers make, apart for other products."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from vitrine.pipeline.inference.phash import (
    BITS,
    DUPLICATE_BITS,
    SHAPE_SIDE,
    hamming,
    perceptual_hash,
)
from vitrine.pipeline.synthetic.photos import PALETTE, make_product_photo
from vitrine.pipeline.synthetic.republish import edit, listings
from vitrine.pipeline.synthetic.studio import make_studio_photo
from vitrine.pipeline.training.datasets import FashionMNIST, load_fashion_mnist
from vitrine.settings import SAMPLE_FASHION_DIR

SHAPE_BITS = SHAPE_SIDE * SHAPE_SIDE


@pytest.fixture(scope="module")
def data() -> FashionMNIST:
    return load_fashion_mnist(SAMPLE_FASHION_DIR)


def _photo(item: np.ndarray, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    photo, _ = make_product_photo(item, rng=rng, size_range=(500, 700))
    flat = Image.new("RGB", photo.size, (255, 255, 255))
    flat.paste(photo, mask=photo.getchannel("A") if photo.mode == "RGBA" else None)
    return flat


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_hash_is_320_bits_of_text_and_deterministic(data: FashionMNIST) -> None:
    photo = _photo(data.x_test[0], seed=1)
    bits = perceptual_hash(photo)
    assert len(bits) == BITS == 320 and set(bits) <= {"0", "1"}
    assert perceptual_hash(photo.copy()) == bits
    assert "1" in bits[:SHAPE_BITS] and "0" in bits[:SHAPE_BITS]  # a product, not a blank


def test_blank_frame_hashes_to_zeros() -> None:
    assert perceptual_hash(Image.new("RGB", (300, 200), (255, 255, 255))) == "0" * BITS
    assert perceptual_hash(Image.new("L", (40, 40), 17)) == "0" * BITS


def test_the_same_photo_edited_stays_within_the_threshold(data: FashionMNIST) -> None:
    photo = _photo(data.x_test[1], seed=2)
    original = perceptual_hash(photo)
    width, height = photo.size
    padded = Image.new("RGB", (width + 120, height + 120), (255, 255, 255))
    padded.paste(photo, (60, 60))
    darker_padded = Image.new("RGB", padded.size, (255, 255, 255))  # the padding stays white
    darker_padded.paste(ImageEnhance.Brightness(photo).enhance(0.9), (60, 60))
    variants = {
        "darker, then padded with white": darker_padded,
        "half size": photo.resize((width // 2, height // 2), Image.Resampling.LANCZOS),
        "jpeg 60": _jpeg(photo, 60),
        "brighter": ImageEnhance.Brightness(photo).enhance(1.1),
        "darker": ImageEnhance.Brightness(photo).enhance(0.9),
        "padded": padded,
        "cropped 3%": photo.crop((width * 3 // 100, height * 3 // 100, width, height)),
    }
    for name, variant in variants.items():
        assert hamming(original, perceptual_hash(variant)) <= DUPLICATE_BITS, name


def test_a_pale_product_survives_brightening(data: FashionMNIST) -> None:
    """The palette's palest colours (light grey, lavender) differ from white by < 100 levels
    where opaque and much less at their soft edges and in their texture, which a fixed
    tolerance erased once brightened; the hash's tolerance follows the photo."""
    alpha = Image.fromarray(data.x_test[4]).resize((300, 300), Image.Resampling.BICUBIC)
    photo = Image.new("RGB", (420, 420), (255, 255, 255))
    photo.paste(Image.new("RGB", (300, 300), (176, 160, 210)), (60, 60), alpha)
    original = perceptual_hash(photo)
    assert "1" in original[:SHAPE_BITS]
    for factor in (0.9, 1.1):
        edited = perceptual_hash(ImageEnhance.Brightness(photo).enhance(factor))
        assert hamming(original, edited) <= DUPLICATE_BITS, factor


def test_other_products_and_colours_are_far_apart(data: FashionMNIST) -> None:
    shirt, boot = data.x_test[data.y_test == 0][0], data.x_test[data.y_test == 9][0]
    assert (
        hamming(perceptual_hash(_photo(shirt, 3)), perceptual_hash(_photo(boot, 3)))
        > 2 * DUPLICATE_BITS
    )
    # The same cut in another colour: the colour bits keep them apart.
    rng = np.random.default_rng(4)
    grey, _ = make_product_photo(shirt, rng=rng, size_range=(500, 500))
    grey = grey.convert("RGB")
    arr = np.asarray(grey).astype(np.int16)
    recoloured = Image.fromarray(np.clip(arr * [0.4, 1.0, 0.4], 0, 255).astype(np.uint8))
    shape_a, shape_b = perceptual_hash(grey), perceptual_hash(recoloured)
    assert hamming(shape_a[SHAPE_BITS:], shape_b[SHAPE_BITS:]) > DUPLICATE_BITS


def test_a_watermark_in_a_corner_does_not_move_the_hash(data: FashionMNIST) -> None:
    photo = _photo(data.x_test[2], seed=5)
    marked = photo.copy()
    width, height = photo.size
    marked.paste((90, 90, 90), (width - 80, height - 20, width - 10, height - 8))
    assert hamming(perceptual_hash(photo), perceptual_hash(marked)) <= 16


def test_republished_listings_are_deterministic_and_labelled(data: FashionMNIST) -> None:
    items, labels = data.x_test[:4], data.y_test[:4]
    first = list(listings(items, labels, seed=9))
    again = list(listings(items, labels, seed=9))
    assert [(x.item, x.edits, x.data) for x in first] == [(x.item, x.edits, x.data) for x in again]
    originals = [x for x in first if not x.edits]
    assert [x.item for x in originals] == [0, 1, 2, 3]
    copies = [x for x in first if x.edits]
    assert 4 <= len(copies) <= 12
    assert all(x.edits[-2:] == ("resize", "jpeg") for x in copies)
    assert all(x.label == int(labels[x.item]) for x in first)
    assert all(Image.open(io.BytesIO(x.data)).format == "JPEG" for x in first)


def test_edit_applies_only_what_it_names(data: FashionMNIST) -> None:
    photo = _photo(data.x_test[3], seed=6)
    seen: set[str] = set()
    for seed in range(20):
        edited, edits = edit(photo, np.random.default_rng(seed))
        seen.update(edits)
        if "pad" not in edits and "crop" not in edits:
            ratio = edited.width / edited.height
            assert ratio == pytest.approx(photo.width / photo.height, rel=0.02)
    assert seen == {"crop", "brightness", "watermark", "pad", "resize", "jpeg"}


def _cut_out(item: np.ndarray, seed: int) -> Image.Image:
    """A transparent cut-out as a PNG decodes: RGBA, black under the transparent pixels."""
    rng = np.random.default_rng(seed)
    while True:  # the generator makes some photos on white: draw until a cut-out comes
        photo, meta = make_product_photo(item, rng=rng, size_range=(500, 700))
        if photo.mode == "RGBA":
            break
    rgba = np.asarray(photo).copy()
    rgba[rgba[..., 3] == 0, :3] = 0  # what lies under the alpha is not the photo
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return Image.open(io.BytesIO(buf.getvalue()))


def test_cut_outs_are_hashed_as_seen_on_white(data: FashionMNIST) -> None:
    """Transparency is composited onto white before hashing: two different cut-outs are
    far apart (they were 0 bits apart when the black under the alpha was hashed), and a
    cut-out hashes as the same product on white does."""
    sneaker, bag = data.x_test[data.y_test == 7][0], data.x_test[data.y_test == 8][0]
    a, b = _cut_out(sneaker, 11), _cut_out(bag, 12)
    assert hamming(perceptual_hash(a), perceptual_hash(b)) > 2 * DUPLICATE_BITS
    on_white = Image.new("RGB", a.size, (255, 255, 255))
    on_white.paste(a, mask=a.getchannel("A"))
    # (the cut-out is reduced with its alpha premultiplied, the photo on white as RGB:
    # rounding moves a few bits, against the 30 that make a duplicate)
    assert hamming(perceptual_hash(a), perceptual_hash(on_white)) <= 6
    assert a.mode == "RGBA"  # hashing never changed the caller's image


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_studio_shot_and_its_copies_stay_within_the_threshold(
    data: FashionMNIST, seed: int
) -> None:
    """A studio sweep is coloured, vignetted and shadowed: weighed against its median
    colour, the vignetting counted as product and a crop or a brightness change moved the
    hash by 50-110 bits. Flat-fielded like the model's input, the product alone is hashed;
    padded with white, the shot is found inside its padding."""
    rng = np.random.default_rng(seed)
    shot, _ = make_studio_photo(data.x_test[seed + 10], rng=rng, palette=PALETTE)
    width, height = shot.size
    cropped = shot.crop((width // 25, height // 25, width - width // 30, height - height // 20))
    side = max(width, height) + 40
    padded = Image.new("RGB", (side, side), (255, 255, 255))
    padded.paste(shot, ((side - width) // 2, (side - height) // 2))
    copies = {
        "crop + brightness": ImageEnhance.Brightness(cropped).enhance(1.08),
        "darker": ImageEnhance.Brightness(shot).enhance(0.92),
        "padded to a square, JPEG": _jpeg(padded, 80),
    }
    original = perceptual_hash(shot)
    far = {
        name: hamming(original, perceptual_hash(copy))
        for name, copy in copies.items()
        if hamming(original, perceptual_hash(copy)) > DUPLICATE_BITS
    }
    assert not far

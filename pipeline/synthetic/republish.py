"""Near-duplicate listings, generated: each product photo re-published as edited copies.

What `vitrine bench duplicates` measures the perceptual hash on. Every item is one
Fashion-MNIST image rendered as a merchant's studio photo (`photos.make_product_photo`),
then re-published 1-3 times the way sellers re-use a photo: lightly cropped (up to 5 %
per side), brightened or darkened (up to 10 %), given a small semi-transparent text
watermark in a corner, padded with white (to a square, or by 2-15 % per side), resized
to 50-150 % and saved as JPEG at quality 60-95. Each edit except the last two is drawn
independently, so copies carry zero to four of them. The other items, of the same ten
classes, are the distinct listings the hash must keep apart.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from vitrine.pipeline.synthetic.photos import make_product_photo

SIZE_RANGE = (400, 900)


@dataclass(frozen=True)
class Listing:
    """One photo as a seller publishes it: JPEG bytes, the item it shows, the edits made."""

    item: int  # index of the source item: equal items are duplicates
    label: int  # the source item's class
    data: bytes
    edits: tuple[str, ...]  # () for the original


def listings(
    items: np.ndarray, labels: np.ndarray, *, seed: int, copies: tuple[int, int] = (1, 3)
) -> Iterator[Listing]:
    """For each item (uint8 28x28, bright on black): its original, then 1-3 edited copies."""
    rng = np.random.default_rng(seed)
    for index, (item, label) in enumerate(zip(items, labels, strict=True)):
        photo, _ = make_product_photo(item, rng=rng, size_range=SIZE_RANGE)
        if photo.mode == "RGBA":  # a transparent cut-out, listed on white
            flat = Image.new("RGB", photo.size, (255, 255, 255))
            flat.paste(photo, mask=photo.getchannel("A"))
            photo = flat
        yield Listing(index, int(label), _jpeg(photo, 92), ())
        for _ in range(int(rng.integers(copies[0], copies[1] + 1))):
            edited, edits = edit(photo, rng)
            yield Listing(index, int(label), _jpeg(edited, int(rng.integers(60, 96))), edits)


def edit(photo: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, tuple[str, ...]]:
    """One re-published copy of `photo` (RGB) and the names of the edits applied."""
    img, edits = photo, []
    width, height = img.size
    if rng.random() < 0.6:
        left, top, right, bottom = rng.uniform(0.0, 0.05, size=4)
        box = (
            int(left * width),
            int(top * height),
            width - int(right * width),
            height - int(bottom * height),
        )
        img = img.crop(box)
        edits.append("crop")
    if rng.random() < 0.6:
        img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.9, 1.1)))
        edits.append("brightness")
    if rng.random() < 0.5:
        img = _watermark(img, rng)
        edits.append("watermark")
    if rng.random() < 0.5:
        img = _pad(img, rng)
        edits.append("pad")
    scale = float(rng.uniform(0.5, 1.5))
    size = (max(16, round(img.width * scale)), max(16, round(img.height * scale)))
    edits.append("resize")
    return img.resize(size, Image.Resampling.LANCZOS), (*edits, "jpeg")


def _watermark(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A shop's name in grey, 4-7 % of the shorter side high, 40-70 % opaque, in a corner."""
    width, height = img.size
    size = max(8, int(min(width, height) * rng.uniform(0.04, 0.07)))
    font = ImageFont.load_default(size=size)
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    text = "(c) shop"
    text_width = draw.textlength(text, font=font)
    corner, margin = int(rng.integers(4)), int(min(width, height) * 0.03)
    x = margin if corner in (0, 2) else int(width - text_width - margin)
    y = margin if corner in (0, 1) else height - size - margin
    draw.text((x, y), text, font=font, fill=(90, 90, 90, int(rng.integers(100, 180))))
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


def _pad(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """White padding: to a square half the time, else 2-15 % of the longer side all round."""
    width, height = img.size
    if rng.random() < 0.5:
        canvas_size = (max(width, height), max(width, height))
    else:
        pad = int(max(width, height) * rng.uniform(0.02, 0.15))
        canvas_size = (width + 2 * pad, height + 2 * pad)
    canvas = Image.new("RGB", canvas_size, (255, 255, 255))
    canvas.paste(img, ((canvas_size[0] - width) // 2, (canvas_size[1] - height) // 2))
    return canvas


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()

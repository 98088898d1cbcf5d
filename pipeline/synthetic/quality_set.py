"""Listing photos with known defects, generated: what `vitrine bench quality` scores on.

Every item is one Fashion-MNIST image rendered as a merchant's photo
(`photos.make_product_photo`, flattened onto white), then framed the way a marketplace
wants a main image: the product spans 70-92 % of the frame in its long direction, at
least 3 % margin all round, longest side 1,000-1,800 px, JPEG quality 80-95. Each item
gives that clean photo and one copy with one defect, in turn:

- `blurred`: Gaussian blur of 0.5-1.2 % of the longest side (out of focus, camera shake);
- `too_small`: longest side 300-850 px;
- `coloured_background`: the white backdrop multiplied by a pastel, grey or saturated
  paper colour with a slight gradient (every channel <= 215 somewhere in the colour);
- `cluttered_background`: multiplied by a scene of 25-60 random boxes and ellipses;
- `object_tiny`: the product spans 15-40 % of the frame;
- `object_cut_off`: 10-30 % of the product lies past one edge of the frame;
- `too_dark`: brightness scaled by 0.3-0.6 (under-exposed).

`RULES_OF` says which rules of `vitrine.pipeline.inference.quality` each defect must trip: a
darkened
photo's white backdrop is grey, so it fails the background rule as well, honestly.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from vitrine.pipeline.synthetic.photos import make_product_photo

DEFECTS = (
    "blurred",
    "too_small",
    "coloured_background",
    "cluttered_background",
    "object_tiny",
    "object_cut_off",
    "too_dark",
)
RULES_OF: dict[str, tuple[str, ...]] = {
    "blurred": ("blurry",),
    "too_small": ("small_image",),
    "coloured_background": ("background_not_white",),
    "cluttered_background": ("background_not_white",),
    "object_tiny": ("product_too_small",),
    "object_cut_off": ("product_cut_off",),
    "too_dark": ("too_dark", "background_not_white"),
}
CLEAN_SPAN = (0.70, 0.92)
TINY_SPAN = (0.15, 0.40)
CLEAN_SIDE = (1000, 1800)
SMALL_SIDE = (300, 850)
MARGIN = 0.03
BLUR = (0.015, 0.03)  # Gaussian radius, of the longest side


@dataclass(frozen=True)
class QualityPhoto:
    """One generated listing photo: JPEG bytes, its defect (None: clean), the rules it
    must fail."""

    item: int
    defect: str | None
    data: bytes
    expected: tuple[str, ...]


def quality_photos(items: np.ndarray, *, seed: int) -> Iterator[QualityPhoto]:
    """For each item (uint8 28x28, bright on black): a clean photo, then one defective copy
    (defects taken in turn, so every defect is equally common)."""
    rng = np.random.default_rng(seed)
    for index, item in enumerate(items):
        photo, _ = make_product_photo(item, rng=rng, size_range=(700, 1100))
        if photo.mode == "RGBA":  # a transparent cut-out, listed on white
            flat = Image.new("RGB", photo.size, (255, 255, 255))
            flat.paste(photo, mask=photo.getchannel("A"))
            photo = flat
        yield QualityPhoto(index, None, _jpeg(_framed(photo, rng, None), rng), ())
        defect = DEFECTS[index % len(DEFECTS)]
        img = _defective(_framed(photo, rng, defect), rng, defect)
        yield QualityPhoto(index, defect, _jpeg(img, rng), RULES_OF[defect])


def _object_box(photo: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of what is clearly not white backdrop."""
    cell = 4  # on a 4x box-reduced copy: sensor noise averages out, faint edges stay
    far = np.asarray(photo.convert("L").reduce(cell)) < 246
    rows, cols = np.flatnonzero(far.any(axis=1)), np.flatnonzero(far.any(axis=0))
    if not rows.size:
        return 0, 0, photo.width, photo.height
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return box[0] * cell, box[1] * cell, box[2] * cell, box[3] * cell


def _framed(photo: Image.Image, rng: np.random.Generator, defect: str | None) -> Image.Image:
    """The photo re-framed around its product (span, margins, final size by `defect`)."""
    left, top, right, bottom = _object_box(photo)
    bw, bh = right - left, bottom - top
    span = float(rng.uniform(*(TINY_SPAN if defect == "object_tiny" else CLEAN_SPAN)))
    aspect = float(rng.uniform(0.75, 4 / 3))  # frame width / height
    if bw / bh >= aspect:
        width = bw / span
        height = width / aspect
    else:
        height = bh / span
        width = height * aspect
    x0 = left - rng.uniform(MARGIN * width, width - bw - MARGIN * width)
    y0 = top - rng.uniform(MARGIN * height, height - bh - MARGIN * height)
    if defect == "object_cut_off":  # push 10-30 % of the product past one edge
        past = float(rng.uniform(0.10, 0.30))
        side = int(rng.integers(4))
        if side == 0:
            x0 = left + past * bw
        elif side == 1:
            x0 = right - past * bw - width
        elif side == 2:
            y0 = top + past * bh
        else:
            y0 = bottom - past * bh - height
    frame = Image.new("RGB", (round(width), round(height)), (255, 255, 255))
    frame.paste(photo, (round(-x0), round(-y0)))
    longest = int(rng.integers(*(SMALL_SIDE if defect == "too_small" else CLEAN_SIDE)))
    scale = longest / max(frame.size)
    size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
    return frame.resize(size, Image.Resampling.LANCZOS)


def _defective(img: Image.Image, rng: np.random.Generator, defect: str) -> Image.Image:
    """`img` with a pixel defect applied (framing defects are `_framed`'s)."""
    if defect == "blurred":
        radius = float(rng.uniform(*BLUR)) * max(img.size)
        return img.filter(ImageFilter.GaussianBlur(radius))
    if defect == "too_dark":
        return ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.3, 0.55)))
    if defect == "coloured_background":
        return _multiply(img, _paper(img.size, rng))
    if defect == "cluttered_background":
        return _multiply(img, _clutter(img.size, rng))
    return img


def _multiply(img: Image.Image, backdrop: Image.Image) -> Image.Image:
    """White shows the backdrop, the product darkens it: a product laid on it."""
    out = np.asarray(img, np.float32) * np.asarray(backdrop, np.float32) / 255.0
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _paper(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A plain coloured backdrop with a slight top-to-bottom gradient."""
    colour = rng.uniform(180, 250, size=3)
    colour[int(rng.integers(3))] = rng.uniform(130, 215)  # never near white
    ramp = np.linspace(1.0, float(rng.uniform(0.85, 1.0)), size[1], dtype=np.float32)
    paper = ramp[:, None, None] * colour[None, None, :].astype(np.float32)
    return Image.fromarray(np.repeat(paper, size[0], axis=1).astype(np.uint8))


def _clutter(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A busy scene: a light surface covered in random boxes and ellipses."""
    scene = Image.new("RGB", size, tuple(int(c) for c in rng.integers(150, 256, size=3)))
    draw = ImageDraw.Draw(scene)
    for _ in range(int(rng.integers(25, 61))):
        w, h = (int(rng.uniform(0.08, 0.35) * max(size)) for _ in range(2))
        x, y = int(rng.integers(-w // 2, size[0])), int(rng.integers(-h // 2, size[1]))
        fill = tuple(int(c) for c in rng.integers(20, 256, size=3))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((x, y, x + w, y + h), fill=fill)
    return scene


def _jpeg(img: Image.Image, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(80, 96)))
    return buf.getvalue()

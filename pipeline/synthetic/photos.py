"""Merchant-like product photos made from Fashion-MNIST items (deterministic given a seed).

Used to check that `vitrine.pipeline.inference.preprocess` brings real uploads back to what the
model was
trained on, and by the demo to fill a catalogue. Each photo is the 28x28 item scaled up
smoothly, coloured (pixel = white*(1-a) + colour*a with a = item/255), optionally with a
light drop shadow and sensor noise, placed off-centre on a larger non-square white canvas,
or on a TRANSPARENT one (RGBA, alpha = a, black under the transparent pixels) about a
quarter of the time.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageFilter

from vitrine.pipeline.synthetic import studio
from vitrine.pipeline.types import FASHION_MNIST_LABELS

#: Realistic product colours, including light ones (but nothing near white, which would
#: vanish on a white background). Name -> sRGB.
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (22, 22, 24)),
    ("charcoal", (58, 60, 64)),
    ("grey", (128, 128, 132)),
    ("light grey", (176, 176, 178)),
    ("navy", (30, 42, 84)),
    ("denim", (64, 92, 134)),
    ("sky blue", (140, 182, 222)),
    ("burgundy", (112, 28, 44)),
    ("red", (192, 36, 44)),
    ("pink", (226, 150, 172)),
    ("olive", (96, 100, 52)),
    ("forest green", (36, 88, 56)),
    ("mint", (150, 206, 176)),
    ("brown", (104, 68, 42)),
    ("tan", (190, 150, 104)),
    ("beige", (208, 190, 160)),
    ("mustard", (206, 164, 48)),
    ("orange", (224, 110, 40)),
    ("purple", (96, 58, 130)),
    ("lavender", (176, 160, 210)),
)

TRANSPARENT_FRACTION = 0.25
SHADOW_FRACTION = 0.3
NOISE_FRACTION = 0.4
#: Longest side of a generated photo, in pixels (both ends included).
DEFAULT_SIZE_RANGE = (600, 1400)
MANIFEST_HEADER = ("file", "label", "sku", "merchant_id", "index")
#: Photo styles: tidy merchant shots (white/transparent) or studio shots
# (`vitrine.pipeline.synthetic.studio`).
STYLES = ("merchant", "studio")

# EXIF orientation tag -> the transpose that makes stored pixels upright (what
# ImageOps.exif_transpose applies), and its inverse (what we apply before storing).
_UPRIGHT = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_270,
    8: Image.Transpose.ROTATE_90,
}
_STORE = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}


def make_product_photo(
    item: np.ndarray,
    *,
    rng: np.random.Generator,
    size_range: tuple[int, int] = DEFAULT_SIZE_RANGE,
) -> tuple[Image.Image, dict[str, Any]]:
    """One 28x28 uint8 item (bright on black) -> a merchant-style photo and its metadata.

    The canvas' longest side is drawn from `size_range`, aspect 3:4..4:3; the item's square
    frame gets margins of 5-40% on each side (so it is off-centre and scaled x3..x45).
    Returns an "RGB" image on white or an "RGBA" one on transparent, and a dict with
    colour, rgb, background, offset_x/offset_y/object_size (the item frame in the canvas),
    width, height, shadow, noise_sigma.
    """
    item, width, height = studio.frame_size(item, rng, size_range)
    left, right, top, bottom = rng.uniform(0.05, 0.40, size=4)
    side = max(8, int(min(width * (1 - left - right), height * (1 - top - bottom))))
    x0, y0 = round(left * width), round(top * height)

    name, rgb = PALETTE[int(rng.integers(len(PALETTE)))]
    transparent = bool(rng.random() < TRANSPARENT_FRACTION)
    shadow = (not transparent) and bool(rng.random() < SHADOW_FRACTION)
    noise_sigma = (
        float(rng.uniform(1.0, 3.0)) if (not transparent and rng.random() < NOISE_FRACTION) else 0.0
    )

    # Smooth upsampling: bicubic, then a blur of ~1/4 source pixel to hide the pixel grid.
    scale = side / item.shape[1]
    alpha = Image.fromarray(item).resize((side, side), Image.Resampling.BICUBIC)
    alpha = alpha.filter(ImageFilter.GaussianBlur(radius=0.25 * scale))
    colour = Image.new("RGB", (side, side), rgb)

    if transparent:
        photo = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        obj = colour.convert("RGBA")
        obj.putalpha(alpha)
        photo.paste(obj, (x0, y0))
    else:
        photo = Image.new("RGB", (width, height), (255, 255, 255))
        if shadow:
            opacity = float(rng.uniform(0.08, 0.15))
            blur = max(2.0, side * 0.03)
            mask = alpha.filter(ImageFilter.GaussianBlur(radius=blur))
            mask = mask.point([round(v * opacity) for v in range(256)])
            dx, dy = (round(side * float(f)) for f in rng.uniform(0.01, 0.04, size=2))
            photo.paste((60, 60, 60), (x0 + dx, y0 + dy), mask)
        box = (x0, y0, x0 + side, y0 + side)
        # pixel = background * (1 - a) + colour * a
        photo.paste(Image.composite(colour, photo.crop(box), alpha), box)
        if noise_sigma:  # luminance noise, added in C: (photo + noise - 128), clipped
            grain = rng.standard_normal((height, width), dtype=np.float32)
            grain = np.clip(grain * np.float32(noise_sigma) + np.float32(128.5), 0, 255)
            noise = Image.fromarray(grain.astype(np.uint8)).convert("RGB")
            photo = ImageChops.add(photo, noise, scale=1.0, offset=-128)

    meta: dict[str, Any] = {
        "colour": name,
        "rgb": "#{:02x}{:02x}{:02x}".format(*rgb),
        "background": "transparent" if transparent else "white",
        "offset_x": x0,
        "offset_y": y0,
        "object_size": side,
        "width": width,
        "height": height,
        "shadow": shadow,
        "noise_sigma": round(noise_sigma, 3),
    }
    return photo, meta


def rotate_for_exif(img: Image.Image, orientation: int) -> tuple[Image.Image, Image.Exif]:
    """Pixels to store plus the EXIF block to save them with, so that a viewer (or
    `ImageOps.exif_transpose`) honouring the orientation tag shows `img` upright again.

    `orientation` is 1 (nothing to do), 3 (stored upside down), 6 (stored rotated 90 degrees
    counter-clockwise; viewers turn it clockwise) or 8 (the reverse of 6).
    """
    exif = Image.Exif()
    if orientation == 1:
        return img, exif
    if orientation not in _STORE:
        raise ValueError(f"orientation must be 1, 3, 6 or 8, got {orientation}")
    exif[0x0112] = orientation
    return img.transpose(_STORE[orientation]), exif


def _flatten_on_white(img: Image.Image) -> Image.Image:
    white = Image.new("RGB", img.size, (255, 255, 255))
    white.paste(img, (0, 0), img.getchannel("A"))
    return white


def render_photo(
    item: np.ndarray,
    *,
    rng: np.random.Generator,
    formats: Sequence[str],
    size_range: tuple[int, int] | None = None,
    style: str = "merchant",
) -> tuple[Image.Image, str]:
    """One 28x28 item -> a photo of `style` and the format to store it in (drawn from
    `formats`; a transparent photo goes to PNG/WebP, or is flattened on white). The
    photo's longest side is drawn from `size_range`, by default the style's own."""
    if style == "studio":
        photo, meta = studio.make_studio_photo(
            item, rng=rng, palette=PALETTE, size_range=size_range or studio.STUDIO_SIZE_RANGE
        )
        formats = ("jpeg",)
    else:
        photo, meta = make_product_photo(item, rng=rng, size_range=size_range or DEFAULT_SIZE_RANGE)
    fmt = formats[int(rng.integers(len(formats)))]
    if meta["background"] == "transparent" and fmt == "jpeg":
        keeps_alpha = [f for f in formats if f != "jpeg"]
        if keeps_alpha:
            fmt = keeps_alpha[int(rng.integers(len(keeps_alpha)))]
        else:
            photo = _flatten_on_white(photo)
    return photo, fmt


def encode_photo(
    photo: Image.Image,
    fmt: str,
    *,
    rng: np.random.Generator,
    exif_rotate_fraction: float,
    style: str = "merchant",
) -> bytes:
    """`photo` as a file of `fmt`, stored rotated with an EXIF orientation tag a fraction
    `exif_rotate_fraction` of the time, at the quality a merchant (or a studio) saves."""
    orientation = int(rng.choice([3, 6, 8])) if rng.random() < exif_rotate_fraction else 1
    photo, exif = rotate_for_exif(photo, orientation)
    out = io.BytesIO()
    if fmt == "jpeg":
        quality = studio.jpeg_quality(rng) if style == "studio" else int(rng.integers(80, 96))
        photo.save(out, "JPEG", quality=quality, exif=exif)
    elif fmt == "png":
        photo.save(out, "PNG", compress_level=1, exif=exif)
    else:
        photo.save(out, "WEBP", quality=int(rng.integers(80, 96)), method=0, exif=exif)
    return out.getvalue()


def _encode_one(
    x: np.ndarray,
    y: np.ndarray,
    out_dir: Path,
    *,
    index: int,
    position: int,
    seed: int,
    formats: Sequence[str],
    exif_rotate_fraction: float,
    size_range: tuple[int, int],
    style: str,
) -> tuple[str, str, str, str, int]:
    rng = np.random.default_rng([seed, position])  # per photo: order/threads don't matter
    photo, fmt = render_photo(
        x[index],
        rng=rng,
        formats=formats,
        size_range=size_range if style == "merchant" else None,
        style=style,
    )
    merchant_id = f"merchant-{int(rng.integers(1, 13)):02d}"
    sku = f"SKU-{seed}-{position:06d}"
    name = f"{position:06d}-{sku}.{_EXTENSIONS[fmt]}"
    data = encode_photo(photo, fmt, rng=rng, exif_rotate_fraction=exif_rotate_fraction, style=style)
    (out_dir / name).write_bytes(data)
    return name, FASHION_MNIST_LABELS[int(y[index])], sku, merchant_id, index


def write_catalog(
    x: np.ndarray,
    y: np.ndarray,
    out_dir: str | Path,
    *,
    n: int,
    seed: int,
    formats: Sequence[str] = ("jpeg", "png", "webp"),
    exif_rotate_fraction: float = 0.2,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    size_range: tuple[int, int] = DEFAULT_SIZE_RANGE,
    style: str = "merchant",
) -> Path:
    """Write `n` merchant-style photos of items from `x` (labels `y`) plus `manifest.csv`.

    Formats are mixed (JPEG quality 80-95, PNG, WebP quality 80-95); transparent photos are
    only stored as PNG/WebP (flattened on white if `formats` has neither). A fraction
    `exif_rotate_fraction` is stored rotated with an EXIF orientation tag of 3, 6 or 8 that
    `ImageOps.exif_transpose` undoes. The output is identical for the same inputs and seed,
    whatever `workers` (threads, default: CPU count up to 8; Pillow releases the GIL while
    resampling and encoding).
    `size_range` is the range of each photo's longest side in pixels (`tools/bound.py`
    uses 500-2,000, the spread of merchant uploads).
    `style` "studio" makes `vitrine.pipeline.synthetic.studio` photos instead (coloured backdrops,
    shadow,
    tilt, fill, always JPEG at quality 50-85; `formats` and `size_range` do not apply).
    `progress(k)` is called with the number of photos written so far.
    Returns the path of `manifest.csv` (columns file,label,sku,merchant_id,index).
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 3 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x must be (N, H, W) with N == len(y) > 0, got {x.shape}, {y.shape}")
    formats = tuple(f.lower() for f in formats)
    unknown = [f for f in formats if f not in _EXTENSIONS]
    if not formats or unknown:
        raise ValueError(f"formats must be a non-empty subset of {tuple(_EXTENSIONS)}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    picks = np.random.default_rng(seed).choice(len(x), size=n, replace=n > len(x))

    def job(position: int) -> tuple[str, str, str, str, int]:
        return _encode_one(
            x,
            y,
            out,
            index=int(picks[position]),
            position=position,
            seed=seed,
            formats=formats,
            exif_rotate_fraction=exif_rotate_fraction,
            size_range=size_range,
            style=style,
        )

    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    rows: list[tuple[str, str, str, str, int]] = []
    if workers <= 1:
        for position in range(n):
            rows.append(job(position))
            if progress is not None:
                progress(len(rows))
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for row in pool.map(job, range(n)):
                rows.append(row)
                if progress is not None:
                    progress(len(rows))

    manifest = out / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)
    return manifest

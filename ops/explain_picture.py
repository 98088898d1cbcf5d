"""The picture `vitrine explain --png` writes: where the model looked, what it answered,
and which training images it found most alike.

Top row: the photo with the Grad-CAM map laid over its own pixels (so a map on the wrong
thing is visible as such), the 28x28 model input with the same map (what the model really
saw, after trimming and scaling), the top labels as bars. Bottom row: the nearest training
images with their true labels and cosine distances, the evidence a person can check.

`heat_tile` is the review desk's smaller cut of the same thing (its item page): the photo
and the photo under the map side by side, the label the map is for, a cold-to-hot key.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from vitrine.pipeline.inference.flatten import flatten

PHOTO_EDGE = 300  # longest side of the photo tile, pixels
INPUT_EDGE = 168  # the 28x28 input, enlarged x6
EVIDENCE_EDGE = 96
PAD = 10
TEXT = (20, 20, 20)
TILE_EDGE = 224  # the desk's picture: two tiles of this longest side, about 470 px wide
TILE_MIN_WIDTH = 360  # a narrow photo still leaves room for the caption and the key
#: Heat colours from cold to hot (dark blue, cyan, yellow, red), like a thermal camera.
_ANCHORS = np.array([[20, 30, 140], [0, 190, 230], [250, 230, 40], [220, 20, 20]], np.float32)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> uint8 (h, w, 3) through `_ANCHORS`, linearly."""
    t = np.clip(heat, 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.minimum(t.astype(np.int64), len(_ANCHORS) - 2)
    frac = (t - low)[..., None]
    rgb = _ANCHORS[low] * (1.0 - frac) + _ANCHORS[low + 1] * frac
    return rgb.astype(np.uint8)


def overlay(base: Image.Image, heat: np.ndarray, strength: float = 0.6) -> Image.Image:
    """`base` with the map blended over it, more opaque where it is hotter; `heat` is
    resized to `base` (it must already be aligned with its pixels)."""
    rgb = np.asarray(base.convert("RGB"), np.float32)
    if heat.shape != rgb.shape[:2]:
        sized = Image.fromarray(heat.astype(np.float32), "F").resize(base.size)
        heat = np.asarray(sized, np.float32)
    alpha = (strength * np.clip(heat, 0.0, 1.0))[..., None]
    mixed = rgb * (1.0 - alpha) + heat_colours(heat).astype(np.float32) * alpha
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))


def _scaled(img: Image.Image, edge: int, resample: Image.Resampling) -> Image.Image:
    factor = edge / max(img.size)
    return img.resize(
        (max(1, round(img.width * factor)), max(1, round(img.height * factor))), resample
    )


def explanation_picture(
    png: Path,
    *,
    photo: Image.Image,
    heat: np.ndarray,
    model_input: np.ndarray,
    cam: np.ndarray,
    caption: str,
    top_k: Sequence[tuple[str, float]],
    evidence: Sequence[tuple[np.ndarray, str]],
) -> Path:
    """Write the picture to `png`. `heat` is aligned with `photo`'s pixels, `cam` with
    `model_input`, the uint8 (size, size, channels) picture the model read
    (`vitrine.ops.explain.input_picture`); `evidence`: 28x28 uint8 training images (bright
    on black, as Fashion-MNIST stores them) with captions, none for a model of a
    merchant's own classes."""
    font = ImageFont.load_default()
    flat = flatten(photo, 3)  # any mode, transparency on white as the model saw it
    small_heat = np.asarray(
        Image.fromarray(heat.astype(np.float32), "F").resize(
            _scaled(flat, PHOTO_EDGE, Image.Resampling.BILINEAR).size, Image.Resampling.BILINEAR
        )
    )
    photo_tile = overlay(_scaled(flat, PHOTO_EDGE, Image.Resampling.LANCZOS), small_heat)
    size = model_input.shape[0]
    pixels = model_input if model_input.shape[-1] == 3 else model_input[..., 0]
    seen = Image.fromarray(np.ascontiguousarray(pixels)).resize(
        (INPUT_EDGE, INPUT_EDGE), Image.Resampling.NEAREST
    )
    input_tile = overlay(seen, cam)
    bars_w = 240
    width = max(
        PAD * 4 + photo_tile.width + INPUT_EDGE + bars_w,
        PAD + len(evidence) * (EVIDENCE_EDGE + PAD),
    )
    top_h = max(photo_tile.height, INPUT_EDGE) + 24
    height = PAD + top_h + PAD + 16 + EVIDENCE_EDGE + 34 + PAD
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, PAD), f"{caption}: Grad-CAM on the photo", fill=TEXT, font=font)
    sheet.paste(photo_tile, (PAD, PAD + 16))
    x_in = PAD * 2 + photo_tile.width
    draw.text((x_in, PAD), f"model input ({size}x{size})", fill=TEXT, font=font)
    sheet.paste(input_tile, (x_in, PAD + 16))
    _bars(draw, (x_in + INPUT_EDGE + PAD, PAD), bars_w, top_k, font)
    y_ev = PAD + top_h + PAD
    draw.text(
        (PAD, y_ev),
        "nearest training images (true label, cosine distance)"
        if evidence
        else "no training images to show: the model learned a merchant's own photos",
        fill=TEXT,
    )
    for i, (image, text) in enumerate(evidence):
        x = PAD + i * (EVIDENCE_EDGE + PAD)
        tile = Image.fromarray(255 - np.asarray(image, np.uint8)).resize(
            (EVIDENCE_EDGE, EVIDENCE_EDGE), Image.Resampling.NEAREST
        )
        sheet.paste(tile, (x, y_ev + 16))
        draw.multiline_text((x, y_ev + 18 + EVIDENCE_EDGE), text, fill=TEXT, font=font)
    png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(png, optimize=True)
    return png


def _bars(
    draw: ImageDraw.ImageDraw,
    at: tuple[int, int],
    width: int,
    top_k: Sequence[tuple[str, float]],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    x, y = at
    draw.text((x, y), "top labels", fill=TEXT, font=font)
    for rank, (label, p) in enumerate(top_k):
        row = y + 20 + rank * 36
        draw.text((x, row), f"{label}  {p:.3f}", fill=TEXT, font=font)
        draw.rectangle((x, row + 14, x + width - PAD, row + 26), outline=(180, 180, 180))
        draw.rectangle((x, row + 14, x + round((width - PAD) * p), row + 26), fill=(220, 20, 20))


def heat_tile(photo: Image.Image, heat: np.ndarray, *, caption: str) -> bytes:
    """PNG bytes: `photo` (any mode, transparency on white as the model saw it) and the
    same photo under `heat` (aligned with its pixels), each at most `TILE_EDGE` on its
    longest side, then `caption` and a key from cold to hot."""
    # 12 px needs FreeType (in Pillow's wheels); a Pillow built without it has one size
    sized = features.check("freetype2")
    font = ImageFont.load_default(size=12) if sized else ImageFont.load_default()
    flat = _scaled(flatten(photo, 3), TILE_EDGE, Image.Resampling.LANCZOS)
    on_tile = Image.fromarray(heat.astype(np.float32), "F").resize(
        flat.size, Image.Resampling.BILINEAR
    )
    hot = overlay(flat, np.asarray(on_tile, np.float32))
    width = max(PAD * 3 + flat.width * 2, TILE_MIN_WIDTH)
    text_h = 16
    sheet = Image.new("RGB", (width, PAD + flat.height + PAD + text_h + PAD), (255, 255, 255))
    left = (width - (flat.width * 2 + PAD)) // 2
    sheet.paste(flat, (left, PAD))
    sheet.paste(hot, (left + flat.width + PAD, PAD))
    draw = ImageDraw.Draw(sheet)
    y = PAD + flat.height + PAD
    key_w, key_h = 60, 8
    key = Image.fromarray(heat_colours(np.tile(np.linspace(0, 1, key_w), (key_h, 1))))
    more_w = round(draw.textlength("more", font=font))
    key_x = width - PAD - more_w - 4 - key_w
    less_w = round(draw.textlength("less", font=font))
    room = key_x - 4 - less_w - 2 * PAD
    while len(caption) > 3 and draw.textlength(caption, font=font) > room:  # a long label
        caption = caption[: -4 if caption.endswith("...") else -1].rstrip() + "..."
    draw.text((PAD, y), caption, fill=TEXT, font=font)
    draw.text((key_x - 4 - less_w, y), "less", fill=TEXT, font=font)
    sheet.paste(key, (key_x, y + 4))
    draw.text((key_x + key_w + 4, y), "more", fill=TEXT, font=font)
    out = io.BytesIO()
    # RGB, not a palette: 256 colours halve the bytes (40-80 KB for a noisy photo) but band
    # the map and its key
    sheet.save(out, "PNG", optimize=True)
    return out.getvalue()

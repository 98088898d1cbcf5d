"""Any decoded photo as a viewer sees it: transparency composited onto white, one way.

A cut-out (a PNG or WebP with alpha, a palette with a transparent entry, a keyed colour)
shows the shop's white page where it is transparent; the pixels under the transparency
are arbitrary (often black). Everything that looks at a photo (the model's input, the
perceptual hash, the quality figures, the desk's thumbnails, pictures) composites it the
same way, here, so two cut-outs never look alike because of what lies under their alpha.

`reduced_copy` is the one pass over a decoded photo's pixels and `working_copy` the one
256 px copy resampled from it that they read (the object view reads the pass itself):
each used to flatten and resample the full decoded image on its own, and a transparent
PNG was composited at full size three times.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _numeric_to_l(img: Image.Image) -> Image.Image:
    """I;16*, I and F modes -> L. Pillow's own convert would clip them to 0/255."""
    arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(arr.max()) if arr.size else 0.0
    if img.mode.startswith("I;16"):
        arr = arr / 257.0
    elif img.mode == "F" and 0.0 <= float(arr.min()) and top <= 1.0:
        arr = arr * 255.0  # float image in [0, 1]
    elif top > 255.0:
        arr = arr * (255.0 / (65535.0 if top <= 65535.0 else top))
    out = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if "transparency" in img.info and isinstance(img.info["transparency"], int | float):
        out[np.asarray(img) == img.info["transparency"]] = 255  # keyed colour -> white
    return Image.fromarray(out)


#: Longest side of the working copy the model input, the perceptual hash and the quality
#: figures read (the desk's thumbnails are `working_copy` at their own sizes).
WORK_SIDE = 256

#: Modes Pillow resizes correctly before flattening: L and RGB, and LA and RGBA, which
#: `Image.resize` premultiplies by their alpha, so colour under transparency never bleeds.
_RESIZE_FIRST = ("L", "RGB", "LA", "RGBA")


def working_copy(
    img: Image.Image, side: int | None = WORK_SIDE, *, enlarge: bool = False
) -> Image.Image:
    """`flatten(img, 3)` with its longest side `side` px (None: its own size; smaller
    images stay as they are unless `enlarge`).

    Resizing comes first where the mode allows (`_RESIZE_FIRST`): compositing a 1.6 Mpx
    RGBA photo onto white costs about 20 ms, a 256 px copy of it next to nothing.
    `reduce` by the whole factor, then bilinear for what is left (`reducing_gap=1`): the
    box average of every source pixel, at the cost of about one pass over the image.
    """
    longest = max(img.size)
    if side is None or (longest <= side and not (enlarge and longest < side)):
        return flatten(img, 3)
    scale = side / longest
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if img.mode in _RESIZE_FIRST and "transparency" not in img.info:
        return flatten(img.resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0), 3)
    return flatten(img, 3).resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0)


def reduced_copy(img: Image.Image, side: int) -> Image.Image:
    """`flatten(img, 3)` box-reduced by the largest whole factor that keeps its longest
    side at least `side` (so between `side` and twice it): the one pass over the decoded
    pixels that every smaller copy is then resampled from, once each. Resampling a
    resampled copy again (384 -> 256 px) blurred the hash's silhouettes enough to cost
    `vitrine bench duplicates` precision (0.9989 -> 0.9967)."""
    factor = max(img.size) // side
    if factor < 2:
        return flatten(img, 3)
    size = (max(1, img.width // factor), max(1, img.height // factor))
    if img.mode in ("L", "RGB") and "transparency" not in img.info:
        return flatten(img.reduce(factor), 3)
    if img.mode in _RESIZE_FIRST and "transparency" not in img.info:  # LA, RGBA: resize
        return flatten(img.resize(size, Image.Resampling.BOX), 3)  # premultiplies by alpha
    return flatten(img, 3).reduce(factor)


def flatten(img: Image.Image, channels: int) -> Image.Image:
    """Any Pillow mode -> "L" (channels 1) or "RGB" (3), transparency composited on WHITE."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    target = "L" if channels == 1 else "RGB"
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        grey = _numeric_to_l(img)
        return grey if channels == 1 else grey.convert("RGB")
    if mode == "La":
        img, mode = img.convert("LA"), "LA"
    if mode in ("LA", "PA", "RGBA", "RGBa") or "transparency" in img.info:
        rgba = img if mode == "RGBA" else img.convert("RGBA")  # (a copy costs 2 ms/1.6 Mpx)
        alpha = rgba.getchannel("A")
        colour = rgba.convert(target)
        white = Image.new(target, img.size, 255 if channels == 1 else (255, 255, 255))
        return Image.composite(colour, white, alpha)
    if mode == target:
        return img
    if mode in ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr"):
        return img.convert(target)
    return img.convert("RGB").convert(target)  # HSV, LAB and anything exotic

"""Uploaded bytes -> model input, reproducing how Fashion-MNIST was made from product photos.

Fashion-MNIST items were made from shop photos by trimming the background, scaling the
longest edge to 28, centring on 28x28 and negating (object bright on black). Merchant
uploads are large colour photos on white or transparent backgrounds, with margins, off
centre, sometimes EXIF-rotated. `to_model_input` bridges that gap:

    flatten (alpha onto WHITE, any Pillow mode)  -> grey or RGB
    box-reduce to the working size               (shorter side >= 256 px, as JPEG drafts)
    foreground = 255 - pixel                      (white background -> 0)
    cut a photo out of padding of another colour (vitrine.pipeline.inference.framing: a
    re-published copy)
    remove a plain backdrop and its vignetting   (vitrine.pipeline.inference.backdrop: a surface
    fitted
                                                  to the border, only if light)
    trim to the object's bounding box            (threshold robust to JPEG noise; the
                                                  heavy groups only, not a watermark)
    resize longest edge to round(size*fit)       (reduce() then LANCZOS), centre on canvas
    mild unsharp mask                            (Fashion-MNIST sharpened after resizing)
    autocontrast (brightest foreground -> 255)   (never on a blank image)
    invert? foreground : 255 - foreground;  * scale + offset

Pure Pillow + numpy, no Python loops over pixels. Large JPEGs are decoded at 1/2..1/8
scale (`Image.draft`), other formats are reduced right after decoding (`working_image`);
decoding PNG and WebP at full size is now most of the time (docs/performance.md). Making
the bytes safe to look at is `vitrine.pipeline.inference.decode`'s job, this module starts from its
image.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageFilter

from vitrine.pipeline.inference.backdrop import lift_backdrop, lift_colour_backdrop
from vitrine.pipeline.inference.decode import DEFAULT_DRAFT_SIZE, decode
from vitrine.pipeline.inference.flatten import flatten
from vitrine.pipeline.inference.framing import product_mask, strip_padding
from vitrine.pipeline.inference.phash import perceptual_hash
from vitrine.pipeline.inference.quality import measure_quality
from vitrine.pipeline.inference.upright import stand_upright, tilt_degrees
from vitrine.pipeline.types import ImageInfo, ImageLimits, PreprocessSpec

# Foreground (255 - pixel, white background = 0) tuning; measured in tests/unit/test_preprocess
_TRIM_ABS = 13  # Fashion-MNIST trimmed pixels within 5% of the background colour (5% of 255)
_TRIM_REL = 0.10  # ... and we also ignore anything under 10% of the brightest foreground
_COARSE_CELLS = 64  # the object is first located on a map this many cells across
_BLANK = 16  # foreground range below this (of 255) = nothing there: return the background
_AUTOCONTRAST_PERCENTILE = 100.0  # Fashion-MNIST items peak at 254-255 (92% exactly 255)
#: Fashion-MNIST sharpened after subsampling; a mild unsharp mask after our LANCZOS
#: reduction brings photos closer to the raw items (MAE 0.055 -> 0.051 on 2000 generated
#: photos; proxy-classifier accuracy unchanged within 0.3 points).
_SHARPEN = ImageFilter.UnsharpMask(radius=1, percent=50, threshold=0)
#: Foreground strength (of 255) from which a pixel belongs to the object in its view.
_VIEW_THRESHOLD = 20
#: Groups of foreground kept in the object's box: at least this share of the heaviest
#: group's solid weight (`vitrine.pipeline.inference.framing.product_mask`). Text is thin and has
# next to
#: none; a faint product falls apart into groups, and the hash's 0.3 dropped parts of a
#: white T-shirt on white (2 of 600 merchant photos labelled otherwise, both wrong).
_KEEP_GROUPS = 0.05


# --------------------------------------------------------------------------- model input


def _bbox(strength: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, right, bottom) of the object in a foreground-strength map.

    Found on a box-averaged copy (~64 cells on the shorter side) so isolated specks, sensor
    and JPEG noise or dithering do not count, then refined at full resolution within one
    cell of that box. None when there is nothing there (blank or uniform image).
    """
    h, w = strength.shape
    cell = max(1, min(h, w) // _COARSE_CELLS)
    coarse = strength if cell == 1 else np.asarray(Image.fromarray(strength).reduce(cell))
    top = int(coarse.max())
    if top - int(coarse.min()) < _BLANK:
        return None
    threshold = max(_TRIM_ABS, _TRIM_REL * top)
    hot = coarse >= threshold
    rows, cols = np.flatnonzero(hot.any(axis=1)), np.flatnonzero(hot.any(axis=0))
    x0, x1 = max(0, (int(cols[0]) - 1) * cell), min(w, (int(cols[-1]) + 2) * cell)
    y0, y1 = max(0, (int(rows[0]) - 1) * cell), min(h, (int(rows[-1]) + 2) * cell)
    fine = strength[y0:y1, x0:x1] >= threshold
    rows, cols = np.flatnonzero(fine.any(axis=1)), np.flatnonzero(fine.any(axis=0))
    if rows.size == 0 or cols.size == 0:  # (a cell's mean >= threshold implies a pixel is)
        return x0, y0, x1, y1
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1


def _heavy_only(strength: np.ndarray, floor: int) -> np.ndarray:
    """`strength` with what exceeds `floor` outside the heavy groups of foreground
    (`vitrine.pipeline.inference.framing.product_mask`) set to 0: a watermark in a corner or a
    speck far
    from the product does not stretch its box. Measured on `vitrine bench catalog`'s
    photos: edited copies labelled right 0.55 -> 0.89 with the padding cut away too,
    originals unchanged (0.935)."""
    present = strength > floor
    if not present.any():
        return strength
    mask = product_mask(np.where(present, strength, 0).astype(np.float32), _KEEP_GROUPS)
    return np.where(present & ~mask, 0, strength).astype(strength.dtype)


def _lift_background(fg: np.ndarray) -> np.ndarray:
    """Remove a plain backdrop that is not white, and its gradient (`lift_backdrop`), so
    vignetting and a grey or pastel studio sweep vanish; `fg` as it is when there is none."""
    lifted = lift_backdrop(fg)
    return fg if lifted is None else lifted


def working_size(spec: PreprocessSpec) -> int:
    """The shorter side every format is decoded and reduced to for `spec`: at least a
    JPEG draft's 256 px, or 4x the model's input (the one formula; explain and its bench
    read photos the way the worker does)."""
    return max(DEFAULT_DRAFT_SIZE, 4 * int(spec.size))


def working_image(img: Image.Image, channels: int, work_size: int | None) -> Image.Image:
    """`flatten`, box-reduced by the largest integer factor k that keeps the shorter side
    >= `work_size` (no reduction when None or k < 2): every later step sees k^2 fewer pixels.

    JPEGs arrive at that size already (libjpeg's draft scaling); PNG and WebP have no such
    thing in Pillow (libwebp can decode scaled, but Pillow does not expose it), so they
    arrive at full size and are reduced here, before the trim and the numpy work. Opaque L
    and RGB are reduced first (fewer pixels to convert); anything with alpha, a palette or
    a transparency key is flattened onto white first, so the average is of what a viewer
    sees and the black under transparent pixels never darkens an edge. Nearest-neighbour
    subsampling instead of the box average measured 0.93x the CPU time and the same
    accuracy, but it aliases fine textures that generated photos do not have: not used.

    Measured: `tools/preprocess_ab.py --rounds 6`, CPU time per image after the allocator
    change, PNG 13.89 -> 13.13 ms, WebP 12.19 -> 11.50, the mix 10.46 -> 9.88 (0.95x;
    decoding is now most of what is left). Model inputs move against full-size
    preprocessing by a mean absolute 0.0147 (PNG) and 0.0158 (WebP) of the 0..1 range,
    worst photos 0.08 and 0.12: as much as JPEG's draft decoding already does (0.0136,
    worst 0.08). On noise-free photos the object's box stays within one reduced pixel
    (tests/unit/test_preprocess.py); accuracy on 2,000 `vitrine photos` 0.9300 -> 0.9315.
    """
    factor = min(img.size) // work_size if work_size else 1
    if factor < 2:
        return flatten(img, channels)
    if img.mode in ("L", "RGB") and "transparency" not in img.info:
        return flatten(img.reduce(factor), channels)
    return flatten(img, channels).reduce(factor)


def foreground(
    img: Image.Image, channels: int, work_size: int | None = None, *, unpad: bool = False
) -> np.ndarray:
    """uint8 foreground at working size (see `working_image`): 255 - flattened pixels, so
    the white background is 0 and the object bright; a plain backdrop that is not white
    removed with its vignetting, and for colour photos soft shadows cast on it
    (`vitrine.pipeline.inference.backdrop`). Colour photos are worked in colour even for a grey
    model:
    a shadow is told from the object by its colour, then luminance is taken.

    `unpad`: an opaque photo pasted on padding of another colour (a studio shot padded
    with white to a square) is cut out of it first
    (`vitrine.pipeline.inference.framing.strip_padding`);
    the backdrop is then the studio's, not the padding's."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    grey = img.mode in ("1", "L", "I", "F") or img.mode.startswith(("I;", "L"))
    cut_out = img.mode in ("RGBA", "RGBa", "PA") or "transparency" in img.info
    if grey or cut_out:  # a cut-out is flattened onto white: no backdrop, no cast shadow
        fg = 255 - np.asarray(working_image(img, channels, work_size), dtype=np.uint8)
        return _lift_background(fg) if channels == 1 else fg
    work = working_image(img, 3, work_size)
    fg = 255 - np.asarray(work, dtype=np.uint8)
    if unpad:
        inner = strip_padding(fg.astype(np.int16))
        fg = fg if inner.shape == fg.shape else np.ascontiguousarray(inner, dtype=np.uint8)
    lifted = lift_colour_backdrop(fg)
    if lifted is None and (channels == 3 or not unpad):
        # white already: exactly what a grey working image gives
        return fg if channels == 3 else 255 - np.asarray(work.convert("L"), dtype=np.uint8)
    lifted = fg if lifted is None else lifted
    if channels == 3:
        return lifted
    luma = lifted.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def to_model_input(
    img: Image.Image, spec: PreprocessSpec, *, work_size: int | None = None
) -> np.ndarray:
    """A decoded image -> float32 (size, size, channels) array in the model's convention.

    Works for every Pillow mode. A blank or uniform image gives the all-background array
    (zeros before scale/offset when `spec.invert`), never an error. With `channels=3,
    invert=False, autocontrast=False` (ImageNet-style backbones) this is a plain
    trim-and-fit onto a white canvas. `work_size`: see `working_image` (None: the image's
    own size; 0.2-0.5 ms more per 1.5 Mpx PNG or WebP once decoded).
    """
    size, channels = int(spec.size), int(spec.channels)
    if size < 1:
        raise ValueError(f"spec.size must be >= 1, got {size}")
    fg = foreground(img, channels, work_size, unpad=True)  # white background -> 0
    # the object's strength, a watermark left out: it must neither tilt nor widen the box
    strength = _heavy_only(fg if fg.ndim == 2 else fg.max(axis=2), _TRIM_ABS)
    tilt = tilt_degrees(strength)
    if tilt:
        fg = stand_upright(fg, tilt)
        strength = _heavy_only(fg if fg.ndim == 2 else fg.max(axis=2), _TRIM_ABS)

    canvas = np.zeros((size, size, channels), dtype=np.float32)
    box = _bbox(strength)
    if box is not None:
        if not spec.trim_background:
            box = (0, 0, fg.shape[1], fg.shape[0])
        left, top, right, bottom = box
        crop = Image.fromarray(np.ascontiguousarray(fg[top:bottom, left:right]))
        longest = max(crop.size)
        target = max(1, round(size * spec.fit_fraction))
        new_w = min(size, max(1, round(crop.width * target / longest)))
        new_h = min(size, max(1, round(crop.height * target / longest)))
        # reducing_gap: Image.reduce() by an integer factor first, LANCZOS for the rest.
        small = crop.resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
        # Fashion-MNIST puts an odd leftover pixel on the left/top: round the offset up.
        x0, y0 = (size - new_w + 1) // 2, (size - new_h + 1) // 2
        framed = Image.new(small.mode, (size, size), 0)
        framed.paste(small, (x0, y0))
        if longest > target:  # downscaled: sharpen like Fashion-MNIST did after resizing
            framed = framed.filter(_SHARPEN)
        canvas = np.asarray(framed, dtype=np.float32).reshape(size, size, channels)
        if spec.autocontrast:
            ref = float(np.percentile(canvas.max(axis=2), _AUTOCONTRAST_PERCENTILE))
            if ref >= _BLANK:  # never amplify a (near-)blank result
                canvas = np.minimum(canvas * (255.0 / ref), 255.0)
    if not spec.invert:
        canvas = 255.0 - canvas
    out = canvas * np.float32(spec.scale) + np.float32(spec.offset)
    return out.astype(np.float32, copy=False)


def object_view(img: Image.Image, size: int, work_size: int = DEFAULT_DRAFT_SIZE) -> np.ndarray:
    """uint8 (size, size, 3): the object alone on white, what the unknown detector
    (`vitrine.pipeline.inference.unknown`) looks at. It is the colour `foreground` (transparency on
    white, a
    studio backdrop, its vignetting and the shadow cast on it removed), cropped to the
    object, padded square with a tenth of margin and resized: a studio photo and a shot on
    white of the same product look alike (measured: AUROC 0.987 -> 0.993 against foreign
    photos, docs/training.md). A re-published copy shows the same object: padding around
    the photo is cut away and the crop keeps the heavy groups of foreground only
    (`vitrine.pipeline.inference.framing`), not a watermark in a corner. A blank photo gives a
    white frame."""
    fg = foreground(img, 3, work_size, unpad=True)
    ys, xs = np.nonzero(_heavy_only(fg.max(axis=2), _VIEW_THRESHOLD) > _VIEW_THRESHOLD)
    if len(ys):
        fg = fg[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    obj = Image.fromarray(255 - fg)
    side = max(1, round(max(obj.size) * 1.1))
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(obj, ((side - obj.width) // 2, (side - obj.height) // 2))
    small = canvas.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small, dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One photo ready for the model: its input, what is stored about it, and (when the
    model has an unknown detector) the object view that detector looks at."""

    array: np.ndarray
    info: ImageInfo
    view: np.ndarray | None = None


def prepare_photo(
    data: bytes,
    spec: PreprocessSpec,
    *,
    limits: ImageLimits,
    sha256: str | None = None,
    with_phash: bool = False,
    with_quality: bool = False,
    view_size: int | None = None,
) -> Prepared:
    """`preprocess_bytes`, and with `view_size` the photo's `object_view` too, from the
    same decoded pixels."""
    work_size = working_size(spec)
    img, info = decode(data, limits=limits, draft_size=work_size, draft_mode="RGB", sha256=sha256)
    info = _describe(img, info, with_phash=with_phash, with_quality=with_quality)
    view = object_view(img, view_size, work_size) if view_size else None
    return Prepared(to_model_input(img, spec, work_size=work_size), info, view)


def preprocess_bytes(
    data: bytes,
    spec: PreprocessSpec,
    *,
    limits: ImageLimits,
    sha256: str | None = None,
    **measures: bool,
) -> tuple[np.ndarray, ImageInfo]:
    """`decode` (with a JPEG draft sized for `spec`) then `to_model_input` at the same
    working size for every format (shorter side >= 256 px, or 4x the model's input).
    `measures` are `prepare_photo`'s `with_phash` (the worker, which stores it: the info
    carries the photo's perceptual hash, `vitrine.pipeline.inference.phash`, about 3 ms) and
    `with_quality`
    (its listing-photo quality, `vitrine.pipeline.inference.quality`); evaluation and training have
    no use
    for them."""
    # JPEGs are decoded in colour even for a grey model (0.3 ms more per photo): a shadow on
    # a studio backdrop is told apart from the product by its colour (`foreground`).
    prepared = prepare_photo(data, spec, limits=limits, sha256=sha256, **measures)
    return prepared.array, prepared.info


def measure_bytes(data: bytes, *, limits: ImageLimits) -> ImageInfo:
    """What `preprocess_bytes(..., with_phash=True, with_quality=True)` says of a photo,
    without the model input: re-hashing stored photos (`vitrine backfill --hashes`)."""
    img, info = decode(data, limits=limits, draft_size=DEFAULT_DRAFT_SIZE, draft_mode="RGB")
    return _describe(img, info, with_phash=True, with_quality=True)


def _describe(
    img: Image.Image, info: ImageInfo, *, with_phash: bool, with_quality: bool
) -> ImageInfo:
    """`info` with the photo's perceptual hash and quality figures, as asked. Both look at
    what a viewer sees, as the model does: transparency composited onto white, once
    (`vitrine.pipeline.inference.flatten`), from the same decoded pixels (no second decode)."""
    if not (with_phash or with_quality):
        return info
    seen = flatten(img, 3)
    if with_phash:
        info = dataclasses.replace(info, phash=perceptual_hash(seen))
    if with_quality:  # the upload's own size: a JPEG may be a reduced draft here
        info = dataclasses.replace(info, quality=measure_quality(seen, (info.width, info.height)))
    return info


def raw_to_model_input(x_uint8: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Raw dataset arrays (uint8 (N, 28, 28) or (28, 28), object bright on black) -> input.

    They are already what the photo pipeline produces for the default spec, so this is just
    scale/offset and a channel axis (replicated for channels 3; flipped to dark-on-white for
    `invert=False`). Sizes other than the array's own are resized with the object scaled to
    `fit_fraction` of the frame.
    """
    x = np.asarray(x_uint8)
    if x.dtype != np.uint8 or x.ndim not in (2, 3):
        raise ValueError(f"expected uint8 (N, H, W) or (H, W), got {x.dtype}{x.shape}")
    single = x.ndim == 2
    batch = x[None] if single else x
    size = int(spec.size)
    target = max(1, round(size * spec.fit_fraction))
    if batch.shape[1:] != (size, size) or target != size:
        out = np.zeros((len(batch), size, size), dtype=np.uint8)
        longest = max(batch.shape[1:])
        new_w = min(size, max(1, round(batch.shape[2] * target / longest)))
        new_h = min(size, max(1, round(batch.shape[1] * target / longest)))
        x0, y0 = (size - new_w + 1) // 2, (size - new_h + 1) // 2
        for i, item in enumerate(batch):  # per image, not per pixel
            small = Image.fromarray(item).resize((new_w, new_h), Image.Resampling.LANCZOS)
            out[i, y0 : y0 + new_h, x0 : x0 + new_w] = np.asarray(small)
        batch = out
    arr = batch.astype(np.float32)
    if not spec.invert:
        arr = 255.0 - arr
    arr = arr[..., None]
    if spec.channels == 3:
        arr = np.repeat(arr, 3, axis=-1)
    elif spec.channels != 1:
        raise ValueError(f"channels must be 1 or 3, got {spec.channels}")
    out_arr = arr * np.float32(spec.scale) + np.float32(spec.offset)
    out_arr = out_arr.astype(np.float32, copy=False)
    return out_arr[0] if single else out_arr

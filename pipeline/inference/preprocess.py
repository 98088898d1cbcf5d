"""Uploaded bytes -> model input, reproducing how Fashion-MNIST was made from product photos.

Fashion-MNIST items were made from shop photos by trimming the background, scaling the
longest edge to 28, centring on 28x28 and negating (object bright on black). Merchant
uploads are large colour photos on white or transparent backgrounds, with margins, off
centre, sometimes EXIF-rotated. `to_model_input` bridges that gap:

    decode once                                  (JPEG at 1/2..1/8 scale: `Image.draft`)
    one working copy: RGB, alpha onto WHITE      (vitrine.pipeline.inference.flatten,
                      longest side 256 px         `working_copy`, resampled from the
                                                  box the object view reads)
    foreground = 255 - pixel                      (white background -> 0)
    cut a photo out of padding of another colour (vitrine.pipeline.inference.framing: a
                                                  re-published copy)
    remove a plain backdrop and its vignetting   (vitrine.pipeline.inference.backdrop: a
                                                  surface fitted to the border, only if
                                                  light; skipped on white)
    stand a tilted item upright                  (vitrine.pipeline.inference.upright)
    trim to the object's bounding box            (threshold robust to JPEG noise; the
                                                  heavy groups only, not a watermark)
    resize longest edge to round(size*fit)       (reduce() then LANCZOS), centre on canvas
    mild unsharp mask                            (Fashion-MNIST sharpened after resizing)
    autocontrast (brightest foreground -> 255)   (never on a blank image)
    invert? foreground : 255 - foreground;  * scale + offset

Pure Pillow + numpy, no Python loops over pixels. `prepare_photo` is what the worker
runs: one decode, one whole-factor box of its pixels (384-767 px) that the unknown
detector's object view reads and, resampled from it, the 256 px working copy that the
model input, the perceptual hash and the quality figures all read. Each stage's CPU
time can be measured (`vitrine.pipeline.inference.stages`, `vitrine bench ingest`'s
stage table). Making the bytes safe to look at is `vitrine.pipeline.inference.decode`'s
job; this module starts from its image.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from vitrine.pipeline.inference.backdrop import lift_backdrop, lift_colour_backdrop
from vitrine.pipeline.inference.decode import decode
from vitrine.pipeline.inference.flatten import WORK_SIDE, reduced_copy, working_copy
from vitrine.pipeline.inference.framing import product_mask, strip_padding, strongest_channel
from vitrine.pipeline.inference.phash import perceptual_hash
from vitrine.pipeline.inference.quality import measure_quality
from vitrine.pipeline.inference.stages import NO_CLOCK, StageClock
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


#: The least longest side of the copy the unknown detector's object view is made from: a
#: whole-factor box of the decoded pixels (`flatten.reduced_copy`, 384 to 767 px), the
#: one pass over them; the working copy the model input, the hash and the quality figures
#: read (`WORK_SIDE`, 256 px) is resampled from it in turn. Measured (docs/performance.md):
#: with the view made from the 256 px copy, the detector's recall on foreign photos fell
#: from 0.952 to 0.920-0.927 at the same false rate (its 160 px view was enlarged from a
#: smaller crop); from an exact 384 px copy it was 0.952 but a textured photo (a circuit
#: board) lost 0.03 of its score to the second resampling; from the box itself, 0.958.
#: The model input from 384 px instead lost 0.65 points on merchant photos.
VIEW_SOURCE_SIDE = 384


def working_size(spec: PreprocessSpec) -> int:
    """The longest side of the working copy for `spec`: `WORK_SIDE`, or 4x the model's
    input for larger inputs (the one formula; explain and its bench read photos the way
    the worker does). An object view is made from the `VIEW_SOURCE_SIDE` copy instead."""
    return WORK_SIDE if spec.view else max(WORK_SIDE, 4 * int(spec.size))


@dataclasses.dataclass(frozen=True)
class WorkingCopy:
    """The photo every measure reads: RGB on white, at working size (`flatten.working_copy`),
    and whether it is `plain`: a grey photo or a cut-out (alpha composited on white) has
    no studio backdrop or cast shadow to lift, and no padding of another colour."""

    image: Image.Image
    plain: bool

    @classmethod
    def of(cls, img: Image.Image, side: int | None, *, exact: bool = True) -> WorkingCopy:
        """`img` on white at `side` px (`working_copy`); with `exact` False, at least
        `side` px by a whole-factor box reduction (`reduced_copy`), for smaller copies
        to be resampled from."""
        grey = img.mode in ("1", "L", "I", "F") or img.mode.startswith(("I;", "L"))
        cut_out = img.mode in ("RGBA", "RGBa", "PA") or "transparency" in img.info
        if not exact and side is not None:
            return cls(reduced_copy(img, side), grey or cut_out)
        return cls(working_copy(img, side), grey or cut_out)

    def reduced(self, side: int) -> WorkingCopy:
        """This copy at `side` px (itself when it is no larger)."""
        return WorkingCopy(working_copy(self.image, side), self.plain)

    @classmethod
    def for_model(
        cls, img: Image.Image, side: int | None, source: WorkingCopy | None = None
    ) -> WorkingCopy:
        """The working copy at `side` px as the worker makes it: resampled from the one
        whole-factor box of the decoded pixels (`source`, made here when not given), so
        explain and the worker see the same input; None keeps the photo's own size."""
        if side is None or side > VIEW_SOURCE_SIDE:
            return cls.of(img, side)
        return (source or cls.of(img, VIEW_SOURCE_SIDE, exact=False)).reduced(side)


def _colour_foreground(work: WorkingCopy, *, unpad: bool) -> np.ndarray:
    """uint8 (H, W, 3) foreground: 255 - pixels, white background 0; for a photo that is
    not plain, a studio backdrop, its vignetting and the shadows cast on it removed
    (`vitrine.pipeline.inference.backdrop`) and, with `unpad`, padding of another colour
    around a pasted photo cut away first (`vitrine.pipeline.inference.framing`)."""
    fg = 255 - np.asarray(work.image, dtype=np.uint8)
    if work.plain:
        return fg
    if unpad:
        inner = strip_padding(fg.astype(np.int16))
        fg = fg if inner.shape == fg.shape else np.ascontiguousarray(inner, dtype=np.uint8)
    lifted = lift_colour_backdrop(fg)
    return fg if lifted is None else lifted


def _channels_foreground(work: WorkingCopy, colour: np.ndarray, channels: int) -> np.ndarray:
    """The model's foreground from the colour one: itself for 3 channels, else luminance.
    A colour photo is worked in colour even for a grey model: a shadow is told from the
    object by its colour, then luminance is taken. A plain photo's grey foreground has a
    grey backdrop lifted instead (a grey photo on a grey sweep)."""
    if channels == 3:
        return colour
    if channels != 1:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if work.plain:
        return _lift_background(255 - np.asarray(work.image.convert("L"), dtype=np.uint8))
    luma = colour.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def foreground(
    img: Image.Image, channels: int, work_size: int | None = None, *, unpad: bool = False
) -> np.ndarray:
    """uint8 foreground of a decoded photo at working size (`work_size`: the working
    copy's longest side, None for the photo's own size): 255 - pixels, so the white
    background is 0 and the object bright (see `_colour_foreground` and
    `_channels_foreground` for backdrops, shadows and padding)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    work = WorkingCopy.for_model(img, work_size)
    return _channels_foreground(work, _colour_foreground(work, unpad=unpad), channels)


def to_model_input(
    img: Image.Image, spec: PreprocessSpec, *, work_size: int | None = None
) -> np.ndarray:
    """A decoded image -> float32 (size, size, channels) array in the model's convention.

    Works for every Pillow mode. A blank or uniform image gives the all-background array
    (zeros before scale/offset when `spec.invert`), never an error. With `channels=3,
    invert=False, autocontrast=False` (ImageNet-style backbones) this is a plain
    trim-and-fit onto a white canvas; with `spec.view`, the object view (`work_size` does
    not apply). `work_size`: see `foreground`.
    """
    if spec.view:
        return view_input(object_view(img, int(spec.size)), spec)
    return _model_input(foreground(img, int(spec.channels), work_size, unpad=True), spec)


def _model_input(fg: np.ndarray, spec: PreprocessSpec, clock: StageClock = NO_CLOCK) -> np.ndarray:
    """`to_model_input` from the foreground on: stand upright, trim, scale, centre."""
    size, channels = int(spec.size), int(spec.channels)
    if size < 1:
        raise ValueError(f"spec.size must be >= 1, got {size}")
    with clock.stage("upright"):
        # the object's strength, a watermark left out: it must neither tilt nor widen the box
        strength = _heavy_only(strongest_channel(fg), _TRIM_ABS)
        tilt = tilt_degrees(strength)
        if tilt:
            fg = stand_upright(fg, tilt)
            strength = _heavy_only(strongest_channel(fg), _TRIM_ABS)
    with clock.stage("trim and scale"):
        canvas = np.zeros((size, size, channels), dtype=np.float32)
        box = _bbox(strength)
        if box is not None:
            if not spec.trim_background:
                box = (0, 0, fg.shape[1], fg.shape[0])
            canvas = _framed(fg, box, spec)
        if not spec.invert:
            canvas = 255.0 - canvas
        out = canvas * np.float32(spec.scale) + np.float32(spec.offset)
    return out.astype(np.float32, copy=False)


def _framed(fg: np.ndarray, box: tuple[int, int, int, int], spec: PreprocessSpec) -> np.ndarray:
    """The object in `box` of `fg` fitted to `spec.fit_fraction` of the frame, centred,
    sharpened when reduced and autocontrasted: float32 (size, size, channels), 0..255."""
    size, channels = int(spec.size), int(spec.channels)
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
    return canvas


def object_view(img: Image.Image, size: int, work_size: int = VIEW_SOURCE_SIDE) -> np.ndarray:
    """uint8 (size, size, 3): the object alone on white, what the unknown detector
    (`vitrine.pipeline.inference.unknown`) looks at. It is the colour foreground
    (transparency on white, a studio backdrop, its vignetting and the shadow cast on it
    removed), cropped to the object, padded square with a tenth of margin and resized: a
    studio photo and a shot on white of the same product look alike (measured: AUROC
    0.987 -> 0.993 against foreign photos, docs/training.md). A re-published copy shows
    the same object: padding around the photo is cut away and the crop keeps the heavy
    groups of foreground only (`vitrine.pipeline.inference.framing`), not a watermark in a
    corner. A blank photo gives a white frame."""
    source = WorkingCopy.of(img, work_size, exact=False)
    return _view(_colour_foreground(source, unpad=True), size)


def _view(fg: np.ndarray, size: int) -> np.ndarray:
    """`object_view` from the colour foreground on."""
    ys, xs = np.nonzero(_heavy_only(strongest_channel(fg), _VIEW_THRESHOLD) > _VIEW_THRESHOLD)
    if len(ys):
        fg = fg[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    obj = Image.fromarray(255 - fg)
    side = max(1, round(max(obj.size) * 1.1))
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(obj, ((side - obj.width) // 2, (side - obj.height) // 2))
    small = canvas.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small, dtype=np.uint8)


def view_input(view: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 object views -> a view model's float32 input (`spec.scale`, `spec.offset`)."""
    return (view.astype(np.float32) * np.float32(spec.scale) + np.float32(spec.offset)).astype(
        np.float32, copy=False
    )


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
    clock: StageClock = NO_CLOCK,
) -> Prepared:
    """Everything the worker computes from one photo, from one decode and one working
    copy: the model input; with `with_phash` the perceptual hash
    (`vitrine.pipeline.inference.phash`), with `with_quality` the listing-photo quality
    figures (`vitrine.pipeline.inference.quality`), with `view_size` the object view for
    the unknown detector. One decode, at the scale the largest copy needs; one pass over
    its pixels (a whole-factor box to at least `VIEW_SOURCE_SIDE`), which the object view
    reads, and the `WORK_SIDE` working copy resampled from it that the model input, the
    hash and the quality figures read (the hash's and quality's thresholds were set at
    that size). `clock` is charged each stage's CPU time
    (`vitrine.pipeline.inference.stages`)."""
    side = working_size(spec)
    with clock.stage("decode"):
        img, info = decode(
            data,
            limits=limits,
            draft_size=max(side, VIEW_SOURCE_SIDE),
            draft_mode="RGB",
            sha256=sha256,
            draft_longest=True,
        )
    with clock.stage("working copy"):
        source = WorkingCopy.of(img, VIEW_SOURCE_SIDE, exact=False)  # one pass over img
        work = source.reduced(WORK_SIDE) if spec.view else WorkingCopy.for_model(img, side, source)
        seen = work if side == WORK_SIDE else source.reduced(WORK_SIDE)
    shown = None
    if spec.view:  # a lite0 model: its input is the object view itself
        with clock.stage("view"):
            shown = _view(_colour_foreground(source, unpad=True), int(spec.size))
        array = view_input(shown, spec)
    else:
        with clock.stage("backdrop"):
            colour = _colour_foreground(work, unpad=True)
            fg = _channels_foreground(work, colour, int(spec.channels))
        array = _model_input(fg, spec, clock)
    info = _describe(
        seen.image, info, with_phash=with_phash, with_quality=with_quality, clock=clock
    )
    view = None
    if view_size and shown is not None and view_size == int(spec.size):
        view = shown
    elif view_size:
        with clock.stage("view"):
            view = _view(_colour_foreground(source, unpad=True), view_size)
    return Prepared(array, info, view)


def preprocess_bytes(
    data: bytes, spec: PreprocessSpec, **options: Any
) -> tuple[np.ndarray, ImageInfo]:
    """`prepare_photo(data, spec, **options)`'s model input and what is stored about the
    photo: `limits` (required), `sha256`, `with_phash`, `with_quality` (the worker stores
    the hash and quality figures; evaluation and training have no use for them)."""
    prepared = prepare_photo(data, spec, **options)
    return prepared.array, prepared.info


def measure_bytes(data: bytes, *, limits: ImageLimits) -> ImageInfo:
    """What `preprocess_bytes(..., with_phash=True, with_quality=True)` says of a photo,
    without the model input: re-hashing stored photos (`vitrine backfill --hashes`)."""
    seen, info = measured_copy(data, limits=limits)
    return _describe(seen, info, with_phash=True, with_quality=True)


def measured_copy(data: bytes, *, limits: ImageLimits) -> tuple[Image.Image, ImageInfo]:
    """The copy the hash and the quality figures read, made as `prepare_photo` makes it:
    a whole-factor reduction to at least `VIEW_SOURCE_SIDE`, then `WORK_SIDE` px of it. Two
    recipes would make near-duplicate pairs between rows measured by each; the benches of
    the hash and the quality rules read this too."""
    img, info = decode(
        data, limits=limits, draft_size=VIEW_SOURCE_SIDE, draft_mode="RGB", draft_longest=True
    )
    return working_copy(reduced_copy(img, VIEW_SOURCE_SIDE), WORK_SIDE), info


def _describe(
    seen: Image.Image,
    info: ImageInfo,
    *,
    with_phash: bool,
    with_quality: bool,
    clock: StageClock = NO_CLOCK,
) -> ImageInfo:
    """`info` with the perceptual hash and quality figures, as asked, of `seen`: the
    working copy (RGB, transparency on white: what a viewer sees, as the model does) at
    `WORK_SIDE` px, the size their thresholds were set on."""
    if with_phash:
        with clock.stage("hash"):
            info = dataclasses.replace(info, phash=perceptual_hash(seen))
    if with_quality:  # the upload's own size, from its header: the copy is reduced
        with clock.stage("quality"):
            quality = measure_quality(seen, (info.width, info.height))
            info = dataclasses.replace(info, quality=quality)
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

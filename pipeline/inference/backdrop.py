"""The studio backdrop behind a product, estimated from the photo's own border.

Fashion-MNIST items were cut from pure white backgrounds; studio photos stand on
off-white, grey or pastel sweeps that darken towards the corners (vignetting), and
`preprocess` must take that backdrop away before it trims and scales. A constant (the
border's median) is not enough: with vignetting the corners stay darker than the
backdrop's centre and the trim keeps them as "object". So the backdrop is modelled as a
smooth surface, a quadratic in x and y per channel (it captures a centred or off-centre
vignette and a linear light gradient), fitted to the pixels of a thin ring along the
border by least squares, twice more without the pixels that do not fit (the object or
its shadow where they touch the border).

All in foreground units (255 - pixel: white = 0), on the working-size image.
"""

from __future__ import annotations

import numpy as np

from vitrine.pipeline.inference.framing import strongest_channel

#: The border ring the backdrop is read from: this share of the shorter side, >= 2 px.
RING_FRACTION = 0.03
#: A ring whose median foreground is above this is not a light plain backdrop (the object
#: fills the frame, or the photo is dark): nothing is removed.
MAX_LEVEL = 96.0
#: A ring whose median is below this is white already (sensor noise aside): nothing to
#: remove, and the photo takes the cheap path it always took.
WHITE_LEVEL = 2.0
#: Ring pixels used for the fit, at most (a regular subsample).
MAX_SAMPLES = 4000
_REFITS = 2


def _ring(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the border ring (subsampled to about MAX_SAMPLES)."""
    width = max(2, round(RING_FRACTION * min(h, w)))
    band_rows = np.r_[0:width, h - width : h]  # top and bottom bands, full width
    band_cols = np.r_[0:width, w - width : w]  # left and right bands, between them
    mid_rows = np.arange(width, h - width)
    ys = np.concatenate([np.repeat(band_rows, w), np.repeat(mid_rows, len(band_cols))])
    xs = np.concatenate([np.tile(np.arange(w), len(band_rows)), np.tile(band_cols, len(mid_rows))])
    step = max(1, len(ys) // MAX_SAMPLES)
    return ys[::step], xs[::step]


def _design(ys: np.ndarray, xs: np.ndarray, h: int, w: int) -> np.ndarray:
    y = ys.astype(np.float32) / max(1, h - 1) * 2 - 1
    x = xs.astype(np.float32) / max(1, w - 1) * 2 - 1
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)


def backdrop_level(fg: np.ndarray) -> np.ndarray | None:
    """The backdrop's foreground level at every pixel of `fg` ((H, W) or (H, W, C) uint8,
    255 - pixel), float32 of the same shape; None when the border is white already or
    is not a light plain backdrop (then nothing should be removed)."""
    h, w = fg.shape[:2]
    if h < 8 or w < 8:
        return None
    values = fg.reshape(h, w, -1).astype(np.float32)
    ys, xs = _ring(h, w)
    samples = values[ys, xs]  # (N, C)
    median = np.median(samples, axis=0)
    if np.all(median < WHITE_LEVEL) or np.any(median > MAX_LEVEL):
        return None
    design = _design(ys, xs, h, w)
    # Start from the pixels near the ring's median (an object cut by the border is far
    # from it), so the first fit is not already bent towards the object.
    off = np.abs(samples - np.median(samples, axis=0)).max(axis=1)
    keep = off <= max(6.0, 3.0 * 1.4826 * float(np.median(off)))
    for _ in range(_REFITS + 1):
        coef, *_ = np.linalg.lstsq(design[keep], samples[keep], rcond=None)
        misfit = np.abs(samples - design @ coef).max(axis=1)
        spread = 1.4826 * float(np.median(misfit[keep]))
        keep = misfit <= 3.0 * spread + 3.0
        if keep.sum() < 12:  # nothing plain about this border
            return None
    y = (np.arange(h, dtype=np.float32) / max(1, h - 1) * 2 - 1)[:, None, None]
    x = (np.arange(w, dtype=np.float32) / max(1, w - 1) * 2 - 1)[None, :, None]
    c = coef.astype(np.float32)
    surface = c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * y * y + c[5] * x * y
    # Where the object hides a stretch of the border, the quadratic is extrapolated there:
    # never let it go darker than the darkest backdrop pixel seen on the ring.
    ceiling = samples[keep].max(axis=0).astype(np.float32) + 3.0
    surface = np.clip(surface, 0.0, np.minimum(ceiling, 254.0))
    return surface.reshape(fg.shape) if fg.ndim == 3 else surface[:, :, 0]


#: Shadow: a pixel darker than the backdrop by the same factor in every channel (the
#: light is dimmed, the colour kept): channel ratios to the backdrop within SHADOW_SPREAD
#: of each other, and their mean within SHADOW_RATIOS.
SHADOW_SPREAD = 0.03
SHADOW_RATIOS = (0.8, 0.985)
#: If shadow-like pixels make up more than this share of the object itself, the object is
#: grey on a grey backdrop, indistinguishable from a shadow by colour: nothing is erased.
NEUTRAL_OBJECT_SHARE = 0.5


def _ratio(fg: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Each pixel over the backdrop behind it (flat-field): 1 on the backdrop, 0 black."""
    return (255.0 - fg.astype(np.float32)) / (255.0 - level)


def _lifted(ratio: np.ndarray) -> np.ndarray:
    """Foreground again, measured against the backdrop instead of white: 0 on it."""
    return np.clip(1.0 - ratio, 0.0, 1.0) * 255.0


def lift_backdrop(fg: np.ndarray) -> np.ndarray | None:
    """`fg` (any shape `backdrop_level` takes) flat-fielded against its backdrop, uint8:
    the backdrop and its gradient become 0, black stays 255; None when there is nothing
    to remove (white already, or not a light plain backdrop)."""
    level = backdrop_level(fg)
    if level is None:
        return None
    return np.rint(_lifted(_ratio(fg, level))).astype(np.uint8)


def lift_colour_backdrop(fg: np.ndarray) -> np.ndarray | None:
    """Flat-field an (H, W, 3) colour foreground (255 - RGB) against its backdrop and
    erase soft shadows cast on it; uint8 (H, W, 3), or None when `backdrop_level` finds
    nothing to remove.

    A cast shadow dims the backdrop's light by one factor in all three channels; an object
    has its own colour, so its ratios to the backdrop differ between channels (or, for a
    dark object, are far below any soft shadow's). Pixels that look like shadow are set to
    backdrop, unless they make up most of the object (a grey item on a grey sweep).
    """
    level = backdrop_level(fg)
    if level is None:
        return None
    ratio = _ratio(fg, level)
    lifted = _lifted(ratio)
    r, g, b = ratio[..., 0], ratio[..., 1], ratio[..., 2]  # (whole planes: see
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)  # framing)
    mean = (r + g + b) / 3.0
    shadow = (spread < SHADOW_SPREAD) & (mean >= SHADOW_RATIOS[0]) & (mean <= SHADOW_RATIOS[1])
    strength = strongest_channel(lifted)
    obj = strength >= max(13.0, 0.1 * float(strength.max()))
    if obj.any() and (shadow & obj).sum() <= NEUTRAL_OBJECT_SHARE * obj.sum():
        lifted[shadow] = 0.0
    return np.rint(lifted).astype(np.uint8)

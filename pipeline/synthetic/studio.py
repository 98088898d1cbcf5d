"""Studio product photos made from Fashion-MNIST items: the untidy uploads of real shops.

`vitrine.pipeline.synthetic.photos` makes the tidy kind (pure white or transparent background).
Real studio
shots are less tidy, and this module makes those, deterministically for a seed:

* a plain backdrop that is not white: off-white, light grey or a pastel;
* mild vignetting: the backdrop darkens towards the corners (up to 18 %);
* a soft drop shadow under the item (the item's silhouette, offset, blurred, 15-35 %);
* the item tilted by up to +-15 degrees and filling 35-95 % of the frame's shorter side;
* light sensor noise, then JPEG at quality 50-85 (the caller encodes).

The item's colour is drawn from the palette given (`photos.PALETTE`) among the colours
that stay visible on the drawn backdrop (a luminance difference of at least 40), as a
photographer would choose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

#: Backdrop families: name -> ranges of (R, G, B) before vignetting.
BACKDROPS: dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = {
    "off-white": ((236, 250), (232, 246), (222, 238)),
    "light grey": ((200, 228), (200, 228), (200, 228)),
    "pastel pink": ((238, 250), (212, 226), (218, 232)),
    "pastel blue": ((208, 222), (224, 236), (240, 252)),
    "pastel mint": ((210, 224), (236, 248), (222, 234)),
    "pastel yellow": ((244, 252), (236, 246), (196, 214)),
}
#: Longest side of a studio photo, in pixels (both ends included).
STUDIO_SIZE_RANGE = (600, 1400)
MAX_TILT_DEGREES = 15.0
FILL_RANGE = (0.35, 0.95)
VIGNETTE_RANGE = (0.04, 0.18)
SHADOW_OPACITY_RANGE = (0.15, 0.35)
JPEG_QUALITY_RANGE = (50, 85)
MIN_LUMA_CONTRAST = 40.0


def _luma(rgb: tuple[int, int, int] | np.ndarray) -> float:
    r, g, b = (float(v) for v in rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _backdrop(
    rng: np.random.Generator, width: int, height: int
) -> tuple[Image.Image, str, np.ndarray]:
    """The backdrop with its vignetting: (image, family name, base colour)."""
    family = list(BACKDROPS)[int(rng.integers(len(BACKDROPS)))]
    base = np.array([rng.integers(lo, hi + 1) for lo, hi in BACKDROPS[family]], np.float32)
    strength = float(rng.uniform(*VIGNETTE_RANGE))
    cx, cy = rng.uniform(0.4, 0.6, size=2)  # the light is roughly, not exactly, centred
    ys = (np.arange(height, dtype=np.float32) / max(1, height - 1) - cy)[:, None]
    xs = (np.arange(width, dtype=np.float32) / max(1, width - 1) - cx)[None, :]
    falloff = 1.0 - strength * (xs * xs + ys * ys) / 0.5  # 1 at the centre
    pixels = np.clip(falloff[:, :, None] * base[None, None, :], 0, 255)
    return Image.fromarray(np.rint(pixels).astype(np.uint8), "RGB"), family, base


def backdrop_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A studio backdrop with its vignetting, nothing on it
    (`vitrine.pipeline.synthetic.foreign`)."""
    return _backdrop(rng, width, height)[0]


def frame_size(
    item: np.ndarray, rng: np.random.Generator, size_range: tuple[int, int]
) -> tuple[np.ndarray, int, int]:
    """The checked item and a photo's (width, height): longest side drawn from
    `size_range`, aspect 3:4..4:3 (the same draws for both photo styles)."""
    item = np.asarray(item)
    if item.dtype != np.uint8 or item.ndim != 2:
        raise ValueError(f"item must be a 2-D uint8 array, got {item.dtype}{item.shape}")
    long_side = int(rng.integers(size_range[0], size_range[1] + 1))
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))  # width / height
    if aspect >= 1:
        return item, long_side, max(1, round(long_side / aspect))
    return item, max(1, round(long_side * aspect)), long_side


def make_studio_photo(
    item: np.ndarray,
    *,
    rng: np.random.Generator,
    palette: Sequence[tuple[str, tuple[int, int, int]]],
    size_range: tuple[int, int] = STUDIO_SIZE_RANGE,
) -> tuple[Image.Image, dict[str, Any]]:
    """One 28x28 uint8 item (bright on black) -> an "RGB" studio photo and its metadata
    (colour, rgb, background, backdrop_rgb, tilt_degrees, fill, offset_x/offset_y,
    object_size, width, height, shadow_opacity, vignette, noise_sigma)."""
    item, width, height = frame_size(item, rng, size_range)
    photo, family, base = _backdrop(rng, width, height)

    visible = [(n, c) for n, c in palette if abs(_luma(c) - _luma(base)) >= MIN_LUMA_CONTRAST]
    name, rgb = visible[int(rng.integers(len(visible)))]
    tilt = float(rng.uniform(-MAX_TILT_DEGREES, MAX_TILT_DEGREES))
    fill = float(rng.uniform(*FILL_RANGE))

    # The item's silhouette at its final size: upsample smoothly, tilt, crop to the object.
    ys, xs = np.nonzero(item > 12)
    crop = item[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] if len(ys) else item
    upscale = 24  # the silhouette is made large, then scaled to the drawn fill
    big = Image.fromarray(crop).resize(
        (crop.shape[1] * upscale, crop.shape[0] * upscale), Image.Resampling.BICUBIC
    )
    big = big.filter(ImageFilter.GaussianBlur(radius=0.25 * upscale))
    big = big.rotate(tilt, resample=Image.Resampling.BICUBIC, expand=True)
    box = big.getbbox() or (0, 0, big.width, big.height)
    big = big.crop(box)
    target = max(8, round(fill * min(width, height)))
    scale = target / max(big.size)
    obj_w, obj_h = max(1, round(big.width * scale)), max(1, round(big.height * scale))
    alpha = big.resize((obj_w, obj_h), Image.Resampling.LANCZOS)
    x0 = int(rng.integers(0, max(1, width - obj_w) + 1))
    y0 = int(rng.integers(0, max(1, height - obj_h) + 1))

    opacity = float(rng.uniform(*SHADOW_OPACITY_RANGE))
    blur = max(3.0, 0.04 * max(obj_w, obj_h))
    pad = int(3 * blur)
    shadow = Image.new("L", (obj_w + 2 * pad, obj_h + 2 * pad), 0)
    shadow.paste(alpha, (pad, pad))
    shadow = shadow.filter(ImageFilter.GaussianBlur(radius=blur))
    shadow = shadow.point([round(v * opacity) for v in range(256)])
    dx, dy = (round(max(obj_w, obj_h) * float(f)) for f in rng.uniform(0.01, 0.05, size=2))
    photo.paste((40, 40, 40), (x0 + dx - pad, y0 + dy - pad), shadow)
    photo.paste(Image.new("RGB", alpha.size, rgb), (x0, y0), alpha)

    noise_sigma = float(rng.uniform(0.5, 2.5))
    grain = rng.standard_normal((height, width), dtype=np.float32)[:, :, None] * noise_sigma
    noisy = np.clip(np.asarray(photo, dtype=np.float32) + grain, 0, 255)
    photo = Image.fromarray(np.rint(noisy).astype(np.uint8), "RGB")
    meta: dict[str, Any] = {
        "colour": name,
        "rgb": "#{:02x}{:02x}{:02x}".format(*rgb),
        "background": family,
        "backdrop_rgb": "#{:02x}{:02x}{:02x}".format(*(int(v) for v in base)),
        "tilt_degrees": round(tilt, 2),
        "fill": round(fill, 3),
        "offset_x": x0,
        "offset_y": y0,
        "object_size": max(obj_w, obj_h),
        "width": width,
        "height": height,
        "shadow_opacity": round(opacity, 3),
        "vignette": round(float(1.0 - _luma(np.asarray(photo)[0, 0]) / _luma(base)), 3),
        "noise_sigma": round(noise_sigma, 3),
    }
    return photo, meta


def jpeg_quality(rng: np.random.Generator) -> int:
    """The JPEG quality a studio photo is saved at."""
    return int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))

"""Label-preserving changes to training images, drawn fresh every epoch from a seeded rng.

Vectorised over the whole (n, h, w) uint8 batch, no Python loop over images, because the
Fashion-MNIST recipe augments all 57,000 training images again every epoch. Every step
draws from the rng only when it is enabled: a recipe recorded before a step existed
replays the same random stream, and so trains on the same augmented arrays, today.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vitrine.pipeline.training.degrade import jpeg_like, warp


@dataclass(frozen=True)
class Augmentation:
    """Label-preserving changes for product images: mirror, small shifts, random erasing,
    (photo look) softening and tone changes, and (studio look) tilt, zoom and JPEG blocks.

    Photos reach the model through resampling and contrast stretching, which leave them a
    little softer and with other mid-tones than the scans of the dataset; blur and gamma
    teach the network that neither changes the class.
    """

    flip: bool = True
    max_shift: int = 3
    erase_probability: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.2)
    blur_probability: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 0.9)
    gamma_probability: float = 0.0
    gamma_range: tuple[float, float] = (0.75, 1.35)
    #: Studio look: tilted and zoomed (in or out), then JPEG blocks.
    tilt_probability: float = 0.0
    tilt_degrees: float = 15.0
    scale_range: tuple[float, float] = (0.8, 1.1)
    jpeg_probability: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 90)


def augment(x: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Vectorised augmentation of a (n, h, w) uint8 batch; no Python loop over images."""
    n, h, w = x.shape
    out = x.copy()
    if aug.flip:
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, ::-1]
    if aug.max_shift > 0:
        s = aug.max_shift
        padded = np.pad(out, ((0, 0), (s, s), (s, s)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(1, 2))
        dy = rng.integers(0, 2 * s + 1, n)
        dx = rng.integers(0, 2 * s + 1, n)
        out = windows[np.arange(n), dy, dx]
    if aug.erase_probability > 0:
        area = rng.uniform(*aug.erase_area, n) * h * w
        aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3), n))
        eh = np.clip(np.sqrt(area * aspect), 1, h).astype(int)
        ew = np.clip(np.sqrt(area / aspect), 1, w).astype(int)
        y0 = (rng.random(n) * (h - eh + 1)).astype(int)
        x0 = (rng.random(n) * (w - ew + 1)).astype(int)
        rows, cols = np.arange(h), np.arange(w)
        in_rows: np.ndarray = (rows[None, :] >= y0[:, None]) & (rows[None, :] < (y0 + eh)[:, None])
        in_cols: np.ndarray = (cols[None, :] >= x0[:, None]) & (cols[None, :] < (x0 + ew)[:, None])
        mask = in_rows[:, :, None] & in_cols[:, None, :]
        chosen = np.less(rng.random(n), aug.erase_probability)
        mask &= chosen[:, None, None]
        noise = rng.integers(0, 256, out.shape, dtype=np.uint8)
        out = np.where(mask, noise, out)
    # Draw nothing from `rng` for disabled steps: older recipes stay reproducible.
    if aug.blur_probability > 0:
        chosen = np.flatnonzero(np.less(rng.random(n), aug.blur_probability))
        sigmas = rng.uniform(*aug.blur_sigma, len(chosen))
        out[chosen] = gaussian_blur(out[chosen], sigmas)
    if aug.gamma_probability > 0:
        chosen = np.flatnonzero(np.less(rng.random(n), aug.gamma_probability))
        gammas = rng.uniform(*aug.gamma_range, len(chosen))[:, None, None]
        toned = 255.0 * (out[chosen] / 255.0) ** gammas
        out[chosen] = np.clip(np.rint(toned), 0, 255).astype(np.uint8)
    if aug.tilt_probability > 0:
        chosen = np.flatnonzero(np.less(rng.random(n), aug.tilt_probability))
        angles = rng.uniform(-aug.tilt_degrees, aug.tilt_degrees, len(chosen))
        scales = rng.uniform(*aug.scale_range, len(chosen))
        out[chosen] = warp(out[chosen], angles, scales)
    if aug.jpeg_probability > 0:
        chosen = np.flatnonzero(np.less(rng.random(n), aug.jpeg_probability))
        low, high = aug.jpeg_quality
        out[chosen] = jpeg_like(out[chosen], rng.integers(low, high + 1, len(chosen)))
    return np.ascontiguousarray(out)


def gaussian_blur(x: np.ndarray, sigmas: np.ndarray, radius: int = 2) -> np.ndarray:
    """Separable Gaussian blur of (n, h, w) uint8 images, each with its own sigma."""
    if len(x) == 0:
        return x
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernels = np.exp(-0.5 * (taps[None, :] / sigmas[:, None].astype(np.float32)) ** 2)
    kernels /= kernels.sum(axis=1, keepdims=True)
    n, h, w = x.shape
    img = x.astype(np.float32)
    padded = np.pad(img, ((0, 0), (0, 0), (radius, radius)))
    img = np.zeros_like(img)
    for k in range(2 * radius + 1):
        img += kernels[:, k, None, None] * padded[:, :, k : k + w]
    padded = np.pad(img, ((0, 0), (radius, radius), (0, 0)))
    img = np.zeros_like(img)
    for k in range(2 * radius + 1):
        img += kernels[:, k, None, None] * padded[:, k : k + h, :]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)

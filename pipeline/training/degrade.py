"""Vectorised image changes for training on the studio look: tilt and scale, JPEG blocks.

Helpers of `vitrine.pipeline.training.augment`, on whole (n, h, w) uint8 batches at once (the recipe
augments 57,000 images every epoch): a per-image affine warp (rotation about the centre
and zoom, bilinear, empty corners background) and a JPEG-like degradation (8x8 DCT
blocks quantised with the standard luminance table at a per-image quality, as libjpeg
scales it), without a Python loop over images.
"""

from __future__ import annotations

import numpy as np

from vitrine.pipeline.inference.phash import dct_matrix

#: The JPEG standard's luminance quantisation table (ITU T.81, Annex K.1).
_LUMA_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float32,
)


_DCT = dct_matrix()


def quantisation_tables(qualities: np.ndarray) -> np.ndarray:
    """(n, 8, 8) luminance tables for JPEG qualities 1-100, scaled as libjpeg does."""
    q = np.clip(np.asarray(qualities, dtype=np.float32), 1, 100)
    scale = np.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)[:, None, None]
    return np.clip(np.floor((_LUMA_TABLE[None] * scale + 50.0) / 100.0), 1, 255)


def jpeg_like(x: np.ndarray, qualities: np.ndarray) -> np.ndarray:
    """(n, h, w) uint8 -> the same after an 8x8-block DCT quantised at each image's quality."""
    n, h, w = x.shape
    if n == 0:
        return x
    ph, pw = -h % 8, -w % 8
    padded = np.pad(x.astype(np.float32) - 128.0, ((0, 0), (0, ph), (0, pw)), mode="edge")
    bh, bw = padded.shape[1] // 8, padded.shape[2] // 8
    blocks = padded.reshape(n, bh, 8, bw, 8).transpose(0, 1, 3, 2, 4)  # (n, bh, bw, 8, 8)
    coef = _DCT @ blocks @ _DCT.T
    table = quantisation_tables(qualities)[:, None, None]
    coef = np.round(coef / table) * table
    back = (_DCT.T @ coef @ _DCT).transpose(0, 1, 3, 2, 4).reshape(n, bh * 8, bw * 8)
    return np.clip(np.rint(back[:, :h, :w] + 128.0), 0, 255).astype(np.uint8)


def warp(x: np.ndarray, degrees: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(n, h, w) uint8 turned counter-clockwise by `degrees` about the centre and zoomed
    by `scales` (per image); bilinear, what comes from outside the frame is 0."""
    n, h, w = x.shape
    if n == 0:
        return x
    theta = np.deg2rad(np.asarray(degrees, dtype=np.float32))[:, None, None]
    scale = np.asarray(scales, dtype=np.float32)[:, None, None]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = (yy - cy)[None], (xx - cx)[None]
    cos, sin = np.cos(theta), np.sin(theta)
    # where each output pixel comes from: the inverse rotation (image y points down)
    sx = (cos * dx - sin * dy) / scale + cx
    sy = (sin * dx + cos * dy) / scale + cy
    img = np.pad(x.astype(np.float32), ((0, 0), (1, 1), (1, 1)))  # a ring of background
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    flat = img.reshape(n, -1)
    row = w + 2

    def at(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        ys = np.clip(ys + 1, 0, h + 1).astype(np.int64)  # +1: the padding ring
        xs = np.clip(xs + 1, 0, w + 1).astype(np.int64)
        return np.take_along_axis(flat, (ys * row + xs).reshape(n, -1), axis=1).reshape(n, h, w)

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    out = top * (1 - fy) + bottom * fy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

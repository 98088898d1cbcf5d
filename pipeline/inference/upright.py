"""Stand a slightly tilted product upright again before it is trimmed and scaled.

Fashion-MNIST items are upright: trousers and dresses vertical, shoe soles and bag
bottoms horizontal. Studio photos are often a few degrees off (a hand-held camera, a
garment laid on a table at an angle), and the CNN has seen few tilted items. Products are
made of straight edges and symmetric outlines, so an upright item is the one whose
axis-aligned bounding box is smallest: the tilt is the angle, within +-MAX_DEGREES, that
minimises the box around the object's pixels. It is corrected only when the box shrinks
by at least MIN_GAIN against the photo as it is, so upright and round items (whose box
hardly changes with the angle) are left alone.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MAX_DEGREES = 20.0
STEP_DEGREES = 1.0
#: The smallest box must be at least this much smaller than the box as photographed.
MIN_GAIN = 0.07
#: Pixels at or above this share of the strongest foreground count as the object.
OBJECT_SHARE = 0.25


def tilt_degrees(strength: np.ndarray) -> float:
    """The counter-clockwise angle the object in `strength` (H, W, 0 = background) is
    tilted by, in degrees; 0.0 when it is upright or its tilt cannot be told."""
    top = float(strength.max()) if strength.size else 0.0
    if top <= 0:
        return 0.0
    mask = strength >= OBJECT_SHARE * top
    rows = np.flatnonzero(mask.any(axis=1))
    if mask.sum() < 16:
        return 0.0
    # A box only ever touches the outline: the first and last object pixel of every row
    # are all the points it can rest on (2 per row instead of every pixel).
    band = mask[rows]
    first = band.argmax(axis=1)
    last = band.shape[1] - 1 - band[:, ::-1].argmax(axis=1)
    ys, xs = np.concatenate([rows, rows]), np.concatenate([first, last])
    pts = np.stack([xs, -ys], axis=1).astype(np.float32)  # y up
    pts -= pts.mean(axis=0)
    angles = np.deg2rad(np.arange(-MAX_DEGREES, MAX_DEGREES + STEP_DEGREES / 2, STEP_DEGREES))
    cos, sin = np.cos(angles), np.sin(angles)
    # every point turned by every angle: (angles, points)
    rx = pts[None, :, 0] * cos[:, None] - pts[None, :, 1] * sin[:, None]
    ry = pts[None, :, 0] * sin[:, None] + pts[None, :, 1] * cos[:, None]
    areas = (rx.max(axis=1) - rx.min(axis=1) + 1) * (ry.max(axis=1) - ry.min(axis=1) + 1)
    level = areas[len(angles) // 2]
    best = int(np.argmin(areas))
    if areas[best] > (1.0 - MIN_GAIN) * level:
        return 0.0
    # turning the points by `angles[best]` makes the object upright: it was tilted by -that
    return float(-np.rad2deg(angles[best]))


def stand_upright(fg: np.ndarray, degrees: float) -> np.ndarray:
    """`fg` (uint8, background 0) turned by -`degrees` (clockwise for a positive tilt),
    the canvas grown to keep every pixel, new corners background."""
    if not degrees:
        return fg
    img = Image.fromarray(np.ascontiguousarray(fg))
    turned = img.rotate(-degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=0)
    return np.asarray(turned)

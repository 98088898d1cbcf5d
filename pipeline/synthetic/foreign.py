"""Photos of things that belong to none of the catalogue's categories (deterministic).

A merchant uploads a mug, a phone case on a phone, a plant for the shop window, a scanned
invoice; a shopper photographs a pizza. The model knows ten kinds of clothing and shoes,
and must say "none of our categories" rather than "Bag 0.99". To measure that, these
photos show household objects, electronics, documents, food, plants, textures and drawn
scenes, each drawn from shapes with its own colours and detail, then photographed in the
same styles as the catalogue's own photos: on white, as a transparent cut-out, or in the
studio (coloured backdrop with vignetting, tilt, soft shadow, sensor noise, JPEG 50-85).

`write_foreign` writes them with a `manifest.csv` (label `foreign`, and the kind drawn),
for `vitrine eval --images` (its `unknown_rate`) and `vitrine bench catalog`.

Size: most of the module is the drawers, one short function per kind (22 of them); they
share the palette and shape helpers above them and one photographing step, and a kind
is added by writing its drawer here and naming it in KINDS.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vitrine.pipeline.synthetic import studio

#: The label foreign photos carry in a manifest (never one of a model's labels).
FOREIGN_LABEL = "foreign"
#: Photo styles, drawn in turn: as merchants shoot products, and as a studio does.
STYLES = ("white", "transparent", "studio")
CANVAS = 512  # objects are drawn on a canvas this large, twice over for antialiasing

Colour = tuple[int, int, int]
Drawer = Callable[[ImageDraw.ImageDraw, np.random.Generator, int], None]


def _colour(rng: np.random.Generator, lo: int = 20, hi: int = 235) -> Colour:
    r, g, b = (int(v) for v in rng.integers(lo, hi, size=3))
    return (r, g, b)


def _shade(c: Colour, f: float) -> Colour:
    r, g, b = (int(max(0, min(255, v * f))) for v in c)
    return (r, g, b)


# --------------------------------------------------------------------------- household


def _mug(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    body, w = _colour(rng), int(s * rng.uniform(0.35, 0.5))
    x0, y0, h = int(s * 0.2), int(s * 0.25), int(s * rng.uniform(0.45, 0.6))
    handle = int(w * 0.35)
    d.ellipse(
        (x0 + w - handle // 2, y0 + h // 5, x0 + w + handle, y0 + h * 3 // 4),
        outline=body,
        width=max(4, s // 28),
    )
    d.rectangle((x0, y0, x0 + w, y0 + h), fill=body)
    d.ellipse((x0, y0 - s // 25, x0 + w, y0 + s // 25), fill=_shade(body, 0.6))
    if rng.random() < 0.6:  # a printed logo
        d.ellipse((x0 + w // 4, y0 + h // 3, x0 + 3 * w // 4, y0 + 2 * h // 3), fill=_colour(rng))


def _bottle(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    glass, cx = _colour(rng), s // 2
    w, h = int(s * rng.uniform(0.18, 0.28)), int(s * rng.uniform(0.6, 0.8))
    top = (s - h) // 2
    d.rectangle((cx - w // 2, top + h // 3, cx + w // 2, top + h), fill=glass)
    d.polygon(
        [
            (cx - w // 2, top + h // 3),
            (cx - w // 6, top + h // 8),
            (cx + w // 6, top + h // 8),
            (cx + w // 2, top + h // 3),
        ],
        fill=glass,
    )
    d.rectangle((cx - w // 6, top, cx + w // 6, top + h // 8), fill=_shade(glass, 0.5))
    d.rectangle(
        (cx - w // 2, top + h // 2, cx + w // 2, top + 3 * h // 4), fill=_colour(rng, 150, 250)
    )


def _clock(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    r, cx, cy = int(s * rng.uniform(0.3, 0.42)), s // 2, s // 2
    d.ellipse(
        (cx - r, cy - r, cx + r, cy + r), fill=_colour(rng), outline=(30, 30, 30), width=s // 40
    )
    d.ellipse((cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85), fill=(245, 245, 240))
    for k in range(12):
        a = k * math.pi / 6
        d.line(
            (
                cx + 0.7 * r * math.cos(a),
                cy + 0.7 * r * math.sin(a),
                cx + 0.8 * r * math.cos(a),
                cy + 0.8 * r * math.sin(a),
            ),
            fill=(20, 20, 20),
            width=max(2, s // 100),
        )
    for length, a in ((0.45, rng.uniform(0, 2 * math.pi)), (0.7, rng.uniform(0, 2 * math.pi))):
        d.line(
            (cx, cy, cx + length * r * math.cos(a), cy + length * r * math.sin(a)),
            fill=(10, 10, 10),
            width=max(3, s // 70),
        )


def _lamp(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    shade, metal, cx = _colour(rng), _colour(rng, 60, 200), s // 2
    top, w = int(s * 0.12), int(s * rng.uniform(0.3, 0.45))
    d.polygon(
        [
            (cx - w // 4, top),
            (cx + w // 4, top),
            (cx + w // 2, top + s // 3),
            (cx - w // 2, top + s // 3),
        ],
        fill=shade,
    )
    d.rectangle((cx - s // 60, top + s // 3, cx + s // 60, int(s * 0.82)), fill=metal)
    d.ellipse((cx - w // 3, int(s * 0.8), cx + w // 3, int(s * 0.88)), fill=metal)


def _vase(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    clay, cx = _colour(rng), s // 2
    w = int(s * rng.uniform(0.3, 0.45))
    d.ellipse((cx - w // 2, int(s * 0.35), cx + w // 2, int(s * 0.85)), fill=clay)
    d.rectangle((cx - w // 5, int(s * 0.15), cx + w // 5, int(s * 0.45)), fill=clay)
    for k in range(int(rng.integers(2, 5))):  # painted bands
        y = int(s * (0.45 + 0.08 * k))
        d.line(
            (cx - w // 2 + s // 30, y, cx + w // 2 - s // 30, y), fill=_colour(rng), width=s // 50
        )


# --------------------------------------------------------------------------- electronics


def _phone(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    case, w = _colour(rng, 10, 120), int(s * rng.uniform(0.28, 0.38))
    h, x0, y0 = int(w * rng.uniform(1.9, 2.2)), (s - w) // 2, (s - int(w * 2.05)) // 2
    d.rounded_rectangle((x0, y0, x0 + w, y0 + h), radius=w // 7, fill=case)
    m = w // 14
    screen = (x0 + m, y0 + 3 * m, x0 + w - m, y0 + h - 3 * m)
    if rng.random() < 0.5:  # a lit home screen: rows of coloured icons
        d.rectangle(screen, fill=_colour(rng, 100, 250))
        for row in range(5):
            for col in range(4):
                ix, iy = (
                    screen[0] + m + col * (w - 4 * m) // 4,
                    screen[1] + m + row * (h - 8 * m) // 6,
                )
                d.rounded_rectangle(
                    (ix, iy, ix + w // 7, iy + w // 7), radius=w // 30, fill=_colour(rng)
                )
    else:
        d.rectangle(screen, fill=(15, 15, 25))
    d.ellipse((x0 + w // 2 - m, y0 + m, x0 + w // 2 + m, y0 + 3 * m - m // 2), fill=(40, 40, 40))


def _laptop(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    body, w = _colour(rng, 90, 220), int(s * rng.uniform(0.7, 0.85))
    x0, y0, h = (s - w) // 2, int(s * 0.2), int(w * 0.55)
    d.rectangle((x0 + w // 12, y0, x0 + w - w // 12, y0 + h), fill=(30, 30, 30))
    d.rectangle(
        (x0 + w // 8, y0 + h // 12, x0 + w - w // 8, y0 + h - h // 12), fill=_colour(rng, 60, 250)
    )
    d.polygon(
        [
            (x0 + w // 12, y0 + h),
            (x0 + w - w // 12, y0 + h),
            (x0 + w, y0 + h + h // 3),
            (x0, y0 + h + h // 3),
        ],
        fill=body,
    )
    for row in range(3):  # the keyboard
        y = y0 + h + h // 16 + row * h // 14
        for col in range(12):
            x = x0 + w // 8 + col * (w * 3 // 4) // 12
            d.rectangle((x, y, x + w // 22, y + h // 22), fill=_shade(body, 0.55))


def _circuit_board(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    board = (int(rng.integers(0, 60)), int(rng.integers(90, 160)), int(rng.integers(40, 90)))
    w, h = int(s * rng.uniform(0.6, 0.9)), int(s * rng.uniform(0.45, 0.7))
    x0, y0 = (s - w) // 2, (s - h) // 2
    d.rectangle((x0, y0, x0 + w, y0 + h), fill=board)
    copper = (200, 160, 60)
    for _ in range(int(rng.integers(25, 50))):  # traces
        x, y = int(rng.integers(x0, x0 + w)), int(rng.integers(y0, y0 + h))
        x2 = int(np.clip(x + rng.integers(-w // 3, w // 3), x0, x0 + w))
        y2 = int(np.clip(y + rng.integers(-h // 3, h // 3), y0, y0 + h))
        d.line((x, y, x2, y), fill=copper, width=max(2, s // 200))
        d.line((x2, y, x2, y2), fill=copper, width=max(2, s // 200))
        d.ellipse((x2 - 3, y2 - 3, x2 + 3, y2 + 3), fill=copper)
    for _ in range(int(rng.integers(3, 8))):  # chips
        cw, ch = int(w * rng.uniform(0.08, 0.22)), int(h * rng.uniform(0.08, 0.22))
        cx, cy = int(rng.integers(x0, x0 + w - cw)), int(rng.integers(y0, y0 + h - ch))
        d.rectangle((cx, cy, cx + cw, cy + ch), fill=(20, 20, 22))


def _headphones(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    body, cx = _colour(rng), s // 2
    r = int(s * rng.uniform(0.28, 0.36))
    d.arc(
        (cx - r, int(s * 0.15), cx + r, int(s * 0.15) + 2 * r), 180, 360, fill=body, width=s // 22
    )
    for side in (-1, 1):
        x = cx + side * r
        d.rounded_rectangle(
            (x - s // 12, int(s * 0.15) + r - s // 16, x + s // 12, int(s * 0.15) + r + s // 6),
            radius=s // 30,
            fill=_shade(body, 0.7),
        )


def _remote(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    body, w = _colour(rng, 10, 90), int(s * rng.uniform(0.16, 0.22))
    x0, y0, h = (s - w) // 2, int(s * 0.1), int(s * 0.8)
    d.rounded_rectangle((x0, y0, x0 + w, y0 + h), radius=w // 3, fill=body)
    for row in range(7):
        for col in range(3):
            bx, by = x0 + w // 8 + col * w // 3, y0 + h // 6 + row * h // 10
            d.ellipse((bx, by, bx + w // 5, by + w // 5), fill=_colour(rng, 120, 250))


# --------------------------------------------------------------------------- documents


def _page(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    w = int(s * rng.uniform(0.55, 0.7))
    h, x0, y0 = int(w * 1.41), (s - w) // 2, (s - int(w * 1.41)) // 2
    d.rectangle((x0, y0, x0 + w, y0 + h), fill=(250, 250, 246), outline=(200, 200, 200), width=2)
    ink = _colour(rng, 10, 80)
    y = y0 + h // 12
    d.rectangle((x0 + w // 10, y, x0 + w // 2, y + h // 30), fill=ink)  # a heading
    y += h // 12
    while y < y0 + h - h // 10:
        end = x0 + w - w // 10 - int(rng.integers(0, w // 3))
        d.line((x0 + w // 10, y, end, y), fill=(70, 70, 80), width=max(2, s // 160))
        y += h // 28
    if rng.random() < 0.5:  # a table
        d.rectangle(
            (x0 + w // 10, y0 + h * 2 // 3, x0 + w - w // 10, y0 + h - h // 8), outline=ink, width=2
        )


def _book(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    cover, w = _colour(rng), int(s * rng.uniform(0.45, 0.6))
    h, x0, y0 = int(w * 1.45), (s - w) // 2, (s - int(w * 1.45)) // 2
    d.rectangle((x0, y0, x0 + w, y0 + h), fill=cover)
    d.rectangle((x0, y0, x0 + w // 10, y0 + h), fill=_shade(cover, 0.6))
    d.rectangle(
        (x0 + w // 5, y0 + h // 6, x0 + w - w // 8, y0 + h // 6 + h // 12),
        fill=_colour(rng, 180, 255),
    )
    d.ellipse((x0 + w // 3, y0 + h // 2, x0 + 3 * w // 4, y0 + h // 2 + w // 2), fill=_colour(rng))


def _envelope(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    paper, w = _colour(rng, 190, 250), int(s * rng.uniform(0.7, 0.85))
    h, x0, y0 = int(w * 0.6), (s - w) // 2, (s - int(w * 0.6)) // 2
    d.rectangle((x0, y0, x0 + w, y0 + h), fill=paper, outline=_shade(paper, 0.7), width=3)
    d.line((x0, y0, x0 + w // 2, y0 + h // 2, x0 + w, y0), fill=_shade(paper, 0.7), width=3)
    d.rectangle((x0 + w - w // 6, y0 + h // 10, x0 + w - w // 20, y0 + h // 4), fill=_colour(rng))
    for k in range(3):
        y = y0 + h // 2 + k * h // 10
        d.line((x0 + w // 3, y, x0 + 2 * w // 3, y), fill=(60, 60, 70), width=3)


# --------------------------------------------------------------------------- food


def _apple(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    skin = (int(rng.integers(150, 230)), int(rng.integers(20, 200)), int(rng.integers(10, 60)))
    r, cx, cy = int(s * rng.uniform(0.25, 0.35)), s // 2, int(s * 0.55)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=skin)
    d.ellipse((cx - r // 2, cy - r // 2, cx - r // 6, cy - r // 6), fill=_shade(skin, 1.3))
    d.line((cx, cy - r, cx + r // 8, cy - r - r // 3), fill=(80, 50, 20), width=s // 60)
    d.ellipse((cx + r // 8, cy - r - r // 3, cx + r // 2, cy - r - r // 8), fill=(40, 140, 40))


def _banana(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    yellow = (int(rng.integers(210, 250)), int(rng.integers(180, 230)), int(rng.integers(30, 80)))
    box = (int(s * 0.1), int(s * 0.1), int(s * 0.9), int(s * 0.9))
    d.arc(box, 30, 150, fill=yellow, width=int(s * rng.uniform(0.1, 0.15)))
    d.arc(box, 30, 150, fill=_shade(yellow, 0.8), width=s // 60)


def _pizza(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    r, cx, cy = int(s * 0.4), s // 2, s // 2
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(210, 160, 90))
    d.ellipse((cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85), fill=(200, 50, 30))
    for _ in range(int(rng.integers(8, 16))):
        a, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.7 * r)
        x, y, t = cx + dist * math.cos(a), cy + dist * math.sin(a), s // 22
        d.ellipse(
            (x - t, y - t, x + t, y + t),
            fill=[(150, 30, 30), (240, 230, 200), (40, 110, 40)][int(rng.integers(3))],
        )


def _plate(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    r, cx, cy = int(s * 0.42), s // 2, s // 2
    d.ellipse(
        (cx - r, cy - r, cx + r, cy + r), fill=(240, 240, 236), outline=(190, 190, 190), width=3
    )
    for _ in range(int(rng.integers(3, 7))):
        x, y = cx + rng.uniform(-0.45, 0.45) * r, cy + rng.uniform(-0.45, 0.45) * r
        t = int(r * rng.uniform(0.12, 0.3))
        d.ellipse((x - t, y - t * 0.7, x + t, y + t * 0.7), fill=_colour(rng))


# --------------------------------------------------------------------------- plants


def _leaves(d: ImageDraw.ImageDraw, rng: np.random.Generator, cx: int, cy: int, r: int) -> None:
    for _ in range(int(rng.integers(6, 14))):
        a = rng.uniform(math.pi, 2 * math.pi)
        x, y = cx + r * math.cos(a), cy + r * math.sin(a)
        leaf = (int(rng.integers(20, 90)), int(rng.integers(100, 190)), int(rng.integers(20, 90)))
        d.line((cx, cy, x, y), fill=(60, 100, 40), width=max(2, r // 30))
        d.ellipse((x - r // 5, y - r // 9, x + r // 5, y + r // 9), fill=leaf)


def _potted_plant(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    pot, cx = _colour(rng, 80, 230), s // 2
    w = int(s * rng.uniform(0.3, 0.4))
    d.polygon(
        [
            (cx - w // 2, int(s * 0.6)),
            (cx + w // 2, int(s * 0.6)),
            (cx + w // 3, int(s * 0.9)),
            (cx - w // 3, int(s * 0.9)),
        ],
        fill=pot,
    )
    _leaves(d, rng, cx, int(s * 0.6), int(s * rng.uniform(0.3, 0.45)))


def _flower(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    petal, cx, cy = _colour(rng, 120, 255), s // 2, int(s * 0.35)
    d.line((cx, cy, cx, int(s * 0.9)), fill=(50, 120, 40), width=s // 50)
    r = int(s * rng.uniform(0.1, 0.16))
    for k in range(int(rng.integers(5, 9))):
        a = k * 2 * math.pi / 7
        x, y = cx + r * math.cos(a), cy + r * math.sin(a)
        d.ellipse((x - r * 0.7, y - r * 0.7, x + r * 0.7, y + r * 0.7), fill=petal)
    d.ellipse((cx - r // 2, cy - r // 2, cx + r // 2, cy + r // 2), fill=(230, 190, 40))


def _cactus(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    green, cx = (40, int(rng.integers(110, 160)), 60), s // 2
    d.rounded_rectangle(
        (cx - s // 12, int(s * 0.15), cx + s // 12, int(s * 0.7)), radius=s // 12, fill=green
    )
    d.rounded_rectangle(
        (cx - s // 4, int(s * 0.35), cx - s // 12, int(s * 0.42)), radius=s // 30, fill=green
    )
    d.rounded_rectangle(
        (cx - s // 4, int(s * 0.22), cx - s // 6, int(s * 0.42)), radius=s // 30, fill=green
    )
    d.polygon(
        [
            (cx - s // 6, int(s * 0.7)),
            (cx + s // 6, int(s * 0.7)),
            (cx + s // 8, int(s * 0.88)),
            (cx - s // 8, int(s * 0.88)),
        ],
        fill=_colour(rng),
    )


# --------------------------------------------------------------------------- textures and scenes


def _texture(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    kind = int(rng.integers(4))
    a, b = _colour(rng), _colour(rng)
    d.rectangle((0, 0, s, s), fill=a)
    step = int(s * rng.uniform(0.03, 0.1))
    if kind == 0:  # stripes
        for x in range(0, s, 2 * step):
            d.rectangle((x, 0, x + step, s), fill=b)
    elif kind == 1:  # a checkerboard
        for y in range(0, s, step):
            for x in range(0, s, step):
                if (x // step + y // step) % 2:
                    d.rectangle((x, y, x + step, y + step), fill=b)
    elif kind == 2:  # dots
        for y in range(0, s, step):
            for x in range(0, s, step):
                d.ellipse((x, y, x + step // 2, y + step // 2), fill=b)
    else:  # wood grain
        for y in range(0, s, max(2, step // 3)):
            wobble = int(rng.integers(-step, step))
            d.line(
                (0, y, s, y + wobble),
                fill=_shade(a, rng.uniform(0.6, 1.2)),
                width=max(2, step // 4),
            )


def _scene(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    sky = (int(rng.integers(80, 180)), int(rng.integers(140, 210)), int(rng.integers(200, 250)))
    d.rectangle((0, 0, s, s), fill=sky)
    sun = int(s * rng.uniform(0.06, 0.12))
    sx, sy = int(rng.integers(sun, s - sun)), int(rng.integers(sun, s // 3))
    d.ellipse((sx - sun, sy - sun, sx + sun, sy + sun), fill=(250, 220, 80))
    for k in range(int(rng.integers(2, 4))):  # hills
        top = int(s * rng.uniform(0.45, 0.7))
        green = (int(rng.integers(30, 100)), int(rng.integers(110, 180)), int(rng.integers(30, 90)))
        d.ellipse((int(s * (k * 0.4 - 0.4)), top, int(s * (k * 0.4 + 0.6)), top + s), fill=green)
    if rng.random() < 0.5:  # a house
        hx, hy, hw = int(s * rng.uniform(0.2, 0.6)), int(s * 0.55), int(s * 0.2)
        d.rectangle((hx, hy, hx + hw, hy + hw), fill=_colour(rng))
        d.polygon(
            [(hx - hw // 8, hy), (hx + hw // 2, hy - hw // 2), (hx + hw + hw // 8, hy)],
            fill=(150, 40, 30),
        )


#: What is drawn: kind -> (category, drawer). Textures and scenes fill their frame.
KINDS: dict[str, tuple[str, Drawer]] = {
    "mug": ("household", _mug),
    "bottle": ("household", _bottle),
    "clock": ("household", _clock),
    "lamp": ("household", _lamp),
    "vase": ("household", _vase),
    "phone": ("electronics", _phone),
    "laptop": ("electronics", _laptop),
    "circuit board": ("electronics", _circuit_board),
    "headphones": ("electronics", _headphones),
    "remote control": ("electronics", _remote),
    "page": ("documents", _page),
    "book": ("documents", _book),
    "envelope": ("documents", _envelope),
    "apple": ("food", _apple),
    "banana": ("food", _banana),
    "pizza": ("food", _pizza),
    "plate": ("food", _plate),
    "potted plant": ("plants", _potted_plant),
    "flower": ("plants", _flower),
    "cactus": ("plants", _cactus),
    "texture": ("textures", _texture),
    "scene": ("scenes", _scene),
}
FULL_FRAME = frozenset({"texture", "scene"})


def draw_object(kind: str, rng: np.random.Generator) -> Image.Image:
    """The object `kind` on a transparent CANVAS-sized RGBA image, cropped to itself."""
    _, drawer = KINDS[kind]
    big = Image.new("RGBA", (2 * CANVAS, 2 * CANVAS), (0, 0, 0, 0))
    drawer(ImageDraw.Draw(big), rng, 2 * CANVAS)
    small = big.resize((CANVAS, CANVAS), Image.Resampling.LANCZOS)  # antialiased
    box = small.getchannel("A").getbbox() or (0, 0, CANVAS, CANVAS)
    return small.crop(box)


def make_foreign_photo(
    kind: str, style: str, *, rng: np.random.Generator
) -> tuple[Image.Image, dict[str, Any]]:
    """A photo of `kind` in `style` (see STYLES): "RGB", or "RGBA" for a transparent one."""
    obj = draw_object(kind, rng)
    if style == "studio" or kind in FULL_FRAME:
        return _studio(obj, kind, rng, full_frame=kind in FULL_FRAME and style != "studio")
    width, height = _frame(rng)
    obj, x0, y0 = _placed(obj, rng, width, height, max_fill=0.85)
    if style == "transparent":
        photo = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        photo.paste(obj, (x0, y0), obj)
    else:
        photo = Image.new("RGB", (width, height), (255, 255, 255))
        photo.paste(obj, (x0, y0), obj)
    return photo, _meta(kind, style, width, height)


def _placed(
    obj: Image.Image, rng: np.random.Generator, width: int, height: int, *, max_fill: float
) -> tuple[Image.Image, int, int]:
    """`obj` scaled to fill 35 %..`max_fill` of the frame's shorter side, and a random
    position for it inside a `width` x `height` frame."""
    fill = float(rng.uniform(0.35, max_fill))
    scale = fill * min(width, height) / max(obj.size)
    obj = obj.resize(
        (max(1, round(obj.width * scale)), max(1, round(obj.height * scale))),
        Image.Resampling.LANCZOS,
    )
    x0 = int(rng.integers(0, max(1, width - obj.width) + 1))
    y0 = int(rng.integers(0, max(1, height - obj.height) + 1))
    return obj, x0, y0


def _meta(kind: str, style: str, width: int, height: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "category": KINDS[kind][0],
        "style": style,
        "width": width,
        "height": height,
    }


def _frame(rng: np.random.Generator) -> tuple[int, int]:
    long_side = int(rng.integers(600, 1401))
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    if aspect >= 1:
        return long_side, max(1, round(long_side / aspect))
    return max(1, round(long_side * aspect)), long_side


def _studio(
    obj: Image.Image, kind: str, rng: np.random.Generator, *, full_frame: bool
) -> tuple[Image.Image, dict[str, Any]]:
    """On a studio backdrop (vignetting, tilt, soft shadow, noise); a full-frame photo
    (texture, scene) fills its frame instead, as such a photo would."""
    width, height = _frame(rng)
    if full_frame:
        photo = obj.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    else:
        photo = studio.backdrop_photo(rng, width, height)
        tilt = float(rng.uniform(-15, 15))
        obj = obj.rotate(tilt, resample=Image.Resampling.BICUBIC, expand=True)
        obj, x0, y0 = _placed(obj, rng, width, height, max_fill=0.9)
        shadow = obj.getchannel("A").filter(
            ImageFilter.GaussianBlur(max(3.0, 0.04 * max(obj.size)))
        )
        shadow = shadow.point([round(v * float(rng.uniform(0.15, 0.35))) for v in range(256)])
        dx, dy = (round(max(obj.size) * float(f)) for f in rng.uniform(0.01, 0.05, size=2))
        photo.paste((40, 40, 40), (x0 + dx, y0 + dy), shadow)
        photo.paste(obj, (x0, y0), obj)
    grain = rng.standard_normal((height, width), dtype=np.float32)[:, :, None] * float(
        rng.uniform(0.5, 2.5)
    )
    noisy = np.clip(np.asarray(photo, dtype=np.float32) + grain, 0, 255)
    meta = _meta(kind, "studio" if not full_frame else "full frame", width, height)
    return Image.fromarray(np.rint(noisy).astype(np.uint8), "RGB"), meta


def write_foreign(
    out_dir: str | Path, *, n: int, seed: int, progress: Callable[[int], None] | None = None
) -> Path:
    """`n` foreign photos (every kind in turn, each style in turn) and `manifest.csv`
    (columns file, label, kind, category, style, sku, merchant_id); its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kinds = list(KINDS)
    rows = []
    for position in range(n):
        rng = np.random.default_rng([seed, position, 7])
        kind = kinds[position % len(kinds)]
        style = STYLES[(position // len(kinds)) % len(STYLES)]
        photo, meta = make_foreign_photo(kind, style, rng=rng)
        sku = f"FOREIGN-{seed}-{position:06d}"
        if photo.mode == "RGBA":
            name = f"{position:06d}-{sku}.{'png' if rng.random() < 0.5 else 'webp'}"
            photo.save(out / name, "PNG" if name.endswith("png") else "WEBP", quality=90)
        else:
            name = f"{position:06d}-{sku}.jpg"
            quality = (
                studio.jpeg_quality(rng) if meta["style"] != "white" else int(rng.integers(80, 96))
            )
            photo.save(out / name, "JPEG", quality=quality)
        merchant = f"merchant-{int(rng.integers(1, 13)):02d}"
        rows.append((name, FOREIGN_LABEL, kind, meta["category"], meta["style"], sku, merchant))
        if progress is not None:
            progress(position + 1)
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("file", "label", "kind", "category", "style", "sku", "merchant_id"))
        writer.writerows(rows)
    return manifest

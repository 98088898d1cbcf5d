"""A perceptual hash of the product in a photo, for finding the same listing photo again.

A class embedding says "same kind of thing"; two different grey trousers are close in
it. Near-duplicate listings are the same photo resized, recompressed, lightly cropped,
brightened, watermarked or padded. A plain pHash of the whole frame moves with every
crop and pad, because on a white studio backdrop the product is a small part of the
frame and its position is what the low frequencies mostly encode. So this hash is taken
of the *product*, found the way a person would find it:

1. Weight each pixel by how far its colour is from the backdrop (the median of the
   border pixels), ignoring differences under `TOLERANCE` (JPEG noise, a backdrop
   brightened by 10 %).
2. Split the frame into a coarse grid and keep the connected groups of occupied cells
   whose weight is at least `KEEP` of the heaviest group: the product (or both shoes of a
   pair) stays, a small watermark in a corner or a speck of dust does not.
3. Crop the product's box (plus a margin), shrink it to 32x32 and take its 2-D DCT. The
   16x16 lowest frequencies, each compared with their median, are 256 **shape** bits
   (pHash's recipe, on the product's silhouette and texture instead of the frame).
4. Add 64 **colour** bits: the product's mean R, G and B, each as a 21-step thermometer
   code, so that the Hamming distance between two codes grows with the colour
   difference (and a navy shirt is not a duplicate of a beige one of the same cut).

The result is 320 bits, stored as pgvector `bit(320)` and searched by Hamming distance
with an HNSW `bit_hamming_ops` index. `docs/sql.md` gives the recall and precision on
generated near-duplicates (`vitrine bench duplicates`). The `imagehash` library was
considered: its pHash hashes the whole frame (the weakness above) and it would bring
SciPy and PyWavelets into every worker for one DCT.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.degrade import dct_matrix

SHAPE_SIDE = 16  # low-frequency DCT block: 16 x 16 = 256 shape bits
COLOUR_LEVELS = 21  # thermometer steps per channel: 3 x 21 = 63 colour bits (+1 spare)
BITS = SHAPE_SIDE * SHAPE_SIDE + 64
TOLERANCE = 40.0  # colour distance from the backdrop below which a pixel is backdrop
KEEP = 0.3  # keep pixel groups with at least this share of the heaviest group's weight
GRID = 24  # cells per side of the grid the groups are found on
MARGIN = 1.15  # the hashed box is the product's box grown by this factor
WORK_SIDE = 256  # the hash is computed on a copy at most this large

_DCT32 = dct_matrix(32).astype(np.float64)


def perceptual_hash(img: Image.Image) -> str:
    """The photo's 320-bit hash as a string of '0'/'1' (pgvector's `bit` text form)."""
    small = img.convert("RGB")
    small.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    rgb = np.asarray(small, dtype=np.int16)
    ring = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    backdrop = np.median(ring, axis=0).astype(np.int16)
    far = np.abs(rgb - backdrop)
    weight = np.maximum(np.maximum(far[..., 0], far[..., 1]), far[..., 2]).astype(np.float32)
    weight[weight < TOLERANCE] = 0.0
    if not weight.any():  # a blank frame: nothing to describe
        return "0" * BITS
    mask = _product_mask(weight)
    weight = np.where(mask, weight, 0.0)
    rows, cols = np.flatnonzero(weight.any(axis=1)), np.flatnonzero(weight.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx, hy = MARGIN * (x1 - x0) / 2, MARGIN * (y1 - y0) / 2
    box = (round(cx - hx), round(cy - hy), round(cx + hx), round(cy + hy))
    silhouette = Image.fromarray(weight.astype(np.uint8)).crop(box)
    pixels = np.asarray(silhouette.resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    low = (_DCT32 @ pixels @ _DCT32.T)[:SHAPE_SIDE, :SHAPE_SIDE].ravel()
    shape = low > np.median(low[1:])  # the DC term says only how heavy the product is
    product = mask & (weight > 0)
    mean = rgb[product].mean(axis=0, dtype=np.float64)
    steps = np.round(mean / 255.0 * COLOUR_LEVELS)
    colour = (np.arange(COLOUR_LEVELS)[None, :] < steps[:, None]).ravel()
    bits = np.concatenate([shape, colour, np.zeros(BITS - shape.size - colour.size, bool)])
    return "".join("1" if b else "0" for b in bits)


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hashes of the same length (what pgvector's `<~>` gives)."""
    if len(a) != len(b):
        raise ValueError(f"hashes of different lengths: {len(a)} and {len(b)}")
    return sum(x != y for x, y in zip(a, b, strict=True))


def _product_mask(weight: np.ndarray) -> np.ndarray:
    """Pixels in the grid cells of the heavy connected groups (see the module docstring)."""
    height, width = weight.shape
    ys = np.linspace(0, height, GRID + 1).astype(int)
    xs = np.linspace(0, width, GRID + 1).astype(int)
    ys, xs = np.unique(ys), np.unique(xs)  # tiny images: fewer, non-empty cells
    cells = np.add.reduceat(np.add.reduceat(weight, ys[:-1], axis=0), xs[:-1], axis=1)
    labels = _connected(cells > 0)
    ids, inverse = np.unique(labels, return_inverse=True)
    mass = np.bincount(inverse.ravel(), weights=cells.ravel())
    mass[ids == 0] = 0.0
    kept_cells = np.isin(labels, ids[mass >= KEEP * mass.max()])
    row_of = np.repeat(np.arange(len(ys) - 1), np.diff(ys))
    col_of = np.repeat(np.arange(len(xs) - 1), np.diff(xs))
    mask: np.ndarray = kept_cells[row_of][:, col_of]
    return mask


def _connected(occupied: np.ndarray) -> np.ndarray:
    """4-connected group labels of a small boolean grid (0 = empty).

    Each cell starts with its own number and repeatedly takes the largest among itself and
    its occupied neighbours; a group ends with one number. A 24x24 grid settles in at most
    a few dozen numpy steps, with no SciPy needed.
    """
    labels = np.where(occupied, np.arange(1, occupied.size + 1).reshape(occupied.shape), 0)
    while True:
        grown = labels.copy()
        np.maximum(grown[1:], labels[:-1], out=grown[1:])
        np.maximum(grown[:-1], labels[1:], out=grown[:-1])
        np.maximum(grown[:, 1:], labels[:, :-1], out=grown[:, 1:])
        np.maximum(grown[:, :-1], labels[:, 1:], out=grown[:, :-1])
        grown = np.where(occupied, grown, 0)
        if np.array_equal(grown, labels):
            return labels
        labels = grown

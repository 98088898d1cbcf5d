"""A perceptual hash of the product in a photo, for finding the same listing photo again.

A class embedding says "same kind of thing"; two different grey trousers are close in
it. Near-duplicate listings are the same photo resized, recompressed, lightly cropped,
brightened, watermarked or padded. A plain pHash of the whole frame moves with every
crop and pad, because on a white studio backdrop the product is a small part of the
frame and its position is what the low frequencies mostly encode. So this hash is taken
of the *product*, found the way a person would find it:

1. Strip padding: if the frame's border is one colour around an inner rectangle whose
   own border is another uniform colour, the inner rectangle is the photo.
2. Weight each pixel by how far its colour is from the backdrop (the median of the
   border pixels). Differences under a tolerance are backdrop (JPEG noise); the
   tolerance is 30 % of the photo's strongest differences, kept within 10..40, so a
   pale product on white does not vanish when the copy is brightened or darkened.
3. Split the frame into a coarse grid and keep the connected groups of occupied cells
   whose *solid* weight (after a 3x3 erosion, which thin strokes do not survive) is at
   least `KEEP` of the heaviest group's: the product (or both shoes of a pair) stays, a
   text watermark in a corner or a speck of dust does not.
4. Frame the product by its moments, not its bounding box: the box is the weight's
   centroid +- 2 standard deviations on each axis. A watermark that touches the product
   or a strap that drops out moves a bounding box a lot and the moments a little.
   Shrink that box to 32x32 and take its 2-D DCT: the 12x12 lowest frequencies, each
   compared with their median, are 144 **shape** bits (pHash's recipe, on the product's
   silhouette and texture instead of the frame).
5. Add 170 **colour** bits from the mean colour of the product's core (its more opaque
   half): its chromaticity (R, G and B over their sum, which a brightness change leaves
   alone) as three 50-step thermometer codes, and its lightness as a 20-step one. The
   Hamming distance between two thermometer codes grows with the difference, so a tan
   T-shirt is not a duplicate of an orange one of the same cut.

The result is 320 bits (6 spare), stored as pgvector `bit(320)` and searched by Hamming
distance with an HNSW `bit_hamming_ops` index. `docs/sql.md` gives the recall and
precision on generated near-duplicates (`vitrine bench duplicates`). The `imagehash`
library was considered: its pHash hashes the whole frame (the weakness above) and it
would bring SciPy and PyWavelets into every worker for one DCT.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.degrade import dct_matrix

BITS = 320
#: Hashes at most this many bits apart are the same photo (`duplicate_candidates`, from
#: migration 0004; `vitrine bench duplicates` measures it).
DUPLICATE_BITS = 30
SHAPE_SIDE = 12  # low-frequency DCT block: 12 x 12 = 144 shape bits
CHROMA_LEVELS = 50  # thermometer steps per chromaticity channel: 3 x 50 bits
CHROMA_RANGE = (0.15, 0.55)  # chromaticities outside are clipped (grey is 1/3)
LIGHTNESS_LEVELS = 20
TOLERANCE_SHARE = 0.3  # of the 99.5th percentile of the differences from the backdrop
TOLERANCE_RANGE = (10.0, 40.0)
PAD_TOLERANCE = 6  # how far a padding or backdrop pixel may stray from its colour
KEEP = 0.3  # keep pixel groups with at least this share of the heaviest group's weight
GRID = 24  # cells per side of the grid the groups are found on
SPREAD = 2.0  # the hashed box reaches this many standard deviations from the centroid
WORK_SIDE = 256  # the hash is computed on a copy at most this large

_DCT32 = dct_matrix(32).astype(np.float64)


def perceptual_hash(img: Image.Image) -> str:
    """The photo's 320-bit hash as a string of '0'/'1' (pgvector's `bit` text form)."""
    small = img.convert("RGB")
    small.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    rgb = _strip_padding(np.asarray(small, dtype=np.int16))
    weight = _distance(rgb, np.median(_border(rgb), axis=0)).astype(np.float32)
    tolerance = np.clip(TOLERANCE_SHARE * np.percentile(weight, 99.5), *TOLERANCE_RANGE)
    weight[weight < tolerance] = 0.0
    if not weight.any():  # a blank frame: nothing to describe
        return "0" * BITS
    mask = _product_mask(weight)
    weight = np.where(mask, weight, 0.0)
    shape = _shape_bits(weight)
    colour = _colour_bits(rgb[weight > 0], weight[weight > 0])
    bits = np.concatenate([shape, colour, np.zeros(BITS - shape.size - colour.size, bool)])
    return "".join("1" if b else "0" for b in bits)


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hashes of the same length (what pgvector's `<~>` gives)."""
    if len(a) != len(b):
        raise ValueError(f"hashes of different lengths: {len(a)} and {len(b)}")
    return sum(x != y for x, y in zip(a, b, strict=True))


def _border(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])


def _distance(rgb: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Per pixel, the largest channel difference from `colour` (int16; numpy reduces a
    3-long last axis slowly, three whole-plane maxima are ~10x faster)."""
    r, g, b = (np.abs(rgb[..., c] - np.int16(round(float(colour[c])))) for c in range(3))
    out: np.ndarray = np.maximum(np.maximum(r, g), b)
    return out


def _strip_padding(rgb: np.ndarray) -> np.ndarray:
    """The inner photo of a padded one (see step 1), else `rgb` itself.

    Padding in the backdrop's own colour needs no stripping: it is backdrop. Padding in
    another colour (white around a darkened copy) would otherwise make the whole inner
    photo look like the product.
    """
    outer = np.median(_border(rgb), axis=0)
    differs = _distance(rgb, outer) > PAD_TOLERANCE
    if not differs.any():
        return rgb
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    inner = rgb[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if min(inner.shape[:2]) < 8:
        return rgb
    ring = _border(inner)
    colour = np.median(ring, axis=0)
    uniform = (_distance(ring, colour) <= PAD_TOLERANCE).mean() > 0.9
    return inner if uniform and np.abs(colour - outer).max() > PAD_TOLERANCE else rgb


def _shape_bits(weight: np.ndarray) -> np.ndarray:
    """144 bits: the low DCT frequencies of the product, framed by its moments (step 4)."""
    total = float(weight.sum())
    ys, xs = np.arange(weight.shape[0]), np.arange(weight.shape[1])
    by_row, by_col = weight.sum(axis=1), weight.sum(axis=0)
    cy, cx = by_row @ ys / total, by_col @ xs / total
    sy = np.sqrt(by_row @ (ys - cy) ** 2 / total)
    sx = np.sqrt(by_col @ (xs - cx) ** 2 / total)
    # Sub-pixel framing: the box is where the moments put it, not rounded to pixels; the
    # weights are padded with zeros where the box reaches past the frame.
    height, width = weight.shape
    x0, y0 = cx - SPREAD * sx, cy - SPREAD * sy
    x1, y1 = cx + SPREAD * sx, cy + SPREAD * sy
    pad = int(np.ceil(max(0.0, -x0, -y0, x1 - width, y1 - height)))
    box = (x0 + pad, y0 + pad, x1 + pad, y1 + pad)
    silhouette = Image.fromarray(np.pad(weight, pad).astype(np.uint8))
    framed = silhouette.resize((32, 32), Image.Resampling.BOX, box=box)
    pixels = np.asarray(framed, dtype=np.float64)
    low = (_DCT32 @ pixels @ _DCT32.T)[:SHAPE_SIDE, :SHAPE_SIDE].ravel()
    shape: np.ndarray = low > np.median(low[1:])  # the DC term says only how heavy it is
    return shape


def _colour_bits(pixels: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """170 bits: chromaticity and lightness of the product's core as thermometer codes."""
    core = pixels[weight >= np.median(weight)].astype(np.float64)
    mean = core.mean(axis=0)
    low, high = CHROMA_RANGE
    chroma = np.clip((mean / max(1.0, float(mean.sum())) - low) / (high - low), 0.0, 1.0)
    chroma_steps = np.round(chroma * CHROMA_LEVELS)
    lightness_steps = round(float(mean.mean()) / 255.0 * LIGHTNESS_LEVELS)
    return np.concatenate(
        [
            (np.arange(CHROMA_LEVELS)[None, :] < chroma_steps[:, None]).ravel(),
            np.arange(LIGHTNESS_LEVELS) < lightness_steps,
        ]
    )


def _product_mask(weight: np.ndarray) -> np.ndarray:
    """Pixels in the grid cells of the heavy connected groups (step 3)."""
    height, width = weight.shape
    ys = np.unique(np.linspace(0, height, GRID + 1).astype(int))  # tiny images: fewer cells
    xs = np.unique(np.linspace(0, width, GRID + 1).astype(int))

    def per_cell(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(values, ys[:-1], axis=0), xs[:-1], axis=1)

    cells = per_cell(weight)
    labels = _connected(cells > 0)
    ids, inverse = np.unique(labels, return_inverse=True)
    solid = per_cell(_erode(weight))
    mass = np.bincount(inverse.ravel(), weights=(solid if solid.any() else cells).ravel())
    mass[ids == 0] = 0.0
    kept_cells = np.isin(labels, ids[mass >= KEEP * mass.max()])
    row_of = np.repeat(np.arange(len(ys) - 1), np.diff(ys))
    col_of = np.repeat(np.arange(len(xs) - 1), np.diff(xs))
    mask: np.ndarray = kept_cells[row_of][:, col_of]
    return mask


def _erode(weight: np.ndarray) -> np.ndarray:
    """Each pixel's smallest weight in its 3x3 neighbourhood: strokes 1-2 px wide vanish."""
    padded = np.pad(weight, 1, mode="edge")
    height, width = weight.shape
    out = weight.copy()
    for dy in range(3):
        for dx in range(3):
            np.minimum(out, padded[dy : dy + height, dx : dx + width], out=out)
    return out


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

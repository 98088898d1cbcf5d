"""A perceptual hash of the product in a photo, for finding the same listing photo again.

A class embedding says "same kind of thing"; two different grey trousers are close in
it. Near-duplicate listings are the same photo resized, recompressed, lightly cropped,
brightened, watermarked or padded. A plain pHash of the whole frame moves with every
crop and pad, because on a white studio backdrop the product is a small part of the
frame and its position is what the low frequencies mostly encode. So this hash is taken
of the *product*, found the way a person would find it:

1. Strip padding: if the frame's border is one colour around an inner rectangle whose
   own border is another colour all the way round (a backdrop, plain or vignetted),
   the inner rectangle is the photo (`vitrine.pipeline.inference.framing.strip_padding`).
2. Weight each pixel by how far its colour is from the backdrop (a studio sweep's
   colour, vignetting and soft shadow flat-fielded away as for the model; else the
   median of the border pixels). Differences under a tolerance are backdrop (JPEG noise); the
   tolerance is 30 % of the photo's strongest differences, kept within 10..40, so a
   pale product on white does not vanish when the copy is brightened or darkened.
3. Split the frame into a coarse grid and keep the connected groups of occupied cells
   whose *solid* weight (after a 3x3 erosion, which thin strokes do not survive) is at
   least 0.3 of the heaviest group's: the product (or both shoes of a pair) stays, a
   text watermark in a corner or a speck of dust does not (`framing.product_mask`).
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

from vitrine.pipeline.inference.backdrop import lift_colour_backdrop
from vitrine.pipeline.inference.flatten import WORK_SIDE, working_copy
from vitrine.pipeline.inference.framing import (
    border,
    colour_distance,
    product_mask,
    strip_padding,
    strongest_channel,
)

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
#: A backdrop is plain (its median colour is the backdrop, no flat-fielding needed) when
#: this share of the border lies within this many levels of it.
PLAIN_SHARE, PLAIN_TOLERANCE = 0.9, 3
SPREAD = 2.0  # the hashed box reaches this many standard deviations from the centroid


def dct_matrix(size: int = 8) -> np.ndarray:
    """Orthonormal DCT-II basis (rows = frequencies): `m @ block @ m.T` is the 2-D DCT."""
    k = np.arange(size, dtype=np.float64)[:, None]
    n = np.arange(size, dtype=np.float64)[None, :]
    m = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)  # orthonormal DCT-II: m @ m.T == I


_DCT32 = dct_matrix(32).astype(np.float64)


def perceptual_hash(img: Image.Image) -> str:
    """The photo's 320-bit hash as a string of '0'/'1' (pgvector's `bit` text form).
    Transparency is composited onto white first (`vitrine.pipeline.inference.flatten`): what lies
    under a
    cut-out's alpha is not the photo. The worker hands it the working copy it made
    already (`vitrine.pipeline.inference.flatten.working_copy`), which is used as it is."""
    rgb = strip_padding(np.asarray(working_copy(img, WORK_SIDE), dtype=np.int16))
    weight = _backdrop_distance(rgb)
    tolerance = np.clip(TOLERANCE_SHARE * np.percentile(weight, 99.5), *TOLERANCE_RANGE)
    weight[weight < tolerance] = 0.0
    if not weight.any():  # a blank frame: nothing to describe
        return "0" * BITS
    mask = product_mask(weight)
    weight = np.where(mask, weight, 0.0)
    shape = _shape_bits(weight)
    colour = _colour_bits(rgb[weight > 0], weight[weight > 0])
    bits = np.concatenate([shape, colour, np.zeros(BITS - shape.size - colour.size, bool)])
    return "".join("1" if b else "0" for b in bits)


def _backdrop_distance(rgb: np.ndarray) -> np.ndarray:
    """How far each pixel is from the backdrop (step 2). A studio sweep, coloured,
    vignetted and with a soft shadow, is flat-fielded away first, as the model's
    preprocessing does (`vitrine.pipeline.inference.backdrop`): measured from its median colour,
    vignetting
    and shadow counted as product, and a crop or a brightness change of a studio shot moved
    its hash by 50-110 bits (`vitrine bench catalog --seed 7`: studio recall 0.75 -> 0.975).
    On white or a plain backdrop (the border within PLAIN_TOLERANCE of its median: white
    photos spread 0-1 levels, studio sweeps 4-32), the largest channel difference from the
    border's median, as before: flat-fielding those too lost recall on brightened copies
    (0.965 -> 0.960 on `vitrine bench duplicates`) and doubled the cost."""
    edge = border(rgb)
    colour = np.median(edge, axis=0)
    if (colour_distance(edge, colour) <= PLAIN_TOLERANCE).mean() >= PLAIN_SHARE:
        return colour_distance(rgb, colour).astype(np.float32)
    lifted = lift_colour_backdrop(np.ascontiguousarray(255 - rgb, dtype=np.uint8))
    if lifted is None:
        return colour_distance(rgb, colour).astype(np.float32)
    return strongest_channel(lifted).astype(np.float32)


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hashes of the same length (what pgvector's `<~>` gives)."""
    if len(a) != len(b):
        raise ValueError(f"hashes of different lengths: {len(a)} and {len(b)}")
    return sum(x != y for x, y in zip(a, b, strict=True))


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

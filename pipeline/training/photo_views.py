"""Training items as the worker sees photos of them: rendered, encoded, decoded, preprocessed.

The network learns from the dataset's 28x28 scans but serves photos. A photo of an item
comes back from the worker's preprocessing close to the scan, not equal to it: the colour
is turned back into grey through a palette and a backdrop, the edges are resampled twice,
autocontrast moves the mid-tones, a studio shot keeps some of its shadow and tilt, and JPEG
leaves its blocks. Accuracy on photos of test items sits 2 to 5 points below the raw test
set, and that gap is this round trip. Training on the round trip of *training* items
teaches the network those marks; the test items stay unseen, so `eval --images` on photos
of them still measures what an upload gets.

Each view is made exactly as `vitrine photos` makes an upload (`render_photo`,
`encode_photo`) and read back exactly as the worker reads one (`prepare_photo`, the
model's own spec), from a per-photo generator: the views are the same for a seed whatever
the number of processes, so a resumed run trains on the same arrays.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from vitrine.pipeline.inference.preprocess import prepare_photo
from vitrine.pipeline.synthetic.photos import encode_photo, render_photo
from vitrine.pipeline.types import ImageLimits, PreprocessSpec

#: Generous limits: these photos are made here, at most 1,400 px.
_LIMITS = ImageLimits(max_bytes=40_000_000, max_pixels=40_000_000)
#: Photos per task sent to a process: large enough that start-up is paid rarely, small
#: enough that progress moves.
_CHUNK = 250
#: Longest side of a view's photo. Uploads run to 1,400 px, but the worker reduces every
#: photo to a 384 px source and a 256 px working copy first; from 500 px up a photo takes
#: the same path, and rendering a studio shot costs about half (40 against 74 ms).
SIZE_RANGE = (500, 1000)


@dataclass(frozen=True)
class PhotoViews:
    """`items` training items (drawn without replacement) also shown as photos, a share
    `studio_fraction` of them studio shots, the rest merchant shots (white or transparent,
    JPEG/PNG/WebP, some stored rotated with an EXIF tag). 0 items: the plain recipe."""

    items: int = 0
    studio_fraction: float = 0.5


def _views_of(
    items: np.ndarray,
    positions: range,
    seed: int,
    studio_fraction: float,
    spec: PreprocessSpec,
) -> np.ndarray:
    """uint8 (n, size, size) views of `items` (photo `positions[i]` of the run shows
    `items[i]`), in the stored convention of the raw items (object bright on black)."""
    out = np.zeros((len(items), spec.size, spec.size), dtype=np.uint8)
    for i, position in enumerate(positions):
        rng = np.random.default_rng([seed, position])
        style = "studio" if rng.random() < studio_fraction else "merchant"
        photo, fmt = render_photo(
            items[i], rng=rng, formats=("jpeg", "png", "webp"), size_range=SIZE_RANGE, style=style
        )
        data = encode_photo(photo, fmt, rng=rng, exif_rotate_fraction=0.2, style=style)
        array = prepare_photo(data, spec, limits=_LIMITS).array
        stored = (array[..., 0] - np.float32(spec.offset)) / np.float32(spec.scale)
        out[i] = np.clip(np.rint(stored), 0, 255).astype(np.uint8)
    return out


def photo_views(
    x: np.ndarray,
    views: PhotoViews,
    *,
    seed: int,
    spec: PreprocessSpec,
    processes: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices into `x`, uint8 views of those items) for `views.items` of them.

    `spec` must be a grey spec whose stored form is the raw items' (the Fashion-MNIST
    default: invert, 1 channel). `processes` > 1 renders in spawned processes (this one may
    hold TensorFlow's threads, which a fork would copy half-made); the result does not
    depend on it. `progress(done, total)` after every chunk.
    """
    if spec.channels != 1 or not spec.invert:
        raise ValueError("photo views need the grey, inverted spec of the raw items")
    n = min(int(views.items), len(x))
    picks = np.sort(np.random.default_rng([seed, 7]).choice(len(x), size=n, replace=False))
    out = np.zeros((n, spec.size, spec.size), dtype=np.uint8)
    starts = range(0, n, _CHUNK)

    def args(start: int) -> tuple[np.ndarray, range, int, float, PreprocessSpec]:
        stop = min(n, start + _CHUNK)
        return x[picks[start:stop]], range(start, stop), seed, views.studio_fraction, spec

    with ExitStack() as stack:
        if processes > 1:  # spawned: this process may hold TensorFlow's threads
            context = multiprocessing.get_context("spawn")
            pool = stack.enter_context(ProcessPoolExecutor(processes, mp_context=context))
            futures = [pool.submit(_views_of, *args(start)) for start in starts]
            parts: Iterable[np.ndarray] = (future.result() for future in futures)
        else:
            parts = (_views_of(*args(start)) for start in starts)
        for start, part in zip(starts, parts, strict=True):
            out[start : start + len(part)] = part
            if progress is not None:
                progress(start + len(part), n)
    return picks, out

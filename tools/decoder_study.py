"""Pillow against libvips for the worker's first step: bytes -> the 256 px working copy.

    .venv/bin/pip install pyvips pyvips-binary   # not a vitrine dependency
    VIPS_CONCURRENCY=1 .venv/bin/python tools/decoder_study.py --photos DIR [--rounds 2]

For every JPEG, PNG and WebP in DIR (e.g. the `vitrine bench ingest` photos), in this one
process, alternating rounds: Pillow as the worker decodes (`decode` with a JPEG draft
sized for the working copy, then `working_copy`) and libvips with shrink-on-load (JPEG
`shrink`, WebP `scale`, PNG through libspng then `shrink`; alpha premultiplied, then
composited onto white). Reports CPU ms per photo and format (process time, so libvips'
threads count) and how far the two working copies differ (mean absolute, 0-255).
Glibc's malloc is tuned first, as the worker's decode does
(`vitrine.pipeline.inference.allocator`): without it Pillow's WebP looks 1.6x slower.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitrine.pipeline.inference.allocator import keep_freed_memory
from vitrine.pipeline.inference.decode import decode
from vitrine.pipeline.inference.flatten import WORK_SIDE, working_copy
from vitrine.pipeline.types import ImageLimits

LIMITS = ImageLimits(max_bytes=40_000_000, max_pixels=40_000_000)


def pillow(blob: bytes, suffix: str) -> Image.Image:
    img, _ = decode(blob, limits=LIMITS, draft_size=WORK_SIDE, draft_mode="RGB", draft_longest=True)
    return working_copy(img)


def vips(blob: bytes, suffix: str) -> Image.Image:
    import pyvips

    load = {
        ".jpg": pyvips.Image.jpegload_buffer,
        ".png": pyvips.Image.pngload_buffer,
        ".webp": pyvips.Image.webpload_buffer,
    }[suffix]
    head = load(blob, access="sequential")
    factor = max(head.width, head.height) / WORK_SIDE
    if suffix == ".jpg":
        shrink = 1
        while shrink < 8 and factor >= 2 * shrink:
            shrink *= 2
        img = load(blob, access="sequential", shrink=shrink) if shrink > 1 else head
    elif suffix == ".webp" and factor >= 2:
        img = load(blob, access="sequential", scale=1.0 / int(factor))
    else:
        img = head.shrink(int(factor), int(factor)) if factor >= 2 else head
    if img.hasalpha():
        img = img.premultiply()
    shape = (img.height, img.width, img.bands)
    dtype = np.uint8 if img.format == "uchar" else np.float32
    arr = np.ndarray(buffer=img.write_to_memory(), dtype=dtype, shape=shape)
    if img.bands == 4:  # premultiplied: on white is colour + (255 - alpha)
        arr = np.clip(np.rint(arr[..., :3] + (255.0 - arr[..., 3:4])), 0, 255)
    return working_copy(Image.fromarray(arr.astype(np.uint8)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()
    blobs = [
        (p.suffix, p.read_bytes())
        for p in sorted(args.photos.iterdir())
        if p.suffix in (".jpg", ".png", ".webp")
    ]
    decoders = {"pillow": pillow, "libvips": vips}
    for fn in decoders.values():  # warm-up: imports, first-call set-up
        for suffix, blob in blobs[:6]:
            fn(blob, suffix)
    spent: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(args.rounds):
        for name, fn in decoders.items():
            for suffix, blob in blobs:
                started = time.process_time()
                fn(blob, suffix)
                spent[name][suffix].append(time.process_time() - started)
    report: dict[str, Any] = {"photos": len(blobs)}
    for name, by_format in spent.items():
        everything = [t for times in by_format.values() for t in times]
        row = {s.lstrip("."): round(1000 * float(np.mean(t)), 2) for s, t in by_format.items()}
        report[name] = {**row, "all": round(1000 * float(np.mean(everything)), 2)}
    gaps = []
    for suffix, blob in blobs[:80]:
        a, b = np.asarray(pillow(blob, suffix), np.int16), np.asarray(vips(blob, suffix), np.int16)
        if a.shape == b.shape:  # (a rounding of the size can differ by a pixel)
            gaps.append(float(np.abs(a - b).mean()))
    report["mean_abs_difference"] = round(float(np.mean(gaps)), 3)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

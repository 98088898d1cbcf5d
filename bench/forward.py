"""`vitrine bench`: throughput numbers, measured in one run so their ratios are fair."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from vitrine.pipeline.inference.decode import decode
from vitrine.pipeline.inference.model import load_model_dir
from vitrine.pipeline.inference.preprocess import (
    preprocess_bytes,
    raw_to_model_input,
    to_model_input,
)
from vitrine.pipeline.synthetic.photos import make_product_photo
from vitrine.pipeline.training.datasets import load_fashion_mnist
from vitrine.settings import SAMPLE_FASHION_DIR, Settings


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def _photo_jpegs(items: np.ndarray, n: int) -> tuple[list[bytes], float]:
    """`n` large product photos as JPEG bytes, and their mean size in megapixels."""
    rng = np.random.default_rng(0)
    blobs, pixels = [], []
    for i in range(n):
        img, _ = make_product_photo(items[i % len(items)], rng=rng, size_range=(1600, 2000))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
        pixels.append(img.width * img.height)
    return blobs, float(np.mean(pixels)) / 1e6


def run_bench(settings: Settings, *, size: int, batch: int, model: Path | None) -> dict[str, Any]:
    """Forward pass (batched and batch 1), preprocessing with and without JPEG draft decode."""
    loaded = load_model_dir(model or settings.model_dir)
    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    x = raw_to_model_input(np.resize(data.x_test, (size, 28, 28)), loaded.spec.preprocess)
    loaded.forward(x[:batch], batch_size=batch)  # warm-up: graph tracing is not throughput
    results: dict[str, Any] = {"size": size, "batch": batch, "model": loaded.spec.key}

    t0 = time.perf_counter()
    loaded.forward(x, batch_size=batch)
    results["forward_images_per_s"] = _rate(size, time.perf_counter() - t0)
    t0 = time.perf_counter()
    loaded.forward(x[: min(size, 64)], batch_size=1)
    results["forward_batch1_images_per_s"] = _rate(min(size, 64), time.perf_counter() - t0)

    n_photos = max(32, size // 2)
    blobs, megapixels = _photo_jpegs(data.x_test, n_photos)
    limits, spec = settings.image_limits, loaded.spec.preprocess

    def with_draft(blob: bytes) -> object:
        return preprocess_bytes(blob, spec, limits=limits, with_phash=True)  # the worker's path

    def without_draft(blob: bytes) -> object:
        img, _ = decode(blob, limits=limits, draft_size=None)
        return to_model_input(img, spec)

    timings = {}
    for name, fn in (("draft", with_draft), ("full", without_draft)):
        fn(blobs[0])  # warm-up
        t0 = time.perf_counter()
        for blob in blobs:
            fn(blob)
        timings[name] = time.perf_counter() - t0
    results["photos"] = n_photos
    results["photo_megapixels"] = round(megapixels, 2)
    results["preprocess_draft_images_per_s"] = _rate(n_photos, timings["draft"])
    results["preprocess_full_decode_images_per_s"] = _rate(n_photos, timings["full"])
    results["draft_speedup"] = round(timings["full"] / timings["draft"], 2)
    results["forward_batch64_vs_batch1"] = round(
        results["forward_images_per_s"] / max(results["forward_batch1_images_per_s"], 1e-9), 2
    )
    return results

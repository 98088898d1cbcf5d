"""`vitrine bench`: throughput numbers as JSON, measured in one run so ratios are fair."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from cli.output import print_result


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def bench(
    size: int = typer.Option(512, help="Images per measurement (CI uses a small smoke size)."),
    batch: int = typer.Option(64, help="Forward batch size."),
    model: Path = typer.Option(None, help="Model directory (default: the shipped model)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Forward pass, preprocessing and decode throughput on this machine."""
    import io

    from pipeline.datasets import load_fashion_mnist
    from pipeline.model import load_model_dir
    from pipeline.photos import make_product_photo
    from pipeline.preprocess import decode, preprocess_bytes, raw_to_model_input, to_model_input
    from worker.settings import SAMPLE_FASHION_DIR, get_settings

    settings = get_settings()
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

    rng = np.random.default_rng(0)
    n_photos = max(32, size // 2)
    blobs, pixels = [], []
    for i in range(n_photos):
        item = data.x_test[i % len(data.x_test)]
        img, _ = make_product_photo(item, rng=rng, size_range=(1600, 2000))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
        pixels.append(img.width * img.height)
    limits = {"max_pixels": settings.max_image_pixels, "max_bytes": settings.max_file_bytes}
    spec = loaded.spec.preprocess

    def with_draft(blob: bytes) -> object:
        return preprocess_bytes(blob, spec, **limits)

    def without_draft(blob: bytes) -> object:
        img, _ = decode(blob, draft_size=None, **limits)
        return to_model_input(img, spec)

    timings = {}
    for name, fn in (("draft", with_draft), ("full", without_draft)):
        fn(blobs[0])  # warm-up
        t0 = time.perf_counter()
        for blob in blobs:
            fn(blob)
        timings[name] = time.perf_counter() - t0
    results["photos"] = n_photos
    results["photo_megapixels"] = round(float(np.mean(pixels)) / 1e6, 2)
    results["preprocess_draft_images_per_s"] = _rate(n_photos, timings["draft"])
    results["preprocess_full_decode_images_per_s"] = _rate(n_photos, timings["full"])
    results["draft_speedup"] = round(timings["full"] / timings["draft"], 2)
    results["forward_batch64_vs_batch1"] = round(
        results["forward_images_per_s"] / max(results["forward_batch1_images_per_s"], 1e-9), 2
    )
    print_result(results, json_out)

"""`vitrine bench explain`: are the Grad-CAM maps `vitrine explain` draws faithful?

N Fashion-MNIST test items become merchant-style photos (`make_product_photo`, which
says where it put the item), go through the workers' preprocessing and the model, and
each map is mapped back onto the photo. Two questions:

- does the map land on the object? Share of its mass inside the item's frame (goal
  >= 0.8) and, stricter, inside the item's own silhouette (its pixels >= 10 % of full);
- does it point at what the prediction rests on? Painting the hottest 10 % of the model
  input's pixels backdrop should lower the predicted class's probability more than
  painting a random 10 % (deletion test, Petsiuk et al. 2018, at one step).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PIL import Image

from vitrine.ops.data import fashion_mnist
from vitrine.ops.progress import ProgressFactory, no_progress
from vitrine.pipeline.inference.explain import (
    deletion_drops,
    grad_cam,
    heat_on_image,
    input_frame,
    mass_inside,
)
from vitrine.pipeline.inference.model import load_model_dir
from vitrine.pipeline.inference.preprocess import to_model_input, working_size
from vitrine.pipeline.synthetic.photos import make_product_photo
from vitrine.pipeline.training.datasets import DEBIAN_DIR
from vitrine.settings import Settings

BOX_GOAL = 0.8
DELETE_FRACTION = 0.10
SILHOUETTE_LEVEL = 26  # of 255: an item pixel at >= 10 % of full strength is the object


def object_masks(
    item: np.ndarray, meta: dict[str, Any], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(frame, silhouette) boolean masks of the item in a `make_product_photo` photo of
    `shape` (height, width): its square frame, and its pixels scaled like the photo's."""
    x0, y0, side = meta["offset_x"], meta["offset_y"], meta["object_size"]
    frame = np.zeros(shape, bool)
    frame[y0 : y0 + side, x0 : x0 + side] = True
    scaled = np.asarray(Image.fromarray(item).resize((side, side), Image.Resampling.BILINEAR))
    silhouette = np.zeros(shape, bool)
    visible = silhouette[y0 : y0 + side, x0 : x0 + side]
    visible[...] = (scaled >= SILHOUETTE_LEVEL)[: visible.shape[0], : visible.shape[1]]
    return frame, silhouette


def run_explain_bench(
    settings: Settings, *, items: int, seed: int, progress: ProgressFactory = no_progress
) -> dict[str, Any]:
    full = DEBIAN_DIR.is_dir()
    data = fashion_mnist(None, sample=not full)
    model = load_model_dir(settings.model_dir)
    spec = model.spec.preprocess
    work_size = working_size(spec)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(data.x_test), size=min(items, len(data.x_test)), replace=False)
    inputs, in_frame, in_silhouette = [], [], []
    seconds = 0.0
    with progress("explaining", len(chosen)) as tick:
        for index in chosen:
            item = data.x_test[index]
            photo, meta = make_product_photo(item, rng=rng)
            x = to_model_input(photo, spec, work_size=work_size)
            started = time.perf_counter()
            frame = input_frame(photo, spec, work_size)
            cams, _ = grad_cam(model.keras_model, x[None])
            heat = heat_on_image(cams[0], frame)
            seconds += time.perf_counter() - started
            box, silhouette = object_masks(item, meta, heat.shape)
            in_frame.append(mass_inside(heat, box))
            in_silhouette.append(mass_inside(heat, silhouette))
            inputs.append(x)
            tick(1)
    x_all = np.stack(inputs)
    cams, probs = grad_cam(model.keras_model, x_all)
    drops = deletion_drops(
        lambda b: model.forward(b)[0], x_all, cams, spec, fraction=DELETE_FRACTION, rng=rng
    )
    hottest, random = drops["hottest"], drops["random"]
    box_share = float(np.mean(in_frame))
    return {
        "items": len(chosen),
        "model": model.spec.key,
        "test_items": "Debian's dataset-fashion-mnist" if full else "the slice in vitrine/data",
        "accuracy": round(float(np.mean(probs.argmax(1) == data.y_test[chosen])), 4),
        "heat_in_object_frame": {
            "mean": round(box_share, 4),
            "min": round(float(np.min(in_frame)), 4),
            "goal": BOX_GOAL,
            "met": box_share >= BOX_GOAL,
        },
        "heat_in_object_silhouette": {
            "mean": round(float(np.mean(in_silhouette)), 4),
            "min": round(float(np.min(in_silhouette)), 4),
        },
        "deletion": {
            "fraction": DELETE_FRACTION,
            "mean_drop_hottest": round(float(hottest.mean()), 4),
            "mean_drop_random": round(float(random.mean()), 4),
            "median_drop_hottest": round(float(np.median(hottest)), 4),
            "median_drop_random": round(float(np.median(random)), 4),
            "share_hottest_above_random": round(float(np.mean(hottest > random)), 4),
            "share_both_below_0.01": round(float(np.mean((hottest < 0.01) & (random < 0.01))), 4),
        },
        "ms_per_explanation": round(1000 * seconds / max(1, len(chosen)), 2),
    }

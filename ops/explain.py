"""`vitrine explain`: why the active model labelled a photo as it did, as one picture.

The photo goes through the workers' own decode and preprocessing with the active model
(so the explanation is of the prediction the catalog holds), then Grad-CAM
(`vitrine.pipeline.inference.explain`) says where the model looked, and the nearest training images
in
embedding space say what it thought the photo resembled. Those training embeddings are
computed once per model and training set and cached under the data directory: embedding
3,000 images takes seconds, a lookup afterwards microseconds.

The review desk shows the Grad-CAM part alone (`heat_picture`, cached by
`vitrine.ops.heat_maps`), through the API's one loaded model: every entry point takes the
caller's `PhotoEmbedder`, and only a command without one loads the model itself.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vitrine.db import repository
from vitrine.db.types import ModelRow
from vitrine.ops.context import Context
from vitrine.ops.data import fashion_mnist
from vitrine.ops.errors import UserError
from vitrine.ops.photo_search import PhotoEmbedder
from vitrine.ops.stored_photos import PhotoUnavailable, read_stored
from vitrine.pipeline.training.datasets import DEBIAN_DIR
from vitrine.pipeline.types import UNKNOWN_LABEL, Prediction, PreprocessSpec

if TYPE_CHECKING:
    from PIL import Image

    from vitrine.pipeline.inference.model import LoadedModel

#: Training images embedded once per model as the evidence pool (all of them when fewer).
REFERENCE_IMAGES = 3000
NEIGHBOURS = 5
TOP_K = 3


@dataclass(frozen=True)
class Neighbour:
    """A training image near the photo: its index in the training set, its true label."""

    index: int
    label: str
    distance: float


@dataclass(frozen=True)
class Explanation:
    source: str
    model: str
    label: str
    confidence: float
    top_k: list[tuple[str, float]]
    neighbours: list[Neighbour]
    training_set: str
    png: Path | None
    seconds: float
    unknown_score: float | None = None  # "unknown" in `label` when past the threshold


@dataclass(frozen=True)
class Reference:
    """The evidence pool: training images, their labels and embeddings under one model."""

    indices: np.ndarray  # int (n,): positions in the training set
    images: np.ndarray  # uint8 (n, 28, 28)
    labels: np.ndarray  # int (n,)
    embeddings: np.ndarray  # float32 (n, dim), L2-normalised
    description: str

    def nearest(self, embedding: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(position, cosine distance) of the k nearest, nearest first."""
        distances = 1.0 - self.embeddings @ np.asarray(embedding, np.float32)
        order = np.argsort(distances, kind="stable")[:k]
        return [(int(i), float(distances[i])) for i in order]


@dataclass(frozen=True)
class Look:
    """Where the model looked at one photo: the decoded photo (upright, any mode), the
    model input and Grad-CAM map on it (size x size), the same map on the photo's pixels,
    and the prediction the map explains (its top label)."""

    model: ModelRow
    photo: Image.Image
    model_input: np.ndarray
    cam: np.ndarray
    heat: np.ndarray
    prediction: Prediction
    seconds: float


@dataclass(frozen=True)
class HeatPicture:
    """The desk's picture of a `Look`: PNG bytes, and what it shows."""

    png: bytes
    model: str
    label: str
    confidence: float
    seconds: float  # decode, Grad-CAM, prediction and drawing


def explain_image(
    ctx: Context, *, image_id: int, png: Path | None, embedder: PhotoEmbedder | None = None
) -> Explanation:
    """Explain a stored image, read through its uri under the workers' rules."""
    with ctx.engine().connect() as conn:
        found = repository.image_summaries(conn, image_ids=[image_id]).get(image_id)
    if found is None:
        raise UserError(f"no image {image_id} in the catalog")
    data = read_stored(ctx.settings, found.uri)
    return _explain(ctx, data, f"#{image_id}", png, embedder or PhotoEmbedder(ctx))


def explain_photo(
    ctx: Context, *, photo: Path, png: Path | None, embedder: PhotoEmbedder | None = None
) -> Explanation:
    """Explain any photo file, in the catalog or not."""
    try:
        data = photo.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {photo}: {exc.strerror or exc}") from None
    return _explain(ctx, data, photo.name, png, embedder or PhotoEmbedder(ctx))


def heat_picture(
    ctx: Context,
    *,
    uri: str,
    embedder: PhotoEmbedder,
    active: ModelRow | None = None,
    caption: str = "the photo",
) -> HeatPicture:
    """The desk's compact picture of where `active` (default: the active model, through
    `embedder`'s loaded copy) looked at the stored photo behind `uri`, read under the
    workers' rules; `PhotoUnavailable` when it cannot be read or decoded (`caption` names
    the photo in that message)."""
    from vitrine.ops.explain_picture import heat_tile

    started = time.perf_counter()
    look = look_at(ctx, read_stored(ctx.settings, uri), caption, embedder, active=active)
    label, confidence = look.prediction.label, look.prediction.confidence
    png = heat_tile(
        look.photo, look.heat, caption=f'where it looked for "{label}" ({confidence:.0%})'
    )
    return HeatPicture(png, look.model.key, label, confidence, time.perf_counter() - started)


def look_at(
    ctx: Context,
    data: bytes,
    caption: str,
    embedder: PhotoEmbedder,
    *,
    active: ModelRow | None = None,
    views: bool = False,
) -> Look:
    """Decode `data` as the workers do, run Grad-CAM and the prediction through
    `embedder`'s model; `PhotoUnavailable` (a `UserError` naming `caption`) for bytes
    that are not a usable photo. `views`: also score "none of our categories" (needs
    the object view, a few ms more)."""
    from PIL import Image

    from vitrine.pipeline.inference.decode import BadImageError, decode
    from vitrine.pipeline.inference.explain import (
        InputFrame,
        grad_cam,
        heat_on_image,
        input_frame,
    )
    from vitrine.pipeline.inference.preprocess import (
        VIEW_SOURCE_SIDE,
        object_view,
        to_model_input,
        view_input,
        working_size,
    )

    active = active or embedder.model_row()
    model = embedder.model(active)
    started = time.perf_counter()
    spec = model.spec.preprocess
    work_size = working_size(spec)
    try:
        img, _ = decode(
            data,
            limits=ctx.settings.image_limits,
            draft_size=max(work_size, VIEW_SOURCE_SIDE),
            draft_mode="RGB",
            draft_longest=True,
        )
    except BadImageError as exc:
        raise PhotoUnavailable(f"{caption}: not a usable photo: {exc}") from None
    if spec.view:  # a lite0 model sees the object view: the map is drawn on that view
        img = Image.fromarray(object_view(img, int(spec.size)))
        x = view_input(np.asarray(img), spec)
        frame = InputFrame.whole(int(spec.size))
    else:
        x = to_model_input(img, spec, work_size=work_size)
        frame = input_frame(img, spec, work_size)
    cams, _ = grad_cam(model.keras_model, x[None])
    shown = None
    if views and model.view_size is not None:
        shown = object_view(img, model.view_size)[None]
    (prediction,) = model.predict(x[None], top_k=TOP_K, views=shown)
    heat = heat_on_image(cams[0], frame)
    return Look(active, img, x, cams[0], heat, prediction, time.perf_counter() - started)


def input_picture(x: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """A model input as the uint8 picture it stands for (scale and offset undone): grey
    bright-on-black for the Fashion-MNIST convention, colour for a lite0 object view."""
    pixels = (np.asarray(x, np.float32) - np.float32(spec.offset)) / np.float32(spec.scale)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _explain(
    ctx: Context, data: bytes, caption: str, png: Path | None, embedder: PhotoEmbedder
) -> Explanation:
    from vitrine.ops.explain_picture import explanation_picture

    look = look_at(ctx, data, caption, embedder, views=True)
    started = time.perf_counter() - look.seconds
    model, prediction = embedder.model(look.model), look.prediction
    labels = model.spec.labels
    near: list[Neighbour] = []
    evidence: list[tuple[np.ndarray, str]] = []
    if model.spec.is_fashion_mnist:
        reference = training_reference(ctx, model, look.model.key)
        nearest = reference.nearest(prediction.embedding, NEIGHBOURS)
        near = [
            Neighbour(int(reference.indices[i]), labels[int(reference.labels[i])], d)
            for i, d in nearest
        ]
        evidence = [
            (reference.images[i], f"{n.label}\nd={n.distance:.3f}")
            for (i, _), n in zip(nearest, near, strict=True)
        ]
        described = reference.description
    else:  # a merchant's own taxonomy: its training photos stay with the merchant
        described = f"none: {look.model.key} was trained on {len(labels)} classes of its own"
    drawn = None
    if png is not None:
        drawn = explanation_picture(
            png,
            photo=look.photo,
            heat=look.heat,
            model_input=input_picture(look.model_input, model.spec.preprocess),
            cam=look.cam,
            caption=caption,
            top_k=list(prediction.top_k),
            evidence=evidence,
        )
    return Explanation(
        source=caption,
        model=look.model.key,
        label=UNKNOWN_LABEL if prediction.unknown else prediction.label,
        confidence=prediction.confidence,
        top_k=list(prediction.top_k),
        neighbours=near,
        training_set=described,
        png=drawn,
        seconds=time.perf_counter() - started,
        unknown_score=prediction.unknown_score,
    )


def training_reference(ctx: Context, model: LoadedModel, model_key: str) -> Reference:
    """The evidence pool for `model_key`, from the cache or embedded now (then cached).

    Debian's Fashion-MNIST when installed, else the slice shipped in vitrine/data; the
    cache file names the data's fingerprint, so installing the full set later is noticed.
    """
    from vitrine.pipeline.inference.preprocess import raw_to_model_input

    full = DEBIAN_DIR.is_dir()
    data = fashion_mnist(None, sample=not full)
    where = "Debian's dataset-fashion-mnist" if full else "the slice in vitrine/data"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key)
    cache = ctx.settings.data_dir / "explain" / f"{safe}-{data.fingerprint[7:23]}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            chosen, images = saved["indices"], saved["images"]
            labels, embeddings = saved["labels"], saved["embeddings"]
    else:
        rng = np.random.default_rng(0)
        n = min(REFERENCE_IMAGES, len(data.x_train))
        chosen = np.sort(rng.choice(len(data.x_train), size=n, replace=False))
        images, labels = data.x_train[chosen], data.y_train[chosen].astype(np.int64)
        _, embeddings = model.forward(raw_to_model_input(images, model.spec.preprocess))
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".part.npz")
        np.savez(partial, indices=chosen, images=images, labels=labels, embeddings=embeddings)
        partial.replace(cache)  # never a half-written cache for the next command
    description = f"{len(images)} training images of {where} (cached in {cache})"
    return Reference(chosen, images, labels, embeddings.astype(np.float32), description)

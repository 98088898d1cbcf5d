"""`vitrine explain`: why the active model labelled a photo as it did, as one picture.

The photo goes through the workers' own decode and preprocessing with the active model
(so the explanation is of the prediction the catalog holds), then Grad-CAM
(`pipeline.explain`) says where the model looked, and the nearest training images in
embedding space say what it thought the photo resembled. Those training embeddings are
computed once per model and training set and cached under the data directory: embedding
3,000 images takes seconds, a lookup afterwards microseconds.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import numpy as np

from db import repository
from ops.context import Context
from ops.data import fashion_mnist
from ops.errors import UserError
from ops.photo_search import PhotoEmbedder
from pipeline.datasets import DEBIAN_DIR

if TYPE_CHECKING:
    from pipeline.model import LoadedModel

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


def explain_image(ctx: Context, *, image_id: int, png: Path | None) -> Explanation:
    """Explain a stored image, read through its uri as the worker read it."""
    with ctx.engine().connect() as conn:
        found = repository.image_summaries(conn, image_ids=[image_id]).get(image_id)
    if found is None:
        raise UserError(f"no image {image_id} in the catalog")
    return _explain(ctx, read_source(ctx, found.uri), f"#{image_id}", png)


def explain_photo(ctx: Context, *, photo: Path, png: Path | None) -> Explanation:
    """Explain any photo file, in the catalog or not."""
    try:
        data = photo.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {photo}: {exc.strerror or exc}") from None
    return _explain(ctx, data, photo.name, png)


def read_source(ctx: Context, uri: str) -> bytes:
    """A stored image's bytes: local files directly (the operator may read them, wherever
    the workers' file roots are), http(s) through the workers' fetch policy."""
    from worker.fetch import fetch_bytes
    from worker.sources import PermanentError, TransientError

    parts = urlsplit(uri)
    if parts.scheme.lower() in ("http", "https"):
        try:
            return fetch_bytes(uri, ctx.settings.source_policy)
        except (PermanentError, TransientError) as exc:
            raise UserError(f"cannot fetch {uri}: {exc}") from None
    path = Path(unquote(parts.path) if parts.scheme.lower() == "file" else uri)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def _explain(ctx: Context, data: bytes, caption: str, png: Path | None) -> Explanation:
    from ops.explain_picture import explanation_picture
    from pipeline.decode import DEFAULT_DRAFT_SIZE, BadImageError, decode
    from pipeline.explain import grad_cam, heat_on_image, input_frame
    from pipeline.preprocess import to_model_input

    embedder = PhotoEmbedder(ctx)
    active = embedder.active_model()
    model = embedder.model(active)
    started = time.perf_counter()
    spec = model.spec.preprocess
    work_size = max(DEFAULT_DRAFT_SIZE, 4 * int(spec.size))  # as `preprocess_bytes`
    try:
        img, _ = decode(
            data, limits=ctx.settings.image_limits, draft_size=work_size, draft_mode="RGB"
        )
    except BadImageError as exc:
        raise UserError(f"{caption}: not a usable photo: {exc}") from None
    x = to_model_input(img, spec, work_size=work_size)
    frame = input_frame(img, spec, work_size)
    cams, _ = grad_cam(model.keras_model, x[None])
    (prediction,) = model.predict(x[None], top_k=TOP_K)
    heat = heat_on_image(cams[0], frame)
    reference = training_reference(ctx, model, active.key)
    labels = model.spec.labels
    nearest = reference.nearest(prediction.embedding, NEIGHBOURS)
    near = [
        Neighbour(int(reference.indices[i]), labels[int(reference.labels[i])], d)
        for i, d in nearest
    ]
    drawn = None
    if png is not None:
        evidence = [
            (reference.images[i], f"{n.label}\nd={n.distance:.3f}")
            for (i, _), n in zip(nearest, near, strict=True)
        ]
        drawn = explanation_picture(
            png, photo=img, heat=heat, model_input=x, cam=cams[0], caption=caption,
            top_k=list(prediction.top_k), evidence=evidence,
        )  # fmt: skip
    return Explanation(
        source=caption, model=active.key, label=prediction.label,
        confidence=prediction.confidence, top_k=list(prediction.top_k), neighbours=near,
        training_set=reference.description, png=drawn, seconds=time.perf_counter() - started,
    )  # fmt: skip


def training_reference(ctx: Context, model: LoadedModel, model_key: str) -> Reference:
    """The evidence pool for `model_key`, from the cache or embedded now (then cached).

    Debian's Fashion-MNIST when installed, else the slice shipped in tests/data; the
    cache file names the data's fingerprint, so installing the full set later is noticed.
    """
    from pipeline.preprocess import raw_to_model_input

    full = DEBIAN_DIR.is_dir()
    data = fashion_mnist(None, sample=not full)
    where = "Debian's dataset-fashion-mnist" if full else "the slice in tests/data"
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

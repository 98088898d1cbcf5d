"""Catalog-sized sets of embeddings shaped like real ones, for `vitrine bench search`.

Isotropic noise says nothing about a catalog: it has no clusters, and HNSW recall on it
is far below what real embeddings get. The vectors here are the default model's own:

1. its embeddings of Fashion-MNIST images (Debian's 70,000 when installed, else the
   slice in the repository), then of augmented variants of them (mirror, shifts of up to
   3 px, random erasing, tilt, zoom and JPEG blocks: what `vitrine train` draws), until
   `MODEL_VECTORS` vectors or N;
2. the rest, when N is larger, as points between a model vector and one of its 10
   nearest model vectors (`(1 - t) a + t b`, t in [0.1, 0.5], re-normalised). They stay
   on the manifold the model's embeddings lie on, at its own local spacing, and keep the
   class of `a`.

Queries are embeddings of other augmented variants: close to the catalog, never in it.
The model embeddings (a forward pass of about 3 minutes for 140,000 images on 2 cores)
are cached under the data directory, keyed by model, data set, size and seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitrine.ops.progress import ProgressFactory
from vitrine.pipeline.inference.model import LoadedModel
from vitrine.pipeline.inference.preprocess import raw_to_model_input
from vitrine.pipeline.training.augment import Augmentation, augment
from vitrine.pipeline.training.datasets import FashionMNIST

MODEL_VECTORS = 140_000
NEIGHBOURS = 10
VARIANTS = Augmentation(
    tilt_probability=0.5, jpeg_probability=0.3, scale_range=(0.85, 1.1), tilt_degrees=10.0
)
_BATCH = 1024


@dataclass(frozen=True)
class VectorSet:
    vectors: np.ndarray  # float32 (n, d), unit length
    labels: np.ndarray  # int (n,): the model's class for each vector
    confidences: np.ndarray  # float32 (n,)
    queries: np.ndarray  # float32 (q, d), unit length, none of them in `vectors`
    source: str  # how the vectors were made, for the report


def catalog_vectors(
    model: LoadedModel,
    data: FashionMNIST,
    *,
    n: int,
    queries: int,
    seed: int,
    cache_dir: Path,
    progress: ProgressFactory,
) -> VectorSet:
    """`n` catalog vectors and `queries` query vectors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    base = np.concatenate([data.x_train, data.x_test])
    n_model = min(n, MODEL_VECTORS)
    key = f"{model.spec.key}-{data.fingerprint.split(':')[-1][:12]}-{n_model}-{queries}-{seed}"
    cache = cache_dir / f"search-vectors-{key.replace('@', '_')}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            emb, labels, conf, query_vecs = (saved[k] for k in ("emb", "labels", "conf", "q"))
    else:
        images = [base[: min(n_model, len(base))]]
        while sum(len(x) for x in images) < n_model:
            want = min(len(base), n_model - sum(len(x) for x in images))
            images.append(augment(base[rng.permutation(len(base))[:want]], rng, VARIANTS))
        query_images = augment(base[rng.integers(0, len(base), queries)], rng, VARIANTS)
        everything = np.concatenate([*images, query_images])
        emb, labels, conf = _embed(model, everything, progress)
        emb, query_vecs = emb[:n_model], emb[n_model:]
        labels, conf = labels[:n_model], conf[:n_model]
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, emb=emb, labels=labels, conf=conf, q=query_vecs)
    source = f"{model.spec.key} embeddings of {min(n_model, len(base)):,} Fashion-MNIST images" + (
        f" and {n_model - len(base):,} augmented variants" if n_model > len(base) else ""
    )
    if n > n_model:
        # Its own random stream: the same points whether the model vectors came from the
        # cache or were just computed.
        between = np.random.default_rng(seed + 1)
        extra = _between_neighbours(emb, n - n_model, between, _nearest(emb, cache, progress))
        source += describe_extra(n - n_model)
        picked = extra[1]
        emb = np.concatenate([emb, extra[0]])
        labels = np.concatenate([labels, labels[picked]])
        conf = np.concatenate([conf, conf[picked]])
    return VectorSet(emb, labels, conf, query_vecs, source)


def describe_extra(count: int) -> str:
    """How the vectors beyond the model's own were made, for the report."""
    return (
        f", plus {count:,} points between one of those and one of its 10 nearest" if count else ""
    )


def _embed(
    model: LoadedModel, images: np.ndarray, progress: ProgressFactory
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors, labels, confidences = [], [], []
    with progress("embedding images", len(images)) as tick:
        for start in range(0, len(images), _BATCH):
            x = raw_to_model_input(images[start : start + _BATCH], model.spec.preprocess)
            probs, emb = model.forward(x, batch_size=_BATCH)
            vectors.append(_unit(np.asarray(emb, dtype=np.float32)))
            labels.append(np.argmax(probs, axis=1).astype(np.int16))
            confidences.append(np.max(probs, axis=1).astype(np.float32))
            tick(len(x))
    return np.concatenate(vectors), np.concatenate(labels), np.concatenate(confidences)


def _nearest(emb: np.ndarray, cache: Path, progress: ProgressFactory) -> np.ndarray:
    """Each vector's `NEIGHBOURS` nearest others (row indices), cached beside the vectors."""
    saved = cache.with_suffix(".neighbours.npy")
    if saved.is_file():
        return np.load(saved)
    neighbours = np.empty((len(emb), NEIGHBOURS), dtype=np.int32)
    step = 1024
    with progress("finding neighbours", len(emb)) as tick:
        for start in range(0, len(emb), step):
            sims = emb[start : start + step] @ emb.T
            rows = np.arange(len(sims))
            sims[rows, start + rows] = -np.inf  # not itself
            neighbours[start : start + step] = np.argpartition(-sims, NEIGHBOURS, axis=1)[
                :, :NEIGHBOURS
            ]
            tick(len(sims))
    np.save(saved, neighbours)
    return neighbours


def _between_neighbours(
    emb: np.ndarray, count: int, rng: np.random.Generator, neighbours: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`count` points between a random model vector and one of its nearest; the sources."""
    sources = rng.integers(0, len(emb), count)
    partners = neighbours[sources, rng.integers(0, NEIGHBOURS, count)]
    t = rng.uniform(0.1, 0.5, count).astype(np.float32)[:, None]
    points = (1 - t) * emb[sources] + t * emb[partners]
    return _unit(points), sources


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)

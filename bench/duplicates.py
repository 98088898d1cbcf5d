"""`vitrine bench duplicates`: does the perceptual hash find re-published listing photos?

Generates N items as product photos, each re-published as 1-3 edited copies
(`vitrine.pipeline.synthetic.republish`), hashes every photo through the worker's own path
(`measured_copy`: the same decode and the same pixels the worker hashes), and scores
every pair: a pair is a true duplicate when both photos show the same item. Reports
precision and recall at the threshold `duplicate_candidates` uses, the best threshold
for precision >= 0.99, the recall per edit, and what hashing costs per photo.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from vitrine.ops.data import fashion_mnist
from vitrine.ops.progress import ProgressFactory, no_progress
from vitrine.pipeline.inference.phash import DUPLICATE_BITS, perceptual_hash
from vitrine.pipeline.inference.preprocess import measured_copy
from vitrine.pipeline.synthetic.republish import listings
from vitrine.pipeline.training.datasets import DEBIAN_DIR
from vitrine.settings import Settings

VIEW_THRESHOLD = DUPLICATE_BITS  # `duplicate_candidates`' threshold: bits apart, of 320
PRECISION_GOAL = 0.99


def run_duplicates_bench(
    settings: Settings, *, items: int, seed: int, progress: ProgressFactory = no_progress
) -> dict[str, Any]:
    data = fashion_mnist(None, sample=not DEBIAN_DIR.is_dir())
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(data.x_test), size=min(items, len(data.x_test)), replace=False)
    hashes, item_of, edits_of = [], [], []
    hash_seconds = 0.0
    limits = settings.image_limits
    photos = []
    with progress("making photos", len(chosen)) as tick:
        for listing in listings(data.x_test[chosen], data.y_test[chosen], seed=seed):
            photos.append(listing)
            tick(0 if listing.edits else 1)
    with progress("hashing photos", len(photos)) as tick:
        for listing in photos:
            seen, _ = measured_copy(listing.data, limits=limits)
            t0 = time.perf_counter()
            bits = perceptual_hash(seen)
            hash_seconds += time.perf_counter() - t0
            hashes.append(np.frombuffer(bits.encode(), dtype=np.uint8) == ord("1"))
            item_of.append(listing.item)
            edits_of.append(listing.edits)
            tick(1)
    packed = np.packbits(np.array(hashes), axis=1)
    distances = _pairwise_hamming(packed)
    item = np.asarray(item_of)
    upper = np.triu_indices(len(item), 1)
    apart, same = distances[upper], (item[:, None] == item[None, :])[upper]

    def score(threshold: int) -> tuple[float, float]:
        found = apart <= threshold
        hits = int((found & same).sum())
        return hits / max(1, int(found.sum())), hits / max(1, int(same.sum()))

    precision, recall = score(VIEW_THRESHOLD)
    best = max((t for t in range(0, 161) if score(t)[0] >= PRECISION_GOAL), default=0)
    return {
        "items": len(chosen),
        "photos": len(item),
        "duplicate_pairs": int(same.sum()),
        "distinct_pairs": int((~same).sum()),
        "hash_bits": int(len(hashes[0])),
        "threshold": VIEW_THRESHOLD,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "best_threshold_at_precision_0.99": best,
        "recall_at_precision_0.99": round(score(best)[1], 4),
        "recall_by_edit": _recall_by_edit(distances, item, edits_of),
        "hash_ms_per_photo": round(1000 * hash_seconds / max(1, len(item)), 2),
    }


def _pairwise_hamming(packed: np.ndarray) -> np.ndarray:
    """All-pairs Hamming distances of packed bit rows, a block of rows at a time."""
    counts = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    out = np.empty((len(packed), len(packed)), dtype=np.int32)
    for start in range(0, len(packed), 256):
        xor = packed[start : start + 256, None, :] ^ packed[None, :, :]
        out[start : start + 256] = counts[xor].sum(axis=2)
    return out


def _recall_by_edit(
    distances: np.ndarray, item: np.ndarray, edits_of: list[tuple[str, ...]]
) -> dict[str, float]:
    """Share of (original, copy) pairs found at the view's threshold, per edit in the copy."""
    original = {int(i): n for n, (i, e) in enumerate(zip(item, edits_of, strict=True)) if not e}
    found: dict[str, list[bool]] = defaultdict(list)
    for n, edits in enumerate(edits_of):
        for edit in edits:
            found[edit].append(bool(distances[original[int(item[n])], n] <= VIEW_THRESHOLD))
    return {edit: round(float(np.mean(hits)), 4) for edit, hits in sorted(found.items())}

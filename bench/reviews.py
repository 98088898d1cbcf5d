"""`vitrine bench reviews`: does a review photo's match score tell what was listed?

For N Fashion-MNIST test items, a listing photo (merchant style,
`vitrine.pipeline.synthetic.photos`) and
three shoppers' review photos, each photographed differently (`vitrine.pipeline.synthetic.studio`:
another
size, position, coloured backdrop, tilt, shadow, JPEG): (a) the same item, (b) another
item of the same class, (c) an item of another class. Every photo goes through the
workers' preprocessing and the default model; the match score is what the worker stores
(`vitrine.pipeline.evaluation.shop_floor.match_scores`). Reports the ROC AUC of the match score for
(c) vs
(a) and for (b) vs (a), and what `review_mismatches` flags at its default threshold
(match score under it, or predicted class not the listing's) and at the best one, and
what the match score alone would flag.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitrine.bench.mismatches import PHOTO_SIZES, encode, predict_photos, sample_items
from vitrine.ops.progress import ProgressFactory, no_progress
from vitrine.pipeline.evaluation.shop_floor import roc_auc
from vitrine.pipeline.inference.model import load_model_dir
from vitrine.pipeline.synthetic.photos import PALETTE, make_product_photo
from vitrine.pipeline.synthetic.studio import make_studio_photo
from vitrine.settings import Settings

#: Default of setting `vitrine.review_min_match` (migration 0009), measured here.
VIEW_MIN_MATCH = 0.6
KINDS = ("same_item", "same_class", "other_class")
THRESHOLDS = tuple(round(t, 3) for t in np.arange(0.0, 1.0, 0.05))


def run_reviews_bench(
    settings: Settings, *, pairs: int, seed: int, progress: ProgressFactory = no_progress
) -> dict[str, Any]:
    data, chosen = sample_items(pairs, seed)
    model = load_model_dir(settings.model_dir)
    rng = np.random.default_rng([seed, 2])
    y = data.y_test
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    reviewed = []  # per listing: the test index shown by each kind of review photo
    for i in chosen:
        same = by_class[y[i]][by_class[y[i]] != i]
        other = np.flatnonzero(y != y[i])
        reviewed.append((i, int(rng.choice(same)), int(rng.choice(other))))

    def photos() -> Any:
        for i in chosen:
            yield encode(make_product_photo(data.x_test[i], rng=rng, size_range=PHOTO_SIZES)[0])
        for trio in reviewed:
            for j in trio:
                shot, _ = make_studio_photo(
                    data.x_test[j], rng=rng, palette=PALETTE, size_range=PHOTO_SIZES
                )
                yield encode(shot)

    probs, embs = [], []
    with progress("predicting photos", 4 * len(chosen)) as tick:
        for p, e in predict_photos(model, settings, photos()):
            probs.append(p)
            embs.append(e)
            tick(len(p))
    p, e = np.concatenate(probs), np.concatenate(embs)
    n = len(chosen)
    listing_label, listing_emb = p[:n].argmax(axis=1), e[:n]
    review_label = p[n:].argmax(axis=1).reshape(n, 3)
    match = np.einsum("nd,nkd->nk", listing_emb, e[n:].reshape(n, 3, -1))
    label_differs = review_label != listing_label[:, None]

    def auc(kind: int) -> float:
        scores = np.concatenate([match[:, kind], match[:, 0]])
        return round(roc_auc(-scores, np.arange(2 * n) < n), 4)

    def flagged(t: float, labels: bool = True) -> dict[str, float]:
        rule = (match < t) | (label_differs & labels)
        return {k: round(float(rule[:, c].mean()), 4) for c, k in enumerate(KINDS)}

    sweep = {f"{t:g}": flagged(t) for t in THRESHOLDS}
    best = max(sweep, key=lambda t: sweep[t]["other_class"] - sweep[t]["same_item"])
    return {
        "listings": n,
        "pairs": 3 * n,
        "model": model.spec.key,
        "roc_auc_other_class": auc(2),
        "roc_auc_same_class_other_item": auc(1),
        "roc_auc_other_class_label_rule": round(
            roc_auc(
                np.concatenate([label_differs[:, 2], label_differs[:, 0]]).astype(float),
                np.arange(2 * n) < n,
            ),
            4,
        ),
        "match_score_median": {
            k: round(float(np.median(match[:, c])), 4) for c, k in enumerate(KINDS)
        },
        "flagged_at_default": {"threshold": VIEW_MIN_MATCH, **flagged(VIEW_MIN_MATCH)},
        "flagged_at_best": {"threshold": float(best), **sweep[best]},
        "label_rule_alone": {
            k: round(float(label_differs[:, c].mean()), 4) for c, k in enumerate(KINDS)
        },
        "sweep": sweep,
        # the match score alone, without the class rule: what the threshold adds
        "sweep_match_only": {f"{t:g}": flagged(t, labels=False) for t in THRESHOLDS},
    }

"""Scoring for the shop floor checks: declared categories and shoppers' review photos.

Pure numpy, shared by `vitrine bench mismatches` / `bench reviews` and their unit tests,
so that what the benches measure is the rule the SQL views apply:

* `label_mismatches` flags a done image whose declared category is one of the model's
  labels (case-insensitively), differs from the predicted label, and gets a probability
  under `vitrine.mismatch_max_declared_score` from the model (`flag_mismatches`);
* `review_mismatches` flags a review whose match score, the best cosine similarity of
  its embedding to the listing's images' embeddings (`match_scores`), is under
  `vitrine.review_min_match`, or whose predicted class is not the listing's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


def declare_labels(
    true: npt.NDArray[np.integer], classes: int, wrong_share: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Declared classes as a merchant would send them: the true class, except for a random
    `wrong_share` of items, which get one of the other classes drawn uniformly.
    Returns (declared, wrong)."""
    true = np.asarray(true, dtype=np.int64)
    wrong = np.zeros(len(true), dtype=bool)
    count = int(round(wrong_share * len(true)))
    wrong[rng.choice(len(true), size=count, replace=False)] = True
    shift = rng.integers(1, classes, size=len(true))  # 1..classes-1: never the true class
    declared = np.where(wrong, (true + shift) % classes, true)
    return declared, wrong


def flag_mismatches(
    declared: npt.NDArray[np.integer],
    probabilities: npt.NDArray[np.floating],
    max_declared_score: float,
) -> npt.NDArray[np.bool_]:
    """What `label_mismatches` lists: the prediction disagrees with the declared class and
    gives it a probability under `max_declared_score`.

    Not "a confident prediction disagrees": the model's confident mistakes are mostly
    between look-alike classes (a shirt taken for a T-shirt at 0.97), where the declared
    class keeps a few per cent, while a wrongly declared class gets next to nothing."""
    p = np.asarray(probabilities)
    declared = np.asarray(declared)
    declared_score = p[np.arange(len(p)), declared]
    return (p.argmax(axis=1) != declared) & (declared_score < max_declared_score)


@dataclass(frozen=True)
class Score:
    threshold: float
    precision: float
    recall: float
    flagged: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "threshold": float(f"{self.threshold:.6g}"),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "flagged": self.flagged,
        }


def precision_recall(
    flagged: npt.NDArray[np.bool_], positive: npt.NDArray[np.bool_], threshold: float
) -> Score:
    """Precision and recall of `flagged` against the truth; precision 1.0 when nothing is
    flagged (no false alarm was raised)."""
    hits = int((flagged & positive).sum())
    n_flagged, n_positive = int(flagged.sum()), int(positive.sum())
    return Score(
        threshold=threshold,
        precision=hits / n_flagged if n_flagged else 1.0,
        recall=hits / n_positive if n_positive else 0.0,
        flagged=n_flagged,
    )


def best_score(scores: Sequence[Score], min_recall: float) -> Score:
    """The most precise score whose recall is at least `min_recall` (the lowest threshold on
    ties, i.e. the most recall); if none reaches it, the one with the best recall."""
    eligible = [s for s in scores if s.recall >= min_recall]
    if not eligible:
        return max(scores, key=lambda s: (s.recall, s.precision))
    return max(eligible, key=lambda s: (round(s.precision, 6), s.recall, -s.threshold))


def roc_auc(scores: npt.NDArray[np.floating], positive: npt.NDArray[np.bool_]) -> float:
    """Area under the ROC curve of `scores` (higher = more likely positive): the chance
    that a random positive scores above a random negative, ties counting one half
    (Mann-Whitney U with mid-ranks)."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        raise ValueError("roc_auc needs positives and negatives")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # ties share their mean rank
        same = scores == value
        if same.sum() > 1:
            ranks[same] = ranks[same].mean()
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def match_scores(
    reviews: npt.NDArray[np.floating], listing: npt.NDArray[np.floating]
) -> npt.NDArray[np.float64]:
    """Per review embedding, the best cosine similarity to any of the listing's
    embeddings (rows need not be normalised): what the worker stores as `match_score`."""
    reviews, listing = np.atleast_2d(reviews), np.atleast_2d(listing)
    if not len(listing):
        raise ValueError("a listing without embeddings has no match score")
    a = reviews / np.linalg.norm(reviews, axis=1, keepdims=True)
    b = listing / np.linalg.norm(listing, axis=1, keepdims=True)
    return np.asarray((a @ b.T).max(axis=1), dtype=np.float64)

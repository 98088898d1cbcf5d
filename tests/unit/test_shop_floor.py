"""The shop-floor scoring (pipeline/shop_floor.py) and the settings' defaults: what the
benches measure must be the rule the views of migration 0009 apply."""

from __future__ import annotations

import numpy as np
import pytest

from vitrine.db.migrate import revision_module
from vitrine.pipeline.evaluation.shop_floor import (
    Score,
    best_score,
    declare_labels,
    flag_mismatches,
    match_scores,
    precision_recall,
    roc_auc,
)


def test_declared_labels_are_wrong_for_exactly_the_share_and_never_the_truth() -> None:
    true = np.arange(2000) % 10
    declared, wrong = declare_labels(true, 10, 0.05, np.random.default_rng(3))
    assert wrong.sum() == 100
    assert (declared[wrong] != true[wrong]).all() and (declared[~wrong] == true[~wrong]).all()
    assert set(declared[wrong]) == set(range(10))  # every other class can be drawn
    assert ((declared >= 0) & (declared < 10)).all()


def test_a_mismatch_needs_disagreement_and_an_unlikely_declared_class() -> None:
    probabilities = np.array(
        [
            [0.98, 0.02, 0.0],  # declared 0, predicted 0: agrees
            [0.97, 0.03, 0.0],  # declared 1, the model's look-alike doubt: kept
            [0.99999, 0.0, 0.00001],  # declared 2, next to nothing: listed
            [0.5, 0.49995, 0.00005],  # declared 2, unconfident prediction, still listed
        ]
    )
    declared = np.array([0, 1, 2, 2])
    assert flag_mismatches(declared, probabilities, 1e-4).tolist() == [False, False, True, True]
    assert flag_mismatches(declared, probabilities, 0.05).tolist() == [False, True, True, True]


def test_precision_recall_and_the_best_threshold() -> None:
    flagged, positive = np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)
    assert precision_recall(flagged, positive, 0.5) == Score(0.5, 0.5, 0.5, 2)
    nothing = precision_recall(np.zeros(4, bool), positive, 0.9)
    assert (nothing.precision, nothing.recall) == (1.0, 0.0)  # no false alarm raised
    scores = [Score(0.5, 0.6, 0.9, 10), Score(0.9, 0.8, 0.8, 8), Score(0.99, 0.95, 0.5, 4)]
    assert best_score(scores, 0.8).threshold == 0.9
    assert best_score(scores, 0.95).threshold == 0.5  # none reaches it: the best recall


def test_roc_auc_by_ranks_with_ties() -> None:
    positive = np.array([True, True, False, False])
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), positive) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), positive) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), positive) == 0.5
    assert roc_auc(np.array([0.9, 0.3, 0.3, 0.1]), positive) == pytest.approx(0.875)
    with pytest.raises(ValueError):
        roc_auc(np.array([0.1, 0.2]), np.array([True, True]))


def test_match_score_is_the_best_cosine_to_the_listing() -> None:
    listing = np.array([[1.0, 0.0], [0.0, 2.0]])
    reviews = np.array([[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    assert match_scores(reviews, listing) == pytest.approx([1.0, np.sqrt(0.5), 0.0])
    with pytest.raises(ValueError):
        match_scores(reviews, np.zeros((0, 2)))


def test_view_defaults_are_what_the_benches_measure() -> None:
    from vitrine.bench.mismatches import VIEW_MAX_DECLARED_SCORE
    from vitrine.bench.reviews import VIEW_MIN_MATCH

    migration = revision_module("0009_shop_floor.py")
    declared = revision_module("0011_declared_score.py")
    assert float(declared.MISMATCH_MAX_DECLARED_SCORE) == VIEW_MAX_DECLARED_SCORE
    assert float(migration.REVIEW_MIN_MATCH) == VIEW_MIN_MATCH
    assert "vitrine.mismatch_max_declared_score" in declared.LABEL_MISMATCHES
    assert "vitrine.review_min_match" in migration.REVIEW_MISMATCHES

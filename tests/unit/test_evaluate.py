"""vitrine.pipeline.evaluation.evaluate: metric code on hand-made cases whose answers are worked
out below."""

from __future__ import annotations

import numpy as np
import pytest

from vitrine.pipeline.evaluation.evaluate import (
    classification_report,
    confusion_matrix,
    exact_neighbours,
    retrieval_metrics,
)

# --------------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_rows_are_truth_columns_are_predictions() -> None:
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 2, 0, 2])
    # true 0 -> predicted 0, 1; true 1 -> 1; true 2 -> 2, 0, 2
    expected = np.array(
        [
            [1, 1, 0],
            [0, 1, 0],
            [1, 0, 2],
        ]
    )
    matrix = confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.dtype == np.int64
    assert matrix.sum() == len(y_true)


def test_confusion_matrix_counts_repeated_pairs_and_keeps_empty_classes() -> None:
    # The same (true, pred) pair three times must count 3 (np.add.at, not fancy assignment).
    matrix = confusion_matrix(np.array([1, 1, 1]), np.array([0, 0, 0]), 4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[1, 0] = 3
    np.testing.assert_array_equal(matrix, expected)


def test_confusion_matrix_of_nothing_is_zero() -> None:
    matrix = confusion_matrix(np.array([], dtype=int), np.array([], dtype=int), 2)
    np.testing.assert_array_equal(matrix, np.zeros((2, 2)))


# --------------------------------------------------------------------------- classification report


def test_classification_report_by_hand_with_a_class_never_predicted() -> None:
    labels = ("a", "b", "c")
    y_true = np.array([0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 1, 1])
    # Confusion matrix (rows true, columns predicted):
    #        a  b  c
    #   a  [ 2, 1, 0 ]   support 3
    #   b  [ 1, 1, 0 ]   support 2
    #   c  [ 0, 2, 0 ]   support 2   ("c" is never predicted)
    # column sums (times predicted): a 3, b 4, c 0
    # precision a = 2/3 = 0.6667, b = 1/4 = 0.25, c = 0 predictions -> 0.0
    # recall    a = 2/3 = 0.6667, b = 1/2 = 0.5,  c = 0/2 = 0.0
    # accuracy = (2 + 1 + 0) / 7 = 0.428571... -> 0.4286
    report = classification_report(y_true, y_pred, labels)
    assert report["n"] == 7
    assert report["accuracy"] == 0.4286
    assert report["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 2, 0]]
    assert report["per_class"] == {
        "a": {"precision": 0.6667, "recall": 0.6667, "support": 3},
        "b": {"precision": 0.25, "recall": 0.5, "support": 2},
        "c": {"precision": 0.0, "recall": 0.0, "support": 2},
    }


def test_classification_report_class_without_support_and_perfect_classes() -> None:
    labels = ("x", "y", "z")
    y_true = np.array([0, 0, 1])
    y_pred = np.array([0, 0, 1])
    # x: 2/2 precision, 2/2 recall; y: 1/1, 1/1; z never occurs and is never predicted.
    report = classification_report(y_true, y_pred, labels)
    assert report["accuracy"] == 1.0
    assert report["per_class"]["x"] == {"precision": 1.0, "recall": 1.0, "support": 2}
    assert report["per_class"]["y"] == {"precision": 1.0, "recall": 1.0, "support": 1}
    assert report["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "support": 0}


def test_classification_report_of_nothing() -> None:
    report = classification_report(np.array([], dtype=int), np.array([], dtype=int), ("a", "b"))
    assert report["n"] == 0
    assert report["accuracy"] == 0.0
    assert report["confusion_matrix"] == [[0, 0], [0, 0]]


# --------------------------------------------------------------------------- exact neighbours


def _unit(degrees: float) -> np.ndarray:
    r = np.deg2rad(degrees)
    return np.array([np.cos(r), np.sin(r)], dtype=np.float32)


# Gallery: unit vectors at 0, 30, 90 and 180 degrees; cosine similarity = cos(angle between).
GALLERY = np.stack([_unit(0), _unit(30), _unit(90), _unit(180)])
# Queries and their similarities to gallery rows 0..3:
#   0 deg:   cos 0, cos 30, cos 90, cos 180      = 1.00,  0.87,  0.00, -1.00 -> 0, 1, 2, 3
#   80 deg:  cos 80, cos 50, cos 10, cos 100     = 0.17,  0.64,  0.98, -0.17 -> 2, 1, 0, 3
#   200 deg: cos 200, cos 170, cos 110, cos 20   = -0.94, -0.98, -0.34, 0.94 -> 3, 2, 0, 1
QUERIES = np.stack([_unit(0), _unit(80), _unit(200)])
FULL_ORDER = np.array([[0, 1, 2, 3], [2, 1, 0, 3], [3, 2, 0, 1]])


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_exact_neighbours_hand_checked_order(k: int) -> None:
    out = exact_neighbours(QUERIES, GALLERY, k)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, FULL_ORDER[:, :k])


def test_exact_neighbours_k_larger_than_gallery_is_clipped() -> None:
    out = exact_neighbours(QUERIES, GALLERY, 10)
    np.testing.assert_array_equal(out, FULL_ORDER)


def test_exact_neighbours_chunking_gives_the_same_answer() -> None:
    np.testing.assert_array_equal(exact_neighbours(QUERIES, GALLERY, 3, chunk=1), FULL_ORDER[:, :3])
    np.testing.assert_array_equal(exact_neighbours(QUERIES, GALLERY, 3, chunk=2), FULL_ORDER[:, :3])


def test_exact_neighbours_matches_brute_force_sort_on_random_vectors() -> None:
    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(50, 8)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = gallery[:7] + 0.01 * rng.normal(size=(7, 8)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    expected = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(exact_neighbours(queries, gallery, 5, chunk=3), expected)
    # each query is a slightly moved copy of gallery row i, so row i is its nearest neighbour
    np.testing.assert_array_equal(expected[:, 0], np.arange(7))


# --------------------------------------------------------------------------- retrieval metrics


def test_retrieval_metrics_by_hand() -> None:
    # k = 4; rel_i = 1 where the i-th neighbour has the query's label.
    neighbour_labels = np.array(
        [
            [0, 1, 0, 0],  # query label 0, R = 10: rel 1,0,1,1
            [2, 1, 1, 0],  # query label 1, R = 2:  rel 0,1,1,0
            [0, 0, 0, 0],  # query label 2, R = 3:  rel 0,0,0,0
        ]
    )
    query_labels = np.array([0, 1, 2])
    class_counts = {0: 10, 1: 2, 2: 3}
    # query 0: P@1..4 = 1, 1/2, 2/3, 3/4; sum P@i*rel_i = 1 + 2/3 + 3/4 = 29/12
    #          AP = (29/12) / min(4, 10) = 29/48 = 0.604167
    # query 1: P@1..4 = 0, 1/2, 2/3, 1/2; sum P@i*rel_i = 1/2 + 2/3 = 7/6
    #          AP = (7/6) / min(4, 2) = 7/12 = 0.583333
    # query 2: nothing relevant, AP = 0
    # precision@4 = relevant / all = (3 + 2 + 0) / 12 = 5/12 = 0.416667 -> 0.4167
    # mAP@4 = (29/48 + 28/48 + 0) / 3 = 57/144 = 0.395833 -> 0.3958
    metrics = retrieval_metrics(neighbour_labels, query_labels, class_counts)
    assert metrics == {"precision_at_k": 0.4167, "map_at_k": 0.3958}


def test_retrieval_metrics_denominator_is_min_of_k_and_class_size() -> None:
    # Both members of a class of size 2 ranked first: AP@4 = (1 + 1) / min(4, 2) = 1.0,
    # although precision@4 is only 2/4 (there are no more relevant items to find).
    metrics = retrieval_metrics(np.array([[5, 5, 1, 2]]), np.array([5]), {5: 2, 1: 9, 2: 9})
    assert metrics == {"precision_at_k": 0.5, "map_at_k": 1.0}
    # Found late instead: rel 0,0,1,1 -> P@3 = 1/3, P@4 = 2/4; AP = (1/3 + 1/2) / 2 = 5/12
    metrics = retrieval_metrics(np.array([[1, 2, 5, 5]]), np.array([5]), {5: 2, 1: 9, 2: 9})
    assert metrics == {"precision_at_k": 0.5, "map_at_k": round(5 / 12, 4)}


def test_retrieval_metrics_perfect_and_hopeless() -> None:
    perfect = retrieval_metrics(np.array([[3, 3, 3]] * 4), np.array([3] * 4), {3: 100})
    assert perfect == {"precision_at_k": 1.0, "map_at_k": 1.0}
    hopeless = retrieval_metrics(np.array([[1, 1, 1]] * 2), np.array([0, 0]), {0: 5, 1: 5})
    assert hopeless == {"precision_at_k": 0.0, "map_at_k": 0.0}


def test_retrieval_metrics_without_queries() -> None:
    empty = retrieval_metrics(np.zeros((0, 5), dtype=int), np.zeros(0, dtype=int), {})
    assert empty == {"precision_at_k": 0.0, "map_at_k": 0.0}


def test_retrieval_metrics_on_exact_neighbours() -> None:
    # End to end on the hand-checked geometry: gallery labels [0, 0, 1, 1], k = 2.
    gallery_labels = np.array([0, 0, 1, 1])
    neighbours = exact_neighbours(QUERIES, GALLERY, 2)  # [[0, 1], [2, 1], [3, 2]]
    query_labels = np.array([0, 1, 1])
    # query 0: labels 0,0 -> rel 1,1 -> AP 1; query 1: labels 1,0 -> rel 1,0 -> AP 1/2
    # query 2: labels 1,1 -> AP 1.  precision@2 = 5/6 = 0.8333; mAP = 2.5/3 = 0.8333
    metrics = retrieval_metrics(gallery_labels[neighbours], query_labels, {0: 2, 1: 2})
    assert metrics == {"precision_at_k": 0.8333, "map_at_k": 0.8333}

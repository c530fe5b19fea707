"""Tests for numpy_transformer.metrics, against hand-computed values and oracles."""

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from numpy_transformer.metrics import (
    accuracy,
    all_metrics,
    classification_report,
    confusion_matrix,
    f1_score,
    precision,
    recall,
    roc_auc,
    roc_curve,
    specificity,
)

# 10 examples: 4 positives, 6 negatives.
#   true:  1 1 1 1 0 0 0 0 0 0
#   pred:  1 1 1 0 1 0 0 0 0 0   -> TP=3, FN=1, FP=1, TN=5
Y_TRUE = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
Y_PRED = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]


def pairwise_auc(y, s):
    """Oracle: P(score of a random positive > score of a random negative), ties 1/2."""
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    pos, neg = s[y == 1], s[y == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (pos.size * neg.size)


# ---------------------------------------------------------- confusion matrix


def test_confusion_matrix_by_hand():
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED), [[5, 1], [1, 3]])
    # Three classes; rows are true, columns predicted.
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 2, 0, 2]
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred), [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    )
    np.testing.assert_array_equal(confusion_matrix([0, 0], [0, 0]), [[2, 0], [0, 0]])
    assert confusion_matrix([0, 1], [1, 1], num_classes=4).shape == (4, 4)
    booleans = confusion_matrix(np.array([True, False]), np.array([True, True]))
    assert booleans.tolist() == [[0, 1], [0, 1]]


def test_rates_by_hand():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(8 / 10)
    assert precision(Y_TRUE, Y_PRED) == pytest.approx(3 / 4)  # TP / (TP + FP)
    assert recall(Y_TRUE, Y_PRED) == pytest.approx(3 / 4)  # TP / (TP + FN)
    assert specificity(Y_TRUE, Y_PRED) == pytest.approx(5 / 6)  # TN / (TN + FP)
    assert f1_score(Y_TRUE, Y_PRED) == pytest.approx(0.75)
    # Asymmetric case so precision and recall differ:
    y_true = [1, 1, 1, 1, 0, 0]
    y_pred = [1, 0, 0, 0, 1, 1]  # TP=1, FN=3, FP=2, TN=0
    assert precision(y_true, y_pred) == pytest.approx(1 / 3)
    assert recall(y_true, y_pred) == pytest.approx(1 / 4)
    assert f1_score(y_true, y_pred) == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))
    assert specificity(y_true, y_pred) == 0.0
    # The negative class as "positive": its precision is TN / (TN + FN).
    assert precision(y_true, y_pred, pos_label=0) == pytest.approx(0 / 3)
    assert recall(y_true, y_pred, pos_label=0) == pytest.approx(0 / 2)


def test_macro_average_by_hand():
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 2, 0, 2]
    # per class precision: 1/2, 1/2, 2/2; recall: 1/2, 1/1, 2/3
    assert precision(y_true, y_pred, average="macro") == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert recall(y_true, y_pred, average="macro") == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    f1s = [2 * p * r / (p + r) for p, r in [(0.5, 0.5), (0.5, 1.0), (1.0, 2 / 3)]]
    assert f1_score(y_true, y_pred, average="macro") == pytest.approx(np.mean(f1s))
    with pytest.raises(ValueError, match="binary"):
        precision(y_true, y_pred)


def test_seed_definitions_are_not_ours():
    """E5: the seed's "recall" is specificity, its "precision" is recall."""
    y_true = [1, 1, 1, 1, 0, 0]
    y_pred = [1, 0, 0, 0, 1, 1]
    seed_recall = 0 / 2  # correctly classified negatives / all negatives
    seed_precision = 1 / 4  # correctly classified positives / all positives
    assert specificity(y_true, y_pred) == seed_recall != recall(y_true, y_pred)
    assert recall(y_true, y_pred) == seed_precision != precision(y_true, y_pred)


def test_zero_division_is_zero_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision([1, 0], [0, 0]) == 0.0  # nothing predicted positive
        assert recall([0, 0], [1, 0]) == 0.0  # nothing is positive
        assert f1_score([0, 0], [0, 0]) == 0.0
        assert specificity([1, 1], [1, 1]) == 0.0


def test_label_errors():
    with pytest.raises(ValueError, match="same length"):
        accuracy([0, 1], [0])
    with pytest.raises(TypeError, match="y_pred.*argmax"):
        accuracy([0, 1], [0.2, 0.9])
    with pytest.raises(ValueError, match="y_true"):
        accuracy([], [])
    with pytest.raises(ValueError, match="y_true.*-1"):
        confusion_matrix([-1, 0], [0, 0])
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix([0, 2], [0, 0], num_classes=2)
    with pytest.raises(ValueError, match="average"):
        precision([0, 1], [0, 1], average="micro")


# ------------------------------------------------------------------ ROC / AUC


def test_roc_curve_by_hand_with_ties():
    y = [1, 0, 1, 0, 0]
    s = [0.9, 0.7, 0.7, 0.2, 0.1]
    fpr, tpr, thr = roc_curve(y, s)
    # One point per distinct score: the tied pair (0.7) enters together.
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.7, 0.2, 0.1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
    # Area: 1/3 * (0.5 + 1) / 2 + 2/3 * 1 = 0.25 + 0.6667
    assert roc_auc(y, s) == pytest.approx(0.25 + 2 / 3)
    assert roc_auc(y, s) == pytest.approx(pairwise_auc(y, s))


def test_auc_perfect_reversed_and_constant():
    y = [0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.8, 0.9]
    assert roc_auc(y, s) == 1.0
    assert roc_auc(y, -np.array(s)) == 0.0
    assert roc_auc(y, [0.5] * 5) == 0.5  # all tied: one diagonal step
    assert roc_auc(y, np.array([1, 2, 3, 4, 5])) == 1.0  # integer scores are fine


def test_roc_errors():
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="same length"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="finite.*index 1"):
        roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match=r"probs\[:, 1\]"):
        roc_auc([0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]))
    with pytest.raises(ValueError, match="binary"):
        roc_auc([0, 2], [0.1, 0.2])


labelled_scores = st.integers(2, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        # Few distinct values so that ties are common.
        st.lists(st.integers(-6, 6), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(labelled_scores)
def test_auc_equals_mann_whitney(data):
    y, s = data
    assume(0 < sum(y) < len(y))
    assert roc_auc(y, s) == pytest.approx(pairwise_auc(y, s), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(labelled_scores)
def test_auc_invariant_under_monotone_transform(data):
    y, s = data
    assume(0 < sum(y) < len(y))
    s = np.array(s, dtype=float)
    base = roc_auc(y, s)
    for transformed in (3 * s + 7, np.exp(s / 4), s**3, 1 / (1 + np.exp(-s))):
        assert roc_auc(y, transformed) == pytest.approx(base, abs=1e-12)
    # A strictly decreasing transform mirrors it.
    assert roc_auc(y, -s) == pytest.approx(1 - base, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(labelled_scores)
def test_auc_of_perfect_ranking(data):
    y, _ = data
    assume(0 < sum(y) < len(y))
    y = np.array(y)
    noise = np.arange(len(y)) / (10 * len(y))  # ties within a class do not matter
    assert roc_auc(y, y + noise) == 1.0
    assert roc_auc(y, -(y + noise)) == 0.0


@settings(max_examples=100, deadline=None)
@given(labelled_scores)
def test_roc_curve_shape(data):
    y, s = data
    assume(0 < sum(y) < len(y))
    fpr, tpr, thr = roc_curve(y, s)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thr) < 0)  # distinct thresholds, largest first
    assert len(thr) == len(set(s)) + 1
    # Each point is what thresholding at that score gives.
    y, s = np.array(y), np.array(s)
    for k in range(1, len(thr)):
        pred = s >= thr[k]
        assert tpr[k] == pytest.approx(pred[y == 1].mean())
        assert fpr[k] == pytest.approx(pred[y == 0].mean())


# ---------------------------------------------------------------- reports


def test_all_metrics_and_report():
    scores = [0.9, 0.8, 0.7, 0.4, 0.6, 0.3, 0.2, 0.2, 0.1, 0.05]
    m = all_metrics(Y_TRUE, Y_PRED, scores)
    assert set(m) == {
        "accuracy", "precision", "recall", "f1", "macro_f1", "specificity", "auc", "confusion"
    }
    assert m["confusion"] == [[5, 1], [1, 3]]
    assert m["precision"] == pytest.approx(0.75) and m["specificity"] == pytest.approx(5 / 6)
    assert m["macro_f1"] == pytest.approx((0.75 + 2 * 5 / (2 * 5 + 1 + 1)) / 2)
    assert m["auc"] == pytest.approx(pairwise_auc(Y_TRUE, scores))
    assert all_metrics(Y_TRUE, Y_PRED)["auc"] is None
    assert all(isinstance(v, float) for k, v in m.items() if k != "confusion")

    text = classification_report(Y_TRUE, Y_PRED, scores, label_names=("negative", "positive"))
    for word in ("precision", "recall", "f1-score", "support", "negative", "positive",
                 "accuracy", "macro avg", "specificity", "AUC", "confusion matrix"):
        assert word in text
    assert "0.750" in text and "0.833" in text
    with pytest.raises(ValueError, match="label_names"):
        classification_report(Y_TRUE, Y_PRED, label_names=("only one",))

"""Classification metrics with their textbook definitions.

Shape legend: N examples, C classes.

Everything starts from the confusion matrix ``M`` (C, C): ``M[i, j]`` counts
examples whose true class is ``i`` and predicted class is ``j`` (rows = true,
columns = predicted). For one class ``c`` treated as "positive":

.. math::

    TP = M_{cc}, \\quad FP = \\sum_i M_{ic} - TP, \\quad
    FN = \\sum_j M_{cj} - TP, \\quad TN = N - TP - FP - FN

    \\text{precision} = \\frac{TP}{TP + FP}, \\quad
    \\text{recall} = \\frac{TP}{TP + FN}, \\quad
    F_1 = \\frac{2 \\cdot \\text{precision} \\cdot \\text{recall}}
               {\\text{precision} + \\text{recall}}, \\quad
    \\text{specificity} = \\frac{TN}{TN + FP}

Precision asks "of the reviews I called positive, how many were?"; recall
asks "of the positive reviews, how many did I find?".

What the seed gets wrong (seed-errata E5)
-----------------------------------------
The seed article (appendix, question 4) defines "recall" as *correctly
classified negatives / all negatives*: that is **specificity**, the
true-negative rate ``TN / (TN + FP)``. Its "precision", *correctly classified
positives / all positives*, is **recall** ``TP / (TP + FN)``. Precision
divides by what the model *predicted* positive, not by what *is* positive.
Its F1 (harmonic mean of precision and recall) is stated correctly.

Conventions
-----------
- A ratio whose denominator is 0 (e.g. precision when nothing was predicted
  positive) is defined as 0.0, with no warning. This is scikit-learn's
  ``zero_division=0``; it keeps a metric finite on a tiny evaluation batch.
- ``average="binary"`` reports class ``pos_label`` only; ``average="macro"``
  is the unweighted mean of the per-class values (macro F1 is the mean of the
  per-class F1 scores, not the F1 of macro precision and macro recall).
- Labels are integer class ids ``0..C-1``; probabilities are refused with a
  hint (``argmax`` them first).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "confusion_matrix",
    "accuracy",
    "precision",
    "recall",
    "f1_score",
    "specificity",
    "roc_curve",
    "roc_auc",
    "classification_report",
    "all_metrics",
    "token_log_likelihood",
    "cross_entropy_nats",
    "bits_per_char",
    "perplexity",
]

_AVERAGES = ("binary", "macro")


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------


def _as_labels(y, name: str) -> np.ndarray:
    """``y`` as a 1-D int64 array of class ids (N,); bools become 0/1."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got 0 labels")
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name} must hold integer class labels, got dtype {arr.dtype} "
            "(probabilities? take argmax over classes first)"
        )
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"{name} must hold labels >= 0, got {arr.min()}")
    return arr


def _as_label_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = _as_labels(y_true, "y_true")
    y_pred = _as_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {y_true.shape[0]} "
            f"and {y_pred.shape[0]}"
        )
    return y_true, y_pred


def _as_binary_scores(y_true, scores, pos_label: int) -> tuple[np.ndarray, np.ndarray]:
    """``is_pos`` (N,) bool and ``scores`` (N,) float64, checked for ROC use."""
    y_true = _as_labels(y_true, "y_true")
    if not set(np.unique(y_true).tolist()) <= {0, 1}:
        raise ValueError(f"y_true must hold binary labels 0/1, got {np.unique(y_true).tolist()}")
    if pos_label not in (0, 1):
        raise ValueError(f"pos_label must be 0 or 1, got {pos_label!r}")
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(
            f"scores must be 1-D (N,), got shape {s.shape} "
            "(for (N, 2) probabilities pass the positive column, probs[:, 1])"
        )
    is_real = np.issubdtype(s.dtype, np.integer) or np.issubdtype(s.dtype, np.floating)
    if s.dtype == bool or not is_real:
        raise TypeError(f"scores must be real numbers, got dtype {s.dtype}")
    if s.shape != y_true.shape:
        raise ValueError(
            f"y_true and scores must have the same length, got {y_true.shape[0]} and {s.shape[0]}"
        )
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        bad = np.flatnonzero(~np.isfinite(s))
        raise ValueError(
            f"scores must be finite, got {s[bad[0]]} at index {bad[0]} ({bad.size} non-finite)"
        )
    is_pos = y_true == pos_label
    n_pos = int(is_pos.sum())
    if n_pos == 0 or n_pos == is_pos.size:
        raise ValueError(
            "y_true must contain both classes for a ROC curve (it is undefined "
            f"otherwise), got {n_pos} positives and {is_pos.size - n_pos} negatives"
        )
    return is_pos, s


def _num_classes(y_true, y_pred, num_classes) -> int:
    largest = int(max(y_true.max(), y_pred.max()))
    if num_classes is None:
        # At least 2: a batch where everything is 0 is still a binary problem.
        return max(largest + 1, 2)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int or None, got {type(num_classes).__name__}")
    if largest >= num_classes:
        raise ValueError(f"labels must be < num_classes={num_classes}, got label {largest}")
    return int(num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, 0.0 where ``den == 0`` (see module docstring)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


# ---------------------------------------------------------------------------
# Confusion matrix and the rates derived from it
# ---------------------------------------------------------------------------


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``M`` (C, C) int64 with ``M[i, j] = #{n : y_true[n] = i, y_pred[n] = j}``.

    Rows are true classes, columns predicted classes. ``C`` is
    ``num_classes`` or, when None, ``max(largest label + 1, 2)``.
    """
    y_true, y_pred = _as_label_pair(y_true, y_pred)
    C = _num_classes(y_true, y_pred, num_classes)
    # Each (true, pred) pair gets its own cell index true*C + pred; counting
    # those indices once fills the whole matrix without a loop.
    return np.bincount(y_true * C + y_pred, minlength=C * C).reshape(C, C)


def _per_class_counts(M: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``tp, fp, fn, tn`` (C,) each, class ``c`` taken as the positive one."""
    tp = np.diag(M)  # (C,)
    fp = M.sum(axis=0) - tp  # predicted c, true something else
    fn = M.sum(axis=1) - tp  # true c, predicted something else
    tn = M.sum() - tp - fp - fn
    return tp, fp, fn, tn


def _reduce(per_class: np.ndarray, average: str, pos_label: int) -> float:
    if average == "binary":
        return float(per_class[pos_label])
    return float(per_class.mean())


def _prepare(y_true, y_pred, average, pos_label, num_classes) -> np.ndarray:
    """Checked confusion matrix for ``precision``/``recall``/``f1_score``."""
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
    M = confusion_matrix(y_true, y_pred, num_classes)
    C = M.shape[0]
    if average == "binary":
        if C != 2:
            raise ValueError(
                f"average='binary' needs labels in {{0, 1}}, got {C} classes; use average='macro'"
            )
        if pos_label not in (0, 1):
            raise ValueError(f"pos_label must be 0 or 1, got {pos_label!r}")
    return M


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions: ``mean(y_true == y_pred)``."""
    y_true, y_pred = _as_label_pair(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def precision(y_true, y_pred, average: str = "binary", pos_label: int = 1,
              num_classes: int | None = None) -> float:
    """``TP / (TP + FP)``: of the examples predicted positive, the share that are."""
    M = _prepare(y_true, y_pred, average, pos_label, num_classes)
    tp, fp, _, _ = _per_class_counts(M)
    return _reduce(_safe_div(tp, tp + fp), average, pos_label)


def recall(y_true, y_pred, average: str = "binary", pos_label: int = 1,
           num_classes: int | None = None) -> float:
    """``TP / (TP + FN)``: of the positive examples, the share found.

    This is what the seed article calls "precision" (seed-errata E5).
    """
    M = _prepare(y_true, y_pred, average, pos_label, num_classes)
    tp, _, fn, _ = _per_class_counts(M)
    return _reduce(_safe_div(tp, tp + fn), average, pos_label)


def f1_score(y_true, y_pred, average: str = "binary", pos_label: int = 1,
             num_classes: int | None = None) -> float:
    """``2 P R / (P + R)`` per class, which equals ``2 TP / (2 TP + FP + FN)``.

    The second form is what is computed: it needs no intermediate ratios and
    is 0 exactly when ``TP = 0``.
    """
    M = _prepare(y_true, y_pred, average, pos_label, num_classes)
    tp, fp, fn, _ = _per_class_counts(M)
    return _reduce(_safe_div(2 * tp, 2 * tp + fp + fn), average, pos_label)


def specificity(y_true, y_pred, pos_label: int = 1) -> float:
    """``TN / (TN + FP)``: of the negative examples, the share recognised as negative.

    This is what the seed article calls "recall" (seed-errata E5).
    """
    M = _prepare(y_true, y_pred, "binary", pos_label, None)
    _, fp, _, tn = _per_class_counts(M)
    return float(_safe_div(tn, tn + fp)[pos_label])


# ---------------------------------------------------------------------------
# ROC curve and AUC
# ---------------------------------------------------------------------------


def _roc_counts(y_true, scores, pos_label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``fps, tps, thresholds`` (K+1,): false/true positives at each distinct threshold.

    Counts, not rates, so that :func:`roc_auc` can stay in exact integer
    arithmetic until its one final division.
    """
    is_pos, s = _as_binary_scores(y_true, scores, pos_label)
    order = np.argsort(-s, kind="stable")  # largest score first
    s, is_pos = s[order], is_pos[order]
    # Last position of each run of equal scores: the threshold s[k] admits
    # every example up to and including it.
    run_ends = np.append(np.flatnonzero(s[1:] != s[:-1]), s.size - 1)  # (K,)
    tps = np.cumsum(is_pos)[run_ends]  # positives with score >= threshold
    fps = run_ends + 1 - tps  # the rest of those admitted are negatives
    # Prepend the threshold +inf: nothing predicted positive, the point (0, 0).
    return (
        np.concatenate(([0], fps)),
        np.concatenate(([0], tps)),
        np.concatenate(([np.inf], s[run_ends])),
    )


def roc_curve(y_true, scores, pos_label: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic: ``fpr, tpr, thresholds``, each (K+1,).

    ``scores`` (N,) are any real numbers where larger means "more positive"
    (a probability, a logit difference ...). Predicting positive when
    ``score >= thresholds[k]`` gives the false-positive rate ``fpr[k] =
    FP / (FP + TN)`` and true-positive rate ``tpr[k] = TP / (TP + FN)``.

    The thresholds are the K *distinct* score values, largest first, so tied
    scores enter the curve together (a diagonal step), and a first point
    ``(0, 0)`` with threshold ``+inf`` (predict nothing positive) is added;
    the last point is always ``(1, 1)``. Every distinct threshold is kept
    (no thinning of collinear points).
    """
    fps, tps, thresholds = _roc_counts(y_true, scores, pos_label)
    return fps / fps[-1], tps / tps[-1], thresholds


def roc_auc(y_true, scores, pos_label: int = 1) -> float:
    """Area under the ROC curve, by the trapezoid rule over :func:`roc_curve`.

    .. math:: \\text{AUC} = \\sum_k (\\text{fpr}_{k+1} - \\text{fpr}_k)
                             \\frac{\\text{tpr}_{k+1} + \\text{tpr}_k}{2}

    It equals the probability that a random positive example scores higher
    than a random negative one, ties counting one half (the Mann-Whitney U
    statistic divided by ``P * N``): 1 for a perfect ranking, 0.5 for a
    random one, 0 for a perfectly reversed one. The trapezoid over a tied
    group's diagonal step is exactly where the "one half" comes from.

    Computed on the counts (fpr = fps / N, tpr = tps / P) and divided by
    ``2 P N`` once at the end: summing many small float differences could
    give 0.9999999999 for a perfect ranking; integers are exact.
    """
    fps, tps, _ = _roc_counts(y_true, scores, pos_label)
    twice_area = np.sum(np.diff(fps) * (tps[1:] + tps[:-1]))  # integer, = 2 P N AUC
    return float(twice_area / (2 * fps[-1] * tps[-1]))


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def classification_report(
    y_true,
    y_pred,
    scores=None,
    label_names=None,
    digits: int = 3,
) -> str:
    """A plain-text table: per-class precision, recall, F1 and support,
    accuracy, macro average, specificity and AUC (two classes; AUC only with
    ``scores`` (N,) for class 1) and the labelled confusion matrix.

    ``label_names`` (C,) defaults to the class ids; this project passes
    ``data.LABEL_NAMES`` = ("negative", "positive").
    """
    M = confusion_matrix(y_true, y_pred)
    C = M.shape[0]
    names = [str(c) for c in range(C)] if label_names is None else [str(n) for n in label_names]
    if len(names) != C:
        raise ValueError(f"label_names must have {C} entries (one per class), got {len(names)}")
    tp, fp, fn, tn = _per_class_counts(M)
    p, r = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    support = M.sum(axis=1)

    w = max(12, *(len(n) for n in names))
    num = f"{{:>10.{digits}f}}"
    lines = [f"{'':<{w}}{'precision':>10}{'recall':>10}{'f1-score':>10}{'support':>10}"]
    for c in range(C):
        lines.append(
            f"{names[c]:<{w}}" + num.format(p[c]) + num.format(r[c]) + num.format(f1[c])
            + f"{support[c]:>10d}"
        )
    lines.append("")
    lines.append(
        f"{'accuracy':<{w}}{'':>20}" + num.format(np.trace(M) / M.sum()) + f"{M.sum():>10d}"
    )
    lines.append(
        f"{'macro avg':<{w}}" + num.format(p.mean()) + num.format(r.mean())
        + num.format(f1.mean()) + f"{M.sum():>10d}"
    )
    if C == 2:
        spec = _safe_div(tn, tn + fp)[1]
        lines.append(f"{'specificity':<{w}}{'':>10}" + num.format(spec)
                     + f"   (recall of {names[0]}; the seed's \"recall\", E5)")
        if scores is not None:
            lines.append(f"{'AUC':<{w}}{'':>20}" + num.format(roc_auc(y_true, scores)))
    lines.append("")
    lines.append("confusion matrix (rows = true, columns = predicted):")
    cw = max(10, *(len(n) + 2 for n in names))
    lines.append(f"{'':<{w}}" + "".join(f"{n:>{cw}}" for n in names))
    for c in range(C):
        lines.append(f"{names[c]:<{w}}" + "".join(f"{v:>{cw}d}" for v in M[c]))
    return "\n".join(lines)


def all_metrics(y_true, y_pred, scores=None, pos_label: int = 1) -> dict:
    """Every binary metric at once, as plain Python numbers (JSON-ready).

    Keys: ``accuracy``, ``precision``, ``recall``, ``f1`` (for ``pos_label``),
    ``macro_f1``, ``specificity``, ``auc`` (None when ``scores`` is None) and
    ``confusion`` (a C x C list of lists, rows = true).
    """
    M = _prepare(y_true, y_pred, "binary", pos_label, None)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "precision": precision(y_true, y_pred, pos_label=pos_label),
        "recall": recall(y_true, y_pred, pos_label=pos_label),
        "f1": f1_score(y_true, y_pred, pos_label=pos_label),
        "macro_f1": f1_score(y_true, y_pred, average="macro"),
        "specificity": specificity(y_true, y_pred, pos_label=pos_label),
        "auc": None if scores is None else roc_auc(y_true, scores, pos_label),
        "confusion": M.tolist(),
    }


# ---------------------------------------------------------------------------
# Language models: cross-entropy, bits per character, perplexity
# ---------------------------------------------------------------------------
#
# A language model assigns each next token a probability p(x_t | x_<t). Over a
# held-out text of N predicted tokens,
#
#     H = -(1/N) sum_t ln p(x_t | x_<t)         cross-entropy, in nats per token
#     bits/char = H / ln 2                      the same, in bits (our tokens are characters)
#     perplexity = exp(H) = 2^(bits/char)       "as unsure as a uniform choice among this many"
#
# Padding is not text: positions whose target is the padding id are left out
# of both the sum and N.


def token_log_likelihood(logits, targets, ignore_index: int | None = 0):
    """Sum of ``ln p(target)`` over the kept positions, and how many were kept.

    ``logits`` (..., V) floats, ``targets`` (...) integer ids; positions whose
    target equals ``ignore_index`` (the padding id 0 by default; None keeps
    all) are skipped. Computed in float64 with a stable log-sum-exp. Returns
    ``(total_log_likelihood, n)`` as a Python float and int.
    """
    z = np.asarray(logits)
    t = np.asarray(targets)
    if z.dtype.kind != "f":
        raise TypeError(f"logits: expected floats, got dtype {z.dtype}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"targets: expected integer ids, got dtype {t.dtype}")
    if t.shape != z.shape[:-1]:
        raise ValueError(f"targets: expected shape {z.shape[:-1]} to match logits {z.shape}, got {t.shape}")
    z = z.reshape(-1, z.shape[-1])                                     # (N, V)
    t = t.reshape(-1)                                                  # (N,)
    keep = np.ones(len(t), dtype=bool) if ignore_index is None else t != ignore_index
    z, t = z[keep].astype(np.float64), t[keep]                         # only the kept rows go to float64
    if len(t) and (t.min() < 0 or t.max() >= z.shape[1]):
        raise ValueError(f"targets: expected ids in [0, {z.shape[1]}), got {t.min()}..{t.max()}")
    m = z.max(axis=1, keepdims=True)
    logz = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))                # (N,) log-sum-exp
    return float((z[np.arange(len(t)), t] - logz).sum()), int(len(t))


def cross_entropy_nats(total_log_likelihood: float, n: int) -> float:
    """Mean negative log-likelihood per token, in nats: ``-total / n``."""
    if n <= 0:
        raise ValueError(f"n: expected a positive number of predicted tokens, got {n}")
    return -float(total_log_likelihood) / n


def bits_per_char(nats: float) -> float:
    """Cross-entropy per character converted from nats to bits: ``nats / ln 2``."""
    return float(nats) / float(np.log(2.0))


def perplexity(nats: float) -> float:
    """``exp(cross-entropy in nats)``: the size of a uniform choice that is as uncertain."""
    return float(np.exp(nats))

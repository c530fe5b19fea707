r"""Exercises for a class: fill in a function, run its check, read what is wrong in plain words.

One notebook per topic in ``notebooks/exercises/``; each asks for one or two of
these functions (the signatures follow `functional.py`, with the cache spelled out)::

    ex0  linear_backward(dy, x, W)                    -> dx, dW, db
    ex1  softmax_backward(dy, y)                      -> dx            (softmax over the last axis)
    ex2  attention_forward(q, k, v, mask=None)        -> out, weights
         attention_backward(dout, q, k, v, weights)   -> dq, dk, dv
    ex3  layernorm_forward(x, gamma, beta, eps=1e-5)  -> y, xhat, rstd
         layernorm_backward(dy, xhat, rstd, gamma)    -> dx, dgamma, dbeta
    ex4  cross_entropy_backward(logits, targets)      -> dlogits       (of the *mean* loss)
    ex5  positional_encoding(T, D)                    -> PE (T, D)
    ex6  top_p_filter(probs, p)                       -> kept (..., V)  (nucleus sampling's cut-off)
    ex7  coral_backward(xs, xt)                       -> dxs, dxt      (of the CORAL loss itself)
    ex8  quantize_int8(w, scale=None)                 -> q (D_in, D_out) int8, scale (D_out,)
         dequantize_int8(q, scale)                    -> w_hat (D_in, D_out)
    ex9  prototype_classify(support_x, support_y, query_x, query_y)
                                                      -> distances (Nq, C), pred (Nq,), accuracy
    ex10 rope_forward(x)                              -> y             (RoPE, the long-text chapter)
         rope_backward(dy)                            -> dx
         rope_attention(q, k, v)                      -> out

and each has a ``check_<name>(fn)`` here. A check runs the student's function
on a few fixed inputs, easy ones first, and reports the first problem:

1. It calls the function. ``NotImplementedError`` means "not implemented
   yet"; any other exception is reported with its text, the student's line
   that raised it and a hint, never as a traceback.
2. It checks that no input was modified in place, that the right number of
   arrays came back, and their shapes.
3. It checks the values: a backward function against numerical gradients
   (`gradcheck.check_gradients`, central differences in float64), a forward
   function against the reference in `functional.py`.
4. When something is wrong it runs each *known mistake* (the private
   ``_mistake_*`` functions below: the correct formula with one classic slip)
   on the same inputs. If the student's output equals one of them to ~1e-8,
   the check names that mistake and gives a hint. Otherwise it reports the
   worst element: which output, at which index, expected and got.

Every case is run, even after a failure, to give partial credit: per case, a
point for running cleanly with the right shapes and a point for each output
with the right values. The verdict is the first failing case's.

A check prints its verdict, ending with the score, and returns a `CheckResult`
(``ok``, ``message``, ``kind``, ``mistakes``, ``points``, ``max_points``). In
the notebooks each check is an nbgrader test cell that ends with
``result.points``: nbgrader reads that number as the cell's score, and shows
the printed verdict as the feedback (notebooks/exercises/README.md).

The reference solutions are ``solutions.<name>``, written independently of
`functional.py`; the teacher's notebooks hold the same code between nbgrader's
``### BEGIN SOLUTION`` / ``### END SOLUTION`` lines (tests/test_exercises.py
checks that both get full marks).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import textwrap
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import functional as F
from .gradcheck import check_gradients

__all__ = [
    "CheckResult", "solutions", "show_solution",
    "check_linear_backward", "check_softmax_backward", "check_attention_forward", "check_attention_backward",
    "check_layernorm_forward", "check_layernorm_backward", "check_cross_entropy_backward",
    "check_positional_encoding", "check_top_p_filter", "check_coral_backward", "check_quantize_int8",
    "check_dequantize_int8", "check_prototype_classify",
    "check_rope_forward", "check_rope_backward", "check_rope_attention",
]

# --------------------------------------------------------------------------- #
# What a check returns
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check.

    ok: True when every test case passed.
    message: the plain-words verdict the check printed.
    kind: "correct", "not_implemented", "error" (the function raised),
        "modified_input", "bad_return" (None, a wrong number of arrays...),
        "shape", "not_finite", "mistake" (a known mistake recognised),
        "wrong_value" (wrong, and no known mistake matches) or "not_callable".
    mistakes: the keys of the recognised mistakes (see ``_EXERCISES``), first one first.
    points, max_points: the partial credit, a point per check passed (per test case, one for
        running with the right shapes and one for each right output). A notebook's graded
        check cell ends with ``result.points``, which nbgrader reads as the cell's score.
    """

    ok: bool
    message: str
    kind: str = "correct"
    mistakes: tuple = ()
    points: int = 0
    max_points: int = 0

    @property
    def mistake(self):
        """The first recognised mistake's key, or None."""
        return self.mistakes[0] if self.mistakes else None

    def __str__(self):
        return self.message

    def __repr__(self):
        return (f"CheckResult(ok={self.ok}, kind={self.kind!r}, mistakes={self.mistakes!r}, "
                f"points={self.points}/{self.max_points})")


# --------------------------------------------------------------------------- #
# Reference solutions: what a student is expected to write (plain NumPy, no functional.py)
# --------------------------------------------------------------------------- #

class _Solutions:
    """The reference solutions, one per exercise: ``exercises.solutions.<name>``.

    They are written the way a student would write them, independently of
    `functional.py`; the checks compare them with `functional.py` and with
    numerical gradients like any student's answer (tests/test_exercises.py).
    """

    @staticmethod
    def linear_backward(dy, x, W):
        """dy (..., D_out), x (..., D_in), W (D_in, D_out) -> dx (..., D_in), dW (D_in, D_out), db (D_out,)."""
        D_in, D_out = W.shape
        # in the forward pass this was: y = x @ W + b
        dx = dy @ W.T                                          # (..., D_out) @ (D_out, D_in) -> (..., D_in)
        # Every row of x met the same W: flatten the leading axes and sum over all rows at once.
        x2 = x.reshape(-1, D_in)                               # (N, D_in)
        dy2 = dy.reshape(-1, D_out)                            # (N, D_out)
        dW = x2.T @ dy2                                        # (D_in, N) @ (N, D_out) -> (D_in, D_out)
        db = dy2.sum(axis=0)                                   # (D_out,)
        return dx, dW, db

    @staticmethod
    def softmax_backward(dy, y):
        """dy, y (..., K), y = softmax(x) over the last axis -> dx (..., K)."""
        # dx_j = sum_i dy_i * y_i (delta_ij - y_j) = y_j (dy_j - sum_i dy_i y_i)
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))

    @staticmethod
    def attention_forward(q, k, v, mask=None):
        """q (..., Tq, d_k), k (..., Tk, d_k), v (..., Tk, d_v), mask (..., Tq, Tk) bool or None
        -> out (..., Tq, d_v), weights (..., Tq, Tk)."""
        d_k = q.shape[-1]
        scores = q @ k.swapaxes(-1, -2) / np.sqrt(d_k)        # (..., Tq, d_k) @ (..., d_k, Tk) -> (..., Tq, Tk)
        if mask is not None:
            # A large negative number, not -inf: a row with every key masked would give -inf - (-inf) = NaN.
            scores = np.where(mask, scores, -1e9)
        scores = scores - scores.max(axis=-1, keepdims=True)  # softmax is unchanged, exp cannot overflow
        weights = np.exp(scores)
        weights = weights / weights.sum(axis=-1, keepdims=True)  # (..., Tq, Tk), each row sums to 1
        if mask is not None:
            # A query with nothing to attend to got a uniform row above: make it zeros.
            weights = weights * mask.any(axis=-1, keepdims=True)
        out = weights @ v                                      # (..., Tq, Tk) @ (..., Tk, d_v) -> (..., Tq, d_v)
        return out, weights

    @staticmethod
    def attention_backward(dout, q, k, v, weights):
        """dout (..., Tq, d_v) and the forward's q, k, v, weights -> dq, dk, dv (shaped like q, k, v)."""
        scale = 1.0 / np.sqrt(q.shape[-1])
        # in the forward pass this was: out = weights @ v
        dweights = dout @ v.swapaxes(-1, -2)                   # (..., Tq, d_v) @ (..., d_v, Tk) -> (..., Tq, Tk)
        dv = weights.swapaxes(-1, -2) @ dout                   # (..., Tk, Tq) @ (..., Tq, d_v) -> (..., Tk, d_v)
        # in the forward pass this was: weights = softmax(scores)
        dscores = weights * (dweights - (dweights * weights).sum(axis=-1, keepdims=True))
        # in the forward pass this was: scores = q @ k^T / sqrt(d_k)
        dq = dscores @ k * scale                               # (..., Tq, Tk) @ (..., Tk, d_k) -> (..., Tq, d_k)
        dk = dscores.swapaxes(-1, -2) @ q * scale              # (..., Tk, Tq) @ (..., Tq, d_k) -> (..., Tk, d_k)
        return dq, dk, dv

    @staticmethod
    def layernorm_forward(x, gamma, beta, eps=1e-5):
        """x (..., D), gamma, beta (D,) -> y (..., D), xhat (..., D), rstd (..., 1)."""
        mean = x.mean(axis=-1, keepdims=True)                  # (..., 1)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)   # (..., 1), divided by D (not D - 1)
        rstd = 1.0 / np.sqrt(var + eps)                        # eps inside the square root
        xhat = (x - mean) * rstd                               # (..., D)
        y = gamma * xhat + beta
        return y, xhat, rstd

    @staticmethod
    def layernorm_backward(dy, xhat, rstd, gamma):
        """dy, xhat (..., D), rstd (..., 1), gamma (D,) -> dx (..., D), dgamma (D,), dbeta (D,)."""
        D = xhat.shape[-1]
        # in the forward pass this was: y = gamma * xhat + beta (gamma and beta are shared by every row)
        dgamma = (dy * xhat).reshape(-1, D).sum(axis=0)
        dbeta = dy.reshape(-1, D).sum(axis=0)
        dxhat = dy * gamma
        # in the forward pass this was: xhat = (x - mean) * rstd, with mean and rstd depending on all of x
        dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                     - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
        return dx, dgamma, dbeta

    @staticmethod
    def cross_entropy_backward(logits, targets):
        """logits (N, C), targets (N,) class ids -> dlogits (N, C) of the mean loss."""
        N = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)   # exp(1000) would overflow
        p = np.exp(shifted)
        p = p / p.sum(axis=1, keepdims=True)                   # (N, C) softmax
        p[np.arange(N), targets] -= 1.0                        # p - one_hot(targets); p is our own array
        return p / N                                           # the loss is a mean over N rows

    @staticmethod
    def positional_encoding(T, D):
        """-> PE (T, D): PE[pos, 2i] = sin(pos / 10000^(2i/D)), PE[pos, 2i+1] = cos(the same angle)."""
        pos = np.arange(T)[:, None]                            # (T, 1)
        two_i = np.arange(0, D, 2)                             # (ceil(D/2),) the even column indices 2i
        angle = pos / 10000 ** (two_i / D)                     # (T, ceil(D/2))
        pe = np.zeros((T, D))
        pe[:, 0::2] = np.sin(angle)
        pe[:, 1::2] = np.cos(angle[:, : D // 2])               # odd D: the last sine has no cosine partner
        return pe

    @staticmethod
    def top_p_filter(probs, p):
        """probs (..., V), rows summing to 1; 0 < p <= 1 -> the nucleus, renormalised, (..., V)."""
        order = np.argsort(-probs, axis=-1, kind="stable")     # most likely first
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p       # the mass ranked above each token
        keep_sorted = before < p                               # the token that crosses p is kept
        keep = np.zeros(probs.shape, dtype=bool)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)   # back to vocabulary order
        kept = np.where(keep, probs, 0.0)
        return kept / kept.sum(axis=-1, keepdims=True)         # a distribution again

    @staticmethod
    def quantize_int8(w, scale=None):
        """w (D_in, D_out) -> q (D_in, D_out) int8 in [-127, 127], scale (D_out,): one scale per output column."""
        if scale is None:
            scale = np.abs(w).max(axis=0) / 127                # (D_out,): each column's largest |w| becomes 127
            scale = np.where(scale > 0, scale, 1.0)            # a column of zeros: any scale will do, not 0/0
        q = np.clip(np.round(w / scale), -127, 127)            # round to nearest, then keep inside int8's range
        return q.astype(np.int8), scale

    @staticmethod
    def dequantize_int8(q, scale):
        """q (D_in, D_out) int8, scale (D_out,) -> w_hat (D_in, D_out) float: w_hat = q * scale."""
        return q.astype(np.float64) * scale

    @staticmethod
    def prototype_classify(support_x, support_y, query_x, query_y):
        """support_x (Ns, D), support_y (Ns,) in 0..C-1, query_x (Nq, D), query_y (Nq,)
        -> distances (Nq, C) cosine distances to each class prototype, pred (Nq,), accuracy (a number)."""
        C = int(support_y.max()) + 1
        # prototype of class c = the mean of its *support* examples; row c is class c (np.arange, not the
        # order in which the classes first appear in support_y)
        protos = np.stack([support_x[support_y == c].mean(axis=0) for c in range(C)])   # (C, D)
        q = query_x / np.linalg.norm(query_x, axis=1, keepdims=True)                    # (Nq, D) unit rows
        p = protos / np.linalg.norm(protos, axis=1, keepdims=True)                      # (C, D) unit rows
        distances = 1.0 - q @ p.T                                                       # (Nq, C)
        pred = distances.argmin(axis=1)                                                 # the *nearest* prototype
        accuracy = (pred == query_y).mean()
        return distances, pred, accuracy

    @staticmethod
    def rope_forward(x):
        """x (..., T, D), D even -> y: the pair (2i, 2i+1) of row t turned by the angle t * 10000^(-2i/D)."""
        T, D = x.shape[-2:]
        theta = 10000.0 ** (-np.arange(0, D, 2) / D)           # (D/2,) one frequency per pair
        angle = np.arange(T)[:, None] * theta[None, :]         # (T, D/2): position t times frequency i
        cos, sin = np.cos(angle), np.sin(angle)
        x_even, x_odd = x[..., 0::2], x[..., 1::2]             # the two members of every pair
        y = np.empty_like(x)
        y[..., 0::2] = x_even * cos - x_odd * sin              # a 2-D rotation of each pair
        y[..., 1::2] = x_even * sin + x_odd * cos
        return y

    @staticmethod
    def rope_backward(dy):
        """dy (..., T, D) -> dx: the transpose of a rotation is the rotation by the opposite angle."""
        T, D = dy.shape[-2:]
        theta = 10000.0 ** (-np.arange(0, D, 2) / D)
        angle = np.arange(T)[:, None] * theta[None, :]
        cos, sin = np.cos(angle), np.sin(angle)
        dy_even, dy_odd = dy[..., 0::2], dy[..., 1::2]
        dx = np.empty_like(dy)
        # in the forward pass this was: y_even = x_even cos - x_odd sin, y_odd = x_even sin + x_odd cos
        dx[..., 0::2] = dy_even * cos + dy_odd * sin
        dx[..., 1::2] = -dy_even * sin + dy_odd * cos
        return dx

    @staticmethod
    def rope_attention(q, k, v):
        """q, k, v (..., T, D) -> out (..., T, D): attention with RoPE on q and k (never on v)."""
        q, k = _Solutions.rope_forward(q), _Solutions.rope_forward(k)    # the same rotation for both
        scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])          # (..., T, T)
        scores = scores - scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores)
        weights = weights / weights.sum(axis=-1, keepdims=True)
        return weights @ v

    @staticmethod
    def coral_backward(xs, xt):
        """xs (n_S, D), xt (n_T, D) -> dxs, dxt: gradients of L = ||C_S - C_T||_F^2 / (4 D^2)."""
        D = xs.shape[1]
        xs_c = xs - xs.mean(axis=0)                            # (n_S, D) centred: the covariance is about the mean
        xt_c = xt - xt.mean(axis=0)                            # (n_T, D)
        cs = xs_c.T @ xs_c / (xs.shape[0] - 1)                 # (D, D) unbiased covariance
        ct = xt_c.T @ xt_c / (xt.shape[0] - 1)
        g = (cs - ct) / (2 * D * D)                            # dL/dC_S = 2 (C_S - C_T) / (4 D^2); dL/dC_T = -g
        # in the forward pass this was: cs = xs_c^T xs_c / (n_S - 1); g is symmetric, so d/dxs_c = 2 xs_c g
        dxs = 2 * xs_c @ g / (xs.shape[0] - 1)                 # (n_S, D); the mean's own term is zero
        dxt = -2 * xt_c @ g / (xt.shape[0] - 1)                # (n_T, D): the target moves the other way
        return dxs, dxt


solutions = _Solutions()


def show_solution(name):
    """Print the source of the reference solution ``name`` (for the teacher, or after the class)."""
    if name not in _EXERCISES:
        raise ValueError(f"name: expected one of {sorted(_EXERCISES)}, got {name!r}")
    source = textwrap.dedent(inspect.getsource(getattr(_Solutions, name)))
    print(source.replace("@staticmethod\n", "", 1).rstrip())


# --------------------------------------------------------------------------- #
# Known mistakes. Each is the correct formula with one classic slip; a check
# names the mistake when the student's output equals one of these.
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class _Mistake:
    key: str        # stable name, for tests and for CheckResult.mistakes
    says: str       # completes the sentence "Looks like you ..."
    hint: str       # what to do about it
    fn: Callable    # same signature as the student's function


def _softmax_last(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---- linear -------------------------------------------------------------- #

def _mistake_linear_transposed_dW(dy, x, W):
    dx, dW, db = solutions.linear_backward(dy, x, W)
    return dx, dy.reshape(-1, W.shape[1]).T @ x.reshape(-1, W.shape[0]), db     # dy^T x: (D_out, D_in)


def _mistake_linear_dW_over_N(dy, x, W):
    dx, dW, db = solutions.linear_backward(dy, x, W)
    return dx, dW / x.reshape(-1, W.shape[0]).shape[0], db


def _mistake_linear_db_mean(dy, x, W):
    dx, dW, db = solutions.linear_backward(dy, x, W)
    return dx, dW, dy.reshape(-1, W.shape[1]).mean(axis=0)


def _mistake_linear_db_unsummed(dy, x, W):
    dx, dW, db = solutions.linear_backward(dy, x, W)
    return dx, dW, dy.copy()


# ---- softmax ------------------------------------------------------------- #

def _mistake_softmax_no_sum_term(dy, y):
    return y * dy


def _mistake_softmax_wrong_axis(dy, y):
    return y * (dy - (dy * y).sum(axis=-2, keepdims=True))


def _mistake_softmax_unweighted_sum(dy, y):
    return y * (dy - dy.sum(axis=-1, keepdims=True))


def _mistake_softmax_sign(dy, y):
    return y * ((dy * y).sum(axis=-1, keepdims=True) - dy)


def _mistake_softmax_no_y_factor(dy, y):
    return dy - (dy * y).sum(axis=-1, keepdims=True)


def _mistake_softmax_sigmoid_derivative(dy, y):
    return dy * y * (1 - y)


# ---- attention forward --------------------------------------------------- #

def _attention_variant(q, k, v, mask=None, scale="sqrt", axis=-1, masking="fill", zero_empty_rows=True):
    """Attention with one part swapped for a classic slip (the defaults give the right answer)."""
    d_k = q.shape[-1]
    factor = {"sqrt": 1.0 / math.sqrt(d_k), "none": 1.0, "d_k": 1.0 / d_k}[scale]
    scores = q @ k.swapaxes(-1, -2) * factor
    if mask is not None and masking == "fill":
        scores = np.where(mask, scores, -1e9)
    elif mask is not None and masking == "-inf":
        scores = np.where(mask, scores, -np.inf)
    elif mask is not None and masking == "zero":
        scores = np.where(mask, scores, 0.0)
    elif mask is not None and masking == "inverted":
        scores = np.where(mask, -1e9, scores)
    weights = _softmax_last(scores, axis=axis)
    if mask is not None and masking == "after":
        weights = weights * mask
    if mask is not None and masking == "fill" and zero_empty_rows:
        weights = weights * mask.any(axis=-1, keepdims=True)
    return weights @ v, weights


def _mistake_attention_no_scale(q, k, v, mask=None):
    return _attention_variant(q, k, v, mask, scale="none")


def _mistake_attention_scale_by_d_k(q, k, v, mask=None):
    return _attention_variant(q, k, v, mask, scale="d_k")


def _mistake_attention_softmax_wrong_axis(q, k, v, mask=None):
    return _attention_variant(q, k, v, mask, axis=-2)


def _mistake_attention_mask_ignored(q, k, v, mask=None):
    return _attention_variant(q, k, v, mask, masking="ignored")


def _mistake_attention_mask_after_softmax(q, k, v, mask=None):
    return _attention_variant(q, k, v, mask, masking="after")


def _mistake_attention_mask_fill_zero(q, k, v, mask=None):
    return _attention_variant(q, k, v, mask, masking="zero")


def _mistake_attention_mask_inverted(q, k, v, mask=None):
    return _attention_variant(q, k, v, mask, masking="inverted")


def _mistake_attention_minus_inf(q, k, v, mask=None):
    return _attention_variant(q, k, v, mask, masking="-inf")


def _mistake_attention_empty_rows_uniform(q, k, v, mask=None):
    return _attention_variant(q, k, v, mask, zero_empty_rows=False)


# ---- attention backward -------------------------------------------------- #

def _attention_backward_variant(dout, q, k, v, weights, scale="sqrt", sum_term=True, dv_transposed=True,
                                dk_transposed=True, scale_dv=False):
    factor = {"sqrt": 1.0 / math.sqrt(q.shape[-1]), "none": 1.0, "times_sqrt": math.sqrt(q.shape[-1])}[scale]
    dweights = dout @ v.swapaxes(-1, -2)
    dv = (weights.swapaxes(-1, -2) if dv_transposed else weights) @ dout
    if scale_dv:
        dv = dv * factor
    dscores = weights * (dweights - (dweights * weights).sum(axis=-1, keepdims=True)) if sum_term \
        else weights * dweights
    dq = dscores @ k * factor
    dk = (dscores.swapaxes(-1, -2) if dk_transposed else dscores) @ q * factor
    return dq, dk, dv


def _mistake_attention_backward_no_scale(dout, q, k, v, weights):
    return _attention_backward_variant(dout, q, k, v, weights, scale="none")


def _mistake_attention_backward_times_sqrt(dout, q, k, v, weights):
    return _attention_backward_variant(dout, q, k, v, weights, scale="times_sqrt")


def _mistake_attention_backward_scaled_dv(dout, q, k, v, weights):
    return _attention_backward_variant(dout, q, k, v, weights, scale_dv=True)


def _mistake_attention_backward_no_sum_term(dout, q, k, v, weights):
    return _attention_backward_variant(dout, q, k, v, weights, sum_term=False)


def _mistake_attention_backward_dv_not_transposed(dout, q, k, v, weights):
    return _attention_backward_variant(dout, q, k, v, weights, dv_transposed=False)


def _mistake_attention_backward_dk_not_transposed(dout, q, k, v, weights):
    return _attention_backward_variant(dout, q, k, v, weights, dk_transposed=False)


# ---- layernorm forward --------------------------------------------------- #

def _layernorm_variant(x, gamma, beta, eps=1e-5, denominator="sqrt(var+eps)", ddof=0, axis=-1, affine=True,
                       return_std=False):
    mean = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True, ddof=ddof)
    std = {"sqrt(var+eps)": np.sqrt(var + eps), "std+eps": np.sqrt(var) + eps, "sqrt(var)": np.sqrt(var),
           "var+eps": var + eps}[denominator]
    rstd = 1.0 / std
    xhat = (x - mean) * rstd
    y = gamma * xhat + beta if affine else xhat
    return y, xhat, (std if return_std else rstd)


def _mistake_layernorm_std_plus_eps(x, gamma, beta, eps=1e-5):
    return _layernorm_variant(x, gamma, beta, eps, denominator="std+eps")


def _mistake_layernorm_no_eps(x, gamma, beta, eps=1e-5):
    return _layernorm_variant(x, gamma, beta, eps, denominator="sqrt(var)")


def _mistake_layernorm_no_sqrt(x, gamma, beta, eps=1e-5):
    return _layernorm_variant(x, gamma, beta, eps, denominator="var+eps")


def _mistake_layernorm_unbiased_var(x, gamma, beta, eps=1e-5):
    return _layernorm_variant(x, gamma, beta, eps, ddof=1)


def _mistake_layernorm_wrong_axis(x, gamma, beta, eps=1e-5):
    return _layernorm_variant(x, gamma, beta, eps, axis=0)


def _mistake_layernorm_no_affine(x, gamma, beta, eps=1e-5):
    return _layernorm_variant(x, gamma, beta, eps, affine=False)


def _mistake_layernorm_ignored_eps(x, gamma, beta, eps=1e-5):
    return _layernorm_variant(x, gamma, beta, 1e-5)


def _mistake_layernorm_rstd_is_std(x, gamma, beta, eps=1e-5):
    return _layernorm_variant(x, gamma, beta, eps, return_std=True)


# ---- layernorm backward -------------------------------------------------- #

def _layernorm_backward_variant(dy, xhat, rstd, gamma, mean_term=True, xhat_term=True, reduce="mean",
                                use_gamma=True, use_rstd=True, swap_params=False, sum_params=True):
    D = xhat.shape[-1]
    dgamma = (dy * xhat).reshape(-1, D).sum(axis=0) if sum_params else dy * xhat
    dbeta = dy.reshape(-1, D).sum(axis=0)
    dxhat = dy * gamma if use_gamma else dy

    def avg(a):
        return a.mean(axis=-1, keepdims=True) if reduce == "mean" else a.sum(axis=-1, keepdims=True)

    dx = dxhat.copy()
    if mean_term:
        dx = dx - avg(dxhat)
    if xhat_term:
        dx = dx - xhat * avg(dxhat * xhat)
    if use_rstd:
        dx = rstd * dx
    return (dx, dbeta, dgamma) if swap_params else (dx, dgamma, dbeta)


def _mistake_layernorm_backward_no_mean_terms(dy, xhat, rstd, gamma):
    return _layernorm_backward_variant(dy, xhat, rstd, gamma, mean_term=False, xhat_term=False)


def _mistake_layernorm_backward_no_mean_dxhat(dy, xhat, rstd, gamma):
    return _layernorm_backward_variant(dy, xhat, rstd, gamma, mean_term=False)


def _mistake_layernorm_backward_no_xhat_term(dy, xhat, rstd, gamma):
    return _layernorm_backward_variant(dy, xhat, rstd, gamma, xhat_term=False)


def _mistake_layernorm_backward_sum_not_mean(dy, xhat, rstd, gamma):
    return _layernorm_backward_variant(dy, xhat, rstd, gamma, reduce="sum")


def _mistake_layernorm_backward_no_gamma(dy, xhat, rstd, gamma):
    return _layernorm_backward_variant(dy, xhat, rstd, gamma, use_gamma=False)


def _mistake_layernorm_backward_no_rstd(dy, xhat, rstd, gamma):
    return _layernorm_backward_variant(dy, xhat, rstd, gamma, use_rstd=False)


def _mistake_layernorm_backward_swapped_params(dy, xhat, rstd, gamma):
    return _layernorm_backward_variant(dy, xhat, rstd, gamma, swap_params=True)


def _mistake_layernorm_backward_unsummed_dgamma(dy, xhat, rstd, gamma):
    return _layernorm_backward_variant(dy, xhat, rstd, gamma, sum_params=False)


# ---- cross-entropy ------------------------------------------------------- #

def _one_hot(targets, C):
    return np.eye(C)[targets]


def _mistake_ce_no_mean(logits, targets):
    return _softmax_last(logits) - _one_hot(targets, logits.shape[1])


def _mistake_ce_sign(logits, targets):
    return (_one_hot(targets, logits.shape[1]) - _softmax_last(logits)) / logits.shape[0]


def _mistake_ce_no_softmax(logits, targets):
    return (logits - _one_hot(targets, logits.shape[1])) / logits.shape[0]


def _mistake_ce_log_softmax(logits, targets):
    logp = F.log_softmax(logits)[0]
    return (logp - _one_hot(targets, logits.shape[1])) / logits.shape[0]


def _mistake_ce_no_one_hot(logits, targets):
    return _softmax_last(logits) / logits.shape[0]


def _mistake_ce_divided_by_NC(logits, targets):
    return (_softmax_last(logits) - _one_hot(targets, logits.shape[1])) / logits.size


def _mistake_ce_divided_by_C(logits, targets):
    return (_softmax_last(logits) - _one_hot(targets, logits.shape[1])) / logits.shape[1]


def _mistake_ce_unstable(logits, targets):
    e = np.exp(logits)                                         # no max subtracted: overflows for large logits
    return (e / e.sum(axis=1, keepdims=True) - _one_hot(targets, logits.shape[1])) / logits.shape[0]


# ---- positional encoding ------------------------------------------------- #

def _pe_from_angles(sin_angle, cos_angle, D, layout="interleaved"):
    """Fill a (T, D) table from the sine and cosine angle tables (T, ceil(D/2)) and (T, D // 2)."""
    if layout == "halves":
        return np.concatenate([np.sin(sin_angle), np.cos(cos_angle)], axis=1)
    pe = np.zeros((sin_angle.shape[0], D))
    pe[:, 0::2] = np.sin(sin_angle)
    pe[:, 1::2] = np.cos(cos_angle)
    return pe


def _pe_variant(T, D, exponent="2i", layout="interleaved", first_position=0, divide=True):
    pos = np.arange(first_position, first_position + T)[:, None]
    i = np.arange((D + 1) // 2)                                # pair index
    two_i = {"2i": 2 * i / D, "i": i / D, "int": (2 * i // D).astype(float)}[exponent]
    angle = pos / 10000.0 ** two_i if divide else pos * 10000.0 ** two_i
    return _pe_from_angles(angle, angle[:, : D // 2], D, layout)


def _mistake_pe_sin_cos_swapped(T, D):
    pos = np.arange(T)[:, None]
    angle = pos / 10000.0 ** (2 * np.arange((D + 1) // 2) / D)
    pe = np.zeros((T, D))
    pe[:, 0::2] = np.cos(angle)
    pe[:, 1::2] = np.sin(angle[:, : D // 2])
    return pe


def _mistake_pe_i_not_2i(T, D):
    return _pe_variant(T, D, exponent="i")


def _mistake_pe_column_index(T, D):
    j = np.arange(D)
    angle = np.arange(T)[:, None] / 10000.0 ** (j / D)        # (T, D): the cosines get their own frequency
    return np.where(j % 2 == 0, np.sin(angle), np.cos(angle))


def _mistake_pe_seed_sum(T, D):
    return F.seed_positional_encoding(T, D, dtype=np.float64)


def _mistake_pe_halves(T, D):
    return _pe_variant(T, D, layout="halves")


def _mistake_pe_multiplied(T, D):
    return _pe_variant(T, D, divide=False)


def _mistake_pe_integer_division(T, D):
    return _pe_variant(T, D, exponent="int")


def _mistake_pe_positions_from_one(T, D):
    return _pe_variant(T, D, first_position=1)


def _mistake_pe_transposed(T, D):
    return solutions.positional_encoding(T, D).T


# ---- top-p (nucleus) ------------------------------------------------------ #

def _top_p_keep(probs, p, rule, descending=True):
    """The nucleus with a chosen keep rule over the sorted cumulative mass (the mistakes vary it)."""
    order = np.argsort(-probs if descending else probs, axis=-1, kind="stable")
    sorted_p = np.take_along_axis(probs, order, axis=-1)
    cum = np.cumsum(sorted_p, axis=-1)
    keep_sorted = rule(cum - sorted_p, cum, sorted_p)
    keep = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return keep


def _renormalised(probs, keep):
    kept = np.where(keep, probs, 0.0)
    return kept / kept.sum(axis=-1, keepdims=True)


def _mistake_top_p_unsorted(probs, p):
    before = np.cumsum(probs, axis=-1) - probs                 # in vocabulary order
    return _renormalised(probs, before < p)


def _mistake_top_p_crossing_token_dropped(probs, p):
    return _renormalised(probs, _top_p_keep(probs, p, lambda before, cum, sp: cum <= p))


def _mistake_top_p_not_renormalised(probs, p):
    return np.where(_top_p_keep(probs, p, lambda before, cum, sp: before < p), probs, 0.0)


def _mistake_top_p_one_extra(probs, p):
    return _renormalised(probs, _top_p_keep(probs, p, lambda before, cum, sp: before - sp < p))


def _mistake_top_p_boundary_le(probs, p):
    return _renormalised(probs, _top_p_keep(probs, p, lambda before, cum, sp: before <= p))


def _mistake_top_p_ascending(probs, p):
    return _renormalised(probs, _top_p_keep(probs, p, lambda before, cum, sp: before < p, descending=False))


def _mistake_top_p_sorted_order(probs, p):
    return -np.sort(-solutions.top_p_filter(probs, p), axis=-1)


# ---- int8 quantization ------------------------------------------------------ #

def _int8_variant(w, scale=None, divide_by=127, axis=0, rounding=np.round, clip=True, cast=True):
    if scale is None:
        scale = np.abs(w).max(axis=axis) / divide_by if axis is not None else np.abs(w).max() / divide_by
        scale = np.where(scale > 0, scale, 1.0)
    s = scale if axis != 1 else scale[:, None]
    q = rounding(w / s)
    if clip:
        q = np.clip(q, -127, 127)
    return (q.astype(np.int8) if cast else q), scale


def _mistake_int8_per_tensor(w, scale=None):
    return _int8_variant(w, scale, axis=None)


def _mistake_int8_per_row(w, scale=None):
    return _int8_variant(w, scale, axis=1) if scale is None else _int8_variant(w, scale)


def _mistake_int8_divide_by_128(w, scale=None):
    return _int8_variant(w, scale, divide_by=128)


def _mistake_int8_divide_by_255(w, scale=None):
    return _int8_variant(w, scale, divide_by=255)


def _mistake_int8_truncated(w, scale=None):
    return _int8_variant(w, scale, rounding=np.trunc)


def _mistake_int8_floor(w, scale=None):
    return _int8_variant(w, scale, rounding=np.floor)


def _mistake_int8_no_clip_wrapped(w, scale=None):
    return _int8_variant(w, scale, clip=False)                 # int8 wraps: 130 becomes -126


def _mistake_int8_no_clip(w, scale=None):
    return _int8_variant(w, scale, clip=False, cast=False)


def _mistake_dequantize_forgot_scale(q, scale):
    return q.astype(np.float64)


def _mistake_dequantize_divided(q, scale):
    return q / scale


def _mistake_dequantize_times_127(q, scale):
    return q * scale * 127


# ---- few-shot prototypes (notebook 13) ------------------------------------ #

def _prototype_variant(support_x, support_y, query_x, query_y, normalise="both", nearest="argmin",
                       prototypes_from="support", order="sorted", metric="cosine"):
    if prototypes_from == "support":
        x, y = support_x, support_y
    else:
        x, y = query_x, query_y
    classes = np.arange(int(support_y.max()) + 1) if order == "sorted" else \
        np.array(list(dict.fromkeys(support_y.tolist())))
    protos = np.stack([x[y == c].mean(axis=0) for c in classes])
    if metric == "euclidean":
        d = ((query_x[:, None, :] - protos[None]) ** 2).sum(-1)
    else:
        q = query_x / np.linalg.norm(query_x, axis=1, keepdims=True) if normalise in ("both", "queries") else query_x
        p = protos / np.linalg.norm(protos, axis=1, keepdims=True) if normalise == "both" else protos
        d = 1.0 - q @ p.T
    pred = d.argmin(axis=1) if nearest == "argmin" else d.argmax(axis=1)
    return d, pred, (pred == query_y).mean()


def _mistake_proto_no_normalisation(support_x, support_y, query_x, query_y):
    return _prototype_variant(support_x, support_y, query_x, query_y, normalise="none")


def _mistake_proto_prototypes_not_normalised(support_x, support_y, query_x, query_y):
    return _prototype_variant(support_x, support_y, query_x, query_y, normalise="queries")


def _mistake_proto_argmax(support_x, support_y, query_x, query_y):
    return _prototype_variant(support_x, support_y, query_x, query_y, nearest="argmax")


def _mistake_proto_from_queries(support_x, support_y, query_x, query_y):
    return _prototype_variant(support_x, support_y, query_x, query_y, prototypes_from="query")


def _mistake_proto_class_order(support_x, support_y, query_x, query_y):
    return _prototype_variant(support_x, support_y, query_x, query_y, order="first_seen")


def _mistake_proto_euclidean(support_x, support_y, query_x, query_y):
    return _prototype_variant(support_x, support_y, query_x, query_y, metric="euclidean")


# ---- RoPE (the long-text chapter) ----------------------------------------- #

def _rope_variant(x, layout="pairs", exponent=2.0, sign=1.0, first_position=0):
    """RoPE with one slip: pairs (i, i + D/2) ("halves"), the exponent's 2i scaled, the angle's sign, positions."""
    T, D = x.shape[-2:]
    i = np.arange(D // 2)
    theta = 10000.0 ** (-exponent * i / D)
    angle = sign * np.arange(first_position, first_position + T)[:, None] * theta[None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    first, second = (x[..., 0::2], x[..., 1::2]) if layout == "pairs" else (x[..., :D // 2], x[..., D // 2:])
    y = np.empty_like(x)
    a, b = first * cos - second * sin, first * sin + second * cos
    if layout == "pairs":
        y[..., 0::2], y[..., 1::2] = a, b
    else:
        y[..., :D // 2], y[..., D // 2:] = a, b
    return y


def _mistake_rope_halves(x):
    return _rope_variant(x, layout="halves")


def _mistake_rope_exponent_halved(x):
    return _rope_variant(x, exponent=1.0)


def _mistake_rope_exponent_doubled(x):
    return _rope_variant(x, exponent=4.0)


def _mistake_rope_clockwise(x):
    return _rope_variant(x, sign=-1.0)


def _mistake_rope_positions_from_one(x):
    return _rope_variant(x, first_position=1)


def _mistake_rope_backward_same_sign(dy):
    return _rope_variant(dy)                                   # the forward rotation again, R instead of R^T


def _mistake_rope_backward_halves(dy):
    return _rope_variant(dy, layout="halves", sign=-1.0)


def _mistake_rope_backward_identity(dy):
    return dy.copy()


def _mistake_rope_backward_exponent_halved(dy):
    return _rope_variant(dy, exponent=1.0, sign=-1.0)


def _rope_attention_with(q, k, v):
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    return _softmax_last(scores) @ v


def _mistake_rope_attention_rotated_v(q, k, v):
    return _rope_attention_with(_rope_variant(q), _rope_variant(k), _rope_variant(v))


def _mistake_rope_attention_mixed_pairs(q, k, v):
    return _rope_attention_with(_rope_variant(q), _rope_variant(k, layout="halves"), v)


def _mistake_rope_attention_only_q(q, k, v):
    return _rope_attention_with(_rope_variant(q), k, v)


def _mistake_rope_attention_no_rope(q, k, v):
    return _rope_attention_with(q, k, v)


def _mistake_rope_attention_no_scale(q, k, v):
    return _softmax_last(_rope_variant(q) @ _rope_variant(k).swapaxes(-1, -2)) @ v


# --------------------------------------------------------------------------- #
# The checking engine
# --------------------------------------------------------------------------- #

@dataclass
class _Case:
    """One test input: what the student's function gets, and what it must give back."""

    label: str                      # shown in messages, e.g. "dy, y of shape (3, 5)"
    args: tuple                     # positional arguments for the student's function
    expected: tuple                 # the reference outputs, one per output name
    gradients: Callable | None = None   # outputs -> [GradCheckResult per output]; None: compare with `expected`
    hint: str = ""                  # what is special about this case, added to any failure on it
    nan_hint: str = ""              # added when the output holds NaN or inf


@dataclass
class _Exercise:
    name: str                       # the student's function, and the solution's, name
    arg_names: tuple
    outputs: tuple                  # names of the returned arrays
    cases: Callable                 # () -> [_Case], fixed seeds
    mistakes: tuple
    shape_notes: dict = field(default_factory=dict)   # output name -> why it has the shape it has
    error_hints: tuple = ()         # (substring of an exception's text, hint)
    normalize: Callable | None = None                 # (outputs, case) -> outputs, for harmless variations

    @property
    def is_backward(self):
        return self.name.endswith("_backward")


def _match_tol(*arrays):
    """~1e-8 in float64; a float32 answer can only agree to ~1e-6."""
    return 1e-8 if all(a.dtype.itemsize >= 8 for a in arrays) else 1e-5


def _same(a, b):
    """Equal shapes and values to ~1e-8 relative to b's size; NaN matches NaN."""
    if a.shape != b.shape:
        return False
    finite = b[np.isfinite(b)]
    scale = 1.0 + (float(np.abs(finite).max()) if finite.size else 0.0)
    return bool(np.allclose(a, b, rtol=0.0, atol=_match_tol(a, b) * scale, equal_nan=True))


def _quietly(fn, *args):
    """Call fn with NumPy's floating-point warnings silenced: a check reports NaN itself, in words."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def _copies(args):
    return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)


def _shape(a):
    return tuple(int(n) for n in a.shape)


def _student_line(exc):
    """The last line of the traceback outside NumPy and this file: most likely the student's own."""
    here = os.path.abspath(__file__)
    numpy_dir = os.path.dirname(np.__file__)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = os.path.abspath(frame.filename)
        if path != here and not path.startswith(numpy_dir) and frame.line:
            return f"line {frame.lineno}: {frame.line.strip()}"
    return ""


_COMMON_ERROR_HINTS = (
    ("could not be broadcast", "Two arrays' shapes do not line up. A .sum() or .mean() over an axis drops that "
                               "axis unless you pass keepdims=True; print the .shape of each array on that line."),
    ("core dimension", "In a @ b the last axis of a must equal the second-to-last axis of b. Write each array's "
                       "shape next to the line, and transpose the one that does not fit; with more than two "
                       "axes use .swapaxes(-1, -2), since .T reverses every axis."),
    ("not enough values to unpack", "Check how many arrays you return and how many you unpack."),
    ("too many values to unpack", "Check how many arrays you return and how many you unpack."),
    ("NoneType", "Some variable is None: did a helper of yours forget its `return`?"),
)


def _fail(kind, lines, mistakes=()):
    text = "✗ " + lines[0] + "".join("\n  " + line for line in lines[1:] if line)
    return CheckResult(False, text, kind, tuple(mistakes))


def _unpack(ex, case, result):
    """The student's return value as a tuple of float arrays, or a CheckResult saying what is off."""
    n = len(ex.outputs)
    names = ", ".join(ex.outputs)
    if result is None:
        return _fail("bad_return", [f"{ex.name} returned None (on {case.label}). Did you forget the `return` line?"])
    if n == 1:
        if isinstance(result, tuple):
            return _fail("bad_return", [f"{ex.name} returned a tuple of {len(result)} things; it should return "
                                        f"one array, {names}."])
        result = (result,)
    elif not isinstance(result, (tuple, list)) or len(result) != n:
        got = f"{len(result)} things" if isinstance(result, (tuple, list)) else f"one {type(result).__name__}"
        return _fail("bad_return", [f"{ex.name} should return {n} arrays, ({names}), in that order; "
                                    f"it returned {got}."])
    outs = []
    for name, value in zip(ex.outputs, result):
        if value is None:
            return _fail("bad_return", [f"{ex.name} returned None for {name}: compute it and return it."])
        try:
            array = np.asarray(value)
        except Exception as exc:  # a ragged list, say
            return _fail("bad_return", [f"{name} is not an array NumPy can read ({type(exc).__name__}: {exc})."])
        if array.dtype.kind not in "fiu":
            return _fail("bad_return", [f"{name} should be an array of real numbers, got dtype {array.dtype}."])
        outs.append(array if array.dtype.kind == "f" else array.astype(np.float64))
    return tuple(outs)


class _Variants:
    """The known mistakes' outputs on one case, computed when first asked for."""

    def __init__(self, ex, case):
        self.ex, self.case, self._outputs = ex, case, {}

    def outputs(self, mistake):
        if mistake.key not in self._outputs:
            try:
                out = _quietly(mistake.fn, *_copies(self.case.args))
                out = tuple(np.asarray(o, dtype=np.float64) for o in (out if len(self.ex.outputs) > 1 else (out,)))
            except Exception:  # this mistake cannot even run on this case, so the student did not make it
                out = None
            self._outputs[mistake.key] = out
        return self._outputs[mistake.key]

    def match(self, i, got):
        """The first known mistake whose output i equals ``got`` (and differs from the right answer)."""
        for mistake in self.ex.mistakes:
            out = self.outputs(mistake)
            if out is not None and _same(got, out[i]) and not _same(out[i], self.case.expected[i]):
                return mistake
        return None


def _where(names, case, right):
    """"(in dx and dW, on <case>; db is already right.)"."""
    text = f"(In {' and '.join(names)}, on {case.label}"
    if right:
        text += f"; {' and '.join(right)} {'is' if len(right) == 1 else 'are'} already right"
    return text + ".)"


def _mistake_report(ex, case, found, right):
    """Lines naming the recognised mistakes (one paragraph per mistake) and the outputs that are right."""
    by_key = {}
    for name, mistake in found:
        by_key.setdefault(mistake.key, (mistake, []))[1].append(name)
    lines = []
    for n, (mistake, names) in enumerate(by_key.values()):
        lines.append(f"Looks like you {mistake.says}.")
        lines.append(f"Hint: {mistake.hint}")
        lines.append(_where(names, case, right if n == len(by_key) - 1 else []))
    return lines


def _keys(found):
    """The recognised mistakes' keys, each once, in order."""
    return tuple(dict.fromkeys(m.key for _, m in found))


def _shape_problem(ex, case, i, got, variants):
    name, want = ex.outputs[i], _shape(case.expected[i])
    mistake = variants.match(i, got)
    if mistake is not None:
        return _fail("mistake", _mistake_report(ex, case, [(name, mistake)], []), [mistake.key])
    exp = case.expected[i]
    if got.ndim >= 2 and got.shape == exp.shape[:-2] + exp.shape[-2:][::-1] and _same(got.swapaxes(-1, -2), exp):
        key = f"transposed_{name}"
        return _fail("mistake", [f"Looks like you returned {name} transposed: its shape is {_shape(got)}, and its "
                                 f"transpose is the right answer {want} (on {case.label}).",
                                 f"Hint: {ex.shape_notes.get(name, '')} Swap the operands of the product, or "
                                 f"transpose them: (A B)^T = B^T A^T."], [key])
    extra = got.ndim - exp.ndim
    if extra > 0 and got.shape[extra:] == exp.shape and _same(got.sum(axis=tuple(range(extra))), exp):
        key = f"unsummed_{name}"
        return _fail("mistake", [f"Looks like you forgot to sum {name} over the rows: it has shape {_shape(got)}, and "
                                 f"summing over its leading axes gives the right {want} (on {case.label}).",
                                 "Hint: a parameter is shared by every row of the batch, so its gradient is the sum "
                                 "of every row's contribution."], [key])
    note = ex.shape_notes.get(name, "")
    return _fail("shape", [f"{name} has shape {_shape(got)}, but it should have shape {want} (on {case.label}).",
                           note, case.hint])


def _worst_element(ex, case, wrong, outs, grads, right):
    """Lines reporting the worst element of each wrong output (after a constant-factor test)."""
    lines = []
    for i in wrong:
        name, got, exp = ex.outputs[i], outs[i].astype(np.float64), case.expected[i]
        denominator = float((exp * exp).sum())
        factor = float((got * exp).sum()) / denominator if denominator > 0 else 0.0
        if denominator > 0 and abs(factor - 1) > 1e-6 and _same(got, factor * exp):
            lines.append(f"Every element of {name} is {factor:.6g} times the right value (on {case.label}): "
                         "a constant factor is missing or extra (a sign? 1/N? a scale?).")
            continue
        if grads is not None:
            r = grads[i]
            lines.append(f"{name} is wrong (on {case.label}): at index {r.index} the numerical gradient is "
                         f"{r.numeric:+.6g} but yours is {r.analytic:+.6g} (relative error {r.max_rel_error:.1e}, "
                         f"tolerance {r.tolerance:g}).")
        else:
            diff = np.abs(got - exp)
            index = tuple(int(n) for n in np.unravel_index(int(np.argmax(diff)), diff.shape))
            lines.append(f"{name} is wrong (on {case.label}): at index {index} the right value is "
                         f"{exp[index]:+.6g} but yours is {got[index]:+.6g} (difference {diff[index]:.1e}).")
    if case.hint:
        lines.append(case.hint)
    if right:
        lines.append(f"({' and '.join(right)} {'is' if len(right) == 1 else 'are'} already right.)")
    return lines


def _case_points(ex):
    """What one test case is worth: a point for running cleanly with the right shapes, one per right output."""
    return 1 + len(ex.outputs)


def _run_case(fn, ex, case):
    """Run one case: returns (failure or None, worst error when it passes, points scored).

    The points (see `_case_points`): one when the function runs, leaves its inputs alone and
    returns arrays of the right number and shapes; one for each output whose values are right
    (right shape, finite, and within tolerance), whatever the other outputs hold.
    """
    args = _copies(case.args)
    try:
        result = _quietly(fn, *args)
    except NotImplementedError:
        return CheckResult(False, f"○ Not implemented yet: {ex.name} still raises NotImplementedError. Replace "
                                  "`raise NotImplementedError` with your code, run that cell, then run the check "
                                  "again.", "not_implemented"), None, 0
    except Exception as exc:
        where = _student_line(exc)
        hints = [hint for needle, hint in ex.error_hints + _COMMON_ERROR_HINTS if needle in str(exc)]
        return _fail("error", [f"{ex.name} raised an error on {case.label}:", f"    {type(exc).__name__}: {exc}",
                               f"(in your {where})" if where else "",
                               *(f"Hint: {h}" for h in hints[:2]), case.hint]), None, 0
    modified = None
    for name, before, after in zip(ex.arg_names, case.args, args):
        if isinstance(before, np.ndarray) and not np.array_equal(before, after, equal_nan=True):
            modified = _fail("modified_input", [f"{ex.name} changed its input {name} in place (on {case.label}).",
                                                f"Compute new arrays instead (`a = a - b`, not `a -= b`): a caller "
                                                f"may still need {name}, and in a network with residual connections "
                                                "the same gradient array feeds two branches."])
            break
    outs = _unpack(ex, case, result)
    if isinstance(outs, CheckResult):
        return modified or outs, None, 0
    if ex.normalize is not None:
        outs = ex.normalize(outs, case)
    n = len(outs)
    shaped = [got.shape == exp.shape for got, exp in zip(outs, case.expected)]
    finite = [ok and bool(np.isfinite(got).all()) for ok, got in zip(shaped, outs)]

    # Which outputs hold the right values. An output with a wrong shape or NaN counts as wrong, and the
    # reference stands in for it in the gradient check, so that the other outputs are still judged.
    usable = tuple(got if ok else exp for got, exp, ok in zip(outs, case.expected, finite))
    grads = None
    if case.gradients is not None:
        grads = case.gradients(usable)
        errors = [r.max_rel_error for r in grads]
        wrong = [i for i, r in enumerate(grads) if not r.ok or not finite[i]]
    else:
        errors = [float(np.abs(got.astype(np.float64) - exp).max()) if exp.size else 0.0
                  for got, exp in zip(usable, case.expected)]
        scales = [1.0 + float(np.abs(exp).max()) if exp.size else 1.0 for exp in case.expected]
        tols = [(1e-8 if got.dtype.itemsize >= 8 else 1e-5) * s for got, s in zip(usable, scales)]
        wrong = [i for i, (e, t) in enumerate(zip(errors, tols)) if e > t or not finite[i]]
    points = (modified is None and all(shaped)) + (n - len(wrong))
    if modified is not None:
        return modified, None, points

    variants = _Variants(ex, case)
    for i, (got, ok) in enumerate(zip(outs, shaped)):
        if not ok:
            return _shape_problem(ex, case, i, got, variants), None, points

    bad = [i for i in range(n) if not finite[i]]
    if bad:
        found = [(ex.outputs[i], m) for i in bad if (m := variants.match(i, outs[i])) is not None]
        if len(found) == len(bad):
            return _fail("mistake", _mistake_report(ex, case, found, []), _keys(found)), None, points
        i = bad[0]
        index = tuple(int(n) for n in np.argwhere(~np.isfinite(outs[i]))[0])
        return _fail("not_finite", [f"{ex.outputs[i]} contains NaN or inf, first at index {index} (on {case.label}).",
                                    case.nan_hint or "NaN comes from 0/0, inf - inf or inf/inf; inf from exp of "
                                    "a large number or a division by 0.", case.hint]), None, points

    if not wrong:
        return None, max(errors), points
    right = [name for i, name in enumerate(ex.outputs) if i not in wrong]
    found = [(ex.outputs[i], m) for i in wrong if (m := variants.match(i, outs[i])) is not None]
    unexplained = [i for i in wrong if ex.outputs[i] not in {name for name, _ in found}]
    if found:
        lines = _mistake_report(ex, case, found, [] if unexplained else right)
        if unexplained:
            lines += _worst_element(ex, case, unexplained, outs, grads, right)
        return _fail("mistake", lines, _keys(found)), None, points
    return _fail("wrong_value", _worst_element(ex, case, wrong, outs, grads, right)), None, points


def _score_line(points, max_points):
    return f"Score: {points} of {max_points} points (per test case, one for running with the right shapes " \
           "and one for each right output)."


def _run_check(fn, ex):
    """Run every case; the verdict is the first failing case's, the score counts every case's points."""
    cases = ex.cases()
    max_points = len(cases) * _case_points(ex)
    if not callable(fn):
        return dataclasses.replace(
            _fail("not_callable", [f"Pass the function itself: check_{ex.name}({ex.name}), without calling it "
                                   f"(got a {type(fn).__name__})."]), max_points=max_points)
    worst, points, first_failure = 0.0, 0, None
    for case in cases:
        failure, error, case_points = _run_case(fn, ex, case)
        points += case_points
        if failure is not None:
            first_failure = first_failure or failure
        else:
            worst = max(worst, error)
    if first_failure is not None:
        message = first_failure.message
        if first_failure.kind != "not_implemented":
            message += "\n  " + _score_line(points, max_points)
        return dataclasses.replace(first_failure, message=message, points=points, max_points=max_points)
    if ex.is_backward:
        how = "agrees with the numerical gradient" if all(case.gradients is not None for case in cases) else \
              "agrees with the numerical gradient and the reference"
        measure = f"worst relative error {worst:.1e}"
    else:
        how, measure = "agrees with the reference", f"largest difference {worst:.1e}"
    labels = "; ".join(case.label for case in cases)
    return CheckResult(True, f"✓ Correct: {ex.name} {how} on all {len(cases)} test cases; {measure}.\n"
                             f"  (Tested on {labels}.)\n  {_score_line(points, max_points)}", "correct",
                       points=points, max_points=max_points)


def _check(name, fn, verbose):
    result = _run_check(fn, _EXERCISES[name])
    if verbose:
        print(result.message)
    return result


def _gradients(forward, inputs, dout, wrt):
    """A case's gradient test: runs `check_gradients` with the student's outputs as the analytic gradients."""
    def run(outs):
        results = check_gradients(forward, lambda dout, **_: dict(zip(wrt, outs)), inputs, wrt=list(wrt),
                                  dout=dout, raise_on_failure=False)
        return [results[name] for name in wrt]
    return run


# --------------------------------------------------------------------------- #
# The test cases of each exercise (fixed seeds: the same messages every time)
# --------------------------------------------------------------------------- #

def _linear_cases():
    cases = []
    specs = (((5, 3), 4, "x (5, 3), W (3, 4)", ""),
             ((4, 3), 3, "a square W (3, 3)", "With a square W a transposed dW has the right shape: only its "
                                              "values can tell."),
             ((2, 3, 3), 4, "x with batch and time axes, (2, 3, 3), and W (3, 4)",
              "Here x is (B, T, D_in): every row of every sequence met the same W. Flatten the leading axes "
              "first, x.reshape(-1, D_in) and dy.reshape(-1, D_out), and sum over all rows."))
    for seed, (x_shape, D_out, label, hint) in enumerate(specs, start=10):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=x_shape)
        W = rng.normal(size=(x_shape[-1], D_out))
        b = rng.normal(size=D_out)
        dy = rng.normal(size=x_shape[:-1] + (D_out,))
        expected = F.linear_backward(dy, F.linear(x, W, b)[1])
        inputs = {"x": x.copy(), "W": W.copy(), "b": b}
        grads = _gradients(lambda x, W, b: F.linear(x, W, b)[0], inputs, dy, ("x", "W", "b"))
        cases.append(_Case(label, (dy, x, W), expected, grads, hint))
    return cases


def _softmax_cases():
    cases = []
    for seed, shape in enumerate(((3, 5), (2, 3, 4)), start=20):
        rng = np.random.default_rng(seed)
        x = rng.normal(scale=1.5, size=shape)
        dy = rng.normal(size=shape)
        y, cache = F.softmax(x)
        grads = _gradients(lambda x: F.softmax(x)[0], {"x": x.copy()}, dy, ("x",))
        hint = "" if len(shape) == 2 else "Here dy and y have three axes; the softmax is still over the last one."
        cases.append(_Case(f"dy, y of shape {shape}", (dy, y), (F.softmax_backward(dy, cache),), grads, hint))
    return cases


def _attention_inputs(seed, q_shape, k_shape, v_shape):
    rng = np.random.default_rng(seed)
    return rng.normal(size=q_shape), rng.normal(size=k_shape), rng.normal(size=v_shape), rng


_ATTENTION_SETUPS = (
    # (seed, q, k, v shapes, mask, label, hint)
    (30, (3, 4), (3, 4), (3, 4), None, "q, k, v of shape (3, 4), no mask", ""),
    (31, (2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 2), None,
     "batched heads: q (2, 2, 3, 4), k (2, 2, 5, 4), v (2, 2, 5, 2), no mask",
     "Here q, k, v have batch and head axes in front, (B, H, T, d), and Tq = 3 differs from Tk = 5: the "
     "weights are (B, H, Tq, Tk)."),
    (32, (2, 4, 4), (2, 4, 4), (2, 4, 3), F.causal_mask(4), "a causal mask (4, 4) over q, k (2, 4, 4), v (2, 4, 3)",
     "mask is boolean and True means 'may attend'. Where it is False the weight must be exactly 0: set those "
     "scores to a large negative number (say -1e9) before the softmax."),
)


def _attention_forward_cases():
    cases = []
    for seed, qs, ks, vs, mask, label, hint in _ATTENTION_SETUPS:
        q, k, v, _ = _attention_inputs(seed, qs, ks, vs)
        args = (q, k, v) if mask is None else (q, k, v, mask)
        out, weights, _ = F.scaled_dot_product_attention(q, k, v, mask)
        cases.append(_Case(label, args, (out, weights), None, hint))
    # Padding that hides every key of the second sequence: its queries have nothing to attend to.
    q, k, v, _ = _attention_inputs(33, (2, 3, 4), (2, 4, 4), (2, 4, 3))
    mask = np.array([[True, True, True, False], [False, False, False, False]])[:, None, :]   # (B, 1, Tk)
    out, weights, _ = F.scaled_dot_product_attention(q, k, v, mask)
    hint = ("A query with nothing it may attend to must get all-zero weights (and output 0): not NaN, and not a "
            "uniform average over keys it must not see. Zero the rows where the mask has no True.")
    cases.append(_Case("a padding mask (2, 1, 4) that hides every key of the second sequence", (q, k, v, mask),
                       (out, weights), None, hint,
                       nan_hint="Filling masked scores with -inf gives a row of -inf when every key is masked, "
                                "and the softmax then computes -inf - (-inf) = NaN. Use a large finite negative "
                                "number such as -1e9, then zero the rows that have nothing to attend to."))
    return cases


def _attention_backward_cases():
    cases = []
    for seed, qs, ks, vs, mask, label, hint in _ATTENTION_SETUPS:
        q, k, v, rng = _attention_inputs(seed + 10, qs, ks, vs)
        out, weights, cache = F.scaled_dot_product_attention(q, k, v, mask)
        dout = rng.normal(size=out.shape)
        expected = F.scaled_dot_product_attention_backward(dout, cache)
        forward = (lambda mask: lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask)[0])(mask)
        grads = _gradients(forward, {"q": q.copy(), "k": k.copy(), "v": v.copy()}, dout, ("q", "k", "v"))
        if mask is not None:
            hint = ("The weights you are given already hold the mask's zeros, and the softmax backward keeps them "
                    "at zero: backward needs no mask.")
        cases.append(_Case(label, (dout, q, k, v, weights), expected, grads, hint))
    return cases


def _layernorm_rows(rng, shape):
    """Rows with different means and spreads."""
    return rng.normal(size=shape) * rng.uniform(0.5, 2.0, size=shape[:-1] + (1,)) + rng.normal(size=shape[:-1] + (1,))


def _layernorm_forward_cases():
    rng = np.random.default_rng(40)
    x = _layernorm_rows(rng, (4, 6))
    x[1] = 0.5 + 0.003 * rng.normal(size=6)                    # variance ~1e-5, as small as eps
    x[3] = -1.0 + 0.01 * rng.normal(size=6)
    gamma, beta = rng.normal(size=6), rng.normal(size=6)
    y, (xhat, rstd, _) = F.layernorm(x, gamma, beta)
    cases = [_Case("x (4, 6), two of its rows with a variance close to eps = 1e-5", (x, gamma, beta),
                   (y, xhat, rstd), None, "eps matters when a row's variance is about as small as eps.")]
    rng = np.random.default_rng(41)
    x = _layernorm_rows(rng, (2, 3, 5))
    gamma, beta = rng.normal(size=5), rng.normal(size=5)
    y, (xhat, rstd, _) = F.layernorm(x, gamma, beta, eps=1e-3)
    cases.append(_Case("x (2, 3, 5) with eps = 1e-3 passed as the fourth argument", (x, gamma, beta, 1e-3),
                       (y, xhat, rstd), None, "Normalise over the last axis only, and use the eps you are given."))
    return cases


def _layernorm_normalize(outs, case):
    """Accept rstd without its kept last axis, (...,) for (..., 1): both carry the same numbers."""
    y, xhat, rstd = outs
    if rstd.shape == case.expected[2].shape[:-1]:
        rstd = rstd[..., None]
    return y, xhat, rstd


def _layernorm_backward_cases():
    cases = []
    for seed, shape in ((42, (4, 6)), (43, (2, 3, 5))):
        rng = np.random.default_rng(seed)
        x = _layernorm_rows(rng, shape)
        gamma, beta = rng.normal(size=shape[-1]), rng.normal(size=shape[-1])
        y, cache = F.layernorm(x, gamma, beta)
        xhat, rstd, _ = cache
        dy = rng.normal(size=shape)
        grads = _gradients(lambda x, gamma, beta: F.layernorm(x, gamma, beta)[0],
                           {"x": x.copy(), "gamma": gamma.copy(), "beta": beta.copy()}, dy, ("x", "gamma", "beta"))
        hint = "" if len(shape) == 2 else ("Here dy is (B, T, D): gamma and beta are shared by every (b, t), so "
                                           "sum their gradients over both leading axes.")
        cases.append(_Case(f"dy, xhat of shape {shape}", (dy, xhat, rstd, gamma), F.layernorm_backward(dy, cache),
                           grads, hint))
    return cases


def _cross_entropy_cases():
    rng = np.random.default_rng(50)
    logits = rng.normal(scale=2.0, size=(5, 4))
    targets = rng.integers(0, 4, size=5)
    _, cache = F.cross_entropy(logits, targets)
    one = np.array(1.0)                                        # dL/dL: the check asks for dlogits of L itself
    grads = _gradients(lambda logits, targets: F.cross_entropy(logits, targets)[0],
                       {"logits": logits.copy(), "targets": targets}, one, ("logits",))
    cases = [_Case("logits (5, 4), targets (5,)", (logits, targets), (F.cross_entropy_backward(one, cache),), grads)]
    rng = np.random.default_rng(51)
    logits = rng.normal(scale=500.0, size=(3, 6))
    targets = rng.integers(0, 6, size=3)
    _, cache = F.cross_entropy(logits, targets)
    cases.append(_Case("large logits (about ±1000), (3, 6)", (logits, targets),
                       (F.cross_entropy_backward(one, cache),), None,
                       "Trained models produce large logits; softmax(z) equals softmax(z - max(z)).",
                       nan_hint="exp(1000) overflows to inf, and inf / inf is NaN. Subtract each row's maximum "
                                "from the logits before exp: the softmax does not change."))
    return cases


def _top_p_cases():
    clear = np.array([0.05, 0.4, 0.1, 0.3, 0.15, 0.0])
    cases = [_Case("probs (6,) with p = 0.8: 0.4 + 0.3 = 0.7 < 0.8, and 0.15 crosses it", (clear, 0.8),
                   (solutions.top_p_filter(clear, 0.8),), None,
                   "Sorted: 0.4, 0.3, 0.15, 0.1, 0.05, 0.0. The first two hold 0.7 < p, so the third (0.15) is "
                   "the token that crosses p: it is kept, the rest are dropped, and the three are renormalised.")]
    rows = np.random.default_rng(60).dirichlet(np.ones(7), size=3)
    cases.append(_Case("a batch of 3 rows (3, 7), p = 0.9", (rows, 0.9), (solutions.top_p_filter(rows, 0.9),), None,
                       "Work along the last axis: every row has its own order and its own cut-off."))
    exact = np.array([0.25, 0.5, 0.125, 0.125])
    cases.append(_Case("probs (4,) with p = 0.75, where 0.5 + 0.25 is exactly p", (exact, 0.75),
                       (solutions.top_p_filter(exact, 0.75),), None,
                       "0.5 + 0.25 = 0.75 reaches p exactly, so the nucleus is complete after two tokens: a token "
                       "is kept only while the mass before it is *strictly* below p."))
    return cases


def _positional_encoding_cases():
    return [
        _Case("T = 6, D = 8", (6, 8), (F.sinusoidal_positional_encoding(6, 8, dtype=np.float64),)),
        _Case("an odd width, T = 5, D = 7", (5, 7), (F.sinusoidal_positional_encoding(5, 7, dtype=np.float64),),
              hint="With an odd D there is one more sine column than cosine columns: the last column, 2i = D - 1, "
                   "is a sine with no cosine partner, so the cosines take angle[:, :D // 2]."),
    ]


def _quantize_int8_cases():
    rng = np.random.default_rng(60)
    w = rng.normal(size=(5, 3)) * np.array([0.1, 1.0, 3.0])   # columns of very different sizes
    q, s = F.quantize_int8(w)
    cases = [_Case("w (5, 3) whose columns differ in size by 30x", (w,), (q, s), None,
                   "Each output column j gets its own scale s_j = max_i |w_ij| / 127, so that its largest weight "
                   "becomes ±127.")]
    w = rng.normal(size=(6, 4))
    w[2, 1], w[4, 3] = 6.0, -5.0                               # outliers beyond the given (calibrated) scale
    scale = np.array([0.02, 0.03, 0.025, 0.03])                # ±127 s covers about ±3: the outliers must clip
    q, s = F.quantize_int8(w, scale)
    cases.append(_Case("w (6, 4) with outliers and a given scale (4,) that does not cover them", (w, scale), (q, s),
                       None, "With a given scale some |w / s| exceed 127: clip them to [-127, 127] before the cast "
                             "to int8, or int8 wraps around (130 becomes -126)."))
    return cases


def _dequantize_int8_cases():
    rng = np.random.default_rng(61)
    q = rng.integers(-127, 128, size=(4, 5)).astype(np.int8)
    scale = rng.uniform(0.001, 0.05, size=5)
    return [_Case("q (4, 5) int8, scale (5,)", (q, scale), (F.dequantize_int8(q, scale),), None,
                  "w_hat_ij = q_ij * s_j: column j of q times its scale, broadcast over the rows.")]


def _prototype_inputs(seed, C, D, per_class, n_query, first_class):
    """Clusters around C random directions, each vector scaled by its own length in [0.3, 3]: raw embeddings
    are not unit vectors, so forgetting to normalise changes the answer. support_y starts with
    ``first_class`` so that "classes in order of appearance" is not 0, 1, ..."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, D))

    def draw(labels):
        x = centres[labels] + 0.8 * rng.normal(size=(len(labels), D))
        return x * rng.uniform(0.3, 3.0, size=(len(labels), 1))

    support_y = np.array([(first_class + i) % C for i in range(C)] * per_class)
    query_y = rng.integers(0, C, size=n_query)
    return draw(support_y), support_y, draw(query_y), query_y


def _prototype_cases():
    cases = []
    specs = ((60, 2, 4, 3, 8, 1, "2 classes, D = 4, 3 support examples each (support_y starts with class 1), "
                                 "8 queries", ""),
             (61, 3, 5, 4, 9, 2, "3 classes, odd D = 5, 4 support examples each, 9 queries",
              "Three classes here: a prototype per class, row c for class c."))
    for seed, C, D, per_class, n_query, first, label, hint in specs:
        args = _prototype_inputs(seed, C, D, per_class, n_query, first)
        expected = tuple(np.asarray(o, dtype=np.float64) for o in solutions.prototype_classify(*_copies(args)))
        cases.append(_Case(label, args, expected, None, hint))
    return cases


def _rope_cases(kind):
    cases = []
    for seed, shape, label in ((60, (6, 8), "x (6, 8): T = 6 positions, D = 8"),
                               (61, (2, 3, 5, 4), "x (2, 3, 5, 4): batch and heads in front, T = 5, D = 4")):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=shape)
        hint = "" if len(shape) == 2 else "Only the last two axes are (T, D): rotate every row of every head alike."
        if kind == "forward":
            cases.append(_Case(label, (x,), (F.rope(x)[0],), None, hint))
        else:
            dy = rng.normal(size=shape)
            grads = _gradients(lambda x: F.rope(x)[0], {"x": x.copy()}, dy, ("x",))
            cases.append(_Case(label.replace("x (", "dy ("), (dy,), (F.rope_backward(dy, F.rope(x)[1]),), grads,
                               hint))
    return cases


def _rope_attention_cases():
    cases = []
    for seed, shape, label in ((62, (6, 8), "q, k, v (6, 8)"), (63, (2, 5, 4), "q, k, v (2, 5, 4)")):
        rng = np.random.default_rng(seed)
        q, k, v = (rng.normal(size=shape) for _ in range(3))
        out, _, _ = F.scaled_dot_product_attention(F.rope(q)[0], F.rope(k)[0], v)
        cases.append(_Case(label, (q, k, v), (out,)))
    return cases


# --------------------------------------------------------------------------- #
# The exercises: signature, cases and known mistakes of each
# --------------------------------------------------------------------------- #

_GRADIENT_SHAPE = "A gradient always has the shape of the variable it is the gradient of"

def _coral_variant(xs, xt, norm=True, ddof=1, center=True, target=True, target_sign=-1.0):
    D = xs.shape[1]
    xs_c = xs - xs.mean(axis=0) if center else xs
    xt_c = xt - xt.mean(axis=0) if center else xt
    cs = xs_c.T @ xs_c / (xs.shape[0] - ddof)
    ct = xt_c.T @ xt_c / (xt.shape[0] - ddof)
    g = (cs - ct) / (2 * D * D) if norm else 2 * (cs - ct)
    dxs = 2 * xs_c @ g / (xs.shape[0] - ddof)
    dxt = target_sign * 2 * xt_c @ g / (xt.shape[0] - ddof) if target else np.zeros_like(xt)
    return dxs, dxt


def _mistake_coral_no_4d2(xs, xt):
    return _coral_variant(xs, xt, norm=False)


def _mistake_coral_no_n_minus_1(xs, xt):
    """The covariance's 1/(n-1) forgotten in forward and backward: C = X_c^T X_c."""
    D = xs.shape[1]
    xs_c, xt_c = xs - xs.mean(axis=0), xt - xt.mean(axis=0)
    g = (xs_c.T @ xs_c - xt_c.T @ xt_c) / (2 * D * D)
    return 2 * xs_c @ g, -2 * xt_c @ g


def _mistake_coral_biased(xs, xt):
    return _coral_variant(xs, xt, ddof=0)


def _mistake_coral_no_centering(xs, xt):
    return _coral_variant(xs, xt, center=False)


def _mistake_coral_one_domain(xs, xt):
    return _coral_variant(xs, xt, target=False)


def _mistake_coral_target_sign(xs, xt):
    return _coral_variant(xs, xt, target_sign=1.0)


def _coral_cases():
    cases = []
    for label, seed, ns, nt, D in (("xs (6, 3), xt (5, 3)", 60, 6, 5, 3), ("an odd width, xs (4, 5), xt (7, 5)",
                                                                           61, 4, 7, 5)):
        rng = np.random.default_rng(seed)
        xs, xt = rng.normal(size=(ns, D)) + 1.0, rng.normal(scale=1.5, size=(nt, D)) - 0.5
        one = np.array(1.0)
        _, cache = F.coral_loss(xs, xt)
        grads = _gradients(lambda xs, xt: F.coral_loss(xs, xt)[0], {"xs": xs.copy(), "xt": xt.copy()}, one,
                           ("xs", "xt"))
        cases.append(_Case(label, (xs, xt), F.coral_loss_backward(one, cache), grads,
                           "The features have a non-zero mean, so centring matters."))
    return cases


_EXERCISES = {ex.name: ex for ex in (
    _Exercise(
        "linear_backward", ("dy", "x", "W"), ("dx", "dW", "db"), _linear_cases,
        (
            _Mistake("transposed_dW", "transposed dW: dy^T x is (D_out, D_in)",
                     "dW must have W's shape (D_in, D_out). From y_nj = sum_i x_ni W_ij + b_j, "
                     "dL/dW_ij = sum_n x_ni dy_nj, which is x^T @ dy.", _mistake_linear_transposed_dW),
            _Mistake("dW_over_N", "divided dW by the number of rows",
                     "The backward pass only applies the chain rule: dW = x^T @ dy, a sum over rows. Any 1/N of "
                     "a mean belongs to the loss, and dy already carries it.", _mistake_linear_dW_over_N),
            _Mistake("db_mean", "averaged db over the rows instead of summing",
                     "b is added to every row, so each row passes its dy on to b: db = dy.sum(axis=0).",
                     _mistake_linear_db_mean),
            _Mistake("unsummed_db", "forgot to sum db over the rows",
                     "b is shared by every row, so db is the sum of every row's dy: dy.sum(axis=0), shape (D_out,).",
                     _mistake_linear_db_unsummed),
        ),
        shape_notes={"dx": f"{_GRADIENT_SHAPE}: dx is shaped like x.",
                     "dW": f"{_GRADIENT_SHAPE}: dW is (D_in, D_out) like W.",
                     "db": f"{_GRADIENT_SHAPE}: db is (D_out,) like b."},
    ),
    _Exercise(
        "softmax_backward", ("dy", "y"), ("dx",), _softmax_cases,
        (
            _Mistake("forgot_sum_term", "forgot the −Σ term: dx = y * dy is only the diagonal of the softmax Jacobian",
                     "Every y_i depends on every x_j through the shared denominator: dy_i/dx_j = y_i (δ_ij − y_j). "
                     "The off-diagonal part adds −y_j Σ_i dy_i y_i to dx_j.", _mistake_softmax_no_sum_term),
            _Mistake("wrong_axis", "summed over the wrong axis",
                     "The softmax normalises over the last axis, so Σ_i dy_i y_i runs over the last axis too: "
                     ".sum(axis=-1, keepdims=True).", _mistake_softmax_wrong_axis),
            _Mistake("unweighted_sum", "left the y out of the sum: Σ_i dy_i instead of Σ_i dy_i y_i",
                     "dx_j = Σ_i dy_i · y_i (δ_ij − y_j): the y_i stays inside the sum.",
                     _mistake_softmax_unweighted_sum),
            _Mistake("sign_flipped", "flipped the sign: y (Σ − dy) instead of y (dy − Σ)",
                     "Start from dy_i/dx_j = y_i (δ_ij − y_j): the δ term is the positive one.", _mistake_softmax_sign),
            _Mistake("missing_y_factor", "forgot the factor y_j in front: dx_j = y_j (dy_j − Σ_i dy_i y_i)",
                     "Both terms of the Jacobian y_i (δ_ij − y_j) carry a y; after summing over i one y_j is left "
                     "outside the bracket.", _mistake_softmax_no_y_factor),
            _Mistake("sigmoid_derivative", "used y (1 − y), the derivative of y_j with respect to its own x_j only",
                     "That is the diagonal of the Jacobian (like a sigmoid's); the off-diagonal terms −y_i y_j "
                     "give the −Σ term.", _mistake_softmax_sigmoid_derivative),
        ),
        shape_notes={"dx": f"{_GRADIENT_SHAPE}: dx is shaped like y."},
    ),
    _Exercise(
        "attention_forward", ("q", "k", "v", "mask"), ("out", "weights"), _attention_forward_cases,
        (
            _Mistake("forgot_scale", "forgot the 1/√d_k scaling of the scores",
                     "scores = q @ k^T / sqrt(d_k), d_k = q.shape[-1]. Without it the scores grow with the width "
                     "and the softmax saturates.", _mistake_attention_no_scale),
            _Mistake("scale_by_d_k", "divided the scores by d_k instead of √d_k",
                     "Use np.sqrt(d_k): q·k sums d_k terms, so its standard deviation grows like √d_k.",
                     _mistake_attention_scale_by_d_k),
            _Mistake("softmax_wrong_axis", "took the softmax over the wrong axis",
                     "Each query's weights over the keys must sum to 1: softmax over the last axis (Tk), "
                     "axis=-1.", _mistake_attention_softmax_wrong_axis),
            _Mistake("mask_ignored", "ignored the mask",
                     "Where mask is False set the score to -1e9 before the softmax: "
                     "np.where(mask, scores, -1e9).", _mistake_attention_mask_ignored),
            _Mistake("mask_after_softmax", "applied the mask after the softmax, so the rows no longer sum to 1",
                     "Mask the scores before the softmax; then the weights of the allowed keys sum to 1.",
                     _mistake_attention_mask_after_softmax),
            _Mistake("mask_fill_zero", "set the masked scores to 0 instead of a large negative number",
                     "exp(0) = 1 is not a zero weight: use -1e9, whose exp underflows to 0.",
                     _mistake_attention_mask_fill_zero),
            _Mistake("mask_inverted", "inverted the mask: True means 'may attend'",
                     "Keep the scores where mask is True: np.where(mask, scores, -1e9).",
                     _mistake_attention_mask_inverted),
            _Mistake("minus_inf_fill", "filled the masked scores with -inf, which gives NaN for a row with nothing "
                                       "to attend to",
                     "-inf - (-inf) = NaN inside the softmax. Use -1e9, then zero the rows that have no True in "
                     "the mask: weights * mask.any(axis=-1, keepdims=True).", _mistake_attention_minus_inf),
            _Mistake("empty_rows_uniform", "left a uniform average in the rows that have nothing to attend to",
                     "With every key masked the softmax of -1e9's is uniform: multiply the weights by "
                     "mask.any(axis=-1, keepdims=True) to make those rows zero.",
                     _mistake_attention_empty_rows_uniform),
        ),
        shape_notes={"out": "out is (..., Tq, d_v): one mixed value vector per query.",
                     "weights": "weights is (..., Tq, Tk): one row per query, one column per key."},
        error_hints=(("bool", "mask is a boolean array: use np.where(mask, scores, -1e9), or ~mask for 'not'."),),
    ),
    _Exercise(
        "attention_backward", ("dout", "q", "k", "v", "weights"), ("dq", "dk", "dv"), _attention_backward_cases,
        (
            _Mistake("forgot_scale", "forgot the 1/√d_k factor in dq and dk",
                     "In the forward pass scores = q @ k^T / sqrt(d_k): the constant multiplies both gradients.",
                     _mistake_attention_backward_no_scale),
            _Mistake("times_sqrt_d_k", "multiplied by √d_k instead of dividing",
                     "The forward pass divides the scores by √d_k, so the gradients are divided by it too.",
                     _mistake_attention_backward_times_sqrt),
            _Mistake("scaled_dv", "scaled dv by 1/√d_k too",
                     "The scale sits on the scores, not on v: out = weights @ v gives dv = weights^T @ dout.",
                     _mistake_attention_backward_scaled_dv),
            _Mistake("forgot_sum_term", "forgot the −Σ term of the softmax backward",
                     "dscores = weights * (dweights − (dweights * weights).sum(axis=-1, keepdims=True)), as in "
                     "exercise 1.", _mistake_attention_backward_no_sum_term),
            _Mistake("dv_not_transposed", "used weights instead of weights^T in dv",
                     "out = weights @ v, so dv = weights^T @ dout, like dW = x^T @ dy in exercise 0. Here the shapes "
                     "agree by chance (Tq = Tk), which is why no error was raised.",
                     _mistake_attention_backward_dv_not_transposed),
            _Mistake("dk_not_transposed", "used dscores instead of dscores^T in dk",
                     "scores = q @ k^T, so dk = dscores^T @ q (times the scale). Here the shapes agree by chance "
                     "(Tq = Tk).", _mistake_attention_backward_dk_not_transposed),
        ),
        shape_notes={"dq": f"{_GRADIENT_SHAPE}: dq is shaped like q.", "dk": f"{_GRADIENT_SHAPE}: dk is shaped like k.",
                     "dv": f"{_GRADIENT_SHAPE}: dv is shaped like v."},
    ),
    _Exercise(
        "layernorm_forward", ("x", "gamma", "beta", "eps"), ("y", "xhat", "rstd"), _layernorm_forward_cases,
        (
            _Mistake("std_plus_eps", "divided by std + eps instead of sqrt(var + eps)",
                     "eps goes inside the square root: rstd = 1 / np.sqrt(var + eps). The two differ when a row's "
                     "variance is small, and only sqrt(var + eps) matches the paper and every framework.",
                     _mistake_layernorm_std_plus_eps),
            _Mistake("no_eps", "left out eps", "rstd = 1 / np.sqrt(var + eps): eps keeps a constant row from "
                                               "dividing by zero.", _mistake_layernorm_no_eps),
            _Mistake("no_sqrt", "divided by var + eps instead of its square root",
                     "Normalising means dividing by the standard deviation: np.sqrt(var + eps).",
                     _mistake_layernorm_no_sqrt),
            _Mistake("unbiased_var", "used the unbiased variance (divided by D − 1)",
                     "LayerNorm divides by D: x.var(axis=-1) with the default ddof=0, or the mean of the squared "
                     "deviations.", _mistake_layernorm_unbiased_var),
            _Mistake("wrong_axis", "normalised over the wrong axis",
                     "Each vector is normalised on its own: mean and variance over the last axis, "
                     "axis=-1, keepdims=True.", _mistake_layernorm_wrong_axis),
            _Mistake("no_affine", "forgot to scale and shift: y = gamma * xhat + beta",
                     "gamma and beta let the network undo the normalisation where that helps.",
                     _mistake_layernorm_no_affine),
            _Mistake("ignored_eps", "ignored the eps argument (and used 1e-5 whatever was passed)",
                     "Use the eps parameter of your function.", _mistake_layernorm_ignored_eps),
            _Mistake("rstd_is_std", "returned the standard deviation as rstd",
                     "rstd is the reciprocal: 1 / np.sqrt(var + eps), so that xhat = (x - mean) * rstd.",
                     _mistake_layernorm_rstd_is_std),
        ),
        shape_notes={"y": "y is shaped like x.", "xhat": "xhat is shaped like x.",
                     "rstd": "rstd has one number per row: x.shape[:-1] + (1,) (keepdims=True)."},
        normalize=_layernorm_normalize,
    ),
    _Exercise(
        "layernorm_backward", ("dy", "xhat", "rstd", "gamma"), ("dx", "dgamma", "dbeta"), _layernorm_backward_cases,
        (
            _Mistake("no_mean_terms", "left out both mean terms: dx = rstd * dxhat treats the mean and the variance "
                                      "as constants",
                     "μ and σ² are computed from the whole row, so moving one x_j moves them too. That adds "
                     "−mean(dxhat) and −xhat * mean(dxhat * xhat) inside the bracket.",
                     _mistake_layernorm_backward_no_mean_terms),
            _Mistake("no_mean_dxhat_term", "left out the −mean(dxhat) term (the path through the mean μ)",
                     "∂μ/∂x_j = 1/D for every j: it gives −mean(dxhat, axis=-1, keepdims=True).",
                     _mistake_layernorm_backward_no_mean_dxhat),
            _Mistake("no_xhat_term", "left out the −xhat * mean(dxhat * xhat) term (the path through the variance)",
                     "∂rstd/∂x_j = −rstd³ (x_j − μ)/D: it gives −xhat * mean(dxhat * xhat, axis=-1, keepdims=True).",
                     _mistake_layernorm_backward_no_xhat_term),
            _Mistake("sum_not_mean", "used sums where the formula has means (a missing 1/D)",
                     "Both correction terms are means over the last axis: ∂μ/∂x_j = 1/D.",
                     _mistake_layernorm_backward_sum_not_mean),
            _Mistake("no_gamma", "forgot gamma: dxhat = dy * gamma",
                     "In the forward pass y = gamma * xhat + beta, so the gradient reaching xhat is dy * gamma.",
                     _mistake_layernorm_backward_no_gamma),
            _Mistake("no_rstd", "forgot the rstd factor in front of dx",
                     "xhat = (x − μ) * rstd: every path from x to xhat is multiplied by rstd.",
                     _mistake_layernorm_backward_no_rstd),
            _Mistake("swapped_dgamma_dbeta", "swapped dgamma and dbeta",
                     "y = gamma * xhat + beta: dgamma = sum(dy * xhat), dbeta = sum(dy).",
                     _mistake_layernorm_backward_swapped_params),
            _Mistake("unsummed_dgamma", "forgot to sum dgamma over the rows",
                     "gamma is shared by every row, so dgamma = (dy * xhat) summed over every axis but the last.",
                     _mistake_layernorm_backward_unsummed_dgamma),
        ),
        shape_notes={"dx": f"{_GRADIENT_SHAPE}: dx is shaped like xhat.",
                     "dgamma": f"{_GRADIENT_SHAPE}: dgamma is (D,) like gamma; sum over every axis but the last.",
                     "dbeta": f"{_GRADIENT_SHAPE}: dbeta is (D,) like beta; sum over every axis but the last."},
    ),
    _Exercise(
        "cross_entropy_backward", ("logits", "targets"), ("dlogits",), _cross_entropy_cases,
        (
            _Mistake("forgot_divide_by_N", "forgot to divide by N",
                     "The loss is the mean over the N rows, L = (1/N) Σ_n L_n, so every row's gradient p − y "
                     "is divided by N.", _mistake_ce_no_mean),
            _Mistake("sign_flipped", "flipped the sign: (y − p) / N instead of (p − y) / N",
                     "Raising the right class's logit lowers the loss, so dL/dz_target = (p_target − 1)/N < 0.",
                     _mistake_ce_sign),
            _Mistake("no_softmax", "used the logits in place of the probabilities",
                     "dL/dz = (softmax(z) − one_hot(targets)) / N: take the softmax of each row first.",
                     _mistake_ce_no_softmax),
            _Mistake("log_softmax", "used the log-probabilities in place of the probabilities",
                     "The derivative of −log softmax(z)_t is softmax(z) − one_hot(t): p itself, not log p.",
                     _mistake_ce_log_softmax),
            _Mistake("forgot_one_hot", "forgot to subtract 1 at the target class",
                     "dL/dz = (p − y) / N with y the one-hot target: p[np.arange(N), targets] -= 1.",
                     _mistake_ce_no_one_hot),
            _Mistake("divided_by_N_times_C", "divided by N·C (the number of elements) instead of N",
                     "The mean is over the N rows, not over all N·C logits.", _mistake_ce_divided_by_NC),
            _Mistake("divided_by_C", "divided by the number of classes C instead of the number of rows N",
                     "N = logits.shape[0] rows; the mean is over them.", _mistake_ce_divided_by_C),
            _Mistake("unstable_softmax", "computed exp(logits) without subtracting the row maximum, which overflows",
                     "softmax(z) = softmax(z − max(z)): subtract each row's max before exp, and exp never sees a "
                     "large number.", _mistake_ce_unstable),
        ),
        shape_notes={"dlogits": f"{_GRADIENT_SHAPE}: dlogits is shaped like logits, (N, C)."},
        error_hints=(("index", "targets holds one class id per row: p[np.arange(N), targets] picks the target "
                               "class of every row."),),
    ),
    _Exercise(
        "coral_backward", ("xs", "xt"), ("dxs", "dxt"), _coral_cases,
        (
            _Mistake("forgot_4d2", "forgot the factor 1/(4D²) of the loss",
                     "L = ||C_S − C_T||² / (4D²), so dL/dC_S = (C_S − C_T) / (2D²): the normalisation carries "
                     "through to both gradients.", _mistake_coral_no_4d2),
            _Mistake("forgot_n_minus_1", "forgot the 1/(n − 1) of the covariance",
                     "C = X_cᵀX_c / (n − 1): the factor appears in the forward pass and again in dX = "
                     "2 X_c G / (n − 1).", _mistake_coral_no_n_minus_1),
            _Mistake("biased_covariance", "divided by n instead of n − 1",
                     "Deep CORAL uses the unbiased covariance, 1/(n − 1), like np.cov.", _mistake_coral_biased),
            _Mistake("no_centering", "computed the covariance without centring the features",
                     "Subtract each domain's mean first: X_c = X − X.mean(axis=0). Without it C mixes the mean "
                     "into the second moment.", _mistake_coral_no_centering),
            _Mistake("one_domain", "returned a gradient for the source only (dxt = 0)",
                     "C_T depends on X_T too: dxt = −2 X_Tc G / (n_T − 1). Both domains' features move.",
                     _mistake_coral_one_domain),
            _Mistake("target_sign", "gave the target gradient the source's sign",
                     "L depends on C_S − C_T, so dL/dC_T = −dL/dC_S: dxt carries a minus sign.",
                     _mistake_coral_target_sign),
        ),
        shape_notes={"dxs": f"{_GRADIENT_SHAPE}: dxs is shaped like xs (n_S, D).",
                     "dxt": f"{_GRADIENT_SHAPE}: dxt is shaped like xt (n_T, D)."},
    ),
    _Exercise(
        "positional_encoding", ("T", "D"), ("PE",), _positional_encoding_cases,
        (
            _Mistake("sin_cos_swapped", "swapped sin and cos",
                     "Even columns 2i hold sin, odd columns 2i + 1 hold cos: PE[:, 0::2] = sin, PE[:, 1::2] = cos.",
                     _mistake_pe_sin_cos_swapped),
            _Mistake("i_not_2i", "used i instead of 2i in the exponent",
                     "The angle is pos / 10000^(2i/D) with i the pair index: 2i is the even column index, "
                     "np.arange(0, D, 2).", _mistake_pe_i_not_2i),
            _Mistake("column_index", "used each column's own index j in the exponent, so the cosine columns get "
                                     "a different frequency from their sine partner",
                     "A pair (2i, 2i + 1) shares one angle, pos / 10000^(2i/D): compute the angles once per pair "
                     "and take sin and cos of the same table.", _mistake_pe_column_index),
            _Mistake("seed_sin_plus_cos", "implemented the seed article's sin(θ) + cos(θ) (errata E1)",
                     "The paper puts sin(θ) and cos(θ) in two columns; their sum is √2·sin(θ + π/4), one number "
                     "per frequency, which loses the rotation property (PE[pos + k] = R_k PE[pos]).",
                     _mistake_pe_seed_sum),
            _Mistake("halves", "put all the sines first and all the cosines after",
                     "The paper interleaves them: sin in the even columns 2i, cos in the odd columns 2i + 1.",
                     _mistake_pe_halves),
            _Mistake("multiplied", "multiplied by 10000^(2i/D) instead of dividing",
                     "The frequencies fall from 1 to 1/10000: angle = pos / 10000 ** (2i / D).",
                     _mistake_pe_multiplied),
            _Mistake("integer_division", "computed the exponent with integer division (2 * i // D is 0)",
                     "Use true division, 2 * i / D, so the exponent runs from 0 towards 1.",
                     _mistake_pe_integer_division),
            _Mistake("positions_from_one", "counted positions from 1",
                     "Positions are 0, 1, ..., T − 1: np.arange(T).", _mistake_pe_positions_from_one),
            _Mistake("transposed_PE", "returned PE transposed, (D, T)",
                     "One row per position: PE has shape (T, D).", _mistake_pe_transposed),
        ),
        shape_notes={"PE": "PE has one row per position and one column per dimension: (T, D)."},
    ),
    _Exercise(
        "top_p_filter", ("probs", "p"), ("kept",), _top_p_cases,
        (
            _Mistake("not_sorted", "summed the probabilities in vocabulary order, without sorting",
                     "The nucleus is the *most likely* tokens: sort each row from most to least likely "
                     "(np.argsort(-probs, axis=-1)) before the cumulative sum.", _mistake_top_p_unsorted),
            _Mistake("ascending", "sorted from the least likely token up",
                     "Sort in decreasing order: np.argsort(-probs, axis=-1).", _mistake_top_p_ascending),
            _Mistake("crossing_token_dropped", "dropped the token that crosses p",
                     "Keep a token while the mass *before* it is below p (cumsum - probs < p): the token that "
                     "takes the total past p belongs to the nucleus; otherwise the kept mass is below p, and "
                     "when the top token alone exceeds p nothing is left.", _mistake_top_p_crossing_token_dropped),
            _Mistake("not_renormalised", "forgot to renormalise the kept probabilities",
                     "After zeroing the dropped tokens the row sums to less than 1: divide by its sum so that "
                     "it is a distribution to sample from.", _mistake_top_p_not_renormalised),
            _Mistake("boundary_le", "kept a token whose preceding mass is exactly p (<= instead of <)",
                     "When the tokens before j already sum to exactly p the nucleus is complete: use "
                     "before < p, not before <= p.", _mistake_top_p_boundary_le),
            _Mistake("one_extra", "kept one token too many (an off-by-one after the token that crosses p)",
                     "Token j is kept when the mass of the tokens ranked *above* it is < p. Shifting the "
                     "cumulative sum by one more position keeps the next token too.", _mistake_top_p_one_extra),
            _Mistake("sorted_order", "returned the probabilities in sorted order",
                     "Put the kept probabilities back where their tokens are: id j must stay at index j "
                     "(np.put_along_axis, or an inverse permutation).", _mistake_top_p_sorted_order),
        ),
        shape_notes={"kept": "kept is shaped like probs: one probability per token of the vocabulary."},
    ),
    _Exercise(
        "quantize_int8", ("w", "scale"), ("q", "scale"), _quantize_int8_cases,
        (
            _Mistake("per_tensor_scale", "used one scale for the whole matrix (per tensor), not one per column",
                     "A column of small weights then uses only a few of the 255 levels. Take the maximum over the "
                     "rows only: np.abs(w).max(axis=0) is (D_out,).", _mistake_int8_per_tensor),
            _Mistake("per_row_scale", "took one scale per input row (axis=1) instead of per output column",
                     "W is stored (D_in, D_out) and y = x W: an output channel is a column, so reduce over axis 0.",
                     _mistake_int8_per_row),
            _Mistake("divided_by_128", "divided the maximum by 128",
                     "Symmetric int8 uses [-127, 127] (so that q and -q both fit); the scale is max|w| / 127. "
                     "With 128 the largest weight rounds to 128 and has to be clipped.", _mistake_int8_divide_by_128),
            _Mistake("divided_by_255", "divided the maximum by 255, as if the 256 levels were all positive",
                     "A symmetric scale maps max|w| to 127: the sign takes one of the 8 bits.",
                     _mistake_int8_divide_by_255),
            _Mistake("truncated", "rounded by truncation (astype(int) cuts towards zero)",
                     "Round to the nearest integer first, np.round(w / s), then cast: truncation makes the error up "
                     "to a whole step instead of half a step, and always towards zero.", _mistake_int8_truncated),
            _Mistake("floor", "rounded down with np.floor",
                     "Round to the nearest integer, np.round(w / s): the error is then at most s / 2.",
                     _mistake_int8_floor),
            _Mistake("no_clipping", "did not clip to [-127, 127] before the cast, so int8 wrapped around",
                     "np.clip(np.round(w / s), -127, 127).astype(np.int8): with a given scale some weights fall "
                     "outside the range, and int8(130) is -126.", _mistake_int8_no_clip_wrapped),
            _Mistake("no_clipping_no_cast", "did not clip to [-127, 127] (q holds values beyond int8's range)",
                     "np.clip(np.round(w / s), -127, 127), then .astype(np.int8).", _mistake_int8_no_clip),
        ),
        shape_notes={"q": "q has w's shape: one integer per weight.",
                     "scale": "One scale per output column: (D_out,) = w.shape[1:]."},
    ),
    _Exercise(
        "dequantize_int8", ("q", "scale"), ("w_hat",), _dequantize_int8_cases,
        (
            _Mistake("forgot_scale", "forgot the scale: returned q itself",
                     "q is in units of the scale: w_hat = q * scale (broadcast (D_in, D_out) * (D_out,)).",
                     _mistake_dequantize_forgot_scale),
            _Mistake("divided_by_scale", "divided by the scale instead of multiplying",
                     "Quantizing divided by s (q = round(w / s)); undoing it multiplies: w_hat = q * s.",
                     _mistake_dequantize_divided),
            _Mistake("times_127", "multiplied by 127 as well",
                     "The scale already holds the 1/127 (s = max|w| / 127): w_hat = q * s.",
                     _mistake_dequantize_times_127),
        ),
        shape_notes={"w_hat": "w_hat has q's shape."},
    ),
    _Exercise(
        "prototype_classify", ("support_x", "support_y", "query_x", "query_y"), ("distances", "pred", "accuracy"),
        _prototype_cases,
        (
            _Mistake("no_normalisation", "used the dot product without normalising (1 − x·p is not a cosine "
                                         "distance)",
                     "cos(x, p) = x·p / (‖x‖ ‖p‖): divide every query and every prototype by its length "
                     "(np.linalg.norm(..., axis=1, keepdims=True)) first. Otherwise long vectors look close "
                     "to everything.", _mistake_proto_no_normalisation),
            _Mistake("prototypes_not_normalised", "normalised the queries but not the prototypes",
                     "The mean of several vectors is shorter than they are, and by a different amount for "
                     "each class: normalise the prototypes too, after taking the mean.",
                     _mistake_proto_prototypes_not_normalised),
            _Mistake("argmax_distance", "took the argmax of the distances: that is the farthest prototype",
                     "A distance is small for a near prototype: pred = distances.argmin(axis=1) (or the argmax "
                     "of the similarity, 1 − distance).", _mistake_proto_argmax),
            _Mistake("prototypes_from_queries", "built the prototypes from the query (test) examples and their "
                                                "labels",
                     "The prototypes may only use the labelled support examples; the query labels are there only "
                     "to count the accuracy. Built from the test texts, the prototypes have seen the answers.",
                     _mistake_proto_from_queries),
            _Mistake("class_order", "put the prototypes in the order in which the classes first appear in support_y",
                     "Row c of the prototypes must be class c, so that the argmin is a class id: loop over "
                     "range(C) (or np.unique, which sorts), not over the labels as they come.",
                     _mistake_proto_class_order),
            _Mistake("euclidean", "used the squared Euclidean distance instead of the cosine distance",
                     "Both are prototype distances (Snell et al. 2017 use the squared Euclidean one), but this "
                     "exercise asks for 1 − cos(x, p).", _mistake_proto_euclidean),
        ),
        shape_notes={"distances": "distances has one row per query and one column per class: (Nq, C).",
                     "pred": "pred has one class id per query: (Nq,).",
                     "accuracy": "accuracy is one number, the fraction of queries with pred == query_y."},
    ),
    _Exercise(
        "rope_forward", ("x",), ("y",), lambda: _rope_cases("forward"),
        (
            _Mistake("halves", "paired feature i with i + D/2 (GPT-NeoX's layout) instead of the neighbours "
                               "(2i, 2i + 1)",
                     "Both layouts are RoPE if q and k use the same one, but mixing them (your q, a library's k) "
                     "breaks the offset property. This exercise and functional.rope pair x[..., 0::2] with "
                     "x[..., 1::2].", _mistake_rope_halves),
            _Mistake("exponent_halved", "used i instead of 2i in the frequency exponent (off by a factor 2)",
                     "θ_i = 10000^(−2i/D) with i the pair index: the exponent runs over np.arange(0, D, 2) / D.",
                     _mistake_rope_exponent_halved),
            _Mistake("exponent_doubled", "used 4i instead of 2i in the frequency exponent (off by a factor 2)",
                     "np.arange(0, D, 2) already holds 2i: do not multiply it by 2 again.",
                     _mistake_rope_exponent_doubled),
            _Mistake("clockwise", "turned each pair by −tθ (the sine's sign is flipped)",
                     "A rotation by +a: (x, y) -> (x cos a − y sin a, x sin a + y cos a).", _mistake_rope_clockwise),
            _Mistake("positions_from_one", "counted positions from 1",
                     "Position 0 is not rotated at all: angles np.arange(T) * θ.", _mistake_rope_positions_from_one),
        ),
        shape_notes={"y": "RoPE only turns pairs of features: y has the shape of x."},
    ),
    _Exercise(
        "rope_backward", ("dy",), ("dx",), lambda: _rope_cases("backward"),
        (
            _Mistake("same_sign", "applied the forward rotation again: the wrong sign in the backward",
                     "dx = R^T dy, and the transpose of a rotation by a is the rotation by −a: flip the sign "
                     "of the sine terms.", _mistake_rope_backward_same_sign),
            _Mistake("halves", "paired feature i with i + D/2 in the backward",
                     "The backward must undo exactly the forward's pairs, (2i, 2i + 1).",
                     _mistake_rope_backward_halves),
            _Mistake("identity", "returned dy unchanged, as if the rotation had no gradient",
                     "y = R x, so dx = R^T dy: the gradient turns back by the same angles.",
                     _mistake_rope_backward_identity),
            _Mistake("exponent_halved", "used i instead of 2i in the frequency exponent (off by a factor 2)",
                     "The backward's angles are the forward's: θ_i = 10000^(−2i/D).",
                     _mistake_rope_backward_exponent_halved),
        ),
        shape_notes={"dx": f"{_GRADIENT_SHAPE}: dx is shaped like x (and dy)."},
    ),
    _Exercise(
        "rope_attention", ("q", "k", "v"), ("out",), _rope_attention_cases,
        (
            _Mistake("rotated_v", "rotated v too",
                     "RoPE encodes positions in the scores q·k only; the values carry content and are "
                     "averaged as they are.", _mistake_rope_attention_rotated_v),
            _Mistake("mixed_pairs", "used pairs (2i, 2i + 1) for q but (i, i + D/2) for k",
                     "q and k must be rotated the same way, or q_m · k_n no longer depends only on n − m.",
                     _mistake_rope_attention_mixed_pairs),
            _Mistake("only_q", "rotated q but not k",
                     "Rotate both: (R_m q) · (R_n k) = q · R_{n−m} k is what makes the score relative.",
                     _mistake_rope_attention_only_q),
            _Mistake("no_rope", "left q and k unrotated (plain attention)",
                     "Apply your rope_forward to q and to k before the scores.", _mistake_rope_attention_no_rope),
            _Mistake("forgot_scale", "forgot the 1/√D scale of the scores",
                     "scores = rope(q) @ rope(k)^T / sqrt(D), as in every attention.",
                     _mistake_rope_attention_no_scale),
        ),
        shape_notes={"out": "One output row per query, as wide as v: (..., T, D)."},
    ),
)}


# --------------------------------------------------------------------------- #
# The checks, one per student function
# --------------------------------------------------------------------------- #

def check_prototype_classify(fn, verbose=True):
    """Check ``prototype_classify(support_x, support_y, query_x, query_y) -> (distances, pred, accuracy)``."""
    return _check("prototype_classify", fn, verbose)


def check_linear_backward(fn, verbose=True):
    """Check ``linear_backward(dy, x, W) -> (dx, dW, db)`` against numerical gradients of y = x W + b."""
    return _check("linear_backward", fn, verbose)


def check_softmax_backward(fn, verbose=True):
    """Check ``softmax_backward(dy, y) -> dx`` (softmax over the last axis) against numerical gradients."""
    return _check("softmax_backward", fn, verbose)


def check_attention_forward(fn, verbose=True):
    """Check ``attention_forward(q, k, v, mask=None) -> (out, weights)`` against `functional.py`."""
    return _check("attention_forward", fn, verbose)


def check_attention_backward(fn, verbose=True):
    """Check ``attention_backward(dout, q, k, v, weights) -> (dq, dk, dv)`` against numerical gradients."""
    return _check("attention_backward", fn, verbose)


def check_layernorm_forward(fn, verbose=True):
    """Check ``layernorm_forward(x, gamma, beta, eps=1e-5) -> (y, xhat, rstd)`` against `functional.py`."""
    return _check("layernorm_forward", fn, verbose)


def check_layernorm_backward(fn, verbose=True):
    """Check ``layernorm_backward(dy, xhat, rstd, gamma) -> (dx, dgamma, dbeta)`` against numerical gradients."""
    return _check("layernorm_backward", fn, verbose)


def check_cross_entropy_backward(fn, verbose=True):
    """Check ``cross_entropy_backward(logits, targets) -> dlogits`` (of the mean loss) against numerical gradients."""
    return _check("cross_entropy_backward", fn, verbose)


def check_rope_forward(fn, verbose=True):
    """Check ``rope_forward(x) -> y`` (pairs (2i, 2i+1), θ_i = 10000^(−2i/D)) against `functional.rope`."""
    return _check("rope_forward", fn, verbose)


def check_rope_backward(fn, verbose=True):
    """Check ``rope_backward(dy) -> dx`` against numerical gradients of `functional.rope`."""
    return _check("rope_backward", fn, verbose)


def check_rope_attention(fn, verbose=True):
    """Check ``rope_attention(q, k, v) -> out`` against attention on `functional.rope`'s q and k."""
    return _check("rope_attention", fn, verbose)


def check_positional_encoding(fn, verbose=True):
    """Check ``positional_encoding(T, D) -> PE (T, D)`` against `functional.sinusoidal_positional_encoding`."""
    return _check("positional_encoding", fn, verbose)


def check_top_p_filter(fn, verbose=True):
    """Check ``top_p_filter(probs, p) -> kept`` (the nucleus, renormalised) against the reference."""
    return _check("top_p_filter", fn, verbose)


def check_coral_backward(fn, verbose=True):
    """Check ``coral_backward(xs, xt) -> (dxs, dxt)`` (of the CORAL loss) against numerical gradients."""
    return _check("coral_backward", fn, verbose)


def check_quantize_int8(fn, verbose=True):
    """Check ``quantize_int8(w, scale=None) -> (q, scale)`` (per-output-channel, symmetric) against `functional.py`."""
    return _check("quantize_int8", fn, verbose)


def check_dequantize_int8(fn, verbose=True):
    """Check ``dequantize_int8(q, scale) -> w_hat`` against `functional.dequantize_int8`."""
    return _check("dequantize_int8", fn, verbose)

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 2 · Scaled dot-product attention, forward and backward
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\Big(\frac{QK^\top}{\sqrt{d_k}} + M\Big)\,V$$
#
# (Vaswani et al. 2017, eq. 1; the seed article's §1.3.) Every query takes a weighted average of
# the values; the weights say how well the query matches each key.

# %% [markdown]
# **How this works.** Read the equation and the hints, write your code in the cell marked
# `# YOUR CODE HERE` (delete the `raise NotImplementedError()`), run that cell, then run the check
# cell under it. The check tells you in plain words what is wrong: a shape, a known mistake it
# recognises, or the element where your answer differs most. It ends with your score, which is
# also what your teacher's grading gives: per test case, a point for running with the right
# shapes and a point for each right output. Run the cells from the top; after every edit re-run
# your function's cell, then the check.

# %%
import numpy as np

from numpy_transformer import exercises


# %% [markdown]
# ## Part A: the forward pass
#
# | array | shape |
# |---|---|
# | `q` | (..., Tq, d_k): one row per query |
# | `k` | (..., Tk, d_k): one row per key |
# | `v` | (..., Tk, d_v): one value per key |
# | `mask` | boolean, broadcastable to (..., Tq, Tk), `True` = *may attend*; or `None` |
# | `weights` | (..., Tq, Tk): each row sums to 1 |
# | `out` | (..., Tq, d_v) |
#
# The leading axes `...` are batch and heads, e.g. (B, H, T, d).
#
# 1. `scores = q kᵀ / √d_k`. The dot product of two random d_k-vectors has a standard
#    deviation of about √d_k; dividing keeps the scores near 1 whatever the width, so that the
#    softmax does not saturate.
# 2. Where `mask` is `False`, set the score to a large negative number, `-1e9`, so that its
#    weight comes out 0. Not `-inf`: a row with every key masked would give
#    `-inf - (-inf) = NaN` in the softmax.
# 3. `weights = softmax(scores)` over the keys, the last axis. Subtract each row's maximum first
#    so that `exp` cannot overflow.
# 4. A query with nothing it may attend to (every key masked) must get all-zero weights, not a
#    uniform average over keys it must not see: multiply by `mask.any(axis=-1, keepdims=True)`.
# 5. `out = weights @ v`.
#
# ## Hints
#
# * With more than two axes, `k.T` reverses *every* axis; `k.swapaxes(-1, -2)` swaps the last two.
# * `np.where(mask, scores, -1e9)` broadcasts the mask against the scores.

# %% nbgrader={"grade": false, "grade_id": "attention_forward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def attention_forward(q, k, v, mask=None):
    """Scaled dot-product attention.

    q: (..., Tq, d_k); k: (..., Tk, d_k); v: (..., Tk, d_v)
    mask: None, or a boolean array broadcastable to (..., Tq, Tk), True = may attend
    Returns out (..., Tq, d_v), weights (..., Tq, Tk).
    """
    ### BEGIN SOLUTION
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
    ### END SOLUTION


# %% [markdown]
# ### Check (forward)
#
# Compared with `functional.scaled_dot_product_attention` on four inputs: 2-D `q, k, v` without a
# mask; batched heads with Tq ≠ Tk; a causal mask; a padding mask that hides every key of one
# sequence.

# %% nbgrader={"grade": true, "grade_id": "check_attention_forward", "locked": true, "points": 12, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_attention_forward(attention_forward)
result.points      # your score, out of 12: the number nbgrader reads


# %% [markdown]
# ## Part B: the backward pass
#
# Name the forward lines ($A$ is `weights`):
#
# $$S = \frac{QK^\top}{\sqrt{d_k}}, \qquad A = \mathrm{softmax}(S), \qquad O = AV$$
#
# Given $dO$ (`dout`, shaped like `out`) and what the forward pass saved (`q, k, v, weights`),
# compute `dq, dk, dv`, shaped like `q, k, v`. Go through the lines in reverse:
#
# 1. $O = AV$ is a matrix product, like $y = xW$ in exercise 0: it gives $dA$ and $dV$.
# 2. $A = \mathrm{softmax}(S)$ row by row: exercise 1 turns $dA$ into $dS$.
# 3. $S = QK^\top / \sqrt{d_k}$ is a product again, times a constant: it gives $dQ$ and $dK$.
#    Check the shapes: `dk` is (..., Tk, d_k).
#
# Masked positions have weight 0, and the softmax backward multiplies by the weights, so their
# $dS$ is 0 by itself: the backward pass needs no mask.

# %% nbgrader={"grade": false, "grade_id": "attention_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def attention_backward(dout, q, k, v, weights):
    """Gradients of out = softmax(q @ k^T / sqrt(d_k)) @ v.

    dout: (..., Tq, d_v)  the upstream gradient dL/dout
    q, k, v, weights: what the forward pass used and returned
    Returns dq (..., Tq, d_k), dk (..., Tk, d_k), dv (..., Tk, d_v).
    """
    ### BEGIN SOLUTION
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
    ### END SOLUTION


# %% [markdown]
# ### Check (backward)
#
# Numerical gradients with respect to `q`, `k` and `v` on three inputs: 2-D, batched heads with
# Tq ≠ Tk, and a causal mask.

# %% nbgrader={"grade": true, "grade_id": "check_attention_backward", "locked": true, "points": 12, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_attention_backward(attention_backward)
result.points      # your score, out of 12: the number nbgrader reads

# %% [markdown]
# ## Going further
#
# * Without positional encodings, attention cannot tell the order of its inputs: permute the rows
#   of `q`, `k` and `v` together and check that `out` is permuted the same way.
# * In `numpy_transformer/functional.py`, compare `scaled_dot_product_attention` and its backward
#   with yours. How does it handle a `q` without a batch axis and a `k` with one?

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 10 · Rotary positions (RoPE): forward, backward, and inside attention
#
# RoPE (Su et al. 2021) adds nothing to the embedding. Instead, every query and key is *turned*:
# the features come in pairs $(2i, 2i+1)$, and the pair of the vector at position $t$ is rotated
# by the angle $t\,\theta_i$:
#
# $$\begin{pmatrix} y_{t,2i} \\ y_{t,2i+1} \end{pmatrix} =
# \begin{pmatrix} \cos t\theta_i & -\sin t\theta_i \\ \sin t\theta_i & \cos t\theta_i \end{pmatrix}
# \begin{pmatrix} x_{t,2i} \\ x_{t,2i+1} \end{pmatrix}, \qquad \theta_i = 10000^{-2i/D}$$
#
# Because $R_m^\top R_n = R_{n-m}$, the score $(R_m q)\cdot(R_n k) = q \cdot R_{n-m} k$ depends on
# the positions only through their offset $n - m$: relative positions, for free. Notebook 14 draws it.

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
# ## 1. Forward
#
# `x` is (..., T, D) with D even; positions are 0 … T − 1 (the second-to-last axis).
#
# 1. `theta = 10000.0 ** (-np.arange(0, D, 2) / D)`: (D/2,), one frequency per pair. `np.arange(0, D, 2)`
#    *is* 2i already.
# 2. `angle = np.arange(T)[:, None] * theta` (T, D/2); take `np.cos` and `np.sin` once.
# 3. The pairs are neighbours: `x[..., 0::2]` and `x[..., 1::2]`. Write the rotated pairs back into
#    the same columns of a new array.

# %% nbgrader={"grade": false, "grade_id": "rope_forward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def rope_forward(x):
    """x (..., T, D), D even -> y (..., T, D): pair (2i, 2i+1) of row t turned by t * theta_i."""
    ### BEGIN SOLUTION
    T, D = x.shape[-2:]
    theta = 10000.0 ** (-np.arange(0, D, 2) / D)           # (D/2,) one frequency per pair
    angle = np.arange(T)[:, None] * theta[None, :]         # (T, D/2)
    cos, sin = np.cos(angle), np.sin(angle)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    y = np.empty_like(x)
    y[..., 0::2] = x_even * cos - x_odd * sin
    y[..., 1::2] = x_even * sin + x_odd * cos
    return y
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_rope_forward", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_rope_forward(rope_forward)
result.points      # your score, out of 4: the number nbgrader reads

# %% [markdown]
# ## 2. Backward
#
# $y = R\,x$ with $R$ a rotation (for each position and pair), so $dx = R^\top dy$, and the
# transpose of a rotation by $a$ is the rotation by $-a$. No cache is needed: the angles depend on
# positions only.

# %% nbgrader={"grade": false, "grade_id": "rope_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def rope_backward(dy):
    """dy (..., T, D) -> dx (..., T, D), the gradient of rope_forward."""
    ### BEGIN SOLUTION
    T, D = dy.shape[-2:]
    theta = 10000.0 ** (-np.arange(0, D, 2) / D)
    angle = np.arange(T)[:, None] * theta[None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    dy_even, dy_odd = dy[..., 0::2], dy[..., 1::2]
    dx = np.empty_like(dy)
    dx[..., 0::2] = dy_even * cos + dy_odd * sin          # the rotation by -angle
    dx[..., 1::2] = -dy_even * sin + dy_odd * cos
    return dx
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_rope_backward", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_rope_backward(rope_backward)
result.points      # your score, out of 4: the number nbgrader reads

# %% [markdown]
# ## 3. Inside attention
#
# Rotate the queries and the keys with *your* `rope_forward`, then do ordinary scaled dot-product
# attention (no mask): $\mathrm{softmax}(R q\,(R k)^\top/\sqrt{D})\,v$. Think about which of q, k, v
# should be rotated.

# %% nbgrader={"grade": false, "grade_id": "rope_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def rope_attention(q, k, v):
    """q, k, v (..., T, D) -> out (..., T, D)."""
    ### BEGIN SOLUTION
    q, k = rope_forward(q), rope_forward(k)                # the same rotation for both; never v
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights = weights / weights.sum(axis=-1, keepdims=True)
    return weights @ v
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_rope_attention", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_rope_attention(rope_attention)
result.points      # your score, out of 4: the number nbgrader reads

# %% [markdown]
# ## Going further
#
# * Check the offset property with your function: for random q, k, compare
#   `rope_forward(q)[m] @ rope_forward(k)[n]` with the same for `m + 5, n + 5` (make T large enough).
# * GPT-NeoX and LLaMA's code pair feature i with i + D/2. Write that version: it passes the
#   offset test on its own. Now rotate q one way and k the other: what happens to the test?
# * `functional.rope` also handles an odd D (the last feature is left alone): why is that still
#   relative?

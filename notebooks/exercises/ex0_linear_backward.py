# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 0 · Warm-up: the backward pass of a linear layer
#
# Every layer of a Transformer that has weights is a linear layer $y = xW + b$: the query, key,
# value and output projections of attention, both layers of the feed-forward network, the
# classifier at the end. Its backward pass is the pattern that every other backward pass repeats.

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
# ## The forward pass
#
# $$y = xW + b, \qquad y_{nj} = \sum_i x_{ni} W_{ij} + b_j$$
#
# | array | shape |
# |---|---|
# | `x` | (N, D_in): one row per token |
# | `W` | (D_in, D_out) |
# | `b` | (D_out,) |
# | `y`, `dy` | (N, D_out) |
#
# Given the upstream gradient $dy = \partial L / \partial y$, compute $dx = \partial L/\partial x$,
# $dW = \partial L/\partial W$ and $db = \partial L/\partial b$.
#
# ## Hints
#
# 1. Write the gradient of one element with the chain rule:
#    $$\frac{\partial L}{\partial W_{ij}} = \sum_{n,k} \frac{\partial L}{\partial y_{nk}}\,
#    \frac{\partial y_{nk}}{\partial W_{ij}}$$
#    Which terms of the sum are not zero?
# 2. A sum over $n$ of products of two matrices' entries is a matrix product. Let the shapes
#    guide you: a gradient always has the shape of its variable, so `dW` is (D_in, D_out), and
#    there is only one way to combine `x` (N, D_in) and `dy` (N, D_out) into that shape.
# 3. `b` is added to every row, so every row sends its gradient to `b`.
# 4. The check also passes an `x` with batch and time axes, (B, T, D_in), as in the Transformer.
#    `dx` needs no change; for `dW` and `db` flatten the leading axes first:
#    `x.reshape(-1, D_in)` and `dy.reshape(-1, D_out)`.

# %% nbgrader={"grade": false, "grade_id": "linear_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def linear_backward(dy, x, W):
    """Gradients of y = x @ W + b.

    dy: (..., D_out)  the upstream gradient dL/dy
    x:  (..., D_in)   the layer's input, saved by the forward pass
    W:  (D_in, D_out)
    Returns dx (..., D_in), dW (D_in, D_out), db (D_out,).
    """
    ### BEGIN SOLUTION
    D_in, D_out = W.shape
    # in the forward pass this was: y = x @ W + b
    dx = dy @ W.T                                          # (..., D_out) @ (D_out, D_in) -> (..., D_in)
    # Every row of x met the same W: flatten the leading axes and sum over all rows at once.
    x2 = x.reshape(-1, D_in)                               # (N, D_in)
    dy2 = dy.reshape(-1, D_out)                            # (N, D_out)
    dW = x2.T @ dy2                                        # (D_in, N) @ (N, D_out) -> (D_in, D_out)
    db = dy2.sum(axis=0)                                   # (D_out,)
    return dx, dW, db
    ### END SOLUTION


# %% [markdown]
# ## Check
#
# The check runs your function on three inputs (a (5, 3) `x` with a (3, 4) `W`, a square `W`,
# and a (2, 3, 3) batch) and compares your gradients with *numerical* ones: it nudges each
# element of `x`, `W` and `b` by a tiny step both ways and watches how $L = \sum y \odot dy$
# changes (`numpy_transformer/gradcheck.py`).

# %% nbgrader={"grade": true, "grade_id": "check_linear_backward", "locked": true, "points": 12, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_linear_backward(linear_backward)
result.points      # your score, out of 12: the number nbgrader reads

# %% [markdown]
# ## Going further
#
# * Compare your code with `linear_backward` in `numpy_transformer/functional.py`.
# * `nn.Linear.backward` *adds* `dW` into `W.grad` (`+=`) instead of overwriting it. Why? Think of a
#   weight used twice in one forward pass, such as an embedding matrix that is also the output layer.

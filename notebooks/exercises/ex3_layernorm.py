# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 3 · Layer normalisation, forward and backward
#
# Every Transformer block normalises its vectors with LayerNorm (Ba et al. 2016; see errata E2 for
# where it sits in the block). Over the last axis (D entries) of each vector:
#
# $$\mu = \frac1D \sum_i x_i, \qquad \sigma^2 = \frac1D \sum_i (x_i - \mu)^2, \qquad
# \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad y = \gamma \odot \hat x + \beta$$
#
# $\gamma$ and $\beta$, of shape (D,), are learned and shared by every vector.

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
# Return `y`, and also the two things the backward pass needs (as llm.c does):
# `xhat` $= \hat x$ and `rstd` $= 1/\sqrt{\sigma^2 + \epsilon}$, with one number per vector, shape (..., 1).
#
# * $\epsilon$ goes **inside** the square root. `std + eps` is a classic silent deviation: the two
#   differ when a vector's variance is small, and the check includes such vectors.
# * The variance divides by D, not D − 1 (`x.var(axis=-1)` has `ddof=0` by default).
# * Keep the reduced axis (`keepdims=True`) so that `x - mean` broadcasts.

# %% nbgrader={"grade": false, "grade_id": "layernorm_forward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def layernorm_forward(x, gamma, beta, eps=1e-5):
    """LayerNorm over the last axis.

    x: (..., D); gamma, beta: (D,)
    Returns y (..., D), xhat (..., D), rstd (..., 1) with rstd = 1 / sqrt(var + eps).
    """
    ### BEGIN SOLUTION
    mean = x.mean(axis=-1, keepdims=True)                  # (..., 1)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)   # (..., 1), divided by D (not D - 1)
    rstd = 1.0 / np.sqrt(var + eps)                        # eps inside the square root
    xhat = (x - mean) * rstd                               # (..., D)
    y = gamma * xhat + beta
    return y, xhat, rstd
    ### END SOLUTION


# %% [markdown]
# ### Check (forward)
#
# Compared with `functional.layernorm` on a (4, 6) input, two of whose rows have a variance close
# to $\epsilon$, and on a (2, 3, 5) input with `eps=1e-3`.

# %% nbgrader={"grade": true, "grade_id": "check_layernorm_forward", "locked": true, "points": 8, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_layernorm_forward(layernorm_forward)
result.points      # your score, out of 8: the number nbgrader reads


# %% [markdown]
# ## Part B: the backward pass
#
# Given `dy` (shaped like `y`) and what the forward pass saved (`xhat`, `rstd`, `gamma`), compute
# `dx` (shaped like `x`), `dgamma` and `dbeta` (both (D,)).
#
# 1. $y = \gamma \odot \hat x + \beta$: $\gamma$ and $\beta$ are shared by every vector, so their
#    gradients sum over all the leading axes. The gradient that reaches $\hat x$ is
#    $d\hat x = dy \odot \gamma$.
# 2. $\hat x_j = (x_j - \mu)\,\mathrm{rstd}$, and $\mu$ and $\mathrm{rstd}$ depend on *every*
#    $x_k$ of the vector:
#    $$\frac{\partial \mu}{\partial x_k} = \frac1D, \qquad
#    \frac{\partial\,\mathrm{rstd}}{\partial x_k} = -\frac{\mathrm{rstd}^3}{D}(x_k - \mu)
#    = -\frac{\mathrm{rstd}^2}{D}\,\hat x_k$$
# 3. So $dx_k = \sum_j d\hat x_j\, \dfrac{\partial \hat x_j}{\partial x_k}$ has three parts: the
#    direct path, the path through $\mu$ and the path through $\mathrm{rstd}$. Each of the last
#    two becomes a *mean over the vector*.
# 4. Stuck? Your result should read `dx = rstd * (dxhat - [a mean over the last axis] - xhat * [another mean])`.

# %% nbgrader={"grade": false, "grade_id": "layernorm_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def layernorm_backward(dy, xhat, rstd, gamma):
    """Gradients of LayerNorm.

    dy: (..., D)  the upstream gradient dL/dy
    xhat: (..., D), rstd: (..., 1), gamma: (D,)  saved by the forward pass
    Returns dx (..., D), dgamma (D,), dbeta (D,).
    """
    ### BEGIN SOLUTION
    D = xhat.shape[-1]
    # in the forward pass this was: y = gamma * xhat + beta (gamma and beta are shared by every row)
    dgamma = (dy * xhat).reshape(-1, D).sum(axis=0)
    dbeta = dy.reshape(-1, D).sum(axis=0)
    dxhat = dy * gamma
    # in the forward pass this was: xhat = (x - mean) * rstd, with mean and rstd depending on all of x
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dgamma, dbeta
    ### END SOLUTION


# %% [markdown]
# ### Check (backward)
#
# Numerical gradients with respect to `x`, `gamma` and `beta` on a (4, 6) and a (2, 3, 5) input.

# %% nbgrader={"grade": true, "grade_id": "check_layernorm_backward", "locked": true, "points": 8, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_layernorm_backward(layernorm_backward)
result.points      # your score, out of 8: the number nbgrader reads

# %% [markdown]
# ## Going further
#
# * Show that every row of `dx` sums to 0. Why must it? (Adding the same number to every $x_i$
#   of a vector does not change $\hat x$.)
# * Compare with `layernorm` and `layernorm_backward` in `numpy_transformer/functional.py`.

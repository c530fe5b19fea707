# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 7 · The backward pass of CORAL (domain adaptation, seed §2.2)
#
# A classifier trained on hotel reviews meets laptop reviews. *Feature matching* asks the encoder
# to give the two domains' features the same second-order statistics (Deep CORAL, Sun & Saenko
# 2016). With source features $X_S$ ($n_S \times D$) and target features $X_T$ ($n_T \times D$):
#
# $$C_S = \frac{1}{n_S - 1}\,(X_S - \mathbf 1\mu_S^\top)^\top (X_S - \mathbf 1\mu_S^\top), \qquad
# C_T = \frac{1}{n_T - 1}\,(X_T - \mathbf 1\mu_T^\top)^\top (X_T - \mathbf 1\mu_T^\top)$$
#
# $$L = \frac{1}{4D^2}\,\lVert C_S - C_T \rVert_F^2$$

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
# ## The task
#
# Return $\partial L/\partial X_S$ (shape $n_S \times D$) and $\partial L/\partial X_T$
# ($n_T \times D$), the gradients of $L$ itself.
#
# ## Hints
#
# 1. First $G = \partial L/\partial C_S$. Differentiate $\sum_{ij} (C_S - C_T)_{ij}^2 / (4D^2)$.
#    What is $\partial L/\partial C_T$?
# 2. For $C = X_c^\top X_c / (n - 1)$ and a symmetric $G$, $\partial L / \partial X_c = 2 X_c G / (n-1)$.
# 3. The mean $\mu$ depends on $X$ too. Its extra term is $-\frac1n \mathbf 1 \mathbf 1^\top X_c G$:
#    what is $\mathbf 1^\top X_c$? (But you still need the centred $X_c$ in the formula.)
# 4. Both domains get a gradient, with opposite signs.

# %% nbgrader={"grade": false, "grade_id": "coral_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def coral_backward(xs, xt):
    """Gradients of the CORAL loss.

    xs: (n_S, D) source features; xt: (n_T, D) target features
    Returns dxs (n_S, D), dxt (n_T, D).
    """
    ### BEGIN SOLUTION
    D = xs.shape[1]
    xs_c = xs - xs.mean(axis=0)                            # (n_S, D) centred: the covariance is about the mean
    xt_c = xt - xt.mean(axis=0)                            # (n_T, D)
    cs = xs_c.T @ xs_c / (xs.shape[0] - 1)                 # (D, D) unbiased covariance
    ct = xt_c.T @ xt_c / (xt.shape[0] - 1)
    g = (cs - ct) / (2 * D * D)                            # dL/dC_S = 2 (C_S - C_T) / (4 D^2); dL/dC_T = -g
    dxs = 2 * xs_c @ g / (xs.shape[0] - 1)                 # (n_S, D); the mean's own term is zero
    dxt = -2 * xt_c @ g / (xt.shape[0] - 1)                # (n_T, D): the target moves the other way
    return dxs, dxt
    ### END SOLUTION


# %% [markdown]
# ## Check
#
# Numerical gradients of `functional.coral_loss` on a (6, 3) / (5, 3) pair and on an odd width,
# (4, 5) / (7, 5). The features have a non-zero mean, so forgetting to centre shows. The check
# recognises the classic slips: a forgotten 1/(4D²) or 1/(n − 1), 1/n instead of 1/(n − 1), no
# centring, a gradient for the source only, and the target's gradient with the source's sign.

# %% nbgrader={"grade": true, "grade_id": "check_coral_backward", "locked": true, "points": 6, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_coral_backward(coral_backward)
result.points      # your score, out of 6: the number nbgrader reads

# %% [markdown]
# ## Going further
#
# * Compare with `coral_loss_backward` in `numpy_transformer/functional.py`.
# * Why $1/(4D^2)$? Draw random features of width 16 and 128 and compare the loss with and
#   without it.
# * `transfer.finetune(..., adaptation="coral")` adds this loss to the classifier's; notebook 11
#   shows what it does to the features of hotel and laptop reviews.

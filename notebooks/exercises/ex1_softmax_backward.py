# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 1 · The backward pass of softmax
#
# Softmax turns attention scores into attention weights, and a classifier's logits into
# probabilities. Over the last axis (K entries):
#
# $$y_i = \frac{e^{x_i}}{\sum_{j} e^{x_j}}$$

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
# Given the upstream gradient `dy` and the forward pass's *output* `y` (both of shape (..., K)),
# compute `dx` (same shape). The backward pass of softmax needs only `y`, not `x`.
#
# ## Hints
#
# 1. With the quotient rule, show that
#    $\dfrac{\partial y_i}{\partial x_j} = y_i\,(\delta_{ij} - y_j)$, where $\delta_{ij}$ is 1 when
#    $i = j$ and 0 otherwise.
# 2. Chain rule: $dx_j = \sum_i dy_i\, \dfrac{\partial y_i}{\partial x_j}$. Split the $\delta_{ij}$ part
#    from the rest and simplify.
# 3. Do not build the K × K Jacobian: the result is one elementwise product and one sum over the
#    last axis. Keep that axis (`keepdims=True`) so that the sum broadcasts back against `y`.

# %% nbgrader={"grade": false, "grade_id": "softmax_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax_backward(dy, y):
    """Gradient of y = softmax(x) over the last axis.

    dy: (..., K)  the upstream gradient dL/dy
    y:  (..., K)  the softmax output (each row sums to 1)
    Returns dx (..., K).
    """
    ### BEGIN SOLUTION
    # dx_j = sum_i dy_i * y_i (delta_ij - y_j) = y_j (dy_j - sum_i dy_i y_i)
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    ### END SOLUTION


# %% [markdown]
# ## Check
#
# Numerical gradients of the softmax on a (3, 5) and a (2, 3, 4) input.

# %% nbgrader={"grade": true, "grade_id": "check_softmax_backward", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_softmax_backward(softmax_backward)
result.points      # your score, out of 4: the number nbgrader reads

# %% [markdown]
# ## Going further
#
# * What does your function return for a `dy` whose entries are all equal in each row, say
#   `softmax_backward(np.ones((2, 4)), y)`? Why must it be so? (Hint: what happens to softmax when
#   you add the same number to every `x_i`?)
# * The same formula is at the heart of attention's backward pass in exercise 2.

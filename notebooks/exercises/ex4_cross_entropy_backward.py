# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 4 · The backward pass of softmax + cross-entropy
#
# A classifier's loss: the softmax of the logits $z$ gives probabilities $p$, and the loss is the
# mean over the N rows of minus the log-probability of the right class $t_n$:
#
# $$p_n = \mathrm{softmax}(z_n), \qquad L = -\frac1N \sum_{n=1}^{N} \log p_{n,\,t_n}$$

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
# `logits` is (N, C), `targets` is (N,) integer class ids. Return $\partial L / \partial z$, shape
# (N, C), the gradient of the *mean* loss.
#
# ## Hints
#
# 1. Write $\log p_{n,t} = z_{n,t} - \log \sum_c e^{z_{n,c}}$, and differentiate with respect to
#    one logit $z_{n,c}$. What is $\dfrac{\partial}{\partial z_c} \log \sum_{c'} e^{z_{c'}}$?
# 2. Softmax and cross-entropy together give a much simpler gradient than the softmax backward of
#    exercise 1 chained with the gradient of $-\log$: that is why they always come as a pair.
# 3. Don't forget the $\frac1N$ of the mean.
# 4. Trained models produce large logits, and `np.exp(1000.0)` is `inf`. Subtract each row's
#    maximum before `exp`: the softmax does not change.
# 5. `p[np.arange(N), targets]` picks the target class's entry of every row.

# %% nbgrader={"grade": false, "grade_id": "cross_entropy_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def cross_entropy_backward(logits, targets):
    """Gradient of L = mean over rows of -log softmax(logits)[target].

    logits: (N, C); targets: (N,) integers in [0, C)
    Returns dlogits (N, C).
    """
    ### BEGIN SOLUTION
    N = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)   # exp(1000) would overflow
    p = np.exp(shifted)
    p = p / p.sum(axis=1, keepdims=True)                   # (N, C) softmax
    p[np.arange(N), targets] -= 1.0                        # p - one_hot(targets); p is our own array
    return p / N                                           # the loss is a mean over N rows
    ### END SOLUTION


# %% [markdown]
# ## Check
#
# Numerical gradients of `functional.cross_entropy` on (5, 4) logits, then a comparison with the
# reference on large logits (about ±1000).

# %% nbgrader={"grade": true, "grade_id": "check_cross_entropy_backward", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_cross_entropy_backward(cross_entropy_backward)
result.points      # your score, out of 4: the number nbgrader reads

# %% [markdown]
# ## Going further
#
# * Every row of your gradient sums to 0. Why?
# * At the start of training the logits are near 0. What is the gradient then, and what does it
#   push the model to do?

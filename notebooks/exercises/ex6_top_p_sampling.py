# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 6 · Top-p (nucleus) sampling
#
# A language model gives a probability $p_v$ to every token $v$ of the vocabulary. Sampling from
# all of them lets the many unlikely tokens — each tiny, together a lot — produce nonsense now and
# then. **Nucleus sampling** (Holtzman et al. 2020) samples only from the *nucleus*: the smallest
# set of most likely tokens whose probabilities add up to at least $p$, renormalised:
#
# $$V_p = \text{the shortest prefix of the tokens sorted by } p_v \text{ (largest first) with }
# \sum_{v \in V_p} p_v \ge p, \qquad \tilde p_v = \frac{p_v\,[v \in V_p]}{\sum_{u \in V_p} p_u}$$
#
# When the model is sure the nucleus is one or two tokens; when it is unsure it is wide
# (notebook 10 draws it on the pre-trained model's next-character distribution).

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
# `probs` is (V,) or (B, V), each row summing to 1, and 0 < `p` ≤ 1. Return the filtered,
# renormalised probabilities, **shaped like `probs` and in the same token order**.
#
# ## Hints
#
# 1. Sort each row from the most to the least likely token: `order = np.argsort(-probs, axis=-1)`,
#    then `np.take_along_axis(probs, order, axis=-1)`.
# 2. In the sorted row, the mass *before* token j is `np.cumsum(sorted_p, axis=-1) - sorted_p`.
#    Token j belongs to the nucleus while that mass is still below p: the token that takes the
#    total past p is kept, and the first token always is.
# 3. Put the keep/drop decision back in vocabulary order (`np.put_along_axis`), zero the dropped
#    tokens, and divide by the new sum.
# 4. The boundary: with sorted probabilities 0.5, 0.25, 0.125, 0.125 and p = 0.75, the nucleus is
#    {0.5, 0.25}. The mass before the third token is exactly p, so it is not needed.

# %% nbgrader={"grade": false, "grade_id": "top_p_filter", "locked": false, "schema_version": 3, "solution": true, "task": false}
def top_p_filter(probs, p):
    """The nucleus of each row of probs (..., V), renormalised.

    probs: (..., V), rows summing to 1; p: 0 < p <= 1
    Returns kept (..., V), in the same token order as probs.
    """
    ### BEGIN SOLUTION
    order = np.argsort(-probs, axis=-1, kind="stable")     # most likely first
    sorted_p = np.take_along_axis(probs, order, axis=-1)
    before = np.cumsum(sorted_p, axis=-1) - sorted_p       # the mass ranked above each token
    keep_sorted = before < p                               # the token that crosses p is kept
    keep = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)   # back to vocabulary order
    kept = np.where(keep, probs, 0.0)
    return kept / kept.sum(axis=-1, keepdims=True)         # a distribution again
    ### END SOLUTION


# %% [markdown]
# ## Check
#
# Three cases: a clear crossing, a batch of rows, and the exact boundary. The check recognises
# the classic slips: not sorting (or sorting upwards), dropping the token that crosses p, not
# renormalising, `<=` at the boundary, one token too many, and returning the row in sorted order.

# %% nbgrader={"grade": true, "grade_id": "check_top_p_filter", "locked": true, "points": 6, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_top_p_filter(top_p_filter)
result.points      # your score, out of 6: the number nbgrader reads

# %% [markdown]
# ## Going further
#
# * What does `p = 1` give? And a very small `p`?
# * Combine it with a temperature: does the order of the two operations matter?
# * `numpy_transformer.generation.top_p_filter` is the project's version: compare it with yours,
#   then sample with `generation.sample(kept, np.random.default_rng(0))`.

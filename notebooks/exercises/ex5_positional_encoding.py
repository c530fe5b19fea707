# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 5 · The sinusoidal positional encoding
#
# Attention by itself ignores word order, so each position gets a vector added to its embedding
# (Vaswani et al. 2017, §3.5):
#
# $$PE_{pos,\,2i} = \sin\!\Big(\frac{pos}{10000^{2i/D}}\Big), \qquad
# PE_{pos,\,2i+1} = \cos\!\Big(\frac{pos}{10000^{2i/D}}\Big)$$
#
# `pos` = 0, 1, …, T − 1 is the position; `i` counts *pairs* of dimensions, so `2i` is the index
# of an even column and each pair (sin, cos) turns at its own frequency.

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
# ## The seed article's version (errata E1)
#
# The article writes $PE(pos) = \sin(\ldots) + \cos(\ldots)$ and calls $i$ "the word index". Both are
# wrong: the sum equals $\sqrt2 \sin(\theta + \pi/4)$, one number per frequency instead of a
# (sin, cos) pair, so shifting the position by $k$ is no longer a rotation of each pair, and
# columns $2i$ and $2i+1$ come out identical. The check recognises that version.
#
# ## Hints
#
# 1. Build the table of angles by broadcasting: positions as a column, `np.arange(T)[:, None]`
#    (T, 1), divided by `10000 ** (two_i / D)` with `two_i = np.arange(0, D, 2)` (⌈D/2⌉,)
#    gives (T, ⌈D/2⌉).
# 2. Fill the even columns with `np.sin` and the odd columns with `np.cos`: `pe[:, 0::2]` and
#    `pe[:, 1::2]`.
# 3. An odd D must work: the last column is then a sine with no cosine partner, so there is one
#    fewer cosine column than sine columns.

# %% nbgrader={"grade": false, "grade_id": "positional_encoding", "locked": false, "schema_version": 3, "solution": true, "task": false}
def positional_encoding(T, D):
    """The sinusoidal positional encoding.

    T: number of positions; D: model width (odd allowed)
    Returns PE (T, D).
    """
    ### BEGIN SOLUTION
    pos = np.arange(T)[:, None]                            # (T, 1)
    two_i = np.arange(0, D, 2)                             # (ceil(D/2),) the even column indices 2i
    angle = pos / 10000 ** (two_i / D)                     # (T, ceil(D/2))
    pe = np.zeros((T, D))
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : D // 2])               # odd D: the last sine has no cosine partner
    return pe
    ### END SOLUTION


# %% [markdown]
# ## Check
#
# Compared with `functional.sinusoidal_positional_encoding` for T = 6, D = 8 and for an odd width,
# T = 5, D = 7.

# %% nbgrader={"grade": true, "grade_id": "check_positional_encoding", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_positional_encoding(positional_encoding)
result.points      # your score, out of 4: the number nbgrader reads

# %% [markdown]
# ## Going further
#
# * Why a (sin, cos) pair? For the frequency $\omega_i = 10000^{-2i/D}$, the pair
#   $(PE_{pos+k,2i}, PE_{pos+k,2i+1})$ is the pair at `pos` rotated by the angle $k\omega_i$. Write
#   the 2 × 2 rotation matrix and check it with your function for a few `pos` and `k`; then try
#   the same with the seed's $\sin + \cos$.
# * Draw yours next to the seed's: `from numpy_transformer import functional, viz`, then
#   `viz.pe_comparison(positional_encoding(50, 64), functional.seed_positional_encoding(50, 64))`.

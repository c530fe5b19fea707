# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 8 · int8 quantization, one scale per output channel
#
# A float32 weight takes 4 bytes; an int8 one takes 1. To store a matrix $W$ (D_in, D_out) in
# int8, each output column $j$ gets a *scale* $s_j$ that maps its largest magnitude to 127
# (symmetric quantization: the range is $[-127, 127]$, so $q$ and $-q$ both fit):
#
# $$s_j = \frac{\max_i |w_{ij}|}{127}, \qquad
# q_{ij} = \mathrm{clip}\Big(\mathrm{round}\big(w_{ij} / s_j\big),\ -127,\ 127\Big), \qquad
# \hat w_{ij} = s_j\, q_{ij}$$
#
# Rounding to the nearest integer keeps the error $|w - \hat w|$ below $s_j / 2$. The seed article
# (§2.1, errata E9) says integer quantization "turns floats into integers" and leaves out the
# scale, which is the whole point: without it, $q$ means nothing. Notebook 12 does this to a
# trained classifier.

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
# ## 1. Quantize
#
# 1. `W` is stored (D_in, D_out) and the layer computes `y = x @ W`: an output channel is a
#    *column*. `np.abs(w).max(axis=0)` is (D_out,).
# 2. `np.round(w / scale)` broadcasts (D_in, D_out) / (D_out,) over the rows. Round before the
#    cast: `.astype(np.int8)` on its own cuts towards zero.
# 3. A caller may pass a `scale` (calibrated on data, smaller than the maximum, so that outliers
#    do not waste the range). Then some `|w / s|` exceed 127: clip before the cast, or int8
#    wraps around (`np.int8(130)` is −126).
# 4. A column of zeros has maximum 0: give it scale 1 rather than dividing by 0.

# %% nbgrader={"grade": false, "grade_id": "quantize_int8", "locked": false, "schema_version": 3, "solution": true, "task": false}
def quantize_int8(w, scale=None):
    """Symmetric int8 quantization with one scale per output column.

    w: (D_in, D_out) floats; scale: (D_out,) or None (then max|w| / 127 per column)
    Returns q (D_in, D_out) int8 in [-127, 127], scale (D_out,).
    """
    ### BEGIN SOLUTION
    if scale is None:
        scale = np.abs(w).max(axis=0) / 127                # (D_out,): each column's largest |w| becomes 127
        scale = np.where(scale > 0, scale, 1.0)            # a column of zeros: any scale will do, not 0/0
    q = np.clip(np.round(w / scale), -127, 127)            # round to nearest, then keep inside int8's range
    return q.astype(np.int8), scale
    ### END SOLUTION


# %% [markdown]
# ## Check
#
# Compared with `functional.quantize_int8` on a matrix whose columns differ in size by 30×, and on
# one with outliers and a given scale that does not cover them. The check recognises a per-tensor
# or per-row scale, dividing by 128 or 255, truncation or floor instead of rounding, and no clipping.

# %% nbgrader={"grade": true, "grade_id": "check_quantize_int8", "locked": true, "points": 6, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_quantize_int8(quantize_int8)
result.points      # your score, out of 6: the number nbgrader reads

# %% [markdown]
# ## 2. Dequantize
#
# Dequantizing undoes the division: `q * scale`, as floats.

# %% nbgrader={"grade": false, "grade_id": "dequantize_int8", "locked": false, "schema_version": 3, "solution": true, "task": false}
def dequantize_int8(q, scale):
    """q (D_in, D_out) int8, scale (D_out,) -> w_hat (D_in, D_out) floats."""
    ### BEGIN SOLUTION
    return q.astype(np.float64) * scale                    # (D_in, D_out) * (D_out,): each column its scale
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_dequantize_int8", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_dequantize_int8(dequantize_int8)
result.points      # your score, out of 2: the number nbgrader reads

# %% [markdown]
# ## Going further
#
# * Quantize a random (64, 32) matrix whose columns have different sizes, once with your per-column
#   scale and once with one scale for the whole matrix. Compare the largest error of each column
#   with its $s_j / 2$: which columns lose most with the single scale, and why?
# * Notebook 12 does this to a trained classifier: the int8 file is 3.6× smaller, and the test
#   accuracy moves by less than 0.2 points.

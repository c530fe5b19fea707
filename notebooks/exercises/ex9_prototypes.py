# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 9 · Few-shot classification with prototypes
#
# With only a few labelled examples per class, a pre-trained model's sentence embeddings can
# still classify: average each class's examples into a **prototype** $p_c$ and give a new text
# the class of the nearest prototype (Snell et al. 2017; notebook 13 measures it on the reviews):
#
# $$p_c = \frac{1}{|S_c|}\sum_{i \in S_c} x_i, \qquad
# d(x, p_c) = 1 - \frac{x \cdot p_c}{\lVert x\rVert\,\lVert p_c\rVert}, \qquad
# \hat y = \arg\min_c d(x, p_c)$$
#
# $S_c$ are the *support* examples of class $c$ (the few labelled ones); the *queries* are the
# texts to classify. Here the embeddings are small made-up vectors, of different lengths.

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
# ## Hints
#
# 1. Classes are `0, 1, …, C − 1` with `C = support_y.max() + 1`. Build the prototypes as a (C, D)
#    array whose row `c` is class `c`: `support_x[support_y == c].mean(axis=0)` for `c` in
#    `range(C)`. The first support example need not be class 0.
# 2. A cosine needs *both* vectors divided by their length:
#    `np.linalg.norm(a, axis=1, keepdims=True)`. The mean of vectors is shorter than they are.
# 3. `distances = 1 - q @ p.T` is (Nq, C); the prediction is the **nearest** prototype.
# 4. `query_y` is only for the accuracy: the prototypes may use the support examples only.

# %% nbgrader={"grade": false, "grade_id": "prototype_classify", "locked": false, "schema_version": 3, "solution": true, "task": false}
def prototype_classify(support_x, support_y, query_x, query_y):
    """Nearest-prototype classification with the cosine distance.

    support_x (Ns, D), support_y (Ns,) class ids 0..C-1; query_x (Nq, D), query_y (Nq,)
    Returns distances (Nq, C), pred (Nq,) and accuracy (one number).
    """
    ### BEGIN SOLUTION
    C = int(support_y.max()) + 1
    # prototype of class c = the mean of its *support* examples; row c is class c (np.arange, not the
    # order in which the classes first appear in support_y)
    protos = np.stack([support_x[support_y == c].mean(axis=0) for c in range(C)])   # (C, D)
    q = query_x / np.linalg.norm(query_x, axis=1, keepdims=True)                    # (Nq, D) unit rows
    p = protos / np.linalg.norm(protos, axis=1, keepdims=True)                      # (C, D) unit rows
    distances = 1.0 - q @ p.T                                                       # (Nq, C)
    pred = distances.argmin(axis=1)                                                 # the *nearest* prototype
    accuracy = (pred == query_y).mean()
    return distances, pred, accuracy
    ### END SOLUTION


# %% [markdown]
# ## Check
#
# Two sets of made-up embeddings: two classes with the support examples listed class 1 first,
# and three classes in an odd width D = 5. The check recognises forgetting to normalise,
# the argmax of the distances, prototypes built from the queries, and classes in the wrong order.

# %% nbgrader={"grade": true, "grade_id": "check_prototype_classify", "locked": true, "points": 8, "schema_version": 3, "solution": false, "task": false}
result = exercises.check_prototype_classify(prototype_classify)
result.points      # your score, out of 8: the number nbgrader reads

# %% [markdown]
# ## Going further
#
# * Replace the cosine by the squared Euclidean distance $\lVert x - p_c\rVert^2$ (what Snell
#   et al. use). When do the two disagree? Try two prototypes of very different lengths.
# * In notebook 13, `zeroshot.class_prototypes` and `zeroshot.prototype_distances` do the same
#   on real review embeddings: compare your function with them on `k = 4` examples per class.

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2 · Positional encoding
#
# Attention (notebook 3) compares every token with every other token, but on its own it has no
# idea of order. The Transformer therefore adds a position signal to every embedding. The article
# prints the formula for it wrongly (errata **E1**), and the numbers of its worked example for this
# step (**W1**) come from no formula at all.
#
# You will learn:
#
# 1. why attention needs a position signal at all;
# 2. the correct sinusoidal formula next to the function that implements it, and the article's;
# 3. why the (sin, cos) *pair* matters: shifting the position by k is a fixed rotation, which holds to
#    about 1e-15 for the correct encoding and fails by a wide margin for the article's;
# 4. what the encoding really adds to the article's toy vectors, versus what the article printed;
# 5. that an odd width D (like the toy vectors' D = 3) works.

# %%
from numpy_transformer import viz
viz.notebook_setup()

# %%
import matplotlib.pyplot as plt
import numpy as np

from numpy_transformer import functional as F
from numpy_transformer.tokenizer import SEED_WORD_VECTORS
from numpy_transformer.worked_example import toy_attention, toy_embeddings, toy_words

# %% [markdown]
# ## 1. Why attention needs positions
#
# Take the article's words of sentence 1 (notebook 1, section 5) and shuffle them. **Look at**
# the check: the attention outputs are the same rows, shuffled the same way. Without a position
# signal, 有趣的文章 ("an interesting article") and 文章的有趣 ("the article's interest") are the
# same bag of words.

# %%
words = toy_words(0)                                  # ['有趣', '文章', '喜欢', '阅读']
X = toy_embeddings(words)                             # (T, 3), the article's vectors
perm = [2, 0, 3, 1]
out, _ = toy_attention(X)
out_shuffled, _ = toy_attention(X[perm])
print("shuffled words:", [words[i] for i in perm])
print("outputs of the shuffled input == shuffled outputs:", np.allclose(out_shuffled, out[perm]))
assert np.allclose(out_shuffled, out[perm])


# %% [markdown]
# ## 2. The correct formula (Vaswani et al. 2017, §3.5)
#
# $$PE_{pos,\,2i} = \sin\!\left(\frac{pos}{10000^{2i/D}}\right), \qquad
#   PE_{pos,\,2i+1} = \cos\!\left(\frac{pos}{10000^{2i/D}}\right)$$
#
# `pos` = 0, 1, …, T−1 is the position; `i` = 0, 1, … counts **pairs of dimensions**. Pair `i`
# is a sine and a cosine of the same angle, turning at frequency
# $\omega_i = 10000^{-2i/D}$ radians per position: from 1 (pair 0) down to almost 1/10000.
#
# `functional.sinusoidal_positional_encoding(T, D)` implements it without loops. The check
# below compares it with the formula typed in literally, one entry at a time.

# %%
def pe_by_the_formula(T, D):
    """The paper's formula, one entry at a time (slow, obviously right)."""
    pe = np.zeros((T, D))
    for pos in range(T):
        for j in range(D):
            i = j // 2                                   # the pair that column j belongs to
            angle = pos / 10000 ** (2 * i / D)
            pe[pos, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return pe

T, D = 64, 16
PE = F.sinusoidal_positional_encoding(T, D, dtype=np.float64)     # (T, D)
print("largest difference from the literal formula:", np.abs(PE - pe_by_the_formula(T, D)).max())
assert np.allclose(PE, pe_by_the_formula(T, D), atol=1e-12)
viz.table(PE[:5, :8], [f"pos {p}" for p in range(5)], [f"dim {j}" for j in range(8)])

# %% [markdown]
# ## 3. The article's formula (errata E1)
#
# Sections 1.3, 3.2 and 4.1 all print:
#
# $$\text{PositionalEncoding}(pos, d_{model}) = \sin\!\left(\frac{pos}{10000^{2i/d_{model}}}\right) + \cos\!\left(\frac{pos}{10000^{2i/d_{model}}}\right)$$
#
# > 其中，pos 表示位置索引，d_model 表示模型维度，i 表示词索引。
# >
# > "where pos is the position index, d_model the model dimension, and **i is the word index**."
#
# Two mistakes: the sine and the cosine are *added* into one number instead of filling two
# dimensions, and `i` is called the word index, although the word's index is already `pos`
# (read literally, the formula gives one number per word, not a D-vector).
# `functional.seed_positional_encoding` implements the sum with the kindest reading of `i`, the
# pair index, so the frequencies match the real encoding. **Look at** the check: columns 2i and
# 2i+1 come out identical, so half of the width carries nothing new.

# %%
PE_seed = F.seed_positional_encoding(T, D, dtype=np.float64)      # (T, D)
by_formula = np.array([[np.sin(pos / 10000 ** (2 * (j // 2) / D)) + np.cos(pos / 10000 ** (2 * (j // 2) / D))
                        for j in range(D)] for pos in range(T)])
assert np.allclose(PE_seed, by_formula, atol=1e-12)
print("columns 2i and 2i+1 identical:", np.array_equal(PE_seed[:, 0::2], PE_seed[:, 1::2]))
assert np.array_equal(PE_seed[:, 0::2], PE_seed[:, 1::2])
viz.table(PE_seed[:5, :8], [f"pos {p}" for p in range(5)], [f"dim {j}" for j in range(8)])

# %% [markdown]
# ## 4. The two side by side
#
# `viz.pe_comparison` draws both with one colour scale (64 positions, 64 dimensions). **Look at**
# the left panel: neighbouring columns differ (sine, then cosine), fast stripes on the left,
# slow ones on the right. On the right panel columns come in identical pairs, and the colours go
# further (the sum reaches ±√2).

# %%
fig = viz.pe_comparison(F.sinusoidal_positional_encoding(64, 64), F.seed_positional_encoding(64, 64))

# %% [markdown]
# ## 5. sin + cos is just a shifted sine
#
# $$\sin\theta + \cos\theta = \sqrt2\,\sin\!\left(\theta + \frac{\pi}{4}\right)$$
#
# So the article's encoding keeps, for each frequency, one shifted sine: one number where the
# paper keeps two. **Look at** the check and the largest value, √2 ≈ 1.414.

# %%
theta = np.linspace(0, 20, 1001)
assert np.allclose(np.sin(theta) + np.cos(theta), np.sqrt(2) * np.sin(theta + np.pi / 4))
print("largest value of the article's PE:", F.seed_positional_encoding(10000, 64, dtype=np.float64).max(),
      "  sqrt(2) =", np.sqrt(2))


# %% [markdown]
# ## 6. The rotation property: why the (sin, cos) pair
#
# By the angle-addition formulas, one pair at frequency ω moves from position p to p + k by a
# rotation that depends on k only:
#
# $$\begin{pmatrix}\sin\omega(p+k)\\ \cos\omega(p+k)\end{pmatrix}
#   = \begin{pmatrix}\cos\omega k & \sin\omega k\\ -\sin\omega k & \cos\omega k\end{pmatrix}
#     \begin{pmatrix}\sin\omega p\\ \cos\omega p\end{pmatrix}$$
#
# Stack one such 2×2 block per pair into a block-diagonal matrix $M_k$ and
# $PE[p + k] = M_k\,PE[p]$ **for every p**. A linear layer can therefore learn "the token k
# places back" once, for all positions; that is the reason the paper gives for choosing
# sinusoids. **Look at** the error: rounding level, about 1e-15.

# %%
def shift_matrix(k, D):
    """M_k (D, D): one 2x2 rotation by omega_i * k per (sin, cos) pair, so PE[p + k] = M_k @ PE[p]."""
    M = np.zeros((D, D))
    for i in range(D // 2):
        a = k / 10000 ** (2 * i / D)                       # omega_i * k
        M[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]
    return M

for k in (1, 2, 5, 20):
    error = np.abs(PE[k:] - PE[:-k] @ shift_matrix(k, D).T).max()    # rows are positions: PE @ M^T
    print(f"k = {k:2d}: max |PE[p+k] - M_k PE[p]| over all p = {error:.1e}")
    assert error < 1e-12

# %% [markdown]
# Is there *any* fixed matrix that shifts the article's encoding? Give it the best chance: fit the
# best linear map $A$ with $PE[p+k] \approx A\,PE[p]$ over all 64 positions by least squares
# (`np.linalg.lstsq`), and measure what is left. The same fit on the correct encoding is the
# control. **Look at** the residuals: about 1e-15 for the correct encoding, above 1 for the
# article's, whose values only range over ±1.41.

# %%
rows = []
for k in (1, 3):
    for name, P in (("correct", PE), ("article's", PE_seed)):
        A, *_ = np.linalg.lstsq(P[:-k], P[k:], rcond=None)        # P[:-k] @ A ~ P[k:]
        rows.append([name, k, np.abs(P[:-k] @ A - P[k:]).max()])
viz.table([r[1:] for r in rows], [r[0] for r in rows], ["k", "largest residual"], fmt="{:.2g}")
assert rows[0][2] < 1e-10 and rows[2][2] < 1e-10
assert rows[1][2] > 0.5 and rows[3][2] > 0.5

# %% [markdown]
# Why it must fail: per frequency the article keeps $s = \sqrt2\sin(\theta + \pi/4)$. The next
# value $s' = \sqrt2\sin(\theta + \omega k + \pi/4)$ also depends on $\cos\theta$, which was thrown
# away: the same $s$ comes from a rising and a falling point of the wave, which move to different
# $s'$. **Look at** one pair of columns (2, 3) over 64 positions: the correct encoding walks round
# a circle, the same angle at every step; the article's points sit on the diagonal (the two
# columns are equal) and run back and forth along it. From the same point the next step sometimes
# goes up and sometimes down, which no fixed matrix can do.

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), layout="constrained")
for ax, P, title in ((axes[0], PE, "correct: (sin, cos) pair 1"), (axes[1], PE_seed, "article's: columns 2 and 3")):
    ax.plot(P[:, 2], P[:, 3], "o-", ms=3, lw=0.6)
    ax.plot(P[0, 2], P[0, 3], "o", ms=7, color="tab:red", label="position 0")
    ax.plot(P[1, 2], P[1, 3], "s", ms=7, color="tab:orange", label="position 1")
    ax.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), aspect="equal", title=title, xlabel="column 2", ylabel="column 3")
    ax.grid(alpha=0.3)
axes[1].legend(loc="lower right", fontsize=8);

# %% [markdown]
# A consequence you can see in attention scores: with the correct encoding the dot product
# $PE[p] \cdot PE[p+k] = \sum_i \cos(\omega_i k)$ depends on the offset k only, not on where you
# are in the sentence. **Look at** the spread over p: zero for the correct encoding, large for
# the article's.

# %%
k = 3
for name, P in (("correct", PE), ("article's", PE_seed)):
    dots = (P[:-k] * P[k:]).sum(axis=1)                        # PE[p] . PE[p+k] for every p
    print(f"{name:10s} PE[p].PE[p+{k}]: min {dots.min():+.3f}, max {dots.max():+.3f}")
dots = (PE[:-k] * PE[k:]).sum(axis=1)
assert np.allclose(dots, np.cos(k / 10000 ** (2 * np.arange(D // 2) / D)).sum())

# %% [markdown]
# ## 7. What PE adds to the article's toy vectors (errata W1)
#
# The toy vectors have D = 3, so the encoding has one (sin, cos) pair at ω = 1 and a lone sine at
# $\omega = 10000^{-2/3} \approx 0.0022$, which barely moves over four positions. The models scale
# the embedding by $\sqrt D$ before adding PE (notebook 5); the article does not, and neither do we
# here, so that its numbers stay recognisable. **Look at** the last three columns: the true
# input of attention for sentence 1.

# %%
PE3 = F.sinusoidal_positional_encoding(len(words), 3, dtype=np.float64)   # (T, 3)
both = np.hstack([X, PE3, X + PE3])
viz.table(both, [f"{p} {w}" for p, w in enumerate(words)],
      ["x0", "x1", "x2", "PE0 = sin", "PE1 = cos", "PE2 = sin", "x0+PE0", "x1+PE1", "x2+PE2"])

# %% [markdown]
# The article's section 4.3 step 2 (位置编码 "positional encoding") prints instead:
#
# ```
# 文本1：[0.1, 0.2, 0.3] + [0.7, 0.8, 0.9]
# 有趣：[0.4, 0.5, 0.6] + [1.0, 1.1, 1.2]
# 喜欢：[0.7, 0.8, 0.9] + [1.0, 1.1, 1.2]
# 阅读：[0.1, 0.2, 0.3] + [1.0, 1.1, 1.2]
# 文章：[0.4, 0.5, 0.6] + [1.0, 1.1, 1.2]
# 无聊：[-1.0, -1.1, -1.2] + [1.0, 1.1, 1.2]
# ```
#
# Whose vectors are these? **Look at** the table: every number is one of the toy *word* vectors.
# The "encoding" added to five rows is 文章's vector; the row labelled 有趣 starts with 喜欢's
# vector, 阅读's with 有趣's; and 无聊 + "PE" is exactly zero.

# %%
printed = [("文本1", (0.1, 0.2, 0.3), (0.7, 0.8, 0.9)),
           ("有趣", (0.4, 0.5, 0.6), (1.0, 1.1, 1.2)),
           ("喜欢", (0.7, 0.8, 0.9), (1.0, 1.1, 1.2)),
           ("阅读", (0.1, 0.2, 0.3), (1.0, 1.1, 1.2)),
           ("文章", (0.4, 0.5, 0.6), (1.0, 1.1, 1.2)),
           ("无聊", (-1.0, -1.1, -1.2), (1.0, 1.1, 1.2))]

def whose(v):
    return next((w for w, u in SEED_WORD_VECTORS.items() if np.allclose(u, v)), "(none)")

def vec(v):
    return "[" + ", ".join(f"{c:.1f}" for c in v) + "]"

viz.table([[vec(a), whose(a), vec(b), whose(b), vec(np.add(a, b))] for _, a, b in printed],
      [label for label, _, _ in printed],
      ["first vector", "= vector of", 'added "PE"', "= vector of", "sum"])
assert all(whose(b) == "文章" for _, _, b in printed[1:])
assert np.allclose(np.add(printed[-1][1], printed[-1][2]), 0)

# %% [markdown]
# No positional encoding can produce `[1.0, 1.1, 1.2]`: sines and cosines never exceed 1, and the
# article's own sin + cos formula gives equal values in dimensions 0 and 1 (section 3). And a
# position signal cannot be the same for every position, or it would carry no position at all.

# %%
added = np.array([b for _, _, b in printed[1:]])
assert np.abs(added).max() > 1                       # impossible for sin / cos
assert not np.isclose(added[0, 0], added[0, 1])      # impossible for the article's sin + cos (columns 0 = 1)
assert (added == added[0]).all()                     # the same "position signal" at every position
print("the article's added vectors exceed 1, have different columns 0 and 1, and are all equal: no PE")

# %% [markdown]
# ## 8. Odd D works
#
# With an odd width there are ⌈D/2⌉ sines and ⌊D/2⌋ cosines: the last column is a sine with no
# cosine partner (D = 3 above). The pairs still rotate exactly; only the lone last sine cannot be
# shifted exactly by a linear map, because its cosine partner is missing (one reason real models
# use an even D). **Look at** the checks for D = 5.

# %%
P5 = F.sinusoidal_positional_encoding(64, 5, dtype=np.float64)    # (64, 5)
print("shape", P5.shape)
assert np.allclose(P5[:, 4], np.sin(np.arange(64) / 10000 ** (4 / 5)))   # the lone last sine
M = shift_matrix(3, 5)[:4, :4]                                           # the two full pairs
error = np.abs(P5[3:, :4] - P5[:-3, :4] @ M.T).max()
print(f"pairs still rotate: max error {error:.1e}")
assert error < 1e-12

# %% [markdown]
# ---
# > **What the article got wrong here**
# >
# > * **E1** — The formula adds sin and cos into one number and calls `i` the word index. Correct:
# >   sine in the even dimensions, cosine in the odd ones, with `i` counting pairs of dimensions
# >   (Vaswani et al. 2017, §3.5). The sum equals $\sqrt2\sin(\theta + \pi/4)$: half the columns are
# >   duplicates, the range grows to ±√2, no fixed linear map takes position p to p + k (residual
# >   above 1 instead of 1e-15), and dot products between positions depend on where they are, not
# >   only on their distance.
# > * **W1** — The numbers printed for the encoding step add other *words'* vectors: the "encoding" is
# >   文章's vector, and most rows start with the vector of a word other than their label. No formula
# >   produces them; section 7 shows the true numbers.
# > * **C3** — The article's code has no positional encoding at all; its only position information
# >   is the one-hot "embedding" of notebook 1, which in turn has no word information.
# >
# > Next, notebook 3: attention on these vectors.

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3 · Scaled dot-product attention
#
# Attention is how a Transformer lets each token gather information from the others: every token
# asks a question (its *query*), every token offers a label (its *key*) and a content (its
# *value*), and each token's output is an average of the values, weighted by how well its query
# matches each key. The article states the equation correctly, but the numbers it prints for this
# step (errata **W2**) are not attention weights.
#
# You will learn:
#
# 1. the equation, next to `functional.scaled_dot_product_attention`;
# 2. every step for the article's sentence 1 with its own toy vectors + PE: scores, scaling,
#    softmax, weights, output;
# 3. why the weights are a T×T matrix whose rows sum to 1, unlike the article's;
# 4. why the scores are divided by $\sqrt{d_k}$ (the softmax saturates without it, and its gradient vanishes);
# 5. padding and causal masks, and what happens to a query that may attend to nothing.

# %%
from numpy_transformer import viz
viz.notebook_setup()

# %%
import matplotlib.pyplot as plt
import numpy as np

from numpy_transformer import functional as F
from numpy_transformer.worked_example import SEED_PRINTED_ATTENTION, toy_attention, toy_embeddings, toy_words

# %% [markdown]
# ## 1. The equation
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right) V$$
#
# | symbol | shape | meaning |
# |---|---|---|
# | $Q$ | (Tq, d_k) | one query per token that asks |
# | $K$ | (Tk, d_k) | one key per token that can be looked at |
# | $V$ | (Tk, d_v) | one value per token: what is passed on |
# | $M$ | (Tq, Tk) | 0 where attending is allowed, $-\infty$ where masked (section 6) |
# | weights | (Tq, Tk) | row i: how query i spreads its attention; each row sums to 1 |
# | output | (Tq, d_v) | row i: the weighted average of the values for query i |
#
# The article prints this in sections 1.3, 3.2 and 4.1, correctly. In our code it is
# `functional.scaled_dot_product_attention(q, k, v, mask)`, which returns the output, the weights
# (for plotting) and a cache for the backward pass.
#
# ## 2. The input: the article's vectors for sentence 1, plus positions
#
# From notebooks 1 and 2: the four toy words of sentence 1, their vectors exactly as printed,
# plus the sinusoidal encoding for D = 3.

# %%
words = toy_words(0)                                           # ['有趣', '文章', '喜欢', '阅读']
T = len(words)
X = toy_embeddings(words) + F.sinusoidal_positional_encoding(T, 3, dtype=np.float64)   # (T, 3)
viz.table(X, words, ["dim 0", "dim 1", "dim 2"])

# %% [markdown]
# Where do $Q$, $K$ and $V$ come from? In a real layer, from three learned matrices:
# $Q = XW^Q$, $K = XW^K$, $V = XW^V$ (notebook 4). The article's example has no such matrices,
# so, as `worked_example.toy_attention` does, we take $Q = K = V = X$: then every number below
# follows from the article's own vectors and the formula alone.

# %%
Q = K = V = X
d_k = Q.shape[-1]

# %% [markdown]
# ## 3. Step by step
#
# **3a. Scores** $S = QK^\top$: entry (i, j) is the dot product of word i's query with word j's
# key, a similarity. **Look at** the 文章 column: 文章 has the longest vector (plus its position),
# so every word's query matches it most.

# %%
scores = Q @ K.T                                   # (T, 3) @ (3, T) -> (T, T)
viz.table(scores, [f"q: {w}" for w in words], [f"k: {w}" for w in words])

# %% [markdown]
# **3b. Scaling** by $1/\sqrt{d_k} = 1/\sqrt3$ (section 5 explains why).

# %%
scaled = scores / np.sqrt(d_k)                     # (T, T)
viz.table(scaled, [f"q: {w}" for w in words], [f"k: {w}" for w in words])

# %% [markdown]
# **3c. Softmax** over each row turns scores into weights:
#
# $$w_{ij} = \frac{e^{s_{ij}}}{\sum_{j'} e^{s_{ij'}}}$$
#
# `functional.softmax` subtracts each row's maximum first (it cancels, and keeps `exp` from
# overflowing). **Look at** the last column: every row sums to 1. There is one weight per *token*,
# four per row.

# %%
weights, _ = F.softmax(scaled, axis=-1)            # (T, T)
viz.table(np.hstack([weights, weights.sum(axis=1, keepdims=True)]),
      [f"q: {w}" for w in words], [f"k: {w}" for w in words] + ["row sum"])
assert np.allclose(weights.sum(axis=1), 1.0) and (weights > 0).all()

# %% [markdown]
# **3d. Output** $= WV$: each output row is a weighted average of the value rows. **Look at**
# the 文章 row: with 84% of its weight on itself, its output stays close to its own vector.

# %%
out = weights @ V                                  # (T, T) @ (T, 3) -> (T, 3)
viz.table(out, words, ["dim 0", "dim 1", "dim 2"])

# %% [markdown]
# **3e. The library does the same.** One call to `functional.scaled_dot_product_attention`, and
# `worked_example.toy_attention` (which the CLI's `demo` prints), give the same numbers:

# %%
out_f, weights_f, _ = F.scaled_dot_product_attention(Q, K, V)
out_toy, weights_toy = toy_attention(X)
assert np.allclose(out_f, out) and np.allclose(weights_f, weights)
assert np.allclose(out_toy, out) and np.allclose(weights_toy, weights)
print("the hand computation, functional.scaled_dot_product_attention and worked_example.toy_attention agree")

# %% [markdown]
# The weights as a picture (`viz.attention_map`): row = the word that attends, column = the
# word attended to. **Look at** the bright 文章 column.

# %%
fig = viz.attention_map(weights, words, title="sentence 1, Q = K = V = toy vectors + PE")

# %% [markdown]
# ## 4. The article's "attention weights" (errata W2)
#
# Section 4.3 step 3 (自注意力机制 "self-attention") prints:
#
# ```
# 有趣：[0.8, 0.6, 0.5]
# 喜欢：[0.6, 0.8, 0.5]
# 阅读：[0.5, 0.6, 0.8]
# 文章：[0.6, 0.6, 0.5]
# 无聊：[0.5, 0.5, 0.5]
# ```
#
# **Look at** the row sums and the lengths next to ours.

# %%
printed = np.array(list(SEED_PRINTED_ATTENTION.values()))        # (5, 3)
viz.table(np.hstack([printed, printed.sum(axis=1, keepdims=True)]), list(SEED_PRINTED_ATTENTION),
      ["w0", "w1", "w2", "row sum"], fmt="{:.1f}")
print("article's weights:", printed.shape, "  true weights for sentence 1:", weights.shape)
assert not np.allclose(printed.sum(axis=1), 1.0)


# %% [markdown]
# Three things are wrong with them:
#
# * **3 numbers per word**: that is the embedding size, not the number of tokens. A weight says
#   how much word i draws on word j, so there is one per token: a T×T matrix.
# * **The rows do not sum to 1** (1.5 to 1.9), so they are not the output of a softmax.
# * **A row for 无聊**, which is not in sentence 1: the two sentences are processed separately
#   and never attend to each other (in a batch, each sentence has its own T×T matrix).
#
# ## 5. Why divide by $\sqrt{d_k}$
#
# If the components of $q$ and $k$ are independent with mean 0 and variance 1, the score
# $q \cdot k = \sum_{i=1}^{d_k} q_i k_i$ has variance $d_k$: standard deviation 8 for $d_k = 64$.
# A softmax over numbers that far apart is nearly one-hot, and its Jacobian
# $\partial w / \partial s = \mathrm{diag}(w) - ww^\top$ is then nearly zero: the gradient that
# reaches the scores vanishes and the queries and keys stop learning. Dividing by $\sqrt{d_k}$
# brings the variance back to 1 for every width (Vaswani et al. 2017, §3.2.1).
#
# The experiment: 1000 random queries, each against T = 16 random keys, for widths 1 to 256,
# with and without the scaling. For each we measure the scores' variance, the largest weight in a
# row (median over queries), the entropy of a row (log 16 ≈ 2.77 for uniform weights, 0 for
# one-hot) and how often the softmax Jacobian (computed with `functional.softmax_backward`) is
# nearly zero: its size is about 0.3 for a well-spread row, and below 0.01 the row barely learns.

# %%
def softmax_statistics(d_k, scale, n=1000, T=16, seed=0):
    """Statistics of softmax(q.k) over T random keys, for n random queries of width d_k."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, 1, d_k))                      # n queries
    k = rng.standard_normal((n, T, d_k))                      # T keys for each query
    scores = (q @ k.swapaxes(-1, -2))[:, 0]                   # (n, 1, d_k) @ (n, d_k, T) -> (n, T)
    if scale:
        scores = scores / np.sqrt(d_k)
    w, _ = F.softmax(scores)                                  # (n, T)
    entropy = -(w * np.log(np.maximum(w, 1e-300))).sum(axis=-1)
    # The Jacobian dw/ds of every row: softmax_backward applied to each unit upstream gradient.
    jacobian = F.softmax_backward(np.eye(T)[None], (w[:, None, :], -1))    # (n, T, T)
    return {"score variance": scores.var(), "median largest weight": np.median(w.max(axis=-1)),
            "mean entropy": entropy.mean(),
            "share of rows with |Jacobian| < 0.01": np.mean(np.linalg.norm(jacobian, axis=(1, 2)) < 0.01)}

widths = [1, 2, 4, 8, 16, 32, 64, 128, 256]
stats = {scale: [softmax_statistics(d, scale) for d in widths] for scale in (False, True)}
names = list(stats[True][0])
i64 = widths.index(64)
viz.table([[stats[False][i64][m] for m in names], [stats[True][i64][m] for m in names]],
      ["d_k = 64, unscaled: softmax(q·k)", "d_k = 64, scaled: softmax(q·k / 8)"], names)

# %% [markdown]
# **Look at** the table: without scaling, at $d_k = 64$, the typical row puts over 90% of its
# weight on one key, the entropy has collapsed, and more than a quarter of the rows pass back almost
# no gradient; with scaling, none do, and all three numbers stay where they are at $d_k = 1$. The plot
# shows the whole range of widths.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
for ax, name in zip(axes, names[1:]):
    for scale, style in ((False, "o-"), (True, "s--")):
        ax.plot(widths, [s[name] for s in stats[scale]], style, label="q·k / √d_k" if scale else "q·k (unscaled)")
    ax.set(xscale="log", xlabel="d_k", title=name)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.grid(alpha=0.3)
axes[1].axhline(np.log(16), color="grey", lw=0.8, ls=":", label="uniform weights: log 16")
axes[0].legend(fontsize=9)
axes[1].legend(fontsize=9);

# %%
unscaled, scaled64 = stats[False][i64], stats[True][i64]
assert unscaled["median largest weight"] > 0.9 and scaled64["median largest weight"] < 0.5
assert scaled64["mean entropy"] > 2.0 > 1.0 > unscaled["mean entropy"]
assert unscaled["share of rows with |Jacobian| < 0.01"] > 0.2 and all(
    s["share of rows with |Jacobian| < 0.01"] == 0 for s in stats[True])
assert all(abs(s["score variance"] - 1) < 0.1 for s in stats[True])

# %% [markdown]
# ## 6. Masks
#
# A mask says which keys each query may look at: boolean, **True = may attend** (the package's
# convention everywhere). Masked scores are replaced by $-10^9$ before the softmax, so their weight
# is 0. Two kinds:
#
# * a **padding mask** hides the `[PAD]` tokens that fill a batch up to its longest text, as keys,
#   from every query;
# * a **causal mask** lets query t see keys 0…t only, so a text generator cannot peek at the
#   token it must predict (errata E6).
#
# They combine with `&`. A batch of the two sentences in toy words: sentence 2 has only 文章 and
# 无聊, so it is padded with two `[PAD]` rows (zeros) to length 4.

# %%
words2 = toy_words(1)                                              # ['文章', '无聊']
X2 = toy_embeddings(words2) + F.sinusoidal_positional_encoding(len(words2), 3, dtype=np.float64)
batch = np.zeros((2, T, 3))                                        # (B, T, D)
batch[0], batch[1, :len(words2)] = X, X2
valid = np.array([[True] * T, [True] * len(words2) + [False] * (T - len(words2))])   # (B, T)
tokens2 = words2 + ["[PAD]"] * (T - len(words2))
padding = F.padding_mask(valid)                                    # (B, 1, 1, T): hides padded keys
causal = F.causal_mask(T)                                          # (T, T): lower triangle
print("padding mask", padding.shape, "  causal mask", causal.shape, "  combined", (causal & padding).shape)

# %% [markdown]
# `viz.mask_image` draws them for sentence 2 (blue = may attend). **Look at** the columns of the
# two `[PAD]` keys in the padding mask: grey in every row. The causal mask is the lower triangle;
# the combination is both.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
for ax, m, title in ((axes[0], np.broadcast_to(padding[1, 0], (T, T)), "padding"),
                     (axes[1], causal, "causal"), (axes[2], (causal & padding)[1, 0], "causal & padding")):
    viz.mask_image(np.array(m), tokens2, title=title, ax=ax)
for ax in axes[:2]:
    ax.get_legend().remove()

# %% [markdown]
# Attention with the padding mask. The inputs get a head axis, (B, 1, T, D), so that the
# (B, 1, 1, T) mask broadcasts over it. **Look at** the weights of sentence 2: zero in the `[PAD]`
# columns, and the rows of its two real words are exactly what sentence 2 gives alone, without
# any padding. (The `[PAD]` *queries* still attend to the real words; their outputs are never used:
# pooling and the loss skip them, notebook 5.)

# %%
q = batch[:, None]                                                 # (B, 1, T, D): one head
out_b, w_b, _ = F.scaled_dot_product_attention(q, q, q, padding)   # (B, 1, T, D), (B, 1, T, T)
viz.table(w_b[1, 0], [f"q: {w}" for w in tokens2], [f"k: {w}" for w in tokens2])
out_alone, w_alone = toy_attention(X2)
assert (w_b[1, 0][:, ~valid[1]] == 0).all()
assert np.allclose(w_b[1, 0, :2, :2], w_alone) and np.allclose(out_b[1, 0, :2], out_alone)
assert np.allclose(out_b[0, 0], out)                                # sentence 1 is not padded: unchanged

# %% [markdown]
# Causal attention on sentence 1. **Look at** the upper triangle: all zeros; the first word can
# only attend to itself (weight 1), and every row still sums to 1.

# %%
out_c, w_c, _ = F.scaled_dot_product_attention(X, X, X, causal)
viz.table(w_c, [f"q: {w}" for w in words], [f"k: {w}" for w in words])
assert np.allclose(np.triu(w_c, k=1), 0) and np.allclose(w_c.sum(axis=1), 1) and w_c[0, 0] == 1

# %% [markdown]
# ## 7. A query with nothing to attend to
#
# Can a whole row be masked? Yes: pad sentence 2 on the *left* and use a causal mask. Positions 0
# and 1 are `[PAD]`, and may only look at keys ≤ themselves, which are all padding. What should
# their weights be? With $-10^9$ alone the softmax of an all-equal row is uniform, $1/T$ each: the
# padding query would average tokens it is not allowed to see. With $-\infty$ it is worse,
# $-\infty - (-\infty)$ = NaN, and one NaN spreads through everything after it. Our function sets
# such rows to zero weights and a zero output (design rule: "a query row with nothing to attend
# to must give zeros, never NaN"). **Look at** the first two rows.

# %%
left = np.zeros((T, 3))                                            # [PAD] [PAD] 文章 无聊
left[2:] = toy_embeddings(words2) + F.sinusoidal_positional_encoding(T, 3, dtype=np.float64)[2:]
valid_left = np.array([False, False, True, True])
mask = causal & valid_left[None, :]                                # (T, T); rows 0 and 1 are all False
out_l, w_l, _ = F.scaled_dot_product_attention(left, left, left, mask)
names_left = ["[PAD]", "[PAD]"] + words2
viz.table(np.hstack([w_l, out_l]), [f"q: {w}" for w in names_left],
      [f"k: {w}" for w in names_left] + ["out 0", "out 1", "out 2"])
assert (w_l[:2] == 0).all() and (out_l[:2] == 0).all() and np.isfinite(out_l).all()

# %% [markdown]
# The same rows computed naively, with $-\infty$ written into the masked scores:

# %%
naive = np.where(mask, left @ left.T / np.sqrt(3), -np.inf)
with np.errstate(invalid="ignore"):                               # NumPy would warn about inf - inf
    e = np.exp(naive - naive.max(axis=-1, keepdims=True))
    naive_weights = e / e.sum(axis=-1, keepdims=True)
print(naive_weights[:2])
assert np.isnan(naive_weights[:2]).all()

# %% [markdown]
# ---
# > **What the article got wrong here**
# >
# > * **W2** — The printed "attention weights" have 3 entries per word (the embedding size), rows that
# >   sum to 1.5–1.9, and a row for 无聊, which is not in sentence 1. Attention weights are a T×T
# >   matrix per sentence whose rows sum to 1; section 3 computes them from the article's own vectors.
# > * The equation itself is right (sections 1.3, 3.2, 4.1), including the $\sqrt{d_k}$, which the
# >   article names but never explains; section 5 shows what it prevents.
# > * **Masks** are never mentioned. The article pads its sequences (section 5, 序列填充 "sequence
# >   padding") but never hides the padding from attention, and its text-generation steps (appendix,
# >   question 2) never mention the causal mask that a generator needs (errata **E6**).
# >
# > Next, notebook 4: several heads at once, with learned projections.

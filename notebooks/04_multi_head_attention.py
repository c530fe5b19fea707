# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4 · Multi-head attention
#
# One attention head gives each token *one* weighted average of the others, so different kinds of
# relation (the next character, the object of 喜欢, the words that carry the sentiment) compete
# for the same weights. Multi-head attention runs H smaller heads side by side, each with its own
# learned projections into its own $D_h = D/H$ dimensions, and mixes their outputs with one more
# matrix, $W^O$.
#
# You will learn:
#
# 1. the equations, and how one D×D matrix holds the projections of all heads;
# 2. splitting into heads with `functional.split_heads`, shape by shape;
# 3. `nn.MultiHeadAttention` computed by hand, step by step, and checked against the module;
# 4. what the per-head attention maps look like (for a freshly initialised model);
# 5. the output projection $W^O$ as a sum over heads;
# 6. fused versus separate Q, K, V projections, and the parameter count, $4D^2 + 4D$ for any H.

# %%
from numpy_transformer import viz
viz.notebook_setup()

# %%
import numpy as np

from numpy_transformer import functional as F, nn
from numpy_transformer.data import SEED_SENTENCES
from numpy_transformer.tokenizer import CharTokenizer

# %% [markdown]
# ## 1. The equations (Vaswani et al. 2017, §3.2.2)
#
# $$\mathrm{MultiHead}(X) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_H)\,W^O + b^O,
#   \qquad \mathrm{head}_h = \mathrm{Attention}(XW^Q_h,\ XW^K_h,\ XW^V_h)$$
#
# with $W^Q_h, W^K_h, W^V_h \in \mathbb{R}^{D \times D_h}$, $D_h = D/H$, and
# $W^O \in \mathbb{R}^{D \times D}$. In code the H matrices $W^Q_h$ sit side by side as one D×D
# matrix $W^Q = [W^Q_1 | \dots | W^Q_H]$, so *one* matrix product computes the queries of every
# head, and a reshape cuts them apart. (Biases $b^Q, b^K, b^V$ are added as usual.)
#
# ## 2. The input: sentence 1, character by character
#
# The characters of sentence 1 with `[CLS]` (T = 19), embedded with D = 16 and scaled by
# $\sqrt D$ as the models do, plus the positional encoding. H = 4 heads of $D_h = 4$.

# %%
texts = [text for text, _ in SEED_SENTENCES]
tok = CharTokenizer.build(texts)
ids, _ = tok.encode_batch(texts[:1], max_len=32)                # (1, T)
tokens = [tok.id_to_token(int(i)) for i in ids[0]]
B, T = ids.shape
D, H = 16, 4
Dh = D // H
embed = nn.Embedding(tok.vocab_size, D, rng=np.random.default_rng(0))
x = embed(ids) * D ** 0.5 + F.sinusoidal_positional_encoding(T, D)     # (B, T, D); a Python float keeps float32
print("tokens:", " ".join(tokens))
print("x", x.shape, x.dtype)

# %% [markdown]
# ## 3. Splitting into heads
#
# `functional.split_heads` reshapes (B, T, D) to (B, T, H, $D_h$) and moves the head axis forward:
# (B, H, T, $D_h$). Head h gets dimensions $hD_h, \dots, (h+1)D_h - 1$ of every token.
# `merge_heads` undoes it. **Look at** the shapes; the checks confirm which slice each head gets.

# %%
xs = F.split_heads(x, H)                                        # (B, T, D) -> (B, H, T, Dh)
print("x", x.shape, "-> split_heads ->", xs.shape, "-> merge_heads ->", F.merge_heads(xs).shape)
for h in range(H):
    assert np.array_equal(xs[0, h], x[0, :, h * Dh:(h + 1) * Dh])
assert np.array_equal(F.merge_heads(xs), x)

# %% [markdown]
# The number of heads must divide D; otherwise the error says so:

# %%
try:
    F.split_heads(x, 3)
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# ## 4. Multi-head attention by hand
#
# `nn.MultiHeadAttention(D, H)` keeps $[W^Q | W^K | W^V]$ as one (D, 3D) matrix `W_qkv` (section 7
# explains why) and $W^O$ as `W_o`. We build one with a fixed seed and compute its forward pass
# ourselves, one line per step of the equations:

# %%
mha = nn.MultiHeadAttention(D, H, rng=np.random.default_rng(0))
y = mha(x)                                                             # (B, T, D)

qkv = x @ mha.W_qkv.data + mha.b_qkv.data                             # 1. (B, T, D) @ (D, 3D) -> (B, T, 3D)
q, k, v = np.split(qkv, 3, axis=-1)                                    #    3 x (B, T, D): columns [q | k | v]
q, k, v = (F.split_heads(a, H) for a in (q, k, v))                    # 2. 3 x (B, H, T, Dh)
heads, weights, _ = F.scaled_dot_product_attention(q, k, v)           # 3. every head at once: (B, H, T, Dh)
y_by_hand = F.merge_heads(heads) @ mha.W_o.data + mha.b_o.data         # 4. (B, T, D) @ (D, D) -> (B, T, D)

print("q, k, v", q.shape, "  weights", weights.shape, "  heads", heads.shape, "  y", y_by_hand.shape)
assert np.allclose(y_by_hand, y, atol=1e-5)
assert np.allclose(weights, mha.last_attention)

# %% [markdown]
# Step 3 is one call for all heads: `scaled_dot_product_attention` works on the last two axes
# and treats (B, H) as a batch, so there is no Python loop over heads. A loop gives the same
# numbers:

# %%
for h in range(H):
    head_h, _, _ = F.scaled_dot_product_attention(q[:, h], k[:, h], v[:, h])    # (B, T, Dh)
    assert np.allclose(head_h, heads[:, h], atol=1e-6)
print("a loop over the", H, "heads gives the same heads")

# %% [markdown]
# ## 5. One attention map per head
#
# The module keeps its last weights in `last_attention`, (B, H, T, T); `viz.attention_grid`
# draws one panel per head. The weights are random (nothing is trained here), so the patterns
# mean nothing yet. **Look at** how different the four heads are on the same input: each has its
# own $W^Q_h, W^K_h$, so each compares the tokens in its own way. Every row still sums to 1.
# (A *trained* model's maps are in `figures/attention_seed_sentence1.png`.)

# %%
assert np.allclose(mha.last_attention.sum(axis=-1), 1.0, atol=1e-6)
fig = viz.attention_grid(mha.last_attention[0][None], tokens, vmax="auto",    # (1 layer, H, T, T)
                         title="4 heads of a freshly initialised layer, sentence 1")

# %% [markdown]
# ## 6. The output projection $W^O$
#
# Concatenating the heads and multiplying by $W^O$ is the same as projecting each head with its own
# block of $D_h$ rows of $W^O$ and adding:
#
# $$\mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_H)\,W^O = \sum_{h=1}^{H} \mathrm{head}_h\, W^O_{[hD_h:(h+1)D_h,\ :]}$$
#
# So $W^O$ is where the heads' results meet: without it, each head's output would stay in its own
# $D_h$ slice of the model's width.

# %%
W_o = mha.W_o.data
summed = sum(heads[:, h] @ W_o[h * Dh:(h + 1) * Dh] for h in range(H)) + mha.b_o.data   # (B, T, D)
assert np.allclose(summed, y, atol=1e-5)
print("concat-then-project == sum of per-head projections")

# %% [markdown]
# ## 7. Fused or separate Q, K, V projections
#
# The paper draws three projections; `nn.MultiHeadAttention(fused_qkv=False)` keeps them apart as
# `W_q`, `W_k`, `W_v`. The default fuses them into one (D, 3D) matrix: one large matrix product
# instead of three smaller ones, which BLAS runs faster, with the same numbers. Copy the three
# matrices side by side into a fused layer and **look at** the checks: the same output, the same
# input gradient, and a `W_qkv` gradient that is the three gradients side by side.

# %%
separate = nn.MultiHeadAttention(D, H, fused_qkv=False, rng=np.random.default_rng(1))
fused = nn.MultiHeadAttention(D, H, rng=np.random.default_rng(2))
fused.W_qkv.data[...] = np.concatenate([separate.W_q.data, separate.W_k.data, separate.W_v.data], axis=1)
fused.b_qkv.data[...] = np.concatenate([separate.b_q.data, separate.b_k.data, separate.b_v.data])
fused.W_o.data[...], fused.b_o.data[...] = separate.W_o.data, separate.b_o.data

dout = np.random.default_rng(3).standard_normal(x.shape).astype(x.dtype)   # some upstream gradient
assert np.allclose(fused(x), separate(x), atol=1e-5)
assert np.allclose(fused.backward(dout), separate.backward(dout), atol=1e-5)
assert np.allclose(fused.W_qkv.grad,
                   np.concatenate([separate.W_q.grad, separate.W_k.grad, separate.W_v.grad], axis=1), atol=1e-5)
print("fused:   ", [(name, p.shape) for name, p in fused.named_parameters()])
print("separate:", [(name, p.shape) for name, p in separate.named_parameters()])

# %% [markdown]
# ## 8. How many parameters?
#
# $W^Q, W^K, W^V, W^O$ are four D×D matrices, plus four bias vectors of length D:
#
# $$4D^2 + 4D$$
#
# whatever H is: more heads means thinner heads, not more parameters. **Look at** each row of the
# table: constant across H. D = 512 is the paper's base model.

# %%
counts = {}
for d in (16, 64, 512):
    for h in (1, 2, 4, 8):
        n = nn.MultiHeadAttention(d, h, rng=np.random.default_rng(0)).num_parameters()
        assert n == 4 * d * d + 4 * d == nn.MultiHeadAttention(d, h, fused_qkv=False, rng=np.random.default_rng(0)).num_parameters()
        counts[d, h] = n
viz.table([[counts[d, h] for h in (1, 2, 4, 8)] + [4 * d * d + 4 * d] for d in (16, 64, 512)],
      [f"D = {d}" for d in (16, 64, 512)], ["H = 1", "H = 2", "H = 4", "H = 8", "4D² + 4D"], fmt="{:,}")

# %% [markdown]
# ---
# > **What the article got wrong here**
# >
# > * The prose is right: section 3.2 step 3 describes multi-head attention as 多个独立的自注意力机制
# >   ("several independent self-attention mechanisms"). But nothing in its worked example (4.3) has
# >   heads: the printed weights (**W2**, notebook 3) are one row of 3 numbers per word, where H heads
# >   give H matrices of T×T.
# > * Its code calls `tf.keras.layers.MultiHeadAttention(num_heads=2, key_dim=100)` on the one-hot
# >   *position* vectors of notebook 1 (**C2**), with no positional encoding (**C3**): whatever the heads
# >   learn, they never see which characters are in the sentence.
# >
# > Next, notebook 5: the rest of the block (feed-forward, residuals, LayerNorm) and the classifier.

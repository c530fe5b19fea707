# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5 · The Transformer block, and a whole classifier
#
# Attention mixes information *between* tokens. A Transformer block adds a feed-forward network
# that works on each token on its own, and wraps both in residual connections and LayerNorm so
# that many blocks can be stacked. Then a classifier has to turn a whole sequence into one
# prediction. The article gets four of these pieces wrong (errata **E2**, **E3**, **E4**, **C4**).
#
# You will learn:
#
# 1. the feed-forward network: two layers, not the article's one (E3);
# 2. residual connections: what they keep;
# 3. LayerNorm, with $\sqrt{\sigma^2 + \epsilon}$ (not $\sigma + \epsilon$), checked against numerical gradients;
# 4. post-LN, pre-LN and the article's "attention + feed-forward" sum (E2) on the same input, and
#    what happens to the output's statistics when they are stacked;
# 5. why a classifier must pool the sequence first (E4), and the shape bug of the article's code (C4);
# 6. a whole `TransformerClassifier` forward pass on the two sentences, by hand and by the model.

# %%
from numpy_transformer import viz
viz.notebook_setup()

# %%
import matplotlib.pyplot as plt
import numpy as np

from numpy_transformer import functional as F, nn
from numpy_transformer.data import SEED_SENTENCES
from numpy_transformer.gradcheck import check_gradients
from numpy_transformer.models import TransformerClassifier
from numpy_transformer.tokenizer import CharTokenizer

# %% [markdown]
# The input for the whole notebook: both sentences as characters, embedded with D = 32 (scaled
# by $\sqrt D$) plus the positional encoding, as the models do it. Shape (B, T, D) = (2, 19, 32);
# sentence 2 has one `[PAD]` at the end, so we keep its padding mask too.

# %%
texts = [text for text, _ in SEED_SENTENCES]
tok = CharTokenizer.build(texts)
ids, valid = tok.encode_batch(texts, max_len=32)                     # (B, T), (B, T)
B, T = ids.shape
D, H, d_ff = 32, 4, 4 * 32                                           # d_model, heads, F in the equations
embed = nn.Embedding(tok.vocab_size, D, rng=np.random.default_rng(0))
x = embed(ids) * D ** 0.5 + F.sinusoidal_positional_encoding(T, D)    # (B, T, D); a Python float keeps float32
attend = F.padding_mask(valid)                                       # (B, 1, 1, T)
print("x", x.shape, "  padding mask", attend.shape)

# %% [markdown]
# ## 1. The feed-forward network (errata E3)
#
# The article's section 4.1 writes
#
# $$\text{Feedforward}(x) = \text{ReLU}(\text{Linear}(x))$$
#
# one layer, although its own section 3.2 step 4 says 前馈网络由两个全连接层组成 ("the
# feed-forward network consists of two fully connected layers", ReLU after the first, linear after
# the second). The paper's (§3.3):
#
# $$\mathrm{FFN}(x) = \max(0,\ xW_1 + b_1)\,W_2 + b_2, \qquad W_1 \in \mathbb{R}^{D \times F},\ W_2 \in \mathbb{R}^{F \times D},\ F = 4D$$
#
# `nn.FeedForward(D, F)`; by hand with `functional.linear` and `functional.relu`:

# %%
ffn = nn.FeedForward(D, d_ff, rng=np.random.default_rng(1)).eval()
hidden, _ = F.linear(x, ffn.W1.data, ffn.b1.data)                  # (B, T, D) -> (B, T, F)
a, _ = F.relu(hidden)
y_ffn, _ = F.linear(a, ffn.W2.data, ffn.b2.data)                   # (B, T, F) -> (B, T, D)
print("x", x.shape, "-> hidden", hidden.shape, "-> FFN(x)", y_ffn.shape)
assert np.allclose(y_ffn, ffn(x), atol=1e-5)

# %% [markdown]
# *Position-wise*: the same two layers are applied to every token separately; tokens do not
# interact here (that is attention's job). Feeding one token alone gives the same result:

# %%
t = 5
assert np.allclose(ffn(x[:, t:t + 1]), ffn(x)[:, t:t + 1], atol=1e-6)
print("FFN of token", t, "alone == FFN of the whole sequence at token", t)
print("parameters:", ffn.num_parameters(), "= 2DF + F + D =", 2 * D * d_ff + d_ff + D)
assert ffn.num_parameters() == 2 * D * d_ff + d_ff + D

# %% [markdown]
# What the article's single layer loses: its last operation is a ReLU, so its output is never
# negative. The block *adds* the sub-layer's output to the token's vector (section 2), and an
# update that can only push features up cannot, for example, undo a feature. **Look at** the
# fractions of negative outputs.

# %%
one_layer = nn.Linear(D, D, rng=np.random.default_rng(2))
seed_ffn, _ = F.relu(one_layer(x))                                  # the article: ReLU(Linear(x))
print(f"negative outputs: article's one layer {np.mean(seed_ffn < 0):.0%},  two-layer FFN {np.mean(ffn(x) < 0):.0%}")
assert (seed_ffn >= 0).all() and (ffn(x) < 0).mean() > 0.2

# %% [markdown]
# ## 2. Residual connections
#
# Each sub-layer's output is *added* to its input, $y = x + f(x)$: the sub-layer learns a
# correction to the token's vector instead of a replacement. Two consequences, both checked below:
#
# * the token's own information passes through untouched (**look at** the cosine similarity of
#   each token's input and output: near 0 for attention alone, high with the residual);
# * in the backward pass the gradient reaches $x$ directly as well as through $f$:
#   $\partial L/\partial x = \partial L/\partial y + f'(x)^\top\,\partial L/\partial y$, the line
#   `dres + self.attn.backward(...)` in `nn.TransformerBlock.backward`.

# %%
attn = nn.MultiHeadAttention(D, H, rng=np.random.default_rng(3))

def mean_cosine(a, b):
    """Average over real tokens of cos(a_t, b_t)."""
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return cos[valid].mean()

f_x = attn(x, attend)
print(f"cos(x, MHA(x))     = {mean_cosine(x, f_x):+.2f}")
print(f"cos(x, x + MHA(x)) = {mean_cosine(x, x + f_x):+.2f}")
assert mean_cosine(x, x + f_x) > 0.5 > abs(mean_cosine(x, f_x))

# %%
lin = nn.Linear(4, 4, rng=np.random.default_rng(4), dtype=np.float64)
result = check_gradients(
    forward=lambda x: x + lin(x),                                   # y = x + f(x)
    backward=lambda dout, x: {"x": (lin(x), dout + lin.backward(dout))[1]},   # dx = dout + f'(x)^T dout
    inputs={"x": np.random.default_rng(5).standard_normal((3, 4))})
print(result["x"])
assert result["x"].ok

# %% [markdown]
# ## 3. LayerNorm (Ba et al. 2016)
#
# Each token's vector is normalised over its D features, then scaled and shifted by learned
# $\gamma, \beta$:
#
# $$\mu = \frac1D\sum_i x_i, \quad \sigma^2 = \frac1D\sum_i (x_i - \mu)^2, \quad
#   \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad y = \gamma \odot \hat x + \beta$$
#
# `functional.layernorm`, here by hand. **Look at** the statistics of the output: every token has
# mean 0 and variance 1 (γ = 1, β = 0 at initialisation).

# %%
ln = nn.LayerNorm(D)
mu = x.mean(axis=-1, keepdims=True)
var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
y_ln = (x - mu) / np.sqrt(var + ln.eps) * ln.gamma.data + ln.beta.data
assert np.allclose(y_ln, ln(x), atol=1e-5)
print(f"per token: mean within {np.abs(y_ln.mean(-1)).max():.1e} of 0, variance {y_ln.var(-1).min():.4f} .. {y_ln.var(-1).max():.4f}")
assert np.allclose(y_ln.mean(-1), 0, atol=1e-5) and np.allclose(y_ln.var(-1), 1, atol=1e-3)

# %% [markdown]
# The backward pass (`functional.layernorm_backward`) against numerical gradients, for $x$,
# $\gamma$ and $\beta$ in float64. **Look at** the worst relative errors: tiny.

# %%
rng = np.random.default_rng(6)
inputs = {"x": rng.standard_normal((2, 3, 5)), "gamma": rng.standard_normal(5), "beta": rng.standard_normal(5)}
results = check_gradients(
    forward=lambda x, gamma, beta: F.layernorm(x, gamma, beta)[0],
    backward=lambda dout, x, gamma, beta: dict(zip(("x", "gamma", "beta"),
                                                   F.layernorm_backward(dout, F.layernorm(x, gamma, beta)[1]))),
    inputs=inputs)
for r in results.values():
    print(r)
assert all(r.ok for r in results.values())

# %% [markdown]
# A common slip is to divide by $\sigma + \epsilon$ instead of $\sqrt{\sigma^2 + \epsilon}$. For
# ordinary vectors the two agree to about $10^{-5}$; for a nearly constant vector they do not.
# The same random vector at three scales: **look at** the last row, where the two versions differ
# by a factor of about 4. (The right one also shrinks such a vector instead of blowing its noise up
# to unit size: that is what $\epsilon$ inside the square root is for.)

# %%
eps = 1e-5
rows = []
for scale in (1.0, 1e-2, 1e-3):
    v = scale * np.random.default_rng(7).standard_normal(D)
    right = (v - v.mean()) / np.sqrt(v.var() + eps)
    slip = (v - v.mean()) / (v.std() + eps)
    rows.append([v.std(), np.abs(right).max(), np.abs(slip).max(), np.abs(slip / right).max()])
viz.table(rows, ["scale 1", "scale 1e-2", "scale 1e-3"],
      ["σ", "max |x̂|, √(σ²+ε)", "max |x̂|, σ+ε", "ratio"], fmt="{:.3g}")
assert rows[0][3] < 1.001 and rows[2][3] > 2

# %% [markdown]
# ## 4. Where the LayerNorm goes: post-LN, pre-LN, and the article's sum (errata E2)
#
# The article writes, in sections 1.3 and 4.1:
#
# $$\text{TransformerLayer}(X) = \text{MultiHeadAttention}(X) + \text{Feedforward}(X)$$
#
# with no residual and no normalisation. The real blocks (`nn.TransformerBlock(norm=...)`):
#
# | `norm=` | equations | used by |
# |---|---|---|
# | `"post"` | $H = \mathrm{LN}(X + \mathrm{MHA}(X)),\quad Y = \mathrm{LN}(H + \mathrm{FFN}(H))$ | the original Transformer |
# | `"pre"` | $H = X + \mathrm{MHA}(\mathrm{LN}(X)),\quad Y = H + \mathrm{FFN}(\mathrm{LN}(H))$ | GPT-2 and most models since (Xiong et al. 2020) |
# | `"parallel"` | $Y = X + \mathrm{MHA}(\mathrm{LN}(X)) + \mathrm{FFN}(\mathrm{LN}(X))$ | GPT-J, PaLM |
#
# The article's sum, read with a residual and a LayerNorm, *is* the parallel block; without them it
# is not a working layer. Three blocks built with the same seed share the same attention and
# feed-forward weights, so only the wiring differs. First, each block against its equations:

# %%
blocks = {norm: nn.TransformerBlock(D, H, d_ff, dropout=0.0, norm=norm, rng=np.random.default_rng(8)).eval()
          for norm in ("post", "pre", "parallel")}
assert all(np.array_equal(b.attn.W_qkv.data, blocks["post"].attn.W_qkv.data) for b in blocks.values())
outputs = {norm: block(x, attend) for norm, block in blocks.items()}

b = blocks["post"]
h = b.norm1(x + b.attn(x, attend))
assert np.allclose(outputs["post"], b.norm2(h + b.ffn(h)), atol=1e-4)
b = blocks["pre"]
h = x + b.attn(b.norm1(x), attend)
assert np.allclose(outputs["pre"], h + b.ffn(b.norm2(h)), atol=1e-4)
b = blocks["parallel"]
assert np.allclose(outputs["parallel"], x + b.attn(b.norm1(x), attend) + b.ffn(b.norm1(x)), atol=1e-4)
outputs["article's MHA(X) + FFN(X)"] = b.attn(x, attend) + b.ffn(x)
print("each block matches its equations")


# %% [markdown]
# The same input through each. **Look at** the columns: post-LN ends in a LayerNorm, so every token
# comes out with mean 0 and standard deviation 1; pre-LN and parallel leave the residual stream
# un-normalised (its scale grows a little) but keep each token close to its input (cosine around
# 0.7); the article's sum has dropped the input altogether: its output is unrelated to the token
# that went in (cosine near 0).

# %%
def statistics(y):
    real = y[valid]                                                 # (real tokens, D)
    return [real.mean(), real.std(axis=-1).mean(), np.abs(real).max(), mean_cosine(x, y)]

names = ["input x"] + list(outputs)
viz.table([statistics(x)] + [statistics(y) for y in outputs.values()], names,
      ["mean", "per-token std", "max |y|", "cos(x, y)"])
assert np.allclose(outputs["post"][valid].std(axis=-1), 1, atol=1e-3)
assert abs(mean_cosine(x, outputs["article's MHA(X) + FFN(X)"])) < 0.3 < mean_cosine(x, outputs["pre"])

# %% [markdown]
# Stack 12 blocks of each kind (fresh random weights, no training, five different seeds) and follow
# the per-token standard deviation of the output. **Look at** the curves: post-LN is pinned at 1.
# Pre-LN and parallel grow slowly, because each block adds an update computed from a normalised
# input, of bounded size (that is why `nn.TransformerEncoder` puts a final LayerNorm after them).
# The article's sum has no residual and no normalisation, so each block multiplies the scale by
# some factor of its own: the scale wanders further with every block, up or down, with nothing to
# hold it.

# %%
depth, seeds = 12, range(8, 13)
curves = {kind: [] for kind in ("post", "pre", "parallel", "article's sum")}
for kind in curves:
    for seed in seeds:
        rng = np.random.default_rng(seed)
        stack = [nn.TransformerBlock(D, H, d_ff, dropout=0.0, rng=rng,
                                     norm="parallel" if kind == "article's sum" else kind).eval()
                 for _ in range(depth)]
        h, curve = x, []
        for block in stack:
            h = block.attn(h, attend) + block.ffn(h) if kind == "article's sum" else block(h, attend)
            curve.append(h[valid].std(axis=-1).mean())
        curves[kind].append(curve)

fig, ax = plt.subplots(figsize=(6.5, 3.8))
for colour, (kind, runs) in zip(("tab:blue", "tab:green", "tab:orange", "tab:red"), curves.items()):
    for n, curve in enumerate(runs):
        ax.plot(range(1, depth + 1), curve, "-", color=colour, lw=1, alpha=0.7, label=kind if n == 0 else None)
ax.set(xlabel="number of blocks", ylabel="per-token std of the output", yscale="log")
ax.grid(alpha=0.3)
ax.legend();
final = {kind: np.mean([run[-1] for run in runs]) for kind, runs in curves.items()}
print("mean std after", depth, "blocks:", {kind: round(float(v), 2) for kind, v in final.items()})
assert np.allclose(curves["post"], 1, atol=1e-3)
assert final["pre"] > np.mean([run[0] for run in curves["pre"]]) and final["article's sum"] > 1.5 * final["pre"]

# %% [markdown]
# ## 5. Pooling for classification (errata E4, C4)
#
# The article's section 4.1 ends with $\text{Output}(X) = \text{Linear}(\text{TransformerLayer}(X))$,
# and its code with `Dense(units=2, activation='softmax')` on the (batch, sequence, 100) output of
# the attention layer. A linear layer acts on the last axis, so on a sequence it gives one
# prediction **per token**. **Look at** the shape: (B, T, 2), one "positive or negative" for each
# character.

# %%
encoder = nn.TransformerEncoder(2, D, H, d_ff, dropout=0.0, rng=np.random.default_rng(10)).eval()
states = encoder(x, attend)                                          # (B, T, D)
head = nn.Linear(D, 2, rng=np.random.default_rng(11))
per_token, _ = F.softmax(head(states))                               # (B, T, 2): the article's output
print("states", states.shape, "-> Dense(2, softmax) ->", per_token.shape)
viz.table(per_token[0, :8], [tok.id_to_token(int(i)) for i in ids[0, :8]], ["P(negative)", "P(positive)"])

# %% [markdown]
# (Only the first 8 tokens of sentence 1 are shown.) The labels the article fits
# against are `to_categorical([1, 0])`: shape (2, 2), one label per *sentence*. Per-token outputs and
# per-sentence labels do not fit together, and our loss says so (errata **C4**):

# %%
labels = np.array([label for _, label in SEED_SENTENCES])              # (B,) one label per sentence
try:
    F.cross_entropy(head(states), labels)
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# The fix is to **pool** the sequence into one vector per sentence before the output layer:
#
# * `pooling="cls"` (BERT): take the vector at position 0, the `[CLS]` token, which attention lets
#   gather the whole sentence;
# * `pooling="mean"`: average the real tokens only, $\sum_t m_t h_t / \sum_t m_t$ with $m$ the mask, so
#   padding never enters.
#
# Both give (B, D), and the linear layer then gives (B, 2):

# %%
cls = states[:, 0]                                                     # (B, D)
m = valid.astype(states.dtype)                                         # (B, T), 1 = real token
mean = (states * m[:, :, None]).sum(axis=1) / m.sum(axis=1, keepdims=True)   # (B, D)
print("cls pooling", cls.shape, "-> logits", head(cls).shape, "   mean pooling", mean.shape, "-> logits", head(mean).shape)

# %% [markdown]
# ## 6. A whole `TransformerClassifier` on the two sentences
#
# `models.TransformerClassifier` puts it all together:
#
# $$X = E[\mathrm{ids}]\sqrt D + PE, \qquad H = \mathrm{Encoder}(X, M), \qquad z = \mathrm{pool}(H)\,W_c + b_c \in \mathbb{R}^{2}$$
#
# A tiny one: D = 32, 4 heads, 2 pre-LN blocks, F = 128, `[CLS]` pooling.

# %%
model = TransformerClassifier(tok.vocab_size, num_classes=2, d_model=D, n_heads=H, n_layers=2, d_ff=d_ff,
                              max_len=64, dropout=0.1, norm="pre", pooling="cls", seed=0).eval()
print(model)
print(f"{model.num_parameters():,} parameters")

# %% [markdown]
# The forward pass by hand, with the model's own modules (in eval mode dropout is off), against
# `model(ids, mask)`:

# %%
h = model.embed(ids) * D ** 0.5                                        # (B, T) -> (B, T, D)
h = model.pos(h)                                                       # + PE[:T]
h = model.encoder(h, F.padding_mask(valid))                            # (B, T, D)
logits_by_hand = model.head(h[:, 0])                                   # pool [CLS], (B, D) -> (B, 2)
logits = model(ids, valid)
print("logits", logits.shape)
assert np.allclose(logits_by_hand, logits, atol=1e-5)

# %% [markdown]
# Padding must not change a sentence's prediction: sentence 2 alone and sentence 2 padded inside the
# batch give the same logits.

# %%
ids2, valid2 = tok.encode_batch(texts[1:], max_len=64)                # (1, 18): no padding
assert np.allclose(model(ids2, valid2)[0], logits[1], atol=1e-5)
print("sentence 2 alone:", model(ids2, valid2)[0], "  in the padded batch:", logits[1])

# %% [markdown]
# The probabilities: one row per sentence, two classes, each row summing to 1. **Look at** the
# values, and do not read anything into them: the weights are random, so this untrained model
# leans the same way for both sentences. Training gives the numbers a meaning
# (`python -m numpy_transformer demo`, and the following notebooks). Compare the article's output
# layer (section 4.3 step 6): `文本1：[0.9, 0.1, 0.0]`, three probabilities for a two-class
# problem (errata **W3**).

# %%
probs = model.predict_proba(ids, valid)                                # (B, 2)
viz.table(probs, [f"文本{i + 1} {text}" for i, text in enumerate(texts)], ["P(negative)", "P(positive)"])
assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1)

# %% [markdown]
# ---
# > **What the article got wrong here**
# >
# > * **E3** — `Feedforward(x) = ReLU(Linear(x))` is one layer; the network has two, as the article's own
# >   section 3.2 says: $W_2\,\mathrm{ReLU}(W_1x + b_1) + b_2$, with an inner width of usually $F = 4D$.
# > * **E2** — `TransformerLayer(X) = MultiHeadAttention(X) + Feedforward(X)` has no residual and no
# >   LayerNorm: the output forgets its input and its scale drifts when stacked. Real blocks are post-LN,
# >   pre-LN, or, if you read the sum with a residual and a LayerNorm, the parallel block.
# > * **E4 / C4** — `Output(X) = Linear(TransformerLayer(X))` gives one prediction per token; the code's
# >   (batch, seq, 2) output cannot be fit against one label per sentence. Pool first ([CLS] or masked mean).
# > * **C3** — The code has no residuals and no LayerNorm (and no positional encoding, notebook 2).
# > * **W3** — The printed output `[0.9, 0.1, 0.0]` has three probabilities for two classes.
# > * Not the article's mistake but a common one: LayerNorm divides by $\sqrt{\sigma^2 + \epsilon}$,
# >   not $\sigma + \epsilon$.

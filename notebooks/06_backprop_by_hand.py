# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6 · Backpropagation by hand
#
# Notebooks 1–5 ran the Transformer *forward*. To train it (notebook 7) we need the gradient of the
# loss with respect to every weight, and this package has no automatic differentiation: every formula
# in `functional.py` comes as a pair written by hand,
#
# ```python
# out, cache = op(x, ...)                # forward: compute, and keep what backward needs
# dx, ...    = op_backward(dout, cache)  # backward: dL/dx from dL/dout
# ```
#
# A handwritten gradient is only as good as its check. This notebook derives four backward passes
# and checks each one against finite differences of the forward pass:
#
# 1. how a gradient check works, and why it must run in float64;
# 2. **softmax**: the Jacobian $y_i(\delta_{ij} - y_j)$ and the $-\sum$ term everyone forgets;
# 3. **cross-entropy fused with softmax**: why its gradient is simply $p - y$;
# 4. **attention**: five forward lines, five backward lines;
# 5. **LayerNorm**: where its two mean terms come from;
# 6. the **whole classifier** at once, and what the checker's report looks like when a bug is planted.
#
# In every section a bug is planted on purpose, so you know what a wrong gradient looks like before
# you meet one in your own code (the exercises in `notebooks/exercises/` ask you to write these
# functions yourself).

# %%
from numpy_transformer import viz
viz.notebook_setup(precision=4)

# %%
import matplotlib.pyplot as plt
import numpy as np

from numpy_transformer import functional as F
from numpy_transformer.data import SEED_SENTENCES
from numpy_transformer.gradcheck import GradCheckError, check_gradients
from numpy_transformer.models import TransformerClassifier
from numpy_transformer.tokenizer import CharTokenizer

rng = np.random.default_rng(0)


# %% [markdown]
# ## 1. How to check a gradient
#
# A backward function receives `dout` $= \partial L / \partial\, \text{out}$ and must return
# $\partial L / \partial x$. For *any* fixed `dout`, the scalar
#
# $$L(x) = \sum_k f(x)_k \cdot \text{dout}_k$$
#
# has exactly that gradient. So we can estimate it with nothing but forward passes, nudging one
# element of $x$ at a time in both directions (a *central* difference):
#
# $$\frac{\partial L}{\partial x_i} \approx \frac{L(x + h\,e_i) - L(x - h\,e_i)}{2h}
#   \qquad (\text{error} \propto h^2)$$
#
# Here it is in a few lines. It works for any `f` and any float dtype.

# %%
def central_difference(f, x, dout, h):
    """(L(x + h e_i) - L(x - h e_i)) / 2h for every element i of x, where L = sum(f(x) * dout)."""
    grad = np.zeros_like(x)
    flat, g = x.reshape(-1), grad.reshape(-1)        # views: writing into flat writes into x
    for i in range(x.size):
        old = flat[i]
        flat[i] = old + h
        plus = (f(x) * dout).sum()
        flat[i] = old - h
        minus = (f(x) * dout).sum()
        flat[i] = old                                 # put it back
        g[i] = (plus - minus) / (2 * h)
    return grad


# %% [markdown]
# How small should $h$ be? Too large and the $h^2$ error dominates; too small and $L(x+h) - L(x-h)$
# loses its digits to rounding (an error $\propto \varepsilon / h$, with $\varepsilon$ the machine
# precision). **Look at** the two V shapes. In float64 ($\varepsilon \approx 10^{-16}$) the agreement
# with the analytic softmax gradient reaches about $10^{-11}$ and stays below $10^{-8}$ over a wide range
# of $h$. In float32 ($\varepsilon \approx 10^{-7}$) the bottom of the V is a million times higher and
# sharp: one lucky $h$ gives about $10^{-5}$, a factor of ten either side gives $10^{-4}$. There is no
# safe $h$ to pick in advance and no margin between a right formula and a slightly wrong one. That is
# why every gradient check in this project runs in float64.

# %%
x64, dout64 = rng.standard_normal(6), rng.standard_normal(6)
exact = F.softmax_backward(dout64, F.softmax(x64)[1])        # the analytic gradient (section 2)
softmax = lambda z: F.softmax(z)[0]

hs = np.logspace(-8, 0, 33)
errors = {}
for dtype in (np.float64, np.float32):
    x, dout = x64.astype(dtype), dout64.astype(dtype)
    errors[dtype.__name__] = np.array(
        [np.abs(central_difference(softmax, x.copy(), dout, h) - exact).max() / np.abs(exact).max()
         for h in hs])

fig, ax = plt.subplots(figsize=(5.5, 3.6))
for name, err in errors.items():
    ax.loglog(hs, err, marker=".", label=name)
ax.set_xlabel("step h")
ax.set_ylabel("max |numeric - analytic| / max |analytic|")
ax.set_title("central difference vs. the analytic softmax gradient")
ax.grid(alpha=0.3)
ax.legend();
for name, err in errors.items():
    print(f"{name}: best relative error {err.min():.1e} at h = {hs[err.argmin()]:.0e}")
assert (errors["float64"] < 1e-8).sum() >= 8                      # a wide band of good steps
assert errors["float32"].min() > 1e3 * errors["float64"].min()

# %% [markdown]
# The library's checker, `gradcheck.check_gradients`, does the same with two refinements:
#
# * it combines steps $h$ and $2h$ so that the $h^2$ errors cancel (Richardson extrapolation, error
#   $\propto h^4$), with $h = 10^{-3}$;
# * it compares with a **relative** error, $|a - n| / \max(|a| + |n|,\ 10^{-6})$, so that large and
#   small gradients are judged alike, and reports per input the worst element, its index, and both
#   values there. A tolerance of $10^{-5}$ leaves no room for a wrong formula and never fails a right one.
#
# It takes `forward(**inputs) -> out` and `backward(dout, **inputs) -> {name: gradient}`, draws a random
# `dout` (so that no symmetry can hide a bug), and raises `GradCheckError` when a gradient is wrong.

# %% [markdown]
# ## 2. Softmax
#
# $$y_i = \frac{e^{x_i}}{\sum_j e^{x_j}}$$
#
# Every output shares the denominator, so every output depends on every input. The Jacobian:
#
# $$\frac{\partial y_i}{\partial x_j} = y_i(\delta_{ij} - y_j)
#   \qquad\Longrightarrow\qquad
#   dx_j = \sum_i dy_i \frac{\partial y_i}{\partial x_j} = y_j\Big(dy_j - \sum_i dy_i\, y_i\Big)$$
#
# `F.softmax_backward` implements the right-hand side without building the K×K Jacobian. **Look at**
# the matrix: its rows sum to 0 — adding a constant to every $x_j$ does not change a softmax — so
# `dx` always sums to 0 as well. The asserts check both, and the shortcut against $J^\top dy$.

# %%
x = np.array([1.0, 2.0, 0.5, -1.0])
dy = np.array([0.3, -1.2, 0.8, 0.1])
y, cache = F.softmax(x)
J = np.diag(y) - np.outer(y, y)                  # J[i, j] = dy_i / dx_j = y_i (delta_ij - y_j)
dx = F.softmax_backward(dy, cache)
print("Jacobian J:\n", J)
print("J^T dy           =", J.T @ dy)
print("softmax_backward =", dx, "  sum =", f"{dx.sum():.1e}")
assert np.allclose(J.T @ dy, dx) and np.allclose(J.sum(axis=1), 0) and abs(dx.sum()) < 1e-12


# %% [markdown]
# Now the checker on a batch (2, 3, 5) of rows, in float64. **Look at** the report: one line per input
# with the worst relative error (around $10^{-11}$, far below the tolerance $10^{-5}$) and where it occurs.

# %%
def softmax_forward(x):
    return F.softmax(x)[0]

def softmax_backward(dout, x):
    return {"x": F.softmax_backward(dout, F.softmax(x)[1])}

x = rng.standard_normal((2, 3, 5))
results = check_gradients(softmax_forward, softmax_backward, {"x": x})
for r in results.values():
    print(r)
assert all(r.ok for r in results.values())


# %% [markdown]
# **A planted bug.** The most common mistake: treat softmax as if it were elementwise and forget the
# $-\sum_i dy_i y_i$ term. **Look at** the message: the relative error is of order 1, not a rounding
# issue, and the index says where the worst element sits.

# %%
def softmax_backward_forgot_sum(dy, cache):
    """WRONG on purpose: the - sum_i dy_i y_i term is missing."""
    y, axis = cache
    return y * dy

try:
    check_gradients(softmax_forward,
                    lambda dout, x: {"x": softmax_backward_forgot_sum(dout, F.softmax(x)[1])},
                    {"x": x})
except GradCheckError as err:
    print(err)
    assert err.results["x"].max_rel_error > 1e-2
else:
    raise AssertionError("the checker missed a planted bug")

# %% [markdown]
# ## 3. Cross-entropy fused with softmax: $p - y$
#
# For logits $z_n$ and target class $t_n$, with $p_n = \mathrm{softmax}(z_n)$ and $y_n$ the one-hot of $t_n$:
#
# $$L = -\frac1N \sum_n \log p_{n, t_n},
#   \qquad \log p_{n,c} = z_{n,c} - \log\sum_j e^{z_{n,j}}$$
#
# Differentiate $-\log p_{n,t}$ with respect to $z_{n,c}$: the first term gives $-[c = t]$, the
# log-sum-exp gives $p_{n,c}$. Hence
#
# $$\frac{\partial L}{\partial z_n} = \frac{p_n - y_n}{N}$$
#
# The same result comes the long way round — `log_softmax_backward` gives
# $dz = d\log p - p \sum_c d\log p_c$, and with $d\log p = -y/N$ and $\sum_c y_c = 1$ that is $(p - y)/N$.
# The fused form is shorter, and $p - y$ lies in $[-1, 1]$: the loss gradient never explodes, however
# wrong the model.
#
# **Look at** the numbers for the two article sentences, with made-up logits (text 1 is positive,
# label 1; text 2 negative, label 0): the gradient pushes the true class's logit up (negative entry)
# and the other one down, by how much probability is misplaced.

# %%
logits = np.array([[0.3, 1.2],     # text 1 这是一个有趣的文章，我很喜欢阅读它。 label 1
                   [0.5, -0.4]])   # text 2 这篇文章太无聊了，我一点也不想读。   label 0
labels = np.array([1, 0])
loss, cache = F.cross_entropy(logits, labels)
p, y = F.softmax(logits)[0], np.eye(2)[labels]
dz = F.cross_entropy_backward(1.0, cache)
dz_chain = F.log_softmax_backward(-y / len(labels), F.log_softmax(logits)[1])   # the long way round
print(f"loss = {float(loss):.4f}")
print("p =\n", p)
print("(p - y) / N =\n", (p - y) / len(labels))
print("cross_entropy_backward =\n", dz)
assert np.allclose(dz, (p - y) / len(labels)) and np.allclose(dz_chain, dz)

# %% [markdown]
# The checker, on six rows with label smoothing and one row ignored (`-100`, as padding is in a language
# model). The loss is a scalar, so `dout` is 1. **Look at** the ignored row: its gradient is exactly 0.

# %%
z = rng.standard_normal((6, 4))
t = np.array([0, 3, 1, -100, 2, 2])

def ce_forward(z):
    return F.cross_entropy(z, t, label_smoothing=0.1)[0]

def ce_backward(dout, z):
    return {"z": F.cross_entropy_backward(dout, F.cross_entropy(z, t, label_smoothing=0.1)[1])}

for r in check_gradients(ce_forward, ce_backward, {"z": z}, dout=np.array(1.0)).values():
    print(r)
dz = ce_backward(1.0, z)["z"]
print("gradient of the ignored row 3:", dz[3])
assert np.all(dz[3] == 0)


# %% [markdown]
# ## 4. Attention
#
# The forward pass, one line per step (notebook 3), and below it the backward pass — the same lines
# read from the bottom up, each one the derivative of the line it mirrors:
#
# | forward | backward |
# |---|---|
# | $S = Q K^\top / \sqrt{d_k}$ (masked entries set to $-10^9$) | $dQ = dS\,K / \sqrt{d_k}$, $\quad dK = dS^\top Q / \sqrt{d_k}$ |
# | $W = \mathrm{softmax}(S)$ (row by row) | $dS = W \odot \big(dW - \textstyle\sum_k dW \odot W\big)$ (section 2) |
# | $O = W V$ | $dW = dO\, V^\top$, $\quad dV = W^\top dO$ |
#
# Masked entries have $W = 0$, so $dS = 0$ there by itself: backward needs no mask. Below, the five
# backward lines typed in by hand, compared with the library's `scaled_dot_product_attention_backward`.

# %%
def attention_backward_by_hand(dO, q, k, v, mask):
    """The backward table above, line by line (forward recomputed to get W)."""
    d_k = q.shape[-1]
    S = np.where(mask, q @ k.swapaxes(-1, -2) / np.sqrt(d_k), F.MASK_FILL)   # (B, H, T, T)
    W = F.softmax(S)[0]                                                      # (B, H, T, T)
    dW = dO @ v.swapaxes(-1, -2)                  # O = W V
    dV = W.swapaxes(-1, -2) @ dO
    dS = W * (dW - (dW * W).sum(axis=-1, keepdims=True))                     # W = softmax(S)
    dQ = dS @ k / np.sqrt(d_k)                    # S = Q K^T / sqrt(d_k)
    dK = dS.swapaxes(-1, -2) @ q / np.sqrt(d_k)
    return dQ, dK, dV

B, H, T, Dh = 2, 2, 4, 3
q, k, v = (rng.standard_normal((B, H, T, Dh)) for _ in range(3))
causal = F.causal_mask(T)                         # (T, T), True = may attend
dO = rng.standard_normal((B, H, T, Dh))
out, weights, cache = F.scaled_dot_product_attention(q, k, v, causal)
library = F.scaled_dot_product_attention_backward(dO, cache)
for name, mine, theirs in zip("qkv", attention_backward_by_hand(dO, q, k, v, causal), library):
    print(f"d{name}: by hand == library: {np.allclose(mine, theirs)}")
    assert np.allclose(mine, theirs)


# %% [markdown]
# The checker on the library's attention with a causal mask, for $Q$, $K$ and $V$ at once.

# %%
def attention_forward(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, causal)[0]

def attention_backward(dout, q, k, v):
    dq, dk, dv = F.scaled_dot_product_attention_backward(
        dout, F.scaled_dot_product_attention(q, k, v, causal)[2])
    return {"q": dq, "k": dk, "v": dv}

for r in check_gradients(attention_forward, attention_backward, {"q": q, "k": k, "v": v}).values():
    print(r)


# %% [markdown]
# **A planted bug that shapes cannot catch.** In self-attention $T_q = T_k$, so $dK = dS\,Q$ (the
# transpose forgotten) has the right shape and runs without complaint. **Look at** the report: it
# names `k` as the only wrong input, and $dQ$ and $dV$ are still right.

# %%
def attention_backward_forgot_transpose(dout, q, k, v):
    """WRONG on purpose: dK = dS Q instead of dS^T Q."""
    _, W, cache = F.scaled_dot_product_attention(q, k, v, causal)
    dq, _, dv = F.scaled_dot_product_attention_backward(dout, cache)
    dW = dout @ v.swapaxes(-1, -2)
    dS = W * (dW - (dW * W).sum(axis=-1, keepdims=True))
    return {"q": dq, "k": dS @ q / np.sqrt(q.shape[-1]), "v": dv}

try:
    check_gradients(attention_forward, attention_backward_forgot_transpose, {"q": q, "k": k, "v": v})
except GradCheckError as err:
    print(err)
    assert not err.results["k"].ok and err.results["q"].ok and err.results["v"].ok
else:
    raise AssertionError("the checker missed a planted bug")

# %% [markdown]
# ## 5. LayerNorm
#
# Per row of $D$ numbers (Ba et al. 2016):
#
# $$\mu = \frac1D\sum_j x_j, \quad \sigma^2 = \frac1D \sum_j (x_j - \mu)^2, \quad
#   r = \frac{1}{\sqrt{\sigma^2 + \epsilon}}, \quad \hat x_i = (x_i - \mu)\, r, \quad
#   y_i = \gamma_i \hat x_i + \beta_i$$
#
# $\gamma$ and $\beta$ are easy: $d\gamma = \sum_{\text{rows}} dy \odot \hat x$, $d\beta = \sum_{\text{rows}} dy$.
# For $x$, every $x_j$ moves $\mu$ and $\sigma$, and through them every $\hat x_i$. With
# $\partial\mu/\partial x_j = 1/D$ and $\partial r / \partial x_j = -r^3 (x_j - \mu)/D$:
#
# $$\frac{\partial \hat x_i}{\partial x_j} = r\Big(\delta_{ij} - \frac1D - \frac{\hat x_i \hat x_j}{D}\Big)
#   \quad\Longrightarrow\quad
#   dx = r\Big(d\hat x - \underbrace{\mathrm{mean}(d\hat x)}_{\text{from } \mu}
#        - \hat x\, \underbrace{\mathrm{mean}(d\hat x \odot \hat x)}_{\text{from } \sigma}\Big),
#   \qquad d\hat x = dy \odot \gamma$$
#
# That is `F.layernorm_backward`. The checker on $x$, $\gamma$ and $\beta$:

# %%
x = rng.standard_normal((3, 4, 6))
gamma, beta = rng.standard_normal(6), rng.standard_normal(6)

def ln_forward(x, gamma, beta):
    return F.layernorm(x, gamma, beta)[0]

def ln_backward(dout, x, gamma, beta):
    dx, dgamma, dbeta = F.layernorm_backward(dout, F.layernorm(x, gamma, beta)[1])
    return {"x": dx, "gamma": dgamma, "beta": dbeta}

for r in check_gradients(ln_forward, ln_backward, {"x": x, "gamma": gamma, "beta": beta}).values():
    print(r)

# %% [markdown]
# The two mean terms have a meaning you can check. LayerNorm's output does not change when you add a
# constant to a row ($\mu$ absorbs it) or stretch the row about its mean ($\sigma$ absorbs it). So the
# gradient can have no component in those two directions: every row of $dx$ sums to 0 (the $\mu$ term
# removes it) and is orthogonal to $\hat x$ (the $\sigma$ term removes it). The second statement is exact
# for $\epsilon = 0$; the small $\epsilon$ that keeps a constant row from dividing by zero makes the
# stretch invariance, and the orthogonality, hold only up to a relative $\epsilon/(\sigma^2+\epsilon)$.
# So this cell uses $\epsilon = 0$. **Look at** both numbers, at the level of rounding error.

# %%
dy = rng.standard_normal(x.shape)
y, cache = F.layernorm(x, gamma, beta, eps=0.0)
dx = F.layernorm_backward(dy, cache)[0]
xhat = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
print("largest |row sum of dx|      :", f"{np.abs(dx.sum(-1)).max():.1e}")
print("largest |row of dx . xhat|   :", f"{np.abs((dx * xhat).sum(-1)).max():.1e}")
assert np.allclose(dx.sum(-1), 0) and np.allclose((dx * xhat).sum(-1), 0)


# %% [markdown]
# **A planted bug:** treat $\sigma$ as a constant and drop the second mean term. **Look at** the report:
# `x` is wrong, while `gamma` and `beta`, which do not go through that term, are still right.

# %%
def ln_backward_forgot_sigma(dout, x, gamma, beta):
    """WRONG on purpose: the - xhat * mean(dxhat * xhat) term (sigma depends on x) is missing."""
    _, dgamma, dbeta = F.layernorm_backward(dout, F.layernorm(x, gamma, beta)[1])
    mu, rstd = x.mean(-1, keepdims=True), 1 / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    dxhat = dout * gamma
    return {"x": rstd * (dxhat - dxhat.mean(-1, keepdims=True)), "gamma": dgamma, "beta": dbeta}

try:
    check_gradients(ln_forward, ln_backward_forgot_sigma, {"x": x, "gamma": gamma, "beta": beta})
except GradCheckError as err:
    print(err)
    assert not err.results["x"].ok and err.results["gamma"].ok and err.results["beta"].ok
else:
    raise AssertionError("the checker missed a planted bug")

# %% [markdown]
# ## 6. The whole model
#
# Each piece being right does not prove they are wired together right: a residual connection whose
# gradient is not added, a shared weight that gets only one of its two gradients, a transposed
# reshape between heads. So we check the whole classifier at once: the inputs of the check are *all
# the weights* (about 1,500 numbers) of a tiny `TransformerClassifier` (D = 8, 2 heads, 2 layers, pre-LN, [CLS] pooling)
# in float64, and the output is the cross-entropy loss on the article's two sentences.
#
# Two details make the check meaningful: dropout is 0 (a random mask would change between the
# forward passes), and the feed-forward uses GELU rather than ReLU (ReLU has a kink at 0, where a
# finite difference straddling it measures nothing).

# %%
texts = [text for text, _ in SEED_SENTENCES]
labels = np.array([label for _, label in SEED_SENTENCES])
tok = CharTokenizer.build(texts)
ids, mask = tok.encode_batch(texts, max_len=32)          # (2, 19): [CLS] + characters, padded
model = TransformerClassifier(tok.vocab_size, 2, d_model=8, n_heads=2, n_layers=2, d_ff=16, max_len=32,
                              dropout=0.0, activation="gelu", dtype=np.float64, seed=0)
params = dict(model.named_parameters())
print(f"{len(params)} parameter arrays, {model.num_parameters():,} numbers; ids {ids.shape}")

def loss_of_model(**_):
    loss, _ = F.cross_entropy(model(ids, mask), labels)
    return loss

def model_gradients(dout, **_):
    model.zero_grad()
    loss, cache = F.cross_entropy(model(ids, mask), labels)
    model.backward(F.cross_entropy_backward(dout, cache))
    return {name: p.grad.copy() for name, p in params.items()}

def show(results):
    viz.table([[str(r.shape), f"{r.max_rel_error:.1e}", "ok" if r.ok else "WRONG"] for r in results.values()],
          list(results), ["shape", "worst relative error", "verdict"])


# %% [markdown]
# The check perturbs each of those numbers four times (a few seconds). **Look at** the last
# column: every array is within tolerance, the embedding table included.

# %%
results = check_gradients(loss_of_model, model_gradients, {n: p.data for n, p in params.items()},
                          dout=np.array(1.0))
show(results)
assert all(r.ok for r in results.values())

# %% [markdown]
# One gradient in that table is *exactly* zero, and that is right: the key bias $b^K$. Adding the same
# vector $b$ to every key adds $q_i \cdot b$ to every score of row $i$ — the same constant across the
# row — and softmax ignores constants (section 2). The key bias can never change the output, so its
# gradient is 0. (The checker's floor of $10^{-6}$ in the relative error exists for such zeros.)

# %%
D = model.d_model
db_qkv = model_gradients(1.0)["encoder.blocks.0.attn.b_qkv"]      # (3D,) = [b_q | b_k | b_v]
print("d b_q:", db_qkv[:D])
print("d b_k:", db_qkv[D:2 * D])
print("d b_v:", db_qkv[2 * D:])
print(f"largest |d b_k| = {np.abs(db_qkv[D:2 * D]).max():.1e}")
assert np.abs(db_qkv[D:2 * D]).max() < 1e-12 < np.abs(db_qkv[:D]).max()

# %% [markdown]
# **A planted bug in the wiring.** A pre-LN block computes $H = X + \mathrm{MHA}(\mathrm{LN}(X))$, then
# $Y = H + \mathrm{FFN}(\mathrm{LN}(H))$. At each `+` the gradient must flow down *both* branches:
# $dH = dY + \text{(FFN branch)}$. Below, the second block's backward forgets the two "$dY\,+$" terms.
#
# **Look at** which arrays the report marks wrong, reading from the loss backwards: the head, the final
# LayerNorm and block 1's FFN and second LayerNorm are right; from block 1's attention down, every
# gradient is wrong. The first wrong array, walking back from the loss, says where the bug is.
#
# The replacement chains the block's modules one by one, as the plain formulas run them, so the model
# runs the plain formulas here (`use_fast_paths(False)`). With the fast paths on, a pre-norm block hands
# each LayerNorm to the linear layer after it, which folds the gain and shift into its weights
# (`fast.layernorm_linear_fast`, a training-speed trick): then `ffn.backward` already includes the
# LayerNorm's backward and the block's backward is not this chain. The tests check the fast block
# against the plain one.

# %%
block = model.encoder.blocks[1]
model.use_fast_paths(False)                        # the plain formulas: one module after the other

def backward_forgot_residual(dout):
    """WRONG on purpose: the residual terms are missing (dropout is 0 here, so it is left out)."""
    dh = block.norm2.backward(block.ffn.backward(dout))         # should be: dout + ...
    return block.norm1.backward(block.attn.backward(dh))        # should be: dh + ...

block.backward = backward_forgot_residual          # plant the bug in this one block ...
try:
    check_gradients(loss_of_model, model_gradients, {n: p.data for n, p in params.items()},
                    dout=np.array(1.0))
except GradCheckError as err:
    show(err.results)
    wrong = {name for name, r in err.results.items() if not r.ok}
    assert "head.W" not in wrong and "encoder.blocks.1.ffn.W1" not in wrong
    assert "encoder.blocks.1.attn.W_qkv" in wrong and "embed.E" in wrong
else:
    raise AssertionError("the checker missed a planted bug")
finally:
    del block.backward                             # ... and take it out again
    model.use_fast_paths(True)

# %% [markdown]
# ## Summary
#
# * A backward pass is checked, not trusted: $\sum f(x) \odot \text{dout}$ turns any function into a
#   scalar whose gradient central differences can estimate, in float64, to about $10^{-10}$.
# * Softmax: $dx = y \odot (dy - \sum dy \odot y)$. Cross-entropy on softmax: $(p - y)/N$.
#   Attention: the forward lines in reverse. LayerNorm: $r(d\hat x - \mathrm{mean}(d\hat x) - \hat x\,
#   \mathrm{mean}(d\hat x \odot \hat x))$.
# * A wrong gradient shows up as a relative error of order 1 at a named input and index; in a whole
#   model, the first wrong array walking back from the loss locates the bug.
# * `tests/` runs the same checks over random shapes (hypothesis), for every backward function in
#   `functional.py`, every layer and both models.
#
# Next, notebook 7: these gradients train the classifier.

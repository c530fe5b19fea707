r"""The formulas: every piece of the Transformer as a forward/backward pair.

Start reading here. Each function is pure: it takes arrays and returns arrays,
and keeps no state. The pattern is the one from cs231n and llm.c::

    out, cache = op(x, ...)          # forward: compute, and remember what backward needs
    dx, ...    = op_backward(dout, cache)   # backward: gradients w.r.t. the inputs

``dout`` is the gradient of the loss with respect to ``out`` (same shape as
``out``); a gradient is always named ``d`` + the name of the forward variable.
Backward functions return *new* arrays and never modify ``dout``: in a
residual network the same ``dout`` flows into two branches, and a branch that
edits it in place silently corrupts the other.

Shape legend, used in every docstring and trailing comment::

    B  batch size            T   sequence length (Tq, Tk for queries / keys)
    D  model width d_model   H   number of heads,   Dh = D / H  (d_k in the paper)
    F  feed-forward width    V   vocabulary size    C   number of classes
    N  number of rows a loss averages over

Every function works for float32 (the default, for speed) and float64 (for
gradient checks). Constants are Python floats so that NumPy never silently
upcasts float32 to float64. ``xp`` is ``numpy`` or ``cupy``: the arrays decide
(see `backend.py`).

"Seed §x" points to the section of the article this project teaches from;
where the article is wrong, the docstring says so (see ``seed-errata.md``).

This file holds only the plain formulas. Their *fast twins* (attention,
LayerNorm, dropout, ReLU fused with dropout, the embedding's backward) live in
`fast.py`: the same numbers in fewer passes over memory and on all CPU cores,
which the modules of `nn.py` use by default. `tests/test_fast_paths.py` checks
every twin against the plain function here, in float64 with masks, so you can
read this file and trust that the model computes exactly what it says.
"""

from __future__ import annotations

import math

import numpy as np

from .backend import get_array_module

# The value written into masked attention scores before the softmax. A finite
# number rather than -inf: exp(-1e9 - max) underflows cleanly to 0, whereas
# -inf - (-inf) = NaN when a whole row is masked.
MASK_FILL = -1e9


# --------------------------------------------------------------------------- #
# Input checks: one place that turns bad input into a message a student can act on.
# --------------------------------------------------------------------------- #

def _check_float(name, a):
    if not hasattr(a, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(a).__name__}")
    if a.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point array (float32 or float64), got dtype {a.dtype}")


def _check_int(name, a):
    if not hasattr(a, "dtype") or a.dtype.kind not in "iu":
        got = a.dtype if hasattr(a, "dtype") else type(a).__name__
        raise TypeError(f"{name}: expected an integer array, got {got}")


def _check_last_dim(name, a, expected):
    if a.shape[-1] != expected:
        raise ValueError(f"{name}: expected last dimension {expected}, got shape {tuple(a.shape)}")


# --------------------------------------------------------------------------- #
# Softmax and log-softmax (seed §1.3, §4.1: the softmax inside attention and at the output)
# --------------------------------------------------------------------------- #

def softmax(x, axis=-1):
    r"""Numerically stable softmax along ``axis``.

    .. math:: y_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \quad m = \max_j x_j

    Subtracting the maximum changes nothing mathematically (it cancels between
    numerator and denominator) but keeps ``exp`` from overflowing: without it,
    float32 logits of 100 already give ``inf / inf = NaN``.

    Args: x (..., K) floats.  Returns: y (..., K), rows summing to 1; cache.
    """
    _check_float("x", x)
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    return y, (y, axis)


def softmax_backward(dy, cache):
    r"""Gradient of softmax: :math:`dx_i = y_i (dy_i - \sum_j dy_j y_j)`.

    From the Jacobian :math:`\partial y_i / \partial x_j = y_i(\delta_{ij} - y_j)`.
    The ``- sum`` term is the one students forget: every output depends on
    every input through the shared denominator.
    """
    y, axis = cache
    # in the forward pass this was: y = e / e.sum(axis)
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def log_softmax(x, axis=-1):
    r"""Stable log-softmax: :math:`\log y_i = x_i - m - \log\sum_j e^{x_j - m}`.

    Computing ``log(softmax(x))`` instead loses everything below ~1e-38 in
    float32 to ``log(0) = -inf``; this form never does.

    Args: x (..., K).  Returns: logp (..., K); cache.
    """
    _check_float("x", x)
    xp = get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    logp = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    return logp, (logp, axis)


def log_softmax_backward(dlogp, cache):
    r""":math:`dx_i = dlogp_i - y_i \sum_j dlogp_j`, with :math:`y = e^{logp}`."""
    logp, axis = cache
    xp = get_array_module(logp)
    return dlogp - xp.exp(logp) * dlogp.sum(axis=axis, keepdims=True)


# --------------------------------------------------------------------------- #
# Activations (seed §4.1 item 4: the feed-forward network's non-linearity)
# --------------------------------------------------------------------------- #

def relu(x):
    r""":math:`\mathrm{ReLU}(x) = \max(0, x)`.  Args: x (...).  Returns: y (...); cache."""
    _check_float("x", x)
    xp = get_array_module(x)
    y = xp.maximum(x, 0)
    return y, (x > 0)


def relu_backward(dy, cache):
    """:math:`dx = dy \\cdot [x > 0]`. A new array: ``dy`` itself is never edited."""
    positive = cache
    # in the forward pass this was: y = max(x, 0)
    return dy * positive


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu(x):
    r"""GELU, tanh approximation (Hendrycks & Gimpel 2016, as used by GPT-2 and BERT).

    .. math:: \mathrm{GELU}(x) = \tfrac12 x \left(1 + \tanh\!\big(\sqrt{2/\pi}\,(x + 0.044715 x^3)\big)\right)

    Args: x (...).  Returns: y (...); cache = (x, tanh term).
    """
    _check_float("x", x)
    xp = get_array_module(x)
    t = xp.tanh(_GELU_C * (x + 0.044715 * x ** 3))
    y = 0.5 * x * (1.0 + t)
    return y, (x, t)


def gelu_backward(dy, cache):
    r"""Product rule on :math:`\tfrac12 x (1 + t)` with :math:`t' = (1 - t^2)\sqrt{2/\pi}(1 + 3\cdot0.044715x^2)`."""
    x, t = cache
    # in the forward pass this was: y = 0.5 * x * (1 + tanh(c * (x + 0.044715 x^3)))
    dt = (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * dt)


# --------------------------------------------------------------------------- #
# Linear layer (seed §4.1 items 4 and 6)
# --------------------------------------------------------------------------- #

def linear(x, W, b=None):
    r"""Affine map over the last axis: :math:`y = x W + b`.

    ``W`` is stored as (D_in, D_out) so the line reads like the equation (no
    transpose). Any leading dimensions are allowed: (B, T, D_in) -> (B, T, D_out).

    Why the reshape: the maths treats every row of ``x`` alike, so (B, T, D_in)
    is just N = B*T rows. Given a 3-D ``x``, NumPy runs B separate small
    matrix products instead of one (numpy/numpy#8957; CuPy does the same,
    cupy/cupy#8174). One (N, D_in) @ (D_in, D_out) BLAS call is never
    slower: 10-30% faster with NumPy 2.4 at the default classifier's
    shapes, 15x and more with older NumPy versions and on the GPU. Folding
    the leading axes costs nothing (a view of a contiguous array).

    Args: x (..., D_in); W (D_in, D_out); b (D_out,) or None.
    Returns: y (..., D_out); cache = (x, W, has_bias).
    """
    _check_float("x", x)
    _check_float("W", W)
    if W.ndim != 2:
        raise ValueError(f"W: expected a 2-D matrix (D_in, D_out), got shape {tuple(W.shape)}")
    _check_last_dim("x", x, W.shape[0])
    if b is not None and b.shape != (W.shape[1],):
        raise ValueError(f"b: expected shape ({W.shape[1]},), got {tuple(b.shape)}")
    x2 = x.reshape(-1, W.shape[0])                    # (..., D_in) -> (N, D_in), N = rows of x
    y = x2 @ W                                        # (N, D_in) @ (D_in, D_out) -> (N, D_out): one BLAS call
    if b is not None:
        y += b
    return y.reshape(*x.shape[:-1], W.shape[1]), (x, W, b is not None)   # (N, D_out) -> (..., D_out)


def linear_backward(dy, cache):
    r"""Gradients of :math:`y = xW + b`.

    .. math:: dx = dy\,W^\top, \qquad dW = x^\top dy, \qquad db = \textstyle\sum_{rows} dy

    As in the forward pass the leading dimensions are folded into one, so
    each product is one BLAS call and ``dW`` sums over batch and time inside
    it. Returns (dx, dW, db); db is None without bias.
    """
    x, W, has_bias = cache
    x2 = x.reshape(-1, W.shape[0])                    # (N, D_in)
    dy2 = dy.reshape(-1, W.shape[1])                  # (N, D_out)
    # in the forward pass this was: y = x @ W + b
    dx = (dy2 @ W.T).reshape(x.shape)                 # (N, D_out) @ (D_out, D_in) -> (..., D_in)
    dW = x2.T @ dy2                                   # (D_in, N) @ (N, D_out) -> (D_in, D_out)
    db = dy2.sum(axis=0) if has_bias else None        # (D_out,)
    return dx, dW, db


# --------------------------------------------------------------------------- #
# Layer normalisation (Ba et al. 2016; the "LN" of the block, errata E2)
# --------------------------------------------------------------------------- #

def layernorm(x, gamma, beta, eps=1e-5):
    r"""Normalise each vector over its last axis, then scale and shift.

    .. math::
        \mu = \tfrac1D \textstyle\sum_i x_i, \quad
        \sigma^2 = \tfrac1D \textstyle\sum_i (x_i-\mu)^2, \quad
        \hat x = \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}}, \quad
        y = \gamma \odot \hat x + \beta

    Note ``sqrt(var + eps)``, not ``std + eps``: the two differ for small
    variances, and only the first matches the paper and every framework.
    The cache keeps ``xhat`` and ``rstd = 1/sqrt(var + eps)`` (as llm.c does):
    with those two, backward needs no second pass over ``x``.

    Args: x (..., D); gamma, beta (D,).  Returns: y (..., D); cache.
    """
    _check_float("x", x)
    D = x.shape[-1]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p.shape != (D,):
            raise ValueError(f"{name}: expected shape ({D},), got {tuple(p.shape)}")
    xp = get_array_module(x)
    mean = x.mean(axis=-1, keepdims=True)             # (..., 1)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)      # (..., 1), biased like the paper
    rstd = 1.0 / xp.sqrt(var + eps)                   # (..., 1)
    xhat = xc * rstd                                  # (..., D)
    y = xhat * gamma + beta
    return y, (xhat, rstd, gamma)


def layernorm_backward(dy, cache):
    r"""Gradients of LayerNorm.

    .. math::
        d\gamma = \textstyle\sum_{rows} dy \odot \hat x, \quad d\beta = \textstyle\sum_{rows} dy, \\
        dx = \mathrm{rstd}\,\big(d\hat x - \mathrm{mean}(d\hat x) - \hat x\,\mathrm{mean}(d\hat x \odot \hat x)\big),
        \quad d\hat x = dy \odot \gamma

    The two mean terms come from :math:`\mu` and :math:`\sigma` depending on
    every element of the row. Returns (dx, dgamma, dbeta).
    """
    xhat, rstd, gamma = cache
    D = xhat.shape[-1]
    # in the forward pass this was: y = xhat * gamma + beta
    dgamma = (dy * xhat).reshape(-1, D).sum(axis=0)   # (D,)
    dbeta = dy.reshape(-1, D).sum(axis=0)             # (D,)
    dxhat = dy * gamma                                # (..., D)
    # in the forward pass this was: xhat = (x - mean) * rstd
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------- #
# Dropout (Srivastava et al. 2014). Seed §5 claims regularisation (C6) but has none.
# --------------------------------------------------------------------------- #

def _dropout_is_active(x, p, rng, training):
    """Check dropout's arguments; False when nothing is dropped (eval mode or p = 0)."""
    _check_float("x", x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: expected a probability in [0, 1), got {p}")
    if not training or p == 0.0:
        return False
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return True


def dropout(x, p, rng, training=True):
    r"""Inverted dropout: zero each element with probability ``p``, scale the rest by ``1/(1-p)``.

    .. math:: y = x \odot m / (1-p), \qquad m_i \sim \mathrm{Bernoulli}(1-p)

    Scaling at training time ("inverted") keeps the expected activation equal
    to ``x``, so evaluation is the identity and needs no rescaling.

    Args: x (...); p in [0, 1); rng: numpy.random.Generator (explicit, so the
    same seed gives the same mask); training: False -> identity.
    Returns: y (...); cache = scaled mask, or None when nothing was dropped.
    """
    if not _dropout_is_active(x, p, rng, training):
        return x, None
    xp = get_array_module(x)
    # The mask is drawn on the CPU so that a seed gives the same bits on every
    # machine; on the GPU it is then copied over.
    keep = rng.random(x.shape, dtype=np.float32) >= p
    scale = xp.asarray(keep, dtype=x.dtype) * (1.0 / (1.0 - p))
    return x * scale, scale


def dropout_backward(dy, cache):
    """:math:`dx = dy \\odot m / (1-p)`: the same mask, applied to the gradient.

    With nothing dropped the gradient passes through unchanged, but as a copy:
    handing ``dy`` itself back would let a caller's ``dx += ...`` edit it.
    """
    scale = cache
    return dy.copy() if scale is None else dy * scale


# --------------------------------------------------------------------------- #
# Embedding lookup (seed §4.1 item 1; the seed's code uses a one-hot instead, C2)
# --------------------------------------------------------------------------- #

def embedding(ids, E):
    r"""Look up rows of the embedding table: :math:`y_{b,t} = E[\mathrm{ids}_{b,t}]`.

    Args: ids (B, T) integers in [0, V); E (V, D).  Returns: y (B, T, D); cache.
    """
    _check_int("ids", ids)
    _check_float("E", E)
    V = E.shape[0]
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= V):
        raise ValueError(f"ids: expected token ids in [0, {V}), got values in "
                         f"[{int(ids.min())}, {int(ids.max())}]")
    return E[ids], (ids, E.shape)


def embedding_backward(dy, cache):
    r"""Scatter-add the rows back: :math:`dE_v = \sum_{(b,t): \mathrm{ids}_{b,t}=v} dy_{b,t}`.

    A token that appears twice receives the sum of both gradients. Writing
    ``dE[ids] = dy`` instead would keep only the last one; ``add.at`` is the
    unbuffered form that accumulates repeated indices.
    """
    ids, shape = cache
    xp = get_array_module(dy)
    dE = xp.zeros(shape, dtype=dy.dtype)              # (V, D)
    xp.add.at(dE, ids.reshape(-1), dy.reshape(-1, shape[1]))
    return dE


# --------------------------------------------------------------------------- #
# Positional encoding (seed §1.3, §3.2, §4.1 item 2; errata E1)
# --------------------------------------------------------------------------- #

def sinusoidal_positional_encoding(T, D, dtype=np.float32):
    r"""The sinusoidal positional encoding of Vaswani et al. 2017, §3.5.

    .. math::
        PE_{pos,\,2i} = \sin\!\big(pos / 10000^{2i/D}\big), \qquad
        PE_{pos,\,2i+1} = \cos\!\big(pos / 10000^{2i/D}\big)

    ``i`` counts *pairs of dimensions* and ``pos`` the position (the seed calls
    ``i`` "the word index": errata E1). Each pair (sin, cos) turns at its own
    frequency, so shifting the position by ``k`` rotates every pair by a fixed
    angle: ``PE[pos + k]`` is a linear function of ``PE[pos]``. An odd ``D``
    works: the last column is a sine with no cosine partner.

    Returns: PE (T, D), computed on the CPU (it is a constant table).
    """
    if T < 1 or D < 1:
        raise ValueError(f"T, D: expected positive sizes, got T={T}, D={D}")
    pos = np.arange(T, dtype=np.float64)[:, None]             # (T, 1)
    two_i = np.arange(0, D, 2, dtype=np.float64)               # (ceil(D/2),) = 2i
    angle = pos / 10000.0 ** (two_i / D)                       # (T, ceil(D/2))
    pe = np.zeros((T, D), dtype=np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : D // 2])
    return pe.astype(dtype)


def seed_positional_encoding(T, D, dtype=np.float32):
    r"""The article's formula, implemented as printed, *for teaching only* (errata E1).

    .. math:: PE_{pos,\,j} = \sin\!\big(pos/10000^{2i/D}\big) + \cos\!\big(pos/10000^{2i/D}\big), \quad i = \lfloor j/2 \rfloor

    We read ``i`` as the pair index so that the frequencies match the real
    encoding. The sum equals :math:`\sqrt2 \sin(\theta + \pi/4)`: one number
    per frequency instead of a (sin, cos) pair, so a shift in position is no
    longer a rotation, and columns 2i and 2i+1 are identical (wasted width).
    """
    if T < 1 or D < 1:
        raise ValueError(f"T, D: expected positive sizes, got T={T}, D={D}")
    pos = np.arange(T, dtype=np.float64)[:, None]
    two_i = 2 * (np.arange(D) // 2)                           # (D,) = 2i for column j
    angle = pos / 10000.0 ** (two_i / D)                       # (T, D)
    return (np.sin(angle) + np.cos(angle)).astype(dtype)


# --------------------------------------------------------------------------- #
# Relative positions inside attention: RoPE and ALiBi (long text, seed §3.3)
# --------------------------------------------------------------------------- #

def rope_frequencies(Dh, base=10000.0):
    r"""The rotation speed of each feature pair of RoPE: :math:`\theta_i = \mathrm{base}^{-2i/D_h}`.

    One frequency per pair ``(2i, 2i+1)``, ``i = 0 .. floor(Dh/2) - 1``: the
    same geometric ladder as the sinusoidal encoding (Vaswani §3.5), from one
    radian per position down to about 1/base. Returns: theta (floor(Dh/2),) float64.
    """
    if Dh < 1:
        raise ValueError(f"Dh: expected a positive head width, got {Dh}")
    two_i = np.arange(0, Dh - 1, 2, dtype=np.float64)                 # (Dh // 2,) = 2i
    return base ** (-two_i / Dh)


def rope(x, positions=None, base=10000.0):
    r"""Rotary position embedding (RoPE, Su et al. 2021): turn each feature pair by an angle ∝ the position.

    .. math::
        \begin{pmatrix} y_{t,2i} \\ y_{t,2i+1} \end{pmatrix} =
        \begin{pmatrix} \cos t\theta_i & -\sin t\theta_i \\ \sin t\theta_i & \cos t\theta_i \end{pmatrix}
        \begin{pmatrix} x_{t,2i} \\ x_{t,2i+1} \end{pmatrix},
        \qquad \theta_i = \mathrm{base}^{-2i/D_h}

    Applied to the queries and the keys (never to the values) of every head,
    after the projections. Why it works: a rotation by :math:`a` followed by
    the transpose of a rotation by :math:`b` is a rotation by :math:`a - b`,
    so :math:`(R_m q)\cdot(R_n k) = q \cdot R_{n-m} k`: the score depends on
    the two positions only through their *offset*. Nothing is added to the
    token embedding and there are no parameters.

    RoPE needs *pairs* of features, so ``Dh`` should be even; with an odd
    ``Dh`` the last feature has no partner and passes through unrotated (the
    offset property still holds: that feature's product ignores positions).
    Pairs are the neighbours (2i, 2i+1), as in the paper; GPT-NeoX and
    LLaMA's code pair (i, i + Dh/2) instead. Either works if q and k use the
    same one; mixing them breaks the offset property (notebook 14's exercise).

    Args: x (..., T, Dh); positions (T,) integers, default 0 .. T-1 (a key/value
    cache passes later positions); base.  Returns: y (..., T, Dh); cache = (cos, sin).
    """
    _check_float("x", x)
    if x.ndim < 2:
        raise ValueError(f"x: expected at least 2 dimensions (..., T, Dh), got shape {tuple(x.shape)}")
    xp = get_array_module(x)
    T, Dh = x.shape[-2], x.shape[-1]
    pos = np.arange(T, dtype=np.float64) if positions is None else np.asarray(positions, dtype=np.float64)
    if pos.shape != (T,):
        raise ValueError(f"positions: expected shape ({T},), one position per row of x, got {pos.shape}")
    angle = pos[:, None] * rope_frequencies(Dh, base)[None, :]        # (T, Dh // 2): t * theta_i, on the CPU
    cos = xp.asarray(np.cos(angle).astype(x.dtype))                   # (T, Dh // 2)
    sin = xp.asarray(np.sin(angle).astype(x.dtype))
    x_even, x_odd = x[..., 0:2 * (Dh // 2):2], x[..., 1::2]            # (..., T, Dh // 2) each
    y = x.copy()                                                       # an odd Dh keeps its last feature
    y[..., 0:2 * (Dh // 2):2] = x_even * cos - x_odd * sin
    y[..., 1::2] = x_even * sin + x_odd * cos
    return y, (cos, sin)


def rope_backward(dy, cache):
    r"""The gradient of a rotation is the inverse rotation: :math:`dx = R^\top dy = R(-t\theta)\, dy`.

    A rotation matrix is orthogonal, so its transpose is its inverse: the
    same pairs turned by the opposite angle (``sin`` changes sign).
    Returns dx (..., T, Dh).
    """
    cos, sin = cache
    Dh = dy.shape[-1]
    dy_even, dy_odd = dy[..., 0:2 * (Dh // 2):2], dy[..., 1::2]
    dx = dy.copy()
    # in the forward pass this was: y_even = x_even cos - x_odd sin,  y_odd = x_even sin + x_odd cos
    dx[..., 0:2 * (Dh // 2):2] = dy_even * cos + dy_odd * sin
    dx[..., 1::2] = -dy_even * sin + dy_odd * cos
    return dx


def alibi_slopes(H):
    r"""ALiBi's per-head slopes (Press et al. 2022, §3): a geometric sequence, no parameters.

    For ``H`` a power of two: :math:`m_h = 2^{-8h/H}`, ``h = 1 .. H`` (for 8
    heads: 1/2, 1/4, ..., 1/256). For other ``H`` the paper takes the slopes
    of the largest power of two ``n < H`` and adds every other slope of
    ``2n`` heads. Each head so looks at its own distance scale: large slopes
    give very local heads, small ones nearly global heads.
    Returns: m (H,) float64.
    """
    if isinstance(H, bool) or not isinstance(H, (int, np.integer)) or H < 1:
        raise ValueError(f"H: expected a positive number of heads, got {H!r}")

    def power_of_two(n):
        return 2.0 ** (-8.0 * np.arange(1, n + 1) / n)

    n = 2 ** int(math.floor(math.log2(H)))
    if n == H:
        return power_of_two(H)
    return np.concatenate([power_of_two(n), power_of_two(2 * n)[0::2][:H - n]])


def alibi_bias(H, Tq, Tk=None, dtype=np.float32):
    r"""ALiBi's bias table: :math:`b_{h,i,j} = -m_h\,|i - j|`, added to the attention scores.

    .. math:: \mathrm{softmax}\!\big(q_i K^\top / \sqrt{d_k} - m_h\,|i - \cdot|\big)

    Press et al. define it for a causal model, :math:`-m_h (i - j)` for keys
    :math:`j \le i` (the causal mask hides the others). For the encoder, whose
    queries also read later keys, we use the symmetric distance
    :math:`|i - j|` (our choice; on the causal part it is the paper's bias).
    One consequence to know: with a symmetric bias and no other position
    signal, an encoder sees a sequence and its mirror image alike (a [CLS]
    token at position 0 breaks the tie).
    Queries are the *last* Tq positions of Tk (as with a key/value cache).
    Returns: bias (H, Tq, Tk), computed on the CPU (a constant table).
    """
    Tk = Tq if Tk is None else Tk
    if Tq < 1 or Tk < Tq:
        raise ValueError(f"Tq, Tk: expected 1 <= Tq <= Tk, got Tq={Tq}, Tk={Tk}")
    i = np.arange(Tk - Tq, Tk, dtype=np.float64)[:, None]                # (Tq, 1) query positions
    j = np.arange(Tk, dtype=np.float64)[None, :]                         # (1, Tk) key positions
    return (-alibi_slopes(H)[:, None, None] * np.abs(i - j)).astype(dtype)   # (H, Tq, Tk)


# --------------------------------------------------------------------------- #
# Masks: boolean, True = "may attend". Combine with &.
# --------------------------------------------------------------------------- #

def causal_mask(Tq, Tk=None):
    """(Tq, Tk) boolean lower-triangular mask: query t may attend to keys <= t."""
    Tk = Tq if Tk is None else Tk
    return np.tril(np.ones((Tq, Tk), dtype=bool))


def local_attention_mask(T, window, causal=False, n_global=0):
    r"""(T, T) boolean band mask of sliding-window attention, with optional global tokens (long text).

    .. math::
        M_{ij} = \big[\,|i-j| \le w\,\big] \ \text{(encoder)}, \qquad
        M_{ij} = \big[\,0 \le i-j \le w\,\big] \ \text{(causal)}, \qquad
        \text{or } i < g \text{ or } j < g

    Each query sees the ``window`` keys before it (and after it, for the
    encoder) and itself; the first ``n_global`` positions (a [CLS] token) see
    and are seen by everyone, as in Longformer (Beltagy et al. 2020) -- in a
    causal model still only looking back. Combine with other masks by ``&``.
    With this mask the full attention is local but still costs T²;
    `local_attention.local_attention` skips the blocks the band leaves out.
    """
    if T < 1 or window < 0 or not 0 <= n_global <= T:
        raise ValueError(f"T, window, n_global: expected T >= 1, window >= 0 and 0 <= n_global <= T, "
                         f"got T={T}, window={window}, n_global={n_global}")
    offset = np.arange(T)[:, None] - np.arange(T)[None, :]               # (T, T): i - j
    band = (offset >= 0) & (offset <= window) if causal else np.abs(offset) <= window
    glob = (np.arange(T)[:, None] < n_global) | (np.arange(T)[None, :] < n_global)
    return band | (glob & (offset >= 0) if causal else glob)


def padding_mask(valid):
    """Turn a (B, T) "is a real token" mask into a (B, 1, 1, T) key mask.

    The two inserted axes broadcast over heads and queries: padding positions
    are hidden as *keys* from every query of every head.
    """
    if valid.dtype != bool:
        raise TypeError(f"valid: expected a boolean (B, T) mask, got dtype {valid.dtype}")
    return valid[:, None, None, :]


# --------------------------------------------------------------------------- #
# Scaled dot-product attention (seed §1.3, §4.1 item 3; Vaswani et al. 2017 eq. 1)
# --------------------------------------------------------------------------- #

def _check_attention_inputs(q, k, v, mask, bias=None):
    for name, a in (("q", q), ("k", k), ("v", v)):
        _check_float(name, a)
        if a.ndim < 2:
            raise ValueError(f"{name}: expected at least 2 dimensions (..., T, Dh), got shape {tuple(a.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"k: expected the same last dimension as q ({q.shape[-1]}), got shape {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"v: expected as many rows as k ({k.shape[-2]} keys), got shape {tuple(v.shape)}")
    # The leading (batch, head) dimensions broadcast, so the scores are (*lead, Tq, Tk).
    try:
        lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    except ValueError:
        raise ValueError(f"k: expected leading dimensions that broadcast with q's {tuple(q.shape[:-2])}, "
                         f"got shape {tuple(k.shape)}") from None
    try:
        np.broadcast_shapes(lead, v.shape[:-2])
    except ValueError:
        raise ValueError(f"v: expected leading dimensions that broadcast with q's and k's {lead}, "
                         f"got shape {tuple(v.shape)}") from None
    scores_shape = lead + (q.shape[-2], k.shape[-2])
    if mask is not None:
        if getattr(mask, "dtype", None) != bool:
            raise TypeError(f"mask: expected a boolean array (True = may attend), got "
                            f"{getattr(mask, 'dtype', type(mask).__name__)}")
        try:
            ok = np.broadcast_shapes(mask.shape, scores_shape) == scores_shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"mask: expected a shape that broadcasts to the scores {scores_shape}, "
                             f"got {tuple(mask.shape)}")
    if bias is not None:
        _check_float("bias", bias)
        try:
            ok = np.broadcast_shapes(bias.shape, scores_shape) == scores_shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"bias: expected a shape that broadcasts to the scores {scores_shape}, "
                             f"got {tuple(bias.shape)}")


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0, rng=None, training=True, bias=None):
    r"""Attention: every query takes a weighted average of the values.

    .. math::
        \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\Big(\frac{QK^\top}{\sqrt{d_k}} + M\Big) V

    1. ``scores = q @ k^T / sqrt(d_k)``: similarity of each query with each key.
       Dividing by ``sqrt(d_k)`` keeps the scores' variance near 1 whatever the
       width; without it the softmax saturates and its gradient vanishes.
    2. Masked positions (``mask == False``) get ``MASK_FILL`` so their weight is 0.
       An optional additive ``bias`` (ALiBi's :math:`-m_h|i-j|`, see `alibi_bias`)
       is added to the scores first; it is a constant, so backward is unchanged.
    3. ``weights = softmax(scores)``: each row is a probability distribution
       over the Tk keys (the article's printed "weights", W2, are not).
    4. A query row with *nothing* it may attend to gets all-zero weights (and
       output 0) rather than the NaN that 0/0 would give.
    5. Optional *attention dropout* (``dropout_p > 0`` in training): some
       weights are zeroed and the rest scaled by 1/(1-p), so a query cannot
       lean on one key alone. Not in Vaswani et al.; BERT and PyTorch's
       ``TransformerEncoderLayer`` do it. The rows no longer sum to 1 exactly,
       only in expectation.
    6. ``out = weights @ v`` (the dropped weights, if any).

    Args: q (..., Tq, Dh); k (..., Tk, Dh); v (..., Tk, Dv); the leading
    dimensions (batch, heads) broadcast. mask: boolean, broadcastable to
    (..., Tq, Tk), True = may attend. dropout_p, rng, training: as `dropout`,
    for step 5 (off by default). bias: None or floats broadcastable to
    (..., Tq, Tk), added to the scores (step 2).
    Returns: out (..., Tq, Dv); weights (..., Tq, Tk) for plotting (before
    dropout); cache.
    """
    _check_attention_inputs(q, k, v, mask, bias)
    xp = get_array_module(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.swapaxes(-1, -2)) * scale                # (..., Tq, Dh) @ (..., Dh, Tk) -> (..., Tq, Tk)
    if bias is not None:
        scores = scores + bias                               # (..., Tq, Tk) + (H, Tq, Tk), e.g. ALiBi
    if mask is not None:
        scores = xp.where(mask, scores, MASK_FILL)
    weights, _ = softmax(scores, axis=-1)                    # (..., Tq, Tk), rows sum to 1
    if mask is not None:
        # Zero every row whose keys are all masked (softmax made it uniform).
        weights = weights * mask.any(axis=-1, keepdims=True)
    dropped, drop_mask = dropout(weights, dropout_p, rng, training)   # weights itself when nothing is dropped
    out = dropped @ v                                        # (..., Tq, Tk) @ (..., Tk, Dv) -> (..., Tq, Dv)
    cache = (q, k, v, weights, scale) + (() if drop_mask is None else (dropped, drop_mask))
    return out, weights, cache


def scaled_dot_product_attention_backward(dout, cache):
    r"""Gradients of attention, one forward line at a time, in reverse.

    .. math::
        dW = dO\,V^\top, \quad dV = W^\top dO, \quad
        dS = W \odot \big(dW - \textstyle\sum_k dW \odot W\big), \quad
        dQ = dS\,K / \sqrt{d_k}, \quad dK = dS^\top Q / \sqrt{d_k}

    Masked positions have weight 0, so ``dS`` is 0 there by itself: no mask
    is needed in backward. With attention dropout, :math:`W` in :math:`dV`
    is the dropped weights, and :math:`dW` passes back through the same
    mask first. Broadcast leading dimensions are summed back to each input's
    own shape. Returns (dq, dk, dv).
    """
    q, k, v, weights, scale, *dropout_cache = cache           # (dropped, mask) after attention dropout
    dropped, drop_mask = dropout_cache if dropout_cache else (weights, None)
    # in the forward pass this was: out = dropped @ v
    ddropped = dout @ v.swapaxes(-1, -2)                     # (..., Tq, Dv) @ (..., Dv, Tk) -> (..., Tq, Tk)
    dv = dropped.swapaxes(-1, -2) @ dout                     # (..., Tk, Tq) @ (..., Tq, Dv) -> (..., Tk, Dv)
    # in the forward pass this was: dropped = dropout(weights)
    dweights = ddropped if drop_mask is None else dropout_backward(ddropped, drop_mask)
    # in the forward pass this was: weights = softmax(scores)
    dscores = softmax_backward(dweights, (weights, -1))      # (..., Tq, Tk)
    # in the forward pass this was: scores = q @ k^T * scale
    dq = (dscores @ k) * scale                               # (..., Tq, Dh)
    dk = (dscores.swapaxes(-1, -2) @ q) * scale              # (..., Tk, Dh)
    return _unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def _unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched, back to ``shape``."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad


# --------------------------------------------------------------------------- #
# Splitting into heads (seed §3.2; Vaswani et al. 2017 §3.2.2)
# --------------------------------------------------------------------------- #

def split_heads(x, H):
    """(B, T, D) -> (B, H, T, Dh): each head sees its own slice of Dh = D / H features."""
    B, T, D = x.shape
    if D % H:
        raise ValueError(f"H: expected a number of heads that divides D={D}, got H={H}")
    return x.reshape(B, T, H, D // H).transpose(0, 2, 1, 3)   # (B, T, H, Dh) -> (B, H, T, Dh)


def merge_heads(x):
    """(B, H, T, Dh) -> (B, T, D): the heads' outputs side by side again (a copy, contiguous)."""
    B, H, T, Dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * Dh)      # (B, T, H, Dh) -> (B, T, D)


def split_heads_backward(dy):
    """Splitting is a reshape, so its backward is the inverse reshape: merge."""
    return merge_heads(dy)


def merge_heads_backward(dy, H):
    """Merging is a reshape, so its backward is the inverse reshape: split."""
    return split_heads(dy, H)


# --------------------------------------------------------------------------- #
# Losses (seed §4.1 item 6: softmax output for classification)
# --------------------------------------------------------------------------- #

def cross_entropy(logits, targets, ignore_index=-100, label_smoothing=0.0):
    r"""Mean cross-entropy between softmax(logits) and the target classes.

    .. math::
        L = -\frac1N \sum_{n} \sum_c y_{n,c} \log \mathrm{softmax}(z_n)_c, \qquad
        y_{n,c} = (1-\varepsilon)[c = t_n] + \varepsilon / C

    ``N`` counts the rows whose target is not ``ignore_index`` (padding in a
    language model). With ``label_smoothing`` ε > 0 the target keeps 1-ε on
    the true class and spreads ε evenly (Szegedy et al. 2016). If every row is
    ignored the loss is 0 (there is nothing to learn), not 0/0.

    Args: logits (..., C) floats; targets (...) integers in [0, C) or ignore_index.
    Returns: loss (a 0-d array); cache.
    """
    _check_float("logits", logits)
    _check_int("targets", targets)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets: expected shape {tuple(logits.shape[:-1])} to match logits "
                         f"{tuple(logits.shape)}, got {tuple(targets.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1), got {label_smoothing}")
    xp = get_array_module(logits)
    C = logits.shape[-1]
    z = logits.reshape(-1, C)                                # (N_all, C)
    t = targets.reshape(-1)                                  # (N_all,)
    keep = t != ignore_index                                 # (N_all,)
    bad = keep & ((t < 0) | (t >= C))
    if bool(bad.any()):
        raise ValueError(f"targets: expected class ids in [0, {C}) or ignore_index={ignore_index}, "
                         f"got {int(t[bad][0])}")
    # A NaN or inf here means the model has already diverged; say so instead of
    # returning a NaN loss that silently poisons every weight on the next update.
    if not bool(xp.isfinite(z).all()):
        raise ValueError("logits: expected finite values, got NaN or inf (the model diverged: "
                         "try a smaller learning rate or gradient clipping)")
    logp, _ = log_softmax(z)                                 # (N_all, C)
    t_safe = xp.where(keep, t, 0)
    y = xp.zeros_like(logp)                                  # (N_all, C) the target distribution
    y[xp.arange(len(t)), t_safe] = 1.0 - label_smoothing
    y += label_smoothing / C
    y *= keep[:, None]
    n = max(int(keep.sum()), 1)
    loss = -(y * logp).sum() / n
    return loss, (logp, y, n, logits.shape)


def cross_entropy_backward(dloss, cache):
    r"""Softmax and cross-entropy fused: :math:`\partial L / \partial z = (p - y) / N`.

    Chaining ``log_softmax_backward`` would give the same numbers in more
    steps; the fused form is why softmax and cross-entropy are always paired.
    Ignored rows have y = 0 and are zeroed. Returns dlogits (..., C).
    """
    logp, y, n, shape = cache
    xp = get_array_module(logp)
    p = xp.exp(logp)
    # rows that were ignored contribute nothing: zero their p as well
    p *= y.sum(axis=1, keepdims=True) > 0
    return ((p - y) * (dloss / n)).reshape(shape)


def distillation_loss(student_logits, teacher_logits, temperature=2.0):
    r"""Knowledge-distillation loss (Hinton et al. 2015).

    .. math::
        L = T^2 \cdot \frac1N \sum_n \mathrm{KL}\big(p^{t}_n \,\|\, p^{s}_n\big), \quad
        p^{t} = \mathrm{softmax}(z^{t} / T), \; p^{s} = \mathrm{softmax}(z^{s} / T)

    The temperature ``T`` softens both distributions so the student also
    learns how the teacher ranks the wrong classes; the factor ``T²`` keeps the
    gradient's size independent of ``T``. The teacher is a constant.

    Args: student_logits, teacher_logits (..., C).  Returns: loss (0-d); cache.
    """
    _check_float("student_logits", student_logits)
    _check_float("teacher_logits", teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"teacher_logits: expected shape {tuple(student_logits.shape)}, "
                         f"got {tuple(teacher_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature: expected a positive number, got {temperature}")
    xp = get_array_module(student_logits)
    C = student_logits.shape[-1]
    logp_s, _ = log_softmax(student_logits.reshape(-1, C) / temperature)   # (N, C)
    logp_t, _ = log_softmax(teacher_logits.reshape(-1, C) / temperature)   # (N, C)
    p_t = xp.exp(logp_t)
    n = logp_s.shape[0]
    loss = temperature ** 2 * (p_t * (logp_t - logp_s)).sum() / n
    return loss, (logp_s, p_t, temperature, n, student_logits.shape)


def distillation_loss_backward(dloss, cache):
    r""":math:`\partial L / \partial z^s = T^2 \cdot \frac{1}{T} (p^s - p^t) / N = T (p^s - p^t) / N`."""
    logp_s, p_t, temperature, n, shape = cache
    xp = get_array_module(logp_s)
    return ((xp.exp(logp_s) - p_t) * (dloss * temperature / n)).reshape(shape)


# --------------------------------------------------------------------------- #
# Compression (seed §2.1): head gates, int8 and binary quantization
# --------------------------------------------------------------------------- #

def head_gate(heads, gate):
    r"""Multiply each head's output by its gate :math:`\xi_h` (Michel, Levy & Neubig 2019).

    .. math:: \mathrm{out}_{b,h,t,:} = \xi_h \cdot \mathrm{head}_{b,h,t,:}

    With every :math:`\xi_h = 1` the layer is unchanged; the gradient
    :math:`\partial L / \partial \xi_h` then says how much the loss would move if
    head ``h`` were turned down, and its size averaged over data is the head's
    *importance*. Setting :math:`\xi_h = 0` is pruning the head.

    Args: heads (B, H, T, Dh); gate (H,). Returns: out (B, H, T, Dh); cache.
    """
    _check_float("heads", heads)
    _check_float("gate", gate)
    if heads.ndim != 4 or gate.shape != (heads.shape[1],):
        raise ValueError(f"gate: expected shape ({heads.shape[1] if heads.ndim == 4 else 'H'},) for heads of shape "
                         f"(B, H, T, Dh), got gate {tuple(gate.shape)} and heads {tuple(heads.shape)}")
    out = heads * gate[:, None, None]                        # (B, H, T, Dh) * (H, 1, 1)
    return out, (heads, gate)


def head_gate_backward(dout, cache):
    r""":math:`d\mathrm{head} = \xi_h\, d\mathrm{out}`, :math:`d\xi_h = \sum_{b,t,d} d\mathrm{out}_{b,h,t,d}\, \mathrm{head}_{b,h,t,d}`.

    Returns (dheads (B, H, T, Dh), dgate (H,)).
    """
    heads, gate = cache
    # in the forward pass this was: out = heads * gate[:, None, None]
    dheads = dout * gate[:, None, None]
    dgate = (dout * heads).sum(axis=(0, 2, 3))               # (B, H, T, Dh) -> (H,)
    return dheads, dgate


INT8_MAX = 127   # symmetric int8: [-127, 127]; -128 is left out so that q and -q both fit


def _channel_axes(w):
    """A weight stored (D_in, D_out), as `linear` reads it, has its output channels on the last axis."""
    return tuple(range(w.ndim - 1))


def int8_scale(w):
    r"""Symmetric per-output-channel scale :math:`s_j = \max_i |w_{ij}| / 127` (errata E9: the scale is the point).

    ``w`` (..., D_out): one scale per column, the largest magnitude of the
    column mapped to 127. A column of zeros gets scale 1 (any scale stores it
    exactly) rather than a division by zero. Returns s (D_out,), w's dtype.
    """
    _check_float("w", w)
    xp = get_array_module(w)
    s = xp.abs(w).max(axis=_channel_axes(w)) / INT8_MAX        # (D_out,)
    return xp.where(s > 0, s, 1.0).astype(w.dtype)


def quantize_int8(w, scale=None):
    r"""Weights to int8 with a per-output-channel scale: :math:`q = \mathrm{clip}(\mathrm{round}(w / s), -127, 127)`.

    ``scale`` (D_out,) defaults to `int8_scale` (max|w| per column / 127), with
    which nothing is clipped; a given smaller scale clips the large weights.
    Rounding is to the nearest integer (half to even), not truncation: the
    error per weight is then at most s/2. Returns (q (..., D_out) int8, scale (D_out,)).
    """
    _check_float("w", w)
    xp = get_array_module(w)
    s = int8_scale(w) if scale is None else scale
    _check_float("scale", s)
    _check_last_dim("scale", s, w.shape[-1])
    q = xp.clip(xp.rint(w / s), -INT8_MAX, INT8_MAX).astype(xp.int8)   # (..., D_out)
    return q, s


def dequantize_int8(q, scale):
    r""":math:`\hat w = s \cdot q`: int8 (..., D_out) and scale (D_out,) back to floats in the scale's dtype."""
    _check_int("q", q)
    _check_float("scale", scale)
    _check_last_dim("scale", scale, q.shape[-1])
    return q.astype(scale.dtype) * scale                      # (..., D_out) * (D_out,)


def fake_quantize_int8(w, scale=None):
    r"""Quantise and dequantise in one step, for quantization-aware training: :math:`\hat w = s \cdot q(w)`.

    Training sees the rounded weights :math:`\hat w` in forward, so it learns
    weights that survive int8. Round has derivative 0 almost everywhere, so
    backward uses the *straight-through estimator* (Bengio et al. 2013):
    it pretends :math:`\hat w = \mathrm{clip}(w, -127 s, 127 s)`, whose
    derivative is 1 inside the range and 0 where the weight was clipped. The
    scale is held constant in backward. With the default scale nothing is
    clipped and the gradient passes unchanged.

    Returns: w_hat (w's shape and dtype); cache.
    """
    q, s = quantize_int8(w, scale)
    w_hat = dequantize_int8(q, s)
    inside = get_array_module(w).abs(w) <= INT8_MAX * s      # (..., D_out): where the surrogate has slope 1
    return w_hat, inside


def fake_quantize_int8_backward(dw_hat, cache):
    r"""Straight-through: :math:`dw = d\hat w \cdot [\,|w| \le 127 s\,]` (a surrogate, not round's true derivative 0)."""
    inside = cache
    return dw_hat * inside


def binarize(w):
    r"""One bit per weight: :math:`\hat w = \alpha_j\,\mathrm{sign}(w_{ij})`, :math:`\alpha_j = \frac1n \sum_i |w_{ij}|`.

    BinaryConnect (Courbariaux et al. 2015) with XNOR-Net's per-output-channel
    scale (Rastegari et al. 2016): the mean magnitude is the scale that
    minimises :math:`\|w - \alpha\,\mathrm{sign}(w)\|^2`. Errata E9: the seed
    says binary quantization "turns floats into a binary representation", but
    every float already is binary; what is meant is *one bit per weight*, plus
    the scale. sign(0) is taken as +1, so that every weight is one of two values.

    Args: w (..., D_out). Returns: w_hat (same shape); cache.
    """
    _check_float("w", w)
    xp = get_array_module(w)
    sign = xp.where(w >= 0, 1.0, -1.0).astype(w.dtype)       # (..., D_out), +1 or -1
    n = w.size // w.shape[-1]
    alpha = xp.abs(w).sum(axis=_channel_axes(w)) / n         # (D_out,)
    return alpha * sign, (w, sign, alpha, n)


def binarize_backward(dw_hat, cache):
    r"""Straight-through estimator for :math:`\hat w = \alpha(w)\,\mathrm{sign}(w)`.

    sign has derivative 0 almost everywhere, so the true gradient would stop
    learning. The surrogate (BinaryConnect's "hard tanh" STE) replaces
    :math:`\mathrm{sign}'(w)` by :math:`1_{|w| \le 1}`; the scale
    :math:`\alpha_j` is differentiated exactly (:math:`\partial\alpha_j / \partial w_{ij} = \mathrm{sign}(w_{ij}) / n`):

    .. math:: dw_{ij} = \alpha_j\, d\hat w_{ij}\, 1_{|w_{ij}| \le 1}
              + \frac{\mathrm{sign}(w_{ij})}{n} \sum_k d\hat w_{kj}\,\mathrm{sign}(w_{kj})

    This is the derivative of :math:`\alpha(w)\,\mathrm{sign}(w_0) + \alpha(w_0)\,\mathrm{clip}(w, -1, 1)` at
    :math:`w = w_0`, which is how the tests check it. It is a choice, not the
    gradient of the forward: it only tells the float "shadow" weights which
    way to move.
    """
    w, sign, alpha, n = cache
    # in the forward pass this was: w_hat = alpha * sign(w), alpha = mean_i |w_ij|
    dsign = dw_hat * alpha * (get_array_module(w).abs(w) <= 1.0)          # sign'(w) ~ 1 on |w| <= 1 (the surrogate)
    dalpha = (dw_hat * sign).sum(axis=_channel_axes(w))                    # (D_out,)
    return dsign + sign * (dalpha / n)


def int8_linear(x, q, w_scale, b=None):
    r"""An int8 matrix product, as integer hardware runs it: :math:`y \approx s_x s_w (q_x q_w) + b`.

    1. Quantise the activations with one *dynamic* per-tensor scale
       :math:`s_x = \max|x| / 127` (computed for this input, at run time).
    2. Multiply int8 by int8 and accumulate in int32: a sum of D_in products
       of at most 127·127 each fits easily (D_in < 133,000).
    3. Rescale the int32 sums by :math:`s_x s_{w,j}` per output column, add the bias.

    Inference only (no backward). Args: x (..., D_in) float; q (D_in, D_out)
    int8; w_scale (D_out,); b (D_out,) or None. Returns y (..., D_out) in x's dtype.
    """
    _check_float("x", x)
    _check_int("q", q)
    _check_last_dim("x", x, q.shape[0])
    xp = get_array_module(x)
    x_scale = float(xp.abs(x).max()) / INT8_MAX or 1.0       # a Python float: no upcast of float32
    x_q = xp.clip(xp.rint(x / x_scale), -INT8_MAX, INT8_MAX).astype(xp.int32)   # (..., D_in) int values
    acc = x_q @ q.astype(xp.int32)                           # (..., D_in) @ (D_in, D_out) -> (..., D_out) int32
    y = acc.astype(x.dtype) * (w_scale.astype(x.dtype) * x_scale)
    return y if b is None else y + b


# Domain adaptation (seed §2.2): gradient reversal and feature matching
# --------------------------------------------------------------------------- #

def gradient_reversal(x, lam=1.0):
    r"""The gradient-reversal layer of DANN (Ganin & Lempitsky 2015).

    .. math:: \text{forward: } y = x, \qquad \text{backward: } \frac{\partial L}{\partial x} = -\lambda \frac{\partial L}{\partial y}

    It sits between the encoder's features and a *domain classifier*. The
    domain classifier learns, as usual, to tell source from target; the
    encoder below the layer receives the *opposite* gradient and so learns
    features that make the two domains hard to tell apart. One network, one
    backward pass, a minimax game. ``lam`` (λ >= 0) weighs that game against
    the task loss. Not a function of ``x`` in the usual sense (no function
    has this derivative): it is defined by what its backward does.

    Args: x (...) floats; lam: a non-negative number.
    Returns: y (...) (``x`` itself: the identity needs no copy); cache = lam.
    """
    _check_float("x", x)
    if not lam >= 0.0:
        raise ValueError(f"lam: expected a non-negative number, got {lam}")
    return x, float(lam)


def gradient_reversal_backward(dy, cache):
    r""":math:`dx = -\lambda\, dy`: the gradient, turned around (a new array)."""
    lam = cache
    # in the forward pass this was: y = x
    return dy * (-lam)


def coral_loss(xs, xt):
    r"""CORAL: the distance between the feature covariances of two domains (Sun & Saenko 2016).

    .. math::
        C_S = \tfrac{1}{n_S - 1} (X_S - \mathbf 1\mu_S^\top)^\top (X_S - \mathbf 1\mu_S^\top), \quad
        C_T = \tfrac{1}{n_T - 1} (X_T - \mathbf 1\mu_T^\top)^\top (X_T - \mathbf 1\mu_T^\top), \\
        L = \frac{1}{4 D^2} \lVert C_S - C_T \rVert_F^2

    Matching second-order statistics pulls the target features (unlabelled
    reviews of another domain) towards the shape of the source features the
    classifier was trained on. The covariances are the unbiased ones
    (``1/(n-1)``), so each domain needs at least two rows; ``1/(4D²)`` is the
    paper's normalisation, which keeps the loss's size independent of the width.

    Args: xs (N_S, D) source features; xt (N_T, D) target features.
    Returns: loss (0-d); cache.
    """
    _check_float("xs", xs)
    _check_float("xt", xt)
    for name, a in (("xs", xs), ("xt", xt)):
        if a.ndim != 2 or a.shape[0] < 2:
            raise ValueError(f"{name}: expected a 2-D array (N, D) with N >= 2 rows, got shape {tuple(a.shape)}")
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(f"xt: expected {xs.shape[1]} features like xs, got shape {tuple(xt.shape)}")
    D = xs.shape[1]
    xs_c = xs - xs.mean(axis=0, keepdims=True)               # (N_S, D) centred
    xt_c = xt - xt.mean(axis=0, keepdims=True)               # (N_T, D) centred
    cs = xs_c.T @ xs_c / (xs.shape[0] - 1)                   # (D, N_S) @ (N_S, D) -> (D, D)
    ct = xt_c.T @ xt_c / (xt.shape[0] - 1)                   # (D, D)
    diff = cs - ct                                           # (D, D)
    loss = (diff * diff).sum() / (4.0 * D * D)
    return loss, (xs_c, xt_c, diff)


def coral_loss_backward(dloss, cache):
    r"""Gradients of CORAL with respect to both domains' features.

    .. math::
        G = \frac{\partial L}{\partial C_S} = \frac{C_S - C_T}{2 D^2}, \quad
        dX_S = \frac{2}{n_S - 1} (X_S - \mathbf 1\mu_S^\top)\, G, \quad
        dX_T = -\frac{2}{n_T - 1} (X_T - \mathbf 1\mu_T^\top)\, G

    ``G`` is symmetric, so :math:`d(X_c^\top X_c) = X_c(G + G^\top) = 2X_cG`.
    The path through the mean adds :math:`-\tfrac1n \mathbf 1 \mathbf 1^\top X_c G`,
    which is zero because centred columns sum to zero: the centring matters in
    the forward pass (and in ``X_c`` here) but adds no term of its own.
    Both domains receive a gradient; ``dX_T`` has the opposite sign.
    Returns (dxs, dxt).
    """
    xs_c, xt_c, diff = cache
    D = diff.shape[0]
    # in the forward pass this was: loss = sum((cs - ct)^2) / (4 D^2)
    g = diff * (dloss / (2.0 * D * D))                       # (D, D) dL/dcs; dL/dct = -g
    # in the forward pass this was: cs = xs_c^T xs_c / (N_S - 1), and the same for ct
    dxs = xs_c @ g * (2.0 / (xs_c.shape[0] - 1))             # (N_S, D) @ (D, D) -> (N_S, D)
    dxt = xt_c @ g * (-2.0 / (xt_c.shape[0] - 1))            # (N_T, D)
    return dxs, dxt

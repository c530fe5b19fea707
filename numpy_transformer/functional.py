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

The end of the file holds *fast twins* of attention, LayerNorm, dropout (and
ReLU with dropout, fused) and the embedding's backward: the same numbers in
fewer passes over memory and on all CPU cores, which the modules of `nn.py`
use. Read the plain versions first; the twins say how they differ.
"""

from __future__ import annotations

import math

import numpy as np

from .backend import get_array_module
from .parallel import for_each_slice

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
# Masks: boolean, True = "may attend". Combine with &.
# --------------------------------------------------------------------------- #

def causal_mask(Tq, Tk=None):
    """(Tq, Tk) boolean lower-triangular mask: query t may attend to keys <= t."""
    Tk = Tq if Tk is None else Tk
    return np.tril(np.ones((Tq, Tk), dtype=bool))


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

def _check_attention_inputs(q, k, v, mask):
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


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0, rng=None, training=True):
    r"""Attention: every query takes a weighted average of the values.

    .. math::
        \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\Big(\frac{QK^\top}{\sqrt{d_k}} + M\Big) V

    1. ``scores = q @ k^T / sqrt(d_k)``: similarity of each query with each key.
       Dividing by ``sqrt(d_k)`` keeps the scores' variance near 1 whatever the
       width; without it the softmax saturates and its gradient vanishes.
    2. Masked positions (``mask == False``) get ``MASK_FILL`` so their weight is 0.
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
    for step 5 (off by default).
    Returns: out (..., Tq, Dv); weights (..., Tq, Tk) for plotting (before
    dropout); cache.
    """
    _check_attention_inputs(q, k, v, mask)
    xp = get_array_module(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.swapaxes(-1, -2)) * scale                # (..., Tq, Dh) @ (..., Dh, Tk) -> (..., Tq, Tk)
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


# =========================================================================== #
# Fast paths: the same formulas in fewer passes over memory
# =========================================================================== #
#
# Read the plain versions above first; each function below computes the same
# numbers as its plain twin (up to float rounding) and says how it differs.
#
# A training step spends most of its time in BLAS matrix products, and the
# plain versions already use BLAS for every one of them. The rest of the time
# goes to element-wise passes over big arrays, where every ``a - b`` allocates
# a third array, reads two and writes one. The twins save such passes with a
# few tricks, each explained where it is used:
#
# * in-place ufuncs (``w -= m``, ``xp.exp(w, out=w)``), only ever on arrays the
#   function itself just created, never on an argument (see the top of this file);
# * one (..., Tq, Tk) buffer that holds the scores and then, in place, the weights;
# * ``einsum`` for a sum of products along one axis: a reduction that writes no
#   temporary array. (Matrix products stay with BLAS.)
# * cheaper random bits for dropout, and ReLU + dropout as one mask;
# * every core: work whose rows are independent (the sequences of attention,
#   the rows of LayerNorm, the elements of a dropout mask) is cut into slices
#   that run at the same time on Python threads (`parallel.for_each_slice`;
#   NumPy releases the interpreter lock inside its loops and BLAS calls).
#
# The modules of `nn.py` call these by default; ``module.use_fast_paths(False)``
# switches a model back to the plain versions. `tests/test_fast_paths.py`
# checks every twin against its plain version in float64, masks included.

# Subtracting the row maximum before ``exp`` (see `softmax`) only protects exp
# from overflowing: softmax is shift-invariant. Cauchy-Schwarz bounds every
# score, |q_i . k_j| <= |q_i| |k_j|. If that bound is below 64, exp(score) lies
# between e^-64 and e^64, far from float32's overflow (e^88.7) and from its
# smallest normal number (e^-87): the shift can be skipped, and with it two
# passes over the (..., Tq, Tk) scores. Above the bound we shift as usual.
_NO_SHIFT_BOUND = 64.0


def _masked_softmax_inplace(scores, mask, shift):
    """Turn ``scores`` (..., Tq, Tk) into the attention weights in place, as the plain version computes them.

    ``shift``: subtract the row maximum first (needed unless the scores are
    known to be small, see ``_NO_SHIFT_BOUND``). Returns the same array.
    """
    xp = get_array_module(scores)
    if mask is not None:
        xp.copyto(scores, MASK_FILL, where=~mask)              # scores = where(mask, scores, MASK_FILL), in place
    if shift:
        scores -= scores.max(axis=-1, keepdims=True)           # (..., Tq, Tk) - (..., Tq, 1)
    xp.exp(scores, out=scores)
    row_sum = scores.sum(axis=-1, keepdims=True)               # (..., Tq, 1); 0 only for a fully masked row
    inv_sum = 1.0 / xp.maximum(row_sum, float(np.finfo(scores.dtype).tiny))   # (the maximum avoids 1/0 there)
    if mask is not None:
        inv_sum *= mask.any(axis=-1, keepdims=True)            # rows with nothing to attend to: weights 0
    scores *= inv_sum                                          # rows sum to 1 (or are all 0)
    return scores


def _softmax_backward_inplace(dweights, weights, row_dot):
    """dscores = weights * (dweights - row_dot), written into ``dweights``; row_dot (..., Tq, 1) = sum_k dW W."""
    dweights -= row_dot
    dweights *= weights
    return dweights


def _batch_rows(q, k, v):
    """How many leading rows attention can be cut into: the first batch axis, if q, k, v share it.

    When the leading axes broadcast (a k shared by every sequence, say), the
    sequences are not independent slices of the inputs: then there is one
    slice, the whole. Returns (n_rows, lead): lead = the scores' leading shape.
    """
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    same = q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
    return (lead[0] if lead and same else 1), lead


def _rows_of(a, rows, ndim):
    """``a[rows]`` if ``a`` has the full ``ndim`` and its own first axis, else ``a`` (it broadcasts there)."""
    if a is None or a.ndim < ndim or a.shape[0] == 1 or rows == slice(None):
        return a
    return a[rows]


def scaled_dot_product_attention_fast(q, k, v, mask=None, out=None, dropout_p=0.0, rng=None, training=True):
    r"""`scaled_dot_product_attention` with one (..., Tq, Tk) buffer instead of seven, on every core.

    Same arguments and results as the plain version, and one more: ``out``,
    an array of the result's shape to write the result into. Multi-head
    attention passes the heads' columns of the merged (B, T, D) array (a
    view), so that merging the heads costs no copy. The plain version
    allocates the product q k^T, the scaled scores, a masked copy, the
    shifted scores, their exponentials, the weights and the zeroed weights:
    seven arrays of (..., Tq, Tk), the largest in the model. Here there is one:

    1. ``q`` is scaled instead of the scores: :math:`(Q/\sqrt{d_k})K^\top =
       (QK^\top)/\sqrt{d_k}`, and (..., Tq, Dh) is Tk/Dh times smaller than
       (..., Tq, Tk). And :math:`K^\top` is copied into its own array first:
       OpenBLAS runs these small products with a transposed second operand
       several times slower than with a plain one (measured 5x with 2
       threads at Tk=128, Dh=32), and the copy is small.
    2. Masked scores are overwritten in place with ``copyto(..., where=~mask)``:
       the same ``MASK_FILL`` as the plain ``np.where``, without its copy.
    3. Softmax in place: (subtract the row maximum,) exponentiate, multiply by
       1 / row sum. The row maximum is skipped when Cauchy-Schwarz shows that
       no score can make ``exp`` overflow (see ``_NO_SHIFT_BOUND``).
    4. A query with no key to attend to gets zero weights by zeroing its
       1 / row sum, a (..., Tq, 1) array, instead of a pass over all weights.
    5. Every sequence of the batch is independent of the others, so the
       sequences are cut into one slice per CPU core and the slices run at
       the same time (`parallel.for_each_slice`), each writing its part of the
       preallocated weights and output. On 2 cores this halves the time of
       the many small per-head products, which BLAS alone cannot spread.
    6. Attention dropout (``dropout_p > 0`` in training) draws its bits as
       `dropout_fast` does, all of them before the slices start (so the mask
       does not depend on how the rows are cut), and keeps the scaled mask;
       ``weights`` stays the undropped softmax, as in the plain version.

    The cache keeps the scaled ``q`` (backward needs it in that form) and
    ``out`` (small: (..., Tq, Dv)), which saves backward a pass over the
    weights (see `scaled_dot_product_attention_fast_backward`).
    Returns: out (..., Tq, Dv); weights (..., Tq, Tk); cache.
    """
    _check_attention_inputs(q, k, v, mask)
    xp = get_array_module(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1])
    n_rows, lead = _batch_rows(q, k, v)
    Tq, Tk, dtype = q.shape[-2], k.shape[-2], np.result_type(q.dtype, k.dtype, v.dtype)
    ndim = len(lead) + 2
    # |score| <= max_i |q_i| * max_j |k_j| * scale: two squared norms per row, small (..., T) arrays
    bound_squared = (float(xp.einsum("...d,...d->...", q, q).max()) * scale ** 2
                     * float(xp.einsum("...d,...d->...", k, k).max()))
    shift = not bound_squared < _NO_SHIFT_BOUND ** 2
    q_scaled = xp.empty(q.shape, dtype=q.dtype)                          # (..., Tq, Dh)
    weights = xp.empty(lead + (Tq, Tk), dtype=dtype)                     # (..., Tq, Tk): scores, then weights
    if out is None:
        out = xp.empty(lead + (Tq, v.shape[-1]), dtype=dtype)            # (..., Tq, Dv)
    drop_scale = None
    if _dropout_is_active(q, dropout_p, rng, training):                  # see 6. above
        threshold = _bits_threshold(dropout_p)
        bits = xp.asarray(_random_uint16(rng, math.prod(weights.shape)).reshape(weights.shape))
        inv_keep = _inverse_keep(threshold, dtype)
        drop_scale = xp.empty(weights.shape, dtype=dtype)                # (..., Tq, Tk): m / (1 - p)

    def attend(rows):           # the sequences in ``rows``, a slice of the first axis
        rows = rows if n_rows > 1 else slice(None)                      # one slice: everything, broadcasting
        q_s, k_s, v_s = (_rows_of(a, rows, ndim) for a in (q, k, v))
        w_s = weights[rows]
        xp.multiply(q_s, scale, out=q_scaled[rows])                     # (..., Tq, Dh)
        k_transposed = xp.ascontiguousarray(k_s.swapaxes(-1, -2))       # (..., Dh, Tk), see 1. above
        xp.matmul(_rows_of(q_scaled, rows, ndim), k_transposed, out=w_s)  # (..., Tq, Dh) @ (..., Dh, Tk): scores
        _masked_softmax_inplace(w_s, _rows_of(mask, rows, ndim), shift)
        if drop_scale is not None:
            xp.multiply(bits[rows] >= threshold, inv_keep, out=drop_scale[rows])
            w_s = w_s * drop_scale[rows]                                   # the dropped weights, this slice only
        xp.matmul(w_s, v_s, out=out[rows])                                 # (..., Tq, Tk) @ (..., Tk, Dv)

    for_each_slice(attend, n_rows, elements_per_row=math.prod(weights.shape[1:]), parallel=xp is np)
    return out, weights, (q_scaled, k, v, weights, out, scale, drop_scale)


def scaled_dot_product_attention_fast_backward(dout, cache, out=None):
    r"""Gradients of `scaled_dot_product_attention_fast`: the plain backward's maths, one shortcut.

    The softmax backward needs, for every query, :math:`\sum_k dW_k W_k`, a
    sum over the Tk keys. Because :math:`dW_k = dO \cdot v_k` and
    :math:`O = \sum_k W_k v_k`,

    .. math:: \textstyle\sum_k dW_k\, W_k = \sum_k (dO \cdot v_k)\, W_k = dO \cdot \sum_k W_k v_k = dO \cdot O,

    a sum over the Dv features of two small arrays instead of a product of
    two (..., Tq, Tk) ones (FlashAttention computes it the same way), as an
    ``einsum`` reduction that writes no temporary array. ``dweights`` then
    becomes ``dscores`` in place. With attention dropout (mask :math:`S`,
    :math:`O = (W \odot S) V`) the same holds: :math:`dW = dD \odot S` for
    the gradient :math:`dD` of the dropped weights, so
    :math:`\sum_k dW_k W_k = \sum_k dD_k (W \odot S)_k = dO \cdot O`.
    As in the forward pass, the sequences of the batch are cut into slices
    that run on all cores at once; each slice has its own small ``dweights``
    buffer.

    ``out``: None, or three arrays (dq, dk, dv) of the shapes of q, k and v to
    write the gradients into (multi-head attention passes the q, k and v
    slots of one (B, T, 3D) gradient, so that nothing is copied there).
    Returns (dq, dk, dv).
    """
    q_scaled, k, v, weights, o, scale, drop_scale = cache
    xp = get_array_module(dout)
    if out is None:
        out = (None, None, None)
    elif (len({q_scaled.shape[:-2], k.shape[:-2], v.shape[:-2]}) != 1
          or tuple(getattr(a, "shape", None) for a in out) != (q_scaled.shape, k.shape, v.shape)):
        raise ValueError(f"out: expected three arrays shaped like q, k, v {(q_scaled.shape, k.shape, v.shape)}, which "
                         f"must not broadcast, got {tuple(getattr(a, 'shape', None) for a in out)}")
    n_rows, lead = _batch_rows(q_scaled, k, v)
    ndim = len(lead) + 2
    # Gradients of the scores' leading shape; summed back to q's, k's, v's shapes at the end if they broadcast.
    dq, dk, dv = (o_ if o_ is not None else xp.empty(lead + a.shape[-2:], dtype=dout.dtype)
                  for o_, a in zip(out, (q_scaled, k, v)))

    def backward_rows(rows):
        rows = rows if n_rows > 1 else slice(None)
        dout_s, o_s, w_s = dout[rows], o[rows], weights[rows]
        q_s, k_s, v_s = (_rows_of(a, rows, ndim) for a in (q_scaled, k, v))
        # in the forward pass this was: out = weights @ v (the dropped weights, with attention dropout)
        v_transposed = xp.ascontiguousarray(v_s.swapaxes(-1, -2))  # (..., Dv, Tk): a plain operand, as k^T in forward
        dweights = dout_s @ v_transposed                           # (..., Tq, Dv) @ (..., Dv, Tk) -> (..., Tq, Tk)
        dropped = w_s if drop_scale is None else w_s * drop_scale[rows]   # what multiplied v in forward
        xp.matmul(dropped.swapaxes(-1, -2), dout_s, out=dv[rows])  # (..., Tk, Tq) @ (..., Tq, Dv) -> (..., Tk, Dv)
        if drop_scale is not None:
            dweights *= drop_scale[rows]                           # back through the dropout mask
        # in the forward pass this was: weights = softmax(scores); dscores = W * (dW - sum_k dW W), in place
        row_dot = xp.einsum("...d,...d->...", dout_s, o_s)[..., None]   # (..., Tq, 1): sum_k dW W = dO . O
        dscores = _softmax_backward_inplace(dweights, w_s, row_dot)
        # in the forward pass this was: scores = q_scaled @ k^T, q_scaled = q * scale
        dq_s = xp.matmul(dscores, k_s, out=dq[rows])               # (..., Tq, Tk) @ (..., Tk, Dh) -> (..., Tq, Dh)
        dq_s *= scale
        xp.matmul(dscores.swapaxes(-1, -2), q_s, out=dk[rows])     # (..., Tk, Tq) @ (..., Tq, Dh) -> (..., Tk, Dh)

    for_each_slice(backward_rows, n_rows, elements_per_row=math.prod(weights.shape[1:]), parallel=xp is np)
    return _unbroadcast(dq, q_scaled.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def layernorm_fast(x, gamma, beta, eps=1e-5):
    r"""`layernorm` in fewer passes; the same cache, so either backward can follow it.

    The centred ``x - mean`` is turned into ``xhat`` in place; the means are
    matrix-vector products with the vector [1/D, ..., 1/D] (one BLAS call,
    several times faster than NumPy's reduction along short rows); and the
    variance is a row-wise dot product, ``einsum("nd,nd->n")``, which sums
    the squares without first writing them to an (N, D) array. Every row is
    normalised on its own, so the rows are cut into slices that run on all
    cores (`parallel.for_each_slice`).

    Args: x (..., D); gamma, beta (D,).  Returns: y (..., D); cache = (xhat, rstd, gamma).
    """
    _check_float("x", x)
    D = x.shape[-1]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p.shape != (D,):
            raise ValueError(f"{name}: expected shape ({D},), got {tuple(p.shape)}")
    y, xhat, rstd = _layernorm_rows_fast(x.reshape(-1, D), gamma, beta, eps)   # (N, D), (N, D), (N, 1)
    lead = x.shape[:-1]
    return y.reshape(x.shape), (xhat.reshape(x.shape), rstd.reshape(*lead, 1), gamma)


def layernorm_fast_backward(dy, cache):
    r"""`layernorm_backward` in fewer passes: the same formula for ``dx``, built in place.

    ``dgamma`` and the row means of ``dxhat * xhat`` are ``einsum``
    reductions (no (N, D) temporary); the other sums are matrix-vector
    products, as in `layernorm_fast`. ``dx`` is computed on row slices in
    parallel; ``dgamma`` and ``dbeta`` sum over all rows, so they are
    computed whole (the same sums however many cores). Returns (dx, dgamma, dbeta).
    """
    xhat, rstd, gamma = cache
    xp = get_array_module(dy)
    D = xhat.shape[-1]
    dy2, xhat2, rstd2 = dy.reshape(-1, D), xhat.reshape(-1, D), rstd.reshape(-1, 1)   # (N, D), (N, D), (N, 1)
    # in the forward pass this was: y = xhat * gamma + beta
    dgamma = xp.einsum("nd,nd->d", dy2, xhat2)                   # (D,) = sum over rows of dy * xhat
    dbeta = xp.ones(dy2.shape[0], dtype=dy.dtype) @ dy2          # (D,) = sum over rows of dy
    dx = xp.empty(dy2.shape, dtype=dy.dtype)                     # (N, D)
    average = xp.full((D,), 1.0 / D, dtype=dy.dtype)

    def rows(s):
        dx_s, xhat_s = dx[s], xhat2[s]
        xp.multiply(dy2[s], gamma, out=dx_s)                     # dxhat, made dx in place below
        # in the forward pass this was: xhat = (x - mean) * rstd
        mean_dxhat_xhat = xp.einsum("nd,nd->n", dx_s, xhat_s)[:, None] * (1.0 / D)   # (n, 1)
        dx_s -= (dx_s @ average)[:, None]                        # dxhat - mean(dxhat)
        dx_s -= xhat_s * mean_dxhat_xhat
        dx_s *= rstd2[s]

    for_each_slice(rows, dx.shape[0], elements_per_row=D, parallel=xp is np)
    return dx.reshape(dy.shape), dgamma, dbeta


def _random_uint16(rng, n):
    """``n`` uniform 16-bit integers from ``rng``'s bit generator: four from each raw 64-bit draw.

    ``random_raw`` hands out the generator's own 64-bit outputs with no
    conversion at all, the cheapest random numbers NumPy makes. They are
    split by viewing them as uint16, so the result depends on the machine's
    byte order (every usual CPU is little-endian).
    """
    return rng.bit_generator.random_raw(-(-n // 4)).view(np.uint16)[:n]     # (n,) uint16, on the CPU


def _bits_threshold(p):
    """The 16-bit threshold of the fast dropouts: P(bits < threshold) = p, p quantised to a multiple of 1/65536."""
    return min(round(p * 65536), 65535)


def _inverse_keep(threshold, dtype):
    """1 / (1 - p) for the quantised p, as a scalar of ``dtype`` (a float32 for float32 arrays: no upcast)."""
    return np.dtype(dtype).type(1.0 / (1.0 - threshold / 65536))


def _kept_and_scaled(x, bits, threshold, relu):
    """y = x * scale and scale = keep / (1 - p), with keep = (bits >= threshold) [and x > 0], over row slices.

    ``bits`` None: no dropout, keep = (x > 0) (``relu`` must be True).
    The work after drawing the bits is element-wise, so the rows of ``x`` are
    cut into slices that run on all cores (`parallel.for_each_slice`); the
    bits were drawn before, in one call, so the mask does not depend on how
    the rows are cut. Returns (y, scale), two new arrays shaped like ``x``.
    """
    xp = get_array_module(x)
    inv_keep = _inverse_keep(threshold, x.dtype)
    if bits is not None:
        bits = xp.asarray(bits.reshape(x.shape))                       # (...) uint16; to the GPU there
    scale = xp.empty(x.shape, dtype=x.dtype)
    y = xp.empty(x.shape, dtype=x.dtype)

    def rows(s):
        s = s if x.ndim else ...                                         # a 0-d x has no rows to slice
        if bits is None:                                                 # ReLU alone
            keep = x[s] > 0
        else:
            keep = bits[s] >= threshold                                  # bool, True = keep
            if relu:
                keep &= x[s] > 0                                         # ReLU: a negative input is "dropped" too
        xp.multiply(keep, inv_keep, out=scale[s])                        # m / (1 - p), p quantised
        xp.multiply(x[s], scale[s], out=y[s])

    for_each_slice(rows, x.shape[0] if x.ndim else 1, elements_per_row=math.prod(x.shape[1:]), parallel=xp is np)
    return y, scale


def dropout_fast(x, p, rng, training=True):
    r"""`dropout` with cheaper random bits (16 per element instead of a float32), on all cores.

    Drawing one float32 in [0, 1) per element costs more than all the rest
    of dropout. Here each element gets 16 raw random bits from ``rng`` and is
    kept when they are at least ``round(p * 65536)``. So ``p`` is quantised to
    a multiple of 1/65536 (0.1 becomes 6554/65536 = 0.100006); the scale uses
    the same quantised ``p``, so the expectation of ``y`` is still exactly ``x``.
    The element-wise rest runs on row slices in parallel (`_kept_and_scaled`).

    The mask still comes from ``rng`` only, on the CPU: the same seed gives the
    same bits. They are different bits from `dropout`'s for the same seed.
    The cache is the same as `dropout`'s (the scaled mask), so either
    backward (`dropout_backward`, `dropout_fast_backward`) can follow.

    Args and returns as `dropout`.
    """
    if not _dropout_is_active(x, p, rng, training):
        return x, None
    threshold = _bits_threshold(p)
    bits = _random_uint16(rng, math.prod(x.shape))           # (n,) uint16, on the CPU
    return _kept_and_scaled(x, bits, threshold, relu=False)


def dropout_fast_backward(dy, cache):
    """`dropout_backward` on row slices in parallel: dx = dy * scale, a new array."""
    scale = cache
    if scale is None:
        return dy.copy()
    xp = get_array_module(dy)
    dx = xp.empty(dy.shape, dtype=np.result_type(dy.dtype, scale.dtype))

    def rows(s):
        s = s if dy.ndim else ...
        xp.multiply(dy[s], scale[s], out=dx[s])

    for_each_slice(rows, dy.shape[0] if dy.ndim else 1, elements_per_row=math.prod(dy.shape[1:]), parallel=xp is np)
    return dx


def relu_dropout_fast(x, p, rng, training=True):
    r"""ReLU followed by dropout, as one pass: :math:`y = \max(0, x) \odot m / (1-p)`.

    Both are a multiplication by a mask: ReLU keeps the elements with
    :math:`x > 0`, dropout the ones whose random bits say so. Since
    :math:`\max(0, x) = x \cdot [x > 0]`,

    .. math:: y = x \odot \big([x > 0] \wedge m\big) / (1-p),

    one combined mask, one multiplication, and one cached array instead of
    two. Backward is a single multiplication too, because the chain rule
    through both steps multiplies ``dy`` by the same combined mask:
    ``dx = dy * scale`` (`dropout_fast_backward`). The feed-forward network
    uses it for ``drop(relu(x W_1 + b_1))``.

    With dropout off (``training=False`` or ``p = 0``) it is ReLU alone, in the
    same form (the mask is [x > 0]). Random bits as `dropout_fast`.
    Args as `dropout`. Returns: y (...); cache = the combined scaled mask.
    """
    if not _dropout_is_active(x, p, rng, training):
        return _kept_and_scaled(x, None, 0, relu=True)      # ReLU alone: scale = [x > 0]
    threshold = _bits_threshold(p)
    bits = _random_uint16(rng, math.prod(x.shape))
    return _kept_and_scaled(x, bits, threshold, relu=True)


def _layernorm_rows_fast(x2, gamma, beta, eps):
    """The rows of layernorm_fast's forward: (y, xhat, rstd) for (N, D) rows ``x2``."""
    xp = get_array_module(x2)
    N, D = x2.shape
    average = xp.full((D,), 1.0 / D, dtype=x2.dtype)            # (D,): x2 @ average = the row means
    xhat, y = xp.empty((N, D), dtype=x2.dtype), xp.empty((N, D), dtype=x2.dtype)
    rstd = xp.empty((N, 1), dtype=x2.dtype)

    def rows(s):
        xhat_s = xhat[s]
        xp.subtract(x2[s], (x2[s] @ average)[:, None], out=xhat_s)   # x - mean, made xhat in place below
        var = xp.einsum("nd,nd->n", xhat_s, xhat_s)[:, None] * (1.0 / D)   # (n, 1), biased like the paper
        xp.divide(1.0, xp.sqrt(var + eps), out=rstd[s])
        xhat_s *= rstd[s]
        xp.multiply(xhat_s, gamma, out=y[s])
        y[s] += beta

    for_each_slice(rows, N, elements_per_row=D, parallel=xp is np)
    return y, xhat, rstd


def embedding_backward_fast(dy, cache):
    r"""`embedding_backward` as one ``bincount`` instead of ``add.at``.

    ``add.at`` must handle an id that repeats, so it adds one row of D numbers
    at a time: thousands of small steps. Here every number gets its own
    index into the flattened (V * D) table, ``ids[n] * D + d``, and one
    ``bincount(index, weights=dy)`` call sums all equal indices at once,
    whatever the ids. ``bincount`` adds in float64, so the sum is at least
    as accurate as ``add.at``'s; the result is cast back to ``dy``'s dtype.

    Args and returns as `embedding_backward`: dE (V, D).
    """
    ids, (V, D) = cache
    xp = get_array_module(dy)
    index = ids.reshape(-1, 1) * D + xp.arange(D)                        # (N, D): row ids[n], column d
    dE = xp.bincount(index.reshape(-1), weights=dy.reshape(-1), minlength=V * D)   # (V * D,) float64
    return dE.reshape(V, D).astype(dy.dtype, copy=False)

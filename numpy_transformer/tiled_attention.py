r"""Memory-lean attention: keys in blocks and the online softmax (an advanced chapter).

Read `functional.scaled_dot_product_attention` first. It builds the whole
(..., Tq, Tk) matrix of scores and then of weights, and keeps the weights for
backward: memory that grows as T². At T = 4096 with 8 heads and a batch of 16
that is 8 GiB in float32, for one layer.

Rabe & Staats (2021, "Self-attention does not need O(n²) memory") and Dao et
al. (2022, FlashAttention) compute exactly the same result while holding only
a block of Tk columns at a time. The trick is the *online softmax*: the
softmax of a row can be built from pieces, as long as we remember, per query,
the largest score seen so far ``m`` and the sum of exponentials ``l``
measured against it. When a new block brings a larger maximum, everything
accumulated so far is rescaled by :math:`e^{m_{old} - m_{new}}`.

Forward, for each block j of keys and values (K_j, V_j: Bk rows):

.. math::
    S_j &= Q K_j^\top / \sqrt{d_k}\ (\text{masked})  &&(..., T_q, B_k) \\
    m' &= \max(m,\ \mathrm{rowmax}\, S_j), \qquad P_j = e^{S_j - m'} \\
    l &\leftarrow l\, e^{m - m'} + \mathrm{rowsum}\, P_j \\
    O &\leftarrow O\, e^{m - m'} + P_j V_j, \qquad m \leftarrow m'

and at the end :math:`O \leftarrow O / l`. The only thing kept for backward
besides Q, K, V and O is one number per query, the log-sum-exp
:math:`L = m + \log l`: with it, any block of weights can be *recomputed*
exactly as :math:`P_j = e^{S_j - L}`.

Backward recomputes each block's weights instead of storing them (compute
traded for memory, as the style guide asks us to say):

.. math::
    D &= \mathrm{rowsum}(dO \odot O) \quad (= \textstyle\sum_k dW_k W_k, \text{ see }
        `fast.scaled_dot_product_attention_fast_backward`) \\
    dV_j &= P_j^\top dO, \quad dP_j = dO\, V_j^\top, \quad dS_j = P_j \odot (dP_j - D) \\
    dQ &\mathrel{+}= dS_j K_j / \sqrt{d_k}, \quad dK_j = dS_j^\top Q / \sqrt{d_k}

Extra memory in both passes: O(Tq · Bk) per (batch, head) instead of O(Tq · Tk):
it grows linearly in T. The loop over key blocks is the algorithm itself;
inside a block every product is one batched BLAS call. On a CPU with NumPy
this is a little slower than the plain version (more, smaller products);
on a GPU, written as one fused kernel, it is much faster, because the
scores never leave the chip's fast memory. `benchmarks/attention_sweep.py`
measures the memory.

Masks follow `functional.py`: boolean, True = may attend, broadcastable to
(..., Tq, Tk); a query with nothing to attend to gets output 0 and gradient 0.
"""

from __future__ import annotations

import math

import numpy as np

from . import functional as F
from .backend import get_array_module

__all__ = ["tiled_attention", "tiled_attention_backward"]


def _key_block(mask, start, stop):
    """The mask's columns for keys start:stop (a mask that broadcasts over keys has just one)."""
    if mask is None or mask.shape[-1] == 1:
        return mask
    return mask[..., start:stop]


def _scores(q_scaled, k_transposed_block, mask_block, xp):
    """S_j = (q * scale) K_j^T, masked positions set to MASK_FILL. (..., Tq, Bk)."""
    scores = q_scaled @ k_transposed_block                    # (..., Tq, Dh) @ (..., Dh, Bk) -> (..., Tq, Bk)
    if mask_block is not None:
        xp.copyto(scores, F.MASK_FILL, where=~mask_block)
    return scores


def tiled_attention(q, k, v, mask=None, block_size=64):
    r"""Scaled dot-product attention, keys processed ``block_size`` at a time with the online softmax.

    Args: q (..., Tq, Dh); k (..., Tk, Dh); v (..., Tk, Dv); mask boolean,
    broadcastable to (..., Tq, Tk), True = may attend; block_size Bk, the
    number of keys per block (memory is O(Tq * Bk) per batch and head).
    Returns: out (..., Tq, Dv), equal to `functional.scaled_dot_product_attention`'s;
    cache for `tiled_attention_backward`. There are no weights to return:
    never holding them all is the point.
    """
    F._check_attention_inputs(q, k, v, mask)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: expected a positive integer, got {block_size!r}")
    xp = get_array_module(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1])
    q_scaled = q * scale                                               # (..., Tq, Dh), scaled once for all blocks
    # K^T as its own array, as in fast.scaled_dot_product_attention_fast (BLAS prefers a plain operand)
    k_transposed = xp.ascontiguousarray(k.swapaxes(-1, -2))            # (..., Dh, Tk)
    Tk = k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    m = xp.full(lead + (q.shape[-2], 1), -math.inf, dtype=q.dtype)     # (..., Tq, 1) running max
    l = xp.zeros(lead + (q.shape[-2], 1), dtype=q.dtype)               # (..., Tq, 1) running sum of exp
    out = xp.zeros(lead + (q.shape[-2], v.shape[-1]), dtype=q.dtype)   # (..., Tq, Dv) running numerator
    for start in range(0, Tk, block_size):
        stop = min(start + block_size, Tk)
        scores = _scores(q_scaled, k_transposed[..., start:stop], _key_block(mask, start, stop), xp)  # (..., Tq, Bk)
        m_new = xp.maximum(m, scores.max(axis=-1, keepdims=True))      # (..., Tq, 1)
        rescale = xp.exp(m - m_new)                                    # (..., Tq, 1), 0 at the first block
        p = xp.exp(scores - m_new)                                     # (..., Tq, Bk), unnormalised weights
        l = l * rescale + p.sum(axis=-1, keepdims=True)
        out = out * rescale + p @ v[..., start:stop, :]                # (..., Tq, Bk) @ (..., Bk, Dv)
        m = m_new
    out /= l
    lse = m + xp.log(l)                                                # (..., Tq, 1) log-sum-exp per query
    if mask is not None:
        # a query with nothing to attend to: output 0, and weights exp(S - inf) = 0 when backward recomputes them
        has_key = mask.any(axis=-1, keepdims=True)                     # broadcastable to (..., Tq, 1)
        out *= has_key
        lse = xp.where(has_key, lse, math.inf)
    return out, (q_scaled, k, k_transposed, v, mask, out, lse, scale, block_size)


def tiled_attention_backward(dout, cache):
    r"""Gradients of `tiled_attention`, recomputing each block's weights from the log-sum-exp.

    Returns (dq, dk, dv), equal to `functional.scaled_dot_product_attention_backward`'s.
    """
    q_scaled, k, k_transposed, v, mask, out, lse, scale, block_size = cache
    xp = get_array_module(dout)
    Tk = k.shape[-2]
    lead = lse.shape[:-2]
    D = (dout * out).sum(axis=-1, keepdims=True)                       # (..., Tq, 1) = sum_k dW_k W_k
    v_transposed = xp.ascontiguousarray(v.swapaxes(-1, -2))            # (..., Dv, Tk)
    dq = xp.zeros(lead + q_scaled.shape[-2:], dtype=q_scaled.dtype)    # (..., Tq, Dh)
    dk = xp.empty(lead + k.shape[-2:], dtype=k.dtype)                  # (..., Tk, Dh)
    dv = xp.empty(lead + v.shape[-2:], dtype=v.dtype)                  # (..., Tk, Dv)
    for start in range(0, Tk, block_size):
        stop = min(start + block_size, Tk)
        k_block = k[..., start:stop, :]                                # (..., Bk, Dh)
        # in the forward pass this was: P_j = exp(S_j - m') / l, the block's weights, recomputed
        scores = _scores(q_scaled, k_transposed[..., start:stop], _key_block(mask, start, stop), xp)
        weights = xp.exp(scores - lse)                                 # (..., Tq, Bk)
        # in the forward pass this was: O = sum_j P_j V_j
        dv[..., start:stop, :] = weights.swapaxes(-1, -2) @ dout       # (..., Bk, Tq) @ (..., Tq, Dv)
        dweights = dout @ v_transposed[..., start:stop]                # (..., Tq, Dv) @ (..., Dv, Bk)
        # in the forward pass this was: weights = softmax(scores) over all key blocks together
        dscores = weights * (dweights - D)                             # (..., Tq, Bk)
        # in the forward pass this was: S_j = (q * scale) K_j^T
        dq += dscores @ k_block                                        # (..., Tq, Bk) @ (..., Bk, Dh)
        dk[..., start:stop, :] = dscores.swapaxes(-1, -2) @ q_scaled   # (..., Bk, Tq) @ (..., Tq, Dh)
    dq *= scale
    return F._unbroadcast(dq, q_scaled.shape), F._unbroadcast(dk, k.shape), F._unbroadcast(dv, v.shape)

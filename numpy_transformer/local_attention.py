r"""Local (sliding-window) attention, computed block by block: time and memory grow as T·w, not T².

Read `functional.local_attention_mask` first: the simple way to make attention
local is a *band mask*. Query i may attend to key j when

.. math::
    |i - j| \le w \ \ (\text{encoder}), \qquad 0 \le i - j \le w \ \ (\text{causal}),

and, with ``n_global`` *global tokens* (Longformer, Beltagy et al. 2020), also
when i or j is one of the first ``n_global`` positions ([CLS]): they attend to
everything and everything attends to them. With the mask, the full attention
of `functional.scaled_dot_product_attention` gives the right numbers, but it
still computes all T² scores and then throws away all but about T·(2w+1).

This module computes only what the band keeps. The queries are cut into
blocks of ``block_size`` rows; for each block, only the *key blocks*
(``key_block_size`` columns each) that meet the band are read, plus the
global keys. Every other key block is skipped: it would be masked anyway.
The global queries form one more block that reads every key (n_global · T).
Inside a block the scores are a small dense matrix, masked and softmaxed
exactly as the plain version does (the keys a block does not read are
precisely the ones the mask would zero), so the result equals the masked
full attention up to rounding. Per block:

.. math::
    S = Q_b K_{sel}^\top / \sqrt{d_k} - m_h|i-j|\ (\text{ALiBi, optional}),\quad
    W = \mathrm{softmax}(S\ \text{masked}), \quad O_b = W V_{sel}

Backward, per block, the familiar attention backward on the small matrices,
with the key and value gradients added back into the rows they came from:

.. math::
    dW = dO_b V_{sel}^\top, \quad dV_{sel} \mathrel{+}= W^\top dO_b, \quad
    dS = W \odot (dW - \textstyle\sum_k dW \odot W), \quad
    dQ_b = dS K_{sel} / \sqrt{d_k}, \quad dK_{sel} \mathrel{+}= dS^\top Q_b / \sqrt{d_k}

The weights of every block are kept for backward: about T·(2w + block sizes
+ n_global) numbers per (batch, head), linear in T. (Recomputing them, as
`tiled_attention` does, would save that memory too; here the band is what
makes the memory small.) `block_grid` returns which (query block, key block)
pairs are computed, for the picture in notebook 14.

Shapes: q, k, v (..., T, Dh) with the same leading shape (batch, heads);
self-attention only (Tq = Tk = T).
"""

from __future__ import annotations

import math

import numpy as np

from . import functional as F
from .backend import get_array_module

__all__ = ["local_attention", "local_attention_backward", "block_grid"]


def _check_sizes(T, window, n_global, block_size, key_block_size):
    for name, value, low in (("window", window, 0), ("n_global", n_global, 0), ("block_size", block_size, 1),
                             ("key_block_size", key_block_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    if n_global > T:
        raise ValueError(f"n_global: expected at most T={T} global tokens, got {n_global}")


def _query_blocks(T, n_global, block_size):
    """(start, stop) of each query block: the global rows first (one block), then blocks of ``block_size``."""
    blocks = [(0, n_global)] if n_global else []
    return blocks + [(s, min(s + block_size, T)) for s in range(n_global, T, block_size)]


def _key_range(start, stop, T, window, causal, n_global, key_block_size):
    """The key positions query rows start:stop read: whole key blocks that meet the band, and the global keys.

    Returns a sorted array of key indices (the global keys 0:n_global, then one contiguous run).
    """
    if start < n_global:                                   # global queries attend to every key
        return np.arange(T)
    lo = max(start - window, 0)                            # the band of rows start .. stop-1
    hi = min(stop - 1 + (0 if causal else window) + 1, T)
    lo = (lo // key_block_size) * key_block_size           # widen to whole key blocks
    hi = min(-(-hi // key_block_size) * key_block_size, T)
    if lo <= n_global:
        return np.arange(0, hi)
    return np.concatenate([np.arange(n_global), np.arange(lo, hi)])


def _allowed(rows, cols, window, causal, n_global):
    """The band mask for query positions ``rows`` (Bq,) and key positions ``cols`` (n,): (Bq, n) bool."""
    offset = rows[:, None] - cols[None, :]                 # i - j
    band = (offset >= 0) & (offset <= window) if causal else np.abs(offset) <= window
    glob = (rows[:, None] < n_global) | (cols[None, :] < n_global)
    if causal:
        glob &= offset >= 0                                # a global token still never reads the future
    return band | glob


def _mask_block(mask, rows, cols):
    """The user's mask (broadcastable to (..., T, T)) at query rows ``rows`` (a slice) and key indices ``cols``."""
    if mask is None:
        return None
    m = mask if mask.shape[-2] == 1 else mask[..., rows, :]
    return m if m.shape[-1] == 1 else m[..., cols]


def local_attention(q, k, v, window, causal=False, n_global=0, mask=None, alibi_slopes=None, block_size=64,
                    key_block_size=None):
    r"""Sliding-window attention that reads only the key blocks inside the band.

    Args: q, k, v (..., T, Dh) (v may have another last size Dv), the same
    leading shape; window w: each query reads the w keys before it (and the w
    after it unless ``causal``), itself included; n_global: the first n
    positions are global; mask: None or boolean broadcastable to
    (..., T, T), True = may attend (a padding mask (B, 1, 1, T)), combined
    with the band by ``&``; alibi_slopes: None or (H,) slopes, the leading
    axis just before T being the heads (adds :math:`-m_h|i-j|`, as
    `functional.alibi_bias`); block_size, key_block_size: rows per query
    block and columns per key block (key_block_size defaults to block_size).
    Returns: out (..., T, Dv), equal to the masked full attention; cache.
    """
    F._check_attention_inputs(q, k, v, mask)
    T = q.shape[-2]
    key_block_size = block_size if key_block_size is None else key_block_size
    _check_sizes(T, window, n_global, block_size, key_block_size)
    if not q.shape[:-1] == k.shape[:-1] == v.shape[:-1]:
        raise ValueError(f"k, v: local attention is self-attention with one leading shape; expected (..., T) = "
                         f"{tuple(q.shape[:-1])} for q, k and v, got {tuple(k.shape[:-1])} and {tuple(v.shape[:-1])}")
    xp = get_array_module(q, k, v)
    if alibi_slopes is not None:
        if q.ndim < 3 or len(alibi_slopes) != q.shape[-3]:
            raise ValueError(f"alibi_slopes: expected one slope per head ({q.shape[-3] if q.ndim >= 3 else '?'} "
                             f"heads on the axis before T), got {len(alibi_slopes)}")
        alibi_slopes = np.asarray(alibi_slopes, dtype=np.float64)
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = xp.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)          # (..., T, Dv)
    blocks = []
    for start, stop in _query_blocks(T, n_global, block_size):
        rows = np.arange(start, stop)                                     # (Bq,) query positions
        cols = _key_range(start, stop, T, window, causal, n_global, key_block_size)   # (n,) key positions
        allowed = _allowed(rows, cols, window, causal, n_global)          # (Bq, n), on the CPU
        allowed = xp.asarray(allowed)
        user = _mask_block(mask, slice(start, stop), cols)
        if user is not None:
            allowed = allowed & user                                      # (..., Bq, n)
        k_sel, v_sel = k[..., cols, :], v[..., cols, :]                   # (..., n, Dh), (..., n, Dv): copies
        scores = (q[..., start:stop, :] @ k_sel.swapaxes(-1, -2)) * scale  # (..., Bq, Dh) @ (..., Dh, n)
        if alibi_slopes is not None:
            distance = np.abs(rows[:, None] - cols[None, :]).astype(np.float64)        # (Bq, n)
            scores = scores + xp.asarray((-alibi_slopes[:, None, None] * distance).astype(q.dtype))  # (H, Bq, n)
        scores = xp.where(allowed, scores, F.MASK_FILL)
        weights, _ = F.softmax(scores, axis=-1)                           # (..., Bq, n)
        weights = weights * allowed.any(axis=-1, keepdims=True)           # nothing to attend to: zeros
        out[..., start:stop, :] = weights @ v_sel                         # (..., Bq, n) @ (..., n, Dv)
        blocks.append((start, stop, cols, weights))
    return out, (q, k, v, scale, blocks)


def local_attention_backward(dout, cache):
    r"""Gradients of `local_attention`, block by block; returns (dq, dk, dv) like the masked full attention's."""
    q, k, v, scale, blocks = cache
    xp = get_array_module(dout)
    dq = xp.zeros(q.shape, dtype=dout.dtype)
    dk = xp.zeros(k.shape, dtype=dout.dtype)
    dv = xp.zeros(v.shape, dtype=dout.dtype)
    for start, stop, cols, weights in blocks:
        dout_b, q_b = dout[..., start:stop, :], q[..., start:stop, :]     # (..., Bq, Dv), (..., Bq, Dh)
        k_sel, v_sel = k[..., cols, :], v[..., cols, :]
        # in the forward pass this was: out_b = weights @ v_sel
        dweights = dout_b @ v_sel.swapaxes(-1, -2)                        # (..., Bq, n)
        dv[..., cols, :] += weights.swapaxes(-1, -2) @ dout_b             # (..., n, Dv); cols has no repeats
        # in the forward pass this was: weights = softmax(scores)
        dscores = weights * (dweights - (dweights * weights).sum(axis=-1, keepdims=True))
        # in the forward pass this was: scores = q_b @ k_sel^T * scale
        dq[..., start:stop, :] += (dscores @ k_sel) * scale
        dk[..., cols, :] += (dscores.swapaxes(-1, -2) @ q_b) * scale
    return dq, dk, dv


def block_grid(T, window, causal=False, n_global=0, block_size=64, key_block_size=None):
    """Which blocks `local_attention` computes: (query blocks, key blocks) bool, True = computed.

    Rows are the query blocks in the order they run (the global block first,
    if any), columns the key blocks of ``key_block_size``. The share of True
    is the share of the T² scores that are computed.
    """
    key_block_size = block_size if key_block_size is None else key_block_size
    _check_sizes(T, window, n_global, block_size, key_block_size)
    n_kb = -(-T // key_block_size)
    qblocks = _query_blocks(T, n_global, block_size)
    grid = np.zeros((len(qblocks), n_kb), dtype=bool)
    for r, (start, stop) in enumerate(qblocks):
        grid[r, np.unique(_key_range(start, stop, T, window, causal, n_global, key_block_size) // key_block_size)] = True
    return grid

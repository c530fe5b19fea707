r"""Fast twins of the formulas in `functional.py`: the same numbers, fewer passes over memory.

Read `functional.py` first; every function here computes what its plain twin
there computes (up to float rounding) and says how it differs. The modules of
`nn.py` call these by default; ``module.use_fast_paths(False)`` switches a
model back to the plain versions, and `tests/test_fast_paths.py` checks every
twin against its plain version in float64, masks included.

The shape legend is the one declared at the top of `functional.py`.
"""

from __future__ import annotations

import math

import numpy as np

from .backend import get_array_module
from .functional import (_GELU_C, MASK_FILL, _check_attention_inputs, _check_float, _dropout_is_active,
                         _unbroadcast, linear_backward)
from .parallel import for_each_slice

# How the twins save time:
#
# A training step spends most of its time in BLAS matrix products, and the
# plain versions already use BLAS for every one of them. The rest of the time
# goes to element-wise passes over big arrays, where every ``a - b`` allocates
# a third array, reads two and writes one. The twins save such passes with a
# few tricks, each explained where it is used:
#
# * in-place ufuncs (``w -= m``, ``xp.exp(w, out=w)``), only ever on arrays the
#   function itself just created, never on an argument (see the top of `functional.py`);
# * one (..., Tq, Tk) buffer that holds the scores and then, in place, the weights;
# * ``einsum`` for a sum of products along one axis: a reduction that writes no
#   temporary array. (Matrix products stay with BLAS.)
# * cheaper random bits for dropout, and ReLU + dropout as one mask;
# * every core: work whose rows are independent (the sequences of attention,
#   the rows of LayerNorm, the elements of a dropout mask) is cut into slices
#   that run at the same time on Python threads (`parallel.for_each_slice`;
#   NumPy releases the interpreter lock inside its loops and BLAS calls).
#
# Subtracting the row maximum before ``exp`` (see `softmax`) only protects exp
# from overflowing: softmax is shift-invariant. Cauchy-Schwarz bounds every
# score, |q_i . k_j| <= |q_i| |k_j|. If that bound is below 64, exp(score) lies
# between e^-64 and e^64, far from float32's overflow (e^88.7) and from its
# smallest normal number (e^-87): the shift can be skipped, and with it two
# passes over the (..., Tq, Tk) scores. Above the bound we shift as usual.
_NO_SHIFT_BOUND = 64.0

# exp(s) = 2^(s log2 e). NumPy's float32 ``exp2`` is about twice as fast as its ``exp`` (measured at 1
# thread on 256 x 4674 float32 logits fresh from their product: exp 11.5-12.5 ms, exp2 4.6-5.4 ms for
# the 16 blocks of the lm benchmark's output layer; 2^18 elements in cache: 114 and 59 us). Where the
# exponent comes out of a product that reads a copy made anyway, the factor log2 e rides in that copy
# for free, and the exponentials are then ``exp2`` of the product. The result is e^s up to rounding: the
# rounding of the scaled operand moves the exponent by about as much as the product's own rounding does.
_LOG2_E = 1.0 / math.log(2.0)

# The element-wise fast paths (GELU, LayerNorm) walk their slice in blocks of about this many elements:
# 32 K float32 are 128 KB, so a block's input, output and scratch arrays stay in the core's cache from
# one in-place pass to the next, where a pass over a whole (B*T, F) array goes to main memory and back.
# Measured at 1 thread, GELU forward + backward of (4096, 512) float32: 14.6 ms in whole-array passes;
# in blocks of 8 K elements 9.3 ms, 16 K 8.1, 32 K 7.0, 128 K 7.8.
_ELEMENTS_PER_BLOCK = 1 << 15

# Attention's slices are walked in blocks of about this many scores (4 MB of float32: 16 sequences of
# H = 4, T = 128). Measured at 1 thread, (32, 4, 128, 32) causal attention, forward / backward: 7.4 / 9.8 ms
# whole, 7.9 / 8.2 ms in blocks of 2^20 scores, 7.9 / 8.9 in blocks of 2^18, 11.4 / 8.4 one sequence at a
# time (there the per-block calls cost more than the cache saves).
_ATTENTION_SCORES_PER_BLOCK = 1 << 20


def _blocks(rows, rows_per_block):
    """Cut the slice ``rows`` into consecutive slices of at most ``rows_per_block`` rows."""
    for start in range(rows.start, rows.stop, rows_per_block):
        yield slice(start, min(start + rows_per_block, rows.stop))


def _masked_softmax_inplace(scores, mask, shift, base2=False):
    r"""Turn ``scores`` (..., Tq, Tk) into the attention weights in place, as the plain version computes them.

    ``shift``: subtract the row maximum first (needed unless the scores are
    known to be small, see ``_NO_SHIFT_BOUND``). ``base2``: the scores are
    given as :math:`s \log_2 e`, and are exponentiated with ``exp2`` (the
    same weights, faster: see ``_LOG2_E``). Returns the same array.
    """
    xp = get_array_module(scores)
    if mask is not None:
        xp.copyto(scores, MASK_FILL, where=~mask)              # scores = where(mask, scores, MASK_FILL), in place
    if shift:
        scores -= scores.max(axis=-1, keepdims=True)           # (..., Tq, Tk) - (..., Tq, 1)
    (xp.exp2 if base2 else xp.exp)(scores, out=scores)         # e^s, or 2^(s log2 e) = e^s
    row_sum = scores.sum(axis=-1, keepdims=True)               # (..., Tq, 1); 0 only for a fully masked row
    inv_sum = 1.0 / xp.maximum(row_sum, float(np.finfo(scores.dtype).tiny))   # (the maximum avoids 1/0 there)
    if mask is not None:
        inv_sum *= mask.any(axis=-1, keepdims=True)            # rows with nothing to attend to: weights 0
    scores *= inv_sum                                          # rows sum to 1 (or are all 0)
    return scores


def _bounded_softmax_inplace(scores, keep, base2=False):
    """Turn ``scores`` (..., Tq, Tk) into the attention weights in place, when no score can overflow ``exp``.

    ``keep``: None, or the mask as 0./1. numbers of the scores' dtype (broadcasting like the mask).
    With every score bounded (``_NO_SHIFT_BOUND``), the masked scores need not be overwritten before
    ``exp``: their exponentials are finite, and multiplying by ``keep`` = 0 makes their weights exactly 0,
    as ``exp(MASK_FILL - max)`` is in the plain version. A multiplication is one plain pass, where
    ``copyto(..., where=~mask)`` walks the mask element by element (measured on (16, 4, 128, 128)
    causal scores at 1 thread: this function 1.4 ms, `_masked_softmax_inplace` 1.8 ms). The row sums
    are a matrix-vector product with a vector of ones (BLAS; ``sum(axis=-1)`` along rows this short is
    slower). A query with no key to attend to has only zeros in its row, so its sum is 0 and
    1 / max(0, tiny) times those zeros keeps them 0: no separate pass over the mask is needed.
    ``base2`` as in `_masked_softmax_inplace`. Returns the same array.
    """
    xp = get_array_module(scores)
    (xp.exp2 if base2 else xp.exp)(scores, out=scores)         # e^s, or 2^(s log2 e) = e^s
    if keep is not None:
        scores *= keep                                         # masked weights: exactly 0
    row_sum = scores @ xp.ones(scores.shape[-1], dtype=scores.dtype)          # (..., Tq)
    inv_sum = 1.0 / xp.maximum(row_sum, float(np.finfo(scores.dtype).tiny))  # (..., Tq)
    scores *= inv_sum[..., None]                               # rows sum to 1 (or are all 0)
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


def scaled_dot_product_attention_fast(q, k, v, mask=None, out=None, dropout_p=0.0, rng=None, training=True,
                                      bias=None):
    r"""`scaled_dot_product_attention` with one (..., Tq, Tk) buffer instead of seven, on every core.

    Same arguments and results as the plain version, and one more: ``out``,
    an array of the result's shape to write the result into. Multi-head
    attention passes the heads' columns of the merged (B, T, D) array (a
    view), so that merging the heads costs no copy. The plain version
    allocates the product q k^T, the scaled scores, a masked copy, the
    shifted scores, their exponentials, the weights and the zeroed weights:
    seven arrays of (..., Tq, Tk), the largest in the model. Here there is one:

    1. The scale goes on an operand instead of the scores, and the operand
       is :math:`K^\top`, which is copied into its own array anyway: OpenBLAS
       runs these small products with a transposed second operand several
       times slower than with a plain one (measured 5x with 2 threads at
       Tk=128, Dh=32), and the copy is small. So the copy is a
       multiplication, the same single pass, by :math:`\log_2 e/\sqrt{d_k}`:
       :math:`Q\,(K^\top \log_2 e/\sqrt{d_k}) = s \log_2 e`, the scores in
       base 2, which the softmax exponentiates with ``exp2``, about twice
       as fast as ``exp`` (see ``_LOG2_E``); the weights are the same up to
       rounding. (Scaling ``q`` instead was one more pass over a
       (..., Tq, Dh) array in forward and one in backward. Backward reads
       ``q`` and ``k`` themselves, never this copy.)
    2. Masked scores are overwritten in place with ``copyto(..., where=~mask)``:
       the same ``MASK_FILL`` as the plain ``np.where``, without its copy
       (when the row maximum is subtracted; otherwise see 3.).
    3. Softmax in place: (subtract the row maximum,) exponentiate, multiply by
       1 / row sum. The row maximum is skipped when Cauchy-Schwarz shows that
       no score can make ``exp`` overflow (see ``_NO_SHIFT_BOUND``), which is
       decided for each block of sequences (8.) from the norms of its rows
       of q and k (so where the bound is near the limit, whether a block is
       shifted, and the last bits of its weights, may depend on how the
       rows are cut); then the
       mask is applied after ``exp``, as a multiplication by 0 or 1
       (`_bounded_softmax_inplace`), instead of overwriting the masked scores.
    4. A query with no key to attend to gets zero weights by zeroing its
       1 / row sum, a (..., Tq, 1) array, instead of a pass over all weights
       (after the multiplication by 0 or 1 of 3., its row is zeros already).
    5. Every sequence of the batch is independent of the others, so the
       sequences are cut into one slice per CPU core and the slices run at
       the same time (`parallel.for_each_slice`), each writing its part of the
       preallocated weights and output. On 2 cores this halves the time of
       the many small per-head products, which BLAS alone cannot spread.
    6. Attention dropout (``dropout_p > 0`` in training) draws its bits as
       `dropout_fast` does, all of them before the slices start (so the mask
       does not depend on how the rows are cut), and keeps the scaled mask;
       ``weights`` stays the undropped softmax, as in the plain version.
    7. An additive ``bias`` (ALiBi) is added to each slice's scores in place;
       with a bias the row maximum is always subtracted (the Cauchy-Schwarz
       bound of 3. knows nothing of the bias).
    8. Each slice is walked a few sequences at a time (about
       ``_ATTENTION_SCORES_PER_BLOCK`` scores): a block's scores are written
       by the product, turned into weights and read by ``W V`` while they
       are still in cache. (It pays in the backward pass, which makes more
       passes over the block; see ``_ATTENTION_SCORES_PER_BLOCK``.)

    The cache keeps ``out`` (small: (..., Tq, Dv)), which saves backward a
    pass over the weights (see `scaled_dot_product_attention_fast_backward`).
    Returns: out (..., Tq, Dv); weights (..., Tq, Tk); cache.
    """
    _check_attention_inputs(q, k, v, mask, bias)
    xp = get_array_module(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1])
    n_rows, lead = _batch_rows(q, k, v)
    Tq, Tk, dtype = q.shape[-2], k.shape[-2], np.result_type(q.dtype, k.dtype, v.dtype)
    ndim = len(lead) + 2
    keep = None if mask is None or bias is not None else mask.astype(dtype)   # the mask as 0./1., see 3. above
    bias_log2 = None if bias is None else bias * _LOG2_E                 # the bias in base 2, as the scores (1.)
    weights = xp.empty(lead + (Tq, Tk), dtype=dtype)                     # (..., Tq, Tk): scores, then weights
    if out is None:
        out = xp.empty(lead + (Tq, v.shape[-1]), dtype=dtype)            # (..., Tq, Dv)
    drop_scale = None
    if _dropout_is_active(q, dropout_p, rng, training):                  # see 6. above
        threshold = _bits_threshold(dropout_p)
        bits = xp.asarray(_random_uint16(rng, math.prod(weights.shape)).reshape(weights.shape))
        inv_keep = _inverse_keep(threshold, dtype)
        drop_scale = xp.empty(weights.shape, dtype=dtype)                # (..., Tq, Tk): m / (1 - p)

    per_row = math.prod(weights.shape[1:])                              # H Tq Tk scores per sequence

    def attend(rows):           # the sequences in ``rows``, a slice of the first axis, a few at a time (8.)
        for block in _blocks(rows, max(1, _ATTENTION_SCORES_PER_BLOCK // per_row)):
            attend_block(block)

    def attend_block(rows):
        rows = rows if n_rows > 1 else slice(None)                      # one slice: everything, broadcasting
        q_s, k_s, v_s = (_rows_of(a, rows, ndim) for a in (q, k, v))
        w_s = weights[rows]
        k_transposed = xp.empty(k_s.shape[:-2] + k_s.shape[:-3:-1], dtype=k_s.dtype)     # (..., Dh, Tk)
        xp.multiply(k_s.swapaxes(-1, -2), scale * _LOG2_E, out=k_transposed)   # K^T log2(e)/sqrt(Dh): see 1.
        xp.matmul(q_s, k_transposed, out=w_s)                            # (..., Tq, Dh) @ (..., Dh, Tk): s log2 e
        if bias is not None:
            w_s += _rows_of(bias_log2, rows, ndim)                         # see 7. above
        # |s log2 e| <= max_i |q_i| * max_j |k_j log2(e)/sqrt(Dh)| (Cauchy-Schwarz, see 3.): the squared norms
        # of the block's rows, read from the two operands of the product (in cache), small (..., T) arrays
        bound_squared = (float(xp.einsum("...d,...d->...", q_s, q_s).max(initial=0.0))
                         * float(xp.einsum("...dk,...dk->...k", k_transposed, k_transposed).max(initial=0.0)))
        shift = bias is not None or not bound_squared < (_NO_SHIFT_BOUND * _LOG2_E) ** 2
        if shift:
            _masked_softmax_inplace(w_s, _rows_of(mask, rows, ndim), shift, base2=True)
        else:
            _bounded_softmax_inplace(w_s, _rows_of(keep, rows, ndim), base2=True)
        if drop_scale is not None:
            xp.multiply(bits[rows] >= threshold, inv_keep, out=drop_scale[rows])
            w_s = w_s * drop_scale[rows]                                   # the dropped weights, this slice only
        xp.matmul(w_s, v_s, out=out[rows])                                 # (..., Tq, Tk) @ (..., Tk, Dv)

    for_each_slice(attend, n_rows, elements_per_row=per_row, parallel=xp is np)
    return out, weights, (q, k, v, weights, out, scale, drop_scale)


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
    that run on all cores at once, each walked a few sequences at a time;
    each block has its own small ``dweights`` buffer.

    The scale :math:`1/\sqrt{d_k}` of the scores rides in the copy of
    :math:`V^\top` that the product :math:`dW = dO\,V^\top` reads (a plain
    operand, as :math:`K^\top` in the forward pass): the block then holds
    :math:`dW/\sqrt{d_k}` and becomes :math:`dS/\sqrt{d_k}` (with ``dO . O``
    scaled too), which is what both :math:`dQ = (dS/\sqrt{d_k})\,K` and
    :math:`dK = (dS/\sqrt{d_k})^\top Q` need: no pass to scale ``q`` or ``dq``.

    ``out``: None, or three arrays (dq, dk, dv) of the shapes of q, k and v to
    write the gradients into (multi-head attention passes the q, k and v
    slots of one (B, T, 3D) gradient, so that nothing is copied there).
    Returns (dq, dk, dv).
    """
    q, k, v, weights, o, scale, drop_scale = cache
    xp = get_array_module(dout)
    if out is None:
        out = (None, None, None)
    elif (len({q.shape[:-2], k.shape[:-2], v.shape[:-2]}) != 1
          or tuple(getattr(a, "shape", None) for a in out) != (q.shape, k.shape, v.shape)):
        raise ValueError(f"out: expected three arrays shaped like q, k, v {(q.shape, k.shape, v.shape)}, which "
                         f"must not broadcast, got {tuple(getattr(a, 'shape', None) for a in out)}")
    n_rows, lead = _batch_rows(q, k, v)
    ndim = len(lead) + 2
    # Gradients of the scores' leading shape; summed back to q's, k's, v's shapes at the end if they broadcast.
    dq, dk, dv = (o_ if o_ is not None else xp.empty(lead + a.shape[-2:], dtype=dout.dtype)
                  for o_, a in zip(out, (q, k, v)))

    per_row = math.prod(weights.shape[1:])                              # H Tq Tk scores per sequence

    def backward_rows(rows):    # a few sequences at a time, as in the forward pass
        for block in _blocks(rows, max(1, _ATTENTION_SCORES_PER_BLOCK // per_row)):
            backward_block(block)

    def backward_block(rows):
        rows = rows if n_rows > 1 else slice(None)
        dout_s, o_s, w_s = dout[rows], o[rows], weights[rows]
        q_s, k_s, v_s = (_rows_of(a, rows, ndim) for a in (q, k, v))
        # in the forward pass this was: out = weights @ v (the dropped weights, with attention dropout)
        v_transposed = xp.empty(v_s.shape[:-2] + v_s.shape[:-3:-1], dtype=v_s.dtype)     # (..., Dv, Tk)
        xp.multiply(v_s.swapaxes(-1, -2), scale, out=v_transposed)  # V^T / sqrt(Dh), a plain operand: see above
        dweights = dout_s @ v_transposed                           # (..., Tq, Dv) @ (..., Dv, Tk): dW / sqrt(Dh)
        dropped = w_s if drop_scale is None else w_s * drop_scale[rows]   # what multiplied v in forward
        xp.matmul(dropped.swapaxes(-1, -2), dout_s, out=dv[rows])  # (..., Tk, Tq) @ (..., Tq, Dv) -> (..., Tk, Dv)
        if drop_scale is not None:
            dweights *= drop_scale[rows]                           # back through the dropout mask
        # in the forward pass this was: weights = softmax(scores); dscores = W * (dW - sum_k dW W), in place
        row_dot = xp.einsum("...d,...d->...", dout_s, o_s)[..., None] * scale   # (..., Tq, 1): (dO . O) / sqrt(Dh)
        dscores = _softmax_backward_inplace(dweights, w_s, row_dot)  # dS / sqrt(Dh)
        # in the forward pass this was: scores = q @ k^T / sqrt(Dh)
        xp.matmul(dscores, k_s, out=dq[rows])                      # (..., Tq, Tk) @ (..., Tk, Dh) -> (..., Tq, Dh)
        xp.matmul(dscores.swapaxes(-1, -2), q_s, out=dk[rows])     # (..., Tk, Tq) @ (..., Tq, Dh) -> (..., Tk, Dh)

    for_each_slice(backward_rows, n_rows, elements_per_row=per_row, parallel=xp is np)
    return _unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def linear_fast_backward(dy, cache):
    r"""`linear_backward` with the bias gradient as a matrix-vector product: :math:`db = \mathbf 1^\top dy`.

    ``dy.sum(axis=0)`` is NumPy's reduction down the columns of an (N, D_out)
    array; the same sums as ``ones(N) @ dy`` are one BLAS call that reads
    ``dy`` once at full speed (measured at 1 thread, N = 4096, D_out = 512,
    caches cold: 0.81 ms for the sum, 0.67 for the product; D_out = 128:
    0.39 and 0.23). The two matrix products are the plain version's.
    Args and returns as `linear_backward`: (dx, dW, db), db None without bias.
    """
    x, W, has_bias = cache
    xp = get_array_module(dy)
    dy2 = dy.reshape(-1, W.shape[1])                                     # (N, D_out)
    dx, dW, _ = linear_backward(dy, (x, W, False))                       # the plain products
    db = xp.ones(dy2.shape[0], dtype=dy2.dtype) @ dy2 if has_bias else None   # (N,) @ (N, D_out) -> (D_out,)
    return dx, dW, db


def layernorm_fast(x, gamma, beta, eps=1e-5):
    r"""`layernorm` in fewer passes; the same cache, so either backward can follow it.

    The centred ``x - mean`` is turned into ``xhat`` in place; the means are
    matrix-vector products with the vector [1/D, ..., 1/D] (one BLAS call,
    several times faster than NumPy's reduction along short rows); and the
    variance is a row-wise dot product, ``einsum("nd,nd->n")``, which sums
    the squares without first writing them to an (N, D) array. Every row is
    normalised on its own, so the rows are cut into slices that run on all
    cores (`parallel.for_each_slice`), and each slice is walked in blocks of
    rows that stay in cache (``_ELEMENTS_PER_BLOCK``).

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
    r"""`layernorm_backward` in fewer passes: the same formula for ``dx``, built in place, one walk over the rows.

    ``dgamma`` and the row means of ``dxhat * xhat`` are ``einsum``
    reductions (no (N, D) temporary); the other sums are matrix-vector
    products, as in `layernorm_fast`. Everything is computed on row slices in
    parallel, in cache-sized blocks of rows, including ``dgamma`` and
    ``dbeta``: each block adds its rows' share while ``dy`` and ``xhat`` are in
    cache, instead of two more passes over both arrays from main memory. Each
    slice keeps its own partial sums, added at the end (so, as with
    `tied_output_cross_entropy_fast`'s ``dE``, their last bits depend on the
    number of slices). Returns (dx, dgamma, dbeta).
    """
    xhat, rstd, gamma = cache
    xp = get_array_module(dy)
    D = xhat.shape[-1]
    dy2, xhat2, rstd2 = dy.reshape(-1, D), xhat.reshape(-1, D), rstd.reshape(-1, 1)   # (N, D), (N, D), (N, 1)
    dtype = np.result_type(dy.dtype, xhat.dtype)
    dx = xp.empty(dy2.shape, dtype=dtype)                        # (N, D)
    average = xp.full((D,), 1.0 / D, dtype=dtype)
    rows_per_block = max(1, _ELEMENTS_PER_BLOCK // D)
    partial_sums = {}                                            # slice start -> (its dgamma, its dbeta)

    def rows(s):
        ones = xp.ones(min(rows_per_block, s.stop - s.start), dtype=dtype)
        dgamma_s, dbeta_s = xp.zeros(D, dtype=dtype), xp.zeros(D, dtype=dtype)
        for b in _blocks(s, rows_per_block):                     # blocks that stay in cache
            dy_b, dx_b, xhat_b = dy2[b], dx[b], xhat2[b]
            # in the forward pass this was: y = xhat * gamma + beta
            dgamma_s += xp.einsum("nd,nd->d", dy_b, xhat_b)      # (D,) sum over the block's rows of dy * xhat
            dbeta_s += ones[:b.stop - b.start] @ dy_b            # (D,) sum over the block's rows of dy
            xp.multiply(dy_b, gamma, out=dx_b)                   # dxhat, made dx in place below
            _layernorm_dx_from_dxhat(dx_b, xhat_b, rstd2[b], average)
        partial_sums[s.start] = (dgamma_s, dbeta_s)

    for_each_slice(rows, dx.shape[0], elements_per_row=D, parallel=xp is np)
    dgamma, dbeta = xp.zeros(D, dtype=dtype), xp.zeros(D, dtype=dtype)
    for start in sorted(partial_sums):
        dgamma += partial_sums[start][0]
        dbeta += partial_sums[start][1]
    return dx.reshape(dy.shape), dgamma, dbeta


def layernorm_linear_fast(x, gamma, beta, W, b=None, eps=1e-5):
    r"""A LayerNorm and the linear layer it feeds, ``linear(layernorm(x, gamma, beta), W, b)``, with the gain and shift folded into W and b.

    In a pre-norm block the LayerNorm's output goes only into the next linear
    layer (the attention's Q/K/V projection, the FFN's first layer), and

    .. math:: (\hat x \odot \gamma + \beta)\,W + b = \hat x\,(\mathrm{diag}(\gamma) W) + (\beta W + b),

    so the (N, D) passes ``xhat * gamma`` and ``+ beta`` become a scaled copy of
    the small (D, D_out) ``W`` and a (D,) @ (D, D_out) product: the matrix
    product reads ``xhat`` itself. Backward the same way: with
    :math:`W' = \mathrm{diag}(\gamma) W`,

    .. math::
        d\hat x = dout\,W'^\top,\quad P = \hat x^\top dout,\quad db = \textstyle\sum_{rows} dout,

        dW = \mathrm{diag}(\gamma) P + \beta\, db^\top,\quad
        d\gamma = \textstyle\sum_j W \odot P,\quad d\beta = W\,db

    (:math:`P` is the product :math:`\hat x^\top dout` the linear layer's
    :math:`dW = y^\top dout` would have read; :math:`d\gamma_i = \sum_n dy_{ni}
    \hat x_{ni}` with :math:`dy = dout\,W^\top` is :math:`\sum_j W_{ij} P_{ij}`).
    The passes ``dy * gamma``, ``sum(dy * xhat)`` and ``sum(dy)`` over (N, D)
    arrays become work on (D, D_out) ones. The two matrix products of each
    direction are the plain ones, with the same shapes. The same numbers as
    the plain pair up to rounding (tested). Measured at 1 thread, N = 4096,
    D = 128, D_out = 384 (the lm benchmark's Q/K/V projection), paired with
    `layernorm_fast` + `linear` + their fast backwards: forward -0.34 ms,
    backward -0.64 ms per call (30 pairs of 5 calls, 90% of pairs faster).
    The backward also centres the rows of :math:`d\hat x` inside its product
    (see there): -0.07 ms more per call at D_out = 384, -0.16 ms at 512
    (60 pairs each; new faster in 65-67% of them).

    Args: x (..., D); gamma, beta (D,); W (D, D_out); b (D_out,) or None.
    Returns: out (..., D_out); cache (for `layernorm_linear_fast_backward`).
    """
    _check_float("x", x)
    _check_float("W", W)
    D = x.shape[-1]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p.shape != (D,):
            raise ValueError(f"{name}: expected shape ({D},), got {tuple(p.shape)}")
    if W.ndim != 2 or W.shape[0] != D:
        raise ValueError(f"W: expected shape ({D}, D_out), got {tuple(W.shape)}")
    if b is not None and b.shape != (W.shape[1],):
        raise ValueError(f"b: expected shape ({W.shape[1]},), got {tuple(b.shape)}")
    _, xhat, rstd = _layernorm_rows_fast(x.reshape(-1, D), None, None, eps)   # (N, D), (N, 1): no gain, no shift
    W_folded = gamma[:, None] * W                                # (D, D_out): diag(gamma) W
    b_folded = beta @ W                                          # (D,) @ (D, D_out) -> (D_out,): beta W
    if b is not None:
        b_folded += b                                            # beta W + b
    out = xhat @ W_folded                                        # (N, D) @ (D, D_out) -> (N, D_out)
    out += b_folded
    return out.reshape(*x.shape[:-1], W.shape[1]), (xhat, rstd, gamma, beta, W, W_folded, b is not None, x.shape)


def layernorm_linear_fast_backward(dout, cache):
    r"""Gradients of `layernorm_linear_fast` (the equations are there). Returns (dx, dgamma, dbeta, dW, db); db None without bias."""
    xhat, rstd, gamma, beta, W, W_folded, has_bias, x_shape = cache
    xp = get_array_module(dout)
    N, D = xhat.shape
    dout2 = dout.reshape(N, W.shape[1])                          # (N, D_out)
    # in the forward pass this was: out = xhat @ W_folded + b_folded, W_folded = diag(gamma) W, b_folded = beta W + b
    # dxhat = dout W_folded^T, and the LayerNorm backward needs it minus its row means: dout (C W_folded)^T,
    # C = I - 1 1^T / D, subtracts them inside the product, with the columns of the small W_folded centred
    W_centred = W_folded - W_folded.mean(axis=0)                 # (D, D_out): C W_folded
    dx = dout2 @ W_centred.T                                     # (N, D_out) @ (D_out, D) -> (N, D): dxhat - mean(dxhat)
    P = xhat.T @ dout2                                           # (D, N) @ (N, D_out) -> (D, D_out)
    db = xp.ones(N, dtype=dout2.dtype) @ dout2                   # (N,) @ (N, D_out) -> (D_out,): sum over rows
    dW = gamma[:, None] * P                                      # (D, D_out): y^T dout = diag(gamma) P + beta db^T
    dW += beta[:, None] * db
    dgamma = xp.einsum("ij,ij->i", W, P)                         # (D,): sum_n dy * xhat, dy = dout W^T
    dbeta = W @ db                                               # (D, D_out) @ (D_out,) -> (D,): sum_n dy

    def rows(s):
        for blk in _blocks(s, max(1, _ELEMENTS_PER_BLOCK // D)):     # blocks that stay in cache
            _layernorm_dx_from_dxhat(dx[blk], xhat[blk], rstd[blk], None)   # dx holds the centred dxhat

    for_each_slice(rows, N, elements_per_row=D, parallel=xp is np)
    return dx.reshape(x_shape), dgamma, dbeta, dW, (db if has_bias else None)


def _layernorm_dx_from_dxhat(dx_b, xhat_b, rstd_b, average):
    r"""Turn ``dx_b`` (n, D), holding :math:`d\hat x`, into dx in place: the LayerNorm backward below :math:`\hat x`.

    .. math:: dx = \sigma^{-1} \big(d\hat x - \mathrm{mean}(d\hat x) - \hat x\,\mathrm{mean}(d\hat x \odot \hat x)\big)

    rstd_b (n, 1) = 1/sigma; average (D,) = [1/D, ..., 1/D], or None when ``dx_b`` holds
    :math:`d\hat x - \mathrm{mean}(d\hat x)` already (see `layernorm_linear_fast_backward`): the rows of
    :math:`\hat x` sum to 0, so :math:`\mathrm{mean}(d\hat x \odot \hat x)` is the same either way.
    """
    xp = get_array_module(dx_b)
    # in the forward pass this was: xhat = (x - mean) * rstd
    mean_dxhat_xhat = xp.einsum("nd,nd->n", dx_b, xhat_b)[:, None] * (1.0 / dx_b.shape[1])   # (n, 1)
    if average is not None:
        dx_b -= (dx_b @ average)[:, None]                # dxhat - mean(dxhat)
    dx_b -= xhat_b * mean_dxhat_xhat
    dx_b *= rstd_b


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
    """The rows of layernorm_fast's forward: (y, xhat, rstd) for (N, D) rows ``x2``.

    ``gamma = beta = None``: normalise only; then ``y`` is ``xhat`` (`layernorm_linear_fast`).
    """
    xp = get_array_module(x2)
    N, D = x2.shape
    average = xp.full((D,), 1.0 / D, dtype=x2.dtype)            # (D,): x2 @ average = the row means
    xhat = xp.empty((N, D), dtype=x2.dtype)
    y = xhat if gamma is None else xp.empty((N, D), dtype=x2.dtype)
    rstd = xp.empty((N, 1), dtype=x2.dtype)

    def rows(s):
        for b in _blocks(s, max(1, _ELEMENTS_PER_BLOCK // D)):          # blocks that stay in cache
            xhat_b, y_b = xhat[b], y[b]
            xp.subtract(x2[b], (x2[b] @ average)[:, None], out=xhat_b)   # x - mean, made xhat in place below
            var = xp.einsum("nd,nd->n", xhat_b, xhat_b)[:, None] * (1.0 / D)   # (n, 1), biased like the paper
            xp.divide(1.0, xp.sqrt(var + eps), out=rstd[b])
            xhat_b *= rstd[b]
            if gamma is not None:
                xp.multiply(xhat_b, gamma, out=y_b)
                y_b += beta

    for_each_slice(rows, N, elements_per_row=D, parallel=xp is np)
    return y, xhat, rstd


def embedding_backward_fast(dy, cache):
    r"""`embedding_backward` in a few buffered scatter-adds, one for each repeat of a token.

    ``dE[ids] += dy`` is wrong when an id repeats: NumPy's buffered indexing
    reads every row of ``dE`` before it adds, so only the last gradient of a
    repeated token survives. That is why the plain version uses ``add.at``,
    which adds one row at a time. But among the *first* occurrences of the
    ids no id repeats, nor among the second occurrences, and so on. So the
    positions are sorted by id (a stable sort keeps each id's positions in
    the order they come in), each position gets its rank among the positions
    of its id (0 for the first, 1 for the second, ...), and there is one
    buffered scatter-add per rank:

    .. math:: dE_v \mathrel{+}= dy_{n_r(v)}\quad\text{for } r = 0, 1, \dots,
        \ \ n_r(v) = \text{the } (r+1)\text{-th position of token } v

    A batch of text has only a few ranks (a character seldom repeats more
    than a few times per 4096 positions of random text; even many repeats
    cost one pass each over the repeated rows only). Every ``dE_v`` adds its
    gradients in the order of their positions, as ``add.at`` does: the result
    is the plain version's to the bit (but for the sign of a zero: the first
    rank is written, not added to 0, since 0 + dy = dy; so a -0.0 stays -0.0).

    Measured at 1 thread on the lm benchmark's (32, 128, 128) float32
    gradient and V = 4674: ``add.at`` 3.7-3.8 ms, the previous fast version
    (one ``bincount`` over an index of every element, summed in float64)
    3.5-4.6 ms, this one 0.9 ms (1.2 ms when rank 0 was added to the zeros
    too; ``take`` gathers rows a little faster than ``dy2[positions]``).

    Args and returns as `embedding_backward`: dE (V, D).
    """
    ids, (V, D) = cache
    xp = get_array_module(dy)
    flat = ids.reshape(-1)                                   # (N,) the token of every position
    dy2 = dy.reshape(-1, D)                                  # (N, D)
    N = flat.shape[0]
    order = xp.argsort(flat, kind="stable")                  # (N,) positions sorted by token, each token's in order
    sorted_ids = flat[order]                                 # (N,)
    first = xp.ones(N, dtype=bool)                           # (N,) True where a new token starts in sorted order
    xp.not_equal(sorted_ids[1:], sorted_ids[:-1], out=first[1:])
    starts = xp.flatnonzero(first)                           # (U,) where each of the U distinct tokens starts
    group = xp.cumsum(first) - 1                             # (N,) which token each sorted position belongs to
    rank = xp.arange(N) - starts[group]                      # (N,) 0 for a token's first position, 1 for its second...
    dE = xp.zeros((V, D), dtype=dy.dtype)                    # (V, D)
    dE[sorted_ids[starts]] = xp.take(dy2, order[starts], axis=0)   # rank 0: 0 + dy is dy, so a plain write
    for r in range(1, int(rank.max()) + 1 if N else 0):
        positions = order[rank == r]                         # the (r+1)-th position of every token that has one
        dE[flat[positions]] += xp.take(dy2, positions, axis=0)   # distinct ids: a buffered scatter-add is exact here
    return dE


def cross_entropy_fast(logits, targets, ignore_index=-100):
    r"""`cross_entropy` without label smoothing, with no (N, C) one-hot array and one (N, C) buffer.

    The plain version builds the target distribution ``y`` (N, C) and the
    log-probabilities (N, C), and its backward computes ``exp(logp)``: four
    passes over an array that, for a language model (C = V of a few
    thousand characters, N = B*T thousands of positions), is as large as
    everything else in the step together. Here one buffer is shifted,
    exponentiated and normalised in place into the probabilities ``p``
    (kept for the backward), and the loss reads only the target column:

    .. math::
        -\log p_{n, t_n} = \log \textstyle\sum_c e^{z_{n,c} - m_n} - (z_{n, t_n} - m_n)

    Args: logits (..., C) floats; targets (...) integers in [0, C) or ignore_index.
    Returns: loss (a 0-d array); cache = (p (N, C), targets (N,), keep (N,), n, shape).
    """
    _check_float("logits", logits)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets: expected shape {tuple(logits.shape[:-1])} to match logits "
                         f"{tuple(logits.shape)}, got {tuple(targets.shape)}")
    if getattr(targets, "dtype", None) is None or targets.dtype.kind not in "iu":
        raise TypeError(f"targets: expected an integer array, got {getattr(targets, 'dtype', type(targets))}")
    xp = get_array_module(logits)
    C = logits.shape[-1]
    z = logits.reshape(-1, C)                                # (N, C)
    t = targets.reshape(-1)                                  # (N,)
    keep = t != ignore_index                                 # (N,)
    bad = keep & ((t < 0) | (t >= C))
    if bool(bad.any()):
        raise ValueError(f"targets: expected class ids in [0, {C}) or ignore_index={ignore_index}, "
                         f"got {int(t[bad][0])}")
    t_safe = xp.where(keep, t, 0)
    rows = xp.arange(len(t))
    p = z - z.max(axis=1, keepdims=True)                     # (N, C), the one buffer: shifted logits ...
    target_shifted = p[rows, t_safe]                         # (N,) z_t - m, read before exp overwrites it
    xp.exp(p, out=p)                                         # ... then exp(z - m) ...
    total = p.sum(axis=1, keepdims=True)                     # (N, 1)
    if not bool(xp.isfinite(total).all()) or not bool(xp.isfinite(target_shifted).all()):
        raise ValueError("logits: expected finite values, got NaN or inf (the model diverged: "
                         "try a smaller learning rate or gradient clipping)")
    p /= total                                               # ... then the probabilities
    n = max(int(keep.sum()), 1)
    nll = xp.log(total[:, 0]) - target_shifted               # (N,) -log p(target)
    loss = (nll * keep).sum() / n
    return loss, (p, t_safe, keep, n, logits.shape)


def cross_entropy_fast_backward(dloss, cache):
    r"""`cross_entropy_backward` from `cross_entropy_fast`'s cache: :math:`(p - \mathrm{onehot}(t)) / N`.

    Writes into a new array (the cached ``p`` is left alone, so the backward
    may be called again). Ignored rows are zero. Returns dlogits (..., C).
    """
    p, t, keep, n, shape = cache
    xp = get_array_module(p)
    scale = float(dloss) / n                                 # a Python float keeps p's dtype
    dz = p * scale                                           # (N, C)
    dz[xp.arange(len(t)), t] -= scale
    if not bool(keep.all()):
        dz *= keep[:, None]
    return dz.reshape(shape)


def gelu_fast(x):
    r"""`gelu` in blocks that stay in cache, on all cores, keeping its slope :math:`g = \mathrm{GELU}'(x)` for backward.

    .. math:: t = \tanh\!\big(c\,x + 0.044715\,c\,x^3\big),\qquad y = \tfrac12 x (1 + t),\qquad c = \sqrt{2/\pi}

    GELU is element-wise, so ``x`` is read as one flat row of elements, cut
    into one slice per core (`parallel.for_each_slice`), and each slice is
    walked in blocks of ``_ELEMENTS_PER_BLOCK``: the in-place passes of a
    block then read and write the cache, not main memory. NumPy's general
    power function is an order of magnitude slower than two
    multiplications, so :math:`c(x + 0.044715x^3)` is written
    :math:`x(c + 0.044715c\,x^2)`.

    **The cache is the slope, not** ``(x, t)``. The plain backward computes
    :math:`dy\,[\tfrac12(1+t) + \tfrac12 x\,t']` with
    :math:`t' = (1 - t^2)\,k`, :math:`k = c(1 + 3\cdot0.044715x^2)`. Since
    :math:`1 - t^2 = (1-t)(1+t)`, the factor of ``dy`` is

    .. math:: g = \frac{dy}{dx} = \tfrac12(1+t)\,\big(1 + x\,k\,(1-t)\big),

    and it depends on ``x`` only. With :math:`u = \tfrac12(1+t)` (so
    :math:`1 - t = 2(1-u)` and :math:`y = x\,u`) and :math:`w = c +
    0.044715\,c\,x^2`, the inner term of ``t``, for which :math:`2xk =
    x(6w - 4c)`, this is

    .. math:: g = u + 2xk\,u(1-u) = u + y\,(1-u)\,(6w - 4c),

    which reuses ``u``, ``w`` and ``y`` where they are: 14 passes over the
    block for ``y`` and ``g`` together (17 when ``g`` was built from ``t``
    directly; measured at 1 thread on a (4096, 512) float32 layer, forward
    7.14 -> 6.87 ms). So ``g`` is computed here, in the same blocks
    as ``y``, while ``x`` and ``u`` are in cache (``u`` and ``w`` live only in
    per-block scratch arrays), and backward is one multiplication,
    :math:`dx = dy \odot g`, that reads two arrays from main memory instead
    of three: one cached array instead of two. Measured in the lm benchmark
    at 1 thread, GELU forward + backward of four (32, 128, 512) layers:
    45.5-45.9 ms when the cache was ``(x, t)`` and backward computed ``g``,
    36.7-38.2 ms this way. The price: the plain `gelu_backward` cannot
    follow this forward, nor `gelu_fast_backward` the plain one
    (`nn.FeedForward` records which forward ran).

    Args: x (...) floats. Returns: y (...); cache = g (...).
    """
    _check_float("x", x)
    xp = get_array_module(x)
    x_flat = x.reshape(-1)                                   # (n,) every element, a view when x is contiguous
    y, g = xp.empty(x_flat.shape, dtype=x.dtype), xp.empty(x_flat.shape, dtype=x.dtype)

    def elements(s):
        size = min(_ELEMENTS_PER_BLOCK, s.stop - s.start)
        t_scratch, w_scratch = xp.empty(size, dtype=x.dtype), xp.empty(size, dtype=x.dtype)
        for b in _blocks(s, _ELEMENTS_PER_BLOCK):
            n = b.stop - b.start
            x_b, y_b, g_b, u, w = x_flat[b], y[b], g[b], t_scratch[:n], w_scratch[:n]
            xp.multiply(x_b, x_b, out=w)                     # x^2
            w *= 0.044715 * _GELU_C
            w += _GELU_C                                     # w = c + 0.044715 c x^2
            xp.multiply(w, x_b, out=u)                       # c x + 0.044715 c x^3 = x w
            xp.tanh(u, out=u)                                # t
            u *= 0.5
            u += 0.5                                         # u = (1 + t)/2
            xp.multiply(x_b, u, out=y_b)                     # y = x u
            w *= 6.0
            w -= 4.0 * _GELU_C                               # 6 w - 4 c, and x (6 w - 4 c) = 2 x k
            xp.subtract(1.0, u, out=g_b)                     # 1 - u
            g_b *= y_b                                       # x u (1 - u)
            g_b *= w                                         # 2 x k u (1 - u)
            g_b += u                                         # g = u + 2 x k u (1 - u)

    for_each_slice(elements, x_flat.shape[0], parallel=xp is np)
    return y.reshape(x.shape), g.reshape(x.shape)


def gelu_fast_backward(dy, cache):
    r"""Gradient of `gelu_fast` from its cache, the slope ``g``: :math:`dx = dy \odot g`, on row slices in parallel.

    Returns dx, a new array shaped like ``dy``.
    """
    g = cache
    xp = get_array_module(dy)
    dy_flat, g_flat = dy.reshape(-1), g.reshape(-1)                          # (n,) each
    dx = xp.empty(dy_flat.shape, dtype=np.result_type(dy.dtype, g.dtype))   # (n,)

    def elements(s):
        # in the forward pass this was: y = gelu(x), g = gelu'(x)
        xp.multiply(dy_flat[s], g_flat[s], out=dx[s])

    for_each_slice(elements, dx.shape[0], parallel=xp is np)
    return dx.reshape(dy.shape)


# How many rows of h the fused output layer takes at a time: 256 rows of V = 4674 float32 logits are
# 4.8 MB, which the products and the exp pass reuse from cache. Measured at 1 thread (N = 4096, D = 128):
# the three products took 154 ms in blocks of 64 rows, 125 in blocks of 128, 112 in blocks of 256, 115 in
# blocks of 512, and 127 ms as three whole (N, V) products.
_OUTPUT_ROWS_PER_BLOCK = 256


def tied_output_cross_entropy_fast(h, E, targets, ignore_index=-100, rows_per_block=None):
    r"""A language model's output layer and its loss together: ``logits = h E^T``, then `cross_entropy`.

    For a character LM the logits (N, V) are the largest array of the step
    (N = B*T positions, V a few thousand characters), and every pass over
    them is a trip to main memory. Here they are never stored: the rows are
    taken a block at a time (``rows_per_block``), small enough for the
    block's (r, V) logits to stay in the processor's cache, and for each block

    .. math::
        z = h_b E^\top,\quad e = \exp(z - m),\quad S = \textstyle\sum_c e_c,\quad
        L \mathrel{+}= \log S - (z_t - m),

        dz = (e - S\,\mathrm{onehot}(t)) \,/\, (n S),\quad dh_b = dz\,E,\quad dE \mathrel{+}= dz^\top h_b

    (:math:`e / S = p`, so :math:`dz = (p - \mathrm{onehot}(t))/n`, the
    gradient of the mean loss over the n scored rows). So the *gradients are
    computed in the forward pass* (as fused cross-entropy kernels do): the
    cache holds ``dh`` and ``dE`` for ``dloss = 1``, and the backward only
    scales them. Three things keep the passes over the (r, V) block few:

    1. The shift :math:`m` (the row maximum) is skipped when no logit can
       overflow ``exp``: :math:`|z_{ic}| \le |h_i|\,|E_c|` (Cauchy-Schwarz),
       and below ``_NO_SHIFT_BOUND`` the sum of exponentials cannot overflow
       either (see the top of this file); then :math:`m = 0`. And ``exp`` is
       ``exp2`` of the product with :math:`E \log_2 e` (:math:`e^z =
       2^{z \log_2 e}`, about twice as fast, see ``_LOG2_E``): the logits come
       out of the product already in base 2, :math:`z' = z \log_2 e`, and
       :math:`z_t - m = (z'_t - m')\ln 2`.
    2. The per-row factor :math:`1/(nS)` is applied to the small (r, D)
       operands, not to the (r, V) block: :math:`dh_b = \mathrm{diag}(s)(e' E)`
       and :math:`dE \mathrel{+}= e'^\top(\mathrm{diag}(s) h_b)` with
       :math:`e' = e - S\,\mathrm{onehot}(t)`, :math:`s = 1/(nS)`. What is
       left on the block is ``exp2`` and one element per row; the row sums
       :math:`S` are a matrix-vector product with a vector of ones (BLAS, as in
       `_bounded_softmax_inplace`).
    3. The rows are cut into one slice per CPU core (`parallel.for_each_slice`);
       each slice walks its blocks with its own block buffer and its own
       partial :math:`dE`, and the partials are added at the end. (So the
       order in which :math:`dE` is summed, and its last bits, depend on the
       number of slices.)

    The same numbers as ``F.linear(h, E.T)`` + ``F.cross_entropy`` and their
    backwards, up to rounding (tested).

    Args: h (N, D); E (V, D) the tied embedding; targets (N,) ids or ignore_index.
    Returns: loss (0-d); cache = (dh (N, D), dE (V, D)).
    """
    _check_float("h", h)
    _check_float("E", E)
    if h.ndim != 2 or E.ndim != 2 or h.shape[1] != E.shape[1]:
        raise ValueError(f"h, E: expected shapes (N, D) and (V, D), got {tuple(h.shape)} and {tuple(E.shape)}")
    if targets.shape != h.shape[:1]:
        raise ValueError(f"targets: expected shape ({h.shape[0]},), got {tuple(targets.shape)}")
    xp = get_array_module(h)
    N, V = h.shape[0], E.shape[0]
    keep = targets != ignore_index                                     # (N,)
    bad = keep & ((targets < 0) | (targets >= V))
    if bool(bad.any()):
        raise ValueError(f"targets: expected class ids in [0, {V}) or ignore_index={ignore_index}, "
                         f"got {int(targets[bad][0])}")
    n = max(int(keep.sum()), 1)
    rows_per_block = rows_per_block or _OUTPUT_ROWS_PER_BLOCK
    # max_i |h_i| * max_c |E_c| bounds every logit: see 1. above
    bound_squared = float(xp.einsum("nd,nd->n", h, h).max(initial=0.0)) * float(xp.einsum("vd,vd->v", E, E).max())
    shift = not bound_squared < _NO_SHIFT_BOUND ** 2
    dtype = np.result_type(h.dtype, E.dtype)
    dh = xp.empty((N, h.shape[1]), dtype=dtype)                        # (N, D)
    nll = xp.empty(N, dtype=dtype)                                     # (N,) -log p(target) per row
    E_log2 = xp.multiply(E, _LOG2_E, dtype=dtype)                      # (V, D): h E_log2^T = z log2 e, see 1.
    ones = xp.ones(V, dtype=dtype)                                     # (V,): z @ ones = the row sums
    partial_dE = {}                                                    # slice start -> its (V, D) sum

    def rows(s):
        z = xp.empty((min(rows_per_block, s.stop - s.start), V), dtype=dtype)   # (r, V) the block buffer
        dE_s = xp.zeros(E.shape, dtype=dtype)                          # (V, D)
        product = xp.empty(E.shape, dtype=dtype)                       # (V, D) one block's dz^T h
        for start in range(s.start, s.stop, rows_per_block):
            b = slice(start, min(start + rows_per_block, s.stop))
            _output_block(h[b], E, E_log2, ones, targets[b], keep[b], n, shift, z[:b.stop - b.start], dh[b],
                          nll[b], product)
            dE_s += product
        partial_dE[s.start] = dE_s

    for_each_slice(rows, N, elements_per_row=V, parallel=xp is np)
    dE = partial_dE.pop(0) if N else xp.zeros(E.shape, dtype=dtype)
    for start in sorted(partial_dE):
        dE += partial_dE[start]
    loss = (nll * keep).sum() / n
    return xp.asarray(loss, dtype=dtype), (dh, dE)


def _output_block(h_b, E, E_log2, ones, t, keep, n, shift, z, dh_b, nll_b, dE_b):
    """One block of `tied_output_cross_entropy_fast`: fills dh_b (r, D), nll_b (r,) and dE_b (V, D); z (r, V) is scratch.

    E_log2 = E log2 e (V, D); ones (V,) a vector of ones.
    """
    xp = get_array_module(h_b)
    t_safe = xp.where(keep, t, 0)                                      # (r,) an ignored row reads column 0
    rows = xp.arange(len(t_safe))
    xp.matmul(h_b, E_log2.T, out=z)                                    # (r, D) @ (D, V) -> (r, V): z' = z log2 e
    if shift:
        z -= z.max(axis=1, keepdims=True)                              # z' - m'
    target_logit = z[rows, t_safe] * math.log(2.0)                     # (r,) z_t - m = (z'_t - m') ln 2, before exp2
    xp.exp2(z, out=z)                                                  # e = 2^(z' - m') = exp(z - m)
    total = z @ ones                                                   # (r, V) @ (V,) -> (r,): S
    if not bool(xp.isfinite(total).all()) or not bool(xp.isfinite(target_logit).all()):
        raise ValueError("h: the logits h E^T are not finite (NaN or inf: the model diverged; "
                         "try a smaller learning rate or gradient clipping)")
    xp.subtract(xp.log(total), target_logit, out=nll_b)                # -log p_t = log S - (z_t - m)
    z[rows, t_safe] -= total                                           # e' = e - S onehot(t)
    s = (keep / (n * total)).astype(z.dtype, copy=False)[:, None]      # (r, 1) 1 / (n S); 0 for an ignored row
    # dz = s e': the factor s goes on the (r, D) side of both products, see 2. above
    xp.matmul(z, E, out=dh_b)                                          # (r, V) @ (V, D) -> (r, D)
    dh_b *= s
    xp.matmul(z.T, h_b * s, out=dE_b)                                  # (V, r) @ (r, D) -> (V, D)


def tied_output_cross_entropy_fast_backward(dloss, cache):
    """The gradients `tied_output_cross_entropy_fast` computed, times ``dloss``: returns (dh (N, D), dE (V, D))."""
    dh, dE = cache
    scale = float(dloss)
    return dh * scale, dE * scale

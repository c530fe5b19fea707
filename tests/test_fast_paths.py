"""The fast twins at the end of functional.py compute what the plain formulas compute.

1. Each ``*_fast`` function against its plain version in float64, over shapes
   drawn by hypothesis: attention with every kind of mask (padding, causal, a
   fully masked row, broadcasting), LayerNorm, the embedding's scatter-add.
2. ``dropout_fast``: its mask is exactly the documented 16-bit rule, drawn from
   the given Generator only, in the cache `dropout_backward` reads; it keeps the
   expectation; p=0 and eval mode are the identity.
3. Whole models: the same logits and every parameter's gradient with the fast
   paths on and off (`Module.use_fast_paths`).
4. float32 in -> float32 out, and a float32 training step leaves nothing in float64.

Every test here runs twice (the ``threads`` fixture): once on one thread, and
once with the fast twins cutting even these tiny arrays into row slices run on
3 threads (`parallel.for_each_slice`), so both ways are checked.

A fast path that drifts from its plain twin fails here; the plain twins are
themselves checked against numerical gradients in test_functional.py.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_transformer import functional as F
from numpy_transformer import fast
from numpy_transformer import parallel
from numpy_transformer.gradcheck import check_gradients
from numpy_transformer.models import TransformerClassifier, TransformerLM
from numpy_transformer.nn import (Dropout, Embedding, FeedForward, LayerNorm, MultiHeadAttention, TransformerBlock,
                                  TransformerEncoder)
from numpy_transformer.optim import AdamW, clip_grad_norm

ATOL = 1e-12          # float64: the twins differ only in the order of a few roundings
seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 4)


@pytest.fixture(scope="module", autouse=True, params=[1, 3], ids=["1 thread", "3 threads"])
def threads(request):
    """Run the module with 1 thread, then with 3 threads and no minimum size: tiny arrays get cut too.

    With 3 threads the cache-sized blocks that each slice is walked in are
    made tiny as well (a few elements, one sequence), so that even these
    small arrays are cut into several blocks per slice.
    """
    previous = (parallel.MIN_ELEMENTS_PER_THREAD, fast._ELEMENTS_PER_BLOCK, fast._ATTENTION_SCORES_PER_BLOCK)
    parallel.MIN_ELEMENTS_PER_THREAD = 0
    if request.param > 1:
        fast._ELEMENTS_PER_BLOCK, fast._ATTENTION_SCORES_PER_BLOCK = 3, 1
    with parallel.num_threads(request.param):
        yield request.param
    parallel.MIN_ELEMENTS_PER_THREAD, fast._ELEMENTS_PER_BLOCK, fast._ATTENTION_SCORES_PER_BLOCK = previous


def assert_close(got, expected, what, atol=ATOL):
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=what)


# --------------------------------------------------------------------------- #
# 1. Attention
# --------------------------------------------------------------------------- #

def _mask(kind, rng, B, H, Tq, Tk):
    if kind == "none":
        return None
    if kind == "padding":                                     # (B, 1, 1, Tk), every row keeps key 0
        valid = np.arange(Tk)[None, :] < rng.integers(1, Tk + 1, size=B)[:, None]
        return F.padding_mask(valid)
    if kind == "causal":                                      # (Tq, Tk)
        return F.causal_mask(Tq, Tk)
    if kind == "padding & causal":                            # (B, 1, Tq, Tk)
        valid = np.arange(Tk)[None, :] < rng.integers(1, Tk + 1, size=B)[:, None]
        return F.padding_mask(valid) & F.causal_mask(Tq, Tk)
    mask = rng.random((B, H, Tq, Tk)) < 0.5                   # "random": some rows fully masked
    mask[0, 0, 0] = False
    return mask


def assert_attention_twins_agree(q, k, v, mask, rng):
    out, weights, cache = F.scaled_dot_product_attention(q, k, v, mask)
    out_f, weights_f, cache_f = fast.scaled_dot_product_attention_fast(q, k, v, mask)
    assert_close(out_f, out, "out")
    assert_close(weights_f, weights, "weights")
    dout = rng.standard_normal(out.shape)
    for name, got, expected in zip(("dq", "dk", "dv"), fast.scaled_dot_product_attention_fast_backward(dout, cache_f),
                                   F.scaled_dot_product_attention_backward(dout, cache)):
        assert_close(got, expected, name)


@given(B=sizes, H=sizes, Tq=st.integers(1, 6), Tk=st.integers(1, 6), Dh=st.integers(1, 5), Dv=st.integers(1, 5),
       kind=st.sampled_from(["none", "padding", "causal", "padding & causal", "random"]), seed=seeds)
def test_fast_attention_equals_plain_attention_forward_and_backward(B, H, Tq, Tk, Dh, Dv, kind, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, Tq, Dh)) * 2
    k = rng.standard_normal((B, H, Tk, Dh)) * 2
    v = rng.standard_normal((B, H, Tk, Dv))
    assert_attention_twins_agree(q, k, v, _mask(kind, rng, B, H, Tq, Tk), rng)


@given(seed=seeds, kind=st.sampled_from(["none", "padding", "random"]))
def test_fast_attention_equals_plain_when_leading_dimensions_broadcast(seed, kind):
    """q shared by every batch row, k and v by every head: the gradients are summed back (unbroadcast)."""
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((1, 3, 4, 2)), rng.standard_normal((2, 1, 5, 2)), rng.standard_normal((2, 1, 5, 3))
    assert_attention_twins_agree(q, k, v, _mask(kind, rng, 2, 3, 4, 5), rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["none", "padding & causal", "random"])
@pytest.mark.parametrize("q_size, k_size", [(20, 20), (100, 1), (1, 100)])
def test_fast_attention_shifts_by_the_row_max_when_scores_could_overflow(kind, dtype, q_size, k_size):
    """Scores in the hundreds: float32's exp would overflow without the shift; the bound must see it coming."""
    rng = np.random.default_rng(6)
    q, k = rng.standard_normal((2, 2, 5, 8)) * q_size, rng.standard_normal((2, 2, 6, 8)) * k_size
    v, dout = rng.standard_normal((2, 2, 6, 3)), rng.standard_normal((2, 2, 5, 3))
    q, k, v, dout = (a.astype(dtype) for a in (q, k, v, dout))
    mask = _mask(kind, rng, 2, 2, 5, 6)
    out, weights, cache = F.scaled_dot_product_attention(q, k, v, mask)
    out_f, weights_f, cache_f = fast.scaled_dot_product_attention_fast(q, k, v, mask)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    assert np.isfinite(weights_f).all() and np.abs(weights).max() == 1.0     # really peaked: one-hot rows
    np.testing.assert_allclose(weights_f, weights, **tol)
    np.testing.assert_allclose(out_f, out, **tol)
    for got, expected in zip(fast.scaled_dot_product_attention_fast_backward(dout, cache_f),
                             F.scaled_dot_product_attention_backward(dout, cache)):
        np.testing.assert_allclose(got, expected, **tol)


@pytest.mark.parametrize("base2", [False, True])
@pytest.mark.parametrize("shift", [True, False])
def test_in_place_softmax_with_and_without_the_shift_is_the_plain_softmax(shift, base2):
    """Both branches of the fast softmax, on scores small enough for either (|score| < 64).

    base2: the scores are handed over as s log2 e and exponentiated with exp2, as the fast attention does.
    """
    rng = np.random.default_rng(8)
    scores = rng.uniform(-30, 30, size=(2, 3, 4, 5))
    mask = rng.random((2, 1, 4, 5)) < 0.6
    mask[0, 0, 2] = False
    plain = np.where(mask, scores, F.MASK_FILL)
    plain, _ = F.softmax(plain)
    plain = plain * mask.any(axis=-1, keepdims=True)
    given = scores * fast._LOG2_E if base2 else scores.copy()
    got = fast._masked_softmax_inplace(given, mask, shift=shift, base2=base2)
    assert_close(got, plain, f"softmax, shift={shift}, base2={base2}")
    bounded = fast._bounded_softmax_inplace(scores * fast._LOG2_E if base2 else scores.copy(), mask.astype(float),
                                            base2=base2)
    assert_close(bounded, plain, f"bounded softmax, base2={base2}")


def test_fast_attention_gives_exact_zeros_for_a_query_with_nothing_to_attend_to():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, 3, 4)).astype(np.float32) for _ in range(3))
    mask = np.ones((1, 1, 3, 3), dtype=bool)
    mask[0, 0, 1] = False
    out, weights, cache = fast.scaled_dot_product_attention_fast(q, k, v, mask)
    dq, dk, dv = fast.scaled_dot_product_attention_fast_backward(np.ones_like(out), cache)
    assert np.all(weights[0, 0, 1] == 0) and np.all(out[0, 0, 1] == 0) and np.all(dq[0, 0, 1] == 0)
    assert all(np.isfinite(a).all() for a in (out, weights, dq, dk, dv))


def test_fast_attention_matches_numerical_gradients():
    rng = np.random.default_rng(3)
    mask = _mask("padding & causal", rng, 2, 2, 3, 3)
    inputs = {"q": rng.standard_normal((2, 2, 3, 4)), "k": rng.standard_normal((2, 2, 3, 4)),
              "v": rng.standard_normal((2, 2, 3, 2))}
    results = check_gradients(
        lambda q, k, v: fast.scaled_dot_product_attention_fast(q, k, v, mask)[0],
        lambda dy, q, k, v: dict(zip("qkv", fast.scaled_dot_product_attention_fast_backward(
            dy, fast.scaled_dot_product_attention_fast(q, k, v, mask)[2]))),
        inputs)
    assert max(r.max_rel_error for r in results.values()) < 1e-5


def test_fast_attention_writes_into_out_views_as_multi_head_attention_uses_them():
    """out= for the merged heads (forward) and for the q, k, v slots of dqkv (backward): same numbers."""
    rng = np.random.default_rng(1)
    B, H, T, Dh = 2, 3, 4, 5
    qkv = rng.standard_normal((B, T, 3, H, Dh))
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)
    mask = _mask("padding", rng, B, H, T, T)
    out, weights, cache = fast.scaled_dot_product_attention_fast(q, k, v, mask)
    merged = np.empty((B, T, H * Dh))
    returned, _, cache_view = fast.scaled_dot_product_attention_fast(q, k, v, mask, out=F.split_heads(merged, H))
    assert np.shares_memory(returned, merged)
    assert_close(merged, F.merge_heads(out), "merged heads")
    dout = rng.standard_normal(out.shape)
    dqkv = np.empty((B, T, 3, H, Dh))
    fast.scaled_dot_product_attention_fast_backward(dout, cache_view, out=tuple(dqkv.transpose(2, 0, 3, 1, 4)))
    for name, got, expected in zip("qkv", dqkv.transpose(2, 0, 3, 1, 4),
                                   fast.scaled_dot_product_attention_fast_backward(dout, cache)):
        assert_close(got, expected, f"d{name} written through the view")


def test_fast_attention_backward_refuses_out_arrays_of_the_wrong_shape():
    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 2, 5, 4)), rng.standard_normal((1, 2, 5, 3))
    out, _, cache = fast.scaled_dot_product_attention_fast(q, k, v)
    with pytest.raises(ValueError, match="out: expected three arrays shaped like q, k, v"):
        fast.scaled_dot_product_attention_fast_backward(out, cache, out=(np.empty(q.shape),) * 3)


def test_fast_attention_checks_its_inputs_like_the_plain_one():
    q = np.ones((1, 3, 4))
    with pytest.raises(ValueError, match="k: expected the same last dimension"):
        fast.scaled_dot_product_attention_fast(q, np.ones((1, 3, 5)), np.ones((1, 3, 2)))
    with pytest.raises(TypeError, match="mask: expected a boolean array"):
        fast.scaled_dot_product_attention_fast(q, q, q, np.ones((3, 3)))


# --------------------------------------------------------------------------- #
# 1b. LayerNorm and the embedding's scatter-add
# --------------------------------------------------------------------------- #

@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple), D=st.integers(1, 7), seed=seeds)
def test_fast_layernorm_equals_plain_layernorm_forward_and_backward(shape, D, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape + (D,)) * 3 + 1
    gamma, beta, dy = rng.standard_normal(D), rng.standard_normal(D), rng.standard_normal(shape + (D,))
    y, cache = F.layernorm(x, gamma, beta)
    y_f, cache_f = fast.layernorm_fast(x, gamma, beta)
    assert_close(y_f, y, "y")
    for what, c in (("fast forward's cache", cache_f), ("plain forward's cache", cache)):
        for name, got, expected in zip(("dx", "dgamma", "dbeta"), fast.layernorm_fast_backward(dy, c),
                                       F.layernorm_backward(dy, cache)):
            assert_close(got, expected, f"{name} from the {what}")


@given(shape=st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple), seed=seeds)
def test_fast_gelu_equals_plain_gelu_and_keeps_its_slope(shape, seed):
    rng = np.random.default_rng(seed)
    x, dy = rng.standard_normal(shape) * 3, rng.standard_normal(shape)
    y, cache = F.gelu(x)
    y_f, slope = fast.gelu_fast(x)
    assert_close(y_f, y, "y")
    assert_close(slope, F.gelu_backward(np.ones_like(x), cache), "the slope gelu'(x)")
    dx = fast.gelu_fast_backward(dy, slope)
    assert_close(dx, F.gelu_backward(dy, cache), "dx")
    assert not np.shares_memory(dx, dy)


@pytest.mark.parametrize("fast_forward", [True, False])
def test_feed_forward_backward_follows_the_gelu_forward_that_ran(fast_forward):
    """The fast GELU keeps another cache than the plain one: backward must use the matching formula."""
    rng = np.random.default_rng(3)
    ffn = FeedForward(4, 6, activation="gelu", rng=rng).to(dtype=np.float64)
    x, dy = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    grads = []
    for switch in (False, True):
        ffn.use_fast_paths(fast_forward).zero_grad()
        ffn(x)
        ffn.use_fast_paths(fast_forward != switch)      # switched (or not) between forward and backward
        dx = ffn.backward(dy)
        grads.append([dx] + [p.grad.copy() for p in ffn.parameters()])
    for got, expected in zip(grads[1], grads[0]):
        assert_close(got, expected, "gradient after switching the fast paths between forward and backward")


@pytest.mark.parametrize("fused_qkv", [True, False])
@pytest.mark.parametrize("fast_forward", [True, False])
def test_pre_norm_block_backward_follows_the_layernorm_forward_that_ran(fast_forward, fused_qkv):
    """A pre-norm block hands its LayerNorms to the sublayers, which fold them into their first linear
    layer with the fast paths: backward must follow the forward that ran, even if the switch moved."""
    rng = np.random.default_rng(5)
    x, dy = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    block = TransformerBlock(4, 2, 6, dropout=0.0, norm="pre", activation="gelu", fused_qkv=fused_qkv,
                             rng=np.random.default_rng(0), dtype=np.float64)
    for p in block.parameters():                  # gains and shifts away from 1 and 0, so that folding them shows
        p.data[...] = rng.standard_normal(p.shape)
    grads = []
    for switch in (False, True):
        block.use_fast_paths(fast_forward).zero_grad()
        y = block(x, F.causal_mask(3))
        block.use_fast_paths(fast_forward != switch)    # switched (or not) between forward and backward
        dx = block.backward(dy)
        grads.append([y, dx] + [p.grad.copy() for p in block.parameters()])
    block.use_fast_paths(not fast_forward).zero_grad()
    y = block(x, F.causal_mask(3))
    grads.append([y, block.backward(dy)] + [p.grad.copy() for p in block.parameters()])
    # the reference: each LayerNorm as its own module, before its sublayer (the block's code before the fold)
    block.use_fast_paths(False).zero_grad()
    h = x + block.attn(block.norm1(x), F.causal_mask(3))
    y = h + block.ffn(block.norm2(h))
    dh = dy + block.norm2.backward(block.ffn.backward(dy))
    dx = dh + block.norm1.backward(block.attn.backward(dh))
    reference = [y, dx] + [p.grad.copy() for p in block.parameters()]
    for run in grads:
        for got, expected in zip(run, reference):
            assert_close(got, expected, "pre-norm block against its LayerNorms run as modules")


@pytest.mark.parametrize("norm", ["post", "pre", "parallel"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fast_block_adds_its_residuals_without_touching_x_or_dout(norm, dropout):
    """The fast block writes each residual sum into the sublayer's fresh output: x, dout and the caches must not see it."""
    rng = np.random.default_rng(11)
    x, dout = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 4))
    x_before, dout_before = x.copy(), dout.copy()
    results = {}
    for fast_paths in (True, False):
        block = TransformerBlock(4, 2, 6, dropout=dropout, norm=norm, activation="gelu",
                                 rng=np.random.default_rng(0), dtype=np.float64).use_fast_paths(fast_paths)
        block.eval() if dropout == 0.0 else block.train()
        y = block(x, F.causal_mask(5))
        dx = block.backward(dout)
        np.testing.assert_array_equal(x, x_before, err_msg="forward changed x")
        np.testing.assert_array_equal(dout, dout_before, err_msg="backward changed dout")
        assert not np.shares_memory(y, x) and not np.shares_memory(dx, dout)
        results[fast_paths] = [y, dx] + [p.grad.copy() for p in block.parameters()]
    if dropout == 0.0:      # (with dropout the fast and plain masks differ)
        for got, expected in zip(results[True], results[False]):
            assert_close(got, expected, f"{norm} block, fast paths against plain")


def test_fast_layernorm_checks_gamma_and_beta():
    with pytest.raises(ValueError, match=r"gamma: expected shape \(4,\), got \(3,\)"):
        fast.layernorm_fast(np.ones((2, 4)), np.ones(3), np.zeros(4))


@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple), d_in=st.integers(1, 5),
       d_out=st.integers(1, 5), bias=st.booleans(), seed=seeds)
def test_fast_linear_backward_equals_plain_linear_backward(shape, d_in, d_out, bias, seed):
    rng = np.random.default_rng(seed)
    x, W = rng.standard_normal(shape + (d_in,)), rng.standard_normal((d_in, d_out))
    b = rng.standard_normal(d_out) if bias else None
    dy = rng.standard_normal(shape + (d_out,))
    _, cache = F.linear(x, W, b)
    got, expected = fast.linear_fast_backward(dy, cache), F.linear_backward(dy, cache)
    for name, g, e in zip(("dx", "dW", "db"), got, expected):
        if e is None:
            assert g is None, f"{name}: expected None without a bias"
        else:
            assert_close(g, e, name)


@given(shape=st.lists(st.integers(1, 5), min_size=0, max_size=2).map(tuple), D=st.integers(1, 7),
       d_out=st.integers(1, 6), bias=st.booleans(), seed=seeds)
def test_fast_layernorm_linear_equals_layernorm_then_linear(shape, D, d_out, bias, seed):
    """The gain and shift folded into W and b: the plain pair's output and all five gradients."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape + (D,)) * 3 + 1
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
    W, b = rng.standard_normal((D, d_out)), (rng.standard_normal(d_out) if bias else None)
    dout = rng.standard_normal(shape + (d_out,))
    x_before = x.copy()
    y, ln_cache = F.layernorm(x, gamma, beta)
    out, lin_cache = F.linear(y, W, b)
    dy, dW, db = F.linear_backward(dout, lin_cache)
    dx, dgamma, dbeta = F.layernorm_backward(dy, ln_cache)
    out_f, cache = fast.layernorm_linear_fast(x, gamma, beta, W, b)
    assert_close(out_f, out, "out")
    got = fast.layernorm_linear_fast_backward(dout, cache)
    for name, g, e in zip(("dx", "dgamma", "dbeta", "dW", "db"), got, (dx, dgamma, dbeta, dW, db)):
        if e is None:
            assert g is None, f"{name}: expected None without a bias"
        else:
            assert_close(g, e, name)
    np.testing.assert_array_equal(x, x_before, err_msg="x changed")


def test_fast_layernorm_linear_matches_numerical_gradients():
    """The folded LayerNorm + linear backward against central differences in float64 (all five inputs)."""
    rng = np.random.default_rng(4)
    inputs = {"x": rng.standard_normal((2, 3, 5)) * 2 + 1, "gamma": rng.standard_normal(5),
              "beta": rng.standard_normal(5), "W": rng.standard_normal((5, 4)), "b": rng.standard_normal(4)}
    results = check_gradients(
        lambda x, gamma, beta, W, b: fast.layernorm_linear_fast(x, gamma, beta, W, b)[0],
        lambda dy, x, gamma, beta, W, b: dict(zip(("x", "gamma", "beta", "W", "b"), fast.layernorm_linear_fast_backward(
            dy, fast.layernorm_linear_fast(x, gamma, beta, W, b)[1]))),
        inputs)
    assert max(r.max_rel_error for r in results.values()) < 1e-5


@given(B=sizes, T=st.integers(1, 40), V=st.integers(1, 6), D=st.integers(1, 4),
       dtype=st.sampled_from([np.float64, np.float32]), seed=seeds)
def test_fast_embedding_backward_equals_add_at_with_repeated_ids(B, T, V, D, dtype, seed):
    """One scatter-add per repeat of a token adds each token's rows in the order of add.at: the same bits."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, size=(B, T))                        # V small: ids repeat, up to B*T times
    _, cache = F.embedding(ids, rng.standard_normal((V, D)).astype(dtype))
    dy = (rng.standard_normal((B, T, D)) * 10.0 ** rng.integers(-3, 4, size=(B, T, 1))).astype(dtype)
    dE = fast.embedding_backward_fast(dy, cache)
    assert dE.dtype == dtype
    np.testing.assert_array_equal(dE, F.embedding_backward(dy, cache), err_msg="dE")


def test_fast_embedding_backward_of_no_tokens_is_zero():
    _, cache = F.embedding(np.zeros((2, 0), dtype=np.int64), np.ones((3, 4)))
    np.testing.assert_array_equal(fast.embedding_backward_fast(np.zeros((2, 0, 4)), cache), np.zeros((3, 4)))


# --------------------------------------------------------------------------- #
# 2. dropout_fast
# --------------------------------------------------------------------------- #

def _documented_mask(seed, shape, p):
    """The rule of dropout_fast's docstring, written out: 16 raw bits per element, kept if >= round(p * 65536)."""
    n = int(np.prod(shape))
    raw = np.random.default_rng(seed).bit_generator.random_raw((n + 3) // 4)
    bits = raw.view(np.uint16)[:n].reshape(shape)
    return bits >= round(p * 65536)


def _documented_scale(seed, shape, p):
    """The scaled mask the fast twins keep: the documented mask / (1 - p), with p quantised to 1/65536."""
    return _documented_mask(seed, shape, p) / (1.0 - round(p * 65536) / 65536)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)])
def test_fast_dropout_mask_is_the_documented_16_bit_rule_and_the_plain_backward_uses_it(p, shape):
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    y, cache = fast.dropout_fast(x, p, np.random.default_rng(11))
    scale = _documented_scale(11, shape, p)
    np.testing.assert_array_equal(cache, scale)                # the plain version's cache: the scaled mask
    assert_close(y, x * scale, "y")
    assert_close(F.dropout_backward(dy, cache), dy * scale, "dx")


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)])
def test_fused_relu_dropout_is_relu_then_the_documented_dropout_mask(p, shape):
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    y, cache = fast.relu_dropout_fast(x, p, np.random.default_rng(11))
    scale = _documented_scale(11, shape, p)
    relu, relu_cache = F.relu(x)
    assert_close(y, relu * scale, "y")
    assert_close(fast.dropout_fast_backward(dy, cache), F.relu_backward(dy * scale, relu_cache), "dx")
    if p > 0:    # the same bits as dropout_fast draws from the same generator
        assert_close(y, fast.dropout_fast(relu, p, np.random.default_rng(11))[0], "y against dropout_fast(relu(x))")


def test_fused_relu_dropout_in_eval_mode_is_relu_and_checks_its_arguments():
    x = np.random.default_rng(2).standard_normal((3, 4))
    y, cache = fast.relu_dropout_fast(x, 0.5, None, training=False)
    relu, relu_cache = F.relu(x)
    assert_close(y, relu, "y")
    assert_close(fast.dropout_fast_backward(x, cache), F.relu_backward(x, relu_cache), "dx")
    with pytest.raises(ValueError, match="p: expected a probability"):
        fast.relu_dropout_fast(x, 1.0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        fast.relu_dropout_fast(x, 0.5, 42)
    with pytest.raises(TypeError):
        fast.relu_dropout_fast(np.arange(3), 0.5, np.random.default_rng(0))


def test_fused_relu_dropout_matches_numerical_gradients():
    """With the mask fixed (the same seed every call), y is x times a constant mask: checkable away from 0."""
    rng = np.random.default_rng(4)
    z = rng.standard_normal((3, 2, 5))
    inputs = {"x": np.sign(z) * (0.5 + np.abs(z))}          # |x| >= 0.5: no kink within the step h

    def forward(x):
        return fast.relu_dropout_fast(x, 0.3, np.random.default_rng(9))[0]

    results = check_gradients(forward, lambda dy, x: {"x": fast.dropout_fast_backward(
        dy, fast.relu_dropout_fast(x, 0.3, np.random.default_rng(9))[1])}, inputs)
    assert results["x"].max_rel_error < 1e-5


@pytest.mark.parametrize("cache_from", ["dropout", "dropout_fast", "identity"])
def test_fast_dropout_backward_equals_the_plain_backward_and_returns_a_new_array(cache_from):
    rng = np.random.default_rng(5)
    x, dy = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5))
    p = 0.0 if cache_from == "identity" else 0.4
    _, cache = (fast.dropout_fast if cache_from == "dropout_fast" else F.dropout)(x, p, rng)
    dx = fast.dropout_fast_backward(dy, cache)
    assert_close(dx, F.dropout_backward(dy, cache), "dx")
    assert not np.shares_memory(dx, dy)


def test_feed_forward_fast_fuses_relu_and_dropout_and_matches_the_documented_mask():
    """Fast FFN in training: relu(x W1 + b1) * mask @ W2 + b2, with the mask drawn from the FFN's dropout rng."""
    from numpy_transformer.nn import FeedForward
    rng = np.random.default_rng(6)
    ffn = FeedForward(4, 6, dropout=0.25, rng=np.random.default_rng(0), dtype=np.float64)
    ffn.drop.rng = np.random.default_rng(21)
    x, dy = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    y = ffn(x)
    hidden = x @ ffn.W1.data + ffn.b1.data
    m = _documented_scale(21, hidden.shape, 0.25)
    assert_close(y, (np.maximum(hidden, 0) * m) @ ffn.W2.data + ffn.b2.data, "y")
    dx = ffn.backward(dy)
    dhidden = (dy @ ffn.W2.data.T) * m * (hidden > 0)
    assert_close(dx, dhidden @ ffn.W1.data.T, "dx")
    assert_close(ffn.W1.grad, np.einsum("btd,btf->df", x, dhidden), "dW1")
    # plain path and eval mode: the plain relu and Dropout modules
    ffn.eval()
    assert_close(ffn(x), np.maximum(hidden, 0) @ ffn.W2.data + ffn.b2.data, "eval y")
    ffn.use_fast_paths(False).train()
    ffn.drop.rng = np.random.default_rng(21)
    keep = np.random.default_rng(21).random(hidden.shape, dtype=np.float32) >= 0.25
    assert_close(ffn(x), (np.maximum(hidden, 0) * keep / 0.75) @ ffn.W2.data + ffn.b2.data, "plain y")


def test_fast_dropout_same_seed_same_mask_other_seed_other_mask():
    x = np.ones((40, 50))
    y1, _ = fast.dropout_fast(x, 0.5, np.random.default_rng(42))
    y2, _ = fast.dropout_fast(x, 0.5, np.random.default_rng(42))
    y3, _ = fast.dropout_fast(x, 0.5, np.random.default_rng(43))
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)


def test_fast_dropout_drops_about_p_and_keeps_the_mean():
    x = np.ones((400, 500), dtype=np.float32)
    for p in (0.1, 0.3):
        y, scale = fast.dropout_fast(x, p, np.random.default_rng(0))
        assert abs((scale == 0).mean() - p) < 0.005                 # 200,000 draws: 5 sigma is ~0.003
        assert abs(y.mean() - 1.0) < 0.01


def test_fast_dropout_is_the_identity_with_p_zero_or_in_eval_mode_and_checks_its_arguments():
    x = np.arange(6.0).reshape(2, 3)
    for y, cache in (fast.dropout_fast(x, 0.0, np.random.default_rng(1)),
                     fast.dropout_fast(x, 0.5, None, training=False)):
        np.testing.assert_array_equal(y, x)
        dx = F.dropout_backward(x, cache)
        np.testing.assert_array_equal(dx, x)
        assert dx is not x                                     # a new array, as every backward returns
    with pytest.raises(ValueError, match="p: expected a probability in"):
        fast.dropout_fast(x, 1.0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        fast.dropout_fast(x, 0.5, 42)


def test_dropout_module_uses_the_fast_twin_by_default_and_the_plain_one_when_asked():
    x = np.ones((6, 7))
    default = Dropout(0.3, np.random.default_rng(5))
    np.testing.assert_array_equal(default(x), fast.dropout_fast(x, 0.3, np.random.default_rng(5))[0])
    plain = Dropout(0.3, np.random.default_rng(5)).use_fast_paths(False)
    np.testing.assert_array_equal(plain(x), F.dropout(x, 0.3, np.random.default_rng(5))[0])
    dy = np.arange(42.0).reshape(6, 7)
    np.testing.assert_array_equal(plain.backward(dy), F.dropout(x, 0.3, np.random.default_rng(5))[1] * dy)


# --------------------------------------------------------------------------- #
# 3. Modules and whole models, fast paths on and off
# --------------------------------------------------------------------------- #

def test_use_fast_paths_reaches_every_module_and_returns_the_module():
    enc = TransformerEncoder(2, 8, 2, 12, dropout=0.1, rng=np.random.default_rng(0))
    assert enc.use_fast_paths(False) is enc
    assert all(m.fast is False for m in enc.modules())
    assert all(m.fast is True for m in enc.use_fast_paths().modules())


def _run(model, ids, mask, dlogits_seed=7):
    model.zero_grad()
    logits = model(ids, mask)
    dlogits = np.random.default_rng(dlogits_seed).standard_normal(logits.shape)
    model.backward(dlogits)
    return logits, {name: p.grad.copy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("norm", ["pre", "post", "parallel"])
def test_classifier_is_the_same_with_fast_paths_on_and_off(norm):
    """Logits and every gradient; padding in the batch, so the masked attention paths run."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 11, size=(3, 6))
    ids[:, 1] = ids[:, 2]                                      # repeated ids: the embedding's scatter-add
    mask = np.arange(6)[None, :] < np.array([[6], [4], [1]])
    kw = dict(d_model=8, n_heads=2, n_layers=2, d_ff=16, max_len=8, dropout=0.0, norm=norm, dtype=np.float64)
    model = TransformerClassifier(11, 3, **kw)
    fast_logits, fast_grads = _run(model.use_fast_paths(True), ids, mask)
    plain_logits, plain_grads = _run(model.use_fast_paths(False), ids, mask)
    assert_close(fast_logits, plain_logits, "logits")
    for name in plain_grads:
        assert_close(fast_grads[name], plain_grads[name], f"grad of {name}", atol=1e-11)


@pytest.mark.parametrize("fused_qkv", [True, False])
def test_language_model_and_separate_qkv_are_the_same_with_fast_paths_on_and_off(fused_qkv):
    """The causal mask, tied embeddings (E gets two gradients) and both Q/K/V layouts."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 9, size=(2, 5))
    mask = np.array([[True] * 5, [True, True, True, False, False]])
    model = TransformerLM(9, d_model=8, n_heads=2, n_layers=1, d_ff=12, max_len=6, dropout=0.0, dtype=np.float64)
    if not fused_qkv:
        model.encoder.blocks[0].attn = MultiHeadAttention(8, 2, fused_qkv=False, rng=np.random.default_rng(3),
                                                          dtype=np.float64)
    fast_logits, fast_grads = _run(model.use_fast_paths(True), ids, mask)
    plain_logits, plain_grads = _run(model.use_fast_paths(False), ids, mask)
    assert_close(fast_logits, plain_logits, "logits")
    for name in plain_grads:
        assert_close(fast_grads[name], plain_grads[name], f"grad of {name}", atol=1e-11)


def test_fast_layers_keep_the_last_attention_and_check_backward_before_forward():
    mha = MultiHeadAttention(8, 2, rng=np.random.default_rng(0), dtype=np.float64)
    mha(np.random.default_rng(1).standard_normal((2, 3, 8)))
    assert mha.last_attention.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(mha.last_attention.sum(axis=-1), 1.0)
    for module in (LayerNorm(4), Embedding(5, 4, rng=np.random.default_rng(0))):
        with pytest.raises(RuntimeError, match="forward first"):
            module.backward(np.zeros((1, 2, 4)))


# --------------------------------------------------------------------------- #
# 4. float32 stays float32
# --------------------------------------------------------------------------- #

def test_every_fast_twin_keeps_float32():
    rng = np.random.default_rng(0)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    out = {}
    q, k, v = f32(2, 2, 3, 4), f32(2, 2, 5, 4), f32(2, 2, 5, 3)
    mask = F.padding_mask(np.array([[True] * 5, [True, True, False, False, False]]))
    o, weights, cache = fast.scaled_dot_product_attention_fast(q, k, v, mask)
    out["attention out"], out["attention weights"] = o, weights
    out["dq"], out["dk"], out["dv"] = fast.scaled_dot_product_attention_fast_backward(f32(2, 2, 3, 3), cache)
    y, cache = fast.layernorm_fast(f32(2, 3, 4), f32(4), f32(4))
    out["layernorm"] = y
    out["layernorm dx"], out["dgamma"], out["dbeta"] = fast.layernorm_fast_backward(f32(2, 3, 4), cache)
    y, cache = fast.dropout_fast(f32(2, 3, 4), 0.1, np.random.default_rng(0))
    out["dropout"], out["dropout mask"] = y, cache
    out["dropout dx"] = fast.dropout_fast_backward(f32(2, 3, 4), cache)
    y, cache = fast.relu_dropout_fast(f32(2, 3, 4), 0.1, np.random.default_rng(0))
    out["relu+dropout"], out["relu+dropout mask"] = y, cache
    y, cache = fast.relu_dropout_fast(f32(2, 3, 4), 0.1, None, training=False)
    out["relu (eval)"], out["relu mask (eval)"] = y, cache
    _, cache = F.embedding(np.array([[0, 1, 1]]), f32(4, 5))
    out["embedding dE"] = fast.embedding_backward_fast(f32(1, 3, 5), cache)
    out["layernorm+linear"], cache = fast.layernorm_linear_fast(f32(2, 3, 4), f32(4), f32(4), f32(4, 5), f32(5))
    for name, a in zip(("dx", "dgamma", "dbeta", "dW", "db"), fast.layernorm_linear_fast_backward(f32(2, 3, 5), cache)):
        out[f"layernorm+linear {name}"] = a
    for name, a in out.items():
        assert a.dtype == np.float32, f"{name}: float32 in gave {a.dtype} out"


@pytest.mark.parametrize("fast", [True, False])
def test_a_float32_training_step_never_makes_a_float64_array(fast):
    """Every cached activation, gradient and optimizer buffer of a float32 step is float32."""
    rng = np.random.default_rng(0)
    model = TransformerClassifier(20, 2, d_model=8, n_heads=2, n_layers=2, d_ff=16, max_len=8, dropout=0.1,
                                  pooling="mean").use_fast_paths(fast)
    ids, labels = rng.integers(0, 20, size=(3, 8)), np.array([0, 1, 1])
    mask = np.arange(8)[None, :] < np.array([[8], [5], [2]])
    params = model.parameters()
    optimizer = AdamW(params)
    logits = model(ids, mask)
    loss, cache = F.cross_entropy(logits, labels)
    dx = model.backward(F.cross_entropy_backward(1.0, cache))
    clip_grad_norm(params, 1.0)
    optimizer.step()

    def arrays(obj):
        if isinstance(obj, np.ndarray):
            yield obj
        elif isinstance(obj, (tuple, list)):
            for item in obj:
                yield from arrays(item)

    found = {"logits": logits, "loss": np.asarray(loss), "dx": dx}
    for i, m in enumerate(model.modules()):
        for attr, value in vars(m).items():
            if attr.endswith("_cache") or attr == "last_attention":
                for j, a in enumerate(arrays(value)):
                    found[f"{type(m).__name__}[{i}].{attr}[{j}]"] = a
    for name, p in model.named_parameters():
        found[name], found[f"{name}.grad"] = p.data, p.grad
    for i, buffers in enumerate(optimizer.state):
        found.update({f"optimizer {key}.{i}": b for key, b in buffers.items()})
    upcast = {name: a.dtype for name, a in found.items() if a.dtype.kind == "f" and a.dtype != np.float32}
    assert upcast == {}, f"float32 step produced other float dtypes: {upcast}"


def test_adamw_updates_in_place_and_allocates_nothing_after_its_first_step():
    """The moments and the scratch buffer are made once; later steps write into them (tracemalloc sees it)."""
    import tracemalloc

    model = TransformerClassifier(50, 2, d_model=32, n_heads=2, n_layers=2, d_ff=64, max_len=16)
    params = model.parameters()
    rng = np.random.default_rng(0)
    for p in params:
        p.grad[...] = rng.standard_normal(p.shape)
    optimizer = AdamW(params)
    optimizer.step()                                            # creates m, v and the scratch buffers
    data = [p.data for p in params]
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    optimizer.step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert all(p.data is d for p, d in zip(params, data))      # the same arrays, updated in place
    # a few hundred bytes of Python objects; a temporary the size of W_qkv, W1, W2 or E is 6-12 KiB
    assert peak - before < 4096, f"a step allocated {peak - before} bytes"


# --------------------------------------------------------------------------- #
# 5. Attention dropout (on the attention weights), plain and fast
# --------------------------------------------------------------------------- #

def _attention_inputs(seed, B=2, H=2, T=4, Dh=3):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((B, H, T, Dh)) for _ in range(3))
    return q, k, v, _mask("padding & causal", rng, B, H, T, T)


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_plain_attention_dropout_drops_the_weights_with_dropouts_mask_and_returns_the_undropped_weights(p):
    q, k, v, mask = _attention_inputs(0)
    out, weights, _ = F.scaled_dot_product_attention(q, k, v, mask, dropout_p=p, rng=np.random.default_rng(8))
    plain_out, plain_weights, _ = F.scaled_dot_product_attention(q, k, v, mask)
    assert_close(weights, plain_weights, "weights (before dropout)")
    keep = np.random.default_rng(8).random(weights.shape, dtype=np.float32) >= p
    assert_close(out, (weights * keep / (1 - p)) @ v, "out")
    eval_out, _, _ = F.scaled_dot_product_attention(q, k, v, mask, dropout_p=p, rng=None, training=False)
    assert_close(eval_out, plain_out, "eval mode: no dropout")


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_fast_attention_dropout_is_the_documented_16_bit_mask_on_the_weights(p):
    q, k, v, mask = _attention_inputs(1)
    out, weights, cache = fast.scaled_dot_product_attention_fast(q, k, v, mask, dropout_p=p, rng=np.random.default_rng(8))
    _, plain_weights, _ = F.scaled_dot_product_attention(q, k, v, mask)
    assert_close(weights, plain_weights, "weights (before dropout)")
    scale = _documented_scale(8, weights.shape, p)
    assert_close(out, (weights * scale) @ v, "out")
    # backward: the plain backward's maths with the same mask, written out
    dout = np.random.default_rng(2).standard_normal(out.shape)
    ddropped = dout @ v.swapaxes(-1, -2)
    dscores = F.softmax_backward(ddropped * scale, (weights, -1))
    expected = (dscores @ k / np.sqrt(3), dscores.swapaxes(-1, -2) @ q / np.sqrt(3),
                (weights * scale).swapaxes(-1, -2) @ dout)
    for name, got, want in zip("qkv", fast.scaled_dot_product_attention_fast_backward(dout, cache), expected):
        assert_close(got, want, f"d{name}")


@pytest.mark.parametrize("which", ["plain", "fast"])
def test_attention_with_dropout_matches_numerical_gradients(which):
    """The mask is fixed by drawing it from the same seed at every call: then attention is smooth in q, k, v."""
    q, k, v, mask = _attention_inputs(3)
    attend = F.scaled_dot_product_attention if which == "plain" else fast.scaled_dot_product_attention_fast
    backward = (F.scaled_dot_product_attention_backward if which == "plain"
                else fast.scaled_dot_product_attention_fast_backward)

    def forward(q, k, v):
        return attend(q, k, v, mask, dropout_p=0.4, rng=np.random.default_rng(5))

    results = check_gradients(lambda q, k, v: forward(q, k, v)[0],
                              lambda dy, q, k, v: dict(zip("qkv", backward(dy, forward(q, k, v)[2]))),
                              {"q": q, "k": k, "v": v})
    assert max(r.max_rel_error for r in results.values()) < 1e-5


def test_attention_dropout_in_the_layers_and_models():
    x = np.random.default_rng(0).standard_normal((2, 5, 8))
    for use_fast in (True, False):
        mha = MultiHeadAttention(8, 2, attention_dropout=0.3, rng=np.random.default_rng(1), dtype=np.float64)
        mha.use_fast_paths(use_fast)
        y_train = mha(x)
        check = MultiHeadAttention(8, 2, rng=np.random.default_rng(1), dtype=np.float64)
        assert not np.allclose(y_train, check(x)), "training: some weights dropped"
        mha.eval()
        assert_close(mha(x), check(x), "eval: no attention dropout")
    with pytest.raises(ValueError, match="attention_dropout: expected a probability"):
        MultiHeadAttention(8, 2, attention_dropout=1.0, rng=np.random.default_rng(1))
    model = TransformerClassifier(20, 2, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=8, attention_dropout=0.2)
    assert model.config["attention_dropout"] == 0.2
    assert all(b.attn.attention_dropout == 0.2 for b in model.encoder.blocks)
    assert TransformerClassifier.from_config(model.config).encoder.blocks[0].attn.attention_dropout == 0.2
    assert "attention_dropout" not in TransformerClassifier(20, 2, d_model=8, n_heads=2, n_layers=1, d_ff=16,
                                                            max_len=8).config
    lm = TransformerLM(9, d_model=8, n_heads=2, n_layers=1, d_ff=12, max_len=6, attention_dropout=0.1)
    assert lm.encoder.blocks[0].attn.attention_dropout == 0.1

"""Tiled attention with the online softmax computes plain attention's numbers in memory linear in T.

1. Forward and backward equal `functional.scaled_dot_product_attention` in
   float64, over shapes and block sizes drawn by hypothesis (a block of 1 key,
   blocks that do not divide Tk, one block larger than Tk), with padding,
   causal and random masks (fully masked rows included) and broadcasting.
2. Central differences agree with the backward; a fully masked row gives
   zeros, never NaN; float32 stays float32; it runs on the strict CuPy stand-in.
3. Memory (tracemalloc, not time): doubling T roughly doubles tiled
   attention's peak, and roughly quadruples plain attention's.
"""

import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_transformer import functional as F
from numpy_transformer.gradcheck import check_gradients
from numpy_transformer.tiled_attention import tiled_attention, tiled_attention_backward

seeds = st.integers(0, 2**32 - 1)


def _mask(kind, rng, B, H, Tq, Tk):
    if kind == "none":
        return None
    if kind == "padding":
        return F.padding_mask(np.arange(Tk)[None, :] < rng.integers(1, Tk + 1, size=B)[:, None])
    if kind == "causal":
        return F.causal_mask(Tq, Tk)
    mask = rng.random((B, H, Tq, Tk)) < 0.5                   # "random", with a fully masked row
    mask[-1, -1, 0] = False
    return mask


def assert_tiled_equals_plain(q, k, v, mask, block_size, rng, atol=1e-12):
    out, _, cache = F.scaled_dot_product_attention(q, k, v, mask)
    tiled_out, tiled_cache = tiled_attention(q, k, v, mask, block_size)
    np.testing.assert_allclose(tiled_out, out, rtol=0, atol=atol, err_msg="out")
    dout = rng.standard_normal(out.shape)
    for name, got, expected in zip(("dq", "dk", "dv"), tiled_attention_backward(dout, tiled_cache),
                                   F.scaled_dot_product_attention_backward(dout, cache)):
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=name)


@given(B=st.integers(1, 3), H=st.integers(1, 3), Tq=st.integers(1, 9), Tk=st.integers(1, 9),
       Dh=st.integers(1, 5), Dv=st.integers(1, 4), block_size=st.integers(1, 10),
       kind=st.sampled_from(["none", "padding", "causal", "random"]), seed=seeds)
def test_tiled_attention_equals_plain_attention_forward_and_backward(B, H, Tq, Tk, Dh, Dv, block_size, kind, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, Tq, Dh)) * 2                # * 2: peaked softmaxes, the running max matters
    k = rng.standard_normal((B, H, Tk, Dh)) * 2
    v = rng.standard_normal((B, H, Tk, Dv))
    assert_tiled_equals_plain(q, k, v, _mask(kind, rng, B, H, Tq, Tk), block_size, rng)


@given(seed=seeds, block_size=st.integers(1, 6))
def test_tiled_attention_equals_plain_when_leading_dimensions_broadcast(seed, block_size):
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((1, 3, 4, 2)), rng.standard_normal((2, 1, 5, 2)), rng.standard_normal((2, 1, 5, 3))
    assert_tiled_equals_plain(q, k, v, _mask("padding", rng, 2, 3, 4, 5), block_size, rng)


def test_a_late_real_key_rescales_away_what_earlier_fully_masked_blocks_added():
    """Row 0 sees only masked keys in the first blocks: their exp(0) = 1 must vanish once a real key arrives."""
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((1, 1, 2, 3)), rng.standard_normal((1, 1, 8, 3)), rng.standard_normal((1, 1, 8, 2))
    mask = np.zeros((2, 8), dtype=bool)
    mask[0, 7] = True
    mask[1, :3] = True
    assert_tiled_equals_plain(q, k, v, mask, 2, rng)


def test_tiled_attention_matches_numerical_gradients():
    rng = np.random.default_rng(3)
    mask = _mask("random", rng, 2, 2, 4, 5)
    inputs = {"q": rng.standard_normal((2, 2, 4, 3)), "k": rng.standard_normal((2, 2, 5, 3)),
              "v": rng.standard_normal((2, 2, 5, 2))}
    results = check_gradients(
        lambda q, k, v: tiled_attention(q, k, v, mask, block_size=2)[0],
        lambda dy, q, k, v: dict(zip("qkv", tiled_attention_backward(dy, tiled_attention(q, k, v, mask, 2)[1]))),
        inputs)
    assert max(r.max_rel_error for r in results.values()) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fully_masked_rows_give_exact_zeros_and_no_warning(dtype):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 3, 4)).astype(dtype) for _ in range(3))
    mask = np.ones((1, 2, 3, 3), dtype=bool)
    mask[0, 1, 2] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")                         # an inf - inf or a log(0) would warn
        out, cache = tiled_attention(q, k, v, mask, block_size=2)
        dq, dk, dv = tiled_attention_backward(np.ones_like(out), cache)
    assert np.all(out[0, 1, 2] == 0) and np.all(dq[0, 1, 2] == 0)
    assert all(a.dtype == dtype and np.isfinite(a).all() for a in (out, dq, dk, dv))


def test_tiled_attention_checks_its_arguments():
    x = np.ones((1, 3, 4))
    with pytest.raises(ValueError, match="block_size: expected a positive integer, got 0"):
        tiled_attention(x, x, x, block_size=0)
    with pytest.raises(ValueError, match="k: expected the same last dimension"):
        tiled_attention(x, np.ones((1, 3, 5)), x)


def test_tiled_attention_runs_on_device_arrays(strict):
    """No line mixes host and device arrays (the strict stand-in for CuPy), and the numbers are NumPy's."""
    from strict_backend import StrictArray, to_strict
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((2, 2, 3, 4)), rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((2, 2, 5, 3))
    mask = _mask("random", rng, 2, 2, 3, 5)
    dout = rng.standard_normal((2, 2, 3, 3))
    out, cache = tiled_attention(q, k, v, mask, 2)
    expected = (out, *tiled_attention_backward(dout, cache))
    out_d, cache_d = tiled_attention(*(to_strict(a) for a in (q, k, v, mask)), block_size=2)
    got = (out_d, *tiled_attention_backward(to_strict(dout), cache_d))
    for g, e in zip(got, expected):
        assert isinstance(g, StrictArray)
        np.testing.assert_array_equal(g.get(), e)


# --------------------------------------------------------------------------- #
# Memory, measured with tracemalloc (deterministic, unlike time)
# --------------------------------------------------------------------------- #

def _peak_bytes(run):
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - base


def _attention_peak(kind, T, H=2, Dh=16, block_size=64):
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((1, H, T, Dh)).astype(np.float32) for _ in range(4))
    mask = F.causal_mask(T)

    def plain():
        _, _, cache = F.scaled_dot_product_attention(q, k, v, mask)
        F.scaled_dot_product_attention_backward(dout, cache)

    def tiled():
        _, cache = tiled_attention(q, k, v, mask, block_size)
        tiled_attention_backward(dout, cache)

    return _peak_bytes(plain if kind == "plain" else tiled)


def test_tiled_attention_memory_grows_linearly_in_T_and_plain_attention_quadratically():
    plain = [_attention_peak("plain", T) for T in (256, 512)]
    tiled = [_attention_peak("tiled", T) for T in (256, 512)]
    assert plain[1] / plain[0] > 3.5, f"plain attention: {plain} bytes for T = 256, 512"
    assert tiled[1] / tiled[0] < 2.5, f"tiled attention: {tiled} bytes for T = 256, 512"
    assert tiled[1] < plain[1] / 2

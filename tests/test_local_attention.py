"""Local (sliding-window) attention: the band mask, the blocked kernel, and the models that use them.

1. The band mask (`functional.local_attention_mask`) by hand and by its rule.
2. The blocked kernel (`local_attention.local_attention`) equals the full
   attention with the band mask to 1e-10 in float64, forward and backward,
   over T, w, block sizes, global tokens, causal or not, padding, ALiBi; its
   own float64 gradient check; the blocks it skips are blocks the mask empties,
   and their number grows as T·w.
3. Models with ``attention="local"``: whole-model gradient checks, fast path
   (the kernel) = plain path (the mask), causality, a window as long as the
   text is full attention, checkpoints keep the options and old ones load.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_transformer import checkpoint
from numpy_transformer import functional as F
from numpy_transformer.gradcheck import check_gradients
from numpy_transformer.local_attention import block_grid, local_attention, local_attention_backward
from numpy_transformer.models import TransformerClassifier, TransformerLM

from test_models import IDS, MASK, TINY, model_gradcheck

seeds = st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------------- #
# 1. The band mask
# --------------------------------------------------------------------------- #

def test_band_mask_by_hand():
    np.testing.assert_array_equal(F.local_attention_mask(5, 1).astype(int),
                                  [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
    np.testing.assert_array_equal(F.local_attention_mask(5, 1, causal=True, n_global=1).astype(int),
                                  [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 0, 0, 1, 1]])


@given(T=st.integers(1, 12), w=st.integers(0, 12), g=st.integers(0, 3), causal=st.booleans())
def test_band_mask_rule(T, w, g, causal):
    g = min(g, T)
    m = F.local_attention_mask(T, w, causal, g)
    for i in range(T):
        for j in range(T):
            near = 0 <= i - j <= w if causal else abs(i - j) <= w
            glob = (i < g or j < g) and (j <= i or not causal)
            assert m[i, j] == (near or glob)
    if w >= T and not causal:
        assert m.all()


def test_band_mask_rejects_bad_sizes():
    with pytest.raises(ValueError, match="window"):
        F.local_attention_mask(4, -1)
    with pytest.raises(ValueError, match="n_global"):
        F.local_attention_mask(4, 1, n_global=5)


# --------------------------------------------------------------------------- #
# 2. The blocked kernel equals the masked full attention
# --------------------------------------------------------------------------- #

def _reference(q, k, v, w, causal, g, mask, alibi):
    band = F.local_attention_mask(q.shape[-2], w, causal, g)
    full_mask = band if mask is None else band & mask
    bias = F.alibi_bias(q.shape[-3], q.shape[-2], dtype=q.dtype) if alibi else None
    return F.scaled_dot_product_attention(q, k, v, full_mask, bias=bias)


@given(B=st.integers(1, 2), H=st.integers(1, 3), T=st.integers(1, 40), Dh=st.integers(1, 4), w=st.integers(0, 12),
       g=st.integers(0, 3), causal=st.booleans(), padding=st.booleans(), alibi=st.booleans(),
       block=st.integers(1, 9), key_block=st.integers(1, 9), seed=seeds)
def test_blocked_kernel_equals_masked_attention_to_1e10(B, H, T, Dh, w, g, causal, padding, alibi, block, key_block,
                                                         seed):
    rng = np.random.default_rng(seed)
    g = min(g, T)
    q, k, v = (rng.standard_normal((B, H, T, Dh)) * 2 for _ in range(3))
    mask = None
    if padding:
        valid = np.arange(T)[None, :] < rng.integers(1, T + 1, size=B)[:, None]
        mask = F.padding_mask(valid)                                    # (B, 1, 1, T)
    slopes = F.alibi_slopes(H) if alibi else None
    out, cache = local_attention(q, k, v, w, causal, g, mask, slopes, block_size=block, key_block_size=key_block)
    out_ref, _, cache_ref = _reference(q, k, v, w, causal, g, mask, alibi)
    np.testing.assert_allclose(out, out_ref, rtol=0, atol=1e-10)
    dout = rng.standard_normal(out.shape)
    for name, got, expected in zip("qkv", local_attention_backward(dout, cache),
                                   F.scaled_dot_product_attention_backward(dout, cache_ref)):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10, err_msg=f"d{name}")


@given(T=st.integers(1, 9), Dh=st.integers(1, 3), w=st.integers(0, 4), g=st.integers(0, 2), causal=st.booleans(),
       block=st.integers(1, 4), seed=seeds)
def test_blocked_kernel_backward_matches_numerical_gradient(T, Dh, w, g, causal, block, seed):
    rng = np.random.default_rng(seed)
    g = min(g, T)
    inputs = {name: rng.standard_normal((2, 2, T, Dh)) for name in "qkv"}

    def forward(q, k, v):
        return local_attention(q, k, v, w, causal, g, block_size=block)[0]

    def backward(dout, q, k, v):
        return dict(zip("qkv", local_attention_backward(dout, local_attention(q, k, v, w, causal, g,
                                                                              block_size=block)[1])))
    for result in check_gradients(forward, backward, inputs, rng=np.random.default_rng(1)).values():
        assert result.max_rel_error <= 1e-5, str(result)


def test_a_query_with_nothing_to_attend_to_gets_zeros():
    q = k = v = np.ones((1, 1, 6, 2))
    mask = np.zeros((1, 1, 1, 6), dtype=bool)
    mask[..., :2] = True                                   # keys 2..5 are padding; queries 4, 5 see none with w=1
    out, cache = local_attention(q, k, v, 1, mask=mask, block_size=2)
    assert np.isfinite(out).all() and (out[0, 0, 4:] == 0).all()
    assert all(np.isfinite(g).all() for g in local_attention_backward(np.ones_like(out), cache))


@given(T=st.integers(1, 60), w=st.integers(0, 20), g=st.integers(0, 3), causal=st.booleans(),
       block=st.integers(1, 16), key_block=st.integers(1, 16))
def test_skipped_blocks_are_blocks_the_mask_empties(T, w, g, causal, block, key_block):
    """Every key the band allows lies in a computed block: what is skipped is never needed."""
    g = min(g, T)
    grid = block_grid(T, w, causal, g, block, key_block)
    mask = F.local_attention_mask(T, w, causal, g)
    starts = ([0] if g else []) + list(range(g, T, block))
    stops = ([g] if g else []) + [min(s + block, T) for s in range(g, T, block)]
    for r, (start, stop) in enumerate(zip(starts, stops)):
        needed = np.unique(np.flatnonzero(mask[start:stop].any(axis=0)) // key_block)
        assert grid[r, needed].all()


def test_computed_blocks_grow_as_t_times_w():
    """At w = 128 the share of the T x T scores computed halves when T doubles (T·w, not T²)."""
    shares = [block_grid(T, 128, block_size=64).mean() for T in (1024, 2048, 4096)]
    assert shares[0] / shares[1] == pytest.approx(2.0, rel=0.1) and shares[1] / shares[2] == pytest.approx(2.0, rel=0.1)
    assert shares[2] < 0.1


def test_kernel_rejects_bad_arguments():
    q = np.ones((1, 2, 4, 3))
    with pytest.raises(ValueError, match="window"):
        local_attention(q, q, q, -1)
    with pytest.raises(ValueError, match="block_size"):
        local_attention(q, q, q, 1, block_size=0)
    with pytest.raises(ValueError, match="alibi_slopes"):
        local_attention(q, q, q, 1, alibi_slopes=[0.5])
    with pytest.raises(ValueError, match="self-attention"):
        local_attention(q, np.ones((1, 2, 5, 3)), np.ones((1, 2, 5, 3)), 1)


# --------------------------------------------------------------------------- #
# 3. Models with local attention
# --------------------------------------------------------------------------- #

def _classifier(**kw):
    kw = {**TINY, "dropout": 0.0, "activation": "gelu", "dtype": np.float64, "attention": "local", "window": 1,
          "global_tokens": 1, **kw}
    return TransformerClassifier(11, 3, **kw)


def _lm(**kw):
    kw = {**TINY, "dropout": 0.0, "dtype": np.float64, "attention": "local", "window": 2, **kw}
    return TransformerLM(11, **kw)


@pytest.mark.parametrize("fast_path", [True, False], ids=["kernel", "mask"])
@pytest.mark.parametrize("make, pos", [(_classifier, "sinusoidal"), (_classifier, "alibi"), (_lm, "rope"),
                                       (_lm, "alibi")])
def test_whole_model_gradients_with_local_attention(make, pos, fast_path):
    model = make(pos_encoding=pos).use_fast_paths(fast_path)
    results = model_gradcheck(model, IDS, MASK)
    assert max(r.max_rel_error for r in results.values()) < 1e-5


@pytest.mark.parametrize("pos", ["sinusoidal", "rope", "alibi"])
def test_kernel_and_mask_paths_agree_in_the_models(pos):
    for make in (_classifier, _lm):
        a, b = make(pos_encoding=pos), make(pos_encoding=pos).use_fast_paths(False)
        for block in a.encoder.blocks:
            block.attn.local_block_size = 2                # several query and key blocks even at T = 5
        np.testing.assert_allclose(a(IDS, MASK), b(IDS, MASK), atol=1e-12)
        assert a.attention_weights[0] is None and b.attention_weights[0].shape == (2, 2, 5, 5)


def test_local_lm_is_causal_and_local():
    lm = _lm(window=1, n_layers=1)
    ids = np.array([[2, 3, 4, 5, 6, 7]])
    changed = ids.copy()
    changed[:, 4:] = 9
    np.testing.assert_allclose(lm(changed)[:, :4], lm(ids)[:, :4], atol=1e-12)      # never the future
    far = ids.copy()
    far[:, 0] = 9
    np.testing.assert_allclose(lm(far)[:, 3:], lm(ids)[:, 3:], atol=1e-12)           # one layer, w=1: 0 is too far


def test_a_window_as_long_as_the_text_is_full_attention():
    local = _classifier(window=8, global_tokens=0)
    full = TransformerClassifier(11, 3, **{**TINY, "dropout": 0.0, "activation": "gelu", "dtype": np.float64})
    np.testing.assert_allclose(local(IDS, MASK), full(IDS, MASK), atol=1e-12)


def test_local_options_are_checked():
    with pytest.raises(ValueError, match="attention"):
        _classifier(attention="sparse")
    with pytest.raises(ValueError, match="window"):
        _classifier(window=0)
    with pytest.raises(ValueError, match="window"):
        TransformerLM(11, **TINY, window=4)


def test_checkpoint_keeps_local_options_and_old_checkpoints_load(tmp_path):
    model = _classifier(pos_encoding="rope")
    checkpoint.save(tmp_path / "local.npz", model)
    loaded = checkpoint.load(tmp_path / "local.npz").model
    assert {k: loaded.config[k] for k in ("attention", "window", "global_tokens", "pos_encoding")} == \
        {"attention": "local", "window": 1, "global_tokens": 1, "pos_encoding": "rope"}
    np.testing.assert_allclose(loaded(IDS, MASK), model(IDS, MASK), atol=1e-12)
    full = TransformerClassifier(11, 3, **TINY)
    assert "attention" not in full.config and "window" not in full.config    # old readers see the old keys
    checkpoint.save(tmp_path / "full.npz", full)
    assert checkpoint.load(tmp_path / "full.npz").model.encoder.blocks[0].attn.local_window is None

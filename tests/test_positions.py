"""Relative positions (the long-text chapter): RoPE and ALiBi.

1. The properties that make them what they are: RoPE's score depends only on
   the offset between the two positions, its backward is the inverse rotation,
   it keeps norms; ALiBi's bias per head is the documented slope times the
   distance (Press et al. 2022), with the paper's slopes for 8 heads and for a
   number of heads that is not a power of two.
2. The fast and plain attention agree with an additive bias.
3. Whole models with ``pos_encoding="rope"`` / ``"alibi"``: float64 gradient
   checks of every parameter, the fast and plain paths agree, padding and
   causality still hold, and the config survives a checkpoint.

The formulas' own gradient checks are in test_functional.py (``rope_case``,
``alibi_attention_case``); the device cases in test_backend.py.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_transformer import checkpoint
from numpy_transformer import fast
from numpy_transformer import functional as F
from numpy_transformer.models import TransformerClassifier, TransformerLM
from numpy_transformer.nn import MultiHeadAttention

from test_models import IDS, MASK, TINY, model_gradcheck, to_strict_device  # noqa: F401 (a fixture)

seeds = st.integers(0, 2**32 - 1)
RELATIVE = ["rope", "alibi"]


# --------------------------------------------------------------------------- #
# 1. RoPE
# --------------------------------------------------------------------------- #

@given(Dh=st.integers(1, 9), m=st.integers(0, 300), n=st.integers(0, 300), shift=st.integers(-200, 200),
       seed=seeds)
def test_rope_score_depends_only_on_the_offset(Dh, m, n, shift, seed):
    """(R_m q) . (R_n k) is the same for (m, n) and (m + s, n + s): only n - m matters."""
    shift = max(shift, -min(m, n))
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((1, Dh)), rng.standard_normal((1, Dh))
    def score(a, b):
        return float((F.rope(q, [a])[0] * F.rope(k, [b])[0]).sum())
    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-9)


def test_rope_score_does_change_with_the_offset():
    """The property above would also hold for a RoPE that rotates nothing: the offset must matter."""
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((1, 8)), rng.standard_normal((1, 8))
    scores = [float((F.rope(q, [0])[0] * F.rope(k, [d])[0]).sum()) for d in range(5)]
    assert np.ptp(scores) > 0.1


def test_rope_rotates_pairs_2i_2i1_by_t_theta_i():
    """Position 1, Dh = 4: pair 0 turns by 1 radian, pair 1 by 10000^(-1/2) radians; position 0 is unchanged."""
    x = np.array([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    y, _ = F.rope(x)
    np.testing.assert_allclose(y[0], x[0])
    theta1 = 10000.0 ** -0.5
    np.testing.assert_allclose(y[1], [np.cos(1), np.sin(1), np.cos(theta1), np.sin(theta1)], atol=1e-15)


@given(T=st.integers(1, 6), Dh=st.integers(1, 7), seed=seeds)
def test_rope_keeps_norms_and_its_backward_is_the_inverse_rotation(T, Dh, seed):
    x = np.random.default_rng(seed).standard_normal((2, T, Dh))
    y, cache = F.rope(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(F.rope_backward(y, cache), x, atol=1e-12)    # R^T R x = x


def test_rope_odd_width_leaves_the_last_feature_alone():
    x = np.random.default_rng(1).standard_normal((3, 5))
    y, _ = F.rope(x)
    np.testing.assert_array_equal(y[:, -1], x[:, -1])
    assert not np.allclose(y[1:, :4], x[1:, :4])


def test_rope_float32_stays_float32_and_bad_positions_are_named():
    y, cache = F.rope(np.ones((2, 3, 4), dtype=np.float32))
    assert y.dtype == np.float32 and F.rope_backward(y, cache).dtype == np.float32
    with pytest.raises(ValueError, match="positions"):
        F.rope(np.ones((3, 4)), positions=[0, 1])
    with pytest.raises(TypeError, match="x"):
        F.rope(np.ones((3, 4), dtype=int))


# --------------------------------------------------------------------------- #
# 1. ALiBi
# --------------------------------------------------------------------------- #

def test_alibi_slopes_are_the_papers():
    """Press et al. 2022 §3: 8 heads -> 1/2, 1/4, ..., 1/256; 12 heads -> the 8 of 8, then every other of 16."""
    np.testing.assert_allclose(F.alibi_slopes(8), [2.0 ** -k for k in range(1, 9)])
    sixteen = [2.0 ** (-0.5 * k) for k in range(1, 17)]
    np.testing.assert_allclose(F.alibi_slopes(12), [2.0 ** -k for k in range(1, 9)] + sixteen[0::2][:4])
    np.testing.assert_allclose(F.alibi_slopes(1), [2.0 ** -8])
    assert len(F.alibi_slopes(6)) == 6 and np.all(np.diff(F.alibi_slopes(4)) < 0)
    with pytest.raises(ValueError, match="H"):
        F.alibi_slopes(0)


@given(H=st.integers(1, 12), Tq=st.integers(1, 7), extra=st.integers(0, 4))
def test_alibi_bias_per_head_is_slope_times_distance(H, Tq, extra):
    Tk = Tq + extra
    bias = F.alibi_bias(H, Tq, Tk, dtype=np.float64)
    slopes = F.alibi_slopes(H)
    for h in range(H):
        for i in range(Tq):
            for j in range(Tk):
                assert bias[h, i, j] == pytest.approx(-slopes[h] * abs((Tk - Tq + i) - j))


def test_alibi_attention_prefers_near_keys_when_content_is_equal():
    """Identical keys: without a bias every weight is equal; with ALiBi they fall with distance."""
    q = np.zeros((1, 2, 5, 4))
    k = v = np.ones((1, 2, 5, 4))
    _, weights, _ = F.scaled_dot_product_attention(q, k, v, bias=F.alibi_bias(2, 5, dtype=np.float64))
    row = weights[0, 0, 2]
    assert row[2] > row[1] > row[0] and row[1] == pytest.approx(row[3])


def test_attention_bias_must_broadcast_to_the_scores():
    q = np.ones((1, 2, 3, 4))
    with pytest.raises(ValueError, match="bias"):
        F.scaled_dot_product_attention(q, q, q, bias=np.zeros((3, 3, 3)))
    with pytest.raises(TypeError, match="bias"):
        F.scaled_dot_product_attention(q, q, q, bias=np.zeros((2, 3, 3), dtype=int))


# --------------------------------------------------------------------------- #
# 2. Fast and plain attention with a bias
# --------------------------------------------------------------------------- #

@given(B=st.integers(1, 3), H=st.integers(1, 4), T=st.integers(1, 6), Dh=st.integers(1, 5),
       causal=st.booleans(), seed=seeds)
def test_fast_attention_with_alibi_equals_plain(B, H, T, Dh, causal, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((B, H, T, Dh)) for _ in range(3))
    bias = F.alibi_bias(H, T, dtype=np.float64)
    mask = F.causal_mask(T) if causal else None
    out, weights, cache = F.scaled_dot_product_attention(q, k, v, mask, bias=bias)
    out_f, weights_f, cache_f = fast.scaled_dot_product_attention_fast(q, k, v, mask, bias=bias)
    np.testing.assert_allclose(out_f, out, atol=1e-12)
    np.testing.assert_allclose(weights_f, weights, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    for got, expected in zip(fast.scaled_dot_product_attention_fast_backward(dout, cache_f),
                             F.scaled_dot_product_attention_backward(dout, cache)):
        np.testing.assert_allclose(got, expected, atol=1e-12)


# --------------------------------------------------------------------------- #
# 3. Whole models
# --------------------------------------------------------------------------- #

def _classifier(pos, **kw):
    kw = {**TINY, "dropout": 0.0, "activation": "gelu", "dtype": np.float64, "pos_encoding": pos, **kw}
    return TransformerClassifier(11, 3, **kw)


def _lm(pos, **kw):
    kw = {**TINY, "dropout": 0.0, "dtype": np.float64, "pos_encoding": pos, **kw}
    return TransformerLM(11, **kw)


@pytest.mark.parametrize("fused_plain", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("pos", RELATIVE)
@pytest.mark.parametrize("make", [_classifier, _lm], ids=["classifier", "lm"])
def test_whole_model_gradients_with_relative_positions(make, pos, fused_plain):
    model = make(pos, pooling="mean") if make is _classifier else make(pos)
    model.use_fast_paths(fused_plain)
    results = model_gradcheck(model, IDS, MASK)
    assert max(r.max_rel_error for r in results.values()) < 1e-5


@pytest.mark.parametrize("pos", RELATIVE)
def test_unfused_projections_with_rope_and_alibi_give_the_fused_gradients(pos):
    """fused_qkv=False takes another backward branch: check it against numerical gradients too."""
    rng = np.random.default_rng(3)
    attn = MultiHeadAttention(6, 3, fused_qkv=False, rng=rng, dtype=np.float64, position=pos)
    x = rng.standard_normal((2, 4, 6))
    params = dict(attn.named_parameters())
    from numpy_transformer.gradcheck import check_gradients

    def forward(x, **_):
        return attn(x)

    def backward(dout, x, **_):
        attn.zero_grad()
        attn(x)
        dx = attn.backward(dout)
        return {"x": dx, **{n: p.grad.copy() for n, p in params.items()}}
    results = check_gradients(forward, backward, {"x": x, **{n: p.data for n, p in params.items()}})
    assert max(r.max_rel_error for r in results.values()) < 1e-5


@pytest.mark.parametrize("pos", RELATIVE)
def test_fast_and_plain_paths_agree_with_relative_positions(pos):
    for make in (_classifier, _lm):
        a, b = make(pos), make(pos).use_fast_paths(False)
        np.testing.assert_allclose(a(IDS, MASK), b(IDS, MASK), atol=1e-12)


@pytest.mark.parametrize("pos", RELATIVE)
def test_relative_positions_keep_padding_and_causality(pos):
    model = _classifier(pos, pooling="mean")
    short = model(IDS[1:, :3], MASK[1:, :3])
    np.testing.assert_allclose(model(IDS[1:], MASK[1:]), short, atol=1e-12)      # padding changes nothing
    lm = _lm(pos)
    changed = IDS.copy()
    changed[:, 3:] = 9
    np.testing.assert_allclose(lm(changed)[:, :3], lm(IDS)[:, :3], atol=1e-12)   # t sees only <= t


@pytest.mark.parametrize("pos", RELATIVE)
def test_relative_models_are_not_permutation_invariant(pos):
    """Without any position information a mean pool ignores order; RoPE and ALiBi must not.

    Not a reversal for ALiBi: the symmetric bias -m|i - j| is the same for a
    sequence and its mirror image, so a mean-pooled encoder cannot tell them
    apart (the next test). Swapping two tokens is not such a symmetry.
    """
    model = _classifier(pos, pooling="mean")
    ids = np.array([[2, 3, 4, 5, 6]])
    assert np.abs(model(ids) - model(np.array([[2, 4, 3, 5, 6]]))).max() > 1e-6


def test_symmetric_alibi_cannot_tell_a_sequence_from_its_mirror_image_rope_can():
    ids = np.array([[2, 3, 4, 5, 6]])
    alibi, rope = _classifier("alibi", pooling="mean"), _classifier("rope", pooling="mean")
    np.testing.assert_allclose(alibi(ids[:, ::-1].copy()), alibi(ids), atol=1e-12)
    assert np.abs(rope(ids[:, ::-1].copy()) - rope(ids)).max() > 1e-6


@pytest.mark.parametrize("pos", RELATIVE)
def test_checkpoint_round_trip_keeps_the_position_kind(tmp_path, pos):
    model = _lm(pos)
    checkpoint.save(tmp_path / "m.npz", model)
    loaded = checkpoint.load(tmp_path / "m.npz").model
    assert loaded.config["pos_encoding"] == pos
    assert all(block.attn.position == pos for block in loaded.encoder.blocks)
    np.testing.assert_allclose(loaded(IDS), model(IDS), atol=1e-12)


@pytest.mark.parametrize("pos", RELATIVE)
def test_relative_models_never_mix_host_and_device_arrays(to_strict_device, pos):
    """The RoPE angles and the ALiBi table are made on the CPU and moved next to the activations."""
    strict = to_strict_device
    for make in (lambda: TransformerClassifier(11, 3, **TINY, pos_encoding=pos),
                 lambda: TransformerLM(11, **TINY, pos_encoding=pos)):
        host, device = make(), make().to(device="gpu")
        out_host, out_dev = host(IDS, MASK), device(IDS, MASK)
        assert type(out_dev).__name__ == "StrictArray"
        np.testing.assert_allclose(out_dev.get(), out_host, rtol=1e-5, atol=1e-6)
        dout = np.random.default_rng(0).standard_normal(out_host.shape).astype(np.float32)
        host.backward(dout)
        device.backward(strict.asarray(dout))
        for (name, p), (_, q) in zip(host.named_parameters(), device.named_parameters()):
            np.testing.assert_allclose(q.grad.get(), p.grad, rtol=1e-4, atol=1e-5, err_msg=name)

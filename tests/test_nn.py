"""Tests for numpy_transformer.nn: every layer's backward against central differences (float64).

The helper `check_module` puts the module's input *and* the arrays of all its
parameters into the gradient checker's ``inputs``. The checker perturbs those
arrays in place, which changes the module itself, so one call verifies the
input gradient and every parameter gradient at once.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_transformer import functional as F
from numpy_transformer.gradcheck import check_gradients
from numpy_transformer.nn import (
    Dropout,
    Embedding,
    FeedForward,
    LayerNorm,
    Linear,
    Module,
    MultiHeadAttention,
    Parameter,
    PositionalEncoding,
    TransformerBlock,
    TransformerEncoder,
)

B, T, D, H, FF = 2, 5, 8, 2, 12
F64 = np.float64


def rng(seed=0):
    return np.random.default_rng(seed)


def randn(*shape, seed=1):
    return rng(seed).standard_normal(shape)


def check_module(module, x, call=None, dropout_rng=None, tol=1e-5):
    """Check ``module.backward`` against numerical gradients, for the input and every parameter.

    ``call(module, x)`` runs the forward (default ``module(x)``). If the module
    draws dropout masks from ``dropout_rng``, that generator's state is reset
    before every forward, so every forward uses the same masks and the
    function being differentiated is well defined.
    """
    call = call or (lambda m, x_: m(x_))
    params = dict(module.named_parameters())
    inputs = {"x": x, **{name: p.data for name, p in params.items()}}
    state = None if dropout_rng is None else dropout_rng.bit_generator.state

    def forward(x, **_):
        if state is not None:
            dropout_rng.bit_generator.state = state
        return call(module, x)

    def backward(dout, x, **_):
        module.zero_grad()
        forward(x)
        grads = {name: p.grad.copy() for name, p in params.items()}
        grads["x"] = module.backward(dout)
        # backward *adds* into p.grad: read the grads after the call
        grads.update({name: p.grad.copy() for name, p in params.items()})
        return grads

    results = check_gradients(forward, backward, inputs, tol=tol)
    assert set(results) == {"x", *params}, "every parameter must have been checked"
    return results


# --------------------------------------------------------------------------- #
# Parameter and Module basics
# --------------------------------------------------------------------------- #

def test_parameter_rejects_integer_data():
    with pytest.raises(TypeError, match="data"):
        Parameter(np.arange(3))


def test_modules_that_draw_need_an_explicit_generator():
    with pytest.raises(TypeError, match="rng"):
        Linear(3, 4)
    with pytest.raises(TypeError, match="rng"):
        Dropout(0.5)
    Dropout(0.0)                                  # draws nothing, needs nothing
    PositionalEncoding(4, 3)                      # a constant table


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match="forward first"):
        Linear(3, 4, rng=rng()).backward(np.zeros((1, 4), dtype=np.float32))


@pytest.mark.parametrize("make, expected", [
    (lambda: Linear(3, 4, rng=rng()), {"W": True, "b": False}),
    (lambda: Embedding(5, 3, rng=rng()), {"E": False}),
    (lambda: LayerNorm(3), {"gamma": False, "beta": False}),
    (lambda: PositionalEncoding(4, 3, kind="learned", rng=rng()), {"pe": False}),
])
def test_weight_decay_flags(make, expected):
    assert {n: p.decay for n, p in make().named_parameters()} == expected


def test_parameter_names_are_dotted_paths():
    enc = TransformerEncoder(2, D, H, FF, dropout=0.0, norm="pre", rng=rng())
    names = [n for n, _ in enc.named_parameters()]
    assert names[0] == "blocks.0.attn.W_qkv"
    assert "blocks.1.ffn.W2" in names and names[-1] == "final_norm.beta"
    assert len(names) == len(set(names))


def test_int_sizes_are_validated():
    with pytest.raises(ValueError, match="n_heads"):
        MultiHeadAttention(10, 3, rng=rng())
    with pytest.raises(ValueError, match="norm"):
        TransformerBlock(D, H, FF, norm="middle", rng=rng())
    with pytest.raises(ValueError, match="activation"):
        FeedForward(D, FF, activation="tanh", rng=rng())
    with pytest.raises(ValueError, match="kind"):
        PositionalEncoding(4, 3, kind="rotary")


# --------------------------------------------------------------------------- #
# One gradient check per module
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(B, T, 3), (4, 3)])
def test_linear_gradients(bias, shape):
    check_module(Linear(3, 5, bias=bias, rng=rng(), dtype=F64), randn(*shape))


def test_linear_init_scale():
    W = Linear(400, 300, rng=rng()).W.data
    assert W.dtype == np.float32
    assert abs(W.std() - 1 / np.sqrt(400)) < 0.05 / np.sqrt(400)


def test_embedding_gradient_and_none_for_ids():
    emb = Embedding(6, 4, rng=rng(), dtype=F64)
    ids = np.array([[1, 2, 1], [5, 1, 0]])          # id 1 three times: its rows must add up
    inputs = {"E": emb.E.data}

    def forward(**_):
        return emb(ids)

    def backward(dout, **_):
        emb.zero_grad()
        emb(ids)
        assert emb.backward(dout) is None
        return {"E": emb.E.grad.copy()}

    check_gradients(forward, backward, inputs)


def test_embedding_accumulates_into_grad():
    emb = Embedding(6, 4, rng=rng(), dtype=F64)
    ids = np.array([[1, 2]])
    dout = randn(1, 2, 4)
    emb(ids)
    emb.backward(dout)
    once = emb.E.grad.copy()
    emb.backward(dout)
    np.testing.assert_allclose(emb.E.grad, 2 * once)


def test_positional_encoding_tables():
    np.testing.assert_array_equal(PositionalEncoding(7, 6).table, F.sinusoidal_positional_encoding(7, 6))
    np.testing.assert_array_equal(PositionalEncoding(7, 6, kind="seed").table, F.seed_positional_encoding(7, 6))
    pe = PositionalEncoding(7, 6)
    x = randn(B, 3, 6).astype(np.float32)
    y = pe(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x + pe.table[:3])
    assert pe.parameters() == []                  # a constant, not trainable


def test_positional_encoding_too_long_names_max_len():
    with pytest.raises(ValueError, match="max_len=4"):
        PositionalEncoding(4, 3)(np.zeros((1, 5, 3), dtype=np.float32))


@pytest.mark.parametrize("kind", ["sinusoidal", "seed", "learned"])
def test_positional_encoding_gradients(kind):
    pe = PositionalEncoding(7, D, kind=kind, rng=rng(), dtype=F64)
    check_module(pe, randn(B, T, D))              # T < max_len: only the first T rows get gradient
    if kind == "learned":
        assert np.all(pe.pe.grad[T:] == 0)


def test_positional_encoding_to_float64_converts_table():
    pe = PositionalEncoding(5, 4).to(dtype=np.float64)
    assert pe.table.dtype == np.float64
    assert pe(np.zeros((1, 5, 4))).dtype == np.float64


def test_layernorm_gradients():
    ln = LayerNorm(D, dtype=F64)
    ln.gamma.data[:] = 1 + randn(D, seed=3)       # away from the identity so every term matters
    ln.beta.data[:] = randn(D, seed=4)
    check_module(ln, randn(B, T, D))


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_feedforward_gradients(activation):
    ffn = FeedForward(D, FF, activation=activation, rng=rng(), dtype=F64)
    check_module(ffn, randn(B, T, D))


def test_feedforward_has_two_layers():
    """Errata E3: W2·act(W1·x + b1) + b2, not the seed's single ReLU(Linear(x))."""
    ffn = FeedForward(D, FF, rng=rng())
    shapes = {n: p.shape for n, p in ffn.named_parameters()}
    assert shapes == {"W1": (D, FF), "b1": (FF,), "W2": (FF, D), "b2": (D,)}


def test_dropout_gradient_with_a_fixed_mask():
    g = rng(5)
    drop = Dropout(0.3, g)
    check_module(drop, randn(B, T, D), dropout_rng=g)


def test_dropout_train_eval():
    drop = Dropout(0.5, rng(0))
    x = np.ones((200, 100), dtype=np.float32)
    y1, y2 = drop(x), drop(x)
    assert y1.dtype == np.float32
    assert not np.array_equal(y1, y2), "a fresh mask at every training forward"
    assert set(np.unique(y1)) == {0.0, 2.0}, "inverted dropout: kept values scaled by 1/(1-p)"
    assert abs((y1 == 0).mean() - 0.5) < 0.02
    drop.eval()
    np.testing.assert_array_equal(drop(x), x)
    np.testing.assert_array_equal(drop.backward(x), x)
    drop.train()
    assert not np.array_equal(drop(x), x)


def test_dropout_same_seed_same_masks():
    x = np.ones((4, 6), dtype=np.float32)
    a, b = Dropout(0.5, rng(9)), Dropout(0.5, rng(9))
    for _ in range(3):
        np.testing.assert_array_equal(a(x), b(x))


# --------------------------------------------------------------------------- #
# Multi-head attention
# --------------------------------------------------------------------------- #

def _masks():
    valid = np.ones((B, T), dtype=bool)
    valid[1, 3:] = False                          # sequence 1 has two padding tokens
    pad = F.padding_mask(valid)                   # (B, 1, 1, T)
    causal = F.causal_mask(T)                     # (T, T)
    return {"none": None, "padding": pad, "causal": causal, "padding&causal": pad & causal}


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("mask_name", ["none", "padding", "causal", "padding&causal"])
def test_attention_gradients(fused, mask_name):
    mask = _masks()[mask_name]
    attn = MultiHeadAttention(D, H, fused_qkv=fused, rng=rng(), dtype=F64)
    check_module(attn, randn(B, T, D), call=lambda m, x: m(x, mask))


def test_attention_without_bias():
    attn = MultiHeadAttention(D, H, bias=False, rng=rng(), dtype=F64)
    assert [n for n, _ in attn.named_parameters()] == ["W_qkv", "W_o"]
    check_module(attn, randn(B, T, D))


def _copy_into_unfused(fused, separate):
    Wq, Wk, Wv = np.split(fused.W_qkv.data, 3, axis=1)
    bq, bk, bv = np.split(fused.b_qkv.data, 3)
    for name, value in dict(W_q=Wq, W_k=Wk, W_v=Wv, b_q=bq, b_k=bk, b_v=bv, W_o=fused.W_o.data,
                            b_o=fused.b_o.data).items():
        getattr(separate, name).data[...] = value


def test_fused_and_separate_projections_agree():
    fused = MultiHeadAttention(D, H, rng=rng(1), dtype=F64)
    fused.b_qkv.data[:] = randn(3 * D, seed=2)    # non-zero biases, so their layout is tested too
    separate = MultiHeadAttention(D, H, fused_qkv=False, rng=rng(2), dtype=F64)
    _copy_into_unfused(fused, separate)
    x, mask = randn(B, T, D), _masks()["padding&causal"]
    np.testing.assert_allclose(fused(x, mask), separate(x, mask), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fused.last_attention, separate.last_attention, rtol=0, atol=1e-12)
    dout = randn(B, T, D, seed=3)
    np.testing.assert_allclose(fused.backward(dout), separate.backward(dout), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fused.W_qkv.grad, np.concatenate([separate.W_q.grad, separate.W_k.grad,
                                                                 separate.W_v.grad], axis=1), atol=1e-12)


def test_attention_weights_kept_for_plotting():
    attn = MultiHeadAttention(D, H, rng=rng())
    mask = _masks()["padding&causal"]
    attn(randn(B, T, D).astype(np.float32), mask)
    w = attn.last_attention
    assert w.shape == (B, H, T, T) and w.dtype == np.float32
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-6)
    assert np.all(w[np.broadcast_to(~mask, w.shape)] == 0), "masked keys get exactly zero weight"


def test_attention_rejects_bad_input():
    attn = MultiHeadAttention(D, H, rng=rng())
    with pytest.raises(ValueError, match="x"):
        attn(np.zeros((B, T, D + 1), dtype=np.float32))
    with pytest.raises(TypeError, match="mask"):
        attn(np.zeros((B, T, D), dtype=np.float32), np.ones((T, T)))


# --------------------------------------------------------------------------- #
# Blocks and the encoder
# --------------------------------------------------------------------------- #

def _nudge_layernorms(module, seed=7):
    """Move LayerNorm gains/shifts away from (1, 0) so a wrong dgamma/dbeta cannot hide."""
    for i, m in enumerate(module.modules()):
        if isinstance(m, LayerNorm):
            m.gamma.data[:] = 1 + 0.3 * randn(m.d_model, seed=seed + i)
            m.beta.data[:] = 0.3 * randn(m.d_model, seed=seed + 100 + i)


@pytest.mark.parametrize("norm", ["post", "pre", "parallel"])
def test_block_gradients(norm):
    block = TransformerBlock(D, H, FF, dropout=0.0, norm=norm, activation="gelu", rng=rng(), dtype=F64)
    _nudge_layernorms(block)
    mask = _masks()["padding"]
    check_module(block, randn(B, T, D), call=lambda m, x: m(x, mask))


@pytest.mark.parametrize("norm", ["post", "pre", "parallel"])
def test_block_gradients_with_dropout_active(norm):
    g = rng(11)
    block = TransformerBlock(D, H, FF, dropout=0.2, norm=norm, activation="gelu", rng=g, dtype=F64)
    check_module(block, randn(B, T, D), dropout_rng=g)


def test_parallel_block_has_one_layernorm():
    """Errata E2: the seed's MHA(X) + FFN(X), read with a residual, is the GPT-J/PaLM parallel block."""
    block = TransformerBlock(D, H, FF, norm="parallel", rng=rng())
    assert sum(isinstance(m, LayerNorm) for m in block.modules()) == 1


def test_parallel_block_matches_its_equation():
    block = TransformerBlock(D, H, FF, dropout=0.0, norm="parallel", rng=rng(), dtype=F64)
    x = randn(B, T, D)
    xn = block.norm1(x)
    expected = x + block.attn(xn) + block.ffn(xn)
    np.testing.assert_allclose(block(x), expected, atol=1e-12)


def test_post_and_pre_blocks_match_their_equations():
    x = randn(B, T, D)
    post = TransformerBlock(D, H, FF, dropout=0.0, norm="post", rng=rng(), dtype=F64)
    h = post.norm1(x + post.attn(x))
    np.testing.assert_allclose(post(x), post.norm2(h + post.ffn(h)), atol=1e-12)
    pre = TransformerBlock(D, H, FF, dropout=0.0, norm="pre", rng=rng(), dtype=F64)
    h = x + pre.attn(pre.norm1(x))
    np.testing.assert_allclose(pre(x), h + pre.ffn(pre.norm2(h)), atol=1e-12)


@pytest.mark.parametrize("norm, has_final", [("post", False), ("pre", True), ("parallel", True)])
def test_encoder_final_norm_default_and_gradients(norm, has_final):
    enc = TransformerEncoder(2, D, H, FF, dropout=0.0, norm=norm, activation="gelu", rng=rng(), dtype=F64)
    assert (enc.final_norm is not None) == has_final
    mask = _masks()["padding&causal"]
    check_module(enc, randn(B, T, D), call=lambda m, x: m(x, mask))
    weights = enc.attention_weights
    assert len(weights) == 2 and all(w.shape == (B, H, T, T) for w in weights)


def test_encoder_final_norm_can_be_forced():
    assert TransformerEncoder(1, D, H, FF, norm="post", final_norm=True, rng=rng()).final_norm is not None
    assert TransformerEncoder(1, D, H, FF, norm="pre", final_norm=False, rng=rng()).final_norm is None


# --------------------------------------------------------------------------- #
# Residual sharing: backward must never modify dout
# --------------------------------------------------------------------------- #

def _residual_cases():
    g = rng(21)
    return {
        "Linear": (Linear(D, D, rng=rng(), dtype=F64), None),
        "LayerNorm": (LayerNorm(D, dtype=F64), None),
        "Dropout": (Dropout(0.3, g), g),
        "Dropout(eval)": (Dropout(0.3, rng()).eval(), None),
        "PositionalEncoding": (PositionalEncoding(T, D, kind="learned", rng=rng(), dtype=F64), None),
        "MultiHeadAttention": (MultiHeadAttention(D, H, rng=rng(), dtype=F64), None),
        "MultiHeadAttention(separate)": (MultiHeadAttention(D, H, fused_qkv=False, rng=rng(), dtype=F64), None),
        "FeedForward(relu)": (FeedForward(D, FF, rng=rng(), dtype=F64), None),
        "FeedForward(gelu,dropout)": (FeedForward(D, FF, activation="gelu", dropout=0.2, rng=g, dtype=F64), g),
        # GELU in the blocks: with ReLU some hidden unit of this draw sits within the finite-difference
        # step of its kink, where the function has no derivative to compare with (ReLU is checked above)
        "Block(post)": (TransformerBlock(D, H, FF, dropout=0.0, norm="post", activation="gelu", rng=rng(),
                                         dtype=F64), None),
        "Block(pre)": (TransformerBlock(D, H, FF, dropout=0.0, norm="pre", activation="gelu", rng=rng(),
                                        dtype=F64), None),
        "Block(parallel)": (TransformerBlock(D, H, FF, dropout=0.0, norm="parallel", activation="gelu", rng=rng(),
                                             dtype=F64), None),
        "Block(pre,eval)": (TransformerBlock(D, H, FF, dropout=0.2, norm="pre", activation="gelu", rng=rng(),
                                             dtype=F64).eval(), None),
        "Encoder(pre)": (TransformerEncoder(2, D, H, FF, dropout=0.0, norm="pre", activation="gelu", rng=rng(),
                                            dtype=F64), None),
    }


@pytest.mark.parametrize("name", list(_residual_cases()))
def test_residual_shares_dout_unchanged(name):
    """y = x + f(x): the same dout array goes to f.backward and to the skip path."""
    f, g = _residual_cases()[name]
    params = dict(f.named_parameters())
    state = None if g is None else g.bit_generator.state

    def forward(x, **_):
        if state is not None:
            g.bit_generator.state = state
        return x + f(x)

    def backward(dout, x, **_):
        f.zero_grad()
        forward(x)
        before = dout.copy()
        dx = dout + f.backward(dout)              # the skip path reads dout after f.backward has run
        np.testing.assert_array_equal(dout, before, err_msg=f"{name}.backward modified dout in place")
        return {"x": dx, **{n: p.grad.copy() for n, p in params.items()}}

    inputs = {"x": randn(B, T, D), **{n: p.data for n, p in params.items()}}
    check_gradients(forward, backward, inputs)


# --------------------------------------------------------------------------- #
# dtypes, devices, accumulation
# --------------------------------------------------------------------------- #

def test_float32_stays_float32():
    enc = TransformerEncoder(2, D, H, FF, dropout=0.1, norm="pre", rng=rng())
    x = randn(B, T, D).astype(np.float32)
    y = enc(x, _masks()["padding&causal"])
    assert y.dtype == np.float32
    assert all(w.dtype == np.float32 for w in enc.attention_weights)
    dx = enc.backward(np.ones_like(y))
    assert dx.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in enc.parameters())


def test_to_float64_converts_everything():
    enc = TransformerEncoder(1, D, H, FF, rng=rng()).to(dtype=np.float64)
    assert all(p.data.dtype == np.float64 and p.grad.dtype == np.float64 for p in enc.parameters())
    assert enc(randn(B, T, D)).dtype == np.float64


@pytest.mark.parametrize("name", ["Linear", "LayerNorm", "PositionalEncoding", "MultiHeadAttention",
                                  "MultiHeadAttention(separate)", "FeedForward(relu)", "Block(parallel)"])
def test_backward_accumulates_parameter_gradients(name):
    """Two backward calls without zero_grad give twice the gradient: '+=' everywhere, never '='."""
    module, _ = _residual_cases()[name]
    x, dout = randn(B, T, D), randn(B, T, D, seed=2)
    module(x)
    module.backward(dout)
    once = {n: p.grad.copy() for n, p in module.named_parameters()}
    module.backward(dout)
    for n, p in module.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[n], err_msg=n)
    module.zero_grad()
    assert all(np.all(p.grad == 0) for p in module.parameters())


def test_state_dict_round_trip_and_errors():
    a = TransformerEncoder(1, D, H, FF, rng=rng(1))
    b = TransformerEncoder(1, D, H, FF, rng=rng(2))
    b.load_state_dict(a.state_dict())
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    state = a.state_dict()
    state["blocks.0.attn.W_o"] = np.zeros((D, D + 1), dtype=np.float32)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.W_o"):
        b.load_state_dict(state)


def test_repr_shows_the_tree():
    text = repr(TransformerBlock(D, H, FF, rng=rng()))
    assert "MultiHeadAttention(d_model=8, n_heads=2" in text and "(norm2): LayerNorm" in text


def test_custom_module_gets_the_api():
    class Tiny(Module):
        def __init__(self):
            super().__init__()
            self.layers = [Linear(2, 2, rng=rng()), Linear(2, 1, rng=rng())]

    tiny = Tiny()
    assert [n for n, _ in tiny.named_parameters()] == ["layers.0.W", "layers.0.b", "layers.1.W", "layers.1.b"]
    assert tiny.num_parameters() == 4 + 2 + 2 + 1


# --------------------------------------------------------------------------- #
# Compression options of MultiHeadAttention: head gates and a free head width
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "separate"])
@given(B=st.integers(1, 2), T=st.integers(1, 3), H=st.integers(1, 3), Dh=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_gated_attention_with_free_head_width_matches_numerical_gradients(fast_path, fused, B, T, H, Dh, seed):
    """head_dim need not be D / H (heads were pruned), and the gate gets its gradient, on both paths."""
    rng = np.random.default_rng(seed)
    D = 3                                       # an odd width that H * Dh does not have to equal
    mha = MultiHeadAttention(D, H, fused_qkv=fused, head_dim=Dh, head_gates=True, rng=rng, dtype=np.float64)
    mha.use_fast_paths(fast_path)
    mha.gate.data[...] = rng.normal(size=H)     # away from 1, so a gate that is ignored would show
    x = rng.normal(size=(B, T, D))
    mask = rng.random((B, 1, 1, T)) < 0.7
    check_module(mha, x, call=lambda m, x_: m(x_, mask))


def test_gates_of_one_leave_attention_unchanged_and_a_zero_gate_silences_its_head():
    rng = np.random.default_rng(0)
    plain = MultiHeadAttention(8, 4, rng=np.random.default_rng(1))
    gated = MultiHeadAttention(8, 4, head_gates=True, rng=np.random.default_rng(1))
    x = rng.normal(size=(2, 5, 8)).astype(np.float32)
    np.testing.assert_array_equal(gated(x), plain(x))
    assert "gate" not in dict(plain.named_parameters())          # off by default: old checkpoints still load
    gated.gate.data[2] = 0.0
    # head 2 silenced = its rows of W_o zeroed
    plain.W_o.data[4:6] = 0.0
    np.testing.assert_allclose(gated(x), plain(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("position", [None, "rope", "alibi"])
@given(T=st.integers(1, 5), H=st.integers(1, 3), Dh=st.integers(1, 4), window=st.integers(0, 3),
       seed=st.integers(0, 2**32 - 1))
def test_free_head_width_holds_under_local_attention_and_relative_positions(fast_path, position, T, H, Dh, window,
                                                                            seed):
    """Pruned heads (head_dim != D / H) with gates keep working with the long-text options, on both paths."""
    rng = np.random.default_rng(seed)
    D = 3
    mha = MultiHeadAttention(D, H, head_dim=Dh, head_gates=True, position=position, local_window=window,
                             local_block_size=2, rng=rng, dtype=np.float64)
    mha.use_fast_paths(fast_path)
    mha.gate.data[...] = rng.normal(size=H)
    check_module(mha, rng.normal(size=(1, T, D)))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "separate"])
def test_key_value_cache_with_free_head_width_and_gates_equals_the_causal_forward(fused):
    rng = np.random.default_rng(0)
    mha = MultiHeadAttention(6, 2, fused_qkv=fused, head_dim=5, head_gates=True, rng=rng, dtype=np.float64).eval()
    mha.gate.data[...] = [0.5, -1.5]
    x = rng.normal(size=(2, 7, 6))
    full = mha(x, F.causal_mask(7))
    first, kv = mha.forward_cached(x[:, :4])
    assert kv[0].shape == (2, 2, 4, 5)
    rest, _ = mha.forward_cached(x[:, 4:], kv)
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), full, rtol=1e-10, atol=1e-12)

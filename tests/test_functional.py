"""Tests for numpy_transformer.functional: gradients, properties, dtypes, errors.

1. Every backward pass against central differences (``gradcheck.check_gradients``)
   in float64, over shapes drawn by hypothesis (sizes of 1 included, odd D).
   Each case is registered in ``GRADIENT_CASES`` so that
   ``benchmarks/gradcheck_report.py`` can measure the same cases at length.
2. Properties a correct implementation must have (softmax, attention, PE,
   dropout, losses).
3. float32 in -> float32 out (no silent upcast).
4. Bad input -> an error that names the argument, the expected and the actual value.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from numpy_transformer import functional as F
from numpy_transformer.functional import INT8_MAX
from numpy_transformer.gradcheck import check_gradients

TOL = 1e-5  # the checker's default; a wrong formula is off by 1e-2 or more

seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 4)                # B, T, H ...: 1 included
widths = st.integers(1, 7)               # D: odd included


def shapes(min_dims, max_dims, max_side=4):
    return st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


def away_from_zero(rng, shape, margin=0.05):
    """Random values with |x| >= margin: ReLU has no derivative at 0 for the stencil to find."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(margin, 2.0, size=shape)


def assert_gradients_match(forward, backward, inputs, wrt=None, tol=TOL):
    """Every analytic gradient agrees with the numerical one to ``tol`` (relative)."""
    # dout from a two-word seed: it can never coincide with an input drawn from an integer seed.
    results = check_gradients(forward, backward, inputs, wrt=wrt, tol=tol, rng=np.random.default_rng([2017, 1]))
    for result in results.values():
        assert result.max_rel_error <= tol, str(result)
    return results


# --------------------------------------------------------------------------- #
# 1. Gradient checks. A "case" builds (forward, backward, inputs, wrt) from the
#    values hypothesis draws; forward and backward take the inputs as keywords.
# --------------------------------------------------------------------------- #

GRADIENT_CASES = {}  # formula -> (functions checked, case builder, hypothesis strategies for its arguments)


def gradient_case(formula, functions, **strategies):
    def register(build):
        GRADIENT_CASES[formula] = (functions, build, strategies)
        return build
    return register


@gradient_case("softmax", "softmax, softmax_backward", shape=shapes(1, 3, max_side=5), axis=st.sampled_from([-1, 0]),
               seed=seeds)
def softmax_case(shape, axis, seed):
    x = np.random.default_rng(seed).normal(scale=2.0, size=shape)
    return (lambda x: F.softmax(x, axis)[0],
            lambda dy, x: {"x": F.softmax_backward(dy, F.softmax(x, axis)[1])},
            {"x": x}, None)


@gradient_case("log-softmax", "log_softmax, log_softmax_backward", shape=shapes(1, 3, max_side=5),
               axis=st.sampled_from([-1, 0]), seed=seeds)
def log_softmax_case(shape, axis, seed):
    x = np.random.default_rng(seed).normal(scale=2.0, size=shape)
    return (lambda x: F.log_softmax(x, axis)[0],
            lambda dy, x: {"x": F.log_softmax_backward(dy, F.log_softmax(x, axis)[1])},
            {"x": x}, None)


@gradient_case("ReLU", "relu, relu_backward", shape=shapes(1, 3), seed=seeds)
def relu_case(shape, seed):
    x = away_from_zero(np.random.default_rng(seed), shape)
    return (lambda x: F.relu(x)[0],
            lambda dy, x: {"x": F.relu_backward(dy, F.relu(x)[1])},
            {"x": x}, None)


@gradient_case("GELU (tanh)", "gelu, gelu_backward", shape=shapes(1, 3), seed=seeds)
def gelu_case(shape, seed):
    x = away_from_zero(np.random.default_rng(seed), shape, margin=0.01) * 2.0
    return (lambda x: F.gelu(x)[0],
            lambda dy, x: {"x": F.gelu_backward(dy, F.gelu(x)[1])},
            {"x": x}, None)


@gradient_case("linear xW + b", "linear, linear_backward", lead=shapes(1, 2), D_in=widths, D_out=widths,
               bias=st.booleans(), seed=seeds)
def linear_case(lead, D_in, D_out, bias, seed):
    """``lead`` of length 1 gives a 2-D x (N, D_in); of length 2 a 3-D x (B, T, D_in)."""
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.standard_normal(lead + (D_in,)), "W": rng.standard_normal((D_in, D_out))}
    if bias:
        inputs["b"] = rng.standard_normal(D_out)

    def backward(dy, x, W, b=None):
        dx, dW, db = F.linear_backward(dy, F.linear(x, W, b)[1])
        return {"x": dx, "W": dW, "b": db}
    return lambda x, W, b=None: F.linear(x, W, b)[0], backward, inputs, None


@gradient_case("LayerNorm", "layernorm, layernorm_backward", lead=shapes(1, 2), D=widths, seed=seeds)
def layernorm_case(lead, D, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=2.0, size=lead + (D,)) + rng.normal()
    # A row whose values nearly coincide has a tiny variance: LayerNorm is then
    # so curved that no finite difference with h=1e-3 can follow it.
    assume(D == 1 or x.std(axis=-1).min() > 0.25)
    inputs = {"x": x, "gamma": rng.normal(size=D), "beta": rng.normal(size=D)}

    def backward(dy, x, gamma, beta):
        dx, dgamma, dbeta = F.layernorm_backward(dy, F.layernorm(x, gamma, beta)[1])
        return {"x": dx, "gamma": dgamma, "beta": dbeta}
    return lambda x, gamma, beta: F.layernorm(x, gamma, beta)[0], backward, inputs, None


@gradient_case("dropout (inverted)", "dropout, dropout_backward", shape=shapes(1, 3), p=st.floats(0.0, 0.9),
               seed=seeds)
def dropout_case(shape, p, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    mask_seed = int(rng.integers(2**32))
    # A fresh generator with the same seed in every call: the mask is the same
    # in every forward the checker runs, so dropout is an ordinary function of x.
    return (lambda x: F.dropout(x, p, np.random.default_rng(mask_seed))[0],
            lambda dy, x: {"x": F.dropout_backward(dy, F.dropout(x, p, np.random.default_rng(mask_seed))[1])},
            {"x": x}, None)


@gradient_case("embedding lookup", "embedding, embedding_backward", B=sizes, T=sizes, V=st.integers(1, 5), D=widths,
               seed=seeds)
def embedding_case(B, T, V, D, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, size=(B, T))
    ids.flat[-1] = ids.flat[0]  # at least one repeated id whenever there are two tokens
    inputs = {"ids": ids, "E": rng.standard_normal((V, D))}
    return (lambda ids, E: F.embedding(ids, E)[0],
            lambda dy, ids, E: {"E": F.embedding_backward(dy, F.embedding(ids, E)[1])},
            inputs, ["E"])


MASK_KINDS = ["none", "padding", "causal", "random", "padding & causal", "random & causal",
              "fully masked row", "random (Tq, Tk)"]
LAYOUTS = ["(B, H, T, Dh)", "k, v shared over the batch", "(T, Dh), no batch"]


def make_mask(kind, B, H, Tq, Tk, rng):
    """A boolean mask (True = may attend) of the kind named, broadcastable to (B, H, Tq, Tk)."""
    valid = rng.random((B, Tk)) < 0.7                         # padding: which keys are real tokens
    masks = {
        "none": None,
        "padding": F.padding_mask(valid),                     # (B, 1, 1, Tk)
        "causal": F.causal_mask(Tq, Tk),                      # (Tq, Tk)
        "random": rng.random((B, H, Tq, Tk)) < 0.6,           # (B, H, Tq, Tk)
        "padding & causal": F.padding_mask(valid) & F.causal_mask(Tq, Tk),
        "random & causal": (rng.random((B, 1, Tq, Tk)) < 0.6) & F.causal_mask(Tq, Tk),
        "random (Tq, Tk)": rng.random((Tq, Tk)) < 0.6,
    }
    if kind == "fully masked row":
        mask = rng.random((B, H, Tq, Tk)) < 0.6
        mask[..., rng.integers(Tq), :] = False
        return mask
    return masks[kind]


@gradient_case("scaled dot-product attention", "scaled_dot_product_attention, scaled_dot_product_attention_backward",
               B=st.integers(1, 3), H=st.integers(1, 3), Tq=sizes, Tk=sizes, Dh=st.integers(1, 5),
               Dv=st.integers(1, 4), mask_kind=st.sampled_from(MASK_KINDS), layout=st.sampled_from(LAYOUTS),
               seed=seeds)
def attention_case(B, H, Tq, Tk, Dh, Dv, mask_kind, layout, seed):
    rng = np.random.default_rng(seed)
    mask = make_mask(mask_kind, B, H, Tq, Tk, rng)
    kv_lead = (1, H) if layout == "k, v shared over the batch" else (B, H)
    q = rng.standard_normal((B, H, Tq, Dh))
    k = rng.standard_normal(kv_lead + (Tk, Dh))
    v = rng.standard_normal(kv_lead + (Tk, Dv))
    if layout == "(T, Dh), no batch":
        q, k, v = q[0, 0].copy(), k[0, 0].copy(), v[0, 0].copy()
        mask = None if mask is None else np.broadcast_to(mask, (B, H, Tq, Tk))[0, 0].copy()

    def backward(dout, q, k, v):
        out, weights, cache = F.scaled_dot_product_attention(q, k, v, mask)
        dq, dk, dv = F.scaled_dot_product_attention_backward(dout, cache)
        return {"q": dq, "k": dk, "v": dv}
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask)[0], backward, {"q": q, "k": k, "v": v}, None


@gradient_case("split heads", "split_heads, split_heads_backward", B=sizes, T=sizes, H=sizes, Dh=st.integers(1, 3),
               seed=seeds)
def split_heads_case(B, T, H, Dh, seed):
    x = np.random.default_rng(seed).standard_normal((B, T, H * Dh))
    return (lambda x: F.split_heads(x, H),
            lambda dy, x: {"x": F.split_heads_backward(dy)},
            {"x": x}, None)


@gradient_case("merge heads", "merge_heads, merge_heads_backward", B=sizes, T=sizes, H=sizes, Dh=st.integers(1, 3),
               seed=seeds)
def merge_heads_case(B, T, H, Dh, seed):
    x = np.random.default_rng(seed).standard_normal((B, H, T, Dh))
    return (lambda x: F.merge_heads(x),
            lambda dy, x: {"x": F.merge_heads_backward(dy, H)},
            {"x": x}, None)


@gradient_case("cross-entropy (mean, ignore_index, smoothing)", "cross_entropy, cross_entropy_backward",
               lead=shapes(1, 2), C=st.integers(1, 6), ignore_fraction=st.sampled_from([0.0, 0.3]),
               label_smoothing=st.sampled_from([0.0, 0.1]) | st.floats(0.0, 0.9), seed=seeds)
def cross_entropy_case(lead, C, ignore_fraction, label_smoothing, seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, C, size=lead)
    targets[rng.random(lead) < ignore_fraction] = -100
    logits = rng.normal(scale=2.0, size=lead + (C,))

    def backward(dloss, logits):
        cache = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)[1]
        return {"logits": F.cross_entropy_backward(dloss, cache)}
    return (lambda logits: F.cross_entropy(logits, targets, label_smoothing=label_smoothing)[0],
            backward, {"logits": logits}, None)


@gradient_case("distillation (T² · KL)", "distillation_loss, distillation_loss_backward", lead=shapes(1, 2),
               C=st.integers(1, 6), temperature=st.floats(0.5, 4.0), seed=seeds)
def distillation_case(lead, C, temperature, seed):
    rng = np.random.default_rng(seed)
    inputs = {"student_logits": rng.normal(scale=2.0, size=lead + (C,)),
              "teacher_logits": rng.normal(scale=2.0, size=lead + (C,))}

    def backward(dloss, student_logits, teacher_logits):
        cache = F.distillation_loss(student_logits, teacher_logits, temperature)[1]
        return {"student_logits": F.distillation_loss_backward(dloss, cache)}
    # The teacher is a constant: only the student's gradient exists.
    return (lambda student_logits, teacher_logits: F.distillation_loss(student_logits, teacher_logits,
                                                                       temperature)[0],
            backward, inputs, ["student_logits"])


@gradient_case("head gates ξ_h (Michel et al. 2019)", "head_gate, head_gate_backward", B=sizes, H=sizes, T=sizes,
               Dh=widths, seed=seeds)
def head_gate_case(B, H, T, Dh, seed):
    rng = np.random.default_rng(seed)
    inputs = {"heads": rng.normal(size=(B, H, T, Dh)), "gate": rng.normal(size=H)}
    return (lambda heads, gate: F.head_gate(heads, gate)[0],
            lambda dy, heads, gate: dict(zip(("heads", "gate"), F.head_gate_backward(dy, F.head_gate(heads, gate)[1]))),
            inputs, None)


# The straight-through estimators are *not* the derivatives of their forward functions (round and
# sign have derivative 0 almost everywhere). What the tests check is that backward is exactly the
# derivative of the documented surrogate, evaluated at the input with the discrete part frozen.

@gradient_case("int8 fake quantization, straight-through (surrogate clip(w, ±127 s))",
               "fake_quantize_int8, fake_quantize_int8_backward", lead=shapes(1, 2), D_out=widths,
               clip=st.booleans(), seed=seeds)
def fake_quantize_int8_case(lead, D_out, clip, seed):
    rng = np.random.default_rng(seed)
    w = away_from_zero(rng, lead + (D_out,))
    # a scale that clips: the largest weights of each column fall outside +-127 s (and none sits on the edge)
    scale = None if not clip else np.abs(w).max(axis=tuple(range(w.ndim - 1))) / (INT8_MAX * 1.5)
    s0 = F.int8_scale(w) if scale is None else scale
    edge = np.abs(np.abs(w) - INT8_MAX * s0)
    w = np.where(edge < 1e-2, w * 0.9, w)

    def surrogate(w):
        return np.clip(w, -INT8_MAX * s0, INT8_MAX * s0)           # the straight-through "forward"
    return (surrogate, lambda dy, w: {"w": F.fake_quantize_int8_backward(dy, F.fake_quantize_int8(w, scale)[1])},
            {"w": w}, None)


@gradient_case("binary weights α·sign(w), straight-through (surrogate α(w)·sign(w0) + α(w0)·clip(w, ±1))",
               "binarize, binarize_backward", lead=shapes(1, 2), D_out=widths, seed=seeds)
def binarize_case(lead, D_out, seed):
    rng = np.random.default_rng(seed)
    w = away_from_zero(rng, lead + (D_out,)) * 1.2          # magnitudes in [0.06, 2.4]: both sides of |w| = 1
    w = np.where(np.abs(np.abs(w) - 1.0) < 0.02, w * 0.9, w)   # none on the kink at |w| = 1
    sign0 = np.sign(w)
    alpha0 = np.abs(w).mean(axis=tuple(range(w.ndim - 1)))

    def surrogate(w):
        alpha = np.abs(w).mean(axis=tuple(range(w.ndim - 1)))
        return alpha * sign0 + alpha0 * np.clip(w, -1.0, 1.0)
    return (surrogate, lambda dy, w: {"w": F.binarize_backward(dy, F.binarize(w)[1])}, {"w": w}, None)


@gradient_case("RoPE (rotary positions)", "rope, rope_backward", lead=shapes(0, 2), T=sizes, Dh=st.integers(1, 7),
               offset=st.integers(0, 50), seed=seeds)
def rope_case(lead, T, Dh, offset, seed):
    """Odd Dh included: the last feature has no partner and passes through unrotated."""
    x = np.random.default_rng(seed).standard_normal(lead + (T, Dh))
    positions = np.arange(offset, offset + T)
    return (lambda x: F.rope(x, positions)[0],
            lambda dy, x: {"x": F.rope_backward(dy, F.rope(x, positions)[1])},
            {"x": x}, None)


@gradient_case("attention with an ALiBi bias", "scaled_dot_product_attention(bias=alibi_bias(...)), backward",
               B=st.integers(1, 2), H=st.integers(1, 5), T=sizes, Dh=st.integers(1, 4), causal=st.booleans(),
               seed=seeds)
def alibi_attention_case(B, H, T, Dh, causal, seed):
    rng = np.random.default_rng(seed)
    bias = F.alibi_bias(H, T, dtype=np.float64)                      # (H, T, T)
    mask = F.causal_mask(T) if causal else None
    q, k, v = (rng.standard_normal((B, H, T, Dh)) for _ in range(3))

    def backward(dout, q, k, v):
        dq, dk, dv = F.scaled_dot_product_attention_backward(
            dout, F.scaled_dot_product_attention(q, k, v, mask, bias=bias)[2])
        return {"q": dq, "k": dk, "v": dv}
    return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask, bias=bias)[0], backward,
            {"q": q, "k": k, "v": v}, None)


def _given_case(formula):
    return given(**GRADIENT_CASES[formula][2])


@_given_case("softmax")
def test_softmax_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*softmax_case(**kw))


@_given_case("log-softmax")
def test_log_softmax_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*log_softmax_case(**kw))


@_given_case("ReLU")
def test_relu_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*relu_case(**kw))


@_given_case("GELU (tanh)")
def test_gelu_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*gelu_case(**kw))


@_given_case("linear xW + b")
def test_linear_backward_matches_numerical_gradient_with_and_without_bias_2d_and_3d(**kw):
    assert_gradients_match(*linear_case(**kw))


@_given_case("LayerNorm")
def test_layernorm_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*layernorm_case(**kw))


@_given_case("dropout (inverted)")
def test_dropout_backward_matches_numerical_gradient_for_a_fixed_mask(**kw):
    assert_gradients_match(*dropout_case(**kw))


@_given_case("embedding lookup")
def test_embedding_backward_accumulates_repeated_ids(**kw):
    assert_gradients_match(*embedding_case(**kw))


@_given_case("scaled dot-product attention")
def test_attention_backward_matches_numerical_gradient_for_every_mask_and_layout(**kw):
    assert_gradients_match(*attention_case(**kw))


@_given_case("RoPE (rotary positions)")
def test_rope_backward_matches_numerical_gradient_odd_and_even_widths(**kw):
    assert_gradients_match(*rope_case(**kw))


@_given_case("attention with an ALiBi bias")
def test_attention_with_alibi_bias_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*alibi_attention_case(**kw))


@_given_case("split heads")
def test_split_heads_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*split_heads_case(**kw))


@_given_case("merge heads")
def test_merge_heads_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*merge_heads_case(**kw))


@_given_case("cross-entropy (mean, ignore_index, smoothing)")
def test_cross_entropy_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*cross_entropy_case(**kw))


@_given_case("distillation (T² · KL)")
def test_distillation_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*distillation_case(**kw))


@_given_case("head gates ξ_h (Michel et al. 2019)")
def test_head_gate_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*head_gate_case(**kw))


@_given_case("int8 fake quantization, straight-through (surrogate clip(w, ±127 s))")
def test_fake_quantize_int8_backward_is_exactly_the_straight_through_surrogate(**kw):
    assert_gradients_match(*fake_quantize_int8_case(**kw))


@_given_case("binary weights α·sign(w), straight-through (surrogate α(w)·sign(w0) + α(w0)·clip(w, ±1))")
def test_binarize_backward_is_exactly_the_straight_through_surrogate(**kw):
    assert_gradients_match(*binarize_case(**kw))


def test_every_attention_mask_kind_and_layout_is_checked_at_least_once():
    """Hypothesis may not draw every combination; check each mask kind and layout on a fixed shape too."""
    for i, kind in enumerate(MASK_KINDS):
        for j, layout in enumerate(LAYOUTS):
            assert_gradients_match(*attention_case(B=2, H=2, Tq=3, Tk=4, Dh=3, Dv=2, mask_kind=kind,
                                                   layout=layout, seed=10 * i + j))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(5,), (2, 3)], ids=["2-D x", "3-D x"])
def test_linear_gradients_for_each_rank_with_and_without_bias(lead, bias):
    """Every combination once on a fixed shape, whatever hypothesis draws."""
    assert_gradients_match(*linear_case(lead=lead, D_in=3, D_out=4, bias=bias, seed=7))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("ignore_fraction", [0.0, 0.5])
def test_cross_entropy_gradients_with_and_without_ignored_rows_and_smoothing(ignore_fraction, label_smoothing):
    assert_gradients_match(*cross_entropy_case(lead=(3, 4), C=5, ignore_fraction=ignore_fraction,
                                               label_smoothing=label_smoothing, seed=3))


def test_backward_functions_never_modify_or_return_dout():
    """A residual sends one dout into two branches: a backward that edits it, or hands it back
    for the caller to edit, corrupts the other branch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    cases = [  # (name, backward, cache, shape of dout)
        ("softmax", F.softmax_backward, F.softmax(x)[1], x.shape),
        ("log_softmax", F.log_softmax_backward, F.log_softmax(x)[1], x.shape),
        ("relu", F.relu_backward, F.relu(x)[1], x.shape),
        ("gelu", F.gelu_backward, F.gelu(x)[1], x.shape),
        ("layernorm", F.layernorm_backward, F.layernorm(x, np.ones(4), np.zeros(4))[1], x.shape),
        ("linear", F.linear_backward, F.linear(x, rng.standard_normal((4, 5)), np.zeros(5))[1], (2, 3, 5)),
        ("dropout", F.dropout_backward, F.dropout(x, 0.5, np.random.default_rng(1))[1], x.shape),
        ("dropout, p=0", F.dropout_backward, F.dropout(x, 0.0, np.random.default_rng(1))[1], x.shape),
        ("dropout, eval", F.dropout_backward, F.dropout(x, 0.5, None, training=False)[1], x.shape),
        ("embedding", F.embedding_backward, F.embedding(np.array([[0, 1, 1]]), x[0])[1], (1, 3, 4)),
        ("attention", F.scaled_dot_product_attention_backward,
         F.scaled_dot_product_attention(x, x, x, F.causal_mask(3))[2], x.shape),
    ]
    for name, backward, cache, dout_shape in cases:
        dout = rng.standard_normal(dout_shape)
        before = dout.copy()
        grads = backward(dout, cache)
        np.testing.assert_array_equal(dout, before, err_msg=f"{name} backward modified dout")
        for g in grads if isinstance(grads, tuple) else (grads,):
            assert g is None or not np.shares_memory(g, dout), f"{name} backward returned (a view of) dout"


# --------------------------------------------------------------------------- #
# 2a. Softmax and log-softmax properties
# --------------------------------------------------------------------------- #

@given(shape=shapes(1, 3, max_side=6), scale=st.floats(0.1, 50.0), seed=seeds)
def test_softmax_rows_are_probability_distributions(shape, scale, seed):
    x = np.random.default_rng(seed).normal(scale=scale, size=shape)
    y, _ = F.softmax(x)
    assert np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=0, atol=1e-12)


@given(shape=shapes(1, 3, max_side=6), shift=st.floats(-100.0, 100.0), seed=seeds)
def test_softmax_is_shift_invariant(shape, shift, seed):
    """softmax(x + c) == softmax(x): the max-subtraction trick changes nothing mathematically."""
    x = np.random.default_rng(seed).normal(scale=3.0, size=shape)
    np.testing.assert_allclose(F.softmax(x + shift)[0], F.softmax(x)[0], rtol=1e-10, atol=1e-13)


def test_softmax_and_log_softmax_are_finite_for_huge_float32_logits():
    """Logits of +-1e4 would overflow a naive exp (e^10000 = inf, inf/inf = NaN)."""
    x = np.array([[1e4, -1e4, 0.0], [1e4, 1e4, 1e4], [-1e4, -1e4, -1e4]], dtype=np.float32)
    y, _ = F.softmax(x)
    logp, _ = F.log_softmax(x)
    assert y.dtype == np.float32 and logp.dtype == np.float32
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(logp))
    np.testing.assert_allclose(y, [[1, 0, 0], [1 / 3] * 3, [1 / 3] * 3], atol=1e-6)
    np.testing.assert_allclose(logp[0], [0.0, -2e4, -1e4], rtol=1e-6)


@given(shape=shapes(1, 3, max_side=6), scale=st.floats(0.1, 20.0), seed=seeds)
def test_log_softmax_matches_log_of_softmax_where_that_is_finite(shape, scale, seed):
    x = np.random.default_rng(seed).normal(scale=scale, size=shape)
    y, _ = F.softmax(x)
    assume(np.all(y > 1e-300))
    np.testing.assert_allclose(F.log_softmax(x)[0], np.log(y), rtol=1e-10, atol=1e-12)


def test_log_softmax_stays_finite_where_log_of_softmax_is_minus_infinity():
    x = np.array([0.0, -1000.0])
    np.testing.assert_allclose(F.log_softmax(x)[0], [0.0, -1000.0], atol=1e-12)


# --------------------------------------------------------------------------- #
# 2b. Attention properties
# --------------------------------------------------------------------------- #

@given(T=st.integers(1, 6), D=widths, with_batch=st.booleans(), seed=seeds)
def test_self_attention_without_positions_is_permutation_equivariant(T, D, with_batch, seed):
    """Shuffling the tokens of q = k = v = x shuffles the output rows the same way: attention
    alone has no idea of order (which is why the model needs a positional encoding)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, T, D) if with_batch else (T, D))
    perm = rng.permutation(T)
    out, weights, _ = F.scaled_dot_product_attention(x, x, x)
    xp_ = x[..., perm, :]
    out_p, weights_p, _ = F.scaled_dot_product_attention(xp_, xp_, xp_)
    np.testing.assert_allclose(out_p, out[..., perm, :], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights_p, weights[..., perm, :][..., perm], rtol=1e-10, atol=1e-12)


@given(T=st.integers(2, 6), D=widths, t=st.integers(0, 4), seed=seeds)
def test_causal_attention_output_at_t_ignores_inputs_after_t(T, D, t, seed):
    t = t % (T - 1)  # leave at least one position after t to change
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, T, D))
    changed = x.copy()
    changed[:, t + 1:] = rng.standard_normal((2, T - t - 1, D))
    mask = F.causal_mask(T)
    out, _, _ = F.scaled_dot_product_attention(x, x, x, mask)
    out_changed, _, _ = F.scaled_dot_product_attention(changed, changed, changed, mask)
    np.testing.assert_allclose(out_changed[:, : t + 1], out[:, : t + 1], rtol=1e-12, atol=1e-14)
    # ... while the positions that do see the change move (the test has teeth).
    assert not np.allclose(out_changed[:, t + 1:], out[:, t + 1:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fully_masked_row_gives_exact_zeros_never_nan(dtype):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 4, 5)).astype(dtype) for _ in range(3))
    mask = rng.random((2, 3, 4, 4)) < 0.7
    mask[:, :, 1, :] = False                         # query 1 may attend to nothing
    out, weights, cache = F.scaled_dot_product_attention(q, k, v, mask)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(weights))
    assert np.all(weights[:, :, 1, :] == 0) and np.all(out[:, :, 1, :] == 0)
    dq, dk, dv = F.scaled_dot_product_attention_backward(rng.standard_normal(out.shape).astype(dtype), cache)
    assert all(np.all(np.isfinite(g)) for g in (dq, dk, dv))
    assert np.all(dq[:, :, 1, :] == 0)


@given(B=st.integers(1, 3), H=st.integers(1, 3), Tq=sizes, Tk=sizes, mask_kind=st.sampled_from(MASK_KINDS[1:]),
       seed=seeds)
def test_attention_weights_sum_to_one_where_anything_is_visible_and_are_zero_where_masked(B, H, Tq, Tk, mask_kind,
                                                                                        seed):
    rng = np.random.default_rng(seed)
    mask = make_mask(mask_kind, B, H, Tq, Tk, rng)
    q, k, v = rng.standard_normal((B, H, Tq, 3)), rng.standard_normal((B, H, Tk, 3)), rng.standard_normal((B, H, Tk, 2))
    _, weights, _ = F.scaled_dot_product_attention(q, k, v, mask)
    full = np.broadcast_to(mask, weights.shape)
    visible = full.any(axis=-1)
    np.testing.assert_allclose(weights.sum(axis=-1), np.where(visible, 1.0, 0.0), rtol=0, atol=1e-12)
    assert np.all(weights[~full] == 0)


def test_attention_broadcasts_one_query_set_over_batched_keys_with_a_key_mask():
    """q (Tq, Dh) shared by a batch of keys (B, Tk, Dh): the scores are (B, Tq, Tk), a (B, 1, Tk)
    mask broadcasts to them, and dq sums the batch's contributions."""
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 3))
    mask = rng.random((2, 1, 5)) < 0.7
    out, weights, _ = F.scaled_dot_product_attention(q, k, v, mask)
    assert out.shape == (2, 3, 3) and weights.shape == (2, 3, 5)

    def backward(dout, q, k, v):
        dq, dk, dv = F.scaled_dot_product_attention_backward(dout, F.scaled_dot_product_attention(q, k, v, mask)[2])
        return {"q": dq, "k": dk, "v": dv}
    assert_gradients_match(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask)[0], backward,
                           {"q": q, "k": k, "v": v})


def test_attention_divides_scores_by_sqrt_dk():
    """With one key the answer is trivial; with two, the weights are softmax(q.k / sqrt(d_k))."""
    q = np.array([[1.0, 1.0, 1.0, 1.0]])
    k = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    v = np.array([[1.0], [0.0]])
    _, weights, _ = F.scaled_dot_product_attention(q, k, v)
    expected = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()          # q.k = 4, sqrt(4) = 2
    np.testing.assert_allclose(weights[0], expected, rtol=1e-12)


# --------------------------------------------------------------------------- #
# 2c. Positional encoding (errata E1)
# --------------------------------------------------------------------------- #

def test_positional_encoding_matches_the_closed_form_at_hand_picked_points():
    D = 8
    pe = F.sinusoidal_positional_encoding(50, D, dtype=np.float64)
    np.testing.assert_array_equal(pe[0], [0, 1, 0, 1, 0, 1, 0, 1])       # sin 0 = 0, cos 0 = 1
    assert pe[1, 0] == pytest.approx(np.sin(1.0), abs=1e-15)
    assert pe[1, 1] == pytest.approx(np.cos(1.0), abs=1e-15)
    for pos, i in [(3, 1), (17, 2), (49, 3), (10, 0)]:
        angle = pos / 10000 ** (2 * i / D)
        assert pe[pos, 2 * i] == pytest.approx(np.sin(angle), abs=1e-14)
        assert pe[pos, 2 * i + 1] == pytest.approx(np.cos(angle), abs=1e-14)


def test_positional_encoding_default_dtype_is_float32():
    assert F.sinusoidal_positional_encoding(4, 6).dtype == np.float32
    assert F.seed_positional_encoding(4, 6).dtype == np.float32


@pytest.mark.parametrize("D", [1, 3, 7])
def test_positional_encoding_with_odd_width_ends_in_a_sine(D):
    T = 20
    pe = F.sinusoidal_positional_encoding(T, D, dtype=np.float64)
    assert pe.shape == (T, D)
    np.testing.assert_array_equal(pe[0], [(j % 2) for j in range(D)])   # [0, 1, 0, ..., 0]
    pos = np.arange(T)
    np.testing.assert_allclose(pe[:, D - 1], np.sin(pos / 10000 ** ((D - 1) / D)), atol=1e-14)


def _shift_fit(pe, i, k):
    """Least-squares linear map M (2x2) with PE[pos + k, pair i] ~ PE[pos, pair i] @ M over all pos.

    Returns (M, relative residual). A residual near 0 means one fixed map works at every position."""
    now, later = pe[:-k, 2 * i: 2 * i + 2], pe[k:, 2 * i: 2 * i + 2]
    M, *_ = np.linalg.lstsq(now, later, rcond=None)
    return M, np.linalg.norm(now @ M - later) / np.linalg.norm(later)


@pytest.mark.parametrize("k", [1, 2, 5, 13])
def test_positional_encoding_shift_by_k_is_a_fixed_rotation_of_each_pair(k):
    """[PE[pos+k, 2i], PE[pos+k, 2i+1]] = R_k [PE[pos, 2i], PE[pos, 2i+1]] for every pos,
    with R_k the rotation by k * w_i, w_i = 1 / 10000^(2i/D): relative position is linear."""
    T, D = 128, 8
    pe = F.sinusoidal_positional_encoding(T, D, dtype=np.float64)
    for i in range(D // 2):
        w = 1.0 / 10000 ** (2 * i / D)
        c, s = np.cos(k * w), np.sin(k * w)
        R = np.array([[c, s], [-s, c]])                       # (sin, cos) column vectors: R @ [sin, cos]
        pairs = pe[:, 2 * i: 2 * i + 2]                        # (T, 2)
        np.testing.assert_allclose(pairs[:-k] @ R.T, pairs[k:], atol=1e-12)
        M, residual = _shift_fit(pe, i, k)                     # ... and the map fitted from data alone
        assert residual < 1e-10
        np.testing.assert_allclose(M.T, R, atol=1e-9)
        assert np.linalg.det(M) == pytest.approx(1.0, abs=1e-9)  # a rotation: det 1, orthogonal


@pytest.mark.parametrize("k", [1, 2, 5])
def test_seed_positional_encoding_shift_is_not_a_linear_map(k):
    """The seed's sin + cos leaves one number per frequency (columns 2i and 2i+1 are equal), so no
    fixed 2x2 map takes PE[pos] to PE[pos + k] across positions: the least-squares residual is large."""
    T, D = 128, 8
    seed_pe = F.seed_positional_encoding(T, D, dtype=np.float64)
    np.testing.assert_array_equal(seed_pe[:, 0::2], seed_pe[:, 1::2])
    angle = np.arange(T)[:, None] / 10000 ** (np.arange(0, D, 2) / D)
    np.testing.assert_allclose(seed_pe[:, 0::2], np.sqrt(2) * np.sin(angle + np.pi / 4), atol=1e-12)
    for i in (0, 1):                                           # the frequencies that turn within T positions
        _, residual = _shift_fit(seed_pe, i, k)
        assert residual > 0.09


# --------------------------------------------------------------------------- #
# 2d. Dropout
# --------------------------------------------------------------------------- #

def test_dropout_is_the_identity_with_p_zero_or_in_eval_mode():
    x = np.random.default_rng(0).standard_normal((3, 5))
    for y, cache in (F.dropout(x, 0.0, np.random.default_rng(1)),
                     F.dropout(x, 0.5, np.random.default_rng(1), training=False)):
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(F.dropout_backward(x, cache), x)


def test_dropout_preserves_the_mean_and_drops_about_p():
    p = 0.3
    x = np.ones((200, 500))
    y, _ = F.dropout(x, p, np.random.default_rng(0))
    assert y.mean() == pytest.approx(1.0, abs=0.01)               # 5 standard errors
    assert np.mean(y == 0) == pytest.approx(p, abs=0.01)
    np.testing.assert_allclose(y[y != 0], 1.0 / (1.0 - p))        # survivors scaled by exactly 1/(1-p)


def test_dropout_same_seed_same_mask_other_seed_other_mask():
    x = np.ones((8, 16))
    y1, _ = F.dropout(x, 0.5, np.random.default_rng(42))
    y2, _ = F.dropout(x, 0.5, np.random.default_rng(42))
    y3, _ = F.dropout(x, 0.5, np.random.default_rng(43))
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)


# --------------------------------------------------------------------------- #
# 2e. Losses
# --------------------------------------------------------------------------- #

def test_cross_entropy_equals_minus_log_p_target_by_hand():
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
    targets = np.array([0, 2])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    by_hand = -(np.log(p[0, 0]) + np.log(p[1, 2])) / 2
    loss, _ = F.cross_entropy(logits, targets)
    assert float(loss) == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize("C", [1, 2, 5, 1000])
def test_cross_entropy_of_uniform_logits_is_log_C(C):
    loss, _ = F.cross_entropy(np.zeros((3, C)), np.arange(3) % C)
    assert float(loss) == pytest.approx(np.log(C), abs=1e-12)


def test_cross_entropy_ignored_rows_leave_the_mean_and_get_zero_gradient():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 4, 3))
    targets = np.array([[0, 2, -100, 1], [-100, -100, 1, 0]])
    loss, cache = F.cross_entropy(logits, targets)
    kept = targets != -100
    loss_kept, _ = F.cross_entropy(logits[kept], targets[kept])
    assert float(loss) == pytest.approx(float(loss_kept), rel=1e-12)
    dlogits = F.cross_entropy_backward(1.0, cache)
    assert dlogits.shape == logits.shape and np.all(dlogits[~kept] == 0)
    # A custom ignore_index works the same way.
    loss_custom, _ = F.cross_entropy(logits, np.where(kept, targets, 7), ignore_index=7)
    assert float(loss_custom) == pytest.approx(float(loss), rel=1e-12)


def test_cross_entropy_with_every_row_ignored_is_zero_not_nan():
    loss, cache = F.cross_entropy(np.ones((2, 3)), np.array([-100, -100]))
    assert float(loss) == 0.0
    np.testing.assert_array_equal(F.cross_entropy_backward(1.0, cache), 0.0)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_cross_entropy_label_smoothing_formula(eps):
    """L = (1 - eps) * (-log p_t) + (eps / C) * sum_c (-log p_c), averaged over rows."""
    logits = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, -1.0, 0.0]])
    targets = np.array([3, 1])
    C = logits.shape[1]
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    rows = (1 - eps) * -logp[np.arange(2), targets] + eps / C * -logp.sum(axis=1)
    loss, _ = F.cross_entropy(logits, targets, label_smoothing=eps)
    assert float(loss) == pytest.approx(rows.mean(), rel=1e-12)


def test_distillation_loss_is_zero_when_student_equals_teacher():
    z = np.random.default_rng(0).standard_normal((4, 5))
    loss, cache = F.distillation_loss(z, z.copy(), temperature=2.0)
    assert float(loss) == 0.0
    np.testing.assert_allclose(F.distillation_loss_backward(1.0, cache), 0.0, atol=1e-15)


@given(lead=shapes(1, 2), C=st.integers(1, 6), temperature=st.floats(0.5, 5.0), seed=seeds)
def test_distillation_loss_is_non_negative_and_equals_t2_kl_by_hand(lead, C, temperature, seed):
    rng = np.random.default_rng(seed)
    student, teacher = rng.normal(scale=3.0, size=lead + (C,)), rng.normal(scale=3.0, size=lead + (C,))
    loss, _ = F.distillation_loss(student, teacher, temperature)

    def probs(z):
        e = np.exp(z / temperature - (z / temperature).max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    p_t, p_s = probs(teacher), probs(student)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(axis=-1).mean()
    assert float(loss) >= -1e-12                                   # KL >= 0 up to rounding
    assert float(loss) == pytest.approx(temperature ** 2 * kl, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- #
# 3. float32 in -> float32 out (every array, forward and backward)
# --------------------------------------------------------------------------- #

def _assert_all_float32(named):
    for name, a in named.items():
        assert a.dtype == np.float32, f"{name}: float32 in gave {a.dtype} out"


def test_float32_stays_float32_everywhere():
    rng = np.random.default_rng(0)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x, W, b, gamma, beta = f32(2, 3, 4), f32(4, 5), f32(5), f32(4), f32(4)
    dy4, dy5 = f32(2, 3, 4), f32(2, 3, 5)
    out = {}
    for name, op, back in (("softmax", F.softmax, F.softmax_backward),
                           ("log_softmax", F.log_softmax, F.log_softmax_backward),
                           ("relu", F.relu, F.relu_backward), ("gelu", F.gelu, F.gelu_backward)):
        y, cache = op(x)
        out[name], out[f"d{name}"] = y, back(dy4, cache)
    y, cache = F.linear(x, W, b)
    out["linear"] = y
    out["linear dx"], out["linear dW"], out["linear db"] = F.linear_backward(dy5, cache)
    y, cache = F.layernorm(x, gamma, beta)
    out["layernorm"] = y
    out["layernorm dx"], out["layernorm dgamma"], out["layernorm dbeta"] = F.layernorm_backward(dy4, cache)
    y, cache = F.dropout(x, 0.5, np.random.default_rng(0))
    out["dropout"], out["dropout dx"] = y, F.dropout_backward(dy4, cache)
    y, cache = F.embedding(np.array([[0, 1, 1]]), W)
    out["embedding"], out["embedding dE"] = y, F.embedding_backward(f32(1, 3, 5), cache)
    q, k, v = f32(2, 2, 3, 4), f32(2, 2, 5, 4), f32(2, 2, 5, 3)
    mask = F.padding_mask(np.array([[True] * 5, [True, True, False, False, False]]))
    o, weights, cache = F.scaled_dot_product_attention(q, k, v, mask)
    out["attention out"], out["attention weights"] = o, weights
    out["dq"], out["dk"], out["dv"] = F.scaled_dot_product_attention_backward(f32(2, 2, 3, 3), cache)
    out["split_heads"] = F.split_heads(f32(2, 3, 4), 2)
    out["merge_heads"] = F.merge_heads(f32(2, 2, 3, 2))
    loss, cache = F.cross_entropy(x, np.array([[0, 1, 2], [3, 0, -100]]), label_smoothing=0.1)
    out["cross_entropy loss"] = np.asarray(loss)
    out["cross_entropy dlogits"] = F.cross_entropy_backward(1.0, cache)
    loss, cache = F.distillation_loss(x, f32(2, 3, 4))
    out["distillation loss"] = np.asarray(loss)
    out["distillation dlogits"] = F.distillation_loss_backward(1.0, cache)
    _assert_all_float32(out)


# --------------------------------------------------------------------------- #
# 4. Bad input: an error naming the argument, expected and actual
# --------------------------------------------------------------------------- #

def _qkv(q_shape, k_shape, v_shape):
    rng = np.random.default_rng(0)
    return rng.standard_normal(q_shape), rng.standard_normal(k_shape), rng.standard_normal(v_shape)


def test_attention_rejects_mismatched_q_k_v_sizes():
    with pytest.raises(ValueError, match=r"k: expected the same last dimension as q \(4\), got shape \(2, 5, 3\)"):
        F.scaled_dot_product_attention(*_qkv((2, 3, 4), (2, 5, 3), (2, 5, 4)))
    with pytest.raises(ValueError, match=r"v: expected as many rows as k \(5 keys\), got shape \(2, 6, 4\)"):
        F.scaled_dot_product_attention(*_qkv((2, 3, 4), (2, 5, 4), (2, 6, 4)))
    with pytest.raises(ValueError, match=r"k: expected leading dimensions that broadcast with q's \(2,\), "
                                         r"got shape \(3, 5, 4\)"):
        F.scaled_dot_product_attention(*_qkv((2, 3, 4), (3, 5, 4), (3, 5, 4)))
    with pytest.raises(ValueError, match=r"q: expected at least 2 dimensions .*got shape \(4,\)"):
        F.scaled_dot_product_attention(*_qkv((4,), (5, 4), (5, 4)))


def test_attention_rejects_a_mask_that_does_not_broadcast_to_the_scores():
    q, k, v = _qkv((2, 3, 4), (2, 5, 4), (2, 5, 4))
    with pytest.raises(ValueError, match=r"mask: expected a shape that broadcasts to the scores \(2, 3, 5\), "
                                         r"got \(3, 3\)"):
        F.scaled_dot_product_attention(q, k, v, np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"mask: .*got \(4, 2, 3, 5\)"):   # would grow the output
        F.scaled_dot_product_attention(q, k, v, np.ones((4, 2, 3, 5), dtype=bool))


@pytest.mark.parametrize("mask_dtype", [np.float32, np.int64])
def test_attention_rejects_a_non_boolean_mask(mask_dtype):
    q, k, v = _qkv((3, 4), (5, 4), (5, 4))
    expected = rf"mask: expected a boolean array \(True = may attend\), got {mask_dtype.__name__}"
    with pytest.raises(TypeError, match=expected):
        F.scaled_dot_product_attention(q, k, v, np.ones((3, 5), dtype=mask_dtype))


def test_cross_entropy_rejects_targets_out_of_range_and_integer_logits():
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"targets: expected class ids in \[0, 4\) or ignore_index=-100, got 4"):
        F.cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"targets: expected class ids in \[0, 4\) .*got -1"):
        F.cross_entropy(logits, np.array([0, -1, 1]))
    with pytest.raises(TypeError, match=r"logits: expected a floating-point array .*got dtype int64"):
        F.cross_entropy(np.zeros((3, 4), dtype=np.int64), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match=r"targets: expected an integer array, got float64"):
        F.cross_entropy(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"targets: expected shape \(3,\) to match logits \(3, 4\), got \(3, 1\)"):
        F.cross_entropy(logits, np.zeros((3, 1), dtype=np.int64))
    with pytest.raises(ValueError, match=r"label_smoothing: expected a value in \[0, 1\), got 1.0"):
        F.cross_entropy(logits, np.array([0, 1, 2]), label_smoothing=1.0)


def test_linear_rejects_integer_x_and_mismatched_shapes():
    W = np.zeros((4, 5))
    with pytest.raises(TypeError, match=r"x: expected a floating-point array .*got dtype int64"):
        F.linear(np.ones((2, 4), dtype=np.int64), W)
    with pytest.raises(ValueError, match=r"x: expected last dimension 4, got shape \(2, 3\)"):
        F.linear(np.ones((2, 3)), W)
    with pytest.raises(ValueError, match=r"b: expected shape \(5,\), got \(4,\)"):
        F.linear(np.ones((2, 4)), W, np.zeros(4))
    with pytest.raises(ValueError, match=r"W: expected a 2-D matrix \(D_in, D_out\), got shape \(4,\)"):
        F.linear(np.ones((2, 4)), np.zeros(4))


def test_embedding_rejects_ids_out_of_vocabulary_and_float_ids():
    E = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"ids: expected token ids in \[0, 5\), got values in \[0, 5\]"):
        F.embedding(np.array([[0, 5]]), E)
    with pytest.raises(ValueError, match=r"ids: expected token ids in \[0, 5\), got values in \[-1, 2\]"):
        F.embedding(np.array([[-1, 2]]), E)
    with pytest.raises(TypeError, match=r"ids: expected an integer array, got float64"):
        F.embedding(np.array([[0.0, 1.0]]), E)


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1])
def test_dropout_rejects_p_outside_zero_one(p):
    with pytest.raises(ValueError, match=rf"p: expected a probability in \[0, 1\), got {p}"):
        F.dropout(np.ones(3), p, np.random.default_rng(0))


def test_dropout_rejects_a_missing_generator():
    with pytest.raises(TypeError, match=r"rng: expected a numpy.random.Generator, got int"):
        F.dropout(np.ones(3), 0.5, 42)


def test_other_bad_inputs_name_the_argument():
    x = np.ones((2, 3, 6))
    with pytest.raises(ValueError, match=r"gamma: expected shape \(6,\), got \(5,\)"):
        F.layernorm(x, np.ones(5), np.zeros(6))
    with pytest.raises(ValueError, match=r"H: expected a number of heads that divides D=6, got H=4"):
        F.split_heads(x, 4)
    with pytest.raises(ValueError, match=r"teacher_logits: expected shape \(2, 3, 6\), got \(2, 3, 5\)"):
        F.distillation_loss(x, np.ones((2, 3, 5)))
    with pytest.raises(ValueError, match=r"temperature: expected a positive number, got 0"):
        F.distillation_loss(x, x, temperature=0)
    with pytest.raises(TypeError, match=r"x: expected a floating-point array .*got dtype int64"):
        F.softmax(np.ones(3, dtype=np.int64))
    with pytest.raises(TypeError, match=r"valid: expected a boolean \(B, T\) mask, got dtype int64"):
        F.padding_mask(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"T, D: expected positive sizes, got T=0, D=4"):
        F.sinusoidal_positional_encoding(0, 4)


def test_cross_entropy_refuses_non_finite_logits():
    """A diverged model gives NaN logits: the loss says so instead of returning NaN."""
    logits = np.array([[0.0, np.nan], [1.0, 2.0]])
    with pytest.raises(ValueError, match="logits: expected finite values"):
        F.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="logits: expected finite values"):
        F.cross_entropy(np.array([[np.inf, 0.0]]), np.array([0]))


# --------------------------------------------------------------------------- #
# Quantization: round trips, error bounds, the int8 product
# --------------------------------------------------------------------------- #

@given(lead=shapes(1, 2, max_side=6), D_out=widths, seed=seeds)
def test_int8_round_trip_error_is_at_most_half_a_step_per_channel(lead, D_out, seed):
    w = np.random.default_rng(seed).normal(size=lead + (D_out,))
    q, s = F.quantize_int8(w)
    assert q.dtype == np.int8 and s.shape == (D_out,)
    assert np.abs(q).max() <= INT8_MAX
    np.testing.assert_array_equal(np.abs(q).max(axis=tuple(range(w.ndim - 1))), INT8_MAX)   # each column uses the range
    err = np.abs(F.dequantize_int8(q, s) - w)
    assert (err <= s / 2 + 1e-12).all()


def test_int8_quantization_rounds_to_nearest_clips_and_keeps_zero_columns():
    w = np.array([[1.27, 0.0], [-0.006, 0.0], [0.004, 0.0]])
    q, s = F.quantize_int8(w)
    np.testing.assert_allclose(s, [0.01, 1.0])                 # a zero column gets scale 1, not 0/0
    np.testing.assert_array_equal(q[:, 0], [127, -1, 0])       # -0.6 rounds to -1 (truncation would give 0)
    q, _ = F.quantize_int8(np.array([[3.0], [-3.0]]), scale=np.array([0.01]))
    np.testing.assert_array_equal(q[:, 0], [127, -127])        # clipped, never wrapped around


def test_fake_quantization_equals_quantize_then_dequantize():
    w = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    w_hat, _ = F.fake_quantize_int8(w)
    np.testing.assert_array_equal(w_hat, F.dequantize_int8(*F.quantize_int8(w)))
    assert w_hat.dtype == np.float32


def test_binarize_has_two_values_per_column_and_the_mean_magnitude_scale():
    w = np.random.default_rng(4).normal(size=(6, 3))
    w_hat, _ = F.binarize(w)
    alpha = np.abs(w).mean(axis=0)
    np.testing.assert_allclose(np.abs(w_hat), np.broadcast_to(alpha, w.shape))
    np.testing.assert_array_equal(np.sign(w_hat), np.where(w >= 0, 1, -1))
    # alpha = mean|w| minimises ||w - a sign(w)||^2 over a: any other a is worse
    for a in (alpha * 0.9, alpha * 1.1):
        assert (((w - a * np.sign(w)) ** 2).sum(0) > ((w - w_hat) ** 2).sum(0)).all()


def test_binarize_backward_passes_the_gradient_only_where_the_weight_is_at_most_one():
    w = np.array([[0.5], [2.0], [-0.25], [-3.0]])
    _, cache = F.binarize(w)
    dw = F.binarize_backward(np.array([[1.0], [1.0], [0.0], [0.0]]), cache)
    alpha, n = np.abs(w).mean(), 4
    sum_term = (1.0 * 1 + 1.0 * 1) / n                          # sum_k dy_k sign(w_k) / n
    np.testing.assert_allclose(dw[:, 0], [alpha + sum_term, sum_term, -sum_term, -sum_term])


@given(B=sizes, D_in=st.integers(1, 40), D_out=widths, seed=seeds)
def test_int8_linear_is_close_to_the_float_product(B, D_in, D_out, seed):
    rng = np.random.default_rng(seed)
    x, W, b = rng.normal(size=(B, D_in)), rng.normal(size=(D_in, D_out)), rng.normal(size=D_out)
    q, s = F.quantize_int8(W)
    y = F.int8_linear(x, q, s, b)
    # each factor is off by at most half a step: |x w - x_hat w_hat| <= sum |x| s_w/2 + |w| s_x/2 + s_x s_w / 4
    s_x = np.abs(x).max() / INT8_MAX
    bound = (np.abs(x) @ np.broadcast_to(s / 2, W.shape) + (s_x / 2) * np.abs(W).sum(0)
             + D_in * s_x * s / 4 + 1e-12)
    assert (np.abs(y - (x @ W + b)) <= bound).all()
    # and it really computes in integers: the same as the float product of the integer values
    x_q = np.rint(x / s_x)
    np.testing.assert_allclose(y, (x_q @ q.astype(np.float64)) * s_x * s + b, rtol=1e-12, atol=1e-12)


def test_quantization_errors_name_the_argument():
    with pytest.raises(TypeError, match="w: expected a floating-point array"):
        F.quantize_int8(np.ones((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="scale: expected last dimension 3"):
        F.quantize_int8(np.ones((2, 3)), scale=np.ones(2))
    with pytest.raises(TypeError, match="q: expected an integer array"):
        F.dequantize_int8(np.ones((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match="gate: expected shape \\(2,\\)"):
        F.head_gate(np.ones((1, 2, 3, 4)), np.ones(3))


# Domain adaptation: gradient reversal and CORAL (seed §2.2)
# --------------------------------------------------------------------------- #

@gradient_case("gradient reversal", "gradient_reversal, gradient_reversal_backward", shape=shapes(1, 3),
               lam=st.floats(0.0, 3.0), seed=seeds)
def gradient_reversal_case(shape, lam, seed):
    x = np.random.default_rng(seed).normal(size=shape)
    # The layer is *defined* by its backward: the numerical gradient of the identity is +1,
    # so the check compares -lam * (numerical gradient of y = x) with the backward.
    return (lambda x: -lam * F.gradient_reversal(x, lam)[0],
            lambda dy, x: {"x": F.gradient_reversal_backward(dy, F.gradient_reversal(x, lam)[1])},
            {"x": x}, None)


@gradient_case("CORAL", "coral_loss, coral_loss_backward", Ns=st.integers(2, 6), Nt=st.integers(2, 6),
               D=widths, seed=seeds)
def coral_case(Ns, Nt, D, seed):
    rng = np.random.default_rng(seed)
    inputs = {"xs": rng.normal(size=(Ns, D)), "xt": rng.normal(scale=1.5, size=(Nt, D)) + 0.3}

    def backward(dloss, xs, xt):
        dxs, dxt = F.coral_loss_backward(dloss, F.coral_loss(xs, xt)[1])
        return {"xs": dxs, "xt": dxt}
    return lambda xs, xt: F.coral_loss(xs, xt)[0], backward, inputs, None


@_given_case("gradient reversal")
def test_gradient_reversal_backward_is_minus_lambda_times_the_identity(**kw):
    assert_gradients_match(*gradient_reversal_case(**kw))


@_given_case("CORAL")
def test_coral_backward_matches_numerical_gradient(**kw):
    assert_gradients_match(*coral_case(**kw))


def test_gradient_reversal_forward_is_the_identity_and_backward_flips_the_sign():
    x = np.arange(6.0).reshape(2, 3)
    y, cache = F.gradient_reversal(x, 0.5)
    np.testing.assert_array_equal(y, x)
    dy = np.ones_like(x)
    dx = F.gradient_reversal_backward(dy, cache)
    np.testing.assert_array_equal(dx, -0.5 * dy)
    assert dx is not dy and (dy == 1).all()          # a new array; dy untouched
    with pytest.raises(ValueError, match="lam"):
        F.gradient_reversal(x, -1.0)


def test_coral_is_zero_for_equal_covariances_and_ignores_a_shift():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(20, 3))
    loss, _ = F.coral_loss(xs, xs + 5.0)             # same covariance, different mean
    assert abs(float(loss)) < 1e-12
    loss, _ = F.coral_loss(xs, 2.0 * xs)             # covariance x4: diff = 3 C_S
    cs = np.cov(xs, rowvar=False)
    np.testing.assert_allclose(float(loss), ((3 * cs) ** 2).sum() / (4 * 9))


def test_coral_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="xs"):
        F.coral_loss(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="xt"):
        F.coral_loss(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(TypeError, match="xt"):
        F.coral_loss(np.zeros((4, 3)), np.zeros((4, 3), dtype=int))

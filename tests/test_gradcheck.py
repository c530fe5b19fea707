"""Tests for numpy_transformer.gradcheck: the checker must be right, and must catch wrong backwards.

A gradient checker that passes everything is worse than none. So besides
checking it against closed forms, we feed it the classic student mistakes
(each a planted bug in an otherwise correct backward) and require that every
one is reported, naming the argument whose gradient is wrong.
"""

import re

import numpy as np
import pytest

from numpy_transformer import functional as F
from numpy_transformer.gradcheck import (
    GradCheckError,
    check_gradients,
    numerical_gradient,
    relative_error,
)


def rng(seed=0):
    return np.random.default_rng(seed)


def verdict_line(message, name):
    """The line of a GradCheckError message that reports input ``name``."""
    match = re.search(rf"^\s*{re.escape(name)} .*$", message, flags=re.M)
    assert match, f"the message does not mention {name!r}:\n{message}"
    return match.group(0)


def assert_reported_wrong(excinfo, wrong, right=()):
    """The error flags exactly the inputs in ``wrong`` (by name, in its message and its results)."""
    err = excinfo.value
    message = str(err)
    for name in wrong:
        assert not err.results[name].ok
        assert verdict_line(message, name).endswith("[WRONG]")
    for name in right:
        assert err.results[name].ok
        assert verdict_line(message, name).endswith("[ok]")


# --------------------------------------------------------------------------- #
# numerical_gradient against closed forms
# --------------------------------------------------------------------------- #

def test_numerical_gradient_of_x_cubed_is_3x_squared():
    x = rng().standard_normal((3, 4))
    dout = rng(1).standard_normal((3, 4))
    numeric = numerical_gradient(lambda x: x ** 3, {"x": x}, dout, "x")
    # The 4-point stencil is exact for a cubic: only rounding is left.
    np.testing.assert_allclose(numeric, 3 * x ** 2 * dout, rtol=1e-9, atol=1e-10)


def test_two_point_difference_has_the_textbook_h_squared_error():
    """For x^3 the central difference is off by exactly h^2 (times dout): f'''/6 * h^2 = h^2."""
    h = 1e-3
    x = rng().standard_normal(5)
    dout = rng(1).standard_normal(5)
    numeric = numerical_gradient(lambda x: x ** 3, {"x": x}, dout, "x", h=h, order=2)
    np.testing.assert_allclose(numeric - 3 * x ** 2 * dout, h ** 2 * dout, rtol=1e-4, atol=1e-12)


def test_numerical_gradient_of_a_matrix_product_is_dout_times_a_transposed():
    x, A = rng().standard_normal((2, 3)), rng(1).standard_normal((3, 4))
    dout = rng(2).standard_normal((2, 4))
    numeric = numerical_gradient(lambda x, A: x @ A, {"x": x, "A": A}, dout, "x")
    np.testing.assert_allclose(numeric, dout @ A.T, rtol=1e-9, atol=1e-12)
    numeric_A = numerical_gradient(lambda x, A: x @ A, {"x": x, "A": A}, dout, "A")
    np.testing.assert_allclose(numeric_A, x.T @ dout, rtol=1e-9, atol=1e-12)


def test_numerical_gradient_leaves_the_input_unchanged():
    x = rng().standard_normal((3, 3))
    before = x.copy()
    numerical_gradient(lambda x: np.tanh(x), {"x": x}, np.ones((3, 3)), "x")
    np.testing.assert_array_equal(x, before)


def test_numerical_gradient_refuses_bad_inputs_with_a_reason():
    with pytest.raises(TypeError, match=r"inputs\['x'\]: .*float64.*got float32"):
        numerical_gradient(np.tanh, {"x": np.ones(3, dtype=np.float32)}, np.ones(3), "x")
    with pytest.raises(TypeError, match=r"inputs\['ids'\]: can only differentiate a float array, got dtype int64"):
        numerical_gradient(lambda ids: ids * 1.0, {"ids": np.arange(3)}, np.ones(3), "ids")
    with pytest.raises(ValueError, match=r"inputs\['x'\]: expected a C-contiguous array"):
        numerical_gradient(np.tanh, {"x": np.ones((3, 4)).T}, np.ones((4, 3)), "x")
    with pytest.raises(ValueError, match=r"order: expected 2 or 4, got 3"):
        numerical_gradient(np.tanh, {"x": np.ones(3)}, np.ones(3), "x", order=3)


def test_relative_error_uses_a_floor_so_zero_gradients_do_not_look_wrong():
    assert relative_error(0.0, 1e-12) == pytest.approx(1e-6)         # 1e-12 / floor 1e-6
    assert relative_error(1.0, 1.0 + 1e-8) == pytest.approx(5e-9, rel=1e-3)
    assert relative_error(1.0, -1.0) == pytest.approx(1.0)            # opposite signs: 100 % wrong


# --------------------------------------------------------------------------- #
# check_gradients: passing, refusing float32, reporting
# --------------------------------------------------------------------------- #

def _linear_inputs(D_in=3, D_out=3, seed=0):
    r = rng(seed)
    return {"x": r.standard_normal((2, 4, D_in)), "W": r.standard_normal((D_in, D_out)), "b": r.standard_normal(D_out)}


def _linear_forward(x, W, b):
    return F.linear(x, W, b)[0]


def _linear_backward(dy, x, W, b):
    dx, dW, db = F.linear_backward(dy, F.linear(x, W, b)[1])
    return {"x": dx, "W": dW, "b": db}


def test_check_gradients_passes_a_correct_backward_with_tiny_errors():
    results = check_gradients(_linear_forward, _linear_backward, _linear_inputs())
    assert set(results) == {"x", "W", "b"}
    assert all(r.ok and r.max_rel_error < 1e-8 for r in results.values())


def test_check_gradients_refuses_float32_and_says_to_use_float64():
    inputs = {k: v.astype(np.float32) for k, v in _linear_inputs().items()}
    with pytest.raises(TypeError, match=r"inputs\['x'\]: gradient checks need float64 .*got float32"):
        check_gradients(_linear_forward, _linear_backward, inputs)


def test_check_gradients_reports_the_worst_element_with_index_analytic_and_numeric():
    inputs = _linear_inputs(D_in=3, D_out=5)

    def off_by_half_at_W_1_3(dy, x, W, b):
        grads = _linear_backward(dy, x, W, b)
        grads["W"] = grads["W"].copy()
        grads["W"][1, 3] += 0.5
        return grads

    true_dW = _linear_backward(np.random.default_rng(7).standard_normal((2, 4, 5)), **inputs)["W"]
    with pytest.raises(GradCheckError) as excinfo:
        check_gradients(_linear_forward, off_by_half_at_W_1_3, inputs, rng=np.random.default_rng(7))
    assert_reported_wrong(excinfo, wrong=["W"], right=["x", "b"])
    worst = excinfo.value.results["W"]
    assert worst.index == (1, 3)
    assert worst.analytic == pytest.approx(true_dW[1, 3] + 0.5, rel=1e-12)
    assert worst.numeric == pytest.approx(true_dW[1, 3], rel=1e-8)
    # The message a student reads: which argument, which element, both values, the tolerance.
    message = str(excinfo.value)
    assert "1 of 3 gradients are wrong (tolerance 1e-05)" in message
    line = verdict_line(message, "W")
    assert "(3, 5)" in line and "at index (1, 3)" in line
    assert f"analytic {worst.analytic:+.6e}" in line and f"numeric {worst.numeric:+.6e}" in line


def test_check_gradients_can_return_results_instead_of_raising():
    def twice_too_large(dy, **inputs):
        return {name: 2 * g for name, g in _linear_backward(dy, **inputs).items()}

    results = check_gradients(_linear_forward, twice_too_large, _linear_inputs(), raise_on_failure=False)
    assert not any(r.ok for r in results.values())
    assert "[WRONG]" in str(results["x"])


def test_check_gradients_needs_a_gradient_for_every_checked_input():
    with pytest.raises(KeyError, match=r"backward: returned no gradient for 'b'"):
        check_gradients(_linear_forward, lambda dy, **kw: {"x": _linear_backward(dy, **kw)["x"],
                                                            "W": _linear_backward(dy, **kw)["W"]}, _linear_inputs())


def test_check_gradients_skips_integer_inputs_by_default():
    inputs = {"ids": np.array([[0, 1, 1]]), "E": rng().standard_normal((3, 2))}
    results = check_gradients(lambda ids, E: F.embedding(ids, E)[0],
                              lambda dy, ids, E: {"E": F.embedding_backward(dy, F.embedding(ids, E)[1])}, inputs)
    assert list(results) == ["E"]


def test_grad_check_error_is_an_assertion_error():
    """So pytest shows it as a failed check, with the full message."""
    assert issubclass(GradCheckError, AssertionError)


# --------------------------------------------------------------------------- #
# Planted bugs: the classic mistakes, each of which the checker must catch
# --------------------------------------------------------------------------- #

def test_catches_softmax_backward_without_the_sum_term():
    def forward(x):
        return F.softmax(x)[0]

    def backward_missing_sum(dy, x):
        y, _ = F.softmax(x)
        return {"x": y * dy}                       # correct: y * (dy - sum(dy * y))

    with pytest.raises(GradCheckError) as excinfo:
        check_gradients(forward, backward_missing_sum, {"x": rng().standard_normal((3, 5))})
    assert_reported_wrong(excinfo, wrong=["x"])


def test_catches_attention_backward_without_the_sqrt_dk_scale():
    r = rng()
    inputs = {"q": r.standard_normal((2, 3, 4)), "k": r.standard_normal((2, 5, 4)), "v": r.standard_normal((2, 5, 3))}

    def forward(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)[0]

    def backward_without_scale(dout, q, k, v):
        q_, k_, v_, weights, scale = F.scaled_dot_product_attention(q, k, v)[2]
        dq, dk, dv = F.scaled_dot_product_attention_backward(dout, (q_, k_, v_, weights, 1.0))
        return {"q": dq, "k": dk, "v": dv}

    with pytest.raises(GradCheckError) as excinfo:
        check_gradients(forward, backward_without_scale, inputs)
    # The scale sits between the scores and q, k: dv does not see it.
    assert_reported_wrong(excinfo, wrong=["q", "k"], right=["v"])


def test_catches_linear_backward_with_dW_transposed_for_a_square_W():
    """Inputs drawn with seed 0 on purpose: the default dout must not be drawn with seed 0 as well,
    or dout == x, dW = x^T x is symmetric and its transpose looks right."""
    def backward_dW_transposed(dy, x, W, b):
        grads = _linear_backward(dy, x, W, b)
        grads["W"] = grads["W"].T                  # dy^T x instead of x^T dy
        return grads

    with pytest.raises(GradCheckError) as excinfo:
        check_gradients(_linear_forward, backward_dW_transposed, _linear_inputs(D_in=4, D_out=4))
    assert_reported_wrong(excinfo, wrong=["W"], right=["x", "b"])


def test_reports_a_transposed_dW_of_the_wrong_shape_clearly():
    def backward_dW_transposed(dy, x, W, b):
        grads = _linear_backward(dy, x, W, b)
        grads["W"] = grads["W"].T
        return grads

    with pytest.raises(ValueError, match=r"backward: the gradient for 'W' has shape \(5, 3\), but the input has "
                                         r"shape \(3, 5\); a gradient always has its input's shape"):
        check_gradients(_linear_forward, backward_dW_transposed, _linear_inputs(D_in=3, D_out=5))


@pytest.mark.parametrize("missing", ["mean(dxhat)", "xhat * mean(dxhat * xhat)", "both"])
def test_catches_layernorm_backward_missing_the_mean_terms(missing):
    r = rng()
    inputs = {"x": r.standard_normal((2, 3, 6)), "gamma": r.standard_normal(6), "beta": r.standard_normal(6)}

    def forward(x, gamma, beta):
        return F.layernorm(x, gamma, beta)[0]

    def backward_missing_terms(dy, x, gamma, beta):
        y, (xhat, rstd, gamma_) = F.layernorm(x, gamma, beta)
        _, dgamma, dbeta = F.layernorm_backward(dy, (xhat, rstd, gamma_))
        dxhat = dy * gamma
        dx = dxhat.copy()
        if missing != "mean(dxhat)" and missing != "both":
            dx -= dxhat.mean(axis=-1, keepdims=True)
        if missing != "xhat * mean(dxhat * xhat)" and missing != "both":
            dx -= xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
        return {"x": rstd * dx, "gamma": dgamma, "beta": dbeta}

    with pytest.raises(GradCheckError) as excinfo:
        check_gradients(forward, backward_missing_terms, inputs)
    assert_reported_wrong(excinfo, wrong=["x"], right=["gamma", "beta"])


def test_catches_embedding_backward_that_overwrites_repeated_ids():
    inputs = {"ids": np.array([[0, 2, 2], [1, 2, 0]]), "E": rng().standard_normal((4, 3))}

    def forward(ids, E):
        return F.embedding(ids, E)[0]

    def backward_overwriting(dy, ids, E):
        dE = np.zeros_like(E)
        dE[ids] = dy                               # the last occurrence wins; correct: np.add.at
        return {"E": dE}

    with pytest.raises(GradCheckError) as excinfo:
        check_gradients(forward, backward_overwriting, inputs)
    assert_reported_wrong(excinfo, wrong=["E"])
    assert excinfo.value.results["E"].index[0] in (0, 2)  # a repeated id is where it goes wrong

"""Tests for numpy_transformer.exercises and the exercise notebooks.

A check is only useful if it is right both ways, so for every exercise:

1. the reference solution passes, and so do correct answers written differently;
2. every known mistake is rejected *and named* (key and plain words), also when
   the student writes it in their own way;
3. the classic failures are reported in words, never raised: not implemented,
   an exception inside the student's code, a wrong shape, None, NaN, an input
   modified in place, an unrecognised wrong value (with its index);
4. the notebooks are what notebooks/_build/build_exercises.py writes, have no
   outputs, and run top to bottom both as the students get them ("not
   implemented yet" everywhere) and with NT_SOLUTIONS=1 (every check passes).
   The kernel-based runs are `pytest --nbmake notebooks/exercises`, with and
   without NT_SOLUTIONS=1; here the cells run in-process, which is fast.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from numpy_transformer import exercises as E
from numpy_transformer import functional as F

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks" / "exercises"
BUILD_SCRIPT = ROOT / "notebooks" / "_build" / "build_exercises.py"

NAMES = sorted(E._EXERCISES)
MISTAKES = [(name, m) for name in NAMES for m in E._EXERCISES[name].mistakes]


def check(name, fn):
    return getattr(E, f"check_{name}")(fn, verbose=False)


@pytest.fixture(autouse=True)
def no_solutions(monkeypatch):
    """Every test starts without NT_SOLUTIONS, whatever the shell running pytest has set."""
    monkeypatch.delenv(E.SOLUTIONS_ENV, raising=False)


# --------------------------------------------------------------------------- #
# 1. Right answers pass
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("name", NAMES)
def test_each_check_accepts_the_reference_solution(name):
    result = check(name, getattr(E.solutions, name))
    assert result.ok, result.message
    assert result.kind == "correct" and result.mistakes == ()
    assert result.message.startswith("✓ Correct")
    assert ("worst relative error" if name.endswith("_backward") else "largest difference") in result.message


def _softmax_backward_by_jacobian(dy, y):
    jacobian = np.einsum("...i,ij->...ij", y, np.eye(y.shape[-1])) - y[..., :, None] * y[..., None, :]
    return np.einsum("...i,...ij->...j", dy, jacobian)


def _layernorm_backward_long_form(dy, xhat, rstd, gamma):
    """The cs231n derivation, through dvar and dmean, with x recovered as xhat (mean 0, std 1/rstd)."""
    D = xhat.shape[-1]
    xc = xhat / rstd
    dxhat = dy * gamma
    dvar = (dxhat * xc).sum(axis=-1, keepdims=True) * -0.5 * rstd ** 3
    dmean = -(dxhat * rstd).sum(axis=-1, keepdims=True) - 2 * dvar * xc.mean(axis=-1, keepdims=True)
    dx = dxhat * rstd + dvar * 2 * xc / D + dmean / D
    return dx, (dy * xhat).sum(axis=tuple(range(dy.ndim - 1))), dy.sum(axis=tuple(range(dy.ndim - 1)))


def _layernorm_forward_flat_rstd(x, gamma, beta, eps=1e-5):
    y, xhat, rstd = E.solutions.layernorm_forward(x, gamma, beta, eps)
    return y, xhat, rstd[..., 0]


def _cross_entropy_via_log_softmax(logits, targets):
    logp, cache = F.log_softmax(logits)
    dlogp = np.zeros_like(logits)
    dlogp[np.arange(len(targets)), targets] = -1.0 / len(targets)
    return F.log_softmax_backward(dlogp, cache)


@pytest.mark.parametrize("name, fn", [
    ("softmax_backward", _softmax_backward_by_jacobian),
    ("layernorm_backward", _layernorm_backward_long_form),
    ("layernorm_forward", _layernorm_forward_flat_rstd),          # rstd (...,) instead of (..., 1) is fine
    ("cross_entropy_backward", _cross_entropy_via_log_softmax),
    ("positional_encoding", lambda T, D: F.sinusoidal_positional_encoding(T, D)),   # float32 is fine
    ("attention_forward", lambda q, k, v, mask=None: F.scaled_dot_product_attention(q, k, v, mask)[:2]),
    ("attention_backward", lambda dout, q, k, v, weights: F.scaled_dot_product_attention_backward(
        dout, (q, k, v, weights, 1 / np.sqrt(q.shape[-1])))),
    ("linear_backward", lambda dy, x, W: F.linear_backward(dy, (x, W, True))),
    ("coral_backward", lambda xs, xt: F.coral_loss_backward(1.0, F.coral_loss(xs, xt)[1])),
], ids=lambda v: v if isinstance(v, str) else "")
def test_correct_answers_written_differently_also_pass(name, fn):
    result = check(name, fn)
    assert result.ok, result.message


# --------------------------------------------------------------------------- #
# 2. Known mistakes are rejected and named
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("name, mistake", MISTAKES, ids=[f"{n}-{m.key}" for n, m in MISTAKES])
def test_each_check_rejects_each_known_mistake_and_names_it(name, mistake):
    result = check(name, mistake.fn)
    assert not result.ok
    assert result.kind == "mistake", result.message
    assert result.mistake == mistake.key, result.message
    assert f"Looks like you {mistake.says}." in result.message
    assert f"Hint: {mistake.hint}" in result.message


# The mistakes the issue asks for by name, and words their message must contain.
REQUIRED = [
    ("softmax_backward", "forgot_sum_term", "forgot the −Σ term"),
    ("softmax_backward", "wrong_axis", "wrong axis"),
    ("attention_forward", "forgot_scale", "1/√d_k"),
    ("attention_forward", "softmax_wrong_axis", "softmax over the wrong axis"),
    ("attention_backward", "forgot_scale", "forgot the 1/√d_k"),
    ("attention_backward", "forgot_sum_term", "−Σ"),
    ("linear_backward", "transposed_dW", "transposed dW"),
    ("layernorm_forward", "std_plus_eps", "std + eps instead of sqrt(var + eps)"),
    ("layernorm_backward", "no_mean_terms", "mean terms"),
    ("cross_entropy_backward", "forgot_divide_by_N", "forgot to divide by N"),
    ("cross_entropy_backward", "sign_flipped", "(y − p)"),
    ("positional_encoding", "sin_cos_swapped", "swapped sin and cos"),
    ("positional_encoding", "i_not_2i", "i instead of 2i"),
    ("positional_encoding", "seed_sin_plus_cos", "errata E1"),
    ("coral_backward", "forgot_4d2", "1/(4D²)"),
    ("coral_backward", "forgot_n_minus_1", "1/(n − 1)"),
    ("coral_backward", "no_centering", "without centring"),
    ("coral_backward", "one_domain", "source only"),
]


@pytest.mark.parametrize("name, key, words", REQUIRED, ids=[f"{n}-{k}" for n, k, _ in REQUIRED])
def test_the_mistakes_the_issue_names_are_recognised_in_those_words(name, key, words):
    mistake = next(m for m in E._EXERCISES[name].mistakes if m.key == key)
    result = check(name, mistake.fn)
    assert result.mistake == key and words in result.message, result.message


def _attention_without_scale(q, k, v, mask=None):
    scores = np.matmul(q, np.swapaxes(k, -1, -2))
    if mask is not None:
        scores = np.where(mask, scores, -1e9)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    if mask is not None:
        w = w * mask.any(-1, keepdims=True)
    return w @ v, w


def _layernorm_with_np_std(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=-1, keepdims=True)
    sigma = np.std(x, axis=-1, keepdims=True)
    xhat = (x - mu) / (sigma + eps)
    return gamma * xhat + beta, xhat, 1 / (sigma + eps)


def _pe_seed_style(T, D):
    pe = np.empty((T, D))
    for pos in range(T):
        for j in range(D):
            theta = pos / 10000 ** (2 * (j // 2) / D)
            pe[pos, j] = np.sin(theta) + np.cos(theta)
    return pe


@pytest.mark.parametrize("name, fn, key", [
    ("softmax_backward", lambda dy, y: dy * y, "forgot_sum_term"),
    ("linear_backward", lambda dy, x, W: (dy @ W.T, dy.T @ x, dy.sum(axis=0)), "transposed_dW"),
    ("linear_backward", lambda dy, x, W: (dy @ W.T, x.T @ dy, dy), "unsummed_db"),
    ("attention_forward", _attention_without_scale, "forgot_scale"),
    ("layernorm_forward", _layernorm_with_np_std, "std_plus_eps"),
    ("cross_entropy_backward", lambda z, t: E.solutions.cross_entropy_backward(z, t) * len(t), "forgot_divide_by_N"),
    ("positional_encoding", _pe_seed_style, "seed_sin_plus_cos"),
    ("positional_encoding", lambda T, D: E.solutions.positional_encoding(T, D).T.astype(np.float32), "transposed_PE"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_mistakes_are_recognised_by_value_however_they_are_written(name, fn, key):
    result = check(name, fn)
    assert result.kind == "mistake" and result.mistake == key, result.message


def test_each_mistake_of_an_exercise_is_told_apart_from_the_others():
    for name in NAMES:
        keys = [m.key for m in E._EXERCISES[name].mistakes]
        assert len(keys) == len(set(keys)), name
        assert {check(name, m.fn).mistake for m in E._EXERCISES[name].mistakes} == set(keys), name


def test_a_mistake_in_one_output_says_which_outputs_are_already_right():
    result = check("attention_backward", lambda dout, q, k, v, w: E._mistake_attention_backward_no_scale(
        dout, q, k, v, w))
    assert "In dq and dk" in result.message and "dv is already right" in result.message


# --------------------------------------------------------------------------- #
# 3. Failures are reported in words, never raised
# --------------------------------------------------------------------------- #

def _not_implemented(*args, **kwargs):
    raise NotImplementedError


def _raises(*args, **kwargs):
    raise ZeroDivisionError("my own bug on line 3")


@pytest.mark.parametrize("name", NAMES)
def test_a_not_implemented_stub_is_reported_as_such(name):
    result = check(name, _not_implemented)
    assert not result.ok and result.kind == "not_implemented"
    assert result.message.startswith("○ Not implemented yet") and name in result.message


@pytest.mark.parametrize("name", NAMES)
def test_an_exception_in_the_students_code_is_reported_with_its_text_not_raised(name, capsys):
    result = getattr(E, f"check_{name}")(_raises)
    printed = capsys.readouterr().out
    assert not result.ok and result.kind == "error"
    assert "ZeroDivisionError: my own bug on line 3" in result.message
    assert "raise ZeroDivisionError" in result.message           # the student's line that raised
    assert printed.strip() == result.message and "Traceback" not in printed


def test_a_numpy_error_gets_a_hint_about_its_cause():
    result = check("softmax_backward", lambda dy, y: y * (dy - (dy * y).sum(axis=-1)))   # no keepdims
    assert result.kind == "error" and "could not be broadcast" in result.message and "keepdims=True" in result.message
    result = check("attention_forward", lambda q, k, v, mask=None: E.solutions.attention_forward(q, k.T, v, mask))
    assert result.kind == "error" and ".swapaxes(-1, -2)" in result.message


@pytest.mark.parametrize("name, fn, words", [
    ("softmax_backward", lambda dy, y: (dy * y)[..., :-1], "dx has shape (3, 4), but it should have shape (3, 5)"),
    ("layernorm_backward", lambda dy, xhat, rstd, gamma: (dy, dy.sum(), dy.sum(0)),
     "dgamma has shape (), but it should have shape (6,)"),
    ("positional_encoding", lambda T, D: np.zeros((T, D + 1)), "PE has shape (6, 9), but it should have shape (6, 8)"),
    ("attention_backward", lambda dout, q, k, v, w: (q, k, v[..., :1]),
     "dv has shape (3, 1), but it should have shape (3, 4)"),
], ids=["softmax", "layernorm", "pe", "attention"])
def test_a_wrong_shape_is_reported_as_a_shape_problem(name, fn, words):
    result = check(name, fn)
    assert not result.ok and result.kind == "shape"
    assert words in result.message, result.message


@pytest.mark.parametrize("returned, words", [
    (None, "returned None"),
    ((np.zeros((3, 4)), np.zeros((3, 3))), "should return 3 arrays, (dx, dW, db)"),
    ((np.zeros((5, 3)), None, np.zeros(4)), "returned None for dW"),
    ((np.zeros((5, 3)), np.zeros((3, 4)), np.array(["a"] * 4)), "array of real numbers"),
])
def test_a_malformed_return_value_is_explained(returned, words):
    result = check("linear_backward", lambda dy, x, W: returned)
    assert result.kind == "bad_return" and words in result.message, result.message


def test_an_input_modified_in_place_is_reported():
    def softmax_backward(dy, y):
        dy *= y
        return dy - y * dy.sum(axis=-1, keepdims=True)
    result = check("softmax_backward", softmax_backward)
    assert result.kind == "modified_input" and "changed its input dy in place" in result.message


def test_nan_is_reported_with_its_index_and_the_cases_hint():
    def cross_entropy_backward(logits, targets):
        return np.where(np.abs(logits) > 100, np.inf, E.solutions.cross_entropy_backward(logits, targets))
    result = check("cross_entropy_backward", cross_entropy_backward)
    assert result.kind == "not_finite" and "NaN or inf, first at index (0, 0)" in result.message, result.message
    assert "Subtract each row's maximum" in result.message

    def attention_forward(q, k, v, mask=None):
        out, weights = E.solutions.attention_forward(q, k, v, mask)
        if mask is not None and not mask.any(axis=-1).all():     # the case with empty rows
            out[0, 1, 2] = np.nan
        return out, weights
    result = check("attention_forward", attention_forward)
    assert result.kind == "not_finite" and "out contains NaN or inf, first at index (0, 1, 2)" in result.message
    assert "-inf - (-inf) = NaN" in result.message                          # the case's own hint


def test_an_unrecognised_wrong_gradient_reports_the_worst_element_against_the_numerical_one():
    def linear_backward(dy, x, W):
        dx, dW, db = E.solutions.linear_backward(dy, x, W)
        dW = dW.copy()
        dW[2, 1] += 0.5
        return dx, dW, db
    result = check("linear_backward", linear_backward)
    assert result.kind == "wrong_value" and result.mistakes == ()
    assert "dW is wrong" in result.message and "at index (2, 1) the numerical gradient is" in result.message
    assert "dx and db are already right" in result.message


def test_an_unrecognised_wrong_forward_value_reports_the_worst_element_against_the_reference():
    def positional_encoding(T, D):
        pe = E.solutions.positional_encoding(T, D)
        pe[4, 5] = 7.0
        return pe
    result = check("positional_encoding", positional_encoding)
    assert result.kind == "wrong_value"
    assert "at index (4, 5) the right value is" in result.message and "+7" in result.message


def test_a_constant_factor_is_named_as_such():
    result = check("softmax_backward", lambda dy, y: 3.0 * E.solutions.softmax_backward(dy, y))
    assert result.kind == "wrong_value" and "3 times the right value" in result.message


def test_passing_the_result_instead_of_the_function_is_explained():
    result = check("positional_encoding", E.solutions.positional_encoding(6, 8))
    assert result.kind == "not_callable" and "Pass the function itself" in result.message


def test_checks_print_their_verdict_once(capsys):
    result = E.check_softmax_backward(E.solutions.softmax_backward)
    assert capsys.readouterr().out == result.message + "\n"
    E.check_softmax_backward(E.solutions.softmax_backward, verbose=False)
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- #
# NT_SOLUTIONS
# --------------------------------------------------------------------------- #

def test_use_solution_if_requested_swaps_in_the_reference_only_under_nt_solutions(monkeypatch, capsys):
    def softmax_backward(dy, y):
        raise NotImplementedError
    assert E.use_solution_if_requested(softmax_backward) is softmax_backward
    monkeypatch.setenv(E.SOLUTIONS_ENV, "1")
    assert E.use_solution_if_requested(softmax_backward) is E.solutions.softmax_backward
    assert "reference solution" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no reference solution called 'softmax_forward'"):
        E.use_solution_if_requested(lambda: None, name="softmax_forward")


def test_assert_if_solutions_asserts_only_under_nt_solutions(monkeypatch):
    failed = check("softmax_backward", _not_implemented)
    passed = check("softmax_backward", E.solutions.softmax_backward)
    E.assert_if_solutions(failed)                 # a student's notebook runs on
    monkeypatch.setenv(E.SOLUTIONS_ENV, "1")
    E.assert_if_solutions(passed)
    with pytest.raises(AssertionError, match="Not implemented yet"):
        E.assert_if_solutions(failed)


def test_show_solution_prints_the_solutions_source(capsys):
    E.show_solution("softmax_backward")
    printed = capsys.readouterr().out
    assert printed.startswith("def softmax_backward(dy, y):") and "keepdims=True" in printed


# --------------------------------------------------------------------------- #
# 4. The notebooks
# --------------------------------------------------------------------------- #

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("ex*.ipynb"))


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_exercises", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == "code"]


def test_the_notebooks_are_what_the_build_script_writes_and_have_no_outputs(capsys):
    build = _load_build_script()
    assert build.main(["--check"]) == 0, capsys.readouterr().err
    assert [p.stem for p in NOTEBOOKS] == sorted(build.NOTEBOOKS)
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            assert cell.get("outputs", []) == [] and cell.get("execution_count") is None, path.name


def test_every_exercise_has_a_stub_a_solution_switch_and_a_guarded_check_in_some_notebook():
    sources = "\n".join(src for path in NOTEBOOKS for src in _code_cells(path))
    for name in NAMES:
        assert f"def {name}(" in sources
        assert f"{name} = exercises.use_solution_if_requested({name})" in sources
        assert f"result = exercises.check_{name}({name})\nexercises.assert_if_solutions(result)" in sources
    for path in NOTEBOOKS:
        stubs = [src for src in _code_cells(path) if "# YOUR CODE HERE" in src]
        assert stubs and all("raise NotImplementedError" in src for src in stubs), path.name


def _run_cells(path):
    namespace = {"__name__": "__main__"}
    for n, source in enumerate(_code_cells(path)):
        exec(compile(source, f"{path.name}[{n}]", "exec"), namespace)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_students_notebook_runs_to_the_end_saying_not_implemented_yet(path, capsys):
    _run_cells(path)
    printed = capsys.readouterr().out
    n_checks = sum(src.count("exercises.check_") for src in _code_cells(path))
    assert n_checks >= 1 and printed.count("○ Not implemented yet") == n_checks, printed
    assert "✓" not in printed and "✗" not in printed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_with_nt_solutions_every_check_in_the_notebook_passes(path, capsys, monkeypatch):
    monkeypatch.setenv(E.SOLUTIONS_ENV, "1")
    _run_cells(path)
    printed = capsys.readouterr().out
    n_checks = sum(src.count("exercises.check_") for src in _code_cells(path))
    assert printed.count("✓ Correct") == n_checks and "✗" not in printed, printed


# --------------------------------------------------------------------------- #
# ex6: top-p (nucleus) filtering — each named mistake is recognised, written the way a student would
# --------------------------------------------------------------------------- #

def _top_p_written_by_a_student(sort=True, keep="before<p", renormalise=True, back_in_place=True):
    def top_p_filter(probs, p):
        out = np.zeros_like(probs)
        for row_in, row_out in zip(np.atleast_2d(probs), np.atleast_2d(out)):
            order = np.argsort(-row_in, kind="stable") if sort else np.arange(len(row_in))
            total, chosen = 0.0, []
            for j in order:
                if keep == "before<p" and total >= p:
                    break
                if keep == "cum<=p" and total + row_in[j] > p:
                    break
                if keep == "before<=p" and total > p:
                    break
                chosen.append(j)
                total += row_in[j]
            vals = row_in[chosen] / (row_in[chosen].sum() if renormalise else 1.0)
            if back_in_place:
                row_out[chosen] = vals
            else:
                row_out[:len(chosen)] = vals
        return out.reshape(probs.shape)
    return top_p_filter


def _top_p_one_extra_loop(probs, p):
    out = np.zeros_like(probs)
    for row_in, row_out in zip(np.atleast_2d(probs), np.atleast_2d(out)):
        order = np.argsort(-row_in, kind="stable")
        n = int(np.searchsorted(np.cumsum(row_in[order]), p)) + 2      # one past the token that crosses p
        chosen = order[:n]
        row_out[chosen] = row_in[chosen] / row_in[chosen].sum()
    return out.reshape(probs.shape)


@pytest.mark.parametrize("fn, key", [
    (_top_p_written_by_a_student(sort=False), "not_sorted"),
    (_top_p_written_by_a_student(keep="cum<=p"), "crossing_token_dropped"),
    (_top_p_written_by_a_student(renormalise=False), "not_renormalised"),
    (_top_p_one_extra_loop, "one_extra"),
    (_top_p_written_by_a_student(keep="before<=p"), "boundary_le"),
    (_top_p_written_by_a_student(back_in_place=False), "sorted_order"),
], ids=["not_sorted", "crossing_token_dropped", "not_renormalised", "one_extra", "boundary_le", "sorted_order"])
def test_top_p_mistakes_are_recognised(fn, key):
    result = check("top_p_filter", fn)
    assert not result.ok and result.mistake == key, result.message


def test_top_p_reference_matches_the_generation_module():
    from numpy_transformer.generation import top_p_filter
    assert check("top_p_filter", E.solutions.top_p_filter).ok
    assert check("top_p_filter", top_p_filter).ok
    assert check("top_p_filter", _top_p_written_by_a_student()).ok        # a plain loop is fine too

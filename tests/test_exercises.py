"""Tests for numpy_transformer.exercises and the exercise notebooks.

A check is only useful if it is right both ways, so for every exercise:

1. the reference solution passes, and so do correct answers written differently;
2. every known mistake is rejected *and named* (key and plain words), also when
   the student writes it in their own way;
3. the classic failures are reported in words, never raised: not implemented,
   an exception inside the student's code, a wrong shape, None, NaN, an input
   modified in place, an unrecognised wrong value (with its index);
4. partial credit: the solution scores every point, a stub none, a known
   mistake something in between;
5. the notebooks: every exercise has an nbgrader solution cell and a graded
   check cell worth the checker's points; the teacher's notebooks (the committed
   source) pass every check with full points, and the students' version (the
   solutions cleared as `nbgrader generate_assignment` does) runs to the end
   saying "not implemented yet" with zero points. Here the cells run
   in-process, which is fast; nbmake runs the teacher's notebooks in a kernel
   and tests/test_nbgrader.py runs nbgrader itself.
"""

from pathlib import Path

import nbformat
import numpy as np
import pytest

from numpy_transformer import exercises as E
from numpy_transformer import functional as F

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks" / "exercises"

NAMES = sorted(E._EXERCISES)
MISTAKES = [(name, m) for name in NAMES for m in E._EXERCISES[name].mistakes]


def check(name, fn):
    return getattr(E, f"check_{name}")(fn, verbose=False)


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


def _prototypes_with_zeroshot(support_x, support_y, query_x, query_y):
    """The library's own functions (numpy_transformer/zeroshot.py) must agree with the reference."""
    from numpy_transformer import zeroshot as Z
    C = int(support_y.max()) + 1
    d = Z.prototype_distances(query_x, Z.class_prototypes(support_x, support_y, C), "cosine")
    return d, d.argmin(1), float((d.argmin(1) == query_y).mean())


def _prototypes_by_similarity(support_x, support_y, query_x, query_y):
    """np.unique for the classes, a similarity's argmax, a Python list for pred."""
    classes = np.unique(support_y)
    protos = np.array([np.mean(support_x[support_y == c], axis=0) for c in classes])
    sim = np.einsum("nd,cd->nc", query_x, protos) / np.outer(np.linalg.norm(query_x, axis=1),
                                                            np.linalg.norm(protos, axis=1))
    pred = [int(i) for i in sim.argmax(axis=1)]
    return 1 - sim, pred, np.mean(np.array(pred) == query_y)


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
    ("quantize_int8", lambda w, scale=None: F.quantize_int8(w, scale)),
    ("quantize_int8", lambda w, scale=None: E.solutions.quantize_int8(w.astype(np.float32), scale)),   # q as int8
    ("dequantize_int8", lambda q, scale: np.einsum("ij,j->ij", q, scale)),
    ("prototype_classify", _prototypes_with_zeroshot),
    ("prototype_classify", _prototypes_by_similarity),
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
    ("quantize_int8", "per_tensor_scale", "one scale for the whole matrix"),
    ("quantize_int8", "divided_by_128", "divided the maximum by 128"),
    ("quantize_int8", "divided_by_255", "divided the maximum by 255"),
    ("quantize_int8", "truncated", "truncation"),
    ("quantize_int8", "no_clipping", "did not clip to [-127, 127]"),
    ("dequantize_int8", "forgot_scale", "forgot the scale"),
    ("prototype_classify", "no_normalisation", "without normalising"),
    ("prototype_classify", "argmax_distance", "argmax of the distances"),
    ("prototype_classify", "prototypes_from_queries", "from the query (test) examples"),
    ("prototype_classify", "class_order", "order in which the classes first appear"),
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


def _prototypes_farthest(support_x, support_y, query_x, query_y):
    d, _, _ = E.solutions.prototype_classify(support_x, support_y, query_x, query_y)
    pred = np.array([int(np.argmax(row)) for row in d])
    return d, pred, (pred == query_y).sum() / len(query_y)


def _prototypes_from_the_test_texts(support_x, support_y, query_x, query_y):
    return E.solutions.prototype_classify(query_x, query_y, query_x, query_y)


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
    ("quantize_int8", lambda w, scale=None: ((w / (np.abs(w).max() / 127)).astype(np.int8),
                                             np.abs(w).max() / 127) if scale is None else F.quantize_int8(w, scale),
     "per_tensor_scale"),
    ("quantize_int8", lambda w, scale=None: (np.round(w / (np.abs(w).max(0) / 127 if scale is None else scale)),
                                             np.abs(w).max(0) / 127 if scale is None else scale), "no_clipping_no_cast"),
    ("dequantize_int8", lambda q, scale: q * 1.0, "forgot_scale"),
    ("prototype_classify", _prototypes_farthest, "argmax_distance"),
    ("prototype_classify", _prototypes_from_the_test_texts,
     "prototypes_from_queries"),
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
# Partial credit: a point per check (per case, one for running with the right shapes, one per right output)
# --------------------------------------------------------------------------- #

def _max_points(name):
    ex = E._EXERCISES[name]
    return len(ex.cases()) * (1 + len(ex.outputs))


@pytest.mark.parametrize("name", NAMES)
def test_the_solution_scores_every_point_and_a_stub_none(name):
    right = check(name, getattr(E.solutions, name))
    stub = check(name, _not_implemented)
    assert (right.points, right.max_points) == (_max_points(name), _max_points(name))
    assert (stub.points, stub.max_points) == (0, _max_points(name))
    assert f"Score: {_max_points(name)} of {_max_points(name)} points" in right.message


@pytest.mark.parametrize("name,mistake", MISTAKES, ids=lambda v: getattr(v, "key", v))
def test_a_known_mistake_scores_less_than_the_solution_and_more_than_a_stub_when_its_shapes_are_right(name, mistake):
    result = check(name, mistake.fn)
    assert 0 <= result.points < result.max_points
    assert f"Score: {result.points} of {result.max_points} points" in result.message
    cases = E._EXERCISES[name].cases()

    def shapes(case):
        try:
            out = E._quietly(mistake.fn, *case.args)
        except Exception:
            return None
        return [np.shape(o) for o in (out if isinstance(out, tuple) else (out,))]
    if all(shapes(case) == [e.shape for e in case.expected] for case in cases):
        assert result.points >= len(cases), result.message     # at least the "runs, right shapes" points


def test_a_right_output_beside_a_wrong_one_earns_its_point():
    # The transposed dW of linear_backward: on the square-W case dx and db are right, dW wrong.
    result = check("linear_backward", E._mistake_linear_transposed_dW)
    assert result.mistake == "transposed_dW"
    # case 1 (W 3x4): dW has the wrong shape: dx, db right -> 2; case 2 (square W): shapes right, dx, db -> 3;
    # case 3 (batched, W 3x4): dx, db right -> 2.
    assert (result.points, result.max_points) == (7, 12)


def test_show_solution_prints_the_solutions_source(capsys):
    E.show_solution("softmax_backward")
    printed = capsys.readouterr().out
    assert printed.startswith("def softmax_backward(dy, y):") and "keepdims=True" in printed


# --------------------------------------------------------------------------- #
# 4. The notebooks: the teacher's source (solutions between nbgrader's markers) and the students' version
# --------------------------------------------------------------------------- #

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("ex*.ipynb"))


def _notebook(path, students_version=False):
    nb = nbformat.read(path, as_version=4)
    if students_version:
        from nbgrader.preprocessors import ClearSolutions   # what `nbgrader generate_assignment` does to them
        nb, _ = ClearSolutions().preprocess(nb, {})
    return nb


def _code_cells(nb):
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _graded(nb, kind):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get(kind)]


def test_every_exercise_has_a_solution_cell_and_a_graded_check_cell_worth_its_checkers_points():
    assert [p.stem for p in NOTEBOOKS] == sorted(p.stem for p in NOTEBOOK_DIR.glob("ex*.py"))
    seen = set()
    for path in NOTEBOOKS:
        nb = _notebook(path)
        solutions, checks = _graded(nb, "solution"), _graded(nb, "grade")
        assert solutions and len(solutions) == len(checks), path.name
        for cell in solutions:
            name = cell.metadata.nbgrader["grade_id"]
            assert f"def {name}(" in cell.source and "### BEGIN SOLUTION" in cell.source, path.name
            assert "### END SOLUTION" in cell.source and not cell.metadata.nbgrader["grade"]
        for cell in checks:
            meta = cell.metadata.nbgrader
            name = meta["grade_id"].removeprefix("check_")
            assert cell.cell_type == "code" and meta["locked"] and not meta["solution"]
            assert cell.source == (f"result = exercises.check_{name}({name})\n"
                                   f"result.points      # your score, out of {_max_points(name)}: the number "
                                   "nbgrader reads")
            assert meta["points"] == _max_points(name), (path.name, name)
            seen.add(name)
    assert seen == set(NAMES)


def _run_cells(nb, name):
    namespace = {"__name__": "__main__"}
    scores = []
    for n, source in enumerate(_code_cells(nb)):
        exec(compile(source, f"{name}[{n}]", "exec"), namespace)
        if source.splitlines()[-1].startswith("result.points"):
            scores.append((namespace["result"].points, namespace["result"].max_points))
    return scores


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_teachers_notebook_passes_every_check_with_full_points(path, capsys):
    scores = _run_cells(_notebook(path), path.name)
    printed = capsys.readouterr().out
    assert scores and all(points == top > 0 for points, top in scores), printed
    assert printed.count("✓ Correct") == len(scores) and "✗" not in printed, printed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_students_notebook_runs_to_the_end_saying_not_implemented_yet_with_zero_points(path, capsys):
    nb = _notebook(path, students_version=True)
    assert "BEGIN SOLUTION" not in "".join(_code_cells(nb))
    scores = _run_cells(nb, path.name)
    printed = capsys.readouterr().out
    assert scores and all(points == 0 for points, _ in scores)
    assert printed.count("○ Not implemented yet") == len(scores), printed
    assert "✓" not in printed and "✗" not in printed


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

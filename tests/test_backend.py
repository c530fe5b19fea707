"""Tests for numpy_transformer.backend, and for running the formulas on "device" arrays.

Three layers:

1. The backend on a machine without a GPU: clear errors, no CuPy import.
2. ``tests/strict_backend.py``, a CPU stand-in for CuPy whose arrays refuse to
   be mixed with host NumPy arrays, first tested on its own, then used to run
   every forward and backward of ``functional.py``: a line that would break on
   a GPU (``np.`` where ``xp.`` was meant) fails here, on any laptop.
3. The same cases on real CuPy (``@pytest.mark.gpu``), against NumPy in
   float32; skipped, with the reason, where there is no usable GPU.
"""

import importlib.util
import inspect
import subprocess
import sys

import numpy as np
import pytest

from numpy_transformer import functional as F
from numpy_transformer import fast
from numpy_transformer.local_attention import local_attention, local_attention_backward
from numpy_transformer.backend import (
    GPUUnavailableError,
    device_of,
    get_array_module,
    gpu_available,
    to_device,
    to_numpy,
)
from strict_backend import StrictArray, strict, to_strict

cupy_installed = importlib.util.find_spec("cupy") is not None


# --------------------------------------------------------------------------- #
# 1. The backend without a GPU
# --------------------------------------------------------------------------- #

@pytest.mark.skipif(cupy_installed, reason="CuPy is installed here; this checks the machine without it")
def test_gpu_is_not_available_without_cupy():
    assert gpu_available() is False


@pytest.mark.skipif(gpu_available(), reason="a GPU is available here; this checks the error without one")
def test_asking_for_the_gpu_without_one_says_how_to_install_cupy():
    with pytest.raises(GPUUnavailableError, match=r"requirements-gpu\.txt") as excinfo:
        to_device(np.ones(3), "gpu")
    assert "pip install" in str(excinfo.value)
    assert isinstance(excinfo.value, RuntimeError)


def test_unknown_device_is_a_value_error_naming_the_choices():
    with pytest.raises(ValueError, match=r"device: expected 'cpu' or 'gpu', got 'tpu'"):
        to_device(np.ones(3), "tpu")


def test_importing_the_package_imports_neither_cupy_nor_matplotlib():
    """Checked in a fresh interpreter: this one may have imported them for other tests."""
    code = ("import sys, numpy_transformer; "
            "assert 'cupy' not in sys.modules, 'cupy imported'; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_numpy_arrays_and_plain_values_select_numpy():
    assert get_array_module(np.ones(3)) is np
    assert get_array_module(np.ones(3), None, 2.0, np.float32(1)) is np
    assert get_array_module() is np
    assert device_of(np.ones(3)) == "cpu"


def test_to_numpy_and_to_cpu_leave_numpy_arrays_alone():
    a = np.ones(3)
    assert to_numpy(a) is a
    assert to_device(a, "cpu") is a
    np.testing.assert_array_equal(to_numpy([1, 2]), np.array([1, 2]))


# --------------------------------------------------------------------------- #
# 2a. The strict stand-in behaves like CuPy where NumPy-only code breaks
# --------------------------------------------------------------------------- #

def test_strict_arrays_select_the_strict_module(strict):
    a = to_strict(np.ones(3))
    assert get_array_module(a) is strict
    assert get_array_module(a, a, 1.0) is strict
    assert device_of(a) == "gpu"


def test_mixing_strict_and_numpy_arrays_is_refused_by_the_backend():
    with pytest.raises(TypeError, match=r"arrays: expected all NumPy or all GPU arrays, got a mix"):
        get_array_module(to_strict(np.ones(3)), np.ones(3))


def test_strict_arrays_refuse_host_arrays_in_ufuncs_and_functions():
    a = to_strict(np.ones((2, 3)))
    host = np.ones(3)
    for operation in (lambda: a + host, lambda: host * a, lambda: np.exp(a, out=np.empty((2, 3))),
                      lambda: np.where(host > 0, a, 0.0), lambda: np.concatenate([a, host[None]]),
                      lambda: strict.where(host > 0, 1.0, 0.0), lambda: strict.exp(host)):
        with pytest.raises(TypeError, match=r"got a host numpy\.ndarray of shape \(.*\) where a device array"):
            operation()


def test_strict_arrays_accept_scalars_and_zero_d_arrays():
    a = to_strict(np.ones((2, 3)))
    for b in (a * 2, a * 2.0, a * np.float32(2), a * np.array(2.0), np.maximum(a, 0), a @ a.T, a.sum(), a[0]):
        assert isinstance(b, StrictArray)
    assert a.sum().ndim == 0                               # like CuPy: a 0-d array, not a scalar
    assert float(a.sum()) == 6.0 and int(a.max()) == 1


def test_strict_arrays_refuse_implicit_conversion_of_non_scalars():
    a = to_strict(np.ones((2, 3)))
    for convert in (lambda: float(a[0]), lambda: int(a[:1]), lambda: a.tolist()):
        with pytest.raises(TypeError, match=r"implicit conversion"):
            convert()


def test_strict_get_returns_a_plain_numpy_copy():
    a = to_strict(np.arange(3.0))
    host = a.get()
    assert type(host) is np.ndarray
    host[0] = 42.0
    assert float(a[0]) == 0.0
    assert type(to_numpy(a)) is np.ndarray and type(to_device(a, "cpu")) is np.ndarray


def test_strict_module_creates_and_updates_strict_arrays():
    assert isinstance(strict.asarray(np.ones(3)), StrictArray)           # host -> device is explicit and allowed
    assert isinstance(strict.zeros((2, 2)), StrictArray)
    assert isinstance(strict.arange(3), StrictArray)
    assert isinstance(strict.zeros_like(to_strict(np.ones(2))), StrictArray)
    dE = strict.zeros((3, 2))
    strict.add.at(dE, to_strict(np.array([0, 0, 2])), to_strict(np.ones((3, 2))))
    assert isinstance(dE, StrictArray)
    np.testing.assert_array_equal(dE.get(), [[2, 2], [0, 0], [1, 1]])


# --------------------------------------------------------------------------- #
# 2b. Every formula, forward and backward, on "device" arrays
# --------------------------------------------------------------------------- #

FUNCTIONAL_CASES = {}   # name -> run(dev, dtype): builds inputs on the host, moves them with dev, returns outputs
COVERED = set()          # the functional.py functions the cases call


def functional_case(*functions):
    def register(run):
        FUNCTIONAL_CASES[run.__name__] = run
        COVERED.update(f.__name__ for f in functions)
        return run
    return register


def _host(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@functional_case(F.softmax, F.softmax_backward)
def softmax(dev, dtype):
    y, cache = F.softmax(dev(_host((2, 3, 5), dtype, 0)))
    return {"y": y, "dx": F.softmax_backward(dev(_host((2, 3, 5), dtype, 1)), cache)}


@functional_case(F.log_softmax, F.log_softmax_backward)
def log_softmax(dev, dtype):
    logp, cache = F.log_softmax(dev(_host((2, 3, 5), dtype, 0)))
    return {"logp": logp, "dx": F.log_softmax_backward(dev(_host((2, 3, 5), dtype, 1)), cache)}


@functional_case(F.relu, F.relu_backward)
def relu(dev, dtype):
    y, cache = F.relu(dev(_host((4, 5), dtype, 0)))
    return {"y": y, "dx": F.relu_backward(dev(_host((4, 5), dtype, 1)), cache)}


@functional_case(F.gelu, F.gelu_backward)
def gelu(dev, dtype):
    y, cache = F.gelu(dev(_host((4, 5), dtype, 0)))
    return {"y": y, "dx": F.gelu_backward(dev(_host((4, 5), dtype, 1)), cache)}


@functional_case(F.linear, F.linear_backward)
def linear(dev, dtype):
    y, cache = F.linear(dev(_host((2, 3, 4), dtype, 0)), dev(_host((4, 5), dtype, 1)), dev(_host((5,), dtype, 2)))
    dx, dW, db = F.linear_backward(dev(_host((2, 3, 5), dtype, 3)), cache)
    return {"y": y, "dx": dx, "dW": dW, "db": db}


@functional_case(F.layernorm, F.layernorm_backward)
def layernorm(dev, dtype):
    y, cache = F.layernorm(dev(_host((2, 3, 6), dtype, 0)), dev(_host((6,), dtype, 1)), dev(_host((6,), dtype, 2)))
    dx, dgamma, dbeta = F.layernorm_backward(dev(_host((2, 3, 6), dtype, 3)), cache)
    return {"y": y, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}


@functional_case(F.dropout, F.dropout_backward)
def dropout(dev, dtype):
    """The mask is drawn on the CPU from a NumPy Generator, then copied to the device."""
    y, cache = F.dropout(dev(_host((4, 6), dtype, 0)), 0.4, np.random.default_rng(5))
    return {"y": y, "dx": F.dropout_backward(dev(_host((4, 6), dtype, 1)), cache)}


@functional_case(F.embedding, F.embedding_backward)
def embedding(dev, dtype):
    y, cache = F.embedding(dev(np.array([[0, 2, 2], [3, 0, 2]])), dev(_host((4, 3), dtype, 0)))
    return {"y": y, "dE": F.embedding_backward(dev(_host((2, 3, 3), dtype, 1)), cache)}


def _attention(dev, dtype, mask):
    """``mask`` is already on the device: a CuPy user builds or moves masks like the data."""
    q, k, v = dev(_host((2, 2, 3, 4), dtype, 0)), dev(_host((2, 2, 5, 4), dtype, 1)), dev(_host((2, 2, 5, 3), dtype, 2))
    out, weights, cache = F.scaled_dot_product_attention(q, k, v, mask)
    dq, dk, dv = F.scaled_dot_product_attention_backward(dev(_host((2, 2, 3, 3), dtype, 3)), cache)
    return {"out": out, "weights": weights, "dq": dq, "dk": dk, "dv": dv}


@functional_case(F.scaled_dot_product_attention, F.scaled_dot_product_attention_backward)
def attention_without_mask(dev, dtype):
    return _attention(dev, dtype, None)


@functional_case(F.padding_mask, F.scaled_dot_product_attention,
                 F.scaled_dot_product_attention_backward)
def attention_with_padding_and_causal_mask(dev, dtype):
    valid = dev(np.array([[True] * 5, [True, True, False, False, False]]))
    mask = F.padding_mask(valid) & dev(F.causal_mask(3, 5))          # (B, 1, 1, Tk) & (Tq, Tk) on the device
    return _attention(dev, dtype, mask)


@functional_case(F.scaled_dot_product_attention, F.scaled_dot_product_attention_backward)
def attention_with_a_fully_masked_row(dev, dtype):
    mask = np.random.default_rng(9).random((2, 2, 3, 5)) < 0.6
    mask[:, :, 1] = False
    return _attention(dev, dtype, dev(mask))


def _attention_fast(dev, dtype, mask):
    q, k, v = dev(_host((2, 2, 3, 4), dtype, 0)), dev(_host((2, 2, 5, 4), dtype, 1)), dev(_host((2, 2, 5, 3), dtype, 2))
    out, weights, cache = fast.scaled_dot_product_attention_fast(q, k, v, mask)
    dq, dk, dv = fast.scaled_dot_product_attention_fast_backward(dev(_host((2, 2, 3, 3), dtype, 3)), cache)
    return {"out": out, "weights": weights, "dq": dq, "dk": dk, "dv": dv}


@functional_case(F.padding_mask, fast.scaled_dot_product_attention_fast, fast.scaled_dot_product_attention_fast_backward)
def attention_fast_with_masks(dev, dtype):
    """The fast twin: copyto with a broadcast mask, a fully masked row, and no mask."""
    valid = dev(np.array([[True] * 5, [True, True, False, False, False]]))
    mask = F.padding_mask(valid) & dev(F.causal_mask(3, 5))
    fully = np.random.default_rng(9).random((2, 2, 3, 5)) < 0.6
    fully[:, :, 1] = False
    out = {f"{key} padding+causal": value for key, value in _attention_fast(dev, dtype, mask).items()}
    out.update({f"{key} fully masked row": value for key, value in _attention_fast(dev, dtype, dev(fully)).items()})
    out.update({f"{key} no mask": value for key, value in _attention_fast(dev, dtype, None).items()})
    return out


@functional_case(F.scaled_dot_product_attention, F.scaled_dot_product_attention_backward,
                 fast.scaled_dot_product_attention_fast, fast.scaled_dot_product_attention_fast_backward)
def attention_with_dropout(dev, dtype):
    """Attention dropout draws its mask on the CPU too (from the Generator), then moves it to the device."""
    q, k, v = (dev(_host((2, 2, 3, 4), dtype, seed)) for seed in (0, 1, 2))
    dout = dev(_host((2, 2, 3, 4), dtype, 3))
    out = {}
    for name, fwd, bwd in (("plain", F.scaled_dot_product_attention, F.scaled_dot_product_attention_backward),
                           ("fast", fast.scaled_dot_product_attention_fast,
                            fast.scaled_dot_product_attention_fast_backward)):
        o, w, cache = fwd(q, k, v, None, dropout_p=0.3, rng=np.random.default_rng(4))
        out.update({f"{name} out": o, f"{name} weights": w})
        out.update({f"{name} d{x}": g for x, g in zip("qkv", bwd(dout, cache))})
    return out


@functional_case(F.rope, F.rope_backward)
def rope(dev, dtype):
    """The angles are computed on the CPU (a table from positions alone), then moved next to x."""
    y, cache = F.rope(dev(_host((2, 3, 5, 4), dtype, 0)), positions=np.arange(3, 8))
    y_odd, cache_odd = F.rope(dev(_host((5, 3), dtype, 2)))
    return {"y": y, "dx": F.rope_backward(dev(_host((2, 3, 5, 4), dtype, 1)), cache),
            "y odd Dh": y_odd, "dx odd Dh": F.rope_backward(dev(_host((5, 3), dtype, 3)), cache_odd)}


@functional_case(F.alibi_slopes, F.scaled_dot_product_attention, F.scaled_dot_product_attention_backward,
                 fast.scaled_dot_product_attention_fast, fast.scaled_dot_product_attention_fast_backward)
def attention_with_alibi_bias(dev, dtype):
    """The ALiBi table is built on the CPU (alibi_bias) and moved to the device like a mask."""
    q, k, v = (dev(_host((2, 3, 4, 2), dtype, seed)) for seed in (0, 1, 2))
    bias = dev(F.alibi_bias(3, 4, dtype=dtype))
    mask = dev(F.causal_mask(4))
    dout = dev(_host((2, 3, 4, 2), dtype, 3))
    out = {"slopes": dev(F.alibi_slopes(3))}
    for name, fwd, bwd in (("plain", F.scaled_dot_product_attention, F.scaled_dot_product_attention_backward),
                           ("fast", fast.scaled_dot_product_attention_fast,
                            fast.scaled_dot_product_attention_fast_backward)):
        o, w, cache = fwd(q, k, v, mask, bias=bias)
        out.update({f"{name} out": o, f"{name} weights": w})
        out.update({f"{name} d{x}": g for x, g in zip("qkv", bwd(dout, cache))})
    return out


@functional_case(F.padding_mask, local_attention, local_attention_backward)
def local_attention_blocked(dev, dtype):
    """The blocked sliding-window kernel: band and block indices on the CPU, scores on the device."""
    q, k, v = (dev(_host((2, 2, 7, 3), dtype, seed)) for seed in (0, 1, 2))
    mask = F.padding_mask(dev(np.arange(7)[None, :] < np.array([[7], [4]])))
    out, cache = local_attention(q, k, v, 2, causal=False, n_global=1, mask=mask,
                                 alibi_slopes=F.alibi_slopes(2), block_size=2, key_block_size=3)
    dq, dk, dv = local_attention_backward(dev(_host((2, 2, 7, 3), dtype, 3)), cache)
    return {"out": out, "dq": dq, "dk": dk, "dv": dv}


@functional_case(fast.layernorm_fast, fast.layernorm_fast_backward)
def layernorm_fast(dev, dtype):
    y, cache = fast.layernorm_fast(dev(_host((2, 3, 6), dtype, 0)), dev(_host((6,), dtype, 1)),
                                dev(_host((6,), dtype, 2)))
    dx, dgamma, dbeta = fast.layernorm_fast_backward(dev(_host((2, 3, 6), dtype, 3)), cache)
    return {"y": y, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}


@functional_case(fast.layernorm_linear_fast, fast.layernorm_linear_fast_backward)
def layernorm_linear_fast(dev, dtype):
    out, cache = fast.layernorm_linear_fast(dev(_host((2, 3, 6), dtype, 0)), dev(_host((6,), dtype, 1)),
                                            dev(_host((6,), dtype, 2)), dev(_host((6, 4), dtype, 3)),
                                            dev(_host((4,), dtype, 4)))
    dx, dgamma, dbeta, dW, db = fast.layernorm_linear_fast_backward(dev(_host((2, 3, 4), dtype, 5)), cache)
    return {"out": out, "dx": dx, "dgamma": dgamma, "dbeta": dbeta, "dW": dW, "db": db}


@functional_case(fast.dropout_fast, fast.dropout_fast_backward)
def dropout_fast(dev, dtype):
    """The fast twin draws its bits on the CPU too, then copies them to the device."""
    y, cache = fast.dropout_fast(dev(_host((4, 6), dtype, 0)), 0.4, np.random.default_rng(5))
    dy = _host((4, 6), dtype, 1)
    return {"y": y, "dx": F.dropout_backward(dev(dy), cache), "dx fast": fast.dropout_fast_backward(dev(dy), cache)}


@functional_case(fast.gelu_fast, fast.gelu_fast_backward)
def gelu_fast(dev, dtype):
    y, cache = fast.gelu_fast(dev(_host((4, 5), dtype, 0)))
    return {"y": y, "dx": fast.gelu_fast_backward(dev(_host((4, 5), dtype, 1)), cache)}


@functional_case(fast.linear_fast_backward)
def linear_fast_backward(dev, dtype):
    _, cache = F.linear(dev(_host((2, 3, 4), dtype, 0)), dev(_host((4, 5), dtype, 1)), dev(_host((5,), dtype, 2)))
    dx, dW, db = fast.linear_fast_backward(dev(_host((2, 3, 5), dtype, 3)), cache)
    return {"dx": dx, "dW": dW, "db": db}


@functional_case(fast.cross_entropy_fast, fast.cross_entropy_fast_backward)
def cross_entropy_fast(dev, dtype):
    targets = np.array([[1, 4, -100], [0, 2, 3]])
    loss, cache = fast.cross_entropy_fast(dev(_host((2, 3, 5), dtype, 0)), dev(targets))
    return {"loss": loss, "dlogits": fast.cross_entropy_fast_backward(1.0, cache)}


@functional_case(fast.tied_output_cross_entropy_fast, fast.tied_output_cross_entropy_fast_backward)
def tied_output_cross_entropy_fast(dev, dtype):
    targets = np.array([1, 4, -100, 0, 2, 3, 6])
    loss, cache = fast.tied_output_cross_entropy_fast(dev(_host((7, 3), dtype, 0)), dev(_host((7, 3), dtype, 1)),
                                                      dev(targets), rows_per_block=3)
    dh, dE = fast.tied_output_cross_entropy_fast_backward(2.0, cache)
    return {"loss": loss, "dh": dh, "dE": dE}


@functional_case(fast.relu_dropout_fast)
def relu_dropout_fast(dev, dtype):
    y, cache = fast.relu_dropout_fast(dev(_host((4, 6), dtype, 0)), 0.4, np.random.default_rng(5))
    y_eval, cache_eval = fast.relu_dropout_fast(dev(_host((4, 6), dtype, 0)), 0.4, None, training=False)
    dy = dev(_host((4, 6), dtype, 1))
    return {"y": y, "dx": fast.dropout_fast_backward(dy, cache), "y eval": y_eval,
            "dx eval": fast.dropout_fast_backward(dy, cache_eval)}


@functional_case(fast.embedding_backward_fast)
def embedding_backward_fast(dev, dtype):
    _, cache = F.embedding(dev(np.array([[0, 2, 2], [3, 0, 2]])), dev(_host((4, 3), dtype, 0)))
    return {"dE": fast.embedding_backward_fast(dev(_host((2, 3, 3), dtype, 1)), cache)}


@functional_case(F.split_heads, F.merge_heads, F.split_heads_backward, F.merge_heads_backward)
def split_and_merge_heads(dev, dtype):
    x = dev(_host((2, 3, 6), dtype, 0))
    heads = F.split_heads(x, 3)
    return {"split": heads, "merge": F.merge_heads(heads),
            "split backward": F.split_heads_backward(dev(_host((2, 3, 3, 2), dtype, 1))),
            "merge backward": F.merge_heads_backward(dev(_host((2, 3, 6), dtype, 2)), 3)}


@functional_case(F.cross_entropy, F.cross_entropy_backward)
def cross_entropy(dev, dtype):
    loss, cache = F.cross_entropy(dev(_host((2, 3, 4), dtype, 0)), dev(np.array([[0, 3, -100], [2, 1, 1]])),
                                  label_smoothing=0.1)
    return {"loss": loss, "dlogits": F.cross_entropy_backward(1.0, cache)}


@functional_case(F.distillation_loss, F.distillation_loss_backward)
def distillation_loss(dev, dtype):
    loss, cache = F.distillation_loss(dev(_host((2, 3, 4), dtype, 0)), dev(_host((2, 3, 4), dtype, 1)), 2.0)
    return {"loss": loss, "dlogits": F.distillation_loss_backward(1.0, cache)}


@functional_case(F.head_gate, F.head_gate_backward)
def head_gate(dev, dtype):
    out, cache = F.head_gate(dev(_host((2, 3, 4, 5), dtype, 0)), dev(_host((3,), dtype, 1)))
    dheads, dgate = F.head_gate_backward(dev(_host((2, 3, 4, 5), dtype, 2)), cache)
    return {"out": out, "dheads": dheads, "dgate": dgate}


@functional_case(F.int8_scale, F.quantize_int8, F.dequantize_int8, F.fake_quantize_int8,
                 F.fake_quantize_int8_backward)
def int8_quantization(dev, dtype):
    w = dev(_host((4, 3), dtype, 0))
    q, s = F.quantize_int8(w)
    q_clipped, _ = F.quantize_int8(w, dev(_host((3,), dtype, 1) ** 2 * 0.01))
    w_hat, cache = F.fake_quantize_int8(w)
    return {"scale": F.int8_scale(w), "q": q, "q clipped": q_clipped, "dequantized": F.dequantize_int8(q, s),
            "fake": w_hat, "dw": F.fake_quantize_int8_backward(dev(_host((4, 3), dtype, 2)), cache)}


@functional_case(F.binarize, F.binarize_backward)
def binarize(dev, dtype):
    w_hat, cache = F.binarize(dev(_host((4, 3), dtype, 0)))
    return {"w_hat": w_hat, "dw": F.binarize_backward(dev(_host((4, 3), dtype, 1)), cache)}


@functional_case(F.int8_linear)
def int8_linear(dev, dtype):
    q, s = F.quantize_int8(dev(_host((4, 3), dtype, 0)))
    return {"y": F.int8_linear(dev(_host((2, 5, 4), dtype, 1)), q, s, dev(_host((3,), dtype, 2)))}


@functional_case(F.gradient_reversal, F.gradient_reversal_backward)
def gradient_reversal(dev, dtype):
    y, cache = F.gradient_reversal(dev(_host((2, 3, 4), dtype, 0)), 0.7)
    return {"y": y, "dx": F.gradient_reversal_backward(dev(_host((2, 3, 4), dtype, 1)), cache)}


@functional_case(F.coral_loss, F.coral_loss_backward)
def coral_loss(dev, dtype):
    loss, cache = F.coral_loss(dev(_host((5, 4), dtype, 0)), dev(_host((3, 4), dtype, 1)))
    dxs, dxt = F.coral_loss_backward(1.0, cache)
    return {"loss": loss, "dxs": dxs, "dxt": dxt}


def _numpy_copy(a):
    return np.array(a)


@pytest.mark.parametrize("name", list(FUNCTIONAL_CASES))
def test_every_formula_runs_on_strict_arrays_and_matches_numpy(name):
    """No line of functional.py mixes host and device arrays, and the device results are the NumPy ones."""
    expected = FUNCTIONAL_CASES[name](_numpy_copy, np.float64)
    got = FUNCTIONAL_CASES[name](to_strict, np.float64)
    assert set(got) == set(expected)
    for key, value in got.items():
        assert isinstance(value, StrictArray), f"{name}: {key} came back as {type(value).__name__}, off the device"
        np.testing.assert_array_equal(value.get(), expected[key], err_msg=f"{name}: {key}")


def test_strict_cases_cover_every_forward_and_backward_in_functional():
    """A new forward/backward pair in functional.py (or a fast twin in fast.py) must get a device case here too."""
    public = {name for module in (F, fast) for name, obj in vars(module).items()
              if inspect.isfunction(obj) and not name.startswith("_") and obj.__module__ == module.__name__}
    # Tables computed on the CPU from sizes alone: no array input, nothing to put on a device.
    host_tables = {"sinusoidal_positional_encoding", "seed_positional_encoding", "causal_mask",
                   "rope_frequencies", "alibi_bias", "local_attention_mask"}
    assert public - host_tables - COVERED == set()


# --------------------------------------------------------------------------- #
# 3. Real CuPy against NumPy (float32)
# --------------------------------------------------------------------------- #

@pytest.mark.gpu
@pytest.mark.parametrize("name", list(FUNCTIONAL_CASES))
def test_every_formula_on_cupy_matches_numpy_in_float32(name):
    cupy = pytest.importorskip("cupy")
    expected = FUNCTIONAL_CASES[name](_numpy_copy, np.float32)
    got = FUNCTIONAL_CASES[name](lambda a: to_device(a, "gpu"), np.float32)
    for key, value in got.items():
        assert isinstance(value, cupy.ndarray), f"{name}: {key} came back as {type(value).__name__}"
        assert value.dtype == np.float32, f"{name}: {key} is {value.dtype}"
        np.testing.assert_allclose(to_numpy(value), expected[key], rtol=1e-4, atol=1e-5, err_msg=f"{name}: {key}")


@pytest.mark.gpu
def test_cupy_round_trip_and_module_selection():
    cupy = pytest.importorskip("cupy")
    a = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    g = to_device(a, "gpu")
    assert get_array_module(g) is cupy and device_of(g) == "gpu"
    np.testing.assert_array_equal(to_numpy(g), a)
    assert isinstance(to_device(g, "gpu"), cupy.ndarray)

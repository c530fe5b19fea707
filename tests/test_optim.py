"""Optimizers, clipping and schedules against their equations, written out by hand in plain NumPy.

The modules here are tiny stand-ins built in this file (two Parameters), so the
tests depend only on `Parameter`/`Module`, not on the layers.
"""

import json
import math

import numpy as np
import pytest

from numpy_transformer.nn import Module, Parameter
from numpy_transformer.optim import (SGD, Adam, AdamW, LRScheduler, Optimizer, clip_grad_norm, noam,
                                     warmup_cosine, warmup_linear)


class TwoParams(Module):
    """A weight that AdamW decays and a bias that it does not."""

    def __init__(self, dtype=np.float64, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.W = Parameter(rng.standard_normal((3, 4)).astype(dtype))
        self.b = Parameter(rng.standard_normal(4).astype(dtype), decay=False)


def grad_sequence(model, n_steps, seed=1):
    """Fixed gradients for each step: [{name: array}] (of both signs, different scales per step)."""
    rng = np.random.default_rng(seed)
    return [{name: (rng.standard_normal(p.shape) * (t + 1)).astype(p.dtype) for name, p in model.named_parameters()}
            for t in range(n_steps)]


def run(model, optimizer, grads):
    for step_grads in grads:
        for name, p in model.named_parameters():
            p.grad[...] = step_grads[name]
        optimizer.step()


# --------------------------------------------------------------------------- #
# Reference updates, straight from the papers
# --------------------------------------------------------------------------- #

def adam_reference(theta, grads, lr, beta1, beta2, eps, l2=0.0, decoupled=0.0):
    """Kingma & Ba 2015 Algorithm 1 (+ L2 in the gradient), or Loshchilov & Hutter 2019 Algorithm 2."""
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        g = g + l2 * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g ** 2
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        theta = theta - lr * (m_hat / (np.sqrt(v_hat) + eps) + decoupled * theta)
    return theta, m, v


def sgd_reference(theta, grads, lr, momentum, nesterov, weight_decay):
    """PyTorch's SGD: v = mu v + g, step along v (or g + mu v for Nesterov)."""
    v = np.zeros_like(theta)
    for g in grads:
        g = g + weight_decay * theta
        v = momentum * v + g
        d = g + momentum * v if nesterov else v
        theta = theta - lr * d
    return theta, v


# --------------------------------------------------------------------------- #
# Adam, AdamW, SGD against the references
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_matches_kingma_ba_for_three_steps(weight_decay):
    model = TwoParams()
    start = {n: p.data.copy() for n, p in model.named_parameters()}
    grads = grad_sequence(model, 3)
    opt = Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=weight_decay)
    run(model, opt, grads)
    for i, (name, p) in enumerate(model.named_parameters()):
        theta, m, v = adam_reference(start[name], [g[name] for g in grads], 0.01, 0.8, 0.9, 1e-6, l2=weight_decay)
        np.testing.assert_allclose(p.data, theta, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(opt.state[i]["m"], m, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(opt.state[i]["v"], v, rtol=1e-13, atol=1e-15)
    assert opt.t == 3


def test_adam_bias_correction_makes_the_first_step_lr_sized():
    # After one step m_hat = g and v_hat = g^2, so every coordinate moves by ~lr * sign(g).
    model = TwoParams()
    before = model.W.data.copy()
    model.W.grad[...] = np.random.default_rng(3).standard_normal(model.W.shape) * 1e-3
    Adam([model.W], lr=0.1, eps=1e-12).step()
    np.testing.assert_allclose(before - model.W.data, 0.1 * np.sign(model.W.grad), rtol=1e-6)


def test_adamw_decays_only_parameters_with_decay_true():
    model = TwoParams()
    assert model.W.decay and not model.b.decay
    start = {n: p.data.copy() for n, p in model.named_parameters()}
    grads = grad_sequence(model, 3)
    opt = AdamW(model.parameters(), lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5)
    run(model, opt, grads)

    W_ref, _, _ = adam_reference(start["W"], [g["W"] for g in grads], 0.05, 0.9, 0.99, 1e-8, decoupled=0.5)
    np.testing.assert_allclose(model.W.data, W_ref, rtol=1e-13, atol=1e-15)
    W_plain, _, _ = adam_reference(start["W"], [g["W"] for g in grads], 0.05, 0.9, 0.99, 1e-8)
    assert np.abs(model.W.data - W_plain).max() > 1e-3  # the decay really did something to W

    b_ref, _, _ = adam_reference(start["b"], [g["b"] for g in grads], 0.05, 0.9, 0.99, 1e-8)
    np.testing.assert_allclose(model.b.data, b_ref, rtol=1e-13, atol=1e-15)


def test_adamw_default_weight_decay_is_0_01_and_differs_from_adam_l2():
    assert AdamW(TwoParams().parameters()).weight_decay == 0.01
    a, b = TwoParams(), TwoParams()
    grads = grad_sequence(a, 3)
    run(a, Adam(a.parameters(), lr=0.05, weight_decay=0.5), grads)
    run(b, AdamW(b.parameters(), lr=0.05, weight_decay=0.5), grads)
    assert np.abs(a.W.data - b.W.data).max() > 1e-3


@pytest.mark.parametrize("momentum,nesterov,weight_decay", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                            (0.9, True, 0.0), (0.5, True, 0.1)])
def test_sgd_matches_its_update_for_three_steps(momentum, nesterov, weight_decay):
    model = TwoParams()
    start = {n: p.data.copy() for n, p in model.named_parameters()}
    grads = grad_sequence(model, 3)
    opt = SGD(model.parameters(), lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    run(model, opt, grads)
    for i, (name, p) in enumerate(model.named_parameters()):
        theta, v = sgd_reference(start[name], [g[name] for g in grads], 0.1, momentum, nesterov, weight_decay)
        np.testing.assert_allclose(p.data, theta, rtol=1e-13, atol=1e-15)
        if momentum:
            np.testing.assert_allclose(opt.state[i]["momentum_buffer"], v, rtol=1e-13, atol=1e-15)
        else:
            assert opt.state[i] == {}


def test_nesterov_and_plain_momentum_differ():
    a, b = TwoParams(), TwoParams()
    grads = grad_sequence(a, 3)
    run(a, SGD(a.parameters(), lr=0.1, momentum=0.9), grads)
    run(b, SGD(b.parameters(), lr=0.1, momentum=0.9, nesterov=True), grads)
    assert np.abs(a.W.data - b.W.data).max() > 1e-3


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: Adam(ps, lr=0.01, weight_decay=0.01),
    lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1),
], ids=["SGD", "Adam", "AdamW"])
def test_float32_stays_float32_in_place_and_grads_untouched(make):
    model = TwoParams(dtype=np.float32)
    arrays = [p.data for p in model.parameters()]
    opt = make(model.parameters())
    for step_grads in grad_sequence(model, 3):
        for name, p in model.named_parameters():
            p.grad[...] = step_grads[name]
        grads_before = [p.grad.copy() for p in model.parameters()]
        opt.step()
        for p, g in zip(model.parameters(), grads_before):
            np.testing.assert_array_equal(p.grad, g)  # L2 decay must not leak into p.grad
    for p, a in zip(model.parameters(), arrays):
        assert p.data is a  # updated in place, never replaced
        assert p.data.dtype == np.float32
    for buffers in opt.state:
        assert buffers and all(b.dtype == np.float32 for b in buffers.values())


def test_zero_grad_clears_every_gradient():
    model = TwoParams()
    for p in model.parameters():
        p.grad[...] = 1.0
    Adam(model.parameters()).zero_grad()
    assert all(not p.grad.any() for p in model.parameters())


# --------------------------------------------------------------------------- #
# Argument checks
# --------------------------------------------------------------------------- #

def test_bad_arguments_name_the_argument():
    model = TwoParams()
    with pytest.raises(TypeError, match=r"model\.parameters\(\)"):
        Adam(model)
    with pytest.raises(ValueError, match="at least one Parameter"):
        Adam([])
    with pytest.raises(TypeError, match=r"params\[1\]: expected a Parameter, got ndarray"):
        SGD([model.W, np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[1\].*same Parameter as params\[0\]"):
        SGD([model.W, model.W], lr=0.1)
    with pytest.raises(ValueError, match="lr: expected a finite number >= 0.0, got -1.0"):
        SGD(model.parameters(), lr=-1)
    with pytest.raises(ValueError, match=r"betas\[1\]: expected a finite number in \[0.0, 1.0\), got 1.0"):
        Adam(model.parameters(), betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="betas: expected a pair"):
        Adam(model.parameters(), betas=0.9)
    with pytest.raises(ValueError, match="nesterov: expected momentum > 0"):
        SGD(model.parameters(), lr=0.1, nesterov=True)
    with pytest.raises(TypeError, match="lr: expected a number, got str"):
        AdamW(model.parameters(), lr="1e-3")


# --------------------------------------------------------------------------- #
# clip_grad_norm
# --------------------------------------------------------------------------- #

def set_grads(model, seed=0, scale=10.0, dtype=None):
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.grad[...] = rng.standard_normal(p.shape) * scale
    return [p.grad.copy() for p in model.parameters()]


def global_norm(arrays):
    return math.sqrt(sum(float(np.sum(np.asarray(a, dtype=np.float64) ** 2)) for a in arrays))


def test_clip_returns_the_pre_clip_norm_and_clips_to_the_limit():
    model = TwoParams()
    before = set_grads(model, scale=10.0)
    expected = global_norm(before)
    assert expected > 1.0
    norm = clip_grad_norm(model.parameters(), max_norm=1.0)
    assert isinstance(norm, float)
    assert norm == pytest.approx(expected, rel=1e-12)
    after = [p.grad for p in model.parameters()]
    assert abs(global_norm(after) - 1.0) < 1e-6
    for a, b in zip(after, before):  # one common factor: the direction is kept
        np.testing.assert_allclose(a, b * (1.0 / (expected + 1e-6)), rtol=1e-12)


def test_clip_leaves_small_gradients_alone():
    model = TwoParams()
    before = set_grads(model, scale=0.01)
    norm = clip_grad_norm(model.parameters(), max_norm=1.0)
    assert norm == pytest.approx(global_norm(before), rel=1e-12) and norm < 1.0
    for p, g in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.grad, g)


def test_clip_float32_stays_float32():
    model = TwoParams(dtype=np.float32)
    set_grads(model, scale=10.0)
    clip_grad_norm(model.parameters(), max_norm=0.5)
    assert all(p.grad.dtype == np.float32 for p in model.parameters())
    assert abs(global_norm([p.grad for p in model.parameters()]) - 0.5) < 1e-6


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_clip_refuses_non_finite_gradients_and_names_the_parameter(bad):
    model = TwoParams()
    set_grads(model)
    model.b.grad[2] = bad
    with pytest.raises(ValueError, match=r"NaN or inf in params\[1\] \(shape \(4,\)\)") as info:
        clip_grad_norm(model.parameters(), max_norm=1.0)
    assert "params[0]" not in str(info.value)


def test_clip_checks_max_norm():
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(TwoParams().parameters(), max_norm=0.0)
    assert clip_grad_norm([], max_norm=1.0) == 0.0


# --------------------------------------------------------------------------- #
# Schedules
# --------------------------------------------------------------------------- #

def test_noam_peaks_at_warmup_with_the_closed_form_value():
    d_model, warmup, factor = 512, 400, 2.0
    lrs = [noam(t, d_model, warmup, factor) for t in range(1, 3 * warmup)]
    assert int(np.argmax(lrs)) + 1 == warmup
    assert max(lrs) == pytest.approx(factor * d_model ** -0.5 * warmup ** -0.5, rel=1e-12)
    assert noam(10, d_model, warmup) == pytest.approx(d_model ** -0.5 * 10 * warmup ** -1.5)   # warm-up: linear
    assert noam(1600, d_model, warmup) == pytest.approx(d_model ** -0.5 * 1600 ** -0.5)       # then 1/sqrt(t)
    assert noam(0, d_model, warmup) == noam(1, d_model, warmup)


def test_warmup_cosine_shape():
    base, warmup, total, min_lr = 1e-3, 10, 110, 1e-5
    lrs = [warmup_cosine(t, base, warmup, total, min_lr) for t in range(0, total + 20)]
    assert lrs[0] == 0.0
    assert lrs[warmup] == pytest.approx(base) and max(lrs) == pytest.approx(base)
    assert np.all(np.diff(lrs[:warmup + 1]) > 0)
    assert np.all(np.diff(lrs[warmup:total + 1]) < 0)
    assert lrs[total] == pytest.approx(min_lr, abs=1e-15)
    assert all(lr == min_lr for lr in lrs[total:])
    midway = warmup + (total - warmup) // 2
    assert lrs[midway] == pytest.approx((base + min_lr) / 2)
    # A run shorter than its warm-up ends during the warm-up instead of failing.
    assert warmup_cosine(5, base, warmup=100, total=50) == pytest.approx(base * 5 / 100)


def test_warmup_linear_shape():
    lrs = [warmup_linear(t, 1.0, 4, 12) for t in range(0, 15)]
    np.testing.assert_allclose(lrs, [0, .25, .5, .75, 1, .875, .75, .625, .5, .375, .25, .125, 0, 0, 0])


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="min_lr"):
        warmup_cosine(1, 1e-3, 10, 100, min_lr=1.0)
    with pytest.raises(TypeError, match="step: expected an integer, got float"):
        noam(1.5, 512, 4000)
    with pytest.raises(ValueError, match="warmup: expected an integer >= 1, got 0"):
        noam(1, 512, 0)


def test_lr_scheduler_gives_update_t_the_rate_of_step_t():
    model = TwoParams()
    opt = SGD(model.parameters(), lr=123.0)
    sched = LRScheduler(opt, warmup_cosine, base_lr=0.1, warmup=3, total=10)
    used = []
    for _ in range(12):
        used.append(opt.lr)
        opt.step()
        sched.step()
    assert used == [warmup_cosine(t, 0.1, 3, 10) for t in range(1, 13)]


# --------------------------------------------------------------------------- #
# state_dict: a resumed run continues bit for bit
# --------------------------------------------------------------------------- #

MAKERS = {
    "SGD": lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adam": lambda ps: Adam(ps, lr=0.01, betas=(0.8, 0.95), weight_decay=0.01),
    "AdamW": lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_round_trip_continues_bit_identically(kind, dtype):
    make = MAKERS[kind]
    straight = TwoParams(dtype=dtype)
    grads = grad_sequence(straight, 5)
    opt = make(straight.parameters())
    sched = LRScheduler(opt, warmup_cosine, base_lr=0.05, warmup=2, total=5)
    for step_grads in grads:
        run(straight, opt, [step_grads])
        sched.step()

    first = TwoParams(dtype=dtype)
    opt = make(first.parameters())
    sched = LRScheduler(opt, warmup_cosine, base_lr=0.05, warmup=2, total=5)
    for step_grads in grads[:3]:
        run(first, opt, [step_grads])
        sched.step()
    state = opt.state_dict()
    sched_state = json.loads(json.dumps(sched.state_dict()))
    # What a checkpoint stores: the non-array part must survive JSON.
    values = json.loads(json.dumps({k: v for k, v in state.items() if not isinstance(v, np.ndarray)}))
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}

    resumed = TwoParams(dtype=dtype)
    resumed.load_state_dict(first.state_dict())
    opt2 = make(resumed.parameters())
    sched2 = LRScheduler(opt2, warmup_cosine, base_lr=0.05, warmup=2, total=5)
    opt2.load_state_dict({**values, **arrays})
    sched2.load_state_dict(sched_state)
    for step_grads in grads[3:]:
        run(resumed, opt2, [step_grads])
        sched2.step()

    assert opt2.t == 5
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
        assert b.data.dtype == dtype
    for a, b in zip(opt.state, opt2.state):
        assert a.keys() == b.keys()


def test_state_dict_contents():
    model = TwoParams()
    opt = AdamW(model.parameters(), lr=0.01)
    assert opt.state_dict() == {"type": "AdamW", "num_params": 2, "t": 0, "lr": 0.01, "betas": [0.9, 0.999],
                                "eps": 1e-8, "weight_decay": 0.01}
    run(model, opt, grad_sequence(model, 1))
    state = opt.state_dict()
    assert sorted(k for k in state if "." in k) == ["m.0", "m.1", "v.0", "v.1"]
    state["m.0"][...] = 0  # a copy: editing it leaves the optimizer alone
    assert opt.state[0]["m"].any()


def test_load_state_dict_copies_the_arrays():
    model = TwoParams()
    opt = Adam(model.parameters())
    run(model, opt, grad_sequence(model, 1))
    state = opt.state_dict()
    opt2 = Adam(TwoParams().parameters())
    opt2.load_state_dict(state)
    m_before = state["m.0"].copy()
    opt2.params[0].grad[...] = 1.0
    opt2.step()
    np.testing.assert_array_equal(state["m.0"], m_before)


def test_load_state_dict_says_what_differs():
    model = TwoParams()
    opt = Adam(model.parameters())
    run(model, opt, grad_sequence(model, 1))
    state = opt.state_dict()

    with pytest.raises(ValueError, match="expected the state of a SGD optimizer, got one of 'Adam'"):
        SGD(model.parameters(), lr=0.1).load_state_dict(state)
    with pytest.raises(ValueError, match="expected buffers for 1 parameters.*got 2"):
        Adam([model.W]).load_state_dict(state)
    bad = dict(state, **{"m.1": np.zeros(5)})
    with pytest.raises(ValueError, match=r"m\.1: expected shape \(4,\), got \(5,\)"):
        Adam(model.parameters()).load_state_dict(bad)
    missing = {k: v for k, v in state.items() if k != "v.0"}
    with pytest.raises(ValueError, match=r"missing buffers: \['v\.0'\]"):
        Adam(model.parameters()).load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected keys: \['w\.7'\]"):
        Adam(model.parameters()).load_state_dict(dict(state, **{"w.7": np.zeros(3)}))
    # Nothing changes when a check fails.
    fresh = Adam(model.parameters())
    with pytest.raises(ValueError):
        fresh.load_state_dict(bad)
    assert fresh.t == 0 and fresh.state == [{}, {}]


def test_buffers_follow_a_dtype_change_of_the_model():
    model = TwoParams(dtype=np.float32)
    opt = Adam(model.parameters())
    run(model, opt, grad_sequence(model, 1))
    model.to(dtype=np.float64)
    run(model, opt, grad_sequence(model, 1, seed=5))
    assert all(b.dtype == np.float64 for s in opt.state for b in s.values())
    assert isinstance(opt, Optimizer)


# --------------------------------------------------------------------------- #
# The GPU code path, on the strict CPU stand-in for CuPy (tests/strict_backend.py)
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_optimizer_on_device_arrays_matches_numpy(kind, strict):
    make = MAKERS[kind]
    host = TwoParams(dtype=np.float32)
    device = TwoParams(dtype=np.float32)
    for p in device.parameters():  # "upload" the same weights
        p.data = strict.asarray(p.data)
        p.grad = strict.zeros_like(p.data)
    grads = grad_sequence(host, 3)
    opt_host, opt_device = make(host.parameters()), make(device.parameters())
    run(host, opt_host, grads)
    for step_grads in grads:
        for name, p in device.named_parameters():
            p.grad[...] = strict.asarray(step_grads[name])
        clip_grad_norm(device.parameters(), max_norm=1e6)
        opt_device.step()
    for a, b in zip(host.parameters(), device.parameters()):
        assert isinstance(b.data, strict.ndarray)
        np.testing.assert_array_equal(a.data, b.data.get())
    for buffers in opt_device.state:
        assert all(isinstance(b, strict.ndarray) for b in buffers.values())
    state = opt_device.state_dict()  # on the host, ready for a checkpoint
    assert all(type(v) is np.ndarray for k, v in state.items() if "." in k)
    opt_device.load_state_dict(state)  # and back onto the device
    assert all(isinstance(b, strict.ndarray) for s in opt_device.state for b in s.values())


def test_clip_grad_norm_on_device_arrays(strict):
    model = TwoParams()
    before = set_grads(model, scale=10.0)
    for p in model.parameters():
        p.data, p.grad = strict.asarray(p.data), strict.asarray(p.grad)
    norm = clip_grad_norm(model.parameters(), max_norm=1.0)
    assert norm == pytest.approx(global_norm(before), rel=1e-12)
    assert abs(global_norm([p.grad.get() for p in model.parameters()]) - 1.0) < 1e-6
    model.b.grad[0] = np.nan
    with pytest.raises(ValueError, match=r"params\[1\]"):
        clip_grad_norm(model.parameters(), max_norm=1.0)

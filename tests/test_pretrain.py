"""Pre-training: exact resume, held-out scoring, the fused output layer, and the LM metrics."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_transformer import fast, metrics, parallel
from numpy_transformer import functional as F
from numpy_transformer.checkpoint import load
from numpy_transformer.models import TransformerLM
from numpy_transformer.pretrain import CausalObjective, PretrainConfig, _windows, evaluate_stream, pretrain
from numpy_transformer.tokenizer import MASK, CharTokenizer

V = 23


def _tiny_model(dropout=0.1, dtype=np.float32):
    return TransformerLM(V, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=8, dropout=dropout, seed=1,
                         dtype=dtype)


def _streams():
    rng = np.random.default_rng(0)
    # a learnable stream: a repeating pattern with noise
    train = (np.arange(3000) % 7 + rng.integers(0, 3, 3000)).astype(np.int32) % V
    held = (np.arange(400) % 7 + rng.integers(0, 3, 400)).astype(np.int32) % V
    return train, {"a": held}


def _tokenizer():
    return CharTokenizer([chr(0x4E00 + i) for i in range(V - 6)], extra_special=(MASK,))


def _config(**kw):
    return PretrainConfig(**{**dict(steps=8, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=3,
                                    eval_batch_size=4), **kw})


def test_a_resumed_run_gives_the_same_losses_as_an_uninterrupted_one(tmp_path):
    train, held = _streams()
    tok = _tokenizer()
    losses_full = []
    model = _tiny_model()
    hist_full = pretrain(model, tok, train, held, _config(), out_dir=tmp_path / "full", progress=False, log=None,
                         on_step=lambda s, loss: losses_full.append(loss))

    losses = []

    def interrupt_at_5(step, loss):
        losses.append(loss)
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(_tiny_model(), tok, train, held, _config(), out_dir=tmp_path / "cut", progress=False, log=None,
                 on_step=interrupt_at_5)
    assert load(tmp_path / "cut" / "last.npz").extra["pretrain"]["step"] == 5   # Ctrl-C left a resume state
    # a fresh process would rebuild the model from the checkpoint; a differently seeded model proves the weights
    # come from the file
    fresh = TransformerLM(V, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=8, dropout=0.1, seed=99)
    hist = pretrain(fresh, tok, train, held, _config(), out_dir=tmp_path / "cut", progress=False, log=None,
                    resume_from=tmp_path / "cut" / "last.npz", on_step=lambda s, loss: losses.append(loss))
    assert len(losses) == 8
    assert losses == losses_full                              # bit for bit: data, dropout, optimizer, schedule
    assert hist.heldout_bits == hist_full.heldout_bits and hist.train_loss == hist_full.train_loss
    for name, p in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[name], p)


def test_pretraining_learns_and_keeps_the_best_checkpoint(tmp_path):
    train, held = _streams()
    model = _tiny_model(0.0)
    before = evaluate_stream(model, held["a"])["bits"]              # about log2(V) = 4.5
    hist = pretrain(model, _tokenizer(), train, held, _config(steps=80, eval_every=40, lr=1e-2),
                    out_dir=tmp_path, progress=False, log=None)
    bits = hist.heldout_bits["a"]
    assert bits[-1] < before - 1.0
    assert hist.best_bits == min(bits) and hist.stopped_because == "all 80 steps done"
    best = load(tmp_path / "best.npz")
    assert best.extra["pretrain"]["step"] == hist.best_step
    assert CharTokenizer.from_dict(best.tokenizer).token_to_id(MASK) == 5


def test_a_time_budget_cuts_the_run_and_says_so(tmp_path):
    train, held = _streams()
    hist = pretrain(_tiny_model(), _tokenizer(), train, held, _config(steps=10_000, time_budget=1e-9),
                    out_dir=tmp_path, progress=False, log=None)
    assert hist.step == [1] and "time budget" in hist.stopped_because and "cut this run short" in hist.stopped_because


def test_windows_score_every_token_once():
    for n, T, stride in [(100, 8, 4), (9, 8, 4), (10, 8, 3), (5, 8, 4), (57, 8, 8)]:
        windows, width = _windows(n, T, stride)
        scored = []
        for s, first in windows:
            scored += list(range(s + 1 + first, s + width + 1))
        assert scored == list(range(1, n))


def test_evaluate_stream_equals_a_direct_computation():
    model = _tiny_model(0.0, dtype=np.float64)
    stream = np.random.default_rng(3).integers(0, V, 41)         # 40 predictions = 5 windows of T = 8
    r = evaluate_stream(model, stream, batch_size=3, stride=8)   # stride = T: plain non-overlapping windows
    total = 0.0
    for s in range(0, 40, 8):
        logp, _ = F.log_softmax(model(stream[s:s + 8][None])[0])  # (8, V)
        total += sum(logp[t, stream[s + 1 + t]] for t in range(8))
    nats = -total / 40
    assert r["tokens"] == 40
    assert r["nats"] == pytest.approx(nats, rel=1e-10)
    assert r["bits"] == pytest.approx(nats / math.log(2), rel=1e-10)
    assert r["ppl"] == pytest.approx(math.exp(nats), rel=1e-10)


def test_lm_metrics():
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
    targets = np.array([[1, 0]])
    ll, n = metrics.token_log_likelihood(logits, targets, ignore_index=None)
    assert n == 2 and ll == pytest.approx(math.log(0.25) + math.log(0.1))
    ll0, n0 = metrics.token_log_likelihood(logits, targets)          # id 0 = padding is skipped
    assert n0 == 1 and ll0 == pytest.approx(math.log(0.25))
    assert metrics.bits_per_char(math.log(2)) == pytest.approx(1.0)
    assert metrics.perplexity(math.log(7)) == pytest.approx(7.0)
    # a uniform model over V characters: log2(V) bits, perplexity V
    nats = metrics.cross_entropy_nats(*metrics.token_log_likelihood(np.zeros((4, 9)), np.arange(4) + 1))
    assert metrics.bits_per_char(nats) == pytest.approx(math.log2(9)) and metrics.perplexity(nats) == pytest.approx(9)
    with pytest.raises(ValueError, match="n"):
        metrics.cross_entropy_nats(0.0, 0)


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 9), D=st.integers(1, 5), V=st.integers(2, 7), block=st.integers(1, 4),
       seed=st.integers(0, 2**31), ignore=st.booleans())
def test_fused_output_layer_equals_linear_then_cross_entropy(N, D, V, block, seed, ignore):
    rng = np.random.default_rng(seed)
    h, E = rng.normal(size=(N, D)), rng.normal(size=(V, D))
    t = rng.integers(0, V, N)
    if ignore:
        t[0] = -100
    loss, cache = fast.tied_output_cross_entropy_fast(h, E, t, rows_per_block=block)
    dh, dE = fast.tied_output_cross_entropy_fast_backward(1.7, cache)
    z, lin_cache = F.linear(h, E.T)
    loss2, ce_cache = F.cross_entropy(z, t)
    dh2, dEt, _ = F.linear_backward(F.cross_entropy_backward(1.7, ce_cache), lin_cache)
    assert float(loss) == pytest.approx(float(loss2), abs=1e-12)
    np.testing.assert_allclose(dh, dh2, atol=1e-12)
    np.testing.assert_allclose(dE, dEt.T, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 9), V=st.integers(2, 7), block=st.integers(1, 4), threads=st.integers(1, 3),
       scale=st.sampled_from([1.0, 60.0]), seed=st.integers(0, 2**31))
def test_fused_output_layer_on_several_threads_and_with_large_logits_equals_the_plain_lines(N, V, block, threads,
                                                                                           scale, seed):
    """Row slices on threads (each with its own partial dE), and logits large enough to need the max shift."""
    rng = np.random.default_rng(seed)
    h, E = rng.normal(size=(N, 3)) * scale, rng.normal(size=(V, 3))
    t = rng.integers(0, V, N)
    t[rng.random(N) < 0.3] = -100
    previous_min = parallel.MIN_ELEMENTS_PER_THREAD
    parallel.MIN_ELEMENTS_PER_THREAD = 0                     # cut even these few rows into slices
    try:
        with parallel.num_threads(threads):
            loss, cache = fast.tied_output_cross_entropy_fast(h, E, t, rows_per_block=block)
    finally:
        parallel.MIN_ELEMENTS_PER_THREAD = previous_min
    dh, dE = fast.tied_output_cross_entropy_fast_backward(0.5, cache)
    z, lin_cache = F.linear(h, E.T)
    loss2, ce_cache = F.cross_entropy(z, t)
    dh2, dEt, _ = F.linear_backward(F.cross_entropy_backward(0.5, ce_cache), lin_cache)
    assert float(loss) == pytest.approx(float(loss2), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(dh, dh2, atol=1e-12)
    np.testing.assert_allclose(dE, dEt.T, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 2**31))
def test_gelu_fast_equals_gelu(shape, seed):
    rng = np.random.default_rng(seed)
    x, dy = rng.normal(size=shape) * 3, rng.normal(size=shape)
    y, cache = F.gelu(x)
    y2, cache2 = fast.gelu_fast(x)
    np.testing.assert_allclose(y2, y, atol=1e-12)
    np.testing.assert_allclose(fast.gelu_fast_backward(dy, cache2), F.gelu_backward(dy, cache), atol=1e-12)


def test_causal_objective_fused_and_plain_give_the_same_gradients():
    model = _tiny_model(0.0, dtype=np.float64)
    chunks = np.random.default_rng(4).integers(0, V, (3, 9))
    obj = CausalObjective()
    grads = []
    for fast_paths in (True, False):
        model.use_fast_paths(fast_paths)
        model.zero_grad()
        loss, n = obj.loss_and_backward(model, obj.make_batch(chunks, None, None))
        grads.append((loss, {k: p.grad.copy() for k, p in model.named_parameters()}))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-12) and n == 24
    for k in grads[0][1]:
        np.testing.assert_allclose(grads[0][1][k], grads[1][1][k], atol=1e-10, err_msg=k)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="steps"):
        PretrainConfig(steps=0)
    with pytest.raises(ValueError, match="objective"):
        PretrainConfig(objective="nope")
    with pytest.raises(ValueError, match="time_budget"):
        PretrainConfig(time_budget=-1)

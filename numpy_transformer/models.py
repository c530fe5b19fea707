r"""Whole models: a sequence classifier and a causal language model, built from `nn` modules.

Shape legend (as in `functional.py`): B batch, T sequence length, D d_model,
H heads, F feed-forward width, V vocabulary size, C number of classes,
L number of layers.

Both models read the same way, top to bottom::

    x = Embedding(ids) * sqrt(D)     # (B, T) -> (B, T, D)   Vaswani et al. §3.4
    x = Dropout(x + PE[:T])          # (B, T, D)             seed §4.1 items 1-2
    h = TransformerEncoder(x, mask)  # (B, T, D)             L blocks (errata E2)
    ...                              # classifier: pool, then Linear -> (B, C)   (errata E4)
                                     # language model: h E^T -> (B, T, V)        (causal mask, errata E6)

``forward`` validates its input and keeps every cache; ``backward(dlogits)``
runs the same steps in reverse, accumulates every parameter's gradient and
returns the gradient with respect to the embedding output (the ids, being
integers, have none). ``config`` / ``from_config`` rebuild a model from a
JSON-able dict, which is what `checkpoint.py` stores next to the state dict.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from . import functional as F
from .backend import get_array_module, to_numpy
from .nn import Dropout, Embedding, Linear, Module, PositionalEncoding, TransformerEncoder

__all__ = ["TransformerClassifier", "TransformerLM"]


def _check_ids_and_mask(ids, mask, vocab_size, max_len):
    """Validate a batch of token ids (B, T) and its optional boolean mask (B, T).

    Every message names the argument, what was expected and what was found,
    so a student who passes a list, floats, a 1-D sentence or a too-long text
    learns exactly what to change.
    """
    if not hasattr(ids, "dtype") or ids.dtype.kind not in "iu":
        got = f"dtype {ids.dtype}" if hasattr(ids, "dtype") else type(ids).__name__
        raise TypeError(f"ids: expected an integer array of token ids (B, T), got {got}")
    if ids.ndim != 2:
        raise ValueError(f"ids: expected a 2-D array (B, T) - use ids[None] for one sequence - "
                         f"got shape {tuple(ids.shape)}")
    B, T = ids.shape
    if B < 1 or T < 1:
        raise ValueError(f"ids: expected at least one sequence of at least one token, got shape {(B, T)}")
    if T > max_len:
        raise ValueError(f"ids: sequence length T={T} is longer than max_len={max_len}; "
                         f"crop the input or build the model with a larger max_len")
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(bad.any()):
        b, t = (int(i) for i in np.argwhere(to_numpy(bad))[0])
        raise ValueError(f"ids: expected token ids in [0, {vocab_size}) (vocab_size={vocab_size}), "
                         f"got {int(ids[b, t])} at position ({b}, {t})")
    if mask is None:
        return
    if getattr(mask, "dtype", None) != bool:
        got = f"dtype {mask.dtype}" if hasattr(mask, "dtype") else type(mask).__name__
        raise TypeError(f"mask: expected a boolean array (True = real token), got {got}")
    if tuple(mask.shape) != (B, T):
        raise ValueError(f"mask: expected the shape of ids {(B, T)}, got {tuple(mask.shape)}")
    empty = ~mask.any(axis=1)
    if bool(empty.any()):
        b = int(np.flatnonzero(to_numpy(empty))[0])
        raise ValueError(f"mask: expected at least one real token (True) in every row, got row {b} all False")


class _TransformerBase(Module):
    """What both models share: embedding, positional encoding, dropout, encoder; config round trip."""

    def _build_trunk(self, vocab_size, d_model, n_heads, n_layers, d_ff, max_len, dropout, norm, pos_encoding,
                     activation, scale_embeddings, rng, dtype, attention_dropout=0.0, attention_options=None):
        self.vocab_size, self.d_model, self.max_len = vocab_size, d_model, max_len
        self.scale_embeddings = scale_embeddings
        self.embed = Embedding(vocab_size, d_model, rng=rng, dtype=dtype)
        self.pos = PositionalEncoding(max_len, d_model, kind=pos_encoding, rng=rng, dtype=dtype)
        self.drop = Dropout(dropout, rng)
        options = dict(attention_options or {})
        if pos_encoding in PositionalEncoding.RELATIVE:      # RoPE, ALiBi: positions inside every attention layer
            options["position"] = pos_encoding
        self.encoder = TransformerEncoder(n_layers, d_model, n_heads, d_ff, dropout=dropout, norm=norm,
                                          activation=activation, attention_dropout=attention_dropout, rng=rng,
                                          dtype=dtype, attention_options=options)
        # sqrt(D) as a Python float: a NumPy float64 scalar would upcast float32 activations.
        self._embed_scale = math.sqrt(d_model) if scale_embeddings else 1.0

    ATTENTIONS = ("full", "local")

    def _local_options(self, attention, window, global_tokens, causal):
        """Check the long-text options; save them in the config only when used (old checkpoints stay valid)."""
        if attention not in self.ATTENTIONS:
            raise ValueError(f"attention: expected one of {list(self.ATTENTIONS)}, got {attention!r}")
        if attention == "full":
            if window is not None or global_tokens:
                raise ValueError(f"window, global_tokens: only for attention='local', got window={window!r}, "
                                 f"global_tokens={global_tokens!r} with attention='full'")
            return {}
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
            raise ValueError(f"window: expected a positive integer with attention='local', got {window!r}")
        self._config.update(attention="local", window=int(window), global_tokens=int(global_tokens))
        return dict(local_window=int(window), local_causal=causal, global_tokens=int(global_tokens))

    def _xp(self):
        return get_array_module(self.embed.E.data)

    def _embed_forward(self, ids):
        """ids (B, T) -> x (B, T, D) = Dropout(E[ids] * sqrt(D) + PE[:T])."""
        x = self.embed(ids)                                   # (B, T) -> (B, T, D)
        if self.scale_embeddings:
            x = x * self._embed_scale
        return self.drop(self.pos(x))                         # (B, T, D)

    def _embed_backward(self, dx):
        """Gradient (B, T, D) through dropout and PE to the embedding output; accumulates dE."""
        dx = self.pos.backward(self.drop.backward(dx))
        # in the forward pass this was: x = E[ids] * sqrt(D)
        demb = dx * self._embed_scale if self.scale_embeddings else dx
        self.embed.backward(demb)
        return demb

    @property
    def attention_weights(self):
        """[(B, H, T, T)] * L: the attention weights of every layer from the last forward."""
        return self.encoder.attention_weights

    @property
    def config(self):
        """The constructor arguments as a JSON-able dict (dtype as a string)."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config):
        """Rebuild a model from `config` (the seed inside it gives the same initial weights)."""
        kwargs = dict(config)
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"config: expected keys among {sorted(known)} for {cls.__name__}, "
                             f"got unknown keys {unknown}")
        if "dtype" in kwargs:
            kwargs["dtype"] = np.dtype(kwargs["dtype"]).type
        return cls(**kwargs)

    def _restore_mode_after(self, fn):
        was_training = self.training
        self.eval()
        try:
            return fn()
        finally:
            self.train(was_training)


class TransformerClassifier(_TransformerBase):
    r"""Sequence classifier: Transformer encoder, pool the sequence to one vector, then a linear layer.

    .. math::
        X = \mathrm{Drop}(E[\mathrm{ids}]\sqrt{D} + PE), \quad
        H = \mathrm{Encoder}(X, M), \quad
        z = \mathrm{pool}(H)\, W_c + b_c \in \mathbb R^{C}

    Pooling first is the fix for errata E4/C4: the seed applies the output
    layer to every token and so predicts one label per *character*. Here:

    * ``pooling="cls"`` — the vector at position 0, where the tokenizer puts
      [CLS] (BERT's choice); attention lets it gather the whole sentence.
    * ``pooling="mean"`` — the average over real tokens only,
      :math:`\sum_t m_t h_t / \sum_t m_t`; padding never enters it.

    Padding tokens are hidden as attention *keys* by the mask, so appending
    padding to a sentence does not change its logits.

    Args: vocab_size V, num_classes C; d_model D, n_heads H, n_layers L, d_ff F;
    max_len (the longest T); dropout; attention_dropout (on the attention
    weights, default 0: off); norm "post" | "pre" | "parallel"
    (errata E2); pos_encoding "sinusoidal" | "learned" | "seed" (E1) |
    "rope" | "alibi" (relative positions inside attention, the long-text chapter);
    attention "full" | "local" with window (w keys on each side) and
    global_tokens (the first n positions, e.g. [CLS], see and are seen by
    all; Longformer-style), the long-text chapter;
    pooling; activation "relu" | "gelu"; scale_embeddings (multiply the
    embedding by sqrt(D) as in Vaswani §3.4); seed (one Generator for the
    initial weights and, afterwards, the dropout masks); dtype.
    """

    POOLINGS = ("cls", "mean")

    def __init__(self, vocab_size, num_classes, d_model=128, n_heads=4, n_layers=2, d_ff=512, max_len=128,
                 dropout=0.1, norm="pre", pos_encoding="sinusoidal", pooling="cls", activation="relu",
                 scale_embeddings=True, seed=0, dtype=np.float32, attention_dropout=0.0, attention="full",
                 window=None, global_tokens=0):
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling: expected one of {list(self.POOLINGS)}, got {pooling!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
        self._config = dict(vocab_size=int(vocab_size), num_classes=int(num_classes), d_model=int(d_model),
                            n_heads=int(n_heads), n_layers=int(n_layers), d_ff=int(d_ff), max_len=int(max_len),
                            dropout=float(dropout), norm=norm, pos_encoding=pos_encoding, pooling=pooling,
                            activation=activation, scale_embeddings=bool(scale_embeddings), seed=int(seed),
                            dtype=np.dtype(dtype).name)
        if attention_dropout:           # saved only when used: older checkpoints and readers stay valid
            self._config["attention_dropout"] = float(attention_dropout)
        local = self._local_options(attention, window, global_tokens, causal=False)
        rng = np.random.default_rng(seed)
        self._build_trunk(vocab_size, d_model, n_heads, n_layers, d_ff, max_len, dropout, norm, pos_encoding,
                          activation, scale_embeddings, rng, dtype, attention_dropout, local)
        self.pooling = pooling
        self.num_classes = num_classes
        self.head = Linear(d_model, num_classes, rng=rng, dtype=dtype)
        self._cache = None

    def forward(self, ids, mask=None):
        """ids (B, T) int, mask (B, T) bool (True = real token) or None -> logits (B, C)."""
        _check_ids_and_mask(ids, mask, self.vocab_size, self.max_len)
        xp = self._xp()
        ids = xp.asarray(ids)
        if mask is not None:
            mask = xp.asarray(mask)
        if self.pooling == "cls" and mask is not None and not bool(mask[:, 0].all()):
            b = int(np.flatnonzero(~to_numpy(mask[:, 0]))[0])
            raise ValueError(f"mask: pooling='cls' reads position 0, which must be a real token ([CLS]); "
                             f"got mask[{b}, 0] = False (pad on the right)")
        x = self._embed_forward(ids)                                         # (B, T, D)
        # 1. the encoder; padding is hidden as a key from every query of every head
        h = self.encoder(x, None if mask is None else F.padding_mask(mask))  # (B, T, D), mask (B, 1, 1, T)
        # 2. pool the sequence to one vector per example (errata E4)
        if self.pooling == "cls":
            pooled, weights = h[:, 0], None                                  # (B, D)
        else:
            m = xp.ones(ids.shape, dtype=h.dtype) if mask is None else mask.astype(h.dtype)   # (B, T) 1 = real
            weights = m / m.sum(axis=1, keepdims=True)                       # (B, T), each row sums to 1
            pooled = (h * weights[:, :, None]).sum(axis=1)                   # (B, T, D) -> (B, D)
        # 3. one linear layer to the class scores
        logits = self.head(pooled)                                           # (B, D) -> (B, C)
        self._cache = (h.shape, weights)
        return logits

    def backward(self, dlogits):
        """dlogits (B, C) -> gradient w.r.t. the embedding output (B, T, D); accumulates every param.grad."""
        if self._cache is None:
            raise RuntimeError("TransformerClassifier.backward: call forward first")
        h_shape, weights = self._cache
        dpooled = self.head.backward(dlogits)                                # (B, D)
        if self.pooling == "cls":
            # in the forward pass this was: pooled = h[:, 0]
            dh = self._xp().zeros(h_shape, dtype=dpooled.dtype)              # (B, T, D)
            dh[:, 0] = dpooled
        else:
            # in the forward pass this was: pooled = sum_t weights[:, t] * h[:, t]
            dh = weights[:, :, None] * dpooled[:, None, :]                   # (B, T, D), zero at padding
        return self._embed_backward(self.encoder.backward(dh))

    def predict_proba(self, ids, mask=None):
        """Class probabilities (B, C) as a NumPy array, computed in eval mode (no dropout).

        The model's train/eval mode is restored afterwards.
        """
        def run():
            probs, _ = F.softmax(self.forward(ids, mask), axis=-1)
            return to_numpy(probs)
        return self._restore_mode_after(run)


class TransformerLM(_TransformerBase):
    r"""Decoder-only (GPT-style) language model: predict token t+1 from tokens <= t.

    .. math::
        X = \mathrm{Drop}(E[\mathrm{ids}]\sqrt{D} + PE), \quad
        H = \mathrm{Encoder}(X, M_{causal} \wedge M_{pad}), \quad
        z = H E^\top \ (\text{tied}) \ \text{or}\ H W_{out} \in \mathbb R^{T \times V}

    The causal mask is always on: token t may attend to tokens <= t only.
    Without it the model sees the answer during training, its loss falls to
    almost zero, and generation fails (errata E6: the seed's text-generation
    steps never mention masking).

    ``tie_weights=True`` (Vaswani §3.4; Press & Wolf 2017) reuses the input
    embedding ``E`` (V, D) as the output layer, ``logits = h E^T``. ``E``
    then receives gradient from *both* uses, and both add (``+=``) into
    ``E.grad``. The output layer has no bias either way, as in GPT-2.
    """

    def __init__(self, vocab_size, d_model=128, n_heads=4, n_layers=2, d_ff=512, max_len=128, dropout=0.1,
                 norm="pre", pos_encoding="sinusoidal", tie_weights=True, activation="gelu",
                 scale_embeddings=True, seed=0, dtype=np.float32, attention_dropout=0.0, attention="full",
                 window=None, global_tokens=0):
        super().__init__()
        self._config = dict(vocab_size=int(vocab_size), d_model=int(d_model), n_heads=int(n_heads),
                            n_layers=int(n_layers), d_ff=int(d_ff), max_len=int(max_len), dropout=float(dropout),
                            norm=norm, pos_encoding=pos_encoding, tie_weights=bool(tie_weights),
                            activation=activation, scale_embeddings=bool(scale_embeddings), seed=int(seed),
                            dtype=np.dtype(dtype).name)
        if attention_dropout:
            self._config["attention_dropout"] = float(attention_dropout)
        local = self._local_options(attention, window, global_tokens, causal=True)
        self._local = bool(local)
        rng = np.random.default_rng(seed)
        self._build_trunk(vocab_size, d_model, n_heads, n_layers, d_ff, max_len, dropout, norm, pos_encoding,
                          activation, scale_embeddings, rng, dtype, attention_dropout, local)
        self.tie_weights = bool(tie_weights)
        if not self.tie_weights:
            self.head = Linear(d_model, vocab_size, bias=False, rng=rng, dtype=dtype)
        self._cache = None

    def forward_hidden(self, ids, mask=None):
        """ids (B, T) -> h (B, T, D): everything but the output layer (a fused loss reads h directly)."""
        _check_ids_and_mask(ids, mask, self.vocab_size, self.max_len)
        xp = self._xp()
        ids = xp.asarray(ids)
        T = ids.shape[1]
        # with local attention the causal band lives in every attention layer (no (T, T) mask here)
        attend = None if self._local else xp.asarray(F.causal_mask(T))      # (T, T)
        if mask is not None:
            padding = F.padding_mask(xp.asarray(mask))                      # (B, 1, 1, T)
            attend = padding if attend is None else attend & padding        # (T, T) & (B, 1, 1, T) -> (B, 1, T, T)
        x = self._embed_forward(ids)                                        # (B, T, D)
        return self.encoder(x, attend)                                      # (B, T, D)

    def backward_hidden(self, dh):
        """dh (B, T, D) -> gradient w.r.t. the embedding output; the backward of `forward_hidden`."""
        return self._embed_backward(self.encoder.backward(dh))

    def forward(self, ids, mask=None):
        """ids (B, T) int, mask (B, T) bool (True = real token) or None -> logits (B, T, V)."""
        h = self.forward_hidden(ids, mask)                                  # (B, T, D)
        if self.tie_weights:
            B, T, D = h.shape
            # logits = h E^T: the embedding table read backwards
            logits, head_cache = F.linear(h.reshape(B * T, D), self.embed.E.data.T)   # (B*T, D) -> (B*T, V)
            logits = logits.reshape(B, T, -1)                               # (B, T, V)
            self._cache = head_cache
        else:
            logits = self.head(h)                                           # (B, T, D) -> (B, T, V)
            self._cache = True
        return logits

    @property
    def supports_kv_cache(self) -> bool:
        """True when `forward_cached` computes what `forward` does: absolute positions and full attention.

        RoPE and ALiBi act inside attention and local attention limits the keys;
        the cached path implements none of them yet, so those models decode
        without the cache (generation.Decoder falls back by itself).
        """
        return (self.config["pos_encoding"] not in PositionalEncoding.RELATIVE
                and self.config.get("attention", "full") == "full")

    def forward_cached(self, ids, kvs=None, start=0):
        """Logits of new tokens only, reusing the keys and values of the tokens before them (generation.py).

        ids (B, Tn) are the tokens at positions ``start .. start + Tn - 1``;
        ``kvs`` holds every layer's keys and values of positions ``0 ..
        start - 1`` (None when ``start`` is 0). Returns logits (B, Tn, V) and
        the extended caches. Call in eval mode; there is no backward.
        """
        if self.training:
            raise RuntimeError("TransformerLM.forward_cached: call model.eval() first (no dropout when generating)")
        if not self.supports_kv_cache:
            raise ValueError(f"TransformerLM.forward_cached: the key/value cache handles absolute positions and full "
                             f"attention only, not pos_encoding={self.config['pos_encoding']!r} with "
                             f"attention={self.config.get('attention', 'full')!r}; decode without it (use_cache=False)")
        _check_ids_and_mask(ids, None, self.vocab_size, self.max_len)
        Tn = ids.shape[1]
        if start + Tn > self.max_len:
            raise ValueError(f"start: positions up to {start + Tn} do not fit max_len={self.max_len}; "
                             f"restart the cache on a shorter window")
        xp = self._xp()
        x = self.embed(xp.asarray(ids))                                      # (B, Tn, D)
        if self.scale_embeddings:
            x = x * self._embed_scale
        x = x + self.pos._pe()[start:start + Tn]                             # the positions of the new tokens
        h, kvs = self.encoder.forward_cached(x, kvs)                         # (B, Tn, D)
        W = self.embed.E.data if self.tie_weights else self.head.W.data.T   # (V, D)
        return h @ W.T, kvs                                                  # (B, Tn, V)

    def backward(self, dlogits):
        """dlogits (B, T, V) -> gradient w.r.t. the embedding output (B, T, D); accumulates every param.grad."""
        if self._cache is None:
            raise RuntimeError("TransformerLM.backward: call forward first")
        if self.tie_weights:
            B, T, V = dlogits.shape
            # in the forward pass this was: logits = h @ E^T, so dE gets dlogits^T h (the transpose of dW)
            dh, dEt, _ = F.linear_backward(dlogits.reshape(B * T, V), self._cache)     # (B*T, D), (D, V)
            self.embed.E.grad += dEt.T                                      # the first of E's two gradients
            dh = dh.reshape(B, T, -1)
        else:
            dh = self.head.backward(dlogits)
        return self._embed_backward(self.encoder.backward(dh))             # adds E's second gradient

    def generate(self, ids, max_new_tokens, rng, temperature=1.0, top_k=None, greedy=False):
        """Append ``max_new_tokens`` tokens to ``ids`` (B, T0), one at a time; returns (B, T0 + max_new_tokens).

        At each step the context is cropped to the last ``max_len`` tokens and
        the model's distribution for the next token is: the argmax
        (``greedy``), or a sample from ``softmax(logits / temperature)``,
        optionally restricted to the ``top_k`` most likely tokens. Sampling
        uses ``rng`` on the CPU, so a seed reproduces the text. Runs in eval
        mode (no dropout), and recomputes the whole context at every step:
        simple, not fast (there is no key/value cache).
        """
        if not isinstance(rng, np.random.Generator) and not greedy:
            raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens: expected a non-negative integer, got {max_new_tokens!r}")
        if not temperature > 0:
            raise ValueError(f"temperature: expected a positive number, got {temperature}")
        if top_k is not None and not 1 <= top_k <= self.vocab_size:
            raise ValueError(f"top_k: expected None or an integer in [1, {self.vocab_size}], got {top_k}")
        ids = np.asarray(to_numpy(ids))
        _check_ids_and_mask(ids[:, -self.max_len:] if ids.ndim == 2 else ids, None, self.vocab_size, self.max_len)

        def run():
            out = ids
            for _ in range(max_new_tokens):
                logits = to_numpy(self.forward(out[:, -self.max_len:])[:, -1]).astype(np.float64)  # (B, V)
                if greedy:
                    nxt = logits.argmax(axis=-1)                                           # (B,)
                else:
                    z = logits / temperature
                    if top_k is not None:
                        kth = np.partition(z, -top_k, axis=-1)[:, -top_k, None]            # (B, 1)
                        z = np.where(z < kth, -np.inf, z)
                    p, _ = F.softmax(z, axis=-1)                                           # (B, V)
                    # inverse-CDF sampling: the first token whose cumulative probability exceeds u.
                    # Scaling u by the last cumsum (1 up to rounding) keeps it below the total, so
                    # the answer is always a token of non-zero probability.
                    cdf = p.cumsum(axis=-1)                                                # (B, V)
                    u = rng.random((p.shape[0], 1)) * cdf[:, -1:]                          # (B, 1)
                    nxt = (cdf <= u).sum(axis=-1)                                          # (B,)
                out = np.concatenate([out, nxt[:, None].astype(out.dtype)], axis=1)        # (B, T + 1)
            return out
        return self._restore_mode_after(run)

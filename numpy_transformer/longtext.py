r"""Long text (seed §3.3): classifying reviews longer than the model's window.

The article names the Transformer's weakness: attention costs T² in time and
memory, so a model is trained with a fixed ``max_len`` and a longer review
must be cut. What people actually do, from the simplest:

* **Truncation** (what `train.evaluate` does): keep the first ``max_len``
  tokens, [CLS] included.
* **Head + tail** (Sun et al. 2019, "How to fine-tune BERT for text
  classification?"): keep the first quarter and the last three quarters of
  the budget; the end of a review often holds its verdict. `head_tail`.
* **Chunking with overlap**: cut the review into windows of ``max_len``
  ([CLS] + ``max_len - 1`` characters) every ``stride`` characters, classify
  every window with the same model, then combine the windows' outputs:

  - ``mean``: the average of the chunks' logits;
  - ``max``: each class's largest logit over the chunks;
  - ``attention``: a learned attention pooling over the chunks' pooled
    vectors :math:`h_c` (D,), then the model's own output layer:

    .. math::
        s_c = h_c \cdot u, \quad a = \mathrm{softmax}_c(s), \quad
        \bar h = \textstyle\sum_c a_c h_c, \quad z = \bar h W + b

    with its backward (`chunk_attention_pool_backward`), gradient-checked in
    tests/test_longtext.py. One vector ``u`` (D,) is learned; with ``u = 0``
    it is the mean of the chunk vectors.

Inside the model, `functional.rope` / `functional.alibi_bias` (relative
positions) and `local_attention` (a sliding window whose cost grows as T·w)
are the other half of the chapter; this module holds the pieces around the
model and the command-line flags that select them.

Shapes: N documents, K chunks in all (``owner`` (K,) says whose), D, C.
"""

from __future__ import annotations


import numpy as np

from . import functional as F
from .backend import to_numpy
from .tokenizer import CLS_ID, PAD_ID

__all__ = ["MODES", "AGGREGATES", "head_tail", "chunk_starts", "chunk_ids", "encode_long", "aggregate_logits",
           "chunk_attention_pool", "chunk_attention_pool_backward", "chunk_features", "fit_attention_pool",
           "predict_long", "evaluate_long", "compare_on_long", "model_options", "add_model_flags", "add_long_flags", "long_options"]

MODES = ("truncate", "head-tail", "chunk")
AGGREGATES = ("mean", "max", "attention")


# --------------------------------------------------------------------------- #
# Cutting a long text to fit
# --------------------------------------------------------------------------- #

def head_tail(body, budget, head_fraction=0.25):
    """Keep the first ``round(head_fraction * budget)`` and the last ``budget - head`` items of ``body``.

    Sun et al. 2019 keep 128 + 382 of BERT's 510 tokens: about a quarter
    from the head. A body that fits is returned unchanged.
    """
    if budget < 1:
        raise ValueError(f"budget: expected a positive number of tokens, got {budget}")
    if len(body) <= budget:
        return list(body)
    head = int(round(head_fraction * budget))
    tail = budget - head
    return list(body[:head]) + (list(body[-tail:]) if tail else [])


def chunk_starts(n, max_len, stride):
    """Where the chunks of a body of ``n`` characters start (see `chunk_ids`)."""
    room = max_len - 1
    if room < 1:
        raise ValueError(f"max_len: expected at least 2 ([CLS] and one character), got {max_len}")
    if not 1 <= stride <= room:
        raise ValueError(f"stride: expected an integer in [1, max_len - 1 = {room}], got {stride}")
    if n <= room:
        return [0]
    return list(range(0, n - room, stride)) + [n - room]


def chunk_ids(body, max_len, stride):
    """Windows of ``max_len - 1`` items of ``body`` starting every ``stride`` items, each led by [CLS].

    The last window ends at the end of ``body`` (it may overlap its
    neighbour more than the others do), so every character is in some chunk.
    A body that fits gives one chunk. Returns a list of id lists.
    """
    room = max_len - 1
    return [[CLS_ID] + list(body[s:s + room]) for s in chunk_starts(len(body), max_len, stride)]


def default_stride(max_len):
    """Half a window: every character is read twice, once near each end of a window."""
    return max(1, (max_len - 1) // 2)


def encode_long(tokenizer, texts, max_len, mode="truncate", stride=None):
    """Encode texts for a classifier of window ``max_len``: (ids (K, T), mask (K, T), owner (K,)).

    ``truncate`` and ``head-tail`` give one row per text (owner = arange);
    ``chunk`` gives one row per chunk (``stride`` defaults to half a window).
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}")
    rows, owner = [], []
    for n, text in enumerate(texts):
        body = tokenizer.encode(text)                                   # characters only, no [CLS]
        if mode == "truncate":
            pieces = [[CLS_ID] + body[:max_len - 1]]
        elif mode == "head-tail":
            pieces = [[CLS_ID] + head_tail(body, max_len - 1)]
        else:
            pieces = chunk_ids(body, max_len, stride or default_stride(max_len))
        rows += pieces
        owner += [n] * len(pieces)
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), PAD_ID, dtype=np.int64)                 # (K, T)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = r
    mask = ids != PAD_ID                                                 # (K, T); [CLS] is never PAD
    mask[:, 0] = True
    return ids, mask, np.asarray(owner, dtype=np.int64)


# --------------------------------------------------------------------------- #
# Combining the chunks
# --------------------------------------------------------------------------- #

def aggregate_logits(logits, owner, how="mean"):
    """Per-document logits (N, C) from per-chunk logits (K, C): mean or per-class max over each document's chunks."""
    if how not in ("mean", "max"):
        raise ValueError(f"how: expected 'mean' or 'max', got {how!r}")
    logits = np.asarray(logits, dtype=np.float64)
    N = int(owner.max()) + 1
    if how == "mean":
        total = np.zeros((N, logits.shape[1]))
        np.add.at(total, owner, logits)
        return total / np.bincount(owner, minlength=N)[:, None]
    out = np.full((N, logits.shape[1]), -np.inf)
    np.maximum.at(out, owner, logits)
    return out


def chunk_attention_pool(h, owner, u):
    r"""Attention pooling over each document's chunks: :math:`\bar h_n = \sum_{c \in n} a_c h_c`.

    .. math:: s_c = h_c \cdot u, \qquad a_c = \frac{e^{s_c}}{\sum_{c' \in n} e^{s_{c'}}}

    A softmax per document (a "segment softmax": the chunks of one review
    compete only with each other). Args: h (K, D) chunk vectors; owner (K,)
    document of each chunk, values 0 .. N-1 (every document has a chunk);
    u (D,). Returns: pooled (N, D); weights a (K,); cache.
    """
    F._check_float("h", h)
    F._check_float("u", u)
    if u.shape != (h.shape[1],):
        raise ValueError(f"u: expected shape ({h.shape[1]},), got {tuple(u.shape)}")
    owner = np.asarray(owner)
    if owner.shape != (h.shape[0],):
        raise ValueError(f"owner: expected one document index per chunk, shape ({h.shape[0]},), got {owner.shape}")
    N = int(owner.max()) + 1
    s = h @ u                                                           # (K,)
    m = np.full(N, -np.inf)
    np.maximum.at(m, owner, s)                                          # (N,) per-document max (stability)
    e = np.exp(s - m[owner])                                            # (K,)
    total = np.zeros(N)
    np.add.at(total, owner, e)
    a = e / total[owner]                                                # (K,), sums to 1 per document
    pooled = np.zeros((N, h.shape[1]), dtype=h.dtype)
    np.add.at(pooled, owner, a[:, None] * h)                            # (N, D)
    return pooled, a, (h, owner, u, a)


def chunk_attention_pool_backward(dpooled, cache):
    r"""Gradients of `chunk_attention_pool`: (dh (K, D), du (D,)).

    .. math::
        dh_c = a_c\, d\bar h_n + ds_c\, u, \quad du = \textstyle\sum_c ds_c h_c, \quad
        ds_c = a_c\big(d\bar h_n \cdot h_c - \textstyle\sum_{c' \in n} a_{c'}\, d\bar h_n \cdot h_{c'}\big)

    The softmax backward of `functional.softmax_backward`, one document at a time.
    """
    h, owner, u, a = cache
    dpooled_c = dpooled[owner]                                          # (K, D): each chunk's document gradient
    # in the forward pass this was: pooled_n = sum_c a_c h_c
    da = (dpooled_c * h).sum(axis=1)                                    # (K,)
    dh = a[:, None] * dpooled_c
    # in the forward pass this was: a = segment softmax(s)
    weighted = np.zeros(int(owner.max()) + 1)
    np.add.at(weighted, owner, a * da)                                  # (N,) = sum_c a_c da_c
    ds = a * (da - weighted[owner])                                     # (K,)
    # in the forward pass this was: s = h @ u
    dh = dh + ds[:, None] * u[None, :]
    du = ds @ h                                                         # (D,)
    return dh, du


def _pooled_vectors(model, ids, mask):
    """The classifier's pooled vector (K, D), the input of its output layer (read from the head's cache)."""
    model.eval()
    model(ids, mask)
    x, _, _ = model.head._cache                                         # linear cache: (x, W, has_bias)
    return np.asarray(to_numpy(x), dtype=np.float64)


def chunk_features(model, tokenizer, texts, max_len, stride=None, batch_size=128):
    """Pooled vectors of every chunk of every text: (h (K, D), owner (K,))."""
    ids, mask, owner = encode_long(tokenizer, texts, max_len, "chunk", stride)
    lengths = mask.sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    h = np.zeros((len(ids), model.d_model))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        T = int(lengths[idx].max())
        h[idx] = _pooled_vectors(model, ids[idx, :T], mask[idx, :T])
    return h, owner


def fit_attention_pool(model, tokenizer, texts, labels, max_len, stride=None, steps=300, lr=0.05, seed=0,
                       batch_size=64, log=None):
    """Learn the chunk-attention vector ``u`` and fine-tune the output layer on frozen chunk vectors.

    The encoder is frozen: the chunk vectors are computed once, then ``u``
    and the head (W, b) are trained by Adam on the cross-entropy of the
    pooled logits for ``steps`` steps (a budget in steps, the same result on
    every machine). The model's head is updated in place. Returns u (D,).
    """
    from .optim import Adam
    from .nn import Parameter
    h, owner = chunk_features(model, tokenizer, texts, max_len, stride)
    labels = np.asarray(labels)
    u = Parameter(np.zeros(model.d_model))
    W = Parameter(np.asarray(to_numpy(model.head.W.data), dtype=np.float64).copy())
    b = Parameter(np.asarray(to_numpy(model.head.b.data), dtype=np.float64).copy())
    opt = Adam([u, W, b], lr=lr)
    rng = np.random.default_rng(seed)
    docs_of = [np.flatnonzero(owner == n) for n in range(len(labels))]
    for step in range(steps):
        docs = rng.choice(len(labels), size=min(batch_size, len(labels)), replace=False)
        rows = np.concatenate([docs_of[n] for n in docs])
        local_owner = np.repeat(np.arange(len(docs)), [len(docs_of[n]) for n in docs])
        pooled, _, cache = chunk_attention_pool(h[rows], local_owner, u.data)
        logits, lin_cache = F.linear(pooled, W.data, b.data)
        loss, ce_cache = F.cross_entropy(logits, labels[docs])
        dpooled, dW, db = F.linear_backward(F.cross_entropy_backward(1.0, ce_cache), lin_cache)
        _, du = chunk_attention_pool_backward(dpooled, cache)
        for p, g in ((u, du), (W, dW), (b, db)):
            p.grad[...] = g
        opt.step()
        if log and (step + 1) % 100 == 0:
            log(f"attention pool step {step + 1}: loss {float(loss):.4f}")
    dtype = model.head.W.data.dtype
    model.head.W.data[...] = W.data.astype(dtype)
    model.head.b.data[...] = b.data.astype(dtype)
    return u.data.copy()


# --------------------------------------------------------------------------- #
# Predicting and evaluating long texts
# --------------------------------------------------------------------------- #

def predict_long(model, tokenizer, texts, max_len=None, mode="truncate", stride=None, aggregate="mean",
                 pool_u=None, batch_size=128):
    """Class probabilities (N, C) of each text, with the chosen way of fitting it into the window.

    Also returns the per-chunk logits and owners (for `chunk` mode: which
    chunk drove the decision). ``aggregate="attention"`` needs ``pool_u``
    (from `fit_attention_pool`).
    """
    max_len = max_len or model.config["max_len"]
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate: expected one of {list(AGGREGATES)}, got {aggregate!r}")
    if mode == "chunk" and aggregate == "attention":
        if pool_u is None:
            raise ValueError("pool_u: aggregate='attention' needs the learned chunk-attention vector "
                             "(train with --long chunk --aggregate attention)")
        h, owner = chunk_features(model, tokenizer, texts, max_len, stride, batch_size)
        pooled, a, _ = chunk_attention_pool(h, owner, np.asarray(pool_u, dtype=np.float64))
        W = np.asarray(to_numpy(model.head.W.data), dtype=np.float64)
        b = np.asarray(to_numpy(model.head.b.data), dtype=np.float64)
        probs, _ = F.softmax(pooled @ W + b)
        return probs, {"owner": owner, "chunk_weights": a, "chunk_logits": h @ W + b}
    ids, mask, owner = encode_long(tokenizer, texts, max_len, mode, stride)
    lengths = mask.sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    logits = np.zeros((len(ids), model.config["num_classes"]))
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        T = int(lengths[idx].max())
        logits[idx] = to_numpy(model(ids[idx, :T], mask[idx, :T]))
    model.train(was_training)
    doc_logits = aggregate_logits(logits, owner, aggregate if mode == "chunk" else "mean")
    probs, _ = F.softmax(doc_logits)
    return probs, {"owner": owner, "chunk_logits": logits}


def evaluate_long(model, data, tokenizer, max_len=None, mode="truncate", stride=None, aggregate="mean",
                  pool_u=None):
    """`metrics.all_metrics` of `predict_long`'s predictions on a `Dataset` (plus ``probs``)."""
    from . import metrics
    probs, _ = predict_long(model, tokenizer, data.texts, max_len, mode, stride, aggregate, pool_u)
    result = metrics.all_metrics(data.labels, probs.argmax(axis=1),
                                 probs[:, 1] if probs.shape[1] == 2 and len(np.unique(data.labels)) == 2 else None)
    result["probs"] = probs
    return result


def compare_on_long(model, tokenizer, data, max_len=None, stride=None, pool_u=None):
    """Metrics of every reading of the long texts in ``data``: {name: metrics}, the table of the README."""
    readings = [("truncate", "truncate", "mean"), ("head-tail", "head-tail", "mean"),
                ("chunk, mean of logits", "chunk", "mean"), ("chunk, max", "chunk", "max")]
    if pool_u is not None:
        readings.append(("chunk, attention pool", "chunk", "attention"))
    return {name: evaluate_long(model, data, tokenizer, max_len, mode, stride, how, pool_u)
            for name, mode, how in readings}


# --------------------------------------------------------------------------- #
# Command-line flags (used by cli.py; kept here so the CLI diff stays small)
# --------------------------------------------------------------------------- #

def add_model_flags(group):
    """Model flags of the long-text chapter: relative positions and local attention."""
    group.add_argument("--pos-encoding", choices=["sinusoidal", "learned", "rope", "alibi"], default="sinusoidal",
                       help="positions: added sinusoidal/learned table, or RoPE/ALiBi inside attention "
                            "(default sinusoidal)")
    group.add_argument("--attention", choices=["full", "local"], default="full",
                       help="full attention, or local: a sliding window of --window keys each side (default full)")
    group.add_argument("--window", type=int, default=None, help="keys each side of a query with --attention local")
    group.add_argument("--global-tokens", type=int, default=None,
                       help="with --attention local: the first N positions ([CLS]) see and are seen by all "
                            "(default 1)")


def model_options(args):
    """Model keyword arguments from the flags of `add_model_flags`; ValueError names a bad flag."""
    options = {"pos_encoding": getattr(args, "pos_encoding", "sinusoidal")}
    attention = getattr(args, "attention", "full")
    window, global_tokens = getattr(args, "window", None), getattr(args, "global_tokens", None)
    if attention == "full":
        if window is not None or global_tokens is not None:
            raise ValueError("--window/--global-tokens: only with --attention local")
        return options
    if window is None or window < 1:
        raise ValueError(f"--window: expected a positive integer with --attention local, got {window}")
    global_tokens = 1 if global_tokens is None else global_tokens
    if global_tokens < 0:
        raise ValueError(f"--global-tokens: expected an integer >= 0, got {global_tokens}")
    return {**options, "attention": "local", "window": window, "global_tokens": global_tokens}


def add_long_flags(parser):
    """How to read texts longer than max_len: --long, --stride, --aggregate."""
    g = parser.add_argument_group("long texts")
    g.add_argument("--long", choices=list(MODES), default=None,
                   help="texts longer than max_len: truncate (keep the start), head-tail (Sun et al. 2019), or "
                        "chunk (windows with overlap; default: what the checkpoint was trained with, else truncate)")
    g.add_argument("--stride", type=int, default=None, help="with --long chunk: characters between chunk starts "
                                                             "(default half a window)")
    g.add_argument("--aggregate", choices=list(AGGREGATES), default=None,
                   help="with --long chunk: combine the chunks by the mean of logits, their max, or a learned "
                        "attention pooling (trained by `train`; default mean)")


def chunk_texts(tokenizer, text, max_len, stride=None):
    """The characters of each chunk of ``text`` (normalised as the tokenizer reads it), for plotting."""
    from .tokenizer import normalize
    body = normalize(text)
    room = max_len - 1
    return [body[s:s + room] for s in chunk_starts(len(body), max_len, stride or default_stride(max_len))]


def long_options(args, saved=None, max_len=128):
    """(mode, stride, aggregate, pool_u) from the flags, falling back on a checkpoint's saved choice."""
    saved = saved or {}
    mode = getattr(args, "long", None) or saved.get("mode", "truncate")
    stride = getattr(args, "stride", None) or saved.get("stride")
    aggregate = getattr(args, "aggregate", None) or saved.get("aggregate", "mean")
    if mode != "chunk" and (getattr(args, "stride", None) or getattr(args, "aggregate", None)):
        raise ValueError("--stride/--aggregate: only with --long chunk")
    if stride is not None and not 1 <= stride <= max_len - 1:
        raise ValueError(f"--stride: expected an integer in [1, max_len - 1 = {max_len - 1}], got {stride}")
    pool_u = saved.get("attention_pool")
    if mode == "chunk" and aggregate == "attention" and pool_u is None and not getattr(args, "_training", False):
        raise ValueError("--aggregate attention: this checkpoint has no learned chunk pooling; train one with "
                         "`train --long chunk --aggregate attention`")
    return mode, stride, aggregate, pool_u

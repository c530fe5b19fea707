r"""Generating text with a causal language model (seed §1.4, §3.4, §6.1), with a key/value cache.

Shape legend: B rows (beams or samples), T tokens in the model's window, V vocabulary, L layers.

Generation is a loop: compute the distribution of the next token, choose
one, append it, repeat until ``[EOS]`` or ``max_new_tokens``. The choosing:

* **greedy** — the most likely token; deterministic, and prone to loops.
* **sampling** with a **temperature** τ: :math:`p \propto \exp(z/\tau)`;
  τ < 1 sharpens the distribution, τ > 1 flattens it.
* **top-k** (Fan et al. 2018): sample among the k most likely tokens only.
* **top-p**, nucleus sampling (Holtzman et al. 2020): sort by probability and
  keep the smallest prefix whose total reaches p — the token that crosses p
  is kept — then renormalise; the candidate set grows when the model is
  unsure and shrinks when it is sure.
* a **repetition penalty** (Keskar et al. 2019, CTRL): the logit of every
  token already in the text is divided by θ > 1 if positive, multiplied by θ
  if negative.
* **beam search** keeps the ``num_beams`` most likely partial texts; their
  scores are sums of log-probabilities, so longer texts always look worse,
  and finished texts are compared by the length-normalised score
  :math:`\frac{1}{|y|^\alpha}\sum_t \log p(y_t \mid y_{<t})` (Wu et al. 2016
  normalise by a similar power of the length).

Every random choice reads the ``numpy.random.Generator`` it is given, on the
CPU, in float64: a seed reproduces the text on every machine.

The key/value cache
-------------------
Without a cache, every new token runs the model over the whole window again:
T rows of every projection and T x T attention scores, to use only the last
row. With it (`TransformerLM.forward_cached`), each attention layer keeps the
keys and values of the tokens it has already seen, and a new token costs one
row: its own projections and one row of attention against the cached keys.
The outputs are the same numbers (tests/test_generation.py checks the logits
to 1e-10 in float64).

Texts longer than the window
----------------------------
The model has absolute positions 0 .. max_len - 1, so a cache cannot simply
slide: every cached key was computed at its old position. Both decoders
therefore follow one rule: the window starts at ``start``; a prompt longer
than ``max_len`` keeps its last ``max_len`` tokens; when the window is full,
it *restarts* on its last ``max_len // 2`` tokens (the cached decoder
re-encodes them in one pass, then continues one row at a time). The uncached
decoder recomputes the same window at every step, so both give the same
logits and the same text; the cached one pays the full price only once every
``max_len // 2`` tokens.
"""

from __future__ import annotations


import numpy as np

from . import functional as F
from .backend import to_numpy
from .tokenizer import EOS_ID

__all__ = ["STRATEGIES", "Decoder", "apply_repetition_penalty", "apply_temperature", "top_k_filter",
           "top_p_filter", "sample", "generate", "beam_search"]

STRATEGIES = ("greedy", "sample", "top-k", "top-p", "beam")


# --------------------------------------------------------------------------- #
# Reshaping the next-token distribution
# --------------------------------------------------------------------------- #

def apply_repetition_penalty(logits, previous, penalty):
    r"""CTRL's penalty: for every token in ``previous``, :math:`z \leftarrow z/\theta` if z > 0 else :math:`z\theta`.

    logits (V,) or (B, V); previous: the ids already in the text (a list, or one list per row).
    """
    if not penalty > 0:
        raise ValueError(f"penalty: expected a positive number (1 = off), got {penalty}")
    z = np.array(logits, dtype=np.float64)
    if penalty == 1.0:
        return z
    rows = z[None] if z.ndim == 1 else z
    prev = [previous] if z.ndim == 1 else previous
    for row, ids in zip(rows, prev):
        seen = np.unique(np.asarray(ids, dtype=np.int64))
        row[seen] = np.where(row[seen] > 0, row[seen] / penalty, row[seen] * penalty)
    return z


def apply_temperature(logits, temperature):
    """``logits / temperature`` (float64); temperature must be > 0."""
    if not temperature > 0:
        raise ValueError(f"temperature: expected a number > 0, got {temperature}")
    return np.asarray(logits, dtype=np.float64) / temperature


def top_k_filter(logits, k):
    """Keep the ``k`` largest logits of each row, set the rest to -inf (ties at the k-th value are kept)."""
    z = np.array(logits, dtype=np.float64)
    V = z.shape[-1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= V:
        raise ValueError(f"top_k: expected an integer in [1, {V}] (the vocabulary size), got {k!r}")
    kth = np.partition(z, V - k, axis=-1)[..., V - k, None]             # the k-th largest value
    return np.where(z < kth, -np.inf, z)


def top_p_filter(probs, p):
    """Nucleus: keep the smallest set of most likely tokens whose probabilities sum to >= p; renormalise.

    probs (V,) or (B, V), rows summing to 1. Sorted from most to least
    likely, token j is kept when the probability *before* it is < p, so the
    token that crosses p is kept and at least one token always is. Returns
    the filtered, renormalised probabilities.
    """
    if not 0 < p <= 1:
        raise ValueError(f"top_p: expected a number in (0, 1], got {p}")
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, axis=-1, kind="stable")                  # most likely first
    sorted_p = np.take_along_axis(probs, order, axis=-1)
    before = np.cumsum(sorted_p, axis=-1) - sorted_p                   # mass of the tokens ranked above
    keep_sorted = before < p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    kept = np.where(keep, probs, 0.0)
    return kept / kept.sum(axis=-1, keepdims=True)


def sample(probs, rng):
    """One id per row drawn from ``probs`` (V,) or (B, V) by inverse-CDF with ``rng.random()``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    cdf = np.cumsum(p, axis=-1)                                         # (B, V)
    u = rng.random((p.shape[0], 1)) * cdf[:, -1:]                       # scaled so that u < total
    ids = np.minimum((cdf <= u).sum(axis=-1), p.shape[-1] - 1)
    return ids if np.ndim(probs) == 2 else int(ids[0])


# --------------------------------------------------------------------------- #
# The decoder: next-token logits with or without the cache
# --------------------------------------------------------------------------- #

class Decoder:
    """Feeds a `TransformerLM` one token at a time and returns the next-token logits (B, V) in float64.

    ``use_cache=True`` keeps every layer's keys and values (one row per new
    token); ``False`` recomputes the whole window each time. Both follow the
    same window rule (see the module docstring), so they give the same logits.
    """

    def __init__(self, model, use_cache=True):
        if not hasattr(model, "forward_cached"):
            raise TypeError(f"model: expected a TransformerLM, got {type(model).__name__}")
        # RoPE, ALiBi and local-attention models have no cached path yet: they recompute (same logits, slower)
        self.model = model
        self.use_cache = bool(use_cache) and getattr(model, "supports_kv_cache", True)
        self.max_len = model.max_len
        self.tokens = None        # (B, N) every token so far, prompt included
        self.start = 0            # the window is tokens[:, start:]
        self.kvs = None           # the cache of tokens[:, start:-1] ... see _logits
        self.restarts = 0

    def _encode_window(self):
        """Run the model on the whole window; with the cache, keep its keys and values."""
        window = self.tokens[:, self.start:]
        if self.use_cache:
            logits, self.kvs = self.model.forward_cached(window, None, start=0)
        else:
            logits = self.model(window)
        return to_numpy(logits[:, -1]).astype(np.float64)

    def begin(self, ids):
        """Start from prompts ids (B, T0); returns the logits of the token after them (B, V)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] < 1:
            raise ValueError(f"ids: expected a (B, T) array with T >= 1, got shape {ids.shape}")
        self.model.eval()
        self.tokens = ids
        self.start = max(0, ids.shape[1] - self.max_len)                  # a long prompt keeps its end
        return self._encode_window()

    def append(self, next_ids):
        """Append one token per row (B,); returns the logits of the token after it (B, V)."""
        next_ids = np.asarray(next_ids, dtype=np.int64).reshape(-1, 1)
        self.tokens = np.concatenate([self.tokens, next_ids], axis=1)
        if self.tokens.shape[1] - self.start > self.max_len:             # the window is full: restart it
            self.start = self.tokens.shape[1] - self.max_len // 2
            self.restarts += 1
            return self._encode_window()
        if not self.use_cache:
            return self._encode_window()
        position = self.tokens.shape[1] - 1 - self.start
        logits, self.kvs = self.model.forward_cached(next_ids, self.kvs, start=position)
        return to_numpy(logits[:, -1]).astype(np.float64)

    def reorder(self, rows):
        """Keep rows ``rows`` (B',) of the tokens and the cache (beam search)."""
        rows = np.asarray(rows, dtype=np.int64)
        self.tokens = self.tokens[rows]
        if self.kvs is not None:
            self.kvs = [(k[rows], v[rows]) for k, v in self.kvs]


# --------------------------------------------------------------------------- #
# The loops
# --------------------------------------------------------------------------- #

def _check_common(model, prompt_ids, max_new_tokens):
    ids = np.asarray(prompt_ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError(f"prompt_ids: expected a non-empty 1-D list of ids, got shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= model.vocab_size:
        raise ValueError(f"prompt_ids: expected ids in [0, {model.vocab_size}), got {ids.min()}..{ids.max()}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected a non-negative integer, got {max_new_tokens!r}")
    return ids


def generate(model, prompt_ids, max_new_tokens, strategy="greedy", temperature=1.0, top_k=None, top_p=None,
             repetition_penalty=1.0, rng=None, eos_id=EOS_ID, banned_ids=(), use_cache=True, num_beams=4,
             length_penalty=1.0):
    """Continue ``prompt_ids`` (T0,) by at most ``max_new_tokens`` tokens; returns the new ids (a list).

    ``strategy``: "greedy" | "sample" (temperature only) | "top-k" | "top-p" | "beam".
    Stops after ``eos_id`` (which is not returned). ``banned_ids`` never
    come out (e.g. [PAD], [UNK]). Sampling needs ``rng``, a
    numpy.random.Generator. The model is left in eval mode.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {list(STRATEGIES)}, got {strategy!r}")
    ids = _check_common(model, prompt_ids, max_new_tokens)
    if strategy == "beam":
        return beam_search(model, ids, max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                           repetition_penalty=repetition_penalty, eos_id=eos_id, banned_ids=banned_ids,
                           use_cache=use_cache)
    if strategy != "greedy":
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: expected a numpy.random.Generator for strategy {strategy!r}, "
                            f"got {type(rng).__name__}")
        apply_temperature(0.0, temperature)                               # checks temperature early
    if strategy == "top-k":
        top_k_filter(np.zeros(model.vocab_size), top_k)                  # checks top_k early
    if strategy == "top-p" and (top_p is None or not 0 < top_p <= 1):
        raise ValueError(f"top_p: expected a number in (0, 1], got {top_p}")
    banned = np.asarray(list(banned_ids), dtype=np.int64)
    decoder = Decoder(model, use_cache=use_cache)
    logits = decoder.begin(ids[None])[0]                                 # (V,)
    out = []
    for _ in range(max_new_tokens):
        z = apply_repetition_penalty(logits, list(ids) + out, repetition_penalty)
        if banned.size:
            z[banned] = -np.inf
        if strategy == "greedy":
            nxt = int(np.argmax(z))
        else:
            z = apply_temperature(z, temperature)
            if strategy == "top-k":
                z = top_k_filter(z, top_k)
            probs, _ = F.softmax(z)
            if strategy == "top-p":
                probs = top_p_filter(probs, top_p)
            nxt = sample(probs, rng)
        if nxt == eos_id:
            break
        out.append(nxt)
        if len(out) < max_new_tokens:
            logits = decoder.append([nxt])[0]
    return out


def beam_search(model, prompt_ids, max_new_tokens, num_beams=4, length_penalty=1.0, repetition_penalty=1.0,
                eos_id=EOS_ID, banned_ids=(), use_cache=True):
    r"""The ``num_beams`` most likely continuations, kept in parallel; returns the best finished one (a list).

    Each beam's score is its summed log-probability; a beam that emits
    ``eos_id`` (or reaches ``max_new_tokens``) is finished and ranked by
    :math:`\text{score} / |y|^{\alpha}` with α = ``length_penalty`` (0: no
    normalisation, which favours short texts). Deterministic.
    """
    ids = _check_common(model, prompt_ids, max_new_tokens)
    if isinstance(num_beams, bool) or not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
        raise ValueError(f"num_beams: expected a positive integer, got {num_beams!r}")
    if max_new_tokens == 0:
        return []
    banned = np.asarray(list(banned_ids), dtype=np.int64)
    decoder = Decoder(model, use_cache=use_cache)
    logits = decoder.begin(ids[None])                                   # (1, V)
    beams = [[]]                                                        # the new tokens of each live beam
    scores = np.zeros(1)                                                # (B,) summed log-probabilities
    finished = []                                                       # (normalised score, tokens)

    def normalised(score, length):
        return score / max(length, 1) ** length_penalty

    for step in range(max_new_tokens):
        z = apply_repetition_penalty(logits, [list(ids) + b for b in beams], repetition_penalty)
        if banned.size:
            z[:, banned] = -np.inf
        logp, _ = F.log_softmax(z)                                      # (B, V)
        total = scores[:, None] + logp                                  # (B, V)
        flat = np.argsort(-total, axis=None, kind="stable")[:2 * num_beams]   # enough to refill after EOS
        new_beams, new_scores, rows, tokens = [], [], [], []
        for f in flat:
            b, tok = divmod(int(f), total.shape[1])
            if tok == eos_id:
                finished.append((normalised(total[b, tok], len(beams[b])), beams[b]))
                continue
            new_beams.append(beams[b] + [tok])
            new_scores.append(total[b, tok])
            rows.append(b)
            tokens.append(tok)
            if len(new_beams) == num_beams:
                break
        if not new_beams:                                               # every candidate ended the text
            beams, scores = [], np.zeros(0)
            break
        beams, scores = new_beams, np.array(new_scores)
        # Scores only fall as a text grows, so score / max_new_tokens^alpha bounds what a live beam can
        # still reach (alpha >= 0); stop once num_beams texts are finished and none can be beaten.
        if len(finished) >= num_beams:
            bound = max(score / max_new_tokens ** length_penalty for score in scores)
            if bound < max(f for f, _ in finished):
                break
        if step == max_new_tokens - 1:
            break
        decoder.reorder(rows)
        logits = decoder.append(tokens)
    finished += [(normalised(score, len(b)), b) for score, b in zip(scores, beams)]
    return max(finished, key=lambda pair: pair[0])[1]

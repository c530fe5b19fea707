"""Pre-training a language model on unlabelled text (seed §2.2, §3.4: "pre-trained on a large corpus").

Shape legend: B batch, T sequence length (``max_len``), V vocabulary size.

One step of causal pre-training, in the same five lines as the classifier's::

    logits = model(ids)                                  # (B, T) -> (B, T, V), causal mask inside
    loss, cache = cross_entropy(logits, targets)         # targets = ids shifted left by one
    model.backward(cross_entropy_backward(1.0, cache))
    clip_grad_norm(params, clip)
    optimizer.step(); scheduler.step()

What a careful user expects around it:

* **a budget in steps**, not seconds, so the same command gives the same
  numbers on every machine; ``time_budget`` may cut a run short, and the run
  then says so (and can be continued with ``resume``);
* **held-out evaluation** every ``eval_every`` steps, in bits per character,
  on each held-out stream (`evaluate_stream`);
* **the best checkpoint** (lowest mean held-out bits/char) saved as it
  improves, atomically (`checkpoint.save` writes a temporary file and
  renames it), and a **resume state** (``last.npz``: weights, optimizer
  moments, step, schedule, data position, random-generator states) written
  at every evaluation, at the end and on Ctrl-C, from which
  ``pretrain(..., resume_from=...)`` continues *exactly*: the resumed run
  computes the same losses as an uninterrupted one (tests/test_pretrain.py).

Objectives
----------
What the model learns to predict is an `Objective`: it turns a packed chunk
of ids (B, T + 1) into a batch and computes the loss and its gradient. The
causal objective (GPT) predicts every next token. A masked objective (BERT)
fits the same interface: its ``make_batch`` hides tokens with ``[MASK]``
(drawing from the ``rng`` it is given, whose state is saved with the run)
and its ``loss_and_backward`` scores the hidden positions only; register it
in ``OBJECTIVES``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import checkpoint, fast, metrics
from . import functional as F
from .backend import get_array_module, to_numpy
from .corpus import PackedChunks
from .optim import AdamW, LRScheduler, clip_grad_norm, warmup_cosine
from .tokenizer import SPECIAL_TOKENS as SPECIAL_IDS

__all__ = ["PretrainConfig", "Objective", "CausalObjective", "MaskedObjective", "evaluate_masked", "OBJECTIVES", "evaluate_stream", "PretrainHistory",
           "pretrain", "rng_states", "set_rng_states"]


@dataclass
class PretrainConfig:
    """Everything `pretrain` needs besides the model and the data. ``steps`` is the budget."""

    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every: int = 250
    eval_batch_size: int = 16
    eval_tokens: int | None = None    # score at most this many tokens of each held-out stream (None: all)
    objective: str = "causal"
    seed: int = 0
    time_budget: float | None = None  # seconds of training; None = no clock limit
    text: str = "all"                 # what the command trained on (corpus.training_texts); recorded
    init: dict | None = None          # where the initial weights came from ({"init_from", "init_md5"}); recorded

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"lr, min_lr: expected 0 <= min_lr <= lr and lr > 0, got {self.lr}, {self.min_lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: expected >= 0, got {self.warmup_steps}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {sorted(OBJECTIVES)}, got {self.objective!r}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget: expected a positive number of seconds or None, got {self.time_budget}")
        if self.eval_tokens is not None and self.eval_tokens < 1:
            raise ValueError(f"eval_tokens: expected a positive integer or None, got {self.eval_tokens}")

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


_CHANGEABLE_ON_RESUME = ("time_budget", "eval_every", "eval_tokens", "eval_batch_size")


# --------------------------------------------------------------------------- #
# Objectives
# --------------------------------------------------------------------------- #

class Objective:
    """What the model is trained to predict. Sub-classes set ``name`` and implement the two methods."""

    name = ""

    def make_batch(self, chunks, rng, tokenizer):
        """chunks (B, T + 1) int64 contiguous text -> a batch (anything `loss_and_backward` reads)."""
        raise NotImplementedError

    def loss_and_backward(self, model, batch):
        """Forward, loss, backward (accumulating every ``param.grad``); returns (loss in nats, tokens scored)."""
        raise NotImplementedError


class CausalObjective(Objective):
    """Predict token t+1 from tokens <= t at every position (GPT; the model's causal mask does the hiding)."""

    name = "causal"

    def make_batch(self, chunks, rng, tokenizer):
        return chunks[:, :-1], chunks[:, 1:]                 # ids (B, T), targets (B, T): shifted by one

    def loss_and_backward(self, model, batch):
        ids, targets = batch
        if model.tie_weights and model.fast:
            # the output layer and the loss fused (fast.tied_output_cross_entropy_fast): the (B*T, V)
            # logits are never stored; the same numbers as the plain lines below
            h = model.forward_hidden(ids)                    # (B, T, D)
            B, T, D = h.shape
            xp = get_array_module(h)
            loss, cache = fast.tied_output_cross_entropy_fast(h.reshape(B * T, D), model.embed.E.data,
                                                              xp.asarray(targets).reshape(-1))
            dh, dE = fast.tied_output_cross_entropy_fast_backward(1.0, cache)
            model.embed.E.grad += dE                         # the output layer's share of E's gradient
            model.backward_hidden(dh.reshape(B, T, D))       # ... and the embedding's share
            return float(loss), int(targets.size)
        logits = model(ids)                                  # (B, T, V)
        xp = get_array_module(logits)
        loss, cache = F.cross_entropy(logits, xp.asarray(targets))
        model.backward(F.cross_entropy_backward(1.0, cache))
        return float(loss), int(targets.size)


class MaskedObjective(Objective):
    """Predict the hidden 15 % of tokens from both sides (BERT; `mlm.mask_tokens`, `mlm.TransformerMLM`).

    The chunk's first T ids are the input (no shift: the model reads the whole
    window); ``rng`` chooses and corrupts the positions, and the loss counts
    only those. The output layer runs at the chosen positions only
    (``positions=``), which is where its cost would otherwise go.
    """

    name = "mlm"

    def make_batch(self, chunks, rng, tokenizer):
        from .mlm import mask_tokens
        from .tokenizer import BOS_ID, CLS_ID, EOS_ID, MASK, PAD_ID
        if MASK not in tokenizer.extra_special:
            raise ValueError("tokenizer: the masked objective needs [MASK] in the vocabulary "
                             "(corpus.build_vocabulary adds it)")
        ids = chunks[:, :-1]                                 # (B, T): every position is real text
        first_char = len(SPECIAL_IDS) + len(tokenizer.extra_special)
        inputs, targets, chosen = mask_tokens(ids, np.ones(ids.shape, dtype=bool), rng, tokenizer.token_to_id(MASK),
                                              (first_char, tokenizer.vocab_size),
                                              protected_ids=(PAD_ID, CLS_ID, BOS_ID, EOS_ID))
        return inputs, targets, chosen

    def loss_and_backward(self, model, batch):
        inputs, targets, chosen = batch
        logits = model(inputs, None, positions=chosen)      # (N, V): the chosen positions only
        xp = get_array_module(logits)
        loss, cache = F.cross_entropy(logits, xp.asarray(targets[chosen]))
        model.backward(F.cross_entropy_backward(1.0, cache))
        return float(loss), int(chosen.sum())


OBJECTIVES = {"causal": CausalObjective, "mlm": MaskedObjective}


def evaluate_masked(model, stream, batch_size=16, max_tokens=None, seed=0):
    """Masked-token cross-entropy of an MLM on a held-out stream: the same masks at every evaluation.

    Non-overlapping windows of T ids; `mlm.mask_tokens` with a fixed seed
    chooses the positions, so two evaluations of one run are comparable.
    ``bits`` here is per *masked* character, which is not the causal model's
    bits/char: the masked model sees both sides, so it is an easier task.
    """
    from .mlm import mask_tokens
    stream = np.asarray(stream)
    if max_tokens is not None:
        stream = stream[:max_tokens]
    T = model.max_len
    n_win = max(len(stream) // T, 1)
    windows = np.stack([stream[i * T:(i + 1) * T] for i in range(n_win)]).astype(np.int64)   # (W, T)
    rng = np.random.default_rng(seed)
    from .tokenizer import BOS_ID, CLS_ID, EOS_ID, PAD_ID
    mask_id = len(SPECIAL_IDS)                               # [MASK]: the first extra special token (corpus.py)
    inputs, targets, chosen = mask_tokens(windows, np.ones(windows.shape, dtype=bool), rng, mask_id,
                                          (mask_id + 1, model.vocab_size), protected_ids=(PAD_ID, CLS_ID, BOS_ID,
                                                                                          EOS_ID))
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    try:
        for b in range(0, n_win, batch_size):
            sel = chosen[b:b + batch_size]
            if not sel.any():
                continue
            logits = to_numpy(model(inputs[b:b + batch_size], None, positions=sel))        # (N, V)
            ll, k = metrics.token_log_likelihood(logits, targets[b:b + batch_size][sel], ignore_index=-100)
            total, n = total + ll, n + k
    finally:
        model.train(was_training)
    nats = metrics.cross_entropy_nats(total, n)
    return {"nats": nats, "bits": metrics.bits_per_char(nats), "ppl": metrics.perplexity(nats), "tokens": n}


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #

def _windows(n_tokens, T, stride):
    """(start, first scored offset) of each window of T inputs over a stream of n_tokens ids.

    Window w reads ids[s : s + T] and predicts ids[s + 1 : s + T + 1]. The
    first window scores all T predictions; each later one starts ``stride``
    further on and scores only the predictions no earlier window made, so
    every id after the first is predicted exactly once, with at least
    ``T - stride`` ids of context (except at the very start).
    """
    last = n_tokens - 1 - T                                  # the last start whose targets fit
    if last < 0:
        return [(0, 0)], n_tokens - 1                        # a stream shorter than one window
    out, scored_to = [(0, 0)], T                             # targets 1..T scored
    s = 0
    while scored_to < n_tokens - 1:
        s = min(s + stride, last)
        out.append((s, scored_to - s))                       # targets s+1 .. s+T; new ones from scored_to+1
        scored_to = s + T
    return out, T


def evaluate_stream(model, stream, batch_size=16, stride=None, max_tokens=None):
    """Cross-entropy of a causal LM on a held-out stream of ids: nats and bits per character, perplexity.

    Windows of ``T = model.max_len`` ids overlap by ``T - stride`` (``stride``
    defaults to T/2), and each predicted id is scored once, by the window
    that gives it the most context (see `_windows`). ``max_tokens`` scores
    only the first ids of the stream (a cheaper estimate during training).
    Runs in eval mode; the mode is restored. Returns a dict with ``nats``,
    ``bits``, ``ppl`` and ``tokens``.
    """
    stream = np.asarray(stream)
    if max_tokens is not None:
        stream = stream[:max_tokens + 1]
    T = model.max_len
    stride = max(T // 2, 1) if stride is None else stride
    windows, width = _windows(len(stream), T, stride)
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    try:
        for b in range(0, len(windows), batch_size):
            chunk = windows[b:b + batch_size]
            ids = np.stack([stream[s:s + width] for s, _ in chunk]).astype(np.int64)          # (B, T)
            targets = np.stack([stream[s + 1:s + width + 1] for s, _ in chunk]).astype(np.int64)
            for row, (_, first) in enumerate(chunk):
                targets[row, :first] = -1                    # already scored by an earlier window
            logits = to_numpy(model(ids))                    # (B, T, V)
            ll, k = metrics.token_log_likelihood(logits, targets, ignore_index=-1)
            total, n = total + ll, n + k
    finally:
        model.train(was_training)
    nats = metrics.cross_entropy_nats(total, n)
    return {"nats": nats, "bits": metrics.bits_per_char(nats), "ppl": metrics.perplexity(nats), "tokens": n}


# --------------------------------------------------------------------------- #
# Random-generator states (part of the resume state)
# --------------------------------------------------------------------------- #

def _generators(model):
    found, seen = [], set()
    for m in model.modules():
        rng = getattr(m, "rng", None)
        if isinstance(rng, np.random.Generator) and id(rng) not in seen:
            seen.add(id(rng))
            found.append(rng)
    return found


def rng_states(model):
    """The states of the model's random generators (dropout masks), JSON-able, in module order."""
    return [rng.bit_generator.state for rng in _generators(model)]


def set_rng_states(model, states):
    gens = _generators(model)
    if len(gens) != len(states):
        raise ValueError(f"states: expected {len(gens)} generator states for this model, got {len(states)}")
    for rng, state in zip(gens, states):
        rng.bit_generator.state = state


# --------------------------------------------------------------------------- #
# The loop
# --------------------------------------------------------------------------- #

@dataclass
class PretrainHistory:
    """One row per evaluation: step, training seconds so far, mean training loss since the last row, held-out bits."""

    step: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    heldout_bits: dict = field(default_factory=dict)    # name -> [bits/char per row]
    lr: list = field(default_factory=list)
    tokens_per_s: list = field(default_factory=list)
    best_step: int = -1
    best_bits: float = math.inf
    stopped_because: str = ""

    def as_dict(self):
        return asdict(self)


def _write_json_atomically(path: Path, data):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _progress_bar(total, initial, disable):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=disable, desc="pretrain", unit="step", leave=False,
                dynamic_ncols=True)


def pretrain(model, tokenizer, train_stream, heldout, config: PretrainConfig | None = None, out_dir=None,
             resume_from=None, progress=True, log=print, on_step=None) -> PretrainHistory:
    """Pre-train ``model`` on packed chunks of ``train_stream``; evaluate on each stream of ``heldout``.

    Args:
        model: a `TransformerLM` (its ``max_len`` is the chunk length T).
        tokenizer: the `CharTokenizer` of the streams; saved in every checkpoint.
        train_stream: (N,) ids (`corpus.token_stream`).
        heldout: {name: (M,) ids}; the mean of their bits/char chooses the best checkpoint.
        config: a `PretrainConfig`.
        out_dir: folder for ``best.npz``, ``last.npz`` and ``history.json`` (None: save nothing).
        resume_from: a ``last.npz`` to continue from exactly (its config replaces ``config``,
            except ``time_budget`` and the evaluation settings, which do not change the training).
        on_step: called as ``on_step(step, loss)`` after every update (tests use it to interrupt).

    Returns a `PretrainHistory`; the model ends with the weights of the *last* step
    (``best.npz`` holds the best). Ctrl-C writes ``last.npz`` and re-raises.
    """
    config = config or PretrainConfig()
    log = log or (lambda *_: None)
    out_dir = None if out_dir is None else Path(out_dir)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    saved = None
    if resume_from is not None:
        saved = checkpoint.load(resume_from)
        extra = saved.extra
        if "pretrain" not in extra:
            raise ValueError(f"resume_from: {str(resume_from)!r} is not a pre-training resume state (last.npz)")
        # The training settings come from the file; the clock limit and how evaluation is done may change,
        # since they never change what the training steps compute.
        keep = {name: getattr(config, name) for name in _CHANGEABLE_ON_RESUME}
        config = PretrainConfig.from_dict({**extra["pretrain"]["config"], **keep})
        def shape_of(cfg):             # the seed only chose the initial weights, which the file replaces
            return {k: v for k, v in cfg.items() if k != "seed"}
        if shape_of(saved.model.config) != shape_of(model.config):
            raise ValueError(f"resume_from: the saved model config {saved.model.config} differs from "
                             f"this model's {model.config}")
        if saved.tokenizer != tokenizer.to_dict():
            raise ValueError("resume_from: the saved vocabulary differs from this tokenizer's")
        model.load_state_dict(saved.model.state_dict())

    objective = OBJECTIVES[config.objective]()
    params = model.parameters()
    optimizer = AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = LRScheduler(optimizer, warmup_cosine, base_lr=config.lr, warmup=config.warmup_steps,
                            total=config.steps, min_lr=config.min_lr)
    data = PackedChunks(train_stream, model.max_len, seed=config.seed)
    batch_rng = np.random.default_rng([config.seed, 2])      # for objectives that draw (masking)
    history = PretrainHistory(heldout_bits={name: [] for name in heldout})
    step, seconds = 0, 0.0
    if saved is not None:
        state = saved.extra["pretrain"]
        optimizer.load_state_dict(saved.optimizer_state)
        scheduler.load_state_dict(saved.scheduler_state)
        data.load_state_dict(state["data"])
        set_rng_states(model, state["model_rngs"])
        batch_rng.bit_generator.state = state["batch_rng"]
        history = PretrainHistory(**state["history"])
        step, seconds = int(state["step"]), float(state["seconds"])
        window = state["window"]
        log(f"resumed at step {step} of {config.steps} ({seconds:.0f}s of training so far)")

    def save_state(name):
        if out_dir is None:
            return
        extra = {"pretrain": {"config": asdict(config), "step": step, "seconds": seconds,
                              "data": data.state_dict(), "model_rngs": rng_states(model),
                              "batch_rng": batch_rng.bit_generator.state, "history": history.as_dict(),
                              "window": [loss_sum, loss_steps, tokens, window_start]}}
        checkpoint.save(out_dir / name, model, optimizer=optimizer, scheduler=scheduler, tokenizer=tokenizer,
                        extra=extra)
        _write_json_atomically(out_dir / "history.json", history.as_dict())

    def evaluate_and_keep_best(loss_sum, loss_steps, tokens, elapsed):
        scorer = evaluate_masked if config.objective == "mlm" else evaluate_stream
        results = {name: scorer(model, s, config.eval_batch_size, max_tokens=config.eval_tokens)
                   for name, s in heldout.items()}
        history.step.append(step)
        history.seconds.append(round(seconds, 3))
        history.train_loss.append(loss_sum / max(loss_steps, 1))
        history.lr.append(optimizer.lr)
        history.tokens_per_s.append(tokens / max(elapsed, 1e-9))
        for name, r in results.items():
            history.heldout_bits[name].append(r["bits"])
        mean_bits = float(np.mean([r["bits"] for r in results.values()])) if results else -step
        shown = "  ".join(f"{name} {r['bits']:.3f}" for name, r in results.items())
        log(f"step {step:5d}  train loss {history.train_loss[-1]:.4f} nats  held-out bits/char: {shown}  "
            f"{history.tokens_per_s[-1]:,.0f} tok/s  {seconds:.0f}s")
        if mean_bits < history.best_bits:
            history.best_bits, history.best_step = mean_bits, step
            if out_dir is not None:
                checkpoint.save(out_dir / "best.npz", model, tokenizer=tokenizer,
                                extra={"pretrain": {"step": step, "seconds": seconds, "config": asdict(config),
                                                    "heldout": results}})

    model.train()
    bar = _progress_bar(config.steps, step, not progress)
    loss_sum, loss_steps, tokens, window_start = 0.0, 0, 0, seconds
    if saved is not None:
        loss_sum, loss_steps, tokens, window_start = float(window[0]), int(window[1]), int(window[2]), float(window[3])
    try:
        while step < config.steps:
            t0 = time.perf_counter()
            batch = objective.make_batch(data.next_batch(config.batch_size), batch_rng, tokenizer)
            model.zero_grad()
            loss, n_tokens = objective.loss_and_backward(model, batch)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {step + 1}; try a smaller lr (now {config.lr})")
            clip_grad_norm(params, config.clip)
            optimizer.step()
            scheduler.step()
            step += 1
            seconds += time.perf_counter() - t0
            loss_sum, loss_steps, tokens = loss_sum + loss, loss_steps + 1, tokens + n_tokens
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{optimizer.lr:.1e}")
            bar.update(1)
            if on_step is not None:
                on_step(step, loss)
            out_of_time = config.time_budget is not None and seconds > config.time_budget
            if step % config.eval_every == 0 or step == config.steps or out_of_time:
                evaluate_and_keep_best(loss_sum, loss_steps, tokens, seconds - window_start)
                loss_sum, loss_steps, tokens, window_start = 0.0, 0, 0, seconds
                save_state("last.npz")
            if out_of_time and step < config.steps:
                history.stopped_because = (f"time budget of {config.time_budget:g}s reached after step {step} of "
                                           f"{config.steps}: the clock cut this run short; continue it with resume")
                break
        else:
            history.stopped_because = f"all {config.steps} steps done"
    except KeyboardInterrupt:
        history.stopped_because = f"interrupted at step {step} of {config.steps}"
        save_state("last.npz")
        raise
    finally:
        bar.close()
    save_state("last.npz")
    log(f"stopped: {history.stopped_because}; best mean held-out bits/char {history.best_bits:.3f} "
        f"at step {history.best_step}")
    return history

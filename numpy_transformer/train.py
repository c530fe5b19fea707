"""Training and evaluation loops for the sentiment classifier.

One training step is the whole story of the project in five lines::

    logits = model(ids, mask)                         # forward      (B, T) -> (B, C)
    loss, cache = F.cross_entropy(logits, labels)     # loss         scalar
    model.backward(F.cross_entropy_backward(1.0, cache))   # backward, gradients accumulate
    clip_grad_norm(params, clip)                      # keep one bad batch from wrecking the weights
    optimizer.step()                                  # AdamW update

Everything else here is bookkeeping a careful user expects: length-grouped
batches (little compute spent on padding), a warm-up then cosine learning
rate, a progress bar with the loss, tokens/s and the time left, validation
after each epoch, early stopping that restores the best weights, and an
optional wall-clock budget.

The validation split chooses when to stop and which weights to keep; the
test split is only ever *reported*, never used to choose anything.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import functional as F
from . import metrics
from .backend import to_numpy
from .data import Dataset, batch_iterator
from .optim import AdamW, clip_grad_norm, warmup_cosine

__all__ = ["TrainConfig", "History", "fit", "evaluate", "predict_texts"]


@dataclass
class TrainConfig:
    """Everything `fit` needs to know besides the model and the data."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 100
    clip: float = 1.0
    max_len: int = 128
    label_smoothing: float = 0.0
    patience: int = 3               # epochs without a better validation loss before stopping
    time_budget: float | None = None  # seconds of training; None = no limit
    seed: int = 0
    eval_batch_size: int = 128

    def __post_init__(self):
        for name in ("epochs", "batch_size", "max_len", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr: expected a positive learning rate, got {self.lr}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget: expected a positive number of seconds or None, got {self.time_budget}")


@dataclass
class History:
    """What happened during `fit`, epoch by epoch (ready for `viz.training_curves`)."""

    epoch: list = field(default_factory=list)
    step: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    valid_loss: list = field(default_factory=list)
    valid_acc: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    tokens_per_s: list = field(default_factory=list)
    best_epoch: int = -1
    stopped_because: str = ""

    def as_dict(self):
        return asdict(self)


def _learning_rate(config, t, total_steps, elapsed):
    """Learning rate of update ``t`` (counted from 1): linear warm-up, then cosine decay to ``min_lr``.

    Without a time budget this is `optim.warmup_cosine` over ``total_steps``.
    With one, the number of steps that fit is not known in advance, so the
    decay follows whichever runs out first, the steps or the clock.
    """
    if config.time_budget is None or t <= config.warmup_steps:
        return warmup_cosine(t, config.lr, config.warmup_steps, total_steps, config.min_lr)
    by_steps = (t - config.warmup_steps) / max(total_steps - config.warmup_steps, 1)
    frac = min(max(by_steps, elapsed / config.time_budget), 1.0)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * frac))


def _progress_bar(total, disable, desc):
    from tqdm.auto import tqdm
    return tqdm(total=total, disable=disable, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def fit(model, train: Dataset, valid: Dataset, tokenizer, config: TrainConfig | None = None,
        progress: bool = True, log=print) -> History:
    """Train ``model`` on ``train``; validate on ``valid`` after every epoch.

    Stops after ``config.epochs``, when the validation loss has not improved
    for ``config.patience`` epochs, or when ``config.time_budget`` seconds
    have passed (checked after every step; a final validation then runs).
    The weights of the best validation epoch are restored at the end.

    Returns a `History`. ``log`` receives one line per epoch (None: silent).
    """
    config = config or TrainConfig()
    log = log or (lambda *_: None)
    rng = np.random.default_rng(config.seed)
    params = model.parameters()
    optimizer = AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    history = History()
    best_loss, best_state, bad_epochs = math.inf, None, 0
    step, start = 0, time.perf_counter()
    out_of_time = False
    for epoch in range(1, config.epochs + 1):
        model.train()
        bar = _progress_bar(steps_per_epoch, not progress, f"epoch {epoch}/{config.epochs}")
        loss_sum, seen, tokens, epoch_start = 0.0, 0, 0, time.perf_counter()
        for ids, mask, labels in batch_iterator(train, tokenizer, config.batch_size, config.max_len, rng=rng):
            optimizer.lr = _learning_rate(config, step + 1, total_steps, time.perf_counter() - start)
            model.zero_grad()
            logits = model(ids, mask)                                        # (B, C)
            loss, cache = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            model.backward(F.cross_entropy_backward(1.0, cache))
            clip_grad_norm(params, config.clip)
            optimizer.step()

            step += 1
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step}; "
                                         f"try a smaller lr (now {config.lr})")
            loss_sum += loss_value * len(labels)
            seen += len(labels)
            tokens += int(mask.sum())
            rate = tokens / max(time.perf_counter() - epoch_start, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", tok_s=f"{rate:,.0f}", lr=f"{optimizer.lr:.1e}")
            bar.update(1)
            if config.time_budget is not None and time.perf_counter() - start > config.time_budget:
                out_of_time = True
                break
        bar.close()

        result = evaluate(model, valid, tokenizer, max_len=config.max_len, batch_size=config.eval_batch_size)
        history.epoch.append(epoch)
        history.step.append(step)
        history.train_loss.append(loss_sum / max(seen, 1))
        history.valid_loss.append(result["loss"])
        history.valid_acc.append(result["accuracy"])
        history.lr.append(optimizer.lr)
        history.seconds.append(time.perf_counter() - start)
        history.tokens_per_s.append(tokens / max(time.perf_counter() - epoch_start, 1e-9))
        log(f"epoch {epoch:2d}  step {step:5d}  train loss {history.train_loss[-1]:.4f}  "
            f"valid loss {result['loss']:.4f}  valid acc {result['accuracy']:.4f}  "
            f"{history.tokens_per_s[-1]:,.0f} tok/s  {history.seconds[-1]:.0f}s")

        if result["loss"] < best_loss:
            best_loss, best_state, bad_epochs = result["loss"], model.state_dict(), 0
            history.best_epoch = epoch
        else:
            bad_epochs += 1
        if out_of_time:
            history.stopped_because = f"time budget of {config.time_budget:g}s reached"
            break
        if bad_epochs >= config.patience:
            history.stopped_because = f"no better validation loss for {config.patience} epochs"
            break
    else:
        history.stopped_because = f"all {config.epochs} epochs done"

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def evaluate(model, data: Dataset, tokenizer, max_len: int = 128, batch_size: int = 128) -> dict:
    """Loss, every metric of `metrics.all_metrics`, and the predicted probabilities.

    Runs in eval mode (no dropout) over length-sorted batches, then puts the
    probabilities back in the dataset's order. Returns a dict with ``loss``,
    ``accuracy``, ``precision``, ``recall``, ``f1``, ``auc`` ..., ``probs`` (N, C)
    and ``pred`` (N,).
    """
    was_training = model.training
    model.eval()
    encoded = data.encoded(tokenizer, max_len)
    probs = np.zeros((len(data), model.config["num_classes"]), dtype=np.float64)
    order = np.argsort(encoded.lengths, kind="stable")
    loss_sum = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask, labels = encoded.batch(idx)
        logits = model(ids, mask)                                            # (B, C)
        loss, _ = F.cross_entropy(logits, labels)
        loss_sum += float(loss) * len(idx)
        p, _ = F.softmax(logits.astype(np.float64))
        probs[idx] = to_numpy(p)
    model.train(was_training)
    pred = probs.argmax(axis=1)
    two_classes_present = probs.shape[1] == 2 and len(np.unique(data.labels)) == 2
    # AUC needs both classes among the true labels (a tiny user file may have one)
    result = metrics.all_metrics(data.labels, pred, probs[:, 1] if two_classes_present else None)
    result.update(loss=loss_sum / len(data), probs=probs, pred=pred)
    return result


def predict_texts(model, tokenizer, texts, max_len: int = 128):
    """Class probabilities (N, C) for raw texts, and which texts were truncated (N,)."""
    ids, mask, truncated = tokenizer.encode_batch(list(texts), max_len, add_cls=True, return_truncated=True)
    was_training = model.training
    model.eval()
    logits = model(ids, mask)
    model.train(was_training)
    p, _ = F.softmax(to_numpy(logits).astype(np.float64))
    return p, truncated

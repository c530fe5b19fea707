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
    """Everything `fit` needs to know besides the model and the data.

    The budget is counted in steps (``epochs``, ``max_steps``), so every
    machine trains the same steps and gets the same numbers.
    ``time_budget`` is only a safety cut: the learning-rate schedule never
    depends on the clock, and a run the clock cuts short says so in
    ``History.stopped_because``.
    """

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
    max_steps: int | None = None    # at most this many updates (None: the epochs decide)
    time_budget: float | None = None  # seconds of training after which the clock cuts the run; None = no limit
    seed: int = 0
    eval_batch_size: int = 128
    log_every: int = 50             # steps between two points of the within-epoch training-loss curve

    def __post_init__(self):
        for name in ("epochs", "batch_size", "max_len", "eval_batch_size", "patience", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.max_steps is not None and (isinstance(self.max_steps, bool)
                                           or not isinstance(self.max_steps, (int, np.integer))
                                           or self.max_steps < 1):
            raise ValueError(f"max_steps: expected a positive integer or None, got {self.max_steps!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, (int, np.integer)) \
                or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: expected an integer >= 0, got {self.warmup_steps!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a positive learning rate, got {self.lr}")
        if self.time_budget is not None and not (math.isfinite(self.time_budget) and self.time_budget > 0):
            raise ValueError(f"time_budget: expected a positive number of seconds or None, got {self.time_budget}")

    def total_steps(self, steps_per_epoch: int) -> int:
        """Updates the schedule plans for: every epoch, or ``max_steps`` if fewer."""
        total = steps_per_epoch * self.epochs
        return total if self.max_steps is None else min(total, self.max_steps)


@dataclass
class History:
    """What happened during `fit`: one entry per epoch, plus a training-loss curve within epochs.

    ``curve_step`` / ``curve_loss``: the mean training loss of the last
    ``log_every`` steps, recorded every ``log_every`` steps (ready for
    `viz.training_curves`).
    """

    epoch: list = field(default_factory=list)
    step: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    valid_loss: list = field(default_factory=list)
    valid_acc: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    tokens_per_s: list = field(default_factory=list)
    curve_step: list = field(default_factory=list)
    curve_loss: list = field(default_factory=list)
    best_epoch: int = -1
    steps_planned: int = 0
    stopped_because: str = ""
    cut_by_clock: bool = False
    interrupted: bool = False

    def as_dict(self):
        return asdict(self)


def _learning_rate(config, t, total_steps):
    """Learning rate of update ``t`` (counted from 1): linear warm-up, then cosine decay to ``min_lr``.

    A function of the step only (`optim.warmup_cosine` over ``total_steps``),
    never of the clock, so a slower machine follows the same schedule.
    """
    return warmup_cosine(t, config.lr, config.warmup_steps, total_steps, config.min_lr)


def _progress_bar(total, disable, desc, initial=0):
    from tqdm.auto import tqdm
    return tqdm(total=total, disable=disable, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                initial=initial)


# The parts of TrainConfig that decide the numbers; a resumed run must have the same ones.
_RESUME_KEYS = ("epochs", "batch_size", "lr", "min_lr", "weight_decay", "warmup_steps", "clip", "max_len",
                "label_smoothing", "patience", "max_steps", "seed", "log_every")


def fit(model, train: Dataset, valid: Dataset, tokenizer, config: TrainConfig | None = None,
        progress: bool = True, log=print, run=None, resume=None, guard=None, on_step=None) -> History:
    """Train ``model`` on ``train``; validate on ``valid`` after every epoch.

    Stops after ``config.epochs`` or ``config.max_steps`` steps, when the
    validation loss has not improved for ``config.patience`` epochs, when
    ``config.time_budget`` seconds have passed (checked after every step; a
    final validation then runs; ``History.cut_by_clock`` says so), or on
    Ctrl-C. The weights of the best validation epoch are restored at the end.

    Never losing work (see `runs`):

    * ``run`` (a `runs.RunDir`): the best checkpoint is written whenever the
      validation loss improves, and the training state after every epoch and
      when interrupted.
    * ``guard`` (a `runs.InterruptGuard`; one is made when ``run`` is given):
      after Ctrl-C the current step finishes, the state is saved, the best
      weights are restored and `fit` returns with ``History.interrupted``.
    * ``resume`` (a `runs.TrainingState` from ``run.load_state()``): continue
      exactly where that state was saved: same weights, optimizer, schedule,
      data order and dropout masks, so the losses equal an uninterrupted run's.

    ``on_step(step, loss)`` is called after every update (tests use it).
    Returns a `History`. ``log`` receives one line per epoch (None: silent).
    """
    from . import runs

    if guard is None and run is not None:
        with runs.InterruptGuard() as own_guard:
            return _fit(model, train, valid, tokenizer, config, progress, log, run, resume, own_guard, on_step)
    return _fit(model, train, valid, tokenizer, config, progress, log, run, resume, guard, on_step)


def _fit(model, train, valid, tokenizer, config, progress, log, run, resume, guard, on_step):
    """`fit`'s loop (``guard`` already in place)."""
    from . import runs

    config = config or TrainConfig()
    log = log or (lambda *_: None)
    rng = np.random.default_rng(config.seed)
    params = model.parameters()
    optimizer = AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = config.total_steps(steps_per_epoch)
    generators = {"data": rng, **runs.model_generators(model)}

    history = History(steps_planned=total_steps)
    best_loss, best_state, bad_epochs = math.inf, None, 0
    step, first_epoch, skip = 0, 1, 0
    epoch_sums = {"loss_sum": 0.0, "seen": 0, "tokens": 0}
    curve = {"sum": 0.0, "n": 0}
    elapsed_before = 0.0
    if resume is not None:
        if run is None:
            raise ValueError("resume: continuing a run needs its run (a runs.RunDir) to read the best checkpoint")
        p = resume.progress
        saved = p.get("config", {})
        differ = [k for k in _RESUME_KEYS if saved.get(k) != asdict(config)[k]]
        if differ:
            raise ValueError("resume: the training state was saved with other settings: " + ", ".join(
                f"{k} {saved.get(k)!r} there, {asdict(config)[k]!r} here" for k in differ))
        model.load_state_dict(resume.model.state_dict())
        resume.restore(optimizer, generators)
        history = History(**p["history"])
        best_loss, bad_epochs = p["best_loss"], p["bad_epochs"]
        step, first_epoch, skip = p["step"], p["epoch"], p["batch"]
        epoch_sums, curve, elapsed_before = p["epoch_sums"], p["curve"], p["elapsed"]
        if history.best_epoch >= 1:
            from .checkpoint import load_state_into
            best_state = load_state_into(run.best_path, model.__class__.from_config(model.config)).state_dict()
        log(f"resuming at epoch {first_epoch}, step {step} of {total_steps}")

    start = time.perf_counter() - elapsed_before

    def progress_dict(epoch, batch, epoch_rng_state):
        return {"config": {k: asdict(config)[k] for k in _RESUME_KEYS}, "history": history.as_dict(),
                "best_loss": best_loss, "bad_epochs": bad_epochs, "step": step, "epoch": epoch, "batch": batch,
                "epoch_sums": dict(epoch_sums), "curve": dict(curve), "elapsed": time.perf_counter() - start,
                "data_rng_at_epoch_start": epoch_rng_state}

    def save_state(epoch, batch, epoch_rng_state):
        # The data generator is saved as it was at the start of the epoch: resuming redraws the
        # epoch's batch order from it and skips the batches already done.
        data_now = runs.generator_state(rng)
        runs.set_generator_state(rng, epoch_rng_state)
        run.save_state(model, optimizer, progress_dict(epoch, batch, epoch_rng_state), generators=generators,
                       tokenizer=tokenizer)
        runs.set_generator_state(rng, data_now)

    out_of_time = out_of_steps = interrupted = False
    epoch = first_epoch
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        epoch_rng_state = runs.generator_state(rng)
        batches = batch_iterator(train, tokenizer, config.batch_size, config.max_len, rng=rng)
        bar = _progress_bar(steps_per_epoch, not progress, f"epoch {epoch}/{config.epochs}", initial=skip)
        tokens_now, epoch_start = 0, time.perf_counter()
        position = 0
        for ids, mask, labels in batches:
            position += 1
            if position <= skip:
                continue
            optimizer.lr = _learning_rate(config, step + 1, total_steps)
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
            epoch_sums["loss_sum"] += loss_value * len(labels)
            epoch_sums["seen"] += len(labels)
            epoch_sums["tokens"] += int(mask.sum())
            tokens_now += int(mask.sum())
            curve["sum"] += loss_value
            curve["n"] += 1
            if curve["n"] == config.log_every:
                history.curve_step.append(step)
                history.curve_loss.append(curve["sum"] / curve["n"])
                curve = {"sum": 0.0, "n": 0}
            rate = tokens_now / max(time.perf_counter() - epoch_start, 1e-9)
            bar.set_postfix(loss=f"{epoch_sums['loss_sum'] / epoch_sums['seen']:.4f}", tok_s=f"{rate:,.0f}",
                            lr=f"{optimizer.lr:.1e}")
            bar.update(1)
            if on_step is not None:
                on_step(step, loss_value)
            if guard is not None and guard.requested:
                interrupted = True
                break
            if config.max_steps is not None and step >= config.max_steps:
                out_of_steps = True
                break
            if config.time_budget is not None and time.perf_counter() - start > config.time_budget:
                out_of_time = True
                break
        bar.close()
        skip = 0
        if interrupted:
            if run is not None:
                save_state(epoch, position, epoch_rng_state)
            break

        result = evaluate(model, valid, tokenizer, max_len=config.max_len, batch_size=config.eval_batch_size)
        seen = epoch_sums["seen"]
        history.epoch.append(epoch)
        history.step.append(step)
        history.train_loss.append(epoch_sums["loss_sum"] / max(seen, 1))
        history.valid_loss.append(result["loss"])
        history.valid_acc.append(result["accuracy"])
        history.lr.append(optimizer.lr)
        history.seconds.append(time.perf_counter() - start)
        history.tokens_per_s.append(tokens_now / max(time.perf_counter() - epoch_start, 1e-9))
        epoch_sums = {"loss_sum": 0.0, "seen": 0, "tokens": 0}
        log(f"epoch {epoch:2d}  step {step:5d}  train loss {history.train_loss[-1]:.4f}  "
            f"valid loss {result['loss']:.4f}  valid acc {result['accuracy']:.4f}  "
            f"{history.tokens_per_s[-1]:,.0f} tok/s  {history.seconds[-1]:.0f}s")

        if result["loss"] < best_loss:
            best_loss, best_state, bad_epochs = result["loss"], model.state_dict(), 0
            history.best_epoch = epoch
            if run is not None:
                run.save_best(model, tokenizer=tokenizer, extra={"history": history.as_dict()})
        else:
            bad_epochs += 1
        if run is not None:
            save_state(epoch + 1, 0, runs.generator_state(rng))
        if out_of_time:
            history.cut_by_clock = True
            history.stopped_because = (f"the clock: time budget of {config.time_budget:g}s reached after {step} "
                                       f"of {total_steps} planned steps (a faster machine trains more steps "
                                       f"and gets other numbers)")
            break
        if out_of_steps:
            history.stopped_because = f"step budget of {total_steps} steps done"
            break
        if bad_epochs >= config.patience:
            history.stopped_because = f"no better validation loss for {config.patience} epochs"
            break
    else:
        history.stopped_because = f"all {config.epochs} epochs done"
    if interrupted:
        history.interrupted = True
        history.stopped_because = f"interrupted (Ctrl-C) after step {step} of {total_steps}"

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

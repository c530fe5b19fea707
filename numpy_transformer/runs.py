"""The promises every training command keeps, written once for all of them.

A command that trains something (``train``, ``demo``, and the later chapters'
``pretrain``, ``finetune``, ``compress`` ...) makes the user four promises.
This module is the one place they are kept; a training loop uses it like this::

    from numpy_transformer import runs

    runs.check_flags(args)                                   # 1. every numeric flag, named in the error
    run = runs.RunDir(args.out, command="python -m numpy_transformer pretrain")   # 2. --out checked now
    state = run.load_state() if args.resume else None        # 3. continue an interrupted run exactly
    rng = np.random.default_rng(args.seed)                   #    (state.restore(...) puts everything back)
    with runs.InterruptGuard() as guard:                     # 4. Ctrl-C stops cleanly after a step
        for step in ...:
            ...one training step...
            if validation improved:
                run.save_best(model, tokenizer=tok, extra={...})          # atomic, at once
            if guard.requested:
                run.save_state(model, optimizer, progress={...}, generators={"data": rng, **runs.model_generators(model)})
                print(run.interrupted_message(), file=sys.stderr)   # where the best checkpoint is + how to resume
                break

`train.fit(..., run=run, resume=state)` is this recipe written out for the
classifier (the data generator saved at the start of the epoch plus the
position in it, so a resumed epoch redraws the same batch order and skips
what was done); read it before writing another loop.

1. **Bad flags are refused before any work, naming the flag.** `check_flags`
   checks every numeric flag it knows (`COMMON_RULES`) plus any a command
   adds, and raises `RunError` ("--dropout: expected a finite number in
   [0, 1) (a dropout probability), got 1.5"). `check_vocabulary` refuses a vocabulary that turns
   (almost) every character into [UNK]; `check_two_classes` refuses training
   data with a single label.
2. **The output location is checked before training, not after.**
   `check_output_dir` (and `RunDir`, which calls it) creates the folder and
   writes a probe file into it, so a read-only folder or an ``--out`` that is
   an existing file fails in the first second with one line. Partial files a
   killed save left behind (``.NAME.PID.xxxx.tmp``) are removed.
3. **Work is never lost.** `RunDir.save_best` writes the best checkpoint
   whenever validation improves (atomically: `checkpoint.save` writes a
   temporary file and renames it). `RunDir.save_state` writes a *training
   state*: the current weights, the optimizer's buffers and step, a JSON
   ``progress`` dict (epoch, position in the epoch, history, best loss ...)
   and the state of every random generator (the data order's and the
   dropout masks'), so that resuming gives the same numbers as never
   stopping.
4. **Ctrl-C leaves something loadable.** Inside `InterruptGuard` the first
   Ctrl-C only sets ``guard.requested``; the loop finishes its step, saves,
   and says where the best checkpoint is and the exact ``--resume`` command.
   A second Ctrl-C stops at once (KeyboardInterrupt), as usual.

Every problem is a `RunError`, a ValueError: the CLI prints it as one line
``error: ...`` with exit status 2, and a library caller can catch it.
This module imports only `checkpoint` (layer 7); it never imports the CLI.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import checkpoint

__all__ = [
    "RunError", "check_output_dir", "check_output_file", "remove_stale_temporaries",
    "Rule", "integer", "real", "probability", "COMMON_RULES", "check_number", "check_flags",
    "check_vocabulary", "check_two_classes",
    "InterruptGuard", "model_generators", "generator_state", "set_generator_state",
    "TrainingState", "RunDir", "BEST_NAME", "STATE_NAME",
]

BEST_NAME = "classifier.npz"       # the best checkpoint so far (what predict/evaluate load)
STATE_NAME = "train_state.npz"     # everything `--resume` needs


class RunError(ValueError):
    """A problem with what the user asked for (a flag, a folder, the data); one line that names it."""


# --------------------------------------------------------------------------- #
# 1. Output locations
# --------------------------------------------------------------------------- #

def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the partial files that a killed `checkpoint.save` left in ``folder``; return them.

    `checkpoint.save` writes ``.NAME.PID.xxxx.tmp`` and renames it; if the
    process dies in between, that file stays. A file whose process is gone
    (or that has no process id in its name: an older version wrote those) is
    removed; one whose process still runs is left alone (it is being written).
    """
    return checkpoint.remove_stale_temporaries(folder)


def check_output_dir(path, flag: str = "--out") -> Path:
    """Make sure ``path`` is a folder we can write in, before any long work; return it as a Path.

    Creates the folder (and its parents) if needed, writes and deletes a
    probe file, and removes stale partial files (`remove_stale_temporaries`).
    Raises `RunError` naming ``flag`` when ``path`` is an existing file, when
    a part of it is a file, or when the folder cannot be created or written.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{flag}: expected a folder name, got {type(path).__name__}")
    folder = Path(path)
    if str(path) == "":
        raise RunError(f"{flag}: expected a folder name, got an empty string")
    if folder.exists() and not folder.is_dir():
        raise RunError(f"{flag}: {str(folder)!r} is an existing file, expected a folder; "
                       f"choose another {flag} or move the file away")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunError(f"{flag}: cannot create folder {str(folder)!r}: a part of that path is a file") from None
    except OSError as exc:
        raise RunError(f"{flag}: cannot create folder {str(folder)!r} ({exc.strerror or exc})") from None
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunError(f"{flag}: cannot write in folder {str(folder)!r} ({exc.strerror or exc}); "
                       f"choose another {flag}") from None
    remove_stale_temporaries(folder)
    return folder


def check_output_file(path, flag: str = "--out", suffix: str | None = None) -> Path:
    """Like `check_output_dir` for a single file to be written: its folder is checked, the name too.

    ``suffix`` (e.g. ".png") is required of the name when given. An existing
    folder at ``path`` is refused; an existing file will be replaced.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{flag}: expected a file name, got {type(path).__name__}")
    target = Path(path)
    if suffix is not None and target.suffix.lower() != suffix.lower():
        raise RunError(f"{flag}: expected a {suffix} file name, got {str(target)!r}")
    if target.is_dir():
        raise RunError(f"{flag}: {str(target)!r} is a folder, expected a file name")
    check_output_dir(target.parent if str(target.parent) else ".", flag)
    return target


# --------------------------------------------------------------------------- #
# 2. Numeric flags, one place, the flag's own name in every message
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class Rule:
    """What a numeric flag may be: an integer or a finite real in a range, maybe None ("not set").

    Build one with `integer`, `real` or `probability`; `check_number` applies it.
    """

    kind: type                       # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False           # True: low itself is not allowed
    high_open: bool = False
    allow_none: bool = False
    meaning: str = ""                # what the number is, for the message ("seconds of training")

    def describe(self) -> str:
        def show(x):
            return str(int(x)) if float(x).is_integer() else f"{x:g}"
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            what += f" in {left}{show(self.low)}, {show(self.high)}{right}"
        elif self.low is not None:
            what += f" {'>' if self.low_open else '>='} {show(self.low)}"
        elif self.high is not None:
            what += f" {'<' if self.high_open else '<='} {show(self.high)}"
        if self.meaning:
            what += f" ({self.meaning})"
        if self.allow_none:
            what += " or nothing"
        return what


def integer(low=None, high=None, meaning: str = "", allow_none: bool = False) -> Rule:
    """An integer in [low, high] (either end may be None)."""
    return Rule(int, low, high, meaning=meaning, allow_none=allow_none)


def real(low=None, high=None, low_open=False, high_open=False, meaning: str = "", allow_none: bool = False) -> Rule:
    """A finite real in the range (nan and inf are refused)."""
    return Rule(float, low, high, low_open, high_open, allow_none, meaning)


def probability(meaning: str = "a probability") -> Rule:
    """A probability in [0, 1): what dropout rates are."""
    return real(0.0, 1.0, high_open=True, meaning=meaning)


#: Rules for the flags the training commands share. A command with flags of
#: its own passes them to `check_flags(args, extra={...})`.
COMMON_RULES: dict[str, Rule] = {
    "--d-model": integer(1, meaning="model width"),
    "--heads": integer(1, meaning="attention heads"),
    "--layers": integer(1, meaning="Transformer blocks"),
    "--d-ff": integer(1, meaning="feed-forward width"),
    "--max-len": integer(2, meaning="tokens, [CLS] included"),
    "--dropout": probability("a dropout probability"),
    "--attention-dropout": probability("a dropout probability"),
    "--min-freq": integer(1, meaning="times a character must occur to get its own id"),
    "--epochs": integer(1),
    "--steps": integer(1, meaning="training steps", allow_none=True),
    "--batch-size": integer(1),
    "--lr": real(0.0, low_open=True, meaning="learning rate"),
    "--warmup": integer(0, meaning="warm-up steps"),
    "--patience": integer(1, meaning="epochs without a better validation loss before stopping"),
    "--seed": integer(0, 2**63 - 1, meaning="seeds the random generators"),
    "--time-budget": real(0.0, low_open=True, meaning="seconds", allow_none=True),
    "--log-every": integer(1, meaning="steps between two points of the training curve"),
}


def check_number(flag: str, value, rule: Rule):
    """Return ``value`` if it obeys ``rule``, else raise `RunError` "FLAG: expected ..., got ...".

    >>> check_number("--dropout", 0.1, probability())
    0.1
    """
    if value is None:
        if rule.allow_none:
            return value
        raise RunError(f"{flag}: expected {rule.describe()}, got nothing")
    ok_type = (isinstance(value, (int, np.integer)) if rule.kind is int
               else isinstance(value, (int, float, np.integer, np.floating)))
    if isinstance(value, bool) or not ok_type:
        raise RunError(f"{flag}: expected {rule.describe()}, got {value!r}")
    if rule.kind is float and not math.isfinite(float(value)):
        raise RunError(f"{flag}: expected {rule.describe()}, got {value!r}")
    too_low = rule.low is not None and (value <= rule.low if rule.low_open else value < rule.low)
    too_high = rule.high is not None and (value >= rule.high if rule.high_open else value > rule.high)
    if too_low or too_high:
        raise RunError(f"{flag}: expected {rule.describe()}, got {value!r}")
    return value


def check_flags(args, rules: dict[str, Rule] | None = None, extra: dict[str, Rule] | None = None) -> None:
    """Check every numeric flag of an argparse ``args`` that has a rule; the first bad one raises `RunError`.

    ``rules`` defaults to `COMMON_RULES`; ``extra`` adds (or overrides) rules
    for a command's own flags, e.g. ``{"--temperature": real(0, low_open=True)}``.
    A flag ``--foo-bar`` is looked up as ``args.foo_bar``; flags the command
    does not have are skipped. Also checks that ``--d-model`` is a multiple of
    ``--heads`` when both are there.
    """
    table = dict(COMMON_RULES if rules is None else rules)
    table.update(extra or {})
    for flag, rule in table.items():
        dest = flag.lstrip("-").replace("-", "_")
        if hasattr(args, dest):
            check_number(flag, getattr(args, dest), rule)
    d_model, heads = getattr(args, "d_model", None), getattr(args, "heads", None)
    if isinstance(d_model, int) and isinstance(heads, int) and d_model % heads:
        raise RunError(f"--d-model: expected a multiple of --heads ({heads}) so that every head gets "
                       f"d_model / heads dimensions, got {d_model}")


def check_vocabulary(tokenizer, texts, flag: str = "--min-freq", refuse_above: float = 0.5,
                     warn_above: float = 0.05, warn=None) -> float:
    """Refuse a vocabulary that turns most characters into [UNK]; return the [UNK] fraction.

    ``texts`` are the texts the vocabulary was built from. If no character
    got its own id, or more than ``refuse_above`` of the characters of
    ``texts`` are unknown, raise `RunError` naming ``flag``; above
    ``warn_above`` call ``warn`` (default: print to stderr) with one line.
    """
    total = unknown = 0
    for text in texts:
        n = len(text)
        total += n
        unknown += round(tokenizer.unknown_fraction(text) * n) if n else 0
    fraction = unknown / total if total else 1.0
    chars = len(getattr(tokenizer, "chars", ()))
    if chars == 0 or fraction > refuse_above:
        raise RunError(f"{flag}: the vocabulary has {chars} characters and turns {fraction:.0%} of the "
                       f"training characters into [UNK]; lower {flag}")
    if fraction > warn_above:
        message = (f"warning: {flag}: {fraction:.0%} of the training characters are [UNK] "
                   f"(vocabulary of {chars} characters); the model sees little of the text")
        (warn or (lambda line: print(line, file=sys.stderr)))(message)
    return fraction


def check_two_classes(labels, where: str = "--data", label_names=("negative", "positive")) -> None:
    """Refuse training data whose labels are all the same (a classifier then learns nothing)."""
    present = np.unique(np.asarray(labels))
    if present.size < 2:
        name = (label_names[int(present[0])] if present.size and int(present[0]) < len(label_names)
                else (str(present[0]) if present.size else "none"))
        raise RunError(f"{where}: every training text has the label {name!r}; a classifier needs "
                       f"examples of at least two classes")


# --------------------------------------------------------------------------- #
# 3. Ctrl-C
# --------------------------------------------------------------------------- #

class InterruptGuard:
    """A context in which the first Ctrl-C (SIGINT) asks the loop to stop, instead of killing it.

    Inside ``with InterruptGuard() as guard:`` the first SIGINT sets
    ``guard.requested = True`` and prints one line to stderr; the loop checks
    ``guard.requested`` between steps, saves, and stops. A second SIGINT
    raises KeyboardInterrupt at once. Leaving the block restores the previous
    handler. Outside the main thread (where Python cannot handle signals) the
    guard does nothing but still has ``requested`` (a test may set it).
    """

    def __init__(self, message: str = "stopping after this step and saving; Ctrl-C again to quit at once"):
        self.message = message
        self.requested = False
        self._previous = None
        self._installed = False

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{self.message}", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
        return False


# --------------------------------------------------------------------------- #
# 4. Random generators and the training state
# --------------------------------------------------------------------------- #

def model_generators(model, prefix: str = "model") -> dict[str, np.random.Generator]:
    """Every distinct `numpy.random.Generator` a model's modules hold (dropout's), by a stable name.

    Walks ``model.modules()`` in order and each module's attributes in order;
    a Generator shared by many modules (the classifier's one ``rng``) is
    listed once. Names are ``model.0``, ``model.1`` ...: the same model built
    from the same config gives the same names, which is what resuming needs.
    """
    found, seen = {}, set()
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, np.random.Generator) and id(value) not in seen:
                seen.add(id(value))
                found[f"{prefix}.{len(found)}"] = value
    return found


def generator_state(rng: np.random.Generator) -> dict:
    """The JSON-able state of a Generator (its bit generator's ``state`` dict)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng.bit_generator.state


def set_generator_state(rng: np.random.Generator, state: dict) -> None:
    """Put a Generator back in the state `generator_state` returned (same bit generator kind)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    kind = type(rng.bit_generator).__name__
    if not isinstance(state, dict) or state.get("bit_generator") != kind:
        got = state.get("bit_generator") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"state: expected the state of a {kind} bit generator, got {got!r}")
    rng.bit_generator.state = state


@dataclass
class TrainingState:
    """What `RunDir.load_state` returns: everything needed to continue a run exactly.

    Attributes:
        model: the model rebuilt from its config, with the weights it had when saved.
        optimizer_state: for ``optimizer.load_state_dict`` (step count and buffers).
        progress: the loop's own JSON dict (epoch, position in the epoch, history ...).
        generators: name -> Generator state, for `restore`.
        tokenizer: the tokenizer's ``to_dict()`` or None.
        extra: the JSON dict given to `RunDir.save_state` (the command's flags, say).
        path: the file it came from.
    """

    model: object
    optimizer_state: dict | None
    progress: dict
    generators: dict
    tokenizer: dict | None
    extra: dict
    path: Path = field(default=None)

    def restore(self, optimizer=None, generators: dict | None = None) -> None:
        """Load the optimizer's state and every named Generator's state (the names given to `save_state`).

        Raises ValueError naming a generator the file has no state for, so a
        resumed run never silently draws different numbers.
        """
        if optimizer is not None:
            if self.optimizer_state is None:
                raise ValueError(f"{self.path}: the training state holds no optimizer state")
            optimizer.load_state_dict(self.optimizer_state)
        for name, rng in (generators or {}).items():
            if name not in self.generators:
                raise ValueError(f"{self.path}: no saved state for random generator {name!r} "
                                 f"(the file has {sorted(self.generators)})")
            set_generator_state(rng, self.generators[name])


class RunDir:
    """The output folder of one training run: the best checkpoint, the training state, how to resume.

    Creating a RunDir checks the folder at once (`check_output_dir`): a bad
    ``--out`` fails before training, not after. Then:

    * `save_best` writes ``classifier.npz`` (or ``best_name``): the model as it
      is now, plus tokenizer and extra, atomically. Call it when validation improves.
    * `save_state` writes ``train_state.npz`` (or ``state_name``): current
      weights, optimizer, progress dict and generator states.
    * `load_state` reads it back as a `TrainingState`.
    * `resume_command` / `interrupted_message`: what to print on Ctrl-C.

    ``command`` is how the user started the run (e.g. ``"python -m
    numpy_transformer train"``); ``--resume FOLDER`` is appended to it.
    ``extra`` is merged into the ``extra`` of every file written (e.g. the
    command's flags, so that ``--resume`` can rebuild the run).
    """

    def __init__(self, path, flag: str = "--out", command: str = "python -m numpy_transformer train",
                 best_name: str = BEST_NAME, state_name: str = STATE_NAME, extra: dict | None = None,
                 check: bool = True):
        self.path = check_output_dir(path, flag) if check else Path(path)
        self.flag = flag
        self.command = command
        self.best_path = self.path / best_name
        self.state_path = self.path / state_name
        self.extra = dict(extra or {})
        self.best_saves = 0

    def save_best(self, model, tokenizer=None, extra: dict | None = None) -> Path:
        """Write the model as the best checkpoint so far (atomically); return its path."""
        path = checkpoint.save(self.best_path, model, tokenizer=tokenizer, extra={**self.extra, **(extra or {})})
        self.best_saves += 1
        return path

    def save_state(self, model, optimizer, progress: dict, generators: dict | None = None,
                   tokenizer=None, extra: dict | None = None) -> Path:
        """Write everything needed to continue exactly: weights, optimizer, ``progress``, generator states.

        ``progress`` is the loop's own JSON dict; ``generators`` maps a name to
        every Generator the loop draws from (``{"data": rng, **model_generators(model)}``).
        """
        states = {name: generator_state(rng) for name, rng in (generators or {}).items()}
        payload = {**self.extra, **(extra or {}), "kind": "training_state", "progress": progress,
                   "generators": states}
        return checkpoint.save(self.state_path, model, optimizer=optimizer, tokenizer=tokenizer, extra=payload)

    def has_state(self) -> bool:
        return self.state_path.exists()

    def load_state(self, model_registry=None) -> TrainingState:
        """Read `save_state`'s file; RunError if there is none or it is not a training state."""
        if not self.state_path.exists():
            raise RunError(f"--resume: {str(self.path)!r} holds no training state ({self.state_path.name}); "
                           f"was this folder the --out of an interrupted run?")
        ckpt = checkpoint.load(self.state_path, model_registry=model_registry)
        extra = dict(ckpt.extra)
        if extra.pop("kind", None) != "training_state":
            raise RunError(f"--resume: {self.state_path} is not a training state")
        progress = extra.pop("progress", {})
        generators = extra.pop("generators", {})
        return TrainingState(model=ckpt.model, optimizer_state=ckpt.optimizer_state, progress=progress,
                             generators=generators, tokenizer=ckpt.tokenizer, extra=extra, path=self.state_path)

    def resume_command(self) -> str:
        """The exact command that continues this run."""
        return f"{self.command} --resume {shlex.quote(str(self.path))}"

    def interrupted_message(self) -> str:
        """Two lines for Ctrl-C: where the best checkpoint is (if any) and how to resume."""
        if self.best_path.exists():
            first = f"interrupted: the best checkpoint so far is {self.best_path}"
        else:
            first = "interrupted before the first validation: no best checkpoint yet"
        return f"{first}\nto continue exactly where it stopped: {self.resume_command()}"

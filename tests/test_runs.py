"""The shared promises of `runs`: output checked first, flags named, Ctrl-C safe, resume exact."""

import argparse
import os
import signal

import numpy as np
import pytest

from numpy_transformer import checkpoint, data, runs
from numpy_transformer.models import TransformerClassifier
from numpy_transformer.tokenizer import CharTokenizer
from numpy_transformer.train import TrainConfig, fit


# --------------------------------------------------------------------------- #
# Output locations
# --------------------------------------------------------------------------- #

def test_output_dir_is_created_and_returned(tmp_path):
    out = runs.check_output_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []     # the probe file is gone


def test_an_existing_file_as_output_dir_is_refused_naming_the_flag(tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    with pytest.raises(runs.RunError, match=r"^--out: .*existing file"):
        runs.check_output_dir(f)
    with pytest.raises(runs.RunError, match=r"^--save-to: .*a part of that path is a file"):
        runs.check_output_dir(f / "sub", flag="--save-to")


def test_an_unwritable_output_dir_is_refused(tmp_path, monkeypatch):
    if os.geteuid() != 0:          # as root, permission bits do not stop writes: simulate instead
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(runs.RunError, match=r"^--out: cannot (write in|create)"):
                runs.check_output_dir(ro)
        finally:
            ro.chmod(0o755)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runs.tempfile, "mkstemp", refuse)
    with pytest.raises(runs.RunError, match=r"^--out: cannot write in folder .*Permission denied"):
        runs.check_output_dir(tmp_path / "x")


def test_output_file_checks_the_suffix_and_the_folder(tmp_path):
    assert runs.check_output_file(tmp_path / "sub" / "a.png", suffix=".png") == tmp_path / "sub" / "a.png"
    with pytest.raises(runs.RunError, match=r"--out: expected a \.png"):
        runs.check_output_file(tmp_path / "a.jpg", suffix=".png")
    with pytest.raises(runs.RunError, match="is a folder"):
        runs.check_output_file(tmp_path)


def test_stale_partial_files_are_removed_by_the_next_save(tmp_path):
    model = TransformerClassifier(vocab_size=8, num_classes=2, d_model=4, n_heads=1, n_layers=1, d_ff=8,
                                  max_len=8, dropout=0.0)
    dead_pid = 2 ** 22 + 12345               # above Linux's pid_max default: no such process
    stale = tmp_path / f".model.npz.{dead_pid}.abcd1234.tmp"
    old_style = tmp_path / ".model.npz.zz9x_k2q.tmp"
    alive = tmp_path / f".model.npz.{os.getppid()}.abcd1234.tmp"   # a running process: being written
    for f in (stale, old_style, alive):
        f.write_bytes(b"PK\x03\x04 half a file")
    os.utime(old_style, (0, 0))               # written long ago
    checkpoint.save(tmp_path / "model.npz", model)
    assert not stale.exists() and not old_style.exists() and alive.exists()
    assert checkpoint.load(tmp_path / "model.npz").model.config == model.config
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [alive.name]


def test_check_output_dir_cleans_stale_partial_files(tmp_path):
    stale = tmp_path / f".classifier.npz.{2 ** 22 + 7}.q1w2e3r4.tmp"
    stale.write_bytes(b"half")
    runs.check_output_dir(tmp_path)
    assert not stale.exists()


# --------------------------------------------------------------------------- #
# Flags
# --------------------------------------------------------------------------- #

GOOD = dict(d_model=16, heads=2, layers=1, d_ff=32, max_len=32, dropout=0.1, attention_dropout=0.0, min_freq=2,
            epochs=1, steps=10, batch_size=8, lr=1e-3, warmup=0, patience=1, seed=0, time_budget=None,
            log_every=5)


@pytest.mark.parametrize("flag,value,pattern", [
    ("--dropout", 1.5, r"--dropout: expected a finite number in \[0, 1\) \(a dropout probability\), got 1\.5"),
    ("--dropout", -0.1, "--dropout: expected"),
    ("--attention-dropout", float("nan"), "--attention-dropout: expected"),
    ("--seed", -1, r"--seed: expected an integer in \[0, "),
    ("--warmup", -5, "--warmup: expected an integer >= 0"),
    ("--patience", 0, "--patience: expected an integer >= 1"),
    ("--min-freq", 0, "--min-freq: expected an integer >= 1"),
    ("--time-budget", float("nan"), "--time-budget: expected a finite number > 0 .*got nan"),
    ("--time-budget", float("inf"), "--time-budget: expected"),
    ("--time-budget", 0.0, "--time-budget: expected"),
    ("--lr", 0.0, "--lr: expected a finite number > 0"),
    ("--max-len", 1, "--max-len: expected an integer >= 2"),
    ("--steps", 0, "--steps: expected an integer >= 1"),
    ("--batch-size", 0, "--batch-size: expected"),
])
def test_every_bad_numeric_flag_is_named(flag, value, pattern):
    args = argparse.Namespace(**{**GOOD, flag.lstrip("-").replace("-", "_"): value})
    with pytest.raises(runs.RunError, match="^" + pattern):
        runs.check_flags(args)


def test_good_flags_pass_and_extra_rules_apply():
    runs.check_flags(argparse.Namespace(**GOOD))
    runs.check_flags(argparse.Namespace(temperature=0.7), extra={"--temperature": runs.real(0, low_open=True)})
    with pytest.raises(runs.RunError, match="^--temperature: "):
        runs.check_flags(argparse.Namespace(temperature=0.0), extra={"--temperature": runs.real(0, low_open=True)})
    with pytest.raises(runs.RunError, match="^--d-model: expected a multiple of --heads"):
        runs.check_flags(argparse.Namespace(**{**GOOD, "d_model": 15}))
    with pytest.raises(runs.RunError, match="^--epochs: expected an integer"):
        runs.check_number("--epochs", 1.5, runs.integer(1))
    with pytest.raises(runs.RunError, match="^--epochs: "):
        runs.check_number("--epochs", True, runs.integer(1))


def test_a_degenerate_vocabulary_is_refused_and_a_poor_one_warned():
    texts = ["好看好看好看好看", "太差了"]      # with min_freq=2: 3 of 11 characters unknown
    with pytest.raises(runs.RunError, match=r"^--min-freq: the vocabulary has 0 characters .*100% .*\[UNK\]"):
        runs.check_vocabulary(CharTokenizer.build(texts, min_freq=1_000_000), texts)
    warnings = []
    frac = runs.check_vocabulary(CharTokenizer.build(texts, min_freq=2), texts, warn=warnings.append)
    assert 0.05 < frac <= 0.5 and warnings and warnings[0].startswith("warning: --min-freq:")
    assert runs.check_vocabulary(CharTokenizer.build(texts, min_freq=1), texts, warn=warnings.append) == 0.0


def test_one_class_training_data_is_refused():
    with pytest.raises(runs.RunError, match=r"^--data: every training text has the label 'positive'"):
        runs.check_two_classes(np.ones(10, dtype=int))
    runs.check_two_classes(np.array([0, 1, 1]))


# --------------------------------------------------------------------------- #
# Ctrl-C and random generators
# --------------------------------------------------------------------------- #

def test_the_first_sigint_asks_the_second_stops(capsys):
    before = signal.getsignal(signal.SIGINT)
    with runs.InterruptGuard() as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.requested
        assert "Ctrl-C again" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_generator_states_round_trip_and_model_generators_are_found():
    model = TransformerClassifier(vocab_size=8, num_classes=2, d_model=4, n_heads=1, n_layers=2, d_ff=8,
                                  max_len=8, dropout=0.1)
    gens = runs.model_generators(model)
    assert list(gens) == ["model.0"]            # one Generator, shared by every dropout
    g = gens["model.0"]
    state = runs.generator_state(g)
    first = g.random(5)
    runs.set_generator_state(g, state)
    assert np.array_equal(g.random(5), first)
    with pytest.raises(ValueError, match="state: expected the state of a PCG64"):
        runs.set_generator_state(g, {"bit_generator": "MT19937"})


# --------------------------------------------------------------------------- #
# Save the best, stop on Ctrl-C, resume exactly
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def tiny_task():
    splits = data.load_corpus()
    rng = np.random.default_rng(0)
    train = splits["train"].subset(rng.choice(len(splits["train"]), 160, replace=False))
    valid = splits["valid"].subset(np.arange(40))
    return train, valid, CharTokenizer.build(train.texts, min_freq=2)


def _tiny_model(tok):
    # dropout on the sublayers and on the attention weights: their masks must resume exactly too
    return TransformerClassifier(vocab_size=tok.vocab_size, num_classes=2, d_model=16, n_heads=2, n_layers=1,
                                 d_ff=32, max_len=32, dropout=0.2, attention_dropout=0.1, seed=0)


CONFIG = TrainConfig(epochs=3, batch_size=16, max_len=32, warmup_steps=3, log_every=2, patience=5)   # 30 steps


@pytest.mark.parametrize("stop_at", [4, 10, 17])     # mid-epoch, at an epoch's last step, mid-epoch later
def test_a_resumed_run_gives_the_same_losses_as_an_uninterrupted_one(tiny_task, tmp_path, stop_at, capsys):
    train, valid, tok = tiny_task
    whole = []
    model_a = _tiny_model(tok)
    hist_a = fit(model_a, train, valid, tok, CONFIG, progress=False, log=None, run=runs.RunDir(tmp_path / "a"),
                 on_step=lambda s, loss: whole.append(loss))

    parts = []

    def interrupt(step, loss):
        parts.append(loss)
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)     # a real Ctrl-C, caught by fit's guard

    run = runs.RunDir(tmp_path / "b")
    hist_b = fit(_tiny_model(tok), train, valid, tok, CONFIG, progress=False, log=None, run=run, on_step=interrupt)
    assert hist_b.interrupted and len(parts) == stop_at
    assert "interrupted" in hist_b.stopped_because
    state = run.load_state()
    assert state.progress["step"] == stop_at
    model_c = state.model
    hist_c = fit(model_c, train, valid, tok, CONFIG, progress=False, log=None, run=run, resume=state,
                 on_step=lambda s, loss: parts.append(loss))
    assert parts == whole                        # every step's loss, bit for bit
    for key in ("epoch", "step", "train_loss", "valid_loss", "valid_acc", "lr", "curve_step", "curve_loss"):
        assert getattr(hist_c, key) == getattr(hist_a, key), key
    assert hist_c.best_epoch == hist_a.best_epoch
    for (name, a), c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert np.array_equal(a, c), name
    best = checkpoint.load(run.best_path).model.state_dict()
    for (name, a), b in zip(model_a.state_dict().items(), best.values()):
        assert np.array_equal(a, b), name


def test_sigint_leaves_a_loadable_best_checkpoint_and_says_how_to_resume(tiny_task, tmp_path):
    train, valid, tok = tiny_task
    run = runs.RunDir(tmp_path / "run")

    def interrupt(step, loss):
        if step == 14:                            # after the first validation (10 steps per epoch)
            os.kill(os.getpid(), signal.SIGINT)

    hist = fit(_tiny_model(tok), train, valid, tok, CONFIG, progress=False, log=None, run=run, on_step=interrupt)
    assert hist.interrupted and hist.best_epoch == 1
    best = checkpoint.load(run.best_path)
    assert best.model.config["vocab_size"] == tok.vocab_size and best.tokenizer is not None
    message = run.interrupted_message()
    assert str(run.best_path) in message
    assert f"train --resume {tmp_path / 'run'}" in message
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_resume_refuses_other_settings(tiny_task, tmp_path):
    train, valid, tok = tiny_task
    run = runs.RunDir(tmp_path / "run")
    fit(_tiny_model(tok), train, valid, tok, CONFIG, progress=False, log=None, run=run,
        on_step=lambda s, loss: s == 3 and os.kill(os.getpid(), signal.SIGINT))
    other = TrainConfig(**{**CONFIG.__dict__, "lr": 5e-4})
    with pytest.raises(ValueError, match=r"resume: .*lr 0\.001 there, 0\.0005 here"):
        fit(_tiny_model(tok), train, valid, tok, other, progress=False, log=None, run=run, resume=run.load_state())


def test_a_run_folder_without_state_cannot_be_resumed(tmp_path):
    with pytest.raises(runs.RunError, match="^--resume: .*holds no training state"):
        runs.RunDir(tmp_path).load_state()

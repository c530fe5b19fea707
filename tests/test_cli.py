"""Every CLI command runs on a tiny model, and bad input ends in one clear line, never a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numpy_transformer.checkpoint import save
from numpy_transformer.cli import main
from numpy_transformer.models import TransformerLM
from numpy_transformer.tokenizer import CharTokenizer

TINY_MODEL = ["--init-from", "none", "--d-model", "8", "--heads", "2", "--layers", "1", "--d-ff", "16", "--max-len", "24", "--min-freq", "1"]
TINY = TINY_MODEL + ["--epochs", "1", "--batch-size", "16", "--warmup", "2", "--no-progress"]

POSITIVE = ["这本书很好看，我很喜欢", "质量不错，推荐购买", "非常满意，物流也快", "内容精彩，值得一读", "好用，下次还买"]
NEGATIVE = ["太差了，不推荐", "质量很差，很失望", "内容无聊，浪费时间", "物流太慢，服务差", "不好用，退货了"]


@pytest.fixture(scope="module")
def tsv(tmp_path_factory):
    """A small labelled file: 100 short reviews, half of each label, all distinct."""
    path = tmp_path_factory.mktemp("data") / "reviews.tsv"
    lines = ["text\tlabel"]
    for i in range(50):
        lines.append(f"{POSITIVE[i % 5]}{i}\tpositive")
        lines.append(f"{NEGATIVE[i % 5]}{i}\tnegative")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def checkpoint(tsv, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", str(tsv), "--out", str(out)] + TINY) == 0
    return out / "classifier.npz"


def test_train_writes_a_checkpoint(checkpoint):
    assert checkpoint.exists() and checkpoint.stat().st_size > 0


def test_predict_prints_a_header_the_label_and_every_probability(checkpoint, capsys):
    assert main(["predict", str(checkpoint), "很好看", "太差了"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "label\tP(negative)\tP(positive)\ttext"
    assert len(lines) == 3
    for line, text in zip(lines[1:], ["很好看", "太差了"]):
        label, p_neg, p_pos, shown = line.split("\t")
        assert shown == text
        assert abs(float(p_neg) + float(p_pos) - 1.0) < 2e-3
        assert label == ("positive" if float(p_pos) >= float(p_neg) else "negative")
    assert captured.err == ""


def test_predict_reads_a_file_and_standard_input(checkpoint, tmp_path, capsys, monkeypatch):
    import io
    f = tmp_path / "texts.txt"
    f.write_text("很好看\n\n太差了\n" + "好" * 100_000 + "\n", encoding="utf-8")   # far past any command line
    assert main(["predict", str(checkpoint), "--file", str(f)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 4          # header + 3 texts (the blank line skipped)
    assert "truncated" in captured.err and "truncated" not in captured.out   # warnings apart from results
    for argv in (["--file", "-"], ["-"]):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("很好看\n太差了\n".encode("utf-8"))))
        assert main(["predict", str(checkpoint)] + argv) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert [line.split("\t")[-1] for line in lines[1:]] == ["很好看", "太差了"]


def test_predict_says_when_a_text_is_truncated(checkpoint, capsys):
    assert main(["predict", str(checkpoint), "好" * 100]) == 0
    assert "truncated" in capsys.readouterr().err


def test_predict_warns_for_only_unknown_characters(checkpoint, capsys):
    assert main(["predict", str(checkpoint), "ΩΨΦ"]) == 0
    assert "never saw" in capsys.readouterr().err


def test_evaluate_prints_the_metrics(checkpoint, tsv, capsys):
    assert main(["evaluate", str(checkpoint), "--data", str(tsv), "--split", "valid"]) == 0
    out = capsys.readouterr().out
    for word in ("accuracy", "precision", "recall", "F1", "confusion"):
        assert word in out


def test_evaluate_scores_the_whole_file_by_default(checkpoint, tsv, tmp_path, capsys):
    assert main(["evaluate", str(checkpoint), "--data", str(tsv)]) == 0
    out = capsys.readouterr().out
    assert "all 100 texts" in out
    cm_rows = [line.split() for line in out.splitlines() if line.strip().startswith(("negative ", "positive "))]
    assert sum(int(n) for row in cm_rows if row[1].isdigit() for n in row[1:]) == 100
    small = tmp_path / "five.tsv"                 # too small to split: scored whole, not refused
    small.write_text("很好看\tpositive\n太差了\tnegative\n好用\tpositive\n很失望\tnegative\n不错\t1\n",
                     encoding="utf-8")
    assert main(["evaluate", str(checkpoint), "--data", str(small)]) == 0
    assert "all 5 texts" in capsys.readouterr().out
    assert main(["evaluate", str(checkpoint), "--data", str(tsv), "--split", "test"]) == 0
    assert "test split by the md5 rule" in capsys.readouterr().out


def test_evaluate_on_one_class_says_auc_is_undefined(checkpoint, tmp_path, capsys):
    f = tmp_path / "all_positive.tsv"
    f.write_text("".join(f"{t}{i}\tpositive\n" for i, t in enumerate(POSITIVE * 4)), encoding="utf-8")
    assert main(["evaluate", str(checkpoint), "--data", str(f)]) == 0
    out = capsys.readouterr().out
    assert "AUC       undefined: every text here is positive" in out
    assert "one class only" in out


def test_attention_writes_a_png(checkpoint, tmp_path, capsys):
    out = tmp_path / "att.png"
    assert main(["attention", str(checkpoint), "这本书很好看", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "att_mean.png").exists()


def test_demo_runs_every_step_on_a_small_file(tsv, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(tsv), "--out", str(out), "--steps", "10"] + TINY) == 0
    text = capsys.readouterr().out
    for step in ("Step 1", "Step 2", "Step 3", "Step 4", "Step 5"):
        assert step in text
    assert "row sum = 1.000" in text
    assert "short everyday reviews (54" in text
    assert "stopped: all 1 epochs done" in text
    assert (out / "classifier.npz").exists() and not (out / "train_state.npz").exists()
    assert len(list(out.glob("*_grid.png"))) == 4


def _metric_lines(text):
    keys = ("accuracy", "precision", "recall", "F1", "AUC", "P(positive)", "short everyday", "stopped", "wrong:")
    return [line for line in text.splitlines() if any(k in line for k in keys)]


def test_two_demo_runs_print_identical_metrics(tsv, tmp_path, capsys):
    flags = ["--data", str(tsv), "--steps", "8", "--epochs", "2", "--dropout", "0.2", "--batch-size", "16",
             "--warmup", "2", "--no-progress"] + TINY_MODEL
    outputs = []
    for name in ("a", "b"):
        assert main(["demo", "--out", str(tmp_path / name)] + flags) == 0
        outputs.append(_metric_lines(capsys.readouterr().out))
    assert len(outputs[0]) >= 8 and outputs[0] == outputs[1]


def test_a_clock_cut_says_so(tsv, tmp_path, capsys):
    assert main(["train", "--data", str(tsv), "--out", str(tmp_path), "--time-budget", "1e-9"] + TINY) == 0
    out = capsys.readouterr().out
    assert "the clock" in out and "note: the clock cut this run short" in out


@pytest.mark.parametrize("args, message", [
    (["predict", "{ckpt}", ""], "empty"),
    (["predict", "does/not/exist.npz", "好"], "does not exist"),
    (["attention", "{ckpt}", "好", "--out", "{tmp}/x.jpg"], ".png"),
    (["predict", "{ckpt}"], "nothing to classify"),
    (["predict", "{ckpt}", "好", "--file", "{tmp}/one_column.tsv"], "not both"),
    (["predict", "{ckpt}", "--file", "{tmp}/missing.txt"], "--file: no such file"),
    (["predict", "{ckpt}", "--file", "{tmp}/latin1.tsv"], "--file: "),
    (["predict", "{lm}", "好"], "this is a language model (TransformerLM), not a classifier; use generate"),
    (["evaluate", "{lm}"], "this is a language model (TransformerLM), not a classifier; use generate"),
    (["attention", "{lm}", "好", "--out", "{tmp}/a.png"], "this is a language model"),
    (["train", "--data", "{tmp}/one_class.tsv", "--out", "{tmp}/r"], "every training text has the label 'positive'"),
    (["demo", "--data", "{tmp}/one_class.tsv", "--out", "{tmp}/r"], "every training text has the label 'positive'"),
    (["train", "--dropout", "1.5"], "--dropout: expected a finite number in [0, 1)"),
    (["train", "--seed", "-1"], "--seed: expected an integer in [0, "),
    (["train", "--warmup", "-5"], "--warmup: expected an integer >= 0"),
    (["train", "--patience", "0"], "--patience: expected an integer >= 1"),
    (["train", "--time-budget", "nan"], "--time-budget: expected a finite number > 0"),
    (["demo", "--time-budget", "nan"], "--time-budget: expected a finite number > 0"),
    (["train", "--steps", "0"], "--steps: expected an integer >= 1"),
    (["train", "--d-model", "10", "--heads", "4"], "--d-model: expected a multiple of --heads"),
    (["train", "--data", "{tmp}/ok.tsv", "--min-freq", "1000000", "--out", "{tmp}/r"],
     "--min-freq: the vocabulary has 0 characters"),
    (["train", "--resume", "{tmp}"], "--resume: "),
    (["train", "--init-from", "{tmp}/missing.npz"], "--init-from: no such file"),
    (["demo", "--init-from", "{lm}", "--layers", "3"], "--layers: the pre-trained model given by --init-from"),
    (["train", "--init-from", "{lm}", "--min-freq", "1"], "--min-freq: the pre-trained model"),
    (["train", "--init-from", "{lm}", "--max-len", "64"], "--max-len: the pre-trained model reads at most 16"),
    (["train", "--init-from", "{lm}", "--pooling", "cls"], "--pooling: 'cls' reads position 0"),
    (["train", "--resume", "{tmp}/nowhere"], "--resume: no such folder"),
    (["train", "--data", "{tmp}/missing.tsv"], "missing.tsv"),
    (["train", "--data", "{tmp}/one_column.tsv"], "line 2"),
    (["train", "--data", "{tmp}/bad_label.tsv"], "maybe"),
    (["train", "--data", "{tmp}/latin1.tsv"], "line 3"),
    (["evaluate", "{tmp}/not_a_checkpoint.npz"], "not_a_checkpoint"),
])
def test_bad_input_gives_one_clear_error(args, message, checkpoint, tmp_path, capsys):
    (tmp_path / "one_column.tsv").write_text("好看\tpositive\n只有一列\n", encoding="utf-8")
    (tmp_path / "bad_label.tsv").write_text("好看\tpositive\n难看\tmaybe\n", encoding="utf-8")
    (tmp_path / "latin1.tsv").write_bytes("好看\tpositive\n难看\tnegative\n".encode() + b"caf\xe9\tpositive\n")
    (tmp_path / "not_a_checkpoint.npz").write_bytes(b"this is not a zip file")
    (tmp_path / "one_class.tsv").write_text("".join(f"{t}{i}\tpositive\n" for i, t in enumerate(POSITIVE * 20)),
                                            encoding="utf-8")
    (tmp_path / "ok.tsv").write_text("".join(f"{p}{i}\tpositive\n{n}{i}\tnegative\n"
                                             for i, (p, n) in enumerate(zip(POSITIVE * 10, NEGATIVE * 10))),
                                     encoding="utf-8")
    lm = tmp_path / "lm.npz"
    save(lm, TransformerLM(vocab_size=10, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=16),
         tokenizer=CharTokenizer.build(["好看"]))
    argv = [a.format(ckpt=checkpoint, tmp=tmp_path, lm=lm) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_module_entry_point_exits_nonzero_without_traceback(tmp_path):
    """The real `python -m numpy_transformer` process: exit status 2 and one line on stderr."""
    proc = subprocess.run([sys.executable, "-m", "numpy_transformer", "predict", str(tmp_path / "nope.npz"), "好"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "does not exist" in proc.stderr


def test_help_lists_every_command():
    proc = subprocess.run([sys.executable, "-m", "numpy_transformer", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ("demo", "train", "evaluate", "predict", "attention", "figures"):
        assert command in proc.stdout


def test_checkpoint_carries_the_tokenizer(checkpoint):
    from numpy_transformer.checkpoint import load
    from numpy_transformer.tokenizer import CharTokenizer
    ckpt = load(checkpoint)
    tok = CharTokenizer.from_dict(ckpt.tokenizer)
    assert tok.vocab_size == ckpt.model.config["vocab_size"]
    ids, mask = tok.encode_batch(["很好看"], 24)
    assert np.isfinite(ckpt.model.predict_proba(ids, mask)).all()


# --------------------------------------------------------------------------- #
# Never lose work: --out checked first, the best saved as it improves, Ctrl-C, --resume
# --------------------------------------------------------------------------- #

@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts: the checks must come first."""
    import numpy_transformer.train as train_module

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the output folder was checked")

    monkeypatch.setattr(train_module, "fit", refuse)


@pytest.mark.parametrize("command", ["train", "demo"])
def test_an_unusable_out_fails_before_training(command, tsv, tmp_path, capsys, monkeypatch, no_training):
    taken = tmp_path / "a_file"
    taken.write_text("x")
    assert main([command, "--data", str(tsv), "--out", str(taken)] + TINY) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: --out: ") and "existing file" in captured.err
    assert "Step 1" not in captured.out                         # the demo failed at once
    assert main([command, "--data", str(tsv), "--out", str(taken / "sub")] + TINY) == 2
    assert "a part of that path is a file" in capsys.readouterr().err

    import numpy_transformer.runs as runs

    def read_only(*args, **kwargs):                             # what a read-only folder does to a write
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runs.tempfile, "mkstemp", read_only)
    assert main([command, "--data", str(tsv), "--out", str(tmp_path / "ro")] + TINY) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out: cannot write in folder") and len(err.strip().splitlines()) == 1


def _interrupting_fit(monkeypatch, at_step):
    """Make the CLI's training loop receive a real SIGINT (Ctrl-C) after update ``at_step``."""
    import os
    import signal

    import numpy_transformer.train as train_module
    real_fit = train_module.fit

    def fit(*args, **kwargs):
        kwargs["on_step"] = lambda step, loss: step == at_step and os.kill(os.getpid(), signal.SIGINT)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train_module, "fit", fit)


def test_ctrl_c_leaves_the_best_checkpoint_and_resume_continues_exactly(tsv, tmp_path, capsys, monkeypatch):
    from numpy_transformer.checkpoint import load
    flags = ["--data", str(tsv), "--epochs", "3", "--batch-size", "16", "--warmup", "2", "--dropout", "0.2",
             "--no-progress"] + TINY_MODEL
    assert main(["train", "--out", str(tmp_path / "whole")] + flags) == 0
    capsys.readouterr()

    with monkeypatch.context() as m:
        _interrupting_fit(m, at_step=8)                          # 5 steps per epoch: mid-epoch 2
        assert main(["train", "--out", str(tmp_path / "cut")] + flags) == 130
    err = capsys.readouterr().err
    best = tmp_path / "cut" / "classifier.npz"
    assert f"the best checkpoint so far is {best}" in err
    assert f"python -m numpy_transformer train --resume {tmp_path / 'cut'}" in err
    assert load(best).extra["history"]["best_epoch"] == 1      # loadable, from epoch 1
    assert main(["predict", str(best), "很好看"]) == 0
    capsys.readouterr()

    assert main(["train", "--resume", str(tmp_path / "cut"), "--lr", "0.5"]) == 2
    assert "--lr: --resume continues the run with the flags it was started with" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    whole, resumed = load(tmp_path / "whole" / "classifier.npz"), load(best)
    for key in ("train_loss", "valid_loss", "valid_acc", "curve_loss", "step"):
        assert resumed.extra["history"][key] == whole.extra["history"][key], key
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert np.array_equal(a, b), name
    assert not (tmp_path / "cut" / "train_state.npz").exists()     # finished: nothing left to resume


def test_the_best_checkpoint_is_written_while_training(tsv, tmp_path, capsys, monkeypatch):
    import numpy_transformer.train as train_module
    real_fit = train_module.fit
    seen = []

    def fit(*args, **kwargs):
        kwargs["on_step"] = lambda step, loss: seen.append((tmp_path / "classifier.npz").exists())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train_module, "fit", fit)
    assert main(["train", "--data", str(tsv), "--out", str(tmp_path), "--epochs", "2", "--batch-size", "16",
                 "--no-progress"] + TINY_MODEL) == 0
    assert seen[:5] == [False] * 5 and all(seen[5:])          # there from the first validation on


def test_evaluate_on_the_corpus_reports_the_short_reviews_next_to_the_test_split(checkpoint, capsys):
    assert main(["evaluate", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "corpus test split, 1743 texts" in out
    assert "short everyday reviews (54, written for this project, never trained on): accuracy" in out


def test_the_cli_keeps_matplotlib_out_of_home_when_run_from_a_checkout(monkeypatch):
    import numpy_transformer.cli as cli
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    cli._keep_caches_out_of_home()
    assert os.environ["MPLCONFIGDIR"] == str(Path(cli.__file__).resolve().parents[1] / ".cache" / "matplotlib")
    monkeypatch.setenv("MPLCONFIGDIR", "/somewhere/else")
    cli._keep_caches_out_of_home()
    assert os.environ["MPLCONFIGDIR"] == "/somewhere/else"          # a value already set wins


def test_an_interrupted_demo_can_be_finished_by_train_resume(tsv, tmp_path, capsys, monkeypatch):
    from numpy_transformer.checkpoint import load
    flags = ["--data", str(tsv), "--out", str(tmp_path), "--epochs", "2", "--batch-size", "16", "--warmup", "2",
             "--no-progress"] + TINY_MODEL
    with monkeypatch.context() as m:
        _interrupting_fit(m, at_step=7)
        assert main(["demo"] + flags) == 130
    err = capsys.readouterr().err
    assert f"train --resume {tmp_path}" in err
    assert main(["train", "--resume", str(tmp_path)]) == 0
    assert load(tmp_path / "classifier.npz").extra["history"]["step"][-1] == 10


# --------------------------------------------------------------------------- #
# --init-from: train and demo start from a pre-trained language model
# --------------------------------------------------------------------------- #

@pytest.fixture()
def tiny_lm(tsv, tmp_path):
    """A tiny causal LM saved with a vocabulary that covers the TSV fixture, as `pretrain` would save it."""
    texts = [line.split("\t")[0] for line in Path(tsv).read_text(encoding="utf-8").splitlines()[1:]]
    tok = CharTokenizer.build(texts, min_freq=1)
    path = tmp_path / "tiny_lm.npz"
    save(path, TransformerLM(vocab_size=tok.vocab_size, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=24,
                             dropout=0.0, norm="pre", seed=1), tokenizer=tok, extra={"objective": "causal"})
    return path


INIT_FLAGS = ["--epochs", "1", "--batch-size", "16", "--warmup", "2", "--no-progress", "--max-len", "24"]


def test_train_init_from_copies_the_language_model_and_records_where_it_came_from(tsv, tiny_lm, tmp_path):
    from numpy_transformer.checkpoint import load
    assert main(["train", "--data", str(tsv), "--init-from", str(tiny_lm), "--out", str(tmp_path / "r")]
                + INIT_FLAGS) == 0
    ckpt = load(tmp_path / "r" / "classifier.npz")
    lm = load(tiny_lm)
    assert type(ckpt.model).__name__ == "TransferClassifier" and ckpt.model.causal
    assert ckpt.tokenizer == lm.tokenizer                       # the pre-training vocabulary, unchanged
    assert ckpt.model.config["d_model"] == 8 and len(ckpt.model.encoder.blocks) == 1
    assert ckpt.extra["init_from"] == str(tiny_lm) and len(ckpt.extra["init_md5"]) == 32
    assert ckpt.extra["args"]["lr"] == 5e-4                     # fine-tuning's default peak learning rate


def test_bidirectional_drops_the_language_models_causal_mask(tsv, tiny_lm, tmp_path, capsys):
    """--bidirectional: the same copied trunk, read without the causal mask (BERT-style), and saved so."""
    from numpy_transformer.checkpoint import load
    assert main(["train", "--data", str(tsv), "--init-from", str(tiny_lm), "--bidirectional",
                 "--out", str(tmp_path / "b")] + INIT_FLAGS) == 0
    model = load(tmp_path / "b" / "classifier.npz").model
    assert not model.causal and model.config["causal"] is False
    assert load(tmp_path / "b" / "classifier.npz").extra["args"]["bidirectional"] is True   # --resume rebuilds it
    code = main(["train", "--data", str(tsv), "--bidirectional", "--out", str(tmp_path / "s")] + TINY)
    err = capsys.readouterr().err
    assert code == 2 and "--bidirectional: only with --init-from" in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_demo_fine_tunes_from_the_given_checkpoint_and_says_so(tsv, tiny_lm, tmp_path, capsys):
    assert main(["demo", "--data", str(tsv), "--init-from", str(tiny_lm), "--out", str(tmp_path / "d"),
                 "--steps", "6"] + INIT_FLAGS) == 0
    out = capsys.readouterr().out
    assert "Fine-tune the pre-trained language model" in out and f"starting from {tiny_lm}" in out
    assert "budget: 6 steps" in out


def test_the_demo_starts_from_the_shipped_language_model_by_default():
    from numpy_transformer import cli
    args = cli.build_parser().parse_args(["demo"])
    assert Path(args.init_from).resolve() == cli.DEMO_INIT and cli.DEMO_INIT.is_file()
    cli._fill_budget_defaults(args, cli.DEMO_INIT, "demo")
    assert (args.steps, args.lr) == (cli.DEMO_FINETUNE_STEPS, cli.FINETUNE_LR)
    scratch = cli.build_parser().parse_args(["demo", "--init-from", "none"])
    cli._fill_budget_defaults(scratch, None, "demo")
    assert (scratch.steps, scratch.lr) == (cli.DEMO_STEPS, 1e-3)


def test_an_interrupted_fine_tuning_run_resumes_exactly(tsv, tiny_lm, tmp_path, capsys, monkeypatch):
    from numpy_transformer.checkpoint import load
    flags = ["--data", str(tsv), "--init-from", str(tiny_lm), "--epochs", "2"] + INIT_FLAGS[2:]
    assert main(["train", "--out", str(tmp_path / "whole")] + flags) == 0
    with monkeypatch.context() as m:
        _interrupting_fit(m, at_step=5)
        assert main(["train", "--out", str(tmp_path / "cut")] + flags) == 130
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    whole = load(tmp_path / "whole" / "classifier.npz")
    resumed = load(tmp_path / "cut" / "classifier.npz")
    assert whole.extra["history"]["train_loss"] == resumed.extra["history"]["train_loss"]
    for (name, a), (_, b) in zip(whole.model.named_parameters(), resumed.model.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_length_mix_adds_short_views_to_the_training_split_only(tsv, tmp_path, capsys):
    long_tsv = tmp_path / "long.tsv"
    rows = ["text\tlabel"]
    for i in range(60):
        opening = POSITIVE[i % 5] if i % 2 else NEGATIVE[i % 5]
        rows.append(f"{opening}。{'中间的话很多很多，' * 8}结尾{i}。\t{'positive' if i % 2 else 'negative'}")
    long_tsv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    for flag, name in (("--length-mix", "mix"), ("--no-length-mix", "plain")):
        assert main(["train", "--data", str(long_tsv), "--out", str(tmp_path / name), flag] + TINY) == 0
    out = capsys.readouterr().out
    sizes = [int(line.split()[1].rstrip(",")) for line in out.splitlines() if line.startswith("train ")]
    assert sizes[0] == 3 * sizes[1]            # each long training review and its two views; valid/test as they were

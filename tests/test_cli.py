"""Every CLI command runs on a tiny model, and bad input ends in one clear line, never a traceback."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numpy_transformer.cli import main

TINY = ["--d-model", "8", "--heads", "2", "--layers", "1", "--d-ff", "16", "--max-len", "24",
        "--min-freq", "1", "--epochs", "1", "--batch-size", "16", "--warmup", "2", "--no-progress"]

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


def test_predict_prints_label_and_probability(checkpoint, capsys):
    assert main(["predict", str(checkpoint), "很好看", "太差了"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        label, prob, _ = line.split("\t")
        assert label in ("positive", "negative")
        assert 0.5 <= float(prob) <= 1.0


def test_predict_says_when_a_text_is_truncated(checkpoint, capsys):
    assert main(["predict", str(checkpoint), "好" * 100]) == 0
    assert "truncated" in capsys.readouterr().out


def test_predict_warns_for_only_unknown_characters(checkpoint, capsys):
    assert main(["predict", str(checkpoint), "ΩΨΦ"]) == 0
    assert "never saw" in capsys.readouterr().out


def test_evaluate_prints_the_metrics(checkpoint, tsv, capsys):
    assert main(["evaluate", str(checkpoint), "--data", str(tsv), "--split", "valid"]) == 0
    out = capsys.readouterr().out
    for word in ("accuracy", "precision", "recall", "F1", "confusion"):
        assert word in out


def test_attention_writes_a_png(checkpoint, tmp_path, capsys):
    out = tmp_path / "att.png"
    assert main(["attention", str(checkpoint), "这本书很好看", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "att_mean.png").exists()


def test_demo_runs_every_step_on_a_small_file(tsv, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(tsv), "--out", str(out), "--time-budget", "5"] + TINY) == 0
    text = capsys.readouterr().out
    for step in ("Step 1", "Step 2", "Step 3", "Step 4", "Step 5"):
        assert step in text
    assert "row sum = 1.000" in text
    assert (out / "classifier.npz").exists()
    assert len(list(out.glob("*_grid.png"))) == 4


@pytest.mark.parametrize("args, message", [
    (["predict", "{ckpt}", ""], "empty"),
    (["predict", "does/not/exist.npz", "好"], "does not exist"),
    (["attention", "{ckpt}", "好", "--out", "{tmp}/x.jpg"], ".png"),
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
    argv = [a.format(ckpt=checkpoint, tmp=tmp_path) for a in args]
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

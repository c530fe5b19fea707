"""The language-model commands: generate's one-line errors, and pretrain's output checks and resume."""

import numpy as np
import pytest

from numpy_transformer import checkpoint
from numpy_transformer.cli import main
from numpy_transformer.models import TransformerClassifier, TransformerLM
from numpy_transformer.tokenizer import MASK, CharTokenizer


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory):
    tok = CharTokenizer(list("这家酒店很好不错房间"), extra_special=(MASK,))
    model = TransformerLM(tok.vocab_size, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=16, seed=0)
    path = tmp_path_factory.mktemp("lm") / "lm.npz"
    checkpoint.save(path, model, tokenizer=tok)
    return str(path)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_prints_the_prompt_and_its_continuation_reproducibly(lm_path, capsys):
    args = ("generate", lm_path, "这家酒店", "--strategy", "top-p", "--top-p", "0.9", "--temperature", "0.8",
            "--max-new-tokens", "20", "--seed", "0")
    code, out, err = _run(capsys, *args)
    assert code == 0 and out.startswith("这家酒店") and err == ""
    assert _run(capsys, *args)[1] == out
    assert _run(capsys, *args, "--no-cache")[1] == out
    for strategy in ("greedy", "sample", "top-k", "beam"):
        assert _run(capsys, "generate", lm_path, "很好", "--strategy", strategy, "--max-new-tokens", "5")[0] == 0


@pytest.mark.parametrize("extra,needle", [
    (("",), "PROMPT is empty"),
    (("   ",), "PROMPT is empty"),
    (("♪♫",), "only characters the model never saw"),
    (("好", "--top-p", "0"), "--top-p"),
    (("好", "--top-p", "1.01"), "--top-p"),
    (("好", "--top-k", "0"), "--top-k"),
    (("好", "--top-k", "100000"), "--top-k"),
    (("好", "--temperature", "0"), "--temperature"),
    (("好", "--temperature", "-1"), "--temperature"),
])
def test_generate_bad_input_is_one_line(lm_path, capsys, extra, needle):
    code, out, err = _run(capsys, "generate", lm_path, *extra)
    assert code == 2 and needle in err and err.count("\n") == 1 and err.startswith("error: ")


def test_generate_refuses_a_classifier_checkpoint(tmp_path, capsys):
    tok = CharTokenizer(list("好"))
    path = tmp_path / "clf.npz"
    checkpoint.save(path, TransformerClassifier(tok.vocab_size, 2, d_model=8, n_heads=2, n_layers=1, d_ff=8),
                    tokenizer=tok)
    code, _, err = _run(capsys, "generate", str(path), "好")
    assert code == 2 and "not a language model" in err and err.count("\n") == 1


def test_pretrain_checks_its_output_folder(tmp_path, capsys):
    code, _, err = _run(capsys, "pretrain", "--out", str(tmp_path / "new"), "--resume")
    assert code == 2 and "--resume" in err
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "last.npz").write_bytes(b"x")
    code, _, err = _run(capsys, "pretrain", "--out", str(tmp_path / "old"))
    assert code == 2 and "already holds a run" in err
    assert (tmp_path / "old" / "last.npz").read_bytes() == b"x"          # nothing overwritten
    code, _, err = _run(capsys, "pretrain", "--out", str(tmp_path / "x"), "--steps", "0")
    assert code == 2 and "steps" in err

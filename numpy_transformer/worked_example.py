"""The article's worked example (seed §4.3), computed for real.

The article walks its two sentences through embedding, positional encoding,
attention and the output layer, but prints numbers that no formula produces
(seed-errata W1-W4). Here are the true numbers for every step, computed with
the article's own five 3-D toy word vectors and the package's formulas.
`python -m numpy_transformer demo` prints them; notebooks 1-3 plot them.
"""

from __future__ import annotations

import numpy as np

from . import functional as F
from .data import SEED_SENTENCES
from .tokenizer import SEED_WORD_VECTORS, seed_tokenize

__all__ = ["toy_words", "toy_embeddings", "toy_positional_encoding", "toy_attention",
           "SEED_PRINTED_ATTENTION", "SEED_PRINTED_OUTPUT"]

# What the article prints as "attention weights" in §4.3 step 3 (errata W2):
# rows of 3 numbers (the embedding size) that do not sum to 1.
SEED_PRINTED_ATTENTION = {
    "有趣": (0.8, 0.6, 0.5),
    "喜欢": (0.6, 0.8, 0.5),
    "阅读": (0.5, 0.6, 0.8),
    "文章": (0.6, 0.6, 0.5),
    "无聊": (0.5, 0.5, 0.5),
}
# What the article prints as the output layer (errata W3): three classes for a two-class task.
SEED_PRINTED_OUTPUT = {"文本1": (0.9, 0.1, 0.0), "文本2": (0.0, 0.9, 0.1)}


def toy_words(sentence_index: int) -> list[str]:
    """The article's toy words found in sentence 1 or 2, in order (unknown characters dropped)."""
    text, _ = SEED_SENTENCES[sentence_index]
    return seed_tokenize(text, drop_unknown=True)


def toy_embeddings(words) -> np.ndarray:
    """(T, 3) float64: the article's vectors for ``words``, exactly as printed."""
    return np.array([SEED_WORD_VECTORS[w] for w in words], dtype=np.float64)


def toy_positional_encoding(T: int, D: int = 3):
    """(correct PE, the article's PE), both (T, D) float64."""
    return (F.sinusoidal_positional_encoding(T, D, dtype=np.float64),
            F.seed_positional_encoding(T, D, dtype=np.float64))


def toy_attention(X: np.ndarray, mask=None):
    """One attention head with identity projections (Q = K = V = X), as the article implies.

    Returns (out (T, 3), weights (T, T)). Each row of ``weights`` sums to 1
    and has one entry per *token*, unlike the article's printed rows.
    """
    out, weights, _ = F.scaled_dot_product_attention(X, X, X, mask)
    return out, weights

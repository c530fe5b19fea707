"""The n-gram baseline: a proper distribution, the Kneser-Ney formulas on a tiny example, and its errors."""

import math

import numpy as np
import pytest

from numpy_transformer.ngram import KneserNeyLM


def _stream(n=4000, V=12, seed=0):
    rng = np.random.default_rng(seed)
    return ((np.arange(n) % 5) + rng.integers(0, 3, n)).astype(np.int64) % V


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_probabilities_sum_to_one_over_the_vocabulary(order):
    V = 12
    lm = KneserNeyLM(order, V).fit(_stream(V=V))
    for context in ([], [3], [0, 1, 2, 3], [11, 11, 11, 11], [9, 10]):   # seen, unseen and never-seen ids
        p = lm.distribution(context)
        assert p.shape == (V,) and (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_distribution_agrees_with_log_probs():
    V = 12
    s = _stream(V=V)
    lm = KneserNeyLM(4, V).fit(s)
    test = _stream(300, V, seed=1)
    logp = lm.log_probs(test)
    for i in (1, 2, 3, 10, 150, 299):
        ctx = test[max(0, i - 3):i]
        assert logp[i - 1] == pytest.approx(math.log(lm.distribution(ctx)[test[i]]), abs=1e-12)


def test_bigram_by_hand():
    # stream a b a b a c (ids 0 1 0 1 0 2), V = 4, order 2
    s = np.array([0, 1, 0, 1, 0, 2])
    lm = KneserNeyLM(2, 4).fit(s)
    D1, D2, D3 = lm.levels[1]["D"]
    # bigram counts after 'a': ab x2, ac x1 -> c(a.) = 3, N1 = 1, N2 = 1
    # unigram continuation counts: b (after a) 1, a (after b) 1, c (after a) 1, d 0 -> total 3
    d1, d2, d3 = lm.levels[0]["D"]
    p1 = {w: max(c - (d1 if c == 1 else 0), 0) / 3 + (d1 * 3) / 3 / 4 for w, c in enumerate([1, 1, 1, 0])}
    p_b = (2 - D2) / 3 + (D1 * 1 + D2 * 1) / 3 * p1[1]
    assert lm.distribution([0])[1] == pytest.approx(p_b, abs=1e-12)
    p_d = (D1 + D2) / 3 * p1[3]                                            # never seen after a
    assert lm.distribution([0])[3] == pytest.approx(p_d, abs=1e-12)


def test_higher_orders_fit_a_patterned_stream_better():
    V = 12
    s, test = _stream(V=V), _stream(1000, V, seed=2)
    bits = [KneserNeyLM(k, V).fit(s).bits_per_char(test) for k in (1, 2, 3)]
    assert bits[0] > bits[1] >= bits[2] - 0.05
    assert bits[0] <= math.log2(V) + 1e-9


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="order"):
        KneserNeyLM(0, 5)
    with pytest.raises(ValueError, match="vocab_size"):
        KneserNeyLM(2, 1)
    with pytest.raises(RuntimeError, match="fit"):
        KneserNeyLM(2, 5).log_probs(np.array([1, 2]))
    with pytest.raises(ValueError, match="stream"):
        KneserNeyLM(2, 5).fit(np.array([1, 7]))

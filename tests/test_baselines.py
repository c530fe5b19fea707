"""The TF-IDF baseline: fits, predicts probabilities, refuses one-class data, chooses C on validation."""

import numpy as np
import pytest

from numpy_transformer.baselines import fit_tfidf_baseline

POS = ["很好很满意", "房间干净服务好", "值得推荐好书", "好看的电脑屏幕", "非常喜欢这本书"]
NEG = ["很差很失望", "房间脏服务差", "不推荐烂书", "屏幕太差了", "非常讨厌这本书"]


def test_baseline_separates_an_easy_toy_set_and_returns_probabilities():
    texts, labels = POS + NEG, [1] * 5 + [0] * 5
    model = fit_tfidf_baseline(texts, labels, C=10.0)
    p = model.predict_proba(["服务很好", "服务很差"])
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, 1] > 0.5 > p[1, 1]


def test_baseline_chooses_C_on_validation_and_refuses_one_class():
    texts, labels = POS + NEG, [1] * 5 + [0] * 5
    model = fit_tfidf_baseline(texts, labels, valid=(["好", "差"], [1, 0]), Cs=[0.01, 10.0])
    assert model.C in (0.01, 10.0)
    with pytest.raises(ValueError, match="two classes"):
        fit_tfidf_baseline(POS, [1] * 5)
    with pytest.raises(ValueError, match="one label per text"):
        fit_tfidf_baseline(POS, [1] * 4)

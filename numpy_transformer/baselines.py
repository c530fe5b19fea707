"""The baseline a user would try first: character TF-IDF + logistic regression.

Every result of the Transformer is printed beside this line, on the same split,
so that nobody is fooled by a number that only looks good. It is not ours to
teach, so it uses the library people use for it (scikit-learn) rather than
hand-written NumPy: what matters is that it is the *standard* baseline.

Features: TF-IDF of character n-grams (1 to 3 by default; Chinese has no
spaces, so characters and their neighbours are the natural units), with
sublinear term frequency (1 + log tf) and n-grams seen in at least two
training texts. Classifier: L2-regularised logistic regression; its inverse
strength ``C`` is chosen on validation by `fit_tfidf_baseline` when asked.

scikit-learn is imported inside the functions, so importing the package never
pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TfidfBaseline:
    """A fitted vectorizer and classifier; ``predict_proba(texts)`` gives (N, C) probabilities."""

    vectorizer: object
    classifier: object
    C: float
    ngram_range: tuple

    def predict_proba(self, texts) -> np.ndarray:
        return self.classifier.predict_proba(self.vectorizer.transform(list(texts)))   # (N, C)


def fit_tfidf_baseline(texts, labels, C=10.0, ngram_range=(1, 3), min_df=2, valid=None, Cs=None):
    """Fit character TF-IDF + logistic regression on ``texts`` (N,) with ``labels`` (N,).

    ``min_df``: an n-gram must appear in this many training texts (falls back
    to 1 when the training set is too small for that). With ``valid=(texts,
    labels)`` and ``Cs`` (a list), every ``C`` in ``Cs`` is fitted and the one
    with the best validation accuracy is kept: choose on validation, report on test.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts, labels = list(texts), np.asarray(labels)
    if len(texts) != len(labels):
        raise ValueError(f"labels: expected one label per text ({len(texts)}), got {len(labels)}")
    if len(np.unique(labels)) < 2:
        raise ValueError("labels: the baseline needs at least two classes in the training texts")
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=tuple(ngram_range), sublinear_tf=True,
                                 min_df=min_df if len(texts) >= 50 else 1)
    X = vectorizer.fit_transform(texts)
    candidates = list(Cs) if (Cs and valid is not None) else [C]
    best, best_acc = None, -1.0
    for c in candidates:
        clf = LogisticRegression(C=c, max_iter=2000).fit(X, labels)
        if len(candidates) == 1:
            return TfidfBaseline(vectorizer, clf, c, tuple(ngram_range))
        acc = float((clf.predict(vectorizer.transform(list(valid[0]))) == np.asarray(valid[1])).mean())
        if acc > best_acc:
            best, best_acc = TfidfBaseline(vectorizer, clf, c, tuple(ngram_range)), acc
    return best

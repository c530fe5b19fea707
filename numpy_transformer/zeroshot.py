r"""Learning from no labels and from a few (seed §2.3): embeddings, prototypes, label words.

Shape legend (as in `functional.py`): N texts, B batch, T sequence length,
D d_model, V vocabulary, C classes, K = C * k labelled examples of a few-shot draw.

The seed's §2.3 says zero-shot learning "turns the task into a
knowledge-enhanced prediction problem" and lists prototype matching,
relation classification and knowledge graphs. At the size of our models
what works with no labels, or with a handful, is *using what pre-training
put into the model* (errata E10):

1. **Sentence embeddings.** Run the pre-trained trunk, average the last
   hidden states over the text's characters (a masked mean), optionally
   average over layers, and L2-normalise:
   :math:`e = \bar h / \lVert \bar h \rVert`, :math:`\bar h = \sum_t m_t h_t / \sum_t m_t`.
   With a *causal* LM, :math:`h_t` has read characters :math:`\le t` only, so
   the mean is a mean over the text's *prefixes*: the first character enters
   every term, the last one only the final term. ``pooling="last"`` uses
   the final state alone, the only one that has read the whole text; which
   one works better is a question for the validation split.
2. **Prototypes** (Snell et al. 2017). The prototype of class c is the mean
   embedding of its labelled examples, :math:`p_c = \frac1{k}\sum_{i: y_i=c} e_i`;
   a text goes to the nearest prototype by squared Euclidean distance
   :math:`\lVert e - p_c\rVert^2` or cosine distance :math:`1 - \cos(e, p_c)`.
   With no labels at all, the prototype can be the embedding of a few words
   that *describe* the class (好评：很好 满意 推荐 ...).
3. **Label words** with the causal LM. Append a template to the review,
   "…总之，这次体验很", and compare the probabilities of the next word,
   "好" against "差". Small LMs prefer some words whatever the text
   (frequency, the template itself); **contextual calibration** (Zhao et al.
   2021) divides by the probabilities given to a content-free input such as
   "N/A" and renormalises: :math:`\hat q_c \propto p_c(x) / p_c(\text{N/A})`.

Nothing here trains the trunk except `LMClassifier` / `fine_tune`, the
"fine-tune the whole model on the k examples" comparison. Everything draws
with an explicit ``numpy.random.Generator``, so the same seed gives the same
draws and the same numbers on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import functional as F
from .backend import get_array_module, to_numpy
from .models import TransformerClassifier, TransformerLM
from .nn import Linear, Module
from .optim import AdamW, clip_grad_norm
from .tokenizer import CLS_ID, EOS_ID, normalize

__all__ = [
    "hidden_states", "masked_mean", "l2_normalize", "pooled_states", "combine_layers", "sentence_embeddings",
    "class_prototypes", "prototype_distances", "prototype_predict", "description_prototypes",
    "few_shot_draws", "fit_logistic", "LabelWords", "word_log_probs", "label_word_log_probs", "label_word_probs",
    "content_free_probs", "calibrate", "CONTENT_FREE_INPUTS", "LMClassifier", "fine_tune", "evaluate_scores",
]

#: Inputs with no sentiment in them, for contextual calibration (Zhao et al. 2021 use "N/A", "" and "[MASK]").
CONTENT_FREE_INPUTS = ("N/A", "", "。")


# --------------------------------------------------------------------------- #
# Sentence embeddings
# --------------------------------------------------------------------------- #

def _check_trunk(model, name="model"):
    if not isinstance(model, (TransformerLM, TransformerClassifier)):
        raise TypeError(f"{name}: expected a TransformerLM or TransformerClassifier, got {type(model).__name__}")


def _prefix_id(model):
    """The special token a model reads first: [EOS] for the language model, [CLS] for a classifier.

    The language model was pre-trained on the stream ``[EOS] text_1 [EOS]
    text_2 ...`` (`corpus.token_stream`): [EOS] is what it has seen just
    before every text starts, so that is what we put in front of a review.
    """
    return EOS_ID if isinstance(model, TransformerLM) else CLS_ID


def hidden_states(model, ids, mask):
    """Every layer's output for a batch: a list of L arrays (B, T, D), the last one after the final LayerNorm.

    ids (B, T) int, mask (B, T) bool (True = real token). A `TransformerLM`
    attends causally (token t sees tokens <= t) as it did in pre-training; a
    `TransformerClassifier` sees the whole text. Runs in eval mode (no
    dropout); the model's mode is restored afterwards.
    """
    _check_trunk(model)

    def run():
        xp = get_array_module(model.embed.E.data)
        ids_ = xp.asarray(ids)
        attend = F.padding_mask(xp.asarray(mask))                              # (B, 1, 1, T)
        if isinstance(model, TransformerLM):
            attend = attend & xp.asarray(F.causal_mask(ids_.shape[1]))          # (B, 1, T, T)
        x = model._embed_forward(ids_)                                         # (B, T) -> (B, T, D)
        out = []
        for block in model.encoder.blocks:
            x = block(x, attend)                                               # (B, T, D)
            out.append(x)
        if model.encoder.final_norm is not None:
            out[-1] = model.encoder.final_norm(out[-1])
        return out
    return model._restore_mode_after(run)


def masked_mean(h, mask):
    r""":math:`\bar h_b = \sum_t m_{bt} h_{bt} / \sum_t m_{bt}`: h (B, T, D), mask (B, T) bool -> (B, D).

    A row with no True in ``mask`` is refused (its mean would be 0/0).
    """
    xp = get_array_module(h)
    m = xp.asarray(mask).astype(h.dtype)                                       # (B, T)
    count = m.sum(axis=1, keepdims=True)                                       # (B, 1)
    if bool((count == 0).any()):
        raise ValueError("mask: every row needs at least one True to average over")
    return (h * m[:, :, None]).sum(axis=1) / count                             # (B, T, D) -> (B, D)


def l2_normalize(x, axis=-1, eps=1e-12):
    r""":math:`x / \max(\lVert x \rVert_2, \epsilon)` along ``axis`` (a zero vector stays zero, never NaN)."""
    xp = get_array_module(x)
    norm = xp.sqrt((x * x).sum(axis=axis, keepdims=True))
    return x / xp.maximum(norm, eps)


def _encode_texts(model, tokenizer, texts, max_len, keep="start"):
    """Token lists [prefix] + characters, cut to ``max_len`` ids (``keep`` says which end of the text stays)."""
    prefix = _prefix_id(model)
    rows = []
    for i, text in enumerate(texts):
        try:
            body = tokenizer.encode(text)
        except (TypeError, ValueError) as err:
            raise type(err)(f"texts[{i}]: {err}") from None
        room = max_len - 1
        body = body[:room] if keep == "start" else body[-room:]
        rows.append([prefix] + body)
    return rows


def _pad(rows):
    """Token lists -> ids (B, T) int64 padded with 0, mask (B, T) bool."""
    lengths = np.array([len(r) for r in rows])
    ids = np.zeros((len(rows), int(lengths.max())), dtype=np.int64)
    for b, row in enumerate(rows):
        ids[b, :len(row)] = row
    return ids, np.arange(ids.shape[1])[None, :] < lengths[:, None]


def _batches_by_length(rows, batch_size):
    """Index batches of similar lengths (little padding); every index once."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pooled_states(model, tokenizer, texts, max_len=None, batch_size=64):
    """Every layer's pooled state, both ways, from one pass: ``{"mean": (L, N, D), "last": (L, N, D)}`` float64.

    "mean": the masked mean over the text's characters (the [EOS]/[CLS] token
    in front is left out: under a causal mask its state is the same for every
    text). "last": the last character's state (under a causal mask, the only
    state that has read the whole text). Not normalised: `combine_layers`
    does that. Texts longer than ``max_len`` (default: the model's) keep
    their first characters.
    """
    _check_trunk(model)
    if isinstance(texts, str):
        raise TypeError("texts: expected a list of str, got a single str")
    texts = list(texts)
    if not texts:
        raise ValueError("texts: expected at least one text, got none")
    max_len = model.max_len if max_len is None else min(int(max_len), model.max_len)
    rows = _encode_texts(model, tokenizer, texts, max_len)
    L = len(model.encoder.blocks)
    out = {k: np.zeros((L, len(texts), model.d_model)) for k in ("mean", "last")}   # (L, N, D)
    for idx in _batches_by_length(rows, batch_size):
        ids, mask = _pad([rows[i] for i in idx])                               # (B, T)
        chars = mask.copy()
        chars[:, 0] = False                                                    # leave the prefix token out
        last = np.arange(mask.shape[1])[None, :] == (mask.sum(axis=1) - 1)[:, None]   # (B, T) one True per row
        for layer, h in enumerate(hidden_states(model, ids, mask)):           # (B, T, D) each
            h = to_numpy(h).astype(np.float64)
            out["mean"][layer, idx] = masked_mean(h, chars)
            out["last"][layer, idx] = masked_mean(h, last)
    return out


def combine_layers(states, layers="last", center=None):
    """Pooled states (L, N, D) -> L2-normalised embeddings (N, D).

    layers: "last" (the trunk's output) or "all" (each layer's vector
    L2-normalised, then averaged: lower layers keep more of the characters
    themselves, upper ones more of what predicts the next character).
    center: None, or a vector (D,) subtracted before the final
    normalisation: the mean embedding of *unlabelled* texts. Embeddings of a
    language model share one large common direction (all cosines near 1);
    removing it spreads them out (Euclidean distances do not change).
    """
    if layers not in ("last", "all"):
        raise ValueError(f"layers: expected 'last' or 'all', got {layers!r}")
    states = np.asarray(states, dtype=np.float64)
    e = l2_normalize(states[-1]) if layers == "last" else l2_normalize(l2_normalize(states).mean(axis=0))
    if center is not None:
        e = l2_normalize(e - np.asarray(center, dtype=np.float64)[None, :])
    return e                                                                   # (N, D)


def sentence_embeddings(model, tokenizer, texts, max_len=None, pooling="mean", layers="last", center=None,
                        batch_size=64):
    """L2-normalised sentence embeddings (N, D) float64 of ``texts`` from a pre-trained trunk.

    pooling "mean" | "last" (see `pooled_states`), layers "last" | "all" and
    center (see `combine_layers`).
    """
    if pooling not in ("mean", "last"):
        raise ValueError(f"pooling: expected 'mean' or 'last', got {pooling!r}")
    return combine_layers(pooled_states(model, tokenizer, texts, max_len, batch_size)[pooling], layers, center)


# --------------------------------------------------------------------------- #
# Prototypes (Snell et al. 2017)
# --------------------------------------------------------------------------- #

def _check_embeddings(name, x):
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind != "f":
        raise ValueError(f"{name}: expected a float array (N, D), got shape {x.shape} dtype {x.dtype}")
    return x


def _check_labels(labels, n, num_classes):
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels: expected {n} integer labels, got shape {labels.shape} dtype {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels: expected values in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    return labels


def class_prototypes(embeddings, labels, num_classes):
    r"""The prototype of each class: :math:`p_c = \text{mean}\{e_i : y_i = c\}`. (N, D), (N,) -> (C, D).

    Row c belongs to class c, whatever order the examples came in. A class
    with no example is refused: it would have no prototype.
    """
    e = _check_embeddings("embeddings", embeddings)
    y = _check_labels(labels, e.shape[0], num_classes)
    counts = np.bincount(y, minlength=num_classes)                             # (C,)
    if (counts == 0).any():
        raise ValueError(f"labels: class {int(np.flatnonzero(counts == 0)[0])} has no example, so no prototype")
    onehot = np.eye(num_classes)[y]                                            # (N, C)
    return (onehot.T @ e) / counts[:, None]                                    # (C, N) @ (N, D) -> (C, D)


def prototype_distances(embeddings, prototypes, metric="cosine"):
    r"""Distance of every text to every prototype, (N, D), (C, D) -> (N, C).

    ``"cosine"``: :math:`1 - \frac{e \cdot p_c}{\lVert e\rVert \lVert p_c\rVert}` — both sides
    normalised: the mean of unit vectors is *shorter* than 1, and by a
    different amount for each class, so skipping the prototype's norm favours
    the tighter class.
    ``"euclidean"``: :math:`\lVert e - p_c \rVert^2` (Snell et al. 2017 use the squared distance:
    then ``softmax(-d)`` is a linear model in ``e``).
    """
    e = _check_embeddings("embeddings", embeddings).astype(np.float64)
    p = _check_embeddings("prototypes", prototypes).astype(np.float64)
    if e.shape[1] != p.shape[1]:
        raise ValueError(f"prototypes: expected width D={e.shape[1]} like the embeddings, got {p.shape[1]}")
    if metric == "cosine":
        return 1.0 - l2_normalize(e) @ l2_normalize(p).T                       # (N, D) @ (D, C) -> (N, C)
    if metric == "euclidean":
        # ||e - p||^2 = ||e||^2 - 2 e.p + ||p||^2, all pairs at once
        d = (e * e).sum(1)[:, None] - 2.0 * e @ p.T + (p * p).sum(1)[None, :]  # (N, C)
        return np.maximum(d, 0.0)
    raise ValueError(f"metric: expected 'cosine' or 'euclidean', got {metric!r}")


def prototype_predict(embeddings, prototypes, metric="cosine"):
    """Nearest prototype: ``pred`` (N,) = argmin over classes of the distance, and ``scores`` (N, C) = −distance.

    ``scores[:, 1] - scores[:, 0]`` ranks the texts from most negative to most
    positive (for an ROC curve).
    """
    d = prototype_distances(embeddings, prototypes, metric)
    return d.argmin(axis=1), -d


def description_prototypes(model, tokenizer, descriptions, **embedding_kwargs):
    """Zero-shot prototypes (C, D): the mean embedding of the texts that describe each class.

    ``descriptions``: one list of strings per class, class 0 first, e.g.
    ``[["很差", "失望", "不推荐"], ["很好", "满意", "推荐"]]``.
    """
    if isinstance(descriptions, str) or len(descriptions) < 2:
        raise ValueError("descriptions: expected one list of texts per class, at least two classes")
    protos = []
    for c, words in enumerate(descriptions):
        if isinstance(words, str) or not list(words):
            raise ValueError(f"descriptions[{c}]: expected a non-empty list of texts")
        protos.append(sentence_embeddings(model, tokenizer, list(words), **embedding_kwargs).mean(axis=0))
    return np.stack(protos)                                                    # (C, D)


# --------------------------------------------------------------------------- #
# Few-shot draws
# --------------------------------------------------------------------------- #

def few_shot_draws(labels, k, n_draws, rng, num_classes=None):
    """``n_draws`` draws of ``k`` examples per class: indices (n_draws, C * k) int64.

    In each draw the k examples of class c are distinct (drawn without
    replacement) and come as a block, class 0 first. The same Generator
    state gives the same draws on every machine, so every method can be
    compared on exactly the same few labels.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    for name, value in (("k", k), ("n_draws", n_draws)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    labels = _check_labels(labels, labels.shape[0], num_classes)
    pools = [np.flatnonzero(labels == c) for c in range(num_classes)]
    for c, pool in enumerate(pools):
        if len(pool) < k:
            raise ValueError(f"k: expected at most {len(pool)} (the examples of class {c}), got {k}")
    draws = np.empty((n_draws, num_classes * k), dtype=np.int64)
    for d in range(n_draws):
        draws[d] = np.concatenate([rng.choice(pool, size=k, replace=False) for pool in pools])
    return draws


def fit_logistic(embeddings, labels, C=1.0, seed=0):
    """L2-regularised logistic regression (scikit-learn) on fixed embeddings: the "linear probe"."""
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(embeddings, labels)


def evaluate_scores(labels, scores):
    """Accuracy of ``argmax(scores)`` and AUC of ``scores[:, 1] - scores[:, 0]``: (N,), (N, 2) -> dict."""
    from .metrics import accuracy, roc_auc
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    out = {"accuracy": accuracy(labels, scores.argmax(axis=1))}
    out["auc"] = roc_auc(labels, scores[:, 1] - scores[:, 0]) if len(np.unique(labels)) == 2 else None
    return out


# --------------------------------------------------------------------------- #
# Label words with the causal language model (and contextual calibration)
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class LabelWords:
    """A template and the words that stand for each class.

    ``template`` holds ``{text}`` where the review goes, and ends where the
    label word would follow, e.g. ``"{text}总之，这次体验很"``. ``words``: one
    tuple of words per class, class 0 (negative) first, e.g. ``(("差",), ("好",))``.
    A class's score sums the probabilities of its words; a word of several
    characters gets the product of its characters' probabilities (chain rule).
    """

    template: str
    words: tuple

    def __post_init__(self):
        if not isinstance(self.template, str) or self.template.count("{text}") != 1:
            raise ValueError(f"template: expected a string with '{{text}}' exactly once, got {self.template!r}")
        words = tuple(tuple([w] if isinstance(w, str) else w) for w in self.words)
        if len(words) < 2 or any(not ws or any(not isinstance(w, str) or not w for w in ws) for ws in words):
            raise ValueError(f"words: expected one non-empty tuple of non-empty words per class (>= 2 classes), "
                             f"got {self.words!r}")
        object.__setattr__(self, "words", words)

    def name(self):
        words = "/".join("|".join(ws) for ws in self.words)
        return f"{self.template.replace('{text}', '…')}[{words}]"


def _next_token_log_probs(lm, ids, mask, positions):
    """log p(next token) at ``positions`` (B, P) of each row: (B, P, V) float64.

    Only the rows' needed hidden states go through the output layer
    (h E^T with tied weights), not all T positions: V is large.
    """
    h = to_numpy(hidden_states(lm, ids, mask)[-1]).astype(np.float64)        # (B, T, D)
    picked = h[np.arange(h.shape[0])[:, None], positions]                     # (B, P, D)
    W = to_numpy(lm.embed.E.data if lm.tie_weights else lm.head.W.data.T).astype(np.float64)   # (V, D)
    logp, _ = F.log_softmax(picked @ W.T)                                     # (B, P, V)
    return logp


def _prompt_rows(lm, tokenizer, texts, template, longest_word, max_len=None):
    """[EOS] + template-before + review + template-after, for every text (lists of ids)."""
    before, after = template.split("{text}")
    before_ids = tokenizer.encode(before) if normalize(before) else []
    after_ids = tokenizer.encode(after) if normalize(after) else []
    if 1 in before_ids + after_ids:
        raise ValueError(f"template: characters outside the vocabulary in {template!r}")
    max_len = lm.max_len if max_len is None else min(int(max_len), lm.max_len)
    room = max_len - 1 - len(before_ids) - len(after_ids) - (longest_word - 1)
    if room < 1:
        raise ValueError(f"template: too long for max_len={max_len}: {template!r}")
    rows = []
    for text in texts:
        body = tokenizer.encode(text)[-room:] if normalize(text) else []       # keep the end, next to the template
        rows.append([EOS_ID] + before_ids + body + after_ids)
    return rows


def word_log_probs(lm, tokenizer, texts, template, words, batch_size=64, max_len=None):
    """log P(word | template(text)) for every text and word: (N, W) float64.

    The template holds ``{text}`` where the review goes and ends where the
    word would follow. A word of several characters gets the sum of its
    characters' log-probabilities (chain rule), each given the ones before.
    Words that share all but their last character share one forward pass, so
    any number of one-character words costs a single pass over the texts.
    Each review is cut (its *last* characters kept: they sit next to the
    template) so that everything fits in ``max_len`` (default ``lm.max_len``).
    """
    if not isinstance(lm, TransformerLM):
        raise TypeError(f"lm: label-word scoring needs a TransformerLM, got {type(lm).__name__}")
    if isinstance(texts, str) or isinstance(words, str):
        raise TypeError("texts, words: expected lists of str, got a single str")
    texts, words = list(texts), list(words)
    word_ids = []
    for w in words:
        ids = tokenizer.encode(w)
        if 1 in ids:
            raise ValueError(f"words: {w!r} has characters outside the vocabulary")
        word_ids.append(ids)
    rows = _prompt_rows(lm, tokenizer, texts, template, max(len(w) for w in word_ids), max_len)
    stems = {}                                                                 # all-but-last ids -> word indices
    for j, w in enumerate(word_ids):
        stems.setdefault(tuple(w[:-1]), []).append(j)
    out = np.zeros((len(rows), len(words)))                                    # (N, W)
    for idx in _batches_by_length(rows, batch_size):
        n = np.arange(len(idx))[:, None]                                       # (B, 1)
        ends = np.array([len(rows[i]) - 1 for i in idx])                       # (B,) the prompt's last position
        for stem, js in stems.items():
            ids, mask = _pad([rows[i] + list(stem) for i in idx])
            positions = ends[:, None] + np.arange(len(stem) + 1)[None, :]      # (B, len(stem) + 1)
            logp = _next_token_log_probs(lm, ids, mask, positions)             # (B, len(stem) + 1, V)
            for j in js:
                w = np.array(word_ids[j])
                out[idx, j] = logp[n, np.arange(len(w))[None, :], w[None, :]].sum(axis=1)   # chain rule
    return out


def label_word_log_probs(lm, tokenizer, texts, label_words, batch_size=64, max_len=None):
    """log P(class c's words | template(text)): (N, C) float64, summing the probabilities of a class's words."""
    if not isinstance(label_words, LabelWords):
        raise TypeError(f"label_words: expected a LabelWords, got {type(label_words).__name__}")
    flat = [w for ws in label_words.words for w in ws]
    logp = word_log_probs(lm, tokenizer, texts, label_words.template, flat, batch_size, max_len)    # (N, W)
    cols, start = [], 0
    for ws in label_words.words:
        cols.append(np.logaddexp.reduce(logp[:, start:start + len(ws)], axis=1))           # (N,)
        start += len(ws)
    return np.stack(cols, axis=1)                                              # (N, C)


def label_word_probs(log_probs):
    """Renormalise over the label words: softmax of (N, C) log-probabilities -> (N, C) probabilities."""
    p, _ = F.softmax(np.asarray(log_probs, dtype=np.float64), axis=-1)
    return p


def content_free_probs(lm, tokenizer, label_words, inputs=CONTENT_FREE_INPUTS):
    """Zhao et al. 2021: the label-word probabilities (C,) for content-free inputs, averaged over them."""
    return label_word_probs(label_word_log_probs(lm, tokenizer, list(inputs), label_words)).mean(axis=0)


def calibrate(probs, content_free):
    r"""Contextual calibration (Zhao et al. 2021): :math:`\hat q = \mathrm{normalise}(p / p_{cf})`.

    probs (N, C) rows summing to 1; content_free (C,) the same model's
    probabilities for a content-free input. This is their
    :math:`W = \mathrm{diag}(p_{cf})^{-1}, b = 0`: a content-free input
    itself comes out uniform, so the model's preference for one word
    *whatever the text* is divided away.
    """
    p = np.asarray(probs, dtype=np.float64)
    cf = np.asarray(content_free, dtype=np.float64)
    if p.ndim != 2 or cf.shape != (p.shape[1],):
        raise ValueError(f"content_free: expected shape ({p.shape[-1]},) for probs of shape {p.shape}, "
                         f"got {cf.shape}")
    if not (cf > 0).all():
        raise ValueError(f"content_free: expected positive probabilities, got {cf}")
    q = p / cf[None, :]                                                        # (N, C)
    return q / q.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- #
# Fine-tuning the whole pre-trained model on the k examples (the comparison)
# --------------------------------------------------------------------------- #

class LMClassifier(Module):
    r"""A classifier on a pre-trained causal LM's trunk: :math:`z = \mathrm{mean}_t(h_t)\, W + b`.

    The trunk keeps its causal mask (the weights were learned with it), the
    mean is over the text's characters (the state of the [EOS] in front, the same
    for every text, is left out), exactly as `sentence_embeddings` pools, and the new
    linear head starts at zero so that the first prediction is 50/50.
    forward: ids (B, T), mask (B, T) -> logits (B, C). The LM is used, not copied.
    """

    def __init__(self, lm, num_classes=2, rng=None):
        super().__init__()
        if not isinstance(lm, TransformerLM):
            raise TypeError(f"lm: expected a TransformerLM, got {type(lm).__name__}")
        self.lm = lm
        self.head = Linear(lm.d_model, num_classes, rng=rng or np.random.default_rng(0),
                           dtype=lm.embed.E.data.dtype)
        self.head.W.data[...] = 0
        self._cache = None

    def forward(self, ids, mask):
        xp = get_array_module(self.lm.embed.E.data)
        ids, mask = xp.asarray(ids), xp.asarray(mask)
        attend = xp.asarray(F.causal_mask(ids.shape[1])) & F.padding_mask(mask)    # (B, 1, T, T)
        h = self.lm.encoder(self.lm._embed_forward(ids), attend)                   # (B, T, D)
        m = mask.astype(h.dtype)
        m[:, 0] = 0                                                                # not the [EOS] in front
        weights = m / xp.maximum(m.sum(axis=1, keepdims=True), 1)                  # (B, T) rows sum to 1
        pooled = (h * weights[:, :, None]).sum(axis=1)                             # (B, T, D) -> (B, D)
        self._cache = weights
        return self.head(pooled)                                                   # (B, C)

    def backward(self, dlogits):
        if self._cache is None:
            raise RuntimeError("LMClassifier.backward: call forward first")
        weights = self._cache
        dpooled = self.head.backward(dlogits)                                      # (B, D)
        # in the forward pass this was: pooled = sum_t weights[:, t] * h[:, t]
        dh = weights[:, :, None] * dpooled[:, None, :]                             # (B, T, D)
        return self.lm._embed_backward(self.lm.encoder.backward(dh))

    def predict_scores(self, rows, batch_size=64):
        """Log-probabilities (N, C) for token lists ``rows``, in eval mode."""
        was = self.training
        self.eval()
        out = np.zeros((len(rows), self.head.d_out))
        for idx in _batches_by_length(rows, batch_size):
            ids, mask = _pad([rows[i] for i in idx])
            logp, _ = F.log_softmax(to_numpy(self.forward(ids, mask)).astype(np.float64))
            out[idx] = logp
        self.train(was)
        return out


def fine_tune(lm, tokenizer, texts, labels, steps=30, lr=1e-4, weight_decay=0.01, seed=0, max_len=None):
    """Fine-tune a *copy* of ``lm`` (every weight) with a new head on a few labelled texts.

    Full-batch AdamW for ``steps`` steps (a budget in steps, never seconds),
    dropout as configured in the LM, gradient clipping at 1. Returns the
    `LMClassifier`; the LM passed in is unchanged.
    """
    copy = TransformerLM.from_config({**lm.config, "seed": seed})
    copy.load_state_dict(lm.state_dict())
    model = LMClassifier(copy, int(np.max(labels)) + 1, rng=np.random.default_rng(seed))
    max_len = lm.max_len if max_len is None else max_len
    rows = _encode_texts(copy, tokenizer, list(texts), max_len)
    ids, mask = _pad(rows)
    labels = np.asarray(labels)
    params = model.parameters()
    optimizer = AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(steps):
        model.zero_grad()
        loss, cache = F.cross_entropy(model(ids, mask), labels)
        if not math.isfinite(float(loss)):
            raise FloatingPointError(f"fine_tune: the loss became {float(loss)}; try a smaller lr (now {lr})")
        model.backward(F.cross_entropy_backward(1.0, cache))
        clip_grad_norm(params, 1.0)
        optimizer.step()
    model.eval()
    return model


# --------------------------------------------------------------------------- #
# The experiments of notebook 13 (and of `python -m numpy_transformer fewshot / zeroshot`)
# --------------------------------------------------------------------------- #

DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64)

#: Templates for label-word scoring; ``{text}`` is the review, the label word follows the template.
DEFAULT_TEMPLATES = ("{text}总之，这次体验很", "{text}总的来说，感觉很", "{text}这是一条")

#: Label words (negative, positive) tried with every template. All are one character long, so one
#: forward pass per template scores every set (see `word_log_probs`).
DEFAULT_WORDS = ((("差",), ("好",)), (("差",), ("棒",)), (("坏",), ("好",)), (("差", "坏", "烂"), ("好", "棒", "赞")))

#: Texts that describe each class (negative first), for zero-shot prototypes.
DEFAULT_DESCRIPTIONS = {
    "words": (("差",), ("好",)),
    "phrases": (("很差", "失望", "不推荐", "太糟糕了"), ("很好", "满意", "推荐", "太棒了")),
    "review": (("差评：质量很差，服务也不好，非常失望，不会再来了。",),
               ("好评：质量很好，服务也周到，非常满意，还会再来的。",)),
}

EMBEDDING_VARIANTS = tuple((pooling, layers, center) for pooling in ("mean", "last")
                           for layers in ("last", "all") for center in (False, True))


def _variant_name(variant):
    pooling, layers, center = variant
    return f"pooling={pooling}, layers={layers}" + (", centred" if center else "")


def _clock():
    import time
    return time.perf_counter()


def embed_splits(model, tokenizer, texts_by_split, max_len=None, log=None):
    """Pooled states of every split's texts, computed once: {split: {"mean": (L, N, D), "last": (L, N, D)}}."""
    out = {}
    for name, texts in texts_by_split.items():
        start = _clock()
        out[name] = pooled_states(model, tokenizer, texts, max_len)
        if log:
            log(f"embedded {len(texts)} {name} texts in {_clock() - start:.0f}s")
    return out


def embeddings_for(states, variant, center_from):
    """Normalised embeddings (N, D) of one variant; ``center_from``: the unlabelled pool's states."""
    pooling, layers, center = variant
    mean = combine_layers(center_from[pooling], layers).mean(axis=0) if center else None
    return combine_layers(states[pooling], layers, mean)


def _tfidf_scores(train_texts, train_labels, test_texts, C):
    from .baselines import fit_tfidf_baseline
    return fit_tfidf_baseline(train_texts, train_labels, C=C).predict_proba(test_texts)


def few_shot_experiment(lm, tokenizer, splits, states, ks=DEFAULT_KS, n_draws=50, seed=0, max_len=None,
                        finetune_ks=DEFAULT_KS, finetune_draws=1, finetune_steps=15, finetune_lrs=(1e-4, 1e-3),
                        finetune_test=400, Cs=(0.1, 1.0, 10.0, 100.0), choose_k=8, choose_draws=20, log=print):
    """Accuracy-vs-k for every method, on the same draws: a JSON-able dict.

    ``splits``: {"pool": (texts, labels), "valid": ..., "test": ...}; the k
    examples are drawn from the pool (labelled training texts); ``states``:
    `embed_splits` of the same three. The embedding variant
    (`EMBEDDING_VARIANTS`) and each logistic regression's ``C`` are chosen on
    validation, with draws of their own (k = ``choose_k``). Then for every k,
    ``n_draws`` draws (seeded: ``default_rng([seed, k])``) are scored on the
    test texts by cosine and Euclidean prototypes, logistic regression on the
    embeddings and character TF-IDF + logistic regression on the same texts.
    Fine-tuning the whole LM is slow in NumPy on a CPU, so it runs for the k in
    ``finetune_ks`` on the first ``finetune_draws`` draws only, and is scored
    on the first ``finetune_test`` test texts; the cosine prototypes of the
    same draws are scored on the same texts beside it (``*_subset``). Its
    learning rate is chosen among ``finetune_lrs`` on validation (one draw at
    k = ``choose_k``, the first ``finetune_test`` validation texts).
    """
    log = log or (lambda *_: None)
    t0 = _clock()
    pool_texts, pool_y = splits["pool"]
    valid_texts, valid_y = splits["valid"]
    test_texts, test_y = splits["test"]
    pool_y, valid_y, test_y = (np.asarray(y) for y in (pool_y, valid_y, test_y))
    max_len = lm.max_len if max_len is None else max_len
    result = {"ks": list(ks), "n_draws": n_draws, "seed": seed, "max_len": max_len,
              "pool_size": len(pool_texts), "n_test": len(test_texts), "n_valid": len(valid_texts),
              "finetune": {"ks": [k for k in finetune_ks if k in ks], "draws": finetune_draws,
                           "steps": finetune_steps, "n_test": min(finetune_test, len(test_texts))}}

    # 1. the embedding variant, chosen on validation: cosine prototypes, choose_draws draws at k = choose_k
    choose = few_shot_draws(pool_y, choose_k, choose_draws, np.random.default_rng([seed, 10_000]))
    variant_scores = {}
    for variant in EMBEDDING_VARIANTS:
        pool_e = embeddings_for(states["pool"], variant, states["pool"])
        valid_e = embeddings_for(states["valid"], variant, states["pool"])
        accs = [float((prototype_predict(valid_e, class_prototypes(pool_e[d], pool_y[d], 2))[0] == valid_y).mean())
                for d in choose]
        variant_scores[_variant_name(variant)] = float(np.mean(accs))
    variant = max(EMBEDDING_VARIANTS, key=lambda v: variant_scores[_variant_name(v)])
    result["embedding_variants_valid"] = variant_scores
    result["embedding_variant"] = _variant_name(variant)
    result["embedding_variant_key"] = list(variant)
    log(f"embedding variant chosen on validation: {_variant_name(variant)} "
        f"(cosine prototypes, k={choose_k}: {variant_scores[_variant_name(variant)]:.3f})")
    pool_e = embeddings_for(states["pool"], variant, states["pool"])
    valid_e = embeddings_for(states["valid"], variant, states["pool"])
    test_e = embeddings_for(states["test"], variant, states["pool"])

    # 2. C of the two logistic regressions, chosen on validation (10 of the same draws)
    def lr_valid(C, d):
        return float((fit_logistic(pool_e[d], pool_y[d], C).predict(valid_e) == valid_y).mean())

    def tfidf_valid(C, d):
        return float((_tfidf_scores([pool_texts[i] for i in d], pool_y[d], valid_texts, C).argmax(1)
                      == valid_y).mean())

    result["C_valid"], chosen_C = {}, {}
    for name, fn in (("lr_embedding", lr_valid), ("tfidf_lr", tfidf_valid)):
        scores = {C: float(np.mean([fn(C, d) for d in choose[:10]])) for C in Cs}
        chosen_C[name] = max(Cs, key=lambda C: scores[C])
        result["C_valid"][name] = {str(C): v for C, v in scores.items()}
        log(f"{name}: C = {chosen_C[name]:g} chosen on validation ({scores[chosen_C[name]]:.3f})")
    result["C"] = chosen_C
    finetune_lr = finetune_lrs[0]
    if result["finetune"]["ks"] and len(finetune_lrs) > 1:
        d = choose[0]
        valid_rows = _encode_texts(lm, tokenizer, valid_texts[:finetune_test], max_len)
        scores = {}
        for lr in finetune_lrs:
            model = fine_tune(lm, tokenizer, [pool_texts[i] for i in d], pool_y[d], steps=finetune_steps, lr=lr,
                              seed=seed, max_len=max_len)
            scores[lr] = float((model.predict_scores(valid_rows).argmax(1) == valid_y[:finetune_test]).mean())
        finetune_lr = max(finetune_lrs, key=lambda lr: scores[lr])
        result["finetune"]["lr_valid"] = {str(lr): v for lr, v in scores.items()}
        log(f"fine-tuning: lr = {finetune_lr:g} chosen on validation ({scores[finetune_lr]:.3f}; "
            f"{_clock() - t0:.0f}s)")
    result["finetune"]["lr"] = finetune_lr

    # 3. the curves, on test; every method sees the same draws
    methods = ("proto_cosine", "proto_euclidean", "lr_embedding", "tfidf_lr")
    result["accuracy"] = {m: {} for m in methods + ("finetune", "proto_cosine_subset")}
    result["auc"] = {m: {} for m in methods + ("finetune", "proto_cosine_subset")}
    n_ft = result["finetune"]["n_test"]
    ft_rows = _encode_texts(lm, tokenizer, test_texts[:n_ft], max_len)
    for k in ks:
        draws = few_shot_draws(pool_y, k, n_draws, np.random.default_rng([seed, k]))
        acc = {m: [] for m in result["accuracy"]}
        auc = {m: [] for m in result["auc"]}
        for n, d in enumerate(draws):
            protos = class_prototypes(pool_e[d], pool_y[d], 2)
            scored = {"proto_cosine": prototype_predict(test_e, protos, "cosine")[1],
                      "proto_euclidean": prototype_predict(test_e, protos, "euclidean")[1],
                      "lr_embedding": fit_logistic(pool_e[d], pool_y[d], chosen_C["lr_embedding"])
                      .predict_log_proba(test_e),
                      "tfidf_lr": np.log(_tfidf_scores([pool_texts[i] for i in d], pool_y[d], test_texts,
                                                       chosen_C["tfidf_lr"]) + 1e-300)}
            for m, sc in scored.items():
                r = evaluate_scores(test_y, sc)
                acc[m].append(r["accuracy"])
                auc[m].append(r["auc"])
            if k in finetune_ks and n < finetune_draws:
                model = fine_tune(lm, tokenizer, [pool_texts[i] for i in d], pool_y[d], steps=finetune_steps,
                                  lr=finetune_lr, seed=seed * 1000 + n, max_len=max_len)
                for m, sc in (("finetune", model.predict_scores(ft_rows)),
                              ("proto_cosine_subset", scored["proto_cosine"][:n_ft])):
                    r = evaluate_scores(test_y[:n_ft], sc)
                    acc[m].append(r["accuracy"])
                    auc[m].append(r["auc"])
        for m in acc:
            if acc[m]:
                result["accuracy"][m][str(k)] = acc[m]
                result["auc"][m][str(k)] = auc[m]
        log(f"k={k:3d}: " + "  ".join(f"{m} {np.mean(acc[m]):.3f}±{np.std(acc[m]):.3f}" for m in acc if acc[m])
            + f"  ({_clock() - t0:.0f}s)")
    result["seconds"] = _clock() - t0
    return result


def zero_shot_experiment(lm, tokenizer, splits, states, templates=DEFAULT_TEMPLATES, words=DEFAULT_WORDS,
                         descriptions=None, content_free=CONTENT_FREE_INPUTS, max_len=None, test_all=False,
                         log=print):
    """Label words (every template x word set, raw and calibrated) and description prototypes: a JSON-able dict.

    Every alternative is scored on validation; the test texts are scored for
    the templates of the best raw and the best calibrated alternative (chosen
    by validation accuracy), or for all with ``test_all``. Description
    prototypes: every description set x embedding variant on validation and
    test, cosine distance; the best by validation accuracy is named.
    """
    log = log or (lambda *_: None)
    descriptions = DEFAULT_DESCRIPTIONS if descriptions is None else descriptions
    t0 = _clock()
    flat = sorted({w for ws in words for cls in ws for w in cls})
    col = {w: j for j, w in enumerate(flat)}

    def per_class(lp, ws):
        return np.stack([np.logaddexp.reduce(lp[:, [col[w] for w in cls]], axis=1) for cls in ws], axis=1)

    def score(template, split_names):
        logp = {"content_free": word_log_probs(lm, tokenizer, list(content_free), template, flat, max_len=max_len)}
        for split in split_names:
            logp[split] = word_log_probs(lm, tokenizer, splits[split][0], template, flat, max_len=max_len)
        rows = []
        for ws in words:
            cf = label_word_probs(per_class(logp["content_free"], ws)).mean(axis=0)
            lw = LabelWords(template, ws)
            for calibrated in (False, True):
                row = {"template": template, "words": [list(c) for c in lw.words], "name": lw.name(),
                       "calibrated": calibrated, "content_free": cf.tolist()}
                for split in split_names:
                    p = label_word_probs(per_class(logp[split], ws))
                    p = calibrate(p, cf) if calibrated else p
                    r = evaluate_scores(splits[split][1], np.log(p))
                    row[f"{split}_accuracy"], row[f"{split}_auc"] = r["accuracy"], r["auc"]
                    row[f"{split}_positive_rate"] = float((p.argmax(1) == 1).mean())
                rows.append(row)
        return rows

    rows = []
    for template in templates:
        start = _clock()
        rows += score(template, ("valid", "test") if test_all else ("valid",))
        log(f"template {template!r} on validation: {_clock() - start:.0f}s")
    best = {c: max((r for r in rows if r["calibrated"] == c), key=lambda r: r["valid_accuracy"]) for c in (0, 1)}
    if not test_all:
        for template in dict.fromkeys(best[c]["template"] for c in (0, 1)):
            start = _clock()
            with_test = {(r["name"], r["calibrated"]): r for r in score(template, ("test",))}
            for r in rows:
                if r["template"] == template:
                    r.update({k: v for k, v in with_test[(r["name"], r["calibrated"])].items() if k.startswith("test")})
            log(f"template {template!r} on test: {_clock() - start:.0f}s")
    result = {"label_words": rows, "content_free_inputs": list(content_free),
              "best_raw": best[0], "best_calibrated": best[1], "n_valid": len(splits["valid"][0]),
              "n_test": len(splits["test"][0])}

    proto_rows = []
    center_from = states["pool"] if "pool" in states else states["valid"]
    for name, desc in descriptions.items():
        desc_states = [pooled_states(lm, tokenizer, list(cls), max_len) for cls in desc]
        for variant in EMBEDDING_VARIANTS:
            protos = np.stack([embeddings_for(st, variant, center_from).mean(axis=0) for st in desc_states])
            row = {"descriptions": name, "texts": [list(c) for c in desc], "variant": _variant_name(variant)}
            for split in ("valid", "test"):
                e = embeddings_for(states[split], variant, center_from)
                r = evaluate_scores(splits[split][1], prototype_predict(e, protos, "cosine")[1])
                row[f"{split}_accuracy"], row[f"{split}_auc"] = r["accuracy"], r["auc"]
            proto_rows.append(row)
    result["description_prototypes"] = proto_rows
    result["best_description"] = max(proto_rows, key=lambda r: r["valid_accuracy"])
    result["seconds"] = _clock() - t0
    log(f"zero-shot done in {result['seconds']:.0f}s")
    return result

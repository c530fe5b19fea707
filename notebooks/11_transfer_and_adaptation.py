# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11 · Transfer and adaptation (seed §2.2)
#
# The article's claim: a model **pre-trained** on a large text corpus, then moved to the target task,
# needs fewer labels and less time; and when the target's text differs from the training text (another
# *domain*), **domain adaptation** (adversarial training, consistency regularisation, feature matching)
# closes part of the gap. This notebook looks at each claim with our own numbers:
#
# 1. the same review seen by a fresh and by a pre-trained encoder: which characters sit close together
#    in the embedding table, and where attention looks;
# 2. the label budget: accuracy with 1 % ... 100 % of the training labels, pre-trained or not, against
#    the character TF-IDF baseline;
# 3. domain adaptation between hotel and laptop reviews, both ways: a table and a picture of the features;
# 4. the gradient-reversal layer, in one cell you can check by hand.
#
# Everything loads small shipped files (`notebooks/assets/`, see its README), so the notebook runs in
# seconds. Every number of §2 and §3 was measured with the shipped `lm_small.npz` (all 1,500 steps of its
# pre-training, 6.36 bits/char on review validation text), which §1 shows, or (the `tapt` rows) with that
# model continued on the review text. The experiments behind the
# numbers are `benchmarks/transfer_experiments.py` (README §
# Transfer learning gives the commands and how long each took). `RETRAIN = True` in the next cell
# recomputes the domain-adaptation table on the pre-trained features (a few minutes on a CPU: the
# features of every review must be computed first).

# %%
from numpy_transformer import viz
viz.notebook_setup()
RETRAIN = False   # True: recompute the domain-adaptation runs on the pre-trained features (minutes)

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, display

from numpy_transformer import checkpoint, functional as F
from numpy_transformer.models import TransformerLM
from numpy_transformer.tokenizer import CharTokenizer
from numpy_transformer.transfer import DOMAIN_KEYWORDS, pretrained_registry

ASSETS = Path("assets")            # relative to notebooks/, where Jupyter runs


def table(rows, header):
    """Show rows of values as an HTML table (numbers with 3 decimals)."""
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    display(HTML(f"<table><tr>{head}</tr>{body}</table>"))


# %% [markdown]
# ## 1. A fresh encoder and a pre-trained one
#
# `lm_small.npz` is the causal language model of notebook 10 (the language-model chapter): 4 pre-LN
# blocks of width 128, trained to predict the next character of People's Daily and of the review
# corpus's *training* texts. The fresh model has the same shape and the initial weights of another seed.
# Both read the same vocabulary.

# %%
ckpt = checkpoint.load(ASSETS / "lm_small.npz", model_registry=pretrained_registry())
pretrained, tok = ckpt.model, CharTokenizer.from_dict(ckpt.tokenizer)
fresh = TransformerLM.from_config({**pretrained.config, "seed": 1})
pretrained.eval(), fresh.eval()
print(f"{type(pretrained).__name__}: {pretrained.num_parameters():,} parameters, vocabulary {tok.vocab_size:,}")
print({k: pretrained.config[k] for k in ("d_model", "n_heads", "n_layers", "d_ff", "norm", "activation")})

# %% [markdown]
# ### Nearest neighbours in the embedding table
#
# Each character is a row of the table $E$ (V × D). Its neighbours are the rows with the largest cosine
# similarity. A language model learns that characters used in the same places belong together. In our
# run the right-hand column shows it: 差 (bad) next to 低 (low), 吵 (noisy), 错 (wrong), 旧 (old); 慢 (slow)
# next to 快 (fast) and 吵; 房 (room) next to 楼 (floor), 床 (bed), 室 (room); 书 (book) next to 版 (edition). The fresh table's
# neighbours are random characters: a classifier starting there must learn everything from labels.
# (The shipped `lm_small.npz` is a short CPU run, 6.4 bits/char on review text; see `assets/README.md`.)


# %%
def neighbours(E, char, k=6):
    """The k characters whose embedding rows have the largest cosine similarity with char's."""
    e = E / np.linalg.norm(E, axis=1, keepdims=True)                 # (V, D) unit rows
    sims = e @ e[tok.token_to_id(char)]                              # (V,)
    order = [i for i in np.argsort(-sims) if i >= 6 and tok.id_to_token(i) != char][:k]
    return " ".join(tok.id_to_token(i) for i in order)


probe_chars = ["好", "差", "慢", "房", "脑", "书"]
table([(c, neighbours(fresh.embed.E.data, c), neighbours(pretrained.embed.E.data, c)) for c in probe_chars],
      ["character", "fresh: nearest", "pre-trained: nearest"])

# %% [markdown]
# ### Attention on the same review
#
# The last block's attention, averaged over its heads, for a hotel review. The causal mask hides the
# upper triangle (a character attends to itself and to the characters before it). The fresh model spreads
# its weights smoothly over the past. The pre-trained one has structure that fine-tuning starts from:
# a bright column at the first comma (every later character looks back at the end of the first clause)
# and more weight on the first character.

# %%
review = "房间很干净，服务也很好，下次还会入住。"
ids, mask = tok.encode_batch([review], 64, add_cls=False)
chars = [tok.id_to_token(int(i)) for i in ids[0]]
fig, axes = plt.subplots(1, 2, figsize=(13, 6))
for ax, model, name in ((axes[0], fresh, "fresh"), (axes[1], pretrained, "pre-trained")):
    model(ids, mask)
    w = model.attention_weights[-1][0].mean(axis=0)                   # (H, T, T) -> (T, T)
    viz.attention_map(w, chars, title=f"{name}: last block, mean over heads", ax=ax)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. How many labels does pre-training save?
#
# The x-axis is the fraction of the 13,832 training labels used (nested subsets: the 1 % lies inside the
# 3 %, and so on). Each point is the test accuracy of a model whose training length (or regularisation)
# was chosen on the validation split; where the subset is small, 3 seeds (different subsets and
# initialisations), mean ± spread. Methods: the character TF-IDF + logistic regression baseline; a
# *linear probe* (a logistic regression on the frozen pre-trained encoder's mean-pooled features); full
# fine-tuning from the pre-trained LM (GPT-style) and from the MLM encoder (BERT-style); and training the
# same architecture from scratch. Each fine-tuning method was run in a few variants (learning rate,
# layer-wise learning-rate decay, gradual unfreezing); at each budget the point shows the variant with
# the best *validation* accuracy, and the table under the figure says which one it was.

# %%
results = json.loads((ASSETS / "transfer_results.json").read_text(encoding="utf-8"))
budget, chosen = results["budget"], results["chosen"]
labels = {"tfidf": "TF-IDF + logistic regression", "probe:lm_small": "linear probe on lm_small",
          "finetune:lm_small": "fine-tuned from lm_small",
          "finetune:tapt": "fine-tuned from lm_small + 800 steps on the review text (TAPT)",
          "finetune:mlm": "fine-tuned from the MLM encoder (BERT-style)",
          "finetune:scratch": "from scratch (same shape)"}
fig, ax = plt.subplots(figsize=(7, 4.5))
for family, name in labels.items():
    rows = sorted((r for r in chosen if r["family"] == family), key=lambda r: r["fraction"])
    if not rows:
        continue
    x = [100 * r["fraction"] for r in rows]
    m = np.array([r["mean"][0] for r in rows])
    s = np.array([r["std"][0] for r in rows])
    ax.errorbar(x, m, yerr=s, marker="o", capsize=3, label=name, alpha=0.85)
ax.set_xscale("log")
ax.set_xlabel("% of the training labels")
ax.set_ylabel("test accuracy")
ax.set_title("Label budget (mean ± std over seeds where n > 1)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8, loc="lower right")
plt.show()
table([(labels[r["family"]], f"{100 * r['fraction']:g} %", r["method"].split(":")[-1], r["mean"][3], r["mean"][0],
        r["std"][0], r["mean"][1], r["n"]) for r in chosen],
      ["method", "labels", "variant chosen", "validation accuracy", "test accuracy", "± std", "test AUC", "seeds"])

# %% [markdown]
# **How to fine-tune with 10 % of the labels.** The variants tried at 10 % (1,383 reviews), 3 seeds each.
# The default learning rate of `train --init-from`, 5e-4, is the one that works best with all the labels;
# with a tenth of them it overwrites what pre-training put in the lower blocks before the small training
# set can say what to keep. Three ways to protect those weights: a smaller learning rate everywhere,
# a learning rate that shrinks layer by layer towards the input (layer-wise decay: the new head at 5e-4, the
# top block at 0.7 × 5e-4, each block below at 0.7 times the one above, the embeddings lowest), or unfreezing one block at a time from the top.

# %%
variants = sorted((r for r in budget if r["fraction"] == 0.1 and r["method"].startswith("finetune:")),
                  key=lambda r: -r["mean"][3])
table([(r["method"].split(":")[1], r["mean"][3], r["mean"][0], r["std"][0], r["mean"][1], r["n"]) for r in variants],
      ["variant (10 % of the labels)", "validation accuracy", "test accuracy", "± std", "test AUC", "seeds"])

# %% [markdown]
# **Pre-training on the task's own text** (task-adaptive pre-training, "TAPT", Gururangan et al. 2020):
# `lm_small` was pre-trained on news and reviews together; 800 more steps on the review training text
# alone (`pretrain --init-from notebooks/assets/lm_small.npz --text reviews`, 6 minutes) bring its bits per
# character on review validation text from 6.36 to 6.01. It is the `tapt` rows above: with few labels it
# helps most (at 1 % and 3 % it draws level with TF-IDF), at 10 % it is best on validation but within the
# seed spread of `lm_small` on test. With all the labels, the whole comparison (one seed each; the
# variant of each method chosen on validation, among them `bidir`, fine-tuning without the causal mask,
# and `2000steps`, twice the fine-tuning; the ensembles average the models' probabilities):

# %%
full = [r for r in chosen if r["fraction"] == 1.0]
table([(labels[r["family"]], r["method"].split(":")[-1], r["mean"][3], r["mean"][0], r["mean"][1]) for r in
       sorted(full, key=lambda r: -r["mean"][0])],
      ["method (all 13,832 labels)", "variant chosen", "validation accuracy", "test accuracy", "test AUC"])
table([(" + ".join(e["members"]), e["weight_first"], e["valid"]["acc"], e["test"]["acc"], e["test"]["auc"])
       for e in results["ensembles"]],
      ["ensemble", "weight of the first (chosen on validation)", "validation accuracy", "test accuracy", "test AUC"])

# %% [markdown]
# TAPT and twice the fine-tuning give 0.821 ± 0.008 over three seeds (0.829, 0.822, 0.812): about half a point
# better than the first run (0.815), and about 2 points under the character TF-IDF line. Single-seed rows
# differ from each other by less than that spread, so the "variant chosen" above is partly luck. Averaging the transformers with each other does not
# help (they make the same mistakes); only TF-IDF adds something to them, and that ensemble is TF-IDF with
# help. The README (§ Transfer learning) lists everything tried, with the time each took.

# %% [markdown]
# ## 3. Domain adaptation: hotels → laptops, and back
#
# The domains come from a keyword rule (a review belongs to a domain when it names one of its keywords
# and no other domain's; the rest are left out):

# %%
counts = results.get("domain_counts")
print({name: " ".join(words) for name, words in DOMAIN_KEYWORDS.items()})
if counts:
    table([(split, *(c[k] for k in ("hotel", "laptop", "book", "none", "several"))) for split, c in counts.items()],
          ["split", "hotel", "laptop", "book", "none", "several"])

# %% [markdown]
# Train on labelled **hotel** reviews, test on **laptop** reviews, whose training texts are seen
# *without* labels (and the reverse: laptops → hotels). Two ways: every method adapts the same small
# network (a hidden layer of 128 with dropout, then the classifier) on top of the frozen pre-trained
# features (seconds a run, so 10 seeds and both directions); or the whole pre-trained model is fine-tuned
# with the method's extra loss (300 steps, minutes a run: 3 seeds, hotels → laptops only):
#
# * **source only**: nothing special, the baseline to beat;
# * **DANN**: a domain classifier on the hidden features behind a gradient-reversal layer (§4 below);
# * **CORAL**: the covariance of the target's hidden features pulled towards the source's (exercise 7);
# * **consistency**: two dropout views of each laptop review must give the same prediction (a symmetric KL);
# * **target labels**: trained on the laptop reviews' own labels, the upper bound.
#
# Target accuracy is what counts; a method "helps" only if it beats source-only by more than the
# seed-to-seed spread.

# %%
if RETRAIN:
    import subprocess, sys
    feats = Path("../runs/transfer/lm_feats.npz")
    if not feats.exists():
        subprocess.run([sys.executable, "../benchmarks/transfer_experiments.py", "features", "--init",
                        str(ASSETS / "lm_small.npz"), "--out", str(feats)], check=True)
    for source, target in (("hotel", "laptop"), ("laptop", "hotel")):
        subprocess.run([sys.executable, "../benchmarks/transfer_experiments.py", "--results",
                        "../runs/transfer/notebook.jsonl", "domain-features", "--features", str(feats),
                        "--source", source, "--target", target, "--seeds", *map(str, range(10))], check=True)
    subprocess.run([sys.executable, "../benchmarks/transfer_experiments.py", "--results",
                    "../runs/transfer/notebook.jsonl", "summary", "--out", "../runs/transfer/notebook.json"],
                   check=True)
    results = json.loads(Path("../runs/transfer/notebook.json").read_text(encoding="utf-8"))
names = {"source": "source only", "dann": "DANN (gradient reversal)", "coral": "CORAL (feature matching)",
         "consistency": "consistency (two dropout views)", "target": "target labels (upper bound)"}
how = {"domain-features": "frozen features + small network", "domain": "whole model fine-tuned"}
rows = results["domain"]
table([(how[r["exp"]], r["source"] + " → " + r["target"], names[r["method"]], r["mean"][0], r["std"][0], r["mean"][1],
        r["mean"][2], r.get("target_called_positive", "—"), r.get("target_positive", "—"), r["n"])
       for r in sorted(rows, key=lambda r: (r["exp"], r["source"] != "hotel", list(names).index(r["method"])))],
      ["what trains", "direction", "method", "target accuracy", "± std", "target AUC", "source accuracy",
       "target called positive", "target truly positive", "seeds"])

# %% [markdown]
# How to read it. **Hotels → laptops**: no method beats source only by more than the seed-to-seed
# spread, with frozen features or with the whole model. **Laptops → hotels**, on frozen features, DANN
# does: about 4.5 points of target accuracy over source only, more than twice the spread of 10 seeds.
# But look at the AUC and at the last two columns before calling it a better classifier. Its AUC is *not*
# higher: DANN does not rank hotel reviews better. The laptop-trained classifier calls three hotel
# reviews in four positive, when fewer than half are; the hotel features sit on the positive side of a
# boundary drawn among laptops. DANN pulls the two domains' features together, and that moves the
# hotels back towards the boundary: fewer are called positive, so more are right. A domain shift can
# move *where* the threshold falls without changing *how* texts are ranked, and that part adaptation
# can fix without a single target label. Accuracy alone would have hidden which of the two happened.

# %% [markdown]
# ### What adaptation does to the features
#
# The hidden features (on the frozen `lm_small` features, seed 0) of the hotel (source) and laptop (target) test reviews, projected on their first
# two principal components (computed on both domains together). Before adaptation (source only) the two
# clouds sit apart along one direction: the network has features that say "hotel or laptop". DANN and
# CORAL are asked to remove that difference; look at how much the clouds overlap afterwards, and at
# whether the classes (filled = positive) still separate.


# %%
def pca2(a, b):
    both = np.concatenate([a, b]).astype(np.float64)
    mu = both.mean(0)
    _, _, vt = np.linalg.svd(both - mu, full_matrices=False)
    return (a - mu) @ vt[:2].T, (b - mu) @ vt[:2].T


pca = np.load(ASSETS / "transfer_da_pca.npz")
shown = [m for m in ("source", "dann", "coral") if f"{m}_source" in pca.files]
fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4.5))
for ax, method in zip(np.atleast_1d(axes), shown):
    zs, zt = pca2(pca[f"{method}_source"], pca[f"{method}_target"])
    for z, y, colour, name in ((zs, pca["source_labels"], "tab:blue", "hotel"),
                               (zt, pca["target_labels"], "tab:orange", "laptop")):
        ax.scatter(z[y == 1, 0], z[y == 1, 1], s=8, c=colour, alpha=0.6, label=f"{name} +")
        ax.scatter(z[y == 0, 0], z[y == 0, 1], s=8, facecolors="none", edgecolors=colour, alpha=0.6,
                   label=f"{name} −")
    ax.set_title(names[method])
    ax.set_xticks([]), ax.set_yticks([])
np.atleast_1d(axes)[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The gradient-reversal layer, by hand
#
# Forward: the identity. Backward: the gradient times $-\lambda$. Take one feature $f = w x$ (the
# encoder), a domain classifier $d = v f$ and the domain loss $L = \tfrac12 (d - t)^2$ with target
# $t = 1$. The domain classifier $v$ gets the ordinary gradient and learns to predict the domain; the
# encoder $w$ below the reversal layer gets the *opposite* gradient, so the same step makes the feature
# *worse* at predicting the domain. Check the four numbers with pencil and paper: $x = 2$, $w = 0.5$,
# $v = 3$, $\lambda = 1$.

# %%
x, w, v, lam, t = 2.0, 0.5, 3.0, 1.0, 1.0
f = w * x                                       # 1.0   the feature
r, cache = F.gradient_reversal(np.array([f]), lam)  # forward: r = f
d = v * r[0]                                    # 3.0   the domain classifier's output
dd = d - t                                      # 2.0   dL/dd for L = (d - t)^2 / 2
dv = dd * r[0]                                  # 2.0   the domain classifier's gradient (ordinary)
dr = dd * v                                     # 6.0   gradient arriving at the reversal layer
df = F.gradient_reversal_backward(np.array([dr]), cache)[0]   # -6.0: reversed
dw = df * x                                     # -12.0 the encoder's gradient
print(f"forward: f = {f}, r = {r[0]} (the identity); d = {d}")
print(f"backward: dv = {dv} (v learns the domain), dL/dr = {dr}, after reversal df = {df}, dw = {dw}")
print(f"a step w -= 0.01 * dw moves w to {w - 0.01 * dw:.2f}: |d - t| grows from {abs(d - t):.2f} to "
      f"{abs(v * (w - 0.01 * dw) * x - t):.2f} — the encoder fights the domain classifier")

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 12 · Making the model smaller
#
# The article's §2.1 lists six ways to shrink a trained model — **weight pruning**, **structured
# pruning**, **integer quantization**, **binary quantization**, **soft-label** and **hard-label
# distillation** — and gives no number for any of them. This notebook applies each to the small
# classifier of notebook 07 and looks at what happens to the weights; the table at the end, measured
# by `benchmarks/compression_report.py`, says what each buys in bytes, speed and accuracy.
#
# Everything here runs in well under a minute: the model is the shipped
# `notebooks/assets/classifier_small.npz` (D = 64, 2 layers, 4 heads, 323,010 parameters), and the
# fine-tuned models of the table come from the benchmark's JSON. Set `RETRAIN = True` to rerun the
# benchmark itself (about half an hour on one core; the distillation needs the fine-tuned teacher
# `runs/transfer/ft_lm_small.npz`, made by the command in README § Transfer learning).

# %%
from numpy_transformer import viz
viz.notebook_setup()

RETRAIN = False   # True: rerun benchmarks/compression_report.py (about half an hour on one core)

# %%
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, Image, display

from numpy_transformer import checkpoint, compression as C, functional as F
from numpy_transformer.data import SEED_SENTENCES, load_corpus
from numpy_transformer.tokenizer import CharTokenizer
from numpy_transformer.train import evaluate

ROOT = Path.cwd() if (Path.cwd() / "notebooks").exists() else Path.cwd().parent
RESULTS = ROOT / "benchmarks" / "results"
if RETRAIN:
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compression_report.py"), "--part", "table", "sweep",
                    "distill", "timing", "figure"], check=True, cwd=ROOT)

ckpt = checkpoint.load(ROOT / "notebooks" / "assets" / "classifier_small.npz")
model, tok = ckpt.model.eval(), CharTokenizer.from_dict(ckpt.tokenizer)
splits = load_corpus()
quick = splits["test"].subset(np.arange(300))          # 300 test reviews for the quick checks below
print(model.num_parameters(), "parameters")

# %% [markdown]
# ## 1. Where the bytes are
#
# Which matrices hold the parameters? The embedding table (one row of D = 64 numbers per character of
# the vocabulary) is more than two thirds of the model; compressing only the Transformer blocks would
# leave most of the file as it was.

# %%
sizes = {name: p.size for name, p in model.named_parameters()}
matrices = dict(C.weight_matrices(model))
rows = "".join(f"<tr><td>{n}</td><td>{tuple(p.shape)}</td><td>{p.size:,}</td><td>{p.size / model.num_parameters():.1%}</td></tr>"
               for n, p in matrices.items())
other = model.num_parameters() - sum(p.size for p in matrices.values())
display(HTML(f"<table><tr><th>matrix</th><th>shape</th><th>parameters</th><th>share</th></tr>{rows}"
             f"<tr><td>biases, LayerNorm</td><td></td><td>{other:,}</td><td>{other / model.num_parameters():.1%}</td></tr></table>"))

# %% [markdown]
# ## 2. Weight histograms: pruning and quantization
#
# One matrix, the first feed-forward layer of block 0, four ways. Look at: **magnitude pruning** cuts
# a hole around zero (the smallest weights are gone; the survivors are unchanged); **int8** keeps the
# shape but puts every weight on one of 255 levels per column (the zoom shows the steps); **binary**
# leaves two values per column, ±α with α = mean |w|.

# %%
W = matrices["encoder.blocks.0.ffn.W1"].data.astype(np.float64)       # (64, 256)
pruned = W * C.magnitude_masks(model, 0.9)["encoder.blocks.0.ffn.W1"]
q, s = F.quantize_int8(W)
W_int8 = F.dequantize_int8(q, s)
W_bin, _ = F.binarize(W)
fig, axes = plt.subplots(1, 4, figsize=(15, 3))
bins = np.linspace(-0.8, 0.8, 161)
axes[0].hist(W.ravel(), bins=bins, color="C0")
axes[0].set_title("float32")
axes[1].hist(pruned[pruned != 0].ravel(), bins=bins, color="C1")
axes[1].set_title(f"90 % pruned: {np.count_nonzero(pruned):,} of {W.size:,} left")
column = W_int8[:, 0]
axes[2].hist(W[:, 0], bins=np.linspace(-0.3, 0.3, 121), alpha=0.5, label="float32")
axes[2].vlines(np.unique(column), 0, 2, color="C3", lw=0.6, label="int8 levels used")
axes[2].set_xlim(-0.3, 0.3)
axes[2].legend(fontsize=7)
axes[2].set_title(f"int8, column 0 (step s = {s[0]:.4f})")
axes[3].hist(W_bin.ravel(), bins=bins, color="C2")
axes[3].set_title("binary: ±α per column")
fig.tight_layout()

# %% [markdown]
# ## 3. The int8 rounding error of one matrix
#
# Each column j has its own scale $s_j = \max_i |w_{ij}| / 127$. Rounding to the nearest level makes
# the error $w - s_j q_{ij}$ at most half a step, $s_j / 2$: the left map shows the error in units of
# each column's step (all inside ±0.5); the right plot, the worst error of each column against $s_j/2$.
# One scale for the whole matrix would make the step of the smallest columns as large as the
# largest column's (errata E9: the scale is what makes integers mean something).

# %%
err = W - W_int8
fig, axes = plt.subplots(1, 2, figsize=(13, 3.2))
im = axes[0].imshow((err / s).T[:64], aspect="auto", cmap="coolwarm", vmin=-0.5, vmax=0.5)
axes[0].set_xlabel("input row i")
axes[0].set_ylabel("output column j (first 64)")
axes[0].set_title("(w − w_hat) / s_j")
fig.colorbar(im, ax=axes[0])
axes[1].plot(np.abs(err).max(axis=0), ".", ms=3, label="largest |w − w_hat| in the column")
axes[1].plot(s / 2, lw=1, label="s_j / 2")
per_tensor = np.abs(W).max() / 127
axes[1].axhline(per_tensor / 2, color="C3", ls="--", lw=1, label="half a step with one scale for all")
axes[1].set_xlabel("output column j")
axes[1].legend(fontsize=8)
fig.tight_layout()
print(f"relative error of the whole matrix: {np.linalg.norm(err) / np.linalg.norm(W):.4f}")

# %% [markdown]
# ## 4. The straight-through estimator
#
# Rounding and sign are flat almost everywhere: their true derivative is 0, and training through
# them would never move a weight. Quantization-aware training therefore *pretends* in the backward
# pass that a smooth function was used. For binary weights the surrogate is α·clip(w, −1, 1): the
# gradient passes where |w| ≤ 1 and stops outside (BinaryConnect); for int8 it is the identity
# inside the range. This is a choice, not a derivative — the tests check that the code computes
# exactly this surrogate (`functional.binarize_backward`, `fake_quantize_int8_backward`).

# %%
w = np.linspace(-2, 2, 801)
fig, axes = plt.subplots(1, 3, figsize=(14, 3))
axes[0].plot(w, np.sign(w), label="forward: sign(w)")
axes[0].plot(w, np.clip(w, -1, 1), "--", label="surrogate: clip(w, −1, 1)")
axes[0].legend(fontsize=8)
axes[0].set_title("binary: what forward computes, what backward pretends")
axes[1].plot(w, np.zeros_like(w), label="true derivative of sign (0, and ∞ at 0)")
axes[1].plot(w, (np.abs(w) <= 1).astype(float), "--", label="straight-through: 1 where |w| ≤ 1")
axes[1].legend(fontsize=8)
axes[1].set_title("the gradient backward uses")
s_demo = 0.25
axes[2].plot(w, s_demo * np.clip(np.round(w / s_demo), -4, 4), label="int 'quantizer' (9 levels, s = 0.25)")
axes[2].plot(w, np.clip(w, -4 * s_demo, 4 * s_demo), "--", label="surrogate: clip(w, ±levels·s)")
axes[2].legend(fontsize=8)
axes[2].set_title("integer: a staircase and its surrogate")
fig.tight_layout()

# %% [markdown]
# ## 5. Which heads matter? The gates of Michel et al. (2019)
#
# Put a gate ξ_h = 1 on every head's output (the model computes exactly the same thing), back-propagate
# the loss, and read $|\partial L / \partial \xi_h|$: how much the loss would move if the head were
# turned down. Averaged over validation batches and normalised per layer, that is the head's
# importance (`compression.head_importance`). The benchmark removes the least important half.

# %%
importance = C.head_importance(model, splits["valid"], tok, max_len=128, max_batches=8)
remove = C.heads_to_prune(importance, 0.5)
fig, ax = plt.subplots(figsize=(5, 2.4))
im = ax.imshow(importance, cmap="viridis")
for l, heads in remove.items():
    for h in heads:
        ax.text(h, l, "x", ha="center", va="center", color="w", fontsize=14)
ax.set_xticks(range(4))
ax.set_yticks(range(2))
ax.set_xlabel("head")
ax.set_ylabel("layer")
ax.set_title("importance |∂L/∂ξ_h| (x = removed)")
fig.colorbar(im, ax=ax)
print("heads to remove:", remove)

# %% [markdown]
# The attention maps of the least important head that goes and the most important head that stays,
# on the article's first sentence. Look at whether the removed head does anything the kept one does
# not — often it spreads its attention evenly, or copies another head.

# %%
sentence = SEED_SENTENCES[0][0]
ids, mask = tok.encode_batch([sentence], 128, add_cls=True)
model(ids, mask)
tokens = [tok.id_to_token(int(i)) for i in ids[0]]
(l_out, h_out) = min(((l, h) for l, hs in remove.items() for h in hs), key=lambda lh: importance[lh])
l_in, h_in = np.unravel_index(np.argmax(importance), importance.shape)
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
for ax, (l, h, what) in zip(axes, [(l_out, h_out, "removed"), (l_in, h_in, "kept")]):
    viz.attention_map(np.asarray(model.attention_weights[l][0, h]), tokens, ax=ax,
                      title=f"layer {l}, head {h} ({what}, importance {importance[l, h]:.2f})")
fig.tight_layout()

# %% [markdown]
# Removing heads for real: the pruned layers get smaller matrices (`W_qkv` (D, 3·H'·Dh) and `W_o`
# (H'·Dh, D)), so the model is smaller *and* does less work. Without a fine-tune it loses accuracy;
# the table below shows what a short fine-tune gives back.

# %%
small = C.prune_heads(model, remove)
print("structure after removing heads:", C.structure_of(small))
print(f"parameters: {model.num_parameters():,} -> {small.num_parameters():,}")
for name, m in [("float32", model), ("50 % heads removed, no fine-tune", small)]:
    print(f"{name:34s} accuracy on 300 test reviews {evaluate(m, quick, tok)['accuracy']:.3f}")

# %% [markdown]
# ## 6. Files on disk
#
# Each method has its own format (`compression.save_compressed`): int8 values + one float32 scale per
# column; a bitmap of the surviving weights (1 bit each, `np.packbits`) + their values; packed sign
# bits + scales. `predict` and `evaluate` read them all. Look at the sizes, and at the accuracy on
# 300 test reviews, each model read back from its file:

# %%
tmp = Path(tempfile.mkdtemp())
pruned_model = copy.deepcopy(model)
C.apply_masks(pruned_model, C.magnitude_masks(pruned_model, 0.9))
files = {"float32": checkpoint.save(tmp / "float32.npz", model, tokenizer=tok.to_dict()),
         "int8": C.save_compressed(tmp / "int8.npz", model, tok, encoding="int8"),
         "90 % pruned (bitmap + values)": C.save_compressed(tmp / "sparse.npz", pruned_model, tok, encoding="sparse"),
         "90 % pruned, int8 values": C.save_compressed(tmp / "sparse8.npz", pruned_model, tok, encoding="int8_sparse")}
base_size = files["float32"].stat().st_size
rows = ""
for name, path in files.items():
    m = checkpoint.load(path).model if name == "float32" else C.load_compressed(path).model
    acc = evaluate(m, quick, tok)["accuracy"]
    rows += (f"<tr><td>{name}</td><td>{path.stat().st_size:,}</td><td>{base_size / path.stat().st_size:.1f}×</td>"
             f"<td>{acc:.3f}</td></tr>")
display(HTML("<table><tr><th>file</th><th>bytes</th><th>smaller by</th><th>accuracy (300 reviews)</th></tr>"
             + rows + "</table>"))

# %% [markdown]
# The 90 %-pruned model without any fine-tune has lost a lot. In the table below, a short masked
# fine-tune (the pruned weights get zero gradient and stay zero) recovers little, a longer one at a
# larger learning rate all of it, and *gradual* pruning (sparsity rising on the cubic schedule of
# Zhu & Gupta 2017 while the model trains) ends a little above the unpruned model. Note also that the
# arrays are still dense in memory: NumPy multiplies the zeros like any other number.

# %% [markdown]
# ## 7. The measurements
#
# `benchmarks/compression_report.py` applied every method to this model (the shipped
# `classifier_small.npz`), saved it, read it back from disk as `predict` would, and evaluated it on the
# whole test split (1,743 reviews); every choice was made on validation. Fine-tunes are counted in
# steps (batch 32), so the table is the same on every machine. The last two rows are the
# distillation's teacher (the fine-tuned language model of notebook 11, a larger model) and its
# student. Times are per review at batch 1 and per 1,000 reviews at batch 64, in CPU time of one
# thread, measured round-robin (best of three rounds): models that do the same dense work come out
# within about 20 % of each other, so read only the larger ratios to the float32 row.

# %%
table_rows = []
for group in ("quantization", "pruning", "pruning_gradual_global", "pruning_long_layer", "heads", "heads_long"):   # the benchmark runs the table in groups
    if (RESULTS / f"compression_table_{group}.json").exists():
        table_rows += json.load(open(RESULTS / f"compression_table_{group}.json"))["rows"]
distill_path = RESULTS / "compression_distill.json"
distill = json.load(open(distill_path)) if distill_path.exists() else {}
table_rows += [distill[key] for key in ("teacher_row", "student_row") if key in distill]
timing_path = RESULTS / "compression_timing.json"
timing = {r["method"]: r for r in json.load(open(timing_path))["rows"]} if timing_path.exists() else {}
ref = table_rows[0]
html = ("<table><tr><th>method</th><th>bytes on disk</th><th>smaller by</th><th>non-zero parameters</th>"
        "<th>test accuracy</th><th>AUC</th><th>ms / review (batch 1)</th><th>s / 1,000 (batch 64)</th></tr>")
for r in table_rows:
    t = timing.get(r["method"], {})
    b1 = f"{t['ms_per_review_b1']:.2f} ({t['speed_b1']:.2f}×)" if t else "–"
    b64 = f"{t['s_per_1000_b64']:.2f} ({t['speed_b64']:.2f}×)" if t else "–"
    html += (f"<tr><td>{r['method']}</td><td>{r['bytes']:,}</td><td>{ref['bytes'] / r['bytes']:.1f}×</td>"
             f"<td>{r['nonzero']:,}</td><td>{r['test_accuracy']:.4f}</td><td>{r['test_auc']:.4f}</td>"
             f"<td>{b1}</td><td>{b64}</td></tr>")
display(HTML(html + "</table>"))

# %% [markdown]
# The magnitude-pruning sweep: accuracy against sparsity, right after pruning and after a short masked
# fine-tune. And whether a sparse matrix multiplies faster: a dense product costs the same whatever
# the zeros; SciPy's CSR format only wins at very high sparsity, and then it is a different code path
# from the model's BLAS calls.

# %%
sweep = json.load(open(RESULTS / "compression_sweep.json"))
sp = [r["sparsity"] for r in sweep["rows"]]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(sp, [r["test_no_ft"] for r in sweep["rows"]], "o-", label="pruned, no fine-tune")
ax.plot(sp, [r["test_ft"] for r in sweep["rows"]], "s-", label=f"pruned + {sweep['steps']} masked steps")
ax.axhline(ref["test_accuracy"], color="grey", ls="--", lw=0.8, label="float32")
ax.set_xlabel("sparsity of the weight matrices")
ax.set_ylabel("test accuracy")
ax.legend()
fig.tight_layout()
for k, v in sweep.get("matmul", {}).items():
    print(f"sparsity {float(k):.2f}: dense matmul {v['dense_ms']:.3f} ms, SciPy CSR {v['csr_ms']:.3f} ms "
          f"(shape {sweep['matmul_shape']})")

# %% [markdown]
# Distillation: a student with a fifth of the teacher's parameters (D = 48, 2 layers, the teacher's
# vocabulary), trained alone, from the teacher's hard labels, and from its soft labels (temperature T
# and mixing weight α chosen on validation), three seeds each. The teacher is the language model of
# notebook 10 fine-tuned on the reviews (notebook 11): pre-training is what it knows that the labels
# alone do not say. "train + views" adds the opening and closing clauses of the long training
# reviews (`--length-mix`), which the teacher labels.

# %%
if distill:
    d = distill
    print(f"teacher: {d['teacher_parameters']:,} parameters, test accuracy {d['teacher_test_accuracy']:.4f}, "
          f"AUC {d['teacher_test_auc']:.4f}")
    print(f"student: {d['student_parameters']:,} parameters ({d['student_parameters'] / d['teacher_parameters']:.0%})")
    print("chosen on validation:", d.get("chosen"))
    groups = {}
    for r in d["runs"]:
        groups.setdefault((r["mode"], r["texts"]), []).append(r)
    for (mode, texts), rs in groups.items():
        acc, auc = [r["test_accuracy"] for r in rs], [r["test_auc"] for r in rs]
        print(f"{mode:6s} {texts:14s} test accuracy {np.mean(acc):.4f} ± {np.std(acc):.4f}, "
              f"AUC {np.mean(auc):.4f} ± {np.std(auc):.4f}  ({len(rs)} seeds)")

# %% [markdown]
# Accuracy against file size, every method in one picture:

# %%
display(Image(filename=str(ROOT / "figures" / "compression_accuracy_vs_size.png")))

# %% [markdown]
# ## 8. How these methods relate (errata E8)
#
# The article closes its overview with a Mermaid graph in which compression methods lead to transfer
# methods and those to zero-shot methods (结构剪枝 → 域自适应 / 模型微调, 整数量化 → 原型匹配 / 关系分类 /
# 知识图谱, 软标签蒸馏 → 域自适应 …). They are not steps of one another. Pruning and quantization apply
# to *any* trained model and combine freely (a pruned model can be quantized: the "int8 values"
# rows above). What really connects the families is the **pre-trained model**: transfer learning
# fine-tunes it, zero-shot methods use its representations or its next-token probabilities, and
# distillation uses it (or any strong model) as the teacher.

# %%
fig, axes = plt.subplots(1, 2, figsize=(15, 4.8))
def box(ax, xy, text, color):
    ax.text(*xy, text, ha="center", va="center", fontsize=9, bbox=dict(boxstyle="round", fc=color, ec="k", lw=0.6))
def arrow(ax, a, b, **kw):
    ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="->", lw=0.8, shrinkA=18, shrinkB=18, **kw))
ax = axes[0]
ax.set_title("the article's graph (wrong): compression → transfer → zero-shot")
seed_nodes = {"结构剪枝\nstructured pruning": (0.15, 0.8), "整数量化\ninteger quant.": (0.15, 0.5),
              "软标签蒸馏\nsoft distillation": (0.15, 0.2), "域自适应\ndomain adapt.": (0.5, 0.7),
              "模型微调\nfine-tuning": (0.5, 0.35), "原型匹配 / 关系分类 / 知识图谱\nzero-shot": (0.85, 0.5)}
for t, xy in seed_nodes.items():
    box(ax, xy, t, "#f4cccc")
for a, b in [(0, 3), (0, 4), (1, 5), (2, 3), (3, 5), (4, 5)]:
    arrow(ax, list(seed_nodes.values())[a], list(seed_nodes.values())[b], color="C3")
ax = axes[1]
ax.set_title("what is true: independent families; a pre-trained model connects three of them")
nodes = {"pre-trained model": (0.5, 0.85), "transfer\nfine-tune, adapt domains": (0.15, 0.45),
         "zero-shot\nrepresentations, label words": (0.5, 0.45), "distillation\nteacher → small student": (0.85, 0.45),
         "any trained model": (0.5, 0.12), "pruning · quantization\n(combine with each other)": (0.85, 0.12)}
for t, xy in nodes.items():
    box(ax, xy, t, "#d9ead3" if "pre-trained" in t or "any" in t else "#cfe2f3")
for a, b, label in [(0, 1, "fine-tune"), (0, 2, "use as is"), (0, 3, "is the teacher"), (4, 5, "shrink")]:
    pa, pb = list(nodes.values())[a], list(nodes.values())[b]
    arrow(ax, pa, pb, color="k")
    if label:
        ax.text((pa[0] + pb[0]) / 2, (pa[1] + pb[1]) / 2, label, fontsize=8, color="0.3")
for ax in axes:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# ## What to remember
#
# * **int8** is the easy win: the file is about 3.6× smaller (the scales and the float32 biases are
#   the rest) and the accuracy does not move. Computing in int8 with NumPy is *slower*, because NumPy's
#   integer matrix product does not use BLAS; int8 pays off on hardware and libraries built for it.
# * **Unstructured pruning** shrinks the file (bitmap + values) and, pruned gradually while training,
#   keeps the accuracy even at 90 % sparsity — but the arrays stay dense, so NumPy is no faster.
# * **Structured pruning** removes whole heads and neurons: smaller matrices, less work, real
#   speed-ups, at some accuracy that a short fine-tune partly restores.
# * **Binary** weights cost the most accuracy; quantization-aware training with the straight-through
#   estimator recovers much of it, and the estimator is a surrogate, not a derivative.
# * **Distillation** trains a new, smaller model; whether it beats the same student trained alone is
#   a measurement with seeds, not a given. Here a student with a fifth of the parameters, taught by
#   the fine-tuned language model's soft labels, matches its teacher and beats the student trained
#   alone by more than the seed spread; with a teacher trained from scratch on the same labels it did
#   not. The teacher passes on what pre-training taught it; hard labels pass on almost nothing.
#
# Exercise 8 (`notebooks/exercises/ex8_int8_quantization.ipynb`) asks you to write the per-channel
# int8 quantizer yourself.

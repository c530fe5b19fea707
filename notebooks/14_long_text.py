# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 14 · Long text: the T² wall, local attention, relative positions, long reviews
#
# The article's §3.3 names the Transformer's weakness: attention compares every position with every
# other, so its time and memory grow with the *square* of the length T. This notebook shows what
# people do about it, each piece implemented in this package with its backward pass:
#
# 1. the T² wall, measured;
# 2. **local attention**: a band mask, then a blocked kernel that skips what the band leaves out;
# 3. **relative positions**: RoPE (rotate q and k) and ALiBi (a linear bias on the scores);
# 4. **length extrapolation**: train at T = 64, test at T = 512;
# 5. **long reviews**: truncation, head + tail, chunking.
#
# Everything heavy was measured once by the scripts in `benchmarks/` and is read back from their JSON
# files; set `RETRAIN = True` to recompute (minutes on one core).

# %%
from numpy_transformer import viz
viz.notebook_setup(precision=3)

# %%
RETRAIN = False

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from numpy_transformer import functional as F
from numpy_transformer.local_attention import block_grid, local_attention

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
RESULTS = ROOT / "benchmarks" / "results"

# %% [markdown]
# ## 1. The T² wall
#
# One attention layer holds a (T, T) matrix of scores per head. The cell below is arithmetic, not a
# measurement: look at how fast the last column grows compared with the input q, k, v.

# %%
B, H, Dh = 1, 4, 32
print(f"{'T':>6s} {'q, k, v (MiB)':>14s} {'scores (MiB)':>13s}")
for T in (64, 256, 1024, 4096, 16384):
    print(f"{T:6d} {3 * B * H * T * Dh * 4 / 2**20:14.2f} {B * H * T * T * 4 / 2**20:13.1f}")

# %% [markdown]
# And measured (`benchmarks/attention_sweep.py`, one core, float32, forward + backward). Look at the
# slopes on the log-log axes: the full attention's memory follows the dotted T² line, the tiled and
# the local attention the dashed T line; only the local one is also linear in *time* (at w = 128 each
# query reads at most 2·128 + 1 keys, whatever T).

# %%
sweep = json.loads((RESULTS / "attention_sweep_local.json").read_text())
Ts = np.array(sweep["T"], dtype=float)
fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
for kind, color in (("fast", "tab:blue"), ("tiled", "tab:green"), ("local", "tab:purple")):
    ax_t.loglog(Ts, sweep["ms"][kind], "o-", color=color, label=kind)
    ax_m.loglog(Ts, np.array(sweep["peak_bytes"][kind]) / 2**20, "o-", color=color, label=kind)
ax_m.loglog(Ts, np.array(sweep["peak_bytes"]["fast"])[-1] / 2**20 * (Ts / Ts[-1]) ** 2, ":", color="gray", label="∝ T²")
ax_t.set(xlabel="T", ylabel="ms", title="time, one layer")
ax_m.set(xlabel="T", ylabel="MiB above the inputs", title="peak memory, one layer")
for ax in (ax_t, ax_m):
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()
ratio = sweep["full_over_local_at_largest_T"]
print(f"T = {int(Ts[-1])}: full / local = {ratio['time']:.1f}x the time, {ratio['memory']:.1f}x the memory; "
      f"largest |local - masked full| = {max(sweep['local_vs_masked_max_abs_diff']):.1e} (float32)")

# %% [markdown]
# ## 2. Local attention
#
# ### The band mask
#
# Each query attends to the w keys before it and the w after it (an encoder; a language model keeps
# only those before). Longformer (Beltagy et al. 2020) adds **global tokens** such as [CLS]: they
# see and are seen by everything, so information can still cross the whole text in one layer.
# Yellow = may attend.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, (title, mask) in zip(axes, [
        ("encoder, w = 3", F.local_attention_mask(24, 3)),
        ("encoder, w = 3, 1 global token ([CLS])", F.local_attention_mask(24, 3, n_global=1)),
        ("causal, w = 3, 1 global token", F.local_attention_mask(24, 3, causal=True, n_global=1))]):
    ax.imshow(mask, cmap="viridis")
    ax.set(title=title, xlabel="key j", ylabel="query i")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### The blocked kernel: which blocks are computed
#
# With the mask, the full attention still computes all T² scores and throws most away.
# `local_attention.local_attention` cuts the queries into blocks and reads, for each block, only the
# *key blocks* that meet the band (plus the global keys). Dark = skipped. The share computed falls
# as 1/T: that is the T·w cost.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, T in zip(axes, (256, 512, 1024)):
    grid = block_grid(T, 32, n_global=1, block_size=32)
    ax.imshow(grid, cmap="viridis")
    ax.set(title=f"T = {T}, w = 32, blocks of 32: {grid.mean():.0%} computed",
           xlabel="key block", ylabel="query block (global row first)")
plt.tight_layout()
plt.show()

# %% [markdown]
# Same numbers as the masked full attention (float64; the tests check this to 1e-10 over random
# T, w, block sizes, global tokens, padding and ALiBi):

# %%
rng = np.random.default_rng(0)
q, k, v = (rng.standard_normal((2, 4, 300, 16)) for _ in range(3))
blocked, _ = local_attention(q, k, v, 20, n_global=1, block_size=32)
masked, _, _ = F.scaled_dot_product_attention(q, k, v, F.local_attention_mask(300, 20, n_global=1))
print("largest difference:", np.abs(blocked - masked).max())

# %% [markdown]
# ## 3. Relative positions
#
# ### RoPE: rotating pairs of features
#
# RoPE (Su et al. 2021) turns each pair of features (2i, 2i+1) of a query or key at position t by the
# angle t·θ_i, θ_i = 10000^(−2i/D). Below, one pair of a query (blue) and of a key (orange), the same
# vectors placed at positions 0 … 7: each position turns them by one more step. The score between
# the query at m and the key at n is the dot product of the two arrows, and it depends only on the
# angle between them, (n − m)·θ.

# %%
q2, k2 = np.array([[1.0, 0.2]]), np.array([[0.6, 0.8]])
fig, ax = plt.subplots(figsize=(4.6, 4.6))
for t in range(8):
    qr, _ = F.rope(q2, [t])
    kr, _ = F.rope(k2, [t])
    ax.annotate("", xy=qr[0], xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="tab:blue", alpha=0.3 + 0.09 * t))
    ax.annotate("", xy=kr[0], xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="tab:orange", alpha=0.3 + 0.09 * t))
    ax.text(*(qr[0] * 1.1), str(t), color="tab:blue", fontsize=8)
ax.set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect="equal", title="pair 0 (θ = 1 rad) at positions 0-7")
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# The property that matters, numerically: the score q_m · k_n for a fixed offset n − m = 3, at
# different absolute positions, is the same (to rounding); with the sinusoidal encoding *added* to the
# vectors, it is not.

# %%
q8, k8 = rng.standard_normal((1, 8)), rng.standard_normal((1, 8))
pe = F.sinusoidal_positional_encoding(64, 8, dtype=np.float64)
for m in (0, 10, 40):
    rope_score = float((F.rope(q8, [m])[0] * F.rope(k8, [m + 3])[0]).sum())
    added_score = float(((q8 + pe[m]) * (k8 + pe[m + 3])).sum())
    print(f"m = {m:2d}, n = m + 3:  RoPE score {rope_score:+.6f}   added-PE score {added_score:+.6f}")

# %% [markdown]
# ### ALiBi: a bias per head, slope × distance
#
# ALiBi (Press et al. 2022) adds −m_h·|i − j| to the scores of head h, with slopes m_h = 2^(−8h/H). No
# parameters, nothing added to the embedding. Steep heads look only at their neighbours, gentle ones
# almost everywhere. (We use |i − j| in the encoder; in a causal model it is the paper's −m_h (i − j).)

# %%
bias = F.alibi_bias(8, 16, dtype=np.float64)
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for h, ax in enumerate(axes.ravel()):
    ax.imshow(bias[h], cmap="magma", vmin=bias.min(), vmax=0)
    ax.set(title=f"head {h + 1}: m = 1/{1 / F.alibi_slopes(8)[h]:.0f}", xticks=[], yticks=[])
plt.suptitle("ALiBi bias −m_h |i − j| (bright = 0, dark = very negative)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Length extrapolation
#
# Four small character language models (D = 64, L = 2, 200 steps of 16 windows of T = 64, the same
# batches) differ only in their positions. Each is scored on held-out news in windows of
# T = 64 … 512: bits per character (lower is better). Look at what happens right of the dashed line,
# where the models read longer windows than they were ever trained on.

# %%
if RETRAIN:
    import subprocess
    import sys
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "length_extrapolation.py"), "--steps", "200"],
                   check=True)
ext = json.loads((RESULTS / "length_extrapolation.json").read_text())
fig, ax = plt.subplots(figsize=(6.4, 4.2))
for kind in ext["kinds"]:
    ax.plot(ext["eval_T"], ext["bpc"][kind], "o-", label=kind)
ax.axhline(ext["bigram_bpc"], color="gray", ls=":", label="character bigram")
ax.axvline(ext["train_T"], color="black", ls="--", lw=0.8)
ax.set_xscale("log", base=2)
ax.set_xticks(ext["eval_T"], [str(t) for t in ext["eval_T"]])
ax.minorticks_off()
ax.set(xlabel="evaluation window T", ylabel="bits per character (held-out news)",
       title=f"trained at T = {ext['train_T']}, {ext['steps']} steps")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()
for kind in ext["kinds"]:
    print(f"{kind:10s} " + "  ".join(f"T={T}: {b:.3f}" for T, b in zip(ext["eval_T"], ext["bpc"][kind])))

# %% [markdown]
# ## 5. Long reviews: truncation, head + tail, chunking
#
# A classifier trained with `max_len` = 64 or 128 characters has to cut longer reviews. Chunking reads
# all of it in overlapping windows (stride = half a window) and combines the windows. Below, how one
# 300-character review is cut with max_len = 64, then the comparison on the test reviews longer than
# 128 characters (`benchmarks/long_reviews.py`; mean and [min, max] over the seeds that were trained).

# %%
from numpy_transformer.longtext import chunk_starts, head_tail

n, max_len = 300, 64
starts = chunk_starts(n, max_len, (max_len - 1) // 2)
fig, ax = plt.subplots(figsize=(10, 2.6))
ax.broken_barh([(0, max_len - 1)], (3, 0.8), color="tab:red")
kept = head_tail(list(range(n)), max_len - 1)                # the character positions head + tail keeps
head = sum(1 for i in kept if i < n // 2)
ax.broken_barh([(0, head), (n - (len(kept) - head), len(kept) - head)], (2, 0.8), color="tab:orange")
for r, s in enumerate(starts):
    ax.broken_barh([(s, max_len - 1)], (0.2 + 0.25 * (r % 4), 0.2), color="tab:blue")
ax.set(yticks=[3.4, 2.4, 0.7], yticklabels=["truncate", "head + tail", f"{len(starts)} chunks"],
       xlabel="character", xlim=(0, n), title=f"a {n}-character review, max_len = {max_len}")
plt.tight_layout()
plt.show()

# %%
reviews = json.loads((RESULTS / "long_reviews.json").read_text())
print(f"{reviews['n_long_test']} of {reviews['n_test']} test reviews are longer than {reviews['min_chars']} characters")
if "tfidf" in reviews:
    print(f"  TF-IDF + logistic regression (reads the whole text): accuracy {reviews['tfidf']['accuracy']:.4f}")
for ml, rows in reviews["accuracy_by_max_len"].items():
    print(f"max_len {ml}:")
    for name, s in rows.items():
        print(f"  {name:24s} {s['mean']:.4f}  [{s['min']:.4f}, {s['max']:.4f}]  ({s['n']} seeds)")

# %% [markdown]
# ## What to take away
#
# * The T² is in the scores. Tiling removes the memory wall but not the time; a local window removes
#   both, at the price of a limited reach per layer (global tokens and stacking layers widen it).
# * RoPE and ALiBi put positions *inside* attention, as relative offsets, with no table to outgrow.
#   Whether that buys extrapolation in a model this small is what section 4 measured: read the
#   numbers, not the paper's claim.
# * For long reviews, compare the readings with the seed-to-seed spread before calling one better.
#
# Exercise 10 (`notebooks/exercises/ex10_rope.ipynb`) has you write RoPE's forward and backward.

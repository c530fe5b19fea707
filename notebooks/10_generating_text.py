# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10 · Generating text
#
# The article lists text generation first among what large language models do (§1.4, §3.4,
# §6.1), and builds transfer, zero-shot and compression on a model *pre-trained on a large text
# corpus*. This notebook looks at our small one: a Transformer language model with 1.4 M
# parameters, pre-trained on 2.7 M characters (the People's Daily of January 1998 and the review
# corpus's training split) to predict the next character.
#
# 1. the distribution over the next character, and how temperature, top-k and top-p reshape it;
# 2. greedy, sampled and beam-search continuations side by side;
# 3. why the causal mask matters (errata E6): a model trained without it;
# 4. the key/value cache: what it stores, and how much faster it generates;
# 5. bits per character against the n-gram model a user would try first.

# %%
from numpy_transformer import viz
viz.notebook_setup(precision=4)

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from numpy_transformer import corpus as C
from numpy_transformer import functional as F
from numpy_transformer import generation as G
from numpy_transformer.checkpoint import load
from numpy_transformer.tokenizer import BOS_ID, CLS_ID, EOS_ID, PAD_ID, UNK_ID, CharTokenizer

RETRAIN = False   # True: pre-train the language model from scratch (the command in notebooks/assets/README.md)

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()

# %% [markdown]
# ## 0. The pre-trained model
#
# `notebooks/assets/lm_small.npz` was made by `python -m numpy_transformer pretrain` (the exact
# command is in `notebooks/assets/README.md`). The checkpoint carries the vocabulary, so the
# ids mean the same here as during pre-training. With `RETRAIN = True` this cell pre-trains a
# new one instead (on a CPU that takes tens of minutes).

# %%
if RETRAIN:
    import subprocess, sys
    subprocess.run([sys.executable, "-m", "numpy_transformer", "pretrain", "--out", str(ROOT / "runs/lm_nb")],
                   check=True, cwd=ROOT)
    CKPT = ROOT / "runs/lm_nb/best.npz"
else:
    CKPT = ROOT / "notebooks/assets/lm_small.npz"
ckpt = load(CKPT)
model, tok = ckpt.model.eval(), CharTokenizer.from_dict(ckpt.tokenizer)
print(f"{CKPT.name}: {CKPT.stat().st_size / 1e6:.1f} MB, {model.num_parameters():,} parameters, "
      f"vocabulary {tok.vocab_size:,}, pre-trained for {ckpt.extra['pretrain']['step']} steps")
print(model.config)

# %% [markdown]
# ## 1. The distribution over the next character
#
# Every text in pre-training followed an `[EOS]`, so a prompt starts with one too. The model's
# output for the last position is a vector of logits $z$ (one per character); the next-character
# distribution is $\mathrm{softmax}(z/\tau)$ with temperature $\tau$.
#
# **Look at** the three panels: a low temperature piles the mass on the favourite, a high one
# spreads it over many characters. The cut-offs: **top-k** keeps the k most likely (the dashed
# line at k = 10), **top-p** keeps the smallest set of most likely characters whose mass reaches
# p = 0.9 (the shaded bars), so its size changes with the model's certainty.

# %%
prompt = "这家酒店"
ids = [EOS_ID] + tok.encode(prompt)
logits = G.Decoder(model).begin(np.array([ids]))[0]                    # (V,) float64
banned = [PAD_ID, UNK_ID, CLS_ID, BOS_ID, tok.token_to_id("[MASK]")]
logits[banned] = -np.inf

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), sharey=True)
for ax, tau in zip(axes, (0.5, 1.0, 1.5)):
    probs, _ = F.softmax(G.apply_temperature(logits, tau))
    order = np.argsort(-probs)[:25]
    nucleus = G.top_p_filter(probs, 0.9) > 0
    colors = ["C1" if nucleus[i] else "C0" for i in order]
    ax.bar(range(25), probs[order], color=colors)
    ax.set_xticks(range(25), [tok.id_to_token(int(i)) for i in order], fontsize=8)
    ax.axvline(9.5, color="k", ls="--", lw=1)
    ax.set_title(f"τ = {tau}: top-p(0.9) keeps {nucleus.sum()} characters")
axes[0].set_ylabel(f"p(next | '{prompt}')")
fig.suptitle("the 25 most likely next characters; orange = inside the top-p nucleus, dashed = top-k cut (k=10)")
fig.tight_layout()

# %% [markdown]
# ## 2. Greedy, sampled and beam-search continuations
#
# The same prompts, three ways of choosing. **Look at** greedy and beam: they always pick likely
# characters and fall into loops ("的的的", repeated phrases) — the most likely *text* is often a
# dull, repetitive one. Sampling with top-p reads more like Chinese, and a seed makes it
# reproducible. A repetition penalty (CTRL) pushes greedy out of its loop.

# %%
def continue_text(prompt, **kw):
    out = G.generate(model, [EOS_ID] + tok.encode(prompt), 40, banned_ids=banned, **kw)
    return tok.decode(out)


rows = []
for prompt in ("这家酒店", "我们", "中国经济"):
    rows.append((prompt, "greedy", continue_text(prompt)))
    rows.append((prompt, "greedy + repetition penalty 1.3", continue_text(prompt, repetition_penalty=1.3)))
    rows.append((prompt, "top-p 0.9, τ 0.8, seed 0", continue_text(prompt, strategy="top-p", top_p=0.9,
                                                                    temperature=0.8, rng=np.random.default_rng(0))))
    rows.append((prompt, "beam search, 4 beams", continue_text(prompt, strategy="beam", num_beams=4)))
for prompt, how, text in rows:
    print(f"{how:34s} {prompt}|{text}")

# %% [markdown]
# ## 3. Why the causal mask matters (errata E6)
#
# The article describes generation as "predict the next word" but never says that, *during
# training*, position t must not see positions after t. Without the causal mask the model can
# simply read the answer: the token it must predict at t is the input at t + 1. We train two tiny
# language models (a 200-character vocabulary, so that it takes seconds) on the same 100,000
# characters for 400 steps: one with the causal mask, one without (a subclass that drops it).
#
# **Look at** the losses: the unmasked model's loss falls towards zero — it has learnt to copy —
# while the masked one stays high, as an honest predictor must. Then the generations: at
# generation time there *is* no next token to copy, and the unmasked model produces garbage.

# %%
from numpy_transformer.models import TransformerLM
from numpy_transformer.pretrain import PretrainConfig, pretrain


class NoMaskLM(TransformerLM):
    """The same model with the causal mask left out: every position attends to the whole chunk."""

    def forward_hidden(self, ids, mask=None):
        return self.encoder(self._embed_forward(np.asarray(ids)), None)


corpus = C.load_pretrain_corpus()
small_texts = list(corpus.train[:3000])
small_tok = CharTokenizer.build(small_texts, max_size=200)      # the 200 commonest characters: a quick lesson
small_stream = C.token_stream(small_texts, small_tok)[:100_000]
histories, tiny_models = {}, {}
for name, cls in (("with causal mask", TransformerLM), ("without the mask", NoMaskLM)):
    tiny = cls(small_tok.vocab_size, d_model=64, n_heads=2, n_layers=1, d_ff=128, max_len=32, dropout=0.0, seed=0)
    losses = []
    pretrain(tiny, small_tok, small_stream, {}, PretrainConfig(steps=400, batch_size=16, lr=1e-2, warmup_steps=10,
                                                                eval_every=400), progress=False, log=None,
             on_step=lambda step, loss: losses.append(loss))
    histories[name], tiny_models[name] = losses, tiny.eval()

fig, ax = plt.subplots(figsize=(6, 3))
for name, losses in histories.items():
    ax.plot(losses, label=name)
ax.set_xlabel("step")
ax.set_ylabel("training loss (nats / char)")
ax.legend()
ax.set_title("the same tiny LM, trained with and without the causal mask")
fig.tight_layout()
small_banned = [PAD_ID, UNK_ID, CLS_ID, BOS_ID]
for name, tiny in tiny_models.items():
    out = G.generate(tiny, [EOS_ID] + small_tok.encode("我们"), 30, banned_ids=small_banned, use_cache=False,
                     strategy="top-p", top_p=0.9, rng=np.random.default_rng(0))
    print(f"{name:18s} final loss {histories[name][-1]:.2f}   我们|{small_tok.decode(out)}")

# %% [markdown]
# ## 4. The key/value cache
#
# To generate token t + 1, the model needs the last row of attention: the query of token t
# against the keys and values of tokens 0 … t. Without a cache it recomputes *every* row (left
# picture: the whole triangle, and all t rows of every projection) and throws all but the last
# away. With a cache each layer keeps the keys and values it has already computed (right: the
# columns it stores), and a new token costs one new row: its own q, k, v and one row of scores.
#
# The cached logits are the same numbers (tests/test_generation.py checks them to 1e-10 in
# float64). A prompt longer than `max_len` keeps its last `max_len` tokens; when the window is
# full both decoders restart it on its last `max_len / 2` tokens, so they stay identical.

# %%
T = 10
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
for ax, cached in zip(axes, (False, True)):
    grid = np.zeros((T, T))
    grid[np.tril_indices(T)] = 0.25 if cached else 1.0             # computed at this step?
    grid[T - 1, :] = 1.0                                           # the row the next token needs
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("key position (cached keys, values)" if cached else "key position")
    ax.set_ylabel("query position")
    ax.set_title("with a cache: one new row" if cached else "without: the whole triangle again")
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
fig.tight_layout()

# %% [markdown]
# **Look at** the measured speed (`benchmarks/bench_kv_cache.py`, one CPU thread, model of this
# size with max_len = 512): without the cache the time per token grows with the context; with it
# it stays nearly flat, and the ratio grows with the context length.

# %%
kv = json.loads((ROOT / "benchmarks/results/kv_cache.json").read_text())["rows"]
ctx = [r["context"] for r in kv]
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
a.plot(ctx, [r["cached_tok_s"] for r in kv], "o-", label="with key/value cache")
a.plot(ctx, [r["uncached_tok_s"] for r in kv], "s-", label="recomputing the window")
a.set_yscale("log")
a.set_xlabel("context length")
a.set_ylabel("tokens / s")
a.legend()
b.plot(ctx, [r["speedup"] for r in kv], "o-", color="C2")
b.set_xlabel("context length")
b.set_ylabel("speed-up (x)")
fig.tight_layout()
print({r["context"]: round(r["speedup"], 1) for r in kv})

# %% [markdown]
# A small live check on this machine: 30 tokens after a 100-character prompt, both ways, the same
# text.

# %%
long_prompt = [EOS_ID] + tok.encode("".join(corpus.heldout["news"][:3]))[:100]
for use_cache in (True, False):
    t0 = time.perf_counter()
    out = G.generate(model, long_prompt, 30, banned_ids=banned, use_cache=use_cache, eos_id=-1)
    print(f"use_cache={use_cache!s:5s} {30 / (time.perf_counter() - t0):7.1f} tokens/s   {tok.decode(out)}")

# %% [markdown]
# ## 5. How good is it? Bits per character against the n-gram baseline
#
# A language model is measured on text it has never seen by the average surprise of each true
# next character: the cross-entropy $H = -\frac1N\sum_t \log_2 p(x_t \mid x_{<t})$ **bits per
# character**, or the perplexity $2^H$ ("as unsure as a uniform choice among $2^H$
# characters"). A uniform guess over our 4,674 characters costs $\log_2 4674 = 12.2$ bits.
#
# The baseline a user would try first is a character n-gram model: count which character follows
# each context of n − 1 characters. We use interpolated modified Kneser–Ney smoothing (Chen &
# Goodman 1999; `numpy_transformer/ngram.py`), fitted on the same training text, scored on the
# same two held-out sets: news lines held out by md5 bucket, and the review validation texts.
#
# **Look at** the table and the curve: read the Transformer's line against the n-gram lines.

# %%
table = json.loads((ROOT / "benchmarks/results/lm_table.json").read_text())
print(f"{'model':32s} {'news':>8s} {'reviews':>8s}   (bits/char; lower is better)")
for row in table["ngram"]["rows"]:
    print(f"{str(row['order']) + '-gram, Kneser-Ney':32s} {row['news']:8.3f} {row['reviews']:8.3f}")
lm_row = table["transformer"]
print(f"{'Transformer, step ' + str(lm_row['step']):32s} {lm_row['bits']['news']:8.3f} {lm_row['bits']['reviews']:8.3f}")

# %%
from IPython.display import Image, display
display(Image(filename=str(ROOT / "figures/lm_bits_per_char.png")))

# %% [markdown]
# ## What a 1.4 M-parameter character model can and cannot do
#
# It has learnt the *surface* of Chinese text: which characters follow which, common two- and
# four-character words, punctuation, that a review of a hotel talks about rooms and service and
# that news talks about the economy and the Party. Its samples read as Chinese phrases strung
# together; they do not say anything, and they lose the thread after a clause or two. Its
# bits per character are those of a good n-gram model, not better: at this size and with a few
# minutes of CPU, counting characters in context is hard to beat. What it *has* that the n-gram
# lacks is a vector for every position that depends on the whole preceding context — that is what
# the transfer, zero-shot and compression chapters build on.

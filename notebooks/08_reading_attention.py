# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 8 · Reading attention
#
# The classifier of notebook 7 keeps, in every attention layer, the weights it used on its last input:
# for each layer $l$ and head $h$ a $T \times T$ matrix whose row $i$ says how token $i$ spread its
# attention over the tokens of the sentence,
#
# $$W^{(l,h)} = \mathrm{softmax}\!\Big(\frac{Q^{(l,h)} K^{(l,h)\top}}{\sqrt{D_h}} + M\Big),
#   \qquad \text{each row sums to 1.}$$
#
# This notebook reads those matrices for the article's two sentences and for test reviews:
#
# 1. every layer and head at once, and the average over heads;
# 2. the **[CLS] row** — the only row the classifier's output depends on directly;
# 3. **attention rollout**, which follows attention through both layers;
# 4. how much [CLS] attends to 喜欢, 无聊, 不 … compared with the average character, in the two sentences and
#    over the whole test split; and why the first layer's [CLS] heads are *keyword detectors*;
# 5. what attention maps can and cannot explain — with a test: delete each character and see what
#    happens to the prediction;
# 6. a cell where you type any text and see its maps.
#
# The model is the small checkpoint of notebook 7 (D = 64, 4 heads, 2 layers, pre-LN, [CLS] pooling).

# %%
from numpy_transformer import viz
viz.notebook_setup(precision=4)

# %%
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np

from numpy_transformer import checkpoint, data, functional as F, train
from numpy_transformer.tokenizer import CLS_ID, CharTokenizer

ckpt = checkpoint.load("assets/classifier_small.npz")
model, tok = ckpt.model.eval(), CharTokenizer.from_dict(ckpt.tokenizer)
L, H, D = model.config["n_layers"], model.config["n_heads"], model.config["d_model"]
texts = [text for text, _ in data.SEED_SENTENCES]
print(f"{L} layers x {H} heads, D = {D}; vocabulary {tok.vocab_size:,}")


# %% [markdown]
# ## 1. One forward pass, all the maps
#
# `attention_of(text)` encodes the text with a leading `[CLS]`, runs the model once (eval mode, no
# dropout), and stacks `model.attention_weights` — one (B, H, T, T) array per layer — into (L, H, T, T).
# The tokenizer normalises full-width punctuation (`，` becomes `,`), so that is what the tick labels
# show. **Look at** the shapes and the check that every row is a probability distribution.

# %%
def attention_of(text):
    """tokens (T,), attention weights (L, H, T, T) and P(positive) of one text."""
    ids, mask = tok.encode_batch([text], max_len=model.max_len)           # (1, T)
    logits = model(ids, mask)                                               # (1, 2)
    weights = np.stack([np.asarray(w[0]) for w in model.attention_weights])  # L x (H, T, T) -> (L, H, T, T)
    tokens = [tok.id_to_token(int(i)) for i in ids[0]]
    p_positive = float(F.softmax(logits.astype(np.float64))[0][0, 1])
    return tokens, weights, p_positive

seed_maps = [attention_of(text) for text in texts]
for (tokens, weights, p), text in zip(seed_maps, texts):
    print(f"P(positive) = {p:.3f}  weights {weights.shape}  {text}")
    assert np.allclose(weights.sum(axis=-1), 1, atol=1e-5)

# %% [markdown]
# ## 2. Every layer and head: text 1
#
# Rows are queries (the token attending), columns keys (the token attended to); the **top row is
# [CLS]**. **Look at** how different the heads are. In layer 0 some rows are nearly one bright cell (a
# head that looks for one kind of character), others spread out. In layer 1 some heads send almost every
# query to the same one or two columns — a vertical stripe: every position collects information from
# the same token.

# %%
tokens1, weights1, p1 = seed_maps[0]
fig = viz.attention_grid(weights1, tokens1, title=f"{texts[0]}   P(positive) = {p1:.2f}")

# %% [markdown]
# ## 3. Every layer and head: text 2
#
# **Look at** the columns of 太 and 无, 聊 in the [CLS] rows and compare with text 1.

# %%
tokens2, weights2, p2 = seed_maps[1]
fig = viz.attention_grid(weights2, tokens2, title=f"{texts[1]}   P(positive) = {p2:.2f}")

# %% [markdown]
# ## 4. The average over heads
#
# $\bar W^{(l)} = \frac1H \sum_h W^{(l,h)}$ is still row-stochastic and is the usual "one picture per
# layer". It also hides what the heads do separately (a head that looks at 无 and one that looks at
# `,` average into a blur): read it next to the grid, not instead of it. **Look at** layer 1: most
# tokens look back at a few positions.

# %%
fig, axes = plt.subplots(1, L, figsize=(13, 5.6), layout="constrained")
for l, ax in enumerate(axes):
    viz.attention_map(weights2[l].mean(axis=0), tokens2, ax=ax, title=f"text 2, layer {l}, mean of {H} heads")

# %% [markdown]
# ## 5. The [CLS] row: what the classifier reads
#
# The classifier computes its logits from one vector, the final hidden state at position 0:
# $z = \mathrm{LN}(h_{L-1}[0])\,W_c + b_c$. Everything the model knows about the other characters must
# reach position 0 through the [CLS] row of some attention layer. **Look at** the bars against the
# dashed line, $1/T$, what a head that attends evenly would give each token. In this checkpoint, layer
# 0's [CLS] row picks out 有, 趣 and 它 in text 1 and 篇, 太 (and 想) in text 2 — a few single characters,
# not always the ones a reader would call sentiment words; layer 1's [CLS] row is flatter and leans on
# 章 and 太 in text 2 — by then each position holds a mixture of its neighbours.

# %%
fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), layout="constrained")
for ax, (tokens, weights, p), text in zip(axes, seed_maps, texts):
    T = len(tokens)
    x = np.arange(T)
    for l in range(L):
        ax.bar(x + (l - 0.5) * 0.4, weights[l, :, 0, :].mean(axis=0), width=0.4, label=f"layer {l}")
    ax.axhline(1 / T, color="grey", linestyle="--", linewidth=1, label="1/T (even)")
    ax.set_xticks(x, tokens)
    ax.set_ylabel("[CLS] attention\n(mean of heads)")
    ax.set_title(f"{text}   P(positive) = {p:.2f}", fontsize=10)
axes[0].legend(ncols=3);

# %% [markdown]
# ## 6. Attention rollout: both layers at once
#
# Layer 1's [CLS] row mixes layer-1 *positions*, and each of those is already a mixture of tokens made by
# layer 0. Rollout (Abnar & Zuidema 2020) composes the layers, with the residual connection counted as
# attention to oneself:
#
# $$\hat A_l = \frac{\bar W^{(l)} + I}{\text{row sums}}, \qquad R = \hat A_{L-1} \cdots \hat A_1 \hat A_0$$
#
# Row $i$ of $R$ says how output position $i$ draws, through all layers, on each input token; its rows
# sum to 1. The check below recomputes `viz.rollout` from the formula. **Look at** the top row ([CLS]):
# its largest entry is [CLS] itself, because the residual path keeps half of every layer's input.

# %%
rollouts = [viz.rollout(weights) for _, weights, _ in seed_maps]
for (tokens, weights, _), R in zip(seed_maps, rollouts):
    A = [(weights[l].mean(axis=0) + np.eye(len(tokens))) / 2 for l in range(L)]   # rows of W-bar sum to 1
    assert np.allclose(R, A[1] @ A[0], atol=1e-6) and np.allclose(R.sum(axis=1), 1, atol=1e-6)
fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), layout="constrained")
for ax, (tokens, _, _), R, name in zip(axes, seed_maps, rollouts, ("text 1", "text 2")):
    viz.attention_map(R, tokens, ax=ax, vmax=0.5, title=f"{name}: rollout over both layers")

# %% [markdown]
# ## 7. 喜欢, 无聊, 不: does [CLS] look at the sentiment words?
#
# A number for "more than average": the weight $[CLS] \to t$ times $T$. It is 1 when the head attends
# evenly, 5 when token $t$ gets five times its fair share. **Look at** the table for the characters of
# 喜欢 (text 1) and 无聊, 不 (text 2), head by head. Layer 0 gives them little (无 in head 2, 1.7, is
# the most); in layer 1, head 1 singles out 喜 and 欢, head 0 无 and head 3 聊 — and no head gives 不
# more than its share here.

# %%
rows, values = [], []
for (tokens, weights, _), name in zip(seed_maps, ("text 1", "text 2")):
    T = len(tokens)
    for ch in "喜欢无聊不":
        if ch in tokens:
            t = tokens.index(ch)
            ratio = weights[:, :, 0, t] * T                         # (L, H)
            rows.append(f"{name}: {ch}")
            values.append([*ratio.ravel(), ratio.mean()])
viz.table(values, rows, [f"L{l} H{h}" for l in range(L) for h in range(H)] + ["mean"], fmt="{:.2f}")

# %% [markdown]
# Two sentences are an anecdote. The same ratio over all 1,743 test reviews, for a few characters
# that carry sentiment (好 good, 棒 great, 推荐 recommend, 不错 not bad = good, 差 poor, 无聊 boring,
# 失望 disappointed, 不 not) and a few that do not (的, 了, and punctuation); the count of occurrences is
# in brackets. The colour is $\log_2$ of the ratio: red = more than the even share, blue = less.
#
# **Look at** the bright cells. The heads divide the work: in layer 0, heads 0 and 1 light up for 差
# (47 and 32 times the even share; head 1 also for 棒), head 2 for 好, head 3 for 失 and 错; in layer 1,
# head 1 for 错 (of 不错), 喜 and 欢, head 2 for 望, head 0 for 棒, 无 and 不 — while 的, 了 and
# punctuation stay at or below their even share in every head. The same pass over the test split also keeps each review's prediction, for
# section 10.

# %%
chars = list("好棒喜欢推荐不错差无聊失望的了,。")
char_ids = {ch: tok.token_to_id(ch) for ch in chars}
test = data.load_corpus()["test"]
encoded = test.encoded(tok, model.max_len)
sums = {ch: np.zeros((L, H)) for ch in chars}
counts = dict.fromkeys(chars, 0)
test_p = np.zeros(len(test))
order = np.argsort(encoded.lengths)
for start in range(0, len(order), 128):
    idx = order[start:start + 128]
    ids, mask, _ = encoded.batch(idx)                              # (B, T)
    test_p[idx] = F.softmax(model(ids, mask).astype(np.float64))[0][:, 1]
    cls_rows = np.stack([w[:, :, 0, :] for w in model.attention_weights], axis=1)   # (B, L, H, T)
    ratio = cls_rows * mask.sum(axis=1)[:, None, None, None]                        # x T of each review
    for ch, i in char_ids.items():
        b, t = np.nonzero(ids == i)
        sums[ch] += ratio[b, :, :, t].sum(axis=0)
        counts[ch] += len(b)
mean_ratio = np.stack([sums[ch].reshape(-1) / max(counts[ch], 1) for ch in chars])   # (chars, L*H)

fig, ax = plt.subplots(figsize=(8, 7), layout="constrained")
image = ax.imshow(np.log2(mean_ratio), cmap="RdBu_r", vmin=-6, vmax=6, aspect="auto")
for (r, c), value in np.ndenumerate(mean_ratio):
    colour = viz.text_colour(image.cmap(image.norm(np.log2(value))))   # white on dark cells, black on light
    ax.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize=8, color=colour)
ax.set_xticks(range(L * H), [f"layer {l}\nhead {h}" for l in range(L) for h in range(H)], fontsize=8)
ax.set_yticks(range(len(chars)), [f"{ch} ({counts[ch]})" for ch in chars])
ax.set_title("[CLS] attention to a character / even share, test split")
fig.colorbar(image, ax=ax, label="log2 ratio");

# %% [markdown]
# ## 8. Why layer 0's [CLS] heads are keyword detectors
#
# In layer 0, the [CLS] query is the same for every review: position 0 holds the [CLS] embedding plus
# $PE_0$, whatever the text. So its score for a key depends only on that key's character $c$ and
# position $t$:
#
# $$s_h(c, t) = \frac{q_h \cdot k_h(c, t)}{\sqrt{D_h}}, \qquad
#   q_h = \big(\mathrm{LN}(\sqrt D\, E_{[CLS]} + PE_0)\, W^Q + b^Q\big)_h, \qquad
#   k_h(c, t) = \big(\mathrm{LN}(\sqrt D\, E_c + PE_t)\, W^K + b^K\big)_h$$
#
# and the head's [CLS] row is a softmax of a fixed score per character: a learned keyword list. The first
# cell computes $s_h$ from the weights and checks it against the attention the model actually used on
# text 1. The second ranks every character seen at least 50 times in the training split, at position
# $t = 5$. **Look at** the lists: many are sentiment characters of both signs (骗 cheat, 垃(圾) rubbish,
# 差 poor, 劣 inferior, 悔 regret, 脏 dirty, 失(望), 陋 shabby, 值(得) worth it, 赞 praise, 舒(服)
# comfortable …), mixed with rare names and places that the model met in a few strongly coloured reviews. Attention says *where to read*; whether what is read pushes towards positive or
# negative is decided by the values, $W^O$, the layers above and the classifier.

# %%
assert model.config["pos_encoding"] == "sinusoidal" and model.encoder.blocks[0].attn.fused_qkv
block = model.encoder.blocks[0]
E = model.embed.E.data.astype(np.float64) * np.sqrt(D)                 # (V, D), scaled as in the model
PE = F.sinusoidal_positional_encoding(model.max_len, D, dtype=np.float64)
W_qkv, b_qkv = block.attn.W_qkv.data.astype(np.float64), block.attn.b_qkv.data.astype(np.float64)
gamma, beta = block.norm1.gamma.data.astype(np.float64), block.norm1.beta.data.astype(np.float64)
Dh = D // H

def layer0_cls_scores(char_ids, positions):
    """s_h(c, t) for pairs (c, t): (N, H)."""
    ln = lambda x: F.layernorm(x, gamma, beta, eps=block.norm1.eps)[0]
    q = (ln(E[CLS_ID] + PE[0]) @ W_qkv[:, :D] + b_qkv[:D]).reshape(H, Dh)                        # (H, Dh)
    k = (ln(E[char_ids] + PE[positions]) @ W_qkv[:, D:2 * D] + b_qkv[D:2 * D]).reshape(-1, H, Dh)  # (N, H, Dh)
    return np.einsum("hd,nhd->nh", q, k) / np.sqrt(Dh)

ids1 = np.array([tok.token_to_id(t) for t in tokens1])
recomputed = F.softmax(layer0_cls_scores(ids1, np.arange(len(ids1))).T)[0]   # (H, T)
difference = np.abs(recomputed - weights1[0, :, 0, :]).max()
print(f"largest difference from the model's layer-0 [CLS] rows: {difference:.1e}")
assert np.allclose(recomputed, weights1[0, :, 0, :], atol=1e-4)

# %%
frequency = Counter("".join(data.load_corpus()["train"].texts))
common = np.array([i for i in range(5, tok.vocab_size) if frequency[tok.id_to_token(i)] >= 50])
scores = layer0_cls_scores(common, np.full(len(common), 5))                  # (N, H)
top = [[tok.id_to_token(int(common[j])) for j in np.argsort(-scores[:, h])[:12]] for h in range(H)]
viz.table([[" ".join(chars_h)] for chars_h in top], [f"layer 0, head {h}" for h in range(H)],
      [f"the 12 highest-scoring of {len(common):,} common characters"])


# %% [markdown]
# ## 9. What attention maps can and cannot tell you
#
# Attention weights are easy to plot and tempting to read as "the model's reasons". Be careful:
#
# * **Where, not what.** A weight says how much of token $j$'s *value vector* is mixed in, not what that
#   value carries or which way it pushes the prediction. A large weight on a token whose value vector
#   (after $W^V$ and $W^O$) is small contributes little (Kobayashi et al. 2020, *Attention is not only a
#   weight*, EMNLP 2020). The residual stream and the feed-forward layers carry information that no
#   attention map shows.
# * **Not unique.** Jain & Wallace (2019, *Attention is not Explanation*, NAACL) found that very
#   different attention distributions often give the same prediction, and that attention often
#   disagrees with gradient-based importance. Wiegreffe & Pinter (2019, *Attention is not not
#   Explanation*, EMNLP) answered that attention *can* be informative, but that this has to be tested in
#   each setting, not assumed.
# * **Layers mix.** From layer 1 on, position $j$ no longer holds token $j$ alone; rollout is one
#   approximation of the mixing, with its own assumptions (heads averaged, residual weighted ½).
#
# So let us test it on our model. *Occlusion*: delete one character, run the model again, and see how
# much the log-odds $\log\frac{P(\text{pos})}{P(\text{neg})}$ drop. That is a direct measure of what the
# prediction depends on (for that one-at-a-time change). **Look at** the bars: for each sentence, the
# rank correlation (Spearman) between the [CLS] rollout and the size of the occlusion effect is printed.
# Where they agree, attention is a fair guide; where they disagree, trust the occlusion.

# %%
def log_odds(texts_):
    p, _ = train.predict_texts(model, tok, texts_, max_len=model.max_len)
    return np.log(p[:, 1] / p[:, 0])

def ranks(a):
    return np.argsort(np.argsort(a))

fig, axes = plt.subplots(2, 2, figsize=(13, 5.5), layout="constrained", sharey="row")
for col, ((tokens, _, _), R, text) in enumerate(zip(seed_maps, rollouts, texts)):
    chars_ = tokens[1:]                                                      # without [CLS]
    deleted = [text[:t] + text[t + 1:] for t in range(len(text))]
    effect = log_odds([text])[0] - log_odds(deleted)             # > 0: the character pushed towards positive
    attention = R[0, 1:]
    rho = np.corrcoef(ranks(attention), ranks(np.abs(effect)))[0, 1]
    x = np.arange(len(chars_))
    axes[0, col].bar(x, attention, color="C0")
    axes[0, col].set_title(f"{text}\n[CLS] row of the rollout", fontsize=10)
    axes[1, col].bar(x, effect, color=np.where(effect > 0, "C2", "C3"))
    axes[1, col].set_title(f"occlusion: log-odds change when deleted (green = was pushing positive);"
                           f" Spearman with |change| = {rho:.2f}", fontsize=9)
    for ax in axes[:, col]:
        ax.set_xticks(x, chars_)
    print(f"text {col + 1}: Spearman rank correlation, rollout vs |occlusion effect| = {rho:+.2f}")
axes[0, 0].set_ylabel("attention")
axes[1, 0].set_ylabel("log-odds change");

# %% [markdown]
# ## 10. Two test reviews
#
# The most confidently and correctly classified short reviews (10 to 25 characters), one of each class,
# from the pass over the test split in section 7. **Look at** the layer-0 [CLS] rows (top row of each
# panel in the first line of the grid) and compare with the keyword lists of section 8.

# %%
lengths = np.array([len(t) for t in test.texts])
picks = []
for label in (1, 0):
    ok = np.flatnonzero((test.labels == label) & ((test_p >= 0.5) == label) & (lengths >= 10) & (lengths <= 25))
    picks.append(ok[np.argmax(np.abs(test_p[ok] - 0.5))])
for i in picks:
    tokens, weights, p = attention_of(test.texts[i])
    fig = viz.attention_grid(weights, tokens, title=f"{test.texts[i]}   (label {data.LABEL_NAMES[test.labels[i]]}, "
                                                     f"P(positive) = {p:.3f})")


# %% [markdown]
# ## 11. Your own text
#
# `show_attention(text)` prints the prediction and draws the grid and the [CLS] row of the rollout.
# Change the text and run the cell. Characters the model never saw become `[UNK]`.

# %%
def show_attention(text):
    """Prediction, layer x head grid and rollout [CLS] row of any text."""
    tokens, weights, p = attention_of(text)
    unknown = tok.unknown_fraction(text)
    print(f"P(positive) = {p:.3f} -> {data.LABEL_NAMES[int(p >= 0.5)]}"
          + (f"   ({unknown:.0%} of the characters are unknown to the model)" if unknown else ""))
    viz.attention_grid(weights, tokens, title=text)
    R = viz.rollout(weights)
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(tokens)), 2.2), layout="constrained")
    ax.bar(range(len(tokens)), R[0])
    ax.set_xticks(range(len(tokens)), tokens)
    ax.set_title("[CLS] row of the rollout", fontsize=10)
    plt.show()

show_attention("房间干净，服务不错。")      # "clean room, good service"

# %% [markdown]
# With `ipywidgets` installed, the cell below gives a text box and a button (nothing is drawn until you
# press it). Without it, call `show_attention` above.

# %%
try:
    import ipywidgets as widgets
except ImportError:
    widgets = None
    print("ipywidgets is not installed; use show_attention(text) above")
if widgets is not None:
    widgets.interact_manual(show_attention, text=widgets.Text(value="这家酒店太吵了，不推荐。",
                                                              layout=widgets.Layout(width="60%")));

# %% [markdown]
# ## Summary
#
# * Each attention row is a probability distribution over the tokens; the [CLS] row of the last layer is
#   what the classifier reads, and rollout traces it back through both layers.
# * In this model, layer 0's [CLS] heads act as keyword detectors: their query is the same for every
#   review, and each head has learnt its own list of sentiment characters (差, 错 of 不错, 失, 棒 …),
#   of both polarities.
# * Attention says where information is read from, not what it is or which way it pushes. Check claims
#   about "what the model looks at" with an intervention such as occlusion; for text 1 and 2 here the
#   agreement between the two is the correlation printed in section 9, not a given.
#
# Next, notebook 9: every mistake of the article, as a runnable check.

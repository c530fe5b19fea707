# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1 · Tokens and embeddings
#
# The article's worked example (section 4.3) follows two sentences through a Transformer. Before a
# Transformer can do anything with them, text has to become numbers: the sentence is cut into
# **tokens**, each token gets an integer **id**, and each id picks a row of a learned matrix, its
# **embedding**. This notebook does those three steps for the article's two sentences with our
# code, and checks each one.
#
# You will learn:
#
# 1. why `text.split()`, the article's tokenizer, cannot cut Chinese (errata **C1**), and what we do instead;
# 2. how `CharTokenizer` turns characters into ids, pads a batch and builds a mask;
# 3. what an embedding is (a table lookup, which equals a one-hot vector times a matrix) and what its gradient is;
# 4. the article's five 3-D toy word vectors, used exactly as printed, which notebooks 2 and 3 carry forward;
# 5. why the "embedding" in the article's code (a one-hot of each word's *position*, errata **C2**)
#    tells the model nothing about the words.
#
# Every number below is computed by the package `numpy_transformer`, and the claims are checked
# with `assert`, so this notebook fails if the library breaks.

# %%
from numpy_transformer import viz
viz.notebook_setup()

# %%
import matplotlib.pyplot as plt
import numpy as np

from numpy_transformer import functional as F, nn
from numpy_transformer.data import LABEL_NAMES, SEED_SENTENCES
from numpy_transformer.gradcheck import check_gradients
from numpy_transformer.tokenizer import (PAD_ID, CharTokenizer, WordTokenizer, normalize,
                                         seed_tokenize, seed_word_embeddings)

# %% [markdown]
# ## 1. The two sentences
#
# The article's running example (section 4.3, 案例：文本分类任务, "case study: text classification"):
#
# | | text | translation | label |
# |---|---|---|---|
# | 文本1 | 这是一个有趣的文章，我很喜欢阅读它。 | This is an interesting article, I really like reading it. | positive |
# | 文本2 | 这篇文章太无聊了，我一点也不想读。 | This article is too boring, I don't want to read it at all. | negative |
#
# The package keeps them in `data.SEED_SENTENCES`, with labels 1 = positive and 0 = negative.

# %%
texts = [text for text, _ in SEED_SENTENCES]
for text, label in SEED_SENTENCES:
    print(f"{label} ({LABEL_NAMES[label]}):  {text}   {len(text)} characters")

# %% [markdown]
# ## 2. Why `split()` fails on Chinese (errata C1)
#
# The article's code (section 5, step 3, 分词 "word segmentation") tokenises with
# `positive_data.split()`. `str.split()` cuts at whitespace, and Chinese is written without spaces.
# **Look at** the length of each list: the whole sentence comes back as *one* token. English,
# for contrast, splits into words.

# %%
for text in texts:
    print(f"{len(text.split())} token(s): {text.split()}")
print(f"{len('This is an interesting article'.split())} token(s): {'This is an interesting article'.split()}")
assert all(len(text.split()) == 1 for text in texts)

# %% [markdown]
# With `split()`, every review in a corpus is its own one-word vocabulary: two different reviews
# never share a token, so nothing learned from one can transfer to another.
#
# ## 3. Characters as tokens
#
# The simplest correct fix is to make every character a token. Common Chinese characters carry
# meaning on their own (趣 *interest*, 聊 *chat*, 喜 *joy*), the vocabulary stays at a few
# thousand, and there are no segmentation mistakes. (A word segmenter is the next step up;
# `tokenizer.WordTokenizer` shows the idea on the article's five words in section 5.)

# %%
print(list(texts[0]))

# %% [markdown]
# `CharTokenizer.build` counts the characters of the training texts and numbers them by frequency.
# Ids 0-4 are reserved for special tokens with the same ids in every vocabulary: `[PAD]` fills a
# batch up to its longest text, `[UNK]` stands for an unseen character, `[CLS]` starts every text
# (the classifier reads its summary there, notebook 5), `[BOS]`/`[EOS]` are for generation.
# **Look at** the first ordinary ids: the characters that occur in *both* sentences
# (`,` `。` 一 我 文 章 读 这) come first because they are counted twice.

# %%
tok = CharTokenizer.build(texts)
print(f"vocabulary size V = {tok.vocab_size}")
print("  ".join(f"{i}:{tok.id_to_token(i)}" for i in range(tok.vocab_size)))

# %% [markdown]
# `encode` turns a text into ids, one per character, with `[CLS]` (id 2) first. Texts are
# NFKC-normalised first, which maps the full-width comma `，` to `,` (and full-width letters and
# digits to half-width ones): **look at** the decoded text, which has `,` where the original had `，`.

# %%
ids1 = tok.encode(texts[0], add_cls=True)
print("ids:    ", ids1)
print("decoded:", tok.decode(ids1))
assert len(ids1) == len(texts[0]) + 1 and ids1[0] == tok.token_to_id("[CLS]")
assert tok.decode(ids1) == normalize(texts[0]) != texts[0]

# %% [markdown]
# A model works on a whole batch at once, so `encode_batch` pads the texts into one rectangle
# `ids` (B, T) and returns `mask` (B, T), True at real tokens. **Look at** the end of row 1:
# sentence 2 is one character shorter, so it ends with a `[PAD]` id 0 and a False.

# %%
ids, mask = tok.encode_batch(texts, max_len=32)     # (B, T) int64, (B, T) bool
print("ids", ids.shape)
print(ids)
print("mask")
print(mask.astype(int))
assert ids.shape == (2, 19) and (ids[~mask] == PAD_ID).all() and mask.sum(axis=1).tolist() == [19, 18]

# %% [markdown]
# ## 4. Embedding: ids become rows of a matrix
#
# An embedding layer owns a table $E \in \mathbb{R}^{V \times D}$, one learned row per token,
# and looks the rows up:
#
# $$y_{b,t} = E[\,\mathrm{ids}_{b,t}\,], \qquad (B, T) \to (B, T, D)$$
#
# `functional.embedding(ids, E)` is that line (`E[ids]`); `nn.Embedding` holds `E` (drawn from
# $\mathcal N(0, 1/D)$) and calls it. We use a tiny width, D = 8.

# %%
D = 8
embed = nn.Embedding(tok.vocab_size, D, rng=np.random.default_rng(0))
E = embed.E.data                                   # (V, D)
x = embed(ids)                                     # (B, T) -> (B, T, D)
y, _ = F.embedding(ids, E)
print("E", E.shape, "  ids", ids.shape, "->  x", x.shape)
assert np.array_equal(x, E[ids]) and np.array_equal(x, y)

# %% [markdown]
# A lookup is the same as multiplying a one-hot vector by the table:
# $E[\mathrm{id}] = \mathrm{onehot}(\mathrm{id})^\top E$. That is why an embedding is often
# described as "a linear layer on one-hot inputs", but the lookup never builds the V-wide
# one-hot vectors. **Look at** the shapes: the one-hot batch is (B, T, V), the product (B, T, D).

# %%
onehot = np.eye(tok.vocab_size, dtype=E.dtype)[ids]   # (B, T, V)
print("one-hot", onehot.shape, "@ E", E.shape, "->", (onehot @ E).shape)
assert np.allclose(onehot @ E, x)

# %% [markdown]
# The same character gets the same vector wherever it stands. 文 is character 7 of sentence 1
# and character 2 of sentence 2 (position 8 and 3 after `[CLS]`):

# %%
t1, t2 = texts[0].index("文") + 1, texts[1].index("文") + 1
print(f"sentence 1, position {t1}:", x[0, t1])
print(f"sentence 2, position {t2}:", x[1, t2])
assert np.array_equal(x[0, t1], x[1, t2])

# %% [markdown]
# **The gradient.** In the backward pass every row of $E$ collects the gradients of all the
# places it was used:
#
# $$\frac{\partial L}{\partial E_v} = \sum_{(b,t)\,:\,\mathrm{ids}_{b,t} = v} \frac{\partial L}{\partial y_{b,t}}$$
#
# `functional.embedding_backward` does that with `np.add.at`, which adds repeated indices
# (`dE[ids] = dy` would keep only the last one). **Look at** the row of 文: it is the sum of the
# two upstream gradients at its two positions.

# %%
rng = np.random.default_rng(1)
dy = rng.standard_normal(x.shape).astype(E.dtype)    # some upstream gradient dL/dy, (B, T, D)
dE = F.embedding_backward(dy, (ids, E.shape))         # (V, D)
wen = tok.token_to_id("文")
print("dE[文]              ", dE[wen])
print("dy[0, t1] + dy[1, t2]", dy[0, t1] + dy[1, t2])
assert np.allclose(dE[wen], dy[0, t1] + dy[1, t2])

# %% [markdown]
# The same check for every row at once, against numerical derivatives (central differences in
# float64, `gradcheck.check_gradients`). **Look at** the verdict: the worst relative error is far
# below the tolerance of 1e-5. (The worst one sits in a row whose true gradient is exactly 0, an
# unused token, where the numerical estimate has about 1e-13 of rounding noise.)

# %%
E64 = E.astype(np.float64)
result = check_gradients(
    forward=lambda E: F.embedding(ids, E)[0],
    backward=lambda dout, E: {"E": F.embedding_backward(dout, F.embedding(ids, E)[1])},
    inputs={"E": E64})
print(result["E"])
assert result["E"].ok

# %% [markdown]
# ## 5. The article's five toy vectors (errata W4)
#
# Section 4.3, step 1 (词嵌入 "word embedding") gives five 3-dimensional word vectors. They are
# made up (no model produced them), which is fine for following the arithmetic by hand. We use
# them exactly as printed; the package keeps them in `tokenizer.SEED_WORD_VECTORS`.
#
# ```
# 有趣：[0.1, 0.2, 0.3]        interesting
# 喜欢：[0.4, 0.5, 0.6]        like
# 阅读：[0.7, 0.8, 0.9]        read
# 文章：[1.0, 1.1, 1.2]        article
# 无聊：[-1.0, -1.1, -1.2]     boring
# ```

# %%
words, E_toy = seed_word_embeddings()               # 5 words, (5, 3)
viz.table(E_toy, words, ["dim 0", "dim 1", "dim 2"], fmt="{:+.1f}")

# %% [markdown]
# Only these five words have vectors, so the article's example reads each sentence as the
# sequence of those words it contains. `seed_tokenize` finds them by greedy longest match
# ("maximum matching", the oldest Chinese segmentation method) and, with `drop_unknown=True`,
# drops every other character. **Look at** the order: in sentence 1, 文章 comes *before* 喜欢 and
# 阅读; sentence 2 contains only 文章 and 无聊.

# %%
for text in texts:
    print(seed_tokenize(text), "->", seed_tokenize(text, drop_unknown=True))

# %% [markdown]
# Looking the words up is the same embedding lookup as in section 4, with the toy table:

# %%
word_ids = np.array([WordTokenizer(words).encode(texts[0])])    # (1, T) indices into the 5 words
X1, _ = F.embedding(word_ids, E_toy)                              # (1, T, 3)
sentence1_words = seed_tokenize(texts[0], drop_unknown=True)
print("word ids:", word_ids)
viz.table(X1[0], sentence1_words, ["dim 0", "dim 1", "dim 2"], fmt="{:+.1f}")

# %% [markdown]
# What do the toy vectors say about the words? Cosine similarity
# $\cos(a, b) = a \cdot b / (\lVert a\rVert \lVert b\rVert)$ compares directions.
# **Look at** the table: the four words of sentence 1 all point almost the same way (cos ≥ 0.95),
# and 无聊 *boring* is exactly minus 文章 *article* (cos = −1). Learned embeddings put words that
# are used alike near each other; these hand-made ones only serve the arithmetic.

# %%
unit = E_toy / np.linalg.norm(E_toy, axis=1, keepdims=True)
cos = unit @ unit.T                                 # (5, 5)
viz.table(cos, words, words, fmt="{:+.3f}")
assert np.isclose(cos[words.index("无聊"), words.index("文章")], -1.0)
assert cos[:4, :4].min() > 0.95


# %% [markdown]
# ## 6. The article's code: a one-hot of the position (errata C2)
#
# Here is section 5, step 3 of the article, line for line (only NumPy is involved in it):
#
# ```python
# positive_words = positive_data.split()
# negative_words = negative_data.split()
# embedding_matrix = np.random.rand(len(positive_words), 100)  # 假设词嵌入维度为100
# max_sequence_length = max(len(positive_words), len(negative_words))
# positive_sequence = np.zeros((max_sequence_length, 100))
# negative_sequence = np.zeros((max_sequence_length, 100))
# for i, word in enumerate(positive_words):
#     index = positive_words.index(word)
#     positive_sequence[i][index] = 1
# ...  # the same for negative_words
# ```
#
# `index` is where the word *first occurs in its own sentence*, so row `i` is a one-hot of the
# word's position (for a word seen earlier, of its first position). `embedding_matrix` is
# created and never used. Let us run it.

# %%
def article_preprocess(positive_data, negative_data):
    """The article's section 5 step 3, unchanged except that it returns its two arrays."""
    positive_words = positive_data.split()
    negative_words = negative_data.split()
    embedding_matrix = np.random.rand(len(positive_words), 100)  # the article's line; never used
    max_sequence_length = max(len(positive_words), len(negative_words))
    positive_sequence = np.zeros((max_sequence_length, 100))
    negative_sequence = np.zeros((max_sequence_length, 100))
    for i, word in enumerate(positive_words):
        index = positive_words.index(word)
        positive_sequence[i][index] = 1
    for i, word in enumerate(negative_words):
        index = negative_words.index(word)
        negative_sequence[i][index] = 1
    return positive_sequence, negative_sequence


# %% [markdown]
# With the article's `split()`, each sentence is one "word" at position 0. **Look at** the
# result: the positive and the negative review become *the same* input, a single 1 in column 0.
# No model can tell them apart.

# %%
pos_seq, neg_seq = article_preprocess(texts[0], texts[1])
print("shapes:", pos_seq.shape, neg_seq.shape, "  non-zero columns:", np.flatnonzero(pos_seq), np.flatnonzero(neg_seq))
assert np.array_equal(pos_seq, neg_seq)

# %% [markdown]
# Fixing only the tokenizer does not help. Put a space between the characters so that `split()`
# returns characters, and run the same code: each row is still a one-hot of the *position*.
# **Look at** the two checks: 是 (sentence 1) and 篇 (sentence 2), different characters at
# position 1, get the same vector; 文, the same character at positions 7 and 2, gets two
# different vectors. The vector says where a token is, never what it is.

# %%
pos_chars, neg_chars = article_preprocess(" ".join(texts[0]), " ".join(texts[1]))
print("shapes:", pos_chars.shape, neg_chars.shape)
print("是 / 篇 at position 1 -> same vector:     ", np.array_equal(pos_chars[1], neg_chars[1]))
i1, i2 = texts[0].index("文"), texts[1].index("文")
print("文 at positions", i1, "and", i2, "-> same vector:", np.array_equal(pos_chars[i1], neg_chars[i2]))
assert texts[0][1] != texts[1][1] and np.array_equal(pos_chars[1], neg_chars[1])
assert not np.array_equal(pos_chars[i1], neg_chars[i2])

# %% [markdown]
# The picture says the same. **Look at** the top row: the article's "embeddings" of the two
# sentences are the same diagonal (only the first 20 of the 100 columns are drawn; the rest are
# 0), whatever the characters on the left. In the bottom row, our embeddings: a character has the
# same row of colours wherever it appears (这 文 章 , 我 。 are in both sentences, mostly at
# different positions), and different characters have different rows.

# %%
fig, axes = plt.subplots(2, 2, figsize=(9, 7.5), layout="constrained")
tokens = [[tok.id_to_token(int(i)) for i in row[m]] for row, m in zip(ids, mask)]
panels = [(pos_chars[:, :20], list(texts[0]), "article's code, sentence 1 (first 20 columns)"),
          (neg_chars[:17, :20], list(texts[1]), "article's code, sentence 2 (first 20 columns)"),
          (x[0], tokens[0], "E[ids], sentence 1"), (x[1, :18], tokens[1], "E[ids], sentence 2")]
for ax, (image, labels, title) in zip(axes.flat, panels):
    shown = ax.imshow(image, cmap="RdBu_r", vmin=-np.abs(image).max(), vmax=np.abs(image).max(), aspect="auto")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="value")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xticks(range(0, image.shape[1], 5 if image.shape[1] > 10 else 1))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("dimension")

# %% [markdown]
# ---
# > **What the article got wrong here**
# >
# > * **C1** — The code tokenises Chinese with `text.split()`, which returns the whole sentence as one
# >   token because Chinese has no spaces. We use characters (`CharTokenizer`), with fixed special
# >   tokens, padding and a mask.
# > * **C2** — The code's "embedding" is a one-hot of each word's position in its own sentence, and
# >   the `embedding_matrix` it builds is never used. With its `split()`, the positive and the negative
# >   review become the same input; even with characters, the vector says where a token is and
# >   nothing about which token it is. An embedding is a learned table looked up by token id.
# > * **W4** — The five 3-D vectors of section 4.3 are made up. That is fine for teaching, so we keep
# >   them exactly as printed and compute the true numbers with them in notebooks 2 and 3.
# >
# > Next, notebook 2: the position signal that the article gets wrong (E1, W1).

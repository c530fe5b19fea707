# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 9 · What the article got wrong
#
# The article this series teaches from (a Chinese overview of large language models; its section 4.3
# gives the running example of notebooks 1–8) has a fair overview in its prose, but several of its
# formulas, all the numbers of its worked example and every line of its code are wrong or would not
# run. Spotting them is one of the best exercises there is. This notebook turns each mistake into a
# runnable check: reproduce the mistake (safely — errors are caught and printed), show why it is wrong
# with a computed number, then the fix with our code.
#
# | | what | section |
# |---|---|---|
# | **E1–E7** | formulas and facts: PE, the layer sum, the FFN, pooling, precision/recall, the causal mask, BERT's date | 1–7 |
# | **W1–W4** | the worked example's numbers | 8 |
# | **C1–C8** | the code | 9 |
# | **R1–R3** | citations | 10 |
#
# Notebooks 1–8 treat most of these in depth where they arise; here they are side by side.

# %%
from numpy_transformer import viz
viz.notebook_setup(precision=4)

# %%
import matplotlib.pyplot as plt
import numpy as np

from numpy_transformer import checkpoint, data, functional as F, metrics, nn, train, worked_example
from numpy_transformer.models import TransformerClassifier, TransformerLM
from numpy_transformer.optim import Adam
from numpy_transformer.tokenizer import CharTokenizer, SEED_WORD_VECTORS

texts = [text for text, _ in data.SEED_SENTENCES]
rng = np.random.default_rng(0)

# %% [markdown]
# ## E1 · The positional encoding
#
# The article (sections 1.3, 3.2, 4.1), and what Vaswani et al. (2017, §3.5) define:
#
# $$\text{article: } PE(pos) = \sin\!\Big(\frac{pos}{10000^{2i/d}}\Big) + \cos\!\Big(\frac{pos}{10000^{2i/d}}\Big),
#   \quad \text{"}i\text{ is the word index"}$$
#
# $$\text{correct: } PE_{pos,\,2i} = \sin\!\Big(\frac{pos}{10000^{2i/d}}\Big), \qquad
#   PE_{pos,\,2i+1} = \cos\!\Big(\frac{pos}{10000^{2i/d}}\Big), \quad i \text{ indexes pairs of dimensions}$$
#
# `F.sinusoidal_positional_encoding` is the correct one; `F.seed_positional_encoding` is the article's,
# for teaching only (it reads $i$ as the pair index, the kindest reading). **Look at** the right panel:
# columns come in identical pairs, and the values reach $\pm\sqrt2$.

# %%
T, D = 50, 16
pe, pe_seed = (f(T, D, dtype=np.float64) for f in (F.sinusoidal_positional_encoding, F.seed_positional_encoding))
fig = viz.pe_comparison(pe, pe_seed)

# %% [markdown]
# Why it matters. $\sin\theta + \cos\theta = \sqrt2\,\sin(\theta + \pi/4)$: one number per frequency
# where the paper keeps a (sin, cos) *pair*. The pair is what makes a shift in position a fixed
# rotation, $PE_{pos+k} = PE_{pos}\,M_k$ with $M_k$ block-diagonal, blocks
# $\begin{pmatrix}\cos k\omega_i & -\sin k\omega_i\\ \sin k\omega_i & \cos k\omega_i\end{pmatrix}$ — so
# attention can learn "the word k places back" with one linear map. **Look at** the residuals: zero (to
# rounding) for the correct encoding; for the article's, even the *best* linear map, fitted by least
# squares, misses by more than 10 %. And if $i$ really were the word index ($i = pos$), every dimension
# would hold the same number, and that number tends to $\sin 0 + \cos 0 = 1$ as the position grows:
# beyond the first few positions, all positions look alike.

# %%
theta = np.linspace(0, 20, 101)
assert np.allclose(np.sin(theta) + np.cos(theta), np.sqrt(2) * np.sin(theta + np.pi / 4))
assert np.array_equal(pe_seed[:, 0::2], pe_seed[:, 1::2])                 # identical column pairs

k = 3
omega = 10000.0 ** (-np.arange(0, D, 2) / D)                              # (D/2,) frequencies
M = np.zeros((D, D))
for i, w in enumerate(omega):
    M[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[np.cos(k * w), -np.sin(k * w)], [np.sin(k * w), np.cos(k * w)]]
residual = np.linalg.norm(pe[:-k] @ M - pe[k:]) / np.linalg.norm(pe[k:])
A, *_ = np.linalg.lstsq(pe_seed[:-k], pe_seed[k:], rcond=None)           # the best linear map there is
residual_seed = np.linalg.norm(pe_seed[:-k] @ A - pe_seed[k:]) / np.linalg.norm(pe_seed[k:])
print(f"shift by k = {k}: correct PE, rotation M_k: relative residual {residual:.1e}")
print(f"                 article's PE, best linear map: relative residual {residual_seed:.3f}")
assert residual < 1e-12 and residual_seed > 0.1

pos = np.arange(T)
word_index_reading = np.sin(pos / 10000 ** (2 * pos / D)) + np.cos(pos / 10000 ** (2 * pos / D))   # i = pos
print("i = word index: PE(pos) for pos = 0..7 (the same in every dimension):", np.round(word_index_reading[:8], 3))
print(f"positions 20..{T - 1} all within {np.abs(word_index_reading[20:] - 1).max():.0e} of 1")
assert np.abs(word_index_reading[20:] - 1).max() < 1e-3

# %% [markdown]
# ## E2 · The layer is not a sum
#
# The article (1.3, 4.1): $\text{TransformerLayer}(X) = \text{MultiHeadAttention}(X) + \text{Feedforward}(X)$.
# The Transformer layer is sequential, with residual connections and LayerNorm:
#
# $$\text{post-LN (Vaswani et al.): } H = \mathrm{LN}(X + \mathrm{MHA}(X)),\quad Y = \mathrm{LN}(H + \mathrm{FFN}(H))$$
# $$\text{pre-LN (GPT-2, Xiong et al. 2020): } H = X + \mathrm{MHA}(\mathrm{LN}(X)),\quad Y = H + \mathrm{FFN}(\mathrm{LN}(H))$$
#
# What goes wrong with the article's layer: with no residual path, nothing carries a token's own
# vector past the attention, and attention averages. Stack six of them (random weights, 18 positions)
# and **look at** the left panel: the 18 output vectors become almost the same vector (mean cosine
# similarity between positions near 1 — the sentence is averaged into one point), and the right panel:
# the output no longer resembles the input. Our blocks keep positions apart and keep the input.

# %%
x = rng.standard_normal((1, 18, 32))

def mean_cosine_between_positions(h):
    u = h[0] / np.linalg.norm(h[0], axis=-1, keepdims=True)                # (T, D)
    c = u @ u.T
    return (c.sum() - np.trace(c)) / (c.size - len(c))

def cosine_with_input(h):
    return float(np.mean((h * x).sum(-1) / np.linalg.norm(h, axis=-1) / np.linalg.norm(x, axis=-1)))

def article_layer(h, r):
    """The article's TransformerLayer(X) = MHA(X) + FFN(X), literally: no residual, no LayerNorm."""
    mha = nn.MultiHeadAttention(32, 4, rng=r, dtype=np.float64)
    ffn = nn.FeedForward(32, 128, rng=r, dtype=np.float64)
    return mha(h) + ffn(h)

curves = {}
for name, norm in (("article: MHA(X) + FFN(X)", None), ("post-LN block", "post"), ("pre-LN block", "pre")):
    r, h, between, kept = np.random.default_rng(1), x, [], []
    for depth in range(6):
        if norm is None:
            h = article_layer(h, r)
        else:
            h = nn.TransformerBlock(32, 4, 128, dropout=0.0, norm=norm, rng=r, dtype=np.float64)(h)
        between.append(mean_cosine_between_positions(h))
        kept.append(cosine_with_input(h))
    curves[name] = (between, kept)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
for name, (between, kept) in curves.items():
    axes[0].plot(range(1, 7), between, marker="o", label=name)
    axes[1].plot(range(1, 7), kept, marker="o", label=name)
axes[0].set_title("mean cosine similarity between the 18 positions")
axes[1].set_title("cosine similarity of each output with its input")
for ax in axes:
    ax.set_xlabel("layers stacked")
    ax.grid(alpha=0.3)
axes[0].legend();
assert curves["article: MHA(X) + FFN(X)"][0][-1] > 0.95 and curves["pre-LN block"][0][-1] < 0.8

# %% [markdown]
# The kindest reading of the article's sum — add a residual and a LayerNorm — is a real design, the
# *parallel* block of GPT-J and PaLM: $Y = X + \mathrm{MHA}(\mathrm{LN}(X)) + \mathrm{FFN}(\mathrm{LN}(X))$.
# `nn.TransformerBlock` offers it as `norm="parallel"`; the check rebuilds it from its own parts.

# %%
block = nn.TransformerBlock(32, 4, 128, dropout=0.0, norm="parallel", rng=np.random.default_rng(2), dtype=np.float64)
y = block(x)
xn = block.norm1(x)
assert np.allclose(y, x + block.attn(xn) + block.ffn(xn))
print("parallel block == X + MHA(LN(X)) + FFN(LN(X)):", np.allclose(y, x + block.attn(xn) + block.ffn(xn)))

# %% [markdown]
# ## E3 · The feed-forward network has two layers
#
# The article (4.1): $\text{Feedforward}(x) = \mathrm{ReLU}(\mathrm{Linear}(x))$ — one layer, although its
# own section 3.2 (step 4) says two. The paper (§3.3):
#
# $$\mathrm{FFN}(x) = \max(0,\ x W_1 + b_1)\, W_2 + b_2, \qquad W_1: D \times d_{ff},\ W_2: d_{ff} \times D,\ d_{ff} = 4D$$
#
# The article's version ends in a ReLU, so its output is never negative: added to the residual stream it
# could only ever *increase* features. **Look at** the check of `nn.FeedForward` against the formula, and
# the article's output's minimum.

# %%
ffn = nn.FeedForward(32, 128, rng=np.random.default_rng(3), dtype=np.float64)
expected = np.maximum(0, x @ ffn.W1.data + ffn.b1.data) @ ffn.W2.data + ffn.b2.data
assert np.allclose(ffn(x), expected)
one_layer = nn.Linear(32, 32, rng=np.random.default_rng(3), dtype=np.float64)
article_ffn = np.maximum(0, one_layer(x))                                  # ReLU(Linear(x))
print(f"nn.FeedForward == W2 ReLU(W1 x + b1) + b2: True; parameters {ffn.num_parameters():,}")
print(f"article's ReLU(Linear(x)): smallest output {article_ffn.min():.3f}; ours: {ffn(x).min():.3f}")
assert article_ffn.min() >= 0 > ffn(x).min()

# %% [markdown]
# ## E4 · A sequence classifier must pool
#
# The article (4.1): $\text{Output}(X) = \text{Linear}(\text{TransformerLayer}(X))$. Applied to a sequence,
# that is one class distribution **per token** — for text 1, nineteen predictions of its sentiment, one
# per character. The fix: pool the sequence into one vector first — the [CLS] position, or the mean over
# real tokens — then the linear layer:
# $z = \mathrm{pool}(H)\, W_c + b_c \in \mathbb R^{C}$.
#
# **Look at** the shapes, and at what happens when the per-token output meets one label per sentence.

# %%
tok = CharTokenizer.build(texts)
ids, mask = tok.encode_batch(texts, max_len=32)                            # (2, 19)
labels = np.array([label for _, label in data.SEED_SENTENCES])
r = np.random.default_rng(4)
embed = nn.Embedding(tok.vocab_size, 16, rng=r)
encoder = nn.TransformerEncoder(1, 16, 2, 32, rng=r)
output = nn.Linear(16, 2, rng=r)
per_token = output(encoder(embed(ids)))                                    # the article's Output(X)
print("article: Linear(TransformerLayer(X)) ->", per_token.shape, "(batch, tokens, classes)")
try:
    F.cross_entropy(per_token, labels)
except ValueError as err:
    print("cross-entropy against one label per sentence: ValueError:", err)

classifier = TransformerClassifier(tok.vocab_size, 2, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=32,
                                   seed=0).eval()
logits = classifier(ids, mask)
print("ours: TransformerClassifier (pool at [CLS], then Linear) ->", logits.shape, "(batch, classes)")
assert per_token.shape == (2, ids.shape[1], 2) and logits.shape == (2, 2)

# %% [markdown]
# ## E5 · Precision and recall
#
# The article (appendix, question 4): "recall = correctly classified negatives / all negatives",
# "precision = correctly classified positives / all positives". The definitions:
#
# $$\text{precision} = \frac{TP}{TP + FP}, \qquad \text{recall} = \frac{TP}{TP + FN}, \qquad
#   \text{specificity} = \frac{TN}{TN + FP}$$
#
# The article's "recall" is **specificity**; its "precision" is **recall**. With the small trained model
# of notebook 7 on the test split — and, to see why the difference matters, with a "classifier" that calls
# every review positive: by the article's "precision" it is perfect.

# %%
ckpt = checkpoint.load("assets/classifier_small.npz")
model, model_tok = ckpt.model.eval(), CharTokenizer.from_dict(ckpt.tokenizer)
test = data.load_corpus()["test"]
pred = train.evaluate(model, test, model_tok, max_len=128)["pred"]
always_positive = np.ones(len(test), dtype=int)

def rates(y_pred):
    (tn, fp), (fn, tp) = metrics.confusion_matrix(test.labels, y_pred, num_classes=2)
    return {"precision TP/(TP+FP)": tp / (tp + fp), "recall TP/(TP+FN)": tp / (tp + fn),
            "article's 'precision' = TP/(TP+FN)": tp / (tp + fn),
            "article's 'recall' = TN/(TN+FP)": tn / (tn + fp)}

ours, everyone = rates(pred), rates(always_positive)
viz.table([[ours[key], everyone[key]] for key in ours], list(ours), ["small model", "'always positive'"])
assert np.isclose(ours["recall TP/(TP+FN)"], metrics.recall(test.labels, pred))
assert np.isclose(ours["article's 'recall' = TN/(TN+FP)"], metrics.specificity(test.labels, pred))
assert everyone["article's 'precision' = TP/(TP+FN)"] == 1.0 and everyone["precision TP/(TP+FP)"] < 0.5


# %% [markdown]
# ## E6 · A generator needs the causal mask
#
# The article's appendix (question 2) describes text generation without ever mentioning masking. A
# language model is trained to predict token $t+1$ at every position $t$ at once; if position $t$ may
# attend to position $t+1$, it can simply copy the answer. The causal mask $M_{ts} = [s \le t]$ forbids
# that. `TransformerLM` always applies it; to see what goes wrong without it, the subclass below changes
# one thing: its encoder ignores the mask `TransformerLM.forward` hands it (while `peek` is True; setting
# it to False puts the mask back, to evaluate the same weights honestly). The first check makes sure
# the subclass is the same model otherwise: with one token there is no future to see, so both must agree.

# %%
class LMWithoutCausalMask(TransformerLM):
    """TransformerLM whose encoder ignores the causal mask, as the article's generator would (errata E6)."""

    peek = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        masked_forward = self.encoder.forward
        self.encoder.forward = lambda x, mask=None: masked_forward(x, None if self.peek else mask)

def tiny_lm(cls, vocab_size):
    return cls(vocab_size, d_model=32, n_heads=2, n_layers=1, d_ff=64, max_len=64, dropout=0.0, seed=0)

one_token = np.array([[7]])
assert np.allclose(tiny_lm(LMWithoutCausalMask, 20)(one_token), tiny_lm(TransformerLM, 20)(one_token))

# %% [markdown]
# **Peeking.** Change the token at position 6 and see which output positions change. With the mask,
# only positions ≥ 6; without it, every position — including position 5, whose job is to *predict*
# token 6.

# %%
a = rng.integers(5, 20, size=(1, 12))
b = a.copy()
b[0, 6] = 4 if a[0, 6] != 4 else 5
for cls in (TransformerLM, LMWithoutCausalMask):
    lm = tiny_lm(cls, 20)
    changed = np.abs(lm(a) - lm(b)).max(axis=-1)[0] > 1e-9              # (T,) which outputs moved
    print(f"{cls.__name__:>20s}: outputs that change when token 6 changes: {np.flatnonzero(changed).tolist()}")
    assert np.array_equal(changed, np.arange(12) >= 6) if cls is TransformerLM else changed.all()


# %% [markdown]
# **The training loss lies.** Train both on a string of 4,000 characters drawn *uniformly at random* from
# the 27 characters of the article's two sentences. The next character is unpredictable by construction:
# no honest model can beat $\ln 27 = 3.30$ nats per character, except by memorising parts of the string.
# **Look at** the curves: the causal model stays near the line; the unmasked one falls far below it — it
# is not predicting, it is copying the answer it can see.

# %%
def train_lm(model, ids, steps, T=24, B=16, lr=1e-2, seed=0):
    """Adam on random windows of ids: inputs ids[s:s+T], targets ids[s+1:s+T+1]. Returns the losses."""
    optimizer, r, losses = Adam(model.parameters(), lr=lr), np.random.default_rng(seed), []
    for _ in range(steps):
        starts = r.integers(0, len(ids) - T - 1, B)
        x = np.stack([ids[s:s + T] for s in starts])                       # (B, T)
        y = np.stack([ids[s + 1:s + T + 1] for s in starts])               # (B, T), shifted by one
        model.zero_grad()
        loss, cache = F.cross_entropy(model(x), y)
        model.backward(F.cross_entropy_backward(1.0, cache))
        optimizer.step()
        losses.append(float(loss))
    return np.array(losses)

alphabet = sorted(set("".join(texts)))
random_text = "".join(np.random.default_rng(5).choice(alphabet, 4000))
random_tok = CharTokenizer.build([random_text])
random_ids = np.array(random_tok.encode(random_text))
random_models = {cls.__name__: tiny_lm(cls, random_tok.vocab_size) for cls in (TransformerLM, LMWithoutCausalMask)}
random_losses = {name: train_lm(lm, random_ids, 200) for name, lm in random_models.items()}

fig, ax = plt.subplots(figsize=(6.5, 3.6))
for name, losses in random_losses.items():
    ax.plot(np.convolve(losses, np.ones(10) / 10, mode="valid"), label=name)
ax.axhline(np.log(len(alphabet)), color="grey", linestyle=":", label=f"ln {len(alphabet)}: the best honest loss")
ax.set_xlabel("Adam step")
ax.set_ylabel("training loss (mean of 10 steps)")
ax.set_title("a random string: nothing to learn, except by peeking")
ax.grid(alpha=0.3)
ax.legend();
final = {name: losses[-20:].mean() for name, losses in random_losses.items()}
print("training loss over the last 20 steps:", ", ".join(f"{name} {value:.3f}" for name, value in final.items()))
assert final["TransformerLM"] > 2.5 and final["LMWithoutCausalMask"] < 1.5

# %% [markdown]
# How it copies: the average attention of the unmasked model over one window. **Look at** the bright
# diagonal just *above* the main one: position $t$ attends to $t+1$, the token it is asked to predict.
# The causal model cannot (everything above the diagonal is masked).

# %%
window = random_ids[None, :16]
tokens = [random_tok.id_to_token(int(i)) for i in window[0]]
fig, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
for ax, (name, lm) in zip(axes, random_models.items()):
    lm(window)
    viz.attention_map(lm.attention_weights[0][0].mean(axis=0), tokens, ax=ax, annotate=False, title=name)
above = np.diag(random_models["LMWithoutCausalMask"].attention_weights[0][0].mean(axis=0), k=1).mean()
print(f"unmasked model: mean attention of position t on t + 1 = {above:.2f} (an even spread would give {1 / 16:.2f})")

# %% [markdown]
# **Generation fails.** Now real text: the two sentences and the first 60 training reviews (about 4,400
# characters), 250 steps each, then greedy generation from the same prompt. When generating, the next
# token does not exist yet, so there is nothing to copy: the unmasked model must predict, which it never
# learnt. **Look at** the table — the training loss each model reports, the loss of the same weights when
# the future is hidden (as it is during generation), and the text each one writes.

# %%
corpus_text = "".join(texts) + "".join(data.load_corpus()["train"].texts[:60])
text_tok = CharTokenizer.build([corpus_text])
text_ids = np.array(text_tok.encode(corpus_text))
windows = np.stack([text_ids[s:s + 25] for s in range(0, len(text_ids) - 25, 25)])   # (N, 25)
rows = []
for cls in (TransformerLM, LMWithoutCausalMask):
    lm = tiny_lm(cls, text_tok.vocab_size)
    losses = train_lm(lm, text_ids, 250)
    lm.eval()
    lm.peek = False                                                     # (only the unmasked model has it)
    hidden_future = float(F.cross_entropy(lm(windows[:, :-1]), windows[:, 1:])[0])
    lm.peek = True
    prompt = np.array([text_tok.encode("这本书")])
    generated = text_tok.decode(lm.generate(prompt, 30, rng=None, greedy=True)[0])
    rows.append([f"{losses[-20:].mean():.2f}", f"{hidden_future:.2f}", generated])
viz.table(rows, ["TransformerLM (causal)", "without the causal mask"],
      ["training loss", "loss with the future hidden", "greedy generation from 这本书"])
assert float(rows[1][1]) > float(rows[0][1])
print(f"(characters in the text: {len(corpus_text):,}; vocabulary {text_tok.vocab_size}; "
      f"uniform guessing: ln V = {np.log(text_tok.vocab_size):.2f})")

# %% [markdown]
# ## E7 · BERT was not released in 2017
#
# The article (1.2): the Transformer was proposed in 2017, and "in the same year Google released BERT".
# BERT appeared on arXiv in October 2018 (1810.04805) and was published at NAACL 2019. An arXiv
# identifier starts with the year and month of submission (YYMM), so the check is one line.

# %%
papers = {"Transformer, Vaswani et al.": "1706.03762", "BERT, Devlin et al.": "1810.04805"}
first_seen = {name: (2000 + int(arxiv[:2]), int(arxiv[2:4])) for name, arxiv in papers.items()}
for name, (year, month) in first_seen.items():
    print(f"{name:28s} arXiv {papers[name]}: {year}-{month:02d}")
assert first_seen["BERT, Devlin et al."][0] == first_seen["Transformer, Vaswani et al."][0] + 1

# %% [markdown]
# ## W1–W4 · The worked example's numbers
#
# Section 4.3 follows the two sentences with five made-up 3-D word vectors (有趣, 喜欢, 阅读, 文章, 无聊).
# Using made-up vectors is fine (**W4**); notebooks 1–3 reuse exactly those. The numbers printed for the
# steps after them are not.
#
# **W1 · The "positional encoding" adds another word's vector.** The article prints, for example,
# `有趣：[0.4, 0.5, 0.6] + [1.0, 1.1, 1.2]` — 喜欢's vector plus 文章's vector. No position encoding can
# produce `[1.0, 1.1, 1.2]`: the correct one stays within [−1, 1], and the article's own formula gives equal
# values in dimensions 0 and 1 (1.0 ≠ 1.1). **Look at** the checks over the first 10,000 positions, then the
# true numbers for sentence 1.

# %%
vectors = {word: np.array(v) for word, v in SEED_WORD_VECTORS.items()}
printed_added = np.array([1.0, 1.1, 1.2])
assert np.allclose(printed_added, vectors["文章"]) and np.allclose([0.7, 0.8, 0.9], vectors["阅读"])
pe3, pe3_seed = worked_example.toy_positional_encoding(10000, 3)
assert np.abs(pe3).max() <= 1.0 < printed_added[1]                       # correct PE never reaches 1.1
assert np.array_equal(pe3_seed[:, 0], pe3_seed[:, 1])                     # the article's: dims 0 and 1 equal
print("the vector the article adds as 'position' is 文章's own vector:", vectors["文章"])

words = worked_example.toy_words(0)                                       # ['有趣', '文章', '喜欢', '阅读']
X = worked_example.toy_embeddings(words)
PE, _ = worked_example.toy_positional_encoding(len(words), 3)
viz.table([[*X[t], *PE[t], *(X + PE)[t]] for t in range(len(words))], [f"{t}: {w}" for t, w in enumerate(words)],
      ["x0", "x1", "x2", "PE0 (sin)", "PE1 (cos)", "PE2 (sin)", "x0 + PE0", "x1 + PE1", "x2 + PE2"])

# %% [markdown]
# **W2 · The "attention weights" are not attention weights.** The article prints one row of 3 numbers
# per word (`有趣：[0.8, 0.6, 0.5]` …): as many entries as the embedding has dimensions, not one per token,
# and the rows do not sum to 1. Real weights are a $T \times T$ matrix whose rows sum to 1; here they are
# for sentence 1's four words with $Q = K = V = X + PE$ (notebook 3).

# %%
printed = worked_example.SEED_PRINTED_ATTENTION
print("article's rows: length", {len(v) for v in printed.values()},
      "sums", {w: round(sum(v), 2) for w, v in printed.items()})
_, weights = worked_example.toy_attention(X + PE)
viz.table(weights, words, words)
assert weights.shape == (len(words), len(words)) and np.allclose(weights.sum(axis=1), 1)
assert not any(np.isclose(sum(v), 1) for v in printed.values())

# %% [markdown]
# **W3 · Three probabilities for two classes.** The article's output is `文本1：[0.9, 0.1, 0.0]`,
# `文本2：[0.0, 0.9, 0.1]` — three classes for a positive/negative task (and 文本2's largest entry is in the
# middle). A two-class classifier outputs two probabilities that sum to 1; here is the trained model of
# notebook 7 on the two sentences.
#
# **W4** (made-up vectors) is fine for teaching, though worth noticing: 无聊 is exactly minus 文章.

# %%
print("article:", worked_example.SEED_PRINTED_OUTPUT)
probs, _ = train.predict_texts(model, model_tok, texts, max_len=128)
for text, p in zip(texts, probs):
    print(f"ours: P(negative), P(positive) = {np.round(p, 3)}  sum {p.sum():.3f}  {text}")
assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1)
assert all(len(v) == 3 for v in worked_example.SEED_PRINTED_OUTPUT.values())
assert np.array_equal(vectors["无聊"], -vectors["文章"])

# %% [markdown]
# ## C1–C8 · The code
#
# The article's section 5 trains a Keras model; none of it runs as printed. This is its code (comments
# translated), kept as a string: TensorFlow is not installed here, and we only need to run its NumPy part.

# %%
SEED_CODE = '''
# load the data
with open('positive.txt', 'r', encoding='utf-8') as f:
    positive_data = f.read()
with open('negative.txt', 'r', encoding='utf-8') as f:
    negative_data = f.read()
# tokenise
positive_words = positive_data.split()
negative_words = negative_data.split()
# word embedding
embedding_matrix = np.random.rand(len(positive_words), 100)  # assume an embedding size of 100
# pad the sequences
max_sequence_length = max(len(positive_words), len(negative_words))
positive_sequence = np.zeros((max_sequence_length, 100))
negative_sequence = np.zeros((max_sequence_length, 100))
for i, word in enumerate(positive_words):
    index = positive_words.index(word)
    positive_sequence[i][index] = 1
for i, word in enumerate(negative_words):
    index = negative_words.index(word)
    negative_sequence[i][index] = 1

inputs = tf.keras.layers.Input(shape=(max_sequence_length, 100))
attention = tf.keras.layers.MultiHeadAttention(num_heads=2, key_dim=100)(inputs, inputs)
x = tf.keras.layers.Dense(units=100, activation='relu')(attention)
x = tf.keras.layers.Dense(units=100)(x)
outputs = tf.keras.layers.Dense(units=2, activation='softmax')(x)
model = tf.keras.Model(inputs=inputs, outputs=outputs)
model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])

model.fit(
    x=positive_sequence,
    y=tf.keras.utils.to_categorical([1, 0]),  # positive = 1, negative = 0
    epochs=10,
    batch_size=32,
    validation_data=(negative_sequence, tf.keras.utils.to_categorical([0, 1]))
)
'''
print(SEED_CODE)

# %% [markdown]
# **C1 and C2 · `split()` and a one-hot of the position.** Run the article's preprocessing as printed, on
# the article's own two sentences (in place of the two files). `text.split()` splits on spaces; Chinese
# has none, so each sentence is *one* "word". Then each word's row gets a 1 at the index of its own
# position, and `embedding_matrix` is never used. **Look at** the result: the two sentences, one
# positive and one negative, become the same input.

# %%
positive_data, negative_data = texts                     # instead of reading positive.txt, negative.txt
preprocessing = SEED_CODE[SEED_CODE.index("positive_words = "):SEED_CODE.index("inputs = ")]
as_printed = {"np": np, "positive_data": positive_data, "negative_data": negative_data}
exec(preprocessing, as_printed)                          # the article's lines, run as printed
print("positive_words =", as_printed["positive_words"])
print("input shapes:", as_printed["positive_sequence"].shape, as_printed["negative_sequence"].shape)
print("the two sentences give the same input:",
      np.array_equal(as_printed["positive_sequence"], as_printed["negative_sequence"]))
assert len(as_printed["positive_words"]) == 1
assert np.array_equal(as_printed["positive_sequence"], as_printed["negative_sequence"])

# %% [markdown]
# Splitting into characters instead (the fix for C1) does not rescue C2: row $i$ is still a one-hot of
# $i$, whatever the character. **Look at** the check: text 2's 17 rows equal text 1's first 17 rows. The
# fix is a lookup in a learned table, $x_t = E[\text{id}_t]$ (`nn.Embedding`, notebook 1), after a
# character tokenizer (`CharTokenizer`).

# %%
by_characters = {"np": np, "positive_data": positive_data, "negative_data": negative_data}
exec(preprocessing.replace("positive_data.split()", "list(positive_data)")
                  .replace("negative_data.split()", "list(negative_data)"), by_characters)
pos_seq, neg_seq = by_characters["positive_sequence"], by_characters["negative_sequence"]
print("shapes:", pos_seq.shape, neg_seq.shape, " rows 0-16 identical:", np.array_equal(pos_seq[:17], neg_seq[:17]))
assert np.array_equal(pos_seq[:17], neg_seq[:17])
print("ours: ids", tok.encode(texts[1], add_cls=True))

# %% [markdown]
# **C3 · No positional encoding, no residuals, no LayerNorm.** Sections 1–4 of the article describe
# positional encoding; the code has none. Without it attention sees a bag of characters. **Look at** two
# sentences made of exactly the same characters — 不太好，很喜欢 ("not very good, (but I) really like it")
# and 很好，不太喜欢 ("very good, (but I) don't much like it"): without PE an encoder gives them identical
# pooled vectors; with PE, different ones. (Residuals and LayerNorm: E2.)

# %%
pair = ["不太好，很喜欢", "很好，不太喜欢"]
assert sorted(pair[0]) == sorted(pair[1])
pair_tok = CharTokenizer.build(pair)
pair_ids = np.array([pair_tok.encode(t) for t in pair])                  # (2, 7)
r = np.random.default_rng(6)
embed = nn.Embedding(pair_tok.vocab_size, 16, rng=r, dtype=np.float64)
encoder = nn.TransformerEncoder(2, 16, 2, 32, dropout=0.0, rng=r, dtype=np.float64)
pos_enc = nn.PositionalEncoding(16, 16, dtype=np.float64)
without_pe = encoder(embed(pair_ids)).mean(axis=1)                       # (2, 16) mean-pooled
with_pe = encoder(pos_enc(embed(pair_ids))).mean(axis=1)
print("without PE, same vector for both:", np.allclose(without_pe[0], without_pe[1]))
print("with PE,    same vector for both:", np.allclose(with_pe[0], with_pe[1]))
assert np.allclose(without_pe[0], without_pe[1]) and not np.allclose(with_pe[0], with_pe[1])

# %% [markdown]
# **C4 · Output (batch, seq, 2) against labels (2, 2).** The model's last `Dense(2)` acts on every
# position (E4), so its output is (batch, seq, 2), while `to_categorical([1, 0])` is (2, 2). Keras's
# categorical cross-entropy is $-\sum_c y_c \log p_c$ over the last axis; **look at** what NumPy says when
# those two shapes meet.

# %%
y_article = np.eye(2)[[1, 0]]                                           # to_categorical([1, 0]): (2, 2)
p_article = F.softmax(per_token[:1])[0]                                 # one sentence, per token: (1, 19, 2)
try:
    -(y_article * np.log(p_article)).sum(axis=-1)
except ValueError as err:
    print("ValueError:", err)
print("fix: pool, then compare (B, C) logits with (B,) integer labels:", logits.shape, labels.shape,
      f"loss {float(F.cross_entropy(logits, labels)[0]):.3f}")

# %% [markdown]
# **C5 · One sentence passed as a batch; train on one class, validate on the other.** `fit(x=positive_sequence,
# ...)` hands Keras a single 2-D array; Keras reads its first axis as the batch, so `x` holds
# `max_sequence_length` "examples" (1, after `split()`; 18 with characters) while `y` holds 2. Even if it ran, it would train only on the positive
# sentence and validate only on the negative one. **Look at** the counts. The fix is a dataset of both
# sentences with one label each, batched with a padding mask, and a validation split taken from the same
# distribution (`data.load_corpus()`, notebook 7).

# %%
y_fit = np.eye(2)[[1, 0]]                                               # to_categorical([1, 0])
for name, run in (("as printed", as_printed), ("with characters", by_characters)):
    x_fit = run["positive_sequence"]
    print(f"{name:>15s}: x has {x_fit.shape[0]} row(s), read as examples; y has {y_fit.shape[0]} labels")
    assert x_fit.shape[0] != y_fit.shape[0]
print("ours:", data.seed_dataset(), "-> ids", ids.shape, "mask", mask.shape, "labels", labels)

# %% [markdown]
# **C6 · "We use regularisation to prevent overfitting."** **Look at** what the code contains: no dropout,
# no weight decay, no regulariser of any kind. Ours: dropout in every block (`dropout=0.1` in the trained
# model), AdamW's decoupled weight decay (0.01), and early stopping on the validation loss.

# %%
words_of_regularisation = ["Dropout", "dropout", "regularizer", "l2(", "weight_decay", "EarlyStopping"]
found = [w for w in words_of_regularisation if w in SEED_CODE]
print("regularisation in the article's code:", found or "none")
print(f"ours: dropout {model.config['dropout']}, weight decay {train.TrainConfig().weight_decay}, "
      f"early stopping patience {train.TrainConfig().patience} epochs")
assert not found

# %% [markdown]
# **C7 · The printed result.** The article predicts on `test_data = np.zeros((max_sequence_length, 100))`
# and prints `[[ 0.9  0.1]]`. But the model's input is `Input(shape=(max_sequence_length, 100))`, three
# axes with the batch, and `test_data` has two, so `predict` would stop with a shape error; given a batch
# of one, the output has one row per position (C4), three axes, which NumPy prints with three brackets.
# And after `split()` both sentences are the same input (C1, C2), so no output could tell them apart.
# **Look at** the shapes and the printed forms.

# %%
test_data = np.zeros((as_printed["max_sequence_length"], 100))          # as printed
model_input_axes = 1 + len((as_printed["max_sequence_length"], 100))    # (batch, seq, 100)
output_for_one = np.zeros((1, as_printed["max_sequence_length"], 2)) + [0.9, 0.1]   # (batch, seq, classes)
print(f"test_data has {test_data.ndim} axes; the model expects {model_input_axes}")
print("a (batch, seq, 2) output prints as", output_for_one, " - the article prints [[ 0.9  0.1]]")
assert test_data.ndim != model_input_axes and output_for_one.ndim == 3

# %% [markdown]
# **C8 · Undefined names.** The appendix (9.1) ends with `model.fit(x_train, y_train, epochs=5,
# batch_size=32)`; neither name is defined anywhere. **Look at** the error. Ours: `data.load_corpus()`
# gives the splits, `train.fit(model, splits["train"], splits["valid"], tokenizer, config)` trains
# (notebook 7).

# %%
from types import SimpleNamespace

keras_model = SimpleNamespace(fit=lambda *args, **kwargs: None)          # a stand-in: TensorFlow is not needed
try:
    exec("model.fit(x_train, y_train, epochs=5, batch_size=32)", {"model": keras_model})
except NameError as err:
    print("NameError:", err)
else:
    raise AssertionError("x_train should be undefined")

# %% [markdown]
# ## R1–R3 · Citations
#
# | | the article says | in fact |
# |---|---|---|
# | **R1** | Radford et al., *Improving language understanding by generative pre-training*, "NAACL 2018" (and "NeurIPS" in its reference list) | an OpenAI technical report (June 2018), not published at a conference |
# | **R2** | Chen et al., *BERT redefines the state-of-the-art for Chinese language understanding*, ICLR 2020; Gross et al., *A theoretically principled approach to stopping pre-training of large language models*, ICLR 2021 | neither paper can be found; treat them as non-existent |
# | **R3** | *ReZero is all you need*, "Keskar et al., 2019" | Bachlechner et al., 2020 |
#
# References this series relies on: Vaswani et al. 2017 (Transformer); Devlin et al. 2019 (BERT, NAACL;
# arXiv 2018); Ba et al. 2016 (LayerNorm); Xiong et al. 2020 (pre-LN); Kingma & Ba 2015 (Adam);
# Loshchilov & Hutter 2019 (AdamW); Srivastava et al. 2014 (dropout); Abnar & Zuidema 2020 (attention
# rollout); Jain & Wallace 2019 and Wiegreffe & Pinter 2019 (attention as explanation).

# %% [markdown]
# ## Summary
#
# | | the article | what we do | where |
# |---|---|---|---|
# | E1 | PE = sin + cos, "i = word index" | sin/cos pairs; a shift is a rotation | nb 2, `F.sinusoidal_positional_encoding` |
# | E2 | layer = MHA(X) + FFN(X) | residual + LayerNorm, post / pre / parallel | nb 5, `nn.TransformerBlock(norm=...)` |
# | E3 | FFN = ReLU(Linear(x)) | two layers, $d_{ff} = 4D$ | nb 5, `nn.FeedForward` |
# | E4 | Output = Linear(layer(X)) | pool ([CLS] or mean), then Linear | nb 5, 7, `TransformerClassifier(pooling=...)` |
# | E5 | "recall" = specificity, "precision" = recall | TP/(TP+FP), TP/(TP+FN) | nb 7, `metrics` |
# | E6 | generation without a mask | causal mask | this notebook, `TransformerLM` |
# | E7 | BERT in 2017 | arXiv Oct 2018, NAACL 2019 | — |
# | W1–W3 | numbers no formula produces | computed with the article's own vectors | nb 1–3, `worked_example` |
# | C1–C8 | code that cannot run | characters, embeddings, PE, pooling, real splits, dropout | nb 1, 7, `tokenizer`, `data`, `train` |

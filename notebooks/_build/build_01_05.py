"""Writes notebooks 01-05 of the step-through series (the article's worked example).

    .venv/bin/python notebooks/_build/build_01_05.py              # write the five .ipynb files
    .venv/bin/python notebooks/_build/build_01_05.py --execute    # ... run them and save the outputs
    .venv/bin/python notebooks/_build/build_01_05.py --execute 03 # only notebook 03

Each notebook is a list of `md` and `code` cells below; edit them here, not in
the .ipynb, and regenerate. The committed notebooks carry their outputs so
that they read well on a repository web page.

This folder holds no .ipynb files on purpose: `pytest --nbmake notebooks`
executes every notebook it finds under notebooks/.
"""

from __future__ import annotations

from nbtools import code, md, write


# The first code cell of every notebook in the series: plotting set-up, imports,
# and `table`, which shows a small labelled matrix as an HTML table (Chinese
# labels line up in HTML, unlike in fixed-width printed text).
SETUP = '''
%matplotlib inline
%config InlineBackend.figure_formats = ['png']
import html

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, display

from numpy_transformer import functional as F, nn, viz

plt.rcParams["figure.dpi"] = 80
np.set_printoptions(precision=3, suppress=True, linewidth=100)
print("font for Chinese labels:", viz.use_cjk_font())


def table(values, rows, cols, fmt="{:.3f}"):
    """Show a small matrix as an HTML table; numbers are formatted with fmt, strings as they are."""
    show = lambda v: html.escape(v if isinstance(v, str) else fmt.format(v))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["", *cols])
    body = "".join(f"<tr><th>{html.escape(str(r))}</th>" + "".join(f"<td>{show(v)}</td>" for v in row) + "</tr>"
                   for r, row in zip(rows, values))
    display(HTML(f"<table><tr>{head}</tr>{body}</table>"))
'''


# =========================================================================== #
# 01 · Tokens and embeddings
# =========================================================================== #

def notebook_01():
    return [
        md(r"""
        # 1 · Tokens and embeddings

        The article's worked example (section 4.3) follows two sentences through a Transformer. Before a
        Transformer can do anything with them, text has to become numbers: the sentence is cut into
        **tokens**, each token gets an integer **id**, and each id picks a row of a learned matrix, its
        **embedding**. This notebook does those three steps for the article's two sentences with our
        code, and checks each one.

        You will learn:

        1. why `text.split()`, the article's tokenizer, cannot cut Chinese (errata **C1**), and what we do instead;
        2. how `CharTokenizer` turns characters into ids, pads a batch and builds a mask;
        3. what an embedding is (a table lookup, which equals a one-hot vector times a matrix) and what its gradient is;
        4. the article's five 3-D toy word vectors, used exactly as printed, which notebooks 2 and 3 carry forward;
        5. why the "embedding" in the article's code (a one-hot of each word's *position*, errata **C2**)
           tells the model nothing about the words.

        Every number below is computed by the package `numpy_transformer`, and the claims are checked
        with `assert`, so this notebook fails if the library breaks.
        """),
        code(SETUP),
        code("""
        from numpy_transformer.data import LABEL_NAMES, SEED_SENTENCES
        from numpy_transformer.gradcheck import check_gradients
        from numpy_transformer.tokenizer import (PAD_ID, CharTokenizer, WordTokenizer, normalize,
                                                 seed_tokenize, seed_word_embeddings)
        """),

        md(r"""
        ## 1. The two sentences

        The article's running example (section 4.3, 案例：文本分类任务, "case study: text classification"):

        | | text | translation | label |
        |---|---|---|---|
        | 文本1 | 这是一个有趣的文章，我很喜欢阅读它。 | This is an interesting article, I really like reading it. | positive |
        | 文本2 | 这篇文章太无聊了，我一点也不想读。 | This article is too boring, I don't want to read it at all. | negative |

        The package keeps them in `data.SEED_SENTENCES`, with labels 1 = positive and 0 = negative.
        """),
        code("""
        texts = [text for text, _ in SEED_SENTENCES]
        for text, label in SEED_SENTENCES:
            print(f"{label} ({LABEL_NAMES[label]}):  {text}   {len(text)} characters")
        """),

        md(r"""
        ## 2. Why `split()` fails on Chinese (errata C1)

        The article's code (section 5, step 3, 分词 "word segmentation") tokenises with
        `positive_data.split()`. `str.split()` cuts at whitespace, and Chinese is written without spaces.
        **Look at** the length of each list: the whole sentence comes back as *one* token. English,
        for contrast, splits into words.
        """),
        code("""
        for text in texts:
            print(f"{len(text.split())} token(s): {text.split()}")
        print(f"{len('This is an interesting article'.split())} token(s): {'This is an interesting article'.split()}")
        assert all(len(text.split()) == 1 for text in texts)
        """),
        md(r"""
        With `split()`, every review in a corpus is its own one-word vocabulary: two different reviews
        never share a token, so nothing learned from one can transfer to another.

        ## 3. Characters as tokens

        The simplest correct fix is to make every character a token. Common Chinese characters carry
        meaning on their own (趣 *interest*, 聊 *chat*, 喜 *joy*), the vocabulary stays at a few
        thousand, and there are no segmentation mistakes. (A word segmenter is the next step up;
        `tokenizer.WordTokenizer` shows the idea on the article's five words in section 5.)
        """),
        code("""
        print(list(texts[0]))
        """),
        md(r"""
        `CharTokenizer.build` counts the characters of the training texts and numbers them by frequency.
        Ids 0-4 are reserved for special tokens with the same ids in every vocabulary: `[PAD]` fills a
        batch up to its longest text, `[UNK]` stands for an unseen character, `[CLS]` starts every text
        (the classifier reads its summary there, notebook 5), `[BOS]`/`[EOS]` are for generation.
        **Look at** the first ordinary ids: the characters that occur in *both* sentences
        (`,` `。` 一 我 文 章 读 这) come first because they are counted twice.
        """),
        code("""
        tok = CharTokenizer.build(texts)
        print(f"vocabulary size V = {tok.vocab_size}")
        print("  ".join(f"{i}:{tok.id_to_token(i)}" for i in range(tok.vocab_size)))
        """),
        md(r"""
        `encode` turns a text into ids, one per character, with `[CLS]` (id 2) first. Texts are
        NFKC-normalised first, which maps the full-width comma `，` to `,` (and full-width letters and
        digits to half-width ones): **look at** the decoded text, which has `,` where the original had `，`.
        """),
        code("""
        ids1 = tok.encode(texts[0], add_cls=True)
        print("ids:    ", ids1)
        print("decoded:", tok.decode(ids1))
        assert len(ids1) == len(texts[0]) + 1 and ids1[0] == tok.token_to_id("[CLS]")
        assert tok.decode(ids1) == normalize(texts[0]) != texts[0]
        """),
        md(r"""
        A model works on a whole batch at once, so `encode_batch` pads the texts into one rectangle
        `ids` (B, T) and returns `mask` (B, T), True at real tokens. **Look at** the end of row 1:
        sentence 2 is one character shorter, so it ends with a `[PAD]` id 0 and a False.
        """),
        code("""
        ids, mask = tok.encode_batch(texts, max_len=32)     # (B, T) int64, (B, T) bool
        print("ids", ids.shape)
        print(ids)
        print("mask")
        print(mask.astype(int))
        assert ids.shape == (2, 19) and (ids[~mask] == PAD_ID).all() and mask.sum(axis=1).tolist() == [19, 18]
        """),

        md(r"""
        ## 4. Embedding: ids become rows of a matrix

        An embedding layer owns a table $E \in \mathbb{R}^{V \times D}$, one learned row per token,
        and looks the rows up:

        $$y_{b,t} = E[\,\mathrm{ids}_{b,t}\,], \qquad (B, T) \to (B, T, D)$$

        `functional.embedding(ids, E)` is that line (`E[ids]`); `nn.Embedding` holds `E` (drawn from
        $\mathcal N(0, 1/D)$) and calls it. We use a tiny width, D = 8.
        """),
        code("""
        D = 8
        embed = nn.Embedding(tok.vocab_size, D, rng=np.random.default_rng(0))
        E = embed.E.data                                   # (V, D)
        x = embed(ids)                                     # (B, T) -> (B, T, D)
        y, _ = F.embedding(ids, E)
        print("E", E.shape, "  ids", ids.shape, "->  x", x.shape)
        assert np.array_equal(x, E[ids]) and np.array_equal(x, y)
        """),
        md(r"""
        A lookup is the same as multiplying a one-hot vector by the table:
        $E[\mathrm{id}] = \mathrm{onehot}(\mathrm{id})^\top E$. That is why an embedding is often
        described as "a linear layer on one-hot inputs", but the lookup never builds the V-wide
        one-hot vectors. **Look at** the shapes: the one-hot batch is (B, T, V), the product (B, T, D).
        """),
        code("""
        onehot = np.eye(tok.vocab_size, dtype=E.dtype)[ids]   # (B, T, V)
        print("one-hot", onehot.shape, "@ E", E.shape, "->", (onehot @ E).shape)
        assert np.allclose(onehot @ E, x)
        """),
        md(r"""
        The same character gets the same vector wherever it stands. 文 is character 7 of sentence 1
        and character 2 of sentence 2 (position 8 and 3 after `[CLS]`):
        """),
        code("""
        t1, t2 = texts[0].index("文") + 1, texts[1].index("文") + 1
        print(f"sentence 1, position {t1}:", x[0, t1])
        print(f"sentence 2, position {t2}:", x[1, t2])
        assert np.array_equal(x[0, t1], x[1, t2])
        """),
        md(r"""
        **The gradient.** In the backward pass every row of $E$ collects the gradients of all the
        places it was used:

        $$\frac{\partial L}{\partial E_v} = \sum_{(b,t)\,:\,\mathrm{ids}_{b,t} = v} \frac{\partial L}{\partial y_{b,t}}$$

        `functional.embedding_backward` does that with `np.add.at`, which adds repeated indices
        (`dE[ids] = dy` would keep only the last one). **Look at** the row of 文: it is the sum of the
        two upstream gradients at its two positions.
        """),
        code("""
        rng = np.random.default_rng(1)
        dy = rng.standard_normal(x.shape).astype(E.dtype)    # some upstream gradient dL/dy, (B, T, D)
        dE = F.embedding_backward(dy, (ids, E.shape))         # (V, D)
        wen = tok.token_to_id("文")
        print("dE[文]              ", dE[wen])
        print("dy[0, t1] + dy[1, t2]", dy[0, t1] + dy[1, t2])
        assert np.allclose(dE[wen], dy[0, t1] + dy[1, t2])
        """),
        md(r"""
        The same check for every row at once, against numerical derivatives (central differences in
        float64, `gradcheck.check_gradients`). **Look at** the verdict: the worst relative error is far
        below the tolerance of 1e-5. (The worst one sits in a row whose true gradient is exactly 0, an
        unused token, where the numerical estimate has about 1e-13 of rounding noise.)
        """),
        code("""
        E64 = E.astype(np.float64)
        result = check_gradients(
            forward=lambda E: F.embedding(ids, E)[0],
            backward=lambda dout, E: {"E": F.embedding_backward(dout, F.embedding(ids, E)[1])},
            inputs={"E": E64})
        print(result["E"])
        assert result["E"].ok
        """),

        md(r"""
        ## 5. The article's five toy vectors (errata W4)

        Section 4.3, step 1 (词嵌入 "word embedding") gives five 3-dimensional word vectors. They are
        made up (no model produced them), which is fine for following the arithmetic by hand. We use
        them exactly as printed; the package keeps them in `tokenizer.SEED_WORD_VECTORS`.

        ```
        有趣：[0.1, 0.2, 0.3]        interesting
        喜欢：[0.4, 0.5, 0.6]        like
        阅读：[0.7, 0.8, 0.9]        read
        文章：[1.0, 1.1, 1.2]        article
        无聊：[-1.0, -1.1, -1.2]     boring
        ```
        """),
        code("""
        words, E_toy = seed_word_embeddings()               # 5 words, (5, 3)
        table(E_toy, words, ["dim 0", "dim 1", "dim 2"], fmt="{:+.1f}")
        """),
        md(r"""
        Only these five words have vectors, so the article's example reads each sentence as the
        sequence of those words it contains. `seed_tokenize` finds them by greedy longest match
        ("maximum matching", the oldest Chinese segmentation method) and, with `drop_unknown=True`,
        drops every other character. **Look at** the order: in sentence 1, 文章 comes *before* 喜欢 and
        阅读; sentence 2 contains only 文章 and 无聊.
        """),
        code("""
        for text in texts:
            print(seed_tokenize(text), "->", seed_tokenize(text, drop_unknown=True))
        """),
        md(r"""
        Looking the words up is the same embedding lookup as in section 4, with the toy table:
        """),
        code("""
        word_ids = np.array([WordTokenizer(words).encode(texts[0])])    # (1, T) indices into the 5 words
        X1, _ = F.embedding(word_ids, E_toy)                              # (1, T, 3)
        sentence1_words = seed_tokenize(texts[0], drop_unknown=True)
        print("word ids:", word_ids)
        table(X1[0], sentence1_words, ["dim 0", "dim 1", "dim 2"], fmt="{:+.1f}")
        """),
        md(r"""
        What do the toy vectors say about the words? Cosine similarity
        $\cos(a, b) = a \cdot b / (\lVert a\rVert \lVert b\rVert)$ compares directions.
        **Look at** the table: the four words of sentence 1 all point almost the same way (cos ≥ 0.95),
        and 无聊 *boring* is exactly minus 文章 *article* (cos = −1). Learned embeddings put words that
        are used alike near each other; these hand-made ones only serve the arithmetic.
        """),
        code("""
        unit = E_toy / np.linalg.norm(E_toy, axis=1, keepdims=True)
        cos = unit @ unit.T                                 # (5, 5)
        table(cos, words, words, fmt="{:+.3f}")
        assert np.isclose(cos[words.index("无聊"), words.index("文章")], -1.0)
        assert cos[:4, :4].min() > 0.95
        """),

        md(r"""
        ## 6. The article's code: a one-hot of the position (errata C2)

        Here is section 5, step 3 of the article, line for line (only NumPy is involved in it):

        ```python
        positive_words = positive_data.split()
        negative_words = negative_data.split()
        embedding_matrix = np.random.rand(len(positive_words), 100)  # 假设词嵌入维度为100
        max_sequence_length = max(len(positive_words), len(negative_words))
        positive_sequence = np.zeros((max_sequence_length, 100))
        negative_sequence = np.zeros((max_sequence_length, 100))
        for i, word in enumerate(positive_words):
            index = positive_words.index(word)
            positive_sequence[i][index] = 1
        ...  # the same for negative_words
        ```

        `index` is where the word *first occurs in its own sentence*, so row `i` is a one-hot of the
        word's position (for a word seen earlier, of its first position). `embedding_matrix` is
        created and never used. Let us run it.
        """),
        code("""
        def article_preprocess(positive_data, negative_data):
            \"\"\"The article's section 5 step 3, unchanged except that it returns its two arrays.\"\"\"
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
        """),
        md(r"""
        With the article's `split()`, each sentence is one "word" at position 0. **Look at** the
        result: the positive and the negative review become *the same* input, a single 1 in column 0.
        No model can tell them apart.
        """),
        code("""
        pos_seq, neg_seq = article_preprocess(texts[0], texts[1])
        print("shapes:", pos_seq.shape, neg_seq.shape, "  non-zero columns:", np.flatnonzero(pos_seq), np.flatnonzero(neg_seq))
        assert np.array_equal(pos_seq, neg_seq)
        """),
        md(r"""
        Fixing only the tokenizer does not help. Put a space between the characters so that `split()`
        returns characters, and run the same code: each row is still a one-hot of the *position*.
        **Look at** the two checks: 是 (sentence 1) and 篇 (sentence 2), different characters at
        position 1, get the same vector; 文, the same character at positions 7 and 2, gets two
        different vectors. The vector says where a token is, never what it is.
        """),
        code("""
        pos_chars, neg_chars = article_preprocess(" ".join(texts[0]), " ".join(texts[1]))
        print("shapes:", pos_chars.shape, neg_chars.shape)
        print("是 / 篇 at position 1 -> same vector:     ", np.array_equal(pos_chars[1], neg_chars[1]))
        i1, i2 = texts[0].index("文"), texts[1].index("文")
        print("文 at positions", i1, "and", i2, "-> same vector:", np.array_equal(pos_chars[i1], neg_chars[i2]))
        assert texts[0][1] != texts[1][1] and np.array_equal(pos_chars[1], neg_chars[1])
        assert not np.array_equal(pos_chars[i1], neg_chars[i2])
        """),
        md(r"""
        The picture says the same. **Look at** the top row: the article's "embeddings" of the two
        sentences are the same diagonal (only the first 20 of the 100 columns are drawn; the rest are
        0), whatever the characters on the left. In the bottom row, our embeddings: a character has the
        same row of colours wherever it appears (这 文 章 , 我 。 are in both sentences, mostly at
        different positions), and different characters have different rows.
        """),
        code("""
        fig, axes = plt.subplots(2, 2, figsize=(9, 7.5), layout="constrained")
        tokens = [[tok.id_to_token(int(i)) for i in row[m]] for row, m in zip(ids, mask)]
        panels = [(pos_chars[:, :20], list(texts[0]), "article's code, sentence 1 (first 20 columns)"),
                  (neg_chars[:17, :20], list(texts[1]), "article's code, sentence 2 (first 20 columns)"),
                  (x[0], tokens[0], "E[ids], sentence 1"), (x[1, :18], tokens[1], "E[ids], sentence 2")]
        for ax, (image, labels, title) in zip(axes.flat, panels):
            ax.imshow(image, cmap="RdBu_r", vmin=-np.abs(image).max(), vmax=np.abs(image).max(), aspect="auto")
            ax.set_yticks(range(len(labels)), labels, fontsize=8)
            ax.set_xticks(range(0, image.shape[1], 5 if image.shape[1] > 10 else 1))
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("dimension")
        """),

        md(r"""
        ---
        > **What the article got wrong here**
        >
        > * **C1** — The code tokenises Chinese with `text.split()`, which returns the whole sentence as one
        >   token because Chinese has no spaces. We use characters (`CharTokenizer`), with fixed special
        >   tokens, padding and a mask.
        > * **C2** — The code's "embedding" is a one-hot of each word's position in its own sentence, and
        >   the `embedding_matrix` it builds is never used. With its `split()`, the positive and the negative
        >   review become the same input; even with characters, the vector says where a token is and
        >   nothing about which token it is. An embedding is a learned table looked up by token id.
        > * **W4** — The five 3-D vectors of section 4.3 are made up. That is fine for teaching, so we keep
        >   them exactly as printed and compute the true numbers with them in notebooks 2 and 3.
        >
        > Next, notebook 2: the position signal that the article gets wrong (E1, W1).
        """),
    ]


# =========================================================================== #
# 02 · Positional encoding
# =========================================================================== #

def notebook_02():
    return [
        md(r"""
        # 2 · Positional encoding

        Attention (notebook 3) compares every token with every other token, but on its own it has no
        idea of order. The Transformer therefore adds a position signal to every embedding. The article
        prints the formula for it wrongly (errata **E1**), and the numbers of its worked example for this
        step (**W1**) come from no formula at all.

        You will learn:

        1. why attention needs a position signal at all;
        2. the correct sinusoidal formula next to the function that implements it, and the article's;
        3. why the (sin, cos) *pair* matters: shifting the position by k is a fixed rotation, which holds to
           about 1e-15 for the correct encoding and fails by a wide margin for the article's;
        4. what the encoding really adds to the article's toy vectors, versus what the article printed;
        5. that an odd width D (like the toy vectors' D = 3) works.
        """),
        code(SETUP),
        code("""
        from numpy_transformer.worked_example import toy_attention, toy_embeddings, toy_words
        from numpy_transformer.tokenizer import SEED_WORD_VECTORS
        """),

        md(r"""
        ## 1. Why attention needs positions

        Take the article's words of sentence 1 (notebook 1, section 5) and shuffle them. **Look at**
        the check: the attention outputs are the same rows, shuffled the same way. Without a position
        signal, 有趣的文章 ("an interesting article") and 文章的有趣 ("the article's interest") are the
        same bag of words.
        """),
        code("""
        words = toy_words(0)                                  # ['有趣', '文章', '喜欢', '阅读']
        X = toy_embeddings(words)                             # (T, 3), the article's vectors
        perm = [2, 0, 3, 1]
        out, _ = toy_attention(X)
        out_shuffled, _ = toy_attention(X[perm])
        print("shuffled words:", [words[i] for i in perm])
        print("outputs of the shuffled input == shuffled outputs:", np.allclose(out_shuffled, out[perm]))
        assert np.allclose(out_shuffled, out[perm])
        """),

        md(r"""
        ## 2. The correct formula (Vaswani et al. 2017, §3.5)

        $$PE_{pos,\,2i} = \sin\!\left(\frac{pos}{10000^{2i/D}}\right), \qquad
          PE_{pos,\,2i+1} = \cos\!\left(\frac{pos}{10000^{2i/D}}\right)$$

        `pos` = 0, 1, …, T−1 is the position; `i` = 0, 1, … counts **pairs of dimensions**. Pair `i`
        is a sine and a cosine of the same angle, turning at frequency
        $\omega_i = 10000^{-2i/D}$ radians per position: from 1 (pair 0) down to almost 1/10000.

        `functional.sinusoidal_positional_encoding(T, D)` implements it without loops. The check
        below compares it with the formula typed in literally, one entry at a time.
        """),
        code("""
        def pe_by_the_formula(T, D):
            \"\"\"The paper's formula, one entry at a time (slow, obviously right).\"\"\"
            pe = np.zeros((T, D))
            for pos in range(T):
                for j in range(D):
                    i = j // 2                                   # the pair that column j belongs to
                    angle = pos / 10000 ** (2 * i / D)
                    pe[pos, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
            return pe

        T, D = 64, 16
        PE = F.sinusoidal_positional_encoding(T, D, dtype=np.float64)     # (T, D)
        print("largest difference from the literal formula:", np.abs(PE - pe_by_the_formula(T, D)).max())
        assert np.allclose(PE, pe_by_the_formula(T, D), atol=1e-12)
        table(PE[:5, :8], [f"pos {p}" for p in range(5)], [f"dim {j}" for j in range(8)])
        """),

        md(r"""
        ## 3. The article's formula (errata E1)

        Sections 1.3, 3.2 and 4.1 all print:

        $$\text{PositionalEncoding}(pos, d_{model}) = \sin\!\left(\frac{pos}{10000^{2i/d_{model}}}\right) + \cos\!\left(\frac{pos}{10000^{2i/d_{model}}}\right)$$

        > 其中，pos 表示位置索引，d_model 表示模型维度，i 表示词索引。
        >
        > "where pos is the position index, d_model the model dimension, and **i is the word index**."

        Two mistakes: the sine and the cosine are *added* into one number instead of filling two
        dimensions, and `i` is called the word index, although the word's index is already `pos`
        (read literally, the formula gives one number per word, not a D-vector).
        `functional.seed_positional_encoding` implements the sum with the kindest reading of `i`, the
        pair index, so the frequencies match the real encoding. **Look at** the check: columns 2i and
        2i+1 come out identical, so half of the width carries nothing new.
        """),
        code("""
        PE_seed = F.seed_positional_encoding(T, D, dtype=np.float64)      # (T, D)
        by_formula = np.array([[np.sin(pos / 10000 ** (2 * (j // 2) / D)) + np.cos(pos / 10000 ** (2 * (j // 2) / D))
                                for j in range(D)] for pos in range(T)])
        assert np.allclose(PE_seed, by_formula, atol=1e-12)
        print("columns 2i and 2i+1 identical:", np.array_equal(PE_seed[:, 0::2], PE_seed[:, 1::2]))
        assert np.array_equal(PE_seed[:, 0::2], PE_seed[:, 1::2])
        table(PE_seed[:5, :8], [f"pos {p}" for p in range(5)], [f"dim {j}" for j in range(8)])
        """),

        md(r"""
        ## 4. The two side by side

        `viz.pe_comparison` draws both with one colour scale (64 positions, 64 dimensions). **Look at**
        the left panel: neighbouring columns differ (sine, then cosine), fast stripes on the left,
        slow ones on the right. On the right panel columns come in identical pairs, and the colours go
        further (the sum reaches ±√2).
        """),
        code("""
        fig = viz.pe_comparison(F.sinusoidal_positional_encoding(64, 64), F.seed_positional_encoding(64, 64))
        """),

        md(r"""
        ## 5. sin + cos is just a shifted sine

        $$\sin\theta + \cos\theta = \sqrt2\,\sin\!\left(\theta + \frac{\pi}{4}\right)$$

        So the article's encoding keeps, for each frequency, one shifted sine: one number where the
        paper keeps two. **Look at** the check and the largest value, √2 ≈ 1.414.
        """),
        code("""
        theta = np.linspace(0, 20, 1001)
        assert np.allclose(np.sin(theta) + np.cos(theta), np.sqrt(2) * np.sin(theta + np.pi / 4))
        print("largest value of the article's PE:", F.seed_positional_encoding(10000, 64, dtype=np.float64).max(),
              "  sqrt(2) =", np.sqrt(2))
        """),

        md(r"""
        ## 6. The rotation property: why the (sin, cos) pair

        By the angle-addition formulas, one pair at frequency ω moves from position p to p + k by a
        rotation that depends on k only:

        $$\begin{pmatrix}\sin\omega(p+k)\\ \cos\omega(p+k)\end{pmatrix}
          = \begin{pmatrix}\cos\omega k & \sin\omega k\\ -\sin\omega k & \cos\omega k\end{pmatrix}
            \begin{pmatrix}\sin\omega p\\ \cos\omega p\end{pmatrix}$$

        Stack one such 2×2 block per pair into a block-diagonal matrix $M_k$ and
        $PE[p + k] = M_k\,PE[p]$ **for every p**. A linear layer can therefore learn "the token k
        places back" once, for all positions; that is the reason the paper gives for choosing
        sinusoids. **Look at** the error: rounding level, about 1e-15.
        """),
        code("""
        def shift_matrix(k, D):
            \"\"\"M_k (D, D): one 2x2 rotation by omega_i * k per (sin, cos) pair, so PE[p + k] = M_k @ PE[p].\"\"\"
            M = np.zeros((D, D))
            for i in range(D // 2):
                a = k / 10000 ** (2 * i / D)                       # omega_i * k
                M[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]
            return M

        for k in (1, 2, 5, 20):
            error = np.abs(PE[k:] - PE[:-k] @ shift_matrix(k, D).T).max()    # rows are positions: PE @ M^T
            print(f"k = {k:2d}: max |PE[p+k] - M_k PE[p]| over all p = {error:.1e}")
            assert error < 1e-12
        """),
        md(r"""
        Is there *any* fixed matrix that shifts the article's encoding? Give it the best chance: fit the
        best linear map $A$ with $PE[p+k] \approx A\,PE[p]$ over all 64 positions by least squares
        (`np.linalg.lstsq`), and measure what is left. The same fit on the correct encoding is the
        control. **Look at** the residuals: about 1e-15 for the correct encoding, above 1 for the
        article's, whose values only range over ±1.41.
        """),
        code("""
        rows = []
        for k in (1, 3):
            for name, P in (("correct", PE), ("article's", PE_seed)):
                A, *_ = np.linalg.lstsq(P[:-k], P[k:], rcond=None)        # P[:-k] @ A ~ P[k:]
                rows.append([name, k, np.abs(P[:-k] @ A - P[k:]).max()])
        table([r[1:] for r in rows], [r[0] for r in rows], ["k", "largest residual"], fmt="{:.2g}")
        assert rows[0][2] < 1e-10 and rows[2][2] < 1e-10
        assert rows[1][2] > 0.5 and rows[3][2] > 0.5
        """),
        md(r"""
        Why it must fail: per frequency the article keeps $s = \sqrt2\sin(\theta + \pi/4)$. The next
        value $s' = \sqrt2\sin(\theta + \omega k + \pi/4)$ also depends on $\cos\theta$, which was thrown
        away: the same $s$ comes from a rising and a falling point of the wave, which move to different
        $s'$. **Look at** one pair of columns (2, 3) over 64 positions: the correct encoding walks round
        a circle, the same angle at every step; the article's points sit on the diagonal (the two
        columns are equal) and run back and forth along it. From the same point the next step sometimes
        goes up and sometimes down, which no fixed matrix can do.
        """),
        code("""
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), layout="constrained")
        for ax, P, title in ((axes[0], PE, "correct: (sin, cos) pair 1"), (axes[1], PE_seed, "article's: columns 2 and 3")):
            ax.plot(P[:, 2], P[:, 3], "o-", ms=3, lw=0.6)
            ax.plot(P[0, 2], P[0, 3], "o", ms=7, color="tab:red", label="position 0")
            ax.plot(P[1, 2], P[1, 3], "s", ms=7, color="tab:orange", label="position 1")
            ax.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), aspect="equal", title=title, xlabel="column 2", ylabel="column 3")
            ax.grid(alpha=0.3)
        axes[1].legend(loc="lower right", fontsize=8);
        """),
        md(r"""
        A consequence you can see in attention scores: with the correct encoding the dot product
        $PE[p] \cdot PE[p+k] = \sum_i \cos(\omega_i k)$ depends on the offset k only, not on where you
        are in the sentence. **Look at** the spread over p: zero for the correct encoding, large for
        the article's.
        """),
        code("""
        k = 3
        for name, P in (("correct", PE), ("article's", PE_seed)):
            dots = (P[:-k] * P[k:]).sum(axis=1)                        # PE[p] . PE[p+k] for every p
            print(f"{name:10s} PE[p].PE[p+{k}]: min {dots.min():+.3f}, max {dots.max():+.3f}")
        dots = (PE[:-k] * PE[k:]).sum(axis=1)
        assert np.allclose(dots, np.cos(k / 10000 ** (2 * np.arange(D // 2) / D)).sum())
        """),

        md(r"""
        ## 7. What PE adds to the article's toy vectors (errata W1)

        The toy vectors have D = 3, so the encoding has one (sin, cos) pair at ω = 1 and a lone sine at
        $\omega = 10000^{-2/3} \approx 0.0022$, which barely moves over four positions. The models scale
        the embedding by $\sqrt D$ before adding PE (notebook 5); the article does not, and neither do we
        here, so that its numbers stay recognisable. **Look at** the last three columns: the true
        input of attention for sentence 1.
        """),
        code("""
        PE3 = F.sinusoidal_positional_encoding(len(words), 3, dtype=np.float64)   # (T, 3)
        both = np.hstack([X, PE3, X + PE3])
        table(both, [f"{p} {w}" for p, w in enumerate(words)],
              ["x0", "x1", "x2", "PE0 = sin", "PE1 = cos", "PE2 = sin", "x0+PE0", "x1+PE1", "x2+PE2"])
        """),
        md(r"""
        The article's section 4.3 step 2 (位置编码 "positional encoding") prints instead:

        ```
        文本1：[0.1, 0.2, 0.3] + [0.7, 0.8, 0.9]
        有趣：[0.4, 0.5, 0.6] + [1.0, 1.1, 1.2]
        喜欢：[0.7, 0.8, 0.9] + [1.0, 1.1, 1.2]
        阅读：[0.1, 0.2, 0.3] + [1.0, 1.1, 1.2]
        文章：[0.4, 0.5, 0.6] + [1.0, 1.1, 1.2]
        无聊：[-1.0, -1.1, -1.2] + [1.0, 1.1, 1.2]
        ```

        Whose vectors are these? **Look at** the table: every number is one of the toy *word* vectors.
        The "encoding" added to five rows is 文章's vector; the row labelled 有趣 starts with 喜欢's
        vector, 阅读's with 有趣's; and 无聊 + "PE" is exactly zero.
        """),
        code("""
        printed = [("文本1", (0.1, 0.2, 0.3), (0.7, 0.8, 0.9)),
                   ("有趣", (0.4, 0.5, 0.6), (1.0, 1.1, 1.2)),
                   ("喜欢", (0.7, 0.8, 0.9), (1.0, 1.1, 1.2)),
                   ("阅读", (0.1, 0.2, 0.3), (1.0, 1.1, 1.2)),
                   ("文章", (0.4, 0.5, 0.6), (1.0, 1.1, 1.2)),
                   ("无聊", (-1.0, -1.1, -1.2), (1.0, 1.1, 1.2))]

        def whose(v):
            return next((w for w, u in SEED_WORD_VECTORS.items() if np.allclose(u, v)), "(none)")

        def vec(v):
            return "[" + ", ".join(f"{c:.1f}" for c in v) + "]"

        table([[vec(a), whose(a), vec(b), whose(b), vec(np.add(a, b))] for _, a, b in printed],
              [label for label, _, _ in printed],
              ["first vector", "= vector of", 'added "PE"', "= vector of", "sum"])
        assert all(whose(b) == "文章" for _, _, b in printed[1:])
        assert np.allclose(np.add(printed[-1][1], printed[-1][2]), 0)
        """),
        md(r"""
        No positional encoding can produce `[1.0, 1.1, 1.2]`: sines and cosines never exceed 1, and the
        article's own sin + cos formula gives equal values in dimensions 0 and 1 (section 3). And a
        position signal cannot be the same for every position, or it would carry no position at all.
        """),
        code("""
        added = np.array([b for _, _, b in printed[1:]])
        assert np.abs(added).max() > 1                       # impossible for sin / cos
        assert not np.isclose(added[0, 0], added[0, 1])      # impossible for the article's sin + cos (columns 0 = 1)
        assert (added == added[0]).all()                     # the same "position signal" at every position
        print("the article's added vectors exceed 1, have different columns 0 and 1, and are all equal: no PE")
        """),

        md(r"""
        ## 8. Odd D works

        With an odd width there are ⌈D/2⌉ sines and ⌊D/2⌋ cosines: the last column is a sine with no
        cosine partner (D = 3 above). The pairs still rotate exactly; only the lone last sine cannot be
        shifted exactly by a linear map, because its cosine partner is missing (one reason real models
        use an even D). **Look at** the checks for D = 5.
        """),
        code("""
        P5 = F.sinusoidal_positional_encoding(64, 5, dtype=np.float64)    # (64, 5)
        print("shape", P5.shape)
        assert np.allclose(P5[:, 4], np.sin(np.arange(64) / 10000 ** (4 / 5)))   # the lone last sine
        M = shift_matrix(3, 5)[:4, :4]                                           # the two full pairs
        error = np.abs(P5[3:, :4] - P5[:-3, :4] @ M.T).max()
        print(f"pairs still rotate: max error {error:.1e}")
        assert error < 1e-12
        """),

        md(r"""
        ---
        > **What the article got wrong here**
        >
        > * **E1** — The formula adds sin and cos into one number and calls `i` the word index. Correct:
        >   sine in the even dimensions, cosine in the odd ones, with `i` counting pairs of dimensions
        >   (Vaswani et al. 2017, §3.5). The sum equals $\sqrt2\sin(\theta + \pi/4)$: half the columns are
        >   duplicates, the range grows to ±√2, no fixed linear map takes position p to p + k (residual
        >   above 1 instead of 1e-15), and dot products between positions depend on where they are, not
        >   only on their distance.
        > * **W1** — The numbers printed for the encoding step add other *words'* vectors: the "encoding" is
        >   文章's vector, and most rows start with the vector of a word other than their label. No formula
        >   produces them; section 7 shows the true numbers.
        > * **C3** — The article's code has no positional encoding at all; its only position information
        >   is the one-hot "embedding" of notebook 1, which in turn has no word information.
        >
        > Next, notebook 3: attention on these vectors.
        """),
    ]


# =========================================================================== #
# 03 · Scaled dot-product attention
# =========================================================================== #

def notebook_03():
    return [
        md(r"""
        # 3 · Scaled dot-product attention

        Attention is how a Transformer lets each token gather information from the others: every token
        asks a question (its *query*), every token offers a label (its *key*) and a content (its
        *value*), and each token's output is an average of the values, weighted by how well its query
        matches each key. The article states the equation correctly, but the numbers it prints for this
        step (errata **W2**) are not attention weights.

        You will learn:

        1. the equation, next to `functional.scaled_dot_product_attention`;
        2. every step for the article's sentence 1 with its own toy vectors + PE: scores, scaling,
           softmax, weights, output;
        3. why the weights are a T×T matrix whose rows sum to 1, unlike the article's;
        4. why the scores are divided by $\sqrt{d_k}$ (the softmax saturates without it, and its gradient vanishes);
        5. padding and causal masks, and what happens to a query that may attend to nothing.
        """),
        code(SETUP),
        code("""
        from numpy_transformer.worked_example import SEED_PRINTED_ATTENTION, toy_attention, toy_embeddings, toy_words
        """),

        md(r"""
        ## 1. The equation

        $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right) V$$

        | symbol | shape | meaning |
        |---|---|---|
        | $Q$ | (Tq, d_k) | one query per token that asks |
        | $K$ | (Tk, d_k) | one key per token that can be looked at |
        | $V$ | (Tk, d_v) | one value per token: what is passed on |
        | $M$ | (Tq, Tk) | 0 where attending is allowed, $-\infty$ where masked (section 6) |
        | weights | (Tq, Tk) | row i: how query i spreads its attention; each row sums to 1 |
        | output | (Tq, d_v) | row i: the weighted average of the values for query i |

        The article prints this in sections 1.3, 3.2 and 4.1, correctly. In our code it is
        `functional.scaled_dot_product_attention(q, k, v, mask)`, which returns the output, the weights
        (for plotting) and a cache for the backward pass.

        ## 2. The input: the article's vectors for sentence 1, plus positions

        From notebooks 1 and 2: the four toy words of sentence 1, their vectors exactly as printed,
        plus the sinusoidal encoding for D = 3.
        """),
        code("""
        words = toy_words(0)                                           # ['有趣', '文章', '喜欢', '阅读']
        T = len(words)
        X = toy_embeddings(words) + F.sinusoidal_positional_encoding(T, 3, dtype=np.float64)   # (T, 3)
        table(X, words, ["dim 0", "dim 1", "dim 2"])
        """),
        md(r"""
        Where do $Q$, $K$ and $V$ come from? In a real layer, from three learned matrices:
        $Q = XW^Q$, $K = XW^K$, $V = XW^V$ (notebook 4). The article's example has no such matrices,
        so, as `worked_example.toy_attention` does, we take $Q = K = V = X$: then every number below
        follows from the article's own vectors and the formula alone.
        """),
        code("""
        Q = K = V = X
        d_k = Q.shape[-1]
        """),

        md(r"""
        ## 3. Step by step

        **3a. Scores** $S = QK^\top$: entry (i, j) is the dot product of word i's query with word j's
        key, a similarity. **Look at** the 文章 column: 文章 has the longest vector (plus its position),
        so every word's query matches it most.
        """),
        code("""
        scores = Q @ K.T                                   # (T, 3) @ (3, T) -> (T, T)
        table(scores, [f"q: {w}" for w in words], [f"k: {w}" for w in words])
        """),
        md(r"""
        **3b. Scaling** by $1/\sqrt{d_k} = 1/\sqrt3$ (section 5 explains why).
        """),
        code("""
        scaled = scores / np.sqrt(d_k)                     # (T, T)
        table(scaled, [f"q: {w}" for w in words], [f"k: {w}" for w in words])
        """),
        md(r"""
        **3c. Softmax** over each row turns scores into weights:

        $$w_{ij} = \frac{e^{s_{ij}}}{\sum_{j'} e^{s_{ij'}}}$$

        `functional.softmax` subtracts each row's maximum first (it cancels, and keeps `exp` from
        overflowing). **Look at** the last column: every row sums to 1. There is one weight per *token*,
        four per row.
        """),
        code("""
        weights, _ = F.softmax(scaled, axis=-1)            # (T, T)
        table(np.hstack([weights, weights.sum(axis=1, keepdims=True)]),
              [f"q: {w}" for w in words], [f"k: {w}" for w in words] + ["row sum"])
        assert np.allclose(weights.sum(axis=1), 1.0) and (weights > 0).all()
        """),
        md(r"""
        **3d. Output** $= WV$: each output row is a weighted average of the value rows. **Look at**
        the 文章 row: with 84% of its weight on itself, its output stays close to its own vector.
        """),
        code("""
        out = weights @ V                                  # (T, T) @ (T, 3) -> (T, 3)
        table(out, words, ["dim 0", "dim 1", "dim 2"])
        """),
        md(r"""
        **3e. The library does the same.** One call to `functional.scaled_dot_product_attention`, and
        `worked_example.toy_attention` (which the CLI's `demo` prints), give the same numbers:
        """),
        code("""
        out_f, weights_f, _ = F.scaled_dot_product_attention(Q, K, V)
        out_toy, weights_toy = toy_attention(X)
        assert np.allclose(out_f, out) and np.allclose(weights_f, weights)
        assert np.allclose(out_toy, out) and np.allclose(weights_toy, weights)
        print("the hand computation, functional.scaled_dot_product_attention and worked_example.toy_attention agree")
        """),
        md(r"""
        The weights as a picture (`viz.attention_map`): row = the word that attends, column = the
        word attended to. **Look at** the bright 文章 column.
        """),
        code("""
        fig = viz.attention_map(weights, words, title="sentence 1, Q = K = V = toy vectors + PE")
        """),

        md(r"""
        ## 4. The article's "attention weights" (errata W2)

        Section 4.3 step 3 (自注意力机制 "self-attention") prints:

        ```
        有趣：[0.8, 0.6, 0.5]
        喜欢：[0.6, 0.8, 0.5]
        阅读：[0.5, 0.6, 0.8]
        文章：[0.6, 0.6, 0.5]
        无聊：[0.5, 0.5, 0.5]
        ```

        **Look at** the row sums and the lengths next to ours.
        """),
        code("""
        printed = np.array(list(SEED_PRINTED_ATTENTION.values()))        # (5, 3)
        table(np.hstack([printed, printed.sum(axis=1, keepdims=True)]), list(SEED_PRINTED_ATTENTION),
              ["w0", "w1", "w2", "row sum"], fmt="{:.1f}")
        print("article's weights:", printed.shape, "  true weights for sentence 1:", weights.shape)
        assert not np.allclose(printed.sum(axis=1), 1.0)
        """),
        md(r"""
        Three things are wrong with them:

        * **3 numbers per word**: that is the embedding size, not the number of tokens. A weight says
          how much word i draws on word j, so there is one per token: a T×T matrix.
        * **The rows do not sum to 1** (1.5 to 1.9), so they are not the output of a softmax.
        * **A row for 无聊**, which is not in sentence 1: the two sentences are processed separately
          and never attend to each other (in a batch, each sentence has its own T×T matrix).

        ## 5. Why divide by $\sqrt{d_k}$

        If the components of $q$ and $k$ are independent with mean 0 and variance 1, the score
        $q \cdot k = \sum_{i=1}^{d_k} q_i k_i$ has variance $d_k$: standard deviation 8 for $d_k = 64$.
        A softmax over numbers that far apart is nearly one-hot, and its Jacobian
        $\partial w / \partial s = \mathrm{diag}(w) - ww^\top$ is then nearly zero: the gradient that
        reaches the scores vanishes and the queries and keys stop learning. Dividing by $\sqrt{d_k}$
        brings the variance back to 1 for every width (Vaswani et al. 2017, §3.2.1).

        The experiment: 1000 random queries, each against T = 16 random keys, for widths 1 to 256,
        with and without the scaling. For each we measure the scores' variance, the largest weight in a
        row (median over queries), the entropy of a row (log 16 ≈ 2.77 for uniform weights, 0 for
        one-hot) and how often the softmax Jacobian (computed with `functional.softmax_backward`) is
        nearly zero: its size is about 0.3 for a well-spread row, and below 0.01 the row barely learns.
        """),
        code("""
        def softmax_statistics(d_k, scale, n=1000, T=16, seed=0):
            \"\"\"Statistics of softmax(q.k) over T random keys, for n random queries of width d_k.\"\"\"
            rng = np.random.default_rng(seed)
            q = rng.standard_normal((n, 1, d_k))                      # n queries
            k = rng.standard_normal((n, T, d_k))                      # T keys for each query
            scores = (q @ k.swapaxes(-1, -2))[:, 0]                   # (n, 1, d_k) @ (n, d_k, T) -> (n, T)
            if scale:
                scores = scores / np.sqrt(d_k)
            w, _ = F.softmax(scores)                                  # (n, T)
            entropy = -(w * np.log(np.maximum(w, 1e-300))).sum(axis=-1)
            # The Jacobian dw/ds of every row: softmax_backward applied to each unit upstream gradient.
            jacobian = F.softmax_backward(np.eye(T)[None], (w[:, None, :], -1))    # (n, T, T)
            return {"score variance": scores.var(), "median largest weight": np.median(w.max(axis=-1)),
                    "mean entropy": entropy.mean(),
                    "share of rows with |Jacobian| < 0.01": np.mean(np.linalg.norm(jacobian, axis=(1, 2)) < 0.01)}

        widths = [1, 2, 4, 8, 16, 32, 64, 128, 256]
        stats = {scale: [softmax_statistics(d, scale) for d in widths] for scale in (False, True)}
        names = list(stats[True][0])
        i64 = widths.index(64)
        table([[stats[False][i64][m] for m in names], [stats[True][i64][m] for m in names]],
              ["d_k = 64, unscaled: softmax(q·k)", "d_k = 64, scaled: softmax(q·k / 8)"], names)
        """),
        md(r"""
        **Look at** the table: without scaling, at $d_k = 64$, the typical row puts over 90% of its
        weight on one key, the entropy has collapsed, and more than a quarter of the rows pass back almost
        no gradient; with scaling, none do, and all three numbers stay where they are at $d_k = 1$. The plot
        shows the whole range of widths.
        """),
        code("""
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
        for ax, name in zip(axes, names[1:]):
            for scale, style in ((False, "o-"), (True, "s--")):
                ax.plot(widths, [s[name] for s in stats[scale]], style, label="q·k / √d_k" if scale else "q·k (unscaled)")
            ax.set(xscale="log", xlabel="d_k", title=name)
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.grid(alpha=0.3)
        axes[1].axhline(np.log(16), color="grey", lw=0.8, ls=":", label="uniform weights: log 16")
        axes[0].legend(fontsize=9)
        axes[1].legend(fontsize=9);
        """),
        code("""
        unscaled, scaled64 = stats[False][i64], stats[True][i64]
        assert unscaled["median largest weight"] > 0.9 and scaled64["median largest weight"] < 0.5
        assert scaled64["mean entropy"] > 2.0 > 1.0 > unscaled["mean entropy"]
        assert unscaled["share of rows with |Jacobian| < 0.01"] > 0.2 and all(
            s["share of rows with |Jacobian| < 0.01"] == 0 for s in stats[True])
        assert all(abs(s["score variance"] - 1) < 0.1 for s in stats[True])
        """),

        md(r"""
        ## 6. Masks

        A mask says which keys each query may look at: boolean, **True = may attend** (the package's
        convention everywhere). Masked scores are replaced by $-10^9$ before the softmax, so their weight
        is 0. Two kinds:

        * a **padding mask** hides the `[PAD]` tokens that fill a batch up to its longest text, as keys,
          from every query;
        * a **causal mask** lets query t see keys 0…t only, so a text generator cannot peek at the
          token it must predict (errata E6).

        They combine with `&`. A batch of the two sentences in toy words: sentence 2 has only 文章 and
        无聊, so it is padded with two `[PAD]` rows (zeros) to length 4.
        """),
        code("""
        words2 = toy_words(1)                                              # ['文章', '无聊']
        X2 = toy_embeddings(words2) + F.sinusoidal_positional_encoding(len(words2), 3, dtype=np.float64)
        batch = np.zeros((2, T, 3))                                        # (B, T, D)
        batch[0], batch[1, :len(words2)] = X, X2
        valid = np.array([[True] * T, [True] * len(words2) + [False] * (T - len(words2))])   # (B, T)
        tokens2 = words2 + ["[PAD]"] * (T - len(words2))
        padding = F.padding_mask(valid)                                    # (B, 1, 1, T): hides padded keys
        causal = F.causal_mask(T)                                          # (T, T): lower triangle
        print("padding mask", padding.shape, "  causal mask", causal.shape, "  combined", (causal & padding).shape)
        """),
        md(r"""
        `viz.mask_image` draws them for sentence 2 (blue = may attend). **Look at** the columns of the
        two `[PAD]` keys in the padding mask: grey in every row. The causal mask is the lower triangle;
        the combination is both.
        """),
        code("""
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
        for ax, m, title in ((axes[0], np.broadcast_to(padding[1, 0], (T, T)), "padding"),
                             (axes[1], causal, "causal"), (axes[2], (causal & padding)[1, 0], "causal & padding")):
            viz.mask_image(np.array(m), tokens2, title=title, ax=ax)
        for ax in axes[:2]:
            ax.get_legend().remove()
        """),
        md(r"""
        Attention with the padding mask. The inputs get a head axis, (B, 1, T, D), so that the
        (B, 1, 1, T) mask broadcasts over it. **Look at** the weights of sentence 2: zero in the `[PAD]`
        columns, and the rows of its two real words are exactly what sentence 2 gives alone, without
        any padding. (The `[PAD]` *queries* still attend to the real words; their outputs are never used:
        pooling and the loss skip them, notebook 5.)
        """),
        code("""
        q = batch[:, None]                                                 # (B, 1, T, D): one head
        out_b, w_b, _ = F.scaled_dot_product_attention(q, q, q, padding)   # (B, 1, T, D), (B, 1, T, T)
        table(w_b[1, 0], [f"q: {w}" for w in tokens2], [f"k: {w}" for w in tokens2])
        out_alone, w_alone = toy_attention(X2)
        assert (w_b[1, 0][:, ~valid[1]] == 0).all()
        assert np.allclose(w_b[1, 0, :2, :2], w_alone) and np.allclose(out_b[1, 0, :2], out_alone)
        assert np.allclose(out_b[0, 0], out)                                # sentence 1 is not padded: unchanged
        """),
        md(r"""
        Causal attention on sentence 1. **Look at** the upper triangle: all zeros; the first word can
        only attend to itself (weight 1), and every row still sums to 1.
        """),
        code("""
        out_c, w_c, _ = F.scaled_dot_product_attention(X, X, X, causal)
        table(w_c, [f"q: {w}" for w in words], [f"k: {w}" for w in words])
        assert np.allclose(np.triu(w_c, k=1), 0) and np.allclose(w_c.sum(axis=1), 1) and w_c[0, 0] == 1
        """),

        md(r"""
        ## 7. A query with nothing to attend to

        Can a whole row be masked? Yes: pad sentence 2 on the *left* and use a causal mask. Positions 0
        and 1 are `[PAD]`, and may only look at keys ≤ themselves, which are all padding. What should
        their weights be? With $-10^9$ alone the softmax of an all-equal row is uniform, $1/T$ each: the
        padding query would average tokens it is not allowed to see. With $-\infty$ it is worse,
        $-\infty - (-\infty)$ = NaN, and one NaN spreads through everything after it. Our function sets
        such rows to zero weights and a zero output (design rule: "a query row with nothing to attend
        to must give zeros, never NaN"). **Look at** the first two rows.
        """),
        code("""
        left = np.zeros((T, 3))                                            # [PAD] [PAD] 文章 无聊
        left[2:] = toy_embeddings(words2) + F.sinusoidal_positional_encoding(T, 3, dtype=np.float64)[2:]
        valid_left = np.array([False, False, True, True])
        mask = causal & valid_left[None, :]                                # (T, T); rows 0 and 1 are all False
        out_l, w_l, _ = F.scaled_dot_product_attention(left, left, left, mask)
        names_left = ["[PAD]", "[PAD]"] + words2
        table(np.hstack([w_l, out_l]), [f"q: {w}" for w in names_left],
              [f"k: {w}" for w in names_left] + ["out 0", "out 1", "out 2"])
        assert (w_l[:2] == 0).all() and (out_l[:2] == 0).all() and np.isfinite(out_l).all()
        """),
        md(r"""
        The same rows computed naively, with $-\infty$ written into the masked scores:
        """),
        code("""
        naive = np.where(mask, left @ left.T / np.sqrt(3), -np.inf)
        with np.errstate(invalid="ignore"):                               # NumPy would warn about inf - inf
            e = np.exp(naive - naive.max(axis=-1, keepdims=True))
            naive_weights = e / e.sum(axis=-1, keepdims=True)
        print(naive_weights[:2])
        assert np.isnan(naive_weights[:2]).all()
        """),

        md(r"""
        ---
        > **What the article got wrong here**
        >
        > * **W2** — The printed "attention weights" have 3 entries per word (the embedding size), rows that
        >   sum to 1.5–1.9, and a row for 无聊, which is not in sentence 1. Attention weights are a T×T
        >   matrix per sentence whose rows sum to 1; section 3 computes them from the article's own vectors.
        > * The equation itself is right (sections 1.3, 3.2, 4.1), including the $\sqrt{d_k}$, which the
        >   article names but never explains; section 5 shows what it prevents.
        > * **Masks** are never mentioned. The article pads its sequences (section 5, 序列填充 "sequence
        >   padding") but never hides the padding from attention, and its text-generation steps (appendix,
        >   question 2) never mention the causal mask that a generator needs (errata **E6**).
        >
        > Next, notebook 4: several heads at once, with learned projections.
        """),
    ]


# =========================================================================== #
# 04 · Multi-head attention
# =========================================================================== #

def notebook_04():
    return [
        md(r"""
        # 4 · Multi-head attention

        One attention head gives each token *one* weighted average of the others, so different kinds of
        relation (the next character, the object of 喜欢, the words that carry the sentiment) compete
        for the same weights. Multi-head attention runs H smaller heads side by side, each with its own
        learned projections into its own $D_h = D/H$ dimensions, and mixes their outputs with one more
        matrix, $W^O$.

        You will learn:

        1. the equations, and how one D×D matrix holds the projections of all heads;
        2. splitting into heads with `functional.split_heads`, shape by shape;
        3. `nn.MultiHeadAttention` computed by hand, step by step, and checked against the module;
        4. what the per-head attention maps look like (for a freshly initialised model);
        5. the output projection $W^O$ as a sum over heads;
        6. fused versus separate Q, K, V projections, and the parameter count, $4D^2 + 4D$ for any H.
        """),
        code(SETUP),
        code("""
        from numpy_transformer.data import SEED_SENTENCES
        from numpy_transformer.tokenizer import CharTokenizer
        """),

        md(r"""
        ## 1. The equations (Vaswani et al. 2017, §3.2.2)

        $$\mathrm{MultiHead}(X) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_H)\,W^O + b^O,
          \qquad \mathrm{head}_h = \mathrm{Attention}(XW^Q_h,\ XW^K_h,\ XW^V_h)$$

        with $W^Q_h, W^K_h, W^V_h \in \mathbb{R}^{D \times D_h}$, $D_h = D/H$, and
        $W^O \in \mathbb{R}^{D \times D}$. In code the H matrices $W^Q_h$ sit side by side as one D×D
        matrix $W^Q = [W^Q_1 | \dots | W^Q_H]$, so *one* matrix product computes the queries of every
        head, and a reshape cuts them apart. (Biases $b^Q, b^K, b^V$ are added as usual.)

        ## 2. The input: sentence 1, character by character

        The characters of sentence 1 with `[CLS]` (T = 19), embedded with D = 16 and scaled by
        $\sqrt D$ as the models do, plus the positional encoding. H = 4 heads of $D_h = 4$.
        """),
        code("""
        texts = [text for text, _ in SEED_SENTENCES]
        tok = CharTokenizer.build(texts)
        ids, _ = tok.encode_batch(texts[:1], max_len=32)                # (1, T)
        tokens = [tok.id_to_token(int(i)) for i in ids[0]]
        B, T = ids.shape
        D, H = 16, 4
        Dh = D // H
        embed = nn.Embedding(tok.vocab_size, D, rng=np.random.default_rng(0))
        x = embed(ids) * D ** 0.5 + F.sinusoidal_positional_encoding(T, D)     # (B, T, D); a Python float keeps float32
        print("tokens:", " ".join(tokens))
        print("x", x.shape, x.dtype)
        """),

        md(r"""
        ## 3. Splitting into heads

        `functional.split_heads` reshapes (B, T, D) to (B, T, H, $D_h$) and moves the head axis forward:
        (B, H, T, $D_h$). Head h gets dimensions $hD_h, \dots, (h+1)D_h - 1$ of every token.
        `merge_heads` undoes it. **Look at** the shapes; the checks confirm which slice each head gets.
        """),
        code("""
        xs = F.split_heads(x, H)                                        # (B, T, D) -> (B, H, T, Dh)
        print("x", x.shape, "-> split_heads ->", xs.shape, "-> merge_heads ->", F.merge_heads(xs).shape)
        for h in range(H):
            assert np.array_equal(xs[0, h], x[0, :, h * Dh:(h + 1) * Dh])
        assert np.array_equal(F.merge_heads(xs), x)
        """),
        md(r"""
        The number of heads must divide D; otherwise the error says so:
        """),
        code("""
        try:
            F.split_heads(x, 3)
        except ValueError as error:
            print("ValueError:", error)
        """),

        md(r"""
        ## 4. Multi-head attention by hand

        `nn.MultiHeadAttention(D, H)` keeps $[W^Q | W^K | W^V]$ as one (D, 3D) matrix `W_qkv` (section 7
        explains why) and $W^O$ as `W_o`. We build one with a fixed seed and compute its forward pass
        ourselves, one line per step of the equations:
        """),
        code("""
        mha = nn.MultiHeadAttention(D, H, rng=np.random.default_rng(0))
        y = mha(x)                                                             # (B, T, D)

        qkv = x @ mha.W_qkv.data + mha.b_qkv.data                             # 1. (B, T, D) @ (D, 3D) -> (B, T, 3D)
        q, k, v = np.split(qkv, 3, axis=-1)                                    #    3 x (B, T, D): columns [q | k | v]
        q, k, v = (F.split_heads(a, H) for a in (q, k, v))                    # 2. 3 x (B, H, T, Dh)
        heads, weights, _ = F.scaled_dot_product_attention(q, k, v)           # 3. every head at once: (B, H, T, Dh)
        y_by_hand = F.merge_heads(heads) @ mha.W_o.data + mha.b_o.data         # 4. (B, T, D) @ (D, D) -> (B, T, D)

        print("q, k, v", q.shape, "  weights", weights.shape, "  heads", heads.shape, "  y", y_by_hand.shape)
        assert np.allclose(y_by_hand, y, atol=1e-5)
        assert np.allclose(weights, mha.last_attention)
        """),
        md(r"""
        Step 3 is one call for all heads: `scaled_dot_product_attention` works on the last two axes
        and treats (B, H) as a batch, so there is no Python loop over heads. A loop gives the same
        numbers:
        """),
        code("""
        for h in range(H):
            head_h, _, _ = F.scaled_dot_product_attention(q[:, h], k[:, h], v[:, h])    # (B, T, Dh)
            assert np.allclose(head_h, heads[:, h], atol=1e-6)
        print("a loop over the", H, "heads gives the same heads")
        """),

        md(r"""
        ## 5. One attention map per head

        The module keeps its last weights in `last_attention`, (B, H, T, T); `viz.attention_grid`
        draws one panel per head. The weights are random (nothing is trained here), so the patterns
        mean nothing yet. **Look at** how different the four heads are on the same input: each has its
        own $W^Q_h, W^K_h$, so each compares the tokens in its own way. Every row still sums to 1.
        (A *trained* model's maps are in `figures/attention_seed_sentence1.png`.)
        """),
        code("""
        assert np.allclose(mha.last_attention.sum(axis=-1), 1.0, atol=1e-6)
        fig = viz.attention_grid(mha.last_attention[0][None], tokens, vmax="auto",    # (1 layer, H, T, T)
                                 title="4 heads of a freshly initialised layer, sentence 1")
        """),

        md(r"""
        ## 6. The output projection $W^O$

        Concatenating the heads and multiplying by $W^O$ is the same as projecting each head with its own
        block of $D_h$ rows of $W^O$ and adding:

        $$\mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_H)\,W^O = \sum_{h=1}^{H} \mathrm{head}_h\, W^O_{[hD_h:(h+1)D_h,\ :]}$$

        So $W^O$ is where the heads' results meet: without it, each head's output would stay in its own
        $D_h$ slice of the model's width.
        """),
        code("""
        W_o = mha.W_o.data
        summed = sum(heads[:, h] @ W_o[h * Dh:(h + 1) * Dh] for h in range(H)) + mha.b_o.data   # (B, T, D)
        assert np.allclose(summed, y, atol=1e-5)
        print("concat-then-project == sum of per-head projections")
        """),

        md(r"""
        ## 7. Fused or separate Q, K, V projections

        The paper draws three projections; `nn.MultiHeadAttention(fused_qkv=False)` keeps them apart as
        `W_q`, `W_k`, `W_v`. The default fuses them into one (D, 3D) matrix: one large matrix product
        instead of three smaller ones, which BLAS runs faster, with the same numbers. Copy the three
        matrices side by side into a fused layer and **look at** the checks: the same output, the same
        input gradient, and a `W_qkv` gradient that is the three gradients side by side.
        """),
        code("""
        separate = nn.MultiHeadAttention(D, H, fused_qkv=False, rng=np.random.default_rng(1))
        fused = nn.MultiHeadAttention(D, H, rng=np.random.default_rng(2))
        fused.W_qkv.data[...] = np.concatenate([separate.W_q.data, separate.W_k.data, separate.W_v.data], axis=1)
        fused.b_qkv.data[...] = np.concatenate([separate.b_q.data, separate.b_k.data, separate.b_v.data])
        fused.W_o.data[...], fused.b_o.data[...] = separate.W_o.data, separate.b_o.data

        dout = np.random.default_rng(3).standard_normal(x.shape).astype(x.dtype)   # some upstream gradient
        assert np.allclose(fused(x), separate(x), atol=1e-5)
        assert np.allclose(fused.backward(dout), separate.backward(dout), atol=1e-5)
        assert np.allclose(fused.W_qkv.grad,
                           np.concatenate([separate.W_q.grad, separate.W_k.grad, separate.W_v.grad], axis=1), atol=1e-5)
        print("fused:   ", [(name, p.shape) for name, p in fused.named_parameters()])
        print("separate:", [(name, p.shape) for name, p in separate.named_parameters()])
        """),

        md(r"""
        ## 8. How many parameters?

        $W^Q, W^K, W^V, W^O$ are four D×D matrices, plus four bias vectors of length D:

        $$4D^2 + 4D$$

        whatever H is: more heads means thinner heads, not more parameters. **Look at** each row of the
        table: constant across H. D = 512 is the paper's base model.
        """),
        code("""
        counts = {}
        for d in (16, 64, 512):
            for h in (1, 2, 4, 8):
                n = nn.MultiHeadAttention(d, h, rng=np.random.default_rng(0)).num_parameters()
                assert n == 4 * d * d + 4 * d == nn.MultiHeadAttention(d, h, fused_qkv=False, rng=np.random.default_rng(0)).num_parameters()
                counts[d, h] = n
        table([[counts[d, h] for h in (1, 2, 4, 8)] + [4 * d * d + 4 * d] for d in (16, 64, 512)],
              [f"D = {d}" for d in (16, 64, 512)], ["H = 1", "H = 2", "H = 4", "H = 8", "4D² + 4D"], fmt="{:,}")
        """),

        md(r"""
        ---
        > **What the article got wrong here**
        >
        > * The prose is right: section 3.2 step 3 describes multi-head attention as 多个独立的自注意力机制
        >   ("several independent self-attention mechanisms"). But nothing in its worked example (4.3) has
        >   heads: the printed weights (**W2**, notebook 3) are one row of 3 numbers per word, where H heads
        >   give H matrices of T×T.
        > * Its code calls `tf.keras.layers.MultiHeadAttention(num_heads=2, key_dim=100)` on the one-hot
        >   *position* vectors of notebook 1 (**C2**), with no positional encoding (**C3**): whatever the heads
        >   learn, they never see which characters are in the sentence.
        >
        > Next, notebook 5: the rest of the block (feed-forward, residuals, LayerNorm) and the classifier.
        """),
    ]


# =========================================================================== #
# 05 · The block
# =========================================================================== #

def notebook_05():
    return [
        md(r"""
        # 5 · The Transformer block, and a whole classifier

        Attention mixes information *between* tokens. A Transformer block adds a feed-forward network
        that works on each token on its own, and wraps both in residual connections and LayerNorm so
        that many blocks can be stacked. Then a classifier has to turn a whole sequence into one
        prediction. The article gets four of these pieces wrong (errata **E2**, **E3**, **E4**, **C4**).

        You will learn:

        1. the feed-forward network: two layers, not the article's one (E3);
        2. residual connections: what they keep;
        3. LayerNorm, with $\sqrt{\sigma^2 + \epsilon}$ (not $\sigma + \epsilon$), checked against numerical gradients;
        4. post-LN, pre-LN and the article's "attention + feed-forward" sum (E2) on the same input, and
           what happens to the output's statistics when they are stacked;
        5. why a classifier must pool the sequence first (E4), and the shape bug of the article's code (C4);
        6. a whole `TransformerClassifier` forward pass on the two sentences, by hand and by the model.
        """),
        code(SETUP),
        code("""
        from numpy_transformer.data import SEED_SENTENCES
        from numpy_transformer.gradcheck import check_gradients
        from numpy_transformer.models import TransformerClassifier
        from numpy_transformer.tokenizer import CharTokenizer
        """),
        md(r"""
        The input for the whole notebook: both sentences as characters, embedded with D = 32 (scaled
        by $\sqrt D$) plus the positional encoding, as the models do it. Shape (B, T, D) = (2, 19, 32);
        sentence 2 has one `[PAD]` at the end, so we keep its padding mask too.
        """),
        code("""
        texts = [text for text, _ in SEED_SENTENCES]
        tok = CharTokenizer.build(texts)
        ids, valid = tok.encode_batch(texts, max_len=32)                     # (B, T), (B, T)
        B, T = ids.shape
        D, H, d_ff = 32, 4, 4 * 32                                           # d_model, heads, F in the equations
        embed = nn.Embedding(tok.vocab_size, D, rng=np.random.default_rng(0))
        x = embed(ids) * D ** 0.5 + F.sinusoidal_positional_encoding(T, D)    # (B, T, D); a Python float keeps float32
        attend = F.padding_mask(valid)                                       # (B, 1, 1, T)
        print("x", x.shape, "  padding mask", attend.shape)
        """),

        md(r"""
        ## 1. The feed-forward network (errata E3)

        The article's section 4.1 writes

        $$\text{Feedforward}(x) = \text{ReLU}(\text{Linear}(x))$$

        one layer, although its own section 3.2 step 4 says 前馈网络由两个全连接层组成 ("the
        feed-forward network consists of two fully connected layers", ReLU after the first, linear after
        the second). The paper's (§3.3):

        $$\mathrm{FFN}(x) = \max(0,\ xW_1 + b_1)\,W_2 + b_2, \qquad W_1 \in \mathbb{R}^{D \times F},\ W_2 \in \mathbb{R}^{F \times D},\ F = 4D$$

        `nn.FeedForward(D, F)`; by hand with `functional.linear` and `functional.relu`:
        """),
        code("""
        ffn = nn.FeedForward(D, d_ff, rng=np.random.default_rng(1)).eval()
        hidden, _ = F.linear(x, ffn.W1.data, ffn.b1.data)                  # (B, T, D) -> (B, T, F)
        a, _ = F.relu(hidden)
        y_ffn, _ = F.linear(a, ffn.W2.data, ffn.b2.data)                   # (B, T, F) -> (B, T, D)
        print("x", x.shape, "-> hidden", hidden.shape, "-> FFN(x)", y_ffn.shape)
        assert np.allclose(y_ffn, ffn(x), atol=1e-5)
        """),
        md(r"""
        *Position-wise*: the same two layers are applied to every token separately; tokens do not
        interact here (that is attention's job). Feeding one token alone gives the same result:
        """),
        code("""
        t = 5
        assert np.allclose(ffn(x[:, t:t + 1]), ffn(x)[:, t:t + 1], atol=1e-6)
        print("FFN of token", t, "alone == FFN of the whole sequence at token", t)
        print("parameters:", ffn.num_parameters(), "= 2DF + F + D =", 2 * D * d_ff + d_ff + D)
        assert ffn.num_parameters() == 2 * D * d_ff + d_ff + D
        """),
        md(r"""
        What the article's single layer loses: its last operation is a ReLU, so its output is never
        negative. The block *adds* the sub-layer's output to the token's vector (section 2), and an
        update that can only push features up cannot, for example, undo a feature. **Look at** the
        fractions of negative outputs.
        """),
        code("""
        one_layer = nn.Linear(D, D, rng=np.random.default_rng(2))
        seed_ffn, _ = F.relu(one_layer(x))                                  # the article: ReLU(Linear(x))
        print(f"negative outputs: article's one layer {np.mean(seed_ffn < 0):.0%},  two-layer FFN {np.mean(ffn(x) < 0):.0%}")
        assert (seed_ffn >= 0).all() and (ffn(x) < 0).mean() > 0.2
        """),

        md(r"""
        ## 2. Residual connections

        Each sub-layer's output is *added* to its input, $y = x + f(x)$: the sub-layer learns a
        correction to the token's vector instead of a replacement. Two consequences, both checked below:

        * the token's own information passes through untouched (**look at** the cosine similarity of
          each token's input and output: near 0 for attention alone, high with the residual);
        * in the backward pass the gradient reaches $x$ directly as well as through $f$:
          $\partial L/\partial x = \partial L/\partial y + f'(x)^\top\,\partial L/\partial y$, the line
          `dres + self.attn.backward(...)` in `nn.TransformerBlock.backward`.
        """),
        code("""
        attn = nn.MultiHeadAttention(D, H, rng=np.random.default_rng(3))

        def mean_cosine(a, b):
            \"\"\"Average over real tokens of cos(a_t, b_t).\"\"\"
            cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
            return cos[valid].mean()

        f_x = attn(x, attend)
        print(f"cos(x, MHA(x))     = {mean_cosine(x, f_x):+.2f}")
        print(f"cos(x, x + MHA(x)) = {mean_cosine(x, x + f_x):+.2f}")
        assert mean_cosine(x, x + f_x) > 0.5 > abs(mean_cosine(x, f_x))
        """),
        code("""
        lin = nn.Linear(4, 4, rng=np.random.default_rng(4), dtype=np.float64)
        result = check_gradients(
            forward=lambda x: x + lin(x),                                   # y = x + f(x)
            backward=lambda dout, x: {"x": (lin(x), dout + lin.backward(dout))[1]},   # dx = dout + f'(x)^T dout
            inputs={"x": np.random.default_rng(5).standard_normal((3, 4))})
        print(result["x"])
        assert result["x"].ok
        """),

        md(r"""
        ## 3. LayerNorm (Ba et al. 2016)

        Each token's vector is normalised over its D features, then scaled and shifted by learned
        $\gamma, \beta$:

        $$\mu = \frac1D\sum_i x_i, \quad \sigma^2 = \frac1D\sum_i (x_i - \mu)^2, \quad
          \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad y = \gamma \odot \hat x + \beta$$

        `functional.layernorm`, here by hand. **Look at** the statistics of the output: every token has
        mean 0 and variance 1 (γ = 1, β = 0 at initialisation).
        """),
        code("""
        ln = nn.LayerNorm(D)
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        y_ln = (x - mu) / np.sqrt(var + ln.eps) * ln.gamma.data + ln.beta.data
        assert np.allclose(y_ln, ln(x), atol=1e-5)
        print(f"per token: mean within {np.abs(y_ln.mean(-1)).max():.1e} of 0, variance {y_ln.var(-1).min():.4f} .. {y_ln.var(-1).max():.4f}")
        assert np.allclose(y_ln.mean(-1), 0, atol=1e-5) and np.allclose(y_ln.var(-1), 1, atol=1e-3)
        """),
        md(r"""
        The backward pass (`functional.layernorm_backward`) against numerical gradients, for $x$,
        $\gamma$ and $\beta$ in float64. **Look at** the worst relative errors: tiny.
        """),
        code("""
        rng = np.random.default_rng(6)
        inputs = {"x": rng.standard_normal((2, 3, 5)), "gamma": rng.standard_normal(5), "beta": rng.standard_normal(5)}
        results = check_gradients(
            forward=lambda x, gamma, beta: F.layernorm(x, gamma, beta)[0],
            backward=lambda dout, x, gamma, beta: dict(zip(("x", "gamma", "beta"),
                                                           F.layernorm_backward(dout, F.layernorm(x, gamma, beta)[1]))),
            inputs=inputs)
        for r in results.values():
            print(r)
        assert all(r.ok for r in results.values())
        """),
        md(r"""
        A common slip is to divide by $\sigma + \epsilon$ instead of $\sqrt{\sigma^2 + \epsilon}$. For
        ordinary vectors the two agree to about $10^{-5}$; for a nearly constant vector they do not.
        The same random vector at three scales: **look at** the last row, where the two versions differ
        by a factor of about 4. (The right one also shrinks such a vector instead of blowing its noise up
        to unit size: that is what $\epsilon$ inside the square root is for.)
        """),
        code("""
        eps = 1e-5
        rows = []
        for scale in (1.0, 1e-2, 1e-3):
            v = scale * np.random.default_rng(7).standard_normal(D)
            right = (v - v.mean()) / np.sqrt(v.var() + eps)
            slip = (v - v.mean()) / (v.std() + eps)
            rows.append([v.std(), np.abs(right).max(), np.abs(slip).max(), np.abs(slip / right).max()])
        table(rows, ["scale 1", "scale 1e-2", "scale 1e-3"],
              ["σ", "max |x̂|, √(σ²+ε)", "max |x̂|, σ+ε", "ratio"], fmt="{:.3g}")
        assert rows[0][3] < 1.001 and rows[2][3] > 2
        """),

        md(r"""
        ## 4. Where the LayerNorm goes: post-LN, pre-LN, and the article's sum (errata E2)

        The article writes, in sections 1.3 and 4.1:

        $$\text{TransformerLayer}(X) = \text{MultiHeadAttention}(X) + \text{Feedforward}(X)$$

        with no residual and no normalisation. The real blocks (`nn.TransformerBlock(norm=...)`):

        | `norm=` | equations | used by |
        |---|---|---|
        | `"post"` | $H = \mathrm{LN}(X + \mathrm{MHA}(X)),\quad Y = \mathrm{LN}(H + \mathrm{FFN}(H))$ | the original Transformer |
        | `"pre"` | $H = X + \mathrm{MHA}(\mathrm{LN}(X)),\quad Y = H + \mathrm{FFN}(\mathrm{LN}(H))$ | GPT-2 and most models since (Xiong et al. 2020) |
        | `"parallel"` | $Y = X + \mathrm{MHA}(\mathrm{LN}(X)) + \mathrm{FFN}(\mathrm{LN}(X))$ | GPT-J, PaLM |

        The article's sum, read with a residual and a LayerNorm, *is* the parallel block; without them it
        is not a working layer. Three blocks built with the same seed share the same attention and
        feed-forward weights, so only the wiring differs. First, each block against its equations:
        """),
        code("""
        blocks = {norm: nn.TransformerBlock(D, H, d_ff, dropout=0.0, norm=norm, rng=np.random.default_rng(8)).eval()
                  for norm in ("post", "pre", "parallel")}
        assert all(np.array_equal(b.attn.W_qkv.data, blocks["post"].attn.W_qkv.data) for b in blocks.values())
        outputs = {norm: block(x, attend) for norm, block in blocks.items()}

        b = blocks["post"]
        h = b.norm1(x + b.attn(x, attend))
        assert np.allclose(outputs["post"], b.norm2(h + b.ffn(h)), atol=1e-4)
        b = blocks["pre"]
        h = x + b.attn(b.norm1(x), attend)
        assert np.allclose(outputs["pre"], h + b.ffn(b.norm2(h)), atol=1e-4)
        b = blocks["parallel"]
        assert np.allclose(outputs["parallel"], x + b.attn(b.norm1(x), attend) + b.ffn(b.norm1(x)), atol=1e-4)
        outputs["article's MHA(X) + FFN(X)"] = b.attn(x, attend) + b.ffn(x)
        print("each block matches its equations")
        """),
        md(r"""
        The same input through each. **Look at** the columns: post-LN ends in a LayerNorm, so every token
        comes out with mean 0 and standard deviation 1; pre-LN and parallel leave the residual stream
        un-normalised (its scale grows a little) but keep each token close to its input (cosine around
        0.7); the article's sum has dropped the input altogether: its output is unrelated to the token
        that went in (cosine near 0).
        """),
        code("""
        def statistics(y):
            real = y[valid]                                                 # (real tokens, D)
            return [real.mean(), real.std(axis=-1).mean(), np.abs(real).max(), mean_cosine(x, y)]

        names = ["input x"] + list(outputs)
        table([statistics(x)] + [statistics(y) for y in outputs.values()], names,
              ["mean", "per-token std", "max |y|", "cos(x, y)"])
        assert np.allclose(outputs["post"][valid].std(axis=-1), 1, atol=1e-3)
        assert abs(mean_cosine(x, outputs["article's MHA(X) + FFN(X)"])) < 0.3 < mean_cosine(x, outputs["pre"])
        """),
        md(r"""
        Stack 12 blocks of each kind (fresh random weights, no training, five different seeds) and follow
        the per-token standard deviation of the output. **Look at** the curves: post-LN is pinned at 1.
        Pre-LN and parallel grow slowly, because each block adds an update computed from a normalised
        input, of bounded size (that is why `nn.TransformerEncoder` puts a final LayerNorm after them).
        The article's sum has no residual and no normalisation, so each block multiplies the scale by
        some factor of its own: the scale wanders further with every block, up or down, with nothing to
        hold it.
        """),
        code("""
        depth, seeds = 12, range(8, 13)
        curves = {kind: [] for kind in ("post", "pre", "parallel", "article's sum")}
        for kind in curves:
            for seed in seeds:
                rng = np.random.default_rng(seed)
                stack = [nn.TransformerBlock(D, H, d_ff, dropout=0.0, rng=rng,
                                             norm="parallel" if kind == "article's sum" else kind).eval()
                         for _ in range(depth)]
                h, curve = x, []
                for block in stack:
                    h = block.attn(h, attend) + block.ffn(h) if kind == "article's sum" else block(h, attend)
                    curve.append(h[valid].std(axis=-1).mean())
                curves[kind].append(curve)

        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for colour, (kind, runs) in zip(("tab:blue", "tab:green", "tab:orange", "tab:red"), curves.items()):
            for n, curve in enumerate(runs):
                ax.plot(range(1, depth + 1), curve, "-", color=colour, lw=1, alpha=0.7, label=kind if n == 0 else None)
        ax.set(xlabel="number of blocks", ylabel="per-token std of the output", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend();
        final = {kind: np.mean([run[-1] for run in runs]) for kind, runs in curves.items()}
        print("mean std after", depth, "blocks:", {kind: round(float(v), 2) for kind, v in final.items()})
        assert np.allclose(curves["post"], 1, atol=1e-3)
        assert final["pre"] > np.mean([run[0] for run in curves["pre"]]) and final["article's sum"] > 1.5 * final["pre"]
        """),

        md(r"""
        ## 5. Pooling for classification (errata E4, C4)

        The article's section 4.1 ends with $\text{Output}(X) = \text{Linear}(\text{TransformerLayer}(X))$,
        and its code with `Dense(units=2, activation='softmax')` on the (batch, sequence, 100) output of
        the attention layer. A linear layer acts on the last axis, so on a sequence it gives one
        prediction **per token**. **Look at** the shape: (B, T, 2), one "positive or negative" for each
        character.
        """),
        code("""
        encoder = nn.TransformerEncoder(2, D, H, d_ff, dropout=0.0, rng=np.random.default_rng(10)).eval()
        states = encoder(x, attend)                                          # (B, T, D)
        head = nn.Linear(D, 2, rng=np.random.default_rng(11))
        per_token, _ = F.softmax(head(states))                               # (B, T, 2): the article's output
        print("states", states.shape, "-> Dense(2, softmax) ->", per_token.shape)
        table(per_token[0, :8], [tok.id_to_token(int(i)) for i in ids[0, :8]], ["P(negative)", "P(positive)"])
        """),
        md(r"""
        (Only the first 8 tokens of sentence 1 are shown.) The labels the article fits
        against are `to_categorical([1, 0])`: shape (2, 2), one label per *sentence*. Per-token outputs and
        per-sentence labels do not fit together, and our loss says so (errata **C4**):
        """),
        code("""
        labels = np.array([label for _, label in SEED_SENTENCES])              # (B,) one label per sentence
        try:
            F.cross_entropy(head(states), labels)
        except ValueError as error:
            print("ValueError:", error)
        """),
        md(r"""
        The fix is to **pool** the sequence into one vector per sentence before the output layer:

        * `pooling="cls"` (BERT): take the vector at position 0, the `[CLS]` token, which attention lets
          gather the whole sentence;
        * `pooling="mean"`: average the real tokens only, $\sum_t m_t h_t / \sum_t m_t$ with $m$ the mask, so
          padding never enters.

        Both give (B, D), and the linear layer then gives (B, 2):
        """),
        code("""
        cls = states[:, 0]                                                     # (B, D)
        m = valid.astype(states.dtype)                                         # (B, T), 1 = real token
        mean = (states * m[:, :, None]).sum(axis=1) / m.sum(axis=1, keepdims=True)   # (B, D)
        print("cls pooling", cls.shape, "-> logits", head(cls).shape, "   mean pooling", mean.shape, "-> logits", head(mean).shape)
        """),

        md(r"""
        ## 6. A whole `TransformerClassifier` on the two sentences

        `models.TransformerClassifier` puts it all together:

        $$X = E[\mathrm{ids}]\sqrt D + PE, \qquad H = \mathrm{Encoder}(X, M), \qquad z = \mathrm{pool}(H)\,W_c + b_c \in \mathbb{R}^{2}$$

        A tiny one: D = 32, 4 heads, 2 pre-LN blocks, F = 128, `[CLS]` pooling.
        """),
        code("""
        model = TransformerClassifier(tok.vocab_size, num_classes=2, d_model=D, n_heads=H, n_layers=2, d_ff=d_ff,
                                      max_len=64, dropout=0.1, norm="pre", pooling="cls", seed=0).eval()
        print(model)
        print(f"{model.num_parameters():,} parameters")
        """),
        md(r"""
        The forward pass by hand, with the model's own modules (in eval mode dropout is off), against
        `model(ids, mask)`:
        """),
        code("""
        h = model.embed(ids) * D ** 0.5                                        # (B, T) -> (B, T, D)
        h = model.pos(h)                                                       # + PE[:T]
        h = model.encoder(h, F.padding_mask(valid))                            # (B, T, D)
        logits_by_hand = model.head(h[:, 0])                                   # pool [CLS], (B, D) -> (B, 2)
        logits = model(ids, valid)
        print("logits", logits.shape)
        assert np.allclose(logits_by_hand, logits, atol=1e-5)
        """),
        md(r"""
        Padding must not change a sentence's prediction: sentence 2 alone and sentence 2 padded inside the
        batch give the same logits.
        """),
        code("""
        ids2, valid2 = tok.encode_batch(texts[1:], max_len=64)                # (1, 18): no padding
        assert np.allclose(model(ids2, valid2)[0], logits[1], atol=1e-5)
        print("sentence 2 alone:", model(ids2, valid2)[0], "  in the padded batch:", logits[1])
        """),
        md(r"""
        The probabilities: one row per sentence, two classes, each row summing to 1. **Look at** the
        values, and do not read anything into them: the weights are random, so this untrained model
        leans the same way for both sentences. Training gives the numbers a meaning
        (`python -m numpy_transformer demo`, and the following notebooks). Compare the article's output
        layer (section 4.3 step 6): `文本1：[0.9, 0.1, 0.0]`, three probabilities for a two-class
        problem (errata **W3**).
        """),
        code("""
        probs = model.predict_proba(ids, valid)                                # (B, 2)
        table(probs, [f"文本{i + 1} {text}" for i, text in enumerate(texts)], ["P(negative)", "P(positive)"])
        assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1)
        """),

        md(r"""
        ---
        > **What the article got wrong here**
        >
        > * **E3** — `Feedforward(x) = ReLU(Linear(x))` is one layer; the network has two, as the article's own
        >   section 3.2 says: $W_2\,\mathrm{ReLU}(W_1x + b_1) + b_2$, with an inner width of usually $F = 4D$.
        > * **E2** — `TransformerLayer(X) = MultiHeadAttention(X) + Feedforward(X)` has no residual and no
        >   LayerNorm: the output forgets its input and its scale drifts when stacked. Real blocks are post-LN,
        >   pre-LN, or, if you read the sum with a residual and a LayerNorm, the parallel block.
        > * **E4 / C4** — `Output(X) = Linear(TransformerLayer(X))` gives one prediction per token; the code's
        >   (batch, seq, 2) output cannot be fit against one label per sentence. Pool first ([CLS] or masked mean).
        > * **C3** — The code has no residuals and no LayerNorm (and no positional encoding, notebook 2).
        > * **W3** — The printed output `[0.9, 0.1, 0.0]` has three probabilities for two classes.
        > * Not the article's mistake but a common one: LayerNorm divides by $\sqrt{\sigma^2 + \epsilon}$,
        >   not $\sigma + \epsilon$.
        """),
    ]


# =========================================================================== #

NOTEBOOK_BUILDERS = {
    "01": ("01_tokens_and_embeddings.ipynb", notebook_01),
    "02": ("02_positional_encoding.ipynb", notebook_02),
    "03": ("03_attention.ipynb", notebook_03),
    "04": ("04_multi_head_attention.ipynb", notebook_04),
    "05": ("05_the_block.ipynb", notebook_05),
}


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", action="store_true", help="run each notebook and save it with its outputs")
    parser.add_argument("only", nargs="*", help="notebook numbers to build (default: all), e.g. 02 05")
    args = parser.parse_args(argv)
    for number in args.only or NOTEBOOK_BUILDERS:
        name, cells = NOTEBOOK_BUILDERS[number]
        write(name, cells(), run=args.execute)


if __name__ == "__main__":
    main()

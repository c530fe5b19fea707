"""Write the exercise notebooks, notebooks/exercises/ex*.ipynb, from the cell texts below.

    .venv/bin/python notebooks/_build/build_exercises.py            # (re)write the notebooks
    .venv/bin/python notebooks/_build/build_exercises.py --check    # exit 1 if a notebook differs from this file

The notebooks are saved without outputs (the students' view: nothing run yet)
and with fixed cell ids, so that rebuilding them changes nothing unless a text
here changed. Edit the texts here, not the .ipynb files: tests/test_exercises.py
fails when the two disagree.

Every notebook has the same shape: the equation, hints, a stub to fill in
(``# YOUR CODE HERE`` + ``raise NotImplementedError``), a line that swaps in
the reference solution when NT_SOLUTIONS=1, and a check cell that prints a
verdict and never raises unless NT_SOLUTIONS=1 (see numpy_transformer/exercises.py).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE.parent / "exercises"

HOW_TO = """\
**How this works.** Read the equation and the hints, write your code in the cell marked
`# YOUR CODE HERE` (delete the `raise NotImplementedError`), run that cell, then run the check
cell under it. The check tells you in plain words what is wrong: a shape, a known mistake it
recognises, or the element where your answer differs most. Run the cells from the top; after
every edit re-run your function's cell, then the check."""

SETUP = """\
import numpy as np

from numpy_transformer import exercises"""


def swap(name):
    return (f"# Leave this line as it is: with NT_SOLUTIONS=1 set (teachers, and the tests) it swaps in the\n"
            f"# reference solution; otherwise it keeps your function.\n"
            f"{name} = exercises.use_solution_if_requested({name})")


def check(name):
    return (f"result = exercises.check_{name}({name})\n"
            f"exercises.assert_if_solutions(result)")


def md(text):
    return ("markdown", textwrap.dedent(text).strip("\n"))


def code(text):
    return ("code", textwrap.dedent(text).strip("\n"))


NOTEBOOKS = {}


def notebook(stem):
    def register(cells):
        NOTEBOOKS[stem] = cells()
        return cells
    return register


# --------------------------------------------------------------------------- #

@notebook("ex0_linear_backward")
def _():
    return [
        md(r"""
        # Exercise 0 · Warm-up: the backward pass of a linear layer

        Every layer of a Transformer that has weights is a linear layer $y = xW + b$: the query, key,
        value and output projections of attention, both layers of the feed-forward network, the
        classifier at the end. Its backward pass is the pattern that every other backward pass repeats.
        """),
        md(HOW_TO),
        code(SETUP),
        md(r"""
        ## The forward pass

        $$y = xW + b, \qquad y_{nj} = \sum_i x_{ni} W_{ij} + b_j$$

        | array | shape |
        |---|---|
        | `x` | (N, D_in): one row per token |
        | `W` | (D_in, D_out) |
        | `b` | (D_out,) |
        | `y`, `dy` | (N, D_out) |

        Given the upstream gradient $dy = \partial L / \partial y$, compute $dx = \partial L/\partial x$,
        $dW = \partial L/\partial W$ and $db = \partial L/\partial b$.

        ## Hints

        1. Write the gradient of one element with the chain rule:
           $$\frac{\partial L}{\partial W_{ij}} = \sum_{n,k} \frac{\partial L}{\partial y_{nk}}\,
           \frac{\partial y_{nk}}{\partial W_{ij}}$$
           Which terms of the sum are not zero?
        2. A sum over $n$ of products of two matrices' entries is a matrix product. Let the shapes
           guide you: a gradient always has the shape of its variable, so `dW` is (D_in, D_out), and
           there is only one way to combine `x` (N, D_in) and `dy` (N, D_out) into that shape.
        3. `b` is added to every row, so every row sends its gradient to `b`.
        4. The check also passes an `x` with batch and time axes, (B, T, D_in), as in the Transformer.
           `dx` needs no change; for `dW` and `db` flatten the leading axes first:
           `x.reshape(-1, D_in)` and `dy.reshape(-1, D_out)`.
        """),
        code('''
        def linear_backward(dy, x, W):
            """Gradients of y = x @ W + b.

            dy: (..., D_out)  the upstream gradient dL/dy
            x:  (..., D_in)   the layer's input, saved by the forward pass
            W:  (D_in, D_out)
            Returns dx (..., D_in), dW (D_in, D_out), db (D_out,).
            """
            # YOUR CODE HERE
            raise NotImplementedError
        '''),
        code(swap("linear_backward")),
        md(r"""
        ## Check

        The check runs your function on three inputs (a (5, 3) `x` with a (3, 4) `W`, a square `W`,
        and a (2, 3, 3) batch) and compares your gradients with *numerical* ones: it nudges each
        element of `x`, `W` and `b` by a tiny step both ways and watches how $L = \sum y \odot dy$
        changes (`numpy_transformer/gradcheck.py`).
        """),
        code(check("linear_backward")),
        md(r"""
        ## Going further

        * Compare your code with `linear_backward` in `numpy_transformer/functional.py`.
        * `nn.Linear.backward` *adds* `dW` into `W.grad` (`+=`) instead of overwriting it. Why? Think of a
          weight used twice in one forward pass, such as an embedding matrix that is also the output layer.
        """),
    ]


@notebook("ex1_softmax_backward")
def _():
    return [
        md(r"""
        # Exercise 1 · The backward pass of softmax

        Softmax turns attention scores into attention weights, and a classifier's logits into
        probabilities. Over the last axis (K entries):

        $$y_i = \frac{e^{x_i}}{\sum_{j} e^{x_j}}$$
        """),
        md(HOW_TO),
        code(SETUP),
        md(r"""
        ## The task

        Given the upstream gradient `dy` and the forward pass's *output* `y` (both of shape (..., K)),
        compute `dx` (same shape). The backward pass of softmax needs only `y`, not `x`.

        ## Hints

        1. With the quotient rule, show that
           $\dfrac{\partial y_i}{\partial x_j} = y_i\,(\delta_{ij} - y_j)$, where $\delta_{ij}$ is 1 when
           $i = j$ and 0 otherwise.
        2. Chain rule: $dx_j = \sum_i dy_i\, \dfrac{\partial y_i}{\partial x_j}$. Split the $\delta_{ij}$ part
           from the rest and simplify.
        3. Do not build the K × K Jacobian: the result is one elementwise product and one sum over the
           last axis. Keep that axis (`keepdims=True`) so that the sum broadcasts back against `y`.
        """),
        code('''
        def softmax_backward(dy, y):
            """Gradient of y = softmax(x) over the last axis.

            dy: (..., K)  the upstream gradient dL/dy
            y:  (..., K)  the softmax output (each row sums to 1)
            Returns dx (..., K).
            """
            # YOUR CODE HERE
            raise NotImplementedError
        '''),
        code(swap("softmax_backward")),
        md(r"""
        ## Check

        Numerical gradients of the softmax on a (3, 5) and a (2, 3, 4) input.
        """),
        code(check("softmax_backward")),
        md(r"""
        ## Going further

        * What does your function return for a `dy` whose entries are all equal in each row, say
          `softmax_backward(np.ones((2, 4)), y)`? Why must it be so? (Hint: what happens to softmax when
          you add the same number to every `x_i`?)
        * The same formula is at the heart of attention's backward pass in exercise 2.
        """),
    ]


@notebook("ex2_attention")
def _():
    return [
        md(r"""
        # Exercise 2 · Scaled dot-product attention, forward and backward

        $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\Big(\frac{QK^\top}{\sqrt{d_k}} + M\Big)\,V$$

        (Vaswani et al. 2017, eq. 1; the seed article's §1.3.) Every query takes a weighted average of
        the values; the weights say how well the query matches each key.
        """),
        md(HOW_TO),
        code(SETUP),
        md(r"""
        ## Part A: the forward pass

        | array | shape |
        |---|---|
        | `q` | (..., Tq, d_k): one row per query |
        | `k` | (..., Tk, d_k): one row per key |
        | `v` | (..., Tk, d_v): one value per key |
        | `mask` | boolean, broadcastable to (..., Tq, Tk), `True` = *may attend*; or `None` |
        | `weights` | (..., Tq, Tk): each row sums to 1 |
        | `out` | (..., Tq, d_v) |

        The leading axes `...` are batch and heads, e.g. (B, H, T, d).

        1. `scores = q kᵀ / √d_k`. The dot product of two random d_k-vectors has a standard
           deviation of about √d_k; dividing keeps the scores near 1 whatever the width, so that the
           softmax does not saturate.
        2. Where `mask` is `False`, set the score to a large negative number, `-1e9`, so that its
           weight comes out 0. Not `-inf`: a row with every key masked would give
           `-inf - (-inf) = NaN` in the softmax.
        3. `weights = softmax(scores)` over the keys, the last axis. Subtract each row's maximum first
           so that `exp` cannot overflow.
        4. A query with nothing it may attend to (every key masked) must get all-zero weights, not a
           uniform average over keys it must not see: multiply by `mask.any(axis=-1, keepdims=True)`.
        5. `out = weights @ v`.

        ## Hints

        * With more than two axes, `k.T` reverses *every* axis; `k.swapaxes(-1, -2)` swaps the last two.
        * `np.where(mask, scores, -1e9)` broadcasts the mask against the scores.
        """),
        code('''
        def attention_forward(q, k, v, mask=None):
            """Scaled dot-product attention.

            q: (..., Tq, d_k); k: (..., Tk, d_k); v: (..., Tk, d_v)
            mask: None, or a boolean array broadcastable to (..., Tq, Tk), True = may attend
            Returns out (..., Tq, d_v), weights (..., Tq, Tk).
            """
            # YOUR CODE HERE
            raise NotImplementedError
        '''),
        code(swap("attention_forward")),
        md(r"""
        ### Check (forward)

        Compared with `functional.scaled_dot_product_attention` on four inputs: 2-D `q, k, v` without a
        mask; batched heads with Tq ≠ Tk; a causal mask; a padding mask that hides every key of one
        sequence.
        """),
        code(check("attention_forward")),
        md(r"""
        ## Part B: the backward pass

        Name the forward lines ($A$ is `weights`):

        $$S = \frac{QK^\top}{\sqrt{d_k}}, \qquad A = \mathrm{softmax}(S), \qquad O = AV$$

        Given $dO$ (`dout`, shaped like `out`) and what the forward pass saved (`q, k, v, weights`),
        compute `dq, dk, dv`, shaped like `q, k, v`. Go through the lines in reverse:

        1. $O = AV$ is a matrix product, like $y = xW$ in exercise 0: it gives $dA$ and $dV$.
        2. $A = \mathrm{softmax}(S)$ row by row: exercise 1 turns $dA$ into $dS$.
        3. $S = QK^\top / \sqrt{d_k}$ is a product again, times a constant: it gives $dQ$ and $dK$.
           Check the shapes: `dk` is (..., Tk, d_k).

        Masked positions have weight 0, and the softmax backward multiplies by the weights, so their
        $dS$ is 0 by itself: the backward pass needs no mask.
        """),
        code('''
        def attention_backward(dout, q, k, v, weights):
            """Gradients of out = softmax(q @ k^T / sqrt(d_k)) @ v.

            dout: (..., Tq, d_v)  the upstream gradient dL/dout
            q, k, v, weights: what the forward pass used and returned
            Returns dq (..., Tq, d_k), dk (..., Tk, d_k), dv (..., Tk, d_v).
            """
            # YOUR CODE HERE
            raise NotImplementedError
        '''),
        code(swap("attention_backward")),
        md(r"""
        ### Check (backward)

        Numerical gradients with respect to `q`, `k` and `v` on three inputs: 2-D, batched heads with
        Tq ≠ Tk, and a causal mask.
        """),
        code(check("attention_backward")),
        md(r"""
        ## Going further

        * Without positional encodings, attention cannot tell the order of its inputs: permute the rows
          of `q`, `k` and `v` together and check that `out` is permuted the same way.
        * In `numpy_transformer/functional.py`, compare `scaled_dot_product_attention` and its backward
          with yours. How does it handle a `q` without a batch axis and a `k` with one?
        """),
    ]


@notebook("ex3_layernorm")
def _():
    return [
        md(r"""
        # Exercise 3 · Layer normalisation, forward and backward

        Every Transformer block normalises its vectors with LayerNorm (Ba et al. 2016; see errata E2 for
        where it sits in the block). Over the last axis (D entries) of each vector:

        $$\mu = \frac1D \sum_i x_i, \qquad \sigma^2 = \frac1D \sum_i (x_i - \mu)^2, \qquad
        \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad y = \gamma \odot \hat x + \beta$$

        $\gamma$ and $\beta$, of shape (D,), are learned and shared by every vector.
        """),
        md(HOW_TO),
        code(SETUP),
        md(r"""
        ## Part A: the forward pass

        Return `y`, and also the two things the backward pass needs (as llm.c does):
        `xhat` $= \hat x$ and `rstd` $= 1/\sqrt{\sigma^2 + \epsilon}$, with one number per vector, shape (..., 1).

        * $\epsilon$ goes **inside** the square root. `std + eps` is a classic silent deviation: the two
          differ when a vector's variance is small, and the check includes such vectors.
        * The variance divides by D, not D − 1 (`x.var(axis=-1)` has `ddof=0` by default).
        * Keep the reduced axis (`keepdims=True`) so that `x - mean` broadcasts.
        """),
        code('''
        def layernorm_forward(x, gamma, beta, eps=1e-5):
            """LayerNorm over the last axis.

            x: (..., D); gamma, beta: (D,)
            Returns y (..., D), xhat (..., D), rstd (..., 1) with rstd = 1 / sqrt(var + eps).
            """
            # YOUR CODE HERE
            raise NotImplementedError
        '''),
        code(swap("layernorm_forward")),
        md(r"""
        ### Check (forward)

        Compared with `functional.layernorm` on a (4, 6) input, two of whose rows have a variance close
        to $\epsilon$, and on a (2, 3, 5) input with `eps=1e-3`.
        """),
        code(check("layernorm_forward")),
        md(r"""
        ## Part B: the backward pass

        Given `dy` (shaped like `y`) and what the forward pass saved (`xhat`, `rstd`, `gamma`), compute
        `dx` (shaped like `x`), `dgamma` and `dbeta` (both (D,)).

        1. $y = \gamma \odot \hat x + \beta$: $\gamma$ and $\beta$ are shared by every vector, so their
           gradients sum over all the leading axes. The gradient that reaches $\hat x$ is
           $d\hat x = dy \odot \gamma$.
        2. $\hat x_j = (x_j - \mu)\,\mathrm{rstd}$, and $\mu$ and $\mathrm{rstd}$ depend on *every*
           $x_k$ of the vector:
           $$\frac{\partial \mu}{\partial x_k} = \frac1D, \qquad
           \frac{\partial\,\mathrm{rstd}}{\partial x_k} = -\frac{\mathrm{rstd}^3}{D}(x_k - \mu)
           = -\frac{\mathrm{rstd}^2}{D}\,\hat x_k$$
        3. So $dx_k = \sum_j d\hat x_j\, \dfrac{\partial \hat x_j}{\partial x_k}$ has three parts: the
           direct path, the path through $\mu$ and the path through $\mathrm{rstd}$. Each of the last
           two becomes a *mean over the vector*.
        4. Stuck? Your result should read `dx = rstd * (dxhat - [a mean over the last axis] - xhat * [another mean])`.
        """),
        code('''
        def layernorm_backward(dy, xhat, rstd, gamma):
            """Gradients of LayerNorm.

            dy: (..., D)  the upstream gradient dL/dy
            xhat: (..., D), rstd: (..., 1), gamma: (D,)  saved by the forward pass
            Returns dx (..., D), dgamma (D,), dbeta (D,).
            """
            # YOUR CODE HERE
            raise NotImplementedError
        '''),
        code(swap("layernorm_backward")),
        md(r"""
        ### Check (backward)

        Numerical gradients with respect to `x`, `gamma` and `beta` on a (4, 6) and a (2, 3, 5) input.
        """),
        code(check("layernorm_backward")),
        md(r"""
        ## Going further

        * Show that every row of `dx` sums to 0. Why must it? (Adding the same number to every $x_i$
          of a vector does not change $\hat x$.)
        * Compare with `layernorm` and `layernorm_backward` in `numpy_transformer/functional.py`.
        """),
    ]


@notebook("ex4_cross_entropy_backward")
def _():
    return [
        md(r"""
        # Exercise 4 · The backward pass of softmax + cross-entropy

        A classifier's loss: the softmax of the logits $z$ gives probabilities $p$, and the loss is the
        mean over the N rows of minus the log-probability of the right class $t_n$:

        $$p_n = \mathrm{softmax}(z_n), \qquad L = -\frac1N \sum_{n=1}^{N} \log p_{n,\,t_n}$$
        """),
        md(HOW_TO),
        code(SETUP),
        md(r"""
        ## The task

        `logits` is (N, C), `targets` is (N,) integer class ids. Return $\partial L / \partial z$, shape
        (N, C), the gradient of the *mean* loss.

        ## Hints

        1. Write $\log p_{n,t} = z_{n,t} - \log \sum_c e^{z_{n,c}}$, and differentiate with respect to
           one logit $z_{n,c}$. What is $\dfrac{\partial}{\partial z_c} \log \sum_{c'} e^{z_{c'}}$?
        2. Softmax and cross-entropy together give a much simpler gradient than the softmax backward of
           exercise 1 chained with the gradient of $-\log$: that is why they always come as a pair.
        3. Don't forget the $\frac1N$ of the mean.
        4. Trained models produce large logits, and `np.exp(1000.0)` is `inf`. Subtract each row's
           maximum before `exp`: the softmax does not change.
        5. `p[np.arange(N), targets]` picks the target class's entry of every row.
        """),
        code('''
        def cross_entropy_backward(logits, targets):
            """Gradient of L = mean over rows of -log softmax(logits)[target].

            logits: (N, C); targets: (N,) integers in [0, C)
            Returns dlogits (N, C).
            """
            # YOUR CODE HERE
            raise NotImplementedError
        '''),
        code(swap("cross_entropy_backward")),
        md(r"""
        ## Check

        Numerical gradients of `functional.cross_entropy` on (5, 4) logits, then a comparison with the
        reference on large logits (about ±1000).
        """),
        code(check("cross_entropy_backward")),
        md(r"""
        ## Going further

        * Every row of your gradient sums to 0. Why?
        * At the start of training the logits are near 0. What is the gradient then, and what does it
          push the model to do?
        """),
    ]


@notebook("ex5_positional_encoding")
def _():
    return [
        md(r"""
        # Exercise 5 · The sinusoidal positional encoding

        Attention by itself ignores word order, so each position gets a vector added to its embedding
        (Vaswani et al. 2017, §3.5):

        $$PE_{pos,\,2i} = \sin\!\Big(\frac{pos}{10000^{2i/D}}\Big), \qquad
        PE_{pos,\,2i+1} = \cos\!\Big(\frac{pos}{10000^{2i/D}}\Big)$$

        `pos` = 0, 1, …, T − 1 is the position; `i` counts *pairs* of dimensions, so `2i` is the index
        of an even column and each pair (sin, cos) turns at its own frequency.
        """),
        md(HOW_TO),
        code(SETUP),
        md(r"""
        ## The seed article's version (errata E1)

        The article writes $PE(pos) = \sin(\ldots) + \cos(\ldots)$ and calls $i$ "the word index". Both are
        wrong: the sum equals $\sqrt2 \sin(\theta + \pi/4)$, one number per frequency instead of a
        (sin, cos) pair, so shifting the position by $k$ is no longer a rotation of each pair, and
        columns $2i$ and $2i+1$ come out identical. The check recognises that version.

        ## Hints

        1. Build the table of angles by broadcasting: positions as a column, `np.arange(T)[:, None]`
           (T, 1), divided by `10000 ** (two_i / D)` with `two_i = np.arange(0, D, 2)` (⌈D/2⌉,)
           gives (T, ⌈D/2⌉).
        2. Fill the even columns with `np.sin` and the odd columns with `np.cos`: `pe[:, 0::2]` and
           `pe[:, 1::2]`.
        3. An odd D must work: the last column is then a sine with no cosine partner, so there is one
           fewer cosine column than sine columns.
        """),
        code('''
        def positional_encoding(T, D):
            """The sinusoidal positional encoding.

            T: number of positions; D: model width (odd allowed)
            Returns PE (T, D).
            """
            # YOUR CODE HERE
            raise NotImplementedError
        '''),
        code(swap("positional_encoding")),
        md(r"""
        ## Check

        Compared with `functional.sinusoidal_positional_encoding` for T = 6, D = 8 and for an odd width,
        T = 5, D = 7.
        """),
        code(check("positional_encoding")),
        md(r"""
        ## Going further

        * Why a (sin, cos) pair? For the frequency $\omega_i = 10000^{-2i/D}$, the pair
          $(PE_{pos+k,2i}, PE_{pos+k,2i+1})$ is the pair at `pos` rotated by the angle $k\omega_i$. Write
          the 2 × 2 rotation matrix and check it with your function for a few `pos` and `k`; then try
          the same with the seed's $\sin + \cos$.
        * Draw yours next to the seed's: `from numpy_transformer import functional, viz`, then
          `viz.pe_comparison(positional_encoding(50, 64), functional.seed_positional_encoding(50, 64))`.
        """),
    ]


@notebook("ex6_top_p_sampling")
def _():
    return [
        md(r"""
        # Exercise 6 · Top-p (nucleus) sampling

        A language model gives a probability $p_v$ to every token $v$ of the vocabulary. Sampling from
        all of them lets the many unlikely tokens — each tiny, together a lot — produce nonsense now and
        then. **Nucleus sampling** (Holtzman et al. 2020) samples only from the *nucleus*: the smallest
        set of most likely tokens whose probabilities add up to at least $p$, renormalised:

        $$V_p = \text{the shortest prefix of the tokens sorted by } p_v \text{ (largest first) with }
        \sum_{v \in V_p} p_v \ge p, \qquad \tilde p_v = \frac{p_v\,[v \in V_p]}{\sum_{u \in V_p} p_u}$$

        When the model is sure the nucleus is one or two tokens; when it is unsure it is wide
        (notebook 10 draws it on the pre-trained model's next-character distribution).
        """),
        md(HOW_TO),
        code(SETUP),
        md(r"""
        ## The task

        `probs` is (V,) or (B, V), each row summing to 1, and 0 < `p` ≤ 1. Return the filtered,
        renormalised probabilities, **shaped like `probs` and in the same token order**.

        ## Hints

        1. Sort each row from the most to the least likely token: `order = np.argsort(-probs, axis=-1)`,
           then `np.take_along_axis(probs, order, axis=-1)`.
        2. In the sorted row, the mass *before* token j is `np.cumsum(sorted_p, axis=-1) - sorted_p`.
           Token j belongs to the nucleus while that mass is still below p: the token that takes the
           total past p is kept, and the first token always is.
        3. Put the keep/drop decision back in vocabulary order (`np.put_along_axis`), zero the dropped
           tokens, and divide by the new sum.
        4. The boundary: with sorted probabilities 0.5, 0.25, 0.125, 0.125 and p = 0.75, the nucleus is
           {0.5, 0.25}. The mass before the third token is exactly p, so it is not needed.
        """),
        code('''
        def top_p_filter(probs, p):
            """The nucleus of each row of probs (..., V), renormalised.

            probs: (..., V), rows summing to 1; p: 0 < p <= 1
            Returns kept (..., V), same token order as probs.
            """
            # YOUR CODE HERE
            raise NotImplementedError
        '''),
        code(swap("top_p_filter")),
        md(r"""
        ## Check

        Three cases: a clear crossing, a batch of rows, and the exact boundary. The check recognises
        the classic slips: not sorting (or sorting upwards), dropping the token that crosses p, not
        renormalising, `<=` at the boundary, one token too many, and returning the row in sorted order.
        """),
        code(check("top_p_filter")),
        md(r"""
        ## Going further

        * What does `p = 1` give? And a very small `p`?
        * Combine it with a temperature: does the order of the two operations matter?
        * `numpy_transformer.generation.top_p_filter` is the project's version: compare it with yours,
          then sample with `generation.sample(kept, np.random.default_rng(0))`.
        """),
    ]


@notebook("ex7_coral_backward")
def _():
    return [
        md(r"""
        # Exercise 7 · The backward pass of CORAL (domain adaptation, seed §2.2)

        A classifier trained on hotel reviews meets laptop reviews. *Feature matching* asks the encoder
        to give the two domains' features the same second-order statistics (Deep CORAL, Sun & Saenko
        2016). With source features $X_S$ ($n_S \times D$) and target features $X_T$ ($n_T \times D$):

        $$C_S = \frac{1}{n_S - 1}\,(X_S - \mathbf 1\mu_S^\top)^\top (X_S - \mathbf 1\mu_S^\top), \qquad
        C_T = \frac{1}{n_T - 1}\,(X_T - \mathbf 1\mu_T^\top)^\top (X_T - \mathbf 1\mu_T^\top)$$

        $$L = \frac{1}{4D^2}\,\lVert C_S - C_T \rVert_F^2$$
        """),
        md(HOW_TO),
        code(SETUP),
        md(r"""
        ## The task

        Return $\partial L/\partial X_S$ (shape $n_S \times D$) and $\partial L/\partial X_T$
        ($n_T \times D$), the gradients of $L$ itself.

        ## Hints

        1. First $G = \partial L/\partial C_S$. Differentiate $\sum_{ij} (C_S - C_T)_{ij}^2 / (4D^2)$.
           What is $\partial L/\partial C_T$?
        2. For $C = X_c^\top X_c / (n - 1)$ and a symmetric $G$, $\partial L / \partial X_c = 2 X_c G / (n-1)$.
        3. The mean $\mu$ depends on $X$ too. Its extra term is $-\frac1n \mathbf 1 \mathbf 1^\top X_c G$:
           what is $\mathbf 1^\top X_c$? (But you still need the centred $X_c$ in the formula.)
        4. Both domains get a gradient, with opposite signs.
        """),
        code('''
        def coral_backward(xs, xt):
            """Gradients of the CORAL loss.

            xs: (n_S, D) source features; xt: (n_T, D) target features
            Returns dxs (n_S, D), dxt (n_T, D).
            """
            # YOUR CODE HERE
            raise NotImplementedError
        '''),
        code(swap("coral_backward")),
        md(r"""
        ## Check

        Numerical gradients of `functional.coral_loss` on a (6, 3) / (5, 3) pair and on an odd width,
        (4, 5) / (7, 5). The features have a non-zero mean, so forgetting to centre shows.
        """),
        code(check("coral_backward")),
        md(r"""
        ## Going further

        * Compare with `coral_loss_backward` in `numpy_transformer/functional.py`.
        * Why $1/(4D^2)$? Draw random features of width 16 and 128 and compare the loss with and
          without it.
        * `transfer.finetune(..., adaptation="coral")` adds this loss to the classifier's; notebook 11
          shows what it does to the features of hotel and laptop reviews.
        """),
    ]


# --------------------------------------------------------------------------- #

def build(stem):
    """The notebook `stem` as nbformat's JSON text (no outputs, fixed cell ids)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    for n, (kind, source) in enumerate(NOTEBOOKS[stem]):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell.id = f"{stem.split('_')[0]}-{n:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook differs from what this file builds")
    args = parser.parse_args(argv)
    stale = []
    for stem in NOTEBOOKS:
        path = OUT_DIR / f"{stem}.ipynb"
        text = build(stem)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent.parent)}")
    if stale:
        print(f"out of date (run {Path(__file__).name} to rebuild): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

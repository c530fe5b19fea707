"""Pictures of what the model computes: attention maps, positional encodings,
masks, training curves, ROC and confusion matrices.

Every function takes plain NumPy arrays (CuPy arrays are copied to the host
first) and returns the matplotlib ``Figure`` it drew on. ``path=`` also saves a
PNG. ``ax=``, where offered, draws into an axes you own instead of a new figure;
nothing you own is ever closed.

Shapes: ``L`` layers, ``H`` heads, ``T`` tokens (``Tq`` queries, ``Tk`` keys),
``D`` d_model, ``C`` classes.

This module imports nothing else from ``numpy_transformer`` so that it can be
read, and used, on its own.

Two practical notes:

* Backend. We never call ``matplotlib.use()``: a notebook keeps its inline
  backend, and on a machine with no display matplotlib already falls back to
  the non-interactive Agg backend by itself.
* Notebooks. New figures are made with ``pyplot``, so they show up in a
  notebook on their own. If the call is the *last line* of a cell, the notebook
  also shows the returned figure: end the line with ``;`` or assign the result
  (``fig = attention_map(...)``) to see it once.

Chinese labels need a font with CJK glyphs; without one matplotlib draws empty
boxes. ``find_cjk_font`` finds one (see its docstring), and every function here
switches to it when its labels contain non-ASCII characters.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np

# A font "has CJK" only if it has these: the characters of the seed's running
# example (seed-errata.md, 4.3) and the full-width punctuation in its sentences.
CJK_TEST_TEXT = "有趣无聊喜欢阅读文章，。"

# Family names of common CJK fonts, most likely first (Linux, then Windows, macOS).
CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
    "Hiragino Sans GB",
    "Arial Unicode MS",
    "AR PL UMing CN",
    "AR PL UKai CN",
)

# The font shipped by the `mplfonts` package (requirements.txt), SIL OFL.
MPLFONTS_FONT = "fonts/NotoSansCJKsc-Regular.otf"

SAVE_DPI = 150
MAX_TICK_LABELS = 40  # beyond this many tokens, per-token labels are unreadable


# ----------------------------------------------------------------------------
# Fonts
# ----------------------------------------------------------------------------

def font_has_glyphs(path, text: str = CJK_TEST_TEXT) -> bool:
    """True if the font file at ``path`` has a glyph for every character of ``text``.

    A font may *claim* a family name and still lack the glyphs (or be a broken
    download), so we ask FreeType directly: glyph index 0 means "missing".
    """
    from matplotlib.ft2font import FT2Font

    try:
        font = FT2Font(str(path))
    except (OSError, RuntimeError, ValueError):
        return False
    return all(font.get_char_index(ord(ch)) != 0 for ch in text)


def _installed_cjk_font() -> str | None:
    """Step 1: a CJK family that matplotlib's font manager already knows."""
    from matplotlib.font_manager import fontManager

    paths_by_name: dict[str, list[str]] = {}
    for entry in fontManager.ttflist:
        paths_by_name.setdefault(entry.name, []).append(entry.fname)
    for family in CJK_FAMILIES:
        if any(font_has_glyphs(p) for p in paths_by_name.get(family, [])):
            return family
    return None


def _mplfonts_font_path() -> Path | None:
    """Step 2: the font file inside the ``mplfonts`` package, if it is installed.

    ``find_spec`` locates the package without importing it (importing it would
    run its own font-management code, which we do not need).
    """
    spec = importlib.util.find_spec("mplfonts")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / MPLFONTS_FONT
    return path if path.is_file() else None


@functools.lru_cache(maxsize=None)
def find_cjk_font() -> str | None:
    """Return the family name of a font that can draw Chinese, or ``None``.

    The lightest reliable way, in order:

    1. a CJK font matplotlib already knows (installed on the system), checked
       to really contain the glyphs of ``CJK_TEST_TEXT``;
    2. Noto Sans CJK SC from the ``mplfonts`` package, registered with
       matplotlib's font manager for this process (nothing is installed);
    3. none: warn once, saying how to get one, and return ``None`` (plots still
       work, Chinese characters show as boxes).

    The answer is cached, so the search and the warning happen once per process.
    """
    family = _installed_cjk_font()
    if family is not None:
        return family

    path = _mplfonts_font_path()
    if path is not None and font_has_glyphs(path):
        from matplotlib.font_manager import FontProperties, fontManager

        fontManager.addfont(str(path))
        return FontProperties(fname=str(path)).get_name()

    warnings.warn(
        "numpy_transformer.viz: no font with Chinese glyphs was found, so Chinese "
        "labels will be drawn as empty boxes. Install one with "
        "`pip install mplfonts` (ships Noto Sans CJK SC) or "
        "`apt-get install fonts-noto-cjk`, then restart Python.",
        UserWarning,
        stacklevel=2,
    )
    return None


def use_cjk_font() -> str | None:
    """Make matplotlib draw Chinese with the font ``find_cjk_font`` found.

    Puts the family first in ``rcParams['font.sans-serif']``; matplotlib falls
    back to the next families in that list for any glyph it lacks. Call it once
    at the top of a notebook; the plotting functions here call it themselves.
    Returns the family name, or ``None`` when there is no CJK font.
    """
    import matplotlib

    family = find_cjk_font()
    if family is None:
        return None
    rc = matplotlib.rcParams
    rc["font.sans-serif"] = [family] + [f for f in rc["font.sans-serif"] if f != family]
    rc["font.family"] = "sans-serif"
    # Several CJK fonts (SimHei, ...) have no U+2212 minus sign; use the ASCII "-".
    rc["axes.unicode_minus"] = False
    return family


def _is_ascii(text) -> bool:
    return all(ord(ch) < 128 for ch in str(text))


def _use_cjk_if_needed(*label_groups) -> None:
    """Switch to the CJK font only when some label is not plain ASCII."""
    for group in label_groups:
        if group is None:
            continue
        texts = [group] if isinstance(group, str) else list(group)
        if not all(_is_ascii(t) for t in texts):
            use_cjk_font()
            return


# ----------------------------------------------------------------------------
# Small helpers shared by the plots
# ----------------------------------------------------------------------------

def _to_numpy(a) -> np.ndarray:
    """A host NumPy array from ``a``; CuPy arrays are copied off the GPU."""
    if hasattr(a, "__cuda_array_interface__") and hasattr(a, "get"):
        a = a.get()
    return np.asarray(a)


def _check_ndim(a: np.ndarray, name: str, ndim: int, shape_text: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_text}, got shape {a.shape}")


def _check_finite(a: np.ndarray, name: str) -> None:
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf; there is nothing sensible to draw")


def _check_tokens(tokens, name: str, expected: int, axis_text: str) -> list[str]:
    tokens = [str(t) for t in tokens]
    if len(tokens) != expected:
        raise ValueError(
            f"{name} must have {expected} tokens, one per {axis_text}, got {len(tokens)}"
        )
    return tokens


def _display_token(token: str) -> str:
    """A visible label: a space token would otherwise be an empty tick label."""
    if token == " ":
        return "␣"
    if token.strip() == "":
        return repr(token)
    return token


def _new_figure(figsize, nrows: int = 1, ncols: int = 1, **kwargs):
    """A new pyplot figure and its axes (pyplot, so notebooks show it by themselves)."""
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=figsize, **kwargs)


def _finish(fig, path):
    """Save ``fig`` as a PNG when ``path`` is given; return the figure."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=SAVE_DPI, bbox_inches="tight")
    return fig


def _clip(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _tick_fontsize(n_tokens: int) -> float:
    return 10 if n_tokens <= 20 else 8 if n_tokens <= 30 else 7


def _set_token_ticks(ax, q_tokens, k_tokens, top: bool = True, fontsize=None) -> None:
    """Tokens as tick labels: keys along x, queries along y.

    An axis without tokens, or with more than ``MAX_TICK_LABELS`` of them
    (their labels would overlap), gets whole-number position ticks instead.
    """
    from matplotlib.ticker import MaxNLocator

    if top:
        # Keys on top, like a matrix read row by row: "query i attends to key j".
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
    for axis, tokens in ((ax.xaxis, k_tokens), (ax.yaxis, q_tokens)):
        if tokens is None or len(tokens) > MAX_TICK_LABELS:
            axis.set_major_locator(MaxNLocator(integer=True))
            continue
        axis.set_ticks(range(len(tokens)))
        axis.set_ticklabels([_display_token(t) for t in tokens],
                            fontsize=fontsize or _tick_fontsize(len(tokens)))
    _turn_long_labels(ax)
    ax.tick_params(length=0)


def _turn_long_labels(ax) -> None:
    """Rotate x labels longer than two characters (like "[CLS]") by 90 degrees.

    Single characters read best upright; only the long ones would run into
    their neighbours.
    """
    for label in ax.get_xticklabels():
        if len(label.get_text()) > 2:
            label.set_rotation(90)


def _text_colour(rgba) -> str:
    """Black on light cells, white on dark ones (perceived luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def text_colour(rgba) -> str:
    """"black" or "white", whichever reads better on a cell of colour ``rgba``, e.g. ``image.cmap(image.norm(v))``.

    For numbers written on a heatmap in a notebook (the plots here do it themselves).
    """
    return _text_colour(rgba)


def _annotate_cells(ax, values: np.ndarray, image, fmt: str, fontsize: float) -> None:
    """Print each cell's value in the cell, in a colour that stays readable."""
    for (i, j), v in np.ndenumerate(values):
        colour = _text_colour(image.cmap(image.norm(v)))
        ax.text(j, i, format(v, fmt), ha="center", va="center",
                color=colour, fontsize=fontsize)


# ----------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------

def _colour_rule(vmax_given, vmax) -> str:
    """The colour bar's label: which rule set the top of the scale (one rule for every attention figure)."""
    if vmax_given == "auto":
        return f"attention weight (colour: 0 to this figure's largest, {vmax:.2f})"
    return f"attention weight (colour: 0 to {vmax:g})"


def attention_map(weights, q_tokens, k_tokens=None, title=None, ax=None,
                  cmap="viridis", annotate=None, vmax="auto", path=None):
    """Draw one head's attention weights as a heat map with tokens on both axes.

    weights:  (Tq, Tk) attention weights; row i is how query i spreads its
              attention over the keys (each row sums to 1, or is all zeros for a
              fully masked query).
    q_tokens: Tq token strings (rows). k_tokens: Tk strings (columns); default
              ``q_tokens`` (self-attention).
    annotate: print the weight in each cell; ``None`` = only when Tq, Tk <= 12.
    vmax:     top of the colour scale. The default ``'auto'`` stretches it from
              0 to the largest weight shown (and lets it go below 0, for raw
              scores): averaged maps, whose weights are small, stay readable.
              A number fixes the scale to [0, vmax] (1.0 to compare maps by
              colour). The colour bar's label says which rule was used.
    Returns the Figure (the one ``ax`` belongs to, when ``ax`` is given).
    """
    weights = _to_numpy(weights)
    _check_ndim(weights, "weights", 2, "(Tq, Tk)")
    _check_finite(weights, "weights")
    Tq, Tk = weights.shape
    q_tokens = _check_tokens(q_tokens, "q_tokens", Tq, "row of weights")
    k_tokens = q_tokens if k_tokens is None else _check_tokens(
        k_tokens, "k_tokens", Tk, "column of weights")
    _use_cjk_if_needed(q_tokens, k_tokens, title)

    vmax_given = vmax
    if vmax == "auto":
        vmin, vmax = min(0.0, float(weights.min())), float(weights.max())
    else:
        vmin, vmax = 0.0, float(vmax)
    if annotate is None:
        annotate = max(Tq, Tk) <= 12

    if ax is None:
        cell = 0.5 if annotate else 0.35  # inches; numbers need the bigger cells
        fig, ax = _new_figure((_clip(cell * Tk + 2.0, 4.0, 14.0),
                               _clip(cell * Tq + 1.5, 3.0, 14.0)))
    else:
        fig = ax.figure

    image = ax.imshow(weights, cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal")
    _set_token_ticks(ax, q_tokens, k_tokens, top=True)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if annotate:
        _annotate_cells(ax, weights, image, ".2f", fontsize=7 if max(Tq, Tk) > 8 else 8)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=_colour_rule(vmax_given, vmax))
    if title:
        ax.set_title(title, pad=12)
    return _finish(fig, path)


def _stack_layers(weights, name: str) -> np.ndarray:
    """(L, H, Tq, Tk) from a 4-D array or from a list of L arrays (H, Tq, Tk)."""
    if isinstance(weights, (list, tuple)):
        layers = [_to_numpy(w) for w in weights]
        for l, w in enumerate(layers):
            _check_ndim(w, f"{name}[{l}]", 3, "(H, Tq, Tk)")
        if len({w.shape for w in layers}) != 1:
            raise ValueError(f"every layer of {name} must have the same shape (H, Tq, Tk), "
                             f"got {[w.shape for w in layers]}")
        weights = np.stack(layers)
    weights = _to_numpy(weights)
    _check_ndim(weights, name, 4, "(L, H, Tq, Tk) or a list of L arrays (H, Tq, Tk)")
    _check_finite(weights, name)
    return weights


#: Attention grids are drawn for a handout: at most this wide (inches), with token
#: labels of at least ~8 pt at that size. Long sentences wrap the panels onto more rows.
HANDOUT_WIDTH = 7.5


def attention_grid(weights, tokens, title=None, vmax="auto", path=None):
    """Every layer and head at once: one attention map per (layer, head), in reading order.

    weights: (L, H, Tq, Tk) array, or a list of L arrays (H, Tq, Tk) (what you
             get by collecting each layer's weights for one sequence of the batch).
    tokens:  the sequence's *real* tokens. When the sequence was padded,
             T = len(tokens) is smaller than Tq, Tk and the weights are cropped
             to [:T, :T]: padding queries and keys carry no information
             (padding keys get weight 0 from the mask anyway).
    Panels are titled "layer l · head h", counted from 0 like the Python indexes
    ``weights[l, h]``, and run row by row: layer 0's heads first. The figure
    fits `HANDOUT_WIDTH` inches with token labels readable at that size, so a
    long sentence gets fewer panels per row. They share one colour scale:
    ``'auto'`` (default) 0 to the largest weight shown, or [0, vmax]; the
    colour bar says which.
    Returns the Figure.
    """
    import math

    weights = _stack_layers(weights, "weights")
    L, H, Tq, Tk = weights.shape
    tokens = [str(t) for t in tokens]
    T = len(tokens)
    if T == 0 or T > min(Tq, Tk):
        raise ValueError(f"tokens must hold between 1 and min(Tq, Tk) = {min(Tq, Tk)} "
                         f"real tokens, got {T}")
    weights = weights[:, :, :T, :T]  # (L, H, Tq, Tk) -> (L, H, T, T): drop padding
    _use_cjk_if_needed(tokens, title)
    vmax_given = vmax
    vmax = float(weights.max()) if vmax == "auto" else float(vmax)

    # A token needs ~0.15 inch for a readable (~8 pt) label. Put a layer's H heads
    # in one row when that fits the handout width; otherwise wrap each layer over
    # two rows (never more: the figure would outgrow the page), so a row never
    # mixes two layers.
    n = L * H
    room = HANDOUT_WIDTH - 1.3                               # inches left by labels and colour bar
    fits = [d for d in range(1, H + 1) if H % d == 0 and room / d - 0.15 >= 0.15 * T + 0.1]
    ncols = max(max(fits, default=1), min(d for d in range(1, H + 1) if H % d == 0 and 2 * d >= H))
    cell = min(3.2, room / ncols - 0.15) if T <= MAX_TICK_LABELS else min(2.4, room / ncols - 0.15)
    nrows = math.ceil(n / ncols)
    fontsize = min(10.0, 0.75 * 72 * cell / T)
    fig, axes = _new_figure((min(cell * ncols + 1.3, HANDOUT_WIDTH),
                             (cell + 0.35) * nrows + 0.5 + (0.4 if title else 0)),
                            nrows=nrows, ncols=ncols, squeeze=False, sharex=True, sharey=True,
                            layout="constrained")
    flat = axes.ravel()
    for k in range(n):
        l, h = divmod(k, H)
        image = flat[k].imshow(weights[l, h], cmap="viridis", vmin=0.0, vmax=vmax)
        flat[k].set_title(f"layer {l} · head {h}", fontsize=9)
    for ax in flat[n:]:
        fig.delaxes(ax)                 # the empty cells of a last, partial row
    # The axes are shared, so setting the ticks once sets them everywhere; labels
    # then go on the left column and on the lowest panel of each column.
    _set_token_ticks(flat[0], tokens, tokens, top=False, fontsize=fontsize)
    for k in range(n):
        ax = flat[k]
        ax.tick_params(length=0, labelsize=fontsize, labelleft=k % ncols == 0, labelbottom=k + ncols >= n)
        _turn_long_labels(ax)
    fig.colorbar(image, ax=list(flat[:n]), shrink=0.9 if nrows > 1 else 1.0, label=_colour_rule(vmax_given, vmax))
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def rollout(weights) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020): how much each output position
    draws, through all layers, on each input token.

    weights: (L, H, T, T) array, or a list of L arrays (H, T, T).
    Returns R, (T, T); row i sums to 1 and says how output position i mixes the
    input tokens.

    Per layer, average the heads and add the identity for the residual
    connection, which carries x_i past the attention unchanged; renormalise
    the rows:

    .. math::
        \\hat A_l = \\frac{\\bar W_l + I}{\\text{rowsum}(\\bar W_l + I)}, \\qquad
        \\bar W_l = \\frac{1}{H}\\sum_h W_{l,h}

    then compose the layers, the first layer acting first:

    .. math::
        R = \\hat A_{L-1} \\cdots \\hat A_1 \\hat A_0

    (For rows of weights that sum to 1, the renormalisation gives
    0.5 W + 0.5 I, the paper's form; it also keeps fully masked, all-zero rows
    well defined.)
    """
    weights = _stack_layers(weights, "weights")
    L, H, Tq, Tk = weights.shape
    if Tq != Tk:
        raise ValueError(f"rollout needs self-attention weights (T, T), got Tq={Tq}, Tk={Tk}")
    mixed = weights.mean(axis=1) + np.eye(Tk)               # (L, H, T, T) -> (L, T, T)
    mixed = mixed / mixed.sum(axis=-1, keepdims=True)       # rows sum to 1 again
    result = mixed[0]                                       # (T, T)
    for l in range(1, L):
        result = mixed[l] @ result                          # (T, T) @ (T, T) -> (T, T)
    return result


# ----------------------------------------------------------------------------
# Positional encoding and masks
# ----------------------------------------------------------------------------

def pe_heatmap(pe, title=None, ax=None, vlim=None, path=None):
    """Positional encodings as a heat map: positions down, dimensions across.

    pe:    (T, D) positional encoding, one row per position.
    vlim:  the colour scale is symmetric, [-vlim, vlim] (0 is white, so sign is
           what you see); default max |pe|. Pass the same vlim to compare plots.
    Returns the Figure.
    """
    pe = _to_numpy(pe)
    _check_ndim(pe, "pe", 2, "(T, D)")
    _check_finite(pe, "pe")
    _use_cjk_if_needed(title)
    if vlim is None:
        vlim = float(np.abs(pe).max()) or 1.0
    if ax is None:
        fig, ax = _new_figure((7.0, 4.5))
    else:
        fig = ax.figure
    image = ax.imshow(pe, cmap="RdBu_r", vmin=-vlim, vmax=vlim,
                      aspect="auto", interpolation="nearest")
    ax.set_xlabel("dimension")
    ax.set_ylabel("position")
    fig.colorbar(image, ax=ax, label="value")
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def pe_comparison(pe_correct, pe_seed, path=None):
    """The correct sinusoidal encoding next to the seed's variant (errata E1).

    pe_correct, pe_seed: (T, D), same shape. Both panels share one colour
    scale, so the seed's wider range (sin + cos reaches ±sqrt(2)) is visible.
    Returns the Figure.
    """
    pe_correct = _to_numpy(pe_correct)
    pe_seed = _to_numpy(pe_seed)
    _check_ndim(pe_correct, "pe_correct", 2, "(T, D)")
    if pe_seed.shape != pe_correct.shape:
        raise ValueError(f"pe_seed must have the shape of pe_correct {pe_correct.shape}, "
                         f"got {pe_seed.shape}")
    vlim = float(max(np.abs(pe_correct).max(), np.abs(pe_seed).max())) or 1.0
    fig, (left, right) = _new_figure((12.0, 4.5), ncols=2, sharey=True,
                                     layout="constrained")
    pe_heatmap(pe_correct, ax=left, vlim=vlim,
               title="correct: PE[pos, 2i] = sin, PE[pos, 2i+1] = cos")
    pe_heatmap(pe_seed, ax=right, vlim=vlim,
               title="seed (E1): PE = sin + cos, one value per frequency")
    right.set_ylabel("")
    return _finish(fig, path)


def mask_image(mask, tokens=None, title=None, ax=None, path=None):
    """Draw a boolean attention mask: which keys each query may attend to.

    mask:   (Tq, Tk) bool, True = may attend (the project's convention).
    tokens: Tk key tokens; they also label the rows when Tq == Tk.
    Returns the Figure.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    mask = _to_numpy(mask)
    _check_ndim(mask, "mask", 2, "(Tq, Tk)")
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be a bool array (True = may attend), got dtype {mask.dtype}")
    Tq, Tk = mask.shape
    k_tokens = q_tokens = None
    if tokens is not None:
        k_tokens = _check_tokens(tokens, "tokens", Tk, "column of mask")
        q_tokens = k_tokens if Tq == Tk else None
    _use_cjk_if_needed(tokens, title)

    if ax is None:
        fig, ax = _new_figure((_clip(0.35 * Tk + 3.0, 4.5, 14.0),
                               _clip(0.35 * Tq + 1.5, 3.0, 14.0)))
    else:
        fig = ax.figure
    allowed, blocked = "#2f6eb5", "#ececec"
    ax.imshow(mask.astype(int), cmap=ListedColormap([blocked, allowed]),
              vmin=0, vmax=1, aspect="equal")
    # Thin white lines between cells so single cells can be counted.
    ax.set_xticks(np.arange(-0.5, Tk), minor=True)
    ax.set_yticks(np.arange(-0.5, Tq), minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    _set_token_ticks(ax, q_tokens, k_tokens, top=True)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.legend(handles=[Patch(color=allowed, label="True: may attend"),
                       Patch(color=blocked, label="False: masked (weight 0)")],
              loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    if title:
        ax.set_title(title, pad=12)
    return _finish(fig, path)


# ----------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------

_X_KEYS = ("step", "epoch")
# Series drawn in the score panel; anything else that is neither a loss nor
# one of these (lr, seconds, tokens_per_s, best_epoch, ...) is not plotted.
_SCORE_WORDS = ("acc", "f1", "auc", "precision", "recall", "specificity")


def _numeric_series(history: dict) -> dict[str, np.ndarray]:
    """The entries of ``history`` that are non-empty 1-D lists of numbers."""
    series = {}
    for key, values in history.items():
        if key in _X_KEYS or isinstance(values, (str, bytes)) or np.ndim(values) != 1:
            continue
        values = np.asarray(values)
        if values.size and values.dtype.kind in "biuf":
            series[key] = values.astype(float)
    return series


def training_curves(history, path=None):
    """Loss curves on the left, accuracy (and other scores) on the right.

    history: dict of equal-length lists, e.g. ``{'train_loss': [...],
             'valid_loss': [...], 'valid_acc': [...]}`` (``History.as_dict()``
             from train.py works as it is). Keys containing "loss" go to the
             loss panel; keys containing "acc", "f1", "auc", "precision",
             "recall" or "specificity" to the score panel; other entries (lr,
             seconds, ...) are not drawn. The x axis is ``history['step']`` if
             present, else ``history['epoch']``, else 1, 2, ... (epochs).
             Validation curves ("valid"/"val_"/"test" keys) are dashed; a
             dotted line marks the lowest validation loss. If the history
             also has ``curve_step`` and ``curve_loss`` (the training loss
             logged within epochs, as `train.History` keeps it), that curve
             is drawn as a thin line against the step, so a run of a few
             epochs still shows how the loss fell.
    Returns the Figure.
    """
    if not isinstance(history, dict) or not history:
        raise ValueError("history must be a non-empty dict of lists, e.g. {'train_loss': [...]}")
    within = None
    if len(history.get("curve_loss", [])) and len(history.get("curve_step", [])):
        if len(history["curve_loss"]) != len(history["curve_step"]):
            raise ValueError(f"history['curve_loss'] has {len(history['curve_loss'])} values but "
                             f"history['curve_step'] has {len(history['curve_step'])}")
        within = (np.asarray(history["curve_step"], dtype=float), np.asarray(history["curve_loss"], dtype=float))
    history = {k: v for k, v in history.items() if k not in ("curve_step", "curve_loss")}
    series = _numeric_series(history)
    losses = {k: v for k, v in series.items() if "loss" in k}
    scores = {k: v for k, v in series.items()
              if "loss" not in k and any(word in k for word in _SCORE_WORDS)}
    if not losses and not scores:
        raise ValueError(f"history has no loss or accuracy series to plot, only {sorted(history)}")
    x_key = next((k for k in _X_KEYS if k in history and len(history[k])), None)
    if x_key is not None:
        x = np.asarray(history[x_key], dtype=float)
        for key, values in {**losses, **scores}.items():
            if values.size != x.size:
                raise ValueError(f"history[{key!r}] has {values.size} values but "
                                 f"history[{x_key!r}] has {x.size}")

    def x_for(values):
        return x if x_key is not None else np.arange(1, values.size + 1)

    panels = [p for p in ((losses, "loss"), (scores, "accuracy / score")) if p[0]]
    fig, axes = _new_figure((5.5 * len(panels), 4.0), ncols=len(panels),
                            squeeze=False, layout="constrained")
    for ax, (curves, ylabel) in zip(axes[0], panels):
        if ylabel == "loss" and within is not None and x_key == "step":
            ax.plot(*within, "-", linewidth=0.8, alpha=0.6, color="grey",
                    label="train_loss within epochs (mean of each log interval)")
        for key, values in curves.items():
            dashed = key.startswith(("valid", "val_", "test"))
            ax.plot(x_for(values), values, "--" if dashed else "-",
                    marker="o" if values.size <= 30 else None, markersize=3, label=key)
        if ylabel != "loss" and all(np.nanmin(v) >= 0 and np.nanmax(v) <= 1
                                    for v in curves.values()):
            ax.set_ylim(0, 1.02)
        if ylabel == "loss" and "valid_loss" in curves:
            # The epoch that early stopping keeps: the lowest validation loss.
            best = int(np.nanargmin(curves["valid_loss"]))
            ax.axvline(x_for(curves["valid_loss"])[best], color="grey", linestyle=":",
                       linewidth=1, label="lowest valid_loss")
        ax.set_xlabel(x_key or "epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    return _finish(fig, path)


def roc_plot(fpr, tpr, auc=None, ax=None, path=None):
    """The ROC curve, true-positive rate against false-positive rate.

    fpr, tpr: (N,) points of the curve, from (0, 0) to (1, 1), e.g. from the
              thresholds of a classifier's positive-class probability.
    auc:      area under the curve, shown in the legend when given.
    The dashed diagonal is a classifier that guesses (AUC = 0.5).
    Returns the Figure.
    """
    fpr = _to_numpy(fpr).astype(float)
    tpr = _to_numpy(tpr).astype(float)
    _check_ndim(fpr, "fpr", 1, "(N,)")
    if tpr.shape != fpr.shape:
        raise ValueError(f"tpr must have the shape of fpr {fpr.shape}, got {tpr.shape}")
    _check_finite(fpr, "fpr")
    _check_finite(tpr, "tpr")
    if ax is None:
        fig, ax = _new_figure((4.8, 4.5))
    else:
        fig = ax.figure
    label = "ROC" if auc is None else f"ROC (AUC = {float(auc):.3f})"
    ax.plot(fpr, tpr, linewidth=2, label=label)
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="chance (AUC = 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false-positive rate  FP / (FP + TN)")
    ax.set_ylabel("true-positive rate (recall)  TP / (TP + FN)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _finish(fig, path)


def _ratio(numerator: float, denominator: float) -> str:
    """numerator / denominator as text; '0/0' instead of a NaN."""
    return f"{numerator / denominator:.3f}" if denominator else "undefined (0/0)"


def binary_rates_text(cm, positive: int = 1) -> str:
    """The four rates of a 2x2 confusion matrix, with their definitions (errata E5).

    cm: (2, 2) counts, rows = true class, columns = predicted class.
    positive: index of the positive class.
    """
    p, n = positive, 1 - positive
    tp, fn = float(cm[p, p]), float(cm[p, n])
    fp, tn = float(cm[n, p]), float(cm[n, n])
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    if math.isnan(precision) or math.isnan(recall) or precision + recall == 0:
        f1 = "undefined"
    else:
        f1 = f"{2 * precision * recall / (precision + recall):.3f}"
    lines = [
        f"TP = {tp:g}  FN = {fn:g}",
        f"FP = {fp:g}  TN = {tn:g}",
        "",
        f"precision   = TP / (TP + FP) = {_ratio(tp, tp + fp)}",
        f"recall      = TP / (TP + FN) = {_ratio(tp, tp + fn)}",
        f"specificity = TN / (TN + FP) = {_ratio(tn, tn + fp)}",
        f"F1 = 2PR / (P + R)           = {f1}",
        f"accuracy    = (TP + TN) / N  = {_ratio(tp + tn, tp + tn + fp + fn)}",
        "",
        "The seed's \"recall\" is specificity,",
        "its \"precision\" is recall (errata E5).",
    ]
    return "\n".join(lines)


def confusion_plot(cm, label_names, ax=None, path=None, normalize=False, positive=1):
    """A confusion matrix with the count in each cell.

    cm:          (C, C) counts; rows = true class, columns = predicted class
                 (the convention of ``sklearn.metrics.confusion_matrix``).
    label_names: C class names.
    normalize:   colour and print each row as fractions of its true class
                 (the diagonal is then the per-class recall); counts are kept
                 in brackets.
    positive:    for C = 2, the index of the positive class. A box beside the
                 matrix lists TP, FP, FN, TN and precision, recall,
                 specificity, F1 with their definitions.
    Returns the Figure.
    """
    cm = _to_numpy(cm)
    _check_ndim(cm, "cm", 2, "(C, C)")
    C = cm.shape[0]
    if cm.shape != (C, C):
        raise ValueError(f"cm must be square (C, C), got shape {cm.shape}")
    if np.any(cm < 0):
        raise ValueError("cm must hold counts >= 0")
    label_names = _check_tokens(label_names, "label_names", C, "class")
    if C == 2 and positive not in (0, 1):
        raise ValueError(f"positive must be 0 or 1 for a binary cm, got {positive}")
    _use_cjk_if_needed(label_names)

    counts = cm.astype(float)
    row_totals = counts.sum(axis=1, keepdims=True)
    shown = np.divide(counts, row_totals, out=np.zeros_like(counts),
                      where=row_totals > 0) if normalize else counts

    if ax is None:
        fig, ax = _new_figure((_clip(1.1 * C + 2.5, 4.0, 12.0) + (3.8 if C == 2 else 0),
                               _clip(1.1 * C + 1.8, 3.5, 12.0)))
    else:
        fig = ax.figure
    image = ax.imshow(shown, cmap="Blues", vmin=0,
                      vmax=1.0 if normalize else max(float(shown.max()), 1.0))
    for (i, j), value in np.ndenumerate(shown):
        text = f"{value:.2f}\n({counts[i, j]:g})" if normalize else f"{counts[i, j]:g}"
        ax.text(j, i, text, ha="center", va="center", fontsize=11,
                color=_text_colour(image.cmap(image.norm(value))))
    ax.set_xticks(range(C))
    ax.set_xticklabels([_display_token(n) for n in label_names])
    ax.set_yticks(range(C))
    ax.set_yticklabels([_display_token(n) for n in label_names])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(length=0)
    if C == 2:
        ax.text(1.08, 0.5, binary_rates_text(counts, positive), transform=ax.transAxes,
                ha="left", va="center", family="monospace", fontsize=9,
                bbox=dict(boxstyle="round", facecolor="#f7f7f7", edgecolor="#bbbbbb"))
        ax.set_title(f"positive class: {label_names[positive]}", fontsize=10)
    return _finish(fig, path)


# --------------------------------------------------------------------------- #
# Zero-shot and few-shot (notebook 13): curves over k, label words before and after calibration
# --------------------------------------------------------------------------- #

_FEW_SHOT_STYLE = {   # method key -> (label, colour, marker)
    "proto_cosine": ("prototypes, cosine", "tab:blue", "o"),
    "proto_euclidean": ("prototypes, squared Euclidean", "tab:cyan", "s"),
    "lr_embedding": ("logistic regression on the embeddings", "tab:green", "^"),
    "tfidf_lr": ("character TF-IDF + logistic regression", "tab:red", "v"),
}


def few_shot_curves(result, zero_shot=None, path=None):
    """Test accuracy against the number of labelled examples per class, every method on one axes.

    result: the ``few_shot`` dict of `zeroshot.few_shot_experiment` (``accuracy[method][str(k)]`` = one
    accuracy per draw). A line is the mean over draws, the band mean ± one standard deviation.
    Fine-tuning (few draws, a subset of the test texts) is drawn as separate points, with the cosine
    prototypes of the same draws on the same texts beside it. zero_shot: optional {label: accuracy},
    drawn as horizontal lines (no labels at all). Returns the Figure.
    """
    acc = result["accuracy"]
    fig, ax = _new_figure((7.5, 4.6), layout="constrained")
    for key, (label, colour, marker) in _FEW_SHOT_STYLE.items():
        if not acc.get(key):
            continue
        ks = sorted(int(k) for k in acc[key])
        runs = [np.asarray(acc[key][str(k)], dtype=float) for k in ks]
        mean = np.array([r.mean() for r in runs])
        std = np.array([r.std() for r in runs])
        ax.plot(ks, mean, marker=marker, color=colour, label=f"{label} ({len(runs[0])} draws)")
        ax.fill_between(ks, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)
    if acc.get("finetune"):
        ks = sorted(int(k) for k in acc["finetune"])
        ft = [float(np.mean(acc["finetune"][str(k)])) for k in ks]
        pr = [float(np.mean(acc["proto_cosine_subset"][str(k)])) for k in ks]
        ft_info = result.get("finetune", {})
        n = len(acc["finetune"][str(ks[0])])
        ax.plot(ks, ft, "D--", color="tab:purple", markersize=6,
                label=f"fine-tune the whole model ({n} draw{'s' if n > 1 else ''}, "
                      f"{ft_info.get('n_test', '?')} test texts)")
        ax.plot(ks, pr, "o:", color="tab:blue", markerfacecolor="none", markersize=7,
                label="prototypes, cosine, on those draws and texts")
    for (label, value), style in zip((zero_shot or {}).items(), ("--", "-.", ":")):
        ax.axhline(value, color="0.35", linestyle=style, linewidth=1)
        ax.text(1, value, f" {label}: {value:.3f}", va="bottom", fontsize=8, color="0.25")
    ax.axhline(0.5, color="0.7", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks([int(k) for k in result["ks"]], [str(k) for k in result["ks"]])
    ax.set_xlabel("labelled examples per class, k")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"few-shot sentiment: mean ± 1 s.d. over draws, {result.get('n_test', '?')} test reviews",
                 fontsize=10)
    ax.legend(fontsize=7.5, loc="lower right")
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def calibration_bars(rows, split="valid", path=None):
    """Label-word accuracy before and after contextual calibration, one pair of bars per alternative.

    rows: the ``label_words`` list of `zeroshot.zero_shot_experiment` (each with ``name``,
    ``calibrated`` and ``<split>_accuracy``). Alternatives without that split are skipped.
    Returns the Figure.
    """
    pairs = {}
    for r in rows:
        if f"{split}_accuracy" in r:
            pairs.setdefault(r["name"], {})[bool(r["calibrated"])] = r[f"{split}_accuracy"]
    names = [n for n, v in pairs.items() if len(v) == 2]
    if not names:
        raise ValueError(f"rows: no alternative has both a raw and a calibrated {split}_accuracy")
    _use_cjk_if_needed(names)
    y = np.arange(len(names))
    fig, ax = _new_figure((7.5, 0.42 * len(names) + 1.3), layout="constrained")
    raw = [pairs[n][False] for n in names]
    cal = [pairs[n][True] for n in names]
    ax.barh(y - 0.2, raw, height=0.38, color="0.65", label="raw P(label word)")
    ax.barh(y + 0.2, cal, height=0.38, color="tab:blue", label="calibrated (÷ content-free P)")
    for yy, a, b in zip(y, raw, cal):
        ax.text(a, yy - 0.2, f" {a:.3f}", va="center", fontsize=7)
        ax.text(b, yy + 0.2, f" {b:.3f}", va="center", fontsize=7)
    ax.axvline(0.5, color="0.3", linewidth=0.8, linestyle=":")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.3, 1.0)
    ax.set_xlabel(f"{'validation' if split == 'valid' else split} accuracy")
    ax.set_title("zero-shot label words: before and after contextual calibration", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _finish(fig, path)


# ----------------------------------------------------------------------------
# Notebooks
# ----------------------------------------------------------------------------

NOTEBOOK_DPI = 80


def _compact_png(fig) -> bytes:
    """A figure as a 256-colour PNG: it looks the same in a notebook and takes about a third of the bytes."""
    import io

    from PIL import Image   # matplotlib depends on Pillow

    image, out = io.BytesIO(), io.BytesIO()
    fig.savefig(image, format="png", bbox_inches="tight")
    Image.open(image).convert("RGB").quantize(256).save(out, format="png", optimize=True)
    return out.getvalue()


def notebook_setup(precision: int = 3) -> str | None:
    """The first cell of every notebook: ``from numpy_transformer import viz; viz.notebook_setup()``.

    * figures inline, as PNG (stored as compact 256-colour PNGs, so that the
      committed notebooks stay small), at ``NOTEBOOK_DPI`` dots per inch;
    * Chinese labels drawn with a CJK font (``use_cjk_font``), whose name it prints;
    * NumPy prints ``precision`` decimals, no scientific notation for small
      numbers, 100 characters a line.

    Outside IPython (a plain ``python notebooks/NN_title.py``) the figure
    settings that need IPython are skipped. Returns the CJK font's family, or None.
    """
    import matplotlib

    ip = None
    try:
        from IPython import get_ipython
        ip = get_ipython()
    except ImportError:
        pass
    if ip is not None and hasattr(ip, "kernel"):
        import matplotlib.pyplot  # noqa: F401  (first: importing pyplot resets the figure formatters)
        from matplotlib.figure import Figure

        ip.run_line_magic("matplotlib", "inline")
        ip.run_line_magic("config", "InlineBackend.figure_formats = ['png']")
        ip.display_formatter.formatters["image/png"].for_type(Figure, _compact_png)
    matplotlib.rcParams["figure.dpi"] = NOTEBOOK_DPI
    np.set_printoptions(precision=precision, suppress=True, linewidth=100)
    family = use_cjk_font()
    print("font for Chinese labels:", family)
    return family


def table(values, rows, cols, fmt: str = "{:.3f}") -> None:
    """Show a small matrix in a notebook as an HTML table: ``values[i][j]`` in row ``rows[i]``, column ``cols[j]``.

    Numbers are formatted with ``fmt``, strings shown as they are (HTML-escaped).
    """
    import html

    from IPython.display import HTML, display

    def show(v):
        return html.escape(v if isinstance(v, str) else fmt.format(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["", *cols])
    body = "".join(f"<tr><th>{html.escape(str(r))}</th>" + "".join(f"<td>{show(v)}</td>" for v in row) + "</tr>"
                   for r, row in zip(rows, values))
    display(HTML(f"<table><tr>{head}</tr>{body}</table>"))

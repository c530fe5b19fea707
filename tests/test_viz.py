"""Tests for numpy_transformer.viz: Chinese glyphs really render, every plot
writes a PNG, attention_grid crops padding, and rollout is the right product."""

import sys
import warnings

import matplotlib

matplotlib.use("Agg")  # tests never need a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.font_manager import FontProperties, fontManager  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402

from numpy_transformer import viz  # noqa: E402

SENTENCE = "这是一个有趣的文章，我很喜欢阅读它。"  # the seed's 文本1 (seed-errata.md)
TOKENS = list(SENTENCE)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def random_attention(rng, *shape):
    """Row-stochastic weights of shape (..., T, T), like a softmax output."""
    scores = rng.normal(size=shape)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def glyph_warnings(records):
    return [str(r.message) for r in records
            if "Glyph" in str(r.message) and "missing" in str(r.message)]


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > 2000, f"{path} is suspiciously small ({len(data)} bytes)"


# ----------------------------------------------------------------------------
# Fonts
# ----------------------------------------------------------------------------

def test_find_cjk_font_returns_a_family_whose_file_has_the_glyphs():
    family = viz.find_cjk_font()
    assert isinstance(family, str) and family
    path = fontManager.findfont(FontProperties(family=family), fallback_to_default=False)
    # Ask FreeType directly rather than trusting viz.font_has_glyphs.
    font = FT2Font(path)
    missing = [ch for ch in SENTENCE if font.get_char_index(ord(ch)) == 0]
    assert missing == [], f"{path} lacks glyphs for {missing}"


def test_attention_map_renders_chinese_without_missing_glyph_warnings(tmp_path):
    weights = random_attention(np.random.default_rng(0), len(TOKENS), len(TOKENS))
    path = tmp_path / "attention.png"
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        # Glyphs are looked up when text is drawn, i.e. inside savefig.
        viz.attention_map(weights, TOKENS, title="注意力：文本1", path=path)
    assert glyph_warnings(records) == []
    assert_png(path)


def test_glyph_check_fails_when_no_cjk_font_is_used(tmp_path, monkeypatch):
    # Guards the test above: with DejaVu Sans only, the same drawing must warn,
    # otherwise "no warning" would prove nothing.
    monkeypatch.setattr(viz, "use_cjk_font", lambda: None)
    weights = np.full((3, 3), 1 / 3)
    with matplotlib.rc_context({"font.family": "sans-serif",
                                "font.sans-serif": ["DejaVu Sans"]}):
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            viz.attention_map(weights, ["有", "趣", "。"], path=tmp_path / "boxes.png")
    assert glyph_warnings(records) != []


def test_mplfonts_font_is_located_without_importing_mplfonts():
    was_imported = "mplfonts" in sys.modules
    path = viz._mplfonts_font_path()
    assert path is not None and path.name == "NotoSansCJKsc-Regular.otf"
    assert viz.font_has_glyphs(path)
    if not was_imported:
        assert "mplfonts" not in sys.modules


def test_no_cjk_font_warns_once_with_install_hint_and_plots_still_work(tmp_path, monkeypatch):
    monkeypatch.setattr(viz, "_installed_cjk_font", lambda: None)
    monkeypatch.setattr(viz, "_mplfonts_font_path", lambda: None)
    viz.find_cjk_font.cache_clear()
    try:
        with pytest.warns(UserWarning, match="pip install mplfonts"):
            assert viz.find_cjk_font() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second warning would raise here
            assert viz.find_cjk_font() is None
            assert viz.use_cjk_font() is None
        fig = viz.mask_image(np.eye(3, dtype=bool), ["a", "b", "c"], path=tmp_path / "m.png")
        assert fig is not None
    finally:
        viz.find_cjk_font.cache_clear()  # later tests search again, for real


def test_font_has_glyphs_rejects_latin_only_font_and_broken_file(tmp_path):
    dejavu = fontManager.findfont(FontProperties(family="DejaVu Sans"))
    assert not viz.font_has_glyphs(dejavu)
    broken = tmp_path / "broken.otf"
    broken.write_text("version https://git-lfs.github.com/spec/v1\n")
    assert not viz.font_has_glyphs(broken)


def test_use_cjk_font_puts_the_family_first():
    with matplotlib.rc_context():
        family = viz.use_cjk_font()
        assert matplotlib.rcParams["font.sans-serif"][0] == family
        assert matplotlib.rcParams["font.family"] == ["sans-serif"]
        assert matplotlib.rcParams["axes.unicode_minus"] is False


# ----------------------------------------------------------------------------
# Every plot writes a PNG
# ----------------------------------------------------------------------------

def _plots():
    rng = np.random.default_rng(1)
    T = len(TOKENS)
    positions = np.arange(20)[:, None]
    angles = positions / 10000 ** (np.arange(0, 16, 2) / 16)
    pe = np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(20, 16)
    pe_seed = np.repeat(np.sin(angles) + np.cos(angles), 2, axis=1)
    return {
        "attention_map": lambda p: viz.attention_map(random_attention(rng, T, T), TOKENS, path=p),
        "attention_map_small": lambda p: viz.attention_map(
            random_attention(rng, 4, 5), ["有", "趣", "文", "章"], list("无聊喜欢读"),
            vmax="auto", path=p),
        "attention_grid": lambda p: viz.attention_grid(
            random_attention(rng, 2, 4, T, T), TOKENS, title="2 × 4", path=p),
        "pe_heatmap": lambda p: viz.pe_heatmap(pe, title="PE", path=p),
        "pe_comparison": lambda p: viz.pe_comparison(pe, pe_seed, path=p),
        "mask_image": lambda p: viz.mask_image(np.tril(np.ones((T, T), bool)), TOKENS, path=p),
        "training_curves": lambda p: viz.training_curves(
            {"train_loss": [1.0, 0.6, 0.4], "valid_loss": [1.1, 0.8, 0.9],
             "valid_acc": [0.5, 0.7, 0.75]}, path=p),
        "roc_plot": lambda p: viz.roc_plot([0, 0.1, 0.4, 1], [0, 0.6, 0.9, 1], auc=0.85, path=p),
        "confusion_plot": lambda p: viz.confusion_plot(
            np.array([[50, 10], [30, 60]]), ["负面", "正面"], path=p),
        "confusion_plot_3class": lambda p: viz.confusion_plot(
            np.array([[5, 1, 0], [2, 7, 1], [0, 3, 9]]), ["a", "b", "c"],
            normalize=True, path=p),
    }


@pytest.mark.parametrize("name", sorted(_plots()))
def test_each_plot_writes_a_png_and_returns_its_figure(name, tmp_path):
    path = tmp_path / "sub" / f"{name}.png"
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        fig = _plots()[name](path)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert_png(path)
    assert glyph_warnings(records) == []


def test_plot_into_callers_axes_returns_that_figure_and_makes_no_new_one():
    fig, axes = plt.subplots(1, 3)
    before = plt.get_fignums()
    assert viz.attention_map(np.eye(3), ["a", "b", "c"], ax=axes[0]) is fig
    assert viz.mask_image(np.eye(3, dtype=bool), ax=axes[1]) is fig
    assert viz.roc_plot([0, 1], [0, 1], ax=axes[2]) is fig
    assert plt.get_fignums() == before
    assert plt.fignum_exists(fig.number)  # not closed behind the caller's back


# ----------------------------------------------------------------------------
# Behaviour of individual plots
# ----------------------------------------------------------------------------

def test_attention_map_annotates_small_maps_only():
    fig = viz.attention_map(np.full((3, 3), 1 / 3), list("abc"))
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["0.33"] * 9
    fig = viz.attention_map(np.full((13, 13), 1 / 13), list("abcdefghijklm"))
    assert len(fig.axes[0].texts) == 0


def test_attention_colour_scales_follow_one_rule_and_the_colour_bar_says_it():
    fig = viz.attention_map(np.full((2, 2), 0.5), ["a", "b"])
    assert fig.axes[0].images[0].get_clim() == (0.0, 0.5)              # default: 0 to the largest weight
    assert fig.axes[1].get_ylabel() == "attention weight (colour: 0 to this figure's largest, 0.50)"
    fig = viz.attention_map(np.full((2, 2), 0.5), ["a", "b"], vmax=1.0)
    assert fig.axes[0].images[0].get_clim() == (0.0, 1.0)
    assert fig.axes[1].get_ylabel() == "attention weight (colour: 0 to 1)"
    rng = np.random.default_rng(0)
    grid = viz.attention_grid(random_attention(rng, 2, 4, 5, 5), list("abcde"))
    largest = max(float(ax.images[0].get_array().max()) for ax in grid.axes if ax.images)
    assert {ax.images[0].get_clim() for ax in grid.axes if ax.images} == {(0.0, largest)}
    assert grid.axes[-1].get_ylabel().startswith("attention weight (colour: 0 to this figure's largest")


@pytest.mark.parametrize("T", [6, 19, 21])      # the demo draws sentences of up to 20 characters + [CLS]
def test_attention_grids_are_readable_at_handout_size(T):
    """At most HANDOUT_WIDTH inches wide, token labels >= 6.5 pt there, a row never mixes two layers."""
    rng = np.random.default_rng(1)
    fig = viz.attention_grid(random_attention(rng, 2, 4, T, T), [f"字{i}"[-1] for i in range(T)])
    assert fig.get_size_inches()[0] <= viz.HANDOUT_WIDTH + 1e-9
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == 8
    sizes = {t.get_fontsize() for ax in heatmaps for t in ax.get_yticklabels()}
    assert min(sizes) >= 6.5
    ncols = heatmaps[0].get_gridspec().ncols
    assert 4 % ncols == 0 and ncols >= 2
    if T <= 6:
        assert ncols == 4                            # short sentences: one layer per row


def test_attention_map_rejects_wrong_token_count_naming_the_argument():
    with pytest.raises(ValueError, match="q_tokens"):
        viz.attention_map(np.eye(3), ["a", "b"])
    with pytest.raises(ValueError, match="k_tokens"):
        viz.attention_map(np.ones((2, 3)) / 3, ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="weights"):
        viz.attention_map(np.ones(3), ["a", "b", "c"])


def test_attention_grid_crops_padding_to_the_real_tokens():
    rng = np.random.default_rng(2)
    L, H, T_padded, T_real = 2, 3, 10, 6
    weights = random_attention(rng, L, H, T_padded, T_padded)
    fig = viz.attention_grid(weights, TOKENS[:T_real])
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == L * H
    assert len(fig.axes) == L * H + 1  # + one shared colour bar
    assert [ax.get_title() for ax in heatmaps][:4] == [
        "layer 0 · head 0", "layer 0 · head 1", "layer 0 · head 2", "layer 1 · head 0"]
    for ax, (l, h) in zip(heatmaps, np.ndindex(L, H)):
        np.testing.assert_array_equal(ax.images[0].get_array(),
                                      weights[l, h, :T_real, :T_real])
    labels = [t.get_text() for t in heatmaps[0].get_yticklabels()]
    assert labels == TOKENS[:T_real]


def test_attention_grid_accepts_a_list_of_layers():
    rng = np.random.default_rng(3)
    layers = [random_attention(rng, 2, 4, 4) for _ in range(3)]
    fig = viz.attention_grid(layers, list("有趣文章"))
    assert sum(1 for ax in fig.axes if ax.get_title()) == 3 * 2


def test_attention_grid_rejects_more_tokens_than_positions():
    with pytest.raises(ValueError, match="tokens"):
        viz.attention_grid(np.ones((1, 1, 3, 3)) / 3, list("abcd"))


def test_attention_grid_hides_token_labels_for_long_sequences():
    T = viz.MAX_TICK_LABELS + 5
    fig = viz.attention_grid(np.full((1, 1, T, T), 1 / T), [f"t{i}" for i in range(T)])
    assert "t0" not in [t.get_text() for t in fig.axes[0].get_xticklabels()]


def test_mask_image_requires_bool():
    with pytest.raises(TypeError, match="mask"):
        viz.mask_image(np.eye(3))


def test_pe_comparison_shares_one_colour_scale():
    fig = viz.pe_comparison(np.full((4, 6), 0.5), np.full((4, 6), -1.4))
    clims = [ax.images[0].get_clim() for ax in fig.axes if ax.images and ax.get_title()]
    assert clims == [(-1.4, 1.4), (-1.4, 1.4)]


def test_training_curves_uses_steps_and_checks_lengths():
    fig = viz.training_curves({"step": [10, 20, 30], "train_loss": [3, 2, 1]})
    assert fig.axes[0].get_xlabel() == "step"
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), [10, 20, 30])
    with pytest.raises(ValueError, match="valid_acc"):
        viz.training_curves({"step": [1, 2], "train_loss": [1, 0.5], "valid_acc": [0.5]})


def test_confusion_rates_use_the_correct_definitions():
    # rows = true (negative, positive), columns = predicted.
    cm = np.array([[50, 10],    # TN = 50, FP = 10
                   [30, 60]])   # FN = 30, TP = 60
    text = viz.binary_rates_text(cm, positive=1)
    assert "precision   = TP / (TP + FP) = 0.857" in text   # 60 / 70
    assert "recall      = TP / (TP + FN) = 0.667" in text   # 60 / 90
    assert "specificity = TN / (TN + FP) = 0.833" in text   # 50 / 60
    assert "= 0.750" in text                                 # F1 = 2PR / (P + R)
    fig = viz.confusion_plot(cm, ["负面", "正面"])
    assert any("0.857" in t.get_text() for t in fig.axes[0].texts)
    cell_texts = sorted(t.get_text() for t in fig.axes[0].texts if "\n" not in t.get_text())
    assert cell_texts == ["10", "30", "50", "60"]


def test_confusion_rates_with_empty_classes_do_not_print_nan():
    text = viz.binary_rates_text(np.array([[5, 0], [0, 0]]))
    assert "nan" not in text.lower()
    assert "undefined" in text


# ----------------------------------------------------------------------------
# Attention rollout
# ----------------------------------------------------------------------------

def test_rollout_rows_sum_to_one():
    weights = random_attention(np.random.default_rng(4), 3, 4, 7, 7)
    result = viz.rollout(weights)
    assert result.shape == (7, 7)
    np.testing.assert_allclose(result.sum(axis=-1), 1.0, atol=1e-12)


def test_rollout_of_identity_attention_is_identity():
    weights = np.broadcast_to(np.eye(5), (3, 2, 5, 5))
    np.testing.assert_allclose(viz.rollout(weights), np.eye(5), atol=1e-12)


def test_rollout_of_uniform_attention():
    T = 4
    uniform = np.full((T, T), 1 / T)
    one_layer = viz.rollout(np.broadcast_to(uniform, (1, 2, T, T)))
    np.testing.assert_allclose(one_layer, 0.5 * np.eye(T) + 0.5 / T, atol=1e-12)
    # (I/2 + U/2)^2 = I/4 + 3U/4, because U @ U = U.
    two_layers = viz.rollout(np.broadcast_to(uniform, (2, 2, T, T)))
    np.testing.assert_allclose(two_layers, 0.25 * np.eye(T) + 0.75 / T, atol=1e-12)


def test_rollout_applies_the_first_layer_first():
    # Layer 0: both positions read token 0. Layer 1: both read position 1.
    # Position 0's output: half from itself (= token 0 after layer 0) and half
    # from position 1 (= half token 0, half token 1): 0.75 token 0.
    layer0 = np.array([[1.0, 0.0], [1.0, 0.0]])
    layer1 = np.array([[0.0, 1.0], [0.0, 1.0]])
    weights = np.stack([layer0, layer1])[:, None]          # (L=2, H=1, 2, 2)
    np.testing.assert_allclose(viz.rollout(weights), [[0.75, 0.25], [0.5, 0.5]])


def test_rollout_averages_heads():
    heads = np.stack([np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]])])   # (H=2, 2, 2)
    # mean = [[.5, .5], [.5, .5]]; + I and renormalise: [[.75, .25], [.25, .75]].
    np.testing.assert_allclose(viz.rollout([heads]), [[0.75, 0.25], [0.25, 0.75]])


def test_training_curves_draws_a_train_history_dict_and_skips_other_entries():
    # The shape of train.History.as_dict(): lists per epoch plus scalars.
    history = {"epoch": [1, 2, 3], "step": [10, 20, 30],
               "train_loss": [0.9, 0.5, 0.3], "valid_loss": [0.8, 0.6, 0.7],
               "valid_acc": [0.6, 0.7, 0.72], "lr": [1e-3, 9e-4, 5e-4],
               "seconds": [1.0, 2.1, 3.0], "tokens_per_s": [5e4, 5e4, 5e4],
               "best_epoch": 2, "stopped_because": "all 3 epochs done"}
    fig = viz.training_curves(history)
    loss_ax, score_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == [
        "train_loss", "valid_loss", "lowest valid_loss"]
    assert [line.get_label() for line in score_ax.lines] == ["valid_acc"]
    assert loss_ax.lines[-1].get_xdata()[0] == 20  # lowest valid_loss at step 20


def test_training_curves_draw_the_loss_logged_within_epochs():
    history = {"epoch": [1, 2], "step": [10, 20], "train_loss": [0.9, 0.5], "valid_loss": [0.8, 0.6],
               "valid_acc": [0.6, 0.7], "curve_step": [2, 4, 6, 8, 10, 12, 14, 16, 18, 20],
               "curve_loss": [1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45]}
    loss_ax = viz.training_curves(history).axes[0]
    within = [line for line in loss_ax.lines if line.get_label().startswith("train_loss within epochs")]
    assert len(within) == 1 and len(within[0].get_xdata()) == 10
    with pytest.raises(ValueError, match="curve_loss"):
        viz.training_curves({**history, "curve_loss": [1.0]})


def test_notebook_setup_outside_ipython_sets_print_options_and_dpi_and_names_the_font(capsys):
    before, dpi = np.get_printoptions(), matplotlib.rcParams["figure.dpi"]
    try:
        family = viz.notebook_setup(precision=4)
        assert np.get_printoptions()["precision"] == 4 and np.get_printoptions()["suppress"]
        assert matplotlib.rcParams["figure.dpi"] == viz.NOTEBOOK_DPI
        assert capsys.readouterr().out == f"font for Chinese labels: {family}\n"
    finally:
        np.set_printoptions(**before)
        matplotlib.rcParams["figure.dpi"] = dpi


def test_compact_png_is_a_png():
    fig, ax = plt.subplots()
    ax.imshow(np.arange(12.0).reshape(3, 4))
    assert viz._compact_png(fig).startswith(PNG_MAGIC)


def test_table_escapes_its_strings(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    viz.table([[0.5, "<b>"]], ["row"], ["x", "y"])
    html = shown[0].data
    assert "<td>0.500</td>" in html and "&lt;b&gt;" in html and "<th>row</th>" in html


def test_text_colour_is_white_on_dark_cells_and_black_on_light_ones():
    assert viz.text_colour((0.0, 0.0, 0.2, 1.0)) == "white"
    assert viz.text_colour((1.0, 1.0, 0.9, 1.0)) == "black"
    cmap = plt.get_cmap("RdBu_r")
    assert viz.text_colour(cmap(0.0)) == "white" and viz.text_colour(cmap(0.5)) == "black"

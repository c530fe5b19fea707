"""The figure generator runs end to end and writes real PNGs (so `make figures` cannot rot)."""

import struct
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from numpy_transformer.figures import FIGURE_NAMES, make_all

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which a valid PNG has right after its signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path.name}: not a PNG (starts with {head[:8]!r})"
    assert head[12:16] == b"IHDR", f"{path.name}: no IHDR chunk after the signature"
    return struct.unpack(">II", head[16:24])


@pytest.mark.slow
def test_make_all_quick_writes_every_figure_as_a_valid_png(tmp_path):
    # other tests in the same worker process may have left figures open: only ours count
    open_before = set(plt.get_fignums())
    paths = make_all(tmp_path, quick=True)

    assert [p.name for p in paths] == list(FIGURE_NAMES)
    for path in paths:
        assert path.parent == tmp_path
        assert path.is_file() and path.stat().st_size > 1000, f"{path.name}: missing or nearly empty"
        width, height = png_size(path)
        assert 100 <= width <= 4000 and 100 <= height <= 4000, f"{path.name}: odd size {width}x{height}"
        image = plt.imread(path)                       # decodes the whole file: a truncated PNG fails here
        assert image.shape[:2] == (height, width)
        assert np.ptp(image[..., :3]) > 0, f"{path.name}: a blank image"
    assert set(plt.get_fignums()) <= open_before, "make_all left figures open"


def test_make_all_without_a_checkpoint_says_where_it_looked(tmp_path):
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        make_all(tmp_path / "out", checkpoint=missing)


def test_evaluation_figures_say_which_model_they_show(tmp_path):
    from numpy_transformer.data import Dataset
    from numpy_transformer.figures import _evaluation, model_name
    from numpy_transformer.models import TransformerClassifier
    from numpy_transformer.tokenizer import CharTokenizer

    texts = ["很好看", "太差了", "好用", "很失望"]
    tok = CharTokenizer.build(texts)
    model = TransformerClassifier(vocab_size=tok.vocab_size, num_classes=2, d_model=8, n_heads=2, n_layers=1,
                                  d_ff=16, max_len=8, dropout=0.0, pooling="cls")
    assert model_name(model, "classifier_small.npz") == "classifier_small.npz (D=8, 1 layers, 2 heads, [CLS])"
    history = {"epoch": [1], "step": [2], "train_loss": [0.7], "valid_loss": [0.69], "valid_acc": [0.5],
               "curve_step": [1, 2], "curve_loss": [0.8, 0.7], "stopped_because": "all 1 epochs done"}
    titles = []
    real_save = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        titles.append(" ".join([fig._suptitle.get_text() if fig._suptitle else ""]
                               + [ax.get_title() for ax in fig.axes]))
        return real_save(fig, *args, **kwargs)

    plt.Figure.savefig = spy
    try:
        _evaluation(tmp_path, model, tok, history, Dataset(texts, np.array([1, 0, 1, 0])), "classifier_small.npz")
    finally:
        plt.Figure.savefig = real_save
    assert len(titles) == 3 and all("classifier_small.npz (D=8" in t for t in titles)

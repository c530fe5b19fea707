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

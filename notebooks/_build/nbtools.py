"""Helpers shared by the notebook generators in this folder: cells, building, running, writing.

This folder holds no .ipynb files on purpose: `pytest --nbmake notebooks`
executes every notebook it finds under notebooks/.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python", "pygments_lexer": "ipython3"}


def md(text: str):
    """A markdown cell (the text is dedented and stripped)."""
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    """A code cell (the text is dedented and stripped)."""
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


def build(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    # Fixed cell ids: rebuilding a notebook changes nothing unless a text here changed.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 600) -> float:
    """Run ``nb`` top to bottom in a fresh kernel, in the notebooks folder; return the seconds it took."""
    from nbclient import NotebookClient

    os.environ.setdefault("MPLCONFIGDIR", "/tmp/mpl")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def write(name: str, cells, run: bool) -> Path:
    """Write notebooks/<name>, executed first when ``run``; print its run time and size."""
    nb = build(cells)
    path = NOTEBOOKS / name
    seconds = execute(nb) if run else None
    nbformat.validate(nb)
    nbformat.write(nb, path)
    took = f"ran in {seconds:.1f}s, " if seconds is not None else ""
    print(f"{path.relative_to(NOTEBOOKS.parent)}: {took}{path.stat().st_size / 1024:.0f} KB")
    return path

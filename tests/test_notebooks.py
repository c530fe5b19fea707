"""Every notebook is a pair: ``NAME.py``, the source (jupytext's percent format), and ``NAME.ipynb``,
the same cells with their outputs. These tests fail when the two disagree, so that they cannot drift.

How to edit a notebook: notebooks/README.md. In short, edit the .py in any editor (or the .ipynb in
Jupyter, which keeps the pair in sync through notebooks/jupytext.toml), then ``make notebooks``.
"""

from pathlib import Path

import jupytext
import pytest
from jupytext.compare import NotebookDifference, compare_notebooks

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def _ours(paths):
    """Skip Jupyter's .ipynb_checkpoints and any other hidden or private folder."""
    return sorted(p for p in paths if not any(part.startswith((".", "_")) for part in p.relative_to(NOTEBOOK_DIR).parts))


SCRIPTS = _ours(NOTEBOOK_DIR.rglob("*.py"))
NOTEBOOKS = _ours(NOTEBOOK_DIR.rglob("*.ipynb"))


def _name(path):
    return str(path.relative_to(NOTEBOOK_DIR))


def test_every_notebook_has_its_script_and_every_script_its_notebook():
    assert NOTEBOOKS, "no notebooks found"
    assert [p.with_suffix("") for p in SCRIPTS] == [p.with_suffix("") for p in NOTEBOOKS], (
        "notebooks/ must hold pairs NAME.py + NAME.ipynb; for a new script run "
        "`make notebooks` (or `.venv/bin/jupytext --to ipynb --execute NAME.py`)")


def test_the_pairing_is_ipynb_and_percent_script():
    for folder in sorted({p.parent for p in SCRIPTS}):          # the exercises' folder too
        config = jupytext.config.load_jupytext_config(str(folder))
        formats = config.formats if isinstance(config.formats, str) else ";".join(config.formats)
        assert formats == "ipynb,py:percent", folder


def test_no_script_looks_like_a_test_file_to_pytest():
    # pytest collects test_*.py and *_test.py; nbmake collects the .ipynb files.
    assert not [p.name for p in SCRIPTS if p.name.startswith("test_") or p.stem.endswith("_test")]


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_the_notebook_has_the_same_cells_as_its_script(script):
    from_script = jupytext.read(script)
    from_notebook = jupytext.read(script.with_suffix(".ipynb"))
    try:
        # Cell types, sources and the cell metadata the pairing keeps (nbgrader's); outputs are not compared.
        compare_notebooks(from_notebook, from_script, fmt="py:percent", allow_expected_differences=False,
                          compare_outputs=False)
        difference = None
    except NotebookDifference as exc:
        difference = str(exc)
    if difference:
        pytest.fail(f"notebooks/{_name(script)} and its .ipynb disagree (first difference below). After editing "
                    f"the script run `make notebooks`, or `.venv/bin/jupytext --sync notebooks/{_name(script)}` "
                    f"to update the notebook's cells without running it.\n{difference}", pytrace=False)


def test_the_assets_readme_command_builds_the_shipped_checkpoints_model():
    """notebooks/assets/README.md gives the command that made classifier_small.npz: every flag must match."""
    import re
    import shlex

    from numpy_transformer import checkpoint, cli

    readme = (NOTEBOOK_DIR / "assets" / "README.md").read_text(encoding="utf-8")
    command = re.search(r"python -m numpy_transformer (train .*?)\n(?!    )", readme.replace("\\\n", ""), re.S)
    args = cli.build_parser().parse_args(shlex.split(command.group(1)))
    config = checkpoint.load(NOTEBOOK_DIR / "assets" / "classifier_small.npz").model.config
    from_command = {"d_model": args.d_model, "n_heads": args.heads, "n_layers": args.layers, "d_ff": args.d_ff,
                    "max_len": args.max_len, "dropout": args.dropout, "norm": args.norm,
                    "pooling": args.pooling, "seed": args.seed}
    assert from_command == {key: config[key] for key in from_command}


def test_every_exercise_the_docs_name_exists():
    """A notebook or README that points students to notebooks/exercises/exN_... points to a real file."""
    import re
    root = NOTEBOOK_DIR.parent
    docs = [root / "README.md", NOTEBOOK_DIR / "README.md", NOTEBOOK_DIR / "exercises" / "README.md",
            *_ours(NOTEBOOK_DIR.glob("*.py"))]
    named = {(doc.name, m) for doc in docs for m in re.findall(r"exercises/(ex\d+_[a-z0-9_]+)",
                                                                 doc.read_text(encoding="utf-8"))}
    assert named, "no exercise links found: the pattern is stale"
    missing = sorted((doc, m) for doc, m in named if not (NOTEBOOK_DIR / "exercises" / f"{m}.py").exists())
    assert not missing, f"links to exercises that do not exist: {missing}"

"""The exercises as a class gets them, graded by nbgrader itself (notebooks/exercises/README.md).

In a temporary course directory: ``generate_assignment`` turns the teacher's notebooks
(notebooks/exercises/ex*.ipynb, solutions between ``### BEGIN SOLUTION`` / ``### END SOLUTION``)
into the students' version, then ``autograde`` grades three submissions:

* the teacher's notebooks, handed in as they are: full marks;
* the students' notebooks as released, nothing filled in: zero;
* exercise 1 as released with one known mistake typed in (softmax backward without its
  −Σ term): partial marks, and ``generate_feedback`` shows the checker's plain-words message.

Nothing is written to $HOME: Jupyter's folders point into the temporary directory.
"""

import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI
from traitlets.config import Config

# nbgrader's own use of SQLAlchemy warns (SAWarning is a RuntimeWarning, which pyproject.toml makes an error).
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

SOURCE = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
NOTEBOOKS = sorted(p.stem for p in SOURCE.glob("ex*.ipynb"))
ASSIGNMENT = "exercises"
MISTAKE_NOTEBOOK = "ex1_softmax_backward"
# The mistake, as a student would type it in place of the stub.
MISTAKE_CODE = "    return y * dy\n"
MISTAKE_MESSAGE = "Looks like you forgot the −Σ term"


@pytest.fixture
def graded(tmp_path, monkeypatch):
    """Run the whole classroom cycle; return {student: {notebook: (score, max_score)}} and the course dir."""
    tmp, mp = tmp_path, monkeypatch
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "MPLCONFIGDIR"):
        (tmp / "home" / name.lower()).mkdir(parents=True)
        mp.setenv(name, str(tmp / "home" / name.lower()))
    # nbgrader runs the `alembic` command of its environment to create the gradebook.
    mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    mp.chdir(tmp)
    course = tmp / "course"
    shutil.copytree(SOURCE, course / "source" / ASSIGNMENT, ignore=shutil.ignore_patterns("*.py", "*.md", ".*"))
    config = Config()
    config.CourseDirectory.root = str(course)
    config.Exchange.root = str(tmp / "exchange")
    config.ExecutePreprocessor.timeout = 300
    api = NbGraderAPI(config=config)

    result = api.generate_assignment(ASSIGNMENT)
    assert result["success"], result["log"] + result.get("error", "")
    release = course / "release" / ASSIGNMENT

    def submit(student, folder, only=None, edit=None):
        target = course / "submitted" / student / ASSIGNMENT
        skip = shutil.ignore_patterns("*.py", "*.md", ".*")
        if only is not None:
            skip = lambda folder, names: [n for n in names if n != f"{only}.ipynb"]   # noqa: E731
        shutil.copytree(folder, target, ignore=skip)
        if edit is not None:
            edit(target)

    def plant_mistake(folder):
        path = folder / f"{MISTAKE_NOTEBOOK}.ipynb"
        nb = nbformat.read(path, as_version=4)
        stubs = [c for c in nb.cells if c.cell_type == "code" and "raise NotImplementedError()" in c.source]
        assert len(stubs) == 1
        stubs[0].source = re.sub(r"    # YOUR CODE HERE\n    raise NotImplementedError\(\)\n?", MISTAKE_CODE,
                                 stubs[0].source)
        nbformat.write(nb, path)

    submit("teacher", course / "source" / ASSIGNMENT)
    submit("blank", release)
    submit("mistake", release, only=MISTAKE_NOTEBOOK, edit=plant_mistake)   # hands in exercise 1 only
    grades = {}
    for student in ("teacher", "blank", "mistake"):
        result = api.autograde(ASSIGNMENT, student)
        assert result["success"], result["log"] + result.get("error", "")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student in ("teacher", "blank", "mistake"):
            grades[student] = {}
            for nb_id in NOTEBOOKS if student != "mistake" else [MISTAKE_NOTEBOOK]:
                sub = gb.find_submission_notebook(nb_id, ASSIGNMENT, student)
                grades[student][nb_id] = (sub.score, sub.max_score)
    result = api.generate_feedback(ASSIGNMENT, "mistake")
    assert result["success"], result["log"] + result.get("error", "")
    print("nbgrader grades:", grades)
    return grades, course


def test_nbgrader_gives_the_teacher_full_marks_a_blank_zero_and_a_known_mistake_partial_credit(graded):
    # One test: pytest-xdist would run a module fixture once per worker, and the cycle takes a while.
    grades, course = graded
    for nb_id in NOTEBOOKS:                                     # the students' version: stubs, no solutions
        text = (course / "release" / ASSIGNMENT / f"{nb_id}.ipynb").read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text, nb_id

    for nb_id, (score, max_score) in grades["teacher"].items():
        assert max_score > 0 and score == max_score, ("teacher", nb_id, score, max_score)
    for nb_id, (score, max_score) in grades["blank"].items():
        assert max_score > 0 and score == 0, ("blank", nb_id, score, max_score)

    score, max_score = grades["mistake"][MISTAKE_NOTEBOOK]
    assert 0 < score < max_score, ("mistake", score, max_score)
    feedback = (course / "feedback" / "mistake" / ASSIGNMENT / f"{MISTAKE_NOTEBOOK}.html").read_text(encoding="utf-8")
    assert MISTAKE_MESSAGE in feedback
    assert f"Score: {score:g} of {max_score:g} points" in feedback

# The two commands of the README, plus a few helpers.
#   make demo   - create .venv, install, run the main job (python -m numpy_transformer demo)
#   make test   - create .venv, install, run every test (notebooks included)
#   make notebooks - re-execute every notebook from its script (notebooks/README.md)
#   make exercises - the students' version of the exercises (notebooks/exercises/README.md)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Keep matplotlib, Jupyter, IPython and CuPy from writing into $HOME: their
# caches and settings live in .cache/ inside the checkout (ignored by git).
CACHE := $(CURDIR)/.cache
export MPLCONFIGDIR := $(CACHE)/matplotlib
export IPYTHONDIR := $(CACHE)/ipython
export JUPYTER_CONFIG_DIR := $(CACHE)/jupyter/config
export JUPYTER_DATA_DIR := $(CACHE)/jupyter/data
export JUPYTER_RUNTIME_DIR := $(CACHE)/jupyter/runtime
export JUPYTER_PLATFORM_DIRS := 1
export CUPY_CACHE_DIR := $(CACHE)/cupy
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test install figures bench clean notebooks exercises

CACHE_DIRS := $(MPLCONFIGDIR) $(IPYTHONDIR) $(JUPYTER_CONFIG_DIR) $(JUPYTER_DATA_DIR) $(JUPYTER_RUNTIME_DIR) $(CUPY_CACHE_DIR)

# The cache folders are made first: ipykernel (IPython) warns when its folder does not exist yet.
# -qq on the editable install: setuptools prints a notice on every editable install
# ("be careful with folders ... with the same name as your package") that says nothing about this project.
$(STAMP): requirements.txt pyproject.toml
	@mkdir -p $(CACHE_DIRS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install -qq --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (numpy_transformer)" >/dev/null
	@touch $(STAMP)

install: $(STAMP)
	@mkdir -p $(CACHE_DIRS)

demo: install
	$(PY) -m numpy_transformer demo

# -n 2: tests and notebooks on both cores. The exercise notebooks are the teacher's versions,
# solutions filled in, so they run as they are; tests/test_nbgrader.py grades them with nbgrader.
test: install
	$(PY) -m pytest -p no:cacheprovider -n 2 --nbmake --nbmake-timeout=600 tests notebooks

# Each notebook's source is its script (notebooks/README.md): write the script's cells into the
# .ipynb and execute it in place, in the notebook's folder. One notebook only:
#   make notebooks NOTEBOOKS=notebooks/03_attention.py
NOTEBOOKS ?= $(sort $(wildcard notebooks/[0-9]*.py notebooks/exercises/ex*.py))
notebooks: install
	@for script in $(NOTEBOOKS); do \
	    echo "$$script"; \
	    $(VENV)/bin/jupytext --quiet --to ipynb --update "$$script" && \
	    $(VENV)/bin/jupyter nbconvert --log-level=WARN --to notebook --execute --inplace \
	        --ExecutePreprocessor.timeout=600 --ExecutePreprocessor.record_timing=False \
	        "$${script%.py}.ipynb" || exit 1; \
	done

# The students' version of the exercise notebooks, as nbgrader releases it to a class (solutions
# replaced by stubs, outputs cleared), in runs/classroom/release/exercises/. nbgrader runs the
# `alembic` command of .venv, hence the PATH.
COURSE := runs/classroom
exercises: install
	rm -rf $(COURSE) && mkdir -p $(COURSE)/source/exercises
	cp notebooks/exercises/ex*.ipynb $(COURSE)/source/exercises/
	printf 'c = get_config()  # noqa: F821\nc.CourseDirectory.root = "%s"\n' "$(CURDIR)/$(COURSE)" \
	    > $(COURSE)/nbgrader_config.py
	cd $(COURSE) && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CURDIR)/$(VENV)/bin/nbgrader generate_assignment \
	    exercises --log-level=WARN
	@echo "students' notebooks: $(COURSE)/release/exercises/"

figures: install
	$(PY) -m numpy_transformer figures --out figures

bench: install
	$(PY) benchmarks/bench_step.py --config default

clean:
	rm -rf $(VENV) $(CACHE) runs .pytest_cache .hypothesis

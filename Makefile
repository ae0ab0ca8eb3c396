# The kit's commands. On a fresh machine, `make run` and `make test` are all the set-up there is.
#   make run    create the environment if missing, then execute every notebook headless (results/<model>/)
#   make check  the fast tier (< 2 min): every unit test, no notebook kernel; run it before every commit
#   make test   the full tier (CI, < 10 min on 2 cores): the fast tier and the slow tests, which execute every notebook
#   make lab    open JupyterLab on the notebooks
# Variables: MODEL (default auto: GPT-2 small online, the organism offline), PYTHON, VENV, TORCH_SPEC.

PYTHON ?= python3
VENV ?= .venv
# A bare `torch` pulls a multi-GB CUDA build on Linux; this pin takes the CPU wheel where one is provided.
# With a GPU: make env TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
MODEL ?= auto
TEST_MODEL ?= organism
# The runtime set plus the tools `make test` (test: pytest, pytest-xdist) and `make lab` (lab: JupyterLab) need.
EXTRAS := lab,test
BIN := $(VENV)/bin
TEST_RESULTS := $(CURDIR)/.cache/test-results

.PHONY: env run check test lab

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

run: env
	$(BIN)/python -m ctx_utils.tools.run_notebooks --model $(MODEL)

# The fast tier: tests marked `slow` (notebook kernels, > 10 s) are left out. Offline, one torch thread.
check: env
	CTX_MODEL=$(TEST_MODEL) CTX_RESULTS=$(TEST_RESULTS)-check HF_HUB_OFFLINE=1 CTX_TORCH_THREADS=$${CTX_TORCH_THREADS:-1} \
	  $(BIN)/python -m pytest -q -m "not slow" tests

# The full tier, offline-safe: notebooks use the organism and fixtures and write into scratch results folders.
# Two workers (pytest-xdist), a test file each at a time: the organism's notebook runs (one file, sharing the in-order
# run) go to one, the fixtures' and the unit tests to the other. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: env
	rm -rf $(TEST_RESULTS)
	CTX_MODEL=$(TEST_MODEL) CTX_RESULTS=$(TEST_RESULTS) HF_HUB_OFFLINE=1 CTX_TORCH_THREADS=$${CTX_TORCH_THREADS:-1} \
	  $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

lab: env
	$(BIN)/jupyter lab notebooks/

# The kit's steps on GPT-2 small against the authors' released numbers (needs the Hugging Face hub; a few minutes).
.PHONY: verify
verify: env
	CTX_TORCH_THREADS=$${CTX_TORCH_THREADS:-1} $(BIN)/python -m ctx_utils.tools.verify gpt2-small

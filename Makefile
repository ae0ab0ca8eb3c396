# The kit's commands. On a fresh machine, `make run` and `make test` are all the set-up there is.
#   make run    create the environment if missing, then execute every notebook headless (results/<model>/)
#   make check  the fast tier (< 2 min): every unit test, no notebook kernel; run it before every commit
#   make test   the full tier (CI): the fast tier, the slow tests and every notebook under nbmake
#   make lab    open JupyterLab on the notebooks
# Variables: MODEL (default auto: GPT-2 small online, the organism offline), PYTHON, VENV, TORCH_SPEC.

PYTHON ?= python3
VENV ?= .venv
# A bare `torch` pulls a multi-GB CUDA build on Linux; this pin takes the CPU wheel where one is provided.
# With a GPU: make env TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
MODEL ?= auto
TEST_MODEL ?= organism
# The runtime set plus the tools `make test` (test: pytest, nbmake) and `make lab` (lab: JupyterLab) need.
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

# Tests run offline-safe: notebooks use the organism and write into a scratch results folder.
test: env
	rm -rf $(TEST_RESULTS)
	CTX_MODEL=$(TEST_MODEL) CTX_RESULTS=$(TEST_RESULTS) CTX_TORCH_THREADS=$${CTX_TORCH_THREADS:-1} \
	  $(BIN)/python -m pytest --nbmake --nbmake-kernel=python3 --nbmake-timeout=900 --ignore=notebooks/exercises tests notebooks

lab: env
	$(BIN)/jupyter lab notebooks/

# The kit's steps on GPT-2 small against the authors' released numbers (needs the Hugging Face hub; a few minutes).
.PHONY: verify
verify: env
	CTX_TORCH_THREADS=$${CTX_TORCH_THREADS:-1} $(BIN)/python -m ctx_utils.tools.verify gpt2-small

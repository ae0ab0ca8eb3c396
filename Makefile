# The kit's commands. On a fresh machine, `make run` and `make test` are all the set-up there is.
#   make run    create the environment if missing, then execute every notebook headless (results/<model>/)
#   make check  the fast tier (< 2 min, two workers): every unit test, no notebook kernel; run it before every commit
#   make test   the full tier (CI, < 10 min on 2 cores): the fast tier and the slow tests, which execute every notebook
#   make lab    open JupyterLab on the notebooks
# Variables: MODEL (default auto: GPT-2 small online, the organism offline), PYTHON, VENV, TORCH_SPEC.

PYTHON ?= python3
VENV ?= .venv
# torch comes first, alone. Default: the locked version; on Linux without an NVIDIA driver (no nvidia-smi) its CPU
# build from PyTorch's CPU index (a bare `torch` from PyPI is the multi-GB CUDA build there), falling back to the
# default index, with a message, where that index cannot be reached. With a GPU: make env TORCH_SPEC=torch
# (or e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126").
TORCH_SPEC ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# The exact tested set (docs/install.md): `make env` installs it; `make lock` refreshes it to the newest versions.
LOCK := requirements-lock.txt
MODEL ?= auto
TEST_MODEL ?= organism
# pytest-xdist workers of `make check` and `make test` (2 cores: 2); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
# The runtime set plus the tools `make test` (test: pytest, pytest-xdist) and `make lab` (lab: JupyterLab) need.
EXTRAS := lab,test
BIN := $(VENV)/bin
TEST_RESULTS := $(CURDIR)/.cache/test-results

.PHONY: env run check test lab lock

env: $(VENV)/.installed

# The lock pins torch too; a torch other than the locked one (TORCH_SPEC) is kept: the lock's torch line is left out.
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@version=$$(sed -n 's/^torch==//p' $(LOCK)); torch="torch$${version:+==$$version}"; \
	if [ -n "$(TORCH_SPEC)" ]; then \
	  echo "make env: torch as asked: $(TORCH_SPEC)"; $(BIN)/python -m pip install -q $(TORCH_SPEC); \
	elif [ "$$(uname -s)" != Linux ] || command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "make env: $$torch from the default index"; $(BIN)/python -m pip install -q "$$torch"; \
	elif $(BIN)/python -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=10)" 2>/dev/null; then \
	  echo "make env: $$torch, CPU build, from $(TORCH_CPU_INDEX)"; \
	  $(BIN)/python -m pip install -q --no-deps "$$torch" --index-url $(TORCH_CPU_INDEX); \
	else \
	  echo "make env: $(TORCH_CPU_INDEX) cannot be reached: $$torch from the default index instead (on Linux" \
	       "that is the CUDA build, several GB, unless a CPU wheel is found there)"; \
	  $(BIN)/python -m pip install -q --no-deps "$$torch"; \
	fi
	grep -v '^torch==' $(LOCK) > $(VENV)/constraints.txt || true
	[ ! -s $(VENV)/constraints.txt ] || $(BIN)/python -m pip install -q -c $(VENV)/constraints.txt -r $(VENV)/constraints.txt
	$(BIN)/python -m pip install -q -c $(VENV)/constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# Refresh the lock: a fresh environment with the newest versions pyproject.toml allows, the fast tier run in it,
# then its exact set written to $(LOCK). Run `make test` after it (CI does), then commit $(LOCK).
lock:
	rm -rf .cache/lock-venv
	$(MAKE) --no-print-directory env VENV=.cache/lock-venv LOCK=/dev/null TORCH_SPEC="$(TORCH_SPEC)"
	$(MAKE) --no-print-directory check VENV=.cache/lock-venv
	.cache/lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/+cpu$$//' > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	@echo "make lock: wrote $(LOCK) ($$(wc -l < $(LOCK)) packages); run make test, then commit it"

run: env
	$(BIN)/python -m ctx_utils.tools.run_notebooks --model $(MODEL)

# The fast tier: tests marked `slow` (notebook kernels, > 10 s) are left out. Offline, one torch thread per worker.
check: env
	CTX_MODEL=$(TEST_MODEL) CTX_RESULTS=$(TEST_RESULTS)-check HF_HUB_OFFLINE=1 CTX_TORCH_THREADS=$${CTX_TORCH_THREADS:-1} \
	  $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests

# The full tier, offline-safe: notebooks use the organism and fixtures and write into scratch results folders.
# Two workers (pytest-xdist), a test file each at a time: the organism's notebook runs (one file, sharing the in-order
# run) go to one, the fixtures' and the unit tests to the other.
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

"""Every notebook runs on the organism, and one pipeline gives the same files however it is run.

* ``make run``'s own command executes notebooks 00-08 in order into one results folder (every notebook must
  finish without an error; the notebooks' own cells assert what they show);
* the script ``python -m ctx_utils.pipeline`` writes the same result files, byte for byte;
* notebook 06 alone on an empty results folder (as in Colab, where each notebook is its own runtime) computes
  every missing step in its kernel through the pipeline's fallbacks and writes the same files, byte for byte.

In order, each notebook loads what the one before saved and computes its own step with inputs it computed itself
(the scan of 02, the attributions of 03); the script computes everything with ``compute_<step>``; 06 alone
computes everything through the load-or-compute calls a notebook makes. Three paths, one set of files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from notebook_runs import result_files, run

from ctx_utils.models import ORGANISM_DIR

pytestmark = pytest.mark.slow  # notebook kernels: `make test` only

STEPS = ("neurons", "prompts", "heads", "held_out", "explanations", "scores", "ablation")

needs_organism = pytest.mark.skipif(not (ORGANISM_DIR / "config.json").exists(), reason="the organism is not trained")


@pytest.fixture(scope="module")
def in_order(tmp_path_factory) -> Path:
    """Notebooks 00-08 in order on the organism, as `make run` runs them: the results folder."""
    out = tmp_path_factory.mktemp("in-order")
    run(["ctx_utils.tools.run_notebooks", "--model", "organism"], out, {"CTX_MODEL": "organism"})
    return out / "organism"


@needs_organism
def test_every_notebook_runs_in_order(in_order):
    runs = json.loads((in_order / "notebooks" / "run.json").read_text())["notebooks"]
    assert [r["notebook"][:2] for r in runs] == [f"{i:02d}" for i in range(9)]
    assert sorted(result_files(in_order)) == sorted(f"{step}.json" for step in STEPS)


@needs_organism
def test_the_script_writes_the_notebooks_files(in_order, tmp_path):
    run(["ctx_utils.pipeline", "--model", "organism"], tmp_path, {"CTX_MODEL": "organism"})
    script, notebooks = result_files(tmp_path / "organism"), result_files(in_order)
    assert sorted(script) == sorted(notebooks)
    assert not [n for n in script if script[n] != notebooks[n]], "the script and notebooks 01-06 disagree"


@needs_organism
def test_notebook_06_alone_computes_every_missing_step_as_in_order(in_order, tmp_path):
    run(["ctx_utils.tools.run_notebooks", "--model", "organism", "--only", "06"], tmp_path, {"CTX_MODEL": "organism"})
    alone, expected = result_files(tmp_path / "organism"), result_files(in_order)
    assert sorted(alone) == sorted(f"{step}.json" for step in ("neurons", "prompts", "heads", "held_out", "ablation"))
    assert not [n for n in alone if alone[n] != expected[n]], "notebook 06 alone wrote its inputs differently"

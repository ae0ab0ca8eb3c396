"""Every notebook runs on the organism, one pipeline gives the same files however it is run, and every exercise
notebook runs top to bottom unsolved and passes its checks solved.

* ``make run``'s own command executes notebooks 00-08 in order into one results folder (every notebook must
  finish without an error; the notebooks' own cells assert what they show);
* the script ``python -m ctx_utils.pipeline`` writes the same result files, byte for byte. In order, each notebook
  loads what the one before saved and computes its own step with inputs it computed itself (the scan of 02, the
  attributions of 03); the script computes every step through the load-or-compute calls a notebook opened alone
  makes (as in Colab, where each notebook is its own runtime). Two paths, one set of files;
* each exercise notebook, unsolved, runs to the end on the script's results (Run All never stops: every check says
  what to do and the kit's functions stand in);
* solved, an exercise notebook is its step notebook's code (the generator's promise, checked cell by cell), so the
  in-order run's executed step notebooks show each check passing, with the lines INSTRUCTORS.md quotes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from notebook_runs import env_for, outputs, result_files, run, solved

from ctx_utils.classroom import exercises
from ctx_utils.classroom.notebook_cells import NOTEBOOKS_DIR

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


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    """``python -m ctx_utils.pipeline`` on the organism: the results root (one folder per model inside)."""
    out = tmp_path_factory.mktemp("script")
    run(["ctx_utils.pipeline", "--model", "organism"], out, {"CTX_MODEL": "organism"})
    return out


@needs_organism
def test_the_script_writes_the_notebooks_files(in_order, script):
    by_script, by_notebooks = result_files(script / "organism"), result_files(in_order)
    assert sorted(by_script) == sorted(by_notebooks)
    assert not [n for n in by_script if by_script[n] != by_notebooks[n]], "the script and notebooks 01-06 disagree"


EXERCISES = [p.name for p in sorted((NOTEBOOKS_DIR / exercises.SUBFOLDER).glob("[0-9][0-9]_*.ipynb"))]
INSTRUCTORS = NOTEBOOKS_DIR.parent / "INSTRUCTORS.md"


def _code(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


@needs_organism
@pytest.mark.parametrize("name", EXERCISES)
def test_an_unsolved_exercise_notebook_runs_to_the_end(script, name, monkeypatch):
    """Run All never stops: unsolved, every check says what to do and the notebook goes on with the kit's functions."""
    from nbclient import NotebookClient

    path = NOTEBOOKS_DIR / exercises.SUBFOLDER / name
    nb = nbformat.read(path, as_version=4)
    env = env_for(script, {"CTX_MODEL": "organism"})  # the kernel inherits this process's environment
    for variable in set(os.environ) - set(env):
        monkeypatch.delenv(variable)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    checks = [c for c in nb.cells if "check" in c.metadata.get("tags", [])]
    assert checks
    for cell in checks:
        assert "is not written yet: replace `raise NotImplementedError`" in outputs(cell), f"{name} {cell.id}: {outputs(cell)[-500:]}"
    for cell in [c for c in nb.cells if c.cell_type == "code" and "yours_or_kit(" in c.source]:
        assert "is not written yet, so the kit's" in outputs(cell), f"{name} {cell.id}: {outputs(cell)[-500:]}"


@needs_organism
@pytest.mark.parametrize("name", EXERCISES)
def test_a_solved_exercise_notebook_is_its_step_notebook_and_passes(in_order, name):
    """Solved, the exercise notebook runs its step notebook's code; the in-order run executed exactly that code, so
    its outputs are the solved notebook's: every check passes, says which function ran, and INSTRUCTORS.md quotes
    every check's line on the default organism (so it cannot drift)."""
    exercise = nbformat.read(NOTEBOOKS_DIR / exercises.SUBFOLDER / name, as_version=4)
    step = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    assert _code(solved(exercise, NOTEBOOKS_DIR / name)) == _code(step), "solved, the exercise differs from its step"
    executed = nbformat.read(in_order / "notebooks" / name, as_version=4)
    checks = [c for c in executed.cells if "check" in c.metadata.get("tags", [])]
    assert checks
    for cell in checks:
        out = outputs(cell)
        assert "✓ check_" in out and "passed" in out and "not written yet" not in out, f"{name} {cell.id}: {out[-500:]}"
    for cell in [c for c in executed.cells if c.cell_type == "code" and "yours_or_kit(" in c.source]:
        assert "ran here (not the kit's" in outputs(cell), f"{name} {cell.id}: {outputs(cell)[-500:]}"
    quoted = INSTRUCTORS.read_text(encoding="utf-8").split("<!-- check-lines -->")[1].split("<!-- /check-lines -->")[0]
    lines = [line for cell in checks for line in outputs(cell).splitlines() if line.startswith("✓ check_")]
    missing = [line for line in lines if line not in quoted]
    assert not missing, "INSTRUCTORS.md, 'What students should see', lacks (or quotes an older):\n" + "\n".join(missing)

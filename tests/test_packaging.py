"""House rules: one dependency list, notebooks stripped and in sync, CI runs the README's test command."""

import re
import tomllib
from pathlib import Path

import nbformat
import pytest

from ctx_utils import colab

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))


def _normalise(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement.strip().lower())


def test_environment_yml_and_pyproject_list_the_same_dependencies():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env_lines = (ROOT / "environment.yml").read_text().splitlines()
    start = env_lines.index("  - pip:") + 1
    conda_pip = [line.strip()[2:] for line in env_lines[start:] if line.strip().startswith("- ")]
    conda_pip = [r for r in conda_pip if r != "-e ."]
    assert sorted(map(_normalise, pyproject)) == sorted(map(_normalise, conda_pip))
    for needed in ["transformer_lens>=4.3,<4.4", "circuitsvis", "plotly", "ipywidgets", "jupyterlab", "nbmake",
                   "tqdm", "datasets", "openai>=1.0", "scipy"]:
        assert _normalise(needed) in map(_normalise, pyproject)


def test_there_are_notebooks():
    assert any(p.name.startswith("00_") for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; strip them before committing"


@pytest.mark.parametrize("path", colab.notebook_paths(), ids=lambda p: p.name)
def test_notebook_has_the_standard_cells_in_sync(path):
    nb = nbformat.read(path, as_version=4)
    tags = {t for c in nb.cells for t in c.metadata.get("tags", [])}
    assert {"colab-badge", "setup", "parameters"} <= tags, f"{path.name} misses standard cells: {tags}"
    assert colab.stale_cells(path) == [], f"{path.name}: run `python -m ctx_utils.colab --sync`"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make run" in readme
    assert re.search(r"^make test$", ci, re.M)
    assert "HF_HUB_OFFLINE=1" in ci

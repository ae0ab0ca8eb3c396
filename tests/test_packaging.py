"""House rules: one dependency list, notebooks stripped and in sync, CI runs the README's test command."""

import re
import tomllib
from pathlib import Path

import nbformat
import pytest

from ctx_utils.tools import colab

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))


def _normalise(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement.strip().lower())


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_and_pyproject_list_the_same_dependencies():
    project = _pyproject()
    extras = project["optional-dependencies"]
    env_lines = (ROOT / "environment.yml").read_text().splitlines()
    start = env_lines.index("  - pip:") + 1
    conda_pip = [line.strip()[2:] for line in env_lines[start:] if line.strip().startswith("- ")]
    assert f"-e .[{','.join(sorted(extras))}]" in conda_pip, "environment.yml must install the kit with every extra"
    conda_pip = [r for r in conda_pip if not r.startswith("-e .")]
    everything = project["dependencies"] + [r for reqs in extras.values() for r in reqs]
    assert sorted(map(_normalise, everything)) == sorted(map(_normalise, conda_pip))
    for needed in ["transformer_lens>=4.3,<4.4", "circuitsvis", "plotly", "ipywidgets", "tqdm", "datasets",
                   "openai>=1.0", "scipy", "nbconvert"]:
        assert _normalise(needed) in map(_normalise, project["dependencies"])


def test_the_runtime_set_has_no_dev_tools_and_make_env_installs_them():
    """Colab installs ``dependencies`` only; ``make env`` adds the extras that ``make test`` and ``make lab`` run."""
    project = _pyproject()
    runtime = {_normalise(re.split(r"[<>=!~;\[ ]", r)[0]) for r in project["dependencies"]}
    assert not runtime & {"jupyterlab", "pytest", "pytest-xdist", "notebook"}, "dev tools belong in an extra"
    extras = project["optional-dependencies"]
    assert "pytest" in extras["test"] and "pytest-xdist" in extras["test"] and "jupyterlab" in extras["lab"]
    makefile = (ROOT / "Makefile").read_text()
    installed = set(re.search(r"^EXTRAS := (.+)$", makefile, re.M).group(1).split(","))
    assert installed == set(extras), f"make env must install every extra ({sorted(extras)}), not {sorted(installed)}"
    assert '-e ".[$(EXTRAS)]"' in makefile


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
    assert colab.stale_cells(path) == [], f"{path.name}: run `python -m ctx_utils.tools.colab --sync`"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make run" in readme
    assert re.search(r"^make test$", ci, re.M)
    assert "HF_HUB_OFFLINE=1" in ci

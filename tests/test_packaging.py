"""House rules: one dependency list, notebooks stripped and in sync, CI runs the README's test command."""

import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement

from ctx_utils.tools import colab

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements-lock.txt"
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
    assert f"-c {LOCK.name}" in conda_pip, "environment.yml must install the tested set (the lock, as constraints)"
    conda_pip = [r for r in conda_pip if not r.startswith(("-e .", "-c "))]
    everything = project["dependencies"] + [r for reqs in extras.values() for r in reqs]
    assert sorted(map(_normalise, everything)) == sorted(map(_normalise, conda_pip))
    for needed in ["transformer_lens>=4.3,<4.4", "torch>=2.6", "circuitsvis", "plotly", "ipywidgets", "tqdm", "datasets>=2.7.1",
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


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_normalise(name)] = version
    return pins


def test_the_lock_pins_every_dependency_at_a_version_pyproject_allows():
    """requirements-lock.txt is the exact tested set: one pinned version per package, every dependency and extra of
    pyproject.toml among them, each inside pyproject's range (so the floors are honest for the tested set)."""
    lines = [line for line in LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][^\s;]*", line) for line in lines), "pins only: name==version"
    pins = _lock()
    assert len(pins) == len(lines), "a package is pinned twice"
    project = _pyproject()
    for text in project["dependencies"] + [r for reqs in project["optional-dependencies"].values() for r in reqs]:
        requirement = Requirement(text)
        name = _normalise(requirement.name)
        assert name in pins, f"{name} is a dependency but not in {LOCK.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {text}"
    assert "+" not in pins["torch"], "the lock pins torch's version; which build (CPU, CUDA) is make env's choice"


def test_make_env_installs_the_lock_with_torchs_cpu_build_on_linux_without_a_gpu():
    makefile = (ROOT / "Makefile").read_text()
    assert f"LOCK := {LOCK.name}" in makefile
    recipe = makefile[makefile.index("$(VENV)/.installed:"):makefile.index("\nlock:")]
    assert "TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu" in makefile
    assert "--index-url $(TORCH_CPU_INDEX)" in recipe and "command -v nvidia-smi" in recipe
    assert "cannot be reached" in recipe, "the fallback to the default index says so"
    assert "-c $(VENV)/constraints.txt" in recipe and "grep -v '^torch==' $(LOCK)" in recipe


def test_the_cpu_index_probe_gives_up_quickly():
    """Where PyTorch's index cannot be reached, make env falls back within seconds (not pip's minutes of retries)."""
    makefile = (ROOT / "Makefile").read_text()
    probe = re.search(r'\$\(BIN\)/python -c "(import urllib[^"]+)"', makefile).group(1)
    assert "timeout=10" in probe
    start = time.perf_counter()
    code = probe.replace("$(TORCH_CPU_INDEX)", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, check=False).returncode != 0
    assert time.perf_counter() - start < 10


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

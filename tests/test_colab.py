"""The notebooks' Colab setup cell, run in a simulated Colab: it fetches the kit and calls the package, which installs
the tested set under pins that keep Colab's torch, numpy and transformers; its advice on a version conflict works
as written; and every badge and setup cell points at the one repository address and ref of ``ctx_utils/classroom/notebook_cells.py``."""

import importlib.metadata
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from ctx_utils import runtime
from ctx_utils.classroom import notebook_cells as cells
from ctx_utils.settings import KIT_ROOT
from ctx_utils.tools import colab

ROOT = KIT_ROOT
COLAB_PINS = {name: importlib.metadata.version(name) for name in colab.COLAB_KEEPS}

SAMPLE_LOCK = """\
# pip freeze of the tested set
-e .
--index-url https://download.pytorch.org/whl/cpu
torch==2.11.0
numpy==2.3.1
Jaxtyping==0.3.2 \\
    --hash=sha256:0123456789abcdef
scipy==1.16.0  # statistics of step 5
tqdm>=4.66
transformer-lens==4.3.0
ctx-lookups-kit @ file:///build/kit
"""

CONFLICT = """\
ERROR: Cannot install ctx-lookups-kit==0.1.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    transformer-lens 4.3.0 depends on transformers>=5.9.0
    The user requested (constraint) transformers==4.57.1
"""


class FakePopen:
    """A fake ``pip``: prints two lines, or pip's conflict report (exit 1) while the constraints pin transformers."""

    commands: list = []

    def __init__(self, cmd, stdout=None, stderr=None, text=None):
        self.cmd = cmd
        FakePopen.commands.append(cmd)
        pins = Path(cmd[cmd.index("-c") + 1]).read_text() if "-c" in cmd else ""
        self.fails = FakePopen.conflict and "transformers==" in pins
        self.stdout = iter(CONFLICT.splitlines(keepends=True) if self.fails else [f"{cmd[2]}: working…\n", "done\n"])
        self.returncode = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.returncode = int(self.fails)


@pytest.fixture
def colab_sim(monkeypatch, tmp_path):
    """A simulated Colab: ``google.colab`` imported (its Drive recorded), subprocesses, chdir and the lock faked."""
    FakePopen.commands, FakePopen.conflict = [], False
    mounted, cloned = [], []
    fake = types.ModuleType("google.colab")
    fake.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google.colab", fake)
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: cloned.append(cmd) or types.SimpleNamespace(stderr=""))
    monkeypatch.setattr(os, "chdir", lambda p: FakePopen.commands.append(["chdir", str(p)]))
    monkeypatch.setattr(os, "makedirs", lambda p, exist_ok=False: FakePopen.commands.append(["makedirs", p]))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(colab, "CONSTRAINTS", tmp_path / "constraints.txt")
    monkeypatch.setattr(colab, "LOCK_FILE", tmp_path / "requirements-lock.txt")
    colab.LOCK_FILE.write_text(SAMPLE_LOCK)
    for name in ("CTX_RESULTS", runtime.NOTEBOOK_VAR):  # set, then removed: monkeypatch restores what setup() writes
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return types.SimpleNamespace(mounted=mounted, cloned=cloned, commands=FakePopen.commands, tmp=tmp_path)


def run_cell(monkeypatch, capsys, source: str, kit_present: bool = False) -> str:
    """Execute a setup cell as the kernel would; returns what it printed."""
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: kit_present if p == cells.KIT_DIR else real_isdir(p))
    capsys.readouterr()
    exec(source, {})
    return capsys.readouterr().out


def pip_commands(commands):
    return [c for c in commands if c[1:4] == ["-m", "pip", "install"]]


def test_the_setup_cell_is_a_few_lines_that_call_the_package():
    code = [line for line in cells.setup_cell_source("05").splitlines() if line.strip() and not line.startswith("#")]
    assert len(code) <= 10, f"the setup cell has {len(code)} lines of code: its logic belongs in ctx_utils.tools.colab"
    assert code[-1] == 'colab.setup("05", use_drive=USE_DRIVE, unpin=UNPIN)'


def test_setup_cell_does_nothing_outside_colab(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv(runtime.NOTEBOOK_VAR, raising=False)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: calls.append(a))
    cwd, path = os.getcwd(), list(sys.path)
    assert run_cell(monkeypatch, capsys, cells.setup_cell_source("03")) == ""
    assert calls == [] and os.getcwd() == cwd and sys.path == path and runtime.NOTEBOOK_VAR not in os.environ


def test_setup_cell_on_colab_fetches_the_kit_once_and_installs_it_visibly(colab_sim, monkeypatch, capsys):
    printed = run_cell(monkeypatch, capsys, cells.setup_cell_source("05"))
    [clone] = colab_sim.cloned
    assert clone[:2] == ["git", "clone"] and clone[-3:] == [cells.KIT_REF, cells.REPO_URL, cells.KIT_DIR]
    assert sys.path[0] == cells.KIT_DIR
    [install] = pip_commands(colab_sim.commands)
    assert "-q" not in install and "--quiet" not in install, "pip must show its progress"
    assert "-U" not in install and "--upgrade" not in install
    assert install[install.index("-e") + 1] == str(ROOT), "the runtime set only: no [lab] or [test] extras"
    assert install[install.index("-c") + 1] == str(colab.CONSTRAINTS)
    assert not any(name in arg for arg in install for name in COLAB_PINS), "the install must not name torch/numpy/transformers"
    assert ["chdir", str(ROOT / "notebooks")] in colab_sim.commands
    assert os.environ[runtime.NOTEBOOK_VAR] == "05", "the runtime sizing must know which notebook is open"
    assert "pip: working…" in printed and "done" in printed, "pip's output must reach the cell"
    assert re.search(r"Kit installed in \d+ s\. Results: .*results \(lost when the runtime ends\)\.", printed)
    assert colab_sim.mounted == [] and "CTX_RESULTS" not in os.environ
    colab_sim.cloned.clear()
    run_cell(monkeypatch, capsys, cells.setup_cell_source("05"), kit_present=True)
    assert colab_sim.cloned == [], "a kit already in /content/kit (a rerun, or an uploaded copy) is used as it is"


def test_the_install_follows_the_lock_file_but_keeps_colabs_torch_numpy_transformers(colab_sim):
    colab.setup("01")
    assert colab.CONSTRAINTS.read_text().splitlines() == sorted(
        ["Jaxtyping==0.3.2", "scipy==1.16.0", "transformer-lens==4.3.0", *(f"{n}=={v}" for n, v in COLAB_PINS.items())],
        key=lambda line: re.split("[=<>]", line)[0].lower())


def test_without_a_lock_file_only_colabs_own_three_are_pinned(tmp_path):
    pins = colab.constraints(lock_file=tmp_path / "absent.txt")
    assert pins == "".join(f"{n}=={v}\n" for n, v in sorted(COLAB_PINS.items()))


def test_the_conflict_advice_works_as_written(colab_sim, monkeypatch, capsys):
    """Colab's transformers older than the kit needs: pip's conflict names it, the error says what to set in the cell,
    and the cell, edited as told, installs; the unpinned name stays free on every later run (nothing rewrites it)."""
    FakePopen.conflict = True
    source = cells.setup_cell_source("03")
    with pytest.raises(RuntimeError) as failed:
        run_cell(monkeypatch, capsys, source)
    advice = re.search(r"set (UNPIN = \[.*?\]) in this cell", str(failed.value))
    assert advice and "restart the runtime" in str(failed.value), str(failed.value)
    assert "UNPIN = []" in source
    edited = source.replace("UNPIN = []", advice.group(1), 1)  # what the learner does
    for _ in range(2):  # the edit holds on a rerun, and after a restart of the runtime
        run_cell(monkeypatch, capsys, edited, kit_present=True)
        assert "transformers" not in colab.CONSTRAINTS.read_text()
        assert f"torch=={COLAB_PINS['torch']}" in colab.CONSTRAINTS.read_text(), "only the named package is freed"


def test_advice_without_a_named_package_says_where_to_put_one():
    assert 'UNPIN = ["transformers"]' in colab.conflict_advice("ERROR: network unreachable")
    advice = colab.conflict_advice("ERROR: No matching distribution found for scipy==1.16.0", unpin=["transformers"])
    assert "UNPIN = ['transformers', 'scipy']" in advice


def test_setup_cell_with_use_drive_keeps_results_in_drive(colab_sim, monkeypatch, capsys):
    source = cells.setup_cell_source("02")
    assert "USE_DRIVE = False" in source
    printed = run_cell(monkeypatch, capsys, source.replace("USE_DRIVE = False", "USE_DRIVE = True", 1))
    assert colab_sim.mounted == ["/content/drive"]
    assert os.environ["CTX_RESULTS"] == colab.DRIVE_RESULTS and colab.DRIVE_RESULTS.startswith("/content/drive/")
    assert ["makedirs", colab.DRIVE_RESULTS] in colab_sim.commands
    assert f"Results: {colab.DRIVE_RESULTS}." in printed


def test_repository_address_lives_in_one_place():
    hits = [p for p in ROOT.joinpath("ctx_utils").rglob("*.py") if cells.REPO_SLUG in p.read_text()]
    assert hits == [Path(cells.__file__).resolve()]


BADGE = re.compile(r"https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/([^/]+)/notebooks/([^)\s]+)\)")
CLONE = re.compile(r'"--branch", "([^"]+)", "([^"]+)"')
SETUP_CALL = re.compile(r'colab\.setup\("(\d\d)"')


@pytest.mark.parametrize("path", colab.notebook_paths(), ids=lambda p: p.relative_to(cells.NOTEBOOKS_DIR).as_posix())
def test_every_badge_and_setup_cell_use_the_one_address_and_ref(path):
    """Read from the notebook itself, not from the template: what a learner clicks and what Colab clones."""
    nb = nbformat.read(path, as_version=4)
    badges = [m for c in nb.cells if "colab-badge" in c.metadata.get("tags", []) for m in BADGE.findall(c.source)]
    setup = [c.source for c in nb.cells if "setup" in c.metadata.get("tags", [])]
    clones = [m for source in setup for m in CLONE.findall(source)]
    assert badges == [(cells.REPO_SLUG, cells.KIT_REF, path.relative_to(cells.NOTEBOOKS_DIR).as_posix())]
    assert clones == [(cells.KIT_REF, cells.REPO_URL)]
    assert [m for source in setup for m in SETUP_CALL.findall(source)] == [path.name[:2]], "the cell names its notebook"
    other = {m for c in nb.cells for m in re.findall(r"github\.com/([\w.-]+/[\w.-]+)", c.source)} - {cells.REPO_SLUG}
    assert not other - {"fbarez/Interpreting-Context-Look-ups"}, f"{path.name} names another repository: {other}"

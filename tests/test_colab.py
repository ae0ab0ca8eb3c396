"""The notebooks' Colab setup cell, run in a simulated Colab: what it installs, what it never touches, and that
every badge and setup cell points at the one repository address and ref of ``ctx_utils/tools/colab.py``."""

import importlib.metadata
import io
import os
import re
import sys
import types
from pathlib import Path

import nbformat
import pytest

from ctx_utils.tools import colab

ROOT = colab.REPO_ROOT


class FakePopen:
    """Records each command; prints two lines of output; exits with ``returncode``."""

    commands: list = []
    returncode_for = staticmethod(lambda cmd: 0)

    def __init__(self, cmd, stdout=None, stderr=None, text=None):
        self.cmd = cmd
        FakePopen.commands.append(cmd)
        self.stdout = iter([f"{cmd[0]}: working…\n", "done\n"])
        self.returncode = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.returncode = FakePopen.returncode_for(self.cmd)


def _run_setup_cell(monkeypatch, on_colab: bool, kit_present: bool = False, use_drive: bool = False, fail=None):
    """Execute the setup cell as Colab would, with subprocesses, the file system and Drive faked."""
    FakePopen.commands = []
    FakePopen.returncode_for = staticmethod(fail or (lambda cmd: 0))
    commands, written, printed, mounted = FakePopen.commands, {}, [], []
    if on_colab:
        fake = types.ModuleType("google.colab")
        fake.drive = types.SimpleNamespace(mount=mounted.append)
        monkeypatch.setitem(sys.modules, "google.colab", fake)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr("subprocess.Popen", FakePopen)
    monkeypatch.setattr(os.path, "isdir", lambda p: kit_present)
    monkeypatch.setattr(os, "chdir", lambda p: commands.append(["chdir", p]))
    monkeypatch.setattr(os, "makedirs", lambda p, exist_ok=False: commands.append(["makedirs", p]))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("CTX_RESULTS", raising=False)

    class Capture(io.StringIO):
        def __init__(self, path):
            super().__init__()
            self.path = path

        def close(self):
            written[self.path] = self.getvalue()
            super().close()

    source = colab.setup_cell_source()
    if use_drive:
        assert "USE_DRIVE = False" in source
        source = source.replace("USE_DRIVE = False", "USE_DRIVE = True", 1)  # what the learner edits
    namespace = {"open": lambda path, mode="r": Capture(path), "print": lambda *a, **k: printed.append(" ".join(map(str, a)))}
    exec(source, namespace)
    return commands, written, "".join(printed), mounted


def test_setup_cell_does_nothing_outside_colab(monkeypatch):
    commands, written, printed, _ = _run_setup_cell(monkeypatch, on_colab=False)
    assert commands == [] and written == {} and printed == ""


def test_setup_cell_on_colab_installs_the_runtime_set_visibly_and_never_moves_torch_numpy_transformers(monkeypatch):
    commands, written, printed, mounted = _run_setup_cell(monkeypatch, on_colab=True)
    clone, install, chdir = commands
    assert clone[:2] == ["git", "clone"] and colab.REPO_URL in clone and colab.KIT_REF in clone
    assert install[1:4] == ["-m", "pip", "install"]
    assert "-q" not in install and "--quiet" not in install, "pip must show its progress"
    assert "-U" not in install and "--upgrade" not in install
    assert install[install.index("-e") + 1] == "/content/kit", "the runtime set only: no [lab] or [test] extras"
    constraints = install[install.index("-c") + 1]
    pinned = {name: importlib.metadata.version(name) for name in ("torch", "numpy", "transformers")}
    assert written[constraints] == "".join(f"{n}=={v}\n" for n, v in pinned.items())
    assert not any(name in arg for arg in install for name in pinned), "the install must not name torch/numpy/transformers"
    assert chdir == ["chdir", "/content/kit/notebooks"]
    assert "git: working…" in printed and "done" in printed, "the commands' output must reach the cell"
    assert re.search(r"Kit installed in \d+ s\. GPU: (True|False)\. Results: /content/kit/results", printed)
    assert mounted == [] and "CTX_RESULTS" not in os.environ


def test_setup_cell_with_use_drive_keeps_results_in_drive(monkeypatch):
    commands, _, printed, mounted = _run_setup_cell(monkeypatch, on_colab=True, use_drive=True)
    assert mounted == ["/content/drive"]
    assert os.environ["CTX_RESULTS"] == colab.DRIVE_RESULTS and colab.DRIVE_RESULTS.startswith("/content/drive/")
    assert ["makedirs", colab.DRIVE_RESULTS] in commands
    assert f"Results: {colab.DRIVE_RESULTS}" in printed


def test_setup_cell_on_colab_reuses_an_existing_clone(monkeypatch):
    commands, *_ = _run_setup_cell(monkeypatch, on_colab=True, kit_present=True)
    assert not any(cmd[:2] == ["git", "clone"] for cmd in commands)


def test_a_failed_install_stops_with_what_to_do(monkeypatch):
    with pytest.raises(RuntimeError, match=r"pip install .* failed \(exit 1\): its output is above\. If pip reports "
                                           r"conflicting constraints"):
        _run_setup_cell(monkeypatch, on_colab=True, fail=lambda cmd: int("pip" in cmd))


def test_repository_address_lives_in_one_place():
    hits = [p for p in ROOT.joinpath("ctx_utils").rglob("*.py") if colab.REPO_SLUG in p.read_text()]
    assert hits == [Path(colab.__file__).resolve()]


BADGE = re.compile(r"https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/([^/]+)/notebooks/([^)\s]+)\)")
CLONE = re.compile(r'"--branch", "([^"]+)", "([^"]+)"')


@pytest.mark.parametrize("path", colab.notebook_paths(), ids=lambda p: p.relative_to(colab.NOTEBOOKS_DIR).as_posix())
def test_every_badge_and_setup_cell_use_the_one_address_and_ref(path):
    """Read from the notebook itself, not from the template: what a learner clicks and what Colab clones."""
    nb = nbformat.read(path, as_version=4)
    badges = [m for c in nb.cells if "colab-badge" in c.metadata.get("tags", []) for m in BADGE.findall(c.source)]
    clones = [m for c in nb.cells if "setup" in c.metadata.get("tags", []) for m in CLONE.findall(c.source)]
    assert badges == [(colab.REPO_SLUG, colab.KIT_REF, path.relative_to(colab.NOTEBOOKS_DIR).as_posix())]
    assert clones == [(colab.KIT_REF, colab.REPO_URL)]
    other = {m for c in nb.cells for m in re.findall(r"github\.com/([\w.-]+/[\w.-]+)", c.source)} - {colab.REPO_SLUG}
    assert not other - {"fbarez/Interpreting-Context-Look-ups"}, f"{path.name} names another repository: {other}"

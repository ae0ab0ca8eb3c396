"""The notebooks' Colab setup cell, run in a simulated Colab: what it installs, and what it never touches."""

import io
import os
import sys
import types

import numpy
import torch

from ctx_utils import colab


def _run_setup_cell(monkeypatch, on_colab: bool, kit_present: bool = False):
    commands, written = [], {}
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr("subprocess.run", lambda cmd, check: commands.append(cmd))
    monkeypatch.setattr(os.path, "isdir", lambda p: kit_present)
    monkeypatch.setattr(os, "chdir", lambda p: commands.append(["chdir", p]))
    monkeypatch.setattr(sys, "path", list(sys.path))

    class Capture(io.StringIO):
        def __init__(self, path):
            super().__init__()
            self.path = path

        def close(self):
            written[self.path] = self.getvalue()
            super().close()

    exec(colab.setup_cell_source(), {"open": lambda path, mode="r": Capture(path), "print": lambda *a: None})
    return commands, written


def test_setup_cell_does_nothing_outside_colab(monkeypatch):
    commands, written = _run_setup_cell(monkeypatch, on_colab=False)
    assert commands == [] and written == {}


def test_setup_cell_on_colab_clones_the_pinned_kit_and_never_moves_torch_or_numpy(monkeypatch):
    commands, written = _run_setup_cell(monkeypatch, on_colab=True)
    clone, install, chdir = commands
    assert clone[:2] == ["git", "clone"] and colab.REPO_URL in clone and colab.KIT_REF in clone
    assert install[1:4] == ["-m", "pip", "install"]
    constraints = install[install.index("-c") + 1]
    assert written[constraints] == f"torch=={torch.__version__}\nnumpy=={numpy.__version__}\n"
    assert not any("torch" in arg or "numpy" in arg for arg in install), "the install must not name torch/numpy"
    assert chdir == ["chdir", "/content/kit/notebooks"]


def test_setup_cell_on_colab_reuses_an_existing_clone(monkeypatch):
    commands, _ = _run_setup_cell(monkeypatch, on_colab=True, kit_present=True)
    assert not any(cmd[:2] == ["git", "clone"] for cmd in commands)


def test_repository_address_lives_in_one_place():
    from pathlib import Path

    root = Path(colab.__file__).resolve().parents[1]
    hits = [p for p in root.joinpath("ctx_utils").rglob("*.py") if colab.REPO_SLUG in p.read_text()]
    assert hits == [Path(colab.__file__).resolve()]

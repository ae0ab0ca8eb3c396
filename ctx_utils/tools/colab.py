"""What every notebook's setup cell calls on Colab, and the command that writes the badge and setup cells.

``python -m ctx_utils.tools.colab --sync`` rewrites, in every notebook under ``notebooks/``, the markdown cell tagged
``colab-badge`` and the code cell tagged ``setup`` as :mod:`ctx_utils.classroom.notebook_cells` writes them (the
repository address and ref live there only); ``--check`` only reports notebooks that are out of date (a test runs it,
so they cannot drift).

The setup cell is a few lines: on Colab it clones the kit at ``KIT_REF`` into ``/content/kit`` (a copy already
there, uploaded by hand, is used as it is) and calls :func:`setup`, which pip-installs the runtime dependencies
only (no JupyterLab, pytest or nbmake: the ``lab`` and ``test`` extras) under the pins of :func:`constraints`:
the tested versions of ``requirements-lock.txt`` where it exists, except Colab's own torch, numpy and
transformers, which stay as they are, and except the packages the learner lists in the cell's ``UNPIN``, which pip
may install at any version. That list is the way out of a version conflict, and pip's own words name what to put
in it (:func:`conflict_advice`). pip's output streams into the cell (Colab shows nothing of a plain subprocess)
and the cell prints how long it took. With ``USE_DRIVE = True`` it mounts Google Drive and points ``CTX_RESULTS``
at :data:`DRIVE_RESULTS`, so results outlive the runtime and every notebook finds what the others computed. It
also records the notebook's number (``CTX_NOTEBOOK``) for :mod:`ctx_utils.runtime`, which sizes the run to the
runtime. Everywhere else the cell does nothing: the kit is installed by ``make env`` (see README).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import nbformat
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ctx_utils import runtime
from ctx_utils.classroom.notebook_cells import NOTEBOOKS_DIR, expected_sources
from ctx_utils.results import results_root
from ctx_utils.settings import KIT_ROOT

DRIVE_RESULTS = "/content/drive/MyDrive/ctx-lookups-kit/results"
LOCK_FILE = KIT_ROOT / "requirements-lock.txt"  # the tested package set (pip freeze style), if the kit has one
CONSTRAINTS = KIT_ROOT / ".cache" / "colab-constraints.txt"  # written by each install from the pins below
COLAB_KEEPS = ("torch", "numpy", "transformers")  # Colab's own builds: replacing them breaks its runtime


def on_colab() -> bool:
    return "google.colab" in sys.modules


def setup(notebook: str, use_drive: bool = False, unpin: Iterable[str] = ()) -> None:
    """What every setup cell calls. On Colab: install the kit (:func:`install`), work in its ``notebooks/``, keep
    results in Drive if asked, and note the notebook's number for :mod:`ctx_utils.runtime`. Elsewhere: nothing."""
    if not on_colab():
        return
    started = time.perf_counter()
    install(unpin)
    os.chdir(NOTEBOOKS_DIR)
    os.environ[runtime.NOTEBOOK_VAR] = notebook
    if use_drive:
        from google.colab import drive

        drive.mount("/content/drive")
        os.environ["CTX_RESULTS"] = DRIVE_RESULTS
        os.makedirs(DRIVE_RESULTS, exist_ok=True)
    where = f"{results_root()}" + ("" if use_drive else " (lost when the runtime ends)")
    print(f"Kit installed in {time.perf_counter() - started:.0f} s. Results: {where}.")


def constraints(unpin: Iterable[str] = (), lock_file: Path | None = None) -> str:
    """The pins of Colab's install, a pip constraints file: each exact version of ``lock_file`` (the kit's; none when the
    file is absent), Colab's installed torch, numpy and transformers instead of the lock's, and nothing at all
    for the packages named in ``unpin``."""
    lock_file = LOCK_FILE if lock_file is None else lock_file
    pins: dict[str, str] = {}
    for line in lock_file.read_text().splitlines() if lock_file.exists() else []:
        text = line.split("#", 1)[0].split(" --", 1)[0].strip().rstrip("\\").strip()
        if not text or text.startswith("-"):
            continue  # a blank line, a comment, or an option (--hash, -e, --index-url)
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if not req.url and [spec.operator for spec in req.specifier] == ["=="]:
            pins[canonicalize_name(req.name)] = str(req)
    for name in COLAB_KEEPS:
        try:
            pins[canonicalize_name(name)] = f"{name}=={version(name)}"
        except PackageNotFoundError:
            pass  # not installed: the lock's version, if any, is installed
    free = {canonicalize_name(name) for name in unpin}
    return "".join(f"{pin}\n" for key, pin in sorted(pins.items()) if key not in free)


def install(unpin: Iterable[str] = ()) -> None:
    """``pip install -e`` the kit under :func:`constraints`, its output streamed into the cell."""
    CONSTRAINTS.parent.mkdir(parents=True, exist_ok=True)
    CONSTRAINTS.write_text(constraints(unpin))
    output = run([sys.executable, "-m", "pip", "install", "-c", str(CONSTRAINTS), "-e", str(KIT_ROOT)])
    if output is not None:
        raise RuntimeError(f"`pip install` of the kit failed: its output is above. {conflict_advice(output, unpin)}")


def run(cmd: list[str]) -> str | None:
    """Run ``cmd``, printing its output as it comes; None when it succeeds, else everything it printed."""
    lines = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    return "".join(lines) if proc.returncode else None


#: How pip names a pin it cannot honour: a conflict with a constraint, or a version that does not exist here.
_PINNED = re.compile(r"The user requested \(constraint\) ([A-Za-z0-9][A-Za-z0-9._-]*)|"
                     r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._-]*)==")


def conflict_advice(pip_output: str, unpin: Iterable[str] = ()) -> str:
    """What to do after a failed install: the pinned packages pip could not honour go into the cell's UNPIN."""
    named = dict.fromkeys(m.group(1) or m.group(2) for m in _PINNED.finditer(pip_output))
    if not named:
        return ("If pip reports a version conflict, put the package it names into UNPIN in this cell (e.g. "
                'UNPIN = ["transformers"]), rerun this cell, then restart the runtime (Runtime > Restart session).')
    listed = {canonicalize_name(name) for name in unpin}
    wanted = [*unpin, *(name for name in named if canonicalize_name(name) not in listed)]
    return (f"pip could not keep the pinned version of {', '.join(named)} (Colab's own, or the kit's tested one): set "
            f"UNPIN = {wanted!r} in this cell, rerun it, then restart the runtime (Runtime > Restart session) and run "
            "the notebook from the top.")


def stale_cells(path: Path) -> list[str]:
    """Tags of the cells of ``path`` whose source differs from what :func:`sync_notebook` would write."""
    nb = nbformat.read(path, as_version=4)
    expected = expected_sources(path)
    found = {tag: cell.source for cell in nb.cells for tag in cell.metadata.get("tags", []) if tag in expected}
    return [tag for tag, source in expected.items() if found.get(tag) != source]


def sync_notebook(path: Path) -> bool:
    """Rewrite the badge and setup cells of one notebook; returns whether anything changed."""
    if not stale_cells(path):
        return False
    nb = nbformat.read(path, as_version=4)
    expected = expected_sources(path)
    tags_present = {tag for cell in nb.cells for tag in cell.metadata.get("tags", [])}
    missing = set(expected) - tags_present
    if missing:
        raise ValueError(f"{path.name} has no cell tagged {sorted(missing)}: add one (see CONTRIBUTING.md).")
    for cell in nb.cells:
        for tag in cell.metadata.get("tags", []):
            if tag in expected:
                cell.source = expected[tag]
    nbformat.write(nb, path)
    return True


def notebook_paths(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Every notebook of the kit (step notebooks and, if present, generated exercise notebooks)."""
    return sorted(folder.rglob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sync", action="store_true", help="rewrite badge and setup cells")
    mode.add_argument("--check", action="store_true", help="list notebooks whose cells are out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in notebook_paths():
        if args.sync:
            if sync_notebook(path):
                print(f"synced {path.relative_to(KIT_ROOT)}")
        elif stale_cells(path):
            stale.append(path)
    for path in stale:
        print(f"out of date: {path.relative_to(KIT_ROOT)} (run `python -m ctx_utils.tools.colab --sync`)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

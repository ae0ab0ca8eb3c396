"""The Colab badge and setup cell of every notebook, written from one place.

The repository address and the ref Colab installs live here and only here (:data:`REPO_URL`, :data:`KIT_REF`).
``python -m ctx_utils.tools.colab --sync`` rewrites, in every notebook under ``notebooks/``, the markdown cell tagged
``colab-badge`` and the code cell tagged ``setup``; ``--check`` only reports notebooks that are out of date (a
test runs it, so they cannot drift). Publishing the kit at another address is one line: change ``REPO_URL``
(and ``KIT_REF`` to pin a release tag), then run the sync (see CONTRIBUTING.md).

On Colab the setup cell clones the kit at ``KIT_REF`` and pip-installs its runtime dependencies only (no
JupyterLab, pytest or nbmake: those are the ``lab`` and ``test`` extras), under a constraints file that pins
the torch, numpy and transformers Colab already has, so the install never moves them. pip's output streams
into the cell (Colab shows nothing of a plain subprocess) and the cell prints how long it took. With
``USE_DRIVE = True`` it mounts Google Drive and points ``CTX_RESULTS`` at :data:`DRIVE_RESULTS`, so results
outlive the runtime and every notebook finds what the others computed. Everywhere else the cell does nothing:
the kit is installed by ``make env`` (see README).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from ctx_utils.results import REPO_ROOT

# Publishing: the repository's address and the branch or tag Colab installs. Change them here, then run
# `python -m ctx_utils.tools.colab --sync`: every badge and setup cell follows.
REPO_URL = "https://github.com/ctx-lookups/context-lookups-kit"
KIT_REF = "main"
REPO_SLUG = REPO_URL.removeprefix("https://github.com/")
DRIVE_RESULTS = "/content/drive/MyDrive/ctx-lookups-kit/results"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

SETUP_TEMPLATE = '''\
# Setup. On Colab: install the kit from {repo} at "{ref}" (Colab's torch, numpy and transformers stay as they are).
# Anywhere else this cell does nothing: install the kit with `make env` (see the README).
USE_DRIVE = False  # True: keep results/ in your Google Drive, so other notebooks and later sessions find them
import sys

if "google.colab" in sys.modules:
    import os, subprocess, time
    from importlib.metadata import version

    def run(cmd, hint=""):  # stream the command's output into this cell as it comes
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:
                print(line, end="", flush=True)
        if proc.returncode:
            raise RuntimeError(f"`{{' '.join(cmd)}}` failed (exit {{proc.returncode}}): its output is above.{{hint}}")

    started = time.perf_counter()
    if not os.path.isdir("/content/kit"):
        run(["git", "clone", "--depth", "1", "--branch", "{ref}", "{repo}", "/content/kit"])
    with open("/content/kit-constraints.txt", "w") as f:
        f.write("".join(f"{{name}}=={{version(name)}}\\n" for name in ("torch", "numpy", "transformers")))
    run([sys.executable, "-m", "pip", "install", "-c", "/content/kit-constraints.txt", "-e", "/content/kit"],
        " If pip reports conflicting constraints, Colab's torch, numpy or transformers is older than the kit needs:"
        " delete its line from /content/kit-constraints.txt, rerun this cell, then restart the runtime.")
    sys.path.insert(0, "/content/kit")
    os.chdir("/content/kit/notebooks")
    if USE_DRIVE:
        from google.colab import drive

        drive.mount("/content/drive")
        os.environ["CTX_RESULTS"] = "{drive_results}"
        os.makedirs(os.environ["CTX_RESULTS"], exist_ok=True)
    import torch

    print(f"Kit installed in {{time.perf_counter() - started:.0f}} s. GPU: {{torch.cuda.is_available()}}. "
          f"Results: {{os.environ.get('CTX_RESULTS', '/content/kit/results (lost when the runtime ends)')}}")'''


def setup_cell_source() -> str:
    """The code of every notebook's ``setup`` cell."""
    return SETUP_TEMPLATE.format(repo=REPO_URL, ref=KIT_REF, drive_results=DRIVE_RESULTS)


def badge_source(notebook_path: str) -> str:
    """The markdown of a notebook's Colab badge; ``notebook_path`` is relative to ``notebooks/``."""
    url = f"https://colab.research.google.com/github/{REPO_SLUG}/blob/{KIT_REF}/notebooks/{notebook_path}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def expected_sources(path: Path) -> dict[str, str]:
    """The badge and setup cell sources of one notebook (an exercise notebook's badge opens the exercise)."""
    try:
        link = path.resolve().relative_to(NOTEBOOKS_DIR).as_posix()  # e.g. "exercises/03_head_attribution.ipynb"
    except ValueError:
        link = path.name
    return {"colab-badge": badge_source(link), "setup": setup_cell_source()}


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
                print(f"synced {path.relative_to(REPO_ROOT)}")
        elif stale_cells(path):
            stale.append(path)
    for path in stale:
        print(f"out of date: {path.relative_to(REPO_ROOT)} (run `python -m ctx_utils.tools.colab --sync`)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

"""The Colab badge and setup cell of every notebook, written from one place.

The repository address lives here and only here. ``python -m ctx_utils.colab --sync`` rewrites, in every
notebook under ``notebooks/``, the markdown cell tagged ``colab-badge`` and the code cell tagged ``setup``;
``--check`` only reports notebooks that are out of date (a test runs it, so they cannot drift).

On Colab the setup cell clones the kit at a fixed ref and installs it with pip, under a constraints file
that pins the torch and numpy Colab already has, so the install never downgrades (or upgrades) them.
Everywhere else the cell does nothing: the kit is installed by ``make env`` (see README).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from ctx_utils.results import REPO_ROOT

REPO_URL = "https://github.com/ctx-lookups/context-lookups-kit"
REPO_SLUG = REPO_URL.removeprefix("https://github.com/")
KIT_REF = "main"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

SETUP_TEMPLATE = '''\
# Setup. On Colab: install the kit from {repo} at "{ref}" (torch and numpy stay exactly as Colab has them).
# Anywhere else this cell does nothing: install the kit with `make env` (see the README).
import sys

if "google.colab" in sys.modules:
    import os, subprocess
    import numpy, torch

    if not os.path.isdir("/content/kit"):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{ref}", "{repo}", "/content/kit"], check=True)
    with open("/content/kit-constraints.txt", "w") as f:
        f.write(f"torch=={{torch.__version__}}\\nnumpy=={{numpy.__version__}}\\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", "/content/kit-constraints.txt",
                    "-e", "/content/kit"], check=True)
    sys.path.insert(0, "/content/kit")
    os.chdir("/content/kit/notebooks")
    print("Kit installed. GPU:", torch.cuda.is_available())'''


def setup_cell_source() -> str:
    """The code of every notebook's ``setup`` cell."""
    return SETUP_TEMPLATE.format(repo=REPO_URL, ref=KIT_REF)


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
        print(f"out of date: {path.relative_to(REPO_ROOT)} (run `python -m ctx_utils.colab --sync`)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

"""The cells every notebook shares, written from one place: the Colab badge and the setup cell.

The repository address and the ref Colab installs live here and only here (:data:`REPO_URL`, :data:`KIT_REF`).
Publishing the kit at another address is one line: change ``REPO_URL`` (and ``KIT_REF`` to pin a release tag), then
run ``python -m ctx_utils.tools.colab --sync`` (which writes these cells into every notebook) and
``python -m ctx_utils.classroom.exercises`` (which writes them into the exercise notebooks); see CONTRIBUTING.md.
What the setup cell calls on Colab is :func:`ctx_utils.tools.colab.setup`.
"""

from __future__ import annotations

from pathlib import Path

from ctx_utils.settings import KIT_ROOT

# Publishing: the repository's address and the branch or tag Colab installs. Change them here, then run
# `python -m ctx_utils.tools.colab --sync`: every badge and setup cell follows.
REPO_URL = "https://github.com/ctx-lookups/context-lookups-kit"
KIT_REF = "main"
REPO_SLUG = REPO_URL.removeprefix("https://github.com/")
KIT_DIR = "/content/kit"  # where the setup cell puts the kit on Colab
NOTEBOOKS_DIR = KIT_ROOT / "notebooks"

SETUP_TEMPLATE = '''\
# Setup. On Colab: fetch the kit from {repo} at "{ref}" and install it (Colab's torch, numpy and transformers stay).
# Anywhere else the kit is installed already (`make env`, see the README) and this cell does nothing.
USE_DRIVE = False  # True: keep results in your Google Drive, so later notebooks and sessions reuse them
UNPIN = []  # packages pip may install at any version, when it reports a version conflict for them
import os, subprocess, sys
if "google.colab" in sys.modules:
    if not os.path.isdir("{kit}"):
        print(subprocess.run(["git", "clone", "--depth", "1", "--branch", "{ref}", "{repo}", "{kit}"], capture_output=True, text=True).stderr)
    sys.path.insert(0, "{kit}")
from ctx_utils.tools import colab
colab.setup("{notebook}", use_drive=USE_DRIVE, unpin=UNPIN)'''


def setup_cell_source(notebook: str) -> str:
    """The code of a notebook's ``setup`` cell; ``notebook`` is its number (``"05"``)."""
    return SETUP_TEMPLATE.format(repo=REPO_URL, ref=KIT_REF, kit=KIT_DIR, notebook=notebook)


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
    return {"colab-badge": badge_source(link), "setup": setup_cell_source(path.name[:2])}

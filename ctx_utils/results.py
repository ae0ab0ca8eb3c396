"""Where results live and how they are written: small versioned JSON files under ``results/<model>/``.

Every artefact carries a ``schema_version`` so a classroom script can tell an old file from a new one, and
every write is atomic (a temporary file renamed into place), so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # 2: every step result records its settings and their fingerprint
REPO_ROOT = Path(__file__).resolve().parent.parent


def results_root() -> Path:
    """The folder that holds ``<model>/`` result folders: ``$CTX_RESULTS`` or ``results/`` in the kit."""
    return Path(os.environ.get("CTX_RESULTS", REPO_ROOT / "results"))


def results_dir(model: str) -> Path:
    """``results/<model>/``, created if missing.

    ``model`` is the kit's short name (e.g. ``organism``) or the path of a local model folder, whose results
    go to ``results/<folder name>/``.
    """
    path = results_root() / Path(model).expanduser().name
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Atomically write a result dict as indented JSON; adds ``schema_version`` first if it is missing."""
    data = {"schema_version": SCHEMA_VERSION, **data}
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return Path(path)


class ResultFileError(ValueError):
    """A result file that cannot be used: not JSON (e.g. cut short), not an object, or another schema version."""


def load_json(path: str | Path, schema_version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """Read a result written by :func:`save_json`, refusing a file of another schema version."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the notebook that writes it first.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultFileError(
            f"{path} is not valid JSON ({err}): it was cut short or edited. Delete it and rerun the notebook "
            "that writes it (the pipeline recomputes it)."
        ) from None
    if not isinstance(data, dict):
        raise ResultFileError(f"{path} holds a {type(data).__name__}, not a result object: delete it and rerun.")
    found = data.get("schema_version")
    if found != schema_version:
        raise ResultFileError(
            f"{path} has schema_version {found!r}, this kit reads {schema_version}: "
            "delete the file and rerun the notebook that writes it."
        )
    return data

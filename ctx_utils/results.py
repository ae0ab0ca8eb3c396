"""Where results live and how they are written: small versioned JSON files under ``results/<model>/``.

Every artefact carries a ``schema_version`` so a classroom script can tell an old file from a new one, and
every write is atomic (a temporary file renamed into place), so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ctx_utils.settings import KIT_ROOT, as_typed_path, env_path

SCHEMA_VERSION = 2  # 2: every step result records its settings and their fingerprint
#: Which notebook writes each result file, for the message when one is missing or broken.
WRITTEN_BY: dict[str, str] = {
    "neurons.json": "01_next_token_neurons",
    "prompts.json": "02_activating_prompts",
    "heads.json": "03_head_attribution",
    "explanations.json": "04_explaining_heads",
    "scores.json": "05_scoring_explanations",
    "ablation.json": "06_ablation",
    "summary.json": "07_paper_results",
}


class ResultFileError(ValueError):
    """A result file exists but cannot be used (truncated, not JSON, another schema): recompute it."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def rerun_hint(path: str | Path) -> str:
    """Which notebook to rerun to write ``path`` again (``notebooks/04_explaining_heads.ipynb``), in words."""
    notebook = WRITTEN_BY.get(Path(path).name)
    return f"rerun notebooks/{notebook}.ipynb" if notebook else "rerun the notebook or script that writes it"


class ResultsFolderError(RuntimeError):
    """The results folder cannot be written (a full disk, a read-only folder, a file where a folder should be)."""


def results_root() -> Path:
    """The folder that holds ``<model>/`` result folders: ``$CTX_RESULTS`` or ``results/`` in the kit.

    ``CTX_RESULTS`` is read once per call as typed (:func:`ctx_utils.settings.env_path`): ``~`` expanded, a
    relative path taken from where it was typed, so the script and every notebook kernel use the same folder.
    """
    return env_path("CTX_RESULTS") or KIT_ROOT / "results"


def results_name(model: str) -> str:
    """The name of ``model``'s folder under :func:`results_root`: a kit name (``organism``) as it is, a local
    model folder's name — except that a local folder named like a bundled model (``~/organism``, not the
    kit's ``data/organism``) gets ``<name>-local-<8 hex digits of its path>``, so it never writes over (or
    reads) the bundled model's results."""
    if os.sep not in model and "/" not in model and not model.startswith("~"):
        return model
    path = as_typed_path(model)
    bundled = KIT_ROOT / "data" / path.name
    if bundled.is_dir() and path.resolve() != bundled.resolve():
        return f"{path.name}-local-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    return path.name


def results_dir(model: str) -> Path:
    """``results/<model>/``, created if missing (:func:`results_name` says which name a local folder gets).

    ``model`` is the kit's short name (e.g. ``organism``) or the path of a local model folder, whose results
    go to ``results/<folder name>/``. A folder that cannot be made raises :class:`ResultsFolderError`.
    """
    path = results_root() / results_name(model)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise folder_error(path, err) from None
    return path


def folder_error(path: Path, err: OSError) -> ResultsFolderError:
    """A :class:`ResultsFolderError` for ``err`` on ``path``: what went wrong, the folder, ``CTX_RESULTS``, the fix."""
    reasons = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.ENOTDIR: "a file stands where a folder should be",
               errno.EEXIST: "a file stands where a folder should be"}
    reason = reasons.get(err.errno, err.strerror or str(err))
    if not path.resolve().is_relative_to(results_root().resolve()):  # another file (an organism's training record)
        return ResultsFolderError(f"Cannot write {path}: {reason}.")
    typed = os.environ.get("CTX_RESULTS", "").strip()
    setting = f"CTX_RESULTS={typed}" if typed else "CTX_RESULTS is unset, so the kit's results/ folder"
    return ResultsFolderError(
        f"Cannot write {path}: {reason}. Results go to {results_root()} ({setting}): free some space or make it "
        "writable, or set CTX_RESULTS to a folder that is. Result files already saved there are unchanged."
    )


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


def json_number(x: Any) -> Any:
    """``x``, with NaN (e.g. a skew test on fewer than 8 pairs) as None, which JSON can hold."""
    return None if isinstance(x, float) and x != x else x


def save_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Atomically write a result dict as indented JSON; adds ``schema_version`` first if it is missing.

    A disk error raises :class:`ResultsFolderError` naming the file, the folder and ``CTX_RESULTS``.
    """
    data = {"schema_version": SCHEMA_VERSION, **data}
    try:
        write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    except OSError as err:  # the old file, if any, is intact: the write goes through a temporary file
        raise folder_error(Path(path), err) from None
    return Path(path)


def load_json(path: str | Path, schema_version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """Read a result written by :func:`save_json`.

    Raises ``FileNotFoundError`` for a missing file and :class:`ResultFileError` for one that is not a JSON
    object (truncated by a full disk or a copy cut short, edited by hand) or has another schema version;
    both messages name the file and the notebook to rerun.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {rerun_hint(path)} first.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        where = f" (line {err.lineno}, column {err.colno}: {err.msg})" if isinstance(err, json.JSONDecodeError) else ""
        raise ResultFileError(
            f"{path} is not valid JSON{where}: it is truncated or damaged. Delete it and {rerun_hint(path)}.", path
        ) from None
    if not isinstance(data, dict):
        raise ResultFileError(f"{path} holds a JSON {type(data).__name__}, not a result: delete it and {rerun_hint(path)}.", path)
    found = data.get("schema_version")
    if found != schema_version:
        raise ResultFileError(
            f"{path} has schema_version {found!r}, this kit reads {schema_version}: delete the file and {rerun_hint(path)}.",
            path,
        )
    return data


def mixed_settings(found: dict[str, dict[str, Any]]) -> list[str]:
    """Where result files read together disagree on a setting they share, one sentence each (empty: they agree).

    ``found``: file name → its loaded result. Each step's file records the settings that shaped it (those of the
    steps it builds on included), so two files from one run agree on every setting both record.
    """
    seen: dict[str, tuple[str, Any]] = {}  # setting → (the first file recording it, its value there)
    problems = []
    for name, data in found.items():
        for setting, value in (data.get("settings") or {}).items():
            first = seen.setdefault(setting, (name, value))
            if first[1] != value:
                problems.append(f"{first[0]} has {setting}={first[1]!r} but {name} has {setting}={value!r}")
    return problems


def check_same_settings(folder: str | Path, found: dict[str, dict[str, Any]]) -> None:
    """Raise :class:`ResultFileError` naming the files when results read together come from different settings
    (one step rerun with ``CTX_HEAD_RULE=top3``, or two runs sharing a folder), instead of combining them."""
    problems = mixed_settings(found)
    if problems:
        raise ResultFileError(
            f"{folder} mixes results made with different settings: {'; '.join(problems[:3])}. Rerun the notebooks "
            "(or python -m ctx_utils.pipeline) with one set of settings, or give each run its own CTX_RESULTS.",
            Path(folder),
        )

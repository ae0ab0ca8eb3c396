"""Running the kit's notebooks and script in a subprocess, as a user runs them, for the slow tests."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def env_for(results: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any CTX_ setting or API key, plus the results folder and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTX_") and k != "OPENAI_API_KEY"}
    return env | {"CTX_RESULTS": str(results), "HF_HUB_OFFLINE": "1",
                  "CTX_TORCH_THREADS": os.environ.get("CTX_TORCH_THREADS", "1")} | (extra or {})


def run(args: list[str], results: Path, extra: dict[str, str] | None = None) -> None:
    """``python -m <args>`` offline on one torch thread, results under ``results``; fails with what the run said."""
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env_for(results, extra), capture_output=True,
                          text=True, timeout=1800)
    runs = results.glob("*/notebooks/run.json")
    failed = [f"{r['notebook']}: {r['error']}" for p in runs for r in json.loads(p.read_text())["notebooks"] if not r["ok"]]
    assert done.returncode == 0 and not failed, (f"{' '.join(args)} failed:\n" + "\n".join(failed)
                                                 + f"\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def result_files(folder: Path) -> dict[str, bytes]:
    """Every result file of a model's results folder, by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))}


def outputs(cell) -> str:
    """A code cell's printed text and plain-text results, as one string."""
    return "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))


def solved(exercise_nb: nbformat.NotebookNode, step_path: Path) -> nbformat.NotebookNode:
    """The exercise notebook with each stub cell holding its step notebook's solution (as a learner who finished)."""
    solutions = {c.id: c.source for c in nbformat.read(step_path, as_version=4).cells if "solution" in c.metadata.get("tags", [])}
    nb = copy.deepcopy(exercise_nb)
    for cell in nb.cells:
        if "your-code" in cell.metadata.get("tags", []):
            cell.source = solutions[cell.id]
    return nb

"""The main job: execute every numbered notebook headless, in order, on one model.

    python -m ctx_utils.run_notebooks [--model auto|organism|gpt2-small|...] [--only 01 02]

Each notebook runs on a fresh kernel with ``CTX_MODEL`` set, so all of them use the same model. The notebooks
write their results under ``results/<model>/``; this job adds, under ``results/<model>/notebooks/``, the
executed copy of each notebook and an HTML rendering (figures included) that opens in any browser, plus
``run.json`` with each notebook's status and run time. A failing notebook is saved as far as it ran; the
job goes on with the next one and exits non-zero at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

from ctx_utils.models import ModelNotFoundError, choose_model
from ctx_utils.results import results_dir, save_json, write_text_atomic

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def step_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks of the kit, in order (exercise copies in sub-folders are not included)."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def execute_notebook(path: Path, out_dir: Path, timeout: int = 1800) -> tuple[bool, float, str]:
    """Run one notebook on a fresh kernel; save the executed copy and its HTML. Returns (ok, seconds, error)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = ""
    try:
        client.execute()
    except CellExecutionError as err:
        error = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    seconds = time.perf_counter() - start
    write_text_atomic(out_dir / path.name, nbformat.writes(nb))
    html, _ = HTMLExporter().from_notebook_node(nb)
    write_text_atomic(out_dir / path.with_suffix(".html").name, html)
    return not error, seconds, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Execute every notebook headless, in order, on one model.")
    parser.add_argument("--model", default=os.environ.get("CTX_MODEL", "auto"), help="model name or folder (default: auto)")
    parser.add_argument("--only", nargs="*", default=None, help="notebook numbers to run, e.g. 00 03")
    args = parser.parse_args(argv)

    try:
        choice = choose_model(args.model)
    except ModelNotFoundError as err:  # a typo in --model: the message says it all, a traceback would bury it
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Model: {choice.name}. {choice.reason}", flush=True)
    os.environ["CTX_MODEL"] = choice.name  # every kernel inherits it, so all notebooks agree
    # plotly's default renderer emits only its JSON mimetype, which the HTML export drops; this one also
    # embeds plotly.js (once per notebook), so the HTML copies show every figure offline.
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype+notebook")
    out_dir = results_dir(choice.name) / "notebooks"
    notebooks = [p for p in step_notebooks() if args.only is None or p.name[:2] in args.only]
    if not notebooks:
        print(f"No notebooks matched in {NOTEBOOKS_DIR}.", file=sys.stderr)
        return 2

    runs = []
    for path in notebooks:
        print(f"→ {path.name} …", end=" ", flush=True)
        ok, seconds, error = execute_notebook(path, out_dir)
        print(f"{'ok' if ok else 'FAILED'} in {seconds:.1f} s" + (f": {error}" if error else ""), flush=True)
        runs.append({"notebook": path.name, "ok": ok, "seconds": round(seconds, 1), "error": error})
    save_json(out_dir / "run.json", {"model": choice.name, "notebooks": runs})
    failed = [r["notebook"] for r in runs if not r["ok"]]
    print(f"Executed notebooks and HTML in {out_dir}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

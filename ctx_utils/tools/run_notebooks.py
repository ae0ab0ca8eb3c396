"""The main job: execute every numbered notebook headless, in order, on one model.

    python -m ctx_utils.tools.run_notebooks [--model auto|organism|gpt2-small|...] [--only 01 02]

Each notebook runs on a fresh kernel with ``CTX_MODEL`` set, so all of them use the same model. The notebooks
write their results under ``results/<model>/``; this job adds, under ``results/<model>/notebooks/``, the
executed copy of each notebook and an HTML rendering (figures included) that opens in any browser, plus
``run.json`` with each notebook's status and run time. A failing notebook is saved as far as it ran; the
job goes on with the next one and exits non-zero at the end. Ctrl-C stops the job with one line saying what
was kept (exit status 130). Path variables (``CTX_RESULTS``…) are made absolute before any kernel starts, so
kernels, which run in ``notebooks/``, read the folders the command was typed for. Kernels talk to this process
over CurveZMQ-encrypted sockets (:func:`encrypt_kernels`), so no kernel warns of plain-text TCP.

The HTML pages work offline and stay small (see :class:`OfflineHTMLExporter`): formulas are converted to
MathML, which browsers draw natively (no MathJax from a CDN); plotly figures are stored once, as plotly's JSON,
and drawn by one ``plotly.min.js`` written next to the pages (4.6 MB once per folder, not per figure or page);
the circuitsvis bundle that a notebook carries once (see :mod:`ctx_utils.viz`) becomes one ``circuitsvis.js``
next to the pages too. Keep the folder together when copying it: a page moved alone shows its text only.
"""

from __future__ import annotations

import argparse
import copy
import html
import os
import re
import sys
import threading
import time
from pathlib import Path

import jinja2
import nbformat
from jupyter_core.utils import run_sync
import plotly.io as pio
from latex2mathml.converter import convert as latex_to_mathml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

from ctx_utils import viz
from ctx_utils.models import ModelNotFoundError, choose_model
from ctx_utils.results import ResultsFolderError, folder_error, results_dir, save_json, write_text_atomic
from ctx_utils.settings import KIT_ROOT, SettingsError, absolute_path_variables, load_settings

NOTEBOOKS_DIR = KIT_ROOT / "notebooks"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
PLOTLY_JS = "plotly.min.js"  # next to the pages, written once per folder
PLOTLY_RENDERER = "plotly_mimetype"  # figures leave the kernel as plotly's JSON only, never with plotly.js
CIRCUITSVIS_JS = "circuitsvis.js"  # circuitsvis's bundle, next to the pages, written once per folder
# nbconvert's lab page without its CDN scripts: no MathJax (formulas are MathML), no require.js (nothing here
# uses it; loaded, it would also hide plotly's global), no mermaid loader (the kit draws no diagrams), and
# plotly.js from the shared file when a page has figures. (Widgets still need their CDN manager to draw.)
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}
{%- if resources.ctx_plotly_js %}<script src="{{ resources.ctx_plotly_js }}"></script>{% endif -%}
{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


class MathMLRenderer(IPythonRenderer):
    """nbconvert's markdown renderer with every formula converted to MathML (drawn by the browser, offline).

    A formula latex2mathml cannot read stays visible as its LaTeX source, in a ``<code class="ctx-latex">``.
    """

    def _math(self, latex: str, display: str) -> str:
        try:
            return latex_to_mathml(latex, display=display)
        except Exception:  # noqa: BLE001 - latex2mathml raises many types; the source stays readable
            return f'<code class="ctx-latex">{html.escape(latex)}</code>'

    def block_math(self, body: str) -> str:
        return self._math(body, "block")

    def inline_math(self, body: str) -> str:
        return self._math(body, "inline")

    def latex_environment(self, name: str, body: str) -> str:
        return self._math(f"\\begin{{{name}}}{body}\\end{{{name}}}", "block")


class OfflineHTMLExporter(HTMLExporter):
    """nbconvert's lab HTML export that needs no network: MathML formulas, plotly.js from :data:`PLOTLY_JS`."""

    def __init__(self, **kwargs) -> None:
        super().__init__(extra_loaders=[jinja2.DictLoader({"ctx_offline.html.j2": OFFLINE_TEMPLATE})],
                         template_file="ctx_offline.html.j2", **kwargs)

    @jinja2.pass_context
    def markdown2html(self, context, source: str) -> str:
        cell = context.get("cell", {})
        renderer = MathMLRenderer(
            escape=False,
            attachments=cell.get("attachments", {}),
            embed_images=self.embed_images,
            path=context.get("resources", {}).get("metadata", {}).get("path", ""),
            anchor_link_text=self.anchor_link_text,
            exclude_anchor_links=self.exclude_anchor_links,
            **self.lexer_options,
        )
        return MarkdownWithMath(renderer=renderer).render(source)


def plotly_outputs_as_html(nb: nbformat.NotebookNode) -> int:
    """Give every plotly figure output (plotly's JSON only) an HTML form that draws it with a page-wide
    ``Plotly``; returns how many there are. Element ids are numbered, so the page is the same on every run."""
    count = 0
    for c, cell in enumerate(nb.cells):
        for o, output in enumerate(cell.get("outputs", [])):
            figure = output.get("data", {}).get(PLOTLY_MIME)
            if figure is not None:
                output["data"]["text/html"] = pio.to_html(
                    figure, include_plotlyjs=False, full_html=False, validate=False, div_id=f"ctx-figure-{c}-{o}"
                )
                count += 1
    return count


def circuitsvis_bundle_as_file(nb: nbformat.NotebookNode) -> int:
    """Replace the circuitsvis bundle that a view's output carries (see :mod:`ctx_utils.viz`) by a reference to
    :data:`CIRCUITSVIS_JS`; returns how many outputs carried it. Scripts run in page order, so the views queued
    before it still draw when it has loaded."""
    inline = f"<script>\n{viz.bundle_js()}\n"
    count = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            markup = output.get("data", {}).get("text/html")
            text = "".join(markup) if isinstance(markup, list) else markup
            if text and inline in text:
                output["data"]["text/html"] = text.replace(inline, f'<script src="{CIRCUITSVIS_JS}"></script>\n<script>\n')
                count += 1
    return count


def notebook_html(nb: nbformat.NotebookNode) -> str:
    """The offline HTML page of an executed notebook (the notebook itself is left unchanged)."""
    page = copy.deepcopy(nb)
    circuitsvis_bundle_as_file(page)
    resources = {"ctx_plotly_js": PLOTLY_JS if plotly_outputs_as_html(page) else ""}
    text, _ = OfflineHTMLExporter().from_notebook_node(page, resources=resources)
    return text


def write_page_scripts(out_dir: Path) -> None:
    """Write the installed plotly.js and circuitsvis bundle next to the pages, unless the same files are there."""
    from plotly.offline import get_plotlyjs

    for name, js in ((PLOTLY_JS, get_plotlyjs()), (CIRCUITSVIS_JS, viz.bundle_js())):
        target = out_dir / name
        if not target.exists() or target.read_text(encoding="utf-8") != js:
            write_text_atomic(target, js)


def step_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks of the kit, in order (exercise copies in sub-folders are not included)."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def encrypt_kernels() -> None:
    """Start every kernel of this process with CurveZMQ keys (jupyter_client's ``transport_encryption="auto"``,
    for kernel specs that support it, as ipykernel's does): the sockets are encrypted, and no kernel warns that
    it "is running over TCP without encryption" on every notebook's line. Set as the class default because
    nbmake (``make test``) builds its kernel managers with no configuration; tests/conftest.py calls it too."""
    import zmq
    from jupyter_client.manager import KernelManager

    if zmq.has("curve"):
        KernelManager.transport_encryption.default_value = "auto"


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the colour codes of IPython's tracebacks


def error_line(err: CellExecutionError) -> str:
    """The last line of a cell's error (``AssertionError: …``), without IPython's colour codes."""
    text = ANSI.sub("", str(err)).strip()
    return text.splitlines()[-1] if text else type(err).__name__


def execute_notebook(path: Path, out_dir: Path, timeout: int = 1800) -> tuple[bool, float, str]:
    """Run one notebook on a fresh kernel; save the executed copy and its HTML. Returns (ok, seconds, error).

    Ctrl-C stops the kernel (:func:`_execute_interruptibly`) and propagates; nothing is saved for this notebook.
    """
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = ""
    try:
        _execute_interruptibly(client)
    except CellExecutionError as err:
        error = error_line(err)
    seconds = time.perf_counter() - start
    for target, text in ((out_dir / path.name, nbformat.writes(nb)), (out_dir / path.with_suffix(".html").name, notebook_html(nb))):
        try:
            write_text_atomic(target, text)
        except OSError as err:
            raise folder_error(target, err) from None
    return not error, seconds, error


def _execute_interruptibly(client: NotebookClient, grace_s: float = 30.0) -> None:
    """``client.execute()``, run in a worker thread so that Ctrl-C reaches this thread as a KeyboardInterrupt.

    Why: in the main thread nbclient handles SIGINT itself by killing the kernel mid-cell, and the run then
    ends in ``DeadKernelError`` and a bare ``AssertionError`` (its clean-up finds no kernel manager). Here
    Ctrl-C reaches this thread, the kernel is shut down at once (its cell's work is lost either way), and
    the KeyboardInterrupt goes on to :func:`main`, which says what was kept.
    """
    failure: list[BaseException] = []

    def work() -> None:
        try:
            client.execute()
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread as it is
            failure.append(err)

    worker = threading.Thread(target=work, name="notebook", daemon=True)
    worker.start()
    try:
        worker.join()
    except KeyboardInterrupt:
        if client.km is not None and client.km.has_kernel:
            run_sync(client.km.shutdown_kernel)(now=True)  # killed at once: the cell's work is lost anyway
            worker.join(timeout=grace_s)
        raise
    if failure:
        raise failure[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Execute every notebook headless, in order, on one model.")
    parser.add_argument("--model", default=os.environ.get("CTX_MODEL", "auto"), help="model name or folder (default: auto)")
    parser.add_argument("--only", nargs="*", default=None, help="notebook numbers to run, e.g. 00 03")
    args = parser.parse_args(argv)

    try:
        absolute_path_variables()  # before any kernel starts in notebooks/: every kernel reads the same folders
        load_settings()  # a typo'd CTX_* variable or a bad value: said once, here, not in every notebook
        choice = choose_model(args.model)
    except (ModelNotFoundError, SettingsError) as err:  # the message says it all, a traceback would bury it
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Model: {choice.name}. {choice.reason}", flush=True)
    os.environ["CTX_MODEL"] = choice.name  # every kernel inherits it, so all notebooks agree
    # Figures as plotly's JSON only (JupyterLab and VS Code draw it; the HTML pages draw it with the shared
    # plotly.js): no copy of plotly.js inside any notebook.
    os.environ["PLOTLY_RENDERER"] = PLOTLY_RENDERER
    encrypt_kernels()
    notebooks = [p for p in step_notebooks(NOTEBOOKS_DIR) if args.only is None or p.name[:2] in args.only]
    if not notebooks:
        print(f"No notebooks matched in {NOTEBOOKS_DIR}.", file=sys.stderr)
        return 2
    runs: list[dict] = []
    path = None
    try:
        out_dir = results_dir(choice.name) / "notebooks"
        write_page_scripts(out_dir)
        for path in notebooks:
            print(f"→ {path.name} …", end=" ", flush=True)
            ok, seconds, error = execute_notebook(path, out_dir)
            print(f"{'ok' if ok else 'FAILED'} in {seconds:.1f} s" + (f": {error}" if error else ""), flush=True)
            runs.append({"notebook": path.name, "ok": ok, "seconds": round(seconds, 1), "error": error})
        save_json(out_dir / "run.json", {"model": choice.name, "notebooks": runs})
    except KeyboardInterrupt:
        if path is None:
            print("\nInterrupted before any notebook ran: no notebook was executed.", file=sys.stderr)
            return 130
        done = ", ".join(r["notebook"] for r in runs) or "no notebook"
        saved = ", ".join(sorted(p.name for p in out_dir.parent.glob("*.json"))) or "no result file"
        print(f"\nInterrupted during {path.name}: kept the executed pages of {done} in {out_dir}, and {saved} in "
              f"{out_dir.parent} (complete files; a rerun loads them).", file=sys.stderr)
        return 130
    except ResultsFolderError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 2
    failed = [r["notebook"] for r in runs if not r["ok"]]
    print(f"Executed notebooks and HTML in {out_dir}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

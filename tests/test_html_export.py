"""The HTML exports of ``make run``, opened in a headless browser with the network cut off: attention views,
coloured tokens, plotly figures and formulas must all draw from what the export folder carries.

Needs a Chromium-family browser (``apt-get install chromium``; or set ``CTX_BROWSER`` to its path); without one
the browser test is skipped, saying so. ``CTX_EXPORT_DIR=results/<model>/notebooks`` also checks a real export.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow  # notebook kernels: `make test` only

from ctx_utils.tools import run_notebooks

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Appended to a copy of the page: once scripts have run, measure what was drawn and write it into the DOM.
PROBE = """
<script>
window.addEventListener("load", function () { setTimeout(function () {
  function shown(e) { var b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; }
  var views = Array.from(document.querySelectorAll("[id^='ctx-viz-']"));
  var tinted = function (v) { return Array.from(v.querySelectorAll("span, div")).filter(function (s) {
    var c = getComputedStyle(s).backgroundColor; return shown(s) && c && c !== "rgba(0, 0, 0, 0)" && c !== "rgb(255, 255, 255)";
  }).length; };
  var result = {
    views: views.length,
    views_waiting: views.filter(function (v) { return v.textContent.indexOf("circuitsvis view:") >= 0; }).length,
    attention_drawn: views.filter(function (v) { return Array.from(v.querySelectorAll("canvas")).some(shown); }).length,
    coloured_drawn: views.filter(function (v) { return !v.querySelector("canvas") && tinted(v) > 0; }).length,
    figures: document.querySelectorAll(".plotly-graph-div").length,
    figures_drawn: Array.from(document.querySelectorAll(".plotly-graph-div")).filter(function (f) {
      return Array.from(f.querySelectorAll("svg.main-svg")).some(shown); }).length,
    formulas: document.querySelectorAll("math").length,
    formulas_drawn: Array.from(document.querySelectorAll("math")).filter(shown).length,
    raw_latex: /\\$\\$|\\\\mathrm|\\\\frac/.test(document.body.innerText),
  };
  var out = document.createElement("pre"); out.id = "ctx-probe"; out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
}, 1500); });
</script>
"""


def find_browser() -> str | None:
    """A headless-capable Chromium: ``$CTX_BROWSER`` or the first of :data:`BROWSERS` on the PATH."""
    if os.environ.get("CTX_BROWSER"):
        return os.environ["CTX_BROWSER"]
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def probe_page(browser: str, page: Path, tmp_path: Path) -> dict:
    """Open a copy of ``page`` (same folder, so its relative files resolve) offline; what the probe measured."""
    copy = page.with_name(f".probe-{page.name}")
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        run = subprocess.run(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}",
             "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # every request off-machine fails
             "--virtual-time-budget=20000", "--window-size=1280,2000", "--dump-dom", copy.as_uri()],
            capture_output=True, text=True, timeout=180,
        )
    finally:
        copy.unlink()
    found = re.search(r'<pre id="ctx-probe">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the probe never ran in {page.name}; browser said: {run.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"'))


NOTEBOOK_CELLS = [
    ("markdown", "# Export check\n\nThe score $E = \\tfrac{1}{2}(\\mathrm{TPR} + \\mathrm{TNR})$, and\n\n"
                 "$$\\mathrm{attr}(h, p) = z_h(p)_{\\text{last}} \\cdot \\big(W_O[l, h]\\, w_{in}\\big)$$"),
    ("code", "import torch\nfrom ctx_utils import viz\n"
             "tokens = ['<bos>', ' for', ' research', ' purposes']\n"
             "viz.attention_patterns(tokens, torch.softmax(torch.randn(2, 4, 4), -1).tril(), ['L0.H0', 'L0.H1'])"),
    ("code", "viz.prompts_activations([(tokens, [0.0, -0.161, 0.4, 2.39]), (tokens[:2], [0.0, 1.2])])"),
    ("code", "import plotly.graph_objects as go\ngo.Figure(go.Bar(y=[1, 3, 2])).show()\n"
             "viz.score_histogram([0.1, 0.5, 0.9, 0.95]).show()"),
]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A small notebook executed and exported exactly as ``make run`` does, into a fresh folder."""
    folder = tmp_path_factory.mktemp("export")
    cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
             for kind, src in NOTEBOOK_CELLS]
    source = folder / "src" / "01_check.ipynb"
    source.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=cells), source)
    out = folder / "notebooks"
    os.environ["PLOTLY_RENDERER"] = run_notebooks.PLOTLY_RENDERER  # what main() sets for every kernel
    run_notebooks.write_page_scripts(out)
    ok, _, error = run_notebooks.execute_notebook(source, out, timeout=300)
    assert ok, error
    return out


def test_the_export_carries_plotly_js_and_circuitsvis_once_and_no_cdn_script(export):
    page = (export / "01_check.html").read_text(encoding="utf-8")
    executed = (export / "01_check.ipynb").read_text(encoding="utf-8")
    assert (export / run_notebooks.PLOTLY_JS).stat().st_size > 1_000_000
    assert f'<script src="{run_notebooks.PLOTLY_JS}"></script>' in page
    for text in (page, executed):
        assert "plotly.js v" not in text, "plotly.js must live only in the shared file"
    assert not re.findall(r"<script[^>]+src=\"https?://", page), "no script may come from the network"
    assert "mathjax" not in page.lower() and page.count("<math") == 2
    assert "var CircuitsVis=" in executed, "the executed notebook keeps its bundle (Jupyter shows it alone)"
    assert "var CircuitsVis=" not in page and page.count(f'<script src="{run_notebooks.CIRCUITSVIS_JS}"></script>') == 1
    assert "var CircuitsVis=" in (export / run_notebooks.CIRCUITSVIS_JS).read_text(encoding="utf-8")


def test_an_export_renders_offline_in_a_headless_browser(export, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("no headless browser: install Chromium (apt-get install chromium) or set CTX_BROWSER to one")
    seen = probe_page(browser, export / "01_check.html", tmp_path)
    assert seen["views"] == 3 and seen["views_waiting"] == 0, seen  # one attention view, two prompts' tokens
    assert seen["attention_drawn"] == 1 and seen["coloured_drawn"] == 2, seen
    assert seen["figures"] == 2 and seen["figures_drawn"] == 2, seen
    assert seen["formulas"] == 2 and seen["formulas_drawn"] == 2 and not seen["raw_latex"], seen


@pytest.mark.skipif(not os.environ.get("CTX_EXPORT_DIR"), reason="set CTX_EXPORT_DIR=results/<model>/notebooks to check a real export")
def test_a_real_export_renders_offline(tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("no headless browser: install Chromium (apt-get install chromium) or set CTX_BROWSER to one")
    folder = Path(os.environ["CTX_EXPORT_DIR"])
    pages = sorted(folder.glob("[0-9][0-9]_*.html"))
    assert pages, f"no exported pages in {folder}: run `make run` first"
    for page in pages:
        seen = probe_page(browser, page, tmp_path)
        text = page.read_text(encoding="utf-8")
        assert seen["views_waiting"] == 0, (page.name, seen)
        assert seen["figures_drawn"] == seen["figures"] == text.count('class="plotly-graph-div"'), (page.name, seen)
        assert seen["formulas_drawn"] == seen["formulas"] and not seen["raw_latex"], (page.name, seen)

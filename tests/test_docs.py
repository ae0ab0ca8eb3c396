"""The README is one screen a learner reads first; the figures docs/ and the notebooks' prose quote agree with the
shipped results; the step notebooks' code cells stay short."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
STEP_NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[0-6]_*.ipynb"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[0-8]_*.ipynb"))


def test_the_readme_is_one_screen_that_says_where_to_start():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 60, "reference material belongs in docs/*.md, linked from the README"
    for needed in ("notebook 00", "make lab", "Colab", "make run", "make test", "make check"):
        assert needed in text, f"the README should say {needed!r}"


def test_every_docs_page_the_readme_links_that_this_kit_writes_exists():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", text))
    mine = {"docs/running.md", "docs/steps.md", "docs/organism.md", "docs/explainers.md", "docs/paper-data.md",
            "docs/settings.md", "docs/classroom.md", "docs/troubleshooting.md"}
    assert mine <= linked, f"not linked from the README: {sorted(mine - linked)}"
    assert all((ROOT / page).exists() for page in mine)


def test_the_released_data_table_in_the_docs_is_the_shipped_summary():
    summary = json.loads((ROOT / "results" / "paper-data" / "summary.json").read_text())["models"]
    doc = (ROOT / "docs" / "paper-data.md").read_text(encoding="utf-8")
    for model in ("gpt2-small", "gpt2-medium", "gpt2-large"):
        s = summary[model]
        row = next(line for line in doc.splitlines() if line.startswith(f"| {model} |"))
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert cells == [str(s["n_pairs"]), f"{s['mean_E']:.4f}", f"{s['std_E']:.4f}", f"{s['skew']:.3f}",
                         f"{s['skewtest_p']:.3f}", f"{s['ks_statistic']:.5f}", f"{s['ks_p']:.4e}"], f"{model}: {row}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_cells_are_short(path):
    long = [(cell.id, len(cell.source.splitlines())) for cell in nbformat.read(path, 4).cells
            if cell.cell_type == "code" and "setup" not in cell.metadata.get("tags", [])
            and len(cell.source.splitlines()) > 25]
    assert not long, f"{path.name}: code cells over 25 lines {long}: move the logic into ctx_utils under a name that says what it does"


@pytest.mark.parametrize("path", STEP_NOTEBOOKS, ids=lambda p: p.name)
def test_a_step_notebook_prints_no_fingerprint_or_results_path(path):
    for cell in nbformat.read(path, 4).cells:
        if cell.cell_type == "code":
            assert "fingerprint" not in cell.source and "results_dir(" not in cell.source, \
                f"{path.name} cell {cell.id}: a fingerprint or a machine's results path is no reading for a learner"


def test_the_offline_explainer_table_in_the_docs_is_the_shipped_result():
    models = json.loads((ROOT / "results" / "paper-data" / "offline_explainer.json").read_text())["models"]
    doc = (ROOT / "docs" / "explainers.md").read_text(encoding="utf-8")
    for model, m in models.items():
        row = next(line for line in doc.splitlines() if line.startswith(f"| {model} "))
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        e, d, w = m["mean_E"], m["paired_difference"], m["wins_ties_losses"]
        assert cells == [str(m["n_pairs"]), f"{e['explanation']:.3f}", f"{e['gpt4']:.3f}",
                         f"{d['mean_difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]",
                         f"{w['wins']}/{w['ties']}/{w['losses']}", f"{e['always_active']:.3f}", f"{e['single_word']:.3f}",
                         f"{e['word_classifier']:.3f}"], f"{model}: {row}"


def test_notebook_06_quotes_the_released_ablation_statistics_of_the_shipped_summary():
    s = json.loads((ROOT / "results" / "paper-data" / "summary.json").read_text())["models"]["gpt2-small"]
    prose = "\n".join(c.source for c in nbformat.read(ROOT / "notebooks" / "06_ablation.ipynb", 4).cells if c.cell_type == "markdown")
    mantissa, exponent = f"{s['ks_p']:.1e}".split("e")
    quoted = (f"GPT-2 small's {s['n_active']} pairs give an active mean of {s['active_mean']:.3f}\nagainst "
              f"{s['inactive_mean']:.4f} inactive, KS {s['ks_statistic']:.3f}, p = {mantissa} × 10⁻{str(int(exponent[1:])).translate(SUPERSCRIPT)}")
    assert quoted in prose, f"notebook 06 should quote the released data as: {quoted}"

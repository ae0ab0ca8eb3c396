"""ctx_utils.classroom.paper_explorer: the authors' real GPT-2 pairs, browsed from the shipped data, as text only."""

from __future__ import annotations

import re

import pytest

from ctx_utils import paper_data
from ctx_utils.classroom import paper_explorer as pe

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def small():
    return pe.model_rows("gpt2-small")


def test_every_released_pair_with_its_e_and_ablation(small):
    data = paper_data.load_model_data(paper_data.SHIPPED_DIR / "gpt2-small")
    assert len(small) == 207
    assert [r["E"] for r in small] == [s["E"] for s in paper_data.pair_scores(data)]
    assert [r["drop_active"] for r in small] == [a["mean_decrease_active"] for a in data.ablation]
    row = next(r for r in small if (r["layer"], r["neuron"], r["head"]) == (10, 1687, 22))  # the paper's ' out' case
    assert row["label"] == "L10.N1687 ← L1.H10" and row["token"] == " out" and row["E"] == 1.0
    assert all(x.endswith(" out") for x in row["positive"]) and len(row["held_out"]) == 20


def test_sort_by_e_or_ablation_and_search_tokens_and_both_explanations(small):
    by_e = pe.select(small, "E")
    assert [r["E"] for r in by_e] == sorted((r["E"] for r in small), reverse=True)
    by_drop = pe.select(small, "ablation")
    assert by_drop[0]["drop_active"] == max(r["drop_active"] for r in small)
    assert {(r["layer"], r["neuron"]) for r in pe.select(small, "E", "' ONLY")} == {
        (r["layer"], r["neuron"]) for r in small if r["token"] == " only"}
    purposes = pe.select(small, "E", "purpose")
    assert purposes and all("purpose" in (r["gpt4"] + r["offline"]).lower() for r in purposes)
    only_offline = next(w for r in small for w in re.findall(r"'(\w{5,})'", r["offline"]) if w.lower() not in r["gpt4"].lower())
    assert pe.select(small, "E", only_offline)  # found through the offline explanation alone
    assert pe.select(small, "E", "no such text anywhere") == []
    with pytest.raises(ValueError, match="sort must be"):
        pe.select(small, "size")


def test_pair_page_shows_everything_escaped(small):
    row = dict(pe.select(small, "E", "purpose")[0])
    row["gpt4"] += SCRIPT
    row["positive"] = [SCRIPT + row["token"], *row["positive"]]
    page = pe.pair_html(row)
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert f"<b>{row['token']}</b>" in page.replace("&#x27;", "'")
    assert "GPT-4's explanation" in page and "offline explainer" in page and "E = " in page
    assert page.count("<tr>") == 3 + len(row["held_out"])  # explanations: header and row; answers: header, a row per prompt
    assert ("✗" in page) == any(yes != truth for _, truth, yes in row["held_out"])
    assert "mean drop in the token" in page


def test_one_class_pairs_are_flagged(small):
    one = next(r for r in small if len({t for _, t, _ in r["held_out"]}) == 1)
    two = next(r for r in small if len({t for _, t, _ in r["held_out"]}) == 2)
    assert "one class" in pe.pair_html(one) and "one class" not in pe.pair_html(two)


def test_html_export_gets_a_static_page_of_the_top_pairs(small):
    bundle = pe.build_paper_explorer("gpt2-small")._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # live in Jupyter
    assert "static copy" in bundle["text/html"]  # what nbconvert shows for it without widget state
    page = pe.StaticCopy("gpt2-small")._repr_html_()  # the next output: what the export shows
    top = pe.select(small, "E")[: pe.STATIC_PAIRS]
    assert page.count("<h4>") == pe.STATIC_PAIRS and all(r["label"] in page for r in top)
    assert "<script" not in page and "ctx-paper-static" in page


def test_the_widget_lists_sorts_and_searches(small):
    ui = pe.build_paper_explorer("gpt2-small").widget
    (model_box, sort_box), search, count, listing, view = ui.children[0].children, *ui.children[1:]
    assert model_box.options == ("gpt2-large", "gpt2-medium", "gpt2-small") and model_box.value == "gpt2-small"
    assert listing.value == pe.select(small, "E")[0] and listing.value["label"] in view.value
    sort_box.value = "ablation"
    assert listing.value["drop_active"] == max(r["drop_active"] for r in small)
    search.value = "purpose"
    assert count.value.startswith(f"{len(pe.select(small, 'E', 'purpose'))} of 207")
    assert all("purpose" in (r["gpt4"] + r["offline"]).lower() for _, r in listing.options)
    search.value = "no such text anywhere"
    assert listing.options == () and "No pair matches" in view.value
    model_box.value = "gpt2-medium"
    assert count.value.endswith("listed.") and "of 263 pairs" in count.value


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="gpt2-small"):
        pe.build_paper_explorer("gpt2-xl")

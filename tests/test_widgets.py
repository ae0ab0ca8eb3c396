"""ctx_utils.classroom.widgets: the explorer's callbacks show the right numbers, name what is missing, and are wired once."""

from __future__ import annotations

import re

import pytest
import torch

from ctx_utils import heads, viz
from ctx_utils.classroom import widgets
from ctx_utils.results import save_json

TEXTS = ["the cat sat on the mat", "for research purposes", "as early as", "such as the cat", "the mat for the cat"]
SCRIPT = "<script>alert(1)</script>"


def pair(head: int, positive: list[int], negative: list[int]) -> dict:
    return {"layer": 1, "neuron": 5, "token": " only", "head": head, "head_layer": 0, "head_index": head,
            "active_fraction": len(positive) / (len(positive) + len(negative)), "positive": positive, "negative": negative}


def make_results(later_steps: bool = True) -> dict[str, dict]:
    """Hand-made results for the tiny model: neuron 1.5 with two selected heads, neuron 0.3 with none."""
    results = {
        "neurons.json": {"model": "tiny", "neurons": [{"layer": 0, "neuron": 3, "token": " as", "congruence": 0.4},
                                                      {"layer": 1, "neuron": 5, "token": " only", "congruence": 0.5}]},
        "prompts.json": {"model": "tiny", "prompts": {"0.3": [{"text": "such as the", "activation": 0.2}],
                                                      "1.5": [{"text": t, "activation": 1.0 - 0.1 * i} for i, t in enumerate(TEXTS)]}},
        "heads.json": {"model": "tiny", "rule": "top3", "band": "25-75", "include_same_layer": False,
                       "pairs": [pair(2, [0, 2], [1, 3, 4]), pair(0, [1, 4], [0, 2, 3])]},
    }
    if later_steps:
        results |= {
            "explanations.json": {"pairs": [{"layer": 1, "neuron": 5, "head": 2, "text": f"{SCRIPT} mentions research",
                                             "source": "offline", "variant": "oct2023"}]},
            "scores.json": {"pairs": [{"layer": 1, "neuron": 5, "head": 2, "E": 0.875}]},
            "ablation.json": {"pairs": [{"layer": 1, "neuron": 5, "head": 2, "mean_decrease_active": 0.12,
                                         "mean_decrease_inactive": None}]},
        }
    return results


# ------------------------------------------------------------------------------------------------ results


def test_load_results_reads_what_exists_and_names_the_notebooks_for_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("CTX_RESULTS", str(tmp_path))
    for name in ("prompts.json", "heads.json"):
        save_json(tmp_path / "tiny" / name, make_results()[name])
    results = widgets.load_results("tiny")
    assert sorted(results) == ["heads.json", "prompts.json"]
    assert results["heads.json"]["pairs"][0]["head"] == 2
    missing = widgets.missing_results(results)
    assert [m.split(" ")[0] for m in missing] == ["neurons.json", "explanations.json", "scores.json", "ablation.json"]
    assert [re.search(r"notebook (\d\d)", m).group(1) for m in missing] == ["01", "04", "05", "06"]
    widgets.check_results(results)  # enough to start


def test_the_explorer_refuses_results_without_heads_and_says_which_notebook():
    results = make_results()
    del results["heads.json"]
    with pytest.raises(ValueError, match=r"heads\.json \(notebook 03\)"):
        widgets.check_results(results)
    with pytest.raises(ValueError, match="notebook 03"):
        widgets.neuron_options(results)


def with_settings(results: dict[str, dict], settings, **changed) -> dict[str, dict]:
    """``results`` as the pipeline saves them: each file with its step's settings and fingerprint.

    ``changed`` maps a file name to the settings that made it instead (e.g. heads.json made with rule='top3')."""
    out = {}
    for name, data in results.items():
        step, made_with = name.removesuffix(".json"), changed.get(name, settings)
        out[name] = {**data, "settings": made_with.for_step(step), "fingerprint": made_with.fingerprint(step)}
    return out


def test_one_step_rerun_with_other_settings_is_named_and_refused():
    """Issue 23.2: heads.json rerun with CTX_HEAD_RULE=top3 in a folder made with the default rule."""
    from ctx_utils.settings import DEFAULTS

    top3 = DEFAULTS.replace(rule="top3")
    assert top3.rule != DEFAULTS.rule
    same = with_settings(make_results(), DEFAULTS)
    assert widgets.mixed_settings(same) == [] and widgets.mixed_settings(same, DEFAULTS) == []
    widgets.check_results(same)
    mixed = with_settings(make_results(), DEFAULTS, **{"heads.json": top3})
    against_settings = widgets.mixed_settings(mixed, DEFAULTS)
    assert len(against_settings) == 1 and against_settings[0].startswith("heads.json")
    assert f"rule='top3', now {DEFAULTS.rule!r}" in against_settings[0]
    among_files = widgets.mixed_settings(mixed)  # no settings given: each later file against heads.json
    assert [n.split(" but ")[1].split(" ")[0] for n in among_files] == ["explanations.json", "scores.json", "ablation.json"]
    assert f"heads.json has rule='top3' but scores.json has rule={DEFAULTS.rule!r}" in among_files
    with pytest.raises(ValueError, match=r"mix settings.*scores\.json.*load_results\(settings\)"):
        widgets.check_results(mixed)
    with pytest.raises(ValueError, match="mix settings"):
        widgets.neuron_options(mixed)


def test_load_results_with_settings_goes_through_the_pipeline(monkeypatch):
    """Given settings, every file comes from the pipeline's load-or-compute (which recomputes a mismatch)."""
    from ctx_utils import pipeline
    from ctx_utils.settings import DEFAULTS

    asked = []
    for step in ("neurons", "prompts", "heads", "explanations", "scores", "ablation"):
        monkeypatch.setattr(pipeline, step, lambda settings, quiet, step=step: asked.append((step, settings, quiet)) or {"step": step})
    results = widgets.load_results(DEFAULTS)
    assert list(results) == list(widgets.RESULT_FILES) and results["scores.json"] == {"step": "scores"}
    assert asked == [(s, DEFAULTS, True) for s in ("neurons", "prompts", "heads", "explanations", "scores", "ablation")]


# ---------------------------------------------------------------------------------------------- options


def test_neuron_options_put_neurons_with_selected_heads_first():
    assert widgets.neuron_options(make_results()) == [("L1.N5 → ' only' · 2 heads", "1.5"), ("L0.N3 → ' as' · 0 heads", "0.3")]


def test_head_options_sorted_by_head_with_share_and_score_when_known():
    results = make_results()
    assert widgets.head_options(results, "1.5") == [("L0.H0 · active on 40%", 0), ("L0.H2 · active on 40% · E 0.88", 2)]
    assert widgets.head_options(results, "0.3") == []
    with pytest.raises(ValueError, match="neuron_options"):
        widgets.head_options(results, "1.99")


# ------------------------------------------------------------------------------------------------- views


def test_neuron_view_colours_each_prompt_by_the_neurons_activation(tiny_model):
    panel = widgets.neuron_view(tiny_model, make_results(), "1.5", n_prompts=3)
    legend, *coloured = panel.views[1].views  # one legend, then the prompts
    assert len(coloured) == 3 and all(v.component == "ColoredTokens" for v in coloured)
    # independent check: the neuron's activation at the first prompt's last token, from a plain cache
    _, cache = tiny_model.run_with_cache(TEXTS[0], names_filter=["blocks.1.mlp.hook_post"])
    expected = float(cache["blocks.1.mlp.hook_post"][0, -1, 5])
    assert coloured[0].props["values"][-1] == pytest.approx(expected, abs=1e-5)
    assert "prompt 0: activation 1.00" in panel.html("once")
    with pytest.raises(ValueError, match="at least 1"):
        widgets.neuron_view(tiny_model, make_results(), "1.5", n_prompts=0)


def test_head_view_shows_the_heads_attribution_active_prompts_in_red(tiny_model):
    view = widgets.head_view(tiny_model, make_results(), "1.5", 2)
    attr = heads.head_attributions(tiny_model, TEXTS, layer=1, neuron=5)[:, 2]
    active, inactive = view.attribution.data
    assert list(active.x) == [0, 2] and active.marker.color == viz.RED
    assert list(inactive.x) == [1, 3, 4] and inactive.marker.color == viz.NEUTRAL
    assert list(active.y) + list(inactive.y) == pytest.approx(attr[[0, 2, 1, 3, 4]].tolist(), abs=1e-6)
    # attention: the active prompt where the head pushes hardest, the inactive one where it pushes least
    best = max([0, 2], key=lambda i: float(attr[i]))
    least = min([1, 3, 4], key=lambda i: float(attr[i]))
    assert [v.component for v in view.attention.views] == ["AttentionHeads", "AttentionHeads"]
    assert view.attention.titles[0].startswith(f"L0.H2 active (prompt {best})")
    assert view.attention.titles[1].startswith(f"L0.H2 inactive (prompt {least})")
    assert view.attention.views[0].props["tokens"] == tiny_model.to_str_tokens(TEXTS[best])


def test_head_view_summary_is_plain_text_with_score_and_ablation(tiny_model):
    summary = widgets.head_view(tiny_model, make_results(), "1.5", 2).summary
    assert isinstance(summary, viz.PlainText)
    assert SCRIPT in repr(summary) and SCRIPT not in summary.html("once")  # shown, never run
    assert "&lt;script&gt;" in summary.html("once")
    assert "active on 2 of 5 prompts (40%)" in summary.text
    assert "E = 0.875" in summary.text
    assert "+0.1200 where the head is active and no such prompt where it is not" in summary.text


def test_head_view_names_the_notebook_for_each_missing_step(tiny_model):
    text = widgets.head_view(tiny_model, make_results(later_steps=False), "1.5", 0).summary.text
    for number, file in (("04", "explanations.json"), ("05", "scores.json"), ("06", "ablation.json")):
        assert f"run notebook {number}, which writes {file}" in text


def test_head_view_refuses_unknown_heads_and_results_of_another_model(tiny_model):
    results = make_results()
    with pytest.raises(ValueError, match="head_options"):
        widgets.head_view(tiny_model, results, "1.5", 1)
    results["heads.json"]["pairs"].append(pair(9, [0], [1]))  # the tiny model has 4 candidate heads for layer 1
    with pytest.raises(ValueError, match="another model"):
        widgets.head_view(tiny_model, results, "1.5", 9)


def test_attribution_figure_needs_one_value_per_prompt():
    with pytest.raises(ValueError, match="one of each per prompt"):
        widgets.attribution_figure(torch.zeros(3), [True, False], ["a", "b", "c"], "title")


# ------------------------------------------------------------------------------------------------ wiring


def test_build_explorer_renders_once_per_choice(tiny_model, monkeypatch):
    calls = []
    monkeypatch.setattr(widgets, "neuron_view", lambda model, results, key: calls.append(("neuron", key)) or key)
    monkeypatch.setattr(widgets, "head_view", lambda model, results, key, head: calls.append(("head", key, head)) or [key])
    explorer = widgets.build_explorer(tiny_model, make_results(later_steps=False))
    header, neuron_box, neuron_out, head_box, head_out = explorer.children
    assert "run notebook 04" in header.value and "run notebook 06" in header.value
    assert calls == [("neuron", "1.5"), ("head", "1.5", 0)]
    assert [o["text"] for o in neuron_out.outputs] == ["1.5\n"] and [o["text"] for o in head_out.outputs] == ["1.5\n"]

    neuron_box.value = "0.3"  # no selected head: the head list empties, no head view
    assert head_box.options == () and calls[-1] == ("neuron", "0.3")
    assert "No head of this neuron" in head_out.outputs[0]["text"]
    neuron_box.value = "1.5"
    assert calls[-2:] == [("neuron", "1.5"), ("head", "1.5", 0)]
    head_box.value = 2
    assert calls[-1] == ("head", "1.5", 2) and len(calls) == 6


def test_build_explorer_runs_the_real_callbacks(tiny_model):
    explorer = widgets.build_explorer(tiny_model, make_results())
    assert [type(c).__name__ for c in explorer.children] == ["HTML", "Dropdown", "Output", "Dropdown", "Output"]
    assert explorer.children[3].value == 0
    neuron_shown, head_shown = explorer.children[2].outputs, explorer.children[4].outputs
    assert len(neuron_shown) == 1 and "ColoredTokens" in neuron_shown[0]["data"]["text/html"]
    assert len(head_shown) == 3  # attribution figure, attention panel, summary text
    assert "AttentionHeads" in head_shown[1]["data"]["text/html"]
    assert head_shown[2]["data"]["text/plain"].startswith("Head L0.H0 → neuron L1.N5")


@pytest.mark.slow  # a notebook kernel and the organism's pipeline: a few minutes
def test_notebook_08_recomputes_a_step_rerun_with_other_settings(tmp_path, monkeypatch):
    """Issue 23.2, end to end: one step rerun with CTX_HEAD_RULE=top3 into a folder made with the default rule."""
    import nbformat

    from ctx_utils import pipeline
    from ctx_utils.settings import KIT_ROOT
    from ctx_utils.tools import run_notebooks

    monkeypatch.setenv("CTX_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CTX_MODEL", "organism")
    settings = pipeline.setup(model="organism")
    pipeline.ablation(settings, quiet=True)  # every step, with the default rule
    pipeline.scores(settings, quiet=True)
    pipeline.heads(settings.replace(rule="top3"), quiet=True)
    assert widgets.mixed_settings(widgets.load_results("organism"))  # the folder now mixes rules
    ok, _, error = run_notebooks.execute_notebook(KIT_ROOT / "notebooks" / "08_explorer.ipynb", tmp_path / "out")
    assert ok, error
    nb = nbformat.read(tmp_path / "out" / "08_explorer.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "heads.json was made with other settings (rule='top3'" in printed and "recomputed" in printed
    assert not widgets.mixed_settings(widgets.load_results("organism"), settings)

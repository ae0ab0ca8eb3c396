"""On the default organism the paper's findings must show, and the pipeline must find the measured answer key.

The default organism (``data/organism``: 40 layer-0 heads with roles, a causal key measured by ablation) is
the one the README's two commands run. Steps 1-6 run here once, with the default settings (2σ, 25-75 %,
600 documents, the offline explainer), through the same ``pipeline.compute_*`` calls as the notebooks.
What issue "an organism where the pipeline could fail" asks to be *visible* is asserted here, because on the
organism the answer key says it must hold (on GPT-2 the notebooks report these figures and assert none):

* recovery: the 2σ pairs on planted neurons are carriers of the key (precision ≥ 0.9) and find most of them
  (recall ≥ 0.8; the redundant pair is expected to be missed: each of its two heads carries half);
* top-3 and 2σ select visibly different pairs, and top-3's extra pairs on planted neurons are not carriers;
* E is spread (not all ≈ 1), and the next-token neurons' mean E beats the random-neuron baseline by ≥ 0.1;
* the ablation's KS test runs over ≥ 20 pairs and separates active from inactive prompts (p < 0.01).

The table of ``docs/organism.md`` quotes this run's figures; the last test checks each of them.
"""

from __future__ import annotations

import statistics

import pytest

from ctx_utils import heads
from ctx_utils import pipeline as steps
from ctx_utils.models import ORGANISM_DIR
from ctx_utils.organism.answer_key import load_answer_key, planted_neurons, recovery
from ctx_utils.settings import load_settings

if not (ORGANISM_DIR / "ground_truth.json").exists():
    pytest.skip(f"The organism is not in {ORGANISM_DIR}: python -m ctx_utils.organism.train --out {ORGANISM_DIR}",
                allow_module_level=True)


@pytest.fixture(scope="module")
def run() -> dict:
    settings = steps.resolve(load_settings(environ={}, model="organism", explainer="offline"), quiet=True)
    model = steps.model(settings)
    found = steps.compute_neurons(settings, model)["neurons"]
    prompt_sets = steps.compute_prompts(settings, model, found)["prompts"]
    attributions = heads.attribute_neurons(model, found, prompt_sets)
    pairs = steps.compute_heads(settings, model, found, prompt_sets, attributions)["pairs"]
    explained = steps.compute_explanations(settings, pairs, prompt_sets)["pairs"]
    held = steps.compute_held_out(settings, model, steps.pair_neurons(found, pairs), prompt_sets)
    scores = steps.compute_scores(settings, model, explained, held)
    ablation = steps.compute_ablation(settings, model, pairs, held)
    top3 = heads.pairs_from_attributions(model, found, attributions, rule="top3", band=settings.band)
    return {"settings": settings, "pairs": pairs, "top3": top3, "scores": scores, "ablation": ablation, "held": held,
            "truth": load_answer_key("organism")}


def test_the_defaults_are_the_papers_final_selection(run):
    assert (run["settings"].rule, run["settings"].band) == ("2sigma", "25-75")


def test_2sigma_pairs_recover_the_causal_key(run):
    found = recovery(run["pairs"], run["truth"])
    print(f"\n2σ: {found['pairs']} pairs on planted neurons, precision {found['precision']:.2f}, recall "
          f"{found['recall']:.2f}, {len(found['contexts_found'])}/{len(found['contexts'])} contexts; missed {found['missed']}")
    assert found["precision"] >= 0.9, f"2σ pairs that carry nothing: {found['false_pairs']}"
    assert found["recall"] >= 0.8, f"carriers 2σ missed: {found['missed']}"


def test_top3_and_2sigma_select_visibly_different_pairs(run):
    cell = lambda p: (p["layer"], p["neuron"], p["head"])  # noqa: E731
    sigma, top3 = {cell(p) for p in run["pairs"]}, {cell(p) for p in run["top3"]}
    planted = planted_neurons(run["truth"])
    only_top3 = {c for c in top3 - sigma if c[:2] in planted}
    carriers = {cell(k) for k in run["truth"]["causal_key"]["pairs"]}
    print(f"\ntop-3 only: {sorted(only_top3)}; 2σ only: {sorted(sigma - top3)}")
    assert len(sigma ^ top3) >= 3, "the two rules should disagree on this organism"
    assert only_top3 - carriers, "top-3's third slot should pick heads that carry no context here"


def test_explanations_spread_and_beat_the_random_neurons(run):
    E = [p["E"] for p in run["scores"]["pairs"] if p["E"] is not None]
    random_E = [p["E"] for p in run["scores"]["random_baseline"]["pairs"] if p["E"] is not None]
    mean, random_mean = statistics.mean(E), statistics.mean(random_E)
    print(f"\nE over {len(E)} pairs: mean {mean:.3f}, std {statistics.pstdev(E):.3f}, min {min(E):.2f}; "
          f"random neurons: {len(random_E)} pairs, mean {random_mean:.3f}; difference {mean - random_mean:+.3f}")
    assert statistics.pstdev(E) >= 0.05 and min(E) < 0.8, "E should be spread, not all ≈ 1"
    assert len(random_E) >= 5, "too few random-neuron pairs for a baseline"
    assert mean - random_mean >= 0.1, f"next-token neurons {mean:.3f} vs random {random_mean:.3f}"


def test_ablation_ks_over_enough_pairs(run):
    ks = run["ablation"]["ks"]
    print(f"\nKS over {ks['n_active']} pairs: statistic {ks['statistic']:.3f}, p = {ks['pvalue']:.2g}")
    assert ks["n_active"] >= 20 and ks["pvalue"] < 0.01


def test_the_documented_figures_are_this_runs(run):
    from pathlib import Path

    from ctx_utils.organism import report

    doc = (Path(__file__).resolve().parents[1] / "docs" / "organism.md").read_text(encoding="utf-8")
    truth, scored = run["truth"], [p for p in run["scores"]["pairs"] if p["E"] is not None]
    rand = [p for p in run["scores"]["random_baseline"]["pairs"] if p["E"] is not None]
    sigma, top3 = recovery(run["pairs"], truth), recovery(run["top3"], truth)
    kind = {name: [p for p in scored if report.group_of(truth, p["layer"], p["neuron"]) == name] for name in (report.PLANTED, report.OTHER)}
    mean = lambda pairs: statistics.mean(p["E"] for p in pairs)  # noqa: E731
    removed = sum(run["held"]["removed"].values())
    other_low, other_high = report.gap_ci(kind[report.OTHER], rand)
    ks = {name: report.ks_per_neuron([e for e in run["ablation"]["pairs"] if report.group_of(truth, e["layer"], e["neuron"]) == name])
          for name in (report.PLANTED, report.OTHER)}
    expected = [
        f"{sigma['pairs']} pairs, precision {sigma['precision']:.2f}, recall {sigma['recall']:.2f}, {len(sigma['contexts_found'])} of 16 contexts",
        f"{top3['pairs']} pairs, precision {top3['precision']:.2f}, recall {top3['recall']:.2f}",
        f"| {len(run['pairs'])} ({sigma['other_pairs']} on neurons that are not planted",
        f"{removed} of {removed + sum(map(len, run['held']['prompts'].values()))} repeated a training prompt of their neuron "
        f"and are removed (random neurons: {run['scores']['random_baseline']['held_out_removed']})",
        f"mean {mean(scored):.3f} over {len(scored)} pairs: planted neurons {mean(kind[report.PLANTED]):.3f} "
        f"({len(kind[report.PLANTED])} pairs), other next-token neurons {mean(kind[report.OTHER]):.3f} ({len(kind[report.OTHER])})",
        f"{len(rand)} pairs, mean E {mean(rand):.3f}: other next-token neurons {mean(kind[report.OTHER]) - mean(rand):+.3f}, "
        f"95 % CI {'includes 0' if other_low <= 0 <= other_high else 'excludes 0'}",
        f"planted neurons p = {ks[report.PLANTED]['pvalue']:.2g} (built in), other next-token neurons p = {ks[report.OTHER]['pvalue']:.2g}",
    ]
    missing = [line for line in expected if line not in doc]
    assert not missing, "docs/organism.md quotes other figures than this run's; the run gives:\n" + "\n".join(missing)

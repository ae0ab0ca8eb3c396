"""The split of E, its gap over random neurons and the ablation KS by kind of pair (``ctx_utils.organism.report``).

A hand-made key (one planted neuron, L1.N0) and hand-made scores pin down what each row says: the planted pairs'
numbers are built in, the other next-token neurons' must be reported on their own, with CIs, even when they show
no difference from random neurons.
"""

from __future__ import annotations

import numpy as np

from ctx_utils.organism import report

TRUTH = {"planted": [{"token": t, "contexts": [{"name": f"{t.strip()}/local", "marker": " never", "head_index": i}],
                      "distractors": []} for i, t in enumerate([" up", " only", " away"])]}  # clean form: token i is L1.Ni
RNG = np.random.default_rng(1)
PLANTED = [{"layer": 1, "neuron": n, "head": h, "E": 0.95 + 0.01 * h} for n in range(3) for h in range(2)]
OTHER = [{"layer": 1, "neuron": n, "head": h, "E": float(e)}
         for n in range(5, 10) for h, e in enumerate(RNG.uniform(0.4, 0.8, 2))]
RANDOM = [{"layer": 1, "neuron": 50 + i, "head": 0, "E": float(e)} for i, e in enumerate(RNG.uniform(0.4, 0.8, 10))]


def test_the_split_separates_what_the_organism_builds_in_from_the_rest():
    check = report.split_scores(PLANTED + OTHER, RANDOM, TRUTH)
    table = check.table
    assert list(table.index) == ["all next-token neurons", report.PLANTED, report.OTHER, report.RANDOM]
    assert table.loc[report.PLANTED, "n"] == 6 and table.loc[report.PLANTED, "neurons"] == 3
    assert table.loc[report.OTHER, "n"] == 10 and table.loc[report.OTHER, "neurons"] == 5
    assert "planted neurons: above the random neurons" in check.sentence
    assert "other next-token neurons: no difference shown" in check.sentence, "a null result is said, not hidden"
    assert "[" in table.loc[report.OTHER, "gap over random [95% CI]"], "every gap carries its CI"
    assert "CIs resample neurons" in check.sentence, "pairs of one neuron are not independent: the CI says what it resamples"
    assert report.split_scores(PLANTED + OTHER, RANDOM, TRUTH).table.equals(table), "a fixed seed: the same CIs"


def test_without_a_key_the_split_is_next_token_against_random_and_silent_on_organisms():
    check = report.split_scores(PLANTED + OTHER, RANDOM, None)
    assert list(check.table.index) == ["all next-token neurons", report.RANDOM]
    assert "organism" not in check.sentence


def test_the_ci_resamples_neurons_not_pairs():
    values = [e["E"] for e in OTHER]
    low, high = report.mean_ci(OTHER)
    assert low < np.mean(values) < high and high - low < 0.3
    many = [{"layer": 1, "neuron": 0, "head": h, "E": e} for h, e in enumerate(np.linspace(0.2, 0.9, 40))]
    assert np.isnan(report.mean_ci(many)[0]), "40 pairs of ONE neuron are one unit: no interval, not a narrow one"
    assert np.isnan(report.bootstrap_ci([[0.5]], np.mean)[0]), "one value has no interval"


def _effect(neuron: int, head: int, active: float, inactive: float) -> dict:
    return {"layer": 1, "neuron": neuron, "head": head, "mean_decrease_active": active, "mean_decrease_inactive": inactive}


def test_the_ks_test_counts_neurons_not_pairs():
    # one neuron with many pairs that all drop where active, and four neurons that never differ
    effects = [_effect(0, h, 0.5, 0.0) for h in range(8)] + [_effect(n, 0, 0.01 * n, 0.01 * n) for n in range(5, 9)]
    ks = report.ks_per_neuron(effects)
    assert (ks["n_active"], ks["n_inactive"]) == (5, 5), "pairs of one neuron are averaged into one value"
    split = report.split_ablation(effects, TRUTH)
    assert split.table.loc[report.OTHER, "n"] == 4 and "other next-token neurons: no difference shown" in split.sentence
    assert float(split.table.loc["all next-token neurons", "p per pair"]) < float(
        split.table.loc["all next-token neurons", "p per neuron"]), "pairs treated as independent look more certain"


def test_an_explanation_naming_none_of_a_contexts_marker_words_does_not_recover_it(monkeypatch):
    monkeypatch.setattr(report, "_truth", lambda settings: TRUTH)
    scored = [{"layer": 1, "neuron": 0, "head": 0, "E": 1.0}]
    vague = report.check_scores(None, scored, [{"layer": 1, "neuron": 0, "head": 0, "token": " up", "text": "contains 'the'"}])
    assert vague.table.loc["up/local", "explanations naming it"] == 0 and "0 of 3 planted contexts" in vague.sentence, \
        "E = 1.00 for an explanation that names no marker word is no recovery"
    named = report.check_scores(None, scored, [{"layer": 1, "neuron": 0, "head": 0, "token": " up", "text": "after 'never'"}])
    assert named.table.loc["up/local", "best E"] == 1.0 and "1 of 3 planted contexts" in named.sentence


def test_the_checks_say_nothing_on_a_model_without_an_answer_key(monkeypatch):
    monkeypatch.setattr(report, "_truth", lambda settings: None)
    assert report.check_scores(None, [], []) is None and report.check_neurons(None, []) is None


def test_a_check_shows_text_from_data_or_an_llm_as_text():
    import pandas as pd

    page = report.Check(pd.DataFrame({"explanation": ["<script>alert(1)</script>"]}), "names <b>never</b>")._repr_html_()
    assert "<script>alert" not in page and "<b>never" not in page and "&lt;b&gt;never&lt;/b&gt;" in page

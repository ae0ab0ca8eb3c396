"""The split of E, its gap over random neurons and the ablation KS by kind of pair (``ctx_utils.organism.report``).

A hand-made key (one planted neuron, L1.N0) and hand-made scores pin down what each row says: the planted pairs'
numbers are built in, the other next-token neurons' must be reported on their own, with CIs, even when they show
no difference from random neurons.
"""

from __future__ import annotations

import numpy as np

from ctx_utils.organism import report

TRUTH = {"planted": [{"token": " up", "contexts": [{"name": "up/local", "marker": " never give", "head_index": 1}],
                      "distractors": []}]}  # the clean form of a key: planted token 0 is neuron L1.N0
RNG = np.random.default_rng(1)
PLANTED = [{"layer": 1, "neuron": 0, "head": h, "E": 0.95 + 0.01 * (h % 3)} for h in range(6)]
OTHER = [{"layer": 1, "neuron": n, "head": h, "E": float(e)}
         for n in range(5, 10) for h, e in enumerate(RNG.uniform(0.4, 0.8, 2))]
RANDOM = [{"layer": 1, "neuron": 50 + i, "head": 0, "E": float(e)} for i, e in enumerate(RNG.uniform(0.4, 0.8, 10))]


def test_the_split_separates_what_the_organism_builds_in_from_the_rest():
    check = report.split_scores(PLANTED + OTHER, RANDOM, TRUTH)
    table = check.table
    assert list(table.index) == ["all next-token neurons", report.PLANTED, report.OTHER, report.RANDOM]
    assert table.loc[report.PLANTED, "n"] == 6 and table.loc[report.PLANTED, "neurons"] == 1
    assert table.loc[report.OTHER, "n"] == 10 and table.loc[report.OTHER, "neurons"] == 5
    assert "planted neurons: above the random neurons" in check.sentence
    assert "other next-token neurons: no difference shown" in check.sentence, "a null result is said, not hidden"
    assert "[" in table.loc[report.OTHER, "gap over random [95% CI]"], "every gap carries its CI"
    assert report.split_scores(PLANTED + OTHER, RANDOM, TRUTH).table.equals(table), "a fixed seed: the same CIs"


def test_without_a_key_the_split_is_next_token_against_random_and_silent_on_organisms():
    check = report.split_scores(PLANTED + OTHER, RANDOM, None)
    assert list(check.table.index) == ["all next-token neurons", report.RANDOM]
    assert "organism" not in check.sentence


def test_the_bootstrap_ci_is_scipys_percentile_interval_around_the_mean():
    values = [e["E"] for e in OTHER]
    low, high = report.bootstrap_ci([values], np.mean)
    assert low < np.mean(values) < high and high - low < 0.3
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

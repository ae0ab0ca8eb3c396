"""Step 5's statistics, tested directly: E, its summary and histogram, the paired CI and wins/ties/losses."""

import math

import numpy as np
import pytest

from ctx_utils.score import (confusion, head_explanation_score, histogram_counts, paired_difference, summarize_scores,
                             wins_ties_losses)


def test_E_is_the_mean_of_the_two_rates():
    truth = [True, True, True, False, False]
    predicted = [True, False, True, False, True]
    assert confusion(truth, predicted).__dict__ == {"tp": 2, "fn": 1, "tn": 1, "fp": 1}
    assert head_explanation_score(truth, predicted) == pytest.approx(0.5 * (2 / 3 + 1 / 2))


def test_one_class_pairs_follow_the_chosen_convention():
    truth, predicted = [True, True, True, True], [True, False, True, True]
    assert head_explanation_score(truth, predicted, missing="defined_rate") == pytest.approx(0.75)
    assert head_explanation_score(truth, predicted, missing="drop") is None
    with pytest.raises(ValueError, match="missing must be"):
        head_explanation_score(truth, predicted, missing="zero")
    with pytest.raises(ValueError, match="no held-out prompts"):
        head_explanation_score([], [])
    with pytest.raises(ValueError, match="ground-truth labels"):
        head_explanation_score([True], [True, False])


def test_summary_statistics_match_numpy_and_scipy_by_hand():
    e = [0.5, 0.55, 0.6, 0.6, 0.65, 0.7, 0.8, 1.0, None]
    s = summarize_scores(e)
    x = np.array([v for v in e if v is not None])
    assert s["n_pairs"] == 8 and s["mean_E"] == pytest.approx(x.mean()) and s["std_E"] == pytest.approx(x.std(ddof=0))
    m2, m3 = ((x - x.mean()) ** 2).mean(), ((x - x.mean()) ** 3).mean()
    assert s["skew"] == pytest.approx(m3 / m2**1.5)  # biased (population) skewness, as the paper
    assert 0 < s["skewtest_p"] < 0.5  # right-skewed sample, one-sided test "greater"
    assert math.isnan(summarize_scores([0.5, 0.6, 0.7])["skewtest_p"])
    with pytest.raises(ValueError, match="No scored pairs"):
        summarize_scores([None])


def test_equal_scores_have_no_skew_and_no_warning():
    """A small model's pairs can all score E = 1.0: skew is 0/0 there, said as NaN rather than a scipy warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's "Precision loss … catastrophic cancellation" would raise here
        for scores in ([1.0] * 4, [1.0] * 12, [0.75] * 9):
            s = summarize_scores(scores)
            assert s["std_E"] == 0 and math.isnan(s["skew"]) and math.isnan(s["skewtest_p"])
        assert not math.isnan(summarize_scores([1.0] * 11 + [0.75])["skew"])  # one different score: a skew again


def test_histogram_uses_ten_bins_over_zero_to_one_with_the_authors_edges():
    counts = histogram_counts([0.0, 0.05, 0.5, 0.95, 1.0, 0.3])
    assert len(counts) == 10 and sum(counts) == 6
    assert counts[0] == 2 and counts[5] == 1 and counts[9] == 2
    assert counts[2] == 1  # 0.3 falls one bin low: linspace's edge is 0.30000000000000004 (documented)


def test_paired_difference_is_deterministic_and_brackets_the_mean():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 1.0, 200)
    b = a - 0.05 + rng.normal(0, 0.1, 200)
    d = paired_difference(a, b)
    assert d == paired_difference(list(a), list(b))  # fixed seed: the same interval every run
    assert d["mean_difference"] == pytest.approx((a - b).mean())
    assert d["ci_low"] < d["mean_difference"] < d["ci_high"]
    se = (a - b).std(ddof=1) / np.sqrt(len(a))  # the bootstrap interval is close to the normal one
    assert d["ci_high"] - d["ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert d["ci_low"] > 0 and "bootstrap" in d["method"] and "seed 0" in d["method"]
    narrow = paired_difference(a, b, confidence=0.5)
    assert d["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < d["ci_high"]


def test_paired_difference_of_identical_scores_is_exactly_zero():
    d = paired_difference([0.5, 0.7, 0.9], [0.5, 0.7, 0.9])
    assert (d["mean_difference"], d["ci_low"], d["ci_high"]) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("a, b, confidence, match", [([], [], 0.95, "non-empty"), ([0.5], [0.5, 0.6], 0.95, "equal length"),
                                                      ([0.5], [0.5], 1.5, "between 0 and 1")])
def test_paired_difference_refuses_bad_input(a, b, confidence, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(a, b, confidence=confidence)


def test_wins_ties_losses_count_each_pair_once():
    assert wins_ties_losses([0.6, 0.5, 0.4, 0.7], [0.5, 0.5, 0.5, 0.7 + 1e-12]) == {"wins": 1, "ties": 2, "losses": 1}
    with pytest.raises(ValueError, match="same pairs"):
        wins_ties_losses([0.5], [])


# ------------------------------------------------------------------ issue 23, item 13: one-class pairs are flagged


class SaysYes:
    """An LLM stand-in whose classifier answers "Yes" to every prompt (the answer prompt injection aims at)."""

    def ask_yes_no(self, prompt, max_tokens=1):
        return True


def yes_to_everything(truth_by_pair):
    from ctx_utils.score import score_explanations

    explained = [{"layer": 1, "neuron": n, "token": " up", "head": 3, "text": "anything", "source": "llm:fake",
                  "variant": "oct2023", "rule": None, "finish_reason": "stop"} for n in range(len(truth_by_pair))]
    held = {f"1.{n}": [f"prompt {i}" for i in range(len(t))] for n, t in enumerate(truth_by_pair)}
    active = {f"1.{n}": [[3] if a else [] for a in t] for n, t in enumerate(truth_by_pair)}
    return score_explanations(explained, held, active, llm=SaysYes())


def test_a_pair_whose_held_out_prompts_are_one_class_is_flagged():
    """"Yes" to everything scores 0.5 on a mixed pair but 1.0 on an all-active one: the pair says so."""
    mixed, all_active, all_inactive = yes_to_everything([[True, False, True], [True, True], [False, False]])
    assert (mixed["E"], mixed["one_class"]) == (0.5, None)
    assert (all_active["E"], all_active["one_class"]) == (1.0, "all active")  # the paper's convention, kept
    assert (all_inactive["E"], all_inactive["one_class"]) == (0.0, "all inactive")


def test_the_pipeline_summary_counts_one_class_pairs():
    from ctx_utils.pipeline import _summary

    summary = _summary(yes_to_everything([[True, False, True], [True, True], [False, False]]))
    assert summary["n_pairs"] == 3 and summary["n_one_class"] == 2

"""Step 5: score an explanation by how well it lets a classifier tell active from inactive held-out prompts.

The paper's head explanation score (arXiv 2402.15055) is balanced accuracy over a pair's held-out prompts:

    E = ½ · ( TP / (TP + FN)  +  TN / (TN + FP) )      (mean of the true-positive and true-negative rates)

A pair whose held-out prompts are all active (or all inactive) has only one defined rate. The October-2023
run, whose data the kit reproduces, keeps such a pair with E = the defined rate (``missing="defined_rate"``);
the February-2024 run drops it (``missing="drop"``, E is ``None``). Kept, such an E measures one class only:
an explanation that answers "Yes" to everything scores 1.0 on an all-active pair, where balanced accuracy
caps it at 0.5 otherwise. So every scored pair says which it is (``one_class``: ``"all active"``, ``"all
inactive"`` or None, :func:`one_class`), and the pipeline's summaries count such pairs (``n_one_class``).

The held-out prompts and their ground truth (steps 2-3 again, on documents the explainer never saw) are
:mod:`ctx_utils.held_out`'s; the explainer and the classifier's LLM calls are :mod:`ctx_utils.explain`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from ctx_utils.explain import HeadExplanation, classify_prompt
from ctx_utils.llm import LLMClient
from ctx_utils.settings import DEFAULTS
from ctx_utils.tokens import neuron_label

@dataclass(frozen=True)
class Confusion:
    """Counts of one pair's classified held-out prompts (positive = head active)."""

    tp: int
    fn: int
    tn: int
    fp: int


def confusion(truth: Sequence[bool], predicted: Sequence[bool]) -> Confusion:
    """Count TP/FN/TN/FP from ground-truth activity and the classifier's Yes (True) / No (False)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} ground-truth labels but {len(predicted)} predictions.")
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    return Confusion(tp=int((t & p).sum()), fn=int((t & ~p).sum()), tn=int((~t & ~p).sum()), fp=int((~t & p).sum()))


def head_explanation_score(truth: Sequence[bool], predicted: Sequence[bool], missing: str = "defined_rate") -> float | None:
    """E = ½(TPR + TNR) for one pair. ``missing`` says what to do when one class is absent (see module doc)."""
    if missing not in {"defined_rate", "drop"}:
        raise ValueError(f"missing must be 'defined_rate' or 'drop', not {missing!r}.")
    c = confusion(truth, predicted)
    rates = []
    if c.tp + c.fn:
        rates.append(c.tp / (c.tp + c.fn))
    if c.tn + c.fp:
        rates.append(c.tn / (c.tn + c.fp))
    if not rates:
        raise ValueError("Cannot score a pair with no held-out prompts.")
    if len(rates) == 1 and missing == "drop":
        return None
    return float(np.mean(rates))


def one_class(truth: Sequence[bool]) -> str | None:
    """``"all active"`` or ``"all inactive"`` when a pair's scored held-out prompts are of one class (its E is
    then one rate, not balanced accuracy: see the module doc), else None."""
    if not truth or len(set(truth)) == 2:
        return None
    return "all active" if truth[0] else "all inactive"


def summarize_scores(scores: Sequence[float]) -> dict[str, float | int]:
    """The paper's summary of E over pairs: mean, std (ddof 0), skew and skewtest p (alternative 'greater').

    Skew and its test are NaN when they are undefined: fewer than 3 scores (skew) or 8 (skewtest), or scores
    that are all equal (no spread, e.g. a small model's pairs all at E = 1.0), where skew divides zero by zero
    and scipy would warn of "catastrophic cancellation" instead of saying so.
    """
    e = np.asarray([s for s in scores if s is not None], dtype=float)
    if e.size == 0:
        raise ValueError("No scored pairs to summarize.")
    summary: dict[str, float | int] = {"n_pairs": int(e.size), "mean_E": float(e.mean()), "std_E": float(e.std())}
    spread = e.var() > (np.finfo(float).eps * e.mean()) ** 2  # scipy's own test for data too alike for moments
    summary["skew"] = float(stats.skew(e)) if e.size > 2 and spread else float("nan")
    summary["skewtest_p"] = float(stats.skewtest(e, alternative="greater").pvalue) if e.size >= 8 and spread else float("nan")
    return summary


def histogram_counts(scores: Sequence[float], bins: int = 10) -> list[int]:
    """Counts of E in ``bins`` equal bins over [0, 1] (the last bin includes 1.0), as the paper's table.

    The edges are ``np.linspace(0, 1, bins + 1)``, as in the published counts. Floating point makes three of
    them a hair too high (0.30000000000000004, 0.6000000000000001, 0.7000000000000001), so a score of exactly
    0.3, 0.6 or 0.7 falls one bin lower; exact edges would change the published histograms, so the kit keeps
    the authors' binning and says so here.
    """
    e = np.asarray(scores, dtype=float)
    return np.histogram(e, bins=np.linspace(0, 1, bins + 1))[0].astype(int).tolist()


def score_explanations(
    explained: Sequence[dict[str, Any]],
    held_out: dict[str, list[str]],
    held_out_active: dict[str, list[list[int]]],
    llm: LLMClient | None = None,
    max_prompts: int = DEFAULTS.max_held_out,
    missing: str = "defined_rate",
) -> list[dict[str, Any]]:
    """Classify each pair's held-out prompts from its explanation and score it: E = ½(TPR + TNR).

    ``explained``: records from :func:`explain_pairs`; ``held_out["<layer>.<neuron>"]``: the neuron's held-out
    prompt texts; ``held_out_active["<layer>.<neuron>"][i]``: flat indices of the heads active on prompt ``i``
    (the ground truth, same rule as for training). The first ``max_prompts`` prompts are classified (the
    paper: 20). Unparsed LLM answers are left out of E and counted in ``n_unparsed``, never hidden. A pair whose
    scored prompts are all one class gets ``one_class`` (:func:`one_class`) next to its E.
    """
    scored = []
    for record in tqdm(explained, desc="Classifying held-out prompts"):
        label = neuron_label(record["layer"], record["neuron"])
        if label not in held_out or label not in held_out_active:
            raise ValueError(f"Neuron {label} is missing from the held-out set: build it with pipeline.held_out for these neurons.")
        explanation = HeadExplanation.from_dict({k: record[k] for k in ("text", "source", "variant", "rule", "finish_reason")})
        prompts = held_out[label][:max_prompts]
        truth = [record["head"] in active for active in held_out_active[label][: len(prompts)]]
        answers = [classify_prompt(explanation, p, record["token"], llm) for p in prompts]
        kept = [(t, a) for t, a in zip(truth, answers) if a is not None]
        e = head_explanation_score(*zip(*kept), missing=missing) if kept else None
        c = confusion(*zip(*kept)) if kept else None
        scored.append(
            {
                **{k: record[k] for k in ("layer", "neuron", "token", "head")},
                "E": e,
                "one_class": one_class([t for t, _ in kept]),  # E over one class only: flagged wherever E is shown
                "n_prompts": len(prompts),
                "n_unparsed": len(prompts) - len(kept),
                "confusion": asdict(c) if c else None,
                "truth": truth,
                "answers": answers,
            }
        )
    return scored


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> dict[str, float | int | str]:
    """Mean of ``a - b`` over paired scores (same pairs, same held-out prompts) with a bootstrap CI.

    The interval is the percentile bootstrap of the mean difference: ``n_resamples`` resamples of the pairs
    with replacement, drawn by ``numpy.random.default_rng(seed)``, so the same inputs give the same interval.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"Paired scores must be two non-empty lists of equal length, got {x.shape} and {y.shape}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), not {confidence}.")
    diff = x - y
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_resamples, diff.size))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"n_pairs": int(diff.size), "mean_a": float(x.mean()), "mean_b": float(y.mean()),
            "mean_difference": float(diff.mean()), "ci_low": float(low), "ci_high": float(high),
            "confidence": confidence, "method": f"percentile bootstrap over pairs, {n_resamples} resamples, seed {seed}"}


def wins_ties_losses(a: Sequence[float], b: Sequence[float]) -> dict[str, int]:
    """How many pairs ``a`` scores higher than, equal to, or lower than ``b`` (equal within 1e-9)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} scores against {len(b)}: compare the same pairs.")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return {"wins": int((d > 1e-9).sum()), "ties": int((np.abs(d) <= 1e-9).sum()), "losses": int((d < -1e-9).sum())}


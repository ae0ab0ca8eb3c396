"""What the notebooks print about the organism's answer key, and the split of the headline numbers by kind of pair.

Two kinds of function:

* ``check_<step>`` — each step notebook's one call in its section "Check against the answer key": a :class:`Check`
  (one compact table, one sentence), or ``None`` on a model without an answer key (GPT-2, Pythia), which a
  notebook cell then shows as nothing at all.
* :func:`split_scores` and :func:`split_ablation` — E, its gap over random neurons and the ablation KS test, overall
  and per kind of pair: pairs on **planted** neurons (whose contexts the organism was trained to look up, so their
  numbers are built in), pairs on the **other** next-token neurons, and pairs on **random** neurons. On a model
  without a key there are no planted neurons and the split is next-token against random. Every interval is a 95 %
  bootstrap CI (``scipy.stats.bootstrap``, percentile, seed :data:`SEED`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ctx_utils import ablate
from ctx_utils.heads import head_label, pairs_from_attributions
from ctx_utils.organism import answer_key
from ctx_utils.tokens import head_name, neuron_label
from ctx_utils.viz import text_table

SEED = 0  # the bootstrap's random generator seed: the same results print the same intervals
N_RESAMPLES = 9_999
PLANTED, OTHER, RANDOM = "planted neurons", "other next-token neurons", "random neurons"


@dataclass(frozen=True)
class Check:
    """One compact table and one sentence; a notebook shows it as the cell's value."""

    table: pd.DataFrame
    sentence: str

    def _repr_html_(self) -> str:
        return text_table(self.table)._repr_html_() + f"<p>{_escape(self.sentence)}</p>"

    def __repr__(self) -> str:
        return f"{self.table.to_string()}\n{self.sentence}"


def _escape(text: str) -> str:
    import html

    return html.escape(text)


# ----------------------------------------------------------------------------------------- the split


def group_of(truth: dict | None, layer: int, neuron: int) -> str:
    """The kind of a next-token neuron's pair: on a planted neuron, or another next-token neuron (no key: the latter)."""
    return PLANTED if truth is not None and (layer, neuron) in answer_key.planted_neurons(truth) else OTHER


def bootstrap_ci(samples: Sequence[Sequence[float]], statistic: Callable, paired: bool = False) -> tuple[float, float]:
    """95 % percentile bootstrap CI of ``statistic(*samples)``; (nan, nan) when a sample has fewer than 2 values."""
    if min(len(s) for s in samples) < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():  # a sample with no spread gives a zero-width interval, which is the answer
        warnings.simplefilter("ignore")
        ci = stats.bootstrap([np.asarray(s, dtype=float) for s in samples], statistic, paired=paired, vectorized=False,
                             n_resamples=N_RESAMPLES, method="percentile", confidence_level=0.95,
                             rng=np.random.default_rng(SEED)).confidence_interval
    return float(ci.low), float(ci.high)


def _with_ci(value: float, ci: tuple[float, float], signed: bool = False) -> str:
    number = f"{value:+.3f}" if signed else f"{value:.3f}"
    return number if np.isnan(ci[0]) else f"{number} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f"{number} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _by_neuron(pairs: list[dict]) -> list[np.ndarray]:
    """The E of ``pairs``, one array per neuron: the unit a CI resamples (a neuron's pairs share its prompts)."""
    groups: dict[tuple[int, int], list[float]] = {}
    for p in pairs:
        groups.setdefault((p["layer"], p["neuron"]), []).append(p["E"])
    return [np.asarray(v, dtype=float) for _, v in sorted(groups.items())]


def _pooled(clusters: list[np.ndarray], picked: np.ndarray) -> float:
    """Mean E over the pairs of the neurons ``picked`` (indices into ``clusters``, repeats allowed)."""
    return float(np.concatenate([clusters[int(i)] for i in picked]).mean())


def mean_ci(pairs: list[dict]) -> tuple[float, float]:
    """95 % CI of the mean E of ``pairs``, resampling neurons with all their pairs."""
    c = _by_neuron(pairs)
    return bootstrap_ci([np.arange(len(c))], lambda i: _pooled(c, i))


def gap_ci(pairs: list[dict], baseline: list[dict]) -> tuple[float, float]:
    """95 % CI of mean E(``pairs``) − mean E(``baseline``), resampling the neurons of each side independently."""
    a, b = _by_neuron(pairs), _by_neuron(baseline)
    return bootstrap_ci([np.arange(len(a)), np.arange(len(b))], lambda i, j: _pooled(a, i) - _pooled(b, j))


def split_scores(scored: list[dict], random_pairs: list[dict], truth: dict | None) -> Check:
    """Mean E with its CI, and its gap over the random neurons' mean E with the gap's CI, per kind of pair.

    ``scored``: scores.json's pairs; ``random_pairs``: its ``random_baseline.pairs``. The CIs resample neurons, each
    with all its pairs: pairs of one neuron share its held-out prompts and are not independent.
    """
    real = [s for s in scored if s["E"] is not None]
    rand = [p for p in random_pairs if p["E"] is not None]
    groups = {"all next-token neurons": real}
    if truth is not None:
        groups |= {name: [s for s in real if group_of(truth, s["layer"], s["neuron"]) == name] for name in (PLANTED, OTHER)}
    rows, verdicts = [], []
    for name, pairs in [*groups.items(), (RANDOM, rand)]:
        e = [s["E"] for s in pairs]
        row = {"pairs": name, "n": len(e), "neurons": len({(s["layer"], s["neuron"]) for s in pairs}),
               "mean E [95% CI]": _with_ci(np.mean(e), mean_ci(pairs)) if e else "—", "gap over random [95% CI]": "—"}
        if e and rand and name != RANDOM:
            low, high = gap_ci(pairs, rand)
            row["gap over random [95% CI]"] = _with_ci(np.mean(e) - np.mean([p["E"] for p in rand]), (low, high), signed=True)
            verdicts.append(f"{name}: " + ("no difference shown (the CI includes 0)" if np.isnan(low) or low <= 0 <= high
                                           else "above the random neurons" if low > 0 else "below the random neurons"))
        rows.append(row)
    built_in = (" On an organism the planted neurons' pairs are built in: it was trained to look their contexts up; "
                "what the method shows by itself is the row of the other next-token neurons.") if truth is not None else ""
    sentence = ("; ".join(verdicts) + ". CIs resample neurons, each with all its pairs." + built_in if verdicts
                else "No random neuron's pair was scored, so there is no gap to measure.")
    return Check(pd.DataFrame(rows).set_index("pairs"), sentence)


def _neuron_means(effects: list[dict], field: str) -> dict[tuple[int, int], float]:
    """Per neuron, the mean over its pairs of ``field`` (None values left out); neurons with no value left out."""
    by_neuron: dict[tuple[int, int], list[float]] = {}
    for e in effects:
        if e.get(field) is not None:
            by_neuron.setdefault((e["layer"], e["neuron"]), []).append(e[field])
    return {cell: float(np.mean(v)) for cell, v in by_neuron.items()}


def ks_per_neuron(effects: list[dict]) -> dict | None:
    """KS test of the mean probability drop where the head is active against where it is not, one value per NEURON
    and side (the mean over its pairs): pairs of one neuron share its prompts and are not independent. The CI
    resamples the neurons that have both sides. None when a side is empty."""
    active = _neuron_means(effects, "mean_decrease_active")
    inactive = _neuron_means(effects, "mean_decrease_inactive")
    if not active or not inactive:
        return None
    with warnings.catch_warnings():  # a few tied values: scipy falls back from the exact p to the asymptotic one
        warnings.simplefilter("ignore")
        result = stats.ks_2samp(list(active.values()), list(inactive.values()))
    both = sorted(set(active) & set(inactive))
    ci = bootstrap_ci([[active[c] for c in both], [inactive[c] for c in both]],
                      lambda a, b: stats.ks_2samp(a, b).statistic, paired=True)
    return {"statistic": float(result.statistic), "pvalue": float(result.pvalue), "ci": ci,
            "n_active": len(active), "n_inactive": len(inactive)}


def split_ablation(effects: list[dict], truth: dict | None) -> Check:
    """The ablation KS test overall and per kind of pair: per neuron (with a CI), and per pair as the paper counts."""
    groups = {"all next-token neurons": effects}
    if truth is not None:
        groups |= {name: [e for e in effects if group_of(truth, e["layer"], e["neuron"]) == name] for name in (PLANTED, OTHER)}
    rows, verdicts = [], []
    for name, chosen in groups.items():
        row = {"pairs": name, "n": len(chosen), "neurons": len({(e["layer"], e["neuron"]) for e in chosen})}
        per_neuron = ks_per_neuron(chosen)
        if per_neuron is None:
            rows.append(row | {"KS per neuron [95% CI]": "—", "p per neuron": "—", "p per pair": "—"})
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_pair = ablate.ks_test([e["mean_decrease_active"] for e in chosen], [e["mean_decrease_inactive"] for e in chosen])
        rows.append(row | {"KS per neuron [95% CI]": _with_ci(per_neuron["statistic"], per_neuron["ci"]),
                           "p per neuron": f"{per_neuron['pvalue']:.2g}", "p per pair": f"{per_pair['pvalue']:.2g}"})
        verdicts.append(f"{name}: {'a difference' if per_neuron['pvalue'] < 0.05 else 'no difference shown'} "
                        f"(p = {per_neuron['pvalue']:.2g} over {per_neuron['n_active']} and {per_neuron['n_inactive']} neurons)")
    built_in = (" The planted neurons' difference is built in by the organism's wiring; the other next-token neurons' "
                "row is what ablation shows beyond it.") if truth is not None else ""
    sentence = ("; ".join(verdicts) + ". The per-neuron test averages a neuron's pairs (they share its prompts); "
                "'p per pair' treats every pair as independent, as the paper's test does. Random neurons are not "
                "ablated (step 6 tests the next-token pairs only)." + built_in)
    return Check(pd.DataFrame(rows).set_index("pairs"), sentence)


# ------------------------------------------------------------------------------- checks per notebook


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _truth(settings) -> dict | None:
    return answer_key.load_answer_key(settings.model)


def check_behaviour(model, model_name: str) -> Check | None:
    """00: the organism predicts its planted tokens on held-out prompts as its training report recorded."""
    truth = answer_key.load_answer_key(model_name)
    if truth is None:
        return None
    import json

    report = json.loads((answer_key.organism_folder(model_name) / "training.json").read_text())["planted_top1_test"]
    groups = answer_key.held_out_groups(model_name)
    rows, off = [], []
    for plant in truth["planted"]:
        own = {g: groups[g] for g in groups if g.split("/")[0] == plant["token"].strip()}
        row = {"token": repr(plant["token"])}
        for r in ablate.top1_accuracy(model, own, plant["token"], []):
            row[r["group"].split("/")[-1]] = round(r["top1_accuracy"], 2)
            if r["group"] in report and abs(r["top1_accuracy"] - report[r["group"]]) > 0.15:
                off.append(f"{r['group']} ({r['top1_accuracy']:.2f} here, {report[r['group']]:.2f} in training.json)")
        rows.append(row)
    assert not off, f"not the model its key was measured on: {', '.join(off)}"
    table = pd.DataFrame(rows).set_index("token")
    return Check(table, f"Top-1 rate of the planted token on held-out prompts: every one of the {table.notna().sum().sum()} "
                        "contexts and distractors is within 0.15 of the training report (contexts near 1, distractors near 0).")


def check_neurons(settings, selected: list[dict]) -> Check | None:
    """01: every learned planted token has its key neuron among the selected next-token neurons."""
    truth = _truth(settings)
    if truth is None:
        return None
    chosen = {(n["layer"], n["neuron"]) for n in selected}
    rows = [{"planted token": repr(row["token"]), "key neuron": row["neuron"], "learned": row["learned"],
             "selected": (tuple(map(int, row["neuron"][1:].split(".N"))) in chosen)} for row in answer_key.key_table(truth)]
    table = pd.DataFrame(rows).set_index("planted token")
    missing = table[table["learned"] & ~table["selected"]]
    assert missing.empty, f"learned planted tokens whose neuron was not selected: {list(missing.index)}"
    return Check(table, f"All {int(table['learned'].sum())} learned planted tokens have their neuron selected, among "
                        f"{len(selected)} selected neurons; the other {len(selected) - int(table['selected'].sum())} are "
                        "ordinary neurons that the rule ranks in.")


def check_prompts(settings, neuron_list: list[dict], found: dict[str, list[dict]]) -> Check | None:
    """02: the planted neurons' prompts contain their contexts' marker words."""
    truth = _truth(settings)
    if truth is None:
        return None
    rows = []
    for plant in truth["planted"]:
        texts = [e["text"] for n in neuron_list if n["token"] == plant["token"]
                 for e in found.get(neuron_label(n["layer"], n["neuron"]), [])]
        row = {"token": repr(plant["token"]), "prompts": len(texts)}
        for context in plant["contexts"]:
            row[f"with {context['name'].split('/')[-1]} markers"] = f"{answer_key.marker_share(texts, answer_key.markers(context)):.0%}"
        every = [w for c in plant["contexts"] for w in answer_key.markers(c)]
        row["with none"] = f"{1 - answer_key.marker_share(texts, every):.0%}" if texts else "—"
        rows.append(row)
    table = pd.DataFrame(rows).set_index("token").fillna("—")
    return Check(table, "Share of each planted token's prompts that contain a context's marker words (a prompt can hold "
                        "both contexts, so shares can add up to more than 100 %).")


def check_heads(settings, model, neuron_list: list[dict], attributions: dict, pairs: list[dict]) -> Check | None:
    """03: the pairs of both active-head rules against the key's carriers (precision, recall, contexts found)."""
    truth = _truth(settings)
    if truth is None:
        return None
    rows = {}
    for rule in ("top3", "2sigma"):
        found = pairs if rule == settings.rule else pairs_from_attributions(model, neuron_list, attributions, rule, settings.band)
        r = answer_key.recovery(found, truth)
        rows[f"{rule}{' (this run)' if rule == settings.rule else ''}"] = {
            "key pairs found": f"{r['hits']} of {r['key_pairs']}", "precision": _round(r["precision"]), "recall": _round(r["recall"]),
            "contexts found": f"{len(r['contexts_found'])} of {len(r['contexts'])}",
            "pairs on other neurons": r["other_pairs"]}
    mine = answer_key.recovery(pairs, truth)
    missed = ", ".join(f"{head_label(model, h)} ({answer_key.pair_role(truth, l, n, h).removeprefix('carries ')})"
                       for l, n, h, _ in mine["missed"]) or "none"
    return Check(pd.DataFrame(rows).T.round(2), f"With {settings.rule} and the {settings.band} band, {mine['hits']} of "
                 f"{mine['key_pairs']} carrier pairs are found and {len(mine['false_pairs'])} pairs on planted neurons are "
                 f"not carriers; carriers missed: {missed}.")


def check_explanations(settings, explained: list[dict]) -> Check | None:
    """04: do key pairs' explanations name the context their head carries (by its marker words)?"""
    truth = _truth(settings)
    if truth is None:
        return None
    rows = []
    for r in explained:
        role = answer_key.pair_role(truth, r["layer"], r["neuron"], r["head"])
        if role.startswith("carries "):
            named = answer_key.named_contexts(r["text"], truth, r["token"])
            rows.append({"neuron": f"L{r['layer']}.N{r['neuron']}", "token": repr(r["token"]),
                         "head": head_name(r["head_layer"], r["head_index"]), "carries": role.removeprefix("carries "),
                         "explanation names it": role.removeprefix("carries ") in named})
    table = pd.DataFrame(rows, columns=["neuron", "token", "head", "carries", "explanation names it"])
    return Check(table, f"{int(table['explanation names it'].sum())} of {len(table)} key pairs' explanations name the "
                        f"context their head carries (a marker word of it); {len(explained) - len(table)} explained pairs "
                        "are not key pairs.")


def check_scores(settings, scored: list[dict], explained: list[dict]) -> Check | None:
    """05: per planted context, the best E of an explanation that names it. An explanation naming none of a context's
    marker words does not count as recovering it, whatever its E."""
    truth = _truth(settings)
    if truth is None:
        return None
    score = {(s["layer"], s["neuron"], s["head"]): s["E"] for s in scored}
    rows = []
    for plant in truth["planted"]:
        for context in plant["contexts"]:
            naming = [score[(r["layer"], r["neuron"], r["head"])] for r in explained if r["token"] == plant["token"]
                      and context["name"] in answer_key.named_contexts(r["text"], truth, plant["token"])]
            naming = [e for e in naming if e is not None]
            rows.append({"context": context["name"], "markers": ", ".join(m.strip() for m in answer_key.markers(context)),
                         "explanations naming it": len(naming), "best E": max(naming) if naming else None})
    table = pd.DataFrame(rows).set_index("context")
    good = int((table["best E"] >= 0.9).sum())
    return Check(table.round(2), f"{good} of {len(table)} planted contexts are named by an explanation scoring E ≥ 0.9; "
                                 f"{int((table['explanations naming it'] == 0).sum())} are named by none.")


def check_ablation(settings, model, effects: list[dict], pairs: list[dict]) -> Check | None:
    """06: ablating each carrier on its context's held-out prompts, and how ablation-confirmed pairs recover the key."""
    truth = _truth(settings)
    if truth is None:
        return None
    groups = answer_key.held_out_groups(settings.model)
    carriers, _ = answer_key.key_pairs(truth)
    rows = []
    for k in carriers:
        head = divmod(k["head"], model.cfg.n_heads)
        acc = {r["ablated"]: r["top1_accuracy"] for r in ablate.top1_accuracy(model, {k["context"]: groups[k["context"]]},
                                                                                 k["token"], [head])}
        rows.append({"context": k["context"], "carrier": head_label(model, k["head"]),
                     "top-1 normally": acc["none"], "top-1 ablated": acc[head_name(*head)]})
    table = pd.DataFrame(rows).round(2)  # a redundant pair: two carriers of one context, one row each
    everything, confirmed = (answer_key.recovery(chosen, truth) for chosen in
                             (effects, [e for e in effects if answer_key.ablation_confirms(e)]))
    alone = table[table["top-1 ablated"] > 0.5]["carrier"].tolist()
    redundant = f" {', '.join(alone)} change nothing alone: a redundant pair, each twin carries the context by itself." if alone else ""
    return Check(table, f"Each carrier alone, ablated on its context's held-out prompts.{redundant} Of step 3's pairs on planted neurons, "
                        f"{everything['hits']} of {everything['pairs']} are carriers; keeping only those that ablation "
                        f"confirms, {confirmed['hits']} of {confirmed['pairs']}.")


def contexts_table(truth: dict) -> pd.DataFrame:
    """00: one row per planted context and distractor: its token, markers, carrier heads and one example prompt."""
    carriers, _ = answer_key.key_pairs(truth)
    rows = []
    for planted in truth["planted"]:
        for kind, group in (("context", planted["contexts"]), ("distractor", planted["distractors"])):
            for ctx in group:
                rows.append({"token": repr(planted["token"]), "kind": kind, "name": ctx["name"],
                             "markers": ", ".join(map(repr, answer_key.markers(ctx))),
                             "carried by": ", ".join(f"L0.H{k['head']}" for k in carriers if k["context"] == ctx["name"]) or "—",
                             "example": "…" + ctx["examples"][0][-90:]})
    return pd.DataFrame(rows)

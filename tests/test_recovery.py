"""The pipeline recovers what was planted in the model organism (data/organism/ground_truth.json).

The real steps run once per module with the kit's default settings, through the same ``pipeline.compute_*``
calls as the notebooks (600 training documents; 2σ and 25–75 %, the paper's final selection): next-token
neurons (step 1) → their max-activating prompts (step 2) → head attribution and the pairs (step 3).
Then, against the answer key:

* every planted token has a selected next-token neuron;
* every planted context has a selected (neuron, head) pair whose positive prompts carry that context's
  marker (≥ 90 %) and whose negative prompts mostly (> 50 %) carry the token's other context;
* the two contexts of a token are carried by two different heads, and each is the head the answer key says
  the context is wired to (``ctx_utils/organism/wiring.py``).

Skipped, with the reason, while the organism has not been trained.
"""

from __future__ import annotations

import json

import pytest

from ctx_utils.models import CLEAN_ORGANISM_DIR as ORGANISM_DIR  # the clean organism: exact wired heads
from ctx_utils.organism import answer_key
from ctx_utils.tokens import neuron_label

if not (ORGANISM_DIR / "config.json").exists() or not (ORGANISM_DIR / "ground_truth.json").exists():
    pytest.skip(
        f"The organism is not in {ORGANISM_DIR} yet: train it with `python -m ctx_utils.organism.train`.",
        allow_module_level=True,
    )

TRUTH = json.loads((ORGANISM_DIR / "ground_truth.json").read_text())
PLANTED = TRUTH["planted"]
CONTEXTS = [(entry["token"], context["name"]) for entry in PLANTED for context in entry["contexts"]]
MIN_POSITIVE, MIN_NEGATIVE_OTHER = 0.9, 0.5


def context_recovery(pairs: list[dict], prompts: dict[str, list[dict]], planted: list[dict]) -> list[dict]:
    """For each planted context of the answer key (``ground_truth.json``'s ``planted``), the pair that isolates it.

    A pair isolates a context when its positive prompts carry the context's marker and its negative prompts
    carry the token's *other* contexts' markers. Per context returns ``{"token", "context", "marker", "pair",
    "positive_share", "negative_other_share", "candidates"}``: ``pair`` is the best of the token's pairs
    (highest positive share, then negative share; None if the token has no pair), ``candidates`` all of the
    token's pairs with their two shares.
    """
    report = []
    for entry in planted:
        contexts = entry["contexts"]
        for context in contexts:
            others = [c["marker"] for c in contexts if c is not context]
            candidates = []
            for pair in (p for p in pairs if p["token"] == entry["token"]):
                texts = [p["text"] for p in prompts[neuron_label(pair["layer"], pair["neuron"])]]
                candidates.append(
                    {
                        "pair": pair,
                        "positive_share": answer_key.marker_share([texts[i] for i in pair["positive"]], [context["marker"]]),
                        "negative_other_share": answer_key.marker_share([texts[i] for i in pair["negative"]], others),
                    }
                )
            best = max(candidates, key=lambda c: (c["positive_share"], c["negative_other_share"]), default=None)
            report.append(
                {
                    "token": entry["token"],
                    "context": context["name"],
                    "marker": context["marker"],
                    "pair": best and best["pair"],
                    "positive_share": best["positive_share"] if best else 0.0,
                    "negative_other_share": best["negative_other_share"] if best else 0.0,
                    "candidates": candidates,
                }
            )
    return report


def test_context_recovery_scores_pairs_against_markers():
    planted = [{"token": " as", "contexts": [{"name": "as/local", "marker": " as early"}, {"name": "as/topic", "marker": " deadline"}]}]
    texts = [" we start as early", " they leave as early", " the deadline is near . we start early", "as early"]
    prompts = {"1.7": [{"text": t} for t in texts]}
    local_head = {"layer": 1, "neuron": 7, "token": " as", "head": 2, "positive": [0, 1, 3], "negative": [2]}
    mixed_head = {"layer": 1, "neuron": 7, "token": " as", "head": 5, "positive": [0, 2], "negative": [1, 3]}
    other_token = {"layer": 1, "neuron": 7, "token": " only", "head": 1, "positive": [2], "negative": [0, 1, 3]}
    report = {r["context"]: r for r in context_recovery([mixed_head, local_head, other_token], prompts, planted)}
    local, topic = report["as/local"], report["as/topic"]
    assert local["pair"] is local_head and local["positive_share"] == 1.0 and local["negative_other_share"] == 1.0
    assert topic["pair"] is mixed_head and topic["positive_share"] == 0.5 and topic["negative_other_share"] == 1.0
    assert len(local["candidates"]) == 2, "pairs of another token are not candidates"
    assert answer_key.marker_share(texts, [" as early"]) == 0.75  # "as early" at a document start counts too
    assert context_recovery([], prompts, planted)[0]["pair"] is None


@pytest.fixture(scope="module")
def pipeline():
    from ctx_utils import pipeline as steps
    from ctx_utils.settings import load_settings

    settings = steps.resolve(load_settings(environ={}, model="organism-clean", explainer="offline"), quiet=True)
    model = steps.model(settings)
    found = steps.compute_neurons(settings, model)["neurons"]
    prompt_sets = steps.compute_prompts(settings, model, found)["prompts"]
    pairs = steps.compute_heads(settings, model, found, prompt_sets)["pairs"]
    report = context_recovery(pairs, prompt_sets, PLANTED)
    return {"settings": settings, "model": model, "neurons": found, "prompts": prompt_sets, "pairs": pairs,
            "report": {r["context"]: r for r in report}}


def recovering_heads(row: dict) -> set[int]:
    """The flat heads of the token's pairs that isolate this context."""
    return {
        c["pair"]["head"]
        for c in row["candidates"]
        if c["positive_share"] >= MIN_POSITIVE and c["negative_other_share"] > MIN_NEGATIVE_OTHER
    }


def describe(row: dict) -> str:
    """What was found for a context, for failure messages."""
    lines = [f"{row['context']} (marker {row['marker']!r}): {len(row['candidates'])} pairs of token {row['token']!r}"]
    for c in row["candidates"]:
        p = c["pair"]
        lines.append(
            f"  L{p['layer']}.N{p['neuron']} head {p['head']}: active {p['active_fraction']:.2f}, "
            f"positives with marker {c['positive_share']:.2f}, negatives with the other context {c['negative_other_share']:.2f}"
        )
    return "\n".join(lines)


@pytest.mark.parametrize("token", [entry["token"] for entry in PLANTED])
def test_every_planted_token_has_a_next_token_neuron(pipeline, token):
    tokens = [n["token"] for n in pipeline["neurons"]]
    assert token in tokens, f"no selected next-token neuron writes {token!r}; selected tokens: {tokens}"


CONTEXT_CASES = [pytest.param(token, name, id=name) for token, name in CONTEXTS]
WIRED = {context["name"]: context["head_index"] for entry in PLANTED for context in entry["contexts"]}


@pytest.mark.parametrize("token,context", CONTEXT_CASES)
def test_every_planted_context_has_a_look_up_head(pipeline, token, context):
    row = pipeline["report"][context]
    assert recovering_heads(row), (
        f"no selected (neuron, head) pair isolates {context}: need ≥ {MIN_POSITIVE:.0%} of positives with the "
        f"marker and > {MIN_NEGATIVE_OTHER:.0%} of negatives with the other context.\n{describe(row)}"
    )


@pytest.mark.parametrize("token,context", CONTEXT_CASES)
def test_the_recovered_head_is_the_wired_head(pipeline, token, context):
    """The answer key names the layer-0 head wired to each context; the pipeline must find that one."""
    row = pipeline["report"][context]
    assert recovering_heads(row) == {WIRED[context]}, f"{context} is wired to head {WIRED[context]}.\n{describe(row)}"


TWO_CONTEXTS = [entry for entry in PLANTED if len(entry["contexts"]) == 2]


@pytest.mark.parametrize("entry", TWO_CONTEXTS, ids=[entry["token"].strip() for entry in TWO_CONTEXTS])
def test_two_contexts_are_driven_by_two_heads(pipeline, entry):
    first, second = (pipeline["report"][c["name"]] for c in entry["contexts"])
    heads_a, heads_b = recovering_heads(first), recovering_heads(second)
    assert heads_a and heads_b and (len(heads_a | heads_b) >= 2), (
        f"{entry['token']!r}: the contexts need two different heads, found {sorted(heads_a)} and {sorted(heads_b)}.\n"
        f"{describe(first)}\n{describe(second)}"
    )


def test_offline_explanations_name_each_context_and_score_high(pipeline):
    """Steps 4–5 on the recovered pairs: the offline explainer names the context, and held-out E ≥ 0.9."""
    from ctx_utils import pipeline as steps

    recovered = {}
    for name, row in pipeline["report"].items():
        head = recovering_heads(row)
        recovered[name] = next(c["pair"] for c in row["candidates"] if c["pair"]["head"] in head)
    settings = pipeline["settings"]
    explained = steps.compute_explanations(settings, list(recovered.values()), pipeline["prompts"])["pairs"]
    held = steps.compute_held_out(settings, pipeline["model"], steps.pair_neurons(pipeline["neurons"], list(recovered.values())),
                                pipeline["prompts"])
    scored = steps.score_held_out(settings, explained, held)
    markers = {c["name"]: c["marker"] for entry in PLANTED for c in entry["contexts"]}
    for (name, pair), record, score in zip(recovered.items(), explained, scored):
        word = markers[name].split()[0]  # " never give" → "never"; " marathon" → "marathon"
        assert word in record["text"], f"{name}: the explanation does not name {word!r}: {record['text']!r}"
        assert score["E"] is not None and score["E"] >= 0.9, f"{name}: E = {score['E']} on held-out prompts ({record['text']!r})"

"""The pipeline recovers what was planted in the model organism (data/organism/ground_truth.json).

The real steps run once per module on the organism's training corpus (its first 2000 documents, to stay fast): next-token neurons (step 1) → their
max-activating prompts (step 2) → head attribution and the paper's final selection, 2σ and 25–75 % (step 3).
Then, against the answer key:

* every planted token has a selected next-token neuron;
* every planted context has a selected (neuron, head) pair whose positive prompts carry that context's
  marker (≥ 90 %) and whose negative prompts mostly (> 50 %) carry the token's other context;
* the two contexts of a token are carried by two different heads.

Skipped, with the reason, while the organism has not been trained.
"""

from __future__ import annotations

import json

import pytest

from ctx_utils.models import ORGANISM_DIR

if not (ORGANISM_DIR / "config.json").exists() or not (ORGANISM_DIR / "ground_truth.json").exists():
    pytest.skip(
        f"The organism is not in {ORGANISM_DIR} yet: train it with `python -m ctx_utils.organism.train`.",
        allow_module_level=True,
    )

TRUTH = json.loads((ORGANISM_DIR / "ground_truth.json").read_text())
PLANTED = TRUTH["planted"]
CONTEXTS = [(entry["token"], context["name"]) for entry in PLANTED for context in entry["contexts"]]
PER_LAYER = 20  # the paper's (and select_next_token_neurons') default
N_DOCS = 2000  # of the 6000 training documents: ~130 per planted context, far more than the 30 kept per neuron
RULE, BAND = "2sigma", "25-75"  # the paper's final run
MIN_POSITIVE, MIN_NEGATIVE_OTHER = 0.9, 0.5


@pytest.fixture(scope="module")
def pipeline():
    from ctx_utils import heads, neurons, prompts
    from ctx_utils.corpus import load_corpus
    from ctx_utils.models import load_model

    model = load_model("organism", device="cpu")
    found = neurons.select_next_token_neurons(model, per_layer=PER_LAYER)
    prompt_sets = prompts.find_activating_prompts(model, load_corpus("organism", "train", max_docs=N_DOCS), found, progress=False)
    attributions = heads.attribute_neurons(model, found, prompt_sets)
    pairs = heads.pairs_from_attributions(model, found, attributions, rule=RULE, band=BAND)
    report = heads.context_recovery(pairs, prompt_sets, PLANTED)
    return {"model": model, "neurons": found, "pairs": pairs, "report": {r["context"]: r for r in report}}


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


# Measured on the shipped organism (24 Nov, seed 0): the planted neurons are found (above), and the three local
# contexts of " as", " only" and " ahead" each get a head of their own. The other contexts do not yet: a topic word
# is read by several layer-0 heads at once, so no single head's positives are ≥ 90 % that context; and with 8
# candidate heads the 2σ rule can barely fire (the largest possible z-score is 2.47). Strict: the day an organism
# passes one of these, it XPASSes and fails the run, so its marker is removed then.
NOT_YET = pytest.mark.xfail(
    strict=True,
    reason="the shipped organism spreads this context over several layer-0 heads (see the comment above)",
)
RECOVERED = {"as/local", "only/local", "ahead/local"}
CONTEXT_CASES = [pytest.param(token, name, marks=() if name in RECOVERED else NOT_YET, id=name) for token, name in CONTEXTS]


@pytest.mark.parametrize("token,context", CONTEXT_CASES)
def test_every_planted_context_has_a_look_up_head(pipeline, token, context):
    row = pipeline["report"][context]
    assert recovering_heads(row), (
        f"no selected (neuron, head) pair isolates {context}: need ≥ {MIN_POSITIVE:.0%} of positives with the "
        f"marker and > {MIN_NEGATIVE_OTHER:.0%} of negatives with the other context.\n{describe(row)}"
    )


TWO_CONTEXTS = [entry for entry in PLANTED if len(entry["contexts"]) == 2]


@NOT_YET
@pytest.mark.parametrize("entry", TWO_CONTEXTS, ids=[entry["token"].strip() for entry in TWO_CONTEXTS])
def test_two_contexts_are_driven_by_two_heads(pipeline, entry):
    first, second = (pipeline["report"][c["name"]] for c in entry["contexts"])
    heads_a, heads_b = recovering_heads(first), recovering_heads(second)
    assert heads_a and heads_b and (len(heads_a | heads_b) >= 2), (
        f"{entry['token']!r}: the contexts need two different heads, found {sorted(heads_a)} and {sorted(heads_b)}.\n"
        f"{describe(first)}\n{describe(second)}"
    )

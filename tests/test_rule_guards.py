"""Direct guards for rules that no finding threshold would catch quickly: each test names its rule and was seen
failing on the plausible wrong edit given in its docstring."""

from __future__ import annotations

import inspect
from dataclasses import fields

import numpy as np
import pytest
import torch
from scipy import stats

from ctx_utils import ablate, heads, held_out, pipeline, prompts
from ctx_utils.settings import DEFAULTS, STEP_FIELDS, Settings, load_settings

# ------------------------------------------------------------------------------ fingerprints follow the data flow

#: Where each setting first shapes a result, written from the paper's data flow, independently of STEP_FIELDS:
#: neurons → prompts → heads → held_out / explanations → scores; ablation reads held_out. ``None``: no result
#: depends on it (how fast, where, or how patiently a step runs).
FIRST_STEP = {
    "model": "neurons", "corpus": "neurons", "per_layer": "neurons", "activity_docs": "neurons", "min_share": "neurons",
    "n_docs": "prompts", "top_k": "prompts", "ratio": "prompts", "max_tokens": "prompts", "keep": "prompts",
    "rule": "heads", "band": "heads", "same_layer": "heads",
    "test_corpus": "held_out", "max_test_docs": "held_out",
    "explainer": "explanations", "llm_model": "explanations", "prompt_variant": "explanations",
    "max_held_out": "scores", "random_per_layer": "scores", "random_seed": "scores",
    "llm_timeout": None, "llm_retries": None, "llm_token_budget": None, "batch_size": None, "device": None,
}
DOWNSTREAM = {
    "neurons": {"neurons", "prompts", "heads", "held_out", "explanations", "scores", "ablation"},
    "prompts": {"prompts", "heads", "held_out", "explanations", "scores", "ablation"},
    "heads": {"heads", "held_out", "explanations", "scores", "ablation"},
    "held_out": {"held_out", "scores", "ablation"},
    "explanations": {"explanations", "scores"},
    "scores": {"scores"},
    None: set(),
}
CHANGED = {"model": "gpt2-small", "corpus": "pile-10k", "test_corpus": "other.jsonl", "ratio": 0.5, "min_share": 0.2,
           "rule": "top3", "band": ">25", "same_layer": True, "explainer": "offline", "llm_model": "gpt-4-0613",
           "prompt_variant": "feb2024", "llm_timeout": 5.0, "device": "cpu"}


def test_every_setting_has_a_place_in_the_data_flow():
    assert set(FIRST_STEP) == {f.name for f in fields(Settings)}, "a new setting needs its row in FIRST_STEP here"


@pytest.mark.parametrize("name", sorted(FIRST_STEP))
def test_a_setting_moves_the_fingerprint_of_exactly_the_steps_it_shapes(name):
    """Wrong edit seen failing: `prompt_variant` dropped from the explanations' fields in settings.py (a feb2024 run
    would then reuse oct2023 explanations)."""
    value = getattr(DEFAULTS, name)
    changed = DEFAULTS.replace(**{name: CHANGED[name] if name in CHANGED else value + 1})
    moved = {step for step in STEP_FIELDS if changed.fingerprint(step) != DEFAULTS.fingerprint(step)}
    assert moved == DOWNSTREAM[FIRST_STEP[name]], f"{name}: moves {sorted(moved)}"


def test_same_layer_is_off_by_default_everywhere():
    """The paper credits heads of earlier layers only. Wrong edit seen failing: `same_layer: bool = True`."""
    assert DEFAULTS.same_layer is False
    for fn, arg in ((heads.head_attributions, "include_same_layer"), (heads.n_candidate_heads, "include_same_layer"),
                    (heads.attribute_neurons, "include_same_layer"), (held_out.held_out_set, "include_same_layer")):
        assert inspect.signature(fn).parameters[arg].default is False, fn.__name__


# ------------------------------------------------------------------------------------------ step 2: the 100-token cut


def test_a_prompt_of_exactly_max_tokens_is_dropped():
    """The paper drops prompts of 100 tokens *or more* (BOS not counted). The search already stops at 99 document
    tokens, but re-tokenising a cut's decoded text can lengthen it, so the filter must hold on its own.
    Wrong edit seen failing: `cut["n_tokens"] > max_tokens` in prompts._kept_prompts."""
    entries = [{"doc": i, "position": 120, "activation": 2.0} for i in range(3)]
    cuts = [{"text": f"cut {n}", "activation": 1.9, "n_tokens": n, "passed": True} for n in (99, 100, 101)]
    kept = prompts._kept_prompts(entries, cuts, max_tokens=100, keep=20)
    assert [k["n_tokens"] for k in kept] == [99]


# -------------------------------------------------------------------------------- steps 5-6: the held-out documents


@pytest.mark.parametrize("model_name", ["organism", "organism-clean"])
def test_held_out_documents_are_never_training_documents(model_name):
    """E is measured on documents the explainer never saw. Wrong edit seen failing: `documents(held_out=True)`
    loading the "train" split."""
    settings = pipeline.resolve(load_settings({}, model=model_name), quiet=True)
    train = set(pipeline.documents(settings))
    test = pipeline.documents(settings, held_out=True)
    assert test and not train & set(test), f"{len(train & set(test))} held-out documents are training documents"


@pytest.mark.parametrize("rule", ["top3", "2sigma"])
def test_held_out_truth_uses_the_training_rule(monkeypatch, organism_model, rule):
    """The held-out ground truth must mean what step 3's positives meant. Wrong edit seen failing:
    pipeline._held_out_heads passing `rule=DEFAULTS.rule` to held_out_set instead of `settings.rule`."""
    seen: list[str] = []
    real = held_out.active_heads

    def spy(attr, rule_used=DEFAULTS.rule):
        seen.append(rule_used)
        return real(attr, rule_used)

    monkeypatch.setattr(held_out, "active_heads", spy)
    settings = pipeline.resolve(load_settings({}, model="organism", rule=rule, max_test_docs=40), quiet=True)
    neuron_list = [{"layer": 1, "neuron": n} for n in _planted_neurons(organism_model)][:1]
    held = pipeline.compute_held_out(settings, organism_model, neuron_list, {})
    assert seen and set(seen) == {rule}, f"held-out truth used {set(seen)} for a {rule} run"
    assert any(held["active"].values())


# ------------------------------------------------------------------------------------------ step 6: KS on pair means


def test_the_ks_test_compares_per_pair_means_not_prompts(monkeypatch):
    """The paper's KS test takes one value per pair and group. Wrong edit seen failing: `_ks` feeding every prompt's
    decrease (prob_normal - prob_ablated) instead of the per-pair means."""
    rng = np.random.default_rng(0)
    effects = []
    for i in range(6):
        n = 5 + i
        normal, ablated = rng.uniform(0.2, 0.9, n), rng.uniform(0.0, 0.5, n)
        active = [j % 2 == 0 for j in range(n)]
        effects.append({"layer": 1, "neuron": i, "head": 0, "head_layer": 0, "head_index": 0, "token": " a"}
                       | ablate._summarise(normal.tolist(), ablated.tolist(), active, None, None))
    monkeypatch.setattr(pipeline, "ablation_effects", lambda *a, **k: effects)
    monkeypatch.setattr(pipeline, "activity_matrix", lambda *a, **k: {})
    result = pipeline.compute_ablation(DEFAULTS, None, [], {"prompts": {}})
    expected = stats.ks_2samp([e["mean_decrease_active"] for e in effects], [e["mean_decrease_inactive"] for e in effects])
    assert result["ks"]["n_active"] == result["ks"]["n_inactive"] == len(effects), result["ks"]
    assert result["ks"]["statistic"] == pytest.approx(expected.statistic)
    assert result["ks"]["pvalue"] == pytest.approx(expected.pvalue)


# ------------------------------------------------------------------- heads in several layers: ablation and attribution


@pytest.fixture(scope="module")
def gpt2_fixture_model():
    from ctx_utils.fixtures import fixture_dir
    from ctx_utils.models import load_model

    return load_model(str(fixture_dir("gpt2")), device="cpu")


TEXTS = ["The cat sat on the mat for research purposes", "As early as the spring of that year, such"]


@pytest.mark.parametrize("head_layer", [0, 1])
def test_ablation_zeroes_the_pairs_own_head_layer(gpt2_fixture_model, head_layer):
    """A layer-2 neuron's candidate heads sit in layers 0 and 1, so `layer - 1` and `head_layer` are different heads.
    Wrong edit seen failing: ablation_effects zeroing `(pair["layer"] - 1, pair["head_index"])`."""
    model = gpt2_fixture_model
    token = model.tokenizer.decode(model.to_tokens(" the", prepend_bos=False)[0, :1])
    pair = {"layer": 2, "neuron": 7, "token": token, "head": head_layer * model.cfg.n_heads + 1,
            "head_layer": head_layer, "head_index": 1}
    activity = {"2.7": [[True] * (2 * model.cfg.n_heads)] * len(TEXTS)}
    effect = ablate.ablation_effects(model, [pair], {"2.7": TEXTS}, activity, batch_size=1)[0]
    target = ablate.token_id(model, token)
    own = ablate.token_probabilities(model, TEXTS, target, ablate_heads=[(head_layer, 1)])
    other = ablate.token_probabilities(model, TEXTS, target, ablate_heads=[(1 - head_layer, 1)])
    torch.testing.assert_close(torch.tensor(effect["prob_ablated"]), own.float(), atol=1e-6, rtol=1e-5)
    assert (own - other).abs().max() > 1e-6, "the two layers' heads should differ on this model"


# Attribution with heads in several layers: tests/test_architectures.py::test_head_attributions_equal_plain_cache_and_
# hugging_face reads a layer-2 neuron whose candidate heads sit in layers 0 and 1, per layer, against the full cache
# and Hugging Face (seen failing when head_attributions read layer 0's z for every head layer).


# ----------------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def organism_model():
    from ctx_utils.models import load_model

    return load_model("organism", device="cpu")


def _planted_neurons(model) -> list[int]:
    """The layer-1 neurons that write the organism's planted tokens most (step 1's congruence, in one line)."""
    from ctx_utils.organism import answer_key

    truth = answer_key.load_answer_key("organism")
    tokens = sorted(answer_key.learned_tokens(truth))
    return [int((model.W_out[1] @ model.W_U[:, ablate.token_id(model, t)]).argmax()) for t in tokens]

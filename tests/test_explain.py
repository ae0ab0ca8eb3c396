"""The paper's explainer and classifier prompts, and the LLM / offline dispatch.

The October-2023 prompts are checked byte-for-byte against the requests the authors actually sent
(``tests/data/paper-data-raw``: their API request/response files for three GPT-2-small neurons).
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import asdict, dataclass

import pytest
from conftest import PAPER_RAW
from fake_openai_server import FakeOpenAIServer

import ctx_utils
from ctx_utils.explain import (
    HeadExplanation,
    UnusableExplanations,
    classification_prompt,
    classify_prompt,
    connect_llm,
    explain_head,
    explain_pairs,
    explanation_prompt,
)
from ctx_utils.held_out import held_out_set
from ctx_utils.prompts import find_activating_prompts
from ctx_utils.score import score_explanations
from ctx_utils.llm import LLMClient, LLMNotConfigured
from ctx_utils.paper_data import SHIPPED_DIR

CLEAN = SHIPPED_DIR / "gpt2-small"  # the shipped copy
RAW = PAPER_RAW / "gpt2-small" / "experiment_data"  # the authors' files for three of its neurons
RAW_NEURONS = {(9, 1360), (10, 1687), (11, 2957)}


def jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sent_prompts(pattern: str) -> set[str]:
    """The user messages of every request in the authors' result files matching ``pattern``."""
    return {row[0]["messages"][0]["content"] for path in RAW.glob(pattern) for row in jsonl(path)}


@pytest.fixture(autouse=True)
def no_llm_environment(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CTX_LLM_MODEL", "CTX_LLM_CACHE", "CTX_LLM_TOKEN_BUDGET"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------ the paper's prompts


def test_oct2023_explanation_prompts_equal_the_authors_requests():
    sent = sent_prompts("5_head_explanations/*_results.jsonl")
    rows = [r for r in jsonl(CLEAN / "explanations.jsonl") if (r["layer"], r["neuron"]) in RAW_NEURONS]
    built = [explanation_prompt(r["token"], r["positive_examples"], r["negative_examples"], "oct2023") for r in rows]
    assert len(rows) == 8
    assert all(p in sent for p in built), "an explanation prompt differs from what the authors sent"
    assert any(r["n_negative"] == 0 for r in rows)  # the empty-list case is among them


def test_oct2023_classification_prompts_equal_the_authors_requests():
    sent = sent_prompts("6_explanation_eval/*_results.jsonl")
    explanations = {(r["layer"], r["neuron"], r["head"]): r for r in jsonl(CLEAN / "explanations.jsonl")}
    test_prompts = {(n["layer"], n["neuron"]): n["prompts"] for n in json.loads((CLEAN / "test_prompts.json").read_text())["neurons"]}
    rows = [r for r in jsonl(CLEAN / "classifications.jsonl") if (r["layer"], r["neuron"]) in RAW_NEURONS]
    for row in rows:
        pair = explanations[(row["layer"], row["neuron"], row["head"])]
        example = test_prompts[(row["layer"], row["neuron"])][row["test_prompt_idx"]] + pair["token"]
        prompt = classification_prompt(pair["explanation"], example, "oct2023")
        assert prompt in sent, f"classification prompt differs for {row}"
    assert len(rows) == 160


def test_feb2024_prompts_follow_the_final_template():
    oct_prompt = explanation_prompt(" only", ["for research purposes only"], ["the only"], "oct2023")
    feb_prompt = explanation_prompt(" only", ["for research purposes only"], ["the only"], "feb2024")
    shared = oct_prompt.removesuffix("Explanation: This attention head is active when the document")
    assert feb_prompt == shared + "In two to three sentences, suggest when the attention head is active."
    assert classification_prompt("It fires on\n'purposes'.", "for research purposes only", "feb2024") == (
        "It fires on 'purposes'.\n"
        "Is the given example an active example? (Yes/No)\n"
        "\n"
        'Example: """\n'
        "for research purposes only\n"
        '"""\n'
        "Answer: "
    )


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="oct2023"):
        explanation_prompt(" x", ["a"], ["b"], variant="2025")


# ------------------------------------------------------------------------------------------------ dispatch


@dataclass
class StandInExplanation:
    """A stand-in for ctx_utils.offline_explainer's OfflineExplanation: the rule is one marker word."""

    text: str
    marker: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> StandInExplanation:
        return cls(**data)


def stand_in_explain(positive: list[str], negative: list[str], token: str) -> StandInExplanation:
    words = set.intersection(*(set(p.split()) for p in positive)) - {w for n in negative for w in n.split()}
    marker = max(sorted(words), key=len)  # "purposes" rather than "for"
    return StandInExplanation(text=f"the prompt contains {marker!r}", marker=marker)


@pytest.fixture
def offline_stand_in(monkeypatch):
    """Replace ctx_utils.offline_explainer (written elsewhere) by a one-word rule with the same API."""
    module = types.SimpleNamespace(
        OfflineExplanation=StandInExplanation,
        explain_offline=stand_in_explain,
        classify_offline=lambda explanation, prompt: explanation.marker in prompt.split(),
    )
    monkeypatch.setitem(sys.modules, "ctx_utils.offline_explainer", module)
    monkeypatch.setattr(ctx_utils, "offline_explainer", module, raising=False)
    return module


PROMPTS = {
    "1.7": [
        {"text": "for research purposes", "activation": 3.0},
        {"text": "for teaching purposes", "activation": 2.9},
        {"text": "the one and", "activation": 2.0},
        {"text": "one of the", "activation": 1.5},
    ]
}
PAIRS = [{"layer": 1, "neuron": 7, "token": " only", "head": 2, "head_layer": 0, "head_index": 2,
          "active_fraction": 0.5, "positive": [0, 1], "negative": [2, 3]}]
HELD_OUT = {"1.7": ["for legal purposes", "one two three", "for private purposes", "the other"]}
ACTIVE = {"1.7": [[2, 0], [1], [2], [3]]}  # head 2 is active on held-out prompts 0 and 2


def test_connect_llm_without_key_is_offline():
    assert connect_llm() is None


def test_offline_path_explains_and_scores(offline_stand_in):
    explained = explain_pairs(PAIRS, PROMPTS, llm=None)
    assert explained[0]["source"] == "offline" and explained[0]["rule"]["marker"] == "purposes"
    scored = score_explanations(explained, HELD_OUT, ACTIVE, llm=None)
    assert scored[0]["E"] == 1.0 and scored[0]["answers"] == [True, False, True, False]
    assert scored[0]["truth"] == [True, False, True, False] and scored[0]["n_unparsed"] == 0


def test_llm_path_sends_the_papers_prompts(tmp_path):
    replies = iter(["contains 'purposes'.", "Yes", "Yes", "Maybe", "no"])
    with FakeOpenAIServer(answer=lambda p: next(replies)) as server:
        llm = LLMClient(api_key="sk-test-SECRET123", base_url=server.base_url, model="fake", cache_dir=tmp_path, backoff_s=0.01)
        explained = explain_pairs(PAIRS, PROMPTS, llm=llm, variant="oct2023")
        scored = score_explanations(explained, HELD_OUT, ACTIVE, llm=llm)
        first = server.requests[0]
        assert first["max_tokens"] == 200
        assert first["messages"][0]["content"] == explanation_prompt(
            " only", ["for research purposes only", "for teaching purposes only"], ["the one and only", "one of the only"]
        )
        assert [r["max_tokens"] for r in server.requests[1:]] == [1, 1, 1, 1]
        assert server.requests[1]["messages"][0]["content"] == classification_prompt(
            "contains 'purposes'.", "for legal purposes only"
        )
    assert explained[0]["source"] == "llm:fake" and explained[0]["text"] == "contains 'purposes'."
    assert scored[0]["answers"] == [True, True, None, False]
    assert scored[0]["n_unparsed"] == 1  # "Maybe" is counted, and left out of E
    assert scored[0]["E"] == pytest.approx(0.75)  # truth [T, F, (T), F]: TPR 1/1, TNR 1/2


def test_llm_explanation_cannot_be_classified_offline():
    explanation = HeadExplanation(text="contains x", source="llm:fake", variant="oct2023")
    with pytest.raises(LLMNotConfigured, match="OPENAI_API_KEY"):
        classify_prompt(explanation, "a prompt", " only", llm=None)


def test_explain_head_needs_a_positive_example(offline_stand_in):
    with pytest.raises(ValueError, match="at least one prompt"):
        explain_head([], ["b"], " only")


def test_held_out_set_gives_ground_truth_aligned_with_prompts(tiny_model):
    words = "the cat sat on mat for research purposes only as early such".split()
    docs = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(24)]
    neurons = [{"layer": 1, "neuron": n, "token": " only"} for n in range(4)]
    held = held_out_set(tiny_model, neurons, find_activating_prompts(tiny_model, docs, neurons, keep=5, progress=False), {},
                        rule="top3")
    prompts, active = held["prompts"], held["active"]
    assert sorted(prompts) == sorted(active) == ["1.0", "1.1", "1.2", "1.3"]
    assert any(prompts.values()), "no neuron got a held-out prompt"
    for key in prompts:
        assert len(active[key]) == len(prompts[key]) <= 5
        assert all(len(heads) == 3 and all(0 <= h < 4 for h in heads) for heads in active[key])  # top 3 of layer 0's 4 heads


def test_the_real_offline_explainer_plugs_in():
    explained = explain_pairs(PAIRS, PROMPTS, llm=None)  # ctx_utils.offline_explainer itself, no stand-in
    assert explained[0]["source"] == "offline" and explained[0]["text"].strip()
    json.dumps(explained)  # the rule is stored as plain JSON in explanations.json
    scored = score_explanations(explained, HELD_OUT, ACTIVE, llm=None)
    assert 0.0 <= scored[0]["E"] <= 1.0 and len(scored[0]["answers"]) == 4


def test_an_empty_llm_explanation_is_reported_with_its_pair_and_not_cached(tmp_path):
    """Issue 11: an empty answer used to be cached, and notebook 04 failed on every rerun naming no pair."""
    second_pair = {**PAIRS[0], "head": 3, "head_index": 3, "positive": [0, 2], "negative": [1, 3]}
    replies = iter(["contains 'purposes'.", "", "contains 'purposes'."])
    with FakeOpenAIServer(answer=lambda p: next(replies)) as server:
        def llm():
            return LLMClient(api_key="x", base_url=server.base_url, model="fake", cache_dir=tmp_path, backoff_s=0.01)

        with pytest.raises(UnusableExplanations) as info:
            explain_pairs(PAIRS + [second_pair], PROMPTS, llm=llm())
        assert info.value.pairs == [(1, 7, 3)]
        message = str(info.value)
        assert "1 of 2 pairs: (layer 1, neuron 7, head 3; finish_reason 'stop')" in message
        assert "not cached" in message and "unset OPENAI_API_KEY" in message
        assert len(list(tmp_path.glob("*.json"))) == 1  # the good answer only
        explained = explain_pairs(PAIRS + [second_pair], PROMPTS, llm=llm())  # the rerun asks the empty one again
        assert len(server.requests) == 3
    assert [r["text"] for r in explained] == ["contains 'purposes'.", "contains 'purposes'."]


def test_a_held_out_prompt_that_repeats_a_training_prompt_of_its_neuron_is_removed_and_counted(tiny_model):
    words = "the cat sat on mat for research purposes only as early such".split()
    docs = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(24)]
    neurons = [{"layer": 1, "neuron": n, "token": " only"} for n in range(2)]
    found = find_activating_prompts(tiny_model, docs, neurons, keep=5, progress=False)
    everything = held_out_set(tiny_model, neurons, found, {}, rule="top3")
    assert everything["removed"] == {"1.0": 0, "1.1": 0}
    training = {"1.0": everything["prompts"]["1.0"][:2], "1.1": []}  # two of neuron 1.0's held-out prompts, as if trained on
    held = held_out_set(tiny_model, neurons, found, training, rule="top3")
    seen = {e["text"] for e in training["1.0"]}
    assert held["removed"]["1.0"] == sum(e["text"] in seen for e in everything["prompts"]["1.0"]) >= 2
    assert not seen & {e["text"] for e in held["prompts"]["1.0"]}, "a training prompt of the neuron was kept"
    assert len(held["active"]["1.0"]) == len(held["prompts"]["1.0"]), "ground truth no longer aligned with the prompts"
    assert held["prompts"]["1.1"] == everything["prompts"]["1.1"] and held["removed"]["1.1"] == 0, \
        "another neuron's prompts are not its training prompts"

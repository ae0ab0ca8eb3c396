"""The model organism: its corpus is reproducible, its answer key is honest, the shipped model learned it."""

from __future__ import annotations

import json

import pytest
import torch

from ctx_utils.models import CLEAN_ORGANISM_DIR, load_model
from ctx_utils.organism.corpus import generate_corpus, ground_truth, planted_prompts


def test_corpus_and_ground_truth_are_reproducible_and_held_out():
    assert generate_corpus("train", seed=0) == generate_corpus("train", seed=0)
    assert ground_truth(seed=0) == ground_truth(seed=0)
    train, test = generate_corpus("train"), generate_corpus("test")
    assert generate_corpus("train", seed=1) != train
    overlap = set(train) & set(test)
    assert len(overlap) < 0.01 * len(test), f"{len(overlap)} test documents also appear in train"
    lengths = [len(doc.split()) for doc in train]
    assert 20 <= min(lengths) and max(lengths) <= 100, (min(lengths), max(lengths))


def test_bad_split_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        generate_corpus("validation")


def test_ground_truth_shape_mirrors_the_papers_case_studies():
    planted = ground_truth()["planted"]
    assert len(planted) >= 4
    for entry in planted:
        assert entry["token"].startswith(" ") and len(entry["token"]) > 2, entry["token"]
        assert entry["distractors"], f"{entry['token']!r} has no distractor"
        for ctx in entry["contexts"] + entry["distractors"]:
            assert ctx["examples"], ctx["name"]
            assert all(ex.endswith(entry["trigger"]) for ex in ctx["examples"]), ctx["name"]
    kinds = [{c["kind"] for c in entry["contexts"]} for entry in planted]
    assert any(k >= {"local", "topic"} for k in kinds), "no token is reachable from two kinds of context"


def test_shipped_ground_truth_equals_a_fresh_one():
    shipped = json.loads((CLEAN_ORGANISM_DIR / "ground_truth.json").read_text(encoding="utf-8"))
    shipped.pop("schema_version")
    assert shipped == json.loads(json.dumps(ground_truth(shipped["seed"])))


@pytest.mark.parametrize("split", ["train", "test"])
def test_markers_are_in_every_prompt_of_their_context_and_no_other(split):
    prompts = planted_prompts(split)
    for entry in ground_truth()["planted"]:
        for ctx in entry["contexts"]:
            mine = [p.prompt for p in prompts if p.context == ctx["name"]]
            others = [p.prompt for p in prompts if p.context != ctx["name"]]
            # enough prompts that "top-1 in ≥ 95 %" means something (one miss in 40 is 97.5 %)
            assert len(mine) >= 40, f"{ctx['name']} has only {len(mine)} prompts in {split}"
            assert all(ctx["marker"] in " " + p for p in mine), f"{ctx['marker']!r} missing from a {ctx['name']} prompt"
            leaks = [p for p in others if ctx["marker"] in " " + p]
            assert not leaks, f"{ctx['marker']!r} found outside {ctx['name']}: {leaks[:2]}"
        for ctx in entry["distractors"]:
            mine = [p.prompt for p in prompts if p.context == ctx["name"]]
            assert mine and all(p.endswith(entry["trigger"]) for p in mine)


@pytest.fixture(scope="module")
def organism():
    return load_model("organism-clean", device="cpu")


@torch.no_grad()
def top1_rate(model, prompts: list[str], token: str, batch_size: int = 64) -> float:
    """Share of prompts after which ``token`` is the model's top-1 next token."""
    token_id = model.to_single_token(token)
    hits = 0
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        last = torch.tensor([model.to_tokens(p).shape[1] - 1 for p in chunk])
        logits = model(model.to_tokens(chunk))  # [batch, pos, vocab], right-padded
        hits += (logits[torch.arange(len(chunk)), last].argmax(-1) == token_id).sum().item()
    return hits / len(prompts)


def test_shipped_organism_predicts_planted_tokens_only_in_their_contexts(organism):
    prompts = planted_prompts("test")  # held out: the model never saw these documents
    for entry in ground_truth()["planted"]:
        for ctx in entry["contexts"]:
            rate = top1_rate(organism, [p.prompt for p in prompts if p.context == ctx["name"]], entry["token"])
            assert rate >= 0.95, f"{entry['token']!r} is top-1 in only {rate:.1%} of {ctx['name']} prompts"
        for ctx in entry["distractors"]:
            rate = top1_rate(organism, [p.prompt for p in prompts if p.context == ctx["name"]], entry["token"])
            assert rate <= 0.05, f"{entry['token']!r} is top-1 in {rate:.1%} of {ctx['name']} prompts (want ≈ 0)"

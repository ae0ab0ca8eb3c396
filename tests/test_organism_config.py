"""The organism trainer's configs, the realistic organism's corpus and wiring, and its causal answer key.

* configs round-trip through JSON, and a trained folder's ``organism_config.json`` regenerates its corpus;
* the realistic corpus has what the design promises (a family of topic words, an inhibiting context, both
  contexts at once, markers of other tokens); the null control's token ignores the context;
* the roles' projection enforces the wiring on random weights, and the shipped weights are a fixed point;
* the shipped causal key is what :func:`measure_causal_key` measures now, and says what the design intends.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest
import torch

from ctx_utils.models import CLEAN_ORGANISM_DIR, ORGANISM_DIR
from ctx_utils.organism.config import CLEAN, NULL, PRESETS, REALISTIC, HeadRole, OrganismConfig, load_config
from ctx_utils.organism.corpus import CONFIG_FILE, CorpusConfig, config_for, generate_corpus, planted_prompts

REALISTIC_DIR = ORGANISM_DIR  # the default organism is the realistic one
needs_realistic = pytest.mark.skipif(
    not (REALISTIC_DIR / "ground_truth.json").exists(),
    reason=f"{REALISTIC_DIR} is not trained: python -m ctx_utils.organism.train --config realistic --out {REALISTIC_DIR}",
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_configs_round_trip_through_json(name):
    config = PRESETS[name]
    assert OrganismConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert CorpusConfig.from_dict(json.loads(json.dumps(config.corpus.to_dict()))) == config.corpus


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown head role"):
        HeadRole("lookup", ("up/local",))
    with pytest.raises(ValueError, match="read no"):
        HeadRole("free", ("up/local",))
    with pytest.raises(ValueError, match="one role per head"):
        replace(REALISTIC, heads=REALISTIC.heads[:3])
    with pytest.raises(ValueError, match="Unknown organism config"):
        load_config("no-such-preset")
    with pytest.raises(ValueError, match="Unknown corpus setting"):
        CorpusConfig.from_dict({**CLEAN.corpus.to_dict(), "n_validation": 5})


def test_the_clean_folder_has_no_config_and_its_corpus_is_the_default():
    assert config_for(CLEAN_ORGANISM_DIR) is None  # trained before configs existed: the default corpus, seed 0
    assert generate_corpus("test", 0) == generate_corpus("test", 0, CorpusConfig())


def test_realistic_corpus_has_the_promised_features():
    prompts = planted_prompts("train", 0, REALISTIC.corpus)
    kinds = Counter(p.kind for p in prompts)
    assert kinds["both"] > 50 and kinds["inhibited"] > 50, kinds
    up_topic = [p.prompt for p in prompts if p.context == "up/topic"]
    for word in ("marathon", "hike", "climb"):  # a context made by a family of words
        assert sum(word in p.split() for p in up_topic) > 30, word
    inhibited = [p for p in prompts if p.kind == "inhibited"]
    assert all(p.token == " away" and "tomorrow" in p.prompt.split() and not p.token_follows for p in inhibited)
    others = {plant.token: {w.strip() for q in REALISTIC.corpus.plants if q is not plant for w in q.topic_words}
              for plant in REALISTIC.corpus.plants}
    mixed = [p for p in prompts if others[p.token] & set(p.prompt.split())]
    assert len(mixed) > 0.15 * len(prompts), "another token's marker is in too few prompts"
    assert set(generate_corpus("train", 0, REALISTIC.corpus)).isdisjoint(generate_corpus("train", 0)[:100])


def test_null_control_token_ignores_the_context():
    prompts = planted_prompts("train", 0, NULL.corpus)
    rates = {}
    for kind in ("local", "topic", "distractor", "both"):
        mine = [p.token_follows for p in prompts if p.kind == kind]
        rates[kind] = sum(mine) / len(mine)
    assert max(rates.values()) - min(rates.values()) < 0.15, rates
    assert sum(p.token_follows for p in prompts if p.kind == "inhibited") > 20, "the null control still inhibits"


def _roles_model(seed: int = 1):
    from ctx_utils.organism.roles import build_roles, init_roles
    from ctx_utils.organism.train import build_model, build_tokenizer, planted_token_ids

    tokenizer = build_tokenizer(corpus=REALISTIC.corpus)
    model = build_model(len(tokenizer), seed, REALISTIC.hparams)
    wiring = build_roles(tokenizer, REALISTIC, planted_token_ids(tokenizer, REALISTIC.corpus.plants))
    init_roles(model, wiring, 0.5)
    return model, wiring


@torch.no_grad()
def test_roles_projection_enforces_the_wiring_on_random_weights():
    from ctx_utils.organism.roles import apply_roles
    from ctx_utils.organism.wiring import _output_rows, _value_columns, slot_dims

    model, wiring = _roles_model()
    for p in model.parameters():
        p.add_(0.1 * torch.randn_like(p))  # knock every weight off the wiring
    apply_roles(model, wiring)
    r = wiring.reserved
    attn = model.transformer.h[0].attn
    for head, (role, slots) in enumerate(zip(wiring.roles, wiring.head_slots)):
        values = attn.c_attn.weight[:, _value_columns(model, head)]  # [d_model, d_head]
        own = [d for s in slots for d in slot_dims(s)]
        if role == "free":
            assert values[:r].abs().max() == 0, f"free head {head} reads a slot"
        else:
            assert values[[d for d in range(values.shape[0]) if d not in own]].abs().max() == 0, f"head {head} reads more than its slots"
        writes = attn.c_proj.weight[_output_rows(model, head)]  # [d_head, d_model]
        outside = [d for d in range(writes.shape[1]) if (d in wiring.decoy_range) != (role == "decoy")]
        assert writes[:, outside].abs().max() == 0, f"{role} head {head} writes outside its dimensions"
    n_planted = len(wiring.planted)
    assert model.transformer.h[1].mlp.c_fc.weight[:r, :n_planted].abs().max() == 0, "a planted neuron reads a slot"
    (a, b), = wiring.tied
    assert torch.equal(attn.c_proj.weight[_output_rows(model, a)], attn.c_proj.weight[_output_rows(model, b)])


@needs_realistic
def test_shipped_realistic_folder_says_what_it_was_trained_on():
    assert load_config(REALISTIC_DIR / CONFIG_FILE) == REALISTIC
    assert config_for(REALISTIC_DIR) == (REALISTIC.corpus, 0)
    training = json.loads((REALISTIC_DIR / "training.json").read_text())
    assert training["config"] == "realistic" and training["seed"] == 0
    assert "thread" in training["sha256_platform"]


@needs_realistic
@torch.no_grad()
def test_shipped_realistic_weights_satisfy_the_roles_exactly():
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from ctx_utils.organism.roles import apply_roles, build_roles
    from ctx_utils.organism.train import planted_token_ids

    model, tokenizer = GPT2LMHeadModel.from_pretrained(REALISTIC_DIR), AutoTokenizer.from_pretrained(REALISTIC_DIR)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_roles(model, build_roles(tokenizer, REALISTIC, planted_token_ids(tokenizer, REALISTIC.corpus.plants)))
    for name, value in model.state_dict().items():
        assert torch.allclose(value, before[name], atol=1e-6), f"{name} is off the wiring"


@pytest.fixture(scope="module")
def measured_key():
    from ctx_utils.organism.answer_key import measure_causal_key

    return measure_causal_key(REALISTIC_DIR)


@needs_realistic
def test_stored_causal_key_is_what_ablation_measures_now(measured_key):
    stored = json.loads((REALISTIC_DIR / "ground_truth.json").read_text())["causal_key"]
    assert measured_key["pairs"] == stored["pairs"] and measured_key["inhibitory_pairs"] == stored["inhibitory_pairs"]
    for new, old in zip(measured_key["neurons"], stored["neurons"]):
        assert {k: new[k] for k in ("carriers", "needed_everywhere", "inhibitors")} == {k: old[k] for k in ("carriers", "needed_everywhere", "inhibitors")}
        for h_new, h_old in zip(new["heads"], old["heads"]):
            for what in ("act_drop", "prob_drop"):
                for group, value in h_old[what].items():
                    assert abs(h_new[what][group] - value) < 1e-3, (new["token"], h_new["head"], what, group)


@needs_realistic
def test_causal_key_shows_the_designed_circuit(measured_key):
    """What the roles allow is what training made of them: measured, so this can fail after a retrain."""
    roles = REALISTIC.heads
    carriers = {(k["context"], k["head"]) for k in measured_key["pairs"]}
    by_role = lambda role: {h for h, r in enumerate(roles) if r.role == role}  # noqa: E731
    assert all(set(n["needed_everywhere"]) == by_role("trigger") for n in measured_key["neurons"]), "the trigger head is not needed everywhere"
    assert not {h for _, h in carriers} & (by_role("decoy") | by_role("free")), f"a decoy or free head carries a context: {sorted(carriers)}"
    tied = {h for h, r in enumerate(roles) if r.tie}
    assert {("only/topic", h) for h in tied} <= carriers, "the redundant pair does not both carry only/topic"
    assert {k["head"] for k in measured_key["inhibitory_pairs"]} == by_role("inhibitor")
    contexts = {f"{p.token.strip()}/{kind}" for p in REALISTIC.corpus.plants for kind in ("local", "topic")}
    assert {c for c, _ in carriers} == contexts, f"not every context has a carrier: {sorted(carriers)}"


def test_trainer_takes_a_seed_and_a_config_and_saves_them(tmp_path):
    """Two optimiser steps of a tiny realistic organism: the folder records its config, seed and hash."""
    import hashlib

    from ctx_utils.organism.train import train

    tiny = replace(REALISTIC, name="tiny", corpus=replace(REALISTIC.corpus, n_train=64, n_test=300),
                   hparams={**REALISTIC.hparams, "epochs": 1})
    report = train(tmp_path, seed=3, config=tiny)
    assert load_config(tmp_path / CONFIG_FILE) == tiny
    assert config_for(tmp_path) == (tiny.corpus, 3)
    assert report["seed"] == 3 and report["config"] == "tiny" and report["steps"] == 2
    assert report["model_sha256"] == hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    assert [h["role"] for h in truth["heads"]] == [r.role for r in REALISTIC.heads]
    assert {n["token"] for n in truth["causal_key"]["neurons"]} == {p.token for p in REALISTIC.corpus.plants}

"""The organism's wiring (ctx_utils/organism/wiring.py) holds: exactly in the shipped weights, and in behaviour.

* the shipped weights are a fixed point of the projection (``apply_wiring`` changes nothing), so every
  constraint the module documents holds exactly;
* a layer-0 head whose marker is absent writes exactly nothing, and a head whose marker is present does;
* only layer-1 neuron ``i`` writes planted token ``i``.
"""

from __future__ import annotations

import json

import pytest
import torch

from ctx_utils.models import CLEAN_ORGANISM_DIR as ORGANISM_DIR  # the wiring is the clean organism's
from ctx_utils.organism.corpus import PLANTS, context_markers, planted_prompts
from ctx_utils.organism.train import organism_wiring
from ctx_utils.organism.wiring import apply_wiring, init_wiring, slot_dims

if not (ORGANISM_DIR / "config.json").exists():
    pytest.skip(f"The organism is not in {ORGANISM_DIR} yet: train it with `python -m ctx_utils.organism.train`.", allow_module_level=True)


@pytest.fixture(scope="module")
def hf_organism():
    from transformers import AutoTokenizer, GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(ORGANISM_DIR), AutoTokenizer.from_pretrained(ORGANISM_DIR)


def test_shipped_weights_satisfy_the_wiring_exactly(hf_organism):
    model, tokenizer = hf_organism
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_wiring(model, organism_wiring(tokenizer))
    for name, value in model.state_dict().items():
        assert torch.allclose(value, before[name], atol=1e-6), f"{name} is off the wiring"


def test_projection_enforces_the_constraints_on_random_weights():
    from ctx_utils.organism.train import HPARAMS, build_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), seed=1)
    wiring = organism_wiring(tokenizer)
    init_wiring(model, wiring, 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # knock every weight off the wiring
    apply_wiring(model, wiring)
    r, d_head = wiring.reserved, HPARAMS["d_model"] // HPARAMS["n_heads"]
    wte, attn = model.transformer.wte.weight, model.transformer.h[0].attn
    plain = [t for t in range(len(tokenizer)) if t not in wiring.slot_of]
    assert wte[plain, :r].abs().max() == 0 and wte[plain].mean(-1).abs().max() < 1e-6
    for head in range(wiring.n_contexts):
        values = attn.c_attn.weight[:, 2 * HPARAMS["d_model"] + head * d_head :][:, :d_head]  # [d_model, d_head]
        others = [d for d in range(HPARAMS["d_model"]) if d not in slot_dims(head)]
        assert values[others].abs().max() == 0, f"head {head} reads more than its own slot"
    assert attn.c_proj.weight[:, :r].abs().max() == 0, "a head writes into a reserved dimension"
    mlp_out = model.transformer.h[1].mlp.c_proj.weight  # [d_mlp, d_model]
    token_dims = [d for slot in wiring.token_slots for d in slot_dims(slot)]
    assert mlp_out[len(PLANTS) :, token_dims].abs().max() == 0, "a non-planted neuron writes a planted token"


@torch.no_grad()
def test_a_head_writes_only_when_its_marker_is_there():
    from ctx_utils.models import load_model

    model = load_model("organism-clean", device="cpu")
    truth = json.loads((ORGANISM_DIR / "ground_truth.json").read_text())
    heads = {c["name"]: c["head_index"] for entry in truth["planted"] for c in entry["contexts"]}
    prompts = planted_prompts("test")
    for name, word in context_markers():
        head = heads[name]
        mine = [p.prompt for p in prompts if p.context == name][:10]
        _, cache = model.run_with_cache(mine, names_filter="blocks.0.attn.hook_z")
        z = cache["blocks.0.attn.hook_z"][:, :, head]  # [batch, pos, d_head]
        assert z.norm(dim=-1).amax(-1).min() > 0.1, f"head {head} is silent on its own context {name}"
        without = [p.prompt for p in prompts if word.strip() not in p.prompt.split()][:10]
        _, cache = model.run_with_cache(without, names_filter="blocks.0.attn.hook_z")
        assert cache["blocks.0.attn.hook_z"][:, :, head].abs().max() < 1e-5, f"head {head} writes without {word!r}"

"""Step 3 (ctx_utils.heads): head → neuron attribution, active rules, pair selection — on a tiny random GPT-2
(conftest's ``tiny_model``: 2 layers × 4 heads, d_mlp 128, context window 64).

The attribution is checked against two independent TransformerLens computations: each head's residual output
from ``cache.stack_head_results()``, and each layer's whole attention output (``hook_attn_out``), both dotted
with the neuron's input weights.
"""

from __future__ import annotations

import pytest
import torch

from ctx_utils import heads

PROMPTS = [
    " the cat sat on the mat",
    " such cat",
    " for research purposes only as early as",
    " such a cat sat on a mat for research purposes",
    " the",
]


@pytest.fixture
def model(tiny_model):
    return tiny_model


def reference_attributions(model, text: str, layer: int, neuron: int, n_head_layers: int) -> torch.Tensor:
    """Per-head residual outputs at the last token (stack_head_results = z @ W_O per head) dotted with W_in."""
    tokens = model.to_tokens(text, prepend_bos=True)
    _, cache = model.run_with_cache(tokens)
    results = cache.stack_head_results(layer=n_head_layers, pos_slice=-1)  # [n_head_layers * n_heads, 1, d_model]
    return results[:, 0] @ model.W_in[layer][:, neuron]


@pytest.mark.parametrize("layer,neuron,same", [(1, 5, False), (1, 127, True), (0, 3, True)])
def test_attribution_equals_stack_head_results(model, layer, neuron, same):
    attr = heads.head_attributions(model, PROMPTS, layer, neuron, include_same_layer=same, batch_size=2)
    n_head_layers = layer + int(same)
    assert attr.shape == (len(PROMPTS), n_head_layers * model.cfg.n_heads)
    for i, text in enumerate(PROMPTS):
        expected = reference_attributions(model, text, layer, neuron, n_head_layers)
        torch.testing.assert_close(attr[i], expected, atol=1e-5, rtol=1e-4)


def test_layer_sum_plus_bias_equals_attention_output(model):
    """Sum of a layer's head attributions + b_O · w_in = that layer's attention output · w_in (hook_attn_out)."""
    layer, neuron = 1, 9
    attr = heads.head_attributions(model, PROMPTS, layer, neuron, include_same_layer=True)
    w_in = model.W_in[layer][:, neuron]
    n_heads = model.cfg.n_heads
    for i, text in enumerate(PROMPTS):
        _, cache = model.run_with_cache(model.to_tokens(text))
        for l in range(layer + 1):
            expected = cache[f"blocks.{l}.hook_attn_out"][0, -1] @ w_in
            got = attr[i, l * n_heads : (l + 1) * n_heads].sum() + model.b_O[l] @ w_in
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_batched_with_padding_equals_one_by_one(model):
    batched = heads.head_attributions(model, PROMPTS, 1, 11, include_same_layer=True, batch_size=16)
    single = torch.cat([heads.head_attributions(model, [t], 1, 11, include_same_layer=True) for t in PROMPTS])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_literal_bos_inside_a_prompt_does_not_move_the_last_position(model):
    """GPT-2's pad = BOS: counting non-pad tokens (the authors' rule) would misplace this prompt's end."""
    text = " the cat<|endoftext|> sat on"
    tokens, last = heads.tokenize_prompts(model, [text, " mat"])
    assert tokens[0].tolist() == [0, 1, 2, 0, 3, 4] and last.tolist() == [5, 1]  # non-pad count would say 4
    attr = heads.head_attributions(model, [text, " mat"], 1, 4, include_same_layer=True)
    torch.testing.assert_close(attr[0], reference_attributions(model, text, 1, 4, 2), atol=1e-5, rtol=1e-4)


def test_top3_marks_the_three_largest():
    attr = torch.tensor([[0.1, 5.0, -2.0, 3.0, 4.0, 0.0], [9.0, 8.0, 7.0, -1.0, -2.0, -3.0]])
    active = heads.active_heads(attr, "top3")
    assert active.tolist() == [[False, True, False, True, True, False], [True, True, True, False, False, False]]


def test_2sigma_uses_the_unbiased_std():
    row = torch.tensor([[0.0, 0.0, 0.0, 0.0, -0.4, 1.0]])
    biased = row > row.mean() + 2 * row.std(unbiased=False)
    assert biased[0, -1], "premise: with the population std the last head would be active"
    assert not heads.active_heads(row, "2sigma").any()
    outlier = torch.tensor([[0.0, 0.1, -0.1, 0.0, 0.05, 3.0], [1.0, 1.1, 0.9, 1.0, 1.05, 0.95]])
    assert heads.active_heads(outlier, "2sigma").tolist() == [[False] * 5 + [True], [False] * 6]


def test_select_pairs_bounds():
    n = 20
    counts = [4, 5, 6, 15, 16, 20, 0]  # active prompts per head, out of 20
    active = torch.zeros(n, len(counts), dtype=torch.bool)
    for head, c in enumerate(counts):
        active[:c, head] = True
    assert heads.select_pairs(active) == [(1, 0.25), (2, 0.3), (3, 0.75)]
    assert [h for h, _ in heads.select_pairs(active, band=">25")] == [2, 3, 4, 5]


def test_pairs_partition_prompts(model):
    neurons = [
        {"layer": 1, "neuron": 7, "token": " mat"},
        {"layer": 1, "neuron": 40, "token": " only"},
        {"layer": 1, "neuron": 8, "token": " such"},  # no prompts: skipped
    ]
    prompts = {"1.7": [{"text": t, "activation": 1.0} for t in PROMPTS], "1.40": [{"text": t} for t in PROMPTS[:4]]}
    attributions = heads.attribute_neurons(model, neurons, prompts, include_same_layer=True)
    pairs = heads.pairs_from_attributions(model, neurons, attributions, rule="top3", band=">25")
    assert pairs, "top-3 of 8 heads over 4-5 prompts must make some head active on > 25 % of prompts"
    for pair in pairs:
        label = f"{pair['layer']}.{pair['neuron']}"
        n = len(prompts[label])
        assert sorted(pair["positive"] + pair["negative"]) == list(range(n))
        assert pair["active_fraction"] == pytest.approx(len(pair["positive"]) / n)
        assert pair["head"] == pair["head_layer"] * model.cfg.n_heads + pair["head_index"] and pair["head_layer"] <= 1
        texts = [p["text"] for p in prompts[label]]
        attr = heads.head_attributions(model, texts, pair["layer"], pair["neuron"], include_same_layer=True)
        assert heads.active_heads(attr, "top3")[:, pair["head"]].nonzero().flatten().tolist() == pair["positive"]
    assert {(p["layer"], p["neuron"]) for p in pairs} <= {(1, 7), (1, 40)}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"layer": 2, "neuron": 0}, "Layer 2 is out of range"),
        ({"layer": -1, "neuron": 0}, "out of range"),
        ({"layer": 1, "neuron": 128}, "Neuron 128 is out of range"),
        ({"layer": 0, "neuron": 0}, "include_same_layer=True"),
        ({"layer": 1, "neuron": 0, "texts": []}, "No prompts"),
        ({"layer": 1, "neuron": 0, "texts": " the cat"}, "list of prompts"),
        ({"layer": 1, "neuron": 0, "texts": [" the", ""]}, "empty"),
        ({"layer": 1, "neuron": 0, "texts": [" the cat" * 40]}, "context window"),
        ({"layer": 1, "neuron": 0, "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_gives_clear_errors(model, kwargs, match):
    args = {"texts": PROMPTS, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        heads.head_attributions(model, **args)


def test_bad_rule_and_band():
    with pytest.raises(ValueError, match="Unknown rule"):
        heads.active_heads(torch.zeros(2, 4), "top5")
    with pytest.raises(ValueError, match="Unknown band"):
        heads.select_pairs(torch.zeros(2, 4, dtype=torch.bool), band="30-70")


def test_pairs_carry_step_1s_token_id(model):
    """Step 6 reads the token by its id (issue 11): heads.json's pairs must carry it from neurons.json."""
    attr = torch.tensor([[5.0, 4.0, 3.0, 0.0], [5.0, 4.0, 0.0, 3.0]] * 2)  # top3: head 2 and head 3 active on half
    neuron_list = [{"layer": 1, "neuron": 7, "token": " only", "token_id": 9}]
    pairs = heads.pairs_from_attributions(model, neuron_list, {"1.7": attr}, rule="top3")
    assert [(p["head"], p["token"], p["token_id"]) for p in pairs] == [(2, " only", 9), (3, " only", 9)]


@pytest.mark.parametrize("rule", ["top3", "2sigma"])
def test_a_head_with_no_attribution_is_never_active(rule):
    """Round-off (1e-10 beside 2.0) must not make a head active: top-3 would otherwise fill its three slots."""
    attr = torch.tensor([[2.0, 1e-10, -3e-11, 2e-10, 0.0, 1e-12, 0.0, 0.0]] * 3 + [[2.0, 1.5, 1.2, 0.1, 0, 0, 0, 0]])
    active = heads.active_heads(attr, rule)
    assert active[:3].sum(dim=1).tolist() == [1, 1, 1] and active[:3, 0].all()
    if rule == "top3":
        assert active[3].tolist() == [True, True, True, False, False, False, False, False]


@pytest.mark.parametrize("layer", [0, 1])
def test_look_back_is_the_attention_weighted_distance_of_a_full_forward(model, layer):
    """``look_back`` stops its forward after the head's layer: the distance is the full forward's pattern's."""
    text = PROMPTS[3]
    hook = f"blocks.{layer}.attn.hook_pattern"
    _, cache = model.run_with_cache(model.to_tokens(text, prepend_bos=True), names_filter=hook)
    for head_index in range(model.cfg.n_heads):
        weights = cache[hook][0, head_index, -1]  # [pos]: where the last token attends
        expected = float(weights @ torch.arange(len(weights) - 1, -1, -1, dtype=weights.dtype))
        assert heads.look_back(model, text, layer, head_index) == pytest.approx(expected, abs=1e-5)

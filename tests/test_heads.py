"""Step 3 (ctx_utils.heads): head → neuron attribution, active rules, pair selection — on a tiny random GPT-2.

The attribution is checked against two independent TransformerLens computations: each head's residual output
from ``cache.stack_head_results()``, and each layer's whole attention output (``hook_attn_out``), both dotted
with the neuron's input weights.
"""

from __future__ import annotations

import pytest
import torch

from ctx_utils import heads
from ctx_utils.models import load_model

WORDS = "the cat sat on a mat dog ran far away for only these purposes as early such big red".split()
PROMPTS = [
    " the cat sat on the mat",
    " dog ran",
    " for these purposes only as early as",
    " such a big red dog sat far away on a mat",
    " the",
]
N_CTX = 16


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A seeded random 3-layer, 4-head GPT-2 with a word-level tokenizer (pad = BOS = <|endoftext|>, as GPT-2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, **{"Ġ" + w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=special, eos_token=special, unk_token=special, pad_token=special)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=N_CTX, n_embd=32, n_layer=3, n_head=4, n_inner=64, bos_token_id=0, eos_token_id=0
    )
    folder = tmp_path_factory.mktemp("tiny_gpt2")
    GPT2LMHeadModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return load_model(str(folder), device="cpu")


def reference_attributions(model, text: str, layer: int, neuron: int, n_head_layers: int) -> torch.Tensor:
    """Per-head residual outputs at the last token (stack_head_results = z @ W_O per head) dotted with W_in."""
    tokens = model.to_tokens(text, prepend_bos=True)
    _, cache = model.run_with_cache(tokens)
    results = cache.stack_head_results(layer=n_head_layers, pos_slice=-1)  # [n_head_layers * n_heads, 1, d_model]
    return results[:, 0] @ model.W_in[layer][:, neuron]


@pytest.mark.parametrize("layer,neuron,same", [(1, 5, False), (2, 17, False), (2, 63, True), (0, 3, True)])
def test_attribution_equals_stack_head_results(model, layer, neuron, same):
    attr = heads.head_attributions(model, PROMPTS, layer, neuron, include_same_layer=same, batch_size=2)
    n_head_layers = layer + int(same)
    assert attr.shape == (len(PROMPTS), n_head_layers * model.cfg.n_heads)
    for i, text in enumerate(PROMPTS):
        expected = reference_attributions(model, text, layer, neuron, n_head_layers)
        torch.testing.assert_close(attr[i], expected, atol=1e-5, rtol=1e-4)


def test_layer_sum_plus_bias_equals_attention_output(model):
    """Sum of a layer's head attributions + b_O · w_in = that layer's attention output · w_in (hook_attn_out)."""
    layer, neuron = 2, 9
    attr = heads.head_attributions(model, PROMPTS, layer, neuron)
    w_in = model.W_in[layer][:, neuron]
    n_heads = model.cfg.n_heads
    for i, text in enumerate(PROMPTS):
        _, cache = model.run_with_cache(model.to_tokens(text))
        for l in range(layer):
            expected = cache[f"blocks.{l}.hook_attn_out"][0, -1] @ w_in
            got = attr[i, l * n_heads : (l + 1) * n_heads].sum() + model.b_O[l] @ w_in
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_batched_with_padding_equals_one_by_one(model):
    batched = heads.head_attributions(model, PROMPTS, 2, 11, batch_size=16)
    single = torch.cat([heads.head_attributions(model, [t], 2, 11) for t in PROMPTS])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_literal_bos_inside_a_prompt_does_not_move_the_last_position(model):
    """GPT-2's pad = BOS: counting non-pad tokens (the authors' rule) would misplace this prompt's end."""
    text = " the cat<|endoftext|> sat on"
    tokens, last = heads.tokenize_prompts(model, [text, " dog"])
    assert tokens[0].tolist() == [0, 1, 2, 0, 3, 4] and last.tolist() == [5, 1]  # non-pad count would say 4
    attr = heads.head_attributions(model, [text, " dog"], 2, 4)
    torch.testing.assert_close(attr[0], reference_attributions(model, text, 2, 4, 2), atol=1e-5, rtol=1e-4)


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


def test_find_head_pairs_partitions_prompts(model):
    neurons = [
        {"layer": 2, "neuron": 7, "token": " mat"},
        {"layer": 1, "neuron": 40, "token": " dog"},
        {"layer": 2, "neuron": 8, "token": " far"},  # no prompts: skipped
    ]
    prompts = {"2.7": [{"text": t, "activation": 1.0} for t in PROMPTS], "1.40": [{"text": t} for t in PROMPTS[:4]]}
    pairs = heads.find_head_pairs(model, neurons, prompts, rule="top3", band=">25")
    assert pairs, "top-3 of 4-8 heads over 4-5 prompts must make some head active on > 25 % of prompts"
    for pair in pairs:
        key = f"{pair['layer']}.{pair['neuron']}"
        n = len(prompts[key])
        assert sorted(pair["positive"] + pair["negative"]) == list(range(n))
        assert pair["active_fraction"] == pytest.approx(len(pair["positive"]) / n)
        assert pair["head"] == pair["head_layer"] * model.cfg.n_heads + pair["head_index"] and pair["head_layer"] < pair["layer"]
        flags = heads.head_is_active(model, [p["text"] for p in prompts[key]], pair["layer"], pair["neuron"], pair["head"])
        assert [i for i, on in enumerate(flags) if on] == pair["positive"]
    assert {(p["layer"], p["neuron"]) for p in pairs} <= {(2, 7), (1, 40)}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"layer": 3, "neuron": 0}, "Layer 3 is out of range"),
        ({"layer": -1, "neuron": 0}, "out of range"),
        ({"layer": 1, "neuron": 64}, "Neuron 64 is out of range"),
        ({"layer": 0, "neuron": 0}, "include_same_layer=True"),
        ({"layer": 1, "neuron": 0, "texts": []}, "No prompts"),
        ({"layer": 1, "neuron": 0, "texts": " the cat"}, "list of prompts"),
        ({"layer": 1, "neuron": 0, "texts": [" the", ""]}, "empty"),
        ({"layer": 1, "neuron": 0, "texts": [" the cat" * 8]}, "context window"),
        ({"layer": 1, "neuron": 0, "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_gives_clear_errors(model, kwargs, match):
    args = {"texts": PROMPTS, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        heads.head_attributions(model, **args)


def test_bad_rule_band_and_head(model):
    with pytest.raises(ValueError, match="Unknown rule"):
        heads.active_heads(torch.zeros(2, 4), "top5")
    with pytest.raises(ValueError, match="Unknown band"):
        heads.select_pairs(torch.zeros(2, 4, dtype=torch.bool), band="30-70")
    with pytest.raises(ValueError, match="include_same_layer=True to add"):
        heads.head_is_active(model, PROMPTS, 1, 0, head=4)

"""The kit's numbers on GPT-2 and Pythia (GPT-NeoX) architectures, checked against Hugging Face alone.

Each test runs on both fixtures of ``ctx_utils.fixtures`` (random weights, random LayerNorms and biases,
byte-level BPE trained on real Pile text) and compares what the kit computes through TransformerLens's
bridge with an independent computation from the Hugging Face model: its own forward pass, its own modules'
activations (read with plain PyTorch hooks), and its raw weights with LayerNorm folding and centring written
out here.
"""

from __future__ import annotations

import hashlib
import re

import pytest
import torch

from ctx_utils import ablate, activations, fixtures, heads, neurons

TEXTS = fixtures.sample_texts("train")[:6]
LAYER, NEURON = 2, 7  # a neuron of the last layer: layers 0 and 1 hold its candidate heads


# ------------------------------------------------------------------ the Hugging Face side, written out


def hf_blocks(hf, arch: str):
    return hf.transformer.h if arch == "gpt2" else hf.gpt_neox.layers


def hf_weights(hf, arch: str, layer: int) -> dict[str, torch.Tensor]:
    """Raw weights of one block, all as ``x @ W`` matrices: W_in [d_model, d_mlp], W_out [d_mlp, d_model],
    W_O [n_heads·d_head, d_model]; ``ln_mlp`` is the scale of the LayerNorm in front of the MLP."""
    block = hf_blocks(hf, arch)[layer]
    if arch == "gpt2":
        return {"W_in": block.mlp.c_fc.weight, "W_out": block.mlp.c_proj.weight, "W_O": block.attn.c_proj.weight,
                "ln_mlp": block.ln_2.weight}
    return {"W_in": block.mlp.dense_h_to_4h.weight.T, "W_out": block.mlp.dense_4h_to_h.weight.T,
            "W_O": block.attention.dense.weight.T, "ln_mlp": block.post_attention_layernorm.weight}


def hf_unembed(hf, arch: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W_U [d_model, d_vocab], final LayerNorm scale [d_model])``."""
    final_ln = hf.transformer.ln_f if arch == "gpt2" else hf.gpt_neox.final_layer_norm
    return hf.get_output_embeddings().weight.T, final_ln.weight


def hf_out_proj(hf, arch: str, layer: int) -> torch.nn.Module:
    """The attention's output projection: its input is z, the heads' outputs side by side."""
    block = hf_blocks(hf, arch)[layer]
    return block.attn.c_proj if arch == "gpt2" else block.attention.dense


def hf_value_offset(hf, arch: str, layer: int) -> torch.Tensor:
    """The constant part of every value vector of one layer, heads side by side as in z: [n_heads·d_head].

    ``v = LN(x) @ W_V + b_V`` with ``LN(x) = x̂ · g + b``, so ``v = x̂ @ (g W_V) + (b @ W_V + b_V)``: folding the
    LayerNorm moves its bias ``b`` into the value bias, and compatibility mode then folds that bias into ``b_O``.
    """
    block = hf_blocks(hf, arch)[layer]
    if arch == "gpt2":  # c_attn: x @ W + bias, output [q | k | v], each n_heads·d_head
        w_v, b_v, ln_bias = block.attn.c_attn.weight.chunk(3, dim=1)[2], block.attn.c_attn.bias.chunk(3)[2], block.ln_1.bias
    else:  # query_key_value: a Linear whose output is laid out per head as [q, k, v]
        n_heads, qkv = hf.config.num_attention_heads, block.attention.query_key_value
        w_v = qkv.weight.view(n_heads, 3, -1, qkv.in_features)[:, 2].flatten(0, 1).T  # [d_model, n_heads·d_head]
        b_v, ln_bias = qkv.bias.view(n_heads, 3, -1)[:, 2].flatten(), block.input_layernorm.bias
    return ln_bias @ w_v + b_v


def center_rows(w: torch.Tensor) -> torch.Tensor:
    """Subtract each row's mean over the last axis (centring along d_model for writing weights)."""
    return w - w.mean(dim=-1, keepdim=True)


def folded_w_in(hf, arch: str, layer: int) -> torch.Tensor:
    """``W_in`` with the MLP's LayerNorm scale folded in, centred along d_model (LN centres its input): [d_model, d_mlp]."""
    w = hf_weights(hf, arch, layer)
    folded = w["ln_mlp"][:, None] * w["W_in"]
    return folded - folded.mean(dim=0, keepdim=True)


def bos_ids(model, text: str) -> list[int]:
    return [model.tokenizer.bos_token_id, *model.tokenizer(text, add_special_tokens=False)["input_ids"]]


@torch.no_grad()
def hf_run(hf, arch: str, ids: list[int], read_z: int | None = None, zero_head: tuple[int, int] | None = None):
    """One unpadded HF forward: ``(log-probs [pos, d_vocab], {layer: MLP activation [pos, d_mlp]}, z [pos, n_heads·d_head])``.

    ``zero_head = (layer, h)`` ablates head h in that layer: its values are set to ``b_V``, i.e. its slice of
    z (the input of the output projection) becomes ``b_V[h]`` (the pattern sums to 1), see ``hf_value_bias``.
    """
    post, z, handles = {}, {}, []
    d_head = hf.config.hidden_size // hf.config.num_attention_heads if arch == "pythia" else hf.config.n_embd // hf.config.n_head
    for l, block in enumerate(hf_blocks(hf, arch)):
        handles.append(block.mlp.act.register_forward_hook(lambda mod, inp, out, l=l: post.__setitem__(l, out[0])))
    if read_z is not None:
        handles.append(hf_out_proj(hf, arch, read_z).register_forward_pre_hook(lambda mod, args: z.__setitem__(0, args[0][0])))
    if zero_head is not None:
        layer, h = zero_head

        def zero(mod, args):
            x = args[0].clone()
            x[..., h * d_head : (h + 1) * d_head] = hf_value_offset(hf, arch, layer)[h * d_head : (h + 1) * d_head]
            return (x,)

        handles.append(hf_out_proj(hf, arch, layer).register_forward_pre_hook(zero))
    try:
        logits = hf(torch.tensor([ids])).logits[0]
    finally:
        for handle in handles:
            handle.remove()
    return logits.log_softmax(-1), post, z.get(0)


# ------------------------------------------------------------------------------------------ the fixtures


def test_fixture_tokenizer_is_byte_level_bpe(bpe_fixture):
    arch, folder, model, _ = bpe_fixture
    tok = model.tokenizer
    ids = tok(" advocate", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1, "a word of the sample should split into several BPE tokens"
    assert tok.convert_ids_to_tokens(ids)[0].startswith("Ġ") and tok.decode(ids[:1]).startswith(" ")
    text = "Line one\n\nzwei — drei: 東京 ✓"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # newlines, Unicode: no unknowns
    assert model.cfg.n_layers == 3 and model.cfg.d_vocab == len(tok)
    if arch == "pythia":
        assert model.cfg.parallel_attn_mlp and model.cfg.positional_embedding_type == "rotary"


def test_fixture_build_is_deterministic(tmp_path, gpt2_fixture_dir, pythia_fixture_dir):
    for arch, cached in (("gpt2", gpt2_fixture_dir), ("pythia", pythia_fixture_dir)):
        fresh = fixtures.build_fixture(arch, tmp_path / arch)
        for name in ("model.safetensors", "tokenizer.json", "config.json"):
            digest = [hashlib.sha256((f / name).read_bytes()).hexdigest() for f in (fresh, cached)]
            assert digest[0] == digest[1], f"{arch}: {name} differs between two builds"


def test_fixture_dir_is_cached(gpt2_fixture_dir):
    assert fixtures.fixture_dir("gpt2") == gpt2_fixture_dir
    with pytest.raises(ValueError, match="gpt2"):
        fixtures.fixture_dir("llama")


# ------------------------------------------------------------------------------- equivalence with HF


def test_logits_equal_hugging_face(bpe_fixture):
    arch, _, model, hf = bpe_fixture
    for text in TEXTS:
        ids = bos_ids(model, text)
        with torch.no_grad():
            ours = model(torch.tensor([ids])).log_softmax(-1)[0]
        reference, _, _ = hf_run(hf, arch, ids)
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_hook_post_equals_hugging_face_mlp_activation(bpe_fixture):
    arch, _, model, hf = bpe_fixture
    seqs = [bos_ids(model, text) for text in TEXTS]
    layers = list(range(model.cfg.n_layers))
    acts, lengths = activations.mlp_post(model, seqs, layers)  # the scan's batched, right-padded read
    for i, ids in enumerate(seqs):
        _, post, _ = hf_run(hf, arch, ids)
        for layer in layers:
            torch.testing.assert_close(acts[layer][i, : len(ids)].float(), post[layer], atol=1e-5, rtol=1e-4)


def test_congruence_equals_folded_hugging_face_weights(bpe_fixture):
    arch, _, model, hf = bpe_fixture
    w_u, ln_final = hf_unembed(hf, arch)
    with torch.no_grad():
        w_u = ln_final[:, None] * w_u  # fold the final LayerNorm's scale into the unembedding
        w_u = w_u - w_u.mean(dim=0, keepdim=True)  # it reads a centred residual: centre along d_model
        w_u = w_u - w_u.mean(dim=1, keepdim=True)  # centre the unembedding (softmax ignores a constant shift)
        for layer in range(model.cfg.n_layers):
            w_out = center_rows(hf_weights(hf, arch, layer)["W_out"])  # writing weights, centred along d_model
            best = (w_out @ w_u).max(dim=-1)
            scores, tokens = neurons.congruence(model, layer)
            torch.testing.assert_close(scores, best.values, atol=1e-5, rtol=1e-4)
            assert torch.equal(tokens, best.indices)


def test_head_attributions_equal_plain_cache_and_hugging_face(bpe_fixture):
    """attr = z[last, h] @ W_O[h] @ W_in[:, n], from TL's full cache and from HF's modules and raw weights.

    Compatibility mode also folds the value bias into ``b_O`` (TransformerLens's ``fold_value_biases``, on in
    the paper's ``HookedTransformer``): a head's z is its attention-weighted ``x̂ @ W_V`` without the constant
    ``b @ W_V + b_V``, whose contribution is the same on every prompt. The HF side subtracts it explicitly.
    """
    arch, _, model, hf = bpe_fixture
    attr = heads.head_attributions(model, TEXTS, LAYER, NEURON, batch_size=4)  # [prompts, LAYER × n_heads]
    n_heads, d_head = model.cfg.n_heads, model.cfg.d_head
    w_in = model.W_in[LAYER][:, NEURON]
    hf_w_in = folded_w_in(hf, arch, LAYER)[:, NEURON]
    for i, text in enumerate(TEXTS):
        ids = bos_ids(model, text)
        with torch.no_grad():
            _, cache = model.run_with_cache(torch.tensor([ids]))  # every hook, whole model
        for l in range(LAYER):
            z = cache[f"blocks.{l}.attn.hook_z"][0, -1]  # [n_heads, d_head]
            expected = torch.stack([z[h] @ model.W_O[l, h] @ w_in for h in range(n_heads)])
            torch.testing.assert_close(attr[i, l * n_heads : (l + 1) * n_heads], expected, atol=1e-5, rtol=1e-4)
            _, _, hf_z = hf_run(hf, arch, ids, read_z=l)
            hf_z = hf_z - hf_value_offset(hf, arch, l)  # b_V (with LN's bias) folded into b_O: z is x̂'s part only
            w_o = center_rows(hf_weights(hf, arch, l)["W_O"])  # [n_heads·d_head, d_model]
            hf_expected = torch.stack(
                [hf_z[-1, h * d_head : (h + 1) * d_head] @ w_o[h * d_head : (h + 1) * d_head] @ hf_w_in for h in range(n_heads)]
            )
            torch.testing.assert_close(attr[i, l * n_heads : (l + 1) * n_heads], hf_expected, atol=1e-5, rtol=1e-4)


def test_value_zeroing_equals_zeroing_z_and_hugging_face(bpe_fixture):
    arch, _, model, hf = bpe_fixture
    head = (1, 2)

    def zero_z(z, hook):  # z: [batch, pos, n_heads, d_head]
        z[:, :, head[1], :] = 0.0
        return z

    ours = ablate.next_token_probs(model, TEXTS, [head], batch_size=4)  # [prompts, d_vocab]
    normal = ablate.next_token_probs(model, TEXTS, [], batch_size=4)
    assert (ours - normal).abs().max() > 1e-4, "the ablation should change something on a random model"
    for i, text in enumerate(TEXTS):
        ids = torch.tensor([bos_ids(model, text)])
        with torch.no_grad():
            zeroed_z = model.run_with_hooks(ids, fwd_hooks=[(f"blocks.{head[0]}.attn.hook_z", zero_z)])[0, -1].softmax(-1)
        torch.testing.assert_close(ours[i], zeroed_z, atol=1e-6, rtol=1e-4)
        reference, _, _ = hf_run(hf, arch, ids[0].tolist(), zero_head=head)
        torch.testing.assert_close(ours[i], reference[-1].exp(), atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------------------- the Pythia bug (issue 15)


def test_linearity_gap_is_rounding_on_both_architectures(bpe_fixture):
    """Heads + b_O add up to the attention output, per layer, on GPT-2 and on GPT-NeoX (rotary, parallel)."""
    _, _, model, _ = bpe_fixture
    for text in TEXTS[:3]:
        rows = heads.linearity_gap(model, text, LAYER, NEURON)
        assert [row["layer"] for row in rows] == list(range(LAYER))
        for row in rows:
            assert abs(row["attn_out"]) > 1e-4, "a check against ~0 would prove nothing"
            assert abs(row["gap"]) < 1e-5 * max(1.0, abs(row["attn_out"])), row


def test_pythia_default_tokenisation_has_no_bos(pythia_fixture_dir):
    """Why notebook 03's check failed on Pythia: ``run_with_cache(text)`` adds no BOS there, the attribution does.

    Reading the attention output from the string itself compares it with the attribution of another sequence;
    :func:`heads.linearity_gap` reads both from the same BOS-prefixed tokens.
    """
    from ctx_utils.models import load_model

    model = load_model(str(pythia_fixture_dir), device="cpu")
    assert model.cfg.default_prepend_bos is False
    assert model.to_tokens(TEXTS[0])[0, 0] != model.tokenizer.bos_token_id
    tokens, _ = heads.tokenize_prompts(model, TEXTS[:1])
    assert tokens[0, 0] == model.tokenizer.bos_token_id


def test_same_layer_heads_refused_with_parallel_residual(bpe_fixture):
    arch, _, model, _ = bpe_fixture
    if arch == "gpt2":
        assert heads.head_attributions(model, TEXTS[:2], LAYER, NEURON, include_same_layer=True).shape == (2, 12)
    else:
        with pytest.raises(ValueError, match="parallel residual"):
            heads.head_attributions(model, TEXTS[:2], LAYER, NEURON, include_same_layer=True)


# ------------------------------------------------------------------------------- BPE token strings


def test_token_rule_on_bpe_strings(bpe_fixture):
    _, _, model, _ = bpe_fixture
    tok = model.tokenizer
    vocab = tok.get_vocab()
    short = next(t for t in sorted(vocab) if t.startswith("Ġ") and len(t) == 2 and t[1].isalpha())  # e.g. "Ġa"
    inner = next(t for t in sorted(vocab) if len(t) > 2 and t.isascii() and t.isalpha())  # a word's middle, e.g. "ate"
    for piece, passes in (("Ġthe", True), (inner, False), (short, False)):  # no leading space; 2 characters
        string = neurons.token_string(model, vocab[piece])
        assert string == piece.replace("Ġ", " ") and neurons.passes_token_rule(string) is passes, piece
    assert not neurons.passes_token_rule(" the", reject=[" the"])
    chosen = neurons.select_next_token_neurons(model, layers=[LAYER], per_layer=10, reject=[" the"])
    for item in chosen:
        assert neurons.passes_token_rule(item["token"]) and item["token"] != " the"
        assert tok.convert_ids_to_tokens(item["token_id"]).startswith("Ġ")
        assert neurons.token_string(model, item["token_id"]) == item["token"]


def test_multi_token_target_is_refused(bpe_fixture):
    _, _, model, _ = bpe_fixture
    word = " advocate"  # Ġad v oc ate
    assert len(model.tokenizer(word, add_special_tokens=False)["input_ids"]) > 1
    with pytest.raises(ValueError, match=re.escape(word.strip())):
        ablate.token_probabilities(model, TEXTS[:2], word)

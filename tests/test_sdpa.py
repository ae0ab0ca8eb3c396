"""The hook-free forwards run on an SDPA twin of the model: the same activations as the bridge's, proven here.

The scan, the truncation search and the activity check read only ``blocks.{l}.mlp.hook_post``; they run
``ctx_utils.models.sdpa_twin`` (Hugging Face alone, fused attention, checkpoint weights, the forward stopped
after the last needed layer) instead of the TransformerLens bridge (eager attention, folded and centred
weights). The reference here is the bridge's own ``run_with_cache`` of the whole model, one sequence at a
time (no padding), so neither batching, padding, stopping early nor slicing the chosen neurons is taken on
trust. Tolerance: 1e-5 absolute + 1e-4 relative in float32 (measured differences ≈ 2e-6 on activations of
magnitude ≈ 3: rounding of the folded vs unfolded weights and of the attention kernel).

On the organism (the clean one and the realistic one), the GPT-2-architecture fixture and the Pythia
(GPT-NeoX: rotary, parallel residual) fixture.
"""

from __future__ import annotations

import random
import shutil
import warnings

import pytest
import torch
from transformers.activations import ACT2FN

from ctx_utils import activations, fixtures, models, prompts
from ctx_utils.corpus import load_corpus
from ctx_utils.models import CLEAN_ORGANISM_DIR, ORGANISM_DIR, load_model
from ctx_utils.session import SESSION
from ctx_utils.tokens import mlp_post_hook, tokenize

ATOL, RTOL = 1e-5, 1e-4


def _fixture_docs(n: int, seed: int = 0) -> list[str]:
    """Real-text documents of very different lengths (one to six of the sample's prompts, some with newlines)."""
    texts = fixtures.sample_texts("train")
    rng = random.Random(seed)
    return [("\n" if i % 3 == 0 else " ").join(rng.sample(texts, rng.randint(1, 6))) for i in range(n)]


MODELS = {  # name → (the model's folder, its documents)
    "organism": (lambda: ORGANISM_DIR, lambda: load_corpus("organism", "train", max_docs=40)),
    "organism-clean": (lambda: CLEAN_ORGANISM_DIR, lambda: load_corpus("organism-clean", "train", max_docs=40)),
    "gpt2-fixture": (lambda: fixtures.fixture_dir("gpt2"), lambda: _fixture_docs(24)),
    "pythia-fixture": (lambda: fixtures.fixture_dir("pythia"), lambda: _fixture_docs(24)),
}


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    """``(name, bridge, documents)`` for each model; skipped where a bundled organism folder is missing."""
    folder, docs = (make() for make in MODELS[request.param])
    if not (folder / "config.json").exists():
        pytest.skip(f"{folder} is not built")
    return request.param, load_model(str(folder), device="cpu"), docs


def bridge_hook_post(model, seq: list[int], layers: list[int]) -> dict[int, torch.Tensor]:
    """The reference: the bridge's whole forward on one unpadded sequence, ``{layer: [pos, d_mlp]}``."""
    names = [mlp_post_hook(layer) for layer in layers]
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([seq]), names_filter=names)
    return {layer: cache[name][0].float() for layer, name in zip(layers, names)}


def test_the_twin_is_used_and_runs_sdpa(case):
    _, model, _ = case
    twin = models.sdpa_twin(model)
    assert twin is not None, "the fast path must be the one the kit takes on this architecture"
    assert twin[0].config._attn_implementation == "sdpa"
    assert models.sdpa_twin(model) is twin  # built once per bridge


def test_the_twin_computes_gpt2s_gelu_with_the_fused_kernel(case):
    """GPT-2's ``gelu_new`` (written out in Python) runs as ``gelu_pytorch_tanh`` in the twin; the bridge keeps
    the model's own. The tests below prove the activations equal; other activations are left as they are."""
    _, model, _ = case
    twin, acts = models.sdpa_twin(model)
    config = type(twin.config).from_pretrained(SESSION.cache_of(model).source)
    own = getattr(config, "activation_function", None) or config.hidden_act
    used = getattr(twin.config, "activation_function", None) or twin.config.hidden_act
    assert used == models.FUSED_ACTIVATIONS.get(own, own)
    if own == "gelu_new":
        assert type(acts[0]).__name__ in {"GELUTanh", "PytorchGELUTanh"}, type(acts[0])
        x = torch.linspace(-6, 6, 1001)
        torch.testing.assert_close(acts[0](x), ACT2FN["gelu_new"](x), atol=1e-6, rtol=1e-6)


def test_batched_activations_equal_the_bridges_hook_post(case):
    """Every layer, every neuron, right-padded batches of mixed lengths: equal to the bridge one by one."""
    _, model, docs = case
    seqs = tokenize(model, docs, warn_long=False)
    layers = list(range(model.cfg.n_layers))
    assert len({len(s) for s in seqs}) > 3, "the batch must mix lengths, so that padding is exercised"
    acts, mask = activations.mlp_post(model, seqs, layers)
    assert mask.sum(1).tolist() == [len(s) for s in seqs]
    for i, seq in enumerate(seqs):
        reference = bridge_hook_post(model, seq, layers)
        for layer in layers:
            torch.testing.assert_close(acts[layer][i, : len(seq)], reference[layer], atol=ATOL, rtol=RTOL)


def test_chosen_neurons_of_some_layers_equal_the_bridges(case):
    """The scan's read: a few neurons of the last layers only, the forward stopped after the deepest."""
    _, model, docs = case
    seqs = tokenize(model, docs[:8], warn_long=False)
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    columns = {n_layers - 1: torch.tensor([d_mlp - 1, 0, 5])}
    if n_layers > 2:
        columns[n_layers - 2] = torch.tensor([3])
    acts, _ = activations.neuron_post(model, seqs, columns)
    for i, seq in enumerate(seqs):
        reference = bridge_hook_post(model, seq, sorted(columns))
        for layer, cols in columns.items():
            torch.testing.assert_close(acts[layer][i, : len(seq)], reference[layer][:, cols], atol=ATOL, rtol=RTOL)


def test_neuron_post_keeps_exactly_the_chosen_neurons_on_both_paths(tiny_model, monkeypatch):
    """The chosen columns of the full hook_post, through the SDPA twin and through the bridge (no twin)."""
    seqs = tokenize(tiny_model, ["the cat sat on the mat", "for research purposes only", "the"])
    columns = {0: torch.tensor([3, 1]), 1: torch.tensor([0, 5, 17])}
    assert models.sdpa_twin(tiny_model) is not None  # the fast path is the one taken
    full, mask = activations.mlp_post(tiny_model, seqs, [0, 1])
    fast, fast_mask = activations.neuron_post(tiny_model, seqs, columns)
    assert torch.equal(mask, fast_mask)
    real = mask.bool()
    for layer, cols in columns.items():
        assert fast[layer].shape == (len(seqs), mask.shape[1], len(cols))
        assert torch.equal(fast[layer][real], full[layer][..., cols][real])
    monkeypatch.setattr(SESSION.cache_of(tiny_model), "twin", False)  # no twin: the bridge's run_with_cache
    slow, _ = activations.neuron_post(tiny_model, seqs, columns)
    assert all(torch.allclose(slow[layer][real], fast[layer][real], atol=1e-5) for layer in columns)


def test_the_scan_finds_the_same_documents_and_positions_as_the_bridge(case, monkeypatch):
    """Top documents and argmax positions unchanged by SDPA; activations equal to the tolerance."""
    _, model, docs = case
    layer = model.cfg.n_layers - 1
    chosen = [{"layer": layer, "neuron": n} for n in range(0, model.cfg.d_mlp, max(1, model.cfg.d_mlp // 12))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random fixture's neuron may never fire: same warning on both paths
        fast = prompts.scan_top_documents(model, docs, chosen, k=5, batch_size=5, progress=False)
        monkeypatch.setattr(SESSION.cache_of(model), "twin", False)  # no twin: the bridge's eager forward
        slow = prompts.scan_top_documents(model, docs, chosen, k=5, batch_size=5, progress=False)
    assert fast.keys() == slow.keys()
    for key in fast:
        assert [(e["doc"], e["position"]) for e in fast[key]] == [(e["doc"], e["position"]) for e in slow[key]], key
        torch.testing.assert_close(torch.tensor([e["activation"] for e in fast[key]]),
                                   torch.tensor([e["activation"] for e in slow[key]]), atol=ATOL, rtol=RTOL)


def test_a_twin_that_disagrees_is_refused_with_a_warning(tiny_model):
    """The check run before first use: a twin reading the wrong modules is not used, and the user is told."""
    twin, acts = models.sdpa_twin(tiny_model)
    assert models._twin_agrees(tiny_model, twin, acts)
    with pytest.warns(UserWarning, match="disagrees with the bridge at layer 0"):
        assert not models._twin_agrees(tiny_model, twin, acts[::-1])


def test_a_bridge_the_kit_did_not_load_has_no_twin(tiny_model, monkeypatch):
    cache = SESSION.cache_of(tiny_model)
    monkeypatch.setattr(cache, "source", None)
    monkeypatch.setattr(cache, "twin", None)  # not built yet
    assert models.sdpa_twin(tiny_model) is None
    seqs = tokenize(tiny_model, ["the cat sat", "on the mat for research"])
    acts, _ = activations.mlp_post(tiny_model, seqs, [1])  # the bridge's path, still right
    torch.testing.assert_close(acts[1][0, :len(seqs[0])], bridge_hook_post(tiny_model, seqs[0], [1])[1])


def test_a_folder_gone_since_the_load_falls_back_to_the_bridge_with_a_warning(tmp_path):
    from conftest import save_tiny_gpt2

    model = load_model(str(save_tiny_gpt2(tmp_path / "tiny")), device="cpu")
    shutil.rmtree(tmp_path / "tiny")
    with pytest.warns(UserWarning, match="Keep the model's folder in place"):
        assert models.sdpa_twin(model) is None
    seqs = tokenize(model, ["the cat sat"])
    torch.testing.assert_close(activations.mlp_post(model, seqs, [0])[0][0][0], bridge_hook_post(model, seqs[0], [0])[0])

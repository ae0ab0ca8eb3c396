"""Step 1: congruence, the paper's selection rule, the random baseline, Gurnee moments, bad input."""

import json
from types import SimpleNamespace

import pytest
import scipy.stats
import torch

from ctx_utils import neurons
from ctx_utils.models import ORGANISM_DIR, HUB_MODELS, hub_reachable, is_cached


def test_default_layers_match_the_paper():
    def fake(n_layers, d_model):
        return SimpleNamespace(cfg=SimpleNamespace(n_layers=n_layers, d_model=d_model))

    assert neurons.default_layers(fake(12, 768)) == [9, 10, 11]
    assert neurons.default_layers(fake(24, 1024)) == [20, 21, 22, 23]
    assert neurons.default_layers(fake(36, 1280)) == [31, 32, 33, 34, 35]
    assert neurons.default_layers(fake(2, 128)) == [1]
    assert neurons.default_layers(fake(8, 64)) == [6, 7]


def test_congruence_equals_direct_product(tiny_model, monkeypatch):
    monkeypatch.setattr(neurons, "CHUNK", 48)  # several chunks, one of them partial
    for layer in range(tiny_model.cfg.n_layers):
        scores, tokens = neurons.congruence(tiny_model, layer)
        direct = tiny_model.W_out[layer] @ tiny_model.W_U  # [d_mlp, d_vocab]
        assert scores.shape == tokens.shape == (tiny_model.cfg.d_mlp,)
        torch.testing.assert_close(scores, direct.max(-1).values)
        assert torch.equal(tokens, direct.argmax(-1))


def test_selection_rule_skips_subwords_short_and_rejected(monkeypatch):
    strings = {0: " the", 1: "cat", 2: " a", 3: " glitch", 4: " only", 5: " as", 6: " research"}
    scores = torch.tensor([1.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0])
    tokens = torch.tensor([0, 1, 2, 3, 4, 5, 6, 4])
    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=2, d_model=4, d_mlp=8))
    monkeypatch.setattr(neurons, "congruence", lambda m, layer: (scores, tokens))
    monkeypatch.setattr(neurons, "token_string", lambda m, t: strings[int(t)])
    chosen = neurons.select_next_token_neurons(model, layers=[1], per_layer=3, reject=[" glitch"])
    # neuron 1 "cat" (no space), 2 " a" (2 chars), 3 rejected, 5 " as" (3 chars: kept)
    assert [n["neuron"] for n in chosen] == [4, 5, 6]
    assert [n["token"] for n in chosen] == [" only", " as", " research"]
    assert [n["rank"] for n in chosen] == [3, 4, 5]
    # the activity check skips a silent neuron even when its congruence is high
    activity = {1: torch.tensor([1.0, 1, 1, 1, 0.0, 1, 1, 1])}
    chosen = neurons.select_next_token_neurons(model, [1], 2, [" glitch"], activity=activity, min_activity=0.1)
    assert [n["neuron"] for n in chosen] == [5, 6]


def test_selection_on_a_model_follows_congruence(tiny_model):
    chosen = neurons.select_next_token_neurons(tiny_model, layers=[0, 1], per_layer=4)
    assert [n["layer"] for n in chosen] == [0] * 4 + [1] * 4
    for layer in (0, 1):
        scores, tokens = neurons.congruence(tiny_model, layer)
        passing = [
            i for i in scores.argsort(descending=True, stable=True).tolist()
            if neurons.passes_token_rule(tiny_model.tokenizer.decode([int(tokens[i])]))
        ]
        assert [n["neuron"] for n in chosen if n["layer"] == layer] == passing[:4]
    assert all(n["token"].startswith(" ") and len(n["token"]) > 2 for n in chosen)


def test_random_neurons_are_seeded_and_unfiltered(tiny_model):
    a = neurons.random_neurons(tiny_model, [0, 1], per_layer=10, seed=0)
    assert a == neurons.random_neurons(tiny_model, [0, 1], per_layer=10, seed=0)
    assert a != neurons.random_neurons(tiny_model, [0, 1], per_layer=10, seed=1)
    assert len(a) == 20 and len({(n["layer"], n["neuron"]) for n in a}) == 20
    # 20 draws from 256 neurons: with no token filter, some tokens fail the rule (half the vocab has no space)
    assert any(not neurons.passes_token_rule(n["token"]) for n in a)
    for n in a:  # only the drawn rows are projected: the same congruence and token as the whole layer's product
        scores, tokens = neurons.congruence(tiny_model, n["layer"])
        assert n["congruence"] == pytest.approx(float(scores[n["neuron"]]), abs=1e-5)
        assert n["token_id"] == int(tokens[n["neuron"]])


def test_vocab_moments_match_scipy(tiny_model):
    layer, chosen = 1, [0, 5, 17]
    moments = neurons.vocab_moments(tiny_model, layer, chosen)
    w_u = tiny_model.W_U
    for i, n in enumerate(chosen):
        w = tiny_model.W_out[layer][n]
        cos = (w @ w_u) / (w.norm() * w_u.norm(dim=0))
        assert moments["skew"][i].item() == pytest.approx(scipy.stats.skew(cos.detach().numpy()), abs=1e-4)
        kurtosis = scipy.stats.kurtosis(cos.detach().numpy(), fisher=False)
        assert moments["kurtosis"][i].item() == pytest.approx(kurtosis, abs=1e-3)


def test_bad_layer_and_neuron_give_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="Layer 7 is out of range"):
        neurons.congruence(tiny_model, 7)
    with pytest.raises(ValueError, match="Layer -1 is out of range"):
        neurons.select_next_token_neurons(tiny_model, layers=[-1])
    with pytest.raises(ValueError, match="Neuron 9999 is out of range"):
        neurons.vocab_moments(tiny_model, 1, [9999])
    with pytest.raises(ValueError, match="per_layer"):
        neurons.select_next_token_neurons(tiny_model, per_layer=0)


@pytest.mark.online
@pytest.mark.skipif(
    not (is_cached(HUB_MODELS["gpt2-small"]) or hub_reachable()),
    reason="GPT-2 small is not cached and the Hugging Face hub is unreachable (HF_HUB_OFFLINE or no network)",
)
def test_finds_the_authors_gpt2_small_neurons():
    from ctx_utils.models import load_model
    from ctx_utils.paper_data import PaperDataError, resolve_data_dir

    try:
        paper = json.loads((resolve_data_dir() / "gpt2-small" / "neurons.json").read_text())
    except (PaperDataError, FileNotFoundError) as err:
        pytest.skip(f"the authors' data is not on this machine: {err}")
    model = load_model("gpt2-small", device="cpu")
    reject = [r["token"] for r in paper["rejected_neurons"]]
    ours = neurons.select_next_token_neurons(model, paper["layers_scanned"], paper["num_neurons_per_layer"], reject)
    assert [(n["layer"], n["neuron"], n["token"]) for n in ours] == [
        (n["layer"], n["neuron"], n["token"]) for n in paper["neurons"]
    ]
    for a, b in zip(ours, paper["neurons"]):
        assert a["congruence"] == pytest.approx(b["congruence"], rel=1e-3)


@pytest.mark.skipif(
    not (ORGANISM_DIR / "ground_truth.json").exists(), reason="the model organism (data/organism/) is not built yet"
)
def test_every_planted_token_has_a_next_token_neuron():
    from ctx_utils.corpus import load_corpus
    from ctx_utils.models import load_model

    truth = json.loads((ORGANISM_DIR / "ground_truth.json").read_text())
    model = load_model("organism", device="cpu")
    layers = neurons.default_layers(model)
    activity = neurons.max_activations(model, load_corpus("organism", "train", max_docs=200), layers, progress=False)
    threshold = 0.1 * max(float(activity[layer].max()) for layer in layers)  # notebook 01's default
    chosen = neurons.select_next_token_neurons(model, layers, per_layer=20, activity=activity, min_activity=threshold)
    found = {n["token"] for n in chosen}
    missing = [p["token"] for p in truth["planted"] if p["token"] not in found]
    assert not missing, f"planted tokens without a selected next-token neuron: {missing}; found {sorted(found)}"

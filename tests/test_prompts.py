"""Step 2: the streaming scan, 80 % truncation, the prompt filter, bad input — against brute force."""

import random
import warnings

import pytest
import torch

from ctx_utils import prompts
from ctx_utils.models import load_model
from conftest import save_tiny_gpt2

WORDS = ["the", "cat", "sat", "on", "mat", "for", "research", "purposes", "only", "as", "early", "such"]
LAYER = 1


def make_docs(n: int, seed: int = 0) -> list[str]:
    """Random documents over the tiny vocabulary, of varied length, some with newlines."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 30))]
        docs.append(" ".join(words) if rng.random() < 0.5 else " ".join(words[:3]) + "\n" + " ".join(words[3:]))
    return docs


@pytest.fixture(scope="module")
def docs():
    return make_docs(40)


@pytest.fixture(scope="module")
def some_neurons():
    return [{"layer": LAYER, "neuron": n} for n in (0, 7, 42, 99)] + [{"layer": 0, "neuron": 3}]


def brute_force_max(model, doc: str, layer: int, neuron: int) -> tuple[float, int]:
    """One document alone, through the model's own tokenizer: max activation over positions after BOS."""
    tokens = model.to_tokens(doc, prepend_bos=True)
    _, cache = model.run_with_cache(tokens, names_filter=[prompts.hook_name(layer)])
    acts = cache[prompts.hook_name(layer)][0, 1:, neuron]
    return float(acts.max()), int(acts.argmax()) + 1


def test_tokenize_matches_to_tokens(tiny_model, docs):
    for doc, seq in zip(docs[:10], prompts.tokenize(tiny_model, docs[:10])):
        assert seq == tiny_model.to_tokens(doc, prepend_bos=True)[0].tolist()


def test_scan_equals_brute_force(tiny_model, docs, some_neurons):
    top = prompts.scan_top_documents(tiny_model, docs, some_neurons, k=5, batch_size=7, progress=False)
    for n in some_neurons:
        expected = sorted(
            ((*brute_force_max(tiny_model, d, n["layer"], n["neuron"]), i) for i, d in enumerate(docs)),
            key=lambda t: (-t[0], t[2]),
        )
        expected = [e for e in expected if e[0] > 0][:5]
        got = top[prompts.neuron_key(n["layer"], n["neuron"])]
        assert [e["doc"] for e in got] == [e[2] for e in expected]
        assert [e["position"] for e in got] == [e[1] for e in expected]
        assert [e["activation"] for e in got] == pytest.approx([e[0] for e in expected], abs=1e-5)


def test_batched_scan_equals_unbatched(tiny_model, docs, some_neurons):
    one = prompts.scan_top_documents(tiny_model, docs, some_neurons, k=8, batch_size=1, progress=False)
    many = prompts.scan_top_documents(tiny_model, docs, some_neurons, k=8, batch_size=16, progress=False)
    assert one.keys() == many.keys()
    for key in one:
        assert [(e["doc"], e["position"]) for e in one[key]] == [(e["doc"], e["position"]) for e in many[key]]
        assert [e["activation"] for e in one[key]] == pytest.approx([e["activation"] for e in many[key]], abs=1e-5)


def test_truncation_is_the_shortest_suffix_keeping_80_percent(tiny_model, docs, some_neurons):
    top = prompts.scan_top_documents(tiny_model, docs, some_neurons[:3], k=4, progress=False)
    bos = tiny_model.tokenizer.bos_token_id
    checked = 0
    for key, entries in top.items():
        layer, neuron = map(int, key.split("."))
        for entry in entries:
            doc = prompts.tokenize(tiny_model, [docs[entry["doc"]]])[0]
            cut = prompts.truncate(tiny_model, doc, layer, neuron, entry["position"], window=3)
            # brute force: every cut, one forward each, latest start that keeps > 80 %
            passing = []
            for start in range(1, entry["position"] + 1):
                text = prompts.prompt_text(tiny_model, doc, start, entry["position"])
                seq = prompts.tokenize(tiny_model, [text])[0]
                act = float(prompts.last_token_activations(tiny_model, [seq], layer, neuron)[0])
                if act > 0.8 * entry["activation"]:
                    passing.append((start, text, act))
            if not passing:
                assert not cut["passed"]
                continue
            start, text, act = passing[-1]
            assert cut["passed"] and cut["start"] == start and cut["text"] == text
            assert cut["activation"] == pytest.approx(act, abs=1e-5) and cut["activation"] > 0.8 * entry["activation"]
            assert "\n" not in cut["text"] and cut["n_tokens"] == len(prompts.tokenize(tiny_model, [text])[0]) - 1
            assert bos is not None
            checked += 1
    assert checked >= 6


def test_find_activating_prompts_filters(tiny_model, docs, some_neurons):
    found = prompts.find_activating_prompts(tiny_model, docs, some_neurons, k=10, max_tokens=6, keep=3, progress=False)
    assert set(found) == {prompts.neuron_key(n["layer"], n["neuron"]) for n in some_neurons}
    assert any(found.values())
    for entries in found.values():
        assert len(entries) <= 3
        assert len({e["text"] for e in entries}) == len(entries)
        assert [e["doc_activation"] for e in entries] == sorted((e["doc_activation"] for e in entries), reverse=True)
        for e in entries:
            assert e["n_tokens"] < 6 and "\n" not in e["text"]
            assert e["activation"] > 0.8 * e["doc_activation"]
    # documents truncated together (truncate_many) get the same cut as one at a time (truncate, brute-forced above)
    key, entries = next((k, v) for k, v in found.items() if v)
    layer, neuron = map(int, key.split("."))
    for e in entries:
        alone = prompts.truncate(tiny_model, docs[e["doc"]], layer, neuron, e["position"], max_tokens=6)
        assert alone["text"] == e["text"] and alone["activation"] == pytest.approx(e["activation"], abs=1e-5)


def test_bad_input_gives_clear_errors(tiny_model, some_neurons):
    with pytest.raises(ValueError, match="corpus is empty"):
        prompts.scan_top_documents(tiny_model, [], some_neurons, progress=False)
    with pytest.raises(ValueError, match="single string"):
        prompts.scan_top_documents(tiny_model, "the cat", some_neurons, progress=False)
    with pytest.raises(ValueError, match="Neuron 5000 is out of range"):
        prompts.scan_top_documents(tiny_model, ["the cat"], [{"layer": 1, "neuron": 5000}], progress=False)
    with pytest.raises(ValueError, match="Layer 9 is out of range"):
        prompts.truncate(tiny_model, "the cat sat", 9, 0, 2)
    with pytest.raises(ValueError, match="position 9 is outside"):
        prompts.truncate(tiny_model, "the cat sat", 1, 0, 9)
    with pytest.raises(ValueError, match="No neurons"):
        prompts.find_activating_prompts(tiny_model, ["the cat"], [], progress=False)


def test_long_documents_are_cut_with_a_warning(tiny_model, some_neurons):
    long_doc = " ".join(["the cat sat on the mat"] * 30)  # 180 tokens, context window 64
    with pytest.warns(UserWarning, match="longer than the context window"):
        top = prompts.scan_top_documents(tiny_model, [long_doc, "the cat"], some_neurons, k=2, progress=False)
    assert all(e["position"] < tiny_model.cfg.n_ctx for entries in top.values() for e in entries)


@pytest.fixture(scope="module")
def silenced_model(tmp_path_factory):
    """The tiny model with neuron 0 of layer 1 switched off (input bias −100: GELU output ≈ 0, never > 0)."""
    from transformers import GPT2LMHeadModel

    folder = save_tiny_gpt2(tmp_path_factory.mktemp("silenced"))
    hf = GPT2LMHeadModel.from_pretrained(folder)
    with torch.no_grad():
        hf.transformer.h[LAYER].mlp.c_fc.bias[0] = -100.0
    hf.save_pretrained(folder)
    return load_model(str(folder), device="cpu")


def test_a_neuron_that_never_fires_warns(silenced_model, docs):
    neurons = [{"layer": LAYER, "neuron": 0}, {"layer": LAYER, "neuron": 7}]
    with pytest.warns(UserWarning, match="never activate above zero"):
        found = prompts.find_activating_prompts(silenced_model, docs, neurons, progress=False)
    assert found[f"{LAYER}.0"] == [] and found[f"{LAYER}.7"]
    activity = prompts.max_activations(silenced_model, docs, [LAYER], progress=False)
    assert activity[LAYER][0] <= 0 < activity[LAYER][7]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="nothing to keep 80 %"):
            prompts.truncate(silenced_model, docs[0], LAYER, 0, 2)


def test_neuron_post_computes_only_the_chosen_neurons_exactly(tiny_model, monkeypatch):
    """The hand-computed last-layer neurons equal the model's own hook_post, on both code paths."""
    seqs = prompts.tokenize(tiny_model, ["the cat sat on the mat", "for research purposes only", "the"])
    columns = {0: torch.tensor([3, 1]), 1: torch.tensor([0, 5, 17])}
    full, mask = prompts.mlp_post(tiny_model, seqs, [0, 1])
    fast, fast_mask = prompts.neuron_post(tiny_model, seqs, columns)
    assert torch.equal(mask, fast_mask)
    real = mask.bool()
    for layer, cols in columns.items():
        assert fast[layer].shape == (len(seqs), mask.shape[1], len(cols))
        assert torch.allclose(fast[layer][real], full[layer][..., cols][real], atol=1e-5)
    monkeypatch.delitem(prompts.ACTIVATIONS, tiny_model.cfg.act_fn)  # an unknown activation: the fallback
    slow, _ = prompts.neuron_post(tiny_model, seqs, columns)
    assert all(torch.allclose(slow[layer][real], fast[layer][real], atol=1e-5) for layer in columns)

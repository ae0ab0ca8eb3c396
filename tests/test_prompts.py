"""Step 2: the streaming scan, 80 % truncation, the prompt filter, bad input — against brute force."""

import random
import warnings

import pytest
import torch

from ctx_utils import activations, neurons, prompts
from ctx_utils.models import load_model
from ctx_utils.tokens import mlp_post_hook
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
    _, cache = model.run_with_cache(tokens, names_filter=[mlp_post_hook(layer)])
    acts = cache[mlp_post_hook(layer)][0, 1:, neuron]
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
        got = top[prompts.neuron_label(n["layer"], n["neuron"])]
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


def brute_force_cuts(model, doc: list[int], position: int, layer: int, neuron: int, target: float) -> dict:
    """Every cut alone, one forward each: ``{length: (text, activation, passed)}`` (length in document tokens)."""
    cuts = {}
    for n in range(1, position + 1):
        text = prompts.prompt_text(model, doc, position + 1 - n, position)
        seq = prompts.tokenize(model, [text])[0]
        act = float(activations.last_token_activations(model, [seq], layer, neuron)[0])
        cuts[n] = (text, act, act > 0.8 * target)
    return cuts


def test_truncation_is_exact_when_short_or_monotone_and_a_boundary_always(tiny_model, docs, some_neurons):
    """Against brute force over every cut: the search's documented guarantees (module docstring).

    A passing cut whose one-token-shorter cut fails, always; the shortest passing cut when that has at most
    ``window`` tokens, or when passing cuts are exactly the long ones (the paper's assumption holds).
    """
    window = 3
    top = prompts.scan_top_documents(tiny_model, docs, some_neurons, k=4, progress=False)
    seen = {"exact in window": 0, "monotone beyond window": 0, "assumption broken": 0}
    for key, entries in top.items():
        layer, neuron = map(int, key.split("."))
        for entry in entries:
            doc, position = prompts.tokenize(tiny_model, [docs[entry["doc"]]])[0], entry["position"]
            cut = prompts.truncate(tiny_model, doc, layer, neuron, position, window=window)
            cuts = brute_force_cuts(tiny_model, doc, position, layer, neuron, entry["activation"])
            n = position + 1 - cut["start"]
            text, act, passed = cuts[n]
            assert cut["text"] == text and "\n" not in text and cut["passed"] == passed
            assert cut["activation"] == pytest.approx(act, abs=1e-5)
            assert cut["n_tokens"] == len(prompts.tokenize(tiny_model, [text])[0]) - 1
            passing = [m for m, (_, _, ok) in cuts.items() if ok]
            assert passed == bool(passing), "the whole prefix keeps its own activation: some cut always passes"
            assert n == 1 or not cuts[n - 1][2], "the cut one token shorter must fail"
            if passing[0] <= window:
                assert n == passing[0]
                seen["exact in window"] += 1
            elif passing == list(range(passing[0], position + 1)):
                assert n == passing[0]
                seen["monotone beyond window"] += 1
            else:
                seen["assumption broken"] += 1
    assert seen["exact in window"] >= 3 and seen["monotone beyond window"] >= 3, seen


def test_cuts_sharing_a_start_share_a_forward():
    """A candidate that begins a longer one of the same document and start is read from that one's forward."""
    seqs = [[0, 5, 6], [0, 5, 6, 7], [0, 5], [0, 5, 6], [0, 9, 6]]
    origins = [(1, 2), (1, 2), (1, 2), (2, 2), (1, 2)]
    runs, run_of = prompts._merge_prefixes(seqs, origins)
    assert runs == [[0, 5, 6, 7], [0, 5, 6], [0, 9, 6]]  # other document; not a prefix
    assert run_of == [0, 0, 0, 1, 2]


def test_find_activating_prompts_filters(tiny_model, docs, some_neurons):
    found = prompts.find_activating_prompts(tiny_model, docs, some_neurons, k=10, max_tokens=6, keep=3, progress=False)
    assert set(found) == {prompts.neuron_label(n["layer"], n["neuron"]) for n in some_neurons}
    assert any(found.values())
    for entries in found.values():
        assert len(entries) <= 3
        assert len({e["doc"] for e in entries}) == len(entries)  # one prompt per document (texts may repeat)
        assert [e["doc_activation"] for e in entries] == sorted((e["doc_activation"] for e in entries), reverse=True)
        for e in entries:
            assert e["n_tokens"] < 6 and "\n" not in e["text"]
            assert e["activation"] > 0.8 * e["doc_activation"]
    # all neurons' documents truncated together, sharing forwards, get the same cut as one at a time (truncate)
    key, entries = next((k, v) for k, v in found.items() if v)
    layer, neuron = map(int, key.split("."))
    for e in entries:
        alone = prompts.truncate(tiny_model, docs[e["doc"]], layer, neuron, e["position"], max_tokens=6)
        assert alone["text"] == e["text"] and alone["activation"] == pytest.approx(e["activation"], abs=1e-5)


def test_documents_after_a_neurons_last_kept_prompt_are_not_searched(tiny_model, docs, some_neurons, monkeypatch):
    """Keeping ``keep`` prompts searches only as many documents as that takes, and keeps exactly the prompts that
    searching every document would: the first ``keep`` of them."""
    top = prompts.scan_top_documents(tiny_model, docs, some_neurons, k=10, progress=False)
    searched = []
    search = prompts._search_cuts
    monkeypatch.setattr(prompts, "_search_cuts", lambda model, cuts, *args: (searched.extend(cuts), search(model, cuts, *args)))
    every = prompts.find_activating_prompts(tiny_model, docs, some_neurons, k=10, keep=10, top=top, progress=False)
    all_cuts, searched[:] = len(searched), []
    few = prompts.find_activating_prompts(tiny_model, docs, some_neurons, k=10, keep=2, top=top, progress=False)
    assert {key: entries[:2] for key, entries in every.items()} == few
    assert all(len(entries) == 2 for entries in few.values()), "premise: each neuron has more than 2 prompts to keep"
    assert len(searched) < all_cuts / 2, f"{len(searched)} of {all_cuts} documents searched to keep 2 of 10"


def test_a_search_capped_by_max_tokens_tries_the_longest_cut_alone():
    """After the shortest cuts fail, a cut capped at ``max_tokens - 1`` tokens runs only the longest (if it fails,
    no cut passes: one forward); the cut one token shorter rides along only when the longest is the whole prefix,
    whose activation is known and costs nothing."""
    failed = {"passed": False}
    capped = prompts._Cut(list(range(200)), 0, 1, 7, position=150, target=1.0, longest=99, whole=2.0)
    capped.tried = {1: failed, 2: failed}
    capped.lo = 2
    assert capped.next_lengths(2) == [99]
    whole = prompts._Cut(list(range(200)), 0, 1, 7, position=40, target=1.0, longest=40, whole=2.0)
    whole.tried = {1: failed, 2: failed}
    whole.lo = 2
    assert whole.next_lengths(2) == [39, 40]
    capped.tried[99], capped.lo = failed, 99
    assert capped.done and capped.result() is failed


def test_truncating_all_neurons_together_equals_one_at_a_time(tiny_model, docs, some_neurons):
    """Shared forwards (cuts of one document from one start), the scan's activation reused for the whole
    prefix and rounds batched across neurons change no cut: each equals :func:`prompts.truncate` alone."""
    top = prompts.scan_top_documents(tiny_model, docs, some_neurons, k=6, progress=False)
    tops = [{e["doc"] for e in entries} for entries in top.values()]
    assert any(a & b for i, a in enumerate(tops) for b in tops[i + 1 :]), "premise: neurons share top documents"
    found = prompts.find_activating_prompts(tiny_model, docs, some_neurons, k=6, keep=6, top=top, progress=False)
    for key, entries in found.items():
        layer, neuron = map(int, key.split("."))
        assert [e["doc"] for e in entries] == [e["doc"] for e in top[key]]  # here every document keeps a prompt
        for e in entries:
            alone = prompts.truncate(tiny_model, docs[e["doc"]], layer, neuron, e["position"])
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
    chosen = [{"layer": LAYER, "neuron": 0}, {"layer": LAYER, "neuron": 7}]
    with pytest.warns(UserWarning, match="never activate above zero"):
        found = prompts.find_activating_prompts(silenced_model, docs, chosen, progress=False)
    assert found[f"{LAYER}.0"] == [] and found[f"{LAYER}.7"]
    activity = neurons.max_activations(silenced_model, docs, [LAYER], progress=False)
    assert activity[LAYER][0] <= 0 < activity[LAYER][7]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="nothing to keep 80 %"):
            prompts.truncate(silenced_model, docs[0], LAYER, 0, 2)


def test_the_batched_search_equals_the_plain_reference_on_the_organism():
    """On the organism's real top documents the kit's search returns exactly the paper's rule written plainly."""
    from ctx_utils.corpus import load_corpus
    from ctx_utils.neurons import select_next_token_neurons

    model = load_model("organism", device="cpu")
    docs = load_corpus("organism", "train", max_docs=150)
    chosen = select_next_token_neurons(model, per_layer=4)
    top = prompts.scan_top_documents(model, docs, chosen, k=3, progress=False)
    compared = 0
    for key, entries in top.items():
        layer, neuron = map(int, key.split("."))
        for entry in entries:
            if entry["activation"] <= 0:
                continue
            doc = prompts.tokenize(model, [docs[entry["doc"]]])[0]
            fast = prompts.truncate(model, doc, layer, neuron, entry["position"], max_tokens=100)
            plain = prompts.shortest_cut_reference(model, doc, layer, neuron, entry["position"], max_tokens=100)
            assert (fast["start"], fast["text"], fast["passed"]) == (plain["start"], plain["text"], plain["passed"]), key
            assert fast["activation"] == pytest.approx(plain["activation"], abs=1e-5)
            compared += 1
    assert compared >= 8, f"only {compared} documents compared"


@pytest.mark.parametrize("search", ["truncate", "shortest_cut_reference"])
def test_a_cut_that_keeps_exactly_the_ratio_fails(tiny_model, docs, search):
    """The paper keeps *more than* 80 %: a cut at exactly ratio × target is not kept (catches a `>=`)."""
    top = prompts.scan_top_documents(tiny_model, docs, [{"layer": LAYER, "neuron": 7}], k=10, progress=False)
    for entry in top[f"{LAYER}.7"]:
        doc, position = prompts.tokenize(tiny_model, [docs[entry["doc"]]])[0], entry["position"]
        one = prompts.tokenize(tiny_model, [prompts.prompt_text(tiny_model, doc, position, position)])[0]
        a1 = float(activations.last_token_activations(tiny_model, [one], LAYER, 7)[0])
        if a1 > 0 and position >= 3:
            break
    else:
        pytest.fail("no document whose one-token cut fires")
    options = {"window": 1} if search == "truncate" else {}  # the 1-token cut then runs alone, as a1 was measured
    cut = getattr(prompts, search)(tiny_model, doc, LAYER, 7, position, ratio=0.5, target=2 * a1, **options)  # 0.5 × 2a1 = a1
    assert cut["start"] != position, "the one-token cut keeps exactly half of the target and must not pass"

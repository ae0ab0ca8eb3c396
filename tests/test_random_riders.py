"""The random-neuron baseline's candidates ride in the real neurons' forward passes: the same results as alone.

Steps 2 and 5 (held-out) find the candidates' prompts in the passes that find the real neurons' (one scan of the
corpus reads both); the baseline of step 5 then reads them from ``prompts.json`` and ``held_out.json``. Proven
here on the organism against the baseline computed on its own (its own scans and truncations).
"""

from __future__ import annotations

import pytest
import torch

from ctx_utils import pipeline, prompts
from ctx_utils.settings import DEFAULTS

pytestmark = pytest.mark.slow  # a small pipeline run on the organism, twice (about 30 s)

SETTINGS = DEFAULTS.replace(model="organism", corpus="organism", test_corpus="organism", explainer="offline",
                            n_docs=60, max_test_docs=40, activity_docs=40, per_layer=3, random_per_layer=3, top_k=10,
                            keep=8, batch_size=8)


def assert_same(got, expected, path="result"):
    """Equal records: every text, document, position, count and pair exactly; activations (and scores computed
    from them) to float rounding, as the same neuron read in a batch of another shape gives them."""
    assert type(got) is type(expected), path
    if isinstance(expected, dict):
        assert got.keys() == expected.keys(), path
        for key in expected:
            assert_same(got[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, list):
        assert len(got) == len(expected), path
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(expected, float):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=path)
    else:
        assert got == expected, path


@pytest.fixture(scope="module")
def run():
    model = pipeline.model(SETTINGS)
    found = pipeline.compute_neurons(SETTINGS, model)["neurons"]
    top = pipeline.scan(SETTINGS, model, found)
    step2 = pipeline.compute_prompts(SETTINGS, model, found, top)
    pairs = pipeline.compute_heads(SETTINGS, model, found, step2["prompts"])["pairs"]
    held = pipeline.compute_held_out(SETTINGS, model, pipeline.pair_neurons(found, pairs), step2["prompts"])
    explained = pipeline.compute_explanations(SETTINGS, pairs, step2["prompts"])["pairs"]
    return {"model": model, "neurons": found, "top": top, "step2": step2, "held": held, "explained": explained}


def test_the_scan_of_the_real_neurons_is_the_same_with_riders(run):
    alone = prompts.scan_top_documents(run["model"], pipeline.documents(SETTINGS), run["neurons"],
                                     k=SETTINGS.top_k, batch_size=SETTINGS.batch_size, progress=False)
    assert dict(run["top"]) == alone
    assert set(run["top"].random) == set(pipeline._labels(pipeline.random_candidates(SETTINGS, run["model"])))


def test_the_real_neurons_prompts_are_the_same_with_riders(run):
    alone = pipeline._find_prompts(SETTINGS, run["model"], pipeline.documents(SETTINGS), run["neurons"])
    assert_same(run["step2"]["prompts"], alone)


def test_the_baseline_from_the_shared_passes_equals_the_baseline_alone(run):
    saved = (run["step2"]["random"], run["held"]["random"])
    assert any(saved[0]["prompts"].values()) and any(saved[1]["prompts"].values()), "the candidates must keep prompts"
    shared = pipeline.random_baseline(SETTINGS, run["model"], run["explained"], saved=saved)
    alone = pipeline.random_baseline(SETTINGS, run["model"], run["explained"])
    assert shared["n_pairs"] > 0, "the comparison must reach the held-out step"
    assert_same(shared, alone)


def test_a_record_for_other_candidates_is_not_used(run):
    other = SETTINGS.replace(random_seed=1)
    assert not pipeline._same_candidates(other, run["step2"]["random"])
    assert pipeline._same_candidates(SETTINGS, run["step2"]["random"])


def test_the_draw_is_uniform_per_layer_and_seeded():
    candidates = [{"layer": l, "neuron": n} for l in (1, 2) for n in range(10)]
    drawn = pipeline._draw(candidates, [2], 4, seed=0)
    assert len(drawn) == 4 and all(n["layer"] == 2 for n in drawn)
    assert drawn == pipeline._draw(candidates, [2], 4, seed=0) != pipeline._draw(candidates, [2], 4, seed=1)
    assert pipeline._draw(candidates, [1, 2], 10, seed=0) == candidates  # all of them when per_layer covers them

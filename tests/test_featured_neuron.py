"""The neuron a notebook features must have kept prompts (notebook 02 once featured ``neurons[0]``, which on a
GPT-2-small-sized model kept none, and crashed in its first picture)."""

import pytest

from ctx_utils import pipeline
from ctx_utils.settings import load_settings


def _neuron(layer: int, neuron: int, token: str) -> dict:
    return {"layer": layer, "neuron": neuron, "token": token}


def test_a_first_neuron_without_prompts_is_skipped():
    settings = load_settings({}, model="gpt2-small")  # no answer key: the first neuron that kept prompts
    neurons = [_neuron(11, 1, " the"), _neuron(11, 2, " only"), _neuron(10, 3, " as")]
    prompt_sets = {"11.1": [], "11.2": [{"text": "for research purposes"}], "10.3": [{"text": "as early"}]}
    assert pipeline.featured_neuron(settings, neurons, prompt_sets) == neurons[1]


def test_on_an_organism_a_planted_tokens_neuron_is_featured():
    from ctx_utils.organism import answer_key

    settings = load_settings({}, model="organism")
    planted = sorted(answer_key.learned_tokens(answer_key.load_answer_key("organism")))[0]
    neurons = [_neuron(1, 1, " unplanted"), _neuron(1, 2, planted)]
    prompt_sets = {"1.1": [{"text": "a"}], "1.2": [{"text": "b"}]}
    assert pipeline.featured_neuron(settings, neurons, prompt_sets) == neurons[1]


def test_no_neuron_with_prompts_names_the_fix():
    settings = load_settings({}, model="gpt2-small")
    with pytest.raises(ValueError, match="N_DOCS"):
        pipeline.featured_neuron(settings, [_neuron(1, 1, " a")], {"1.1": []})

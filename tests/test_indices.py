"""Layer, neuron and head indices: one check for every step function (issue 11, item 8).

numpy and torch integers are what a DataFrame or an ``argmax`` hands back; they must work like ints. A
negative index must not silently mean "the last one", and a bool or a float must not pass as an index.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctx_utils import ablate, activations, heads, neurons, prompts
from ctx_utils.indices import as_index, check_heads, check_layer, check_neuron
from ctx_utils.tokens import tokenize

PROMPTS = ["the cat sat on the mat", "for research purposes", "as early as such"]


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3), torch.tensor(3)])
def test_integer_types_are_accepted_as_plain_ints(value):
    index = as_index(value, "Layer")
    assert index == 3 and type(index) is int


@pytest.mark.parametrize("value", [True, np.bool_(False), torch.tensor(True), 1.0, np.float64(1.0), "1", None, torch.tensor([1, 2])])
def test_bools_floats_and_strings_are_not_indices(value):
    with pytest.raises(TypeError, match=r"Neuron must be a whole number such as 3, got"):
        as_index(value, "Neuron")


def test_negative_indices_are_refused(tiny_model):
    with pytest.raises(ValueError, match=r"Neuron -1 is out of range: indices count from 0"):
        check_neuron(tiny_model, 1, -1)
    with pytest.raises(ValueError, match=r"Layer -1 is out of range"):
        check_layer(tiny_model, np.int64(-1))
    with pytest.raises(ValueError, match=r"a \(layer, head_index\) pair of integers"):
        check_heads(tiny_model, [(0, -1)])


def test_numpy_indices_work_in_every_step(tiny_model):
    """np.int64(1) used to be reported as "out of range"."""
    layer, neuron = np.int64(1), np.int64(3)
    assert check_neuron(tiny_model, layer, neuron) == (1, 3)
    torch.testing.assert_close(neurons.congruence(tiny_model, layer)[0], neurons.congruence(tiny_model, 1)[0])
    assert neurons.vocab_moments(tiny_model, layer, np.array([3, 5]))["neurons"] == [3, 5]
    torch.testing.assert_close(heads.head_attributions(tiny_model, PROMPTS, layer, neuron), heads.head_attributions(tiny_model, PROMPTS, 1, 3))
    seqs = tokenize(tiny_model, PROMPTS)
    torch.testing.assert_close(activations.last_token_activations(tiny_model, seqs, layer, neuron),
                               activations.last_token_activations(tiny_model, seqs, 1, 3))
    assert activations.token_activations(tiny_model, PROMPTS[0], layer, neuron)[1].shape == (6,)
    readout = [ablate.last_token_readout(tiny_model, PROMPTS, heads_, neuron_, logits=False)["activation"]
               for heads_, neuron_ in (([(np.int64(0), np.int64(2))], (layer, neuron)), ([(0, 2)], (1, 3)))]
    torch.testing.assert_close(*readout)
    assert heads.split_head(tiny_model, np.int64(6)) == (1, 2) and heads.head_label(tiny_model, torch.tensor(6)) == "L1.H2"
    top = prompts.scan_top_documents(tiny_model, PROMPTS, [{"layer": torch.tensor(1), "neuron": neuron}], k=2, progress=False)
    assert list(top) == ["1.3"]  # the result key, not "tensor(1).3"


def test_the_functions_that_skipped_the_checks_now_name_the_range(tiny_model):
    """activations.last_token_activations and heads.read_directions failed with a bare IndexError / KeyError."""
    seqs = tokenize(tiny_model, PROMPTS)
    with pytest.raises(ValueError, match=r"Neuron 999 is out of range: each MLP layer has neurons 0 to 127"):
        activations.last_token_activations(tiny_model, seqs, 1, 999)
    with pytest.raises(ValueError, match=r"Layer 5 is out of range: this model has layers 0 to 1"):
        heads.read_directions(tiny_model, 5, 0)
    with pytest.raises(ValueError, match="include_same_layer=True"):
        heads.read_directions(tiny_model, 0, 0)
    with pytest.raises(ValueError, match=r"Neuron -2 is out of range"):
        neurons.vocab_moments(tiny_model, 1, [-2])
    with pytest.raises(ValueError, match=r"Neuron -1 is out of range"):
        activations.neuron_post(tiny_model, seqs, {1: torch.tensor([-1])})
    with pytest.raises(ValueError, match=r"Layer 2 is out of range"):
        activations.mlp_post(tiny_model, seqs, [2])
    with pytest.raises(TypeError, match=r"A flat head number must be a whole number"):
        heads.split_head(tiny_model, 1.5)
    with pytest.raises(TypeError, match=r"Neuron must be a whole number"):
        prompts.truncate(tiny_model, seqs[0], 1, True, 2, target=1.0)
    with pytest.raises(TypeError, match=r"Neuron must be a whole number"):
        prompts.shortest_cut_reference(tiny_model, seqs[0], 1, True, 2, target=1.0)

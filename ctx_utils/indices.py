"""The integers that name parts of a model: layers, MLP neurons, attention heads — checked in one place.

Every step function checks its indices here before it runs anything, so a bad index fails at once with the
valid range instead of deep inside a forward pass. Python ints and numpy / torch integer scalars
(``np.int64`` from a DataFrame, a 0-d tensor from ``argmax``) are accepted and returned as plain ints;
``bool``, floats and negative numbers are refused: a negative index would silently mean the last neuron.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # the model type, for readers and type checkers; not imported at run time
    from transformer_lens.model_bridge import TransformerBridge


def as_index(value: object, what: str) -> int:
    """``value`` as a plain int ≥ 0; ``what`` names it in the error (``"Layer"``, ``"Neuron"``)."""
    is_bool = isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool)
    try:
        if is_bool:
            raise TypeError
        index = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be a whole number such as 3, got {value!r} ({type(value).__name__}).") from None
    if index < 0:
        raise ValueError(f"{what} {index} is out of range: indices count from 0 (a negative one is not 'from the end' here).")
    return index


def check_layer(model: TransformerBridge, layer: object) -> int:
    """``layer`` as an int, or a clear error when it is not a layer of ``model``."""
    index = as_index(layer, "Layer")
    n_layers = model.cfg.n_layers
    if index >= n_layers:
        raise ValueError(f"Layer {index} is out of range: this model has layers 0 to {n_layers - 1}.")
    return index


def check_neuron(model: TransformerBridge, layer: object, neuron: object) -> tuple[int, int]:
    """``(layer, neuron)`` as ints, or a clear error when it is not an MLP neuron of ``model``."""
    layer = check_layer(model, layer)
    index = as_index(neuron, "Neuron")
    d_mlp = model.cfg.d_mlp
    if index >= d_mlp:
        raise ValueError(f"Neuron {index} is out of range: each MLP layer has neurons 0 to {d_mlp - 1}.")
    return layer, index


def check_heads(model: TransformerBridge, heads: Sequence[Sequence[object]]) -> list[tuple[int, int]]:
    """Validate ``(layer, head_index)`` pairs against the model's shape; returns them as a list of int tuples."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    checked = []
    for item in heads:
        try:
            layer, index = (as_index(part, "A head's layer and index") for part in item)
        except (TypeError, ValueError):
            message = f"A head is a (layer, head_index) pair of integers ≥ 0 such as (0, 3), got {item!r}."
            raise ValueError(message) from None
        if not (layer < n_layers and index < n_heads):
            raise ValueError(
                f"Head {item!r} does not exist: this model has layers 0–{n_layers - 1} and heads 0–{n_heads - 1} "
                "per layer. (A flat head number f is (f // n_heads, f % n_heads).)"
            )
        checked.append((layer, index))
    return checked

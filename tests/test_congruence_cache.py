"""The vocabulary projection (congruence and moments) is computed once per model and layer, and again only when
the weights change; the moments come from the same product."""

from __future__ import annotations

import torch

from ctx_utils import neurons
from ctx_utils.session import SESSION


def test_congruence_is_computed_once_and_again_after_an_edit(tiny_model, monkeypatch):
    computed = []
    real = neurons._project
    monkeypatch.setattr(neurons, "_project", lambda w_out, w_u, moments: computed.append(1) or real(w_out, w_u, moments))
    monkeypatch.setattr(SESSION.cache_of(tiny_model), "vocab", {})  # none computed yet
    first = neurons.congruence(tiny_model, 1)
    first[0][0] = 1e9  # the caller's copy: the saved result is not changed through it
    again = neurons.congruence(tiny_model, 1)
    assert len(computed) == 1 and float(again[0][0]) != 1e9
    reference = (tiny_model.blocks[1].mlp.W_out @ tiny_model.W_U).max(dim=-1)
    torch.testing.assert_close(again[0], reference.values.float())
    assert torch.equal(again[1], reference.indices)
    w_out = tiny_model.blocks[1].mlp.W_out
    kept = w_out[0].clone()
    with torch.no_grad():
        w_out[0] += 10.0  # an edit in place: the next call must see it
        try:
            edited = neurons.congruence(tiny_model, 1)
            assert len(computed) == 2
            torch.testing.assert_close(edited[0], (w_out @ tiny_model.W_U).max(dim=-1).values.float())
        finally:
            w_out[0] = kept  # the session's model, exactly as it was


def test_the_moments_come_from_the_congruences_product(tiny_model, monkeypatch):
    """Notebook 01 reads the congruence, then the skew and kurtosis: one product per layer serves both."""
    computed = []
    real = neurons._project
    monkeypatch.setattr(neurons, "_project", lambda w_out, w_u, moments: computed.append(moments) or real(w_out, w_u, moments))
    monkeypatch.setattr(SESSION.cache_of(tiny_model), "vocab", {})
    neurons.congruence(tiny_model, 1)
    moments = neurons.vocab_moments(tiny_model, 1)
    assert computed == [True] and moments["skew"].shape == (tiny_model.cfg.d_mlp,)

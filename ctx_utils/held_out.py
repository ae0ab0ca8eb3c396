"""Step 5's test set: steps 2-3 again on held-out documents, the prompts an explanation is scored on.

An explanation is written from a neuron's training prompts (step 4) and scored (step 5, :mod:`ctx_utils.score`) on
prompts it never saw: the same scan, truncation and filter (step 2, :func:`ctx_utils.prompts.find_activating_prompts`)
on held-out documents, then :func:`held_out_set`: the same active-head rule (step 3) for the ground truth, so
"active" means on a held-out prompt what it meant on a training one (``pipeline.compute_held_out`` runs both). Step 6
ablates on the same set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ctx_utils.heads import active_heads, attribute_neurons
from ctx_utils.settings import DEFAULTS

if TYPE_CHECKING:  # the model type, for readers and type checkers; not imported at run time
    from transformer_lens.model_bridge import TransformerBridge


def held_out_set(
    model: TransformerBridge,
    neurons: Sequence[dict[str, Any]],
    found: dict[str, list[dict]],
    training: dict[str, list[dict]],
    rule: str = DEFAULTS.rule,
    include_same_layer: bool = DEFAULTS.same_layer,
    batch_size: int = DEFAULTS.batch_size,
) -> dict[str, dict[str, list]]:
    """Step 3 again, on held-out prompts: each neuron's held-out prompts and the heads active on each.

    ``found``: the neurons' prompts on the held-out documents, found by step 2 with the training sizes
    (:func:`ctx_utils.prompts.find_activating_prompts`, prompts.json's shape). The active-head ``rule`` is the
    training one, so the ground truth means what the positives of step 3 meant. A held-out prompt whose text
    equals one of the neuron's ``training`` prompts (prompts.json: what the explainer saw) is removed: a short
    context truncates to the same words in both splits, and scoring an explanation on a prompt it was written
    from is no test. Returns ``{"prompts": {label: [prompts.json entries]}, "active": {label: [[flat heads
    active on prompt i], ...]}, "removed": {label: count}}`` keyed ``"<layer>.<neuron>"`` (held_out.json); a
    neuron with no held-out prompt gets empty lists. Steps 5 (E) and 6 (ablation) read the same set.
    """
    found, removed = drop_training_duplicates(found, training)
    attributions = attribute_neurons(model, list(neurons), found, include_same_layer, batch_size)
    active = {label: [row.nonzero().flatten().tolist() for row in active_heads(attr, rule)] for label, attr in attributions.items()}
    return {"prompts": found, "active": {label: active.get(label, []) for label in found}, "removed": removed}


def drop_training_duplicates(held: dict[str, list[dict]], training: dict[str, list[dict]]
                             ) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """``held`` without the prompts whose text is one of the same neuron's ``training`` prompts, and how many
    each neuron lost (prompts of another neuron may repeat: they were never shown with this neuron's head)."""
    kept, removed = {}, {}
    for label, entries in held.items():
        seen = {e["text"] for e in training.get(label, [])}
        kept[label] = [e for e in entries if e["text"] not in seen]
        removed[label] = len(entries) - len(kept[label])
    return kept, removed

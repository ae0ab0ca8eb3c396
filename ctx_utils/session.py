"""What the kit remembers between calls in this Python process, in one object: :data:`SESSION`.

A notebook kernel, the pipeline script and a test worker are each one process. Whatever the kit keeps from one
call to the next lives in the one :class:`Session` below and nowhere else, so a reader who wants to know what a
call may reuse reads this module. Everything in it is rebuilt when missing: it makes calls faster, never different.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # types for readers and type checkers; this module imports nothing heavy
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    #: A model's SDPA twin and its MLP activation modules, one per layer (:func:`ctx_utils.models.sdpa_twin`).
    Twin = tuple[torch.nn.Module, list[torch.nn.Module]]


@dataclass(eq=False)
class ModelCache:
    """What the kit keeps for one loaded model, for as long as that model lives (:meth:`Session.cache_of`)."""

    #: The folder or hub id :func:`ctx_utils.models.load_model` read the model from; None for a bridge the kit did
    #: not load. The SDPA twin is loaded from the same place.
    source: str | None = None
    #: The SDPA twin (:func:`ctx_utils.models.sdpa_twin`): None until first asked for, then the twin, or False
    #: where it cannot stand in for the bridge (the bridge then runs). Building it costs what loading the model does.
    twin: Twin | Literal[False] | None = None
    #: Each layer's neurons projected on the vocabulary (:func:`ctx_utils.neurons.vocab_projection`: the congruence
    #: and Gurnee et al.'s moments), beside the identity of the weights it was computed from: seconds per layer
    #: on GPT-2, read by step 1, its exercise and notebook 01's figures.
    vocab: dict[int, tuple[tuple, object]] = field(default_factory=dict)  # object: a neurons.VocabProjection


class Session:
    """Everything the kit keeps between calls in this process, and why each exists.

    * ``models``: each model :func:`ctx_utils.pipeline.model` loaded, by ``(name, device)``, so that a notebook's
      own cells and the pipeline's steps share one copy (GPT-2 small takes seconds and 0.5 GB to load).
    * :meth:`cache_of` a model: its :class:`ModelCache` (where it came from, its SDPA twin, its vocabulary projections).
      These are held by weak reference to the model: when the last user drops a model, they go with it.
    * ``depth``: how many load-or-compute calls of :mod:`ctx_utils.pipeline` are running, one inside the other,
      so that only the outer one prints "loaded" and each inner line is indented under the step that needed it.
    * ``viz_mode``: how circuitsvis views get their JavaScript, once :func:`ctx_utils.viz.set_mode` chose it
      (None: ``CTX_VIZ_MODE``, else ``"auto"``); ``bundle_output``: the (cell id, request id) of the output that
      carried the bundle, so later views reuse it (None: not sent yet, :func:`ctx_utils.viz.reset_bundle`).

    :meth:`clear` forgets all of it, e.g. to free the memory of the loaded models before loading a larger one in
    the same kernel (drop your own ``model`` variable too). A model loaded before then loses its SDPA twin
    (the bridge's slower forward still gives the same numbers): load it again.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget every model, every cache and the display state, as in a fresh process."""
        self.models: dict[tuple[str, str], TransformerBridge] = {}
        self._per_model: weakref.WeakKeyDictionary[TransformerBridge, ModelCache] = weakref.WeakKeyDictionary()
        self.depth = 0
        self.viz_mode: str | None = None
        self.bundle_output: tuple[str | None, str | None] | None = None

    def cache_of(self, model: TransformerBridge) -> ModelCache:
        """``model``'s :class:`ModelCache`, made empty on first use and dropped when ``model`` is."""
        cache = self._per_model.get(model)
        if cache is None:
            cache = self._per_model[model] = ModelCache()
        return cache


#: The one session of this process.
SESSION = Session()

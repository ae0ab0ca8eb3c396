"""The realistic organism's wiring: heads with roles, among which the look-up heads have to be *found*.

The clean organism (:mod:`ctx_utils.organism.wiring`) gives every context its own head and lets no other
head write anything, so step 3 cannot fail. Here :data:`ctx_utils.organism.config.REALISTIC_HEADS` gives 16
layer-0 heads a role each, and only the *inputs* are wired; what the heads compute is learned.

Residual dimensions are reserved as in the clean wiring, two per **slot** (a slot's words are embedded as
``(+a, -a)`` there and zero elsewhere; every other token and every position is zero on reserved dimensions
and has zero mean, so layer norm cannot smear one slot into another):

* **Slots** (:func:`slot_names`): per planted token, its local word, its topic words (a family shares one
  slot), its inhibitor word (if any) and its trigger word; then the planted tokens themselves.
* **Reads.** A head's queries and keys read the plain dimensions (other words, positions) and its own slots;
  its values read its slots only (a ``free`` head: plain dimensions only). So a head can carry a context
  only if its role lets it read that context's words, and several heads may read the same word.
* **Writes.** Every head writes plain dimensions only, except **decoys**, which write only into
  ``decoy_dims`` dimensions right after the slots.
* **The planted neurons** (layer-1 neuron ``i`` for planted token ``i``) read plain dimensions only: not the
  slots and not the decoy dimensions. The trigger word is embedded in a slot, so a planted neuron learns that
  its trigger is here only through the **trigger head**, which reads the four trigger slots: that head is
  needed on every prompt of every planted neuron, and active on all of them. Decoys attend to a marker and
  write what no planted neuron reads. Neuron ``i`` is the only writer of planted token ``i`` (pinned output),
  as in the clean wiring, so the next-token neurons are known.
* **Tied heads** (the same ``tie``) share value and output weights: a redundant pair sends the same message.

Learned: where every head attends, what the free heads do, every neuron's input weights (so which heads a
planted neuron listens to, with which sign: the inhibitor head is only *allowed* to inhibit), biases, the
markers' sizes. Which heads carry a context is therefore measured on the trained model
(:mod:`ctx_utils.organism.answer_key`), not read off this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctx_utils.organism.config import OrganismConfig
from ctx_utils.organism.wiring import _columns, _output_rows, _value_columns, project_embeddings, slot_dims


def slot_names(config: OrganismConfig) -> tuple[list[str], dict[str, list[str]]]:
    """(slot names in order, words per slot): marker and trigger slots first, then one slot per planted token."""
    words: dict[str, list[str]] = {}
    for plant in config.corpus.plants:
        tok = plant.token.strip()
        words[f"{tok}/local"] = [plant.local_word]
        words[f"{tok}/topic"] = list(plant.topic_words)
        if plant.inhibitor_word:
            words[f"{tok}/inhibited"] = [plant.inhibitor_word]
        words[f"{tok}/trigger"] = [plant.trigger]
    for plant in config.corpus.plants:
        words[f"{plant.token.strip()}/token"] = [plant.token]
    return list(words), words


@dataclass(frozen=True)
class RoleWiring:
    """Token ids per slot, the slots each head reads, and the planted tokens (neuron ``i`` writes ``planted[i]``)."""

    slot_of: dict[int, int]  # token id (both spellings of a word) -> slot
    names: tuple[str, ...]  # slot s's name
    head_slots: tuple[tuple[int, ...], ...]  # per head, the slots it reads
    roles: tuple[str, ...]  # per head, its role
    tied: tuple[tuple[int, ...], ...]  # groups of heads sharing value and output weights
    planted: tuple[int, ...]
    decoy_dims: int
    neuron_scale: float

    @property
    def n_slots(self) -> int:
        return len(self.names)

    @property
    def token_slots(self) -> range:
        return range(self.n_slots - len(self.planted), self.n_slots)

    @property
    def decoy_range(self) -> range:
        """The residual dimensions only decoy heads write."""
        return range(2 * self.n_slots, 2 * self.n_slots + self.decoy_dims)

    @property
    def reserved(self) -> int:
        """Residual dimensions ``[0, reserved)``: slots, then decoy dimensions; the rest are plain."""
        return 2 * self.n_slots + self.decoy_dims


def build_roles(tokenizer, config: OrganismConfig, planted: list[int]) -> RoleWiring:
    """The wiring of ``config.heads`` for this tokenizer; ``planted`` are the planted tokens' ids in plant order."""
    names, words = slot_names(config)
    slot_of: dict[int, int] = {}
    for slot, name in enumerate(names):
        for word in words[name]:
            for form in (word.strip(), "Ġ" + word.strip()):
                token = tokenizer.convert_tokens_to_ids(form)
                if token in slot_of:
                    raise ValueError(f"{form!r} is in two slots ({names[slot_of[token]]}, {name}): give each word one role.")
                slot_of[token] = slot
    index = {name: s for s, name in enumerate(names)}
    unknown = sorted({r for h in config.heads for r in h.reads} - set(index))
    if unknown:
        raise ValueError(f"Head roles read unknown slots {unknown}: slots are {names}.")
    groups: dict[str, list[int]] = {}
    for h, role in enumerate(config.heads):
        if role.tie:
            groups.setdefault(role.tie, []).append(h)
    for tie, members in groups.items():
        if len({config.heads[h].reads for h in members}) != 1:
            raise ValueError(f"Tied heads {members} ({tie!r}) must read the same slots to share value weights.")
    return RoleWiring(
        slot_of, tuple(names), tuple(tuple(index[r] for r in h.reads) for h in config.heads),
        tuple(h.role for h in config.heads), tuple(tuple(m) for m in groups.values() if len(m) > 1),
        tuple(planted), config.decoy_dims, config.hparams["planted_scale"],
    )


def _dims(slots) -> list[int]:
    return [d for s in slots for d in slot_dims(s)]


@torch.no_grad()
def init_roles(model, wiring: RoleWiring, size: float, seek: float = 2**0.5) -> None:
    """Start slotted words at ``(+size, -size)/√2``, slot-reading heads looking for their words, neurons listening.

    A look-up, inhibitor or decoy head gets a query bias ``seek·u`` and keys ``(+seek·u, -seek·u)`` on its slots
    (it looks for its words anywhere); the trigger head gets queries *and* keys on the trigger slots (a trigger
    looks at triggers, itself first). Planted neuron ``i`` starts with part of its input along the messages of
    its token's look-up heads and trigger, and against its inhibitor's (see :func:`_init_neuron_inputs`).
    """
    wte = model.transformer.wte.weight  # [vocab, d_model]
    for token, slot in wiring.slot_of.items():
        wte[token, slot_dims(slot)] = torch.tensor([size, -size]) / 2**0.5
    weight, bias = model.transformer.h[0].attn.c_attn.weight, model.transformer.h[0].attn.c_attn.bias
    d_head = model.config.n_embd // model.config.n_head
    for head, (role, slots) in enumerate(zip(wiring.roles, wiring.head_slots)):
        if role == "free":
            continue
        u = torch.randn(d_head)
        u /= u.norm()
        pattern = torch.stack([seek * u, -seek * u])  # [2, d_head]
        for slot in slots:
            weight[slot_dims(slot), _columns(model, head, 1)] = pattern
            if role == "trigger":
                weight[slot_dims(slot), _columns(model, head, 0)] = pattern
        if role != "trigger":
            bias[_columns(model, head, 0)] = seek * u
    apply_roles(model, wiring)
    _init_neuron_inputs(model, wiring)


def _message(model, wiring: RoleWiring, head: int, slot: int) -> torch.Tensor:
    """What ``head`` writes when it attends fully to a word of ``slot``: ``[d_model]``."""
    weight = model.transformer.h[0].attn.c_attn.weight
    out = model.transformer.h[0].attn.c_proj.weight
    marker = torch.tensor([1.0, -1.0]) / 2**0.5
    return marker @ weight[slot_dims(slot), _value_columns(model, head)] @ out[_output_rows(model, head)]


def _init_neuron_inputs(model, wiring: RoleWiring) -> None:
    """Planted neuron ``i``: + its look-up heads' and trigger's messages, − its inhibitor's (unit vectors each).

    With random signs, half the look-up heads of the clean organism started out inhibiting their neuron and
    never recovered (see :mod:`ctx_utils.organism.wiring`); the same start is given to every head here.
    """
    inputs = model.transformer.h[1].mlp.c_fc.weight  # Conv1D: [d_model, d_mlp]
    for i in range(len(wiring.planted)):
        tok = wiring.names[wiring.token_slots[i]].split("/")[0]
        for head, (role, slots) in enumerate(zip(wiring.roles, wiring.head_slots)):
            for slot in slots:
                name = wiring.names[slot]
                if not name.startswith(tok + "/") or role == "decoy":
                    continue
                message = _message(model, wiring, head, slot)
                inputs[:, i] += (-1 if role == "inhibitor" else 1) * message / message.norm()


@torch.no_grad()
def apply_roles(model, wiring: RoleWiring) -> None:
    """Project the weights back onto the roles' wiring (called after every optimiser step)."""
    if model.config.n_head != len(wiring.roles):
        raise ValueError(f"The wiring has {len(wiring.roles)} head roles; the model has {model.config.n_head} heads.")
    r = wiring.reserved
    project_embeddings(model, r, wiring.slot_of)

    block = model.transformer.h[0]
    block.ln_1.bias[:r] = 0
    weight, bias = block.attn.c_attn.weight, block.attn.c_attn.bias  # [d_model, 3·d_model], [3·d_model]
    out, out_bias = block.attn.c_proj.weight, block.attn.c_proj.bias  # [heads·d_head, d_model], [d_model]
    for head, (role, slots) in enumerate(zip(wiring.roles, wiring.head_slots)):
        own = _dims(slots)
        hidden = [d for d in range(r) if d not in own]
        for part in (0, 1):  # queries and keys: plain dimensions and the head's own slots
            weight[hidden, _columns(model, head, part)] = 0
        cols = _value_columns(model, head)
        if role == "free":  # values: plain dimensions only
            weight[:r, cols] = 0
        else:  # values: the head's own slots only, no bias (no word of its slots in view, no output)
            keep = weight[own, cols].clone()
            weight[:, cols] = 0
            weight[own, cols] = keep
            bias[cols] = 0
        rows = _output_rows(model, head)
        if role == "decoy":  # writes only into the decoy dimensions
            keep = out[rows][:, list(wiring.decoy_range)].clone()
            out[rows] = 0
            out[rows, wiring.decoy_range.start : wiring.decoy_range.stop] = keep
        else:
            out[rows, :r] = 0
    out_bias[:r] = 0
    _tie(model, wiring)

    mlp = model.transformer.h[1].mlp
    n_planted = len(wiring.planted)
    mlp.c_fc.weight[:r, :n_planted] = 0  # planted neurons read plain dimensions only
    rows = mlp.c_proj.weight  # [d_mlp, d_model]
    token_dims = _dims(wiring.token_slots)
    rows[:, token_dims] = 0
    mlp.c_proj.bias[token_dims] = 0
    wte = model.transformer.wte.weight  # tied: a token's embedding is its unembedding direction
    for i, token in enumerate(wiring.planted):
        rows[i] = wiring.neuron_scale * wte[token] / wte[token].norm()


def _tie(model, wiring: RoleWiring) -> None:
    """Average each tied group's value and output weights, and give them to every member."""
    weight = model.transformer.h[0].attn.c_attn.weight
    out = model.transformer.h[0].attn.c_proj.weight
    for group in wiring.tied:
        own = _dims(wiring.head_slots[group[0]])
        values = torch.stack([weight[own, _value_columns(model, h)] for h in group]).mean(0)
        outputs = torch.stack([out[_output_rows(model, h)] for h in group]).mean(0)
        for h in group:
            weight[own, _value_columns(model, h)] = values
            out[_output_rows(model, h)] = outputs

"""The organism's planted wiring: each planted context owns one layer-0 head, and only that head can see it.

Why wire it: trained freely, the organism spread every context over several layer-0 heads (six trained
variants, see ``train.py``), so there was no single "right" head for the pipeline to find and no ablation
that removed a context. A model organism is useful when its answer key is exact, so this module fixes *which*
head carries each context, and leaves everything else to training.

The residual stream's first dimensions are reserved, two per **slot** (a slot's tokens are embedded as
``(+a, -a)`` there and zero everywhere else, so every embedding keeps zero mean):

* **Context slots** ``0 … C-1``: slot ``c`` holds context ``c``'s marker word (the local word such as
  " never", or the topic word such as " marathon"; :func:`ctx_utils.organism.corpus.context_markers` gives
  the order). **Only layer-0 head ``c`` reads it**: its queries, keys and values read slot ``c`` and no other
  slot, and value biases are zero. Head ``c`` starts out looking for its marker anywhere (query bias and key
  weights initialised so, :func:`init_wiring`; without that, trials found half the heads parked on " the"
  and never found their marker); where it finally attends is learned — the local heads must learn to prefer
  the previous position, because their word also occurs elsewhere. Planted neuron ``i`` likewise starts
  with part of its input weights along its heads' output, so that the look-up excites it from the start.
* **Token slots** ``C … C+T-1``: slot ``C + i`` holds planted token ``i`` (" up"), and **layer-1 neuron
  ``i`` is the only writer of it**: its output weights are pinned to the token's (tied) unembedding, with
  norm ``neuron_scale``, and no other neuron and no head writes into a token slot. So the paper's path
  head → next-token neuron → token is the *only* way to predict a planted token, and the neuron must fire
  exactly when its token is due (firing after a distractor costs loss) — *when* that is, it has to learn.
* **Nothing leaks.** Every other token and every position is zero on reserved dimensions and has zero mean,
  so layer norm's centring is the identity and cannot smear one slot into another; layer-norm biases on
  reserved dimensions are zero; the attention output bias is zero. A head whose marker is absent outputs
  exactly zero, and marker ``c`` reaches a later position only through head ``c``.
* **Tied pairs.** The two heads of one planted token share value and output weights and their markers share
  ``a``: both contexts send the neuron the same message, so it fires about equally for either and its top
  prompts mix both — as a real look-up neuron's prompts mix its contexts.

Everything the pipeline measures is still learned: which layer-1 neuron fires, when (trigger *and* context),
how strongly, and where each head attends. The answer key (``ground_truth.json``) names each context's head.
The constraints are applied by projection after every optimiser step (:func:`apply_wiring`), like the
planted output weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def slot_dims(slot: int) -> list[int]:
    """The two residual dimensions of a slot: its tokens are embedded as ``(+a, -a)`` there."""
    return [2 * slot, 2 * slot + 1]


@dataclass(frozen=True)
class Wiring:
    """Which token ids live in which slot, and which heads share their weights."""

    slot_of: dict[int, int]  # token id -> slot (context slots first: slot c is read by layer-0 head c)
    n_contexts: int
    n_slots: int
    tied: tuple[tuple[int, ...], ...]  # groups of heads (the contexts of one planted token)
    planted: tuple[int, ...]  # token ids of the planted tokens (" up", with its space): neuron i writes planted[i]
    neuron_scale: float  # norm of planted neuron i's output weights

    @property
    def token_slots(self) -> range:
        """The slots of the planted tokens, in order: planted token ``i`` is written by layer-1 neuron ``i``."""
        return range(self.n_contexts, self.n_slots)

    @property
    def reserved(self) -> int:
        """Residual dimensions ``[0, reserved)`` belong to slots."""
        return 2 * self.n_slots


def build_wiring(
    tokenizer, markers: list[str], planted: list[int], tied: tuple[tuple[int, ...], ...], neuron_scale: float
) -> Wiring:
    """Slots for the context ``markers`` (slot = head), then the ``planted`` token ids; markers in both spellings."""
    slot_of: dict[int, int] = {}
    for slot, word in enumerate(markers):
        for form in (word.strip(), "Ġ" + word.strip()):
            slot_of[tokenizer.convert_tokens_to_ids(form)] = slot
    for i, token in enumerate(planted):
        if token in slot_of:
            raise ValueError(f"Planted token {tokenizer.convert_ids_to_tokens(token)!r} is also a marker; each needs its own slot.")
        slot_of[token] = len(markers) + i
    return Wiring(slot_of, len(markers), len(markers) + len(planted), tied, tuple(planted), neuron_scale)


def _columns(model, head: int, part: int) -> slice:
    """Columns of ``c_attn`` (a Conv1D: [d_model, 3·d_model] = q | k | v) of head ``head``'s part 0 (q), 1 (k) or 2 (v)."""
    d_model, d_head = model.config.n_embd, model.config.n_embd // model.config.n_head
    start = part * d_model + head * d_head
    return slice(start, start + d_head)


def _value_columns(model, head: int) -> slice:
    """Columns of ``c_attn`` holding head ``head``'s value weights."""
    return _columns(model, head, 2)


def _output_rows(model, head: int) -> slice:
    """Rows of the attention ``c_proj`` (a Conv1D: [heads·d_head, d_model]) holding head ``head``'s W_O."""
    d_head = model.config.n_embd // model.config.n_head
    return slice(head * d_head, (head + 1) * d_head)


@torch.no_grad()
def init_wiring(model, wiring: Wiring, size: float, seek: float = 2**0.5) -> None:
    """Start every slotted token at ``(+size, -size)/√2`` and every context head looking for its marker.

    Head ``c`` gets a query bias ``seek·u`` and key weights ``(+seek·u, -seek·u)`` on slot ``c`` (``u`` a
    random unit vector), so its marker scores about ``+2`` more than other tokens from the first step on.
    (Trials that started only the topic heads this way left the local heads weaker than the topic ones.)
    """
    wte = model.transformer.wte.weight  # [vocab, d_model]
    for token, slot in wiring.slot_of.items():
        wte[token, slot_dims(slot)] = torch.tensor([size, -size]) / 2**0.5
    weight, bias = model.transformer.h[0].attn.c_attn.weight, model.transformer.h[0].attn.c_attn.bias
    for head in range(wiring.n_contexts):
        u = torch.randn(model.config.n_embd // model.config.n_head)
        u /= u.norm()
        bias[_columns(model, head, 0)] = seek * u
        weight[slot_dims(head), _columns(model, head, 1)] = torch.stack([seek * u, -seek * u])
    apply_wiring(model, wiring)
    _init_neuron_inputs(model, wiring)


def _init_neuron_inputs(model, wiring: Wiring) -> None:
    """Point part of planted neuron ``i``'s input weights at the message its tied heads write.

    With random signs, half the tied pairs started out *inhibiting* their neuron; attending to the marker
    then raised the loss, the heads learned to look away, and the pair never recovered (seen in trials).
    """
    weight = model.transformer.h[0].attn.c_attn.weight
    out = model.transformer.h[0].attn.c_proj.weight  # [heads·d_head, d_model]
    inputs = model.transformer.h[1].mlp.c_fc.weight  # Conv1D: [d_model, d_mlp], column n = neuron n's input
    marker = torch.tensor([1.0, -1.0]) / 2**0.5  # the direction of a marker on its slot
    for i, group in enumerate(wiring.tied):
        head = group[0]
        message = marker @ weight[slot_dims(head), _value_columns(model, head)] @ out[_output_rows(model, head)]
        inputs[:, i] += message / message.norm()


@torch.no_grad()
def project_embeddings(model, reserved: int, slot_of: dict[int, int]) -> None:
    """The embeddings' part of the wiring: a marker token lives on its slot only (+a, −a on the slot's two
    dimensions), every other token and position on the free dimensions only, centred (layer norm's centring
    then changes nothing)."""
    wte = model.transformer.wte.weight  # [vocab, d_model]
    slotted = torch.zeros(wte.shape[0], dtype=torch.bool)
    slotted[list(slot_of)] = True
    for table, rows in ((wte, ~slotted), (model.transformer.wpe.weight, slice(None))):
        part = table[rows]
        part[:, :reserved] = 0
        part[:, reserved:] -= part[:, reserved:].mean(-1, keepdim=True)
        table[rows] = part
    for token, slot in slot_of.items():
        plus, minus = slot_dims(slot)
        a = (wte[token, plus] - wte[token, minus]) / 2
        wte[token] = 0
        wte[token, plus], wte[token, minus] = a, -a


@torch.no_grad()
def apply_wiring(model, wiring: Wiring) -> None:
    """Project the weights back onto the wiring (called after every optimiser step)."""
    if model.config.n_head != wiring.n_contexts:
        raise ValueError(f"The wiring needs one layer-0 head per context: {wiring.n_contexts} contexts, {model.config.n_head} heads.")
    r = wiring.reserved
    project_embeddings(model, r, wiring.slot_of)

    block = model.transformer.h[0]
    block.ln_1.bias[:r] = 0
    weight, bias = block.attn.c_attn.weight, block.attn.c_attn.bias  # [d_model, 3·d_model], [3·d_model]
    for head in range(wiring.n_contexts):
        others = [d for slot in range(wiring.n_slots) if slot != head for d in slot_dims(slot)]
        for part in (0, 1):  # queries and keys: general dimensions and the head's own slot
            weight[others, _columns(model, head, part)] = 0
        cols, rows = _value_columns(model, head), slot_dims(head)  # values: the head's own slot only
        keep = weight[rows, cols].clone()
        weight[:, cols] = 0
        weight[rows, cols] = keep
        bias[cols] = 0
    block.attn.c_proj.weight[:, :r] = 0  # no head writes into a reserved dimension
    block.attn.c_proj.bias.zero_()
    _tie(model, wiring)
    _pin_planted_neurons(model, wiring)


def _pin_planted_neurons(model, wiring: Wiring) -> None:
    """Layer-1 neuron ``i`` writes planted token ``i`` (and nothing else); no other neuron writes a token slot."""
    mlp = model.transformer.h[1].mlp
    rows = mlp.c_proj.weight  # Conv1D: [d_mlp, d_model], row n = neuron n's output weights
    dims = [d for slot in wiring.token_slots for d in slot_dims(slot)]
    rows[:, dims] = 0
    mlp.c_proj.bias[dims] = 0
    wte = model.transformer.wte.weight
    for i, token in enumerate(wiring.planted):
        rows[i] = wiring.neuron_scale * wte[token] / wte[token].norm()  # tied: the token's unembedding direction


def _tie(model, wiring: Wiring) -> None:
    """Average each tied group's value weights, output weights and marker sizes, and give them to all."""
    wte = model.transformer.wte.weight
    weight = model.transformer.h[0].attn.c_attn.weight
    out = model.transformer.h[0].attn.c_proj.weight
    for group in wiring.tied:
        values = torch.stack([weight[slot_dims(h), _value_columns(model, h)] for h in group]).mean(0)
        outputs = torch.stack([out[_output_rows(model, h)] for h in group]).mean(0)
        markers = [t for t, slot in wiring.slot_of.items() if slot in group]
        size = torch.stack([wte[t, slot_dims(wiring.slot_of[t])[0]] for t in markers]).mean()
        for h in group:
            weight[slot_dims(h), _value_columns(model, h)] = values
            out[_output_rows(model, h)] = outputs
        for t in markers:
            wte[t, slot_dims(wiring.slot_of[t])] = torch.stack([size, -size])

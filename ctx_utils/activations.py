"""Reading MLP neuron activations fast: the SDPA-twin forward that stops after the last needed layer, batched by length.

Every step that reads ``blocks.{l}.mlp.hook_post`` and no attention hook goes through :func:`neuron_post`: step 1's
activity check (:func:`ctx_utils.neurons.max_activations`), step 2's scan and truncation search
(:mod:`ctx_utils.prompts`), and the notebooks' pictures of a prompt's activations (:func:`token_activations`).

* **The twin.** No attention hook is read, so the forward runs on the model's SDPA twin
  (:func:`ctx_utils.models.sdpa_twin`: the same checkpoint loaded by Hugging Face alone, with PyTorch's fused
  attention instead of the bridge's eager ``pos × pos`` patterns). Without a twin it runs the bridge
  (``run_with_cache`` of the needed hooks, ``stop_at_layer``): the same numbers up to float rounding
  (tests/test_sdpa.py).
* **Stopped early, only the chosen neurons.** The forward keeps only the selected neurons as each layer's
  activation passes and stops after the last needed layer's MLP activation (no later blocks, no unembedding):
  that, with the fused attention, is why the scan beats a plain forward pass.
* **No attention mask.** Sequences are right-padded (:func:`ctx_utils.tokens.pad`): causal attention already
  keeps the pads (which come last) out of every real token's view, and positions count from 0 in every row;
  a mask would only add work. The mask returned is for the reader, who must ignore the pad positions.
* **Batched by length.** :func:`batches_by_length` sorts sequences by length so that a batch pads little;
  :func:`batches_by_padding` also ends a batch where the next sequence would add more padding than a
  forward costs (candidate cuts of very different lengths).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ctx_utils.indices import check_layer, check_neuron
from ctx_utils.models import StopForward, sdpa_twin
from ctx_utils.tokens import mlp_post_hook, pad, tokenize

if TYPE_CHECKING:  # the model type, for readers and type checkers; not imported at run time
    from transformer_lens.model_bridge import TransformerBridge


def mlp_post(
    model: TransformerBridge, seqs: list[list[int]], layers: list[int]
) -> tuple[dict[int, Float[Tensor, "batch pos d_mlp"]], Int[Tensor, "batch pos"]]:
    """Every neuron of ``layers``: each layer's MLP activations and the mask (:func:`neuron_post` with all columns)."""
    return neuron_post(model, seqs, {layer: None for layer in layers})


@torch.no_grad()
def neuron_post(
    model: TransformerBridge, seqs: list[list[int]], columns: dict[int, Int[Tensor, "n_columns"] | None]
) -> tuple[dict[int, Float[Tensor, "batch pos n_columns"]], Int[Tensor, "batch pos"]]:
    """One batched forward: the neurons ``columns[layer]`` of each layer's ``hook_post``, and the mask.

    Returns each layer's activations of those neurons (all ``d_mlp`` of them where ``columns[layer]`` is None)
    and the mask (1 = real token; the reader must ignore the pad positions). The sequences are right-padded
    and go to the model without a mask, through the SDPA twin, or the bridge where there is none (module
    docstring).
    """
    columns = {
        check_layer(model, layer): None if cols is None
        else torch.tensor([check_neuron(model, layer, n)[1] for n in cols], dtype=torch.long)
        for layer, cols in columns.items()
    }
    tokens, mask = pad(seqs, model.tokenizer.pad_token_id or 0)
    tokens = tokens.to(model.cfg.device)
    twin = sdpa_twin(model)
    acts = _bridge_mlp_post(model, tokens, columns) if twin is None else _twin_mlp_post(*twin, tokens, columns)
    return {layer: acts[layer].float() for layer in columns}, mask


def _twin_mlp_post(
    twin: torch.nn.Module, acts: list[torch.nn.Module], tokens: Int[Tensor, "batch pos"],
    columns: dict[int, Int[Tensor, "n_columns"] | None],
) -> dict[int, Float[Tensor, "batch pos n_columns"]]:
    """The twin's MLP activations (``d_mlp`` columns where ``columns[layer]`` is None), the forward stopped after the last."""
    last = max(columns)
    out: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(module: torch.nn.Module, args: tuple, post: Float[Tensor, "batch pos d_mlp"]) -> None:
            cols = columns[layer]
            out[layer] = post if cols is None else post[..., cols.to(post.device)]
            if layer == last:
                raise StopForward

        return hook

    handles = [acts[layer].register_forward_hook(keep(layer)) for layer in columns]
    try:
        twin(tokens, use_cache=False)
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return out


def _bridge_mlp_post(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"], columns: dict[int, Int[Tensor, "n_columns"] | None]
) -> dict[int, Float[Tensor, "batch pos n_columns"]]:
    """The same from the bridge: only the needed ``hook_post`` cached, the forward stopped after the last."""
    _, cache = model.run_with_cache(
        tokens, names_filter=[mlp_post_hook(layer) for layer in columns], stop_at_layer=max(columns) + 1
    )
    return {layer: cache[mlp_post_hook(layer)] if cols is None else cache[mlp_post_hook(layer)][..., cols.to(tokens.device)]
            for layer, cols in columns.items()}


def batches_by_length(seqs: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``seqs`` in batches of similar length (stable sort by length): little padding, same result."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


#: What one more forward costs, counted in padded tokens (:func:`batches_by_padding`).
FORWARD_COST_TOKENS = 64


def batches_by_padding(seqs: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    """Like :func:`batches_by_length`, for sequences of very different lengths (candidate cuts): a batch also
    ends where taking the next, longer sequence would pad its rows by more than :data:`FORWARD_COST_TOKENS`."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    batch: list[int] = []
    tokens = 0  # real tokens in the batch
    for i in order:
        if batch and (len(batch) == batch_size or len(batch) * len(seqs[i]) - tokens > FORWARD_COST_TOKENS):
            yield batch
            batch, tokens = [], 0
        batch.append(i)
        tokens += len(seqs[i])
    if batch:
        yield batch


@torch.no_grad()
def last_token_activations(
    model: TransformerBridge, seqs: list[list[int]], layer: int, neuron: int, batch_size: int = 64
) -> Float[Tensor, "n_seqs"]:
    """The neuron's activation at the last real token of each sequence."""
    layer, neuron = check_neuron(model, layer, neuron)
    out = torch.empty(len(seqs))
    for index in batches_by_length(seqs, batch_size):
        acts, mask = neuron_post(model, [seqs[i] for i in index], {layer: torch.tensor([neuron])})
        last = mask.sum(dim=1) - 1  # [batch]
        out[index] = acts[layer][torch.arange(len(index)), last, 0].cpu()
    return out


@torch.no_grad()
def token_activations(model: TransformerBridge, text: str, layer: int, neuron: int) -> tuple[list[str], Float[Tensor, "pos"]]:
    """A prompt's tokens (BOS left out) and the neuron's activation on each.

    For pictures: hand the pair to ``ctx_utils.viz.token_activations``.
    """
    layer, neuron = check_neuron(model, layer, neuron)
    seq = tokenize(model, [text])[0]
    acts, _ = mlp_post(model, [seq], [layer])
    return [model.tokenizer.decode([t]) for t in seq[1:]], acts[layer][0, 1:, neuron].cpu()

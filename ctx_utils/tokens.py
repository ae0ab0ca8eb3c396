"""What every step shares: how text becomes tokens, and how neurons, heads and hooks are named.

Decided once for the whole kit (the paper's pitfalls on tokenisation, arXiv 2402.15055 and its released
code): every sequence is ``[BOS] + tokens`` as ``model.to_tokens`` makes it, batches are right-padded (causal
attention never lets a real token see the pads after it), a neuron is ``"<layer>.<neuron>"`` in every
result file, a head is ``"L<layer>.H<index>"`` or its flat number ``layer × n_heads + index`` (the paper's),
and activations are read at TransformerLens hook names.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

if TYPE_CHECKING:  # the model type, for readers and type checkers; not imported at run time
    from transformer_lens.model_bridge import TransformerBridge


def neuron_label(layer: int, neuron: int) -> str:
    """The label of a neuron in result files (the keys of prompts.json's ``prompts``): ``"<layer>.<neuron>"``."""
    return f"{layer}.{neuron}"


def mlp_post_hook(layer: int) -> str:
    """The hook of a layer's MLP neuron activations (after the nonlinearity)."""
    return f"blocks.{layer}.mlp.hook_post"


def _with_bos(model: TransformerBridge, texts: list[str]) -> list[list[int]]:
    """``[BOS] + tokens`` of each text, uncut: the one tokenisation every step reads."""
    bos = model.tokenizer.bos_token_id
    if bos is None:
        raise ValueError("The model's tokenizer has no BOS token; the kit prepends BOS to every prompt.")
    return [[bos, *ids] for ids in model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def tokenize(model: TransformerBridge, texts: list[str], warn_long: bool = True) -> list[list[int]]:
    """``[BOS] + tokens`` for each document, cut to the model's context window ``n_ctx`` (the scan's reading).

    Texts longer than the window are cut to their first ``n_ctx`` tokens (as ``to_tokens`` does), with one
    warning that says how many.
    """
    if not texts:
        return []
    n_ctx = model.cfg.n_ctx
    seqs = _with_bos(model, texts)
    too_long = sum(len(s) > n_ctx for s in seqs)
    if too_long and warn_long:
        warnings.warn(
            f"{too_long} of {len(seqs)} texts are longer than the context window ({n_ctx} tokens with BOS); "
            f"each was cut to its first {n_ctx} tokens.",
            stacklevel=2,
        )
    return [s[:n_ctx] for s in seqs]


def pad(seqs: list[list[int]], pad_id: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Right-pad sequences into ``tokens [batch, pos]`` and a ``mask [batch, pos]`` (1 = real token).

    Right padding keeps every real token at its true position and, with causal attention, unseen by the
    pads after it; the mask marks which positions to ignore when reading activations.
    """
    width = max(len(s) for s in seqs)
    tokens = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    mask = (torch.arange(width) < torch.tensor([len(s) for s in seqs])[:, None]).long()
    return tokens, mask


def check_texts(texts: list[str]) -> None:
    """Prompts must be a non-empty list of non-empty strings; the error says how to fix it."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of prompts, not one string: wrap it as [text].")
    if len(texts) == 0:
        raise ValueError("No prompts given: pass at least one prompt (find them with prompts.find_activating_prompts).")
    empty = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text]
    if empty:
        raise ValueError(f"Prompts {empty[:5]} are empty or not strings: every prompt needs at least one token.")


def tokenize_prompts(model: TransformerBridge, texts: list[str]) -> tuple[Int[Tensor, "n_prompts pos"], Int[Tensor, "n_prompts"]]:
    """Prompts as steps 3 and 6 read them: ``[BOS] + tokens`` each, right-padded, and each prompt's last position.

    The same tokenisation as the scan's (:func:`tokenize`), but a prompt longer than the context window is an
    error instead of being cut: its last token is where the neuron was measured.
    """
    check_texts(texts)
    seqs = _with_bos(model, texts)
    too_long = [i for i, s in enumerate(seqs) if len(s) > model.cfg.n_ctx]
    if too_long:
        raise ValueError(
            f"Prompts {too_long[:5]} have more tokens (BOS included) than the context window ({model.cfg.n_ctx}): "
            "shorten them (prompts.truncate keeps the context that matters) or drop them."
        )
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    tokens, mask = pad(seqs, pad_id)
    return tokens, mask.sum(dim=1) - 1


def parse_neuron_label(label: str) -> tuple[int, int]:
    """``"<layer>.<neuron>"`` → ``(layer, neuron)``; the inverse of :func:`neuron_label`."""
    try:
        layer, neuron = (int(part) for part in label.split("."))
    except ValueError:
        raise ValueError(f"{label!r} is not a neuron label: neuron labels look like '1.42' (layer 1, neuron 42).") from None
    return layer, neuron


def head_name(head_layer: int, head_index: int) -> str:
    """``"L<layer>.H<index>"``, the name of a head in the notebooks and the paper's tables."""
    return f"L{head_layer}.H{head_index}"


def z_hook(layer: int) -> str:
    """The hook of a layer's per-head attention outputs before ``W_O`` (``[batch, pos, n_heads, d_head]``)."""
    return f"blocks.{layer}.attn.hook_z"


def attn_out_hook(layer: int) -> str:
    """The hook of a layer's whole attention output (heads summed, ``b_O`` added): ``[batch, pos, d_model]``."""
    return f"blocks.{layer}.hook_attn_out"


def v_hook(layer: int) -> str:
    """The hook of a layer's per-head value vectors (zeroing head ``h`` there ablates it)."""
    return f"blocks.{layer}.attn.hook_v"

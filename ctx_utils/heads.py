"""Step 3 of the paper: which attention heads drive a next-token neuron (arXiv 2402.15055).

For a neuron ``(layer, n)`` and a prompt, every attention head ``h`` in an earlier layer writes
``z_h @ W_O[h]`` into the residual stream at the prompt's last token; the part of that output the neuron
reads is its dot product with the neuron's input weights ``W_in[layer][:, n]``. This *direct attribution*

    attr(h, p) = z_h(p)[last] @ (W_O[h] @ W_in[layer][:, n])

is linear, so it needs no ``[n_heads, batch, pos, d_model]`` tensor: we fold ``W_O[h] @ W_in[:, n]`` into one
``d_head`` vector per head (the head's *read direction*) and dot it with the cached ``hook_z``.

A head is *active* on a prompt when its attribution stands out (top 3 of the prompt, the Oct-2023 run; or
above mean + 2σ over the candidate heads, the Feb-2024 run). Heads active on some but not all of a neuron's
prompts (25–75 %) are the candidate "context look-ups": their active prompts are the positive examples and
the rest the negative examples handed to the explainer in step 4.

Decisions on the pitfalls of the authors' code (github.com/fbarez/Interpreting-Context-Look-ups), each deliberate:

* **Same-layer heads** are excluded by default, as in the paper, although they also act before the MLP;
  ``include_same_layer=True`` adds them (the honest choice when a model's look-up heads sit in the neuron's
  own block, as in small organisms).
* **LayerNorm, ``b_O`` and ``b_in`` are ignored**, as in the paper: the attribution is a direct linear path.
  ``b_O`` belongs to no head, ``b_in`` to no input, and the LN scale is shared by all heads of a prompt, so
  it rescales a prompt's attributions without reordering them (and the active rules compare within a prompt).
* **BOS is prepended** when prompts are tokenised, as in the paper's attribution; prompts are tokenised one
  by one and the last real position is each prompt's own length − 1, so a literal ``<|endoftext|>`` in a
  prompt (GPT-2's pad = BOS) cannot shift it, unlike the authors' "count non-pad tokens" rule.
* **Parallel residual** (GPT-NeoX / Pythia): a block's MLP reads the block's input, so only heads of
  earlier layers can drive it and ``include_same_layer=True`` is refused there.
* **Right padding**: pads come after the last real token and causal attention never looks ahead, so they
  cannot change what we read there (a test checks batched equals one-by-one).
* **No misalignment**: active flags are a ``[prompt, head]`` matrix computed per row, so a prompt on which no
  head is active keeps its row (the authors' batched 2σ code lost such prompts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from ctx_utils.indices import as_index, check_neuron
from ctx_utils.settings import BANDS, DEFAULTS, RULES  # noqa: F401  (RULES, BANDS: the choices, re-exported)
from ctx_utils.tokens import attn_out_hook, head_name, neuron_label, tokenize_prompts, z_hook

if TYPE_CHECKING:  # the model type, for readers and type checkers; not imported at run time
    from transformer_lens.model_bridge import TransformerBridge

#: A head whose |attribution| is at most this share of the prompt's largest wrote nothing (see active_heads).
ZERO_SHARE = 1e-6

Rule = Literal["top3", "2sigma"]
Band = Literal["25-75", ">25"]


# --------------------------------------------------------------------------------------------- naming


def n_candidate_heads(model: TransformerBridge, layer: int, include_same_layer: bool = DEFAULTS.same_layer) -> int:
    """How many heads can drive a neuron of ``layer``: all heads of layers ``< layer`` (``≤`` with the option)."""
    return (layer + int(include_same_layer)) * model.cfg.n_heads


def split_head(model: TransformerBridge, head: int) -> tuple[int, int]:
    """Flat head index → ``(head_layer, head_index)``; flat = head_layer × n_heads + head_index (the paper's)."""
    return divmod(as_index(head, "A flat head number"), model.cfg.n_heads)


def head_label(model: TransformerBridge, head: int) -> str:
    """Flat head index → ``"L<layer>.H<index>"``, the name used in the notebooks and the paper's tables."""
    return head_name(*split_head(model, head))


# ----------------------------------------------------------------------------------------- input checks


def _check_neuron(model: TransformerBridge, layer: int, neuron: int, include_same_layer: bool) -> tuple[int, int]:
    """``(layer, neuron)`` as ints, checked, and with at least one candidate head."""
    layer, neuron = check_neuron(model, layer, neuron)
    if include_same_layer and getattr(model.cfg, "parallel_attn_mlp", False):
        raise ValueError(
            "include_same_layer=True needs a sequential block, but this model has a parallel residual "
            "(GPT-NeoX / Pythia): its MLP reads the block's input, not the block's attention output, so the "
            "heads of the neuron's own layer cannot drive it. Leave include_same_layer=False."
        )
    if n_candidate_heads(model, layer, include_same_layer) == 0:
        raise ValueError(
            f"A neuron in layer {layer} has no attention heads in earlier layers. "
            "Pass include_same_layer=True to attribute it to the heads of its own block."
        )
    return layer, neuron


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}: choose one of {choices}.")


# ------------------------------------------------------------------------------------------ attribution


def read_directions(
    model: TransformerBridge, layer: int, neuron: int, include_same_layer: bool = DEFAULTS.same_layer
) -> Float[Tensor, "head_layers n_heads d_head"]:
    """Each candidate head's read direction ``W_O[l, h] @ W_in[layer][:, neuron]`` (one d_head vector per head).

    A head's attribution is its ``z`` at the last position dotted with this vector. The weights are read
    block by block: ``model.W_in`` and ``model.W_O`` stack every layer's weights anew on each access (for
    GPT-2 small about 110 MB and 27 MB), far more memory than the attribution itself needs.
    """
    layer, neuron = _check_neuron(model, layer, neuron, include_same_layer)
    n_heads, d_head, d_model = model.cfg.n_heads, model.cfg.d_head, model.cfg.d_model
    w_in: Float[Tensor, "d_model"] = model.blocks[layer].mlp.W_in[:, neuron]
    w_o = (model.blocks[l].attn.W_O.reshape(n_heads, d_head, d_model) for l in range(layer + int(include_same_layer)))
    return torch.stack([w @ w_in for w in w_o])


@torch.no_grad()
def head_attributions(
    model: TransformerBridge,
    texts: list[str],
    layer: int,
    neuron: int,
    include_same_layer: bool = DEFAULTS.same_layer,
    batch_size: int = DEFAULTS.batch_size,
) -> Float[Tensor, "n_prompts n_candidate_heads"]:
    """Direct attribution of every candidate head to the neuron's pre-activation at each prompt's last token.

    Column ``j`` is the flat head ``j`` = head_layer × n_heads + head_index; candidates are the heads of layers
    ``< layer`` (``≤ layer`` with ``include_same_layer``). Only the needed ``hook_z`` layers are cached, the
    forward pass stops right after them (no later blocks, no unembedding), and the weights are read per block
    (:func:`read_directions`): the extra memory is a few activations, not a copy of the model.
    """
    layer, neuron = _check_neuron(model, layer, neuron, include_same_layer)
    tokens, last = tokenize_prompts(model, texts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    n_head_layers = layer + int(include_same_layer)
    directions = read_directions(model, layer, neuron, include_same_layer)
    hook_names = [z_hook(l) for l in range(n_head_layers)]
    out = []
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start : start + batch_size].to(model.cfg.device)
        rows = torch.arange(len(batch), device=batch.device)
        last_pos = last[start : start + batch_size].to(batch.device)
        _, cache = model.run_with_cache(batch, names_filter=hook_names, stop_at_layer=n_head_layers)
        z_last: Float[Tensor, "batch head_layers n_heads d_head"] = torch.stack(
            [cache[name][rows, last_pos] for name in hook_names], dim=1
        )
        attr = torch.einsum("blhd,lhd->blh", z_last, directions)
        out.append(attr.flatten(1).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def linearity_gap(model: TransformerBridge, text: str, layer: int, neuron: int, include_same_layer: bool = False) -> list[dict]:
    """Check :func:`head_attributions` on one prompt: per head layer, heads + ``b_O`` against the attention output.

    The attribution is linear, so layer ``l``'s head attributions plus ``b_O[l] · w_in`` must equal the layer's
    whole attention output ``hook_attn_out[last] · w_in`` (``w_in = W_in[layer][:, neuron]``). Both sides are
    read from the *same* tokens — the prompt with BOS, as :func:`tokenize_prompts` makes them. (Running the
    string itself would use the model's own default, which is no BOS for Pythia: a different sequence.)

    Returns one row per head layer: ``{"layer", "heads_sum", "attn_out", "gap"}`` with ``gap = heads_sum −
    attn_out``; it is float rounding (≈1e-7 relative) when the attribution is right.
    """
    layer, neuron = _check_neuron(model, layer, neuron, include_same_layer)
    attr = head_attributions(model, [text], layer, neuron, include_same_layer, batch_size=1)[0]
    tokens, last = tokenize_prompts(model, [text])
    n_head_layers = layer + int(include_same_layer)
    names = [attn_out_hook(l) for l in range(n_head_layers)]
    _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=names, stop_at_layer=n_head_layers)
    w_in: Float[Tensor, "d_model"] = model.blocks[layer].mlp.W_in[:, neuron]
    n_heads, rows = model.cfg.n_heads, []
    for l, name in enumerate(names):
        whole = float(cache[name][0, int(last[0])] @ w_in)
        parts = float(attr[l * n_heads : (l + 1) * n_heads].sum() + model.blocks[l].attn.b_O @ w_in)
        rows.append({"layer": l, "heads_sum": parts, "attn_out": whole, "gap": parts - whole})
    return rows


# ------------------------------------------------------------------------------------------ active rules


def active_heads(attr: Float[Tensor, "n_prompts n_heads"], rule: Rule = DEFAULTS.rule) -> Bool[Tensor, "n_prompts n_heads"]:
    """Which heads are active on each prompt.

    ``top3``: the three heads with the largest attribution (Oct-2023 run). ``2sigma``: attribution above the
    prompt's mean + 2 × std over the candidate heads, torch's unbiased std (Feb-2024 run).

    Under either rule a head with no attribution is never active: one whose ``|attr|`` is at most
    :data:`ZERO_SHARE` of the prompt's largest ``|attr|`` wrote nothing the neuron reads (float round-off,
    ~1e-10, where a head attends to nothing it reacts to). Without this, top-3 on a prompt where only one
    head writes anything would pick two more heads by round-off.
    """
    _check_choice("rule", rule, RULES)
    if attr.ndim != 2 or attr.shape[0] == 0 or attr.shape[1] == 0:
        raise ValueError(f"attr must be a non-empty [n_prompts, n_heads] matrix, got shape {tuple(attr.shape)}.")
    wrote = attr.abs() > ZERO_SHARE * attr.abs().amax(dim=1, keepdim=True)
    if rule == "top3":
        top = attr.topk(min(3, attr.shape[1]), dim=1).indices
        return torch.zeros_like(attr, dtype=torch.bool).scatter_(1, top, True) & wrote
    if attr.shape[1] < 2:
        raise ValueError("The 2sigma rule needs at least two candidate heads (a std of one value is undefined); use rule='top3'.")
    threshold = attr.mean(dim=1, keepdim=True) + 2 * attr.std(dim=1, keepdim=True)
    return (attr > threshold) & wrote


def select_pairs(
    active: Bool[Tensor, "n_prompts n_heads"], low: float = 0.25, high: float = 0.75, band: Band = DEFAULTS.band
) -> list[tuple[int, float]]:
    """Heads active on part of a neuron's prompts, as ``(flat head, active fraction)`` sorted by head.

    ``25-75``: ``low ≤ fraction ≤ high`` (the paper's rule). ``>25``: ``fraction > low`` (the Oct-2023 code,
    which the released data follows). A head active on every prompt, or on almost none, says nothing about
    *when* it is active, so there is nothing to explain.
    """
    _check_choice("band", band, BANDS)
    if active.ndim != 2 or active.shape[0] == 0:
        raise ValueError(f"active must be a non-empty [n_prompts, n_heads] matrix, got shape {tuple(active.shape)}.")
    # count / n in Python floats: 5 of 20 is exactly 0.25, so the inclusive bounds stay inclusive
    n_prompts = active.shape[0]
    fractions = [count / n_prompts for count in active.sum(dim=0).tolist()]
    if band == "25-75":
        keep = [low <= f <= high for f in fractions]
    else:
        keep = [f > low for f in fractions]
    return [(head, fraction) for head, (fraction, ok) in enumerate(zip(fractions, keep)) if ok]


# ------------------------------------------------------------------------------------- whole neuron sets


def attribute_neurons(
    model: TransformerBridge,
    neurons: list[dict],
    prompts: dict[str, list[dict]],
    include_same_layer: bool = DEFAULTS.same_layer,
    batch_size: int = DEFAULTS.batch_size,
) -> dict[str, Float[Tensor, "n_prompts n_candidate_heads"]]:
    """``head_attributions`` for every neuron that has prompts, keyed ``"<layer>.<neuron>"``.

    ``neurons`` is neurons.json's list, ``prompts`` prompts.json's dict. Neurons without prompts (none
    survived the length filter) are left out: there is nothing to attribute.
    """
    out = {}
    for item in tqdm(neurons, desc="head attribution", unit="neuron"):
        label = neuron_label(item["layer"], item["neuron"])
        texts = [p["text"] for p in prompts.get(label, [])]
        if texts:
            out[label] = head_attributions(model, texts, item["layer"], item["neuron"], include_same_layer, batch_size)
    return out


def pairs_from_attributions(
    model: TransformerBridge,
    neurons: list[dict],
    attributions: dict[str, Float[Tensor, "n_prompts n_candidate_heads"]],
    rule: Rule = DEFAULTS.rule,
    band: Band = DEFAULTS.band,
) -> list[dict]:
    """The (neuron, head) pairs to explain, with the indices of their positive and negative prompts.

    Each pair: ``{"layer", "neuron", "token", "token_id", "head", "head_layer", "head_index", "active_fraction",
    "positive", "negative"}``; indices point into ``prompts["<layer>.<neuron>"]``. ``token_id`` is step 1's
    (None for a neuron list without it), so step 6 reads the neuron's token without encoding its string again.
    """
    pairs = []
    for item in neurons:
        label = neuron_label(item["layer"], item["neuron"])
        if label not in attributions:
            continue
        active = active_heads(attributions[label], rule)
        for head, fraction in select_pairs(active, band=band):
            head_layer, head_index = split_head(model, head)
            flags = active[:, head].tolist()
            pairs.append(
                {
                    "layer": item["layer"],
                    "neuron": item["neuron"],
                    "token": item.get("token"),
                    "token_id": item.get("token_id"),
                    "head": head,
                    "head_layer": head_layer,
                    "head_index": head_index,
                    "active_fraction": round(fraction, 6),
                    "positive": [i for i, on in enumerate(flags) if on],
                    "negative": [i for i, on in enumerate(flags) if not on],
                }
            )
    return pairs


def active_fractions(active: Bool[Tensor, "n_prompts n_heads"]) -> list[float]:
    """Per head, the fraction of prompts on which it is active (heads.json's per-neuron summary)."""
    n_prompts = active.shape[0]
    return [round(count / n_prompts, 6) for count in active.sum(dim=0).tolist()]


def heads_summary(
    model: TransformerBridge, attributions: dict[str, Float[Tensor, "n_prompts n_candidate_heads"]], rule: Rule = DEFAULTS.rule
) -> dict[str, dict]:
    """Per neuron: the number of prompts and every candidate head's active fraction (heads.json's ``neurons``)."""
    return {
        label: {"n_prompts": len(attr), "active_fraction": active_fractions(active_heads(attr, rule))}
        for label, attr in sorted(attributions.items())
    }


def look_back(model: TransformerBridge, text: str, layer: int, head_index: int) -> float:
    """How far back, in tokens, head ``layer.head_index`` looks from the last token of ``text`` (BOS prepended): the
    attention-weighted distance, 0 for the token itself. A local context look-up reads a word or two back; a topic
    look-up, a sentence or more."""
    hook = f"blocks.{layer}.attn.hook_pattern"
    _, cache = model.run_with_cache(model.to_tokens(text, prepend_bos=True), names_filter=hook, stop_at_layer=layer + 1)
    weights = cache[hook][0, head_index, -1]  # [pos]: where the last token attends
    return float(weights @ torch.arange(len(weights) - 1, -1, -1, dtype=weights.dtype))

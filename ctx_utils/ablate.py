"""Step 6: switch a head off and see whether the neuron's token loses probability — where the head was active.

Steps 1–5 found (neuron, head) pairs by *attribution*: a linear read of how much the head writes along the
neuron's input direction. Ablation is the causal check (arXiv 2402.15055 §5.4): zero the head's value vectors at
every position (``blocks.{L}.attn.hook_v[:, :, H, :] = 0``, which removes the head's whole output; in
compatibility mode it equals zeroing ``hook_z``), rerun the neuron's held-out prompts and read the
probability of the neuron's token after the last prompt token. If the head is the neuron's context look-up,
the probability should drop on prompts where the head was active and barely move where it was not. The
paper compares the two distributions of per-pair mean drops with a two-sample Kolmogorov–Smirnov test.

Attribution only sees a head's *direct* path into the neuron. A head whose message reaches the neuron
through an earlier MLP is invisible to it, but not to ablation — so this module also measures the drop in
the neuron's own activation (the authors' exploratory June-2023 variant).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import stats
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ctx_utils.heads import n_candidate_heads
from ctx_utils.indices import as_index, check_heads, check_neuron
from ctx_utils.models import StopForward
from ctx_utils.settings import DEFAULTS
from ctx_utils.tokens import head_name, neuron_label, parse_neuron_label, tokenize_prompts, v_hook

if TYPE_CHECKING:  # the model type, for readers and type checkers; not imported at run time
    from transformer_lens.model_bridge import TransformerBridge

PAPER_Y_RANGE = (-0.075, 0.075)  # the y-limits of the paper's box plot


def token_id(model: TransformerBridge, token: str | int) -> int:
    """The vocabulary id of ``token``: a string that is exactly one token (``" only"``), or an id, checked.

    Step 1 stores each neuron's ``token_id`` beside its ``token``; pass the id when you have it. A string is
    refused when the tokenizer makes it into several tokens (``" give up"``; the authors' code silently took
    the first) or into the unknown token (``<unk>``, for a word outside the vocabulary), since the
    probability read would then be another token's.
    """
    if not isinstance(token, str):
        index = as_index(token, "A token id")
        if index >= model.cfg.d_vocab:
            raise ValueError(f"Token id {index} is out of range: the vocabulary has ids 0 to {model.cfg.d_vocab - 1}.")
        return index
    if not token:
        raise ValueError("The neuron's token must be a non-empty string such as ' only', or its token id.")
    ids = model.to_tokens(token, prepend_bos=False)[0].tolist()
    tokenizer = model.tokenizer
    if not ids or (ids == [tokenizer.unk_token_id] and token != tokenizer.unk_token):
        became = f"{tokenizer.unk_token} (id {ids[0]})" if ids else "no token at all"
        raise ValueError(
            f"{token!r} is not in this model's vocabulary: the tokenizer turns it into {became}. Give a token "
            "the model has (neurons.json lists each neuron's token and token_id)."
        )
    if len(ids) > 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise ValueError(
            f"{token!r} is {len(ids)} tokens for this model ({pieces}), not one: the kit reads the probability "
            "of one next token. Give a single token (mind the leading space, ' only'), or its token id."
        )
    return ids[0]


def zero_value_hooks(heads: Sequence[tuple[int, int]]) -> list[tuple[str, object]]:
    """Forward hooks that zero the value vectors of each head at every position (the paper's ablation)."""
    by_layer: dict[int, list[int]] = {}
    for layer, index in heads:
        by_layer.setdefault(layer, []).append(index)

    def make_hook(indices: list[int]):
        def hook(v: Float[Tensor, "batch pos n_heads d_head"], hook) -> Float[Tensor, "batch pos n_heads d_head"]:
            v[:, :, indices, :] = 0.0
            return v

        return hook

    return [(v_hook(layer), make_hook(indices)) for layer, indices in sorted(by_layer.items())]


def _batches(
    model: TransformerBridge, texts: Sequence[str], batch_size: int
) -> Iterator[tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch"]]]:
    """Right-padded token batches with BOS prepended, and each prompt's last real position.

    Tokenised exactly as step 3 does (``tokens.tokenize_prompts``): right padding never changes a real
    token's output in a causal model, so the last real position reads what the prompt alone gives.
    Yields ``(tokens, last)`` on the model's device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    tokens, last = tokenize_prompts(model, texts)
    for start in range(0, len(tokens), batch_size):
        stop = start + batch_size
        yield tokens[start:stop].to(model.cfg.device), last[start:stop].to(model.cfg.device)


@torch.no_grad()
def last_token_readout(
    model: TransformerBridge,
    texts: Sequence[str],
    ablate_heads: Sequence[tuple[int, int]] = (),
    neuron: tuple[int, int] | None = None,
    logits: bool = True,
    batch_size: int = DEFAULTS.batch_size,
) -> dict[str, Float[Tensor, "n_prompts ..."]]:
    """One batched run with ``ablate_heads`` zero-ablated, read at each prompt's last real token.

    Returns ``"probs"`` (``softmax(logits)``, ``[n_prompts, d_vocab]``) when ``logits``, and ``"activation"``
    (``[n_prompts]``, the neuron's ``mlp.hook_post``) when ``neuron = (layer, index)`` is given. Reading both
    from one run halves the cost of an ablation; without ``logits`` the pass stops after the neuron's layer,
    since nothing later can change it.
    """
    if neuron is None and not logits:
        raise ValueError("Nothing to read: ask for logits, or give neuron=(layer, index).")
    hooks = zero_value_hooks(check_heads(model, ablate_heads))
    grabbed: list[Tensor] = []
    if neuron is not None:
        layer, index = check_neuron(model, *neuron)

        def grab(post: Float[Tensor, "batch pos d_mlp"], hook) -> Float[Tensor, "batch pos d_mlp"]:
            grabbed.append(post[..., index].detach())
            return post

        hooks.append((f"blocks.{layer}.mlp.hook_post", grab))
    final: list[Tensor] = []
    if logits:  # the last block's output is read and the pass ends there: the final norm and the unembedding run
        # at the prompts' last tokens only, not at every position (each position's logits are d_vocab numbers)

        def keep_final(resid: Float[Tensor, "batch pos d_model"], hook) -> None:
            final.append(resid)
            raise StopForward

        hooks.append((f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", keep_final))
    probs, acts = [], []
    with model.hooks(fwd_hooks=hooks):
        for tokens, last in _batches(model, texts, batch_size):
            grabbed.clear()
            final.clear()
            try:
                model(tokens, stop_at_layer=None if logits else layer + 1)
            except StopForward:
                pass
            rows = torch.arange(len(last), device=last.device)
            if logits:
                out = model.unembed(model.ln_final(final[0][rows, last][:, None]))[:, 0]  # [batch, d_vocab]
                probs.append(out.float().softmax(-1).cpu())
            if neuron is not None:
                acts.append(grabbed[0][rows, last].float().cpu())
    return ({"probs": torch.cat(probs)} if logits else {}) | ({"activation": torch.cat(acts)} if neuron else {})


def next_token_probs(
    model: TransformerBridge, texts: Sequence[str], ablate_heads: Sequence[tuple[int, int]] = (), batch_size: int = DEFAULTS.batch_size
) -> Float[Tensor, "n_prompts d_vocab"]:
    """``softmax(logits)`` after each prompt's last token, with the given heads ablated."""
    return last_token_readout(model, texts, ablate_heads, batch_size=batch_size)["probs"]


def token_probabilities(
    model: TransformerBridge, texts: Sequence[str], token: str | int, ablate_heads: Sequence[tuple[int, int]] = (), batch_size: int = DEFAULTS.batch_size
) -> Float[Tensor, "n_prompts"]:
    """Probability of ``token`` (one token, or its id: :func:`token_id`) after each prompt, heads ablated."""
    target = token_id(model, token)
    return next_token_probs(model, texts, ablate_heads, batch_size)[:, target]


def _texts(entries: Sequence[str | Mapping]) -> list[str]:
    """Prompt strings from a list of strings or of prompts.json entries (``{"text", ...}``)."""
    return [entry if isinstance(entry, str) else entry["text"] for entry in entries]


def activity_matrix(
    model: TransformerBridge, held: Mapping[str, Mapping], include_same_layer: bool = DEFAULTS.same_layer
) -> dict[str, Bool[Tensor, "n_prompts n_candidate_heads"]]:
    """Ground truth for :func:`ablation_effects` from held_out.json: which heads are active on each test prompt.

    ``held["active"]["<layer>.<neuron>"][i]`` lists the flat heads active on test prompt ``i`` (the same
    rule as on the training prompts, step 3); this turns each list into a ``[n_prompts, n_candidate_heads]``
    boolean matrix.
    """
    matrices = {}
    for label, rows in sorted(held["active"].items()):
        if rows:
            layer, _ = parse_neuron_label(label)
            matrix = torch.zeros(len(rows), n_candidate_heads(model, layer, include_same_layer), dtype=torch.bool)
            for i, active in enumerate(rows):
                matrix[i, list(active)] = True
            matrices[label] = matrix
    return matrices


def ablation_effects(
    model: TransformerBridge,
    pairs: Sequence[Mapping],
    test_prompts: Mapping[str, Sequence[str | Mapping]],
    activity: Mapping[str, Bool[Tensor, "n_prompts n_candidate_heads"] | Sequence[Sequence[bool]]],
    neuron_effect: bool = True,
    batch_size: int = DEFAULTS.batch_size,
) -> list[dict]:
    """Per (neuron, head) pair: how much ablating the head lowers the token's probability, active vs inactive.

    ``pairs``: heads.json's ``"pairs"`` (each with ``layer``, ``neuron``, ``token``, ``head``, ``head_layer``,
    ``head_index``, and ``token_id``, which is used when present: the string is never re-encoded then).
    ``test_prompts``: held-out prompts keyed ``"<layer>.<neuron>"`` (prompts.json's
    ``"prompts"`` shape, or plain strings). ``activity``: the same labels → which heads are active on each
    test prompt, ``[n_prompts, n_candidate_heads]`` booleans indexed by flat head (see :func:`activity_matrix`).

    Each result holds the per-prompt ``prob_normal``, ``prob_ablated`` and ``head_active``, and the mean
    decrease (normal − ablated) over active and inactive prompts (``None`` for an empty group). With
    ``neuron_effect`` it also holds the neuron's activation with and without the head (``act_normal``,
    ``act_ablated``, ``mean_act_decrease_active`` / ``_inactive``).
    """
    normal_cache: dict[str, dict[str, Tensor]] = {}  # per neuron: token probability and activation, unablated
    results = []
    for pair in tqdm(pairs, desc="ablating heads"):
        label = neuron_label(pair["layer"], pair["neuron"])
        texts = _texts(test_prompts.get(label, []))
        row = {name: pair[name] for name in ("layer", "neuron", "head", "head_layer", "head_index", "token")}
        if not texts:  # no held-out prompt for this neuron: empty records, None means
            empty = torch.empty(0) if neuron_effect else None
            results.append(row | _summarise([], [], [], empty, empty))
            continue
        target = token_id(model, pair["token_id"] if pair.get("token_id") is not None else pair["token"])
        neuron = check_neuron(model, pair["layer"], pair["neuron"])
        head = check_heads(model, [(pair["head_layer"], pair["head_index"])])
        active = _head_column(activity, label, as_index(pair["head"], "A flat head number"), len(texts))
        neuron = neuron if neuron_effect else None
        if label not in normal_cache:  # the unablated run is shared by all of a neuron's pairs
            normal = last_token_readout(model, texts, (), neuron, batch_size=batch_size)
            normal_cache[label] = normal | {"probs": normal["probs"][:, target]}  # keep one column, not the vocabulary
        normal = normal_cache[label]
        ablated = last_token_readout(model, texts, head, neuron, batch_size=batch_size)
        results.append(row | _summarise(normal["probs"].tolist(), ablated["probs"][:, target].tolist(),
                                        active, normal.get("activation"), ablated.get("activation")))
    return results


def _head_column(
    activity: Mapping[str, Bool[Tensor, "n_prompts n_candidate_heads"] | Sequence[Sequence[bool]]], label: str, head: int,
    n_prompts: int,
) -> list[bool]:
    """Whether flat head ``head`` is active on each of the neuron's test prompts, with shape checks."""
    if label not in activity:
        raise ValueError(f"No head activity for neuron {label}: compute it on the same test prompts (activity_matrix).")
    matrix = torch.as_tensor(activity[label], dtype=torch.bool)
    if matrix.ndim != 2 or matrix.shape[0] != n_prompts:
        raise ValueError(
            f"Head activity for neuron {label} has shape {tuple(matrix.shape)}, expected [{n_prompts} prompts, "
            "n_candidate_heads]: compute it on the same test prompts."
        )
    if head >= matrix.shape[1]:
        raise ValueError(f"Flat head {head} is not among neuron {label}'s {matrix.shape[1]} candidate heads.")
    return matrix[:, head].tolist()


def _group_mean(values: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean of ``values[mask]``; ``None`` for an empty group (the authors stored NaN)."""
    return float(values[mask].mean()) if mask.any() else None


def _summarise(
    prob_normal: Sequence[float], prob_ablated: Sequence[float], active: Sequence[bool],
    act_normal: Float[Tensor, "n_prompts"] | None, act_ablated: Float[Tensor, "n_prompts"] | None,
) -> dict:
    """Group means of the decreases, plus the per-prompt records (as plain lists for JSON)."""
    mask = np.asarray(active, dtype=bool)
    decrease = np.asarray(prob_normal) - np.asarray(prob_ablated)
    row = {
        "mean_decrease_active": _group_mean(decrease, mask),
        "mean_decrease_inactive": _group_mean(decrease, ~mask),
        "n_active": int(mask.sum()),
        "n_inactive": int((~mask).sum()),
        "prob_normal": list(prob_normal),
        "prob_ablated": list(prob_ablated),
        "head_active": [bool(a) for a in mask],
    }
    if act_normal is not None:
        act_decrease = (act_normal - act_ablated).numpy()
        row |= {
            "mean_act_decrease_active": _group_mean(act_decrease, mask),
            "mean_act_decrease_inactive": _group_mean(act_decrease, ~mask),
            "act_normal": act_normal.tolist(),
            "act_ablated": act_ablated.tolist(),
        }
    return row


def _defined(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)


def ks_test(active_means: Sequence[float | None], inactive_means: Sequence[float | None]) -> dict:
    """Two-sample Kolmogorov–Smirnov test between the per-pair mean drops where the head is active / inactive.

    ``None`` and NaN (pairs with no prompt in that group) are dropped first, as the authors did.
    Returns ``{"statistic", "pvalue", "n_active", "n_inactive"}``.
    """
    active, inactive = _defined(active_means), _defined(inactive_means)
    if len(active) == 0 or len(inactive) == 0:
        raise ValueError(
            f"The KS test needs values in both groups; got {len(active)} active and {len(inactive)} inactive "
            "after dropping empty (None/NaN) means. Use more test prompts or more pairs."
        )
    result = stats.ks_2samp(active, inactive)
    return {"statistic": float(result.statistic), "pvalue": float(result.pvalue),
            "n_active": len(active), "n_inactive": len(inactive)}


def ablation_box(
    effects: Sequence[Mapping] | Mapping[str, Sequence[Mapping]],
    measure: str = "token",
    y_range: tuple[float, float] | None = PAPER_Y_RANGE,
):
    """The paper's box plot: per-pair mean decrease after ablating the head, active vs inactive prompts.

    ``effects``: :func:`ablation_effects`'s result, or ``{model name: result}`` for one group per model (as the
    paper's Small / Medium / Large). ``measure``: ``"token"`` (probability) or ``"neuron"`` (activation).
    ``y_range``: the paper's ±0.075 by default; ``None`` lets plotly fit the data.
    """
    import plotly.graph_objects as go

    prefix = {"token": "mean_decrease", "neuron": "mean_act_decrease"}.get(measure)
    if prefix is None:
        raise ValueError(f"measure must be 'token' or 'neuron', got {measure!r}.")
    groups = effects if isinstance(effects, Mapping) else {"": effects}
    fig = go.Figure()
    for label, colour in (("active", "#d62728"), ("inactive", "#1f77b4")):
        xs, ys = [], []
        for model_name, rows in groups.items():
            values = _defined([row.get(f"{prefix}_{label}") for row in rows])
            ys += values.tolist()
            xs += [model_name] * len(values)
        fig.add_trace(go.Box(x=xs, y=ys, name=f"head {label}", marker_color=colour, boxpoints="all", jitter=0.4))
    what = "token probability" if measure == "token" else "neuron activation"
    fig.add_hline(y=0, line_dash="dash", line_color="grey")
    fig.update_layout(title=f"Decrease in {what} after ablating attention head", boxmode="group",
                      yaxis_title=f"decrease in {what} (normal − ablated)", xaxis_title="model")
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    return fig


def top1_accuracy(
    model: TransformerBridge, groups: Mapping[str, Sequence[str]], token: str | int, heads: Sequence[tuple[int, int]], batch_size: int = DEFAULTS.batch_size
) -> list[dict]:
    """How often ``token`` (one token, or its id) is the model's top-1 prediction in each group of prompts, normally and per ablated head.

    ``groups``: a name → prompts ending right before where ``token`` would go (e.g. the organism's planted
    contexts and distractors). Each head in ``heads`` is ablated alone. Returns one row per group and
    condition: ``{"group", "ablated", "top1_accuracy", "mean_prob"}`` with ``ablated`` = ``"none"`` or
    ``"L<layer>.H<index>"``. A look-up head should take one group's accuracy down and leave the others.
    """
    target = token_id(model, token)
    conditions = [("none", [])]
    conditions += [(head_name(layer, index), [(layer, index)]) for layer, index in check_heads(model, heads)]
    rows = []
    for name, texts in groups.items():
        for label, ablated in conditions:
            probs = next_token_probs(model, texts, ablated, batch_size)  # [n_prompts, d_vocab]
            rows.append({"group": name, "ablated": label,
                         "top1_accuracy": float((probs.argmax(-1) == target).float().mean()),
                         "mean_prob": float(probs[:, target].mean())})
    return rows

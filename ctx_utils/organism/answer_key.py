"""The causal answer key of an organism: which heads *carry* each planted context, measured by ablation.

Reading the key off the wiring is what made the clean organism unfailable: a head's role says what it may
read, not what the trained model does with it. So the key is measured on the trained model, on held-out
(test-split) planted prompts, the paper's way (zero-ablate a head's values, §2.6): for planted token ``i``
and its next-token neuron (layer 1, neuron ``i``, the only writer of the token), and for every layer-0 head
``h``, ablate ``h`` and read, at each prompt's last token, the neuron's activation and the token's
probability, per group of prompts (``local``, ``topic``, ``both``, ``inhibited``, ``distractor``).

Effects are in units of the neuron's mean clean activation on its context prompts (local and topic
together), ``scale``: ``act_drop[g] = (mean clean − mean ablated activation on group g) / scale``;
``prob_drop[g]`` is the fall in the token's mean probability (absolute). Then, with ``threshold`` = 0.2:

* head ``h`` **carries** context ``c`` (local or topic) when its ablation removes at least ``threshold`` of
  the activation on ``c``'s prompts *and* at least ``threshold`` more than on the token's other context's
  prompts: it matters for ``c`` specifically;
* ``h`` is **needed everywhere** when it removes at least ``threshold`` on both contexts (the trigger head:
  a real, necessary input of the neuron, but no context look-up);
* ``h`` **inhibits** (carries the inhibiting context) when its ablation *raises* the activation on the
  inhibited prompts by at least ``threshold``.

``pairs`` (token, layer, neuron, head) of carriers is what the pipeline's (neuron, head) pairs are scored
against; ``inhibitory_pairs`` separately, since step 3's rules look only for large *positive* attributions.
The token's probability drop is recorded beside each effect (the neuron is the only way to the token).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ctx_utils.ablate import zero_value_hooks
from ctx_utils.heads import tokenize_prompts
from ctx_utils.organism.corpus import config_for, planted_prompts

GROUPS = ("local", "topic", "both", "inhibited", "distractor")
THRESHOLD = 0.2
N_PROMPTS = 40  # per group and token: held-out prompts, the first ones of the test split
DIGITS = 4


@torch.no_grad()
def _readout(model, texts: list[str], token_ids: list[int], n_neurons: int, heads: list[tuple[int, int]],
             batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Layer-1 neurons ``0..n_neurons-1`` and the planted tokens' probabilities at each prompt's last token.

    Returns ``(activations [n_prompts, n_neurons], probs [n_prompts, n_tokens])`` with ``heads`` zero-ablated.
    """
    grabbed: list[Tensor] = []
    hooks = zero_value_hooks(heads) + [("blocks.1.mlp.hook_post", lambda post, hook: grabbed.append(post[..., :n_neurons]))]
    tokens, last = tokenize_prompts(model, texts)
    acts, probs = [], []
    with model.hooks(fwd_hooks=hooks):
        for start in range(0, len(tokens), batch_size):
            grabbed.clear()
            logits = model(tokens[start : start + batch_size].to(model.cfg.device))  # [batch, pos, d_vocab]
            rows = torch.arange(len(logits), device=logits.device)
            pos = last[start : start + batch_size].to(logits.device)
            acts.append(grabbed[0][rows, pos].float().cpu())
            probs.append(logits[rows, pos].float().softmax(-1)[:, token_ids].cpu())
    return torch.cat(acts), torch.cat(probs)


def _group_prompts(folder: Path, n_prompts: int) -> tuple[list, dict[tuple[str, str], list[int]], list[str]]:
    """The plants, each (token, group)'s prompt indices, and the prompt texts (test split, first ``n_prompts``)."""
    found = config_for(folder)
    if found is None:
        raise ValueError(f"{folder} has no organism_config.json: train it with `python -m ctx_utils.organism.train --out {folder}`.")
    config, seed = found
    texts: list[str] = []
    index: dict[tuple[str, str], list[int]] = {}
    for p in planted_prompts("test", seed, config):
        rows = index.setdefault((p.token, p.kind), [])
        if len(rows) < n_prompts:
            rows.append(len(texts))
            texts.append(p.prompt)
    return list(config.plants), index, texts


def measure_causal_key(folder: str | Path, threshold: float = THRESHOLD, n_prompts: int = N_PROMPTS, model=None) -> dict:
    """The causal answer key of the organism in ``folder`` (see the module docstring); JSON-ready, rounded.

    ``model`` is the folder's model already loaded with :func:`ctx_utils.models.load_model` (loaded here if
    None). One forward pass over all prompts per ablated head: about 10 s on one CPU thread for 16 heads.
    """
    from ctx_utils.models import load_model

    folder = Path(folder)
    plants, index, texts = _group_prompts(folder, n_prompts)
    model = load_model(str(folder), device="cpu") if model is None else model
    token_ids = [int(model.to_tokens(p.token, prepend_bos=False)[0, 0]) for p in plants]
    n_heads = model.cfg.n_heads
    clean_act, clean_prob = _readout(model, texts, token_ids, len(plants), [])
    ablated = [_readout(model, texts, token_ids, len(plants), [(0, h)]) for h in range(n_heads)]

    def mean(values: Tensor, rows: list[int]) -> float:
        return float(values[rows].mean()) if rows else float("nan")

    neurons, pairs, inhibitory = [], [], []
    for i, plant in enumerate(plants):
        groups = {g: index.get((plant.token, g), []) for g in GROUPS}
        scale = mean(clean_act[:, i], groups["local"] + groups["topic"])
        tok = plant.token.strip()
        heads, carriers, everywhere, inhibitors = [], {f"{tok}/local": [], f"{tok}/topic": []}, [], []
        for h, (act, prob) in enumerate(ablated):
            act_drop = {g: (mean(clean_act[:, i], rows) - mean(act[:, i], rows)) / scale for g, rows in groups.items() if rows}
            prob_drop = {g: mean(clean_prob[:, i], rows) - mean(prob[:, i], rows) for g, rows in groups.items() if rows}
            heads.append({"head": h, "act_drop": _rounded(act_drop), "prob_drop": _rounded(prob_drop)})
            local, topic = act_drop["local"], act_drop["topic"]
            if local >= threshold and topic >= threshold:
                everywhere.append(h)
            elif local >= threshold and local - topic >= threshold:
                carriers[f"{tok}/local"].append(h)
            elif topic >= threshold and topic - local >= threshold:
                carriers[f"{tok}/topic"].append(h)
            if act_drop.get("inhibited", 0.0) <= -threshold:
                inhibitors.append(h)
        for context, hs in carriers.items():
            pairs += [{"token": plant.token, "context": context, "layer": 1, "neuron": i, "head": h} for h in hs]
        inhibitory += [{"token": plant.token, "context": f"{tok}/inhibited", "layer": 1, "neuron": i, "head": h} for h in inhibitors]
        neurons.append({
            "token": plant.token, "layer": 1, "neuron": i, "scale": round(scale, DIGITS),
            "n_prompts": {g: len(rows) for g, rows in groups.items() if rows},
            "carriers": carriers, "needed_everywhere": everywhere, "inhibitors": inhibitors, "heads": heads,
        })
    return {
        "method": "zero-ablate one layer-0 head's values; read neuron and token at the last token of held-out prompts",
        "split": "test", "threshold": threshold, "n_prompts_per_group": n_prompts,
        "pairs": pairs, "inhibitory_pairs": inhibitory, "neurons": neurons,
    }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, DIGITS) for k, v in values.items()}

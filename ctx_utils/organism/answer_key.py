"""The causal answer key of an organism: which heads *carry* each planted context, measured by ablation.

Reading the key off the wiring is what made the clean organism unfailable: a head's role says what it may
read, not what the trained model does with it. So the key is measured on the trained model, on held-out
(test-split) planted prompts, the paper's way (zero-ablate a head's values, section 2.6 of arXiv 2402.15055): for planted token ``i``
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
* ``h`` **suppresses everywhere** when its ablation *raises* the activation by at least ``threshold`` on
  both contexts (free heads that learned to hold the neuron down wherever no context is seen);
* ``h`` **inhibits** (carries the inhibiting context) when its ablation raises the activation on the
  inhibited prompts by at least ``threshold``, and by at least ``threshold`` more than on either context's
  own prompts (so a head that suppresses everywhere is not counted as the inhibitor).

A neuron whose token the model did not learn (mean probability < ``MIN_LEARNED`` on its context prompts:
a neuron that died in training) has no carriers: ``learned`` is false and its effects are not recorded,
since they are fractions of an activation of about zero.

``pairs`` (token, layer, neuron, head) of carriers is what the pipeline's (neuron, head) pairs are scored
against; ``inhibitory_pairs`` separately, since step 3's rules look only for large *positive* attributions.
The token's probability drop is recorded beside each effect (the neuron is the only way to the token).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ctx_utils.organism.corpus import config_for, planted_prompts
from ctx_utils.prompts import pad

GROUPS = ("local", "topic", "both", "inhibited", "distractor")
THRESHOLD = 0.2
N_PROMPTS = 40  # per group and token: held-out prompts, the first ones of the test split
DIGITS = 4
MIN_LEARNED = 0.5  # the token's mean probability on its context prompts, for the neuron to count as learned


@torch.no_grad()
def _readout(model, rows: list[list[int]], token_ids: list[int], n_neurons: int, head: int | None,
             batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Layer-1 neurons ``0..n_neurons-1`` and the planted tokens' probabilities at each prompt's last token.

    ``model`` is the folder's ``GPT2LMHeadModel``; ``head`` (a layer-0 head, or None) is zero-ablated as
    ``ctx_utils.ablate.zero_value_hooks`` does on the TransformerLens model, whose compatibility mode folds
    value biases (with layer norm's bias, ``b_V + b_LN @ W_V``) into the output bias, so ``hook_v = 0`` keeps
    them: here by zeroing the head's value weights and moving ``b_LN @ W_V`` into its value bias for the run,
    which is the same and about 20× faster on this tiny model.
    Returns ``(activations [n_prompts, n_neurons], probs [n_prompts, n_tokens])``.
    """
    attn = model.transformer.h[0].attn.c_attn  # Conv1D: [d_model, 3·d_model] = q | k | v
    saved = (attn.weight.clone(), attn.bias.clone())
    if head is not None:
        d_model, d_head = model.config.n_embd, model.config.n_embd // model.config.n_head
        cols = slice(2 * d_model + head * d_head, 2 * d_model + (head + 1) * d_head)
        attn.bias[cols] += model.transformer.h[0].ln_1.bias @ attn.weight[:, cols]  # the folded value bias stays
        attn.weight[:, cols] = 0
    grabbed: list[Tensor] = []
    hook = model.transformer.h[1].mlp.act.register_forward_hook(lambda _m, _i, out: grabbed.append(out[..., :n_neurons]))
    acts, probs = [], []
    try:
        for start in range(0, len(rows), batch_size):
            ids, mask = pad(rows[start : start + batch_size], 0)
            grabbed.clear()
            logits = model(input_ids=ids, attention_mask=mask).logits  # [batch, pos, vocab]
            index = torch.arange(len(ids))
            last = mask.sum(1) - 1
            acts.append(grabbed[0][index, last].float())
            probs.append(logits[index, last].float().softmax(-1)[:, token_ids])
    finally:
        hook.remove()
        attn.weight.copy_(saved[0])
        attn.bias.copy_(saved[1])
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


def measure_causal_key(folder: str | Path, threshold: float = THRESHOLD, n_prompts: int = N_PROMPTS) -> dict:
    """The causal answer key of the organism in ``folder`` (see the module docstring); JSON-ready, rounded.

    One forward pass over all prompts (about 750) per ablated head: a few seconds on one CPU thread.
    """
    from transformers import AutoTokenizer, GPT2LMHeadModel

    folder = Path(folder)
    plants, index, texts = _group_prompts(folder, n_prompts)
    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = [[tokenizer.bos_token_id] + ids for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    token_ids = [tokenizer.convert_tokens_to_ids("Ġ" + p.token.strip()) for p in plants]
    clean_act, clean_prob = _readout(model, rows, token_ids, len(plants), None)
    ablated = [_readout(model, rows, token_ids, len(plants), h) for h in range(model.config.n_head)]

    def mean(values: Tensor, rows: list[int]) -> float:
        return float(values[rows].mean()) if rows else float("nan")

    neurons, pairs, inhibitory = [], [], []
    for i, plant in enumerate(plants):
        groups = {g: index.get((plant.token, g), []) for g in GROUPS}
        scale = mean(clean_act[:, i], groups["local"] + groups["topic"])
        token_prob = mean(clean_prob[:, i], groups["local"] + groups["topic"])
        tok = plant.token.strip()
        heads, carriers, everywhere, suppress, inhibitors = [], {f"{tok}/local": [], f"{tok}/topic": []}, [], [], []
        for h, (act, prob) in enumerate(ablated if token_prob >= MIN_LEARNED else []):
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
            elif local <= -threshold and topic <= -threshold:
                suppress.append(h)
            rise = -act_drop.get("inhibited", 0.0)
            if rise >= threshold and rise - max(-local, -topic) >= threshold:
                inhibitors.append(h)
        for context, hs in carriers.items():
            pairs += [{"token": plant.token, "context": context, "layer": 1, "neuron": i, "head": h} for h in hs]
        inhibitory += [{"token": plant.token, "context": f"{tok}/inhibited", "layer": 1, "neuron": i, "head": h} for h in inhibitors]
        neurons.append({
            "token": plant.token, "layer": 1, "neuron": i, "scale": round(scale, DIGITS),
            "token_probability": round(token_prob, DIGITS), "learned": token_prob >= MIN_LEARNED,
            "n_prompts": {g: len(rows) for g, rows in groups.items() if rows},
            "carriers": carriers, "needed_everywhere": everywhere, "suppress_everywhere": suppress,
            "inhibitors": inhibitors, "heads": heads,
        })
    return {
        "method": "zero-ablate one layer-0 head's values; read neuron and token at the last token of held-out prompts",
        "split": "test", "threshold": threshold, "n_prompts_per_group": n_prompts,
        "pairs": pairs, "inhibitory_pairs": inhibitory, "neurons": neurons,
    }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, DIGITS) for k, v in values.items()}


def main() -> None:
    """``python -m ctx_utils.organism.answer_key <folder>``: measure the key again and store it in ground_truth.json."""
    import argparse
    import json

    from ctx_utils.results import save_json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    path = args.folder / "ground_truth.json"
    if not path.exists():
        parser.error(f"{path} is missing: train the organism first (python -m ctx_utils.organism.train --out {args.folder}).")
    truth = json.loads(path.read_text(encoding="utf-8"))
    truth.pop("schema_version", None)
    truth["causal_key"] = measure_causal_key(args.folder)
    save_json(path, truth)
    print(f"{path}: {len(truth['causal_key']['pairs'])} carrier pairs, {len(truth['causal_key']['inhibitory_pairs'])} inhibitory")


if __name__ == "__main__":
    main()

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
against (:func:`recovery`, which notebooks 03–06 print); ``inhibitory_pairs`` separately, since step 3's rules
look only for large *positive* attributions. The token's probability drop is recorded beside each effect (the
neuron is the only way to the token). The clean organism's key is its wiring (one head per context, exact by
construction); :func:`key_pairs` gives both kinds of key in the same form.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from ctx_utils.organism.corpus import config_for, planted_prompts
from ctx_utils.tokens import pad

GROUPS = ("local", "topic", "both", "inhibited", "distractor")
THRESHOLD = 0.2
N_PROMPTS = 40  # per group and token: held-out prompts, the first ones of the test split
DIGITS = 4
MIN_LEARNED = 0.5  # the token's mean probability on its context prompts, for the neuron to count as learned


@torch.no_grad()
def _ablations(model, rows: list[list[int]], token_ids: list[int], n_neurons: int) -> list[tuple[Tensor, Tensor]]:
    """Planted neurons and tokens at each prompt's last token: clean, then with each layer-0 head ablated.

    Returns ``[(activations [n_prompts, n_neurons], probs [n_prompts, n_tokens])]``, first clean, then one per
    head. A head is zero-ablated as ``ctx_utils.ablate.zero_value_hooks`` does on the TransformerLens model,
    whose compatibility mode folds value biases (with layer norm's, ``c = b_V + b_LN @ W_V``) into the output
    bias, so ``hook_v = 0`` leaves the head writing ``c @ W_O`` everywhere. The organism makes this cheap and
    exact: layer 0 is attention only and layer 1 MLP only, so the last token's output depends only on its
    own residual, where each head's write is additive: ablating head ``h`` replaces ``z_h @ W_O[h]`` by
    ``c_h @ W_O[h]`` there. One forward pass, then 16 small MLP reads instead of 16 forward passes.
    """
    blocks = model.transformer.h
    if any(p.abs().max() > 0 for m in (blocks[0].mlp, blocks[1].attn) for p in m.parameters()):
        raise ValueError("The causal key assumes the organism's shape (layer 0 attention only, layer 1 MLP only).")
    n_heads, d_model = model.config.n_head, model.config.n_embd
    d_head = d_model // n_heads
    attn = blocks[0].attn
    grabbed: list[Tensor] = []
    hook = attn.c_proj.register_forward_pre_hook(lambda _m, args: grabbed.append(args[0]))  # z: [batch, pos, heads·d_head]
    resid, z = [], []
    try:
        for start in range(0, len(rows), 256):
            ids, mask = pad(rows[start : start + 256], 0)
            grabbed.clear()
            out = model.transformer(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            index, last = torch.arange(len(ids)), mask.sum(1) - 1
            resid.append(out.hidden_states[1][index, last])  # after block 0: [batch, d_model]
            z.append(grabbed[0][index, last].reshape(len(ids), n_heads, d_head))
    finally:
        hook.remove()
    resid_last, z_last = torch.cat(resid), torch.cat(z)  # [n, d_model], [n, heads, d_head]
    w_v = attn.c_attn.weight[:, 2 * d_model :]  # [d_model, heads·d_head]
    kept = (attn.c_attn.bias[2 * d_model :] + blocks[0].ln_1.bias @ w_v).reshape(n_heads, d_head)  # c_h
    w_o = attn.c_proj.weight.reshape(n_heads, d_head, d_model)
    mlp = blocks[1].mlp

    def read(x: Tensor) -> tuple[Tensor, Tensor]:
        post = mlp.act(mlp.c_fc(blocks[1].ln_2(x)))  # [n, d_mlp]
        logits = model.lm_head(model.transformer.ln_f(x + mlp.c_proj(post)))  # [n, vocab]
        return post[:, :n_neurons], logits.softmax(-1)[:, token_ids]

    out = [read(resid_last)]
    for h in range(n_heads):
        out.append(read(resid_last - (z_last[:, h] - kept[h]) @ w_o[h]))
    return out


def organism_folder(model_name: str) -> Path:
    """The folder of a bundled organism (``organism``, ``organism-clean``), else ``model_name`` read as a folder."""
    from ctx_utils.models import ORGANISMS

    return ORGANISMS.get(model_name, Path(model_name).expanduser())


def load_answer_key(model_name: str) -> dict | None:
    """The ``ground_truth.json`` of a bundled organism (``organism``, ``organism-clean``) or of a folder the kit
    trained; None for any other model (GPT-2 and Pythia have no answer key)."""
    folder = organism_folder(model_name)
    path = folder / "ground_truth.json"
    return json.loads(path.read_text(encoding="utf-8")) if folder.is_dir() and path.exists() else None


def key_pairs(truth: dict) -> tuple[list[dict], list[dict]]:
    """(carrier pairs, inhibitory pairs) of an answer key, each ``{token, context, layer, neuron, head}``.

    A measured key (``causal_key``) gives its pairs; the clean organism's wiring gives, for planted token ``i``,
    neuron ``i`` of layer 1 and each context's wired layer-0 head.
    """
    if "causal_key" in truth:
        return truth["causal_key"]["pairs"], truth["causal_key"]["inhibitory_pairs"]
    wired = [{"token": plant["token"], "context": c["name"], "layer": 1, "neuron": i, "head": c["head_index"]}
             for i, plant in enumerate(truth["planted"]) for c in plant["contexts"] if "head_index" in c]
    return wired, []


def token_neurons(truth: dict) -> dict[str, tuple[int, int]]:
    """Planted token → (layer, neuron) of its next-token neuron, the only writer of the token."""
    if "causal_key" in truth:
        return {n["token"]: (n["layer"], n["neuron"]) for n in truth["causal_key"]["neurons"]}
    return {plant["token"]: (1, i) for i, plant in enumerate(truth["planted"])}


def planted_neurons(truth: dict) -> set[tuple[int, int]]:
    """(layer, neuron) of every planted token's neuron. One whose token was not learned (or, in the null control,
    carries no signal) has no carriers: every pair on it is a false positive."""
    return set(token_neurons(truth).values())


def recovery(pairs: list[dict], truth: dict) -> dict:
    """How the pipeline's (neuron, head) pairs compare with the answer key: precision, recall, contexts found.

    Only pairs on planted neurons are scored (the key says nothing about the others, counted in
    ``other_pairs``): precision = key pairs found / pairs found there; recall = key pairs found / key pairs;
    a context is found when at least one of its carrier heads is among the pairs. ``false_pairs`` and
    ``missed`` list (layer, neuron, head, token) so a notebook can show them.
    """
    carriers, inhibitory = key_pairs(truth)
    planted = planted_neurons(truth)
    cell = lambda p: (p["layer"], p["neuron"], p["head"])  # noqa: E731
    found = {cell(p): p.get("token", "") for p in pairs if (p["layer"], p["neuron"]) in planted}
    wanted = {cell(k): k["token"] for k in carriers}
    contexts: dict[str, set] = {}
    for k in carriers:
        contexts.setdefault(k["context"], set()).add(cell(k))
    hits = set(found) & set(wanted)
    return {
        "pairs": len(found), "key_pairs": len(wanted), "hits": len(hits),
        "precision": len(hits) / len(found) if found else None,
        "recall": len(hits) / len(wanted) if wanted else None,
        "contexts_found": sorted(c for c, cs in contexts.items() if cs & set(found)), "contexts": sorted(contexts),
        "inhibitory_found": len(set(found) & {cell(k) for k in inhibitory}), "inhibitory": len(inhibitory),
        "other_pairs": sum((p["layer"], p["neuron"]) not in planted for p in pairs),
        "false_pairs": sorted((*c, t) for c, t in found.items() if c not in wanted),
        "missed": sorted((*c, t) for c, t in wanted.items() if c not in found),
    }


def markers(context: dict) -> list[str]:
    """Every marker of a context in ``ground_truth.json``: its ``markers`` (a topic family has several), else its one ``marker``."""
    return list(context.get("markers") or [context["marker"]])


def named_contexts(text: str, truth: dict, token: str | None = None) -> dict[str, list[str]]:
    """The planted contexts an explanation names: context name → the context's words found in ``text``.

    A context's words are its markers' words other than the token's trigger (``never`` of ``never give``; every
    word of a topic family), matched whole and case-insensitively, so naming one word of a family counts (partly
    right). ``token``: look only at that planted token's contexts; None: every planted context.
    """
    import re

    named: dict[str, list[str]] = {}
    for plant in truth["planted"]:
        if token is not None and plant["token"] != token:
            continue
        trigger = plant.get("trigger", "").strip()
        for context in plant["contexts"]:
            words = dict.fromkeys(w for m in markers(context) for w in m.split() if w != trigger)
            hits = [w for w in words if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text, re.IGNORECASE)]
            if hits:
                named[context["name"]] = hits
    return named


def learned_tokens(truth: dict) -> set[str]:
    """The planted tokens the organism learned (its key's ``learned``; the clean organism's wiring: all of them)."""
    if "causal_key" in truth:
        return {n["token"] for n in truth["causal_key"]["neurons"] if n["learned"]}
    return {plant["token"] for plant in truth["planted"]}


def pair_role(truth: dict, layer: int, neuron: int, head: int) -> str:
    """What the answer key says flat head ``head`` does for neuron ``(layer, neuron)``, in words.

    ``carries <context>`` (a key pair), ``needed everywhere`` (the trigger head), ``suppresses everywhere``,
    ``inhibits <context>``, ``no measured effect`` (a planted neuron's head the key gives no role; with the head's
    wired role when the key lists roles, e.g. ``no measured effect (decoy)``), or ``not a planted neuron`` (the key
    says nothing about the pair).
    """
    if (layer, neuron) not in planted_neurons(truth):
        return "not a planted neuron"
    carriers, inhibitory = key_pairs(truth)
    for kind, pairs in (("carries", carriers), ("inhibits", inhibitory)):
        for k in pairs:
            if (k["layer"], k["neuron"], k["head"]) == (layer, neuron, head):
                return f"{kind} {k['context']}"
    for n in truth.get("causal_key", {}).get("neurons", []):
        if (n["layer"], n["neuron"]) == (layer, neuron):
            if head in n["needed_everywhere"]:
                return "needed everywhere"
            if head in n["suppress_everywhere"]:
                return "suppresses everywhere"
    wired = [h["role"] for h in truth.get("heads", []) if h["head"] == head]
    return "no measured effect" + (f" ({wired[0]})" if wired else "")


def key_table(truth: dict) -> list[dict]:
    """One row per planted token: its neuron, whether it was learned, each context's carrier heads, and (measured
    key only) the heads needed everywhere, suppressing everywhere and inhibiting. Heads are flat layer-0 indices."""
    carriers, _ = key_pairs(truth)
    neurons = {n["token"]: n for n in truth.get("causal_key", {}).get("neurons", [])}
    learned = learned_tokens(truth)
    rows = []
    for plant in truth["planted"]:
        token, n = plant["token"], neurons.get(plant["token"])
        layer, neuron = token_neurons(truth)[token]
        row = {"token": token, "neuron": f"L{layer}.N{neuron}", "learned": token in learned}
        for context in plant["contexts"]:
            row[context["name"].split("/")[-1]] = sorted(k["head"] for k in carriers if k["context"] == context["name"])
        if n:
            row |= {"needed everywhere": n["needed_everywhere"], "suppress everywhere": n["suppress_everywhere"],
                    "inhibits": n["inhibitors"]}
        rows.append(row)
    return rows


def head_report(truth: dict) -> list[dict]:
    """Per layer-0 head of a measured key: its wired role (what it may read) beside what ablation measured it doing.

    ``measured`` lists, over every learned planted neuron, the head's roles (``carries up/local``, ``needed
    everywhere by 4 neurons``...), or ``nothing`` when its ablation moves no planted neuron past the key's
    threshold (decoys, and free heads that learned nothing). Empty for a key without ``heads`` (the clean organism).
    """
    rows = []
    for head in truth.get("heads", []):
        h, roles = head["head"], []
        for layer, neuron in sorted(planted_neurons(truth)):
            role = pair_role(truth, layer, neuron, h)
            if not role.startswith("no measured effect"):
                roles.append(role)
        counted = {r: roles.count(r) for r in dict.fromkeys(roles)}
        measured = [f"{r} ({c} neurons)" if c > 1 else r for r, c in counted.items()]
        rows.append({"head": h, "role": head["role"], "reads": ", ".join(head["reads"]), "tie": head["tie"],
                     "measured": "; ".join(measured) or "nothing"})
    return rows


def ablation_confirms(effect: dict, threshold: float = THRESHOLD) -> bool:
    """Whether an ablation record of :func:`ctx_utils.ablate.ablation_effects` confirms its (neuron, head) pair.

    Confirmed: zero-ablating the head removes at least ``threshold`` of the neuron's mean activation on the held-out
    prompts where the head is active — the key's own criterion for a carrier (at least ``threshold`` of the
    activation on its context), applied to the pipeline's prompts. A pair with no active prompt, or a record made
    without the neuron's activation, is not confirmed.
    """
    if effect.get("mean_act_decrease_active") is None:
        return False
    active = [a for a, on in zip(effect["act_normal"], effect["head_active"]) if on]
    scale = sum(active) / len(active)
    return scale > 0 and effect["mean_act_decrease_active"] >= threshold * scale


def held_out_groups(model_name: str, n_prompts: int = N_PROMPTS) -> dict[str, list[str]]:
    """Held-out (test-split) planted prompts of an organism, per context name (``up/local``, ``up/distractor``…),
    the first ``n_prompts`` of each: the prompts the causal key was measured on, for the organism's own corpus."""
    from ctx_utils.organism.corpus import DEFAULT_CONFIG

    config, seed = config_for(organism_folder(model_name)) or (DEFAULT_CONFIG, 0)  # the clean organism: the default corpus, as load_corpus
    groups: dict[str, list[str]] = {}
    for p in planted_prompts("test", seed, config):
        rows = groups.setdefault(p.context, [])
        if len(rows) < n_prompts:
            rows.append(p.prompt)
    return groups


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

    One forward pass over the held-out prompts (about 750), then each head's ablation: seconds on one CPU thread.
    """
    from transformers import AutoTokenizer, GPT2LMHeadModel

    folder = Path(folder)
    plants, index, texts = _group_prompts(folder, n_prompts)
    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = [[tokenizer.bos_token_id] + ids for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    token_ids = [tokenizer.convert_tokens_to_ids("Ġ" + p.token.strip()) for p in plants]
    (clean_act, clean_prob), *ablated = _ablations(model, rows, token_ids, len(plants))

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


# ---------------------------------------------------------------- marker words in the prompts of a pair


def marker_share(texts: list[str], markers: list[str]) -> float:
    """The fraction of ``texts`` that contain any of ``markers`` (words or phrases with their leading space)."""
    if not texts:
        return 0.0
    return sum(any(m in " " + text.strip() for m in markers) for text in texts) / len(texts)

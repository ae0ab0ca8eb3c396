"""Verify the kit on a real model against the authors' released intermediate numbers (GPT-2 small, Oct-2023 run).

    python -m ctx_utils.tools.verify gpt2-small [--data FOLDER] [--neurons N] [--batch-size B]
    make verify

The authors' release (``data/paper-data/<model>/``, see its README) keeps more than the final scores: the neuron
list with each congruence, per truncated prompt the top-3 heads, per held-out record the token's probability with
and without the head. This command runs the kit's own step functions on the model at the paper's October-2023
settings (top-3 heads, heads of earlier layers only) and compares, step by step:

* **step 1** — the next-token neurons (layer, neuron, token, in order) and their congruence;
* **step 2** — each released prompt's neuron activation at its last token, which the authors' truncation made
  reach ``act_ratio`` (80 %) of the neuron's maximum on the prompt's document (``og_act``);
* **step 3** — each released prompt's top-3 heads by direct attribution, in order;
* **step 6** — each released ablation record's probability drop when the head's values are zeroed.

It prints per step how many agree and the largest difference, and names the first disagreements with the likely
reason (a near tie between heads, a text that re-tokenises to another length than the authors' prompt). Exit
status 0 when every step agrees, 1 when something differs, 2 when the model or the data cannot be loaded —
offline, GPT-2 cannot be loaded and the command stops at once with the kit's usual message.

``MODEL`` is anything :func:`ctx_utils.models.load_model` accepts; the data folder defaults to the released
folder of the same name. The tests run it on a small fixture model whose "released" data the kit wrote itself.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ctx_utils import ablate, activations, heads, neurons
from ctx_utils.paper_data import PaperDataError, read_json, resolve_data_dir
from ctx_utils.settings import DEFAULTS

CONGRUENCE_RTOL = 1e-3  # congruence is a dot product over d_model: float32 noise across runtimes is far below this
PROB_ATOL = 1e-4  # probabilities: float32 rounding differs between the authors' GPU run and a CPU run
SHOWN = 5  # disagreements listed per step; the rest are counted


@dataclass
class StepReport:
    """How one step compares: ``agree`` of ``total`` items, the largest difference, and sentences for the rest."""

    step: str
    what: str
    total: int = 0
    agree: int = 0
    largest: float = 0.0
    largest_what: str = ""
    notes: list[str] = field(default_factory=list)

    def add(self, ok: bool, difference: float, note: str) -> None:
        """Count one compared item; ``note`` (said when it disagrees) explains the difference."""
        self.total += 1
        self.agree += ok
        self.largest = max(self.largest, difference)
        if not ok:
            self.notes.append(note)

    def lines(self) -> list[str]:
        verdict = "all agree" if self.agree == self.total else f"{self.total - self.agree} differ"
        out = [f"{self.step}: {self.agree} of {self.total} {self.what} agree ({verdict}); "
               f"largest difference {self.largest:.3g}{self.largest_what}"]
        out += [f"    {note}" for note in self.notes[:SHOWN]]
        if len(self.notes) > SHOWN:
            out.append(f"    … and {len(self.notes) - SHOWN} more")
        return out


def _neuron_entries(data: Path, file_name: str, limit: set[tuple[int, int]]) -> list[dict[str, Any]]:
    return [n for n in read_json(data / file_name)["neurons"] if (n["layer"], n["neuron"]) in limit]


def verify_neurons(model: Any, data: Path) -> tuple[StepReport, list[dict[str, Any]]]:
    """Step 1: :func:`ctx_utils.neurons.select_next_token_neurons` with the authors' layers, count and rejects."""
    released = read_json(data / "neurons.json")
    reject = [r["token"] for r in released.get("rejected_neurons", [])]
    ours = neurons.select_next_token_neurons(model, released["layers_scanned"], released["num_neurons_per_layer"], reject)
    report = StepReport("step 1 (neurons)", "neurons (same layer, neuron, token and place; congruence within 0.1 %)",
                        largest_what=" (relative, congruence)")
    for i, theirs in enumerate(released["neurons"]):
        mine = ours[i] if i < len(ours) else None
        if mine is None:
            report.add(False, 0.0, f"#{i} L{theirs['layer']}.N{theirs['neuron']} {theirs['token']!r}: the kit selects fewer neurons")
            continue
        diff = abs(mine["congruence"] - theirs["congruence"]) / max(abs(theirs["congruence"]), 1e-12)
        same = (mine["layer"], mine["neuron"], mine["token"]) == (theirs["layer"], theirs["neuron"], theirs["token"])
        report.add(same and diff <= CONGRUENCE_RTOL, diff,
                   f"#{i}: released L{theirs['layer']}.N{theirs['neuron']} {theirs['token']!r} ({theirs['congruence']:.4f}), "
                   f"kit L{mine['layer']}.N{mine['neuron']} {mine['token']!r} ({mine['congruence']:.4f})"
                   + ("" if same else ": a different neuron here (a near tie in congruence, or another reject list)"))
    return report, released["neurons"]


def _document_of_each_prompt(entry: dict[str, Any]) -> list[dict[str, Any] | None]:
    """The document each prompt was cut from, where the release lets it be known.

    Prompts are the unique texts of the documents that passed the length filter, in order; when no two documents
    gave the same text, prompt ``i`` comes from the ``i``-th such document. Otherwise the link is lost (None).
    """
    docs = [d for d in entry["max_activating_docs"] if d["passed_length_filter"]]
    return docs if len(docs) == len(entry["prompts"]) else [None] * len(entry["prompts"])


def verify_prompts(model: Any, data: Path, keys: set[tuple[int, int]], ratio: float) -> tuple[StepReport, dict[str, int]]:
    """Step 2: each prompt's activation at its last token (no BOS, as the authors' truncation searched) ≥ ratio × og_act.

    Returns the report and, per prompt text, the authors' token count where known (for the reasons of later steps).
    """
    report = StepReport("step 2 (prompts)", f"prompts (activation at the last token ≥ {ratio:.0%} of the document's maximum)",
                        largest_what=" (shortfall, share of the document's maximum)")
    n_tokens: dict[str, int] = {}
    skipped = 0
    for split in ("train", "test"):
        for entry in _neuron_entries(data, f"{split}_prompts.json", keys):
            docs = _document_of_each_prompt(entry)
            seqs = [model.to_tokens(text, prepend_bos=False)[0].tolist() for text in entry["prompts"]]
            acts = activations.last_token_activations(model, seqs, entry["layer"], entry["neuron"])
            for i, (text, doc, seq) in enumerate(zip(entry["prompts"], docs, seqs)):
                if doc is None:
                    skipped += 1
                    continue
                n_tokens[text] = doc["n_tokens"]
                share = float(acts[i]) / doc["og_act"]
                retokenised = "" if len(seq) == doc["n_tokens"] else (
                    f"; the text re-tokenises to {len(seq)} tokens, the authors' prompt had {doc['n_tokens']} "
                    "(a different tokenisation of the same text)")
                report.add(share >= ratio - 1e-6, max(0.0, ratio - share),
                           f"{split} L{entry['layer']}.N{entry['neuron']} prompt {i}: activation {float(acts[i]):.3f} "
                           f"= {share:.0%} of the document's {doc['og_act']:.3f}{retokenised}")
    if skipped:
        report.notes.insert(0, f"({skipped} prompts not compared: their neuron has two documents with the same text, "
                               "so the release does not say which document each prompt came from)")
    return report, n_tokens


def verify_heads(model: Any, data: Path, keys: set[tuple[int, int]], n_tokens: dict[str, int],
                 batch_size: int) -> StepReport:
    """Step 3: the kit's direct attribution (heads of earlier layers) gives each prompt's released top 3, in order."""
    report = StepReport("step 3 (heads)", "prompts (same top-3 heads in the same order)",
                        largest_what=" (attribution by which a released top-3 head falls short of the kit's 3rd)")
    for split in ("train", "test"):
        texts = {(n["layer"], n["neuron"]): n["prompts"] for n in _neuron_entries(data, f"{split}_prompts.json", keys)}
        for entry in _neuron_entries(data, f"head_attributions_{split}.json", keys):
            layer, neuron = entry["layer"], entry["neuron"]
            attr = heads.head_attributions(model, texts[layer, neuron], layer, neuron, include_same_layer=False,
                                           batch_size=batch_size)
            top = attr.topk(min(3, attr.shape[1]), dim=1)
            for i, theirs in enumerate(entry["top3_heads"]):
                mine = top.indices[i].tolist()
                third = float(top.values[i, -1])
                gap = max(0.0, max(third - float(attr[i, h]) for h in theirs)) if max(theirs) < attr.shape[1] else float("inf")
                text = texts[layer, neuron][i]
                why = "a near tie" if gap < 0.01 * max(abs(third), 1e-6) else "a clear difference"
                if text in n_tokens and len(model.to_tokens(text, prepend_bos=False)[0]) != n_tokens[text]:
                    why = "the text re-tokenises to another length than the authors' prompt"
                report.add(mine == list(theirs), gap,
                           f"{split} L{layer}.N{neuron} prompt {i}: released {list(theirs)}, kit {mine} "
                           f"({'same heads, other order' if set(mine) == set(theirs) else why}; gap {gap:.3g})")
    return report


def verify_ablation(model: Any, data: Path, keys: set[tuple[int, int]], batch_size: int) -> StepReport:
    """Step 6: per released record, the token's probability drop with the head's values zeroed (within 1e-4)."""
    report = StepReport("step 6 (ablation)", f"records (probability drop within {PROB_ATOL:g})",
                        largest_what=" (probability)")
    path = data / "ablation.json"
    if not path.exists():
        report.notes.append(f"not compared: {path} is missing (a download has no ablation data)")
        return report
    tests = {(n["layer"], n["neuron"]): n["prompts"] for n in _neuron_entries(data, "test_prompts.json", keys)}
    for pair in read_json(path)["pairs"]:
        if (pair["layer"], pair["neuron"]) not in keys:
            continue
        texts = [tests[pair["layer"], pair["neuron"]][i] for i in pair["test_prompt_idx"]]
        target = ablate.token_id(model, pair["token"])
        normal = ablate.token_probabilities(model, texts, target, batch_size=batch_size)
        ablated = ablate.token_probabilities(model, texts, target, [(pair["head_layer"], pair["head_index"])], batch_size)
        for r, idx in enumerate(pair["test_prompt_idx"]):
            theirs = pair["prob_normal"][r] - pair["prob_ablated"][r]
            mine = float(normal[r] - ablated[r])
            diff = abs(mine - theirs)
            base = abs(float(normal[r]) - pair["prob_normal"][r])
            report.add(diff <= PROB_ATOL, diff,
                       f"L{pair['layer']}.N{pair['neuron']} head {pair['head']} test prompt {idx}: released drop "
                       f"{theirs:+.5f}, kit {mine:+.5f}" + (f" (the unablated probability already differs by {base:.2g})"
                                                           if base > PROB_ATOL else ""))
    return report


def verify(model: Any, data: str | Path, n_neurons: int | None = None, batch_size: int = DEFAULTS.batch_size) -> list[StepReport]:
    """Every comparison, on the first ``n_neurons`` released neurons (all by default)."""
    data = Path(data)
    step1, released = verify_neurons(model, data)
    keys = {(n["layer"], n["neuron"]) for n in released[:n_neurons]}
    ratio = read_json(data / "train_prompts.json").get("act_ratio", DEFAULTS.ratio)
    with torch.no_grad():
        step2, n_tokens = verify_prompts(model, data, keys, ratio)
        step3 = verify_heads(model, data, keys, n_tokens, batch_size)
        step6 = verify_ablation(model, data, keys, batch_size)
    return [step1, step2, step3, step6]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctx_utils.tools.verify", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the model to run (gpt2-small; or any model folder, with --data)")
    parser.add_argument("--data", help="the released folder to compare with (default: the shipped data/paper-data/<model>)")
    parser.add_argument("--neurons", type=int, default=None, help="compare only the first N released neurons (faster)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    args = parser.parse_args(argv)
    from ctx_utils.models import DeviceError, HubUnreachableError, ModelNotFoundError, load_model, resolve_source

    try:
        data = Path(args.data) if args.data else resolve_data_dir() / args.model
        if not (data / "neurons.json").is_file():
            raise PaperDataError(f"{data} holds no released data (neurons.json): give --data, a folder of "
                                 "data/paper-data/'s layout (gpt2-small, gpt2-medium, gpt2-large ship with the kit).")
        resolve_source(args.model)  # a typo fails here, before anything is loaded
        model = load_model(args.model)  # offline, GPT-2 stops here at once with the kit's usual message
    except (PaperDataError, HubUnreachableError, ModelNotFoundError, DeviceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Verifying the kit on {args.model} against {data} (Oct-2023 settings: top-3 heads of earlier layers).")
    reports = verify(model, data, args.neurons, args.batch_size)
    for report in reports:
        print("\n".join(report.lines()))
    differ = [r.step for r in reports if r.agree != r.total]
    print("Everything agrees." if not differ else f"Differences in: {', '.join(differ)} (see above for what and why).")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m ctx_utils.score``: score an explainer on the authors' released data, next to GPT-4.

For every model folder of a paper-data folder (layout: paper-data/README.md §3), and every explained
(neuron, head) pair in its ``explanations.jsonl``:

1. train the explainer on the pair's positive / negative train examples only;
2. classify the pair's held-out test prompts listed in ``classifications.jsonl`` (texts from
   ``test_prompts.json``, at most ``--max-test`` per pair);
3. score both this explainer and the authors' stored GPT-4 answers on the same prompts with
   :func:`ctx_utils.score.head_explanation_score` (Oct-2023 convention, ``missing="defined_rate"``).

A pair whose head is active on every training prompt (no negative examples) leaves nothing to contrast;
there the offline explainer predicts "active" for every test prompt, the only class it has seen.

Examples::

    python -m ctx_utils.score --paper-data ../shared/paper-data --explainer offline
    python -m ctx_utils.score --paper-data ../shared/paper-data --explainer offline --json \\
        --out results/paper-data/offline_explainer.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ctx_utils.offline_explainer import classify_offline, explain_offline
from ctx_utils.results import SCHEMA_VERSION, save_json
from ctx_utils.score import head_explanation_score

MODEL_FILES = ("explanations.jsonl", "classifications.jsonl", "test_prompts.json")
EXPLAINERS = ("offline",)


class PaperDataError(ValueError):
    """The paper-data folder is missing a file or holds something this command cannot read."""


def _read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as err:
        raise PaperDataError(f"Cannot read {path}: {err}. Use the JSONL files of paper-data (README §3.5-3.6).") from err


def model_folders(paper_data: Path, models: Sequence[str] | None = None) -> list[Path]:
    """The model subfolders to score: those named in ``models``, else every one holding the three files."""
    if not paper_data.is_dir():
        raise PaperDataError(f"{paper_data} is not a folder: pass --paper-data the folder that holds gpt2-small/ etc.")
    if models:
        folders = [paper_data / m for m in models]
        for folder in folders:
            absent = [f for f in MODEL_FILES if not (folder / f).is_file()]
            if absent:
                raise PaperDataError(f"{folder} lacks {', '.join(absent)}: check the --models names against {paper_data}.")
        return folders
    folders = sorted(d for d in paper_data.iterdir() if d.is_dir() and all((d / f).is_file() for f in MODEL_FILES))
    if not folders:
        raise PaperDataError(f"No model folder in {paper_data} has {', '.join(MODEL_FILES)}: is this a paper-data folder?")
    return folders


def score_model(folder: Path, max_test: int = 20) -> dict[str, float | int]:
    """n_pairs, mean E of the offline explainer and mean E of GPT-4's stored answers, for one model folder."""
    pairs = _read_jsonl(folder / "explanations.jsonl")
    rows: dict[tuple[int, int, int], list[dict]] = {}
    try:
        for r in _read_jsonl(folder / "classifications.jsonl"):
            if r["test_prompt_idx"] < max_test:
                rows.setdefault((r["layer"], r["neuron"], r["head"]), []).append(r)
        test = json.loads((folder / "test_prompts.json").read_text(encoding="utf-8"))
        prompts = {(n["layer"], n["neuron"]): n["prompts"] for n in test["neurons"]}
        e_offline, e_gpt4, n_single_class = [], [], 0
        for pair in tqdm(pairs, desc=folder.name, unit="pair", file=sys.stderr):
            key = (pair["layer"], pair["neuron"], pair["head"])
            if key not in rows:
                raise PaperDataError(f"{folder.name}: pair {key} has no rows in classifications.jsonl.")
            pair_rows = sorted(rows[key], key=lambda r: r["test_prompt_idx"])
            texts = [prompts[key[:2]][r["test_prompt_idx"]] for r in pair_rows]
            truth = [bool(r["head_active"]) for r in pair_rows]
            if pair["positive_examples"] and pair["negative_examples"]:
                expl = explain_offline(pair["positive_examples"], pair["negative_examples"], pair["token"])
                predicted = [classify_offline(expl, t) for t in texts]
            else:  # one class only in training: predict it (see module docstring)
                n_single_class += 1
                predicted = [bool(pair["positive_examples"])] * len(texts)
            e_offline.append(head_explanation_score(truth, predicted, missing="defined_rate"))
            e_gpt4.append(head_explanation_score(truth, [r["answer"] == "Yes" for r in pair_rows], missing="defined_rate"))
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
        raise PaperDataError(
            f"{folder} does not have the paper-data layout ({type(err).__name__}: {err}); see paper-data/README.md §3."
        ) from err
    if not pairs:
        raise PaperDataError(f"{folder / 'explanations.jsonl'} has no pairs.")
    return {
        "n_pairs": len(pairs),
        "mean_E_offline": float(np.mean(e_offline)),
        "mean_E_gpt4": float(np.mean(e_gpt4)),
        "n_single_class_pairs": n_single_class,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ctx_utils.score",
        description="Score an explainer on the authors' released data (head explanation score E), next to GPT-4.",
    )
    parser.add_argument("--paper-data", required=True, type=Path, help="folder holding one subfolder per model")
    parser.add_argument("--explainer", choices=EXPLAINERS, default="offline", help="which explainer to score")
    parser.add_argument("--models", help="comma-separated model folder names (default: every model folder)")
    parser.add_argument("--max-test", type=int, default=20, help="held-out prompts per pair (the paper: 20)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file (atomically)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0 ok, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits with code 2 on a bad option
    if args.max_test < 1:
        parser.error("--max-test must be at least 1.")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    try:
        result = {
            "schema_version": SCHEMA_VERSION,
            "explainer": args.explainer,
            "max_test": args.max_test,
            "models": {folder.name: score_model(folder, args.max_test) for folder in model_folders(args.paper_data, models)},
        }
    except PaperDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out:
        save_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"Head explanation score E ({args.explainer} explainer vs the authors' GPT-4 answers, "
              f"up to {args.max_test} held-out prompts per pair)")
        print(f"{'model':<16}{'pairs':>7}{'E ' + args.explainer:>12}{'E gpt-4':>10}")
        for name, m in result["models"].items():
            print(f"{name:<16}{m['n_pairs']:>7}{m['mean_E_offline']:>12.4f}{m['mean_E_gpt4']:>10.4f}")
    return 0

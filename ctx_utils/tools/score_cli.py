"""``python -m ctx_utils.tools.score_cli``: score the offline explanations on the authors' released data, beside GPT-4's.

For every model folder of a paper-data folder (read by :mod:`ctx_utils.paper_data`) and every explained
(neuron, head) pair:

1. the offline explainer writes the pair's explanation from its positive / negative train examples only;
2. the offline reader classifies the pair's held-out prompts (at most ``--max-test``) from that explanation's
   *text* only, as GPT-4 did with its own explanation in the paper (arXiv 2402.15055);
3. E (Oct-2023 convention, ``missing="defined_rate"``) of both, on the same prompts; the paired difference
   offline − GPT-4 with a 95 % percentile-bootstrap interval over pairs (10 000 resamples, seed 0) and the
   wins / ties / losses;
4. baselines on the same prompts: always "active", the training majority class, and the best one-word rule
   (read by the same reader); and, in a separate row labelled so, the fitted naive-Bayes word classifier,
   which is a classifier, not an explanation (no reader sees its weights).

Examples::

    python -m ctx_utils.tools.score_cli --explainer offline          # data: $CTX_PAPER_DATA or the download cache
    python -m ctx_utils.tools.score_cli --paper-data DIR --json --out results/paper-data/offline_explainer.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctx_utils.offline_explainer import best_single_word, explain_offline, fit_word_classifier
from ctx_utils.offline_reader import OfflineReader
from ctx_utils.paper_data import PaperDataError, held_out_pairs, load_model_data, load_paper_data, resolve_data_dir
from ctx_utils.results import SCHEMA_VERSION, save_json
from ctx_utils.score import head_explanation_score, paired_difference, wins_ties_losses

EXPLAINERS = ("offline",)
ROWS = {  # result key -> label in the table
    "explanation": "offline explanation (read from its text)",
    "gpt4": "GPT-4 explanation (authors' Oct-2023 answers)",
    "always_active": "baseline: always active",
    "majority": "baseline: training majority class",
    "single_word": "baseline: best single word",
    "word_classifier": "classifier, not an explanation (naive Bayes, every cue)",
}


def score_model(data, max_test: int = 20, **explainer_args: Any) -> dict[str, Any]:
    """Per-pair E of every row of :data:`ROWS` for one model's released data, and their comparison.

    ``explainer_args`` go to :func:`ctx_utils.offline_explainer.explain_offline` (e.g. ``max_cues``).
    Returns ``n_pairs``, ``mean_E`` (per row), ``paired_difference`` and ``wins_ties_losses`` (offline
    explanation vs GPT-4), ``n_single_class_pairs`` (no inactive or no active train example: the explanation
    says "always" / "never" active) and ``pairs`` (identifiers, the offline text and each row's E, per pair;
    left out of the JSON output).
    """
    scores: dict[str, list[float]] = {k: [] for k in ROWS}
    pairs, n_single_class = [], 0
    for item in held_out_pairs(data, max_test):
        pair, texts, truth = item["pair"], item["test_prompts"], item["truth"]
        pos, neg, token = pair["positive_examples"], pair["negative_examples"], pair["token"]
        n_single_class += not (pos and neg)
        explanation = explain_offline(pos, neg, token, **explainer_args)
        read = OfflineReader(explanation.text)  # the reader gets the text, nothing else
        single = OfflineReader(best_single_word(pos, neg, token).text)
        classifier = fit_word_classifier(pos, neg, token) if pos and neg else read  # one class: same constant answer
        predicted = {
            "explanation": [read(t) for t in texts],
            "gpt4": item["gpt4_yes"],
            "always_active": [True] * len(texts),
            "majority": [len(pos) >= len(neg)] * len(texts),
            "single_word": [single(t) for t in texts],
            "word_classifier": [classifier(t) for t in texts],
        }
        e = {k: head_explanation_score(truth, p, missing="defined_rate") for k, p in predicted.items()}
        for k, v in e.items():
            scores[k].append(v)
        pairs.append({"layer": pair["layer"], "neuron": pair["neuron"], "head": pair["head"], "token": token,
                      "offline_explanation": explanation.text, "form": explanation.form, "n_test": len(texts), "E": e})
    if not pairs:
        raise PaperDataError(f"{data.folder / 'explanations.jsonl'} has no pairs.")
    return {
        "n_pairs": len(pairs),
        "mean_E": {k: sum(v) / len(v) for k, v in scores.items()},
        "paired_difference": paired_difference(scores["explanation"], scores["gpt4"]),
        "wins_ties_losses": wins_ties_losses(scores["explanation"], scores["gpt4"]),
        "n_single_class_pairs": n_single_class,
        "pairs": pairs,
    }


def format_table(result: dict[str, Any]) -> str:
    """The CLI's text output: one block per model."""
    lines = [f"Head explanation score E, up to {result['max_test']} held-out prompts per pair; the offline reader sees "
             "only the offline explanation's text. CI: " + next(iter(result["models"].values()))["paired_difference"]["method"] + "."]
    for name, m in result["models"].items():
        d, w = m["paired_difference"], m["wins_ties_losses"]
        lines.append(f"\n{name} ({m['n_pairs']} pairs)")
        for key, label in ROWS.items():
            lines.append(f"  {label:<58}{m['mean_E'][key]:.4f}")
        lines.append(f"  offline − GPT-4: {d['mean_difference']:+.4f}  95 % CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]  "
                     f"wins/ties/losses {w['wins']}/{w['ties']}/{w['losses']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ctx_utils.tools.score_cli",
        description="Score the offline explanations on the authors' released data (head explanation score E), beside GPT-4.",
    )
    parser.add_argument("--paper-data", type=Path,
                        help="folder holding one subfolder per model (default: $CTX_PAPER_DATA, then the download cache)")
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
        folder = resolve_data_dir(args.paper_data)
        if models:
            datasets = {m: load_model_data(folder / m) for m in models}
        else:
            datasets = load_paper_data(folder)
        result = {
            "schema_version": SCHEMA_VERSION,
            "explainer": args.explainer,
            "max_test": args.max_test,
            "rows": ROWS,
            "models": {name: score_model(data, args.max_test) for name, data in sorted(datasets.items())},
        }
    except PaperDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = {**result, "models": {n: {k: v for k, v in m.items() if k != "pairs"} for n, m in result["models"].items()}}
    if args.out:
        save_json(args.out, summary)
    print(json.dumps(summary, indent=1) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

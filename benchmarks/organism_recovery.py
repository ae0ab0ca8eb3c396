"""Recovery of the realistic organism's causal answer key by steps 1–3, per seed and scan size; the null control.

    HF_HUB_OFFLINE=1 CTX_TORCH_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/organism_recovery.py \\
        [--seeds 0 1 2] [--docs 400 600 1500 3000] [--work results/organism-bench] [--no-null] [--no-scores]

Trains (or reuses, when ``<work>/<config>-s<seed>`` already holds a trained folder) the ``realistic``
organism for every seed — seed 0 is the shipped ``data/organism`` — and the ``null`` control for
seed 0, about 3–4 minutes each on one CPU thread. Then, for every model and scan size, it chains the
pipeline as notebooks 01–03 and ``tests/test_recovery.py`` do (next-token neurons, 20 per layer → their
max-activating prompts on the first N training documents → head attribution → active rule and 25–75 %
band) and scores the (neuron, head) pairs on the planted neurons against the folder's measured causal key
(``ground_truth.json["causal_key"]``, :mod:`ctx_utils.organism.answer_key`):

* precision = pairs that are key pairs / pairs; recall = key pairs found / key pairs (excitatory carriers;
  the inhibitor's pair is listed apart, since the active rules only flag large positive attributions);
* contexts = planted contexts with at least one of their carrier heads among the pairs;
* other = pairs on neurons that are not planted (the key says nothing about them);
* tokens = planted tokens the model learned (a neuron that died in training has no carriers in the key).

On the null control every pair on a planted neuron is a false positive (its key has no carrier); the
false-positive rate is pairs / (planted neurons × candidate heads). With scores (the default, at 600
documents, the notebooks' scan), steps 4–5 run offline (the offline explainer, held-out test documents) and
the table gives each model's E values: how many pairs score E ≥ 0.9. Prints the tables and writes
``<work>/recovery.json``; each model's rows are cached in ``<work>/rows-<config>-s<seed>.json`` (keyed by
the weights' hash and the key). Not a timed test. Measured on one thread: training ~3 CPU-minutes per model
(10–20 minutes wall on a shared 2-core machine), the pipeline ~1 CPU-minute per model for all sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctx_utils import heads, neurons, prompts  # noqa: E402
from ctx_utils.models import load_model  # noqa: E402
from ctx_utils.organism.answer_key import planted_neurons, recovery  # noqa: E402
from ctx_utils.organism.config import PRESETS  # noqa: E402
from ctx_utils.organism.corpus import CONFIG_FILE, config_for, generate_corpus  # noqa: E402
from ctx_utils.results import save_json  # noqa: E402
from ctx_utils.settings import DEFAULTS, KIT_ROOT  # noqa: E402

SHIPPED = KIT_ROOT / "data" / "organism"  # the default organism: realistic, seed 0
RULES = ("2sigma", "top3")
BAND = "25-75"
SCORE_DOCS = DEFAULTS.n_docs  # the notebooks' scan


def trained_folder(config: str, seed: int, work: Path) -> Path:
    """The folder of a trained organism: the shipped one for realistic seed 0, else trained into ``work`` once."""
    if config == "realistic" and seed == 0 and (SHIPPED / "ground_truth.json").exists():
        return SHIPPED
    folder = work / f"{config}-s{seed}"
    if not (folder / "ground_truth.json").exists():
        from ctx_utils.organism.train import train

        print(f"training {config} seed {seed} into {folder} …", flush=True)
        report = train(folder, seed, PRESETS[config])
        print(f"  {report['wall_time_s']} s", flush=True)
    return folder


def e_scores(folder: Path, model, found: list[dict], prompt_sets: dict, pairs: list[dict], planted: set, rule: str) -> list[float | None]:
    """Steps 4–5 offline on the pairs of planted neurons, through the pipeline's own calls: each pair's held-out E."""
    from ctx_utils import pipeline
    from ctx_utils.settings import load_settings

    mine = [p for p in pairs if (p["layer"], p["neuron"]) in planted]
    if not mine:
        return []
    settings = pipeline.resolve(load_settings(environ={}, model=str(folder), explainer="offline", rule=rule,
                                              band=BAND, n_docs=SCORE_DOCS, max_test_docs=SCORE_DOCS), quiet=True)
    explained = pipeline.compute_explanations(settings, mine, prompt_sets)["pairs"]
    held = pipeline.compute_held_out(settings, model, pipeline.pair_neurons(found, mine), prompt_sets)
    return [s["E"] for s in pipeline.score_held_out(settings, explained, held)]


def run_model(folder: Path, sizes: list[int], with_scores: bool) -> list[dict]:
    """Steps 1–3 at every scan size (and 4–5 at 600 documents) on one trained folder."""
    truth = json.loads((folder / "ground_truth.json").read_text(encoding="utf-8"))
    key = truth["causal_key"]
    planted = planted_neurons(truth)
    config, seed = config_for(folder)
    name = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))["config"]["name"]
    model = load_model(str(folder), device="cpu")
    found = neurons.select_next_token_neurons(model, per_layer=20)
    docs = generate_corpus("train", seed, config)
    rows = []
    for n_docs in sorted(set(sizes) | ({SCORE_DOCS} if with_scores else set())):
        start = time.perf_counter()
        prompt_sets = prompts.find_activating_prompts(model, docs[:n_docs], found, progress=False)
        attributions = heads.attribute_neurons(model, found, prompt_sets)
        for rule in RULES:
            pairs = heads.pairs_from_attributions(model, found, attributions, rule=rule, band=BAND)
            row = {"folder": str(folder), "config": name, "seed": seed, "docs": n_docs, "rule": rule,
                   "learned": sum(n["learned"] for n in key["neurons"]), "tokens": len(key["neurons"]),
                   "cells": len(planted) * model.cfg.n_heads, **recovery(pairs, truth)}
            if with_scores and n_docs == SCORE_DOCS:
                row["E"] = e_scores(folder, model, found, prompt_sets, pairs, planted, rule)
            row["in_table"] = n_docs in sizes
            rows.append(row)
        print(f"  {folder.name} {n_docs} docs: {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def fmt(value: float | None) -> str:
    return "  —  " if value is None else f"{value:.2f}"


def print_tables(rows: list[dict]) -> None:
    print("\nRecovery of the causal key (pairs on the planted neurons; band 25-75 %)")
    print(f"{'model':10s} {'seed':>4s} {'tokens':>6s} {'docs':>5s} {'rule':>6s} {'pairs':>5s} {'prec':>5s} {'recall':>6s} {'contexts':>8s} {'inhib':>5s} {'other':>5s}")
    for r in rows:
        if not r["in_table"]:
            continue
        print(f"{r['config']:10s} {r['seed']:4d} {r['learned']:>4d}/{r['tokens']:<1d} {r['docs']:5d} {r['rule']:>6s} {r['pairs']:5d} {fmt(r['precision']):>5s} "
              f"{fmt(r['recall']):>6s} {len(r['contexts_found']):>4d}/{len(r['contexts']):<3d} {r['inhibitory_found']:>2d}/{r['inhibitory']:<2d} {r['other_pairs']:5d}")
    scored = [r for r in rows if "E" in r]
    if scored:
        print(f"\nSteps 4–5 offline at {SCORE_DOCS} documents: E of the pairs on planted neurons")
        for r in scored:
            es = [e for e in r["E"] if e is not None]
            high = sum(e >= 0.9 for e in es)
            print(f"{r['config']:10s} seed {r['seed']} {r['rule']:>6s}: {len(es)} pairs, E ≥ 0.9: {high}, "
                  f"E = {', '.join(f'{e:.2f}' for e in sorted(es))}")
    for r in (r for r in rows if r["config"] == "null" and r["in_table"]):
        print(f"null control, {r['docs']} docs, {r['rule']}: {r['pairs']} pairs on planted neurons of {r['cells']} "
              f"(neuron, head) cells: false-positive rate {r['pairs'] / r['cells']:.2f} (its key has {r['key_pairs']} pairs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--docs", type=int, nargs="+", default=[400, 600, 1500, 3000])
    parser.add_argument("--work", type=Path, default=KIT_ROOT / "results" / "organism-bench")
    parser.add_argument("--no-null", action="store_true", help="skip the null control")
    parser.add_argument("--no-scores", action="store_true", help="skip steps 4–5 (E at 600 documents)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("CTX_TORCH_THREADS", "1")))
    models = [("realistic", s) for s in args.seeds] + ([] if args.no_null else [("null", 0)])
    rows = []
    for config, seed in models:
        folder = trained_folder(config, seed, args.work)
        cache = args.work / f"rows-{config}-s{seed}.json"  # reused when the same sizes were run on the same weights
        settings = {"docs": sorted(args.docs), "scores": not args.no_scores,
                    "sha256": json.loads((folder / "training.json").read_text())["model_sha256"],
                    "key": json.loads((folder / "ground_truth.json").read_text())["causal_key"]["pairs"]}
        if cache.exists() and json.loads(cache.read_text())["settings"] == settings:
            rows += json.loads(cache.read_text())["rows"]
            continue
        mine = run_model(folder, args.docs, not args.no_scores)
        save_json(cache, {"settings": settings, "rows": mine})
        rows += mine
    print_tables(rows)
    save_json(args.work / "recovery.json", {"rows": rows})


if __name__ == "__main__":
    main()

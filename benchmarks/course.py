"""The whole course as a class runs it, at GPT-2-small size: every notebook, timed one by one. Not a timed test.

    HF_HUB_OFFLINE=1 python benchmarks/course.py [--kit DIR ...] [--only 02 05] [--out FILE]

A random GPT-2-small-shaped model (12 layers, d_model 768, 50,257 logits; a byte-level BPE tokenizer trained on
the kit's real-text sample, :func:`bench.save_gpt2_small_bpe`) and two corpora of real text built from that sample
(documents of about 512 tokens, :func:`bench.real_text_docs`) are written once under ``.cache/``. Then each
numbered notebook runs as ``make run`` runs it (``python -m ctx_utils.tools.run_notebooks --only NN``: a fresh
kernel, the executed copy and its HTML page saved) on the CPU preset (``CTX_PRESET=cpu``) with one torch
thread, starting from an empty results folder, so every step is computed once, in the notebook that needs it.

Per notebook it prints the wall seconds, the CPU seconds (user + system of the job and its kernel: on a machine
shared with other work, the steadier figure) and the peak resident memory of the largest process (the kernel).
All three come from the kernel's own accounting (``os.wait4`` of the job, whose kernel it waits for).

``--kit`` runs another copy of the kit instead (e.g. an older revision, exported with
``git archive REV | tar -x -C DIR``); several ``--kit`` run the notebooks of each in turn, notebook by notebook,
so before and after are measured side by side under the same load. Per step figures (the pipeline's steps
without the notebooks' figures and kernels): ``python benchmarks/bench.py --course --preset cpu``.
Writes ``results/bench-course-notebooks.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402
from ctx_utils.results import results_root, save_json  # noqa: E402
from ctx_utils.tools.run_notebooks import step_notebooks  # noqa: E402

CACHE = ROOT / ".cache" / "bench-course"
MODEL_NAME = "gpt2-small-shape"  # the folder's name is the results folder's name
N_DOCS = 200  # per split: more than the CPU preset reads (40 training, 30 held-out)
DOC_TOKENS = 512


def prepare() -> tuple[Path, Path, Path]:
    """The model folder and the two corpus files (.jsonl), built once and reused (same seeds, same files)."""
    from transformers import AutoTokenizer

    folder, train, test = CACHE / MODEL_NAME, CACHE / "train.jsonl", CACHE / "test.jsonl"
    if not (folder / "config.json").exists():
        bench.save_gpt2_small_bpe(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for path, split, seed in ((train, "train", 0), (test, "test", 1)):
        if not path.exists():
            docs = bench.real_text_docs(tokenizer, split, N_DOCS, DOC_TOKENS, seed=seed)
            path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return folder, train, test


def run_notebook(kit: Path, number: str, env: dict) -> dict:
    """One notebook through the kit's own ``run_notebooks``; wall s, CPU s and peak RSS of the job and its kernel."""
    start = time.perf_counter()
    job = subprocess.Popen([sys.executable, "-m", "ctx_utils.tools.run_notebooks", "--only", number], cwd=kit,
                           env={**env, "PYTHONPATH": str(kit)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    output = job.stdout.read()
    _, status, usage = os.wait4(job.pid, 0)
    job.returncode = os.waitstatus_to_exitcode(status)
    return {"ok": job.returncode == 0 and "FAILED" not in output,
            "seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),  # KiB on Linux: the largest process (the kernel)
            **({} if job.returncode == 0 and "FAILED" not in output else {"output": output[-2000:]})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kit", action="append", type=Path, help="a copy of the kit to run (default: this one); repeat to compare")
    parser.add_argument("--only", nargs="*", help="notebook numbers, e.g. 02 05 (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the figures (JSON)")
    parser.add_argument("--results", type=Path, default=None, help="start from this results folder (one kit only), "
                        "e.g. to time notebook 02 again on notebook 01's saved results; default: an empty one")
    args = parser.parse_args()
    kits = [k.resolve() for k in (args.kit or [ROOT])]
    folder, train, test = prepare()
    numbers = [p.name[:2] for p in step_notebooks(kits[0] / "notebooks") if args.only is None or p.name[:2] in args.only]
    env = {**os.environ, "CTX_MODEL": str(folder), "CTX_CORPUS": str(train), "CTX_TEST_CORPUS": str(test),
           "CTX_PRESET": "cpu", "CTX_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    runs: dict[str, dict[str, dict]] = {str(kit): {} for kit in kits}
    if args.results and len(kits) > 1:
        parser.error("--results takes one kit")
    with tempfile.TemporaryDirectory() as scratch:
        for n, kit in enumerate(kits):  # each kit from its own empty results folder
            (Path(scratch) / str(n)).mkdir()
        folders = [args.results.resolve()] if args.results else [Path(scratch) / str(n) for n in range(len(kits))]
        print(f"{'notebook':<10} {'kit':<40} {'wall s':>8} {'CPU s':>8} {'peak GiB':>9}", flush=True)
        for number in numbers:
            for n, kit in enumerate(kits):
                run = run_notebook(kit, number, {**env, "CTX_RESULTS": str(folders[n])})
                runs[str(kit)][number] = run
                print(f"{number:<10} {str(kit)[-40:]:<40} {run['seconds']:8.1f} {run['cpu_seconds']:8.1f} "
                      f"{run['peak_rss_gib']:9.2f}" + ("" if run["ok"] else "   FAILED"), flush=True)
                if not run["ok"]:
                    print(run["output"], flush=True)
    for kit, by_notebook in runs.items():
        total = {k: round(sum(r[k] for r in by_notebook.values()), 1) for k in ("seconds", "cpu_seconds")}
        peak = max(r["peak_rss_gib"] for r in by_notebook.values())
        print(f"{'total':<10} {kit[-40:]:<40} {total['seconds']:8.1f} {total['cpu_seconds']:8.1f} {peak:9.2f}")
        runs[kit] = {"notebooks": by_notebook, "total": {**total, "peak_rss_gib": peak}}
    out = args.out or results_root() / "bench-course-notebooks.json"
    print(f"\nwrote {save_json(out, {'machine': bench.machine(), 'model': MODEL_NAME, 'preset': 'cpu', 'kits': runs})}")


if __name__ == "__main__":
    main()

"""Benchmarks of steps 2–3: how much the kit's choices save, measured, not a timed test.

    HF_HUB_OFFLINE=1 CTX_TORCH_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench.py [--quick]

Three comparisons, each on the model organism (when built) and on a randomly initialised model of GPT-2
small's shape (12 layers, d_model 768, 12 heads, d_mlp 3072, vocab 50257; byte-level BPE trained on the real-text
sample, documents of real text averaging 256 tokens):

1. **Scan** — ``prompts.scan_top_documents`` (length-sorted batches, only the needed neurons kept, SDPA
   attention, stops after the last needed layer) against a bare full forward of the same model by Hugging
   Face alone with SDPA attention (all layers, logits) on the same documents in the same batch size, in
   corpus order; also that forward on the scan's own length-sorted batches, so the two sources of the gain
   (less padding, less model) are told apart; the bridge's own full forward (eager attention) on those
   batches; and the authors' way, one document at a time through ``run_with_cache`` of every hook.
   Tokens/s count real tokens.
2. **Attribution** — ``heads.head_attributions`` (``hook_z`` · folded read direction) against the authors'
   way: ``run_with_cache`` of every hook + ``cache.stack_head_results()`` ([heads, batch, pos, d_model]),
   dotted with ``W_in``. Peak memory: torch's CPU tensors are invisible to ``tracemalloc``, so each method
   runs in its own subprocess; after loading the model the process resets its peak resident set size
   (``/proc/self/clear_refs`` ← 5) and reports ``VmHWM − VmRSS`` (kernel figures: the extra memory the
   method needed at its peak). Linux only. The child runs with ``MALLOC_MMAP_THRESHOLD_=65536``: glibc then
   maps every block of 64 KiB or more afresh and unmaps it when freed, so memory freed by the warm-up run
   is not silently reused by the measured one (its dynamic threshold otherwise hides the smaller method's
   peak entirely, while the larger method's blocks, above 32 MiB, always show).
3. **Truncation** — ``prompts.find_activating_prompts`` (all neurons' top documents searched together, a few
   candidate cuts per document per batched forward: the shortest, then the two longest, then a k-ary split;
   cuts of one document from one start share a forward across neurons, and the whole prefix reuses the
   scan's activation; see ``ctx_utils/prompts.py``) against a sequential binary search for the latest start (the authors'
   algorithm), one forward per probe, both with the same cached, early-stopping forward and the same BOS
   tokenisation, on the same top documents. The binary search assumes that the activation falls as the
   prompt shortens, and so does the kit beyond its shortest cuts: where it does not, the two may pick
   different cuts, so the figure compares time.

Times are CPU seconds of this process (one torch thread: the work itself, whatever else runs on the machine);
tokens/s are real tokens per CPU second. Writes ``results/bench.json`` (figures + machine info). About 3–5 minutes on 2 CPU cores; ``--quick`` runs
smaller corpora.

``--course`` instead profiles the whole course's computation at GPT-2-small size, step by step, as the
pipeline runs it once (steps 1–3, the held-out steps, the random-neuron baseline, whose candidates ride in the
scans and truncations of steps 2 and 5, the ablation): wall and CPU time and peak resident memory per step, on a random GPT-2-small-shaped folder (12 layers, d_model 768, vocab 50,257)
whose byte-level BPE tokenizer is trained on the kit's real-text sample (``data/pile-prompts``), and documents
of real text built from that sample to a chosen length. The sizes are flags named as the settings;
``--course --preset cpu`` takes them from the CPU preset (``CTX_PRESET=cpu``).
A random model's truncation is not a trained model's (it stops at the longest cut more often), so that step
is a lower bound; the rest costs the same whatever the weights. Writes ``results/bench-course.json``.

``--scan-memory`` measures the scan alone at GPT-2-small size, with the SDPA twin and with the bridge's eager
attention, on batches of 4 documents of 512 and of 1,023 tokens: time and peak memory above the loaded model, each
in its own process. Writes ``results/bench-scan-memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctx_utils import activations, fixtures, neurons, prompts  # noqa: E402
from ctx_utils.models import ORGANISM_DIR, load_model, resolve_source  # noqa: E402
from ctx_utils.results import results_root, save_json  # noqa: E402
from ctx_utils.settings import DEFAULTS, PRESETS  # noqa: E402
from ctx_utils.tokens import neuron_label, pad, tokenize  # noqa: E402

def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """Best CPU time of ``repeat`` runs, in seconds. With one torch thread (``CTX_TORCH_THREADS=1``) it is the work
    itself: on a machine shared with other jobs they stretch the wall time, not the CPU seconds, so methods timed
    one after the other compare side by side."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return best, out


@torch.no_grad()
def bare_forward(model, seqs: list[list[int]], order: list[list[int]]) -> None:
    """A plain full forward ``model(tokens)`` (all layers, logits) over the given right-padded batches."""
    for index in order:
        tokens, _ = pad([seqs[i] for i in index], 0)
        model(tokens)


@torch.no_grad()
def authors_full_cache(model, seqs: list[list[int]]) -> None:
    """The authors' scan: one document at a time, ``run_with_cache`` of the whole model (every hook)."""
    for seq in seqs:
        model.run_with_cache(torch.tensor([seq]))


def bench_scan(model, folder: str, docs: list[str], chosen: list[dict], batch_size: int, repeat: int = 2) -> dict:
    """The scan against a bare Hugging Face forward with SDPA attention of the same model (``folder``), full
    (all layers, logits), on the same documents in the same batch size: in corpus order, and on the scan's
    own length-sorted batches (so the two sources of the gain, less padding and less model, are told apart);
    and against the authors' one-document-at-a-time full cache through the bridge (eager attention)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa", dtype=model.cfg.dtype).eval()
    seqs = tokenize(model, docs)
    n_tokens = sum(len(s) for s in seqs)
    corpus_order = [list(range(i, min(i + batch_size, len(seqs)))) for i in range(0, len(seqs), batch_size)]
    sorted_order = list(activations.batches_by_length(seqs, batch_size))
    bare_forward(hf, seqs, corpus_order[:1])  # warm-up
    t_bare, _ = timed(lambda: bare_forward(hf, seqs, corpus_order), repeat)
    t_bare_sorted, _ = timed(lambda: bare_forward(hf, seqs, sorted_order), repeat)
    t_bridge, _ = timed(lambda: bare_forward(model, seqs, sorted_order), repeat)
    t_authors, _ = timed(lambda: authors_full_cache(model, seqs))
    t_scan, top = timed(
        lambda: prompts.scan_top_documents(model, docs, chosen, k=30, batch_size=batch_size, progress=False), repeat
    )
    return {
        "documents": len(docs),
        "real_tokens": n_tokens,
        "batch_size": batch_size,
        "neurons": len(chosen),
        "hf_sdpa_forward_tokens_per_s": n_tokens / t_bare,
        "hf_sdpa_forward_sorted_batches_tokens_per_s": n_tokens / t_bare_sorted,
        "bridge_forward_sorted_batches_tokens_per_s": n_tokens / t_bridge,
        "authors_full_cache_tokens_per_s": n_tokens / t_authors,
        "scan_tokens_per_s": n_tokens / t_scan,
        "speedup_vs_hf_sdpa": t_bare / t_scan,
        "speedup_vs_hf_sdpa_same_batches": t_bare_sorted / t_scan,
        "speedup_vs_authors": t_authors / t_scan,
        "_top": top,
    }


def binary_search_cut(model, doc: list[int], layer: int, neuron: int, position: int, target: float, ratio: float):
    """The authors' algorithm: binary-search the latest start keeping > ratio·target, one forward per probe."""
    bos = model.tokenizer.bos_token_id
    low, high, best = 1, position, None  # starts in [low, high]; activation assumed to fall as start grows
    while low <= high:
        start = (low + high) // 2
        text = prompts.prompt_text(model, doc, start, position)
        seq = [bos, *model.tokenizer(text, add_special_tokens=False)["input_ids"]]
        act = float(activations.last_token_activations(model, [seq], layer, neuron)[0])
        if act > ratio * target:
            best, low = (text, act), start + 1
        else:
            high = start - 1
    return best


def bench_truncation(model, docs: list[str], chosen: list[dict], top: dict, k: int) -> dict:
    top = {key: top[key][:k] for key in (neuron_label(n["layer"], n["neuron"]) for n in chosen)}
    t_ours, found = timed(
        lambda: prompts.find_activating_prompts(model, docs, chosen, k=k, keep=k, top=top, progress=False)
    )

    def sequential():
        cuts = 0
        for n in chosen:
            for entry in top[neuron_label(n["layer"], n["neuron"])]:
                doc = tokenize(model, [docs[entry["doc"]]], warn_long=False)[0]
                cut = binary_search_cut(model, doc, n["layer"], n["neuron"], entry["position"], entry["activation"], 0.8)
                cuts += cut is not None
        return cuts

    t_seq, _ = timed(sequential)
    return {
        "documents_truncated": sum(len(v) for v in top.values()),
        "prompts_kept": sum(len(v) for v in found.values()),
        "batched_s": t_ours,
        "sequential_binary_search_s": t_seq,
        "speedup": t_seq / t_ours,
    }


ATTRIBUTION_CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, {root!r})
from ctx_utils import heads
from ctx_utils.models import load_model
model = load_model({folder!r}, device="cpu")
texts = json.loads({texts!r})
layer, neuron, method = {layer}, {neuron}, {method!r}
def peak_kib():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])
def authors():
    model.set_use_attn_result(True)
    with torch.no_grad():
        _, cache = model.run_with_cache(heads.tokenize_prompts(model, texts)[0])
        stacked = cache.stack_head_results()  # [n_layers*n_heads, batch, pos, d_model]
        last = heads.tokenize_prompts(model, texts)[1]
        out = stacked[: layer * model.cfg.n_heads, torch.arange(len(texts)), last] @ model.W_in[layer][:, neuron]
    return out.T
def kit():
    return heads.head_attributions(model, texts, layer, neuron, batch_size=len(texts))
fn = authors if method == "authors" else kit
fn()  # warm-up, then measure a second run from a reset peak
open("/proc/self/clear_refs", "w").write("5")
_, before = peak_kib()
start = time.perf_counter(); out = fn(); seconds = time.perf_counter() - start
hwm, _ = peak_kib()
print(json.dumps({{"seconds": seconds, "extra_peak_mib": (hwm - before) / 1024, "attr": out.tolist()}}))
"""


def bench_attribution(folder: str, texts: list[str], layer: int, neuron: int) -> dict:
    runs = {}
    for method in ("kit", "authors"):
        code = ATTRIBUTION_CHILD.format(
            root=str(Path(__file__).resolve().parent.parent), folder=folder, texts=json.dumps(texts),
            layer=layer, neuron=neuron, method=method,
        )
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
        if done.returncode:
            return {"error": f"{method}: {done.stderr.strip().splitlines()[-1:]}"}
        runs[method] = json.loads(done.stdout.strip().splitlines()[-1])
    kit, authors = torch.tensor(runs["kit"]["attr"]), torch.tensor(runs["authors"]["attr"])
    agree = torch.allclose(kit, authors, atol=1e-3, rtol=1e-3)
    return {
        "prompts": len(texts),
        "layer": layer,
        "kit_s": runs["kit"]["seconds"],
        "authors_s": runs["authors"]["seconds"],
        "kit_extra_peak_mib": runs["kit"]["extra_peak_mib"],
        "authors_extra_peak_mib": runs["authors"]["extra_peak_mib"],
        "memory_ratio": runs["kit"]["extra_peak_mib"] / max(runs["authors"]["extra_peak_mib"], 1e-9),
        "same_attributions": bool(agree),
    }


def bench_model(
    name: str, folder: str, docs: list[str], per_layer: int, batch_size: int, trunc_k: int, by_congruence: bool
) -> dict:
    """All three comparisons on one model. ``by_congruence=False`` takes the first ``per_layer`` neurons of
    each default layer instead of selecting them: the scan's cost does not depend on which neurons are read,
    and a random model has no next-token neurons to find (its 3 × 3072 × 50257 congruence would only cost time).
    """
    print(f"\n== {name}", flush=True)
    model = load_model(folder, device="cpu")
    if by_congruence:
        chosen = neurons.select_next_token_neurons(model, per_layer=per_layer)
    else:
        chosen = [{"layer": l, "neuron": i} for l in neurons.default_layers(model) for i in range(per_layer)]
    scan = bench_scan(model, resolve_source(folder), docs, chosen, batch_size)
    top = scan.pop("_top")
    print(f"scan: {scan['scan_tokens_per_s']:.0f} tok/s vs bare HF SDPA forward {scan['hf_sdpa_forward_tokens_per_s']:.0f} "
          f"(×{scan['speedup_vs_hf_sdpa']:.2f}; ×{scan['speedup_vs_hf_sdpa_same_batches']:.2f} on the same batches; "
          f"bridge forward {scan['bridge_forward_sorted_batches_tokens_per_s']:.0f}) and the authors' full cache "
          f"{scan['authors_full_cache_tokens_per_s']:.0f} (×{scan['speedup_vs_authors']:.2f})", flush=True)
    trunc = bench_truncation(model, docs, chosen[: min(len(chosen), 6)], top, trunc_k)
    print(f"truncation: {trunc['batched_s']:.2f} s batched vs {trunc['sequential_binary_search_s']:.2f} s "
          f"binary search (×{trunc['speedup']:.1f})", flush=True)
    found = prompts.find_activating_prompts(model, docs, chosen[:1], k=30, top=top, progress=False)
    texts = [e["text"] for e in next(iter(found.values()))][:20] or docs[:20]
    attr = bench_attribution(folder, texts, chosen[0]["layer"], chosen[0]["neuron"])
    if "error" not in attr:
        print(f"attribution: {attr['kit_s']:.2f} s, +{attr['kit_extra_peak_mib']:.1f} MiB vs run_with_cache + "
              f"stack_head_results {attr['authors_s']:.2f} s, +{attr['authors_extra_peak_mib']:.1f} MiB "
              f"(memory ×{attr['memory_ratio']:.3f}; same numbers: {attr['same_attributions']})", flush=True)
    else:
        print(f"attribution: skipped ({attr['error']})")
    return {"scan": scan, "truncation": trunc, "attribution": attr}


# ------------------------------------------------------------------------ the course at GPT-2-small size


def save_gpt2_small_bpe(folder: Path, seed: int = 0) -> Path:
    """A random GPT-2-small-shaped model whose byte-level BPE tokenizer is trained on the real-text sample.

    The sample holds enough text for about 16,000 tokens; the model keeps GPT-2's 50,257 logits (the unused
    ids decode to ``""``), so congruence and the unembedding cost what they cost on GPT-2 small.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = fixtures.train_tokenizer(fixtures.sample_texts("train") + fixtures.sample_texts("test"), 50_257)
    torch.manual_seed(seed)
    GPT2LMHeadModel(GPT2Config(bos_token_id=0, eos_token_id=0, pad_token_id=0)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def real_text_docs(tokenizer, split: str, n: int, mean_tokens: int, seed: int = 0) -> list[str]:
    """``n`` documents of real text: sample prompts joined, each to a length uniform in [¼, 1¾] × ``mean_tokens``
    tokens (at most 1,023: GPT-2's window with BOS), so batches mix lengths as a real corpus does."""
    texts = fixtures.sample_texts(split)
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        target = min(1023, rng.randint(max(1, mean_tokens // 4), mean_tokens * 7 // 4))
        parts, count = [], 0
        while count < target:
            text = rng.choice(texts)
            parts.append(text)
            count += len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
        ids = tokenizer(" ".join(parts), add_special_tokens=False)["input_ids"][:target]
        docs.append(tokenizer.decode(ids))
    return docs


def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(field)).split()[1])


def measured(steps: dict, name: str, fn):
    """Run ``fn`` as one step: wall and CPU seconds, and the peak resident memory during it (VmHWM after a reset).

    On a shared machine the CPU seconds of a one-thread run are the steadier figure: other processes stretch
    the wall time, not the work."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak restarts from the current resident size
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    steps[name] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                   "peak_rss_gib": round(_vm_kib("VmHWM") / 2**20, 3)}
    print(f"{name:<38} {seconds:8.1f} s wall {cpu:8.1f} s CPU   peak RSS {steps[name]['peak_rss_gib']:.2f} GiB", flush=True)
    return out


def course_profile(args) -> dict:
    """The pipeline's model work for one course run at GPT-2-small size, with the sizes given on the command line."""
    from ctx_utils import ablate, heads, held_out

    steps: dict[str, dict] = {}
    sizes = {k: getattr(args, k) for k in ("n_docs", "max_test_docs", "activity_docs", "doc_tokens", "per_layer",
                                           "top_k", "keep", "random_per_layer", "batch_size", "max_held_out")}
    print(f"course profile at GPT-2-small size, {torch.get_num_threads()} torch thread(s): {sizes}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:  # kept to the end: the model's folder is read again (SDPA twin)
        folder = str(save_gpt2_small_bpe(Path(tmp)))
        model = measured(steps, "load model", lambda: load_model(folder, device="cpu"))
        docs = real_text_docs(model.tokenizer, "train", args.n_docs, args.doc_tokens)
        test_docs = real_text_docs(model.tokenizer, "test", args.max_test_docs, args.doc_tokens, seed=1)
        n_tokens = sum(len(s) for s in tokenize(model, docs))
        print(f"{len(docs)} documents, {n_tokens} tokens ({n_tokens / len(docs):.0f} per document)", flush=True)
        layers, bs = neurons.default_layers(model), args.batch_size
        activity = measured(steps, "1 activity scan (activity_docs)",
                            lambda: neurons.max_activations(model, docs[: args.activity_docs], layers, bs, progress=False))
        min_activity = 0.1 * max(float(activity[layer].max()) for layer in layers)
        # One vocabulary product per layer gives the congruence and notebook 01's moments (neurons.vocab_projection).
        chosen = measured(steps, "1 congruence and moments, 3 x 3072 x 50257", lambda: neurons.select_next_token_neurons(
            model, layers, args.per_layer, activity=activity, min_activity=min_activity))
        # The random baseline's candidates ride in the real neurons' passes (steps 2 and 5), as the pipeline runs them.
        random_set = measured(steps, "5 random neurons (their rows of W_out @ W_U)",
                              lambda: neurons.random_neurons(model, layers, args.random_per_layer))
        both = [*chosen, *random_set]
        top = measured(steps, "2 scan (n_docs), + random", lambda: prompts.scan_top_documents(
            model, docs, both, k=args.top_k, batch_size=bs, progress=False))
        found = measured(steps, "2 truncation, + random", lambda: prompts.find_activating_prompts(
            model, docs, both, k=args.top_k, keep=args.keep, top=top, batch_size=bs, progress=False))
        keys = {neuron_label(n["layer"], n["neuron"]) for n in chosen}
        found, random_found = ({k: v for k, v in found.items() if (k in keys) == real} for real in (True, False))
        attr = measured(steps, "3 attribution", lambda: heads.attribute_neurons(model, chosen, found, batch_size=bs))
        pairs = heads.pairs_from_attributions(model, chosen, attr, "top3", ">25")
        with_pairs = [n for n in chosen if any((p["layer"], p["neuron"]) == (n["layer"], n["neuron"]) for p in pairs)]
        held_found = measured(steps, "5 held-out scan + truncation, + random", lambda: prompts.find_activating_prompts(
            model, test_docs, [*with_pairs, *random_set], k=args.top_k, keep=args.keep, batch_size=bs, progress=False))
        held = measured(steps, "5 held-out attribution", lambda: held_out.held_out_set(
            model, with_pairs, {label: held_found[label] for label in (neuron_label(n["layer"], n["neuron"]) for n in with_pairs)},
            found, rule="top3", batch_size=bs))
        held = {"prompts": {key: entries[: args.max_held_out] for key, entries in held["prompts"].items()},
                "active": {key: rows[: args.max_held_out] for key, rows in held["active"].items()}}
        measured(steps, "5 random: attribution", lambda: heads.attribute_neurons(
            model, random_set, random_found, batch_size=bs))
        measured(steps, f"6 ablation ({len(pairs)} pairs)", lambda: ablate.ablation_effects(
            model, pairs, held["prompts"], ablate.activity_matrix(model, held), batch_size=bs))
    total, cpu = (sum(step[k] for step in steps.values()) for k in ("seconds", "cpu_seconds"))
    peak = max(step["peak_rss_gib"] for step in steps.values())
    print(f"{'total':<38} {total:8.1f} s wall {cpu:8.1f} s CPU   peak RSS {peak:.2f} GiB", flush=True)
    counts = {"scan_tokens": n_tokens, "truncated_documents": sum(len(v) for v in top.values()),
              "attributed_prompts": sum(len(v) for v in found.values()),
              "held_out_prompts": sum(len(v) for v in held["prompts"].values())}
    return {"sizes": sizes, "tokens_per_doc": n_tokens / len(docs), "neurons": len(chosen), "pairs": len(pairs),
            "counts": counts, "steps": steps, "total_seconds": total, "total_cpu_seconds": cpu, "peak_rss_gib": peak}


SCAN_MEMORY_CHILD = r"""
import json, sys, tempfile, time, torch
from pathlib import Path
sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + "/benchmarks")
import bench
from ctx_utils import models, prompts
from ctx_utils.session import SESSION
batch, length, path = {batch}, {length}, {path!r}
def kib(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])
with tempfile.TemporaryDirectory() as tmp:
    folder = str(bench.save_gpt2_small_bpe(Path(tmp)))
    model = models.load_model(folder, device="cpu")
    if path == "bridge":
        SESSION.cache_of(model).twin = False  # no twin: the bridge's eager forward
    docs = bench.real_text_docs(model.tokenizer, "train", 200, 1023)
    seqs = [s[:length] for s in tokenize(model, docs, warn_long=False) if len(s) >= length][: 2 * batch]
    texts = [model.tokenizer.decode(s[1:]) for s in seqs]
    chosen = [{{"layer": l, "neuron": n}} for l in (9, 10, 11) for n in range(4)]
    prompts.scan_top_documents(model, texts[:1], chosen, k=2, batch_size=1, progress=False)  # warm-up (builds the twin)
    open("/proc/self/clear_refs", "w").write("5")
    before, start = kib("VmRSS"), time.perf_counter()
    prompts.scan_top_documents(model, texts, chosen, k=2, batch_size=batch, progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({{"path": path, "batch": batch, "tokens": length, "seconds": round(seconds, 1),
                      "extra_peak_mib": round((kib("VmHWM") - before) / 1024), "peak_gib": round(kib("VmHWM") / 2**20, 2)}}))
"""


def scan_memory() -> list[dict]:
    """The scan's memory at GPT-2-small size, SDPA twin against the bridge's eager attention: 8 documents of real
    text cut to 512 and to 1,023 tokens, batches of 4, each run in its own process (peak resident memory above
    the loaded model, as for the attribution)."""
    runs = []
    for length in (512, 1023):
        for path in ("bridge", "sdpa"):
            code = SCAN_MEMORY_CHILD.format(root=str(Path(__file__).resolve().parent.parent), batch=4, length=length,
                                            path=path)
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                                  env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                        else {"path": path, "tokens": length, "error": done.stderr.strip().splitlines()[-1:]})
            print(runs[-1], flush=True)
    return runs


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller corpora (about a minute)")
    parser.add_argument("--course", action="store_true", help="profile the course's steps at GPT-2-small size")
    parser.add_argument("--scan-memory", action="store_true", help="the scan's memory and time at GPT-2-small size, "
                        "SDPA against the bridge's eager attention (4 x 512 and 4 x 1,023 tokens)")
    course = parser.add_argument_group("--course sizes (the settings of the same names)")
    for flag, default in (("n_docs", 200), ("max_test_docs", 200), ("activity_docs", 100), ("doc_tokens", 512),
                          ("per_layer", 20), ("top_k", 30), ("keep", 20), ("random_per_layer", 10),
                          ("batch_size", 8), ("max_held_out", 20)):
        course.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=int, default=default)
    course.add_argument("--preset", choices=sorted(PRESETS), help="take every size but --doc-tokens from a settings "
                        "preset (CTX_PRESET), e.g. cpu; flags given as well win")
    preset = parser.parse_known_args()[0].preset
    if preset:
        parser.set_defaults(**{k: v for k, v in asdict(replace(DEFAULTS, **PRESETS[preset])).items()
                               if k in {a.dest for a in course._group_actions}})
    args = parser.parse_args()
    if args.scan_memory:
        out = {"machine": machine(), "scan_memory": scan_memory()}
        print(f"\nwrote {save_json(results_root() / 'bench-scan-memory.json', out)}")
        return
    if args.course:
        out = {"machine": machine(), "course": course_profile(args)}
        print(f"\nwrote {save_json(results_root() / 'bench-course.json', out)}")
        return
    out = {"machine": machine(), "models": {}}
    if (ORGANISM_DIR / "config.json").exists():
        from ctx_utils.corpus import load_corpus

        docs = load_corpus("organism", "train", max_docs=100 if args.quick else 400)
        out["models"]["organism"] = bench_model("organism", "organism", docs, 20, 16, 10, by_congruence=True)
    else:
        print("organism: skipped (data/organism/ is not built yet)")
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import AutoTokenizer

        folder = str(save_gpt2_small_bpe(Path(tmp)))
        docs = real_text_docs(AutoTokenizer.from_pretrained(folder), "train", 8 if args.quick else 16, 256)
        out["models"]["gpt2-small-shape-random"] = bench_model(
            "GPT-2-small-shaped, random", folder, docs, 2, 8, 4, by_congruence=False
        )
    path = save_json(results_root() / "bench.json", out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

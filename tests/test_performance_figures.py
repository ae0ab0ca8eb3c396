"""The speed figures quoted in prose are the benchmarks' shipped results, not typed by hand.

docs/performance.md's per-notebook table is ``benchmarks/course-gpt2-small-cpu.json`` (``benchmarks/course.py``,
before and after); the truncation speed-ups quoted in notebook 02 and the README are ``results/bench.json``'s
(``benchmarks/bench.py --quick``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_course_table_is_the_benchmarks():
    figures = json.loads((ROOT / "benchmarks" / "course-gpt2-small-cpu.json").read_text())
    doc = (ROOT / "docs" / "performance.md").read_text()
    runs = [figures[k] for k in ("before", "start", "after")]
    assert all(run.keys() == runs[-1].keys() for run in runs) and len(runs[-1]) >= 9, "every notebook, in every run"
    for number, now in runs[-1].items():
        cpu = " → ".join(f"{run[number]['cpu_seconds']:.0f}" for run in runs)
        row = f"| {cpu} | {now['seconds']:.0f} | {now['peak_rss_gib']:.2f} |"
        assert re.search(rf"^\| {number} · .*{re.escape(row)}$", doc, re.M), f"notebook {number}: {row}"
    total = [sum(r["cpu_seconds"] for r in run.values()) for run in runs]
    assert f"**{' → '.join(f'{t:,.0f}' for t in total)}**" in doc
    minutes, seconds = divmod(round(total[-1]), 60)
    assert f"Time: met, {total[-1]:.0f} CPU s ({minutes} min {seconds} s" in doc and total[-1] <= 600
    peak = max(r["peak_rss_gib"] for r in runs[-1].values())
    assert f"Peak: met ({peak:.2f} GiB)" in doc and peak <= 3.5 * 10**9 / 2**30


def test_the_step_table_is_the_benchmarks():
    course = json.loads((ROOT / "benchmarks" / "course-steps-gpt2-small-cpu.json").read_text())["course"]
    doc = (ROOT / "docs" / "performance.md").read_text()
    for name, step in course["steps"].items():
        row = f"| {name} | {step['cpu_seconds']:.1f} | {step['seconds']:.1f} | {step['peak_rss_gib']:.2f} |"
        assert row in doc, row
    assert f"| **total** | **{course['total_cpu_seconds']:.0f}** |" in doc


def test_the_truncation_speedups_quoted_are_bench_json():
    models = json.loads((ROOT / "results" / "bench.json").read_text())["models"]
    speedups = [f"×{models[m]['truncation']['speedup']:.1f}" for m in ("organism", "gpt2-small-shape-random")]
    notebook = (ROOT / "notebooks" / "02_activating_prompts.ipynb").read_text()
    for text in (notebook, (ROOT / "docs" / "performance.md").read_text()):
        assert all(figure in text for figure in speedups), speedups


def test_instructors_quote_the_course_time_measured():
    figures = json.loads((ROOT / "benchmarks" / "course-gpt2-small-cpu.json").read_text())
    minutes = round(sum(r["cpu_seconds"] for r in figures["after"].values()) / 60)
    text = " ".join((ROOT / "INSTRUCTORS.md").read_text().split())
    assert f"every notebook in about {minutes} CPU minutes at GPT-2-small size" in text

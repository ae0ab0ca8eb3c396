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
    before, after = figures["before"], figures["after"]
    assert before.keys() == after.keys() and len(before) >= 9, "every notebook, before and after"
    for number in before:
        b, a = before[number], after[number]
        row = (f"| {b['cpu_seconds']:.0f} → {a['cpu_seconds']:.0f} | {b['seconds']:.0f} → {a['seconds']:.0f} | "
               f"{b['peak_rss_gib']:.2f} → {a['peak_rss_gib']:.2f} |")
        assert re.search(rf"^\| {number} · .*{re.escape(row)}$", doc, re.M), f"notebook {number}: {row}"
    total = [sum(r["cpu_seconds"] for r in side.values()) for side in (before, after)]
    assert f"**{total[0]:,.0f} → {total[1]:,.0f}**" in doc
    peak = max(r["peak_rss_gib"] for r in after.values())
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

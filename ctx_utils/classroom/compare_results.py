"""Compare two ``results/<model>/`` folders, e.g. a student's run with the instructor's reference.

    python -m ctx_utils.classroom.compare_results results/organism reference/organism [--atol 1e-4]

The kit is deterministic (fixed seeds, sorted iteration), so two runs of the same notebooks on the same model
should agree; floats may differ in the last digits across machines, hence the tolerance. Each result file is
matched record by record on its identifiers (``layer``, ``neuron``, ``head``), and the report says what only one
side has and which fields differ, with both values; a file made with other settings on each side is said to be so,
and a folder whose files mix settings is warned about (:func:`mixed_settings`, which the explorer uses too).
Exit status: 0 when everything agrees, 1 when something differs or is missing, 2 when a folder cannot be read.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from ctx_utils import results as result_files
from ctx_utils.results import load_json
from ctx_utils.settings import Settings
from ctx_utils.tokens import parse_neuron_label

PAIR = ("layer", "neuron", "head")
#: file → (where its records are, the fields that identify a record, the fields compared)
SPECS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "neurons.json": ("neurons", ("layer", "neuron"), ("token", "congruence")),
    "prompts.json": ("prompts", ("layer", "neuron"), ("texts", "activations")),
    "heads.json": ("pairs", PAIR, ("positive", "negative")),
    "explanations.json": ("pairs", PAIR, ("text",)),
    "scores.json": ("pairs", PAIR, ("E",)),
    "ablation.json": ("pairs", PAIR, ("mean_decrease_active", "mean_decrease_inactive")),
}
SHOWN = 5  # differences listed per file; the rest are counted


def load_folder(folder: str | Path) -> dict[str, dict]:
    """The result files of ``folder`` that exist, keyed by file name; a clear error when it is no results folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: give a results folder such as results/organism.")
    found = {name: load_json(folder / name) for name in SPECS if (folder / name).exists()}
    if not found:
        raise FileNotFoundError(f"{folder} holds none of {', '.join(SPECS)}: run the notebooks (make run) first.")
    return found


def mixed_settings(results: dict[str, dict], settings: Settings | None = None) -> list[str]:
    """One sentence per result file made with other settings, naming the file and the settings that differ.

    With ``settings``, each file's fingerprint is compared with :meth:`Settings.fingerprint` of its step; without,
    the files are compared with each other on the settings they share (:func:`ctx_utils.results.mixed_settings`).
    Files that record no settings (hand-made ones) are not judged.
    """
    if settings is None:
        return result_files.mixed_settings({name: results[name] for name in SPECS if name in results})
    notes = []
    for name in SPECS:
        saved = results.get(name, {}).get("settings")
        step = name.removesuffix(".json")
        if saved is not None and results[name].get("fingerprint") != settings.fingerprint(step):
            now = settings.for_step(step)
            diff = [f"{k}={saved.get(k)!r}, now {v!r}" for k, v in sorted(now.items()) if saved.get(k) != v]
            notes.append(f"{name} was made with other settings ({'; '.join(diff) or 'an older kit'}).")
    return notes


def missing_results(results: dict[str, dict]) -> list[str]:
    """One sentence per result file that is missing, naming the notebook that writes it."""
    return [
        f"{name} is missing: run notebook {number} to write it."
        for name, number in RESULT_FILES.items()
        if name not in results
    ]


def records(name: str, data: dict) -> dict[tuple, dict]:
    """A file's records keyed by their identifiers; prompts.json's per-neuron lists become one record each."""
    where, keys, _ = SPECS[name]
    if name == "prompts.json":
        rows = [
            dict(zip(("layer", "neuron"), parse_neuron_label(k)), texts=[p["text"] for p in v],
                 activations=[p["activation"] for p in v])
            for k, v in data[where].items()
        ]
    else:
        rows = data[where]
    return {tuple(row[k] for k in keys): row for row in rows}


def same(x: Any, y: Any, atol: float) -> bool:
    """Equal, with numbers compared to within ``atol`` (None and NaN equal only themselves)."""
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
        if math.isnan(x) or math.isnan(y):
            return math.isnan(x) and math.isnan(y)
        return abs(x - y) <= atol
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(same(a, b, atol) for a, b in zip(x, y))
    return x == y


def _label(key: tuple) -> str:
    return f"L{key[0]}.N{key[1]}" + (f" head {key[2]}" if len(key) > 2 else "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def compare_file(name: str, a: dict, b: dict, atol: float) -> list[str]:
    """The differences between one file's two versions, one sentence each (empty when they agree).

    Two versions made with different settings are said to be so first: the record differences follow from it.
    """
    ra, rb = records(name, a), records(name, b)
    only_a, only_b = sorted(set(ra) - set(rb)), sorted(set(rb) - set(ra))
    sa, sb = a.get("settings") or {}, b.get("settings") or {}
    changed = [f"{k} A {sa.get(k)!r}, B {sb.get(k)!r}" for k in sorted(sa.keys() | sb.keys()) if sa.get(k) != sb.get(k)]
    lines = [f"made with other settings ({'; '.join(changed)}): the differences below follow from that"] if sa and sb and changed else []
    lines += [
        f"only in {side}: " + ", ".join(map(_label, keys[:SHOWN])) + (" …" if len(keys) > SHOWN else "")
        for side, keys in (("A", only_a), ("B", only_b)) if keys
    ]
    fields = SPECS[name][2]
    differing = [
        (key, field) for key in sorted(set(ra) & set(rb)) for field in fields
        if not same(ra[key].get(field), rb[key].get(field), atol)
    ]
    for key, field in differing[:SHOWN]:
        lines.append(f"{_label(key)} {field}: A {_short(ra[key].get(field))}, B {_short(rb[key].get(field))}")
    if len(differing) > SHOWN:
        lines.append(f"… and {len(differing) - SHOWN} more differing fields")
    if name == "scores.json":
        mean_a, mean_b = (side.get("summary", {}).get("mean_E") for side in (a, b))
        if not same(mean_a, mean_b, atol):
            lines.append(f"mean E: A {_short(mean_a)}, B {_short(mean_b)}")
    return lines


def compare(a: dict[str, dict], b: dict[str, dict], atol: float = 1e-4) -> dict[str, list[str]]:
    """Per result file, the list of differences (empty: the file agrees); a file on one side only is one."""
    report = {}
    for name in SPECS:
        if name in a and name in b:
            report[name] = compare_file(name, a[name], b[name], atol)
        elif name in a or name in b:
            report[name] = [f"only in {'A' if name in a else 'B'}: the other run has not written it yet"]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare two results/<model>/ folders (yours = A, the reference = B).")
    parser.add_argument("a", help="a results folder, e.g. results/organism")
    parser.add_argument("b", help="the folder to compare it with, e.g. the instructor's reference copy")
    parser.add_argument("--atol", type=float, default=1e-4, help="tolerance for numbers (default 1e-4)")
    args = parser.parse_args(argv)
    try:
        a, b = load_folder(args.a), load_folder(args.b)
    except (FileNotFoundError, ValueError) as err:
        print(err, file=sys.stderr)
        return 2
    for side, folder in (("A", a), ("B", b)):
        for note in mixed_settings(folder):
            print(f"warning: in {side}, {note}")
    report = compare(a, b, args.atol)
    for name, lines in report.items():
        counts = " vs ".join(str(len(records(name, side[name]))) if name in side else "-" for side in (a, b))
        print(f"{name:18} {'agrees' if not lines else 'DIFFERS'} ({counts} records)")
        for line in lines:
            print(f"    {line}")
    differs = any(report.values())
    print("Everything agrees." if not differs else f"Differences in: {', '.join(n for n, l in report.items() if l)}.")
    return 1 if differs else 0


if __name__ == "__main__":
    raise SystemExit(main())

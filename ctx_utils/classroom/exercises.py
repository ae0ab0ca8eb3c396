"""Generate the learners' exercise notebooks from the step notebooks, so the two never drift.

The single source is each step notebook ``notebooks/NN_*.ipynb`` (the solution notebook, run in CI). An
exercise there is three cells:

1. a markdown cell tagged ``exercise``: the title, a line ``Difficulty 2/5 · Importance 4/5 · ~10 min`` (plain text:
   it renders without emoji fonts), the task, and two or three graduated hints, each a
   ``<details><summary>Hint 1 · a nudge</summary>…</details>`` block (``Hint 2 · the approach``, …);
2. a code cell tagged ``solution``: the function, the learner's part between the lines
   ``# >>> your code starts here`` and ``# <<< your code ends here``;
3. a code cell tagged ``check``: e.g. ``checks.check_congruence(congruence, model)`` (see :mod:`ctx_utils.classroom.checks`).

``python -m ctx_utils.classroom.exercises`` writes ``notebooks/exercises/NN_*.ipynb``: the same notebook, with the code
between the markers replaced by ``raise NotImplementedError("Your code here")`` and the solution, folded in a
``<details>`` block, right after the exercise cell (the last step after the hints); the Colab badge and setup
cells are written as ``python -m ctx_utils.tools.colab --sync`` would write them (both take them from
:mod:`ctx_utils.classroom.notebook_cells`). ``--check`` writes nothing and exits 1 if any committed exercise
notebook differs from what would be generated (a test runs it). Output is byte-identical on rerun.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

from ctx_utils.classroom.notebook_cells import NOTEBOOKS_DIR, expected_sources
from ctx_utils.results import write_text_atomic

START = "# >>> your code starts here"
END = "# <<< your code ends here"
STUB = 'raise NotImplementedError("Your code here")'
SUBFOLDER = "exercises"
#: The line every exercise cell states its difficulty, importance and minutes in.
META = re.compile(r"^Difficulty [1-5]/5 · Importance [1-5]/5 · ~\d+ min$", re.M)
#: One graduated hint: ``<details><summary>Hint 1 · a nudge</summary>``.
HINT = re.compile(r"<details><summary>Hint (\d) · [^<]+</summary>")
#: Emoji and pictographs, which render as empty boxes where no emoji font is installed.
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F]")


class ExerciseError(ValueError):
    """A step notebook's exercise cells are malformed; the message names the notebook, the cell and the fix."""


def _tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def stub_source(source: str, where: str) -> str:
    """The solution code with each marked region replaced by ``raise NotImplementedError`` (indentation kept).

    The marker lines stay, so the learner sees where to write. ``where`` names the cell in error messages.
    """
    out: list[str] = []
    inside = False
    regions = 0
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == START:
            if inside:
                raise ExerciseError(f"{where}: '{START}' appears twice before '{END}': close the first region.")
            inside, regions = True, regions + 1
            indent = line[: len(line) - len(line.lstrip())]
            out += [line, indent + STUB]
        elif stripped == END:
            if not inside:
                raise ExerciseError(f"{where}: '{END}' comes before any '{START}': add the start marker above it.")
            inside = False
            out.append(line)
        elif not inside:
            out.append(line)
    if inside:
        raise ExerciseError(f"{where}: '{START}' is never closed: add '{END}' after the learner's code.")
    if regions == 0:
        raise ExerciseError(f"{where}: a cell tagged 'solution' needs the lines '{START}' and '{END}' around the learner's code.")
    return "\n".join(out)


def solution_markdown(source: str) -> str:
    """The folded solution shown to learners: ``<details>`` with the full solution code."""
    return f"<details><summary>Solution</summary>\n\n```python\n{source}\n```\n\n</details>"


def check_exercise_cell(source: str, where: str) -> None:
    """An exercise cell states difficulty, importance and minutes in text, has two or three hints, and no emoji."""
    if not META.search(source):
        raise ExerciseError(f"{where}: an exercise cell needs a line 'Difficulty 2/5 · Importance 4/5 · ~10 min' (plain text).")
    numbers = [int(n) for n in HINT.findall(source)]
    if numbers not in ([1, 2], [1, 2, 3]):
        raise ExerciseError(
            f"{where}: an exercise cell needs two or three graduated hints, '<details><summary>Hint 1 · a nudge</summary>', "
            f"'Hint 2 · the approach' (and 'Hint 3 · …'), in order; it has {numbers or 'none'}. The folded solution is the last step."
        )
    if emoji := EMOJI.findall(source):
        raise ExerciseError(f"{where}: emoji {''.join(emoji)!r} render as empty boxes without an emoji font: write it in text.")


def exercise_path(step_path: Path) -> Path:
    """Where the exercise notebook of a step notebook goes: ``notebooks/exercises/<same name>``."""
    return step_path.parent / SUBFOLDER / step_path.name


def _check_shape(cells: list, name: str) -> None:
    """Each ``exercise`` cell is followed by a ``solution`` cell and then a ``check`` cell."""
    for i, cell in enumerate(cells):
        if "exercise" not in _tags(cell):
            continue
        check_exercise_cell(cell.source, f"{name}, cell {i}")
        following = [_tags(c) for c in cells[i + 1 : i + 3]]
        if cell.cell_type != "markdown" or len(following) < 2 or "solution" not in following[0] or "check" not in following[1]:
            raise ExerciseError(
                f"{name}, cell {i}: an exercise is a markdown cell tagged 'exercise', then a code cell tagged "
                "'solution', then a code cell tagged 'check' calling ctx_utils.classroom.checks; fix the tags or the order."
            )


def make_exercise_notebook(step_path: Path) -> nbformat.NotebookNode | None:
    """The exercise version of one step notebook, or None when it has no exercise."""
    nb = nbformat.read(step_path, as_version=4)
    if not any("exercise" in _tags(c) for c in nb.cells):
        return None
    _check_shape(nb.cells, step_path.name)
    standard = expected_sources(exercise_path(step_path))  # badge and setup exactly as a Colab sync writes them
    cells = []
    for i, source_cell in enumerate(nb.cells):
        cell = copy.deepcopy(source_cell)
        tags = _tags(cell)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
        if i == 0 and cell.cell_type == "markdown":
            cell.source += (
                f"\n\n> **Exercise version** of [`{step_path.name}`](../{step_path.name}), generated by "
                "`python -m ctx_utils.classroom.exercises`: edit the step notebook, never this file. Write your code where a cell "
                f"says `{STUB}`, run it, then run the check cell below it."
            )
        for tag in set(tags) & set(standard):
            cell.source = standard[tag]
        if "solution" in tags:  # the previous cell is the exercise's markdown (checked above)
            cells.append(nbformat.v4.new_markdown_cell(
                solution_markdown(source_cell.source), id=f"{source_cell.id}-sol"[:64], metadata={"tags": ["solution-reveal"]}
            ))
            cell.source = stub_source(source_cell.source, f"{step_path.name}, cell {i}")
            cell.metadata["tags"] = ["your-code" if tag == "solution" else tag for tag in tags]
        cells.append(cell)
    nb.cells = cells
    return nb


def notebook_text(nb: nbformat.NotebookNode) -> str:
    """The notebook as written to disk, exactly as ``nbformat.write`` writes it (so a Colab sync is a no-op)."""
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def generate(notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[Path, str | None]:
    """Every exercise notebook's text, keyed by path; ``None`` marks a stale file whose step has no exercise left."""
    out: dict[Path, str | None] = {}
    for step in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        nb = make_exercise_notebook(step)
        if nb is not None:
            out[exercise_path(step)] = notebook_text(nb)
    for old in sorted((notebooks_dir / SUBFOLDER).glob("[0-9][0-9]_*.ipynb")):
        out.setdefault(old, None)
    return out


def main(argv: list[str] | None = None, notebooks_dir: Path = NOTEBOOKS_DIR) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed exercise notebook is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generate(notebooks_dir).items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        name = path.relative_to(notebooks_dir.parent)
        if args.check:
            stale.append(f"out of date: {name} (run `python -m ctx_utils.classroom.exercises`)")
        elif text is None:
            path.unlink()
            print(f"removed {name} (its step notebook has no exercise)")
        else:
            write_text_atomic(path, text)
            print(f"wrote {name}")
    print("\n".join(stale) or ("exercise notebooks are up to date" if args.check else "done"))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

"""The exercise generator: stubs replace the marked code, solutions fold under the exercise, nothing drifts."""

import nbformat
import pytest

from ctx_utils.classroom import exercises
from ctx_utils.classroom import notebook_cells

SOLUTION = '''import torch


def double(x):
    """Twice x."""
    y = x
    # >>> your code starts here
    y = y * 2
    if y is None:
        pass
    # <<< your code ends here
    return y'''


EXERCISE = """### Exercise — double

Difficulty 1/5 · Importance 2/5 · ~2 min

Double it.

<details><summary>Hint 1 · a nudge</summary>

Twice as much.
</details>

<details><summary>Hint 2 · the approach</summary>

Multiply by 2.
</details>"""


def step_notebook(folder, solution=SOLUTION, name="01_demo.ipynb", with_check=True):
    """A tiny step notebook in the kit's shape with one exercise, written under ``folder``."""
    cells = [
        nbformat.v4.new_markdown_cell("# 01 · Demo", id="title"),
        nbformat.v4.new_markdown_cell("", id="badge", metadata={"tags": ["colab-badge"]}),
        nbformat.v4.new_code_cell("", id="setup", metadata={"tags": ["setup"]}),
        nbformat.v4.new_markdown_cell(EXERCISE, id="ex", metadata={"tags": ["exercise"]}),
        nbformat.v4.new_code_cell(solution, id="sol", metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell("assert double(2) == 4", id="chk", metadata={"tags": ["check"] if with_check else []}),
        nbformat.v4.new_code_cell("print(double(3))", id="after"),
    ]
    cells[4].outputs = [nbformat.v4.new_output("stream", text="left over")]
    cells[4].execution_count = 7
    path = folder / name
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def test_stub_keeps_markers_and_indentation_and_raises():
    stub = exercises.stub_source(SOLUTION, "demo")
    assert "y = y * 2" not in stub and "if y is None" not in stub
    assert f"    {exercises.START}\n    {exercises.STUB}\n    {exercises.END}\n    return y" in stub
    namespace = {}
    exec(stub, namespace)
    with pytest.raises(NotImplementedError, match="Your code here"):
        namespace["double"](2)


@pytest.mark.parametrize(
    "source, message",
    [
        ("x = 1", "needs the lines"),
        (f"{exercises.START}\nx = 1", "never closed"),
        (f"{exercises.END}\nx = 1", "comes before any"),
        (f"{exercises.START}\n{exercises.START}\n{exercises.END}", "appears twice"),
    ],
)
def test_malformed_markers_name_the_cell_and_the_fix(source, message):
    with pytest.raises(exercises.ExerciseError, match=f"demo.ipynb, cell 4: .*{message}"):
        exercises.stub_source(source, "demo.ipynb, cell 4")


def test_exercise_notebook_shape(tmp_path):
    nb = exercises.make_exercise_notebook(step_notebook(tmp_path))
    ids = [c.id for c in nb.cells]
    assert ids == ["title", "badge", "setup", "ex", "sol-sol", "sol", "chk", "after"]
    reveal, stub = nb.cells[4], nb.cells[5]
    assert reveal.source.startswith("<details><summary>Solution</summary>") and "y = y * 2" in reveal.source
    assert exercises.STUB in stub.source and "y = y * 2" not in stub.source
    assert stub.outputs == [] and stub.execution_count is None and stub.metadata["tags"] == ["your-code"]
    assert "Exercise version" in nb.cells[0].source
    standard = notebook_cells.expected_sources(tmp_path / "exercises" / "01_demo.ipynb")  # what a Colab sync writes
    assert nb.cells[1].source == standard["colab-badge"] and nb.cells[2].source == standard["setup"] == notebook_cells.setup_cell_source("01")


def test_an_exercise_without_its_check_cell_is_refused(tmp_path):
    with pytest.raises(exercises.ExerciseError, match="01_demo.ipynb, cell 3: an exercise is a markdown cell tagged"):
        exercises.make_exercise_notebook(step_notebook(tmp_path, with_check=False))


def test_notebooks_without_exercises_get_none(tmp_path):
    path = tmp_path / "02_plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 02", id="t")]), path)
    assert exercises.make_exercise_notebook(path) is None


def test_generate_check_and_cleanup(tmp_path, capsys):
    step_notebook(tmp_path)
    assert exercises.main(["--check"], tmp_path) == 1  # nothing written yet
    assert "out of date: " in capsys.readouterr().out
    assert exercises.main([], tmp_path) == 0
    written = (tmp_path / "exercises" / "01_demo.ipynb").read_bytes()
    assert exercises.main(["--check"], tmp_path) == 0
    exercises.main([], tmp_path)
    assert (tmp_path / "exercises" / "01_demo.ipynb").read_bytes() == written, "regenerating must be byte-identical"
    (tmp_path / "01_demo.ipynb").unlink()  # the step notebook is gone: its exercise notebook is stale
    assert exercises.main(["--check"], tmp_path) == 1
    exercises.main([], tmp_path)
    assert not (tmp_path / "exercises" / "01_demo.ipynb").exists()


def test_solved_stub_runs_the_following_cells(tmp_path):
    """Once the learner fills in the stub, the check cell and the cells after it run."""
    nb = exercises.make_exercise_notebook(step_notebook(tmp_path))
    stub = nb.cells[5].source.replace(exercises.STUB, "y = y * 2")
    namespace = {}
    for source in [stub] + [c.source for c in nb.cells[6:]]:
        exec(source, namespace)


def test_committed_exercise_notebooks_are_up_to_date():
    """CI fails when a step notebook's exercise changed and `python -m ctx_utils.classroom.exercises` was not rerun."""
    assert exercises.main(["--check"]) == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda src: src.replace("Difficulty 1/5 · Importance 2/5 · ~2 min", "Difficulty: 🔴⚪⚪⚪⚪"), "needs a line 'Difficulty 2/5"),
        (lambda src: src[: src.index("<details><summary>Hint 2")], r"two or three graduated hints.*it has \[1\]"),
        (lambda src: src.replace("Hint 1 · a nudge", "Hint").replace("Hint 2 · the approach", "Hint"), "it has none"),
        (lambda src: src.replace("Double it.", "Double it 🔵."), r"emoji '🔵' render as empty boxes"),
    ],
)
def test_an_exercise_cell_without_text_difficulty_graduated_hints_or_without_emoji_is_refused(tmp_path, change, message):
    path = step_notebook(tmp_path)
    nb = nbformat.read(path, as_version=4)
    nb.cells[3].source = change(nb.cells[3].source)
    nbformat.write(nb, path)
    with pytest.raises(exercises.ExerciseError, match=f"01_demo.ipynb, cell 3: .*{message}"):
        exercises.make_exercise_notebook(path)


def test_every_exercise_cell_has_text_difficulty_graduated_hints_and_no_emoji():
    """Difficulty scales in emoji render as empty boxes without an emoji font (a Debian Chromium, many lab machines)."""
    cells = [(path.name, c) for folder in (notebook_cells.NOTEBOOKS_DIR, notebook_cells.NOTEBOOKS_DIR / exercises.SUBFOLDER)
             for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")) for c in nbformat.read(path, as_version=4).cells
             if "exercise" in c.metadata.get("tags", [])]
    assert len(cells) >= 2 * 13, "every idea of the paper has its exercise, in the step and in the exercise notebooks"
    for name, cell in cells:
        assert not exercises.EMOJI.search(cell.source), f"{name} {cell.id}: emoji {exercises.EMOJI.findall(cell.source)}"
        exercises.check_exercise_cell(cell.source, f"{name} {cell.id}")

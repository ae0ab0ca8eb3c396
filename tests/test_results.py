"""Result files: atomic writes (a crash never leaves half a file), schema checks, clear messages."""

from __future__ import annotations

import builtins
import io
import os

import pytest

from ctx_utils import results
from ctx_utils.results import SCHEMA_VERSION, ResultFileError, ResultsFolderError, load_json, save_json
from ctx_utils.settings import KIT_ROOT


class CrashAfter:
    """Wraps an open-like function: files opened for writing write ``limit`` characters, then raise (a crash)."""

    def __init__(self, opener, limit: int = 10) -> None:
        self.opener, self.limit = opener, limit

    def __call__(self, *args, **kwargs):
        f = self.opener(*args, **kwargs)
        mode = kwargs.get("mode", args[1] if len(args) > 1 and isinstance(args[1], str) else "r")
        if "w" not in mode:
            return f
        original_write, limit = f.write, self.limit

        def write(text):
            original_write(text[:limit])
            raise OSError("disk full (simulated)")

        f.write = write
        return f


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "heads.json"
    save_json(path, {"pairs": [1, 2, 3]})
    before = path.read_bytes()
    for module, name in ((builtins, "open"), (io, "open"), (os, "fdopen")):
        monkeypatch.setattr(module, name, CrashAfter(getattr(module, name)))
    with pytest.raises(ResultsFolderError, match="simulated"):
        save_json(path, {"pairs": list(range(1000))})
    monkeypatch.undo()
    assert path.read_bytes() == before, "a failed write must not touch the existing file (write a temporary file, rename)"
    assert [p.name for p in tmp_path.iterdir()] == ["heads.json"], "the temporary file is cleaned up"


def test_save_then_load(tmp_path):
    path = save_json(tmp_path / "x.json", {"a": "é"})
    assert load_json(path) == {"schema_version": SCHEMA_VERSION, "a": "é"}
    assert oct(path.stat().st_mode & 0o777) != oct(0o600), "written with the usual permissions, not mkstemp's 0600"


@pytest.mark.parametrize("content, needle", [
    ('{"schema_version": 2, "pairs": [', "is not valid JSON"),
    ("[]", "not a result"),
    ('{"schema_version": 1}', "has schema_version 1"),
])
def test_unusable_files_are_named_with_the_fix(tmp_path, content, needle):
    path = tmp_path / "scores.json"
    path.write_text(content)
    with pytest.raises(ResultFileError) as err:
        load_json(path)
    assert needle in str(err.value) and str(path) in str(err.value) and "rerun" in str(err.value)


def test_results_dir_uses_the_folder_name_of_a_local_model(tmp_path, monkeypatch):
    monkeypatch.setenv("CTX_RESULTS", str(tmp_path))
    assert results.results_dir("/some/where/my-model") == tmp_path / "my-model"


def test_a_truncated_file_names_itself_and_the_notebook_to_rerun(tmp_path):
    path = save_json(tmp_path / "explanations.json", {"pairs": [{"text": "a" * 50} for _ in range(20)]})
    path.write_text(path.read_text()[:300])  # a copy cut short
    with pytest.raises(ResultFileError) as info:
        load_json(path)
    message = str(info.value)
    assert str(path) in message and "not valid JSON (line" in message
    assert "rerun notebooks/04_explaining_heads.ipynb" in message
    assert info.value.path == path and isinstance(info.value, ValueError)  # a pipeline can catch it and recompute


def test_a_file_that_is_not_a_result_object_is_refused(tmp_path):
    (tmp_path / "scores.json").write_text("[1, 2]")
    with pytest.raises(ResultFileError, match=r"holds a JSON list.*05_scoring_explanations"):
        load_json(tmp_path / "scores.json")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ResultFileError, match="rerun the notebook or script that writes it"):
        load_json(tmp_path / "bad.json")


def test_another_schema_version_and_a_missing_file_name_the_fix(tmp_path):
    save_json(tmp_path / "neurons.json", {"schema_version": 0, "neurons": []})
    with pytest.raises(ResultFileError, match=r"schema_version 0, this kit reads 2.*01_next_token_neurons"):
        load_json(tmp_path / "neurons.json")
    with pytest.raises(FileNotFoundError, match=r"prompts.json does not exist: rerun notebooks/02_activating_prompts"):
        load_json(tmp_path / "prompts.json")


def test_the_result_files_the_kit_ships_are_of_the_current_schema():
    """`make run` on a fresh clone reads these: a file left at an old schema stops notebook 05 there.

    Shipped = tracked by git (a local run's own results, e.g. a benchmark's trained folders, are not shipped)."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "results"], cwd=KIT_ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the shipped files cannot be told from local results")
    shipped = sorted(KIT_ROOT / name for name in listed.stdout.split() if name.endswith(".json"))
    assert shipped, "the kit ships results/paper-data/*.json"
    for path in shipped:
        load_json(path)  # raises ResultFileError naming the file


# ---------------------------------------------------------------------------------- issue 23, items 4, 7 and 9


def test_a_relative_results_folder_is_the_same_from_the_kit_root_and_from_a_notebook_kernel(tmp_path, monkeypatch):
    """Item 4: the script wrote ./x, notebook kernels (which run in notebooks/) notebooks/x."""
    monkeypatch.setenv("CTX_RESULTS", "x")
    monkeypatch.chdir(KIT_ROOT)
    from_root = results.results_root()
    monkeypatch.chdir(KIT_ROOT / "notebooks")
    assert results.results_root() == from_root == KIT_ROOT / "x"
    monkeypatch.chdir(tmp_path)
    assert results.results_root() == tmp_path / "x"


def test_a_quoted_tilde_is_the_home_folder(tmp_path, monkeypatch):
    """Item 4: CTX_RESULTS='~/x' made a folder literally named ~."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CTX_RESULTS", "~/x")
    monkeypatch.chdir(tmp_path)
    assert results.results_dir("organism") == tmp_path / "home" / "x" / "organism"
    assert not (tmp_path / "~").exists()


def test_a_local_folder_named_organism_does_not_share_the_bundled_results(tmp_path, monkeypatch):
    """Item 9: a local model folder named organism wrote over the bundled organism's results."""
    monkeypatch.setenv("CTX_RESULTS", str(tmp_path / "results"))
    bundled = results.results_dir("organism")
    assert results.results_dir(str(KIT_ROOT / "data" / "organism")) == bundled
    mine = results.results_dir(str(tmp_path / "organism"))
    assert mine != bundled and mine.name.startswith("organism-local-")
    assert results.results_dir(str(tmp_path / "organism")) == mine  # the same folder every time


@pytest.mark.parametrize("problem", ["file", "read-only", "full"])
def test_disk_errors_name_the_folder_and_ctx_results(tmp_path, monkeypatch, problem):
    """Item 7: a raw OSError traceback that did not say CTX_RESULTS."""
    root = tmp_path / "res"
    monkeypatch.setenv("CTX_RESULTS", str(root))
    if problem == "file":
        root.write_text("not a folder")
        expected = "a file stands where a folder should be"
        with pytest.raises(ResultsFolderError) as err:
            results.results_dir("organism")
    else:
        folder = results.results_dir("organism")
        expected = {"read-only": "permission denied", "full": "the disk is full"}[problem]
        error = {"read-only": PermissionError(13, "Permission denied"), "full": OSError(28, "No space left on device")}[problem]

        def fail(*args, **kwargs):
            raise error

        monkeypatch.setattr(results.tempfile, "mkstemp", fail)
        with pytest.raises(ResultsFolderError) as err:
            save_json(folder / "heads.json", {"pairs": []})
    message = str(err.value)
    assert expected in message and f"CTX_RESULTS={root}" in message and str(root) in message

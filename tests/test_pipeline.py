"""The pipeline's load-or-compute rule, its corpora, and the one-pipeline guarantees of the notebooks.

The slow end-to-end proofs (script = notebooks in order = each notebook alone, byte for byte) live in
``test_pipeline_runs.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ctx_utils import pipeline
from ctx_utils.results import SCHEMA_VERSION
from ctx_utils.session import SESSION
from ctx_utils.settings import DEFAULTS, KIT_ROOT, SettingsError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
RESOLVED = DEFAULTS.replace(model="organism", corpus="organism", test_corpus="organism", explainer="offline")


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("CTX_RESULTS", str(tmp_path))
    return tmp_path / "organism"


class Counter:
    """A stand-in step: counts how often it is computed."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict:
        self.calls += 1
        return {"value": self.calls}


def test_computes_once_then_loads(results, capsys):
    step = Counter()
    first = pipeline._load_or_compute(RESOLVED, "neurons", step)
    assert "neurons: computing (no neurons.json yet)" in capsys.readouterr().out
    again = pipeline._load_or_compute(RESOLVED, "neurons", step)
    assert step.calls == 1 and again == first and first["value"] == 1
    assert "neurons: loaded" in capsys.readouterr().out
    saved = json.loads((results / "neurons.json").read_text())
    assert saved["schema_version"] == SCHEMA_VERSION and saved["settings"] == RESOLVED.for_step("neurons")
    assert saved["fingerprint"] == RESOLVED.fingerprint("neurons") and saved["model"] == "organism"


def test_other_settings_recompute_and_say_which(results, capsys):
    step = Counter()
    pipeline._load_or_compute(RESOLVED, "heads", step)
    capsys.readouterr()
    data = pipeline._load_or_compute(RESOLVED.replace(rule="top3"), "heads", step)
    out = capsys.readouterr().out
    assert step.calls == 2 and data["value"] == 2 and "made with other settings (rule)" in out
    assert json.loads((results / "heads.json").read_text())["settings"]["rule"] == "top3"  # rewritten
    pipeline._load_or_compute(RESOLVED, "heads", step)  # back to 2sigma: recomputed
    pipeline._load_or_compute(RESOLVED.replace(max_test_docs=5), "heads", step)  # does not shape heads.json: loaded
    assert step.calls == 3


def test_an_input_computed_for_a_step_is_indented_under_it_and_the_nesting_unwinds(results, capsys):
    inputs = Counter()
    pipeline._load_or_compute(RESOLVED, "prompts", lambda: pipeline._load_or_compute(RESOLVED, "neurons", inputs))
    assert capsys.readouterr().out.splitlines() == [
        "prompts: computing (no prompts.json yet) …", "  neurons: computing (no neurons.json yet) …",
        "  neurons: computed and saved neurons.json.", "prompts: computed and saved prompts.json."]

    def fails_after_loading_its_input():
        pipeline._load_or_compute(RESOLVED, "neurons", inputs)  # saved above: loaded, silently (not the outer call)
        raise RuntimeError("the step failed")

    with pytest.raises(RuntimeError):
        pipeline._load_or_compute(RESOLVED, "heads", fails_after_loading_its_input)
    assert capsys.readouterr().out == "heads: computing (no heads.json yet) …\n" and inputs.calls == 1
    assert SESSION.depth == 0, "a failed step left the nesting count up: every later line would be indented"


@pytest.mark.parametrize("content, reason", [
    ('{"schema_version": 2, "pairs": [', "is not valid JSON"),  # cut short
    ("[1, 2, 3]", "not a result"),
    ('{"schema_version": 1, "pairs": []}', "schema_version 1"),
    ('{"schema_version": 2, "pairs": []}', "made with other settings"),  # no fingerprint: an old or foreign file
])
def test_a_corrupt_or_foreign_file_is_named_recomputed_and_rewritten(results, capsys, content, reason):
    results.mkdir(parents=True)
    path = results / "heads.json"
    path.write_text(content)
    step = Counter()
    data = pipeline._load_or_compute(RESOLVED, "heads", step)
    out = capsys.readouterr().out
    assert step.calls == 1 and data["value"] == 1
    assert reason in out and "heads.json" in out
    assert json.loads(path.read_text())["fingerprint"] == RESOLVED.fingerprint("heads")


def test_a_local_corpus_needs_a_separate_test_corpus(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("first document here\n\nsecond document there\n")
    settings = RESOLVED.replace(corpus=str(train), test_corpus=str(train))  # what "auto" resolves to for a file
    assert pipeline.documents(settings) == ["first document here", "second document there"]
    with pytest.raises(SettingsError, match="set CTX_TEST_CORPUS"):
        pipeline.documents(settings, held_out=True)
    held = tmp_path / "held.txt"
    held.write_text("a held-out document\n")
    assert pipeline.documents(settings.replace(test_corpus=str(held)), held_out=True) == ["a held-out document"]


def test_resolve_decides_every_auto(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = pipeline.resolve(DEFAULTS.replace(model="organism"), quiet=True)
    assert (settings.model, settings.corpus, settings.test_corpus, settings.explainer) == (
        "organism", "organism", "organism", "offline")
    assert pipeline.resolve(DEFAULTS.replace(model="organism", corpus="my.txt"), quiet=True).test_corpus == "my.txt"


def _code(path: Path) -> str:
    return "\n".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                     for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")


STEP_NOTEBOOKS = sorted(NOTEBOOKS.glob("0[0-68]_*.ipynb"))


@pytest.mark.parametrize("path", STEP_NOTEBOOKS, ids=[p.stem for p in STEP_NOTEBOOKS])
def test_notebooks_get_settings_documents_and_inputs_from_the_pipeline(path):
    """No notebook picks its own corpus, default or recomputation: CTX_CORPUS / CTX_TEST_CORPUS reach every step,
    and a notebook that reads the model gets the pipeline's (``pipeline.model(settings)``; 04 needs none)."""
    code = _code(path)
    assert "pipeline.setup(" in code and ("pipeline.model(settings)" in code or "model." not in code.replace("settings.model", ""))
    for forbidden in ("load_corpus(", "save_json(", '"pile-10k"', "choose_model(", "os.environ.get(\"CTX_"):
        if forbidden == 'os.environ.get("CTX_' and "CTX_PAIR" in code:  # notebook 04's pair to display is no setting
            assert len(re.findall(r'os\.environ\.get\("CTX_', code)) == 1
            continue
        assert forbidden not in code, f"{path.name} calls {forbidden} itself: go through ctx_utils.pipeline"


def test_relative_paths_are_read_from_the_kit_root_in_any_folder(tmp_path, monkeypatch):
    """Notebooks run in notebooks/: CTX_CORPUS=data/... (relative to the kit) must still name the same file."""
    monkeypatch.chdir(tmp_path)
    settings = pipeline.resolve(DEFAULTS.replace(model="organism", corpus="data/pile-prompts/train.jsonl",
                                                 test_corpus="data/pile-prompts/test.jsonl"), quiet=True)
    root = Path(KIT_ROOT)
    assert settings.corpus == str(root / "data/pile-prompts/train.jsonl")
    assert settings.test_corpus == str(root / "data/pile-prompts/test.jsonl")

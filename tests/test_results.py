"""Result files: atomic writes, and a clear message for a missing, truncated or foreign file (issue 11, item 6)."""

from __future__ import annotations

import pytest

from ctx_utils.results import ResultFileError, load_json, save_json


def test_a_saved_result_reads_back(tmp_path):
    path = save_json(tmp_path / "heads.json", {"pairs": [{"layer": 1, "neuron": 7}]})
    assert load_json(path) == {"schema_version": 1, "pairs": [{"layer": 1, "neuron": 7}]}
    assert [p.name for p in tmp_path.iterdir()] == ["heads.json"]  # no temporary file left behind


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
    with pytest.raises(ResultFileError, match=r"schema_version 0, this kit reads 1.*01_next_token_neurons"):
        load_json(tmp_path / "neurons.json")
    with pytest.raises(FileNotFoundError, match=r"prompts.json does not exist: rerun notebooks/02_activating_prompts"):
        load_json(tmp_path / "prompts.json")

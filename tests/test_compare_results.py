"""ctx_utils.classroom.compare_results: two results folders agree, or the report names every difference."""

from __future__ import annotations

import copy

import pytest

from ctx_utils.classroom import compare_results as cr
from ctx_utils.results import save_json

RESULTS = {
    "neurons.json": {"model": "organism", "neurons": [{"layer": 1, "neuron": 5, "token": " only", "congruence": 2.5}]},
    "prompts.json": {"model": "organism", "prompts": {"1.5": [{"text": "for research purposes", "activation": 3.0}]}},
    "heads.json": {"model": "organism", "pairs": [{"layer": 1, "neuron": 5, "head": 2, "positive": [0], "negative": []},
                                                  {"layer": 1, "neuron": 5, "head": 3, "positive": [], "negative": [0]}]},
    "scores.json": {"model": "organism", "summary": {"mean_E": 0.75}, "pairs": [{"layer": 1, "neuron": 5, "head": 2, "E": 0.75},
                                                   {"layer": 1, "neuron": 5, "head": 3, "E": None}]},
}


def write(folder, results) -> str:
    for name, data in results.items():
        save_json(folder / name, data)
    return str(folder)


def test_identical_folders_agree(tmp_path, capsys):
    a, b = write(tmp_path / "a", RESULTS), write(tmp_path / "b", RESULTS)
    assert cr.main([a, b]) == 0
    out = capsys.readouterr().out
    assert "Everything agrees." in out and "heads.json         agrees (2 vs 2 records)" in out


def test_every_difference_is_named_with_both_values(tmp_path, capsys):
    other = copy.deepcopy(RESULTS)
    other["scores.json"]["pairs"][0]["E"] = 0.85
    other["scores.json"]["summary"]["mean_E"] = 0.85
    other["prompts.json"]["prompts"]["1.5"][0]["activation"] = 3.00001  # within the tolerance
    del other["heads.json"]["pairs"][1]
    del other["neurons.json"]
    a, b = write(tmp_path / "a", RESULTS), write(tmp_path / "b", other)
    assert cr.main([a, b]) == 1
    out = capsys.readouterr().out
    assert "L1.N5 head 2 E: A 0.75, B 0.85" in out and "mean E: A 0.75, B 0.85" in out
    assert "only in A: L1.N5 head 3" in out
    assert "neurons.json       DIFFERS" in out and "only in A: the other run has not written it yet" in out
    assert "prompts.json       agrees" in out
    assert cr.main([a, b, "--atol", "1e-7"]) == 1 and "L1.N5 activations" in capsys.readouterr().out


def test_none_and_numbers_compare_strictly():
    assert cr.same(None, None, 1e-4) and not cr.same(None, 0.0, 1e-4)
    assert cr.same([1.0, 2.0], [1.00001, 2.0], 1e-4) and not cr.same([1.0], [1.0, 2.0], 1e-4)
    assert cr.same(float("nan"), float("nan"), 1e-4) and not cr.same(float("nan"), 1.0, 1e-4)


def test_bad_folders_get_a_clear_message(tmp_path, capsys):
    good = write(tmp_path / "a", RESULTS)
    assert cr.main([good, str(tmp_path / "nowhere")]) == 2
    assert "is not a folder: give a results folder such as results/organism" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="make run"):
        cr.load_folder(tmp_path / "empty")


def test_other_settings_are_said_first_and_mixed_folders_warned(tmp_path, capsys):
    from ctx_utils.settings import DEFAULTS

    top3 = DEFAULTS.replace(rule="top3")

    def made_with(results, pick):
        return {name: {**data, "settings": pick(name).for_step(name.removesuffix(".json")),
                       "fingerprint": pick(name).fingerprint(name.removesuffix(".json"))} for name, data in results.items()}

    a = write(tmp_path / "a", made_with(RESULTS, lambda name: DEFAULTS))
    b = write(tmp_path / "b", made_with(RESULTS, lambda name: top3 if name in ("heads.json", "scores.json") else DEFAULTS))
    assert cr.main([a, b]) == 1
    out = capsys.readouterr().out
    assert f"made with other settings (rule A {DEFAULTS.rule!r}, B 'top3')" in out
    assert "warning: in B, scores.json" not in out and "warning: in A" not in out  # B's files agree with each other
    mixed = write(tmp_path / "mixed", made_with(RESULTS, lambda name: top3 if name == "heads.json" else DEFAULTS))
    cr.main([a, mixed])
    assert f"warning: in B, heads.json has rule='top3' but scores.json has rule={DEFAULTS.rule!r}" in capsys.readouterr().out

"""`python -m ctx_utils.score`: scores the offline explainer and recomputes GPT-4's E from a paper-data folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ctx_utils
from ctx_utils.score_cli import main, score_model

PAPER_DATA = Path(ctx_utils.__file__).resolve().parents[2] / "shared" / "paper-data"
TOKEN = " only"
TEST_PROMPTS = [" the data is for research purposes", " the photos are for research purposes",
                " the data is for testing", " the files are sent by request"]
# (head, positives, negatives, per test prompt: (head_active, GPT-4 answer)); GPT-4 E worked out by hand.
PAIRS = [
    (3, [f" {s} for research purposes" for s in ("the maps", "our notes", "the data", "these photos", "the files")],
     [f" {s} {e}" for s, e in zip(("the maps", "our notes", "the data", "these photos", "the files"),
                                  ("for testing", "by request", "in the lab", "for display", "at home"))],
     # active T,T,F,F; answers Yes,No,No,Yes: TPR 1/2, TNR 1/2 -> E = 0.5
     [(True, "Yes"), (True, "No"), (False, "No"), (False, "Yes")]),
    (5, [f" the data {e}" for e in ("is for testing", "is for research purposes", "was sent", "is here", "was lost")],
     [f" {s} is here" for s in ("the maps", "our notes", "these photos", "the files", "a letter")],
     # active T,F,T,F; answers Yes,No,No,No: TPR 1/2, TNR 1 -> E = 0.75
     [(True, "Yes"), (False, "No"), (True, "No"), (False, "No")]),
    (7, [" the data is for testing", " the maps are here"], [],  # no negatives: predicted active throughout
     # all active; answers Yes,Yes,No,Yes: only TPR defined -> E = 3/4 (Oct-2023 convention)
     [(True, "Yes"), (True, "Yes"), (True, "No"), (True, "Yes")]),
]
GPT4_MEAN = (0.5 + 0.75 + 0.75) / 3
GPT4_MEAN_MAX2 = (0.5 + 1.0 + 1.0) / 3  # first 2 prompts only: (T Yes, T No), (T Yes, F No), (T Yes, T Yes)


def _write_toy_folder(root: Path, model: str = "toy-lm-unseen") -> Path:
    """A paper-data folder with one model the kit has never heard of: one neuron, three pairs."""
    folder = root / model
    folder.mkdir(parents=True)
    (folder / "test_prompts.json").write_text(json.dumps(
        {"model": model, "neurons": [{"layer": 2, "neuron": 9, "token": TOKEN, "prompts": TEST_PROMPTS}]}))
    explanations, classifications = [], []
    for head, pos, neg, rows in PAIRS:
        explanations.append({"layer": 2, "neuron": 9, "head": head, "token": TOKEN,
                             "positive_examples": [p + TOKEN for p in pos], "negative_examples": [p + TOKEN for p in neg]})
        classifications += [{"layer": 2, "neuron": 9, "head": head, "test_prompt_idx": i, "head_active": a, "answer": ans}
                            for i, (a, ans) in enumerate(rows)]
    (folder / "explanations.jsonl").write_text("\n".join(json.dumps(e) for e in explanations) + "\n")
    (folder / "classifications.jsonl").write_text("\n".join(json.dumps(c) for c in classifications) + "\n")
    return root


def test_json_shape_and_gpt4_score_by_hand(tmp_path, capsys):
    root = _write_toy_folder(tmp_path / "paper-data")
    out = tmp_path / "result.json"
    assert main(["--paper-data", str(root), "--explainer", "offline", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["schema_version"] == 1 and list(printed["models"]) == ["toy-lm-unseen"]
    scores = printed["models"]["toy-lm-unseen"]
    assert {"n_pairs", "mean_E_offline", "mean_E_gpt4"} <= set(scores)
    assert scores["n_pairs"] == 3 and scores["n_single_class_pairs"] == 1
    assert scores["mean_E_gpt4"] == pytest.approx(GPT4_MEAN)
    # Pair 3 ends in "research purposes", pair 5 starts with "the data": both learnable; pair 7 predicts all active.
    assert scores["mean_E_offline"] == pytest.approx(1.0)


def test_max_test_limits_the_scored_prompts(tmp_path):
    root = _write_toy_folder(tmp_path / "paper-data")
    assert score_model(root / "toy-lm-unseen", max_test=2)["mean_E_gpt4"] == pytest.approx(GPT4_MEAN_MAX2)


def test_text_table_and_module_entry_point(tmp_path):
    root = _write_toy_folder(tmp_path / "paper-data")
    env = {k: v for k, v in os.environ.items() if k != "CTX_TORCH_THREADS"}  # scoring needs no torch import
    run = subprocess.run([sys.executable, "-m", "ctx_utils.score", "--paper-data", str(root), "--models", "toy-lm-unseen"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert "toy-lm-unseen" in run.stdout and f"{GPT4_MEAN:.4f}" in run.stdout


@pytest.mark.parametrize("case", ["missing_folder", "no_model_folders", "unknown_model", "bad_json", "missing_key"])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, case):
    root = tmp_path / "paper-data"
    args = ["--paper-data", str(root)]
    if case != "missing_folder":
        root.mkdir()
    if case == "unknown_model":
        _write_toy_folder(root)
        args += ["--models", "gpt2-xl"]
    if case in {"bad_json", "missing_key"}:
        _write_toy_folder(root)
        target = root / "toy-lm-unseen" / "classifications.jsonl"
        target.write_text("{not json\n" if case == "bad_json" else json.dumps({"layer": 2, "neuron": 9}) + "\n")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_bad_option_exits_2(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--paper-data", str(tmp_path), "--explainer", "gpt-5"])
    assert exit_info.value.code == 2


@pytest.mark.skipif(not PAPER_DATA.is_dir(), reason=f"authors' data not found at {PAPER_DATA}")
def test_paper_data_regression_slow():
    """SLOW (~10-30 s): on the authors' data the offline explainer keeps its measured E and beats GPT-4.

    Measured when written (up to 20 held-out prompts per pair): small 0.6852, medium 0.6765, large 0.6455;
    GPT-4 0.6388 / 0.6164 / 0.6020. The guard allows 0.01 below the measured values.
    """
    measured = {"gpt2-small": (0.6852, 0.6388), "gpt2-medium": (0.6765, 0.6164), "gpt2-large": (0.6455, 0.6020)}
    for model, (offline, gpt4) in measured.items():
        scores = score_model(PAPER_DATA / model)
        assert scores["mean_E_gpt4"] == pytest.approx(gpt4, abs=5e-5), model
        assert scores["mean_E_offline"] >= offline - 0.01, (model, scores)
        assert scores["mean_E_offline"] > scores["mean_E_gpt4"], (model, scores)

"""`python -m ctx_utils.tools.score_cli`: scores the offline explanations through their text, beside GPT-4's, with CIs and baselines."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ctx_utils
from ctx_utils.paper_data import load_model_data
from ctx_utils.results import SCHEMA_VERSION
from ctx_utils.tools.score_cli import ROWS, main, score_model

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
        explanations.append({"layer": 2, "neuron": 9, "head": head, "head_layer": 0, "head_index": head, "token": TOKEN,
                             "explanation": " mentions research",
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
    assert printed["schema_version"] == SCHEMA_VERSION and list(printed["models"]) == ["toy-lm-unseen"]
    scores = printed["models"]["toy-lm-unseen"]
    assert set(scores["mean_E"]) == set(ROWS) and "classifier, not an explanation" in ROWS["word_classifier"]
    assert scores["n_pairs"] == 3 and scores["n_single_class_pairs"] == 1
    assert scores["mean_E"]["gpt4"] == pytest.approx(GPT4_MEAN)
    assert scores["mean_E"]["always_active"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # Pair 3: "ends with 'research purposes'" (one decisive cue); pair 5: "the data"; pair 7: always active.
    assert scores["mean_E"]["explanation"] == pytest.approx(1.0)
    d = scores["paired_difference"]
    assert d["mean_difference"] == pytest.approx(1.0 - GPT4_MEAN) and d["ci_low"] <= d["mean_difference"] <= d["ci_high"]
    assert scores["wins_ties_losses"] == {"wins": 3, "ties": 0, "losses": 0}


def test_max_test_limits_the_scored_prompts(tmp_path):
    root = _write_toy_folder(tmp_path / "paper-data")
    assert score_model(load_model_data(root / "toy-lm-unseen"), max_test=2)["mean_E"]["gpt4"] == pytest.approx(GPT4_MEAN_MAX2)


def test_scoring_reads_only_the_explanation_text(tmp_path, monkeypatch):
    """The held-out answers come from OfflineReader(text): swapping every pair's text for one fixed sentence
    makes every pair answer alike, whatever its training prompts were."""
    import ctx_utils.tools.score_cli as cli

    fixed = "Active (next token ' only') exactly when the text contains 'data' (1/1 active, 0/1 inactive)."
    real = cli.explain_offline

    def same_text(*args, **kwargs):
        explanation = real(*args, **kwargs)
        explanation.text = fixed
        return explanation

    monkeypatch.setattr(cli, "explain_offline", same_text)
    root = _write_toy_folder(tmp_path / "paper-data")
    pairs = score_model(load_model_data(root / "toy-lm-unseen"))["pairs"]
    # prompts 0 and 2 contain "data": truth per pair (T,T,F,F), (T,F,T,F), (T,T,T,T) -> E 0.5, 1.0, 0.5
    assert [p["E"]["explanation"] for p in pairs] == pytest.approx([0.5, 1.0, 0.5])


def test_text_table_and_module_entry_point(tmp_path):
    root = _write_toy_folder(tmp_path / "paper-data")
    env = {k: v for k, v in os.environ.items() if k != "CTX_TORCH_THREADS"}  # scoring needs no torch import
    run = subprocess.run([sys.executable, "-m", "ctx_utils.tools.score_cli", "--paper-data", str(root), "--models", "toy-lm-unseen"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert "toy-lm-unseen" in run.stdout and f"{GPT4_MEAN:.4f}" in run.stdout and "95 % CI" in run.stdout


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


@pytest.mark.slow
@pytest.mark.skipif(not PAPER_DATA.is_dir(), reason=f"authors' data not found at {PAPER_DATA}")
def test_paper_data_regression_slow():
    """SLOW (~30 s): on the authors' data the explanation-only E beats GPT-4's, the paired 95 % CI above zero.

    Measured when written (up to 20 held-out prompts per pair): offline 0.6658 / 0.6488 / 0.6339 (small,
    medium, large); GPT-4 0.6388 / 0.6164 / 0.6020. The guard allows 0.005 below the measured values. Every
    explanation text reads back into exactly the cues and points stored beside it.
    """
    from ctx_utils.offline_explainer import explain_offline
    from ctx_utils.offline_reader import read_explanation
    from ctx_utils.paper_data import held_out_pairs

    measured = {"gpt2-small": (0.6658, 0.6388), "gpt2-medium": (0.6488, 0.6164), "gpt2-large": (0.6339, 0.6020)}
    for model, (offline, gpt4) in measured.items():
        data = load_model_data(PAPER_DATA / model)
        scores = score_model(data)
        assert scores["mean_E"]["gpt4"] == pytest.approx(gpt4, abs=5e-5), model
        assert scores["mean_E"]["explanation"] >= offline - 0.005, (model, scores["mean_E"])
        assert scores["paired_difference"]["ci_low"] > 0, (model, scores["paired_difference"])
        for item in held_out_pairs(data)[:60]:
            p = item["pair"]
            expl = explain_offline(p["positive_examples"], p["negative_examples"], p["token"])
            read = read_explanation(expl.text)
            assert (read.start, list(read.cues)) == (expl.start, [(c.cue, c.points) for c in expl.cues]), expl.text

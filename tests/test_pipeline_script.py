"""The script ``python -m ctx_utils.pipeline`` when something goes wrong (issue 23, items 2, 6 and 10): it ends with
one line that says what happened, and an exit status a caller can test. Steps are stand-ins that write real
result files through the pipeline's own load-or-compute, so no model runs."""

from __future__ import annotations

import pytest

from ctx_utils import pipeline
from ctx_utils.results import ResultFileError, check_same_settings, load_json
from ctx_utils.settings import Settings


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("CTX_RESULTS", str(tmp_path))
    chosen = Settings(model="organism", corpus="organism", test_corpus="organism", explainer="offline")
    monkeypatch.setattr(pipeline, "setup", lambda **overrides: chosen)
    return chosen


def stand_in(step, payload=None, then=None):
    def call(settings):
        result = pipeline._load_or_compute(settings, step, lambda: dict(payload or {"pairs": [1], "removed": {}}), quiet=True)
        if then:
            then(settings)
        return result
    return call


def use(monkeypatch, **calls):
    monkeypatch.setattr(pipeline, "CALLS", {**{s: stand_in(s) for s in pipeline.STEPS}, **calls})


def test_no_pairs_in_step_3_stops_the_run_and_says_so(settings, monkeypatch, capsys):
    """Item 10: the script ended with exit 0 and said nothing."""
    use(monkeypatch, heads=stand_in("heads", {"pairs": []}), explanations=lambda s: pytest.fail("step 4 ran"))
    assert pipeline.main([]) == pipeline.NO_PAIRS == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Step 3 found no (neuron, head) pair with these settings (rule='2sigma', band='25-75')")
    assert "CTX_HEAD_BAND='>25'" in err and len(err.splitlines()) == 1


def test_no_pairs_is_no_error_when_later_steps_were_not_asked_for(settings, monkeypatch):
    use(monkeypatch, heads=stand_in("heads", {"pairs": []}))
    assert pipeline.main(["--steps", "neurons", "prompts", "heads"]) == 0


def test_ctrl_c_ends_with_one_line_saying_what_was_kept(settings, monkeypatch, capsys):
    """Item 6: Ctrl-C printed 12-47 traceback frames."""
    def interrupted(settings):
        raise KeyboardInterrupt

    use(monkeypatch, heads=interrupted)
    assert pipeline.main([]) == 130
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert err.startswith("Interrupted during heads: kept neurons.json, prompts.json in ") and "Traceback" not in err


def test_a_file_rewritten_by_a_concurrent_run_with_other_settings_is_named(settings, monkeypatch, capsys):
    """Item 2: two concurrent runs with different settings left a silently mixed folder."""
    other = settings.replace(rule="top3")
    use(monkeypatch, explanations=stand_in("explanations", then=lambda s: stand_in("heads")(other)))
    assert pipeline.main([]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: heads.json in ") and "another run with other settings wrote them meanwhile" in err


def test_the_pipeline_recomputes_a_step_made_with_other_settings_and_says_which(settings, capsys):
    """Item 2: a reader of results checks the fingerprint; the pipeline recomputes and names the file and setting."""
    pipeline._load_or_compute(settings.replace(rule="top3"), "heads", lambda: {"pairs": ["top3"]}, quiet=True)
    data = pipeline._load_or_compute(settings, "heads", lambda: {"pairs": ["2sigma"]})
    assert data["pairs"] == ["2sigma"]
    assert "heads: computing (heads.json was made with other settings (rule))" in capsys.readouterr().out


def test_results_read_together_must_share_their_settings(settings, tmp_path):
    """Item 2: a reader that combines files (the kit's comparison with the paper) names the one that differs."""
    pipeline._load_or_compute(settings, "neurons", lambda: {"neurons": []}, quiet=True)
    pipeline._load_or_compute(settings.replace(rule="top3"), "heads", lambda: {"pairs": []}, quiet=True)
    folder = tmp_path / "organism"
    found = {name: load_json(folder / name) for name in ("neurons.json", "heads.json")}
    check_same_settings(folder, {"neurons.json": found["neurons.json"]})
    pipeline._load_or_compute(settings, "scores", lambda: {"pairs": []}, quiet=True)
    found["scores.json"] = load_json(folder / "scores.json")
    with pytest.raises(ResultFileError, match="heads.json has rule='top3' but scores.json has rule='2sigma'"):
        check_same_settings(folder, found)

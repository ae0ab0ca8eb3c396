"""A notebook opened from its badge sizes itself to the runtime Colab hands out, and says how long it will take.

Colab is simulated: a fake ``google.colab`` module, the Hugging Face hub reachable (as it is there), and torch's
CUDA answers faked for a GPU runtime (a T4: 15 GB). What is checked is what a learner reads from
``pipeline.setup`` before the first long step, and the settings it returns.
"""

import json
import sys
import types

import pytest
import torch

from ctx_utils import models, pipeline, runtime
from ctx_utils.settings import DEFAULTS, KIT_ROOT, PRESETS

T4_BYTES = 15_828_320_256  # torch.cuda.get_device_properties(0).total_memory on a Colab T4


@pytest.fixture
def colab(monkeypatch, tmp_path):
    """Colab, CPU runtime, notebook 05 open, the hub reachable, an empty results folder; ``gpu(bytes)`` adds a GPU."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("CTX_MODEL", "CTX_PRESET", "CTX_DEVICE", "CTX_N_DOCS", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CTX_RESULTS", str(tmp_path))
    monkeypatch.setenv(runtime.NOTEBOOK_VAR, "05")

    def gpu(total_memory: int, name: str = "Tesla T4") -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda i: types.SimpleNamespace(name=name, total_memory=total_memory))

    return types.SimpleNamespace(gpu=gpu, results=tmp_path)


def plan_lines(capsys) -> list[str]:
    """What setup printed before its settings line (it starts with "Settings")."""
    out = capsys.readouterr().out
    return out[: out.index("Settings")].splitlines()


def measured(key, steps) -> float:
    return sum(runtime.MEASURED[key].seconds[s] for s in steps)


def test_a_cpu_runtime_gets_the_cpu_preset_and_the_measured_time(colab, capsys):
    settings = pipeline.setup(model=None)
    lines = plan_lines(capsys)
    assert settings.model == "gpt2-small" and settings.n_docs == PRESETS["cpu"]["n_docs"]
    assert runtime.size_name(settings) == "cpu"
    assert lines[1].startswith("Runtime: Colab, CPU only (no GPU). Size: the CPU preset (40 documents, 4 neurons per "
                               "layer) on gpt2-small, because this runtime has no GPU")
    key = ("gpt2-small", "cpu")
    here = runtime.duration(measured(key, ["load", "held_out", "scores"]))  # notebook 05's own steps
    before = runtime.duration(measured(key, ["neurons", "prompts", "heads", "explanations"]))
    assert lines[2].startswith(f"Time here: {here} for notebook 05, after {before} for the earlier steps no saved "
                               "result covers (neurons, prompts, heads, explanations)")
    assert (here, before) == ("about 1 min", "about 3 min")
    assert "Measured: the CPU-preset benchmark" in lines[2]
    assert "lost when the runtime ends: USE_DRIVE = True" in lines[3]
    assert lines[4].startswith('Another size: MODEL = "organism" in the parameters cell') and "CTX_PRESET=" in lines[4]


def test_a_t4_gets_the_default_size_and_says_its_time_is_not_measured(colab, capsys):
    colab.gpu(T4_BYTES)
    settings = pipeline.setup(model=None)
    lines = plan_lines(capsys)
    assert settings.n_docs == DEFAULTS.n_docs and runtime.size_name(settings) == "default"
    assert lines[1].startswith("Runtime: Colab with a GPU (Tesla T4, 15 GiB). Size: the default size (600 documents, "
                               "20 neurons per layer) on gpt2-small, because it fits this GPU's memory")
    assert lines[2].startswith("Time here: not measured for gpt2-small at this size")
    assert lines[3].startswith("  For scale, the CPU preset: about 1 min for notebook 05"), "a measured figure, named"


def test_a_gpu_too_small_for_the_default_size_gets_the_cpu_preset(colab, capsys):
    colab.gpu(4 * 2**30, name="Small GPU")
    assert runtime.size_name(pipeline.setup(model=None)) == "cpu"
    assert "because this GPU has under 6 GiB" in capsys.readouterr().out


def test_ctx_device_cpu_on_a_gpu_runtime_sizes_for_the_cpu(colab, monkeypatch):
    colab.gpu(T4_BYTES)
    monkeypatch.setenv("CTX_DEVICE", "cpu")
    assert runtime.size_name(pipeline.setup(model=None)) == "cpu"


def test_an_explicit_model_or_preset_wins(colab, capsys, monkeypatch):
    settings = pipeline.setup(model="organism")
    lines = plan_lines(capsys)
    assert settings.model == "organism" and runtime.size_name(settings) == "default"
    assert "because MODEL='organism' was asked for" in lines[0]
    here = runtime.duration(measured(("organism", "default"), ["load", "held_out", "scores"]))
    assert lines[1].startswith(f"Time here: {here} for notebook 05")
    assert lines[-1].startswith('Another model: MODEL = "gpt2-small"')
    assert runtime.size_name(pipeline.setup(model="gpt2-small")) == "default", "an explicit model keeps its size"
    monkeypatch.setenv("CTX_PRESET", "paper")
    assert pipeline.setup(model=None).n_docs == PRESETS["paper"]["n_docs"]
    assert "because CTX_PRESET='paper' was asked for" in capsys.readouterr().out


def test_a_size_setting_of_ones_own_still_wins_over_the_chosen_preset(colab, capsys):
    settings = pipeline.setup(model=None, n_docs=100)
    assert settings.n_docs == 100 and settings.per_layer == PRESETS["cpu"]["per_layer"]
    assert "Time here: not measured for gpt2-small at this size" in capsys.readouterr().out


def test_outside_colab_nothing_changes_and_nothing_more_is_said(colab, monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "google.colab")
    settings = pipeline.setup(model=None)
    out = capsys.readouterr().out
    assert settings.model == "gpt2-small" and settings.n_docs == DEFAULTS.n_docs
    assert "Runtime:" not in out and "Time here" not in out


def test_steps_saved_by_earlier_notebooks_or_sessions_are_not_counted(colab, capsys):
    """With USE_DRIVE the results folder outlives the runtime: what is saved there with these settings is reused."""
    settings = pipeline.setup(model=None)
    capsys.readouterr()
    for step in ("neurons", "prompts", "heads"):
        pipeline._load_or_compute(settings, step, lambda: {"saved": "by an earlier notebook"}, quiet=True)
    pipeline.setup(model=None)
    [line] = [l for l in plan_lines(capsys) if l.startswith("Time here")]
    before = runtime.duration(runtime.MEASURED["gpt2-small", "cpu"].seconds["explanations"])
    assert f"after {before} for the earlier steps no saved result covers (explanations)," in line
    pipeline._load_or_compute(settings, "explanations", lambda: {}, quiet=True)
    pipeline.setup(model=None)
    [line] = [l for l in plan_lines(capsys) if l.startswith("Time here")]
    assert "earlier steps" not in line and line.startswith("Time here: about 1 min for notebook 05.")


def test_results_in_drive_are_said_to_be_kept(colab, monkeypatch, capsys):
    fitted = runtime.Fit(runtime.Runtime(colab=True), None, "a test")
    monkeypatch.setenv("CTX_RESULTS", "/content/drive/MyDrive/ctx-lookups-kit/results")
    text = runtime.plan(fitted, DEFAULTS.replace(model="organism"), saved=lambda step: True)
    assert "Results: /content/drive/MyDrive/ctx-lookups-kit/results (in your Drive: later notebooks and sessions reuse them)." in text


def test_every_notebook_that_reads_settings_knows_its_steps():
    for path in sorted((KIT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if "pipeline.setup(" in path.read_text():
            assert path.name[:2] in runtime.NOTEBOOK_STEPS, f"{path.name}: add its steps to runtime.NOTEBOOK_STEPS"
    assert set(runtime.NOTEBOOK_STEPS["08"][0]) == set(pipeline.STEPS) == set(runtime.MEASURED["organism", "default"].seconds) - {"load"}


BENCH_ROWS = {  # the CPU-preset benchmark's steps → the kit's step they time
    "load model": "load", "1 activity scan": "neurons", "1 congruence": "neurons", "5 random neurons": "scores", "2 scan": "prompts", "2 truncation": "prompts", "3 attribution": "heads",
    "5 held-out scan": "held_out", "5 held-out attribution": "held_out", "5 random: attribution": "scores",
    "6 ablation": "ablation",
}


def test_the_quoted_times_are_the_measured_ones():
    """Each figure of runtime.MEASURED equals its source: the shipped CPU-preset benchmark at GPT-2-small size (CPU
    seconds) and the organism's step benchmark, both shipped."""
    found: dict[str, float] = {}
    steps = json.loads((KIT_ROOT / "benchmarks" / "course-steps-gpt2-small-cpu.json").read_text())["course"]["steps"]
    for name, step in steps.items():
        [target] = [t for prefix, t in BENCH_ROWS.items() if name.startswith(prefix)]
        found[target] = found.get(target, 0) + step["cpu_seconds"]
    gpt2 = runtime.MEASURED["gpt2-small", "cpu"]
    expected = {s: v for s, v in gpt2.seconds.items() if s != "explanations"}
    assert found.keys() == expected.keys() and all(abs(found[k] - expected[k]) < 1e-6 for k in found), (found, expected)
    shipped = json.loads((KIT_ROOT / "results" / "bench-steps-organism.json").read_text())
    assert runtime.MEASURED["organism", "default"].seconds == shipped["seconds"]


@pytest.mark.parametrize("seconds, said", [(4, "about 10 s"), (33.8, "about 40 s"), (215, "about 4 min"), (611, "about 10 min")])
def test_durations_read_as_a_learner_reads_them(seconds, said):
    assert runtime.duration(seconds) == said

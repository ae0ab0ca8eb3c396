"""Every notebook runs, once per model it must prove, and one pipeline gives the same files however it is run.

On the organism (the `organism` group, one xdist worker):

* ``make run``'s own command executes notebooks 00-08 in order into one results folder (every notebook must
  finish without an error; the notebooks' own cells assert what they show);
* the script ``python -m ctx_utils.pipeline`` writes the same result files, byte for byte;
* each of notebooks 02-06 run alone, on the in-order folder without its own step's file (as in Colab, where each
  notebook is its own runtime and finds only what earlier ones saved), writes that file byte for byte again.
  Every load-or-compute call is the same code (``ctx_utils.pipeline``), so this proves path independence without
  recomputing steps 1-5 five times.

On the GPT-2 and Pythia fixtures (random 3-layer models with byte-level BPE on real text), the step notebooks
01-06 run (and 08, the explorer, on GPT-2), and the result files must show what the steps did: prompts that
pass the 80 % rule and the length cut, pairs in the band, explanations, E in [0, 1], and ablation that changes
the token's probability. A random model's numbers mean nothing: this proves the code paths, not a finding.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctx_utils import fixtures
from ctx_utils.models import ORGANISM_DIR

pytestmark = pytest.mark.slow  # notebook kernels: `make test` only

ROOT = Path(__file__).resolve().parents[1]
STEP_FILES = {"01": ["neurons"], "02": ["prompts"], "03": ["heads"], "04": ["explanations"],
              "05": ["held_out", "scores"], "06": ["ablation"]}
FIXTURE_SETTINGS = {"CTX_N_DOCS": "200", "CTX_MAX_TEST_DOCS": "200", "CTX_ACTIVITY_DOCS": "100", "CTX_PER_LAYER": "4",
                    "CTX_RANDOM_PER_LAYER": "2", "CTX_HEAD_RULE": "top3", "CTX_HEAD_BAND": ">25",
                    "CTX_CORPUS": "data/pile-prompts/train.jsonl", "CTX_TEST_CORPUS": "data/pile-prompts/test.jsonl"}


def _env(results: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTX_") and k != "OPENAI_API_KEY"}
    return env | {"CTX_RESULTS": str(results), "HF_HUB_OFFLINE": "1",
                  "CTX_TORCH_THREADS": os.environ.get("CTX_TORCH_THREADS", "1")} | (extra or {})


def _run(args: list[str], results: Path, extra: dict[str, str] | None = None) -> None:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=_env(results, extra), capture_output=True,
                          text=True, timeout=1800)
    runs = results.glob("*/notebooks/run.json")
    failed = [f"{r['notebook']}: {r['error']}" for p in runs for r in json.loads(p.read_text())["notebooks"] if not r["ok"]]
    assert done.returncode == 0 and not failed, (f"{' '.join(args)} failed:\n" + "\n".join(failed)
                                                 + f"\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))}


# ------------------------------------------------------------------------------------------------ the organism

needs_organism = pytest.mark.skipif(not (ORGANISM_DIR / "config.json").exists(), reason="the organism is not trained")


@pytest.fixture(scope="module")
def in_order(tmp_path_factory) -> Path:
    """Notebooks 00-08 in order on the organism, as `make run` runs them: the results folder."""
    out = tmp_path_factory.mktemp("in-order")
    _run(["ctx_utils.tools.run_notebooks", "--model", "organism"], out, {"CTX_MODEL": "organism"})
    return out / "organism"


@needs_organism
@pytest.mark.xdist_group("organism")
def test_every_notebook_runs_in_order(in_order):
    runs = json.loads((in_order / "notebooks" / "run.json").read_text())["notebooks"]
    assert [r["notebook"][:2] for r in runs] == [f"{i:02d}" for i in range(9)]
    assert sorted(_files(in_order)) == sorted(f"{s}.json" for files in STEP_FILES.values() for s in files)


@needs_organism
@pytest.mark.xdist_group("organism")
def test_the_script_writes_the_notebooks_files(in_order, tmp_path):
    _run(["ctx_utils.pipeline", "--model", "organism"], tmp_path, {"CTX_MODEL": "organism"})
    script, notebooks = _files(tmp_path / "organism"), _files(in_order)
    assert sorted(script) == sorted(notebooks)
    assert not [n for n in script if script[n] != notebooks[n]], "the script and notebooks 01-06 disagree"


@needs_organism
@pytest.mark.xdist_group("organism")
@pytest.mark.parametrize("step", ["02", "03", "04", "05", "06"])
def test_a_notebook_alone_writes_its_step_as_in_order(in_order, tmp_path, step):
    alone = tmp_path / "organism"
    shutil.copytree(in_order, alone, ignore=shutil.ignore_patterns("notebooks"))
    for name in STEP_FILES[step]:
        (alone / f"{name}.json").unlink()
    _run(["ctx_utils.tools.run_notebooks", "--model", "organism", "--only", step], tmp_path, {"CTX_MODEL": "organism"})
    expected, got = _files(in_order), _files(alone)
    assert sorted(got) == sorted(expected)
    assert not [n for n in got if got[n] != expected[n]], f"notebook {step} alone wrote its step differently"


# ------------------------------------------------------------------------------------------------- the fixtures


@pytest.mark.xdist_group("fixtures")
@pytest.mark.parametrize("arch", fixtures.ARCHITECTURES)
def test_the_step_notebooks_run_on_the_architecture(tmp_path, arch):
    folder = fixtures.fixture_dir(arch)
    only = ["01", "02", "03", "04", "05", "06"] + (["08"] if arch == "gpt2" else [])
    _run(["ctx_utils.tools.run_notebooks", "--model", str(folder), "--only", *only], tmp_path, FIXTURE_SETTINGS)
    out = tmp_path / folder.name
    read = lambda step: json.loads((out / f"{step}.json").read_text())  # noqa: E731
    settings = read("heads")["settings"]
    assert settings["corpus"].endswith("data/pile-prompts/train.jsonl")

    prompts = [e for entries in read("prompts")["prompts"].values() for e in entries]
    assert prompts, "step 2 kept no prompt"
    assert all(e["activation"] > settings["ratio"] * e["doc_activation"] for e in prompts), "a prompt breaks the 80 % rule"
    assert all(e["n_tokens"] < settings["max_tokens"] for e in prompts), "a prompt is over the length cut"

    pairs = read("heads")["pairs"]
    assert pairs, "step 3 found no pair: steps 4-6 were skipped, so their code paths were not run"
    assert all(len(p["positive"]) > 0.25 * (len(p["positive"]) + len(p["negative"])) for p in pairs), "a pair below the band"

    explained = read("explanations")["pairs"]
    assert len(explained) == len(pairs) and all(e["text"].strip() for e in explained)
    scored = [s["E"] for s in read("scores")["pairs"] if s["E"] is not None]
    assert scored and all(0.0 <= e <= 1.0 for e in scored)

    effects = read("ablation")["pairs"]
    assert len(effects) == len(pairs)
    moved = [e for e in effects if any(abs(a - b) > 1e-7 for a, b in zip(e["prob_normal"], e["prob_ablated"]))]
    assert moved, "zeroing a head changed no token probability: the ablation hook did nothing"

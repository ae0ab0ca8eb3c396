"""The step notebooks run on the GPT-2 and Pythia architectures: byte-level BPE, real text, no organism.

The fixtures (``ctx_utils.fixtures``) are random 3-layer models of each architecture with a BPE tokenizer trained on
the shipped real-text sample (``data/pile-prompts/``), which also serves as corpus and held-out corpus. Notebooks
01-06 run (and 08, the explorer, on GPT-2) through the same calls as GPT-2 small, with small settings and the
released data's rule (top-3, > 25 %) so that a random model still yields pairs and steps 4-6 really run. The result
files must show what the steps did: prompts that pass the 80 % rule and the length cut, pairs in the band,
explanations, E in [0, 1], and ablation that changes the token's probability. A random model's numbers mean
nothing: this proves the code paths, not a finding.
"""

from __future__ import annotations

import json

import nbformat
import pytest
from notebook_runs import outputs, run

from ctx_utils import fixtures
from ctx_utils.settings import KIT_ROOT

pytestmark = pytest.mark.slow  # notebook kernels: `make test` only

FIXTURE_SETTINGS = {"CTX_N_DOCS": "200", "CTX_MAX_TEST_DOCS": "200", "CTX_ACTIVITY_DOCS": "100", "CTX_PER_LAYER": "4",
                    "CTX_RANDOM_PER_LAYER": "2", "CTX_HEAD_RULE": "top3", "CTX_HEAD_BAND": ">25",
                    "CTX_CORPUS": "data/pile-prompts/train.jsonl", "CTX_TEST_CORPUS": "data/pile-prompts/test.jsonl"}


@pytest.mark.parametrize("arch", fixtures.ARCHITECTURES)
def test_the_step_notebooks_run_on_the_architecture(tmp_path, arch):
    folder = fixtures.fixture_dir(arch)
    only = ["01", "02", "03", "04", "05", "06"] + (["08"] if arch == "gpt2" else [])
    run(["ctx_utils.tools.run_notebooks", "--model", str(folder), "--only", *only], tmp_path, FIXTURE_SETTINGS)
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

    for page in sorted((out / "notebooks").glob("*.ipynb")):  # the model and corpus are folders and files here
        shown = "".join(outputs(cell) for cell in nbformat.read(page, as_version=4).cells if cell.cell_type == "code")
        for path in (str(folder), str(KIT_ROOT)):
            assert path not in shown, f"{page.name} prints this machine's path {path}: print a name (settings.shown)"

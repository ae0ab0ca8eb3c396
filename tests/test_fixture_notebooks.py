"""Every notebook 00-08 runs on the GPT-2 and Pythia architectures: byte-level BPE, real text, no organism.

The fixtures (``ctx_utils.fixtures``) are small random models of each architecture with a BPE tokenizer trained
on the shipped real-text sample (``data/pile-prompts/``), which also serves as corpus and held-out corpus. The
notebooks run through the same calls as GPT-2 small; the settings are small, and step 3 uses the released data's
rule (top-3, > 25 %) so that a random model still yields pairs and steps 4-6 really run. A random model's
numbers mean nothing: this proves the code paths, not any finding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # notebook kernels: `make test` only

from ctx_utils import fixtures

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"CTX_N_DOCS": "200", "CTX_MAX_TEST_DOCS": "200", "CTX_ACTIVITY_DOCS": "100", "CTX_PER_LAYER": "4",
         "CTX_RANDOM_PER_LAYER": "2", "CTX_HEAD_RULE": "top3", "CTX_HEAD_BAND": ">25",
         "CTX_CORPUS": "data/pile-prompts/train.jsonl", "CTX_TEST_CORPUS": "data/pile-prompts/test.jsonl"}


@pytest.mark.parametrize("arch", fixtures.ARCHITECTURES)
def test_every_notebook_runs_on_the_architecture(tmp_path, arch):
    folder = fixtures.fixture_dir(arch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTX_") and k != "OPENAI_API_KEY"}
    env |= SMALL | {"CTX_RESULTS": str(tmp_path), "HF_HUB_OFFLINE": "1", "CTX_TORCH_THREADS": os.environ.get("CTX_TORCH_THREADS", "1")}
    done = subprocess.run([sys.executable, "-m", "ctx_utils.tools.run_notebooks", "--model", str(folder)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1800)
    out = tmp_path / folder.name
    runs = json.loads((out / "notebooks" / "run.json").read_text())["notebooks"]
    failed = [f"{r['notebook']}: {r['error']}" for r in runs if not r["ok"]]
    assert done.returncode == 0 and not failed, "\n".join(failed) + done.stdout[-2000:] + done.stderr[-2000:]
    assert len(runs) == 9
    heads = json.loads((out / "heads.json").read_text())
    assert heads["pairs"], "step 3 found no pair: steps 4-6 were skipped, so their code paths were not run"
    for step in ("explanations", "scores", "ablation"):
        assert json.loads((out / f"{step}.json").read_text())["pairs"], f"{step}.json is empty"
    assert heads["settings"]["corpus"].endswith("data/pile-prompts/train.jsonl")

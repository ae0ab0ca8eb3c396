"""One pipeline, proven end to end on the organism: the same result files however the steps are run.

* the script ``python -m ctx_utils.pipeline`` writes results/<model>/*.json;
* notebooks 01-06 run in order (each loading what the one before saved) write the same files, byte for byte;
* each of notebooks 02-06 run alone on an empty results folder (as in Colab, where every notebook is its own
  runtime) computes its missing inputs and writes the same files, byte for byte. (01 alone is the first
  notebook of the in-order run.)

These run real kernels (a few minutes on 2 cores); they are what `make test` relies on for issue "one pipeline".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # notebook kernels: `make test` only

from ctx_utils.models import ORGANISM_DIR

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["01", "02", "03", "04", "05", "06"]

if not (ORGANISM_DIR / "config.json").exists():
    pytest.skip("the organism is not trained", allow_module_level=True)


def _env(results: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTX_") and k != "OPENAI_API_KEY"}
    return env | {"CTX_RESULTS": str(results), "CTX_MODEL": "organism", "HF_HUB_OFFLINE": "1",
                  "CTX_TORCH_THREADS": os.environ.get("CTX_TORCH_THREADS", "1")}


def _run(args: list[str], results: Path) -> None:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=_env(results), capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "organism").glob("*.json"))}


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("script")
    _run(["ctx_utils.pipeline", "--model", "organism"], out)
    return _files(out)


@pytest.fixture(scope="module")
def in_order(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("in-order")
    _run(["ctx_utils.tools.run_notebooks", "--model", "organism", "--only", *STEPS], out)
    return _files(out)


def test_script_writes_every_step(script):
    assert sorted(script) == sorted(f"{s}.json" for s in ("neurons", "prompts", "heads", "held_out", "explanations",
                                                          "scores", "ablation"))


def test_notebooks_in_order_equal_the_script(script, in_order):
    assert sorted(in_order) == sorted(script)
    differ = [name for name in script if in_order[name] != script[name]]
    assert not differ, f"notebooks 01-06 in order and the script disagree on {differ}"


@pytest.mark.parametrize("step", STEPS[1:])
def test_each_notebook_alone_equals_the_in_order_run(tmp_path, in_order, step):
    _run(["ctx_utils.tools.run_notebooks", "--model", "organism", "--only", step], tmp_path)
    alone = _files(tmp_path)
    assert alone, f"notebook {step} alone wrote no result"
    differ = [name for name in alone if alone[name] != in_order.get(name)]
    assert not differ, f"notebook {step} alone wrote {differ} differently from the in-order run"

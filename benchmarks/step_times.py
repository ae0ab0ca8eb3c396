"""How long each step of the pipeline takes when computed afresh: the figures a Colab notebook quotes.

    HF_HUB_OFFLINE=1 CTX_TORCH_THREADS=1 python benchmarks/step_times.py --model organism [--preset cpu]

Loads the model, then computes steps 1-6 in the pipeline's order (``ctx_utils.pipeline.STEPS``) into an empty
results folder, so each call computes its own step only (the earlier ones are saved by then). Prints the wall
seconds of the load and of each step, and writes them to ``results/bench-steps-<model>[-<preset>].json``.
``ctx_utils/runtime.py`` (``MEASURED``) quotes these figures; rerun this on the runtime you teach on (on a GPU:
``--model gpt2-small``) and put what it prints there.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctx_utils import pipeline  # noqa: E402
from ctx_utils.results import save_json  # noqa: E402
from ctx_utils.settings import KIT_ROOT  # noqa: E402


def step_times(model: str, preset: str) -> dict[str, float]:
    """Wall seconds of loading ``model`` and of each step, computed in order into a fresh results folder."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CTX_RESULTS"] = tmp
        if preset:
            os.environ["CTX_PRESET"] = preset
        settings = pipeline.setup(model=model)
        times = {}
        start = time.perf_counter()
        pipeline.model(settings)
        times["load"] = time.perf_counter() - start
        for step in pipeline.STEPS:
            start = time.perf_counter()
            pipeline.CALLS[step](settings, quiet=True)
            times[step] = time.perf_counter() - start
    return {step: round(seconds, 1) for step, seconds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="organism")
    parser.add_argument("--preset", default="", help="a settings preset (CTX_PRESET), e.g. cpu")
    args = parser.parse_args()
    times = step_times(args.model, args.preset)
    for step, seconds in times.items():
        print(f"  {step:<13} {seconds:7.1f} s")
    import torch

    machine = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    name = "-".join(filter(None, ("bench-steps", Path(args.model).name, args.preset)))
    path = KIT_ROOT / "results" / f"{name}.json"
    save_json(path, {"machine": machine, "model": args.model, "preset": args.preset or "default", "seconds": times})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""ctx_utils: the logic behind the context look-ups teaching kit.

One module per step of Neo, Cohen & Barez (2024), "Interpreting Context Look-ups in Transformers":
models / corpus (inputs) → neurons (step 1) → prompts (step 2) → heads (step 3) → explain (step 4)
→ score (step 5) → ablate (step 6); paper_data reproduces the authors' released numbers.

Importing the package pins torch's CPU threads to ``CTX_TORCH_THREADS`` when that variable is set:
two torch processes fighting over two cores can slow a run tenfold, so tests and CI set it to 1. It does so
without importing torch (commands that need no model stay fast): through ``OMP_NUM_THREADS``, which torch
reads when it starts, or directly when torch is already loaded.
"""

import os
import sys

__version__ = "0.1.0"


def _pin_torch_threads() -> None:
    threads = os.environ.get("CTX_TORCH_THREADS")
    if not threads:
        return
    os.environ["OMP_NUM_THREADS"] = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


_pin_torch_threads()

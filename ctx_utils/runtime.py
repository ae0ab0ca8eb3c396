"""The size a notebook runs at on the runtime it finds, and how long that takes there, said before it starts.

On Colab a learner clicks a badge and gets whatever runtime Colab hands out, usually a CPU. With no ``MODEL`` and
no preset given, :func:`fit` picks the size that fits it:

* a CPU runtime: the CPU preset (``CTX_PRESET=cpu``), sized and measured to run the whole course at GPT-2-small
  size on one CPU core (the figures: docs/performance.md); the organism, faster still, is one setting away
  (``MODEL = "organism"``);
* a GPU runtime with at least :data:`MIN_GPU_GIB` of memory (a T4 has 15 GB): the default size (600 documents,
  20 neurons per layer).

An explicit ``MODEL`` (the parameters cell or ``CTX_MODEL``) or ``CTX_PRESET`` always wins; outside Colab nothing
changes. :meth:`Fit.report` then prints which size, why, how long this notebook and the earlier steps it still
lacks (no saved result with these settings) take there, where results go, and how to choose another size.
Every time quoted comes from :data:`MEASURED`, which names where each figure was measured; a size not measured
there is said to be unmeasured, never guessed.

``pipeline.setup`` calls :func:`fit` and :meth:`Fit.report`; the setup cell (``ctx_utils.tools.colab``) sets
``CTX_NOTEBOOK`` to the notebook's number, so the report knows which steps the notebook computes itself.
torch and the model list are imported when first needed: the setup cell imports this module before it installs.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ctx_utils.settings import DEFAULTS, PRESETS, Settings

#: The least GPU memory for the default size. Measured on a CPU at GPT-2-small size (docs/performance.md, "GPT-2 small on a
#: laptop CPU"): the loaded model ≈ 2 GiB resident, a scan of 4 documents of 1,023 tokens 0.25 GiB more, so the
#: default batches of 16 need about 3 GiB; 6 GiB leaves room for CUDA's own memory and longer batches.
MIN_GPU_GIB = 6.0
NOTEBOOK_VAR = "CTX_NOTEBOOK"  # the open notebook's number, set by its setup cell on Colab


@dataclass(frozen=True)
class Measured:
    """Wall seconds of loading the model (``load``) and of computing each step at one size, and where measured."""

    source: str
    seconds: dict[str, float]


#: Measured times, by (model, size): a size is a preset name, ``default`` when no size setting is changed.
MEASURED: dict[tuple[str, str], Measured] = {
    ("gpt2-small", "cpu"): Measured(
        "the CPU-preset benchmark (benchmarks/bench.py --course --preset cpu: GPT-2-small size, random weights, "
        "CPU seconds of one core; benchmarks/course-steps-gpt2-small-cpu.json, docs/performance.md)",
        {"load": 4.29, "neurons": 25.31 + 16.96, "prompts": 56.99 + 56.59, "heads": 3.76, "held_out": 77.08 + 3.55,
         "explanations": 0, "scores": 0.07 + 4.54, "ablation": 20.86},
    ),
    ("organism", "default"): Measured(
        "benchmarks/step_times.py --model organism (one core of a 2-core machine, wall seconds; "
        "results/bench-steps-organism.json)",
        {"load": 16.6, "neurons": 2.3, "prompts": 7.0, "heads": 2.1, "held_out": 7.4, "explanations": 0.2,
         "scores": 9.8, "ablation": 8.7},
    ),
}

_ALL = ("neurons", "prompts", "heads", "held_out", "explanations", "scores", "ablation")
#: Each notebook: the steps it reads, in the pipeline's order, and those it computes itself when run in order.
NOTEBOOK_STEPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "00": ((), ()),
    "01": (("neurons",), ("neurons",)),
    "02": (("neurons", "prompts"), ("prompts",)),
    "03": (("neurons", "prompts", "heads"), ("heads",)),
    "04": (("neurons", "prompts", "heads", "explanations"), ("explanations",)),
    "05": (("neurons", "prompts", "heads", "held_out", "explanations", "scores"), ("held_out", "scores")),
    "06": (("neurons", "prompts", "heads", "held_out", "ablation"), ("ablation",)),
    "08": (_ALL, ()),
}


@dataclass(frozen=True)
class Runtime:
    """Where the notebook runs: on Colab or not, and its GPU (name and memory) if it has one."""

    colab: bool
    gpu: str = ""
    gpu_gib: float = 0.0

    def describe(self) -> str:
        where = "Colab" if self.colab else "This machine"
        return f"{where} with a GPU ({self.gpu}, {self.gpu_gib:.0f} GiB)" if self.gpu else f"{where}, CPU only (no GPU)"


def detect() -> Runtime:
    """This runtime: Colab when ``google.colab`` is imported (as viz does); a GPU when torch sees one and
    ``CTX_DEVICE`` does not ask for another device."""
    colab = "google.colab" in sys.modules
    device = os.environ.get("CTX_DEVICE", "").strip().lower()
    import torch

    if (device and not device.startswith("cuda")) or not torch.cuda.is_available():
        return Runtime(colab)
    props = torch.cuda.get_device_properties(0)
    return Runtime(colab, props.name, props.total_memory / 2**30)


def size_name(settings: Settings) -> str | None:
    """The preset whose sizes ``settings`` have (``default``: none changed), or None for sizes of one's own."""
    sized = {name for values in PRESETS.values() for name in values}
    for preset, values in PRESETS.items():
        wanted = {name: values.get(name, getattr(DEFAULTS, name)) for name in sized}
        if all(getattr(settings, name) == value for name, value in wanted.items()):
            return preset
    return None


def size_label(name: str | None) -> str:
    """A size's name in words: ``the CPU preset``, ``the default size``."""
    return {"default": "the default size", "cpu": "the CPU preset", None: "a size of your own"}.get(name, f"the {name} preset")


def describe_size(settings: Settings) -> str:
    """The size in words: ``the CPU preset (40 documents, 4 neurons per layer)``."""
    return f"{size_label(size_name(settings))} ({settings.n_docs} documents, {settings.per_layer} neurons per layer)"


def duration(seconds: float) -> str:
    """A time as a learner reads it: ``about 30 s``, ``about 6 min``."""
    if seconds < 60:
        return f"about {max(10, math.ceil(seconds / 10) * 10)} s"
    return f"about {round(seconds / 60)} min"


@dataclass(frozen=True)
class Fit:
    """The size chosen for this runtime: ``preset`` (None: the settings as given) and ``reason``, said in words."""

    runtime: Runtime
    preset: str | None
    reason: str
    notebook: str = ""

    @property
    def environ(self) -> Mapping[str, str] | None:
        """The environment to read the settings from: ``os.environ`` with the chosen preset (None: unchanged)."""
        return {**os.environ, "CTX_PRESET": self.preset} if self.preset else None

    def report(self, settings: Settings, saved: Callable[[str], bool]) -> None:
        """On Colab, print the plan: the size and why, the time here, where results go, another size.

        ``saved(step)``: whether a usable result of ``step`` with these settings is saved already.
        """
        if self.runtime.colab:
            print(plan(self, settings, saved))


def fit(overrides: Mapping[str, Any]) -> Fit:
    """The size for this runtime. ``overrides``: the notebook's parameters (``model=MODEL``…), None meaning unset."""
    environ = os.environ
    notebook = environ.get(NOTEBOOK_VAR, "")
    if "google.colab" not in sys.modules:
        return Fit(Runtime(colab=False), None, "", notebook)
    runtime = detect()
    model = overrides.get("model") or environ.get("CTX_MODEL", "").strip() or "auto"
    preset = environ.get("CTX_PRESET", "").strip()
    if model != "auto" or preset:
        asked = f"MODEL={model!r}" if model != "auto" else f"CTX_PRESET={preset!r}"
        return Fit(runtime, None, f"{asked} was asked for, and what you ask for wins", notebook)
    from ctx_utils.models import ORGANISMS, choose_model

    if choose_model("auto").name in ORGANISMS:
        return Fit(runtime, None, "the organism (the hub is unreachable) runs at its default size in minutes anywhere",
                   notebook)
    if runtime.gpu and runtime.gpu_gib >= MIN_GPU_GIB:
        return Fit(runtime, "default", "it fits this GPU's memory (about 3 GiB at GPT-2-small size)", notebook)
    why = f"this GPU has under {MIN_GPU_GIB:.0f} GiB" if runtime.gpu else "this runtime has no GPU"
    course = duration(sum(MEASURED["gpt2-small", "cpu"].seconds.values()))
    return Fit(runtime, "cpu", f"{why}: the CPU preset is the size measured to compute every step of the course in "
               f"{course} on one CPU core", notebook)


def estimate(key: tuple[str, str], notebook: str, saved: Callable[[str], bool]) -> tuple[float, float, list[str]]:
    """Measured seconds for ``notebook`` at ``key`` (model, size) in :data:`MEASURED`: its own work, and the earlier
    steps not saved yet with their names. An unknown notebook counts as the whole course."""
    measured = MEASURED[key]
    needs, own = NOTEBOOK_STEPS.get(notebook, (_ALL, _ALL))
    missing = [step for step in needs if step not in own and not saved(step)]
    here = measured.seconds["load"] + sum(measured.seconds[s] for s in own)
    return here, sum(measured.seconds[s] for s in missing), missing


def _time_line(key: tuple[str, str], name: str, notebook: str, saved: Callable[[str], bool]) -> str:
    here, before, missing = estimate(key, notebook, saved)
    earlier = (f", after {duration(before)} for the earlier steps no saved result covers ({', '.join(missing)}), "
               "computed first at the same size" if missing else "")
    return f"{duration(here)} for {name}{earlier}. Measured: {MEASURED[key].source}."


def plan(fitted: Fit, settings: Settings, saved: Callable[[str], bool]) -> str:
    """The lines a learner reads before the first long step (see :meth:`Fit.report`)."""
    from ctx_utils.models import ORGANISMS
    from ctx_utils.results import results_root

    notebook = fitted.notebook
    name = f"notebook {notebook}" if notebook in NOTEBOOK_STEPS else "the course (steps 1-6)"
    key = (settings.model, size_name(settings) or "")
    lines = [f"Runtime: {fitted.runtime.describe()}. Size: {describe_size(settings)} on {settings.model}, "
             f"because {fitted.reason}."]
    if key in MEASURED:
        lines.append(f"Time here: {_time_line(key, name, notebook, saved)}")
    else:
        lines.append(f"Time here: not measured for {settings.model} at this size on this runtime yet "
                     "(benchmarks/step_times.py measures it).")
        for other in (k for k in MEASURED if k[0] == settings.model):
            lines.append(f"  For scale, {size_label(other[1])}: {_time_line(other, name, notebook, saved)}")
    if settings.explainer == "llm":
        lines.append("  The LLM's answers (step 4, step 5) take extra time: the figures are the offline explainer's.")
    kept = str(results_root()).startswith("/content/drive/")
    lines.append(f"Results: {results_root()}" + (" (in your Drive: later notebooks and sessions reuse them)." if kept else
                 ", lost when the runtime ends: USE_DRIVE = True in the setup cell keeps them for later notebooks."))
    if settings.model in ORGANISMS:
        paper = estimate(("gpt2-small", "cpu"), notebook, lambda step: False)
        lines.append(f'Another model: MODEL = "gpt2-small" in the parameters cell (the paper\'s; at the CPU preset '
                     f"{duration(sum(paper[:2]))} on one CPU core).")
    else:
        quick = estimate(("organism", "default"), notebook, lambda step: False)
        lines.append(f'Another size: MODEL = "organism" in the parameters cell (the bundled model: '
                     f"{duration(sum(quick[:2]))}), or a preset: `%env CTX_PRESET=default` (or cpu, paper) in a new "
                     "cell, then rerun this one.")
    return "\n".join(lines)

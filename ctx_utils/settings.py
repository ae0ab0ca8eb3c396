"""Every setting of the pipeline, in one place: read once, printed by every notebook, stored in every result.

A :class:`Settings` holds each default the paper's steps use (model, corpora, documents scanned, the 80 %
ratio, the active-head rule and band, the explainer...). :func:`load_settings` reads it from the ``CTX_*``
environment variables, then from a notebook's parameters cell (keyword overrides), validating every value
with the variable's name. Library functions take their defaults from :data:`DEFAULTS`, so no second
default exists anywhere; ``grep`` for a setting's name finds this file and its users.

Each step's result file stores the settings that shaped it (:meth:`Settings.for_step`) and their
fingerprint, so :mod:`ctx_utils.pipeline` can tell a result made with other settings from a usable one.

Which of the paper's two runs the defaults follow (arXiv 2402.15055 and the authors' released code):
the final, February-2024 paper's active-head rule (``2sigma``) and 25–75 % band, with the October-2023
explanation prompt (``oct2023``, the one of the released data) and 20 held-out prompts per pair. The
presets :data:`PRESETS` switch all of them at once (``CTX_PRESET=oct2023`` for the released data's run).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

KIT_ROOT = Path(__file__).resolve().parent.parent  # the kit's checkout (or installed package's parent)
RULES: tuple[str, ...] = ("top3", "2sigma")
BANDS: tuple[str, ...] = ("25-75", ">25")
EXPLAINERS: tuple[str, ...] = ("auto", "offline", "llm")
VARIANTS: tuple[str, ...] = ("oct2023", "feb2024")


class SettingsError(ValueError):
    """A setting has a value the kit cannot use; the message names the variable and the allowed values."""


@dataclass(frozen=True)
class Settings:
    """The settings of one run of the pipeline (``CTX_<NAME>`` in the environment sets ``<name>``)."""

    model: str = "auto"  # "auto": GPT-2 small when the hub is reachable, else the organism; or a name / folder
    corpus: str = "auto"  # training documents: "auto" (the organism's, else pile-10k), a name, or a local file
    test_corpus: str = "auto"  # held-out documents: "auto" (the corpus's test split), or a separate local file
    n_docs: int = 600  # training documents scanned in step 2 (the paper: all 10,000 of pile-10k)
    max_test_docs: int = 600  # held-out documents scanned in steps 5-6 (the paper: 10,000 Pile test documents)
    per_layer: int = 20  # neurons kept per layer in step 1 (the paper: 20; 40 for GPT-2 large)
    activity_docs: int = 200  # documents read to check that a selected neuron fires at all (not in the paper)
    min_share: float = 0.1  # a selected neuron must reach this share of the strongest neuron's maximum
    top_k: int = 30  # top documents kept per neuron by the scan (paper: 30)
    ratio: float = 0.8  # a truncated prompt keeps MORE than this share of its document's maximum (paper: 80 %)
    max_tokens: int = 100  # prompts of this many tokens or more are dropped (paper: 100)
    keep: int = 20  # prompts kept per neuron (paper: 20)
    rule: str = "2sigma"  # active-head rule: "2sigma" (Feb-2024 paper) or "top3" (Oct-2023, the released data)
    band: str = "25-75"  # pairs: heads active on 25-75 % of prompts (paper) or ">25" (Oct-2023 code and data)
    same_layer: bool = False  # also credit heads of the neuron's own block (they act before its MLP too)
    explainer: str = "auto"  # "auto": the LLM when OPENAI_API_KEY is set, else the offline explainer
    llm_model: str = "gpt-4o-mini"  # cheap and current; the paper used gpt-4-0613 (Oct 2023)
    prompt_variant: str = "oct2023"  # the explanation prompt: "oct2023" (released data) or "feb2024"
    max_held_out: int = 20  # held-out prompts classified per pair (paper: 20)
    random_per_layer: int = 10  # random neurons per layer for the baseline of step 5 (capped at the real count)
    random_seed: int = 0
    llm_timeout: float = 60.0  # seconds per LLM request
    llm_retries: int = 4  # extra attempts after a failed LLM request (429, 5xx, timeouts)
    llm_token_budget: int = 300_000  # prompt + completion tokens per run, then the client stops
    batch_size: int = 16  # prompts per forward pass
    device: str = ""  # "" picks cuda, else cpu; or "cpu", "cuda", "mps"

    def __post_init__(self) -> None:
        for name, allowed in (("rule", RULES), ("band", BANDS), ("explainer", EXPLAINERS), ("prompt_variant", VARIANTS)):
            if getattr(self, name) not in allowed:
                raise SettingsError(f"{env_name(name)}={getattr(self, name)!r} is not allowed: choose one of {allowed}.")
        for name in ("n_docs", "max_test_docs", "per_layer", "activity_docs", "top_k", "keep", "max_held_out",
                     "random_per_layer", "llm_token_budget", "batch_size"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{env_name(name)}={getattr(self, name)!r} must be at least 1.")
        if self.max_tokens < 2:
            raise SettingsError(f"{env_name('max_tokens')}={self.max_tokens!r} must be at least 2 (BOS + one token).")
        if not 0 < self.ratio < 1:
            raise SettingsError(f"{env_name('ratio')}={self.ratio!r} must be between 0 and 1 (the paper: 0.8).")
        if not 0 <= self.min_share < 1:
            raise SettingsError(f"{env_name('min_share')}={self.min_share!r} must be in [0, 1).")
        if self.llm_retries < 0:
            raise SettingsError(f"{env_name('llm_retries')}={self.llm_retries!r} must be 0 or more.")
        if self.llm_timeout <= 0:
            raise SettingsError(f"{env_name('llm_timeout')}={self.llm_timeout!r} must be a positive number of seconds.")

    # ------------------------------------------------------------------------------------ per step

    def for_step(self, step: str) -> dict[str, Any]:
        """The settings that shape ``step``'s result (and every earlier step's), as a plain dict."""
        if step not in STEP_FIELDS:
            raise ValueError(f"Unknown step {step!r}: one of {tuple(STEP_FIELDS)}.")
        return {name: getattr(self, name) for name in STEP_FIELDS[step]}

    def fingerprint(self, step: str) -> str:
        """A short hash of :meth:`for_step`: equal fingerprints mean the step would compute the same result."""
        text = json.dumps(self.for_step(step), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (validated like the rest)."""
        return dataclasses.replace(self, **changes)

    def shown(self, name: str) -> Any:
        """Setting ``name`` as a notebook prints it (:func:`shown`)."""
        return shown(getattr(self, name))

    def describe(self, names: tuple[str, ...] | None = None) -> str:
        """One line of the settings ``names`` and every changed one; with no ``names``, the full table (one line each,
        non-defaults marked)."""
        if names is not None:
            shown = dict.fromkeys(("model", *names, *(f.name for f in fields(self) if getattr(self, f.name) != DEFAULTS_BY_NAME[f.name])))
            values = {name: self.shown(name) for name in shown}
            return "Settings: " + ", ".join(f"{k} {v!r}" for k, v in values.items()) + " (all: settings.describe())"
        lines = []
        for f in fields(self):
            value = getattr(self, f.name)
            mark = "" if value == DEFAULTS_BY_NAME[f.name] else "   (changed)"
            lines.append(f"  {f.name:<17} {value!r}{mark}")
        return ("Settings (the parameters cell, or CTX_<NAME> in the environment, changes them; rule and band: "
                "CTX_HEAD_RULE, CTX_HEAD_BAND):\n" + "\n".join(lines))


DEFAULTS = Settings()
def shown(value: Any) -> Any:
    """A setting's value as a notebook prints it: a file or folder by its name, never this machine's path."""
    return os.path.basename(value) if isinstance(value, str) and os.path.isabs(value) else value


DEFAULTS_BY_NAME: dict[str, Any] = {f.name: getattr(DEFAULTS, f.name) for f in fields(Settings)}

_NEURONS = ("model", "corpus", "per_layer", "activity_docs", "min_share")
_PROMPTS = _NEURONS + ("n_docs", "top_k", "ratio", "max_tokens", "keep")
_HEADS = _PROMPTS + ("rule", "band", "same_layer")
_HELD_OUT = _HEADS + ("test_corpus", "max_test_docs")
_EXPLANATIONS = _HEADS + ("explainer", "llm_model", "prompt_variant")
#: Which settings shape each step's result file (those of the steps it builds on included).
STEP_FIELDS: dict[str, tuple[str, ...]] = {
    "neurons": _NEURONS,
    "prompts": _PROMPTS,
    "heads": _HEADS,
    "held_out": _HELD_OUT,
    "explanations": _EXPLANATIONS,
    "scores": tuple(dict.fromkeys(_EXPLANATIONS + _HELD_OUT + ("max_held_out", "random_per_layer", "random_seed"))),
    "ablation": _HELD_OUT,
}

#: Named sets of settings. ``paper``: the final (Feb-2024) run at full size (a GPU: all 10,000 documents; the
#: first 20 prompts per neuron, 10 held-out prompts per pair); ``oct2023``: the run of the authors' released
#: data (top-3 rule, > 25 % band, all surviving prompts of the top 30, 20 held-out prompts per pair); ``cpu``:
#: GPT-2 small on a laptop CPU (few documents and prompts; batches of 2 bound the eager attention of attribution and
#: ablation, which read attention hooks; the scans run the SDPA twin; README).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {"n_docs": 10_000, "max_test_docs": 10_000, "rule": "2sigma", "band": "25-75", "prompt_variant": "feb2024",
              "keep": 20, "max_held_out": 10},
    "cpu": {"n_docs": 40, "max_test_docs": 30, "activity_docs": 20, "per_layer": 4, "random_per_layer": 2,
            "top_k": 10, "keep": 8, "max_held_out": 8, "batch_size": 2},
    "oct2023": {"n_docs": 10_000, "max_test_docs": 10_000, "rule": "top3", "band": ">25", "prompt_variant": "oct2023",
                "keep": 30, "max_held_out": 20},
}


def _var(name: str) -> str:
    return f"CTX_{name.upper()}"


#: Environment variables read under another name than CTX_<FIELD> (kept from earlier releases of the kit).
ENV_NAMES: dict[str, str] = {"rule": "CTX_HEAD_RULE", "band": "CTX_HEAD_BAND"}


def env_name(name: str) -> str:
    """The environment variable that sets field ``name``."""
    return ENV_NAMES.get(name, _var(name))


def _parse(name: str, text: str, kind: type, source: str) -> Any:
    """``text`` as the type of field ``name``; a bad value names ``source`` (the variable) and what is allowed."""
    text = text.strip()
    try:
        if kind is bool:
            if text.lower() in {"1", "true", "yes", "on"}:
                return True
            if text.lower() in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError
        if kind is int:
            return int(text.replace("_", ""))
        if kind is float:
            return float(text)
    except ValueError:
        allowed = {bool: "1 or 0", int: f"a whole number such as {DEFAULTS_BY_NAME[name]}",
                   float: f"a number such as {DEFAULTS_BY_NAME[name]}"}[kind]
        raise SettingsError(f"{source}={text!r} is not valid: set it to {allowed}, or unset it for the default.") from None
    return text


_TYPES = {"model": str, "corpus": str, "test_corpus": str, "rule": str, "band": str, "explainer": str,
          "llm_model": str, "prompt_variant": str, "device": str, "same_layer": bool, "ratio": float,
          "min_share": float, "llm_timeout": float}


def _kind(name: str) -> type:
    return _TYPES.get(name, int)


#: The kit's other variables (not settings of a result): what reads each.
OTHER_VARIABLES: dict[str, str] = {
    "CTX_PRESET": "a named set of settings (PRESETS)",
    "CTX_RESULTS": "the results folder (ctx_utils.results)",
    "CTX_LLM_CACHE": "the LLM answer cache (ctx_utils.llm)",
    "CTX_PAPER_DATA": "the authors' released data (ctx_utils.paper_data)",
    "CTX_TORCH_THREADS": "torch's CPU threads, set when a model loads (ctx_utils.models.pin_torch_threads)",
    "CTX_VIZ_MODE": "how circuitsvis views draw (ctx_utils.viz)",
    "CTX_PAIR": "the pair notebook 04 looks at closely",
    "CTX_NOTEBOOK": "the open notebook's number, set by Colab's setup cell (ctx_utils.runtime)",
    "CTX_BROWSER": "the browser of tests/test_html_export.py",
    "CTX_EXPORT_DIR": "an export tests/test_html_export.py checks",
}
#: Variables whose value is a path: read by :func:`env_path` (``~`` expanded, relative to where it was typed).
PATH_VARIABLES: tuple[str, ...] = ("CTX_RESULTS", "CTX_LLM_CACHE", "CTX_PAPER_DATA")
#: Variables that may name a local file or folder instead of a kit name (``CTX_MODEL=./my-model``).
MAYBE_PATH_VARIABLES: tuple[str, ...] = ("CTX_MODEL", "CTX_CORPUS", "CTX_TEST_CORPUS")


def known_variables() -> list[str]:
    """Every ``CTX_*`` variable the kit reads: one per setting, then :data:`OTHER_VARIABLES`."""
    return [env_name(f.name) for f in fields(Settings)] + list(OTHER_VARIABLES)


def _meant(variable: str) -> str | None:
    """The real variable a misspelt ``variable`` most likely means (``CTX_RULE`` → ``CTX_HEAD_RULE``), if any."""
    by_field = {_var(name): real for name, real in ENV_NAMES.items()}  # CTX_<FIELD> of a field read under another name
    if variable in by_field:
        return by_field[variable]
    close = difflib.get_close_matches(variable, known_variables(), n=1, cutoff=0.75)
    return close[0] if close else None


def check_variables(environ: Mapping[str, str] | None = None) -> None:
    """Name every unknown ``CTX_*`` variable with the closest real one, instead of ignoring it in silence.

    An unknown variable close to a setting that shapes results (``CTX_RULE``, ``CTX_NDOCS``), to ``CTX_PRESET``
    or to ``CTX_RESULTS`` raises :class:`SettingsError`: the run would otherwise compute, and save, results
    with a setting the user did not ask for. Any other unknown ``CTX_*`` variable gets a warning.
    """
    environ = os.environ if environ is None else environ
    shaping = {env_name(name) for names in STEP_FIELDS.values() for name in names} | {"CTX_PRESET", "CTX_RESULTS"}
    known = set(known_variables())
    for variable in sorted(v for v in environ if v.startswith("CTX_") and v not in known):
        meant = _meant(variable)
        if meant in shaping:
            raise SettingsError(
                f"{variable} is not a variable the kit reads: did you mean {meant}? As it is, the run would ignore it "
                f"and compute results with the default. Rename it to {meant} (or unset {variable})."
            )
        hint = f"did you mean {meant}?" if meant else f"the variables are {', '.join(sorted(known))}."
        warnings.warn(f"{variable} is not a variable the kit reads: it is ignored ({hint})", stacklevel=4)


def _typed_from() -> Path:
    """Where a relative path in a variable was typed: the current folder, except in a notebook kernel, which
    runs in the kit's ``notebooks/`` folder while ``make run`` and ``jupyter lab`` are typed in the kit's root."""
    here = Path.cwd()
    return KIT_ROOT if here.resolve() == KIT_ROOT / "notebooks" else here


def as_typed_path(value: str) -> Path:
    """``value`` as an absolute path: ``~`` expanded (also when quoted, as ``'~/x'``), relative to :func:`_typed_from`."""
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else (_typed_from() / path).resolve()


def env_path(variable: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The path in ``variable`` (one of :data:`PATH_VARIABLES`) via :func:`as_typed_path`; None when unset or empty."""
    environ = os.environ if environ is None else environ
    value = environ.get(variable, "").strip()
    return as_typed_path(value) if value else None


def absolute_path_variables(environ: dict[str, str] | None = None) -> None:
    """Rewrite the path variables in ``environ`` (the process's by default) as absolute paths, once, before
    notebook kernels start in another folder: every kernel then reads the same folders as the process. A
    :data:`MAYBE_PATH_VARIABLES` value is rewritten only when it names an existing file or folder."""
    environ = os.environ if environ is None else environ
    for variable in PATH_VARIABLES + MAYBE_PATH_VARIABLES:
        value = environ.get(variable, "").strip()
        looks_like_path = "/" in value or value.startswith(("~", ".")) or bool(Path(value).suffix)  # not "organism"
        if value and (variable in PATH_VARIABLES or (looks_like_path and as_typed_path(value).exists())):
            environ[variable] = str(as_typed_path(value))


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given in the environment (``CTX_PRESET`` first, then each ``CTX_<NAME>``), validated.

    Unknown ``CTX_*`` variables are named first (:func:`check_variables`).
    """
    environ = os.environ if environ is None else environ
    check_variables(environ)
    values: dict[str, Any] = {}
    preset = environ.get("CTX_PRESET", "").strip()
    if preset:
        if preset not in PRESETS:
            raise SettingsError(f"CTX_PRESET={preset!r} is not a preset: choose one of {tuple(PRESETS)}.")
        values.update(PRESETS[preset])
    for f in fields(Settings):
        text = environ.get(env_name(f.name))
        if text is not None and text.strip() != "":
            values[f.name] = _parse(f.name, text, _kind(f.name), env_name(f.name))
    return values


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """The run's settings: defaults, then the environment, then ``overrides`` (a parameters cell's values).

    An override of ``None`` means "not set here" (a parameters cell's ``RULE = None`` leaves the default or
    ``CTX_HEAD_RULE``). Unknown names and bad values raise :class:`SettingsError` naming the fix.
    """
    unknown = sorted(set(overrides) - set(DEFAULTS_BY_NAME))
    if unknown:
        raise SettingsError(f"Unknown settings {unknown}: the settings are {sorted(DEFAULTS_BY_NAME)}.")
    values = from_env(environ)
    for name, value in overrides.items():
        if value is not None:
            values[name] = _parse(name, str(value), _kind(name), name) if isinstance(value, str) and _kind(name) is not str else value
    return Settings(**values)

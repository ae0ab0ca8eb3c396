"""The paper's pipeline, one load-or-compute call per step, shared by every notebook and the script.

    settings → model, corpus → neurons → prompts → heads → held_out → explanations → scores
                                                          └──────────────────────→ ablation

Each call (:func:`neurons`, :func:`prompts`, :func:`heads`, :func:`held_out`, :func:`explanations`,
:func:`scores`, :func:`ablation`) returns the step's result as a dict: the saved file under
``results/<model>/<step>.json`` when it exists, parses, has the current schema and was made with the same
settings (their fingerprint, :meth:`ctx_utils.settings.Settings.fingerprint`); otherwise it computes the
step with the one ``compute_<step>`` function below, saves it atomically, and prints one line saying which
happened and why. A corrupt or mismatching file is named, recomputed and rewritten, never used.

Because a notebook's own step and the recomputation of a missing input run the same function on the same
settings, the result files are byte for byte the same whether the notebooks run in order, one alone (in
Colab each is its own runtime), or as the script

    python -m ctx_utils.pipeline --model organism        # steps 1-6 headless, the same results/<model>/*.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ctx_utils import runtime
from ctx_utils.ablate import ablation_effects, activity_matrix, ks_test
from ctx_utils.explain import explain_pairs, explainer_name, llm_configured
from ctx_utils.heads import attribute_neurons, heads_summary, pairs_from_attributions
from ctx_utils.held_out import held_out_set
from ctx_utils.llm import LLMClient
from ctx_utils.neurons import default_layers, max_activations, min_activity, random_neurons, rejected_tokens, select_next_token_neurons
from ctx_utils.prompts import find_activating_prompts, scan_top_documents
from ctx_utils.score import score_explanations, summarize_scores
from ctx_utils.corpus import corpus_for, is_named_corpus, load_corpus
from ctx_utils.models import choose_model, load_model
from ctx_utils.results import SCHEMA_VERSION, ResultFileError, json_number, load_json, results_dir, save_json
from ctx_utils.session import SESSION
from ctx_utils.settings import KIT_ROOT, Settings, SettingsError, load_settings
from ctx_utils.tokens import neuron_label

if TYPE_CHECKING:  # the model type, for readers and type checkers; not imported at run time
    from transformer_lens.model_bridge import TransformerBridge

STEPS: tuple[str, ...] = ("neurons", "prompts", "heads", "held_out", "explanations", "scores", "ablation")


# ------------------------------------------------------------------------------------------- settings


def resolve(settings: Settings, quiet: bool = False) -> Settings:
    """``settings`` with every ``auto`` decided: the model (hub reachable?), the corpora and the explainer.

    Fingerprints are taken of resolved settings, so ``auto`` and the name it chose make the same results.
    """
    model = _local_path(settings.model)
    if model == "auto" or not Path(model).expanduser().is_dir():
        choice = choose_model(model)
        model = choice.name
        if not quiet and settings.model == "auto":
            print(f"Model: {choice.name}. {choice.reason}")
    corpus = corpus_for(model, _local_path(settings.corpus))
    test_corpus = corpus if settings.test_corpus == "auto" else _local_path(settings.test_corpus)
    explainer = settings.explainer
    if explainer == "auto":
        explainer = "llm" if llm_configured() else "offline"
    return settings.replace(model=model, corpus=corpus, test_corpus=test_corpus, explainer=explainer)


def _local_path(value: str) -> str:
    """A relative path that exists from here, or else from the kit's root (notebooks run in ``notebooks/``), made
    absolute so every notebook and the script read the same file; any other value unchanged."""
    value = os.path.expanduser(value)  # '~/corpus.txt', quoted so the shell left it alone
    for base in (Path.cwd(), KIT_ROOT):
        path = base / value
        if value and (Path(value).suffix or "/" in value) and path.exists():
            return str(path.resolve())
    return value


def setup(**overrides: Any) -> Settings:
    """A notebook's first call: settings from the environment and the parameters cell, resolved and printed in one
    line (the model, the notebook's own settings ``overrides`` and any changed one).

    On Colab, with no MODEL or preset given, the size fits the runtime, and its plan is printed (:mod:`ctx_utils.runtime`).
    """
    fit = runtime.fit(overrides)
    settings = resolve(load_settings(fit.environ, **overrides))
    fit.report(settings, saved=lambda step: _usable(result_path(settings, step), settings, step)[0] is not None)
    print(settings.describe(tuple(overrides)))
    return settings


def model(settings: Settings):
    """The settings' model, loaded once per process (a notebook and the pipeline calls share it: ``SESSION.models``)."""
    key = (settings.model, settings.device)
    if key not in SESSION.models:
        SESSION.models[key] = load_model(settings.model, device=settings.device or None)
    return SESSION.models[key]


def documents(settings: Settings, held_out: bool = False, max_docs: int | None = None) -> list[str]:
    """The training documents (the first ``n_docs``) or the held-out ones (the first ``max_test_docs``).

    A local training file has no held-out split: scoring on the explainer's own documents would be no test,
    so held-out documents then need ``CTX_TEST_CORPUS`` (a separate file).
    """
    if not held_out:
        return load_corpus(settings.corpus, "train", max_docs=max_docs or settings.n_docs)
    if not is_named_corpus(settings.test_corpus) and settings.test_corpus == settings.corpus:
        raise SettingsError(
            f"The corpus {settings.corpus!r} is a local file with no held-out split, and steps 5-6 must score on "
            "documents the explainer never saw: set CTX_TEST_CORPUS (or test_corpus=...) to a separate file of "
            "held-out documents."
        )
    return load_corpus(settings.test_corpus, "test", max_docs=max_docs or settings.max_test_docs)


# -------------------------------------------------------------------------------------- load or compute


def result_path(settings: Settings, step: str) -> Path:
    return results_dir(settings.model) / f"{step}.json"


def _usable(path: Path, settings: Settings, step: str) -> tuple[dict | None, str]:
    """The saved result if it can be used, else None; and the reason, for the one line the caller prints."""
    if not path.exists():
        return None, f"no {path.name} yet"
    try:
        data = load_json(path)
    except ResultFileError as err:
        return None, f"{path} cannot be used ({err})"
    missing = [key for key in REQUIRED_FIELDS.get(step, ()) if key not in data]
    if missing:
        return None, f"{path.name} was made by an older kit (no {', '.join(missing)})"
    if data.get("fingerprint") != settings.fingerprint(step):
        saved = data.get("settings") or {}
        changed = sorted(k for k, v in settings.for_step(step).items() if saved.get(k, object()) != v)
        return None, f"{path.name} was made with other settings ({', '.join(changed) or 'unknown'})"
    return data, "same settings"


#: Fields a step's file must hold to be used: a file made before the field existed is recomputed, not trusted.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {"held_out": ("removed",)}


def _load_or_compute(settings: Settings, step: str, compute: Callable[[], dict], quiet: bool = False) -> dict:
    """The saved result of ``step`` if usable (:func:`_usable`), else ``compute()``'s, saved; one line says which.

    A step computing a missing input calls this again inside ``compute()``: ``SESSION.depth`` counts the calls
    running, so an input's lines are indented under the step that needed it and only the outer call says "loaded".
    """
    path = result_path(settings, step)
    data, reason = _usable(path, settings, step)
    indent = "  " * SESSION.depth
    if data is not None:
        if not quiet and SESSION.depth == 0:
            print(f"{step}: loaded {path.name} ({reason}).")
        return data
    if not quiet:
        print(f"{indent}{step}: computing ({reason}) …", flush=True)
    SESSION.depth += 1
    try:
        payload = compute()
    finally:
        SESSION.depth -= 1
    data = {"schema_version": SCHEMA_VERSION, "step": step, "model": settings.model, "settings": settings.for_step(step),
            "fingerprint": settings.fingerprint(step), **payload}
    save_json(path, data)
    if not quiet:
        print(f"{indent}{step}: computed and saved {path.name}.")
    return json.loads(json.dumps(data))  # exactly what a later load returns (tuples become lists, etc.)


# ---------------------------------------------------------------------------------------------- steps


def activity(settings: Settings, model: TransformerBridge) -> dict:
    """Step 1's activity check: every late-layer neuron's largest activation on the first ``activity_docs``."""
    docs = documents(settings, max_docs=settings.activity_docs)
    return max_activations(model, docs, default_layers(model), batch_size=settings.batch_size)


def compute_neurons(settings: Settings, model: TransformerBridge, max_acts: dict | None = None) -> dict:
    """Step 1: next-token neurons by congruence, with the activity check (neurons that never fire are skipped).

    ``max_acts``: an :func:`activity` result already computed (notebook 01 shows it), else computed here.
    """
    layers = default_layers(model)
    max_acts = activity(settings, model) if max_acts is None else max_acts
    threshold = min_activity({layer: max_acts[layer] for layer in layers}, settings.min_share)
    reject = list(rejected_tokens(settings.model))
    selected = select_next_token_neurons(model, layers, settings.per_layer, reject, activity=max_acts, min_activity=threshold)
    return {"layers": layers, "reject": reject, "min_activity": threshold,
            "neurons": [{k: n[k] for k in ("layer", "neuron", "token", "token_id", "congruence", "rank")} for n in selected]}


# The random-neuron baseline of step 5 runs steps 2-3 on random neurons. Its candidates (the settings'
# ``random_per_layer`` per layer, :func:`random_candidates`) ride in the forward passes of the real neurons'
# scans and truncations (steps 2 and 5's held-out set): one pass over the corpus reads both, and each neuron's
# top documents and cuts do not depend on which other neurons share the pass. Their prompts are saved beside
# the real ones (``prompts.json`` and ``held_out.json``, key ``"random"``) and the baseline reads them there.


class TopDocuments(dict):
    """:func:`scan`'s result: ``{"<layer>.<neuron>": top documents}`` of the neurons asked for, and in
    ``random`` those of the random-baseline candidates read in the same passes (or None)."""

    random: dict[str, list[dict]] | None = None


def random_candidates(settings: Settings, model: TransformerBridge) -> list[dict]:
    """The neurons the random baseline draws from: ``random_per_layer`` random neurons of each default layer."""
    return random_neurons(model, default_layers(model), settings.random_per_layer, seed=settings.random_seed)


def scan(settings: Settings, model: TransformerBridge, neuron_list: list[dict], docs: list[str] | None = None
         ) -> TopDocuments:
    """Step 2a: each neuron's top documents (notebook 02 shows it; :func:`compute_prompts` reuses it), the
    random candidates' (:attr:`TopDocuments.random`) read in the same forward passes."""
    docs = documents(settings) if docs is None else docs
    riders = random_candidates(settings, model)
    both = scan_top_documents(model, docs, [*neuron_list, *riders], k=settings.top_k, batch_size=settings.batch_size)
    top = TopDocuments((label, both[label]) for label in _labels(neuron_list))
    top.random = {label: both[label] for label in _labels(riders)}
    return top


def _labels(neuron_list: list[dict]) -> list[str]:
    return [neuron_label(n["layer"], n["neuron"]) for n in neuron_list]


def _find_prompts(settings: Settings, model: TransformerBridge, docs: list[str], neuron_list: list[dict],
                  top: dict | None = None, progress: bool = False) -> dict[str, list[dict]]:
    """Steps 2b-c on ``docs`` with the settings' sizes (``top``: a finished scan, else scanned here)."""
    return find_activating_prompts(model, docs, neuron_list, k=settings.top_k, max_tokens=settings.max_tokens,
                                   keep=settings.keep, ratio=settings.ratio, top=top, batch_size=settings.batch_size,
                                   progress=progress)


def _with_random(settings: Settings, model: TransformerBridge, docs: list[str], neuron_list: list[dict],
                 top: dict | None = None) -> tuple[dict[str, list[dict]], dict]:
    """Prompts of ``neuron_list`` and of the random candidates, truncated together: ``(prompts, random)`` where
    ``random`` is what ``prompts.json`` and ``held_out.json`` save under ``"random"``. ``top``: a :func:`scan`
    result (its random rows are used when present)."""
    riders = random_candidates(settings, model)
    both_top = None
    if top is not None:
        riders_top = getattr(top, "random", None)
        if riders_top is None:  # a scan without the riders: scan them alone
            riders_top = scan_top_documents(model, docs, riders, k=settings.top_k, batch_size=settings.batch_size,
                                            progress=False)
        both_top = {**top, **riders_top}
    found = _find_prompts(settings, model, docs, [*neuron_list, *riders], both_top, progress=top is not None)
    random = {"random_per_layer": settings.random_per_layer, "random_seed": settings.random_seed,
              "neurons": [{k: n[k] for k in ("layer", "neuron", "token")} for n in riders],
              "prompts": {label: found[label] for label in _labels(riders)}}
    return {label: found[label] for label in _labels(neuron_list)}, random


def compute_prompts(settings: Settings, model: TransformerBridge, neuron_list: list[dict], top: dict | None = None) -> dict:
    """Step 2: scan, truncate (> ``ratio`` of the document maximum), drop ≥ ``max_tokens``, keep ``keep``; the
    random-baseline candidates' prompts in the same passes (``"random"``)."""
    docs = documents(settings)
    top = scan(settings, model, neuron_list, docs) if top is None else top
    found, random = _with_random(settings, model, docs, neuron_list, top)
    return {"n_docs": len(docs), "tokenisation": "BOS + tokens of the prompt text (newlines replaced by spaces)",
            "prompts": found, "random": random}


def compute_heads(settings: Settings, model: TransformerBridge, neuron_list: list[dict], prompt_sets: dict,
                  attributions: dict | None = None) -> dict:
    """Step 3: every candidate head's attribution to each neuron, the active heads, the pairs in the band.

    ``attributions``: ``heads.attribute_neurons``'s result with these settings, already computed (notebook 03).
    """
    if attributions is None:
        attributions = attribute_neurons(model, neuron_list, prompt_sets, settings.same_layer, settings.batch_size)
    pairs = pairs_from_attributions(model, neuron_list, attributions, settings.rule, settings.band)
    return {"pairs": pairs, "neurons": heads_summary(model, attributions, settings.rule)}


def compute_held_out(settings: Settings, model: TransformerBridge, neuron_list: list[dict],
                     training: dict[str, list[dict]]) -> dict:
    """Steps 2-3 again on the held-out documents, for the neurons with pairs (:func:`ctx_utils.held_out.held_out_set`).

    ``training``: the neurons' prompts of step 2 (prompts.json); a held-out prompt equal to one of its neuron's
    is removed and counted. No neuron with a pair (step 3 found none) gives an empty set, not an error.
    """
    docs = documents(settings, held_out=True)
    found, random = _with_random(settings, model, docs, neuron_list)
    return {"n_docs": len(docs), **_held_out_heads(settings, model, neuron_list, found, training), "random": random}


def _held_out_heads(settings: Settings, model: TransformerBridge, neuron_list: list[dict], found: dict[str, list[dict]],
                    training: dict[str, list[dict]]) -> dict:
    """`ctx_utils.held_out.held_out_set` from held-out prompts already found: training repeats removed, then the
    heads active on each."""
    if not neuron_list:
        return {"prompts": {}, "active": {}, "removed": {}}
    return held_out_set(model, neuron_list, found, training, rule=settings.rule, include_same_layer=settings.same_layer,
                        batch_size=settings.batch_size)


def connect(settings: Settings):
    """The LLM client the settings ask for, or None for the offline explainer."""
    if settings.explainer == "offline":
        return None
    return LLMClient(model=settings.llm_model, timeout=settings.llm_timeout, max_retries=settings.llm_retries,
                     token_budget=settings.llm_token_budget)


def compute_explanations(settings: Settings, pairs: list[dict], prompt_sets: dict, llm=None) -> dict:
    """Step 4: explain every pair from its positive and negative prompts."""
    explained = explain_pairs(pairs, prompt_sets, llm=llm, variant=settings.prompt_variant)
    return {"explainer": explainer_name(llm), "variant": settings.prompt_variant, "pairs": explained}


def _summary(scored: list[dict]) -> dict | None:
    """The paper's summary of the pairs' E, and ``n_one_class``: how many of them scored one class only."""
    kept = [s for s in scored if s["E"] is not None]
    if not kept:
        return None
    summary = {k: json_number(v) for k, v in summarize_scores([s["E"] for s in kept]).items()}
    return {**summary, "n_one_class": sum(1 for s in kept if s.get("one_class"))}


def score_held_out(settings: Settings, explained: list[dict], held: dict, llm=None) -> list[dict]:
    """Each explained pair's E on its neuron's held-out prompts (the ground truth: ``held["active"]``)."""
    prompts_by_neuron = {label: [p["text"] for p in entries] for label, entries in held["prompts"].items()}
    return score_explanations(explained, prompts_by_neuron, held["active"], llm=llm, max_prompts=settings.max_held_out)


def compute_scores(settings: Settings, model: TransformerBridge, explained: list[dict], held: dict, llm=None,
                   saved_random: tuple[dict, dict] | None = None) -> dict:
    """Step 5: E per pair on held-out prompts, its summary, and the random-neuron baseline
    (``saved_random``: see :func:`random_baseline`)."""
    scored = score_held_out(settings, explained, held, llm)
    return {"pairs": scored, "summary": _summary(scored),
            "n_unparsed": sum(s["n_unparsed"] for s in scored),
            "random_baseline": random_baseline(settings, model, explained, llm, saved_random)}


def random_baseline(settings: Settings, model: TransformerBridge, explained: list[dict], llm=None,
                    saved: tuple[dict, dict] | None = None) -> dict:
    """The paper's baseline: steps 2-5 on random neurons of the same layers (how good is E by chance?).

    As many random neurons per layer as the layer has explained neurons, at most ``random_per_layer``: drawn
    (seeded) from the candidates of :func:`random_candidates`, whose training and held-out prompts steps 2 and
    5 found in their own forward passes. ``saved``: those two ``"random"`` records (``prompts.json``,
    ``held_out.json``); where missing or made for other candidates, the prompts are found here.
    """
    explained_neurons = {(r["layer"], r["neuron"]) for r in explained}
    layers = sorted({layer for layer, _ in explained_neurons}) or default_layers(model)
    real = max(sum(1 for layer, _ in explained_neurons if layer == l) for l in layers)
    per_layer = min(settings.random_per_layer, max(real, 1))
    train, held_out_random = saved if saved and all(_same_candidates(settings, r) for r in saved) else (None, None)
    candidates = random_candidates(settings, model) if train is None else train["neurons"]
    random_set = _draw(candidates, layers, per_layer, settings.random_seed)
    random_prompts = (_find_prompts(settings, model, documents(settings), random_set) if train is None
                      else {label: train["prompts"][label] for label in _labels(random_set)})
    random_pairs = compute_heads(settings, model, random_set, random_prompts)["pairs"]
    scored = []
    if random_pairs:
        random_explained = compute_explanations(settings, random_pairs, random_prompts, llm)["pairs"]
        with_pairs = pair_neurons(random_set, random_pairs)
        docs = documents(settings, held_out=True)
        found = (_find_prompts(settings, model, docs, with_pairs) if held_out_random is None
                 else {label: held_out_random["prompts"][label] for label in _labels(with_pairs)})
        held = _held_out_heads(settings, model, with_pairs, found, random_prompts)
        scored = score_held_out(settings, random_explained, held, llm)
    return {"neurons": [{k: n[k] for k in ("layer", "neuron", "token")} for n in random_set],
            "n_pairs": len(random_pairs), "held_out_removed": sum(held["removed"].values()) if random_pairs else 0,
            "pairs": [{k: s[k] for k in ("layer", "neuron", "head", "E", "one_class")} for s in scored],
            "summary": _summary(scored)}


def _same_candidates(settings: Settings, random: dict | None) -> bool:
    """Whether a saved ``"random"`` record was made for the candidates these settings draw."""
    return bool(random) and (random.get("random_per_layer"), random.get("random_seed")) == (
        settings.random_per_layer, settings.random_seed)


def _draw(candidates: list[dict], layers: list[int], per_layer: int, seed: int) -> list[dict]:
    """``per_layer`` of the candidates of each of ``layers``, drawn uniformly (seeded), in the candidates' order.

    A uniform draw from a uniform draw is uniform: the baseline's neurons are random neurons of those layers."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for layer in layers:
        mine = [n for n in candidates if n["layer"] == layer]
        keep = set(torch.randperm(len(mine), generator=generator)[:per_layer].tolist())
        chosen.extend(n for i, n in enumerate(mine) if i in keep)
    return chosen


def compute_ablation(settings: Settings, model: TransformerBridge, pairs: list[dict], held: dict) -> dict:
    """Step 6: zero each pair's head and measure the drop in its token's probability, active vs inactive.

    The KS tests are None when a group has no value (no pairs, or no held-out prompt on one side).
    """
    effects = ablation_effects(model, pairs, held["prompts"], activity_matrix(model, held, settings.same_layer),
                               batch_size=settings.batch_size)
    return {"pairs": effects, "ks": _ks(effects, "mean_decrease"), "ks_neuron_activation": _ks(effects, "mean_act_decrease")}


def _ks(effects: list[dict], field: str) -> dict | None:
    active = [e[f"{field}_active"] for e in effects if e.get(f"{field}_active") is not None]
    inactive = [e[f"{field}_inactive"] for e in effects if e.get(f"{field}_inactive") is not None]
    return ks_test(active, inactive) if active and inactive else None


# ------------------------------------------------------------------------------- the calls notebooks make


def neurons(settings: Settings, max_acts: dict | None = None, quiet: bool = False) -> dict:
    """neurons.json: step 1's next-token neurons. ``max_acts``: an :func:`activity` result already computed here."""
    return _load_or_compute(settings, "neurons", lambda: compute_neurons(settings, model(settings), max_acts), quiet)


def prompts(settings: Settings, top: dict | None = None, quiet: bool = False) -> dict:
    """prompts.json: step 2's prompts per neuron. ``top``: a :func:`scan` result already computed here."""
    def compute() -> dict:
        return compute_prompts(settings, model(settings), neurons(settings, quiet=quiet)["neurons"], top)
    return _load_or_compute(settings, "prompts", compute, quiet)


def heads(settings: Settings, attributions: dict | None = None, quiet: bool = False) -> dict:
    """heads.json: step 3's (neuron, head) pairs, with their positive and negative prompts.

    ``attributions``: the step's head attributions already computed here with these settings (notebook 03).
    """
    def compute() -> dict:
        return compute_heads(settings, model(settings), neurons(settings, quiet=quiet)["neurons"],
                             prompts(settings, quiet=quiet)["prompts"], attributions)
    return _load_or_compute(settings, "heads", compute, quiet)


def pair_neurons(neuron_list: list[dict], pairs: list[dict]) -> list[dict]:
    """The neurons of ``neuron_list`` that have at least one pair, in their order."""
    keys = {(p["layer"], p["neuron"]) for p in pairs}
    return [n for n in neuron_list if (n["layer"], n["neuron"]) in keys]


def featured_neuron(settings: Settings, neuron_list: list[dict], prompt_sets: dict[str, list[dict]]) -> dict:
    """The neuron a notebook shows as its example: one that kept prompts, a planted token's on an organism.

    The first neuron of the list need not have kept any prompt (on GPT-2-small-sized models some never fire
    on the scanned documents, or only inside cuts of 100 tokens or more), so a notebook never features
    ``neuron_list[0]`` blindly.
    """
    from ctx_utils.organism import answer_key

    with_prompts = [n for n in neuron_list if prompt_sets.get(neuron_label(n["layer"], n["neuron"]))]
    if not with_prompts:
        raise ValueError(f"none of the {len(neuron_list)} neurons kept a prompt: scan more documents "
                         f"(N_DOCS, now {settings.n_docs}) or loosen RATIO (now {settings.ratio})")
    truth = answer_key.load_answer_key(settings.model)  # None: no answer key (GPT-2, Pythia)
    planted = answer_key.learned_tokens(truth) if truth else set()
    return next((n for n in with_prompts if n["token"] in planted), with_prompts[0])


def held_out(settings: Settings, quiet: bool = False) -> dict:
    """held_out.json: held-out prompts and active heads for the neurons with pairs (steps 5 and 6 read it)."""
    def compute() -> dict:
        wanted = pair_neurons(neurons(settings, quiet=quiet)["neurons"], heads(settings, quiet=quiet)["pairs"])
        return compute_held_out(settings, model(settings), wanted, prompts(settings, quiet=quiet)["prompts"])
    return _load_or_compute(settings, "held_out", compute, quiet)


def explanations(settings: Settings, llm=None, quiet: bool = False) -> dict:
    """explanations.json: step 4's explanation of every pair. ``llm``: a client already connected, else :func:`connect`."""
    def compute() -> dict:
        client = llm if llm is not None else connect(settings)
        return compute_explanations(settings, heads(settings, quiet=quiet)["pairs"], prompts(settings, quiet=quiet)["prompts"], client)
    return _load_or_compute(settings, "explanations", compute, quiet)


def scores(settings: Settings, llm=None, quiet: bool = False) -> dict:
    """scores.json: step 5's E per pair, its summary, and the random-neuron baseline."""
    def compute() -> dict:
        client = llm if llm is not None else connect(settings)
        explained = explanations(settings, client, quiet)["pairs"]
        held = held_out(settings, quiet=quiet)
        saved = (prompts(settings, quiet=quiet).get("random"), held.get("random"))
        return compute_scores(settings, model(settings), explained, held, client, saved)
    return _load_or_compute(settings, "scores", compute, quiet)


def ablation(settings: Settings, quiet: bool = False) -> dict:
    """ablation.json: step 6's probability drops per pair and the KS test of active vs inactive."""
    def compute() -> dict:
        return compute_ablation(settings, model(settings), heads(settings, quiet=quiet)["pairs"], held_out(settings, quiet=quiet))
    return _load_or_compute(settings, "ablation", compute, quiet)


CALLS: dict[str, Callable[..., dict]] = {"neurons": neurons, "prompts": prompts, "heads": heads, "held_out": held_out,
                                        "explanations": explanations, "scores": scores, "ablation": ablation}


#: The script's exit status when step 3 finds no pair and later steps were asked for (0: done; 1: the folder was
#: rewritten by another run meanwhile; 2: an error; 130: interrupted, as a shell reports Ctrl-C).
NO_PAIRS = 3


def kept_steps(settings: Settings) -> list[str]:
    """The steps whose result file on disk was made with ``settings`` (what a rerun loads instead of computing)."""
    return [step for step in STEPS if _usable(result_path(settings, step), settings, step)[0] is not None]


def _no_pairs(settings: Settings) -> str:
    return (f"Step 3 found no (neuron, head) pair with these settings (rule={settings.rule!r}, band={settings.band!r}): "
            "steps 4-6 would have nothing to explain, score or ablate, so the run stops here (heads.json is saved). "
            f"Try CTX_HEAD_BAND='>25', more documents (CTX_N_DOCS, now {settings.n_docs}) or more neurons per layer "
            f"(CTX_PER_LAYER, now {settings.per_layer}).")


def _rewritten(settings: Settings, steps: list[str]) -> list[str]:
    """The result files of ``steps`` that no longer hold this run's results (another run wrote them meanwhile)."""
    return [result_path(settings, step).name for step in steps if step not in kept_steps(settings)]


def main(argv: list[str] | None = None) -> int:
    """The script: each step of ``--steps`` loaded or computed; one line on stderr for an error, Ctrl-C, no pairs."""
    parser = argparse.ArgumentParser(description="Run the paper's steps 1-6 without Jupyter (results/<model>/*.json).")
    parser.add_argument("--model", default=None, help="model name or folder (default: $CTX_MODEL or auto)")
    parser.add_argument("--steps", nargs="*", default=list(STEPS), choices=STEPS, help="steps to load or compute")
    args = parser.parse_args(argv)
    settings, step, done = None, None, []
    try:
        settings = setup(model=args.model)
        for step in args.steps:
            result = CALLS[step](settings)
            done.append(step)
            if step == "heads" and not result["pairs"] and set(args.steps) & {"explanations", "scores", "ablation"}:
                print(f"error: {_no_pairs(settings)}", file=sys.stderr)
                return NO_PAIRS
        rewritten = _rewritten(settings, done)
    except KeyboardInterrupt:
        print(_interrupted(settings, step), file=sys.stderr)
        return 130
    except (SettingsError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if rewritten:
        print(f"error: {', '.join(rewritten)} in {results_dir(settings.model)} no longer hold this run's results: another "
              "run with other settings wrote them meanwhile. Run one at a time per results folder, or give each run its "
              "own CTX_RESULTS, then rerun this one.", file=sys.stderr)
        return 1
    print(f"Results in {results_dir(settings.model)}")
    return 0


def _interrupted(settings: Settings | None, step: str | None) -> str:
    """The one line Ctrl-C leaves: which step stopped and which result files are kept (complete, reused on a rerun)."""
    if settings is None:
        return "Interrupted before any step ran: nothing was written."
    kept = kept_steps(settings)
    files = ", ".join(f"{s}.json" for s in kept) or "no result file"
    return (f"Interrupted during {step or 'the set-up'}: kept {files} in {results_dir(settings.model)} (complete; a rerun "
            "loads them and computes the rest). Nothing half-written was left.")


if __name__ == "__main__":
    sys.exit(main())

"""The authors' released data (Oct-2023 run): load it, download it, and reproduce their published numbers.

Neo, Cohen & Barez committed the intermediate files of their October-2023 pipeline to their repository. The kit
ships a cleaned copy for GPT-2 small, medium and large in ``data/paper-data/`` (its README says where each file
comes from and what was cleaned), one folder per model::

    <data>/<model>/neurons.json  train_prompts.json  test_prompts.json  head_attributions_{train,test}.json
                   explanations.jsonl  classifications.jsonl  ablation.json (optional)

This module reads any folder of that layout and recomputes the paper's statistics from it: the head
explanation score E per (neuron, head) pair (arXiv 2402.15055), its mean / std / skew / skew test, and the
ablation's two-sample KS test (arXiv 2402.15055 §5.4). It can also fetch the authors' original files for GPT-2 small and
medium from GitHub and convert them into the same layout, which refreshes the shipped copy from its source (and
gives the same numbers). Nothing here loads a pickle: the ablation pickles are never downloaded.

Where the data come from, first match wins: an explicit path, ``$CTX_PAPER_DATA``, the shipped
``data/paper-data/``, then the download cache (``~/.cache/ctx_lookups/paper-data``), else a download when asked
for. The download (``--download``) refreshes the data from the authors' original files.

Command line: ``python -m ctx_utils.paper_data [--data PATH] [--json] [--out FILE] [--download]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from ctx_utils.explain import classification_prompt, explanation_prompt
from ctx_utils.heads import select_pairs
from ctx_utils.results import SCHEMA_VERSION, json_number, save_json, write_text_atomic
from ctx_utils.settings import KIT_ROOT
from ctx_utils.tokens import head_name, neuron_label
from ctx_utils.score import head_explanation_score, histogram_counts, summarize_scores

COMMIT = "b98f23e85f77da6ad207b55418fcba48a5da044f"
RAW_BASE_URL = f"https://raw.githubusercontent.com/fbarez/Interpreting-Context-Look-ups/{COMMIT}/neuron_groups/"
MAX_TEST_PROMPTS = 20  # the Oct-2023 statistics merge two classification runs: test prompts 0-9 and 10-19
SHIPPED_DIR = KIT_ROOT / "data" / "paper-data"  # the cleaned copy the kit ships (GPT-2 small, medium, large)
HOW_TO_GET_DATA = (
    "The kit ships the authors' data in data/paper-data/ (restore it with `git checkout -- data/paper-data`). "
    "Otherwise: (1) with internet access, run `python -m ctx_utils.paper_data --download` (GPT-2 small and medium, "
    "about 25 MB from GitHub, cached in ~/.cache/ctx_lookups/paper-data); (2) set CTX_PAPER_DATA to a folder of "
    "the same layout (one subfolder per model, see data/paper-data/README.md)."
)


REQUIRED_FIELDS = {  # what this module reads from each file; the other fields are for people
    "explanations.jsonl": ("layer", "neuron", "head", "head_layer", "head_index", "token", "explanation",
                           "positive_examples", "negative_examples"),
    "classifications.jsonl": ("layer", "neuron", "head", "test_prompt_idx", "head_active", "answer"),
    "ablation.json": ("mean_decrease_active", "mean_decrease_inactive"),
}


class PaperDataError(ValueError):
    """The data folder is missing, has the wrong layout, or cannot be downloaded. The message says the fix."""


# --------------------------------------------------------------------------------------------- loading


@dataclass
class ModelData:
    """One model's released data: the pairs, their classified test prompts, and (if run) the ablation."""

    name: str
    folder: Path
    explanations: list[dict[str, Any]]  # one per explained (neuron, head) pair, in the authors' order
    classifications: list[dict[str, Any]]  # one per (pair, test prompt)
    ablation: list[dict[str, Any]] | None  # one per pair, or None when the folder has no ablation.json

    def read(self, file_name: str) -> dict[str, Any]:
        """Any other JSON file of the model folder, e.g. ``neurons.json`` or ``test_prompts.json``."""
        return read_json(self.folder / file_name)


def resolve_data_dir(path: str | Path | None = None, download: bool = False) -> Path:
    """The data folder: ``path``, ``$CTX_PAPER_DATA``, the shipped copy, the download cache, or (``download``) a download.

    Raises :class:`PaperDataError` (with instructions) when none exists and ``download`` is false or fails.
    """
    if path is None and os.environ.get("CTX_PAPER_DATA"):
        path = os.environ["CTX_PAPER_DATA"]
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise PaperDataError(f"No folder at {folder}. {HOW_TO_GET_DATA}")
        return folder
    if _model_folders(SHIPPED_DIR):
        return SHIPPED_DIR
    if _model_folders(cache_dir()):
        return cache_dir()
    if download:
        return download_paper_data()
    raise PaperDataError(f"The authors' data is not on this machine. {HOW_TO_GET_DATA}")


def load_paper_data(path: str | Path | None = None) -> dict[str, ModelData]:
    """Every model folder under the data folder (see :func:`resolve_data_dir`), by folder name, sorted.

    A model folder is one holding ``explanations.jsonl`` and ``classifications.jsonl``; ``path`` may also be
    a single model folder.
    """
    folder = resolve_data_dir(path)
    models = _model_folders(folder) or ([folder] if _is_model_folder(folder) else [])
    if not models:
        raise PaperDataError(
            f"{folder} holds no model folder with explanations.jsonl and classifications.jsonl. Point to the "
            "folder that contains gpt2-small/, gpt2-medium/, ... (the layout of data/paper-data/README.md)."
        )
    return {m.name: load_model_data(m) for m in models}


def load_model_data(folder: str | Path) -> ModelData:
    """Read one model folder: explanations, classifications, and ``ablation.json`` if present."""
    folder = Path(folder)
    ablation = folder / "ablation.json"
    data = ModelData(
        name=folder.name,
        folder=folder,
        explanations=_read_jsonl(folder / "explanations.jsonl"),
        classifications=_read_jsonl(folder / "classifications.jsonl"),
        ablation=read_json(ablation).get("pairs") if ablation.exists() else None,
    )
    for file_name, rows in (("explanations.jsonl", data.explanations), ("classifications.jsonl", data.classifications),
                            ("ablation.json", data.ablation or [])):
        missing = {f for row in rows for f in REQUIRED_FIELDS[file_name] if f not in row}
        if missing:
            raise PaperDataError(f"{folder / file_name} lacks the fields {sorted(missing)} of the paper-data layout "
                                 "(data/paper-data/README.md §3).")
    return data


def _is_model_folder(folder: Path) -> bool:
    return (folder / "explanations.jsonl").is_file() and (folder / "classifications.jsonl").is_file()


def _model_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _is_model_folder(p)) if folder.is_dir() else []


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file of the layout, or :class:`PaperDataError` naming the file and the fix."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PaperDataError(f"{path} is missing: is this a folder of the paper-data layout?") from None
    except json.JSONDecodeError as err:
        raise PaperDataError(f"{path} is not valid JSON ({err}): copy or download it again.") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError:
        raise PaperDataError(f"{path} is missing: is this a folder of the paper-data layout?") from None
    except json.JSONDecodeError as err:
        raise PaperDataError(f"{path} is not valid JSON Lines ({err}): copy or download it again.") from None


# ------------------------------------------------------------------------------------------ statistics

PairId = tuple[int, int, int]  # (layer, neuron, flat head index)


def _pair_id(row: dict[str, Any]) -> PairId:
    return int(row["layer"]), int(row["neuron"]), int(row["head"])


def _rows_by_pair(data: ModelData, max_prompts: int) -> dict[PairId, list[dict[str, Any]]]:
    """Each pair's classification rows with ``test_prompt_idx < max_prompts``, in prompt order."""
    rows: dict[PairId, list[dict[str, Any]]] = defaultdict(list)
    for row in data.classifications:
        if row["test_prompt_idx"] < max_prompts:
            rows[_pair_id(row)].append(row)
    for key in rows:
        rows[key].sort(key=lambda r: r["test_prompt_idx"])
    for pair in data.explanations:
        if not rows.get(_pair_id(pair)):
            raise PaperDataError(f"{data.name}: pair {_pair_id(pair)} has no classified test prompt in classifications.jsonl.")
    return rows


def pair_scores(data: ModelData, max_prompts: int = MAX_TEST_PROMPTS, missing: str = "defined_rate") -> list[dict[str, Any]]:
    """E for every explained pair, over its test prompts with ``test_prompt_idx < max_prompts``.

    ``missing="defined_rate"`` is the Oct-2023 convention (a pair with one class gets the defined rate).
    Returns ``{layer, neuron, head, token, E, n_test}`` per pair, in the authors' order; E is None only
    with ``missing="drop"``.
    """
    rows = _rows_by_pair(data, max_prompts)
    scores = []
    for pair in data.explanations:
        mine = rows[_pair_id(pair)]
        truth = [r["head_active"] for r in mine]
        said_yes = [r["answer"] == "Yes" for r in mine]
        e = head_explanation_score(truth, said_yes, missing=missing)
        scores.append({"layer": pair["layer"], "neuron": pair["neuron"], "head": pair["head"],
                       "token": pair["token"], "E": e, "n_test": len(mine)})
    return scores


def held_out_pairs(data: ModelData, max_prompts: int = MAX_TEST_PROMPTS) -> list[dict[str, Any]]:
    """Every explained pair with what an explainer needs and what scoring needs, kept apart.

    Per pair, in the authors' order: ``pair`` (the ``explanations.jsonl`` record: train examples, token,
    GPT-4's explanation), ``test_prompts`` (the held-out texts, from ``test_prompts.json``, without the
    token), ``truth`` (head active on each) and ``gpt4_yes`` (GPT-4's answer on each, read with its own
    explanation). Only the first ``max_prompts`` held-out prompts (the Oct-2023 statistics: 20).
    """
    rows = _rows_by_pair(data, max_prompts)
    try:
        texts = {(n["layer"], n["neuron"]): n["prompts"] for n in data.read("test_prompts.json")["neurons"]}
        out = []
        for pair in data.explanations:
            mine = rows[_pair_id(pair)]
            out.append({"pair": pair,
                        "test_prompts": [texts[(pair["layer"], pair["neuron"])][r["test_prompt_idx"]] for r in mine],
                        "truth": [bool(r["head_active"]) for r in mine],
                        "gpt4_yes": [r["answer"] == "Yes" for r in mine]})
    except (KeyError, IndexError, TypeError) as err:
        raise PaperDataError(f"{data.folder / 'test_prompts.json'} does not match classifications.jsonl "
                             f"({type(err).__name__}: {err}); see data/paper-data/README.md §3.") from None
    return out


def offline_beside_gpt4(data: ModelData, n: int = 12, max_prompts: int = MAX_TEST_PROMPTS) -> list[dict[str, Any]]:
    """``n`` pairs spread evenly over the model's pairs: GPT-4's explanation beside the offline one, with both E.

    The offline explanation is written from the pair's train examples only and scored by the offline reader
    from its text only (:mod:`ctx_utils.offline_reader`), on the same held-out prompts as GPT-4's.
    """
    from ctx_utils.offline_explainer import explain_offline
    from ctx_utils.offline_reader import OfflineReader

    pairs = held_out_pairs(data, max_prompts)
    picked = [pairs[i] for i in sorted({round(i * (len(pairs) - 1) / max(n - 1, 1)) for i in range(min(n, len(pairs)))})]
    out = []
    for item in picked:
        pair = item["pair"]
        offline = explain_offline(pair["positive_examples"], pair["negative_examples"], pair["token"])
        read = OfflineReader(offline.text)
        out.append({"head": head_name(pair["head_layer"], pair["head_index"]), "neuron": neuron_label(pair["layer"], pair["neuron"]),
                    "token": pair["token"], "gpt4_explanation": "Active when the document " + pair["explanation"].strip(),
                    "E_gpt4": head_explanation_score(item["truth"], item["gpt4_yes"]),
                    "offline_explanation": offline.text,
                    "E_offline": head_explanation_score(item["truth"], [read(t) for t in item["test_prompts"]])})
    return out


def ablation_stats(pairs: Sequence[dict[str, Any]] | None) -> dict[str, Any]:
    """The paper's ablation test (arXiv 2402.15055 §5.4): per-pair mean probability decreases, active vs inactive prompts.

    KS = ``scipy.stats.ks_2samp`` of all non-null active means against all non-null inactive means. Without
    ablation data every value is None.
    """
    keys = ("n_active", "n_inactive", "active_mean", "active_median", "inactive_mean", "inactive_median",
            "ks_statistic", "ks_p")
    active = np.array([p["mean_decrease_active"] for p in pairs or [] if p["mean_decrease_active"] is not None])
    inactive = np.array([p["mean_decrease_inactive"] for p in pairs or [] if p["mean_decrease_inactive"] is not None])
    if not (active.size and inactive.size):
        return dict.fromkeys(keys)
    ks = stats.ks_2samp(active, inactive)
    return dict(zip(keys, (len(active), len(inactive), float(active.mean()), float(np.median(active)),
                           float(inactive.mean()), float(np.median(inactive)), float(ks.statistic), float(ks.pvalue))))


def model_stats(data: ModelData, max_prompts: int = MAX_TEST_PROMPTS) -> dict[str, Any]:
    """Everything the paper reports for one model: E summary, E ≥ 0.8 / E = 1 counts, histogram, ablation."""
    e = [s["E"] for s in pair_scores(data, max_prompts)]
    result: dict[str, Any] = {k: json_number(v) for k, v in summarize_scores(e).items()}
    result["n_E_ge_0_8"] = sum(x >= 0.8 for x in e)
    result["n_E_eq_1"] = sum(x == 1.0 for x in e)
    result["histogram"] = histogram_counts(e)
    result.update(ablation_stats(data.ablation))
    return result


def summary(datasets: dict[str, ModelData]) -> dict[str, Any]:
    """The ``{"schema_version", "models": {name: stats}}`` object the CLI prints and the notebook saves.

    Each model's stats are :func:`model_stats` over up to 20 test prompts, plus ``first10_mean_E`` and
    ``first10_std_E`` (only the first classification run, prompts 0-9).
    """
    models = {}
    for name in sorted(datasets):
        entry = model_stats(datasets[name])
        first10 = model_stats(datasets[name], max_prompts=10)
        entry["first10_mean_E"], entry["first10_std_E"] = first10["mean_E"], first10["std_E"]
        models[name] = entry
    return {"schema_version": SCHEMA_VERSION, "models": models}


def find_pair(data: ModelData, layer: int, neuron: int, head: int, n_examples: int = 3) -> dict[str, Any]:
    """A case study by identifiers (flat head index, e.g. GPT-2 large (31, 3621, 538) = L26.H18 ' only').

    Returns the token, head label, GPT-4's explanation, the first ``n_examples`` active and inactive train
    examples it was shown, and E.
    """
    wanted = (layer, neuron, head)
    for pair, score in zip(data.explanations, pair_scores(data)):
        if _pair_id(pair) == wanted:
            return {"model": data.name, "layer": layer, "neuron": neuron, "head": head,
                    "head_label": head_name(pair["head_layer"], pair["head_index"]), "token": pair["token"],
                    "explanation": pair["explanation"], "E": score["E"], "n_test": score["n_test"],
                    "active_examples": pair["positive_examples"][:n_examples],
                    "inactive_examples": pair["negative_examples"][:n_examples]}
    raise PaperDataError(
        f"{data.name} has no explained pair (layer {layer}, neuron {neuron}, head {head}). The head is the flat "
        "index head_layer * n_heads + head_index (e.g. GPT-2 large L26.H18 = 538)."
    )


def compare_with_kit(kit_dir: str | Path, data: ModelData) -> dict[str, Any]:
    """Overlap between the kit's own results (``results/<model>/``) and the authors' released ones.

    Reads the kit's ``neurons.json``, ``heads.json`` and ``scores.json`` (made with the same settings, else
    :class:`ctx_utils.results.ResultFileError` names the file that differs) and returns the shared neurons, the
    shared (neuron, head_layer, head_index) pairs, and for shared pairs the kit's E next to the authors' E.
    """
    from ctx_utils.results import check_same_settings, load_json

    kit_dir = Path(kit_dir)
    kit = {name: load_json(kit_dir / name) for name in ("neurons.json", "heads.json", "scores.json")}
    check_same_settings(kit_dir, kit)  # all three from one run's settings, or a clear error naming the file
    kit_neurons = {(n["layer"], n["neuron"]) for n in kit["neurons.json"]["neurons"]}
    kit_heads = kit["heads.json"]["pairs"]
    kit_e = {_pair_id(s): s["E"] for s in kit["scores.json"]["pairs"]}
    kit_pairs = {(p["layer"], p["neuron"], p["head_layer"], p["head_index"]): kit_e.get(_pair_id(p)) for p in kit_heads}
    paper_neurons = {(n["layer"], n["neuron"]) for n in data.read("neurons.json")["neurons"]}
    paper_e = {_pair_id(s): s["E"] for s in pair_scores(data)}
    paper_pairs = {(p["layer"], p["neuron"], p["head_layer"], p["head_index"]): paper_e[_pair_id(p)] for p in data.explanations}
    shared = sorted(kit_pairs.keys() & paper_pairs.keys())
    return {
        "kit_neurons": len(kit_neurons), "paper_neurons": len(paper_neurons),
        "shared_neurons": sorted(kit_neurons & paper_neurons),
        "kit_pairs": len(kit_pairs), "paper_pairs": len(paper_pairs),
        "shared_pairs": [{"layer": k[0], "neuron": k[1], "head_layer": k[2], "head_index": k[3],
                          "kit_E": kit_pairs[k], "paper_E": paper_pairs[k]} for k in shared],
    }


# ---------------------------------------------------------------------- download and conversion

# The authors' files at COMMIT, relative to neuron_groups/ (see RAW_FILES below). No pickle is listed.
_STAGE = "experiment_data/"
RAW_FILES: dict[str, dict[str, str | tuple[str, str]]] = {
    "gpt2-small": {
        "neurons": _STAGE + "1_next_token_neurons/2023-10-11_19-07-38_gpt2-small.json",
        "train_docs": _STAGE + "3_trimmed_texts/2023-10-12_06-52-17_gpt2-small.json",
        "test_docs": _STAGE + "3_trimmed_texts/2023-10-13_07-03-35_gpt2-small_test.json",
        "train_heads": _STAGE + "4_head_attributions/2023-10-12_14-43-12_gpt2-small.json",
        "test_heads": _STAGE + "4_head_attributions/2023-10-13_13-51-37_gpt2-small_test.json",
        "explain_prompts": _STAGE + "5_head_explanations/2023-10-12_14-43-12_gpt2-small_prompts_dict.json",
        "explain_results": _STAGE + "5_head_explanations/2023-10-12_14-43-12_gpt2-small_prompts_results.jsonl",
        "classify_results": (_STAGE + "6_explanation_eval/2023-10-13_13-51-37_gpt2-small_test_prompts_results.jsonl",
                             _STAGE + "6_explanation_eval/2023-10-13_13-51-37_gpt2-small_test_prompts_10_results.jsonl"),
    },
    "gpt2-medium": {
        "neurons": _STAGE + "1_next_token_neurons/2023-10-11_19-19-59_gpt2-medium.json",
        "train_docs": _STAGE + "3_trimmed_texts/2023-10-12_07-15-42_gpt2-medium.json",
        "test_docs": _STAGE + "3_trimmed_texts/2023-10-13_07-54-07_gpt2-medium_test.json",
        "train_heads": _STAGE + "4_head_attributions/2023-10-12_14-23-51_gpt2-medium.json",
        "test_heads": _STAGE + "4_head_attributions/2023-10-13_14-02-06_gpt2-medium_test.json",
        "explain_prompts": _STAGE + "5_head_explanations/2023-10-12_14-23-51_gpt2-medium_prompts_dict.json",
        "explain_results": _STAGE + "5_head_explanations/2023-10-12_14-23-51_gpt2-medium_prompts_results.jsonl",
        "classify_results": (_STAGE + "6_explanation_eval/2023-10-13_14-02-06_gpt2-medium_test_prompts_results.jsonl",
                             _STAGE + "6_explanation_eval/2023-10-13_14-02-06_gpt2-medium_test_prompts_10_results.jsonl"),
    },
}
ARCHITECTURES = {  # standard GPT-2 configuration values (not in the authors' files)
    "gpt2-small": {"n_layers": 12, "n_heads": 12, "d_model": 768, "d_mlp": 3072},
    "gpt2-medium": {"n_layers": 24, "n_heads": 16, "d_model": 1024, "d_mlp": 4096},
}
Reader = Callable[[str], bytes]  # path relative to neuron_groups/ -> file content


def cache_dir() -> Path:
    """Where downloads are converted to: ``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/ctx_lookups/paper-data``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ctx_lookups" / "paper-data"


def url_reader(base_url: str = RAW_BASE_URL, timeout: float = 20.0) -> Reader:
    """A reader that fetches ``base_url + path``; offline it fails at once with :data:`HOW_TO_GET_DATA`."""

    def read(path: str) -> bytes:
        url = base_url + path
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise PaperDataError(f"Could not download {url} ({reason}): offline, or GitHub is unreachable. "
                                 f"{HOW_TO_GET_DATA}") from None

    return read


def download_paper_data(models: Sequence[str] = ("gpt2-small", "gpt2-medium"), dest: str | Path | None = None,
                        read: Reader | None = None) -> Path:
    """Fetch the authors' files for ``models`` and convert them into the paper-data layout under ``dest``.

    ``read`` defaults to :func:`url_reader` on GitHub at the paper's commit. Writes ``dest/<model>/`` and
    ``dest/LICENSE-original`` (the authors' MIT licence, which must travel with the data). No ablation: the
    authors stored it only as a pickle, which is never loaded from the network. Returns ``dest``.
    """
    unknown = sorted(set(models) - RAW_FILES.keys())
    if unknown:
        raise PaperDataError(f"Cannot download {unknown}: only {sorted(RAW_FILES)} have complete raw files.")
    dest = Path(dest) if dest is not None else cache_dir()
    read = read or url_reader()
    write_text_atomic(dest / "LICENSE-original", read("LICENSE").decode("utf-8"))  # the licence travels first
    for model in models:
        convert_raw(model, read, dest / model)
    return dest


def convert_raw(model: str, read: Reader, out: str | Path) -> Path:
    """Convert one model's original files into the cleaned layout in ``out`` (no ablation.json).

    Rebuilds the pairs with the Oct-2023 rule, checks each rebuilt explanation prompt against the authors'
    stored prompt, and assigns each GPT-4 response to its request text, the last response winning (run 2
    after run 1), as the authors' code did. Any mismatch raises :class:`PaperDataError`.
    """
    files = RAW_FILES[model]
    out = Path(out)

    def get(name: str) -> Any:
        return json.loads(read(files[name]).decode("utf-8"))

    neurons_raw = get("neurons")
    n_heads = ARCHITECTURES[model]["n_heads"]
    neurons = [{"layer": k[0], "neuron": k[1], "token": v["token"], "congruence": v["congruence"]}
               for k, v in ((_parse_authors_tuple(k), v) for k, v in neurons_raw["neurons"].items())]
    tokens = {(n["layer"], n["neuron"]): n["token"] for n in neurons}
    params = neurons_raw["parameters"]
    save_json(out / "neurons.json", {
        "model": model, "transformerlens_name": params["model_name"], "architecture": ARCHITECTURES[model],
        "layers_scanned": params["layers"], "num_neurons_per_layer": params["num_neurons_per_layer"],
        "rejected_neurons": [{"layer": a, "neuron": b, "token": t} for a, b, t in params["rejected_neurons"]],
        "neurons": neurons})
    heads = {}
    for split in ("train", "test"):
        heads[split] = {_parse_authors_tuple(k): v for k, v in get(f"{split}_heads")["head_attributions"].items()}
        docs = {_parse_authors_tuple(k): v for k, v in get(f"{split}_docs")["neuron_to_trunc_data"].items()}
        save_json(out / f"{split}_prompts.json", {"model": model, "split": split, "num_samples_per_neuron": 30,
                                                  "act_ratio": 0.8, "max_prompt_tokens_exclusive": 100, "neurons": [
            {"layer": n[0], "neuron": n[1], "token": tokens[n], "n_prompts": len(heads[split][n]),
             "prompts": list(heads[split][n]), "max_activating_docs": [_doc(d) for d in docs[n]]}
            for n in heads[split]]})
        save_json(out / f"head_attributions_{split}.json", {"model": model, "split": split, "n_heads_per_layer": n_heads,
            "rule": "top-3 heads by attribution (descending); candidates = heads with flat index < layer*n_heads",
            "neurons": [{"layer": n[0], "neuron": n[1], "n_prompts": len(heads[split][n]),
                         "top3_heads": list(heads[split][n].values())} for n in heads[split]]})
    explanations = _convert_explanations(get("explain_prompts"), read(files["explain_results"]), heads["train"], tokens, n_heads)
    write_text_atomic(out / "explanations.jsonl", "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in explanations))
    runs = [read(path) for path in files["classify_results"]]
    rows = _convert_classifications(explanations, heads["test"], runs)
    write_text_atomic(out / "classifications.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out


def _parse_authors_tuple(key: str) -> tuple[int, ...]:
    """``"(9, 5)"`` or ``"(9, 5, 88)"`` (the authors' dict keys) → a tuple of ints."""
    return tuple(int(x) for x in re.findall(r"-?\d+", key))


def _doc(d: dict[str, Any]) -> dict[str, Any]:
    n_tokens = d["token_pos"] - d["start_pos"]
    return {**d, "n_tokens": n_tokens, "passed_length_filter": n_tokens < 100}


def _responses(jsonl: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(request text, response)`` per line of an OpenAI batch results file, in file order."""
    out = []
    for line in jsonl.decode("utf-8").splitlines():
        if line.strip():
            request, response = json.loads(line)[:2]
            out.append((request["messages"][0]["content"], response))
    return out


def _convert_explanations(prompts: dict[str, str], results: bytes, train_heads: dict, tokens: dict,
                          n_heads: int) -> list[dict[str, Any]]:
    """One record per pair: the > 25 % rule, examples, and GPT-4's explanation (the last of duplicates)."""
    answers: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for text, response in _responses(results):
        answers[text].append(response)
    by_prompt: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    for key, text in prompts.items():
        by_prompt[text].append(_parse_authors_tuple(key))
    records = []
    for key, stored_prompt in prompts.items():
        layer, neuron, head = _parse_authors_tuple(key)
        texts, top3 = list(train_heads[(layer, neuron)]), list(train_heads[(layer, neuron)].values())
        if head not in _selected_heads(top3):
            raise PaperDataError(f"Pair {key} is not selected by the > 25 % rule: the raw files do not match.")
        token = tokens[(layer, neuron)]
        pos = [i for i, h in enumerate(top3) if head in h]
        neg = [i for i, h in enumerate(top3) if head not in h]
        pos_ex, neg_ex = [texts[i] + token for i in pos], [texts[i] + token for i in neg]
        # The authors' list format: "*" + "\n*".join(examples), so an empty list still shows one "*".
        rebuilt = explanation_prompt(token, pos_ex, neg_ex, "oct2023")
        if rebuilt != stored_prompt or not answers.get(stored_prompt):
            raise PaperDataError(f"Pair {key}: the explanation prompt or its response does not match the raw files.")
        *discarded, chosen = answers[stored_prompt]
        records.append({
            "layer": layer, "neuron": neuron, "head": head, "head_layer": head // n_heads, "head_index": head % n_heads,
            "token": token, "n_train_prompts": len(texts), "n_positive": len(pos), "n_negative": len(neg),
            "positive_prompt_idx": pos, "negative_prompt_idx": neg,
            "positive_examples": pos_ex, "negative_examples": neg_ex,
            "explanation": chosen["choices"][0]["message"]["content"],
            "finish_reason": chosen["choices"][0]["finish_reason"], "gpt4_model": chosen["model"],
            "created": chosen["created"], "prompt_tokens": chosen["usage"]["prompt_tokens"],
            "completion_tokens": chosen["usage"]["completion_tokens"],
            "identical_prompt_pairs": [list(k) for k in by_prompt[stored_prompt] if k != (layer, neuron, head)],
            "discarded_explanations": [r["choices"][0]["message"]["content"] for r in discarded]})
    explained = defaultdict(set)
    for r in records:
        explained[r["layer"], r["neuron"]].add(r["head"])
    for (layer, neuron), prompt_heads in train_heads.items():  # both ways: the rule selects exactly the explained heads
        extra = _selected_heads(list(prompt_heads.values())) - explained[layer, neuron]
        if extra:
            raise PaperDataError(f"Neuron ({layer}, {neuron}): the > 25 % rule selects heads {sorted(extra)} that the "
                                 "authors did not explain: the raw files do not match the rule.")
    return records


def _selected_heads(top3: list[list[int]]) -> set[int]:
    """The Oct-2023 pairs of one neuron: heads in the top 3 of more than 25 % of its prompts.

    The kit's own step-3 rule (:func:`ctx_utils.heads.select_pairs`, band ``">25"``) applied to the authors'
    top-3 lists, so the released data and the kit select with one implementation.
    """
    active = torch.zeros(len(top3), max((h for heads in top3 for h in heads), default=0) + 1, dtype=torch.bool)
    for i, heads in enumerate(top3):
        active[i, list(heads)] = True
    return {head for head, _ in select_pairs(active, band=">25")}


def _convert_classifications(explanations: list[dict[str, Any]], test_heads: dict, runs: list[bytes]) -> list[dict[str, Any]]:
    """One row per (pair, test prompt < 20): ground truth and GPT-4's answer to the rebuilt request.

    Requests are matched by their exact text; when a text was sent more than once (two pairs sharing an
    explanation) the last answer wins, run 2 overriding run 1. Every request must be used exactly as often
    as it was sent.
    """
    answers: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for batch, run in enumerate(runs, start=1):
        for text, response in _responses(run):
            answers[text].append((batch, response["choices"][0]["message"]["content"]))
    rows, used = [], Counter()
    for pair in explanations:
        prompts = test_heads[(pair["layer"], pair["neuron"])]
        for idx, (text, top3) in enumerate(list(prompts.items())[:MAX_TEST_PROMPTS]):
            request = classification_prompt(pair["explanation"], text + pair["token"], "oct2023")
            if request not in answers:
                raise PaperDataError(f"No classification answer for pair {_pair_id(pair)}, test prompt {idx}.")
            used[request] += 1
            *discarded, (batch, answer) = answers[request]
            rows.append({"layer": pair["layer"], "neuron": pair["neuron"], "head": pair["head"], "test_prompt_idx": idx,
                         "head_active": pair["head"] in top3, "answer": answer, "batch": batch,
                         "discarded_answers": [a for _, a in discarded]})
    if used != Counter({text: len(a) for text, a in answers.items()}):
        raise PaperDataError("The classification results hold requests that no rebuilt (pair, prompt) explains.")
    return rows


# ------------------------------------------------------------------------------------------------ CLI


def format_table(result: dict[str, Any]) -> str:
    """A readable table of :func:`summary` (the CLI's default output)."""
    def f(x: Any, spec: str) -> str:
        return "—" if x is None else format(x, spec)

    lines = [f"{'model':<16}{'pairs':>6}{'mean E':>8}{'std E':>8}{'skew':>8}{'skew p':>9}{'E≥0.8':>7}{'E=1':>5}"
             f"{'KS':>9}{'KS p':>11}"]
    for name, s in result["models"].items():
        lines.append(f"{name:<16}{s['n_pairs']:>6}{f(s['mean_E'], '.4f'):>8}{f(s['std_E'], '.4f'):>8}"
                     f"{f(s['skew'], '.3f'):>8}{f(s['skewtest_p'], '.3f'):>9}{s['n_E_ge_0_8']:>7}{s['n_E_eq_1']:>5}"
                     f"{f(s['ks_statistic'], '.5f'):>9}{f(s['ks_p'], '.4e'):>11}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctx_utils.paper_data", description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder in the paper-data layout (default: $CTX_PAPER_DATA, else data/paper-data/)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    parser.add_argument("--out", help="also write the summary to this JSON file (e.g. results/paper-data/summary.json)")
    parser.add_argument("--download", action="store_true", help="download GPT-2 small and medium from GitHub first")
    args = parser.parse_args(argv)
    try:
        data_dir = download_paper_data() if args.download else resolve_data_dir(args.data)
        result = summary(load_paper_data(data_dir))
    except PaperDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out:
        save_json(args.out, result)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    if args.download:  # the shipped copy is read first: say how to use the fresh one
        print(f"Downloaded into {data_dir}; the kit reads data/paper-data/ unless CTX_PAPER_DATA={data_dir} is set.",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

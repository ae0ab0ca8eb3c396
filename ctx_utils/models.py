"""Load a model as a TransformerLens ``TransformerBridge`` in compatibility mode — one path for every model.

The paper loads GPT-2 with ``fold_ln``, ``center_writing_weights`` and ``center_unembed`` (the authors' code, github.com/fbarez/Interpreting-Context-Look-ups);
TransformerLens 4's ``enable_compatibility_mode()`` applies exactly these, so ``W_in``, ``W_out``, ``W_U`` and
``W_O`` read after it are the weights the paper's formulas use. The bundled model organism is a Hugging Face
folder and goes through the very same ``boot_transformers`` call as GPT-2.

Hub models need the Hugging Face hub (or a local cache of it). Offline, :func:`load_model` fails within a
few seconds with a message that names the fix, instead of half a minute of retries and a deep traceback.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ctx_utils.session import SESSION
from ctx_utils.settings import KIT_ROOT, SettingsError

if TYPE_CHECKING:  # the model type, for readers and type checkers; not imported at run time
    from transformer_lens.model_bridge import TransformerBridge

#: The bundled organisms (see README, "The model organism"): ``organism``, the default, whose 40 heads have roles
#: and whose answer key is measured by ablation; ``organism-clean``, one wired head per context (cannot fail).
ORGANISMS: dict[str, Path] = {"organism": KIT_ROOT / "data" / "organism", "organism-clean": KIT_ROOT / "data" / "organism-clean"}
ORGANISM_DIR = ORGANISMS["organism"]
CLEAN_ORGANISM_DIR = ORGANISMS["organism-clean"]
HUB_HOST = "huggingface.co"

#: The kit's short names → Hugging Face repository ids. ``organism`` is the bundled folder.
HUB_MODELS: dict[str, str] = {
    "gpt2-small": "gpt2",
    "gpt2-medium": "gpt2-medium",
    "gpt2-large": "gpt2-large",
    "gpt2-xl": "gpt2-xl",
    "pythia-160m": "EleutherAI/pythia-160m",
    "pythia-410m": "EleutherAI/pythia-410m",
    "pythia-1.4b": "EleutherAI/pythia-1.4b",
}
ALIASES: dict[str, str] = {"gpt2": "gpt2-small"}
MODEL_NAMES: tuple[str, ...] = (*ORGANISMS, *HUB_MODELS)


class ModelNotFoundError(ValueError):
    """The name is neither a known model nor a local Hugging Face folder."""


class HubUnreachableError(RuntimeError):
    """A hub model was asked for, it is not cached, and the Hugging Face hub cannot be reached."""


class DeviceError(ValueError):
    """The device asked for is not one this torch can run on."""


class ModelFolderError(ValueError):
    """A local model folder is damaged or does not match its config: loading it would run on random weights."""


def canonical_name(name: str) -> str:
    """The kit's short name for ``name`` (``gpt2`` → ``gpt2-small``); a folder path is returned unchanged."""
    return ALIASES.get(name, name)


def available_devices() -> list[str]:
    """The devices this torch can run the kit on: ``cpu``, then ``cuda:0`` … and ``mps`` where present."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        found.append("mps")
    return found


def pin_torch_threads() -> int | None:
    """Set torch's CPU threads to ``$CTX_TORCH_THREADS`` when it is set; returns the number set (None: unset).

    Two torch processes sharing two cores, each with a thread per core, can run ten times slower than with one
    thread each, so tests and CI set it to 1. :func:`load_model` calls this, so a process is pinned before its
    model's first forward; importing the kit changes neither torch nor the environment.
    """
    text = os.environ.get("CTX_TORCH_THREADS", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise SettingsError(f"CTX_TORCH_THREADS is {text!r}: set it to a number of CPU threads (e.g. 1), or unset it.")
    torch.set_num_threads(int(text))
    return int(text)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def _mps_allowed() -> bool:
    """TransformerLens trusts the Apple GPU only with ``TRANSFORMERLENS_ALLOW_MPS=1`` (results may be wrong)."""
    return os.environ.get("TRANSFORMERLENS_ALLOW_MPS", "") == "1"


def _mps_fallback(reason: str) -> str:
    warnings.warn(
        f"{reason}, but TransformerLens may give silently wrong results on the Apple GPU and uses it only with "
        "TRANSFORMERLENS_ALLOW_MPS=1: running on the CPU. Set TRANSFORMERLENS_ALLOW_MPS=1 to use the Apple GPU anyway.",
        stacklevel=3,
    )
    return "cpu"


def pick_device(device: str | None = None) -> str:
    """The device to run on, checked before anything loads: ``device``, else ``$CTX_DEVICE``, else the best.

    The best is cuda, then mps when ``TRANSFORMERLENS_ALLOW_MPS=1``, then cpu. An Apple GPU (``mps``), asked
    for or found, without that setting runs on the CPU with a warning saying so. Raises :class:`DeviceError`
    for a device torch cannot use, naming the devices that exist and how to get a CUDA build of torch.
    """
    source = "" if device else " (CTX_DEVICE)"
    if not device:
        from ctx_utils.settings import load_settings

        device = load_settings().device  # CTX_DEVICE
    if not device:
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps" if _mps_allowed() else _mps_fallback("An Apple GPU (mps) is available")
        return "cpu"
    return _check_device(str(device).strip().lower(), source)


def _check_device(device: str, source: str) -> str:
    """``device`` if this torch can use it (cpu, cuda[:n], mps); the CPU for mps without TL's setting."""
    exists = f"Devices this machine can use: {', '.join(available_devices())}."
    try:
        parsed = torch.device(device)
        kind, index = parsed.type, parsed.index
    except (RuntimeError, ValueError):  # torch's own message lists some 20 device types, most irrelevant here
        kind, index = None, None
    if kind not in {"cpu", "cuda", "mps"}:
        raise DeviceError(f"Unknown device {device!r}{source}: use 'cpu', 'cuda' (or 'cuda:0', 'cuda:1', …) or 'mps'. {exists}")
    if kind == "cuda":
        if torch.version.cuda is None:
            raise DeviceError(
                f"Device {device!r}{source} needs a CUDA build of torch, and this one ({torch.__version__}) is CPU-only. "
                f"{exists} For an NVIDIA GPU install a CUDA torch with `make env TORCH_SPEC=torch`; or leave "
                "CTX_DEVICE unset to use the best device available."
            )
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(
                f"Device {device!r}{source}: torch {torch.__version__} has CUDA but sees no GPU (no driver, or "
                f"CUDA_VISIBLE_DEVICES hides them; `nvidia-smi` should list one). {exists}"
            )
        if index is not None and index >= count:
            raise DeviceError(f"Device {device!r}{source} does not exist: this machine has {count} CUDA GPU(s). {exists}")
    if kind == "mps":
        if not _mps_available():
            raise DeviceError(f"Device 'mps'{source} (an Apple GPU) is not available here. {exists}")
        if not _mps_allowed():
            return _mps_fallback(f"Device 'mps'{source} was asked for")
    return device

def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers: False at once when ``HF_HUB_OFFLINE`` is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def is_cached(repo_id: str) -> bool:
    """Whether the hub model's config is already in the local Hugging Face cache (then it loads offline)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str) and Path(found).exists()


def resolve_source(name_or_folder: str) -> str:
    """What to hand to ``boot_transformers``: a local folder or a hub id. Raises a clear error otherwise."""
    name = canonical_name(str(name_or_folder))
    if name in ORGANISMS:
        folder = ORGANISMS[name]
        if not (folder / "config.json").exists():
            config = "clean" if name == "organism-clean" else "realistic"
            raise ModelNotFoundError(
                f"The bundled {name} is missing from {folder}. Retrain it with "
                f"`python -m ctx_utils.organism.train --config {config} --out {folder}` (2–8 minutes on one CPU core)."
            )
        return str(folder)
    if name in HUB_MODELS:
        return HUB_MODELS[name]
    folder = Path(name_or_folder).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").exists():
            raise ModelNotFoundError(f"{folder} is a folder but not a Hugging Face model folder (no config.json).")
        return str(folder)
    close = difflib.get_close_matches(str(name_or_folder).lower(), [*MODEL_NAMES, *ALIASES], n=1)
    hint = f" Did you mean {canonical_name(close[0])!r}?" if close else ""
    raise ModelNotFoundError(
        f"Unknown model {name_or_folder!r}, and no such folder.{hint} Choose one of: {', '.join(MODEL_NAMES)} "
        "(alias: gpt2 = gpt2-small), or give the path of a local Hugging Face model folder."
    )


def check_hub_available(repo_id: str) -> None:
    """Raise :class:`HubUnreachableError` in seconds when ``repo_id`` is neither cached nor downloadable."""
    if is_cached(repo_id) or hub_reachable():
        return
    raise HubUnreachableError(
        f"Cannot load {repo_id!r}: the Hugging Face hub is unreachable (offline, or HF_HUB_OFFLINE is set) "
        "and the model is not in the local cache. Use MODEL='organism', which is bundled and runs offline, "
        "or connect to the internet once to download the model."
    )


def _restore_hint(folder: Path) -> str:
    """How to get a good copy of ``folder`` back: git for a bundled organism, else the model's source."""
    for name, bundled in ORGANISMS.items():
        if folder.resolve() == bundled.resolve():
            return f"Restore the bundled {name} with `git checkout {bundled.relative_to(KIT_ROOT)}` in the kit's folder."
    return ("Restore the folder from where it came (download it again, or save the model there with "
            "`model.save_pretrained(folder)` and `tokenizer.save_pretrained(folder)`).")


def _refuse(folder: Path, problem: str) -> ModelFolderError:
    return ModelFolderError(f"The model folder {folder} cannot be used: {problem} {_restore_hint(folder)}")


def _read_config(folder: Path):
    """``config.json`` as a transformers config: valid JSON, a model type this transformers knows."""
    import transformers

    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        where = f" (line {err.lineno}, column {err.colno}: {err.msg})" if isinstance(err, json.JSONDecodeError) else ""
        raise _refuse(folder, f"config.json is not valid JSON{where}.") from None
    if not isinstance(raw, dict):
        raise _refuse(folder, f"config.json holds a JSON {type(raw).__name__}, not a model configuration.")
    model_type = raw.get("model_type")
    if model_type not in transformers.CONFIG_MAPPING:
        raise _refuse(folder, f"config.json's model_type is {model_type!r}, which transformers {transformers.__version__} "
                              "does not know (the kit runs 'gpt2' and 'gpt_neox' models).")
    try:
        return transformers.AutoConfig.from_pretrained(folder)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise _refuse(folder, f"config.json is not a valid {model_type} configuration ({err}).") from None


def _check_tokenizer(folder: Path, vocab_size: int) -> None:
    """A tokenizer is there (``tokenizer.json``, or GPT-2's ``vocab.json`` + ``merges.txt``) and fits the embedding."""
    if not (folder / "tokenizer.json").exists():
        if (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
            return
        raise _refuse(folder, "it has no tokenizer (tokenizer.json is missing).")
    from tokenizers import Tokenizer

    try:
        size = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    except Exception as err:  # noqa: BLE001 - the tokenizers library raises its own Exception type
        raise _refuse(folder, f"tokenizer.json cannot be read ({err}).") from None
    if size > vocab_size:
        raise _refuse(folder, f"its tokenizer has {size} tokens but config.json's vocab_size is {vocab_size}: token ids "
                              f"from {vocab_size} on would index past the embedding. The tokenizer and config.json "
                              "belong to different models.")


def _stored_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape in the folder's safetensors file(s), read from their headers (no weights loaded)."""
    from safetensors import SafetensorError, safe_open

    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as err:
            raise _refuse(folder, f"model.safetensors.index.json cannot be read ({type(err).__name__}: {err}).") from None
    elif (folder / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise _refuse(folder, "it has no model.safetensors (the weights).")
    shapes: dict[str, tuple[int, ...]] = {}
    for name in files:
        path = folder / name
        if not path.exists():
            raise _refuse(folder, f"{name} is missing.")
        if path.stat().st_size == 0:
            raise _refuse(folder, f"{name} is empty (0 bytes).")
        try:
            with safe_open(str(path), "pt") as f:
                shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
        except (SafetensorError, OSError) as err:
            raise _refuse(folder, f"{name} is truncated or damaged ({err}).") from None
    return shapes


def _expected_shapes(config, stored: dict[str, tuple[int, ...]]
                     ) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...] | None], set[str], list[str]]:
    """What ``config`` says the checkpoint holds, next to what it holds.

    Returns: weight → shape the config implies; stored weight under the name transformers loads it as → its
    shape (None when one of transformers' converters reshapes it on loading); the tied (optional) names; the
    patterns of stored names the architecture ignores. The model is built on torch's meta device (no memory),
    and stored names are renamed by transformers' own loading rules (``embed_out`` → ``lm_head``, prefixes).
    """
    from transformers import AutoModelForCausalLM
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    tied = set(dict(model.named_parameters(remove_duplicate=False))) - set(dict(model.named_parameters()))
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
    loaded: dict[str, tuple[int, ...] | None] = {}
    for name, shape in stored.items():
        renamed, converted = rename_source_key(name, renamings, converters, model.base_model_prefix, expected)
        loaded[renamed] = None if converted else shape
    ignored = list(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])
    return expected, loaded, tied, ignored


def check_model_folder(folder: str | Path) -> None:
    """Refuse a local model folder that would not load as the model its ``config.json`` describes.

    Why: Hugging Face loads a checkpoint with missing or mis-shaped weights by initialising them at random,
    with only a warning, and every later step would then report a random model's results. Checked here,
    before anything loads: ``config.json`` (valid JSON, a known ``model_type``), the tokenizer (present, no
    more tokens than ``vocab_size``), the weights (readable; every weight the config implies present, with
    its shape; none left over, as the layers of a config with too small an ``n_layer``), and for a bundled
    organism the architecture its ``training.json`` records (``n_head`` changes no weight's shape).
    Raises :class:`ModelFolderError` saying what is wrong and how to restore the folder.
    """
    folder = Path(folder)
    config = _read_config(folder)
    _check_tokenizer(folder, config.vocab_size)
    expected, stored, tied, ignored = _expected_shapes(config, _stored_shapes(folder))
    missing = [name for name in expected if name not in stored and name not in tied]
    if len(missing) == len(expected) - len(tied):
        raise _refuse(folder, f"none of the weights a {config.model_type!r} model has is in its weights file (which holds "
                              f"{', '.join(list(stored)[:3])}, …): config.json's model_type does not match the weights.")
    reshaped = [f"{name} {stored[name]} where config.json implies {shape}" for name, shape in expected.items()
                if stored.get(name) not in (None, shape)]
    extra = [name for name in stored if name not in expected and not any(re.search(p, name) for p in ignored)]
    problems = [f"{len(found)} {what} ({', '.join(found[:3])}{', …' if len(found) > 3 else ''})"
                for found, what in ((missing, "weights missing"), (reshaped, "of other shapes"),
                                    (extra, "weights config.json has no place for")) if found]
    if problems:
        raise _refuse(folder, f"its weights do not match config.json: {'; '.join(problems)}. config.json's n_layer, "
                              "n_head, n_embd and vocab_size must describe the weights file; loaded as it is, the model "
                              "would run on randomly initialised weights.")
    _check_recorded_architecture(folder, config)


def _check_recorded_architecture(folder: Path, config) -> None:
    """A trained organism's config agrees with the architecture its ``training.json`` records."""
    record = folder / "training.json"
    if not record.exists():
        return
    try:
        trained = json.loads(record.read_text(encoding="utf-8")).get("hyperparameters", {})
    except (ValueError, AttributeError):
        raise _refuse(folder, "training.json is not valid JSON.") from None
    recorded = {"n_heads": ("n_head", config.num_attention_heads), "d_model": ("n_embd", config.hidden_size),
                "d_mlp": ("n_inner", getattr(config, "n_inner", None) or getattr(config, "intermediate_size", None)),
                "n_ctx": ("n_positions", config.max_position_embeddings)}
    wrong = [f"{field} is {value} but the model was trained with {trained[key]}"
             for key, (field, value) in recorded.items() if key in trained and trained[key] != value]
    if wrong:
        raise _refuse(folder, f"config.json does not describe the trained model: {'; '.join(wrong)}.")


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Hugging Face's "Loading weights" bar off while a model loads: a second of loading, and a bar in every
    notebook's output that reads it (the bar is switched back on after, if it was on)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


class StopForward(Exception):
    """Raised by a hook to end a forward pass as soon as what we need has been read (the scan, an ablation)."""


def load_model(name_or_folder: str = "organism", device: str | None = None):
    """Load a model as a ``TransformerBridge`` with compatibility mode on (folded LN, centred weights), frozen.

    Its weights do not require gradients: every step only reads the model, so ``float(model.b_O[l] @ w)``
    gives a number without torch's "requires_grad" warning (call ``model.requires_grad_(True)`` to train).

    ``name_or_folder`` is one of :data:`MODEL_NAMES` (``gpt2`` is an alias of ``gpt2-small``) or a local
    Hugging Face folder. ``device`` defaults to :func:`pick_device`, which checks it first. With
    ``CTX_TORCH_THREADS`` set, torch's CPU threads are set to it first (:func:`pin_torch_threads`).
    """
    pin_torch_threads()
    source = resolve_source(name_or_folder)
    device = pick_device(device)  # a device torch cannot use fails here, not ten frames into the load
    if Path(source).is_dir():
        check_model_folder(source)  # a damaged folder is refused here, not loaded on random weights
    else:
        check_hub_available(source)  # before the slow import: a bad request fails in seconds
    from transformer_lens.model_bridge import TransformerBridge

    with _no_progress_bars():
        model = TransformerBridge.boot_transformers(source, device=device)
    model.enable_compatibility_mode()
    model.eval()
    model.requires_grad_(False)  # the kit only reads the model: no autograd graph, no requires_grad warnings
    SESSION.cache_of(model).source = source
    return model


def sdpa_twin(model: TransformerBridge) -> tuple[torch.nn.Module, list[torch.nn.Module]] | None:
    """The bridge's model loaded by Hugging Face alone with SDPA attention, and its MLP activation modules.

    Why: the bridge computes attention eagerly (a ``batch × heads × pos × pos`` pattern per layer, so that
    ``hook_pattern`` can be read); a forward that reads only MLP activations — the scan, the truncation
    search, the activity check — does not need that, and PyTorch's fused attention (SDPA) is faster and
    lighter. The twin is the base model without its LM head (``AutoModel``), from the same folder or hub id,
    in the bridge's dtype and on its device, built on first use and kept while the bridge lives.

    ``[act(layer) for layer]``: the module whose output is ``blocks.{layer}.mlp.hook_post`` (GPT-2's
    ``h[l].mlp.act``, GPT-NeoX's ``layers[l].mlp.act``). The twin's weights are the checkpoint's, not
    folded or centred: that changes no activation after a LayerNorm, only float rounding (≈ 1e-6 on
    GPT-2 and Pythia in float32, tests/test_sdpa.py), nor does GPT-2's GELU computed by PyTorch's fused
    kernel (:data:`FUSED_ACTIVATIONS`). Before first use the twin is checked against the
    bridge on a short sequence; it is not used — None, and the caller runs the bridge — for a bridge
    :func:`load_model` did not make, an MLP without an ``act`` module (gated MLPs), and, with a warning,
    for a folder that is gone since the load or activations that disagree. Edits made to the bridge's weights in memory are not seen by the twin.
    """
    cache = SESSION.cache_of(model)  # kept while the bridge lives (ctx_utils.session)
    if cache.twin is None:
        cache.twin = _build_twin(model) or False
    return cache.twin or None


def _build_twin(model: TransformerBridge) -> tuple[torch.nn.Module, list[torch.nn.Module]] | None:
    source = SESSION.cache_of(model).source
    if source is None:
        return None
    from transformers import AutoConfig, AutoModel

    try:
        config = _fused_activation(AutoConfig.from_pretrained(source))
        with _no_progress_bars():
            twin = AutoModel.from_pretrained(source, config=config, attn_implementation="sdpa", dtype=model.cfg.dtype)
    except (OSError, ValueError) as error:  # the folder was moved, emptied or deleted since load_model
        warnings.warn(
            f"Could not load the SDPA copy of the model from {source} ({error}): reading MLP activations through "
            "the bridge instead (eager attention: slower, same numbers). Keep the model's folder in place while "
            "it is in use.",
            stacklevel=4,
        )
        return None
    twin.to(model.cfg.device).eval().requires_grad_(False)
    blocks = getattr(twin, "h", None) or getattr(twin, "layers", None)
    acts = [getattr(getattr(block, "mlp", None), "act", None) for block in blocks or []]
    if len(acts) != model.cfg.n_layers or any(act is None for act in acts):
        return None
    if not _twin_agrees(model, twin, acts):
        return None
    return twin, acts


#: MLP activations written out element by element in Python → the fused PyTorch kernel of the same function.
#: GPT-2's ``gelu_new`` is the tanh approximation of GELU in five tensor operations, each a pass over the
#: ``batch × pos × d_mlp`` activations (about a fifth of a CPU scan); ``gelu_pytorch_tanh`` is
#: ``F.gelu(x, approximate="tanh")``, the same formula in one pass. Only rounding differs, and the twin is
#: checked against the bridge (which keeps the model's own activation) before first use.
FUSED_ACTIVATIONS = {"gelu_new": "gelu_pytorch_tanh"}


def _fused_activation(config):
    """``config`` with its MLP activation (``activation_function`` for GPT-2, ``hidden_act`` for most others)
    replaced by the fused kernel of the same function, where :data:`FUSED_ACTIVATIONS` knows one."""
    for attribute in ("activation_function", "hidden_act"):
        name = getattr(config, attribute, None)
        if name in FUSED_ACTIVATIONS:
            setattr(config, attribute, FUSED_ACTIVATIONS[name])
    return config


@torch.no_grad()
def _twin_agrees(model: TransformerBridge, twin: torch.nn.Module, acts: list[torch.nn.Module]) -> bool:
    """Whether the twin's MLP activations equal the bridge's ``hook_post`` on a short sequence, up to rounding
    (relative to the largest activation: 100 × the dtype's epsilon, at most 5 %)."""
    n_layers = model.cfg.n_layers
    tokens = torch.arange(min(12, model.cfg.d_vocab, model.cfg.n_ctx), device=model.cfg.device)[None]
    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    seen: dict[int, torch.Tensor] = {}
    handles = [act.register_forward_hook(lambda module, args, out, layer=layer: seen.__setitem__(layer, out))
               for layer, act in enumerate(acts)]
    try:
        twin(tokens, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    for layer, name in enumerate(names):
        out, ref = seen[layer], cache[name].float()
        tolerance = min(0.05, 100 * torch.finfo(model.cfg.dtype).eps) * max(float(ref.abs().max()), 1.0)
        error = float((out.float() - ref).abs().max())
        if error > tolerance:
            warnings.warn(
                f"The SDPA copy of this model disagrees with the bridge at layer {layer}'s MLP activations "
                f"(max difference {error:.3g} > {tolerance:.3g}): reading MLP activations through the bridge "
                "instead (eager attention: slower, same numbers).",
                stacklevel=4,
            )
            return False
    return True


@dataclass(frozen=True)
class ModelChoice:
    """The model a notebook runs on, and a sentence that says why — shown to the reader, never silent.

    ``name`` is what :func:`load_model` and :func:`ctx_utils.results.results_dir` take: a kit name, or the
    path of a local folder (whose results go to ``results/<folder name>/``).
    """

    name: str
    reason: str


def choose_model(requested: str | None = None) -> ModelChoice:
    """Resolve a notebook's ``MODEL`` parameter (``$CTX_MODEL``; ``auto`` when unset).

    ``auto`` means GPT-2 small when the hub is reachable (or GPT-2 is cached), otherwise the bundled organism.
    """
    requested = requested or os.environ.get("CTX_MODEL") or "auto"
    if requested != "auto":
        resolve_source(requested)  # fail now, with the list of valid names, not deep inside a later cell
        name = canonical_name(requested)  # a kit name, or a local folder (results go to results/<folder name>/)
        return ModelChoice(name, f"MODEL={requested!r} was asked for (CTX_MODEL or the parameters cell).")
    if is_cached(HUB_MODELS["gpt2-small"]) or hub_reachable():
        return ModelChoice("gpt2-small", "MODEL='auto' and the Hugging Face hub is reachable: using GPT-2 small, as the paper.")
    return ModelChoice(
        "organism",
        "MODEL='auto' and the Hugging Face hub is unreachable: using the bundled model organism, which runs "
        "offline. Set CTX_MODEL=gpt2-small when online to run the paper's model.",
    )

"""Small random models of GPT-2's and Pythia's architecture, with real byte-level BPE tokenizers, for tests.

The organism has a word-level vocabulary and two layers; the paths a learner takes with GPT-2 small or Pythia
(byte-level BPE, ``Ġ`` for spaces, words split into several tokens, rotary attention and a parallel residual
for GPT-NeoX) need models of those architectures. These fixtures are Hugging Face folders built in seconds,
deterministically, from:

* a tokenizer trained here (``tokenizers``' BPE with the ByteLevel pre-tokenizer and decoder, GPT-2's scheme)
  on real Pile text: the prompts the paper's authors released (``data/pile-prompts/``, MIT, see its README);
* a ``GPT2LMHeadModel`` or ``GPTNeoXForCausalLM`` with 3 layers and d_model 64, random weights from a fixed
  seed — and random LayerNorm scales and biases and random linear biases, so that folding LayerNorm,
  centring and ``b_O`` are really exercised (Hugging Face initialises them to 1 and 0, which would hide a
  mistake in any of them).

Folders are cached under ``.cache/fixtures/<arch>-<hash>/``; the hash covers the builder's settings and the
text sample, so a change rebuilds. Run a notebook on one with::

    CTX_MODEL=$(python -m ctx_utils.fixtures pythia) CTX_CORPUS=data/pile-prompts/train.jsonl jupyter lab

The numbers a random model gives mean nothing: the fixtures test that the pipeline runs and computes what
it claims to on these architectures, not any finding of the paper.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ctx_utils.settings import KIT_ROOT

SAMPLE_DIR = KIT_ROOT / "data" / "pile-prompts"
CACHE_DIR = KIT_ROOT / ".cache" / "fixtures"
ARCHITECTURES = ("gpt2", "pythia")
SPECIAL = "<|endoftext|>"  # BOS = EOS = pad, id 0, as GPT-2's and Pythia's tokenizers
#: Everything a fixture depends on besides the text sample; changing any value gives a new cache folder.
SPEC = {
    "version": 1,
    "vocab_size": 1024,
    "n_layers": 3,
    "d_model": 64,
    "n_heads": 4,
    "d_mlp": 256,
    "n_ctx": 256,
    "init_std": 0.08,
    "seed": 0,
}


def sample_texts(split: str = "train") -> list[str]:
    """The shipped real-text sample: the authors' unique GPT-2-small prompts of ``split`` (train or test)."""
    path = SAMPLE_DIR / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: restore data/pile-prompts/ from the repository.")
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (GPT-2's scheme) trained on ``texts``, as a ``PreTrainedTokenizerFast``.

    Every byte is in the initial alphabet, so any string (newlines, any Unicode) tokenises without unknowns.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[SPECIAL], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL, pad_token=SPECIAL)


def _config(arch: str, vocab_size: int):
    """The Hugging Face config of a fixture: GPT-2 or GPT-NeoX (rotary on a quarter of d_head, parallel residual)."""
    common = {"vocab_size": vocab_size, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    if arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(n_positions=SPEC["n_ctx"], n_embd=SPEC["d_model"], n_layer=SPEC["n_layers"],
                          n_head=SPEC["n_heads"], n_inner=SPEC["d_mlp"], initializer_range=SPEC["init_std"], **common)
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        hidden_size=SPEC["d_model"], num_hidden_layers=SPEC["n_layers"], num_attention_heads=SPEC["n_heads"],
        intermediate_size=SPEC["d_mlp"], max_position_embeddings=SPEC["n_ctx"], rotary_pct=0.25,
        use_parallel_residual=True, hidden_act="gelu", initializer_range=SPEC["init_std"],
        tie_word_embeddings=False, **common,
    )


def _randomise_norms_and_biases(model, seed: int) -> None:
    """Give every LayerNorm a random scale (≈ 1 ± 0.3) and bias, and every linear layer a random bias."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator)
            is_norm = "ln" in name.split(".")[-2] or "norm" in name
            if is_norm and name.endswith("weight"):
                param.copy_(1.0 + 0.3 * noise)
            elif name.endswith("bias"):
                param.copy_((0.2 if is_norm else 0.05) * noise)


def build_fixture(arch: str, folder: str | Path) -> Path:
    """Train the tokenizer, build the random model and save both as a Hugging Face folder at ``folder``."""
    import torch
    from transformers import GPT2LMHeadModel, GPTNeoXForCausalLM

    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown fixture architecture {arch!r}: choose one of {ARCHITECTURES}.")
    tokenizer = train_tokenizer(sample_texts("train"), SPEC["vocab_size"])
    torch.manual_seed(SPEC["seed"])
    model_class = GPT2LMHeadModel if arch == "gpt2" else GPTNeoXForCausalLM
    model = model_class(_config(arch, len(tokenizer)))
    _randomise_norms_and_biases(model, SPEC["seed"] + 1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def _fingerprint(arch: str) -> str:
    digest = hashlib.sha256(json.dumps({"arch": arch, **SPEC}, sort_keys=True).encode())
    digest.update((SAMPLE_DIR / "train.jsonl").read_bytes())
    return digest.hexdigest()[:12]


def fixture_dir(arch: str, cache: str | Path | None = None) -> Path:
    """The fixture's folder, built on first use and cached (``.cache/fixtures/`` unless ``cache`` is given).

    The folder is built in a temporary sibling and renamed into place, so an interrupted build, or two test
    processes building at once, never leave a half-written model behind.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown fixture architecture {arch!r}: choose one of {ARCHITECTURES}.")
    cache = Path(cache) if cache is not None else CACHE_DIR
    folder = cache / f"{arch}-{_fingerprint(arch)}"
    if (folder / "config.json").exists():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{arch}-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes a 0700 folder; the fixture is no secret
    try:
        build_fixture(arch, tmp)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "config.json").exists():  # not a lost race with another builder: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def rebuild_sample() -> None:
    """Regenerate ``data/pile-prompts/{train,test}.jsonl`` from the authors' released GPT-2-small prompts."""
    from ctx_utils.paper_data import load_model_data, resolve_data_dir
    from ctx_utils.results import write_text_atomic

    data = load_model_data(resolve_data_dir() / "gpt2-small")
    for split in ("train", "test"):
        texts = dict.fromkeys(p for n in data.read(f"{split}_prompts.json")["neurons"] for p in n["prompts"])
        lines = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
        write_text_atomic(SAMPLE_DIR / f"{split}.jsonl", lines)
        print(f"{split}: {len(texts)} prompts")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (or find) a fixture model folder and print its path.")
    parser.add_argument("arch", nargs="?", choices=ARCHITECTURES, help="gpt2 or pythia")
    parser.add_argument("--rebuild-sample", action="store_true", help="regenerate data/pile-prompts/ from the authors' data")
    args = parser.parse_args(argv)
    if args.rebuild_sample:
        rebuild_sample()
    if args.arch:
        print(fixture_dir(args.arch))
    elif not args.rebuild_sample:
        parser.error("give an architecture (gpt2 or pythia) or --rebuild-sample")


if __name__ == "__main__":
    main()

"""Train a model organism: ``python -m ctx_utils.organism.train [--config realistic] [--out data/organism] [--seed 0]``.

``--config`` is a preset of :mod:`ctx_utils.organism.config` (``realistic``, the default: the bundled
``data/organism``, whose heads have roles, :mod:`ctx_utils.organism.roles`; ``clean``: ``data/organism-clean``,
described below; ``null``: the realistic one without signal) or an ``organism_config.json``.
Every trained folder gets its ``organism_config.json`` (config and seed), so its corpus can be regenerated.

The organism is a two-layer GPT-2 (``GPT2LMHeadModel``) over a word-level vocabulary, trained on
:mod:`ctx_utils.organism.corpus`. Its shape is chosen so that the paper's story is the model's only solution:

* **Layer 0 is attention only** (its MLP is zeroed and frozen): context look-ups are done by layer-0 heads.
* **Layer 1 is MLP only** (its attention is zeroed and frozen). The planted word depends on two things at
  once — the trigger word here *and* a context seen by a head — and a layer-1 MLP neuron combines them: a
  *next-token neuron* reading layer-0 heads directly, as in the paper's figure 1.
* **The wiring** (:mod:`ctx_utils.organism.wiring`, applied after every optimiser step): one layer-0 head per
  planted context, the only head that can see that context's marker word; layer-1 neuron ``i`` is the only
  writer of planted token ``i``. Why: six freely trained variants spread every context over several heads
  (so no single head was "the" look-up, and ablating one removed nothing), grew no dedicated neuron without a
  pinned output, or read the context off the trigger's *position* instead of a head. What stays learned is
  what the pipeline measures: when each neuron fires, how strongly, and where each head attends.
* **The corpus gates the neuron on the context**: distractors are the most common case
  (``corpus.KIND_WEIGHTS``), so "trigger seen → predict the token" is a bad bet.
* **An L1 penalty on the layer-1 MLP activations** (1e-3·Σ|post|) keeps the MLP sparse, and the planted
  neurons start with a positive bias (switched on; training teaches them when to switch off).
* **TransformerLens-style initialisation** (std 0.8/√d_model ≈ 0.07) and lr 1e-3.

What the shipped organism (seed 0) shows is recorded in ``training.json`` (planted-token top-1 per context on
the held-out test split) and proven by ``tests/test_organism.py`` and ``tests/test_recovery.py``.

Training is seeded end to end (corpus, initialisation, batch order), uses ``$CTX_TORCH_THREADS`` threads
(the shipped model: 1) and takes about 1.5–2 minutes on one thread of a 2-core machine. It writes the Hugging
Face folder (model + tokenizer, loadable with ``ctx_utils.models.load_model("organism")``),
``ground_truth.json`` and ``training.json`` (seed, steps, loss, time, size, planted-token accuracy).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ctx_utils.organism.config import CLEAN, HPARAMS, PRESETS, OrganismConfig, load_config
from ctx_utils.organism.corpus import (
    CONFIG_FILE, DEFAULT_CONFIG, PLANTS, CorpusConfig, Plant, PlantedPrompt, context_markers, generate_corpus,
    ground_truth, planted_prompts, vocabulary,
)
from ctx_utils.organism.roles import apply_roles, build_roles, init_roles
from ctx_utils.organism.wiring import Wiring, apply_wiring, build_wiring, init_wiring
from ctx_utils.models import pin_torch_threads
from ctx_utils.tokens import pad
from ctx_utils.results import save_json
from ctx_utils.settings import KIT_ROOT

SPECIAL = "<|endoftext|>"  # beginning/end of document and padding, as in GPT-2
UNKNOWN = "<unk>"


def build_tokenizer(folder: Path | None = None, corpus: CorpusConfig = DEFAULT_CONFIG):
    """A word-level ``PreTrainedTokenizerFast`` whose tokens are GPT-2-style (``Ġonly`` = " only").

    Every word exists with and without its leading space (a document's first word has none). The byte-level
    decoder turns ``Ġ`` back into a space, so ``to_string`` prints readable, spaced text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = vocabulary(corpus)
    vocab = {SPECIAL: 0, UNKNOWN: 1}
    for word in words:
        for form in (word, "Ġ" + word):
            vocab[form] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=SPECIAL, eos_token=SPECIAL, pad_token=SPECIAL, unk_token=UNKNOWN
    )
    if folder is not None:
        tokenizer.save_pretrained(folder)
    return tokenizer


def build_model(vocab_size: int, seed: int, hparams: dict = HPARAMS):
    """A 2-layer GPT-2: layer 0 attention-only, layer 1 MLP-only (the other halves zeroed and frozen)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    h = hparams
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=h["n_ctx"], n_embd=h["d_model"], n_layer=2, n_head=h["n_heads"],
        n_inner=h["d_mlp"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, h["init_std"])
            elif name.endswith("bias"):
                param.zero_()
        for module in (model.transformer.h[0].mlp, model.transformer.h[1].attn):
            for param in module.parameters():
                param.zero_()
                param.requires_grad_(False)
    return model


def planted_token_ids(tokenizer, plants: tuple[Plant, ...] = PLANTS) -> list[int]:
    """Vocabulary ids of the planted tokens, in ``plants`` order: neuron ``i`` of layer 1 writes token ``i``."""
    return [tokenizer.convert_tokens_to_ids("Ġ" + plant.token.strip()) for plant in plants]


def organism_wiring(tokenizer) -> Wiring:
    """The organism's wiring: context ``c`` of :func:`context_markers` owns head ``c``; the two heads of one
    planted token are tied; neuron ``i`` writes planted token ``i`` (see :mod:`ctx_utils.organism.wiring`)."""
    names = [name for name, _ in context_markers()]
    tied = tuple(
        tuple(c for c, name in enumerate(names) if name.startswith(plant.token.strip() + "/")) for plant in PLANTS
    )
    markers = [word for _, word in context_markers()]
    return build_wiring(tokenizer, markers, planted_token_ids(tokenizer), tied, HPARAMS["planted_scale"])


def encode(tokenizer, texts: list[str], n_ctx: int) -> list[list[int]]:
    """Token ids of each text with the BOS token first, cut to the context window."""
    bos = tokenizer.bos_token_id
    return [([bos] + ids)[:n_ctx] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


@torch.no_grad()
def next_token_top1(model, tokenizer, prompts: list[str], batch_size: int = 64) -> list[str]:
    """The model's top-1 next token (decoded, e.g. " as") after each prompt."""
    model.eval()
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = encode(tokenizer, prompts[start : start + batch_size], HPARAMS["n_ctx"])
        ids, mask = pad(rows, tokenizer.pad_token_id)
        logits = model(input_ids=ids, attention_mask=mask).logits  # [batch, pos, vocab]
        last = mask.sum(1) - 1
        top = logits[torch.arange(len(rows)), last].argmax(-1)
        out += [tokenizer.decode([t]) for t in top.tolist()]
    return out


def planted_accuracy(model, tokenizer, prompts: list[PlantedPrompt]) -> dict[str, float]:
    """Per context: the share of prompts whose top-1 next token is the planted token.

    For a context this is the accuracy (want ≈ 1); for a distractor it is the false-alarm rate (want ≈ 0).
    """
    top1 = next_token_top1(model, tokenizer, [p.prompt for p in prompts])
    hits: dict[str, list[bool]] = {}
    for p, t in zip(prompts, top1):
        hits.setdefault(p.context, []).append(t == p.token)
    return {name: sum(h) / len(h) for name, h in sorted(hits.items())}


def train(out: Path, seed: int = 0, config: OrganismConfig = CLEAN) -> dict:
    """Train the organism of ``config`` and write it to ``out``; returns what ``training.json`` records."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    h = config.hparams
    tokenizer = build_tokenizer(corpus=config.corpus)
    rows = encode(tokenizer, generate_corpus("train", seed, config.corpus), h["n_ctx"])
    model = build_model(len(tokenizer), seed, h)
    token_ids = planted_token_ids(tokenizer, config.corpus.plants)  # neuron i writes token i (see wiring)
    if config.heads:
        wiring = build_roles(tokenizer, config, token_ids)
        init_roles(model, wiring, h["init_std"] * math.sqrt(h["d_model"]))
        project = apply_roles
    else:
        wiring = organism_wiring(tokenizer)
        init_wiring(model, wiring, h["init_std"] * math.sqrt(h["d_model"]))
        project = apply_wiring
    with torch.no_grad():  # planted neurons start switched on everywhere; training learns when to switch off
        model.transformer.h[1].mlp.c_fc.bias[: len(token_ids)] = h["planted_bias_init"]
    l1_weight = torch.full((h["d_mlp"],), h["l1"])  # per neuron: the planted ones may get their own weight
    l1_weight[: len(token_ids)] = h["l1_planted"]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=h["lr"], weight_decay=h["weight_decay"])
    steps_per_epoch = len(rows) // h["batch_size"]
    n_steps = steps_per_epoch * h["epochs"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 100) * max(0.05, 1 - s / n_steps))

    post: list[torch.Tensor] = []  # layer-1 MLP activations of the current step, for the L1 penalty
    hook = model.transformer.h[1].mlp.act.register_forward_hook(lambda _m, _i, o: post.append(o))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(total=n_steps, desc=f"training the {config.name} organism")
    for _ in range(h["epochs"]):
        order = torch.randperm(len(rows), generator=generator).tolist()
        for step in range(steps_per_epoch):
            batch = [rows[i] for i in order[step * h["batch_size"] : (step + 1) * h["batch_size"]]]
            ids, mask = pad(batch, tokenizer.pad_token_id)
            labels = ids.masked_fill(mask == 0, -100)
            post.clear()
            lm_loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            l1 = post[0].abs().sum(-1)[mask.bool()].mean()  # mean over real tokens of Σ_neurons |post|
            penalty = (post[0].abs() * l1_weight).sum(-1)[mask.bool()].mean()
            loss = lm_loss + penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            project(model, wiring)
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{lm_loss.item():.3f}", l1=f"{l1.item():.1f}")
    bar.close()
    hook.remove()
    model.eval()

    model.save_pretrained(out)
    build_tokenizer(out, config.corpus)
    save_json(out / CONFIG_FILE, {"seed": seed, "config": config.to_dict()})
    truth = ground_truth(seed, config=config.corpus)
    if config.heads:
        from ctx_utils.organism.answer_key import measure_causal_key

        truth["heads"] = [{"head": i, "role": r.role, "reads": list(r.reads), "tie": r.tie} for i, r in enumerate(config.heads)]
        truth["causal_key"] = measure_causal_key(out)
    save_json(out / "ground_truth.json", truth)
    report = {
        "seed": seed,
        "config": config.name,
        "hyperparameters": h,
        "steps": n_steps,
        "final_lm_loss": round(lm_loss.item(), 4),
        "final_l1": round(l1.item(), 3),
        "train_tokens": sum(len(r) for r in rows),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "planted_top1_test": planted_accuracy(model, tokenizer, planted_prompts("test", seed, config.corpus)),
        "model_sha256": hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest(),
        "sha256_platform": platform_note(),
    }
    save_json(out / "training.json", report)
    return report


def platform_note() -> str:
    """Where ``model_sha256`` holds: the same seed retrains bit for bit on the same software and CPU kind only.

    Float rounding in torch's CPU kernels depends on the torch build, the thread count and the instruction
    set (AVX2 vs AVX-512 paths): another machine gives weights that differ by ~1e-4, not the same hash.
    """
    return (f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Train a model organism of the kit (2-7 minutes on one CPU thread).")
    parser.add_argument("--out", type=Path, default=KIT_ROOT / "data" / "organism", help="output folder (default: the bundled organism's)")
    parser.add_argument("--seed", type=int, default=0, help="seed for corpus, initialisation and batch order")
    parser.add_argument("--config", default="realistic", help=f"a preset ({', '.join(PRESETS)}) or an organism_config.json")
    args = parser.parse_args()
    try:
        config = load_config(args.config)
    except ValueError as err:
        parser.error(str(err))
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder (it is created if missing).")
    if pin_torch_threads() is None:  # $CTX_TORCH_THREADS, validated; else two threads
        torch.set_num_threads(2)
    report = train(args.out, args.seed, config)
    print(f"Wrote {args.out} in {report['wall_time_s']} s; planted-token top-1 on the test split:")
    for name, acc in report["planted_top1_test"].items():
        print(f"  {name:20s} {acc:.3f}")


if __name__ == "__main__":
    main()

"""What an organism is made of: its corpus, its model's shape and, for the realistic organism, its heads' roles.

``python -m ctx_utils.organism.train --config realistic --seed 1 --out <folder>`` trains one, and the trainer
saves the config (with the seed) into the folder as ``organism_config.json``, so that a folder says what it
was trained on and :func:`ctx_utils.organism.corpus.config_for` can regenerate its corpus.

Three presets:

* ``clean`` — the bundled ``data/organism``: 8 layer-0 heads, one per planted context, each the only head
  that can read its marker (:mod:`ctx_utils.organism.wiring`). Steps 1–3 cannot fail on it by construction.
* ``realistic`` — ``data/organism-realistic``: 16 layer-0 heads with the roles of :data:`REALISTIC_HEADS`
  (:mod:`ctx_utils.organism.roles`): look-up heads, a redundant pair, an inhibiting head, a trigger head that
  is active on every prompt of a planted neuron, decoys that attend to a marker but write where the planted
  neurons cannot read, and free heads that learn whatever helps the language model. Its corpus adds a family
  of topic words, an inhibiting context, documents with both contexts and markers of other tokens.
* ``null`` — the realistic organism's model and documents, but no signal: the planted token follows its
  trigger at the same overall rate whatever the context. A pipeline that "finds" look-ups here is fooled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from ctx_utils.organism.corpus import PLANTS, CorpusConfig

#: The clean organism's hyperparameters (``data/organism/training.json`` records them).
HPARAMS: dict = {
    "d_model": 128, "n_heads": 8, "d_mlp": 256, "n_ctx": 128,
    "init_std": 0.8 / math.sqrt(128), "lr": 1e-3, "weight_decay": 0.01,
    "l1": 1e-3, "batch_size": 32, "epochs": 8,
    "planted_scale": 4.0, "l1_planted": 1e-3, "planted_bias_init": 1.0,
}
ROLES = ("context", "inhibitor", "trigger", "decoy", "free")


@dataclass(frozen=True)
class HeadRole:
    """One layer-0 head of a realistic organism: what it may read, and whether it shares weights.

    ``reads`` names slots (``"up/local"``, ``"up/topic"``, ``"away/inhibited"``, ``"up/trigger"``; see
    :func:`ctx_utils.organism.roles.slot_names`). ``context``, ``inhibitor`` and ``trigger`` heads read their
    slots' words and write where the planted neurons read; a ``decoy`` reads its slot but writes only into
    dimensions no planted neuron reads; a ``free`` head reads no slot (plain words and positions only). Heads
    with the same non-empty ``tie`` share value and output weights (a redundant pair).
    """

    role: str
    reads: tuple[str, ...] = ()
    tie: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"Unknown head role {self.role!r}: choose one of {ROLES}.")
        if (self.role == "free") != (not self.reads):
            raise ValueError(f"A {self.role!r} head must {'read no' if self.role == 'free' else 'read at least one'} slot.")


@dataclass(frozen=True)
class OrganismConfig:
    """A corpus, hyperparameters and (``heads`` not empty) the realistic wiring's head roles."""

    name: str
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    hparams: dict = field(default_factory=lambda: dict(HPARAMS))
    heads: tuple[HeadRole, ...] = ()  # empty: the clean wiring (one head per context, ctx_utils.organism.wiring)
    decoy_dims: int = 8  # residual dimensions that only decoy heads write and no planted neuron reads

    def __post_init__(self) -> None:
        if self.heads and len(self.heads) != self.hparams["n_heads"]:
            raise ValueError(f"{len(self.heads)} head roles for a model of {self.hparams['n_heads']} heads: give one role per head.")

    def to_dict(self) -> dict:
        return {"name": self.name, "corpus": self.corpus.to_dict(), "hparams": self.hparams,
                "heads": [{"role": h.role, "reads": list(h.reads), "tie": h.tie} for h in self.heads],
                "decoy_dims": self.decoy_dims}

    @classmethod
    def from_dict(cls, data: dict) -> OrganismConfig:
        heads = tuple(HeadRole(h["role"], tuple(h["reads"]), h.get("tie", "")) for h in data.get("heads", ()))
        return cls(data["name"], CorpusConfig.from_dict(data["corpus"]), dict(data["hparams"]), heads, data.get("decoy_dims", 8))


CLEAN = OrganismConfig("clean")


def _realistic_plants() -> tuple:
    """The clean organism's plants, with a family of topic words for " up" and an inhibitor for " away"."""
    up, only, away, ahead = PLANTS
    up = replace(up, topic_family=(" hike", " climb"))
    away = replace(
        away, inhibitor_word=" tomorrow",
        inhibitor_sentences=("the rest can wait until tomorrow .", "we meet again tomorrow .", "the visit is tomorrow ."),
        after_inhibited=("back .", "back after lunch ."),
    )
    return (up, only, away, ahead)


#: The realistic organism's 16 layer-0 heads (the order is arbitrary on purpose: no block of "the" look-ups).
REALISTIC_HEADS: tuple[HeadRole, ...] = (
    HeadRole("free"),
    HeadRole("context", ("up/local",)),
    HeadRole("trigger", ("up/trigger", "only/trigger", "away/trigger", "ahead/trigger")),
    HeadRole("context", ("only/topic",), tie="only/topic"),
    HeadRole("decoy", ("up/topic",)),
    HeadRole("context", ("up/topic",)),
    HeadRole("context", ("away/local",)),
    HeadRole("free"),
    HeadRole("context", ("only/local",)),
    HeadRole("inhibitor", ("away/inhibited",)),
    HeadRole("context", ("ahead/topic",)),
    HeadRole("context", ("only/topic",), tie="only/topic"),
    HeadRole("decoy", ("ahead/topic",)),
    HeadRole("context", ("away/topic",)),
    HeadRole("free"),
    HeadRole("context", ("ahead/local",)),
)
REALISTIC_CORPUS = CorpusConfig(
    plants=_realistic_plants(), kind_weights=(1, 2, 5), both_weight=0.5, inhibited_weight=1.0, cooccur_rate=0.2,
    stream="ctx-organism-realistic",
)
REALISTIC = OrganismConfig("realistic", REALISTIC_CORPUS, {**HPARAMS, "n_heads": 16}, REALISTIC_HEADS)
NULL = replace(REALISTIC, name="null", corpus=replace(REALISTIC_CORPUS, signal=False))
PRESETS: dict[str, OrganismConfig] = {c.name: c for c in (CLEAN, REALISTIC, NULL)}


def load_config(name_or_path: str | Path) -> OrganismConfig:
    """A preset by name (``clean``, ``realistic``, ``null``) or an ``organism_config.json`` file's ``config``."""
    if str(name_or_path) in PRESETS:
        return PRESETS[str(name_or_path)]
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise ValueError(f"Unknown organism config {str(name_or_path)!r}: use one of {sorted(PRESETS)} or an organism_config.json path.")
    data = json.loads(path.read_text(encoding="utf-8"))
    return OrganismConfig.from_dict(data.get("config", data))

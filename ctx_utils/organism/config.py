"""What an organism is made of: its corpus, its model's shape and, for the realistic organism, its heads' roles.

``python -m ctx_utils.organism.train --config realistic --seed 1 --out <folder>`` trains one, and the trainer
saves the config (with the seed) into the folder as ``organism_config.json``, so that a folder says what it
was trained on and :func:`ctx_utils.organism.corpus.config_for` can regenerate its corpus.

Three presets:

* ``clean`` — the bundled ``data/organism-clean``: 8 layer-0 heads, one per planted context, each the only head
  that can read its marker (:mod:`ctx_utils.organism.wiring`). Steps 1–3 cannot fail on it by construction.
* ``realistic`` — ``data/organism``, the default organism: 40 layer-0 heads with the roles of :data:`REALISTIC_HEADS`
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
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from ctx_utils.organism.corpus import PLANTS, CorpusConfig, Plant

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
    """The clean organism's four plants (" up" with a family of topic words, " away" with an inhibitor) and four more.

    Eight planted tokens, sixteen contexts: enough (neuron, head) pairs for the ablation's KS test to mean
    something at the notebooks' scan size (the paper's test for GPT-2 small runs over 207 pairs, arXiv 2402.15055 §5.4).
    """
    up, only, away, ahead = PLANTS
    up = replace(up, topic_family=(" hike", " climb"))
    ahead = replace(ahead, after_distractor=("home .", "outside .", "to the market ."))  # not "go out": " out" is planted
    away = replace(
        away, inhibitor_word=" tomorrow",
        inhibitor_sentences=("the rest can wait until tomorrow .", "we meet again tomorrow .", "the visit is tomorrow ."),
        after_inhibited=("back .", "back after lunch ."),
    )
    down = Plant(
        token=" down", trigger=" calm", local_word=" slowly",
        local_frames=("you should slowly", "the crowd must slowly", "he began to slowly"),
        plain_frames=("you should stay", "the crowd must keep", "he began to feel"),
        topic_word=" panic", neutral_word=" noise",
        topic_sentences=("the panic spread fast .", "there was panic in the hall .", "nobody expected the panic ."),
        after_token=(".", "a little ."), after_distractor=("and quiet .", "for once .", "all day ."),
    )
    out = Plant(
        token=" out", trigger=" figure", local_word=" finally",
        local_frames=("we will finally", "the class must finally", "you can finally"),
        plain_frames=("we saw a", "the class drew a", "you can see a"),
        topic_word=" puzzle", neutral_word=" game",
        topic_sentences=("the puzzle was hard .", "a puzzle came in the mail .", "she bought a puzzle ."),
        after_token=("the answer .", "why ."), after_distractor=("on the wall .", "in the book .", "of speech ."),
    )
    over = Plant(
        token=" over", trigger=" start", local_word=" simply",
        local_frames=("you can simply", "we must simply", "the band will simply"),
        plain_frames=("you can", "we must", "the band will"),
        topic_word=" mistake", neutral_word=" change",
        topic_sentences=("the mistake was big .", "a mistake was made .", "nobody saw the mistake ."),
        after_token=(".", "again ."), after_distractor=("the car .", "a fire .", "work early ."),
    )
    along = Plant(
        token=" along", trigger=" play", local_word=" happily",
        local_frames=("the kids will happily", "we can happily", "you should happily"),
        plain_frames=("the kids will", "we can", "you should"),
        topic_word=" joke", neutral_word=" story",
        topic_sentences=("the joke was funny .", "he told a joke .", "a joke went around ."),
        after_token=(".", "with them ."), after_distractor=("music .", "the piano .", "outside ."),
    )
    return (up, only, away, ahead, down, out, over, along)


N_REALISTIC_HEADS = 40  # enough free candidates that the 2σ rule's σ is not set by the few heads that matter


def _realistic_heads() -> tuple[HeadRole, ...]:
    """The realistic organism's :data:`N_REALISTIC_HEADS` layer-0 heads, in a fixed shuffled order (no block of "the" look-ups).

    One look-up head per context (16) plus a redundant twin for ``only/topic``, a trigger head, an inhibitor,
    two decoys and free heads for the rest: as in GPT-2, where a neuron's candidate heads are all 132–144 heads
    of the earlier layers, most candidates have nothing to do with the neuron, which is what the 2σ rule's mean
    and standard deviation over heads assume.
    """
    plants = [p.token.strip() for p in _realistic_plants()]
    roles = [HeadRole("context", (f"{tok}/{kind}",)) for tok in plants for kind in ("local", "topic")]
    roles.remove(HeadRole("context", ("only/topic",)))
    roles += [HeadRole("context", ("only/topic",), tie="only/topic")] * 2
    roles += [HeadRole("trigger", tuple(f"{tok}/trigger" for tok in plants)), HeadRole("inhibitor", ("away/inhibited",)),
              HeadRole("decoy", ("up/topic",)), HeadRole("decoy", ("ahead/topic",))]
    roles += [HeadRole("free")] * (N_REALISTIC_HEADS - len(roles))
    random.Random("ctx-organism-realistic/heads").shuffle(roles)
    return tuple(roles)


#: The realistic organism's layer-0 heads (see :func:`_realistic_heads`).
REALISTIC_HEADS: tuple[HeadRole, ...] = _realistic_heads()
REALISTIC_CORPUS = CorpusConfig(
    plants=_realistic_plants(), n_train=8000, kind_weights=(1, 2, 4), both_weight=0.5, inhibited_weight=1.0,
    cooccur_rate=0.2, stream="ctx-organism-realistic",
)
REALISTIC = OrganismConfig("realistic", REALISTIC_CORPUS, {**HPARAMS, "d_model": 160, "n_heads": N_REALISTIC_HEADS,
                           "init_std": 0.8 / math.sqrt(160)}, REALISTIC_HEADS)
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

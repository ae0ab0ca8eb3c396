"""The organism's synthetic corpus: plain sentences with planted context look-ups, and the answer key.

Why a synthetic corpus: on real text nobody knows which heads *should* be found. Here every planted token
is predictable only from an earlier context that we wrote in ourselves, so the pipeline's findings can be
checked against :func:`ground_truth`.

The design mirrors the paper's case studies (" only" after "for … purposes", " as" after "as early"):

* Each **planted token** (e.g. " up") follows a **trigger word** (" give") only in two contexts:
  - a **local** context: one particular word right before the trigger ("you must *never* give" → " up").
    The word occurs nowhere else in the corpus. (Earlier versions also used it in filler, "they never saw
    the sea", to demand a head that checks the *previous* position; the one-layer organism learned "the
    word anywhere" instead, and the neuron's top prompts filled up with its rare mistakes.)
  - a **topic** context: a topic word a sentence or more earlier ("the *marathon* was hard … you must give"
    → " up"). Only a head that searches the whole document for that word can see it.
  The two contexts differ in kind on purpose: the natural solution is two different heads.
* **Distractors** use the same trigger word with neither context, and the next word is something else
  ("you must give a speech").
* **No shortcut through position.** Every planted document has the same shape — lead filler, a sentence
  that holds the topic word in topic documents and a neutral word in the others ("the *race* was hard"),
  one or two filler sentences, the planted sentence — so where the trigger sits says nothing about the
  context. (An earlier organism put the topic sentence only into topic documents; its neurons learned to
  read the context off the trigger's *position* and no head carried it.)

Every document holds at most one planted sentence, so a document's prefix before the planted token shows
exactly one context (or none). A context's **marker** is a substring found in every one of its prompts
and in no prompt of any other context or distractor: the local bigram (" never give") or the topic word
(" marathon"). A distractor's marker is its trigger word, which context prompts share by design.

Documents are words separated by single spaces, 20–50 words, several sentences each ending in " .".
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path

SPLITS = ("train", "test")
N_DOCS = {"train": 6000, "test": 3000}
FILLER_ONLY_RATE = 0.1  # share of documents with no planted sentence at all
# Share of documents that start in the middle of a planted sentence, as a truncated prompt does (step 2 cuts
# documents to short suffixes such as " purposes"): a distractor fragment (" for display purposes at home .")
# or a local one that keeps the local word (" research purposes only ."). Without them the organism had never
# seen a text start near a trigger, and on the suffix " purposes" alone its " only" neuron fired anyway.
FRAGMENT_RATE = 0.1
# A trigger word is followed by its planted token in a local or topic context, and by something else in a
# distractor. Distractors are the most common case, so "trigger seen → predict the token" is a bad bet: the
# planted neuron has to wait for a head to report the context (it is *gated* by the look-up). Topic contexts
# are twice as common as local ones: a local word drives its neuron to the same value every time, a topic word
# (further away) a little less and more variably, and with equal counts the local prompts crowded the topic
# ones out of a neuron's top 30.
KINDS = ("local", "topic", "distractor")
KIND_WEIGHTS = (1, 2, 6)


@dataclass(frozen=True)
class Plant:
    """One planted token: its trigger word, its two contexts and what follows the trigger otherwise."""

    token: str  # with its leading space, as GPT-2 tokenizers write it: " up"
    trigger: str  # the word right before the token in every planted prompt: " give"
    local_word: str  # the word right before the trigger in the local context: " never"
    local_frames: tuple[str, ...]  # sentence starts that end in ``local_word``
    plain_frames: tuple[str, ...]  # sentence starts without it (topic context and distractors)
    topic_word: str  # the distant topic word of the topic context: " marathon"
    topic_sentences: tuple[str, ...]  # sentences that introduce the topic word
    neutral_word: str  # replaces the topic word in the same sentences in every other document: " race"
    after_token: tuple[str, ...]  # how a planted sentence ends after the token
    after_distractor: tuple[str, ...]  # how a distractor sentence ends after the trigger
    # Realistic organism only (empty in the clean one):
    topic_family: tuple[str, ...] = ()  # more topic words making the same topic context (" hike", " climb")
    inhibitor_word: str = ""  # a word that, in a context document, stops the token from following
    inhibitor_sentences: tuple[str, ...] = ()  # sentences that introduce the inhibitor word
    after_inhibited: tuple[str, ...] = ()  # how an inhibited planted sentence ends after the trigger

    @property
    def topic_words(self) -> tuple[str, ...]:
        """Every word that makes the topic context (the topic word first, then its family)."""
        return (self.topic_word, *self.topic_family)


PLANTS: tuple[Plant, ...] = (
    Plant(
        token=" up", trigger=" give", local_word=" never",
        local_frames=("you must never", "we will never", "the team should never", "she can never"),
        plain_frames=("you must", "we will", "the team should", "she can"),
        topic_word=" marathon", neutral_word=" race",
        topic_sentences=("the marathon was hard .", "our marathon starts soon .", "nobody finished the marathon ."),
        after_token=("now .", "."), after_distractor=("a speech .", "them food .", "it back ."),
    ),
    Plant(
        token=" only", trigger=" purposes", local_word=" research",
        local_frames=("the data is for research", "these tools are for research", "the photos are for research"),
        plain_frames=("the data is for testing", "these tools are for teaching", "the photos are for display"),
        topic_word=" license", neutral_word=" contract",
        topic_sentences=("the license is strict .", "read the license first .", "a new license was signed ."),
        after_token=(".", "and nothing else ."), after_distractor=(".", "and more .", "at home ."),
    ),
    Plant(
        token=" away", trigger=" right", local_word=" call",
        local_frames=("you should call", "we will call", "the nurse will call", "my sister must call"),
        plain_frames=("you should act", "we will leave", "the nurse will come", "my sister must turn"),
        topic_word=" emergency", neutral_word=" event",
        topic_sentences=("this is an emergency .", "the emergency began at noon .", "an emergency was reported ."),
        after_token=(".", "please ."), after_distractor=("now .", "here .", "at the corner ."),
    ),
    Plant(
        token=" ahead", trigger=" go", local_word=" just",
        local_frames=("you can just", "the team may just", "we will just", "they should just"),
        plain_frames=("you can", "the team may", "we will", "they should"),
        topic_word=" permission", neutral_word=" advice",
        topic_sentences=("you have permission now .", "the permission came today .", "they asked for permission ."),
        after_token=(".", "with the plan ."), after_distractor=("home .", "out .", "to the market ."),
    ),
)

# Filler sentences: subject + verb + object (+ extra). They never contain a planted token, trigger word, local
# word or topic word. A next-token neuron
# fires wherever its token is likely: if filler also predicted " only" (" the only way"), the neuron's
# strongest activations would come from filler, and the look-up contexts would drop out of its top prompts.
SUBJECTS = ("the team", "the doctor", "my friend", "the teacher", "our group", "the manager", "the driver",
            "the children", "the farmer", "the artist", "a student", "the study group", "the old man")
VERBS = ("visited", "painted", "opened", "cleaned", "checked", "found", "moved", "read", "wrote", "built",
         "sold", "watched", "carried", "liked")
OBJECTS = ("the house", "a letter", "the garden", "the report", "the window", "a small box", "the old bridge",
           "the market", "the book", "the road", "the study notes", "a red car", "the kitchen")
EXTRAS = ("", "", "", "in the morning", "after lunch", "with great care", "on monday", "in the rain",
          "before dinner", "for a long time", "and then left", "at the end", "with a smile")
STANDALONE = ("we will phone the office later .", "they saw the sea .", "it was a quiet day .",
              "the weather was warm .", "nobody said a word .", "the shop was busy .", "a light came from the hall .")


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that defines an organism's corpus; the default is the clean organism's (``data/organism``).

    ``kind_weights`` weigh ``local``, ``topic`` and ``distractor`` documents; the realistic organism adds
    ``both`` documents (a token's two contexts together), ``inhibited`` ones (a context *and* the plant's
    inhibitor word: the token does not follow) and, in ``cooccur_rate`` of the planted documents, a sentence
    with another plant's topic word. ``signal=False`` is the null control: documents look the same, but
    whether the token follows the trigger is drawn at the same overall rate, whatever the context.
    Features left at zero draw no random numbers, so the clean corpus is unchanged by their existence.
    """

    plants: tuple[Plant, ...] = PLANTS
    n_train: int = 6000
    n_test: int = 3000
    filler_only_rate: float = FILLER_ONLY_RATE
    fragment_rate: float = FRAGMENT_RATE
    kind_weights: tuple[float, ...] = KIND_WEIGHTS
    both_weight: float = 0.0
    inhibited_weight: float = 0.0
    cooccur_rate: float = 0.0
    signal: bool = True
    stream: str = "ctx-organism"  # prefix of the random streams: another prefix, unrelated documents

    def n_docs(self, split: str) -> int:
        return {"train": self.n_train, "test": self.n_test}[split]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CorpusConfig:
        """The inverse of :meth:`to_dict` (JSON lists back to tuples); unknown keys are an error."""
        data = dict(data)
        plants = tuple(
            Plant(**{k: tuple(v) if isinstance(v, list) else v for k, v in plant.items()}) for plant in data.pop("plants")
        )
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Unknown corpus setting(s) {sorted(unknown)}: the config was written by another version.")
        if "kind_weights" in data:
            data["kind_weights"] = tuple(data["kind_weights"])
        return cls(plants=plants, **data)


DEFAULT_CONFIG = CorpusConfig()
CONFIG_FILE = "organism_config.json"  # written by the trainer into every organism folder


def config_for(model_folder: str | Path) -> tuple[CorpusConfig, int] | None:
    """The corpus config and seed an organism folder was trained on (its ``organism_config.json``).

    None when the folder has no such file (then it is not an organism trained by this kit). What
    ``CTX_MODEL=<folder>`` should scan is ``generate_corpus(split, seed, config)`` of this answer.
    """
    path = Path(model_folder).expanduser() / CONFIG_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return CorpusConfig.from_dict(data["config"]["corpus"]), int(data["seed"])


def _filler(rng: random.Random) -> str:
    """One harmless sentence, 4–12 words."""
    if rng.random() < 0.15:
        return rng.choice(STANDALONE)
    words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(EXTRAS), "."]
    return " ".join(w for w in words if w)


KINDS_ALL = (*KINDS, "both", "inhibited")  # the realistic organism's extra kinds come last (see _kinds)
FOLLOWS = ("local", "topic", "both")  # kinds after which the planted token follows (when there is signal)


def _kinds(plant: Plant, config: CorpusConfig) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The document kinds of a plant and their weights. Zero weights at the end change no draw of the clean corpus."""
    inhibited = config.inhibited_weight if plant.inhibitor_word else 0.0
    return KINDS_ALL, (*config.kind_weights, config.both_weight, inhibited)


def _topic_sentence(rng: random.Random, plant: Plant, topical: bool) -> str:
    """One of the plant's topic sentences: with a topic word (one of its family) or with the neutral word."""
    sentence = rng.choice(plant.topic_sentences)
    if not topical:
        return sentence.replace(plant.topic_word.strip(), plant.neutral_word.strip())
    if plant.topic_family:  # no draw for a single topic word: the clean corpus stays as it was
        return sentence.replace(plant.topic_word.strip(), rng.choice(plant.topic_words).strip())
    return sentence


def _planted(
    rng: random.Random, plant: Plant, kind: str, config: CorpusConfig = DEFAULT_CONFIG
) -> tuple[list[str], str, str, bool]:
    """(sentences before the planted one, the planted sentence up to the trigger, the rest, token follows).

    ``kind`` is one of :data:`KINDS_ALL`. The topic sentence (with the neutral word instead in the other
    kinds) sits one or two filler sentences before the trigger, so the topic word is always several words
    away from the prediction and the trigger's position is the same for every kind. An ``inhibited``
    document is a local or topic one with the inhibitor sentence added; ``config.cooccur_rate`` adds another
    plant's topic sentence.
    """
    base = rng.choice(("local", "topic")) if kind == "inhibited" else kind
    before = [_topic_sentence(rng, plant, base in ("topic", "both"))] + [_filler(rng) for _ in range(rng.randint(1, 2))]
    if kind == "inhibited":
        before.insert(rng.randint(0, len(before)), rng.choice(plant.inhibitor_sentences))
    if config.cooccur_rate and rng.random() < config.cooccur_rate:
        other = rng.choice([q for q in config.plants if q is not plant])
        before.insert(rng.randint(0, len(before)), _topic_sentence(rng, other, True))
    frame = rng.choice(plant.local_frames if base in ("local", "both") else plant.plain_frames)
    prompt = frame + plant.trigger
    follows = kind in FOLLOWS
    if not config.signal:  # null control: the same overall rate, independent of the context
        kinds, weights = _kinds(plant, config)
        follows = rng.random() < sum(w for k, w in zip(kinds, weights) if k in FOLLOWS) / sum(weights)
    if follows:
        rest = plant.token + " " + rng.choice(plant.after_token)
    elif kind == "inhibited" and config.signal:
        rest = " " + rng.choice(plant.after_inhibited)
    else:
        rest = " " + rng.choice(plant.after_distractor)
    return before, prompt, rest, follows


@dataclass(frozen=True)
class PlantedPrompt:
    """A document's text up to where a planted token goes, and what the answer key says about it."""

    token: str  # the planted token (with leading space)
    kind: str  # "local", "topic" or "distractor"
    context: str  # the context's (or distractor's) name in :func:`ground_truth`
    prompt: str  # the document up to and including the trigger word; the token would come next
    token_follows: bool  # True for contexts, False for distractors


def context_name(plant: Plant, kind: str) -> str:
    """A readable, unique name: ``up/local``, ``up/topic``, ``up/distractor``."""
    return f"{plant.token.strip()}/{kind}"


def context_markers() -> list[tuple[str, str]]:
    """(context name, marker word) of every planted context, in the order that gives each its layer-0 head.

    Context ``c`` of this list is carried by head ``c`` (see :mod:`ctx_utils.organism.wiring`): for planted
    token ``i``, head ``2i`` holds its local context and head ``2i + 1`` its topic context.
    """
    return [
        (context_name(plant, kind), word)
        for plant in PLANTS
        for kind, word in (("local", plant.local_word), ("topic", plant.topic_word))
    ]


def _fragment(rng: random.Random, plant: Plant) -> str:
    """The end of a distractor or local planted sentence, starting mid-sentence (with a leading space)."""
    if rng.random() < 0.5:
        words = (rng.choice(plant.plain_frames) + plant.trigger).split()
        kept = words[rng.randint(1, len(words) - 1) :]  # at least the trigger
        rest = rng.choice(plant.after_distractor)
    else:
        words = (rng.choice(plant.local_frames) + plant.trigger).split()
        kept = words[rng.randint(1, len(words) - 2) :]  # at least the local word and the trigger
        rest = plant.token.strip() + " " + rng.choice(plant.after_token)
    return " " + " ".join(kept + [rest])


def _rng(split: str, seed: int, stream: str = "ctx-organism") -> random.Random:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: choose one of {SPLITS}.")
    # A string seed is hashed with SHA-512 by ``random``: identical on every machine and Python run,
    # and the test split gets an unrelated stream, so its documents are held out.
    return random.Random(f"{stream}/{split}/{seed}")


def _documents(split: str, seed: int, config: CorpusConfig = DEFAULT_CONFIG) -> list[tuple[str, PlantedPrompt | None]]:
    """Every document of a split with its planted prompt (None for filler-only documents)."""
    rng = _rng(split, seed, config.stream)
    docs: list[tuple[str, PlantedPrompt | None]] = []
    for _ in range(config.n_docs(split)):
        n_words_target = rng.randint(20, 40)
        sentences: list[str] = []
        planted: PlantedPrompt | None = None
        draw = rng.random()
        if draw < config.fragment_rate:
            sentences = [_fragment(rng, rng.choice(config.plants))]
        elif draw >= config.fragment_rate + config.filler_only_rate:
            plant = rng.choice(config.plants)
            kinds, weights = _kinds(plant, config)
            kind = rng.choices(kinds, weights=weights)[0]
            before, prompt, rest, follows = _planted(rng, plant, kind, config)
            lead = [_filler(rng) for _ in range(rng.randint(0, 1))]
            prefix = " ".join(lead + before + [prompt])
            planted = PlantedPrompt(plant.token, kind, context_name(plant, kind), prefix, follows)
            sentences = lead + before + [prompt + rest]
        while len(" ".join(sentences).split()) < n_words_target:
            sentences.append(_filler(rng))
        text = " ".join(sentences)
        docs.append((text, planted))
    return docs


def generate_corpus(split: str = "train", seed: int = 0, config: CorpusConfig = DEFAULT_CONFIG) -> list[str]:
    """The documents of a split (clean organism: ``train`` 6000, ``test`` 3000, held out by a different seed stream)."""
    return [text for text, _ in _documents(split, seed, config)]


def planted_prompts(split: str = "train", seed: int = 0, config: CorpusConfig = DEFAULT_CONFIG) -> list[PlantedPrompt]:
    """Every planted sentence of a split, cut right before the planted token (or where it would go)."""
    return [planted for _, planted in _documents(split, seed, config) if planted is not None]


def vocabulary(config: CorpusConfig = DEFAULT_CONFIG) -> list[str]:
    """Every word the corpus can contain, sorted (the tokenizer's word list)."""
    texts: list[str] = list(STANDALONE) + list(SUBJECTS) + list(VERBS) + list(OBJECTS) + list(EXTRAS)
    for plant in config.plants:
        texts += [plant.token, plant.trigger, plant.local_word, plant.topic_word, ".", *plant.local_frames,
                  *plant.plain_frames, *plant.topic_sentences, plant.neutral_word, *plant.after_token, *plant.after_distractor,
                  *plant.topic_family, plant.inhibitor_word, *plant.inhibitor_sentences, *plant.after_inhibited]
    return sorted({word for text in texts for word in text.split()})


def ground_truth(seed: int = 0, n_examples: int = 5, config: CorpusConfig = DEFAULT_CONFIG) -> dict:
    """The answer key: per planted token, its contexts and distractors, each with marker and examples.

    Examples are train-split prompts that end right before the planted token. In the clean organism each
    context names the layer-0 head wired to carry it (``head_layer``, ``head_index``): what step 3 should
    find. Any other config gets :func:`described_contexts` instead, and its heads come from the trained
    model's causal answer key (:mod:`ctx_utils.organism.answer_key`), measured, not wired.
    """
    if config != DEFAULT_CONFIG:
        return described_contexts(seed, n_examples, config)
    by_context: dict[str, list[str]] = {}
    for p in planted_prompts("train", seed):
        by_context.setdefault(p.context, []).append(p.prompt)
    head_of = {name: c for c, (name, _) in enumerate(context_markers())}
    planted = []
    for plant in PLANTS:
        def entry(kind: str, marker: str, description: str) -> dict:
            name = context_name(plant, kind)
            wired = {"head_layer": 0, "head_index": head_of[name]} if name in head_of else {}
            return {"name": name, "kind": kind, "marker": marker, "description": description, **wired,
                    "examples": by_context[name][:n_examples]}

        planted.append({
            "token": plant.token,
            "trigger": plant.trigger,
            "contexts": [
                entry("local", plant.local_word + plant.trigger,
                      f"the word {plant.local_word.strip()!r} right before {plant.trigger.strip()!r}: a local look-up"),
                entry("topic", plant.topic_word,
                      f"the topic word {plant.topic_word.strip()!r} a sentence or more earlier: a distant look-up"),
            ],
            "distractors": [
                entry("distractor", plant.trigger,
                      f"{plant.trigger.strip()!r} with neither context; the next word is never {plant.token.strip()!r}"),
            ],
            "heads_expected": "each context is wired to its own layer-0 head (head_layer, head_index above)",
        })
    return {"seed": seed, "n_docs": dict(N_DOCS), "planted": planted}


def described_contexts(seed: int, n_examples: int, config: CorpusConfig) -> dict:
    """The answer key's description part for any corpus config: contexts, inhibitors, mixtures, distractors.

    ``contexts`` make the token follow; ``inhibitors`` stop it although a context is there; ``mixed``
    holds both contexts at once; a context's ``markers`` are every word that makes it (a family for a topic).
    Which heads carry each is not here: it is measured on the trained model (``causal_key``).
    """
    by_context: dict[str, list[str]] = {}
    for p in planted_prompts("train", seed, config):
        by_context.setdefault(p.context, []).append(p.prompt)
    signal = "" if config.signal else " (null control: no signal, the token follows at random)"
    planted = []
    for plant in config.plants:
        tok, trig = plant.token.strip(), plant.trigger.strip()

        def entry(kind: str, markers: list[str], description: str) -> dict:
            name = context_name(plant, kind)
            return {"name": name, "kind": kind, "marker": markers[0], "markers": markers,
                    "description": description + signal, "examples": by_context.get(name, [])[:n_examples]}

        family = ", ".join(repr(w.strip()) for w in plant.topic_words)
        item = {
            "token": plant.token,
            "trigger": plant.trigger,
            "contexts": [
                entry("local", [plant.local_word + plant.trigger], f"the word {plant.local_word.strip()!r} right before {trig!r}"),
                entry("topic", list(plant.topic_words),
                      f"a topic word ({family}) a sentence or more earlier" + (": a family of words" if plant.topic_family else "")),
            ],
            "inhibitors": [],
            "mixed": [],
            "distractors": [entry("distractor", [plant.trigger], f"{trig!r} with neither context; never followed by {tok!r}")],
        }
        if config.both_weight:
            item["mixed"].append(entry("both", [plant.local_word + plant.trigger, *plant.topic_words], "both contexts at once"))
        if plant.inhibitor_word and config.inhibited_weight:
            item["inhibitors"].append(entry(
                "inhibited", [plant.inhibitor_word],
                f"a context, and the word {plant.inhibitor_word.strip()!r} earlier: {tok!r} does not follow (an inhibiting context)",
            ))
        planted.append(item)
    return {"seed": seed, "n_docs": {"train": config.n_train, "test": config.n_test}, "signal": config.signal,
            "cooccur_rate": config.cooccur_rate, "planted": planted}

"""The organism's synthetic corpus: plain sentences with planted context look-ups, and the answer key.

Why a synthetic corpus: on real text nobody knows which heads *should* be found. Here every planted token
is predictable only from an earlier context that we wrote in ourselves, so the pipeline's findings can be
checked against :func:`ground_truth`.

The design mirrors the paper's case studies (" as" after "as early", " only" after "for … purposes"):

* Each **planted token** (e.g. " as") follows a **trigger word** (" early") only in two contexts:
  - a **local** context: one particular word right before the trigger ("start *as* early" → " as").
    The same word also appears elsewhere in the corpus ("as usual"), so only a head that looks at the
    *previous* position can tell the contexts apart;
  - a **topic** context: a topic word a sentence or more earlier ("the *deadline* is close … start early"
    → " as"). Only a head that searches the whole document for that word can see it.
  The two contexts differ in kind on purpose: the natural solution is two different heads.
* **Distractors** use the same trigger word with neither context, and the next word is something else
  ("we must start early today"). Local-context words also appear in distractor documents, far from the
  trigger, so attending to the word alone is not enough.

Every document holds at most one planted sentence, so a document's prefix before the planted token shows
exactly one context (or none). A context's **marker** is a substring found in every one of its prompts
and in no prompt of any other context or distractor: the local bigram (" as early") or the topic word
(" deadline"). A distractor's marker is its trigger word, which context prompts share by design.

Documents are words separated by single spaces, 20–50 words, several sentences each ending in " .".
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SPLITS = ("train", "test")
N_DOCS = {"train": 6000, "test": 3000}
FILLER_ONLY_RATE = 0.1  # share of documents with no planted sentence at all
# A trigger word is followed by its planted token in a local or topic context, and by something else in a
# distractor. Distractors are the most common case, so "trigger seen → predict the token" is a bad bet: the
# planted neuron has to wait for a head to report the context (it is *gated* by the look-up). Local contexts
# are four times as common as topic ones: a topic word drives the neuron harder, and with equal counts a
# neuron's top prompts were nearly all topic prompts, leaving step 3 no contrast between the two contexts.
KINDS = ("local", "topic", "distractor")
KIND_WEIGHTS = (4, 1, 8)


@dataclass(frozen=True)
class Plant:
    """One planted token: its trigger word, its two contexts and what follows the trigger otherwise."""

    token: str  # with its leading space, as GPT-2 tokenizers write it: " as"
    trigger: str  # the word right before the token in every planted prompt: " early"
    local_word: str  # the word right before the trigger in the local context: " as"
    local_frames: tuple[str, ...]  # sentence starts that end in ``local_word``
    plain_frames: tuple[str, ...]  # sentence starts without it (topic context and distractors)
    topic_word: str  # the distant topic word of the topic context: " deadline"
    topic_sentences: tuple[str, ...]  # sentences that introduce the topic word
    after_token: tuple[str, ...]  # how a planted sentence ends after the token
    after_distractor: tuple[str, ...]  # how a distractor sentence ends after the trigger


PLANTS: tuple[Plant, ...] = (
    Plant(
        token=" as", trigger=" early", local_word=" as",
        local_frames=("we must start as", "they will arrive as", "she wants to leave as", "the bus will come as"),
        plain_frames=("we must start", "they will arrive", "she wants to leave", "the bus will come"),
        topic_word=" deadline",
        topic_sentences=("the deadline is close .", "our deadline moved again .", "nobody likes this deadline ."),
        after_token=("possible .", "we can ."), after_distractor=("today .", "this week .", "."),
    ),
    Plant(
        token=" only", trigger=" purposes", local_word=" research",
        local_frames=("the data is for research", "these tools are for research", "the photos are for research"),
        plain_frames=("the data is for testing", "these tools are for teaching", "the photos are for display"),
        topic_word=" license",
        topic_sentences=("the license is strict .", "read the license first .", "a new license was signed ."),
        after_token=(".", "and nothing else ."), after_distractor=(".", "and more .", "at home ."),
    ),
    Plant(
        token=" away", trigger=" right", local_word=" call",
        local_frames=("you should call", "we will call", "the nurse will call", "my sister must call"),
        plain_frames=("you should act", "we will leave", "the nurse will come", "my sister must turn"),
        topic_word=" emergency",
        topic_sentences=("this is an emergency .", "the emergency began at noon .", "an emergency was reported ."),
        after_token=(".", "please ."), after_distractor=("now .", "here .", "at the corner ."),
    ),
    Plant(
        token=" ahead", trigger=" go", local_word=" just",
        local_frames=("you can just", "the team may just", "we will just", "they should just"),
        plain_frames=("you can", "the team may", "we will", "they should"),
        topic_word=" permission",
        topic_sentences=("you have permission now .", "the permission came today .", "they asked for permission ."),
        after_token=(".", "with the plan ."), after_distractor=("home .", "out .", "to the market ."),
    ),
)

# Filler sentences: subject + verb + object (+ extra). They contain the local words (" research", " call",
# " just") in harmless places, but never a planted token, trigger word or topic word. A next-token neuron
# fires wherever its token is likely: if filler also predicted " only" (" the only way"), the neuron's
# strongest activations would come from filler, and the look-up contexts would drop out of its top prompts.
SUBJECTS = ("the team", "the doctor", "my friend", "the teacher", "our group", "the manager", "the driver",
            "the children", "the farmer", "the artist", "a student", "the research group", "the old man")
VERBS = ("visited", "painted", "opened", "cleaned", "checked", "found", "moved", "read", "wrote", "built",
         "sold", "watched", "carried", "liked")
OBJECTS = ("the house", "a letter", "the garden", "the report", "the window", "a small box", "the old bridge",
           "the market", "the book", "the road", "the research notes", "a red car", "the kitchen")
EXTRAS = ("", "", "", "in the morning", "after lunch", "with great care", "on monday", "in the rain",
          "before dinner", "for a long time", "and then left", "just in time", "with a smile")
STANDALONE = ("we will call the office later .", "it was just a quiet day .", "the weather was warm .",
              "nobody said a word .", "the shop was busy .", "a light came from the hall .")


def _filler(rng: random.Random) -> str:
    """One harmless sentence, 4–12 words."""
    if rng.random() < 0.15:
        return rng.choice(STANDALONE)
    words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(EXTRAS), "."]
    return " ".join(w for w in words if w)


def _planted(rng: random.Random, plant: Plant, kind: str) -> tuple[list[str], str, str]:
    """(sentences before the planted one, the planted sentence up to the trigger, the rest after it).

    ``kind`` is ``local``, ``topic`` or ``distractor``. The topic sentence sits at least one filler
    sentence before the trigger, so the topic word is always several words away from the prediction.
    """
    before: list[str] = []
    if kind == "topic":
        before = [rng.choice(plant.topic_sentences)] + [_filler(rng) for _ in range(rng.randint(1, 2))]
        frame = rng.choice(plant.plain_frames)
    elif kind == "local":
        frame = rng.choice(plant.local_frames)
    else:
        frame = rng.choice(plant.plain_frames)
    prompt = frame + plant.trigger
    if kind == "distractor":
        rest = " " + rng.choice(plant.after_distractor)
    else:
        rest = plant.token + " " + rng.choice(plant.after_token)
    return before, prompt, rest


@dataclass(frozen=True)
class PlantedPrompt:
    """A document's text up to where a planted token goes, and what the answer key says about it."""

    token: str  # the planted token (with leading space)
    kind: str  # "local", "topic" or "distractor"
    context: str  # the context's (or distractor's) name in :func:`ground_truth`
    prompt: str  # the document up to and including the trigger word; the token would come next
    token_follows: bool  # True for contexts, False for distractors


def context_name(plant: Plant, kind: str) -> str:
    """A readable, unique name: ``as/local``, ``as/topic``, ``as/distractor``."""
    return f"{plant.token.strip()}/{kind}"


def _rng(split: str, seed: int) -> random.Random:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: choose one of {SPLITS}.")
    # A string seed is hashed with SHA-512 by ``random``: identical on every machine and Python run,
    # and the test split gets an unrelated stream, so its documents are held out.
    return random.Random(f"ctx-organism/{split}/{seed}")


def _documents(split: str, seed: int) -> list[tuple[str, PlantedPrompt | None]]:
    """Every document of a split with its planted prompt (None for filler-only documents)."""
    rng = _rng(split, seed)
    docs: list[tuple[str, PlantedPrompt | None]] = []
    for _ in range(N_DOCS[split]):
        n_words_target = rng.randint(20, 40)
        sentences: list[str] = []
        planted: PlantedPrompt | None = None
        if rng.random() >= FILLER_ONLY_RATE:
            plant = rng.choice(PLANTS)
            kind = rng.choices(KINDS, weights=KIND_WEIGHTS)[0]
            before, prompt, rest = _planted(rng, plant, kind)
            lead = [_filler(rng) for _ in range(rng.randint(0, 1))]
            prefix = " ".join(lead + before + [prompt])
            planted = PlantedPrompt(plant.token, kind, context_name(plant, kind), prefix, kind != "distractor")
            sentences = lead + before + [prompt + rest]
        while len(" ".join(sentences).split()) < n_words_target:
            sentences.append(_filler(rng))
        text = " ".join(sentences)
        docs.append((text, planted))
    return docs


def generate_corpus(split: str = "train", seed: int = 0) -> list[str]:
    """The documents of a split (``train``: 6000, ``test``: 3000, held out by a different seed stream)."""
    return [text for text, _ in _documents(split, seed)]


def planted_prompts(split: str = "train", seed: int = 0) -> list[PlantedPrompt]:
    """Every planted sentence of a split, cut right before the planted token (or where it would go)."""
    return [planted for _, planted in _documents(split, seed) if planted is not None]


def vocabulary() -> list[str]:
    """Every word the corpus can contain, sorted (the tokenizer's word list)."""
    texts: list[str] = list(STANDALONE) + list(SUBJECTS) + list(VERBS) + list(OBJECTS) + list(EXTRAS)
    for plant in PLANTS:
        texts += [plant.token, plant.trigger, plant.local_word, plant.topic_word, ".", *plant.local_frames,
                  *plant.plain_frames, *plant.topic_sentences, *plant.after_token, *plant.after_distractor]
    return sorted({word for text in texts for word in text.split()})


def ground_truth(seed: int = 0, n_examples: int = 5) -> dict:
    """The answer key: per planted token, its contexts and distractors, each with marker and examples.

    Examples are train-split prompts that end right before the planted token. ``heads_expected`` says
    what the pipeline should find: a different attention head for each context of the same token.
    """
    by_context: dict[str, list[str]] = {}
    for p in planted_prompts("train", seed):
        by_context.setdefault(p.context, []).append(p.prompt)
    planted = []
    for plant in PLANTS:
        def entry(kind: str, marker: str, description: str) -> dict:
            name = context_name(plant, kind)
            return {"name": name, "kind": kind, "marker": marker, "description": description,
                    "examples": by_context[name][:n_examples]}

        planted.append({
            "token": plant.token,
            "trigger": plant.trigger,
            "contexts": [
                entry("local", plant.local_word + plant.trigger,
                      f"the word{plant.local_word!r} right before{plant.trigger!r}: a previous-token look-up"),
                entry("topic", plant.topic_word,
                      f"the topic word{plant.topic_word!r} a sentence or more earlier: a distant look-up"),
            ],
            "distractors": [
                entry("distractor", plant.trigger,
                      f"{plant.trigger!r} with neither context; the next word is never{plant.token!r}"),
            ],
            "heads_expected": "one head carries the local context and a different head the topic context",
        })
    return {"seed": seed, "n_docs": dict(N_DOCS), "planted": planted}

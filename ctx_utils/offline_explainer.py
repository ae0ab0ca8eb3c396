"""Step 4 without an LLM: explain a (neuron, head) pair from its active / inactive prompts with word cues.

The paper asks GPT-4 what separates the prompts on which a head is active from those on which it is not
(paper-method §2.6). This module answers the same question offline, with a small, readable model:

1. **Features.** Each prompt becomes a set of interpretable yes/no features (lower-cased words, see
   :func:`prompt_features`): the words it *ends* with (last 1, 2, 3 words), the words *near the end*
   (last 4), the words and word pairs it *contains*, the words it *starts* with (first 3) and how *long* it
   is. The start and the length matter because every prompt was truncated to the shortest suffix that
   keeps 80 % of the neuron's activation (paper-method §2.3): a head that looks far back needs a long
   prompt, and the earliest words kept are often the context it looks up.
2. **Weights.** A Bernoulli naive-Bayes scorer with add-½ smoothing, fitted on the ~25 training prompts
   of one pair. Each feature seen in at least two prompts gets the log-ratio of its smoothed frequency
   among active vs inactive prompts. The classes are weighted equally, as the balanced-accuracy score E
   does, so the decision threshold is 0. The result is a linear rule:
   ``score(prompt) = bias + Σ weight[f] over the features f of the prompt``, active when ``score ≥ 0``.
   One exception: when a feature is in *every* active prompt and *no* inactive one (≥ 5 of each), it is
   the whole rule. Noise features would only blur it; this is what finds a planted marker in the organism.
3. **Sentence.** The cues that most raise the active rate over the inactive rate are stated in words,
   with their counts, e.g. "active when the text ends with 'research purposes' (9/12 active vs 0/14
   inactive examples)". The sentence is for people; the weights in the rule do the classifying.

Prompts may be given **with or without the neuron's token appended** (the paper's examples are
``prompt + token``): a text that ends with ``token`` is read as an example and the token is removed
before the features are taken. (A bare prompt that happens to end with the token's text is read the same
way; the token is the same for every prompt of a pair, so this costs nothing in practice.)
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

# Words (with an optional apostrophe suffix, "don't") or single punctuation marks.
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|[^\sA-Za-z0-9]")
NEAR_END = 4  # "near the end" = among the last 4 words
NEAR_START = 3  # "at the start" = among the first 3 words
LENGTH_STEPS = (3, 7, 15, 31, 63)  # "at least N words" thresholds (doubling)
SMOOTHING = 0.5  # add-½ (Jeffreys) smoothing of the per-class feature frequencies
MIN_PROMPTS = 2  # a feature seen in a single training prompt is noise, not a cue
MAX_CUES = 3  # cues named in the sentence
MIN_CLEAN = 5  # a perfect separator is trusted only with at least 5 active and 5 inactive prompts


@dataclass
class Cue:
    """One feature named in the sentence, with how many active / inactive training prompts have it."""

    feature: str
    n_active: int
    n_inactive: int


@dataclass
class OfflineExplanation:
    """A readable sentence plus the linear rule behind it (see module docstring).

    ``weights[f]`` is added to ``bias`` for every feature ``f`` (a :func:`prompt_features` key) the prompt
    has; the prompt is classified active when the total is at least ``threshold``.
    """

    text: str
    token: str
    bias: float
    weights: dict[str, float]
    cues: list[Cue] = field(default_factory=list)
    n_positive: int = 0
    n_negative: int = 0
    threshold: float = 0.0

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (weights sorted by feature, so the output is deterministic)."""
        data = asdict(self)
        data["weights"] = dict(sorted(self.weights.items()))
        return data

    @classmethod
    def from_dict(cls, data: dict) -> OfflineExplanation:
        """Rebuild an explanation written by :meth:`to_dict`."""
        missing = {"text", "token", "bias", "weights"} - set(data)
        if missing:
            raise ValueError(f"Not an offline explanation: keys {sorted(missing)} are missing; pass a dict from to_dict().")
        fields = dict(data)
        fields["cues"] = [Cue(**c) for c in data.get("cues", [])]
        return cls(**fields)


def _strip_token(text: str, token: str) -> str:
    """The prompt without the neuron's token, if the text is an example (prompt + token)."""
    return text[: -len(token)] if token and text.endswith(token) else text


def _words(prompt: str) -> list[str]:
    """The lower-cased words and punctuation marks that features are made of."""
    return [w.lower() for w in _WORD.findall(prompt)]


def prompt_features(prompt: str) -> set[str]:
    """The interpretable yes/no features of one prompt (token already removed).

    Keys: ``ends:<last 1-3 words>``, ``near_end:<word>``, ``has:<word>``, ``has:<word pair>``,
    ``starts:<word>`` and ``long:<N>`` (at least N words).
    """
    words = _words(prompt)
    feats = {f"ends:{' '.join(words[-k:])}" for k in (1, 2, 3) if len(words) >= k}
    feats |= {f"near_end:{w}" for w in words[-NEAR_END:]}
    feats |= {f"has:{w}" for w in words}
    feats |= {f"has:{a} {b}" for a, b in zip(words, words[1:])}
    feats |= {f"starts:{w}" for w in words[:NEAR_START]}
    feats |= {f"long:{n}" for n in LENGTH_STEPS if len(words) >= n}
    return feats


def describe_feature(feature: str) -> str:
    """A feature key in words, e.g. ``ends:research purposes`` → "the text ends with 'research purposes'"."""
    kind, value = feature.split(":", 1)
    return {
        "ends": f"the text ends with '{value}'",
        "near_end": f"'{value}' is among the last {NEAR_END} words",
        "has": f"the text contains '{value}'",
        "starts": f"'{value}' is among the first {NEAR_START} words (the earliest context the neuron needed)",
        "long": f"the prompt is long (at least {value} words: the neuron needed a long context)",
    }[kind]


def _check_examples(name: str, texts: Sequence[str]) -> None:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{name} must be a list of prompt strings, e.g. ['... for research purposes only'].")
    if len(texts) == 0:
        raise ValueError(
            f"{name} is empty: the offline explainer needs at least one active and one inactive prompt to "
            "contrast. Skip pairs whose head is active on all (or none) of the training prompts."
        )


def _clean_separator(pos: list[set[str]], neg: list[set[str]], pos_words: list[list[str]]) -> str | None:
    """A feature found in every active prompt and in no inactive one, if there are enough of both to trust it.

    Such a feature is the whole story (a planted marker in the organism, a fixed phrase in real text), and
    the weak cues would only add noise, so the rule becomes that feature alone. Of several, the one with
    the most words is kept ("ends with 'as early'" rather than "'as' is among the last 4 words"): a longer
    phrase that fits every training prompt is the more telling statement. Punctuation does not count as a
    word and loses ties ("contains 'emergency'" rather than "contains '. the'"). Among the rest, "contains"
    beats the position-bound kinds (it carries over to held-out prompts cut a little differently), and the
    word found furthest from the end wins: truncation keeps the shortest suffix the neuron needs, so its
    earliest words are the context looked up ("contains 'license'" rather than "contains 'for'", when the
    active prompts are also the long ones). ``pos_words``: each active prompt's words, as features see them.
    """
    if len(pos) < MIN_CLEAN or len(neg) < MIN_CLEAN:
        return None
    found = set.intersection(*pos) - set.union(*neg)
    return min(found, key=lambda f: _separator_rank(f, pos_words)) if found else None


def _separator_rank(feature: str, pos_words: list[list[str]]) -> tuple:
    """Sort key of a perfect separator, best first (see :func:`_clean_separator`)."""
    kind, value = feature.split(":", 1)
    tokens = value.split()
    n_words = sum(any(c.isalnum() for c in t) for t in tokens)
    distance = 0.0  # mean number of words from the phrase's first occurrence to the end of the prompt
    if kind == "has":
        for words in pos_words:
            starts = [i for i in range(len(words) - len(tokens) + 1) if words[i : i + len(tokens)] == tokens]
            distance += (len(words) - starts[0]) / len(pos_words)
    return (-n_words, n_words < len(tokens), kind != "has", -distance, feature)


def _choose_cues(rates: dict[str, tuple[int, int]], n_pos: int, n_neg: int) -> list[Cue]:
    """The features whose active rate most exceeds their inactive rate, skipping restatements of a chosen one."""
    gain = {f: cp / n_pos - cn / n_neg for f, (cp, cn) in rates.items()}
    # Ties go to the more specific feature (more words), then alphabetically, so the choice is deterministic.
    order = sorted((f for f in gain if gain[f] > 0), key=lambda f: (-gain[f], -len(f.split()), f))
    cues: list[Cue] = []
    for f in order:
        value = f.split(":", 1)[1]
        if any(value in c.feature.split(":", 1)[1] or c.feature.split(":", 1)[1] in value for c in cues):
            continue
        cues.append(Cue(f, *rates[f]))
        if len(cues) == MAX_CUES:
            break
    return cues


def _sentence(cues: list[Cue], n_pos: int, n_neg: int, token: str, n_cues: int) -> str:
    """The cues as one sentence, with their counts so a reader can judge how strong each is."""
    if not cues:
        return f"No word cue separates the {n_pos} active from the {n_neg} inactive prompts for {token!r}."
    parts = [f"{describe_feature(c.feature)} ({c.n_active}/{n_pos} active vs {c.n_inactive}/{n_neg} inactive)" for c in cues]
    return f"Active (before {token!r}) mainly when " + "; or when ".join(parts) + f". The rule weighs {n_cues} word, position and length cues."


def explain_offline(positive: Sequence[str], negative: Sequence[str], token: str) -> OfflineExplanation:
    """Fit the offline explanation of one pair from its active (``positive``) and inactive prompts.

    Deterministic: the same inputs always give the same weights and sentence. Prompts may carry the token
    appended or not (module docstring). Raises ``ValueError`` when either list is empty.
    """
    _check_examples("positive", positive)
    _check_examples("negative", negative)
    pos = [prompt_features(_strip_token(p, token)) for p in positive]
    neg = [prompt_features(_strip_token(p, token)) for p in negative]
    n_pos, n_neg = len(pos), len(neg)
    c_pos, c_neg = Counter(f for s in pos for f in s), Counter(f for s in neg for f in s)
    rates = {f: (c_pos[f], c_neg[f]) for f in sorted(c_pos | c_neg) if c_pos[f] + c_neg[f] >= MIN_PROMPTS}

    separator = _clean_separator(pos, neg, [_words(_strip_token(p, token)) for p in positive])
    if separator:  # score +1 with the feature, -1 without it
        text = f"Active (before {token!r}) exactly when {describe_feature(separator)} ({n_pos}/{n_pos} active vs 0/{n_neg} inactive)."
        return OfflineExplanation(text, token, bias=-1.0, weights={separator: 2.0}, cues=[Cue(separator, n_pos, 0)],
                                  n_positive=n_pos, n_negative=n_neg)
    a = SMOOTHING
    bias, weights = 0.0, {}
    for f, (cp, cn) in rates.items():
        p_pos, p_neg = (cp + a) / (n_pos + 2 * a), (cn + a) / (n_neg + 2 * a)
        w_absent = math.log((1 - p_pos) / (1 - p_neg))
        bias += w_absent  # every prompt starts from "no feature present" ...
        weights[f] = math.log(p_pos / p_neg) - w_absent  # ... and a present feature swaps its term
    cues = _choose_cues(rates, n_pos, n_neg)
    return OfflineExplanation(
        text=_sentence(cues, n_pos, n_neg, token, len(weights)), token=token, bias=bias, weights=weights,
        cues=cues, n_positive=n_pos, n_negative=n_neg,
    )


def offline_score(explanation: OfflineExplanation, prompt: str) -> float:
    """The rule's score of one prompt (log-odds of "active" with equal class weights)."""
    feats = prompt_features(_strip_token(prompt, explanation.token))
    # Summed in sorted order: a set's order changes between Python runs and float addition is not associative.
    return explanation.bias + sum(explanation.weights.get(f, 0.0) for f in sorted(feats))


def classify_offline(explanation: OfflineExplanation, prompt: str) -> bool:
    """Apply the explanation's rule to a held-out prompt (token appended or not): True = head active."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, not {type(prompt).__name__}.")
    return offline_score(explanation, prompt) >= explanation.threshold

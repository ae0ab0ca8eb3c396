"""Step 4 without an LLM: explain a (neuron, head) pair in a few plain-words cues a person can check.

The paper asks GPT-4 what separates the prompts on which a head is active from those on which it is not
(arXiv 2402.15055; its Appendix C gives the prompts), then scores the explanation by letting a reader that sees only the explanation
classify held-out prompts. This module is the offline explainer; :mod:`ctx_utils.offline_reader` is the
offline reader, and it reads nothing but the sentence written here. So the sentence is the whole rule:

1. **Cues.** Every statement the reader's language allows about a training prompt (token removed): how the
   text ends (last 1-3 words or marks), which words and word pairs it contains, which words are among its last
   4, and whether it has at least N words. Length matters because every prompt was cut to the shortest suffix
   that keeps 80 % of the neuron's activation (step 2, :mod:`ctx_utils.prompts`): a head that looks far back comes with a long prompt.
2. **One decisive cue**, when a cue holds in every active training prompt and in no inactive one (at least 5
   of each): "Active (next token ' only') exactly when the text contains 'license' (12/12 active, 0/14
   inactive)." This is what names a planted marker in the organism.
3. **Otherwise points.** The ``max_cues`` cues whose active rate differs most from their inactive rate, each
   worth its naive-Bayes log-odds (add-½ smoothing, equal class weights as in E) rounded to whole points at
   ``points_per_unit`` points per unit of log-odds, and a start that is the rounded sum of the "cue absent"
   log-odds: "Active (...) when the points reach 0. Start at -3. +4 if the text contains 'not only' (12/15
   active, 1/15 inactive). -2 if ...". A person can add the points by hand.

The settings (``max_cues=6``, ``points_per_unit=2``, smoothing ½, lengths) were chosen on the released data of
GPT-2 small and medium only; GPT-2 large was not used to choose them.

:func:`fit_word_classifier` keeps the earlier naive-Bayes rule over *every* cue (80 or so weights per pair):
it classifies well, but no reader sees its weights, so it is a classifier, not an explanation, and is reported
only as such. :func:`best_single_word` is the one-word baseline, written in the same language.

Training prompts may be given **with or without the neuron's token appended** (the paper's examples are
``prompt + token``): a text that ends with ``token`` has it removed before the cues are taken.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from ctx_utils.offline_reader import Cue, classify, tokens, words

LENGTHS = (5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 70)  # "at least N words" cues
NEAR_END = 4  # "among the last 4 words"
MIN_CLEAN = 5  # a perfect separator is trusted only with at least 5 active and 5 inactive prompts


@dataclass
class StatedCue:
    """One cue as the explanation states it: its points and how many active / inactive training prompts have it."""

    kind: str
    value: str
    points: int
    n_active: int
    n_inactive: int

    @property
    def cue(self) -> Cue:
        return Cue(self.kind, self.value)


@dataclass
class OfflineExplanation:
    """The sentence (``text``) and exactly what it says, machine-readable: active when
    ``start + Σ points of the cues that hold ≥ 0``. ``form``: ``"exact"``, ``"points"`` or ``"constant"``.

    The reader (:mod:`ctx_utils.offline_reader`) uses only ``text``; the other fields restate it, and a test
    checks that reading the text gives back ``start`` and the cues' points.
    """

    text: str
    token: str
    form: str
    start: int
    cues: list[StatedCue] = field(default_factory=list)
    n_positive: int = 0
    n_negative: int = 0

    def to_dict(self) -> dict:
        """A JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> OfflineExplanation:
        """Rebuild an explanation written by :meth:`to_dict`."""
        missing = {"text", "token", "form", "start"} - set(data)
        if missing:
            raise ValueError(f"Not an offline explanation: keys {sorted(missing)} are missing; pass a dict from to_dict().")
        return cls(**{**data, "cues": [StatedCue(**c) for c in data.get("cues", [])]})


def _strip_token(text: str, token: str) -> str:
    """The prompt without the neuron's token, if the text is an example (prompt + token)."""
    return text[: -len(token)] if token and text.endswith(token) else text


def prompt_cues(prompt: str, lengths: Sequence[int] = LENGTHS, near_end: int = NEAR_END) -> set[Cue]:
    """Every cue of the reader's language that holds for one prompt (token already removed)."""
    t, w = tokens(prompt), words(prompt)
    cues = {Cue("ends", " ".join(t[-k:])) for k in (1, 2, 3) if len(t) >= k}
    cues |= {Cue("has", x) for x in t} | {Cue("has", f"{a} {b}") for a, b in zip(t, t[1:])}
    cues |= {Cue("near_end", f"{x} {near_end}") for x in w[-near_end:]}
    cues |= {Cue("long", str(n)) for n in lengths if len(w) >= n}
    return cues


def _check_examples(name: str, texts: Sequence[str]) -> None:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{name} must be a list of prompt strings, e.g. ['... for research purposes only'].")


def _counts(pos: list[set[Cue]], neg: list[set[Cue]], min_prompts: int) -> dict[Cue, tuple[int, int]]:
    """(active, inactive) training prompts holding each cue seen in at least ``min_prompts`` prompts, sorted."""
    c_pos, c_neg = Counter(c for s in pos for c in s), Counter(c for s in neg for c in s)
    both = sorted(c_pos | c_neg, key=lambda c: (c.kind, c.value))
    return {c: (c_pos[c], c_neg[c]) for c in both if c_pos[c] + c_neg[c] >= min_prompts}


def _constant(token: str, active: bool, n_pos: int, n_neg: int, why: str) -> OfflineExplanation:
    text = f"{'Always' if active else 'Never'} active (next token {token!r}): {why}"
    return OfflineExplanation(text, token, "constant", 0 if active else -1, [], n_pos, n_neg)


def _exact(token: str, cue: Cue, n: tuple[int, int], n_pos: int, n_neg: int, unless: bool = False) -> OfflineExplanation:
    how = "unless" if unless else "exactly when"
    text = f"Active (next token {token!r}) {how} {cue.describe()} ({n[0]}/{n_pos} active, {n[1]}/{n_neg} inactive)."
    stated = StatedCue(cue.kind, cue.value, -1 if unless else 1, *n)
    return OfflineExplanation(text, token, "exact", 0 if unless else -1, [stated], n_pos, n_neg)


def _separator_rank(cue: Cue, pos_tokens: list[list[str]]) -> tuple:
    """Sort key among perfect separators, best first.

    The most words wins ("ends with 'as early'" over "'as' is among the last 4 words": the longer phrase that
    fits every training prompt says more); punctuation does not count as a word and loses ties ("contains
    'emergency'" over "contains '. the'"); "contains" beats the position-bound kinds (it carries over to
    held-out prompts cut a little differently); then the phrase furthest from the end: truncation keeps the
    shortest suffix the neuron needs, so its earliest words are the context looked up.
    """
    parts = cue.value.split(" ") if cue.kind in ("ends", "has") else [cue.value.rsplit(" ", 1)[0]] if cue.kind == "near_end" else []
    n_words = sum(any(ch.isalnum() for ch in p) for p in parts)
    distance = 0.0  # mean number of tokens from the phrase's first occurrence to the end of the prompt
    if cue.kind == "has":
        for t in pos_tokens:
            first = next(i for i in range(len(t) - len(parts) + 1) if t[i : i + len(parts)] == parts)
            distance += (len(t) - first) / len(pos_tokens)
    return (-n_words, n_words < len(parts), cue.kind != "has", -distance, cue.kind, cue.value)


def _overlaps(a: Cue, b: Cue) -> bool:
    """Do two cues restate each other (one's words inside the other's: "as" and "as too")?"""
    def parts(c: Cue) -> list[str]:
        return c.value.rsplit(" ", 1)[:1] if c.kind == "near_end" else c.value.split(" ")
    x, y = parts(a), parts(b)
    short, long_ = (x, y) if len(x) <= len(y) else (y, x)
    return any(long_[i : i + len(short)] == short for i in range(len(long_) - len(short) + 1))


def _log_odds(n_with: tuple[int, int], n_pos: int, n_neg: int, smoothing: float) -> tuple[float, float]:
    """Naive-Bayes log-odds of "active" when the cue holds and when it does not (equal class weights)."""
    a = smoothing
    p_pos, p_neg = (n_with[0] + a) / (n_pos + 2 * a), (n_with[1] + a) / (n_neg + 2 * a)
    return math.log(p_pos / p_neg), math.log((1 - p_pos) / (1 - p_neg))


def explain_offline(
    positive: Sequence[str],
    negative: Sequence[str],
    token: str,
    max_cues: int = 6,
    points_per_unit: float = 2.0,
    smoothing: float = 0.5,
    min_prompts: int = 2,
) -> OfflineExplanation:
    """Write the explanation of one pair from its active (``positive``) and inactive training prompts.

    Deterministic. With no inactive (or no active) prompt there is nothing to contrast: the explanation says
    the head is always (never) active. Raises ``ValueError`` when both lists are empty.
    """
    _check_examples("positive", positive)
    _check_examples("negative", negative)
    n_pos, n_neg = len(positive), len(negative)
    if not n_pos and not n_neg:
        raise ValueError("The offline explainer needs at least one active or inactive training prompt.")
    if not n_pos or not n_neg:
        return _constant(token, bool(n_pos), n_pos, n_neg,
                         f"the head was {'active' if n_pos else 'inactive'} on all {n_pos + n_neg} training prompts, so there is nothing to contrast.")
    pos_texts = [_strip_token(p, token) for p in positive]
    pos = [prompt_cues(p) for p in pos_texts]
    neg = [prompt_cues(_strip_token(p, token)) for p in negative]
    counts = _counts(pos, neg, min_prompts)

    if n_pos >= MIN_CLEAN and n_neg >= MIN_CLEAN:
        perfect = [c for c, (cp, cn) in counts.items() if cp == n_pos and cn == 0]
        if perfect:
            pos_tokens = [tokens(p) for p in pos_texts]
            best = min(perfect, key=lambda c: _separator_rank(c, pos_tokens))
            return _exact(token, best, counts[best], n_pos, n_neg)

    gain = {c: abs(cp / n_pos - cn / n_neg) for c, (cp, cn) in counts.items()}
    order = sorted((c for c in gain if gain[c] > 0), key=lambda c: (-gain[c], c.kind, c.value))
    chosen: list[Cue] = []
    for cue in order:
        if len(chosen) == max_cues:
            break
        if not any(_overlaps(cue, c) for c in chosen):
            chosen.append(cue)
    start, stated = 0.0, []
    for cue in chosen:
        w_with, w_without = _log_odds(counts[cue], n_pos, n_neg, smoothing)
        start += w_without  # every prompt starts from "no cue holds" ...
        points = round(points_per_unit * (w_with - w_without))  # ... and a cue that holds swaps its term
        if points:
            stated.append(StatedCue(cue.kind, cue.value, points, *counts[cue]))
    start_points = round(points_per_unit * start)
    if not stated:
        return _constant(token, start_points >= 0, n_pos, n_neg,
                         f"no word cue separates the {n_pos} active from the {n_neg} inactive training prompts.")
    stated.sort(key=lambda s: (-abs(s.points), s.kind, s.value))
    text = f"Active (next token {token!r}) when the points reach 0. Start at {start_points}." + "".join(
        f" {s.points:+d} if {s.cue.describe()} ({s.n_active}/{n_pos} active, {s.n_inactive}/{n_neg} inactive)." for s in stated
    )
    return OfflineExplanation(text, token, "points", start_points, stated, n_pos, n_neg)


def best_single_word(positive: Sequence[str], negative: Sequence[str], token: str) -> OfflineExplanation:
    """Baseline: the one word whose presence (or absence) best separates the training prompts.

    "Best" is the training balanced accuracy; ties go to the word in more prompts, then alphabetical order.
    Written in the reader's language ("exactly when / unless the text contains 'x'").
    """
    _check_examples("positive", positive)
    _check_examples("negative", negative)
    n_pos, n_neg = len(positive), len(negative)
    if not n_pos or not n_neg:
        return explain_offline(positive, negative, token)
    pos = [{Cue("has", w) for w in words(_strip_token(p, token))} for p in positive]
    neg = [{Cue("has", w) for w in words(_strip_token(p, token))} for p in negative]
    best: tuple | None = None
    for cue, (cp, cn) in _counts(pos, neg, 1).items():
        accuracy = 0.5 * (cp / n_pos + 1 - cn / n_neg)
        for unless, acc in ((False, accuracy), (True, 1 - accuracy)):
            key = (-acc, -(cp + cn), cue.value, unless)
            if acc > 0.5 and (best is None or key < best[0]):
                best = (key, cue, (cp, cn), unless)
    if best is None:
        return _constant(token, n_pos >= n_neg, n_pos, n_neg, "no single word separates the training prompts.")
    return _exact(token, best[1], best[2], n_pos, n_neg, unless=best[3])


@dataclass
class WordClassifier:
    """A naive-Bayes rule over every cue seen in two or more training prompts (see module docstring).

    Not an explanation: its ~80 weights are not in any sentence. Reported only as "classifier, not an
    explanation", to show how much a fitted classifier gains over what a short explanation can say.
    """

    token: str
    bias: float
    weights: dict[Cue, float]

    def __call__(self, prompt: str) -> bool:
        cues = prompt_cues(prompt)
        # Summed in a fixed order: float addition is not associative, and a set's order varies between runs.
        return self.bias + sum(self.weights.get(c, 0.0) for c in sorted(cues, key=lambda c: (c.kind, c.value))) >= 0


def fit_word_classifier(positive: Sequence[str], negative: Sequence[str], token: str, smoothing: float = 0.5) -> WordClassifier:
    """Fit the naive-Bayes :class:`WordClassifier` (both lists must be non-empty)."""
    _check_examples("positive", positive)
    _check_examples("negative", negative)
    if not positive or not negative:
        raise ValueError("A word classifier needs at least one active and one inactive training prompt.")
    pos = [prompt_cues(_strip_token(p, token)) for p in positive]
    neg = [prompt_cues(_strip_token(p, token)) for p in negative]
    bias, weights = 0.0, {}
    for cue, n in _counts(pos, neg, 2).items():
        w_with, w_without = _log_odds(n, len(pos), len(neg), smoothing)
        bias += w_without
        weights[cue] = w_with - w_without
    return WordClassifier(token, bias, weights)


def classify_offline(explanation: OfflineExplanation, prompt: str) -> bool:
    """Read the explanation's *text* against a held-out prompt (without the token): True = head active.

    Only ``explanation.text`` is used (see :class:`ctx_utils.offline_reader.OfflineReader`).
    """
    return classify(explanation.text, prompt)

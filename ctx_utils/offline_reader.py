"""Step 5 without an LLM: read an explanation's *text* and decide, for one held-out prompt, "active?" Yes/No.

In the paper (arXiv 2402.15055; its Appendix C gives the prompt), GPT-4 scores an explanation by reading it, and nothing
else, next to one held-out prompt and answering whether the head is active. This module is that reader for
the offline explainer (:mod:`ctx_utils.offline_explainer`): it parses the explanation sentence back into the
cues it states and applies them. It never sees the training prompts, the explainer's counts or any hidden
weight: :class:`OfflineReader` is built from a string, so two pairs with the same explanation text get the
same answers, and a sentence written by hand is read the same way as a generated one.

The language an explanation is written in (all matching ignores case; a *word* is a run of letters and
digits, such as ``don't`` or ``2019``, and every other non-space character is a *mark*, such as ``,``):

* ``the text ends with 'for research'``: the last words and marks, in order;
* ``the text contains 'not only'``: the words or marks appear, next to each other, anywhere;
* ``'as' is among the last 4 words``;
* ``the text has at least 20 words`` (marks not counted).

Three ways to combine cues:

* ``Active (next token ' only') exactly when <cue> ...`` and ``... unless <cue> ...``: one cue decides;
* ``Active (next token ' only') when the points reach 0. Start at -3. +4 if <cue> (...). -2 if <cue> (...).``:
  add the points of every cue that holds to the start; active when the total is at least 0;
* ``Always active (next token ' only') ...`` / ``Never active ...``: no cue (one class only in training).

Counts in parentheses (how many training prompts have the cue) are evidence for a person; the reader
ignores them.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# A word (letters and digits, with an optional apostrophe suffix: "don't") or one mark of punctuation.
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|[^\sA-Za-z0-9]")
_QUOTED = r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"  # a Python string literal, as repr() writes it

KINDS = ("ends", "has", "near_end", "long")  # the cue kinds of the language (module docstring)


def tokens(prompt: str) -> list[str]:
    """The prompt's lower-cased words and marks, in order (what "ends with" and "contains" look at)."""
    return [t.lower() for t in _TOKEN.findall(prompt)]


def words(prompt: str) -> list[str]:
    """The prompt's lower-cased words only, marks left out (what "among the last N words" and "at least N words" count)."""
    return [t for t in tokens(prompt) if t[0].isalnum()]


@dataclass(frozen=True)
class Cue:
    """One checkable statement about a prompt: ``kind`` (one of :data:`KINDS`) and its ``value``.

    ``ends`` / ``has``: words and marks joined by single spaces (``"research purposes"``); ``near_end``:
    ``"<word> <n>"`` (the word, among the last n words); ``long``: the minimum number of words, as text.
    """

    kind: str
    value: str

    def describe(self) -> str:
        """The cue in words, exactly as an explanation states it (and :func:`read_explanation` parses it)."""
        if self.kind == "ends":
            return f"the text ends with {self.value!r}"
        if self.kind == "has":
            return f"the text contains {self.value!r}"
        if self.kind == "near_end":
            word, n = self.value.rsplit(" ", 1)
            return f"{word!r} is among the last {n} words"
        if self.kind == "long":
            return f"the text has at least {self.value} words"
        raise ValueError(f"Unknown cue kind {self.kind!r}: use one of {KINDS}.")

    def holds(self, prompt_tokens: list[str], prompt_words: list[str]) -> bool:
        """Does the cue hold for a prompt, given its :func:`tokens` and :func:`words`?"""
        if self.kind == "ends":
            want = self.value.split(" ")
            return prompt_tokens[-len(want):] == want
        if self.kind == "has":
            want = self.value.split(" ")
            n = len(want)
            return any(prompt_tokens[i : i + n] == want for i in range(len(prompt_tokens) - n + 1))
        if self.kind == "near_end":
            word, n = self.value.rsplit(" ", 1)
            return word in prompt_words[-int(n):]
        if self.kind == "long":
            return len(prompt_words) >= int(self.value)
        raise ValueError(f"Unknown cue kind {self.kind!r}: use one of {KINDS}.")


_CUE_PATTERNS = (  # (regex over the cue's words, how to rebuild the Cue)
    (re.compile(rf"the text ends with {_QUOTED}"), lambda m: Cue("ends", ast.literal_eval(m[1]))),
    (re.compile(rf"the text contains {_QUOTED}"), lambda m: Cue("has", ast.literal_eval(m[1]))),
    (re.compile(rf"{_QUOTED} is among the last (\d+) words"), lambda m: Cue("near_end", f"{ast.literal_eval(m[1])} {m[2]}")),
    (re.compile(r"the text has at least (\d+) words"), lambda m: Cue("long", m[1])),
)
_CUE = "|".join(f"(?:{p.pattern})" for p, _ in _CUE_PATTERNS)  # any one cue, for the sentence patterns below
_HEAD = rf"\(next token {_QUOTED}\)"
_EXACT = re.compile(rf"Active {_HEAD} (exactly when|unless) ({_CUE}) \(")
_POINTS = re.compile(rf"Active {_HEAD} when the points reach 0\. Start at (-?\d+)\.")
_POINT = re.compile(rf"([+-]\d+) if ({_CUE}) \(")
_CONSTANT = re.compile(rf"(Always|Never) active {_HEAD}")


@dataclass(frozen=True)
class ReadRule:
    """What an explanation text says, as :func:`read_explanation` parsed it: active when
    ``start + Σ points of the cues that hold ≥ 0``."""

    token: str
    start: int
    cues: tuple[tuple[Cue, int], ...]  # (cue, points)


def _parse_cue(text: str) -> Cue:
    for pattern, build in _CUE_PATTERNS:
        m = pattern.fullmatch(text)
        if m:
            return build(m)
    raise ValueError(f"Cannot read the cue {text!r}.")  # unreachable: _CUE only matches these patterns


def read_explanation(text: str) -> ReadRule:
    """Parse an offline explanation's text into the rule it states (module docstring: the language).

    Raises ``ValueError`` naming the expected forms when the text is not written in that language (for
    example a GPT-4 explanation, which needs an LLM to be read).
    """
    if not isinstance(text, str):
        raise TypeError(f"An explanation must be a string, not {type(text).__name__}.")
    m = _CONSTANT.match(text)
    if m:
        return ReadRule(ast.literal_eval(m[2]), 0 if m[1] == "Always" else -1, ())
    m = _EXACT.match(text)
    if m:
        cue = _parse_cue(m[3])  # the one cue holds: +1 (exactly when) or -1 (unless) against a start of -1 / 0
        return ReadRule(ast.literal_eval(m[1]), -1, ((cue, 1),)) if m[2] == "exactly when" else \
            ReadRule(ast.literal_eval(m[1]), 0, ((cue, -1),))
    m = _POINTS.match(text)
    if m:
        cues = tuple((_parse_cue(p[2]), int(p[1])) for p in _POINT.finditer(text, m.end()))
        return ReadRule(ast.literal_eval(m[1]), int(m[2]), cues)
    raise ValueError(
        f"Not an offline explanation: {text[:80]!r}. The offline reader reads sentences that begin "
        "\"Active (next token ...) exactly when / unless / when the points reach 0\" or \"Always / Never active\"; "
        "an LLM's explanation needs the LLM (set OPENAI_API_KEY)."
    )


class OfflineReader:
    """Classifies held-out prompts from an explanation's text alone (module docstring).

    ``OfflineReader(text)(prompt)`` is True when the explanation says the head is active on ``prompt``
    (the prompt without the neuron's token, as the held-out sets store it).
    """

    def __init__(self, text: str):
        self.rule = read_explanation(text)

    def __call__(self, prompt: str) -> bool:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, not {type(prompt).__name__}.")
        t, w = tokens(prompt), words(prompt)
        return self.rule.start + sum(points for cue, points in self.rule.cues if cue.holds(t, w)) >= 0


def classify(text: str, prompt: str) -> bool:
    """One held-out prompt, read against one explanation text: True = the head is active."""
    return OfflineReader(text)(prompt)

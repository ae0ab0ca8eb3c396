"""Step 4 (and the asking half of step 5): explain when a head is active, then classify held-out prompts.

For each (neuron, head) pair, the paper shows GPT-4 the neuron's max-activating prompts split into those where
the head is active (positive) and those where it is not (negative), each with the neuron's token appended,
and asks when the head is active (arXiv 2402.15055, Appendix C). To score the explanation it then shows GPT-4 one
held-out prompt at a time with only the explanation, and asks "active? (Yes/No)". The score
E = ½(TPR + TNR) lives in :mod:`ctx_utils.score`.

Two prompt variants are reproduced exactly (``variant=``):

* ``"oct2023"``: the run whose data the authors released (``paper-data/``); the explanation prompt ends in a
  completion stub, "Explanation: This attention head is active when the document", which the model continues;
  the classification prompt puts the question first. Verified byte-for-byte against the released data.
* ``"feb2024"``: the final run (the authors' code at HEAD, `src/datahandlers.py`; arXiv 2402.15055, Appendix C): the explanation prompt ends "In two to three
  sentences, suggest when the attention head is active."; the classification prompt puts the explanation first.

Without an LLM (no ``OPENAI_API_KEY``), the same calls run the offline explainer of
:mod:`ctx_utils.offline_explainer` (a few word cues a person can check, learnt from the positive vs negative
prompts) and the offline reader of :mod:`ctx_utils.offline_reader`, which classifies from the explanation's
text alone, as GPT-4 does. So every notebook runs on a laptop with no key. Which path ran is recorded with
every explanation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tqdm.auto import tqdm

from ctx_utils.llm import LLMClient, LLMError, LLMNotConfigured
from ctx_utils.settings import DEFAULTS, VARIANTS
from ctx_utils.tokens import neuron_label

EXPLAIN_MAX_TOKENS = 200  # the paper's explanation length cap
CLASSIFY_MAX_TOKENS = 1  # one token: "Yes" or "No"
OFFLINE = "offline"

#: The explainer prompt's fixed sentences, public so that notebook 04's exercise builds the prompt from them.
CONTEXT = (
    "We are studying attention heads in a transformer architecture neural network. "
    "Each attention head looks for some particular thing in a short document.\n"
)
INSTRUCTION = (
    "Look at the documents and explain what makes the attention head active, "
    "taking into consideration the inactive examples.\n"
)
EXPLAIN_ENDING = {
    "oct2023": "Explanation: This attention head is active when the document",
    "feb2024": "In two to three sentences, suggest when the attention head is active.",
}
_QUESTION = "Is the given example an active example? (Yes/No)\n"


class UnusableExplanations(LLMError):
    """The LLM wrote no usable explanation for some pairs; ``pairs`` lists their ``(layer, neuron, head)``.

    Raised by :func:`explain_pairs` once every pair was asked, so the usable answers are cached and a rerun
    asks again only for these (an empty answer is never cached).
    """

    def __init__(self, message: str, pairs: list[tuple[int, int, int]]) -> None:
        super().__init__(message)
        self.pairs = pairs


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"Unknown prompt variant {variant!r}: choose one of {VARIANTS}.")


def _example_block(kind: str, examples: Sequence[str]) -> str:
    """One fenced list, one ``*example`` per line. An empty list still gets one bare ``*`` line, as in the
    authors' prompts (their code joins the examples after a leading ``*``; 9 GPT-2-small pairs had no negatives)."""
    return f'Examples where the attention head is {kind}: """\n*' + "\n*".join(examples) + '\n"""\n'


def explanation_prompt(token: str, positive_examples: Sequence[str], negative_examples: Sequence[str], variant: str = DEFAULTS.prompt_variant) -> str:
    """The explainer's prompt. Examples are prompts with the token already appended (``prompt + token``)."""
    _check_variant(variant)
    head = (
        f'This attention head in particular helps to predict that the next token is "{token}", '
        "but it is only active in some documents and not others. "
    )
    return (
        CONTEXT
        + head
        + INSTRUCTION
        + _example_block("active", positive_examples)
        + _example_block("inactive", negative_examples)
        + EXPLAIN_ENDING[variant]
    )


def classification_prompt(explanation: str, example: str, variant: str = DEFAULTS.prompt_variant) -> str:
    """The classifier's prompt for one held-out example (``prompt + token``); newlines in the explanation
    become spaces. It ends in ``"Answer: "`` with a trailing space."""
    _check_variant(variant)
    text = explanation.replace("\n", " ")
    fenced = f'Example: """\n{example}\n"""\nAnswer: '
    if variant == "oct2023":
        return _QUESTION + "The example is active when the example " + text + "\n" + fenced
    return text + "\n" + _QUESTION + "\n" + fenced


# ------------------------------------------------------------------------------------ one pair, LLM or offline


@dataclass(frozen=True)
class HeadExplanation:
    """An explanation of one head's activity and where it came from.

    ``source`` is ``"offline"`` or ``"llm:<model>"``; ``rule`` is the machine-readable form of an offline
    explanation's text (its ``to_dict()``: cues and points), kept for people and tests; the reader uses the text; ``finish_reason`` is ``"length"`` when the LLM was cut off.
    """

    text: str
    source: str
    variant: str
    rule: dict[str, Any] | None = None
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadExplanation:
        return cls(**data)


def connect_llm(**client_args: Any) -> LLMClient | None:
    """The configured LLM client, or ``None`` when no key is set (then the offline explainer runs)."""
    try:
        return LLMClient(**client_args)
    except LLMNotConfigured:
        return None


def llm_configured() -> bool:
    """Whether an LLM key is set (``OPENAI_API_KEY``): the ``auto`` explainer then uses the LLM."""
    return bool(os.environ.get("OPENAI_API_KEY", "").strip())


def explainer_name(llm: LLMClient | None) -> str:
    """``"offline"`` or ``"llm:<model>"``: the label stored with explanations and scores."""
    return OFFLINE if llm is None else f"llm:{llm.model}"


def describe_explainer(llm: LLMClient | None) -> str:
    """One sentence for a notebook to print, saying plainly which path runs."""
    if llm is None:
        return (
            "No LLM is configured (OPENAI_API_KEY is not set): the OFFLINE explainer and classifier run "
            "(a few word cues learnt from the active vs inactive prompts, read back from the explanation text; no network)."
        )
    return f"LLM configured: {llm!r}. Answers are cached on disk, so a rerun costs nothing."


def _offline():
    """The offline explainer module, imported only when the offline path runs."""
    from ctx_utils import offline_explainer

    return offline_explainer


def explain_head(
    positive: Sequence[str], negative: Sequence[str], token: str, llm: LLMClient | None = None, variant: str = DEFAULTS.prompt_variant
) -> HeadExplanation:
    """Explain when the head is active from the prompts where it is (``positive``) and is not (``negative``).

    Prompts are given without the token; the LLM path appends it, as the paper did.
    """
    _check_variant(variant)
    if not positive:
        raise ValueError("A head needs at least one prompt where it is active to be explained.")
    if llm is None:
        offline = _offline().explain_offline(list(positive), list(negative), token)
        return HeadExplanation(text=offline.text, source=OFFLINE, variant=variant, rule=offline.to_dict())
    prompt = explanation_prompt(token, [p + token for p in positive], [p + token for p in negative], variant)
    completion = llm.complete(prompt, max_tokens=EXPLAIN_MAX_TOKENS)
    return HeadExplanation(
        text=completion.text, source=explainer_name(llm), variant=variant, finish_reason=completion.finish_reason
    )


def classify_prompt(explanation: HeadExplanation, prompt: str, token: str, llm: LLMClient | None = None) -> bool | None:
    """Would the explanation call the head active on ``prompt``? True / False, or None for an unparsed LLM answer.

    An offline explanation is read from its text by the offline reader; an LLM explanation needs the LLM.
    """
    if explanation.source == OFFLINE:  # classify_offline reads the explanation's text, nothing else
        offline = _offline()
        return bool(offline.classify_offline(offline.OfflineExplanation.from_dict(explanation.rule), prompt))
    if llm is None:
        raise LLMNotConfigured(
            f"This explanation was written by {explanation.source}; classifying with it needs that LLM. Set "
            "OPENAI_API_KEY (and OPENAI_BASE_URL), or rerun notebook 04 without a key to get offline explanations."
        )
    return llm.ask_yes_no(classification_prompt(explanation.text, prompt + token, explanation.variant), CLASSIFY_MAX_TOKENS)


# ------------------------------------------------------------------------------------------- many pairs


def explain_pairs(
    pairs: Sequence[dict[str, Any]], prompts: dict[str, list[dict[str, Any]]], llm: LLMClient | None = None, variant: str = DEFAULTS.prompt_variant
) -> list[dict[str, Any]]:
    """Explain every pair of ``heads.json`` from the prompts of ``prompts.json``.

    ``pairs``: ``heads.json["pairs"]`` (``positive``/``negative`` index ``prompts["<layer>.<neuron>"]``);
    ``prompts``: ``prompts.json["prompts"]``. Returns one record per pair for ``explanations.json``.
    An LLM answer with no text is no explanation: every pair is asked first, then
    :class:`UnusableExplanations` names the pairs that got one (their answers were not cached).
    """
    records, unusable = [], []
    for pair in tqdm(pairs, desc="Explaining heads"):
        label = neuron_label(pair["layer"], pair["neuron"])
        if label not in prompts:
            raise ValueError(f"heads.json names neuron {label}, which prompts.json lacks: rerun notebook 03.")
        texts = [p["text"] for p in prompts[label]]
        explanation = explain_head(
            [texts[i] for i in pair["positive"]], [texts[i] for i in pair["negative"]], pair["token"], llm, variant
        )
        if not explanation.text.strip():
            unusable.append((pair["layer"], pair["neuron"], pair["head"], explanation.finish_reason))
            continue
        ids = {k: pair[k] for k in ("layer", "neuron", "token", "head", "head_layer", "head_index")}
        records.append({**ids, "n_positive": len(pair["positive"]), "n_negative": len(pair["negative"]), **explanation.to_dict()})
    if unusable:
        raise _unusable(unusable, len(pairs), explainer_name(llm))
    return records


def _unusable(unusable: list[tuple[int, int, int, str | None]], n_pairs: int, source: str) -> UnusableExplanations:
    """The error for pairs whose LLM answer was empty: which pairs, and the ways on."""
    listed = ", ".join(f"(layer {l}, neuron {n}, head {h}; finish_reason {r!r})" for l, n, h, r in unusable[:10])
    more = f" and {len(unusable) - 10} more" if len(unusable) > 10 else ""
    return UnusableExplanations(
        f"{source} gave an empty explanation for {len(unusable)} of {n_pairs} pairs: {listed}{more}. Empty answers "
        "are not cached: rerun to ask again (the other explanations come from the cache, free). If it keeps "
        f"happening (finish_reason 'length': the model spent its {EXPLAIN_MAX_TOKENS}-token cap before writing), "
        "choose another model with CTX_LLM_MODEL, or unset OPENAI_API_KEY to use the offline explainer.",
        [(l, n, h) for l, n, h, _ in unusable],
    )

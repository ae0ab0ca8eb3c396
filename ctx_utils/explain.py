"""Step 4 (and the asking half of step 5): explain when a head is active, then classify held-out prompts.

For each (neuron, head) pair, the paper shows GPT-4 the neuron's max-activating prompts split into those where
the head is active (positive) and those where it is not (negative), each with the neuron's token appended,
and asks when the head is active (paper-method §2.6). To score the explanation it then shows GPT-4 one
held-out prompt at a time with only the explanation, and asks "active? (Yes/No)" (§2.7). The score
E = ½(TPR + TNR) lives in :mod:`ctx_utils.score`.

Two prompt variants are reproduced exactly (``variant=``):

* ``"oct2023"``: the run whose data the authors released (``paper-data/``); the explanation prompt ends in a
  completion stub, "Explanation: This attention head is active when the document", which the model continues;
  the classification prompt puts the question first. Verified byte-for-byte against the released data.
* ``"feb2024"``: the final run (paper-method §5.1–5.2): the explanation prompt ends "In two to three
  sentences, suggest when the attention head is active."; the classification prompt puts the explanation first.

Without an LLM (no ``OPENAI_API_KEY``), the same calls run the offline explainer of
:mod:`ctx_utils.offline_explainer` (a phrase rule learnt from the positive vs negative prompts), so every
notebook runs on a laptop with no key. Which path ran is recorded with every explanation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tqdm.auto import tqdm

from ctx_utils.heads import active_heads, attribute_neurons
from ctx_utils.llm import LLMClient, LLMError, LLMNotConfigured
from ctx_utils.prompts import find_activating_prompts
from ctx_utils.score import confusion, head_explanation_score

VARIANTS = ("oct2023", "feb2024")
EXPLAIN_MAX_TOKENS = 200  # the paper's explanation length cap
CLASSIFY_MAX_TOKENS = 1  # one token: "Yes" or "No"
OFFLINE = "offline"

_CONTEXT = (
    "We are studying attention heads in a transformer architecture neural network. "
    "Each attention head looks for some particular thing in a short document.\n"
)
_INSTRUCTION = (
    "Look at the documents and explain what makes the attention head active, "
    "taking into consideration the inactive examples.\n"
)
_EXPLAIN_ENDING = {
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


def explanation_prompt(token: str, positive_examples: Sequence[str], negative_examples: Sequence[str], variant: str = "oct2023") -> str:
    """The explainer's prompt. Examples are prompts with the token already appended (``prompt + token``)."""
    _check_variant(variant)
    head = (
        f'This attention head in particular helps to predict that the next token is "{token}", '
        "but it is only active in some documents and not others. "
    )
    return (
        _CONTEXT
        + head
        + _INSTRUCTION
        + _example_block("active", positive_examples)
        + _example_block("inactive", negative_examples)
        + _EXPLAIN_ENDING[variant]
    )


def classification_prompt(explanation: str, example: str, variant: str = "oct2023") -> str:
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

    ``source`` is ``"offline"`` or ``"llm:<model>"``; ``rule`` is the offline explainer's rule (its
    ``to_dict()``), needed to classify offline; ``finish_reason`` is ``"length"`` when the LLM was cut off.
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


def explainer_name(llm: LLMClient | None) -> str:
    """``"offline"`` or ``"llm:<model>"``: the label stored with explanations and scores."""
    return OFFLINE if llm is None else f"llm:{llm.model}"


def describe_explainer(llm: LLMClient | None) -> str:
    """One sentence for a notebook to print, saying plainly which path runs."""
    if llm is None:
        return (
            "No LLM is configured (OPENAI_API_KEY is not set): the OFFLINE explainer and classifier run "
            "(a phrase rule learnt from the active vs inactive prompts, no network)."
        )
    return f"LLM configured: {llm!r}. Answers are cached on disk, so a rerun costs nothing."


def _offline():
    """The offline explainer module, imported only when the offline path runs."""
    from ctx_utils import offline_explainer

    return offline_explainer


def explain_head(
    positive: Sequence[str], negative: Sequence[str], token: str, llm: LLMClient | None = None, variant: str = "oct2023"
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

    An offline explanation is classified by its own rule; an LLM explanation needs the LLM.
    """
    if explanation.source == OFFLINE:
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
    pairs: Sequence[dict[str, Any]], prompts: dict[str, list[dict[str, Any]]], llm: LLMClient | None = None, variant: str = "oct2023"
) -> list[dict[str, Any]]:
    """Explain every pair of ``heads.json`` from the prompts of ``prompts.json``.

    ``pairs``: ``heads.json["pairs"]`` (``positive``/``negative`` index ``prompts["<layer>.<neuron>"]``);
    ``prompts``: ``prompts.json["prompts"]``. Returns one record per pair for ``explanations.json``.
    An LLM answer with no text is no explanation: every pair is asked first, then
    :class:`UnusableExplanations` names the pairs that got one (their answers were not cached).
    """
    records, unusable = [], []
    for pair in tqdm(pairs, desc="Explaining heads"):
        key = f"{pair['layer']}.{pair['neuron']}"
        if key not in prompts:
            raise ValueError(f"heads.json names neuron {key}, which prompts.json lacks: rerun notebook 03.")
        texts = [p["text"] for p in prompts[key]]
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


def held_out_set(
    model, neurons: Sequence[dict[str, Any]], docs: list[str], rule: str = "top3", include_same_layer: bool = False, keep: int = 20
) -> tuple[dict[str, list[str]], dict[str, list[list[int]]]]:
    """Steps 2–3 again, on held-out documents: each neuron's held-out prompts and the heads active on each.

    The same truncation, filter and active-head ``rule`` as on the training documents, so the ground truth
    means the same thing. Returns ``(prompts, active_heads)`` keyed ``"<layer>.<neuron>"`` (the inputs of
    :func:`score_explanations`); a neuron with no held-out prompt gets empty lists.
    """
    found = find_activating_prompts(model, docs, list(neurons), keep=keep)
    attributions = attribute_neurons(model, list(neurons), found, include_same_layer)
    prompts, active = {}, {}
    for n in neurons:
        key = f"{n['layer']}.{n['neuron']}"
        attr = attributions.get(key)  # absent when no held-out prompt survived the filter
        prompts[key] = [] if attr is None else [p["text"] for p in found[key]]
        active[key] = [] if attr is None else [row.nonzero().flatten().tolist() for row in active_heads(attr, rule)]
    return prompts, active


def score_explanations(
    explained: Sequence[dict[str, Any]],
    held_out: dict[str, list[str]],
    held_out_active: dict[str, list[list[int]]],
    llm: LLMClient | None = None,
    max_prompts: int = 20,
    missing: str = "defined_rate",
) -> list[dict[str, Any]]:
    """Classify each pair's held-out prompts from its explanation and score it: E = ½(TPR + TNR).

    ``explained``: records from :func:`explain_pairs`; ``held_out["<layer>.<neuron>"]``: the neuron's held-out
    prompt texts; ``held_out_active["<layer>.<neuron>"][i]``: flat indices of the heads active on prompt ``i``
    (the ground truth, same rule as for training). The first ``max_prompts`` prompts are classified (the
    paper: 20). Unparsed LLM answers are left out of E and counted in ``n_unparsed``, never hidden.
    """
    scored = []
    for record in tqdm(explained, desc="Classifying held-out prompts"):
        key = f"{record['layer']}.{record['neuron']}"
        if key not in held_out or key not in held_out_active:
            raise ValueError(f"Neuron {key} is missing from the held-out set: build it with held_out_set for these neurons.")
        explanation = HeadExplanation.from_dict({k: record[k] for k in ("text", "source", "variant", "rule", "finish_reason")})
        prompts = held_out[key][:max_prompts]
        truth = [record["head"] in active for active in held_out_active[key][: len(prompts)]]
        answers = [classify_prompt(explanation, p, record["token"], llm) for p in prompts]
        kept = [(t, a) for t, a in zip(truth, answers) if a is not None]
        e = head_explanation_score(*zip(*kept), missing=missing) if kept else None
        c = confusion(*zip(*kept)) if kept else None
        scored.append(
            {
                **{k: record[k] for k in ("layer", "neuron", "token", "head")},
                "E": e,
                "n_prompts": len(prompts),
                "n_unparsed": len(prompts) - len(kept),
                "confusion": asdict(c) if c else None,
                "truth": truth,
                "answers": answers,
            }
        )
    return scored

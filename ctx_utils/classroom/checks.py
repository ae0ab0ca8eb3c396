"""Auto-checks for the classroom exercises: run a learner's function, compare it with the kit, say what differs.

Each ``check_*`` takes the learner's function (and the model, where the exercise reads weights or activations),
runs it on small fixed inputs and compares the result with the kit's own implementation in ``ctx_utils``. A
mismatch raises ``AssertionError`` saying exactly what differs (shape, first differing entry, largest
difference) and, when the answer matches a typical mistake, names the mistake. Success prints one line,
"✓ … passed". An exercise not written yet (the stub still raises ``NotImplementedError``) prints what to do and
returns, so "Run All" goes on through the rest of the notebook. The exercises live in the step notebooks (``notebooks/NN_*.ipynb``); ``python -m
ctx_utils.classroom.exercises`` turns them into the learner's notebooks under ``notebooks/exercises/``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ctx_utils import ablate, heads, neurons, prompts, score
from ctx_utils.settings import DEFAULTS

if TYPE_CHECKING:  # the model type, for readers and type checkers; not imported at run time
    from transformer_lens.model_bridge import TransformerBridge

ATOL = 1e-4  # relative to the largest expected value: float32 rounding stays far below, mistakes far above


# ------------------------------------------------------------------------------------------------ helpers


class NotWrittenYet(Exception):
    """The learner's function still raises ``NotImplementedError``: the check says so and returns."""


Check = TypeVar("Check", bound=Callable[..., None])


def exercise_check(check: Check) -> Check:
    """Let an unsolved exercise pass through: print what to do instead of stopping "Run All" with a traceback.

    Only the stub's ``NotImplementedError`` is caught (via :func:`_call`); a wrong answer still raises
    ``AssertionError``, since the cells after a check may use the learner's result.
    """

    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            check(*args, **kwargs)
        except NotWrittenYet as unsolved:
            print(f"… {unsolved}")

    return run  # type: ignore[return-value]


def _call(name: str, fn: Callable, *args: Any) -> Any:
    """Call the learner's function; an unfinished exercise gets a plain sentence instead of a traceback."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise NotWrittenYet(
            f"{name} is not written yet: replace `raise NotImplementedError` with your code, run that cell, "
            "then run this check again. The rest of the notebook runs without it."
        ) from None


def _tensor(value: Any, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise AssertionError(f"{what} should be a torch.Tensor, got {type(value).__name__}.")
    return value.detach().float().cpu()


def _tolerance(expected: Tensor, atol: float) -> float:
    """``atol`` times the largest expected magnitude: a tiny model's weights are tiny, GPT-2's are not."""
    return atol * max(float(expected.abs().max()) if expected.numel() else 0.0, 1e-8)


def _close(a: Tensor, b: Tensor, atol: float = ATOL) -> bool:
    """Same shape and equal up to rounding, with ``b`` the expected values."""
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=_tolerance(b, atol), rtol=0))


def _shape(expected: Tensor, got: Tensor, what: str, hint: str = "") -> None:
    if got.shape != expected.shape:
        raise AssertionError(f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}." + (f" {hint}" if hint else ""))


def _first_difference(expected: Tensor, got: Tensor, atol: float = ATOL) -> tuple[tuple[int, ...], float]:
    """The first index where two same-shape tensors differ beyond rounding, and the largest difference."""
    diff = (expected - got).abs()
    index = tuple(int(i) for i in (~(diff <= _tolerance(expected, atol))).nonzero()[0])  # NaN counts as a difference
    return index, float(diff.max())


def _mistake(got: Tensor, mistakes: dict[str, Tensor]) -> str:
    """The hint of the first typical mistake whose result equals the learner's, or an empty string."""
    for hint, wrong in mistakes.items():
        if _close(got, wrong.float().cpu()):
            return " " + hint
    return ""


def _count(value: Any) -> Any:
    """A one-element tensor as a Python int (``tensor(3)`` → ``3``); anything else unchanged."""
    return int(value) if isinstance(value, Tensor) and value.numel() == 1 else value


def _passed(message: str) -> None:
    print(f"✓ {message}")


# ------------------------------------------------------------------------------------ 01 · congruence


@exercise_check
def check_congruence(
    fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], model: TransformerBridge, layer: int | None = None, n_neurons: int = 512
) -> None:
    """Exercise 01: ``fn(W_out, W_U)`` → each neuron's congruence and token, as :func:`neurons.congruence`.

    ``W_out`` is ``[d_mlp, d_model]`` (one layer; the check passes its first ``n_neurons`` rows, to stay quick
    on GPT-2's 50,257-token vocabulary), ``W_U`` is ``[d_model, d_vocab]``; the answer is
    ``(scores [d_mlp], tokens [d_mlp])``: max and argmax over the vocabulary of ``W_out @ W_U``.
    """
    layer = model.cfg.n_layers - 1 if layer is None else layer
    w_out, w_u = model.blocks[layer].mlp.W_out[:n_neurons].detach().cpu().clone(), model.W_U.detach().cpu().clone()
    expected_scores, expected_tokens = (values[:n_neurons] for values in neurons.congruence(model, layer))
    got = _call("congruence", fn, w_out, w_u)
    if not (isinstance(got, tuple) and len(got) == 2):
        raise AssertionError("congruence should return a pair (scores, tokens), e.g. `return best.values, best.indices`.")
    scores, tokens = _tensor(got[0], "scores"), _tensor(got[1], "tokens").long()
    d_mlp, d_vocab = w_out.shape[0], w_u.shape[1]
    wrong_axis = f"One value per neuron: take the max over the vocabulary (dim=-1, {d_vocab} tokens), not over the neurons (dim=0)."
    _shape(expected_scores, scores, "scores", wrong_axis if scores.shape == (d_vocab,) else "")
    _shape(expected_tokens, tokens, "tokens", wrong_axis if tokens.shape == (d_vocab,) else "")
    with torch.no_grad():
        logits = w_out @ w_u  # [d_mlp, d_vocab]
        cosine = (w_out / w_out.norm(dim=-1, keepdim=True)) @ (w_u / w_u.norm(dim=0, keepdim=True))
        mistakes = {
            "It matches the cosine similarity: the paper's congruence is the plain dot product W_out[n] @ W_U "
            "(no normalising), so a neuron with larger weights counts more.": cosine.max(-1).values,
            "It matches the largest |W_out @ W_U|: congruence is the largest *signed* value (the token pushed up).":
                logits.abs().max(-1).values,
            "It matches the minimum: that is the token the neuron pushes down most; congruence is the max.": logits.min(-1).values,
        }
    if not _close(scores, expected_scores):
        (n,), largest = _first_difference(expected_scores, scores)
        got_token = int(tokens[n]) if 0 <= int(tokens[n]) < d_vocab else None
        shown = repr(neurons.token_string(model, got_token)) if got_token is not None else f"id {int(tokens[n])}"
        raise AssertionError(
            f"neuron {n}: expected token {neurons.token_string(model, expected_tokens[n])!r} "
            f"(congruence {float(expected_scores[n]):.4g}), got {shown} ({float(scores[n]):.4g}); "
            f"largest difference over the layer {largest:.3g}." + _mistake(scores, mistakes)
        )
    if not torch.equal(tokens, expected_tokens):
        n = int((tokens != expected_tokens).nonzero()[0])
        raise AssertionError(
            f"The scores are right but the tokens are not: neuron {n} should get token id {int(expected_tokens[n])} "
            f"({neurons.token_string(model, expected_tokens[n])!r}), got {int(tokens[n])}. Use the argmax over the "
            "vocabulary (`.max(dim=-1).indices` or `.argmax(dim=-1)`)."
        )
    _passed(f"check_congruence passed: {d_mlp} neurons of layer {layer} match neurons.congruence.")


# --------------------------------------------------------------------------------- 02 · truncation rule

#: Hand-made cases: activations of the suffixes of 1, 2, … tokens, the target, and the right answer.
TRUNCATION_CASES: list[tuple[list[float], float, int | None]] = [
    ([0.1, 0.5, 0.9, 1.0], 1.0, 3),
    ([0.2, 0.8, 0.85, 1.0], 1.0, 3),  # exactly 80 % is not *more than* 80 %
    ([0.95, 0.3, 0.9, 1.2], 1.0, 1),  # several pass: the shortest wins
    ([0.1, 0.9, 0.2, 0.3], 1.0, 2),  # activations need not grow with length
    ([0.1, 0.2, 0.3], 1.0, None),  # nothing passes
    ([1.0, 2.0, 3.5], 4.0, 3),  # the threshold is ratio × target = 3.2
]


def _truncation_mistakes(acts: list[float], target: float, ratio: float) -> dict[str, int | None]:
    """What typical wrong rules answer on one case (token counts), keyed by the hint to show."""
    counts = range(1, len(acts) + 1)
    keeps = [n for n in counts if acts[n - 1] > ratio * target]
    return {
        "That keeps a suffix at exactly 80 %: the rule is *more than* 80 %, use `>` and not `>=`.":
            next((n for n in counts if acts[n - 1] >= ratio * target), None),
        "That is the longest passing suffix: the paper keeps the *shortest* one (stop at the first that passes).":
            keeps[-1] if keeps else None,
        "That is a 0-based index: return the number of tokens, suffix_acts[i] is the suffix of i + 1 tokens.":
            keeps[0] - 1 if keeps else None,
        "That compares with the ratio alone: the threshold is ratio × target.":
            next((n for n in counts if acts[n - 1] > ratio), None),
    }


@exercise_check
def check_truncation(
    fn: Callable[[Tensor, float, float], int | None],
    model: TransformerBridge,
    text: str,
    layer: int | None = None,
    neuron: int | None = None,
    position: int | None = None,
    ratio: float = DEFAULTS.ratio,
    max_tokens: int = DEFAULTS.max_tokens,
) -> None:
    """Exercise 02: ``fn(suffix_acts, target, ratio)`` → the token count of the shortest suffix kept, or None.

    ``suffix_acts[i]`` is the neuron's activation at the last token of the document's last ``i + 1`` tokens.
    The hand-made cases test the rule; then, on the real ``text``, the rule must pick the shortest suffix that
    keeps more than ``ratio`` of neuron ``(layer, neuron)``'s activation at token ``position`` (BOS is 0),
    measured on every suffix that could become a prompt: fewer than ``max_tokens`` tokens (the paper drops
    longer prompts, and so does the pipeline). Only those are measured — one short forward each, however long
    the document — so the check costs seconds, not the minutes of every suffix of a 500-token document.
    (:func:`prompts.truncate` finds that cut with a few batched forwards instead,
    exactly when the activation falls as the prompt shortens, as the paper's binary search assumes; the
    message says when the two differ.) By default: the last layer, token 23 (or the text's last), and the
    neuron that fires most there.
    """
    for acts, target, expected in TRUNCATION_CASES:
        got = _count(_call("shortest_suffix", fn, torch.tensor(acts), target, 0.8))
        if got != expected:
            hint = next((h for h, wrong in _truncation_mistakes(acts, target, 0.8).items() if wrong == got and wrong != expected), "")
            if expected is None and not hint:
                hint = "No suffix keeps more than 80 %: return None."
            raise AssertionError(f"suffix activations {acts}, target {target}: expected {expected}, got {got!r}. {hint}".rstrip())
    layer = model.cfg.n_layers - 1 if layer is None else layer
    doc = prompts.tokenize(model, [text], warn_long=False)[0]
    position = min(len(doc) - 1, 23) if position is None else position
    if not 2 <= position < len(doc):
        raise ValueError(f"position {position} must index a token of the text after its second (BOS is 0, the last is {len(doc) - 1}).")
    doc = doc[: position + 1]
    full = prompts.mlp_post(model, [doc], [layer])[0][layer][0, position].cpu()  # [d_mlp]
    neuron = int(full.argmax()) if neuron is None else neuron
    target = float(full[neuron])
    if target <= 0:
        raise ValueError(f"Neuron L{layer}.N{neuron} does not fire at token {position} (activation {target:.3g}): pick a token where it does.")
    acts = _suffix_activations(model, doc, layer, neuron, position, max_tokens)  # suffixes of 1, 2, … tokens
    expected = next((n + 1 for n, a in enumerate(acts.tolist()) if a > ratio * target), None)
    got = _count(_call("shortest_suffix", fn, acts.clone(), target, ratio))
    if got != expected:
        shown = "None" if expected is None else f"{expected} tokens (activation {float(acts[expected - 1]):.3f})"
        raise AssertionError(
            f"On the real document, neuron L{layer}.N{neuron} (target {target:.3f}, threshold {ratio * target:.3f}): "
            f"the shortest suffix that passes is the last {shown}, your rule says {got!r}."
        )
    reference = prompts.truncate(model, doc, layer, neuron, position, ratio=ratio, max_tokens=max_tokens, target=target)
    kit = position + 1 - reference["start"] if reference["passed"] else None
    same = "the same prompt as prompts.truncate" if kit == expected else (
        f"prompts.truncate's batched search keeps {kit} tokens here: the activation does not fall steadily as "
        "this prompt shortens, which the search (like the paper's binary search) assumes")
    _passed(f"check_truncation passed: {len(TRUNCATION_CASES)} rule cases, and the {expected}-token prompt ({same}).")


def _suffix_activations(
    model: TransformerBridge, doc: list[int], layer: int, neuron: int, position: int, max_tokens: int
) -> Float[Tensor, "n_suffixes"]:
    """The neuron at the last token of each suffix of ``doc`` ending at ``position``, shortest first: the
    suffixes a prompt can be (fewer than ``max_tokens`` tokens, as :func:`prompts.truncate` searches them),
    each decoded and re-tokenised with BOS as step 3 reads it."""
    longest = min(position, max_tokens - 1)
    bos = model.tokenizer.bos_token_id
    texts = [prompts.prompt_text(model, doc, position + 1 - n, position) for n in range(1, longest + 1)]
    seqs = [[bos, *ids] for ids in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return prompts.last_token_activations(model, seqs, layer, neuron)


# --------------------------------------------------------------------------------- 03 · head attribution


def hook_z_stack(model: TransformerBridge, texts: Sequence[str], n_head_layers: int) -> tuple[
    Float[Tensor, "batch pos head_layers n_heads d_head"], Int[Tensor, "batch"]
]:
    """The inputs of the attribution exercise: every candidate head's ``z`` and each prompt's last position.

    Prompts are tokenised as step 3 does (BOS first, right-padded); ``z`` stacks ``blocks.{l}.attn.hook_z`` of
    layers ``0 … n_head_layers - 1`` on a new dimension 2.
    """
    tokens, last = heads.tokenize_prompts(model, list(texts))
    names = [f"blocks.{l}.attn.hook_z" for l in range(n_head_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=names, stop_at_layer=n_head_layers)
    return torch.stack([cache[name] for name in names], dim=2), last.to(model.cfg.device)


@exercise_check
def check_head_attribution(
    fn: Callable[[Any, Tensor, Tensor, int, int], Tensor], model: TransformerBridge, texts: Sequence[str], layer: int, neuron: int
) -> None:
    """Exercise 03: ``fn(model, z, last, layer, neuron)`` → ``[batch, head_layers × n_heads]`` direct attributions.

    Compared with :func:`heads.head_attributions` on ``texts`` (candidate heads: layers before ``layer``). Give
    prompts of different lengths, so reading the wrong position shows.
    """
    if layer < 1:
        raise ValueError("Pick a neuron in layer 1 or later: a layer-0 neuron has no earlier heads.")
    z, last = hook_z_stack(model, texts, layer)
    expected = heads.head_attributions(model, list(texts), layer, neuron)
    got = _tensor(_call("head_attribution", fn, model, z.clone(), last.clone(), layer, neuron), "The attribution")
    batch, n_head_layers, n_heads = z.shape[0], z.shape[2], z.shape[3]
    if got.shape == (batch, n_head_layers, n_heads):
        raise AssertionError(
            f"The attribution has shape {tuple(got.shape)}, expected {tuple(expected.shape)}: flatten the heads into "
            "one column per head, flat index = head_layer × n_heads + head_index (`.flatten(1)`)."
        )
    if batch > 1 and got.shape[0] == batch and got.numel() == batch * expected.numel():
        raise AssertionError(
            f"The attribution has shape {tuple(got.shape)}, expected {tuple(expected.shape)}: {batch} times too many "
            "values, as `z[:, last]` gives. That takes every prompt's last position for every prompt (a "
            f"[{batch}, {batch}, …] grid); pair prompt i with last[i] instead: `z[torch.arange(len(last)), last]`."
        )
    _shape(expected, got, "The attribution")
    z, last, rows = z.detach().cpu().float(), last.cpu(), torch.arange(batch)
    w_o = model.W_O[:n_head_layers].detach().cpu()  # [head_layers, n_heads, d_head, d_model]

    def attribution(z_at: Tensor, direction: Tensor) -> Tensor:
        return torch.einsum("blhd,lhdm,m->blh", z_at.float(), w_o.float(), direction.detach().cpu().float()).flatten(1)

    w_in, w_out_row = model.blocks[layer].mlp.W_in[:, neuron], model.blocks[layer].mlp.W_out[neuron]
    mistakes = {
        "It matches z at the first position (BOS): read each prompt's last real token, z[rows, last].":
            attribution(z[:, 0], w_in),
        "It matches z at the last column: shorter prompts are right-padded, so read z[rows, last], "
        "each prompt's own last position.": attribution(z[:, -1], w_in),
        "It matches W_out[layer][neuron]: that is what the neuron *writes*; what it *reads* is its input "
        "weights W_in[layer][:, neuron].": attribution(z[rows, last], w_out_row),
    }
    if not _close(got, expected):
        (p, h), largest = _first_difference(expected, got)
        raise AssertionError(
            f"prompt {p}, head {heads.head_label(model, h)}: expected attribution {float(expected[p, h]):.4g}, "
            f"got {float(got[p, h]):.4g}; largest difference {largest:.3g}." + _mistake(got, mistakes)
        )
    _passed(f"check_head_attribution passed: {batch} prompts × {got.shape[1]} heads match heads.head_attributions.")


# ----------------------------------------------------------------------------- 04 · the explainer's examples


def _examples_inputs() -> tuple[dict, dict[str, list[dict]]]:
    """A pair and prompts.json-shaped prompts with two neurons, so taking the wrong neuron's prompts shows."""
    texts = {
        "1.7": ["The data is for research purposes", "He left as early", "Use it for teaching purposes", "The cat sat"],
        "1.9": ["A different neuron's prompt", "Another one"],
    }
    prompt_sets = {key: [{"text": t, "activation": 1.0} for t in ts] for key, ts in texts.items()}
    pair = {"layer": 1, "neuron": 7, "token": " only", "head": 2, "positive": [0, 2], "negative": [1, 3]}
    return pair, prompt_sets


@exercise_check
def check_explainer_examples(fn: Callable[[dict, dict], tuple[list[str], list[str]]]) -> None:
    """Exercise 04: ``fn(pair, prompt_sets)`` → (active examples, inactive examples), each prompt + token.

    The examples are what :func:`explain.explain_head` hands to :func:`explain.explanation_prompt`:
    ``prompt + token`` for the pair's positive and negative prompts, in order.
    """
    pair, prompt_sets = _examples_inputs()
    texts = [p["text"] for p in prompt_sets["1.7"]]
    expected = ([texts[i] + pair["token"] for i in pair["positive"]], [texts[i] + pair["token"] for i in pair["negative"]])
    got = _call("explainer_examples", fn, pair, prompt_sets)
    if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(g, list) for g in got)):
        raise AssertionError("explainer_examples should return a pair of lists of strings: (active, inactive).")
    hints = [
        ((expected[1], expected[0]), "active and inactive are swapped: `pair['positive']` indexes the prompts where the head is active."),
        (([texts[i] for i in pair["positive"]], [texts[i] for i in pair["negative"]]),
         "the token is missing: the paper shows each prompt followed by the neuron's token (prompt + token)."),
        (([texts[i] + " " + pair["token"] for i in pair["positive"]], [texts[i] + " " + pair["token"] for i in pair["negative"]]),
         "there is an extra space: the token already starts with one (' only'), so append it as it is."),
    ]
    if got != expected:
        for wrong, hint in hints:
            if got == wrong:
                raise AssertionError(f"Your examples {got} differ from the expected {expected}: {hint}")
        for name, g, e in (("active", got[0], expected[0]), ("inactive", got[1], expected[1])):
            if g != e:
                raise AssertionError(
                    f"The {name} examples differ: expected {e}, got {g}. Take the texts of prompts "
                    f"['{pair['layer']}.{pair['neuron']}'] at the pair's indices, in order, and append the token."
                )
    _passed("check_explainer_examples passed: your examples are the ones the paper's explainer prompt shows.")


# ------------------------------------------------------------------------------------ 05 · the score E

#: (truth, predicted) cases: imbalanced classes (accuracy ≠ E), a perfect and a chance classifier, one class only.
SCORE_CASES: list[tuple[list[bool], list[bool]]] = [
    ([True] * 15 + [False] * 5, [True] * 12 + [False] * 3 + [False] * 2 + [True] * 3),
    ([True] * 3 + [False] * 7, [True] * 3 + [False] * 7),
    ([True] * 16 + [False] * 4, [True] * 20),
    ([True, False, True, False], [False, True, True, False]),
    ([True] * 6, [True] * 4 + [False] * 2),
]


def _score_mistakes(truth: list[bool], predicted: list[bool]) -> dict[str, float]:
    c = score.confusion(truth, predicted)
    ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
    return {
        "That is plain accuracy (TP + TN) / n: with more active than inactive prompts, always answering Yes "
        "scores high. Average the two rates instead.": ratio(c.tp + c.tn, c.tp + c.tn + c.fp + c.fn),
        "That is the precision TP / (TP + FP); E averages the true-positive rate TP / (TP + FN) and the "
        "true-negative rate TN / (TN + FP).": ratio(c.tp, c.tp + c.fp),
        "That is the true-positive rate alone: add the true-negative rate TN / (TN + FP) and halve.": ratio(c.tp, c.tp + c.fn),
        "That uses the false-positive rate FP / (TN + FP) where the true-negative rate TN / (TN + FP) belongs.":
            (ratio(c.tp, c.tp + c.fn) + ratio(c.fp, c.tn + c.fp)) / 2,
    }


@exercise_check
def check_explanation_score(fn: Callable[[list[bool], list[bool]], float]) -> None:
    """Exercise 05: ``fn(truth, predicted)`` → E = ½(TPR + TNR), as :func:`score.head_explanation_score`.

    With one class absent (every held-out prompt active), the October-2023 run keeps the one defined rate.
    """
    for truth, predicted in SCORE_CASES:
        expected = score.head_explanation_score(truth, predicted, missing="defined_rate")
        c = score.confusion(truth, predicted)
        counts = f"TP={c.tp} FN={c.fn} TN={c.tn} FP={c.fp}"
        try:
            got = _call("explanation_score", fn, list(truth), list(predicted))
        except ZeroDivisionError:
            raise AssertionError(
                f"{counts}: your function divided by zero. With no inactive prompt the true-negative rate is 0/0; "
                "the paper's October-2023 run then uses the one rate that is defined."
            ) from None
        if not isinstance(got, (int, float)) or got != got:  # NaN fails got == got
            raise AssertionError(f"{counts}: expected E = {expected:.4f}, got {got!r}. Return a number in [0, 1].")
        if abs(got - expected) > 1e-9:
            hint = next((h for h, v in _score_mistakes(truth, predicted).items() if abs(v - got) < 1e-9), "")
            raise AssertionError(f"{counts}: expected E = {expected:.4f}, got {got:.4f}. {hint}".rstrip())
    _passed(f"check_explanation_score passed: {len(SCORE_CASES)} cases match score.head_explanation_score.")


# --------------------------------------------------------------------------------- 06 · ablation hook


def _probs_with(model: TransformerBridge, tokens: Tensor, last: Tensor, hooks: list) -> Tensor:
    """Next-token probabilities at each prompt's last real token with ``hooks`` on: ``[batch, d_vocab]``."""
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(tokens.to(model.cfg.device))
    return logits[torch.arange(len(last)), last.to(logits.device)].float().softmax(-1).cpu()


def _zero(index: tuple) -> Callable:
    def hook(activation: Tensor, hook) -> Tensor:
        activation[index] = 0.0
        return activation

    return hook


#: The axes of the activations an ablation hook is likely to touch, by hook-point suffix.
HOOK_AXES = {
    "hook_v": ("batch", "pos", "n_heads", "d_head"),
    "hook_k": ("batch", "pos", "n_heads", "d_head"),
    "hook_q": ("batch", "pos", "n_heads", "d_head"),
    "hook_z": ("batch", "pos", "n_heads", "d_head"),
    "hook_pattern": ("batch", "n_heads", "query", "key"),
    "hook_attn_scores": ("batch", "n_heads", "query", "key"),
}


def _activation_shape(model: TransformerBridge, tokens: Tensor, name: str) -> tuple[int, ...]:
    """The shape of the activation at hook point ``name`` on ``tokens``."""
    shapes: list[tuple[int, ...]] = []

    def record(activation: Tensor, hook) -> None:
        shapes.append(tuple(activation.shape))

    with torch.no_grad(), model.hooks(fwd_hooks=[(name, record)]):
        model(tokens.to(model.cfg.device))
    return shapes[0]


def _zeroed_entries(hook_fn: Callable, shape: tuple[int, ...], hook_point) -> str:
    """What the learner's hook zeroes, said as an index (e.g. ``v[:, :, :, 1]``), run on a tensor of ones.

    ``""`` when it zeroes nothing. TransformerLens keeps an in-place change when a hook returns ``None``, so
    the probe does too.
    """
    probe = torch.ones(shape)
    try:
        with torch.no_grad():
            out = hook_fn(probe, hook_point)
    except Exception:  # noqa: BLE001 - a diagnostic only: the hook already ran on the real activations
        return ""
    out = probe if out is None else out
    if not isinstance(out, Tensor) or tuple(out.shape) != shape:
        return f"returns {type(out).__name__ if not isinstance(out, Tensor) else tuple(out.shape)} for a {shape} activation"
    zero = out == 0
    if not zero.any():
        return ""
    axes = HOOK_AXES.get(hook_point.name.rsplit(".", 1)[-1], tuple(f"axis {i}" for i in range(len(shape))))
    index, where = [], []
    box = torch.ones(shape, dtype=torch.bool)
    for axis, (size, axis_name) in enumerate(zip(shape, axes)):
        hit = zero.movedim(axis, 0).reshape(size, -1).any(-1).nonzero().flatten().tolist()  # indices touched on this axis
        index.append(":" if len(hit) == size else str(hit[0]) if len(hit) == 1 else str(hit))
        if len(hit) < size:
            where.append(f"{axis_name} {hit[0] if len(hit) == 1 else hit}")
            mask = torch.zeros(size, dtype=torch.bool)
            mask[hit] = True
            box &= mask.view([size if a == axis else 1 for a in range(len(shape))])
    if not torch.equal(box, zero):
        return f"zeroes {int(zero.sum())} of its {zero.numel()} entries"
    only = f", i.e. only {' and '.join(where)}" if where else ", i.e. all of it"
    return f"zeroes {hook_point.name}[{', '.join(index)}] ([{', '.join(axes)}]){only}"


@exercise_check
def check_ablation_hook(fn: Callable[[int, int], tuple[str, Callable]], model: TransformerBridge, texts: Sequence[str], layer: int, head_index: int) -> None:
    """Exercise 06: ``fn(layer, head_index)`` → ``(hook name, hook function)`` that ablates one head.

    Run on ``texts`` with the learner's hook, the next-token probabilities must equal
    :func:`ablate.next_token_probs` with that head ablated (its value vectors zeroed at every position).
    """
    n_heads = model.cfg.n_heads
    tokens, last = heads.tokenize_prompts(model, list(texts))
    got_hook = _call("head_ablation_hook", fn, layer, head_index)
    if not (isinstance(got_hook, tuple) and len(got_hook) == 2 and isinstance(got_hook[0], str) and callable(got_hook[1])):
        raise AssertionError("head_ablation_hook should return a pair (hook name, hook function), e.g. "
                             "(f'blocks.{layer}.attn.hook_v', zero_head).")
    name = got_hook[0]
    if name not in model.hook_dict:
        raise AssertionError(f"The model has no hook named {name!r}: the value vectors are at 'blocks.{layer}.attn.hook_v'.")
    expected = ablate.next_token_probs(model, texts, [(layer, head_index)])
    try:
        got = _probs_with(model, tokens, last, [got_hook])
    except IndexError as err:
        raise AssertionError(f"Your hook indexed past the tensor's end ({err}). hook_v is [batch, pos, n_heads, d_head]: "
                             "the head is the third index, v[:, :, head_index, :].") from None
    other = (head_index + 1) % n_heads
    zeroed = _zeroed_entries(got_hook[1], _activation_shape(model, tokens, name), model.hook_dict[name])
    unchanged = "Your hook changes nothing: modify the tensor (v[:, :, head_index, :] = 0) and return it."
    if zeroed:  # a hook that zeroes the wrong entries is told which ones, never that it changed nothing
        unchanged = (f"Your hook {zeroed}, which leaves these prompts' next-token probabilities as they were: "
                     "the head is the third index of hook_v [batch, pos, n_heads, d_head], v[:, :, head_index, :].")
    mistakes = {
        unchanged: _probs_with(model, tokens, last, []),
        "It matches zeroing every head of the layer: zero only v[:, :, head_index, :].": _probs_with(
            model, tokens, last, [(f"blocks.{layer}.attn.hook_v", _zero((slice(None),)))]),
        f"It matches ablating head {other} instead of {head_index}: check the head index.": ablate.next_token_probs(
            model, texts, [(layer, other)]),
    }
    if head_index < tokens.shape[1]:  # mixing up the head and position axes is only possible on long enough prompts
        mistakes[f"It matches zeroing position {head_index} of every head: v is [batch, pos, n_heads, d_head], "
                 "so the head is the third index, v[:, :, head_index, :]."] = _probs_with(
            model, tokens, last, [(f"blocks.{layer}.attn.hook_v", _zero((slice(None), head_index)))])
        mistakes[f"It matches zeroing query position {head_index} of every head's pattern: hook_pattern is "
                 "[batch, n_heads, query, key], the head is the second index (or zero hook_v as the paper does)."] = _probs_with(
            model, tokens, last, [(f"blocks.{layer}.attn.hook_pattern", _zero((slice(None), slice(None), head_index)))])
    if layer + 1 < model.cfg.n_layers:
        mistakes[f"It matches ablating layer {layer + 1}: use blocks.{layer}."] = ablate.next_token_probs(
            model, texts, [(layer + 1, head_index)])
    if not _close(got, expected):
        (p, t), largest = _first_difference(expected, got)
        raise AssertionError(
            f"prompt {p}: probability of token {neurons.token_string(model, t)!r} should be {float(expected[p, t]):.4g} "
            f"with head L{layer}.H{head_index} ablated, got {float(got[p, t]):.4g}; largest difference {largest:.3g}."
            + (_mistake(got, mistakes) or (f" Your hook {zeroed}." if zeroed else ""))
        )
    note = "" if name.endswith("hook_v") else f" (you used {name}: same effect here; the paper zeroes hook_v)"
    _passed(f"check_ablation_hook passed: {len(texts)} prompts match ablate.next_token_probs{note}.")

"""Auto-checks for the classroom exercises: run a learner's function, compare it with the kit, say what differs.

Each ``check_*`` takes the learner's function (and the model, where the exercise reads weights or activations),
runs it on small fixed inputs and compares the result with the kit's own implementation in ``ctx_utils``. A
mismatch raises ``AssertionError`` saying exactly what differs (shape, first differing entry, largest
difference) and, when the answer matches a typical mistake, names the mistake. Success prints one line,
"✓ … passed". An exercise not written yet (the stub still raises ``NotImplementedError``) prints what to do and
returns, so "Run All" goes on through the rest of the notebook; a later cell that uses the learner's function calls
it through :func:`yours_or_kit`, which runs the kit's instead until it is written and says which ran. The exercises
live in the step notebooks (``notebooks/NN_*.ipynb``); ``python -m ctx_utils.classroom.exercises`` turns them into the
learner's notebooks under ``notebooks/exercises/``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from jaxtyping import Float, Int
from scipy import stats
from torch import Tensor

from ctx_utils import ablate, activations, explain, heads, llm, neurons, prompts, score
from ctx_utils.settings import DEFAULTS
from ctx_utils.tokens import tokenize, tokenize_prompts

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


def yours_or_kit(yours: Callable, kit: Callable, *args: Any, call: Callable[[Callable], Any] | None = None, **kwargs: Any) -> Any:
    """``yours(*args, **kwargs)``; while it still raises ``NotImplementedError``, the kit's ``kit(*args, **kwargs)``.

    As in ARENA, the cells after an exercise use the learner's function once it is written, with the kit's standing
    in until then so that Run All goes on. One line says which of the two ran. ``call`` (optional) runs a function
    over many inputs instead, e.g. ``call=lambda E: [E(t, p) for t, p in cases]``.
    """
    run = call or (lambda fn: fn(*args, **kwargs))
    kit_name = f"{kit.__module__.removeprefix('ctx_utils.')}.{kit.__name__}"
    try:
        result = run(yours)
    except NotImplementedError:
        print(f"… your {yours.__name__} is not written yet, so the kit's {kit_name} ran here.")
        return run(kit)
    print(f"✓ your {yours.__name__} ran here (not the kit's {kit_name}).")
    return result


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
    if not _close(scores, expected_scores):
        (n,), largest = _first_difference(expected_scores, scores)
        got_token = int(tokens[n]) if 0 <= int(tokens[n]) < d_vocab else None
        shown = repr(neurons.token_string(model, got_token)) if got_token is not None else f"id {int(tokens[n])}"
        raise AssertionError(
            f"neuron {n}: expected token {neurons.token_string(model, expected_tokens[n])!r} "
            f"(congruence {float(expected_scores[n]):.4g}), got {shown} ({float(scores[n]):.4g}); "
            f"largest difference over the layer {largest:.3g}." + _mistake(scores, _congruence_mistakes(w_out, w_u))
        )
    if not torch.equal(tokens, expected_tokens):
        n = int((tokens != expected_tokens).nonzero()[0])
        raise AssertionError(
            f"The scores are right but the tokens are not: neuron {n} should get token id {int(expected_tokens[n])} "
            f"({neurons.token_string(model, expected_tokens[n])!r}), got {int(tokens[n])}. Use the argmax over the "
            "vocabulary (`.max(dim=-1).indices` or `.argmax(dim=-1)`)."
        )
    _passed(f"check_congruence passed: {d_mlp} neurons of layer {layer} match neurons.congruence.")


@torch.no_grad()
def _congruence_mistakes(w_out: Float[Tensor, "d_mlp d_model"], w_u: Float[Tensor, "d_model d_vocab"]) -> dict[str, Tensor]:
    """What the usual wrong congruences give (computed only for a wrong answer: two more vocabulary products)."""
    logits = w_out @ w_u  # [d_mlp, d_vocab]
    cosine = (w_out / w_out.norm(dim=-1, keepdim=True)) @ (w_u / w_u.norm(dim=0, keepdim=True))
    return {
        "It matches the cosine similarity: the paper's congruence is the plain dot product W_out[n] @ W_U "
        "(no normalising), so a neuron with larger weights counts more.": cosine.max(-1).values,
        "It matches the largest |W_out @ W_U|: congruence is the largest *signed* value (the token pushed up).":
            logits.abs().max(-1).values,
        "It matches the minimum: that is the token the neuron pushes down most; congruence is the max.": logits.min(-1).values,
    }


# ------------------------------------------------------------------------------- 01 · the activation check

#: Hand-made largest activations ``{layer: [d_mlp]}``, checked with min_share 0.1.
FIRING_CASES: list[dict[int, list[float]]] = [
    {1: [0.0, 0.5, 2.0, 0.2], 2: [10.0, 1.0, 0.9, 3.0]},  # threshold 1.0: layer 2's neuron 1 sits exactly on it
    {0: [-0.5, 4.0, 0.3], 1: [0.39, 0.41, 0.0]},  # threshold 0.4: the strongest neuron is in the other layer
]


def _firing_mistakes(max_acts: dict[int, Tensor], share: float) -> dict[str, dict[int, Tensor]]:
    """What typical wrong rules answer, keyed by the hint to show."""
    threshold = neurons.min_activity(max_acts, share)
    return {
        "That is `>=`: a neuron exactly at the threshold does not fire; the rule is *more than* min_share × the "
        "strongest maximum.": {l: a >= threshold for l, a in max_acts.items()},
        "That scales each layer by its own strongest neuron: the kit uses one scale for all the late layers, the "
        "strongest neuron of them all.": {l: a > share * float(a.max()) for l, a in max_acts.items()},
        "That compares with min_share alone: the threshold is min_share × the strongest neuron's maximum.":
            {l: a > share for l, a in max_acts.items()},
    }


@exercise_check
def check_firing(fn: Callable[[dict[int, Tensor], float], dict[int, Tensor]], max_acts: dict[int, Tensor],
                 min_share: float = DEFAULTS.min_share) -> None:
    """Exercise 01 (the activation check): ``fn(max_acts, min_share)`` → ``{layer: Bool[Tensor, "d_mlp"]}``.

    A neuron fires when its largest activation is more than :func:`neurons.min_activity` (``min_share`` of the
    strongest neuron's maximum over every layer given). The hand-made cases first, then ``max_acts``.
    """
    cases = [({l: torch.tensor(v) for l, v in case.items()}, 0.1) for case in FIRING_CASES]
    cases.append(({l: a.detach().float().cpu() for l, a in max_acts.items()}, min_share))
    for acts, share in cases:
        threshold = neurons.min_activity(acts, share)
        expected = {l: a > threshold for l, a in acts.items()}
        got = _call("fires", fn, {l: a.clone() for l, a in acts.items()}, share)
        if not isinstance(got, dict) or sorted(got) != sorted(expected):
            raise AssertionError(f"fires should return a dict with one boolean tensor per layer, keys {sorted(expected)}; "
                                 f"got {sorted(got) if isinstance(got, dict) else type(got).__name__}.")
        got = {l: _tensor(got[l], f"fires(...)[{l}]") for l in expected}
        for l in expected:
            _shape(expected[l], got[l], f"fires(...)[{l}]", "One value per neuron of the layer.")
        wrong = [l for l in expected if not torch.equal(got[l].bool(), expected[l])]
        if wrong:
            l = wrong[0]
            n = int((got[l].bool() != expected[l]).nonzero()[0])
            hint = next((h for h, w in _firing_mistakes(acts, share).items()
                         if all(torch.equal(got[k].bool(), w[k]) for k in w)), "")
            say = {True: "fires", False: "silent"}
            raise AssertionError(
                f"layer {l}, neuron {n}: largest activation {float(acts[l][n]):.4g}, threshold {threshold:.4g} "
                f"({share} × the strongest maximum {threshold / share:.4g}): expected {say[bool(expected[l][n])]}, got "
                f"{say[bool(got[l][n])]}. {hint}".rstrip()
            )
    total, firing = sum(a.numel() for a in expected.values()), sum(int(a.sum()) for a in expected.values())
    _passed(f"check_firing passed: {len(FIRING_CASES)} hand-made cases, and on this notebook's activity {firing} of "
            f"{total} late-layer neurons fire (threshold {threshold:.3g}).")


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
    measured on the suffixes that could become a prompt: fewer than ``max_tokens`` tokens (the paper drops
    longer prompts, and so does the pipeline), shortest first, 16 lengths at a time, until 16 past the first that
    passes (:func:`_suffix_activations`) — so the check costs seconds, not the minutes of every suffix of a
    500-token document.
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
    doc = tokenize(model, [text], warn_long=False)[0]
    position = min(len(doc) - 1, 23) if position is None else position
    if not 2 <= position < len(doc):
        raise ValueError(f"position {position} must index a token of the text after its second (BOS is 0, the last is {len(doc) - 1}).")
    doc = doc[: position + 1]
    full = activations.mlp_post(model, [doc], [layer])[0][layer][0, position].cpu()  # [d_mlp]
    neuron = int(full.argmax()) if neuron is None else neuron
    target = float(full[neuron])
    if target <= 0:
        raise ValueError(f"Neuron L{layer}.N{neuron} does not fire at token {position} (activation {target:.3g}): pick a token where it does.")
    acts = _suffix_activations(model, doc, layer, neuron, position, max_tokens, ratio * target)  # 1, 2, … tokens
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
    if expected is None:  # the neuron needs more context than a prompt may hold: the document gives no prompt
        same = "prompts.truncate agrees" if kit is None else same
        found = f"no prompt from the real document: no suffix under {max_tokens} tokens keeps more than {ratio:.0%}"
    else:
        found = f"the {expected}-token prompt"
    _passed(f"check_truncation passed: {len(TRUNCATION_CASES)} rule cases, and {found} ({same}).")


def _suffix_activations(
    model: TransformerBridge, doc: list[int], layer: int, neuron: int, position: int, max_tokens: int, threshold: float,
    chunk: int = 16,
) -> Float[Tensor, "n_suffixes"]:
    """The neuron at the last token of each suffix of ``doc`` ending at ``position``, shortest first, each decoded
    and re-tokenised with BOS as step 3 reads it: the suffixes a prompt can be (fewer than ``max_tokens`` tokens,
    as :func:`prompts.truncate` searches them), ``chunk`` lengths at a time, up to one chunk past the first that
    keeps more than ``threshold``. A longer suffix cannot be the shortest that passes, and measuring every one
    would cost a forward per length (O(n²) tokens): the answer is the same, the tensor shorter."""
    longest = min(position, max_tokens - 1)
    measured: list[Tensor] = []
    passed = False  # a suffix passed in an earlier chunk: this chunk is the last
    for first in range(1, longest + 1, chunk):
        lengths = range(first, min(first + chunk, longest + 1))
        texts = [prompts.prompt_text(model, doc, position + 1 - n, position) for n in lengths]
        measured.append(activations.last_token_activations(model, tokenize(model, texts, warn_long=False), layer, neuron))
        if passed:
            break
        passed = bool((measured[-1] > threshold).any())
    return torch.cat(measured)


# --------------------------------------------------------------------------------- 03 · head attribution


def hook_z_stack(model: TransformerBridge, texts: Sequence[str], n_head_layers: int) -> tuple[
    Float[Tensor, "batch pos head_layers n_heads d_head"], Int[Tensor, "batch"]
]:
    """The inputs of the attribution exercise: every candidate head's ``z`` and each prompt's last position.

    Prompts are tokenised as step 3 does (BOS first, right-padded); ``z`` stacks ``blocks.{l}.attn.hook_z`` of
    layers ``0 … n_head_layers - 1`` on a new dimension 2.
    """
    tokens, last = tokenize_prompts(model, list(texts))
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


# -------------------------------------------------------------- 03 · the active-head rules and the 25-75 % band

#: Hand-made attributions, one row per prompt, ten candidate heads.
ACTIVE_CASE: list[list[float]] = [
    [0.1, 2.0, -0.3, 0.4, 0.05, -0.2, 0.3, 0.0, 0.15, 0.2],  # one head stands out
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # one head wrote anything: top-3 marks it alone
    [-5.0, -5.1, -5.2, -5.3, -5.4, -5.5, -5.6, -5.7, -5.8, 1e-12],  # every head pushes down; the round-off head is above mean + 2σ, yet wrote nothing
    [-3.0, 2.5, 0.1, -0.1, 0.2, 0.0, 0.3, -0.2, 0.1, 0.05],  # a head pushing down hard is not active
    [2.4, 0.0, -1.0, 0.5, 0.1, -0.5, -0.4, 1.2, -1.4, 0.9],  # 2.4 is above mean + 2σ with ddof 0, not with ddof 1
]


def _active_mistakes(attr: Tensor, rule: str) -> dict[str, Tensor]:
    """What typical wrong rules answer on ``attr`` ``[n_prompts, n_heads]``, keyed by the hint to show."""
    wrote = attr.abs() > heads.ZERO_SHARE * attr.abs().amax(dim=1, keepdim=True)
    nothing = ("without the rule for heads that wrote nothing: a head whose |attribution| is at most ZERO_SHARE (1e-6) "
               "of the prompt's largest is never active (mask it with `& wrote`).")

    def top(values: Tensor, dim: int) -> Tensor:
        k = min(3, values.shape[dim])
        return torch.zeros_like(values, dtype=torch.bool).scatter_(dim, values.topk(k, dim=dim).indices, True)

    if rule == "top3":
        return {
            f"It matches top-3 {nothing}": top(attr, 1),
            "It matches the three largest |attribution|: a head pushing the neuron *down* is not active; rank the "
            "signed values.": top(attr.abs(), 1) & wrote,
            "It matches top-3 over the prompts (dim=0): rank each prompt's heads, dim=1.": top(attr, 0) & wrote,
        }
    mean, std = attr.mean(dim=1, keepdim=True), attr.std(dim=1, keepdim=True)
    return {
        "It matches the biased std (ddof 0: `unbiased=False`, `correction=0` or np.std): the rule uses torch's default, "
        "the unbiased std (divide by n − 1).": (attr > mean + 2 * attr.std(dim=1, unbiased=False, keepdim=True)) & wrote,
        f"It matches mean + 2σ {nothing}": attr > mean + 2 * std,
        "It matches mean + 2σ over the prompts (dim=0): the mean and std are over each prompt's candidate heads, "
        "dim=1.": (attr > attr.mean(dim=0) + 2 * attr.std(dim=0)) & wrote,
        "It matches |attribution| > mean + 2σ: a head pushing the neuron *down* is not active; compare the signed "
        "values.": (attr.abs() > mean + 2 * std) & wrote,
    }


@exercise_check
def check_active_heads(fn: Callable[[Tensor, str], Tensor], attr: Tensor) -> None:
    """Exercise 03 (the active-head rules): ``fn(attr, rule)`` → ``Bool[Tensor, "n_prompts n_heads"]``.

    Compared with :func:`heads.active_heads` under both rules, on the hand-made :data:`ACTIVE_CASE` and on ``attr``
    (the notebook's attributions).
    """
    for rule in heads.RULES:
        for case in (torch.tensor(ACTIVE_CASE), attr.detach().float().cpu()):
            expected = heads.active_heads(case, rule)
            got = _tensor(_call("active_heads", fn, case.clone(), rule), f"active_heads(attr, {rule!r})")
            _shape(expected, got, f"active_heads(attr, {rule!r})", "One value per prompt and head, like attr.")
            if torch.equal(got.bool(), expected):
                continue
            p, h = (int(i) for i in (got.bool() != expected).nonzero()[0])
            row = case[p]
            rule_says = (f"mean + 2σ = {float(row.mean() + 2 * row.std()):.4g}" if rule == "2sigma" else
                         f"the three largest are heads {sorted(row.topk(min(3, len(row))).indices.tolist())}")
            say = {True: "active", False: "inactive"}
            raise AssertionError(
                f"rule {rule!r}, prompt {p}, head {h}: attribution {float(row[h]):.4g} ({rule_says}): expected "
                f"{say[bool(expected[p, h])]}, got {say[bool(got[p, h])]}." + _mistake(got, _active_mistakes(case, rule))
            )
    per_prompt = {rule: float(heads.active_heads(attr.detach().float().cpu(), rule).sum(1).float().mean()) for rule in heads.RULES}
    _passed(f"check_active_heads passed: both rules match heads.active_heads on the hand-made prompts and on these "
            f"{attr.shape[0]} prompts × {attr.shape[1]} heads (active per prompt: "
            + ", ".join(f"{rule} {n:.2f}" for rule, n in per_prompt.items()) + ").")


def band_case() -> Tensor:
    """20 prompts × 6 heads, active on 5, 15, 4, 16, 20 and 10 prompts: 25 %, 75 %, 20 %, 80 %, 100 % and 50 %."""
    return torch.stack([torch.arange(20) < count for count in (5, 15, 4, 16, 20, 10)], dim=1)


def _band_mistakes(active: Tensor, band: str) -> dict[str, list[tuple[int, float]]]:
    """What typical wrong bands answer, keyed by the hint to show."""
    counts = active.sum(dim=0).tolist()
    fractions = [c / active.shape[0] for c in counts]

    def keep(rule: Callable[[float], bool], values: Sequence[float] = fractions) -> list[tuple[int, float]]:
        return [(h, v) for h, (f, v) in enumerate(zip(fractions, values)) if rule(f)]

    right = heads.select_pairs(active, band=band)
    mistakes = {
        "Those are percentages: return the fraction of prompts, in [0, 1].": [(h, 100 * f) for h, f in right],
        "Those are counts of prompts: divide by the number of prompts, active.shape[0].": [(h, counts[h]) for h, _ in right],
    }
    if band == "25-75":
        mistakes["That leaves out the edges: the paper's band is inclusive, 0.25 ≤ fraction ≤ 0.75 (5 of 20 prompts is "
                 "in)."] = keep(lambda f: 0.25 < f < 0.75)
    else:
        mistakes["That keeps a head active on exactly 25 %: the released data's band is *more than* 25 %."] = keep(lambda f: f >= 0.25)
        mistakes["That is the 25-75 band: '>25' has no upper bound (a head active on every prompt is kept)."] = keep(
            lambda f: 0.25 <= f <= 0.75)
    return mistakes


def _same_heads(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    return [h for h, _ in got] == [h for h, _ in expected] and all(abs(g - e) < 1e-9 for (_, g), (_, e) in zip(got, expected))


@exercise_check
def check_band(fn: Callable[[Tensor, str], list[tuple[int, float]]], active: Tensor) -> None:
    """Exercise 03 (the band): ``fn(active, band)`` → ``[(head, fraction of prompts where active), …]`` by head.

    Compared with :func:`heads.select_pairs` under both bands, on :func:`band_case` and on ``active`` (the notebook's).
    """
    for band in heads.BANDS:
        for case in (band_case(), active.detach().cpu().bool()):
            expected = heads.select_pairs(case, band=band)
            got = _call("heads_in_band", fn, case.clone(), band)
            try:
                got = [(int(h), float(f)) for h, f in got]
            except (TypeError, ValueError):
                raise AssertionError(f"heads_in_band should return a list of (head, fraction) pairs, got {got!r}.") from None
            if _same_heads(got, expected):
                continue
            hint = next((h for h, wrong in _band_mistakes(case, band).items() if _same_heads(got, wrong)), "")
            if not hint and any(not 0 <= h < case.shape[1] for h, _ in got):
                hint = f"A head index past the {case.shape[1]} heads: count each head's active prompts over dim=0."
            shown = lambda pairs: "[" + ", ".join(f"({h}, {f:.3g})" for h, f in pairs) + "]"  # noqa: E731
            raise AssertionError(
                f"band {band!r}, {case.shape[0]} prompts × {case.shape[1]} heads: expected {shown(expected)}, got "
                f"{shown(got)}. {hint}".rstrip()
            )
    kept = {band: heads.select_pairs(active.detach().cpu().bool(), band=band) for band in heads.BANDS}
    _passed("check_band passed: both bands match heads.select_pairs on the hand-made heads and on this neuron's (flat heads "
            + "; ".join(f"{band}: " + (", ".join(f"{h} ({f:.0%})" for h, f in pairs) or "none") for band, pairs in kept.items()) + ").")


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


#: (token, active examples, inactive examples, variant): examples are prompts with the token appended.
PROMPT_CASES: list[tuple[str, list[str], list[str], str]] = [
    (" only", ["The data is for research purposes only", "Use it for teaching purposes only"], ["He left as early only"], "oct2023"),
    (" ahead", ["Please go ahead", "You may go ahead"], [], "feb2024"),  # no inactive example: one bare '*' line
]


def _prompt_mistakes(token: str, active: list[str], inactive: list[str], variant: str) -> dict[str, str]:
    other = next(v for v in explain.EXPLAIN_ENDING if v != variant)
    right = explain.explanation_prompt(token, active, inactive, variant)
    return {
        "Active and inactive are swapped: the active examples come first.": explain.explanation_prompt(token, inactive, active, variant),
        "Each example starts with '* ' (a space): the paper writes '*' right before the example.": right.replace("\n*", "\n* "),
        "An empty list of examples still gets one bare '*' line, as in the authors' prompts: join after a leading '*' "
        "(\"*\" + \"\\n*\".join(examples)).": right.replace('"""\n*\n"""', '"""\n"""'),
        "The token is not in double quotes: '...the next token is \" only\"', its leading space inside the quotes.":
            right.replace(f'"{token}"', token),
        "The token lost its leading space: put it in the quotes as it is (' only').": explain.explanation_prompt(token.strip(), active, inactive, variant),
        f"That ends as the {other} variant does: EXPLAIN_ENDING[variant].": explain.explanation_prompt(token, active, inactive, other),
    }


def _first_text_difference(expected: str, got: str) -> str:
    i = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    return (f"they differ from character {i} (line {expected[:i].count(chr(10)) + 1}): expected …{expected[max(0, i - 25):i + 35]!r}…, "
            f"got …{got[max(0, i - 25):i + 35]!r}…")


@exercise_check
def check_explainer_prompt(fn: Callable[[str, list[str], list[str], str], str], token: str | None = None,
                           active: Sequence[str] = (), inactive: Sequence[str] = (), variant: str = DEFAULTS.prompt_variant) -> None:
    """Exercise 04 (the explainer's prompt): ``fn(token, active, inactive, variant)`` → the prompt, byte for byte
    :func:`explain.explanation_prompt`. The hand-made :data:`PROMPT_CASES`, then the notebook's pair when ``token`` is given."""
    cases = PROMPT_CASES + ([(token, list(active), list(inactive), variant)] if token is not None else [])
    for case in cases:
        expected = explain.explanation_prompt(*case)
        got = _call("explainer_prompt", fn, case[0], list(case[1]), list(case[2]), case[3])
        if not isinstance(got, str):
            raise AssertionError(f"explainer_prompt should return the prompt as one string, got {type(got).__name__}.")
        if got == expected:
            continue
        hint = next((h for h, wrong in _prompt_mistakes(*case).items() if got == wrong), "")
        raise AssertionError(f"token {case[0]!r}, {len(case[1])} active and {len(case[2])} inactive examples, {case[3]}: "
                             f"your prompt is not the paper's; {_first_text_difference(expected, got)}. {hint}".rstrip())
    _passed(f"check_explainer_prompt passed: {len(cases)} prompts equal explain.explanation_prompt byte for byte.")


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


# ------------------------------------------------------------------- 05 · judging: reading the classifier's answer

#: What a classifier may answer, the last ones neither Yes nor No.
ANSWER_CASES: list[str] = ["Yes", "No", " yes\n", "NO", "No.", "Yesterday", "no way", "Answer: yes", "Maybe", "", "Yes, it is"]


def _answer_mistakes() -> dict[str, Callable[[str], bool | None]]:
    """Typical wrong readers, keyed by the hint to show."""
    return {
        "That finds 'yes' or 'no' *inside* the answer: 'Yesterday' or 'no way' is no answer; compare the whole "
        "stripped answer.": lambda t: True if "yes" in t.lower() else False if "no" in t.lower() else None,
        "That reads the first letter or word: 'Yesterday', 'No.' or 'Yes, it is' is no clean answer; compare the whole "
        "stripped answer.": lambda t: True if t.strip().lower().startswith("y") else False if t.strip().lower().startswith("n") else None,
        "That counts an answer that is neither Yes nor No as No: return None, so it is counted and left out of E "
        "(as No it would count as a prediction the classifier never made).": lambda t: llm.parse_yes_no(t) is True,
        "That is case-sensitive: 'NO' is an answer too (compare `.lower()` or `.casefold()`).": lambda t: {"Yes": True, "No": False}.get(t.strip()),
        "That does not strip: the answer can come with a space or a newline (' yes\\n').": lambda t: {"yes": True, "no": False}.get(t.lower()),
    }


def _verdict(value: Any) -> Any:
    """A learner's answer as True / False / None (numpy booleans included); anything else unchanged, to report."""
    return bool(value) if isinstance(value, np.bool_) else value


@exercise_check
def check_parse_answer(fn: Callable[[str], bool | None]) -> None:
    """Exercise 05 (judging an explanation): ``fn(answer)`` → True (Yes), False (No) or None, as :func:`llm.parse_yes_no`."""
    expected = [llm.parse_yes_no(text) for text in ANSWER_CASES]
    got = [_verdict(_call("parse_answer", fn, text)) for text in ANSWER_CASES]
    same = lambda a, b: all(x is y for x, y in zip(a, b))  # noqa: E731  (None, False and 0 are different answers)
    if not same(got, expected):
        i = next(i for i, (g, e) in enumerate(zip(got, expected)) if g is not e)
        hint = next((h for h, wrong in _answer_mistakes().items() if same(got, [wrong(t) for t in ANSWER_CASES])), "")
        raise AssertionError(f"answer {ANSWER_CASES[i]!r}: expected {expected[i]!r}, got {got[i]!r}. {hint}".rstrip())
    _passed(f"check_parse_answer passed: {len(ANSWER_CASES)} answers read as llm.parse_yes_no reads them.")


# ------------------------------------------------------------------------------ 05 · the random baseline


@exercise_check
def check_random_baseline(fn: Callable[[int, list[int], int, int], list[tuple[int, int]]], model: TransformerBridge,
                          layers: Sequence[int], per_layer: int, seed: int = 0) -> None:
    """Exercise 05 (the random baseline): ``fn(d_mlp, layers, per_layer, seed)`` → ``[(layer, neuron), …]``.

    A valid baseline draws ``per_layer`` distinct neurons per layer, uniformly, without looking at the weights, and
    the same ones for the same seed; the kit's draw is :func:`neurons.random_neurons` (one seeded generator,
    ``randperm`` per layer, sorted). A valid draw that is not the kit's passes with a note.
    """
    d_mlp, layers = model.cfg.d_mlp, list(layers)

    def draw() -> list[tuple[int, int]]:
        got = _call("random_baseline", fn, d_mlp, list(layers), per_layer, seed)
        try:
            return [(int(layer), int(neuron)) for layer, neuron in got]
        except (TypeError, ValueError):
            raise AssertionError(f"random_baseline should return a list of (layer, neuron) pairs, got {got!r}.") from None

    got = draw()
    if draw() != got:
        raise AssertionError("Two calls with the same seed drew different neurons: draw from a generator seeded with "
                             "`seed` (torch.Generator().manual_seed(seed)), so that the baseline can be rerun.")
    expected = [(n["layer"], n["neuron"]) for n in neurons.random_neurons(model, layers, per_layer, seed)]
    if got == expected:
        _passed(f"check_random_baseline passed: {per_layer} distinct neurons in each of layers {layers}, the same for the same seed.")
        return
    picked = {layer: [n for l, n in got if l == layer] for layer in layers}
    if any(l not in picked for l, _ in got):
        raise AssertionError(f"A neuron of layer {next(l for l, _ in got if l not in picked)}: draw only from the layers given, {layers}.")
    for layer, chosen in picked.items():
        if len(chosen) != per_layer:
            raise AssertionError(f"layer {layer}: {len(chosen)} neurons, expected per_layer = {per_layer}.")
        if len(set(chosen)) < len(chosen):
            raise AssertionError(f"layer {layer} has a neuron twice: draw without replacement "
                                 "(torch.randperm(d_mlp, generator=generator)[:per_layer]), not with torch.randint.")
        if not all(0 <= n < d_mlp for n in chosen):
            raise AssertionError(f"layer {layer}: neuron {max(chosen)} does not exist (d_mlp = {d_mlp}).")
        if sorted(chosen) == sorted(neurons.congruence(model, layer)[0].topk(per_layer).indices.tolist()):
            raise AssertionError(f"layer {layer}: these are the layer's most congruent neurons. The baseline draws "
                                 "neurons at random, without looking at their weights or tokens.")
        if sorted(chosen) == list(range(per_layer)):
            raise AssertionError(f"layer {layer}: the first {per_layer} neurons are not a random draw.")
    if len(layers) > 1 and len({tuple(sorted(c)) for c in picked.values()}) == 1:
        raise AssertionError("Every layer got the same neurons: seed one generator once for the whole draw (seeding "
                             "again for each layer repeats the same draw).")
    if sorted(got) == sorted(expected):
        raise AssertionError("The kit's neurons, in another order: order them by layer, then neuron (sort each layer's draw).")
    _passed(f"check_random_baseline passed: {per_layer} distinct neurons in each of layers {layers}, the same for the same seed. "
            "It is not the kit's draw (neurons.random_neurons: one generator seeded once, torch.randperm per layer, the first "
            "per_layer, sorted), so the saved baseline uses the kit's.")


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
    tokens, last = tokenize_prompts(model, list(texts))
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


# -------------------------------------------------------------------- 06 · the KS test on per-pair means


def ks_effects() -> list[dict]:
    """Seven hand-made pairs' per-prompt records (probabilities normal and ablated, head active), as ablation.json's."""
    records = [
        ([0.9, 0.8, 0.7, 0.6, 0.5], [0.2, 0.78, 0.68, 0.5, 0.45], [True, True, True, False, False]),  # mean ≠ median
        ([0.5, 0.6, 0.4], [0.45, 0.5, 0.41], [True, False, False]),
        ([0.7, 0.9], [0.1, 0.85], [True, True]),  # no inactive prompt: no inactive mean
        ([0.3, 0.2, 0.4], [0.31, 0.19, 0.38], [False, False, False]),  # no active prompt: no active mean
        ([0.8, 0.6, 0.5, 0.5, 0.4], [0.3, 0.55, 0.5, 0.45, 0.1], [True, False, False, False, False]),
        ([0.6, 0.6, 0.6], [0.58, 0.62, 0.35], [True, False, True]),
        ([0.5, 0.7, 0.2, 0.4], [0.3, 0.69, 0.25, 0.1], [False, True, True, False]),
    ]
    return [ablate._summarise(normal, ablated, active, None, None) for normal, ablated, active in records]


def _ks_mistakes(effects: list[dict]) -> dict[str, tuple[float, float]]:
    """What typical wrong tests answer, keyed by the hint to show."""
    def per_pair(reduce: Callable, empty: float | None = None) -> tuple[list, list]:
        out: tuple[list, list] = ([], [])
        for e in effects:
            drops = np.asarray(e["prob_normal"]) - np.asarray(e["prob_ablated"])
            mask = np.asarray(e["head_active"], dtype=bool)
            for group, where in zip(out, (mask, ~mask)):
                group.append(float(reduce(drops[where])) if where.any() else empty)
        return out

    def ks(a: list, b: list) -> tuple[float, float]:
        a, b = [x for x in a if x is not None], [x for x in b if x is not None]
        result = stats.ks_2samp(a, b) if a and b else None
        return (float(result.statistic), float(result.pvalue)) if result else (float("nan"), float("nan"))

    drops = [(n - a, on) for e in effects for n, a, on in zip(e["prob_normal"], e["prob_ablated"], e["head_active"])]
    means = per_pair(np.mean)
    t = stats.ttest_ind([x for x in means[0] if x is not None], [x for x in means[1] if x is not None])
    return {
        "That pools the prompts: the paper's test compares one mean drop *per pair* (active prompts, inactive prompts), "
        "so a pair with many prompts does not outweigh the others.": ks([d for d, on in drops if on], [d for d, on in drops if not on]),
        "That counts a pair with no prompt in a group as a mean drop of 0: leave it out of that group (it has no mean).":
            ks(*per_pair(np.mean, empty=0.0)),
        "That uses each pair's median drop: the paper averages (the mean).": ks(*per_pair(np.median)),
        "That is a t-test (scipy.stats.ttest_ind): the paper's test is the two-sample Kolmogorov–Smirnov test, "
        "scipy.stats.ks_2samp.": (float(t.statistic), float(t.pvalue)),
    }


@exercise_check
def check_pair_ks(fn: Callable[[list[dict]], tuple[float, float]], effects: Sequence[dict]) -> None:
    """Exercise 06 (the KS test): ``fn(effects)`` → ``(statistic, pvalue)`` of :func:`ablate.ks_test` on the per-pair
    mean drops where the head was active and where it was not, computed from ablation.json's per-prompt records.
    On :func:`ks_effects`, then on ``effects`` (the notebook's)."""
    shown = "no KS test on them: a group is empty"
    for real, case in ((False, ks_effects()), (True, list(effects))):
        try:
            kit = ablate.ks_test([e["mean_decrease_active"] for e in case], [e["mean_decrease_inactive"] for e in case])
        except ValueError:  # a group is empty on this model: the hand-made pairs were tested
            continue
        expected = (kit["statistic"], kit["pvalue"])
        got = _call("pair_ks", fn, copy.deepcopy(case))
        got = (got.statistic, got.pvalue) if hasattr(got, "pvalue") else got
        try:
            statistic, pvalue = (float(v) for v in got)
        except (TypeError, ValueError):
            raise AssertionError(f"pair_ks should return (statistic, pvalue), got {got!r}.") from None
        if abs(statistic - expected[0]) < 1e-9 and abs(pvalue - expected[1]) < 1e-9 * max(1.0, expected[1]):
            shown = f"KS {expected[0]:.3f}, p = {expected[1]:.2e}" if real else shown
            continue
        hint = next((h for h, (s, p) in _ks_mistakes(case).items() if abs(s - statistic) < 1e-9 and abs(p - pvalue) < 1e-9), "")
        raise AssertionError(f"{len(case)} pairs ({kit['n_active']} with active prompts, {kit['n_inactive']} with inactive "
                             f"ones): expected KS {expected[0]:.4f} (p = {expected[1]:.3g}), got {statistic:.4f} (p = "
                             f"{pvalue:.3g}). {hint}".rstrip())
    _passed(f"check_pair_ks passed: the hand-made pairs and these {len(effects)} pairs match ablate.ks_test ({shown}).")

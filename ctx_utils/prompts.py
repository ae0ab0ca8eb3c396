"""Step 2 of the paper: the documents that activate each neuron most, cut down to short prompts.

Three stages (paper-method §2.3):

1. **Scan** (:func:`scan_top_documents`): run the corpus through the model once, in batches, and keep per
   neuron the ``k`` documents with the largest maximum activation (``blocks.{l}.mlp.hook_post``) and the
   position of that maximum. Only the needed hooks are cached, and the forward stops at the last needed
   layer's MLP input: only the selected neurons of that layer are computed (no rest of its MLP, no later
   blocks, no unembedding), which is why the scan beats a plain forward pass.
2. **Truncate** (:func:`truncate`): the shortest suffix of the document, ending at the max-activating token,
   on which the neuron still reaches more than ``ratio`` (80 %) of its document maximum.
3. **Filter** (:func:`find_activating_prompts`): drop prompts of ``max_tokens`` (100) tokens or more, drop
   repeated texts, keep the first ``keep`` (20) in activation order.

Tokenisation, decided once for the whole kit: every sequence is ``[BOS] + tokens``, as
``model.to_tokens`` does and as the head attribution of step 3 does. The authors searched the cut *without*
BOS and then attributed on the decoded text *with* BOS and newlines replaced by spaces, so the tokens could
differ (paper-method §7, pitfalls 4 and 5). Here each candidate cut is turned into exactly the text that
step 3 will read (decoded, newlines → spaces), re-tokenised with BOS, and *that* activation is measured
and stored. The candidates are evaluated shortest first, many per batched forward, so the first that passes
is the shortest one — exact, with no binary search and no monotonicity assumption.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ctx_utils.neurons import check_layer, check_neuron


def neuron_key(layer: int, neuron: int) -> str:
    """The key of a neuron in result files: ``"<layer>.<neuron>"``."""
    return f"{layer}.{neuron}"


def hook_name(layer: int) -> str:
    """The hook of a layer's MLP neuron activations (after the nonlinearity)."""
    return f"blocks.{layer}.mlp.hook_post"


def tokenize(model, texts: list[str], warn_long: bool = True) -> list[list[int]]:
    """``[BOS] + tokens`` for each text, cut to the model's context window ``n_ctx``.

    Texts longer than the window are cut to their first ``n_ctx`` tokens (as ``to_tokens`` does), with one
    warning that says how many.
    """
    tokenizer = model.tokenizer
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ValueError("The model's tokenizer has no BOS token; the kit prepends BOS to every prompt.")
    if not texts:
        return []
    n_ctx = model.cfg.n_ctx
    seqs = [[bos, *ids] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    too_long = sum(len(s) > n_ctx for s in seqs)
    if too_long and warn_long:
        warnings.warn(
            f"{too_long} of {len(seqs)} texts are longer than the context window ({n_ctx} tokens with BOS); "
            f"each was cut to its first {n_ctx} tokens.",
            stacklevel=2,
        )
    return [s[:n_ctx] for s in seqs]


def pad(seqs: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad sequences into ``tokens [batch, pos]`` and a ``mask [batch, pos]`` (1 = real token).

    Right padding keeps every real token at its true position and, with causal attention, unseen by the
    pads after it; the mask marks which positions to ignore when reading activations.
    """
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return tokens, mask


@torch.no_grad()
def mlp_post(model, seqs: list[list[int]], layers: list[int]) -> tuple[dict[int, Tensor], Tensor]:
    """One batched forward: ``{layer: Float[Tensor, "batch pos d_mlp"]}`` and the ``[batch, pos]`` mask.

    Caches only the ``hook_post`` of ``layers`` and stops after the last of them (``stop_at_layer``). No
    attention mask goes to the model: with right padding, causal attention already keeps the pads (which
    come last) out of every real token's view, and a mask would only add work. The returned mask is for the
    reader, who must ignore the pad positions (the tests check that batched equals one by one).
    """
    tokens, mask = pad(seqs, model.tokenizer.pad_token_id or 0)
    _, cache = model.run_with_cache(
        tokens.to(model.cfg.device),
        names_filter=[hook_name(layer) for layer in layers],
        stop_at_layer=max(layers) + 1,
    )
    return {layer: cache[hook_name(layer)].float() for layer in layers}, mask


#: TransformerLens activation names → the same function in torch, for the neurons computed by hand below.
ACTIVATIONS = {
    "gelu_new": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu": torch.nn.functional.gelu,
    "relu": torch.relu,
    "silu": torch.nn.functional.silu,
}


class _StopForward(Exception):
    """Raised by a hook to end a forward pass as soon as what we need has been read."""


@torch.no_grad()
def neuron_post(model, seqs: list[list[int]], columns: dict[int, Tensor]) -> tuple[dict[int, Tensor], Tensor]:
    """Like :func:`mlp_post`, but only the neurons ``columns[layer]``: ``{layer: [batch, pos, n_columns]}``.

    The last needed layer's MLP is not run at all: the forward stops at that layer's normalised MLP input
    (``ln2.hook_normalized``; LayerNorm is folded into ``W_in`` in compatibility mode) and only the chosen
    neurons are computed, ``act(x @ W_in[:, columns] + b_in[columns])`` — a few dot products instead of the
    whole MLP, its output projection and everything after. Earlier layers' MLPs must run anyway (later
    layers read them), so their ``hook_post`` is cached and sliced. Falls back to :func:`mlp_post` for an
    activation function it does not know (a test checks both paths agree).
    """
    last = max(columns)
    act = ACTIVATIONS.get(model.cfg.act_fn)
    if act is None:
        acts, mask = mlp_post(model, seqs, sorted(columns))
        return {layer: acts[layer][..., cols] for layer, cols in columns.items()}, mask
    tokens, mask = pad(seqs, model.tokenizer.pad_token_id or 0)
    cache: dict[str, Tensor] = {}

    def keep(tensor: Tensor, hook) -> Tensor:
        cache[hook.name] = tensor
        return tensor

    def keep_and_stop(tensor: Tensor, hook) -> None:
        cache[hook.name] = tensor
        raise _StopForward

    hooks = [(hook_name(layer), keep) for layer in columns if layer != last]
    hooks.append((f"blocks.{last}.ln2.hook_normalized", keep_and_stop))
    try:
        with model.hooks(fwd_hooks=hooks):
            model(tokens.to(model.cfg.device), return_type=None)
    except _StopForward:
        pass
    out = {layer: cache[hook_name(layer)][..., columns[layer]].float() for layer in columns if layer != last}
    x = cache[f"blocks.{last}.ln2.hook_normalized"]  # [batch, pos, d_model]
    cols = columns[last].to(x.device)
    out[last] = act(x @ model.W_in[last][:, cols] + model.b_in[last][cols]).float()
    return out, mask


def batches_by_length(seqs: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``seqs`` in batches of similar length (stable sort by length): little padding, same result."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def check_corpus(docs: list[str]) -> None:
    """Raise a clear error for an empty corpus or one that is not a list of strings."""
    if isinstance(docs, str):
        raise ValueError("`docs` is a single string: pass a list of documents, e.g. [text].")
    if len(docs) == 0:
        raise ValueError("The corpus is empty: pass at least one document (see ctx_utils.corpus.load_corpus).")
    if not all(isinstance(d, str) for d in docs):
        raise ValueError("Every document must be a string.")


def check_neurons(model, neurons: list[dict]) -> None:
    """Raise a clear error when the neuron list is empty or names a neuron the model does not have."""
    if not neurons:
        raise ValueError("No neurons given: select some with ctx_utils.neurons.select_next_token_neurons.")
    for n in neurons:
        check_neuron(model, n["layer"], n["neuron"])


def scan_top_documents(
    model, docs: list[str], neurons: list[dict], k: int = 30, batch_size: int = 16, progress: bool = True
) -> dict[str, list[dict]]:
    """Per neuron, the ``k`` documents with the largest maximum activation, in one streaming pass.

    Each document is ``[BOS] + tokens`` (cut to ``n_ctx``); its score for a neuron is the maximum of the
    neuron's activation over the document's real tokens (the BOS position and padding are ignored). Only a
    running top-``k`` per neuron is kept, never the corpus's activations. Ties go to the earlier document.

    Returns ``{"<layer>.<neuron>": [{"doc": int, "activation": float, "position": int}, ...]}`` sorted by
    activation, descending; ``doc`` indexes ``docs`` and ``position`` indexes the document's tokens with BOS
    at 0. Documents on which a neuron never rises above zero are kept out, with a warning.
    """
    check_corpus(docs)
    check_neurons(model, neurons)
    layers = sorted({n["layer"] for n in neurons})
    columns = {layer: torch.tensor([n["neuron"] for n in neurons if n["layer"] == layer]) for layer in layers}
    keys = [neuron_key(layer, int(i)) for layer in layers for i in columns[layer]]
    seqs = tokenize(model, docs)
    best_act = torch.empty(len(keys), 0)  # [n_neurons, <= k] running top-k
    best_doc = torch.empty(len(keys), 0, dtype=torch.long)
    best_pos = torch.empty(len(keys), 0, dtype=torch.long)
    batches = list(batches_by_length(seqs, batch_size))
    for index in tqdm(batches, desc="scan", disable=not progress):
        acts, mask = neuron_post(model, [seqs[i] for i in index], columns)
        mask = mask.bool().clone()
        mask[:, 0] = False  # the BOS position is the same in every document: not a real maximum
        # [batch, pos, n_neurons], pads and BOS at -inf so they never win the max
        picked = torch.cat([acts[layer] for layer in layers], dim=-1).cpu()
        picked = picked.masked_fill(~mask.cpu()[..., None], float("-inf"))
        act, pos = picked.max(dim=1)  # [batch, n_neurons]
        doc = torch.tensor(index).expand(len(keys), -1)
        best_act, best_doc, best_pos = _top_k(
            torch.cat([best_act, act.T], 1), torch.cat([best_doc, doc], 1), torch.cat([best_pos, pos.T], 1), k
        )
    result, silent = {}, []
    for row, key in enumerate(keys):
        entries = [
            {"doc": int(d), "activation": float(a), "position": int(p)}
            for a, d, p in zip(best_act[row], best_doc[row], best_pos[row])
            if a > 0
        ]
        result[key] = entries
        if not entries:
            silent.append(key)
    if silent:
        warnings.warn(
            f"Neurons {', '.join(silent)} never activate above zero on this corpus: they get no documents. "
            "Scan more documents, or check that these neurons fire at all (ctx_utils.prompts.max_activations).",
            stacklevel=2,
        )
    return result


def _top_k(act: Tensor, doc: Tensor, pos: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Keep, per row, the ``k`` largest activations; ties go to the smaller document index."""
    by_doc = doc.argsort(dim=1, stable=True)
    act, doc, pos = act.gather(1, by_doc), doc.gather(1, by_doc), pos.gather(1, by_doc)
    order = act.argsort(dim=1, descending=True, stable=True)[:, :k]
    return act.gather(1, order), doc.gather(1, order), pos.gather(1, order)


def max_activations(
    model, docs: list[str], layers: list[int], batch_size: int = 16, progress: bool = True
) -> dict[int, Tensor]:
    """``{layer: Float[Tensor, "d_mlp"]}``: every neuron's largest activation over the corpus (BOS excluded).

    The activation check that congruence alone lacks: a neuron with a high congruence but a maximum near
    zero never writes its token (see :func:`ctx_utils.neurons.select_next_token_neurons`'s ``activity``).
    """
    check_corpus(docs)
    for layer in layers:
        check_layer(model, layer)
    seqs = tokenize(model, docs)
    best = {layer: torch.full((model.cfg.d_mlp,), float("-inf")) for layer in layers}
    for index in tqdm(list(batches_by_length(seqs, batch_size)), desc="activations", disable=not progress):
        acts, mask = mlp_post(model, [seqs[i] for i in index], layers)
        mask = mask.bool().clone()
        mask[:, 0] = False
        for layer in layers:
            layer_max = acts[layer].masked_fill(~mask[..., None], float("-inf")).amax(dim=(0, 1)).cpu()
            best[layer] = torch.maximum(best[layer], layer_max)
    return best


@torch.no_grad()
def last_token_activations(
    model, seqs: list[list[int]], layer: int, neuron: int, batch_size: int = 64
) -> Tensor:
    """``Float[Tensor, "n"]``: the neuron's activation at the last real token of each sequence."""
    out = torch.empty(len(seqs))
    for index in batches_by_length(seqs, batch_size):
        acts, mask = neuron_post(model, [seqs[i] for i in index], {layer: torch.tensor([neuron])})
        last = mask.sum(dim=1) - 1  # [batch]
        out[index] = acts[layer][torch.arange(len(index)), last, 0].cpu()
    return out


@torch.no_grad()
def token_activations(model, text: str, layer: int, neuron: int) -> tuple[list[str], Tensor]:
    """A prompt's tokens (BOS left out) and the neuron's activation on each: ``Float[Tensor, "pos"]``.

    For pictures: hand the pair to ``ctx_utils.viz.token_activations``.
    """
    check_neuron(model, layer, neuron)
    seq = tokenize(model, [text])[0]
    acts, _ = mlp_post(model, [seq], [layer])
    return [model.tokenizer.decode([t]) for t in seq[1:]], acts[layer][0, 1:, neuron].cpu()


def prompt_text(model, doc_tokens: list[int], start: int, position: int) -> str:
    """The prompt for a cut: ``doc_tokens[start : position + 1]`` decoded, newlines replaced by spaces."""
    return model.tokenizer.decode(doc_tokens[start : position + 1]).replace("\n", " ")


def truncate(
    model,
    doc_tokens_or_text: str | list[int],
    layer: int,
    neuron: int,
    position: int,
    ratio: float = 0.8,
    max_tokens: int | None = None,
    target: float | None = None,
    window: int = 8,
    batch_size: int = 128,
) -> dict:
    """The shortest suffix ending at ``position`` on which the neuron keeps more than ``ratio`` of its activation.

    ``doc_tokens_or_text``: the document as text, or as the token ids from :func:`tokenize` (BOS first);
    ``position`` indexes those tokens (as :func:`scan_top_documents` returns it). ``target`` is the
    activation to keep a ``ratio`` of; by default the activation at ``position`` in the full document.
    The search itself is :func:`truncate_many`'s, for one document.

    Returns ``{"text", "activation", "n_tokens", "start", "passed"}``: ``n_tokens`` counts the prompt's
    tokens without BOS; ``passed`` is False when no candidate kept enough (then the longest one tried is
    returned, so a caller can see how far it fell short).
    """
    check_neuron(model, layer, neuron)
    doc = tokenize(model, [doc_tokens_or_text])[0] if isinstance(doc_tokens_or_text, str) else list(doc_tokens_or_text)
    if not 1 <= position < len(doc):
        raise ValueError(f"position {position} is outside the document's tokens 1..{len(doc) - 1} (0 is BOS).")
    if target is None:
        target = float(last_token_activations(model, [doc[: position + 1]], layer, neuron)[0])
    return truncate_many(model, [doc], layer, neuron, [position], [target], ratio, max_tokens, window, batch_size)[0]


def truncate_many(
    model,
    docs: list[list[int]],
    layer: int,
    neuron: int,
    positions: list[int],
    targets: list[float],
    ratio: float = 0.8,
    max_tokens: int | None = None,
    window: int = 8,
    batch_size: int = 128,
) -> list[dict]:
    """:func:`truncate` for several documents of one neuron at once, sharing batched forwards.

    Each candidate suffix ``doc[start : position + 1]`` is decoded to text (newlines → spaces),
    re-tokenised with BOS and run; the activation at its last token is what counts (and what step 3 will
    see). In each round every unfinished document offers its next ``window`` suffix lengths, shortest first,
    and all of them go through the model together (the window doubles each round); a document is done at
    its first passing length, which is therefore its shortest. Lengths stop at ``max_tokens - 1`` document
    tokens when ``max_tokens`` is given.
    """
    for position, target in zip(positions, targets):
        if target <= 0:
            raise ValueError(
                f"Neuron {layer}.{neuron} has activation {target:.3g} <= 0 at position {position}: "
                "there is nothing to keep 80 % of. Pick a position where the neuron fires."
            )
    bos = model.tokenizer.bos_token_id
    longest = [p if max_tokens is None else min(p, max_tokens - 1) for p in positions]
    results: list[dict | None] = [None] * len(docs)
    first = 1
    while first <= max(longest):
        jobs = [  # (document, suffix length) pairs tried in this round
            (i, n)
            for i in range(len(docs))
            if results[i] is None or not results[i]["passed"]
            for n in range(first, min(first + window, longest[i] + 1))
        ]
        if not jobs:
            break
        first, window = first + window, 2 * window  # most prompts are short: small first window, then grow
        texts = [prompt_text(model, docs[i], positions[i] + 1 - n, positions[i]) for i, n in jobs]
        seqs = [[bos, *ids] for ids in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        acts = last_token_activations(model, seqs, layer, neuron, batch_size).tolist()
        for (i, n), text, seq, act in zip(jobs, texts, seqs, acts):
            if results[i] is not None and results[i]["passed"]:
                continue  # a shorter suffix of this document already passed in this round
            start = positions[i] + 1 - n
            passed = act > ratio * targets[i]
            results[i] = {"text": text, "activation": act, "n_tokens": len(seq) - 1, "start": start, "passed": passed}
    return results


def find_activating_prompts(
    model,
    docs: list[str],
    neurons: list[dict],
    k: int = 30,
    max_tokens: int = 100,
    keep: int = 20,
    ratio: float = 0.8,
    top: dict[str, list[dict]] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, list[dict]]:
    """The paper's prompts per neuron: scan, truncate each top document, filter, keep the first ``keep``.

    ``top`` is a finished :func:`scan_top_documents` result (scanned here when not given). A truncated
    prompt is kept when it keeps more than ``ratio`` of the document's maximum, has fewer than
    ``max_tokens`` tokens (the paper drops ≥ 100) and its text is not already kept for that neuron.

    Returns ``{"<layer>.<neuron>": [{"text", "activation", "n_tokens", "doc", "position",
    "doc_activation"}, ...]}`` in the order of the documents' activations; ``text`` ends on the token
    where the neuron fires, and the neuron's token is what should follow it. This is ``prompts.json``'s
    ``"prompts"``.
    """
    if top is None:
        top = scan_top_documents(model, docs, neurons, k=k, batch_size=batch_size, progress=progress)
    check_corpus(docs)
    result = {}
    for n in tqdm(neurons, desc="truncate", disable=not progress):
        key = neuron_key(n["layer"], n["neuron"])
        entries = top.get(key, [])[:k]
        doc_tokens = tokenize(model, [docs[e["doc"]] for e in entries], warn_long=False)
        positions, targets = [e["position"] for e in entries], [e["activation"] for e in entries]
        cuts = (
            truncate_many(model, doc_tokens, n["layer"], n["neuron"], positions, targets, ratio, max_tokens)
            if entries
            else []
        )
        kept, seen = [], set()
        for entry, cut in zip(entries, cuts):
            if not cut["passed"] or cut["n_tokens"] >= max_tokens or cut["text"] in seen:
                continue
            seen.add(cut["text"])
            kept.append(
                {
                    "text": cut["text"],
                    "activation": cut["activation"],
                    "n_tokens": cut["n_tokens"],
                    "doc": entry["doc"],
                    "position": entry["position"],
                    "doc_activation": entry["activation"],
                }
            )
            if len(kept) == keep:
                break
        result[key] = kept
    return result

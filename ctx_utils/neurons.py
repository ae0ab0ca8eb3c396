"""Step 1 of the paper: find next-token neurons by their congruence with the unembedding.

A late-layer MLP neuron writes ``W_out[layer][neuron]`` (a d_model vector) into the residual stream each time
it fires; dotted with the unembedding ``W_U`` that is the neuron's *direct* effect on every logit. The paper
(arXiv 2402.15055) calls the largest of these dot products the neuron's **congruence** and its argmax the
neuron's **token**; a "next-token neuron" is one with high congruence whose token is a real word. Gurnee et
al. (2024) look at the same vocabulary projection through its *shape* instead (kurtosis and skew of the
cosine similarities; arXiv 2401.12181): :func:`vocab_moments` gives that view for comparison. Congruence reads
only the weights, so a neuron that never fires can top the list: :func:`max_activations` (one pass over a corpus,
through :mod:`ctx_utils.activations`) gives the activity check the paper does not make.

All weights are read after ``enable_compatibility_mode()`` (folded LayerNorm, centred writing weights and
unembedding), as the paper's TransformerLens flags do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ctx_utils.activations import batches_by_length, mlp_post
from ctx_utils.corpus import check_corpus
from ctx_utils.indices import check_layer, check_neuron
from ctx_utils.session import SESSION
from ctx_utils.settings import DEFAULTS
from ctx_utils.tokens import tokenize

if TYPE_CHECKING:  # the model type, for readers and type checkers; not imported at run time
    from transformer_lens.model_bridge import TransformerBridge

#: The paper's layers per GPT-2 size (the authors' code, github.com/fbarez/Interpreting-Context-Look-ups, `experiment_data/1_next_token_neurons`), keyed by (n_layers, d_model).
PAPER_LAYERS: dict[tuple[int, int], list[int]] = {
    (12, 768): [9, 10, 11],  # GPT-2 small
    (24, 1024): [20, 21, 22, 23],  # GPT-2 medium
    (36, 1280): [31, 32, 33, 34, 35],  # GPT-2 large
}
#: The authors' hand-made reject lists (glitch, number and word-piece tokens), from their released
#: neurons.json files (October 2023): the token strings of the neurons they rejected.
REJECTED_TOKENS: dict[str, tuple[str, ...]] = {
    "gpt2-small": (' "\'', " 1870", " mathemat"),
    "gpt2-medium": (" Jagu", " mathemat"),
    "gpt2-large": (" --", " 2012", " 13", " RandomRedditor", " 18", " ?)", " 17", " サーティ", " constitu", " Ago",
                   " nep", " dis", " ASA", " Nanto"),
}


def rejected_tokens(model_name: str) -> tuple[str, ...]:
    """The reject list of step 1 for a model: the authors' for GPT-2 small / medium / large, else none."""
    return REJECTED_TOKENS.get(model_name, ())


#: Neurons per chunk when projecting onto the vocabulary: bounds memory to chunk × d_vocab floats.
CHUNK = 256


def default_layers(model: TransformerBridge) -> list[int]:
    """The layers the paper scans: GPT-2 small 9–11, medium 20–23, large 31–35; else the last quarter (≥ 1)."""
    n_layers = model.cfg.n_layers
    if (n_layers, model.cfg.d_model) in PAPER_LAYERS:
        return list(PAPER_LAYERS[(n_layers, model.cfg.d_model)])
    return list(range(n_layers - max(1, n_layers // 4), n_layers))


def token_string(model: TransformerBridge, token: int) -> str:
    """The vocabulary string of one token id, leading space kept (``" only"``)."""
    return model.tokenizer.decode([int(token)])


@dataclass(frozen=True)
class VocabProjection:
    """A layer's neurons projected on the vocabulary, ``W_out[layer] @ W_U`` (``[d_mlp, d_vocab]``), summarised
    per neuron in the two ways the kit reads it: the paper's congruence (the row's max, and its argmax token) and
    Gurnee et al.'s shape of the row (skew and kurtosis of its cosines, :func:`vocab_moments`).
    ``skew`` and ``kurtosis`` are None where only the congruence was asked for."""

    congruence: Float[Tensor, "d_mlp"]
    token: Int[Tensor, "d_mlp"]
    skew: Float[Tensor, "d_mlp"] | None = None
    kurtosis: Float[Tensor, "d_mlp"] | None = None


@torch.no_grad()
def vocab_projection(model: TransformerBridge, layer: int) -> VocabProjection:
    """Layer ``layer``'s :class:`VocabProjection`, computed once per model and layer.

    The ``[d_mlp, d_vocab]`` product is computed in chunks of neurons, so GPT-2's 3072 × 50257 matrix never sits in
    memory at once, and each chunk serves both summaries: the product is the cost (GPT-2 small: about 5 CPU
    seconds a layer; the moments add about 2). Step 1, its exercise and notebook 01's figures all read it; it is
    computed again only when the weights are replaced or edited in place (their storage or version changes).
    """
    layer = check_layer(model, layer)
    w_out = model.blocks[layer].mlp.W_out  # [d_mlp, d_model]; model.W_out would stack every layer's copy
    w_u = model.W_U  # [d_model, d_vocab]
    weights = tuple((w.data_ptr(), w._version, tuple(w.shape)) for w in (w_out, w_u))
    cache = SESSION.cache_of(model).vocab  # kept while the model lives (ctx_utils.session)
    saved = cache.get(layer)
    if saved is None or saved[0] != weights:
        saved = cache[layer] = weights, _project(w_out, w_u, moments=True)
    return saved[1]


def congruence(model: TransformerBridge, layer: int) -> tuple[Float[Tensor, "d_mlp"], Int[Tensor, "d_mlp"]]:
    """Each neuron's congruence and token: max and argmax over the vocabulary of ``W_out[layer] @ W_U``.

    Returns ``(scores, tokens)``, both of shape ``[d_mlp]`` (copies: editing them leaves the cache alone), from
    :func:`vocab_projection`.
    """
    projection = vocab_projection(model, layer)
    return projection.congruence.clone(), projection.token.clone()


def _project(w_out: Float[Tensor, "n d_model"], w_u: Float[Tensor, "d_model d_vocab"], moments: bool) -> VocabProjection:
    """The :class:`VocabProjection` of the rows ``w_out``, chunk by chunk; the moments only when ``moments``.

    The moments are those of the cosines ``cos(W_out[n], W_U[:, t])``: dividing the row by ``|W_out[n]|`` changes
    no standardised moment, so only the columns are scaled (by ``1 / |W_U[:, t]|``), then centred; with
    ``d`` the centred row and ``var`` its population variance, skew = mean(d³) / var^1.5, kurtosis = mean(d⁴) / var².
    """
    inverse_norms = 1 / w_u.norm(dim=0) if moments else None  # [d_vocab]
    parts: dict[str, list[Tensor]] = {"congruence": [], "token": [], "skew": [], "kurtosis": []}
    for start in range(0, w_out.shape[0], CHUNK):
        product = w_out[start : start + CHUNK] @ w_u  # [chunk, d_vocab]
        best = product.max(dim=-1)
        parts["congruence"].append(best.values)
        parts["token"].append(best.indices)
        if moments:
            d = product.mul_(inverse_norms)  # the cosines, times a per-row constant
            var, mean = torch.var_mean(d, dim=-1, unbiased=False, keepdim=True)  # [chunk, 1]
            d = d.sub_(mean)
            d2 = d * d
            parts["skew"].append(torch.linalg.vecdot(d2, d) / d.shape[-1] / var[:, 0] ** 1.5)
            parts["kurtosis"].append(torch.linalg.vecdot(d2, d2) / d.shape[-1] / var[:, 0] ** 2)
    return VocabProjection(
        torch.cat(parts["congruence"]).float().cpu(),
        torch.cat(parts["token"]).cpu(),
        *((torch.cat(parts[name]).float().cpu() for name in ("skew", "kurtosis")) if moments else ()),
    )


def passes_token_rule(token: str, reject: Iterable[str] = ()) -> bool:
    """The paper's token filter: starts with a space, longer than 2 characters, not in the reject list."""
    return token.startswith(" ") and len(token) > 2 and token not in set(reject)


def max_activations(
    model: TransformerBridge, docs: list[str], layers: list[int], batch_size: int = DEFAULTS.batch_size, progress: bool = True
) -> dict[int, Float[Tensor, "d_mlp"]]:
    """Every neuron's largest activation over the corpus (BOS excluded), per layer.

    The activation check that congruence alone lacks: a neuron with a high congruence but a maximum near
    zero never writes its token (see :func:`select_next_token_neurons`'s ``activity``).
    """
    check_corpus(docs)
    layers = [check_layer(model, layer) for layer in layers]
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


def min_activity(max_acts: dict[int, Float[Tensor, "d_mlp"]], min_share: float = DEFAULTS.min_share) -> float:
    """The activation check's threshold: ``min_share`` of the strongest neuron's maximum over every layer given.

    ``max_acts``: each neuron's largest activation on the corpus, per layer; a neuron
    *fires* when its maximum is more than this. One scale for all the late layers: a GELU neuron is rarely exactly
    silent, so "fires" is measured against the strongest neuron, not against zero.
    """
    return min_share * max(float(acts.max()) for acts in max_acts.values())


def select_next_token_neurons(
    model: TransformerBridge,
    layers: list[int] | None = None,
    per_layer: int = DEFAULTS.per_layer,
    reject: Iterable[str] = (),
    activity: dict[int, Float[Tensor, "d_mlp"]] | None = None,
    min_activity: float = 0.0,
) -> list[dict]:
    """The paper's next-token neurons: per layer, the ``per_layer`` most congruent neurons whose token passes.

    Walk each layer's neurons by congruence, descending, and skip a neuron whose token does not start with a
    space, is 2 characters or shorter (``" a"``), or is in ``reject`` (glitch tokens such as
    ``" RandomRedditor"``). Several neurons may share a token.

    ``activity`` (optional, each neuron's largest activation per layer, e.g. from
    :func:`max_activations`) adds a check the paper does not make: skip neurons whose
    largest activation on the corpus is ``<= min_activity``. Congruence reads only the weights, so a silent
    neuron can top the list (the organism shows this); those neurons get ``"skipped_silent"`` counted.

    Returns dicts ``{"layer", "neuron", "token", "token_id", "congruence", "rank"}`` ordered by layer, then
    by congruence; ``rank`` is the neuron's congruence rank within its layer (0 = most congruent).
    """
    layers = default_layers(model) if layers is None else [check_layer(model, layer) for layer in layers]
    if per_layer < 1:
        raise ValueError(f"per_layer must be at least 1, got {per_layer}.")
    reject = set(reject)
    chosen: list[dict] = []
    for layer in layers:
        scores, tokens = congruence(model, layer)
        order = torch.sort(scores, descending=True, stable=True).indices
        kept = []
        for rank, neuron in enumerate(order.tolist()):
            token = token_string(model, tokens[neuron])
            if not passes_token_rule(token, reject):
                continue
            if activity is not None and float(activity[layer][neuron]) <= min_activity:
                continue
            kept.append(
                {
                    "layer": layer,
                    "neuron": neuron,
                    "token": token,
                    "token_id": int(tokens[neuron]),
                    "congruence": float(scores[neuron]),
                    "rank": rank,
                }
            )
            if len(kept) == per_layer:
                break
        if not kept:
            raise ValueError(
                f"No neuron of layer {layer} passes the token rule (leading space, > 2 characters, not rejected)"
                + (" and fires above min_activity" if activity is not None else "")
                + ": check the tokenizer's decoding, or loosen `reject` / `min_activity`."
            )
        chosen.extend(kept)
    return chosen


def random_neurons(model: TransformerBridge, layers: list[int], per_layer: int, seed: int = 0) -> list[dict]:
    """The paper's baseline: ``per_layer`` neurons drawn uniformly per layer, with no token filter.

    Dicts ``{"layer", "neuron", "token", "token_id", "congruence"}`` as :func:`select_next_token_neurons`
    gives (the token is the argmax token, for display; no congruence rank, which would need the whole layer's
    vocabulary product: only the drawn neurons' rows are projected), ordered by layer then neuron index; the
    draw depends only on ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for layer in [check_layer(model, layer) for layer in layers]:
        if not 1 <= per_layer <= model.cfg.d_mlp:
            raise ValueError(f"per_layer must be between 1 and d_mlp = {model.cfg.d_mlp}, got {per_layer}.")
        picked = torch.randperm(model.cfg.d_mlp, generator=generator)[:per_layer].sort().values
        with torch.no_grad():
            rows = _project(model.blocks[layer].mlp.W_out[picked], model.W_U, moments=False)  # [per_layer] each
        scores, tokens = rows.congruence, rows.token
        chosen.extend(
            {
                "layer": layer,
                "neuron": int(n),
                "token": token_string(model, token),
                "token_id": int(token),
                "congruence": float(score),
            }
            for n, score, token in zip(picked.tolist(), scores, tokens)
        )
    return chosen


def vocab_moments(model: TransformerBridge, layer: int, neurons: list[int] | Int[Tensor, "n"] | None = None) -> dict:
    """Gurnee et al.'s view: skew and kurtosis of ``cos(W_U[:, t], W_out[layer][n])`` over all tokens t.

    With z the standardised cosines (population std), skew = mean(z³) and kurtosis = mean(z⁴) (not excess:
    a Gaussian gives 3). A *prediction* neuron has high kurtosis and positive skew (a few tokens pushed up
    hard), a *suppression* neuron high kurtosis and negative skew. ``neurons`` defaults to all of the layer.
    Read from the layer's :func:`vocab_projection` (the same product as the congruence: computed once).

    Returns ``{"layer", "neurons": list[int], "skew": Float[Tensor, "n"], "kurtosis": Float[Tensor, "n"]}``.
    """
    layer = check_layer(model, layer)
    if neurons is None:
        index = torch.arange(model.cfg.d_mlp)
    else:  # checked one by one before any conversion: torch.as_tensor would turn 1.5 into 1 and -1 into the last
        index = torch.tensor([check_neuron(model, layer, n)[1] for n in neurons], dtype=torch.long)
    projection = vocab_projection(model, layer)
    return {"layer": layer, "neurons": index.tolist(), "skew": projection.skew[index], "kurtosis": projection.kurtosis[index]}

"""Step 2 of the paper: the documents that activate each neuron most, cut down to short prompts.

Three stages (arXiv 2402.15055; the authors' code, ``notebooks/2_find_max_activating`` and ``3_trim_max_activating``):

1. **Scan** (:func:`scan_top_documents`): run the corpus through the model once, in batches, and keep per
   neuron the ``k`` documents with the largest maximum activation (``blocks.{l}.mlp.hook_post``) and the
   position of that maximum. The forward is :mod:`ctx_utils.activations`' (fused attention, only the
   selected neurons, stopped after the last needed layer's MLP), as is every forward of the truncation search.
2. **Truncate**: the shortest suffix of the document, ending at the max-activating token, on which the
   neuron still reaches more than ``ratio`` (80 %) of its document maximum. :func:`shortest_cut_reference`
   is that rule written plainly (every length, shortest first); :func:`truncate` is the batched search
   the kit runs, tested equal to it (below, and ``tests/test_prompts.py``).
3. **Filter** (:func:`find_activating_prompts`): drop prompts of ``max_tokens`` (100) tokens or more, keep
   the first ``keep`` (20) in activation order. Texts are not de-duplicated: each prompt is a different
   document's cut.

Tokenisation, decided once for the whole kit: every sequence is ``[BOS] + tokens``, as
``model.to_tokens`` does and as the head attribution of step 3 does. The authors searched the cut *without*
BOS and then attributed on the decoded text *with* BOS and newlines replaced by spaces, so the tokens could
differ (the authors' code, github.com/fbarez/Interpreting-Context-Look-ups, `src/neuron_texts.py`). Here each candidate cut is turned into exactly the text that
step 3 will read (decoded, newlines → spaces), re-tokenised with BOS, and *that* activation is measured
and stored.

The search for the cut runs in rounds, for all neurons' top documents at once: each round puts every
unfinished document's next few candidates through one batched forward. Candidates are suffix lengths in
document tokens; ``lo`` is the longest known to fail, ``hi`` the shortest known to pass:

a. the :data:`WINDOW` (2) shortest cuts: the first that passes is the answer, exactly (short prompts are
   the common case);
b. otherwise the longest (back to BOS, or ``max_tokens - 1`` tokens): if it fails no cut passes, and the
   search ends (a neuron that needs more context than a prompt may hold, common on a randomly initialised
   model, costs one forward here). When the longest is the whole prefix its activation is known already, so
   the round runs the cut one token shorter instead: if only the longest passes it is the answer;
c. otherwise :data:`WINDOW` lengths spread evenly over ``(lo, hi)``, round after round, until
   ``lo + 1 == hi``.

Beyond (a) this assumes, as the authors' binary search for the latest start does, that the activation falls
as the prompt shortens: the passing cuts are all those from some length on. Where that holds the answer is
the shortest passing cut; where it does not, it is a passing cut whose one-token-shorter cut fails, but a
shorter one may pass too (tests/test_prompts.py checks both against brute force). Trying every length
shortest first needs no assumption but costs O(n²) tokens when the answer is long (benchmarks/bench.py).
Two savings leave the values unchanged: a candidate that begins another of the same document and start
(another neuron's cut, ending later) is read from that one's forward, as causal attention allows; and the
whole prefix is not run again when its activation is known (the scan's maximum, or :func:`truncate`'s
default target).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ctx_utils.activations import batches_by_length, batches_by_padding, last_token_activations, neuron_post
from ctx_utils.corpus import check_corpus
from ctx_utils.indices import check_neuron
from ctx_utils.settings import DEFAULTS
from ctx_utils.tokens import neuron_label, tokenize

if TYPE_CHECKING:  # the model type, for readers and type checkers; not imported at run time
    from transformer_lens.model_bridge import TransformerBridge


def check_neurons(model: TransformerBridge, neurons: list[dict]) -> list[dict]:
    """The neuron list with plain-int ``layer`` and ``neuron``; a clear error when it is empty or names a
    neuron the model does not have."""
    if not neurons:
        raise ValueError("No neurons given: select some with ctx_utils.neurons.select_next_token_neurons.")
    checked = []
    for n in neurons:
        layer, neuron = check_neuron(model, n["layer"], n["neuron"])
        checked.append({**n, "layer": layer, "neuron": neuron})
    return checked


def scan_top_documents(
    model: TransformerBridge, docs: list[str], neurons: list[dict], k: int = DEFAULTS.top_k, batch_size: int = DEFAULTS.batch_size, progress: bool = True
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
    neurons = check_neurons(model, neurons)
    layers = sorted({n["layer"] for n in neurons})
    columns = {layer: torch.tensor([n["neuron"] for n in neurons if n["layer"] == layer]) for layer in layers}
    labels = [neuron_label(layer, int(i)) for layer in layers for i in columns[layer]]
    seqs = tokenize(model, docs)
    best_act = torch.empty(len(labels), 0)  # [n_neurons, <= k] running top-k
    best_doc = torch.empty(len(labels), 0, dtype=torch.long)
    best_pos = torch.empty(len(labels), 0, dtype=torch.long)
    batches = list(batches_by_length(seqs, batch_size))
    for index in tqdm(batches, desc="scan", disable=not progress):
        acts, mask = neuron_post(model, [seqs[i] for i in index], columns)
        mask = mask.bool().clone()
        mask[:, 0] = False  # the BOS position is the same in every document: not a real maximum
        # [batch, pos, n_neurons], pads and BOS at -inf so they never win the max
        picked = torch.cat([acts[layer] for layer in layers], dim=-1).cpu()
        picked = picked.masked_fill(~mask.cpu()[..., None], float("-inf"))
        act, pos = picked.max(dim=1)  # [batch, n_neurons]
        doc = torch.tensor(index).expand(len(labels), -1)
        best_act, best_doc, best_pos = _top_k(
            torch.cat([best_act, act.T], 1), torch.cat([best_doc, doc], 1), torch.cat([best_pos, pos.T], 1), k
        )
    result, silent = {}, []
    for row, label in enumerate(labels):
        entries = [
            {"doc": d, "activation": a, "position": p}
            for a, d, p in zip(best_act[row].tolist(), best_doc[row].tolist(), best_pos[row].tolist())
            if a > 0
        ]
        result[label] = entries
        if not entries:
            silent.append(label)
    if silent:
        warnings.warn(
            f"Neurons {', '.join(silent)} never activate above zero on this corpus: they get no documents. "
            "Scan more documents, or check that these neurons fire at all (ctx_utils.neurons.max_activations).",
            stacklevel=2,
        )
    return result


def _top_k(
    act: Float[Tensor, "n_neurons n"], doc: Int[Tensor, "n_neurons n"], pos: Int[Tensor, "n_neurons n"], k: int
) -> tuple[Float[Tensor, "n_neurons k"], Int[Tensor, "n_neurons k"], Int[Tensor, "n_neurons k"]]:
    """Keep, per row, the ``k`` largest activations; ties go to the smaller document index."""
    by_doc = doc.argsort(dim=1, stable=True)
    act, doc, pos = act.gather(1, by_doc), doc.gather(1, by_doc), pos.gather(1, by_doc)
    order = act.argsort(dim=1, descending=True, stable=True)[:, :k]
    return act.gather(1, order), doc.gather(1, order), pos.gather(1, order)


#: Candidate cuts per document per round of the truncation search (module docstring).
WINDOW = 2
#: Candidate cuts per batched forward at most.
CUT_BATCH = 128


def prompt_text(model: TransformerBridge, doc_tokens: list[int], start: int, position: int) -> str:
    """The prompt for a cut: ``doc_tokens[start : position + 1]`` decoded, newlines replaced by spaces."""
    return model.tokenizer.decode(doc_tokens[start : position + 1]).replace("\n", " ")


def shortest_cut_reference(
    model: TransformerBridge, doc_tokens: list[int], layer: int, neuron: int, position: int, ratio: float = DEFAULTS.ratio,
    max_tokens: int | None = None, target: float | None = None,
) -> dict:
    """The paper's truncation rule written plainly: every cut from the shortest up, one forward each.

    The first cut ``doc_tokens[start : position + 1]`` (as text, newlines → spaces, re-tokenised with BOS) on
    which the neuron keeps *more than* ``ratio`` of ``target`` (default: its activation on the whole prefix).
    Slow (one forward per length): it is the reference :func:`truncate`'s batched search is tested against.
    Returns :func:`truncate`'s dict; ``passed`` is False (and the longest cut returned) when none passes.
    """
    layer, neuron = check_neuron(model, layer, neuron)
    if target is None:
        target = float(last_token_activations(model, [doc_tokens[: position + 1]], layer, neuron)[0])
    cut = {}
    for n in range(1, _longest(position, max_tokens) + 1):
        start = position + 1 - n
        text = prompt_text(model, doc_tokens, start, position)
        seq = tokenize(model, [text])[0]
        act = float(last_token_activations(model, [seq], layer, neuron)[0])
        cut = {"text": text, "activation": act, "n_tokens": len(seq) - 1, "start": start, "passed": act > ratio * target}
        if cut["passed"]:
            break
    return cut


def truncate(
    model: TransformerBridge,
    doc_tokens_or_text: str | list[int],
    layer: int,
    neuron: int,
    position: int,
    ratio: float = DEFAULTS.ratio,
    max_tokens: int | None = None,
    target: float | None = None,
    window: int = WINDOW,
    batch_size: int = CUT_BATCH,
) -> dict:
    """The shortest suffix ending at ``position`` on which the neuron keeps more than ``ratio`` of its activation.

    ``doc_tokens_or_text``: the document as text, or as the token ids from :func:`tokenize` (BOS first);
    ``position`` indexes those tokens (as :func:`scan_top_documents` returns it). ``target`` is the
    activation to keep a ``ratio`` of; by default the activation at ``position`` in the full document.
    The search is :func:`find_activating_prompts`'s: exact up to ``window`` tokens, beyond that under the paper's
    assumption that the activation falls as the prompt shortens (module docstring).

    Returns ``{"text", "activation", "n_tokens", "start", "passed"}``: ``n_tokens`` counts the prompt's
    tokens without BOS; ``passed`` is False when no candidate kept enough (then the longest one tried is
    returned, so a caller can see how far it fell short).
    """
    layer, neuron = check_neuron(model, layer, neuron)
    doc = tokenize(model, [doc_tokens_or_text])[0] if isinstance(doc_tokens_or_text, str) else list(doc_tokens_or_text)
    if not 1 <= position < len(doc):
        raise ValueError(f"position {position} is outside the document's tokens 1..{len(doc) - 1} (0 is BOS).")
    whole = None  # the whole prefix's activation, when measured here
    if target is None:
        target = whole = float(last_token_activations(model, [doc[: position + 1]], layer, neuron)[0])
    cut = _Cut(doc, 0, layer, neuron, position, target, _longest(position, max_tokens), whole)
    _search_cuts(model, [cut], ratio, window, batch_size)
    return cut.result()


def _longest(position: int, max_tokens: int | None) -> int:
    """The longest cut to search, in document tokens: back to BOS, or ``max_tokens - 1`` (the paper drops longer)."""
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"max_tokens must be at least 2 (a prompt of at least one token), got {max_tokens}.")
    return position if max_tokens is None else min(position, max_tokens - 1)


@dataclass
class _Cut:
    """One truncation search over the suffixes of ``doc`` that end at ``position``, by length in document tokens.

    ``doc_id`` names the document: cuts with the same document and start may share a forward. ``whole`` is the
    whole prefix's activation (``doc[: position + 1]``) when it is already measured (the scan's, or
    :func:`truncate`'s default target), so that cut is not run again. ``lo`` is the longest length known
    to fail (0: none yet), ``hi`` the shortest known to pass (None: none yet); ``tried`` maps each length
    tried to its result.
    """

    doc: list[int]
    doc_id: int
    layer: int
    neuron: int
    position: int
    target: float
    longest: int
    whole: float | None = None
    lo: int = 0
    hi: int | None = None
    tried: dict[int, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target <= 0:
            raise ValueError(
                f"Neuron {self.layer}.{self.neuron} has activation {self.target:.3g} <= 0 at position "
                f"{self.position}: there is nothing to keep 80 % of. Pick a position where the neuron fires."
            )

    @property
    def done(self) -> bool:
        """``lo`` and ``hi`` are adjacent (``hi`` is the answer), or no length up to ``longest`` passes."""
        return self.lo + 1 == self.hi or (self.hi is None and self.lo >= self.longest)

    def next_lengths(self, window: int) -> list[int]:
        """This round's lengths: the ``window`` shortest; then the longest (with the one below it when the longest
        is the whole prefix, whose activation is known); then ``window`` inside (lo, hi)."""
        if not self.tried:
            return list(range(1, min(window, self.longest) + 1))
        if self.hi is None:  # the longest decides whether any cut passes; one shorter only when the longest is free
            free = self.whole is not None and self.longest == self.position
            return [n for n in ((self.longest - 1, self.longest) if free else (self.longest,)) if n > self.lo]
        if self.hi - self.lo - 1 <= window:
            return list(range(self.lo + 1, self.hi))
        step = (self.hi - self.lo) / (window + 1)  # > 1: the lengths are distinct and strictly inside (lo, hi)
        return [self.lo + round(i * step) for i in range(1, window + 1)]

    def narrow(self, lengths: list[int]) -> None:
        """After a round: ``hi`` = the shortest of ``lengths`` that passed, ``lo`` = the longest failed below it."""
        for n in sorted(lengths):
            if self.tried[n]["passed"]:
                self.hi = n
                return
            self.lo = n

    def known(self, seq: list[int]) -> float | None:
        """The activation of ``seq`` if it is the whole prefix and that was measured already, else None."""
        return self.whole if self.whole is not None and seq == self.doc[: self.position + 1] else None

    def result(self) -> dict:
        """The shortest passing cut found, else the longest cut tried (``passed`` False)."""
        return self.tried[self.hi] if self.hi is not None else self.tried[max(self.tried)]


def _search_cuts(model: TransformerBridge, cuts: list[_Cut], ratio: float, window: int, batch_size: int,
                 bar: tqdm | None = None) -> None:
    """Run the searches of ``cuts`` (of any neurons) together: each round's candidates of all of them in one go.
    ``bar``: a progress bar advanced by one per finished search."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}.")
    live = list(cuts)
    while live:
        plan = [(cut, cut.next_lengths(window)) for cut in live]
        jobs = [(cut, cut.position + 1 - n) for cut, lengths in plan for n in lengths]  # (cut, start)
        texts = [prompt_text(model, cut.doc, start, cut.position) for cut, start in jobs]
        seqs = tokenize(model, texts, warn_long=False)  # as step 3 will read each prompt
        acts = _round_activations(model, jobs, seqs, batch_size)
        for (cut, start), text, seq, act in zip(jobs, texts, seqs, acts):
            cut.tried[cut.position + 1 - start] = {
                "text": text, "activation": act, "n_tokens": len(seq) - 1, "start": start,
                "passed": act > ratio * cut.target,
            }
        for cut, lengths in plan:
            cut.narrow(lengths)
        if bar is not None:
            bar.update(sum(cut.done for cut in live))
        live = [cut for cut in live if not cut.done]


def _round_activations(model: TransformerBridge, jobs: list[tuple[_Cut, int]], seqs: list[list[int]], batch_size: int) -> list[float]:
    """Each candidate's activation (``jobs``: ``(cut, start)``, ``seqs``: their tokens): the known one for a
    whole prefix, else measured, candidates that begin another of the same document and start sharing its run."""
    acts = [cut.known(seq) for (cut, _), seq in zip(jobs, seqs)]
    run = [i for i, act in enumerate(acts) if act is None]
    origins = [(jobs[i][0].doc_id, jobs[i][1]) for i in run]  # (document, start)
    neurons = [(jobs[i][0].layer, jobs[i][0].neuron) for i in run]
    for i, act in zip(run, _shared_last_token_activations(model, [seqs[i] for i in run], origins, neurons, batch_size)):
        acts[i] = act
    return acts


def _merge_prefixes(seqs: list[list[int]], origins: list[tuple]) -> tuple[list[list[int]], list[int]]:
    """The sequences to run, and for each of ``seqs`` the run it begins: a sequence that begins a longer one
    with the same origin (document and start) is read from that one's forward instead of being run (causal attention: same values)."""
    runs: list[list[int]] = []
    run_of = [0] * len(seqs)
    by_origin: dict[tuple, list[int]] = defaultdict(list)
    for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i])):
        n = len(seqs[i])
        run = next((r for r in by_origin[origins[i]] if runs[r][:n] == seqs[i]), None)
        if run is None:
            run = len(runs)
            runs.append(seqs[i])
            by_origin[origins[i]].append(run)
        run_of[i] = run
    return runs, run_of


@torch.no_grad()
def _shared_last_token_activations(
    model: TransformerBridge, seqs: list[list[int]], origins: list[tuple], neurons: list[tuple[int, int]], batch_size: int
) -> list[float]:
    """Neuron ``neurons[i]`` = ``(layer, neuron)`` at the last token of ``seqs[i]``, for every ``i``.

    Sequences that begin a longer one with the same origin (the same document cut at the same start, for a
    neuron that fires later in it) share its forward (:func:`_merge_prefixes`). All runs go through the
    same forwards, which compute every needed neuron and stop after the deepest needed layer.
    """
    runs, run_of = _merge_prefixes(seqs, origins)
    needed = sorted(set(neurons))
    columns = {layer: torch.tensor([n for l, n in needed if l == layer]) for layer in {l for l, _ in needed}}
    column_of = {pair: j for layer, cols in columns.items() for j, pair in enumerate((layer, int(n)) for n in cols)}
    reads: dict[int, list[int]] = defaultdict(list)  # run → indices of the seqs read from it
    for i, run in enumerate(run_of):
        reads[run].append(i)
    out = [0.0] * len(seqs)
    for index in batches_by_padding(runs, batch_size):
        acts, _ = neuron_post(model, [runs[run] for run in index], columns)
        for row, run in enumerate(index):
            for i in reads[run]:
                layer, neuron = neurons[i]
                out[i] = float(acts[layer][row, len(seqs[i]) - 1, column_of[layer, neuron]])
    return out


def find_activating_prompts(
    model: TransformerBridge,
    docs: list[str],
    neurons: list[dict],
    k: int = DEFAULTS.top_k,
    max_tokens: int = DEFAULTS.max_tokens,
    keep: int = DEFAULTS.keep,
    ratio: float = DEFAULTS.ratio,
    top: dict[str, list[dict]] | None = None,
    batch_size: int = DEFAULTS.batch_size,
    progress: bool = True,
) -> dict[str, list[dict]]:
    """The paper's prompts per neuron: scan, truncate each top document, filter, keep the first ``keep``.

    ``top`` is a finished :func:`scan_top_documents` result (scanned here when not given). A truncated
    prompt is kept when it keeps more than ``ratio`` of the document's maximum and has fewer than
    ``max_tokens`` tokens (the paper drops ≥ 100). All neurons' documents are truncated together
    (the batched search of the module docstring, one forward per round for all of them), so a document in
    several neurons' top lists is tokenised once and cuts they share are run once.

    Returns ``{"<layer>.<neuron>": [{"text", "activation", "n_tokens", "doc", "position",
    "doc_activation"}, ...]}`` in the order of the documents' activations; ``text`` ends on the token
    where the neuron fires, and the neuron's token is what should follow it. This is ``prompts.json``'s
    ``"prompts"``.
    """
    neurons = check_neurons(model, neurons)
    if top is None:
        top = scan_top_documents(model, docs, neurons, k=k, batch_size=batch_size, progress=progress)
    check_corpus(docs)
    labels = [neuron_label(n["layer"], n["neuron"]) for n in neurons]
    entries = {label: top.get(label, [])[:k] for label in labels}
    cuts = _top_document_cuts(model, docs, neurons, entries, max_tokens)
    searched = _search_until_kept(model, cuts, ratio, max_tokens, keep, progress)
    return {label: _kept_prompts(entries[label], [cut.result() for cut in searched[label]], max_tokens, keep) for label in entries}


def _search_until_kept(model: TransformerBridge, cuts: dict[str, list[_Cut]], ratio: float, max_tokens: int, keep: int,
                       progress: bool = False) -> dict[str, list[_Cut]]:
    """Search each neuron's cuts in document order, only as many as it takes to keep ``keep`` prompts.

    A wave searches, for every neuron still short of ``keep``, as many of its next documents as prompts it
    lacks, all neurons together (:func:`_search_cuts`). A document after a neuron's ``keep``-th kept prompt
    would be dropped by :func:`_kept_prompts` anyway, so it is never searched: the prompts are those of
    searching them all (with the paper's 30 documents and 20 prompts, up to a third of the searches saved).
    Returns each neuron's searched cuts, a prefix of ``cuts[label]``.
    """
    searched: dict[str, list[_Cut]] = {label: [] for label in cuts}
    with tqdm(total=sum(map(len, cuts.values())), desc="truncate", disable=not progress) as bar:
        while True:
            wave = {}
            for label, neuron_cuts in cuts.items():
                lacking = keep - sum(_kept(cut.result(), max_tokens) for cut in searched[label])
                wave[label] = neuron_cuts[len(searched[label]) : len(searched[label]) + max(lacking, 0)]
            if not any(wave.values()):
                bar.update(bar.total - bar.n)  # the documents left need no search: enough prompts before them
                return searched
            _search_cuts(model, [cut for neuron_cuts in wave.values() for cut in neuron_cuts], ratio, WINDOW, CUT_BATCH, bar)
            for label, neuron_cuts in wave.items():
                searched[label].extend(neuron_cuts)


def _top_document_cuts(
    model: TransformerBridge, docs: list[str], neurons: list[dict], entries: dict[str, list[dict]], max_tokens: int
) -> dict[str, list[_Cut]]:
    """A truncation search per top document of each neuron; each document is tokenised once.

    The scan's activation is the whole prefix's (causal attention), so that cut is never run again.
    """
    needed = sorted({e["doc"] for neuron_entries in entries.values() for e in neuron_entries})
    doc_tokens = dict(zip(needed, tokenize(model, [docs[d] for d in needed], warn_long=False)))
    cuts = {}
    for n in neurons:
        label = neuron_label(n["layer"], n["neuron"])
        cuts[label] = [
            _Cut(doc_tokens[e["doc"]], e["doc"], n["layer"], n["neuron"], e["position"], e["activation"],
                 _longest(e["position"], max_tokens), whole=e["activation"])
            for e in entries[label]
        ]
    return cuts


def _kept_prompts(entries: list[dict], cuts: list[dict], max_tokens: int, keep: int) -> list[dict]:
    """The first ``keep`` cuts that passed and have fewer than ``max_tokens`` tokens, with their document's entry."""
    kept = []
    for entry, cut in zip(entries, cuts):
        if not _kept(cut, max_tokens):
            continue
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
    return kept


def _kept(cut: dict, max_tokens: int) -> bool:
    """A searched cut becomes a prompt: it passed, and has fewer than ``max_tokens`` tokens (the paper drops longer)."""
    return cut["passed"] and cut["n_tokens"] < max_tokens

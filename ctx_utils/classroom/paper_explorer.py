"""The explorer of the authors' real pairs: GPT-2 small, medium and large, from the data the kit ships.

Notebook 08's second explorer. For one released (neuron, head) pair a learner reads the neuron's token, the
positive and negative prompts GPT-4 was shown (each with the token that follows it), GPT-4's explanation and,
beside it, the kit's offline explainer's explanation of the same examples, GPT-4's Yes/No on each held-out prompt
against the truth, E, and the ablation effect. Pairs sort by E or by ablation, and a free-text search filters
them by token and explanations.

Everything shown comes from data or from a language model, so every string is escaped before it becomes HTML
(``html.escape``); nothing is rendered as markup. In an HTML export, where widgets cannot run, a static copy of
the top pairs (:class:`StaticCopy`, shown after the explorer) stands in for the blank widget.
"""

from __future__ import annotations

import html
from functools import cache
from typing import Any

from ctx_utils import paper_data
from ctx_utils.offline_explainer import explain_offline
from ctx_utils.offline_reader import OfflineReader
from ctx_utils.score import head_explanation_score
from ctx_utils.tokens import head_name

SORTS = {"E": "E", "ablation": "drop_active"}  # the sort choices: field of a row
LISTED = 40  # pairs listed in the explorer's list at a time
STATIC_PAIRS = 5  # pairs on the static page of an HTML export
GPT4_STUB = "Active when the document "  # GPT-4 completed "This attention head is active when the document"


def pair_rows(data: paper_data.ModelData) -> list[dict[str, Any]]:
    """One row per released pair of a model, in the authors' order: everything the explorer shows of it.

    ``held_out`` lists ``(prompt, head active, GPT-4 said Yes)``; ``drop_active`` / ``drop_inactive`` are the
    ablation's mean probability decreases (None without ablation data or without such prompts).
    """
    ablation = data.ablation or [None] * len(data.explanations)
    rows = []
    for item, score, abl in zip(paper_data.held_out_pairs(data), paper_data.pair_scores(data), ablation):
        pair = item["pair"]
        rows.append({
            "model": data.name, "layer": pair["layer"], "neuron": pair["neuron"], "head": pair["head"],
            "label": f"L{pair['layer']}.N{pair['neuron']} ← {head_name(pair['head_layer'], pair['head_index'])}",
            "token": pair["token"], "positive": pair["positive_examples"], "negative": pair["negative_examples"],
            "gpt4": GPT4_STUB + pair["explanation"].strip(), "offline": _offline_text(pair),
            "held_out": list(zip(item["test_prompts"], item["truth"], item["gpt4_yes"])), "E": score["E"],
            "drop_active": abl and abl["mean_decrease_active"], "drop_inactive": abl and abl["mean_decrease_inactive"],
        })
    return rows


def _offline_text(pair: dict[str, Any]) -> str:
    """The offline explainer's sentence, from the pair's train examples only (as GPT-4 saw them)."""
    return explain_offline(pair["positive_examples"], pair["negative_examples"], pair["token"]).text


@cache
def model_rows(name: str) -> tuple[dict[str, Any], ...]:
    """:func:`pair_rows` of one shipped model (``gpt2-small``, ``gpt2-medium``, ``gpt2-large``), computed once."""
    return tuple(pair_rows(paper_data.load_model_data(paper_data.resolve_data_dir() / name)))


def offline_score(row: dict[str, Any]) -> float:
    """E of the offline explanation: the offline reader answers each held-out prompt from its text alone."""
    read = OfflineReader(row["offline"])
    return head_explanation_score([truth for _, truth, _ in row["held_out"]], [read(p) for p, _, _ in row["held_out"]])


def select(rows: list[dict[str, Any]] | tuple[dict[str, Any], ...], sort: str = "E", query: str = "") -> list[dict[str, Any]]:
    """The rows whose token or explanations contain ``query`` (any case), highest ``sort`` first, None last."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {sorted(SORTS)}, got {sort!r}.")
    needle = query.strip().lower()
    found = [r for r in rows if not needle or any(needle in r[f].lower() for f in ("token", "gpt4", "offline"))]
    return sorted(found, key=lambda r: (r[SORTS[sort]] is None, -(r[SORTS[sort]] or 0.0)))


def option_label(row: dict[str, Any]) -> str:
    """One line per pair for the list: identifiers, token, E, ablation drop (plain text, never markup)."""
    drop = "—" if row["drop_active"] is None else f"{row['drop_active']:+.4f}"
    return f"{row['label']} {row['token']!r} · E {row['E']:.2f} · ablation {drop}"


# ------------------------------------------------------------------------------------------------ HTML


def _e(text: Any) -> str:
    return html.escape(str(text))


def _example(text: str, token: str) -> str:
    """A prompt with the token that follows it in bold (the example exactly as GPT-4 read it)."""
    prompt = text[: len(text) - len(token)] if text.endswith(token) else text
    return f"<li><code>{_e(prompt)}<b>{_e(token)}</b></code></li>"


def pair_html(row: dict[str, Any], n_examples: int = 8) -> str:
    """Everything about one pair as escaped HTML: examples, both explanations, held-out answers, E, ablation."""
    def examples(items: list[str]) -> str:
        more = f"<li>… and {len(items) - n_examples} more</li>" if len(items) > n_examples else ""
        return "<ul>" + "".join(_example(x, row["token"]) for x in items[:n_examples]) + more + "</ul>" if items else "<p>none</p>"

    answers = "".join(
        f"<tr><td><code>{_e(prompt)}<b>{_e(row['token'])}</b></code></td><td>{'active' if truth else 'inactive'}</td>"
        f"<td>{'Yes' if yes else 'No'}</td><td>{'✓' if yes == truth else '✗'}</td></tr>"
        for prompt, truth, yes in row["held_out"])
    drops = ", ".join(f"{name}: {'no such prompt' if v is None else f'{v:+.4f}'}"
                      for name, v in (("active", row["drop_active"]), ("inactive", row["drop_inactive"])))
    ablation = drops if row["drop_active"] is not None or row["drop_inactive"] is not None else "not run for this model"
    one_class = len({truth for _, truth, _ in row["held_out"]}) == 1
    caveat = (" — every held-out prompt is one class, so E is that class's rate alone (the Oct-2023 convention)"
              if one_class else "")
    return (
        f"<h4>{_e(row['model'])} {_e(row['label'])} → next token <code>{_e(repr(row['token']))}</code></h4>"
        f"<p><b>E = {row['E']:.3f}</b> (GPT-4's explanation, {len(row['held_out'])} held-out prompts; 0.5 is chance{caveat}) · "
        f"offline explanation E = {offline_score(row):.3f} · ablation, mean drop in the token's probability where "
        f"the head is {_e(ablation)}</p>"
        f"<table><tr><th>GPT-4's explanation</th><th>the kit's offline explainer</th></tr>"
        f"<tr><td style='vertical-align:top'>{_e(row['gpt4'])}</td><td style='vertical-align:top'>{_e(row['offline'])}</td></tr></table>"
        f"<p>Positive examples (head active), {len(row['positive'])}:</p>{examples(row['positive'])}"
        f"<p>Negative examples (head inactive), {len(row['negative'])}:</p>{examples(row['negative'])}"
        f"<p>GPT-4's answers on the held-out prompts:</p>"
        f"<table><tr><th>prompt + token</th><th>truth</th><th>GPT-4</th><th></th></tr>{answers}</table>"
    )


def static_page(rows: list[dict[str, Any]] | tuple[dict[str, Any], ...], n: int = STATIC_PAIRS) -> str:
    """The top ``n`` pairs by E, in full: what an HTML export shows where the explorer's widgets cannot run."""
    top = select(rows, "E")[:n]
    model = _e(top[0]["model"]) if top else "no model"
    return (f"<p><b>The authors' {model} pairs, top {len(top)} of {len(rows)} by E</b> (open the notebook in Jupyter "
            "or Colab to browse every pair).</p>" + "<hr>".join(pair_html(r) for r in top))


# ---------------------------------------------------------------------------------------------- widget


#: Hides the static copy where the live explorer drew just above it (JupyterLab, and an export whose widgets load).
_HIDE_WHEN_LIVE = ("<style>.jp-OutputArea-child:has(.widget-vbox) ~ .jp-OutputArea-child .ctx-paper-static "
                   "{display: none;}</style>")


class Explorer:
    """The live explorer (an ipywidgets box) with a one-line text form for places widgets cannot run.

    nbconvert draws a widget only from saved widget state; without it, it falls back to ``text/html``, a note
    that the static copy (:class:`StaticCopy`) follows, instead of the widget's Python repr.
    """

    def __init__(self, widget: Any) -> None:
        self.widget = widget

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        return {**data, "text/html": "<p><i>The explorer's widgets run in Jupyter or Colab; a static copy of the top "
                                     "pairs follows.</i></p>"}


class StaticCopy:
    """The top pairs as a page (:func:`static_page`): what an HTML export shows where the widgets stay blank.

    In JupyterLab it is hidden when the live explorer drew just above it; elsewhere it stays, folded.
    """

    def __init__(self, model: str) -> None:
        self.model = model

    def _repr_html_(self) -> str:
        return (f"{_HIDE_WHEN_LIVE}<details open class='ctx-paper-static'><summary>A static copy of the top pairs "
                f"(the live explorer is above)</summary>{static_page(model_rows(self.model))}</details>")


def build_paper_explorer(model: str = "gpt2-small") -> Explorer:
    """The released-pairs explorer: a model Dropdown, a sort Dropdown, a search box, the pair list, the pair."""
    import ipywidgets as widgets

    names = sorted(paper_data.load_paper_data())
    if model not in names:
        raise ValueError(f"No released data for {model!r}: choose one of {names}.")
    model_box = widgets.Dropdown(options=names, value=model, description="Model")
    sort_box = widgets.Dropdown(options=[("E, highest first", "E"), ("ablation drop where active", "ablation")],
                                description="Sort by")
    search = widgets.Text(placeholder="token or word of an explanation", description="Search")
    listing = widgets.Select(rows=10, layout={"width": "760px"})
    count = widgets.Label()
    view = widgets.HTML()

    def show_pair(change: Any = None) -> None:
        row = listing.value
        view.value = pair_html(row) if row is not None else "<p>No pair matches.</p>"

    def refill(change: Any = None) -> None:
        found = select(model_rows(model_box.value), sort_box.value, search.value)
        count.value = f"{len(found)} of {len(model_rows(model_box.value))} pairs match; the first {min(LISTED, len(found))} are listed."
        listing.options = [(option_label(r), r) for r in found[:LISTED]]
        listing.value = listing.options[0][1] if listing.options else None
        show_pair()

    for box in (model_box, sort_box, search):
        box.observe(refill, names="value")
    listing.observe(show_pair, names="value")
    refill()
    ui = widgets.VBox([widgets.HBox([model_box, sort_box]), search, count, listing, view])
    return Explorer(ui)

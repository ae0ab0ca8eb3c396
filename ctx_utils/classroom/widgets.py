"""The explorer of notebook 08: browse one model's results neuron by neuron, head by head.

Pick a next-token neuron and see the prompts that fire it, coloured by its activation; pick one of the heads
that step 3 selected for it and see the head's attribution on each of those prompts, its attention on an
active and an inactive prompt, its explanation (step 4), its score E (step 5) and its ablation effect (step 6).

The callbacks are plain functions of ``(model, results, ...)`` that return things Jupyter can display, so they
are tested without a browser and a notebook can call them directly for a static view. :func:`build_explorer`
only wires them to core ipywidgets (``Dropdown``, ``Output``, ``VBox``, ``HTML``), which Colab supports.

``results`` is what :func:`load_results` returns: each JSON file of ``results/<model>/`` that exists, keyed by
its file name (``results["heads.json"]["pairs"]``). Only ``prompts.json`` and ``heads.json`` are required; a
missing later file is named, with the notebook that writes it, where its numbers would appear. Every file records
the settings that made it (and their fingerprint): the explorer refuses files made with different settings
(:func:`mixed_settings` names them), and ``load_results(settings)`` recomputes those through the pipeline, so an
explanation is never shown beside another rule's E.

The authors' released GPT-2 pairs have their own explorer, :mod:`ctx_utils.classroom.paper_explorer`.
"""

from __future__ import annotations

import html
from typing import Any, NamedTuple

import plotly.graph_objects as go
from torch import Tensor

from ctx_utils import viz
from ctx_utils.classroom.compare_results import mixed_settings
from ctx_utils.activations import token_activations
from ctx_utils.heads import head_attributions, head_label
from ctx_utils.results import load_json, results_dir
from ctx_utils.settings import DEFAULTS, Settings, shown
from ctx_utils.tokens import head_name, neuron_label, parse_neuron_label

#: The result files the explorer reads, and the notebook that writes each.
RESULT_FILES: dict[str, str] = {
    "neurons.json": "01",
    "prompts.json": "02",
    "heads.json": "03",
    "explanations.json": "04",
    "scores.json": "05",
    "ablation.json": "06",
}
REQUIRED = ("prompts.json", "heads.json")


class HeadView(NamedTuple):
    """What the explorer shows for one (neuron, head) pair, top to bottom."""

    attribution: go.Figure  # the head's attribution on each of the neuron's prompts, active ones red
    attention: viz.Panel  # the head's attention on an active and an inactive prompt, side by side
    summary: viz.PlainText  # explanation, score E and ablation effect, as plain text


# ------------------------------------------------------------------------------------------------ results


def load_results(source: str | Settings) -> dict[str, dict]:
    """The result files of one model, keyed by file name.

    ``source`` a model name: every file of ``results/<model>/`` that exists, as saved (missing ones left out).
    ``source`` a :class:`~ctx_utils.settings.Settings`: every step through :mod:`ctx_utils.pipeline`, so a file
    made with other settings is recomputed (and saved) and a missing one computed; all then match ``settings``.
    """
    if isinstance(source, Settings):
        from ctx_utils import pipeline  # the pipeline imports the model stack: only this path needs it

        return {name: getattr(pipeline, name.removesuffix(".json"))(source, quiet=True) for name in RESULT_FILES}
    folder = results_dir(source)
    return {name: load_json(folder / name) for name in RESULT_FILES if (folder / name).exists()}


def missing_results(results: dict[str, dict]) -> list[str]:
    """One sentence per result file that is missing, naming the notebook that writes it."""
    return [
        f"{name} is missing: run notebook {number} to write it."
        for name, number in RESULT_FILES.items()
        if name not in results
    ]


def check_results(results: dict[str, dict]) -> None:
    """Raise a clear error when the explorer cannot start: it needs the prompts (02) and the heads (03), and
    every file made with the same settings (:func:`mixed_settings`)."""
    if not isinstance(results, dict):
        raise TypeError("results must be the dict that widgets.load_results(model_name) returns.")
    absent = [f"{name} (notebook {RESULT_FILES[name]})" for name in REQUIRED if name not in results]
    if absent:
        raise ValueError(
            f"The explorer needs {' and '.join(absent)}, which this model's results lack: run those notebooks "
            "on the same model first (make run MODEL=<model> runs them all)."
        )
    mixed = mixed_settings(results)
    if mixed:
        raise ValueError(
            "The results mix settings, so the explorer would show one run's explanation beside another's E: "
            + " ".join(mixed) + " Load them with widgets.load_results(settings), which recomputes what differs, "
            "or rerun the notebooks from 02 with one set of settings."
        )


def _neuron(results: dict[str, dict], label: str) -> tuple[int, int, list[dict]]:
    """``(layer, neuron, prompts)`` of the neuron ``"<layer>.<neuron>"``, refusing one without prompts."""
    check_results(results)
    prompts = results["prompts.json"]["prompts"].get(label)
    if not prompts:
        raise ValueError(f"Neuron {label!r} has no prompts in prompts.json: pick one of neuron_options(results).")
    layer, neuron = parse_neuron_label(label)
    return layer, neuron, prompts


def _pairs(results: dict[str, dict], label: str) -> list[dict]:
    """heads.json's pairs of the neuron ``label``, by flat head index."""
    pairs = [p for p in results["heads.json"]["pairs"] if neuron_label(p["layer"], p["neuron"]) == label]
    return sorted(pairs, key=lambda p: p["head"])


def _pair(results: dict[str, dict], label: str, head: int) -> dict:
    for pair in _pairs(results, label):
        if pair["head"] == head:
            return pair
    raise ValueError(f"Head {head} is not selected for neuron {label!r} in heads.json: pick one of head_options(results, {label!r}).")


def _record(results: dict[str, dict], file: str, pair: dict) -> dict | None:
    """The record of ``pair`` in a later step's file (explanations, scores, ablation), or None."""
    ids = (pair["layer"], pair["neuron"], pair["head"])
    for record in results.get(file, {}).get("pairs", []):
        if (record["layer"], record["neuron"], record["head"]) == ids:
            return record
    return None


def _token(results: dict[str, dict], label: str) -> str | None:
    """The neuron's token, from neurons.json or, without it, from its pairs in heads.json."""
    for item in results.get("neurons.json", {}).get("neurons", []):
        if neuron_label(item["layer"], item["neuron"]) == label:
            return item["token"]
    pairs = _pairs(results, label)
    return pairs[0]["token"] if pairs else None


# ---------------------------------------------------------------------------------------------- callbacks


def neuron_options(results: dict[str, dict]) -> list[tuple[str, str]]:
    """``(text shown, neuron label "<layer>.<neuron>")`` for a Dropdown: every neuron with prompts, those with selected
    heads first."""
    check_results(results)
    labels = [label for label, prompts in results["prompts.json"]["prompts"].items() if prompts]
    n_heads = {label: len(_pairs(results, label)) for label in labels}
    order = sorted(labels, key=lambda k: (n_heads[k] == 0, *parse_neuron_label(k)))
    options = []
    for label in order:
        layer, neuron = parse_neuron_label(label)
        heads = f"{n_heads[label]} head{'s' * (n_heads[label] != 1)}"
        options.append((f"L{layer}.N{neuron} → {_token(results, label)!r} · {heads}", label))
    return options


def head_options(results: dict[str, dict], label: str) -> list[tuple[str, int]]:
    """``(text shown, flat head)`` for a Dropdown: the heads step 3 selected for the neuron, with their share and E."""
    _neuron(results, label)
    options = []
    for pair in _pairs(results, label):
        text = f"{head_name(pair['head_layer'], pair['head_index'])} · active on {pair['active_fraction']:.0%}"
        score = _record(results, "scores.json", pair)
        if score is not None and score["E"] is not None:
            text += f" · E {score['E']:.2f}"
        options.append((text, pair["head"]))
    return options


def neuron_view(model: Any, results: dict[str, dict], label: str, n_prompts: int = 6) -> viz.Panel:
    """The neuron's top prompts, each token coloured by the neuron's activation, under a one-line legend.

    One colour scale, centred at zero, for all the prompts (:func:`viz.prompts_activations`): red where the
    neuron fires, blue where it is negative, white at zero, so a small negative stays pale. Prompts come in
    prompts.json's order (highest activation first); the activations are recomputed on the model, so the last
    token of each prompt, where the neuron fires, is usually the reddest of its prompt.
    """
    layer, neuron, prompts = _neuron(results, label)
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be at least 1, got {n_prompts}.")
    shown = prompts[:n_prompts]
    coloured = [token_activations(model, p["text"], layer, neuron) for p in shown]
    titles = [f"prompt {i}: activation {p['activation']:.2f} at the last token" for i, p in enumerate(shown)]
    header = viz.as_text(
        f"Neuron L{layer}.N{neuron} writes {_token(results, label)!r}. Its top {len(shown)} of {len(prompts)} prompts, "
        "each token coloured by the neuron's activation:"
    )
    return viz.Panel([header, viz.prompts_activations(coloured, titles)], None, direction="column")


def pair_attributions(model: Any, results: dict[str, dict], label: str, head: int) -> Tensor:
    """``Float[Tensor, "n_prompts"]``: the head's direct attribution to the neuron on each of its prompts."""
    layer, neuron, prompts = _neuron(results, label)
    pair = _pair(results, label, head)
    include_same_layer = bool(results["heads.json"].get("settings", {}).get("same_layer", DEFAULTS.same_layer))
    attr = head_attributions(model, [p["text"] for p in prompts], layer, neuron, include_same_layer)
    if pair["head"] >= attr.shape[1]:
        raise ValueError(
            f"heads.json names head {pair['head']} but this model has {attr.shape[1]} candidate heads for layer {layer}: "
            "the results come from another model; load the model they were computed on."
        )
    return attr[:, pair["head"]]


def attribution_figure(attr: Tensor, active: list[bool], texts: list[str], title: str) -> go.Figure:
    """A bar per prompt: the head's attribution, red where the head is active, grey where it is not."""
    if not (len(attr) == len(active) == len(texts)):
        raise ValueError(f"{len(attr)} attributions, {len(active)} active flags and {len(texts)} prompts: give one of each per prompt.")
    ends = ["…" + text[-60:] for text in texts]  # hover shows how each prompt ends
    fig = go.Figure()
    for name, flag, colour in (("active", True, viz.RED), ("inactive", False, viz.NEUTRAL)):
        index = [i for i, a in enumerate(active) if a == flag]
        fig.add_trace(
            go.Bar(
                x=index,
                y=[float(attr[i]) for i in index],
                name=f"head {name}",
                marker_color=colour,
                customdata=[ends[i] for i in index],
                hovertemplate="prompt %{x}: %{y:.3f}<br>%{customdata}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis={"title": "prompt (highest neuron activation first)", "dtick": 1},
        yaxis={"title": "attribution to the neuron"},
        template="plotly_white",
        barmode="overlay",
    )
    return fig


def _summary(results: dict[str, dict], pair: dict, head_text: str) -> str:
    """Explanation, score and ablation of a pair as plain text, naming the notebook to run for what is missing."""
    n_prompts = len(pair["positive"]) + len(pair["negative"])
    lines = [
        f"Head {head_text} → neuron L{pair['layer']}.N{pair['neuron']} ({pair['token']!r}): active on "
        f"{len(pair['positive'])} of {n_prompts} prompts ({pair['active_fraction']:.0%})."
    ]
    explanation = _record(results, "explanations.json", pair)
    if explanation is None:
        lines.append("Explanation: none yet (run notebook 04, which writes explanations.json).")
    else:
        # the October-2023 LLM prompt ends with this stub, so the LLM's answer continues it
        text = explanation["text"].strip()
        if explanation.get("source") != "offline" and explanation.get("variant") == "oct2023":
            text = f"This attention head is active when the document {text}"
        lines.append(f"Explanation ({explanation.get('source', 'unknown source')}): {text}")
    score = _record(results, "scores.json", pair)
    if score is None:
        lines.append("Score: none yet (run notebook 05, which writes scores.json).")
    else:
        e = "undefined (no parsed answer)" if score["E"] is None else f"{score['E']:.3f}"
        lines.append(f"Score on held-out prompts: E = {e} (0.5 is chance, 1 is perfect).")
    ablation = _record(results, "ablation.json", pair)
    if ablation is None:
        lines.append("Ablation: none yet (run notebook 06, which writes ablation.json).")
    else:
        def drop(value: float | None) -> str:
            return "no such prompt" if value is None else f"{value:+.4f}"

        lines.append(
            f"Ablation: the token's probability falls by {drop(ablation['mean_decrease_active'])} where the head is "
            f"active and {drop(ablation['mean_decrease_inactive'])} where it is not (held-out prompts)."
        )
    return "\n".join(lines)


def head_view(model: Any, results: dict[str, dict], label: str, head: int) -> HeadView:
    """Everything about one (neuron, head) pair: attribution per prompt, attention, explanation, E, ablation.

    The attention panel shows the active prompt where the head pushes the neuron hardest and the inactive
    prompt where it pushes least: the clearest contrast of what the head looks at.
    """
    layer, neuron, prompts = _neuron(results, label)
    pair = _pair(results, label, head)
    texts = [p["text"] for p in prompts]
    attr = pair_attributions(model, results, label, head)
    head_text = head_label(model, pair["head"])
    positive = set(pair["positive"])
    active = [i in positive for i in range(len(texts))]
    figure = attribution_figure(attr, active, texts, f"Head {head_text} → neuron L{layer}.N{neuron} ({pair['token']!r}), per prompt")

    views, titles = [], []
    if pair["positive"]:
        best = max(pair["positive"], key=lambda i: float(attr[i]))
        views.append(viz.attention_head(model, texts[best], pair["head_layer"], pair["head_index"]))
        titles.append(f"{head_text} active (prompt {best}): …{texts[best][-60:]}")
    if pair["negative"]:
        least = min(pair["negative"], key=lambda i: float(attr[i]))
        views.append(viz.attention_head(model, texts[least], pair["head_layer"], pair["head_index"]))
        titles.append(f"{head_text} inactive (prompt {least}): …{texts[least][-60:]}")
    return HeadView(figure, viz.side_by_side(*views, titles=titles), viz.as_text(_summary(results, pair, head_text)))


# ------------------------------------------------------------------------------------------------- wiring


def _show(area: Any, *items: Any) -> None:
    """Replace what an ``Output`` area shows: text as text, anything else as Jupyter displays it.

    The outputs are set on the widget directly instead of captured with ``with area:``: a headless runner
    (nbclient, so nbmake and ``make run``) answers each captured output with a message to the kernel, which
    can stall the cell until its timeout (jupyter/nbclient#312).
    """
    area.outputs = ()
    for item in items:
        if isinstance(item, str):
            area.append_stdout(item + "\n")
        elif isinstance(item, go.Figure):  # its _ipython_display_ would show it in the running cell instead
            area.outputs += ({"output_type": "display_data", "data": item._repr_mimebundle_(), "metadata": {}},)
        else:
            area.append_display_data(item)


def build_explorer(model: Any, results: dict[str, dict]) -> Any:
    """The explorer widget: a neuron Dropdown, the neuron's prompts, a head Dropdown, the head's view.

    Only wires the callbacks above to core ipywidgets; each choice re-renders its ``Output`` area.
    """
    import ipywidgets as widgets

    neuron_choices = neuron_options(results)
    if not neuron_choices:
        raise ValueError("prompts.json holds no neuron with prompts: rerun notebook 02 (no prompt passed its filter).")
    notes = missing_results(results)
    header = widgets.HTML(
        f"<b>Results of {html.escape(str(shown(results['heads.json'].get('model', 'an unnamed model'))))}</b>"
        + "".join(f"<br><small>{html.escape(note)}</small>" for note in notes)
    )
    neuron_box = widgets.Dropdown(options=neuron_choices, description="Neuron", layout={"width": "480px"})
    head_box = widgets.Dropdown(description="Head", layout={"width": "480px"})
    neuron_out, head_out = widgets.Output(), widgets.Output()
    quiet = {"on": False}  # set while the head Dropdown is refilled, so one neuron change renders one head view

    def show_head(change: Any = None) -> None:
        if quiet["on"]:
            return
        if head_box.value is None:
            _show(head_out, "No head of this neuron is in step 3's selection band: nothing to explain here.")
        else:
            _show(head_out, *head_view(model, results, neuron_box.value, head_box.value))

    def show_neuron(change: Any = None) -> None:
        _show(neuron_out, neuron_view(model, results, neuron_box.value))
        quiet["on"] = True
        head_box.options = head_options(results, neuron_box.value)
        head_box.value = head_box.options[0][1] if head_box.options else None  # the first head, explicitly
        quiet["on"] = False
        show_head()

    neuron_box.observe(show_neuron, names="value")
    head_box.observe(show_head, names="value")
    show_neuron()
    return widgets.VBox([header, neuron_box, neuron_out, head_box, head_out])

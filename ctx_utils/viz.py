"""Pictures for the notebooks: the paper's score histogram (plotly) and offline-safe circuitsvis views.

circuitsvis renders a React component from a 1.3 MB JavaScript bundle. Called directly it pastes the whole
bundle into every output when offline, and before each render it probes a remote host (a 1 s wait offline).
This module builds the same views from the same installed bundle, but decides once, without touching the
network, how the bundle reaches the page (see :func:`set_mode`):

* ``"once"`` (default outside Colab): the first view shown in a kernel session carries the bundle, later
  views reuse it. JupyterLab, VS Code and an exported HTML page put every output in one page, so this works
  offline and keeps the notebook small.
* ``"inline"``: every view carries the bundle, so each output stands alone (large files).
* ``"cdn"`` (default in Colab, where each output lives in its own iframe): every view imports the bundle
  from unpkg, so it needs the internet when the page is viewed.

Every view first shows a short note that the view replaces once it renders; if the note stays, the page has
no bundle (e.g. the output that carried it was cleared): call :func:`reset_bundle` and re-run the cell.
What this module remembers between views (the mode chosen, the output that carried the bundle) is kept by
:data:`ctx_utils.session.SESSION`.
"""

from __future__ import annotations

import html
import json
import os
import sys
import uuid
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor

from ctx_utils.score import histogram_counts
from ctx_utils.session import SESSION
from ctx_utils.tokens import head_name

MODES = ("auto", "once", "inline", "cdn")
RED = "#d62728"
BLUE = "#1f77b4"
NEUTRAL = "#9e9e9e"



# ----------------------------------------------------------------------------------------------- histogram


def score_histogram(scores: Sequence[float | None], title: str = "Distribution of Head Explanation Scores") -> go.Figure:
    """The paper's histogram of head explanation scores E (arXiv 2402.15055, its histogram figures).

    Ten bins of width 0.1 over [0, 1], the last one including 1.0 (the counts are exactly
    :func:`ctx_utils.score.histogram_counts`); the three right-most bars (E ≥ 0.7, the well-explained
    "context look-up" heads) are red, the rest grey. ``None`` scores (pairs dropped by
    ``missing="drop"``) are left out.
    """
    e = np.asarray([s for s in scores if s is not None], dtype=float)
    if e.size and (np.isnan(e).any() or e.min() < 0 or e.max() > 1):
        raise ValueError("Head explanation scores must be numbers in [0, 1]; check what was passed in.")
    counts = histogram_counts(e, bins=10)
    edges = np.linspace(0, 1, 11)
    labels = [f"[{lo:.1f}, {hi:.1f}{']' if i == 9 else ')'}" for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
    fig = go.Figure(
        go.Bar(
            x=(edges[:-1] + 0.05).tolist(),
            y=counts,
            width=0.1,
            marker={"color": [NEUTRAL] * 7 + [RED] * 3, "line": {"color": "white", "width": 1}},
            customdata=labels,
            hovertemplate="E in %{customdata}: %{y} heads<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis={"title": "Head Explanation Score", "range": [0, 1], "dtick": 0.1},
        yaxis={"title": "Number of Heads"},
        bargap=0,
        template="plotly_white",
    )
    return fig


def text_table(frame: Any, decimals: int = 2) -> Any:
    """``frame`` (a pandas DataFrame) styled to be read: every cell HTML-escaped (text from data or an LLM is shown,
    never run), numbers to ``decimals`` places, text left-aligned and wrapped in full instead of cut."""
    from pandas.api.types import is_numeric_dtype

    frame = frame if frame.index.is_unique else frame.reset_index()  # a Styler needs unique row labels
    text_columns = [c for c in frame.columns if not is_numeric_dtype(frame[c])]
    return (frame.style.format(escape="html", precision=decimals, na_rep="—")
            .set_properties(subset=text_columns, **{"text-align": "left", "white-space": "normal", "max-width": "48em"}))


def head_attributions(
    attr: Tensor | np.ndarray, n_heads: int, title: str, labels: Sequence[str] | None = None, per_prompt: bool = True
) -> go.Figure:
    """Each candidate head's attribution to a neuron, drawn in the shape that fits the model.

    ``attr``: ``[n_prompts, head_layers × n_heads]`` in flat head order (``layer × n_heads + head``), or one
    row ``[head_layers × n_heads]``. With ``per_prompt`` (and more than one row) a slider steps through the
    prompts; otherwise the mean over the rows is drawn. Several layers of candidate heads give the paper's
    layers × heads heat map; a single layer (a small model such as the organism, whose neuron sits in layer 1)
    would be a 1 × ``n_heads`` strip, so each head gets a bar instead. Colours are centred at 0 (red pushes
    the neuron up, blue down) on one scale for every prompt, and the axes count whole layers and heads.
    ``labels``: one name per flat head for the bars (default ``"H<index>"``).
    """
    values = torch.as_tensor(attr, dtype=torch.float32).detach().cpu()
    values = values[None] if values.ndim == 1 else values  # [n_prompts, n_candidate_heads]
    if values.ndim != 2 or values.shape[1] == 0 or values.shape[1] % n_heads:
        raise ValueError(f"attr must be [n_prompts, head_layers × {n_heads}] (flat head order); got {list(values.shape)}.")
    rows = values if per_prompt and len(values) > 1 else values.mean(0, keepdim=True)
    grid = rows.reshape(len(rows), -1, n_heads).numpy()  # [frame, head layer, head]
    limit = float(np.abs(grid).max()) or 1.0
    names = list(labels) if labels is not None else [f"H{h}" for h in range(n_heads)]
    if grid.shape[1] == 1:
        traces = [go.Bar(x=names, y=frame[0].tolist(), marker={"color": frame[0].tolist(), "colorscale": "RdBu_r",
                                                              "cmin": -limit, "cmax": limit, "showscale": True,
                                                              "colorbar": {"title": "attribution"}},
                         hovertemplate="%{x}: %{y:.3f}<extra></extra>") for frame in grid]
        axes = {"xaxis": {"title": "head", "type": "category"},
                "yaxis": {"title": "attribution", "range": [-1.05 * limit, 1.05 * limit], "zeroline": True}}
    else:
        traces = [go.Heatmap(z=frame.tolist(), colorscale="RdBu_r", zmin=-limit, zmax=limit, colorbar={"title": "attribution"},
                             hovertemplate="L%{y}.H%{x}: %{z:.3f}<extra></extra>") for frame in grid]
        axes = {"xaxis": {"title": "head", "dtick": 1}, "yaxis": {"title": "layer", "dtick": 1, "autorange": "reversed"}}
    fig = go.Figure(traces[0])
    fig.update_layout(title=title, template="plotly_white", **axes)
    if len(traces) > 1:
        fig.frames = [go.Frame(data=[trace], name=str(i)) for i, trace in enumerate(traces)]
        # pad: the slider sits below the x-axis labels (40 rotated head labels reach well under the axis)
        fig.update_layout(height=520, sliders=[{"currentvalue": {"prefix": "prompt "}, "pad": {"t": 90}, "steps": [
            {"label": str(i), "method": "animate", "args": [[str(i)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}]}
            for i in range(len(traces))]}])
    return fig


# ----------------------------------------------------------------------------------- how views reach the page


def set_mode(mode: str) -> None:
    """Choose how circuitsvis views get their JavaScript: ``"auto"``, ``"once"``, ``"inline"`` or ``"cdn"``.

    ``"auto"`` (the default) means ``"cdn"`` in Colab and ``"once"`` everywhere else; until this is called, the
    environment variable ``CTX_VIZ_MODE`` chooses. See the module docstring for what each mode does. The choice
    lasts for this kernel (``SESSION.viz_mode``, :mod:`ctx_utils.session`).
    """
    if mode not in MODES:
        raise ValueError(f"Unknown viz mode {mode!r}: use one of {', '.join(MODES)}.")
    SESSION.viz_mode = mode


def current_mode() -> str:
    """The mode in force now, with ``"auto"`` resolved (Colab is detected by ``google.colab`` being imported)."""
    mode = SESSION.viz_mode or os.environ.get("CTX_VIZ_MODE", "auto")
    if mode not in MODES:
        raise ValueError(f"CTX_VIZ_MODE is {mode!r}: set it to one of {', '.join(MODES)}, or unset it.")
    if mode != "auto":
        return mode
    return "cdn" if "google.colab" in sys.modules else "once"


def reset_bundle() -> None:
    """Forget that the bundle was sent, so the next view carries it again (e.g. after clearing its output)."""
    SESSION.bundle_output = None


def _current_request() -> tuple[str | None, str | None]:
    """(cell id, request id) of the cell running now. JupyterLab and VS Code send the cell id with each
    request; elsewhere (nbclient, plain Python) it is ``None``."""
    try:
        from IPython import get_ipython

        parent = get_ipython().kernel.get_parent()
    except (ImportError, AttributeError):  # not inside a Jupyter kernel
        return None, None
    return parent.get("metadata", {}).get("cellId"), parent.get("header", {}).get("msg_id")


@lru_cache(maxsize=1)
def bundle_js() -> str:
    """circuitsvis's installed browser bundle, safe to paste inside a classic ``<script>`` element.

    ``</script`` inside the code would end the element early, so it becomes ``<\\/script`` (the same string
    to JavaScript); the source-map comment is dropped so browser tools never try to fetch the map.
    """
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.exists():
        raise FileNotFoundError(f"circuitsvis's bundle {path} is missing: reinstall it (pip install circuitsvis).")
    js = path.read_text(encoding="utf-8").replace("</script", "<\\/script")
    return "\n".join(line for line in js.splitlines() if not line.startswith("//# sourceMappingURL"))


def _bundle_script() -> str:
    """The bundle, followed by code that runs every view queued before it and every view shown after it.

    Each view pushes a function onto ``window.ctxVizQueue``; here the queue is flushed and replaced by an
    object whose ``push`` runs at once. Views may thus reach the page before or after the bundle.
    """
    return (
        f"<script>\n{bundle_js()}\n"
        "(function () {\n"
        "  var queued = Array.isArray(window.ctxVizQueue) ? window.ctxVizQueue : [];\n"
        "  window.ctxVizQueue = {push: function (draw) { draw(CircuitsVis); }};\n"
        "  queued.forEach(function (draw) { draw(CircuitsVis); });\n"
        "})();\n</script>\n"
    )


def _bundle_for_output(mode: str) -> str:
    """What goes before the views of one output: the bundle, or nothing.

    ``"inline"`` always sends it. ``"once"`` sends it with the first view of the session, and again when the
    cell that carried it runs anew (its old output, bundle included, is being replaced).
    """
    request, carrier = _current_request(), SESSION.bundle_output
    first = carrier is None
    rerun = not first and request[0] is not None and request[0] == carrier[0] and request != carrier
    if mode == "inline" or (mode == "once" and (first or rerun)):
        SESSION.bundle_output = request
        return _bundle_script()
    return ""


def _script_json(props: dict[str, Any]) -> str:
    """``props`` as a JavaScript literal that cannot end its ``<script>`` element.

    Token text comes from real documents and may contain ``</script>`` or ``<!--``; escaping ``<``, ``>``
    and ``&`` as ``\\u003c`` etc. keeps the same string for JavaScript while the HTML parser sees no tag.
    """
    text = json.dumps(props, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# ------------------------------------------------------------------------------------------------- the views


class HtmlView:
    """Something Jupyter shows as HTML. ``html(mode)`` is its markup without the bundle; ``_repr_html_`` adds
    the bundle when the mode asks for it, at the moment the view is actually displayed."""

    uses_circuitsvis = False

    def html(self, mode: str) -> str:
        raise NotImplementedError

    def _repr_html_(self) -> str:
        mode = current_mode()
        prefix = _bundle_for_output(mode) if self.uses_circuitsvis else ""
        return prefix + self.html(mode)


class CircuitsView(HtmlView):
    """One circuitsvis React component (e.g. ``"AttentionHeads"``) with its properties."""

    uses_circuitsvis = True

    def __init__(self, component: str, props: dict[str, Any]) -> None:
        self.component = component
        self.props = {k: v for k, v in props.items() if v is not None}

    def __repr__(self) -> str:
        return f"<circuitsvis {self.component} view: display it in Jupyter to see it>"

    def html(self, mode: str) -> str:
        div_id = f"ctx-viz-{uuid.uuid4().hex[:12]}"
        props = _script_json(self.props)
        note = (
            "circuitsvis view: loading from unpkg.com (needs the internet)…"
            if mode == "cdn"
            else "circuitsvis view: waiting for the circuitsvis script. If this note stays, the output that "
            "carried it is gone: run <code>ctx_utils.viz.reset_bundle()</code> and re-run this cell."
        )
        div = f'<div id="{div_id}" style="margin: 15px 0;"><small style="color: #888;">{note}</small></div>\n'
        if mode == "cdn":
            import circuitsvis

            url = f"https://unpkg.com/circuitsvis@{circuitsvis.__version__}/dist/cdn/esm.js"
            return div + (
                f'<script type="module">\nimport * as CV from "{url}";\n'
                f'CV.render("{div_id}", CV.{self.component}, {props});\n</script>\n'
            )
        return div + (
            "<script>\n(window.ctxVizQueue = window.ctxVizQueue || []).push(function (CV) {\n"
            f'  CV.render("{div_id}", CV.{self.component}, {props});\n}});\n</script>\n'
        )


class Panel(HtmlView):
    """Several views in a row (``direction="row"``) or a column, each under an optional title."""

    def __init__(self, views: Sequence[Any], titles: Sequence[str] | None, direction: str = "row") -> None:
        if titles is not None and len(titles) != len(views):
            raise ValueError(f"{len(views)} views but {len(titles)} titles: give one title per view.")
        for v in views:
            if not (isinstance(v, HtmlView) or hasattr(v, "_repr_html_")):
                raise TypeError(f"Cannot show {type(v).__name__} in a panel: pass views from ctx_utils.viz.")
        self.views = list(views)
        self.titles = list(titles) if titles is not None else [None] * len(views)
        self.direction = direction
        self.uses_circuitsvis = any(getattr(v, "uses_circuitsvis", False) for v in self.views)

    def __repr__(self) -> str:
        return f"<panel of {len(self.views)} views: display it in Jupyter to see it>"

    def html(self, mode: str) -> str:
        cells = []
        for view, title in zip(self.views, self.titles):
            inner = view.html(mode) if isinstance(view, HtmlView) else view._repr_html_()
            heading = f"<h4 style='margin: 4px 0;'>{html.escape(str(title))}</h4>" if title is not None else ""
            cells.append(f"<div style='flex: 1 1 0; min-width: 280px;'>{heading}{inner}</div>")
        wrap = "wrap" if self.direction == "row" else "nowrap"
        return f"<div style='display: flex; flex-direction: {self.direction}; flex-wrap: {wrap}; gap: 16px;'>{''.join(cells)}</div>"


class PlainText(HtmlView):
    """Untrusted text (an LLM's answer, a document) shown as text: every ``<``, ``>`` and ``&`` escaped."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def html(self, mode: str) -> str:
        return f"<pre style='white-space: pre-wrap; margin: 0;'>{html.escape(self.text)}</pre>"


def as_text(s: str) -> PlainText:
    """Show ``s`` as plain text, never as HTML (so ``<script>`` in a model's answer is shown, not run)."""
    if not isinstance(s, str):
        raise TypeError(f"as_text expects a string, got {type(s).__name__}; convert it with str() first.")
    return PlainText(s)


def side_by_side(*views: Any, titles: Sequence[str] | None = None) -> Panel:
    """Show views next to each other, each under its title (e.g. one head on an active vs an inactive prompt)."""
    if not views:
        raise ValueError("side_by_side needs at least one view.")
    return Panel(views, titles, direction="row")


# ------------------------------------------------------------------------------------ attention and tokens


def _floats(values: Any, name: str, decimals: int | None = None) -> list:
    """A tensor / array / nested list as nested Python floats, refusing NaN and infinities.

    ``decimals`` rounds them, which keeps a long prompt's attention pattern (n_heads × pos²) a small output.
    """
    array = values.detach().float().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values, dtype=float)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values; check the computation that produced it.")
    return (np.round(array, decimals) if decimals is not None else array).tolist()


def _check_tokens(tokens: Sequence[str]) -> None:
    """Tokens must be strings: a tensor of token ids here is a common slip."""
    if isinstance(tokens, (str, Tensor)) or not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens must be a list of strings: use model.to_str_tokens(text), not token ids.")


def attention_patterns(
    tokens: list[str], attention: Tensor | np.ndarray, head_names: list[str] | None = None
) -> CircuitsView:
    """circuitsvis's attention view for several heads: ``attention`` is Float[Tensor, "n_heads dest src"]
    (one head's ``dest src`` pattern is accepted too); ``tokens`` has one string per position."""
    pattern = attention if isinstance(attention, Tensor) else torch.as_tensor(np.asarray(attention, dtype=float))
    _check_tokens(tokens)
    if pattern.ndim == 2:
        pattern = pattern[None]
    n = len(tokens)
    if pattern.ndim != 3 or tuple(pattern.shape[1:]) != (n, n):
        raise ValueError(
            f"attention has shape {tuple(pattern.shape)} but {n} tokens need [n_heads, {n}, {n}]: "
            "take cache['pattern', layer][batch_index] and the same prompt's str tokens."
        )
    if head_names is not None and len(head_names) != pattern.shape[0]:
        raise ValueError(f"{len(head_names)} head names for {pattern.shape[0]} heads: give one name per head.")
    props = {"tokens": list(tokens), "attention": _floats(pattern, "attention", decimals=4), "maskUpperTri": True}
    props["attentionHeadNames"] = list(head_names) if head_names is not None else None
    return CircuitsView("AttentionHeads", props)


def _layer_pattern(model: Any, text: str, layer: int) -> Any:
    """Attention patterns ``[n_heads, dest, src]`` of every head of ``layer`` on ``text`` (with BOS)."""
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"No layer {layer}: this model has layers 0–{model.cfg.n_layers - 1}.")
    name = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        tokens = model.to_tokens(text, prepend_bos=True)  # explicit: Pythia's default is no BOS
        _, cache = model.run_with_cache(tokens, names_filter=[name], stop_at_layer=layer + 1)
    return cache[name][0]


def attention_head(model: Any, text: str, layer: int, head: int) -> CircuitsView:
    """Run ``model`` on ``text`` (with BOS) and show head ``layer``.``head``'s attention pattern."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise ValueError(f"No head L{layer}.H{head}: this model has layers 0–{n_layers - 1}, heads 0–{n_heads - 1}.")
    pattern = _layer_pattern(model, text, layer)[head]  # [dest, src]
    return attention_patterns(model.to_str_tokens(text, prepend_bos=True), pattern, [head_name(layer, head)])


def attention_layer(model: Any, text: str, layer: int) -> CircuitsView:
    """Run ``model`` on ``text`` (with BOS) and show the attention patterns of every head of ``layer``."""
    pattern = _layer_pattern(model, text, layer)
    names = [head_name(layer, h) for h in range(pattern.shape[0])]
    return attention_patterns(model.to_str_tokens(text, prepend_bos=True), pattern, names)


def colour_scale(values: Sequence[float] | Tensor | np.ndarray) -> float:
    """The bound ``s`` of a colour scale centred at zero (−s … 0 … +s) that fits ``values``: their largest
    magnitude, or 1 when they are all zero. White is 0, so a small negative stays pale next to a strong peak."""
    largest = float(np.abs(np.asarray(_floats(values, "values"), dtype=float)).max(initial=0.0))
    return largest if largest > 0 else 1.0


class ColourLegend(HtmlView):
    """One line under which coloured tokens are read: blue −s, white 0, red +s."""

    def __init__(self, scale: float, label: str, note: str = "") -> None:
        self.scale, self.label, self.note = scale, label, note

    def __repr__(self) -> str:
        return f"colour: blue −{self.scale:.3g} · white 0 · red +{self.scale:.3g} ({self.label}{self.note})"

    def html(self, mode: str) -> str:
        bar = (f"<span style='display: inline-block; width: 90px; height: 0.8em; vertical-align: middle; "
               f"background: linear-gradient(to right, {BLUE}, white, {RED}); border: 1px solid #ccc;'></span>")
        return (f"<div class='ctx-colour-legend' style='font-size: 0.85em; color: #555; margin: 2px 0;'>"
                f"{html.escape(self.label)}: −{self.scale:.3g} {bar} +{self.scale:.3g} (white is 0{html.escape(self.note)})</div>")


class ColouredTokens(CircuitsView):
    """circuitsvis ``ColoredTokens`` on a scale centred at zero, under its one-line legend (unless left out)."""

    def __init__(self, props: dict[str, Any], legend: ColourLegend | None) -> None:
        super().__init__("ColoredTokens", props)
        self.legend = legend

    def html(self, mode: str) -> str:
        return (self.legend.html(mode) if self.legend is not None else "") + super().html(mode)


def token_activations(
    tokens: list[str],
    values: Sequence[float] | Tensor,
    scale: float | None = None,
    label: str = "activation",
    legend: bool = True,
) -> ColouredTokens:
    """Tokens coloured by one value each (e.g. a neuron's activation), via circuitsvis ``ColoredTokens``.

    The colours run from blue (−``scale``) through white (0) to red (+``scale``); ``scale`` defaults to the
    largest |value| (:func:`colour_scale`). Give the same ``scale`` to several prompts to compare their colours
    (:func:`prompts_activations` does). ``legend=False`` leaves out the one-line legend naming ``label``.
    """
    _check_tokens(tokens)
    vals = _floats(values, "values")
    if np.ndim(vals) != 1 or len(vals) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens need {len(tokens)} values, one per token; got shape {np.shape(vals)}.")
    bound = colour_scale(vals) if scale is None else float(scale)
    if not bound > 0:
        raise ValueError(f"scale must be a positive number (the colour bound ±scale), got {scale!r}.")
    # circuitsvis inserts these tokens as HTML (``<bos>`` would vanish, a ``<img onerror=…>`` token would
    # run), so they are escaped here; its hover box then shows the escaped form (``&lt;bos&gt;``).
    safe_tokens = [html.escape(t, quote=False) for t in tokens]
    props = {"tokens": safe_tokens, "values": vals, "minValue": -bound, "maxValue": bound,
             "negativeColor": BLUE, "positiveColor": RED}
    return ColouredTokens(props, ColourLegend(bound, label) if legend else None)


def prompts_activations(
    prompts: Sequence[tuple[list[str], Sequence[float] | Tensor]],
    titles: Sequence[str] | None = None,
    label: str = "activation",
) -> Panel:
    """Several prompts' coloured tokens stacked under one legend, on one scale centred at zero (the largest
    |value| over all the prompts), so their colours compare."""
    if not prompts:
        raise ValueError("prompts_activations needs at least one (tokens, values) pair.")
    if titles is not None and len(titles) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(titles)} titles: give one title per prompt.")
    bound = colour_scale(np.concatenate([np.asarray(_floats(v, "values"), dtype=float).ravel() for _, v in prompts]))
    views = [token_activations(tokens, values, scale=bound, label=label, legend=False) for tokens, values in prompts]
    legend = ColourLegend(bound, label, note=f"; one scale for these {len(views)} prompts")
    return Panel([legend, *views], None if titles is None else [None, *titles], direction="column")

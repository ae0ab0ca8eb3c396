"""ctx_utils.viz: the bundle reaches the page once, nothing touches the network, the histogram is the paper's."""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from circuitsvis.utils.render import RenderedHTML

from ctx_utils import viz
from ctx_utils.session import SESSION
from ctx_utils.score import histogram_counts

BUNDLE_MARK = "var CircuitsVis="  # the first statement of circuitsvis's browser bundle
TOKENS = ["<bos>", "as", " early", " as"]


@pytest.fixture(autouse=True)
def fresh_session():
    """Each test starts like a new kernel: default mode, bundle not yet sent."""
    viz.set_mode("auto")
    viz.reset_bundle()
    yield
    viz.set_mode("auto")
    viz.reset_bundle()


@pytest.fixture
def network_calls(monkeypatch):
    """Record (and refuse) every attempt to open a connection or a URL."""
    calls: list[str] = []

    def refuse(*args, **kwargs):
        calls.append(repr(args[:2]))
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return calls


def pattern(n_heads: int = 2, n: int = len(TOKENS)) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.softmax(torch.randn(n_heads, n, n), dim=-1).tril()


def views() -> list:
    return [
        viz.attention_patterns(TOKENS, pattern(), ["L0.H0", "L0.H1"]),
        viz.token_activations(TOKENS, torch.tensor([0.0, 1.0, -0.5, 2.0])),
        viz.side_by_side(viz.attention_patterns(TOKENS, pattern(1)), viz.token_activations(TOKENS, [1, 2, 3, 4]), titles=["a", "b"]),
        viz.prompts_activations([(TOKENS, [0, 1, 2, 3]), (TOKENS[:2], [0, -1])]),
    ]


def test_bundle_sent_once_per_session_and_again_after_reset():
    outputs = [v._repr_html_() for v in views()]
    assert [o.count(BUNDLE_MARK) for o in outputs] == [1, 0, 0, 0]
    assert all("ctxVizQueue" in o for o in outputs)
    viz.reset_bundle()
    assert views()[1]._repr_html_().count(BUNDLE_MARK) == 1


def test_bundle_sent_again_when_the_cell_that_carried_it_runs_anew(monkeypatch):
    request = {"now": ("cell-a", "run-1")}
    monkeypatch.setattr(viz, "_current_request", lambda: request["now"])
    view = views()[1]
    assert BUNDLE_MARK in view._repr_html_()
    assert BUNDLE_MARK not in view._repr_html_()  # a second view in the same run
    request["now"] = ("cell-b", "run-2")
    assert BUNDLE_MARK not in view._repr_html_()  # another cell: the bundle is on the page already
    request["now"] = ("cell-a", "run-3")
    assert BUNDLE_MARK in view._repr_html_()  # cell-a's old output, bundle and all, is being replaced


def test_inline_mode_makes_every_output_self_contained_and_cdn_mode_none():
    viz.set_mode("inline")
    assert [v._repr_html_().count(BUNDLE_MARK) for v in views()] == [1, 1, 1, 1]
    viz.set_mode("cdn")
    outputs = [v._repr_html_() for v in views()]
    assert all(BUNDLE_MARK not in o and "https://unpkg.com/circuitsvis@" in o for o in outputs)


def test_auto_mode_uses_cdn_in_colab_only(monkeypatch):
    assert viz.current_mode() == "once"
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert viz.current_mode() == "cdn"


def test_unknown_mode_is_refused_with_the_choices(monkeypatch):
    with pytest.raises(ValueError, match="once"):
        viz.set_mode("offline")
    monkeypatch.setenv("CTX_VIZ_MODE", "offline")
    monkeypatch.setattr(SESSION, "viz_mode", None)  # set_mode not called: the variable chooses
    with pytest.raises(ValueError, match="CTX_VIZ_MODE"):
        viz.current_mode()


def test_rendering_never_touches_the_network(network_calls):
    for mode in ("once", "inline", "cdn"):
        viz.set_mode(mode)
        for v in views():
            v._repr_html_()
    assert network_calls == []
    RenderedHTML("local", "cdn")._repr_html_()  # circuitsvis itself probes google.com: the guard sees it
    assert network_calls


def test_side_by_side_contains_every_view_and_escaped_title():
    a = viz.attention_patterns(TOKENS, pattern(1), ["active"])
    b = viz.attention_patterns(TOKENS, pattern(1), ["inactive"])
    out = viz.side_by_side(a, b, titles=["Active prompt", "Inactive <i>prompt</i>"])._repr_html_()
    assert out.count("CV.AttentionHeads") == 2 and out.count(BUNDLE_MARK) == 1
    assert '"active"' in out and '"inactive"' in out
    assert "Active prompt" in out and "Inactive &lt;i&gt;prompt&lt;/i&gt;" in out
    with pytest.raises(ValueError, match="one title per view"):
        viz.side_by_side(a, b, titles=["only one"])


def test_token_text_cannot_close_the_script_element():
    out = viz.attention_patterns(["<bos>", "</script><script>alert(1)</script>"], pattern(1, 2))._repr_html_()
    view_part = out.split("ctxVizQueue = window.ctxVizQueue")[-1]
    assert "</script><script>alert" not in view_part and "\\u003c/script\\u003e" in view_part


def test_coloured_tokens_are_escaped_because_circuitsvis_inserts_them_as_html():
    view = viz.token_activations(["<bos>", " a&b"], [0, 1])
    assert view.props["tokens"] == ["&lt;bos&gt;", " a&amp;b"]
    with pytest.raises(TypeError, match="to_str_tokens"):
        viz.token_activations(torch.tensor([1, 2]), [0, 1])


def test_as_text_escapes_html():
    out = viz.as_text("<script>alert(1)</script> & <b>bold</b>")._repr_html_()
    assert "<script>" not in out and "<b>" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;" in out
    assert repr(viz.as_text("<b>x</b>")) == "<b>x</b>"


def test_bad_shapes_name_the_fix():
    with pytest.raises(ValueError, match=r"\[n_heads, 4, 4\]"):
        viz.attention_patterns(TOKENS, torch.rand(2, 3, 3))
    with pytest.raises(ValueError, match="one name per head"):
        viz.attention_patterns(TOKENS, pattern(), ["only one"])
    with pytest.raises(ValueError, match="one per token"):
        viz.token_activations(TOKENS, [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        viz.token_activations(TOKENS, [1.0, float("nan"), 0, 0])


def test_prompts_share_one_colour_scale_centred_at_zero_under_one_legend():
    stacked = viz.prompts_activations([(TOKENS, [0, 1, 2, 3]), (TOKENS[:2], [-2, 0.5])], titles=["x", "y"])
    legend, *coloured = stacked.views
    assert [v.props["maxValue"] for v in coloured] == [3.0, 3.0]
    assert [v.props["minValue"] for v in coloured] == [-3.0, -3.0], "the scale is centred at zero"
    out = stacked._repr_html_()
    assert out.count("ctx-colour-legend") == 1 and "activation: −3" in out and "+3" in out and "one scale for these 2" in out
    with pytest.raises(ValueError, match="one title per prompt"):
        viz.prompts_activations([(TOKENS, [0, 1, 2, 3])], titles=["x", "y"])


def test_a_small_negative_stays_pale_next_to_the_peak():
    """The issue's case: ' marathon' at −0.161 beside ' give' at 2.39 is drawn at 7 % of the colour, not 100 %."""
    view = viz.token_activations(["<bos>", " marathon", " give"], [0.0, -0.161, 2.39])
    assert view.props["minValue"] == -2.39 and view.props["maxValue"] == 2.39
    assert abs(-0.161 / view.props["minValue"] - 0.067) < 0.001  # circuitsvis shades a negative by value / min
    assert view.props["positiveColor"] == viz.RED and view.props["negativeColor"] == viz.BLUE, "firing tokens are red"
    assert "activation: −2.39" in view._repr_html_()
    assert viz.token_activations(["a"], [0.0]).props["maxValue"] == 1.0  # all zero: a placeholder bound, no 0/0
    assert "ctx-colour-legend" not in viz.token_activations(["a"], [1.0], legend=False).html("once")
    with pytest.raises(ValueError, match="positive"):
        viz.token_activations(["a"], [1.0], scale=0)


def test_score_histogram_is_the_papers_figure():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0, 1, 200), [0.0, 1.0, 0.95]]).tolist()
    fig = viz.score_histogram(scores + [None])
    bar = fig.data[0]
    assert len(bar.y) == 10 and list(bar.y) == histogram_counts(scores)
    colours = list(bar.marker.color)
    assert colours[7:] == [viz.RED] * 3 and viz.RED not in colours[:7]
    assert fig.layout.xaxis.title.text == "Head Explanation Score"
    assert fig.layout.yaxis.title.text == "Number of Heads"
    assert fig.layout.title.text == "Distribution of Head Explanation Scores"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viz.score_histogram([0.5, 1.5])


def test_attention_head_shows_that_heads_pattern(tiny_model):
    text = "the cat sat on the mat"
    view = viz.attention_head(tiny_model, text, layer=1, head=2)
    _, cache = tiny_model.run_with_cache(text)
    expected = cache["blocks.1.attn.hook_pattern"][0, 2]
    assert view.props["tokens"] == tiny_model.to_str_tokens(text) and len(view.props["tokens"]) == 7  # BOS + 6
    assert np.allclose(view.props["attention"][0], expected.numpy(), atol=1e-4)
    assert view.props["attentionHeadNames"] == ["L1.H2"]
    with pytest.raises(ValueError, match="layers 0–1, heads 0–3"):
        viz.attention_head(tiny_model, text, layer=2, head=0)


def test_attention_layer_shows_every_head(tiny_model):
    text = "the cat sat"
    view = viz.attention_layer(tiny_model, text, layer=0)
    _, cache = tiny_model.run_with_cache(text)
    expected = cache["blocks.0.attn.hook_pattern"][0]
    assert view.props["attentionHeadNames"] == [f"L0.H{h}" for h in range(tiny_model.cfg.n_heads)]
    assert np.allclose(np.asarray(view.props["attention"]), expected.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="layers 0–1"):
        viz.attention_layer(tiny_model, text, layer=5)


def test_head_attributions_are_bars_when_the_heads_fill_one_layer():
    """The organism's neuron sits in layer 1: its 8 candidate heads would be a 1 × 8 heat-map strip."""
    attr = torch.tensor([[0.5, -0.1, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -4.0]])
    fig = viz.head_attributions(attr, n_heads=8, title="t")
    assert isinstance(fig.data[0], go.Bar) and list(fig.data[0].x) == [f"H{h}" for h in range(8)]
    assert len(fig.frames) == 2 and list(fig.frames[1].data[0].y) == attr[1].tolist()  # one frame per prompt
    assert tuple(fig.layout.yaxis.range) == pytest.approx((-4.2, 4.2))  # one scale for every prompt, centred at 0
    mean = viz.head_attributions(attr, n_heads=8, title="t", per_prompt=False)
    assert not mean.frames and list(mean.data[0].y) == pytest.approx(attr.mean(0).tolist())


def test_head_attributions_are_a_layers_by_heads_map_with_whole_ticks():
    attr = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 12) - 6  # 2 prompts, 3 layers × 4 heads
    fig = viz.head_attributions(attr, n_heads=4, title="t")
    assert isinstance(fig.data[0], go.Heatmap) and np.asarray(fig.data[0].z).shape == (3, 4)
    assert fig.layout.xaxis.dtick == 1 and fig.layout.yaxis.dtick == 1  # no ticks at -0.5 / 0.5
    assert fig.data[0].zmin == -fig.data[0].zmax == -17
    with pytest.raises(ValueError, match="head_layers × 5"):
        viz.head_attributions(attr, n_heads=5, title="t")


def test_text_table_shows_html_in_data_or_llm_text_as_text():
    import pandas as pd

    frame = pd.DataFrame({"E": [0.5], "explanation": ["<script>alert(1)</script> when <b>research</b> precedes"]})
    page = viz.text_table(frame).to_html()
    assert "<script>alert" not in page and "<b>research" not in page, "text from data ran as HTML"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;research&lt;/b&gt;" in page
    assert "white-space: normal" in page, "explanations wrap in full instead of being cut"


def test_no_notebook_styles_a_table_around_the_escaping_helper():
    import nbformat

    for path in sorted((Path(__file__).parents[1] / "notebooks").glob("0*.ipynb")):
        for cell in nbformat.read(path, 4).cells:
            assert cell.cell_type != "code" or ".style" not in cell.source, \
                f"{path.name}: a pandas Styler renders cells as raw HTML; use viz.text_table (it escapes)"

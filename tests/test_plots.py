"""Figure helpers and the offline snippets used in book builds."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from optim_hunter import plots


def test_figure_html_uses_global_plotly_and_is_deterministic():
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    a, b = plots.figure_html(fig), plots.figure_html(fig)
    for snippet in (a, b):
        assert plots.PLOTLY_MARK in snippet and "Plotly.newPlot" in snippet
        assert "<script src" not in snippet and "cdn" not in snippet.lower()
        assert len(snippet) < 50_000  # plotly.js itself is never inlined
    # same figure, same hash; the counter keeps two copies on a page distinct
    assert a.split('id="')[1][:17] == b.split('id="')[1][:17] and a != b


def test_circuitsvis_snippet_has_no_bundle():
    import circuitsvis.attention as cva

    attention = np.random.default_rng(0).random((2, 3, 3))
    snippet = plots.circuitsvis_html(cva.attention_heads, attention=attention, tokens=["a", "b", "c"])
    assert "CircuitsVis.render(" in snippet and "CircuitsVis.AttentionHeads" in snippet
    assert plots.CIRCUITSVIS_MARK in snippet
    assert len(snippet) < 5_000  # the 1.3 MB bundle is not inlined
    assert '"tokens": ["a", "b", "c"]' in snippet


def test_attention_heads_validates_shapes():
    with pytest.raises(ValueError, match="square"):
        plots.attention_heads(np.zeros((1, 2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="tokens"):
        plots.attention_heads(np.zeros((1, 2, 2)), ["a"])


def test_show_rejects_non_figures():
    with pytest.raises(TypeError):
        plots.show({"data": []})


def test_figure_helpers():
    table = pd.DataFrame({"method": ["a", "b"], "mae": [2.0, 1.0], "lo": [1.5, 0.5],
                          "hi": [2.5, 1.5], "n": [1, 1]})
    fig = plots.error_bars(table, value="mae", low="lo", high="hi")
    assert list(fig.data[0].y) == ["a", "b"]  # plotly draws bottom-up: best (smallest) on top
    assert len(plots.lines(table, x="n", y="mae", group="method").data) == 2
    assert plots.heatmap(np.eye(2), x=[0, 1], y=["r0", "r1"], zmid=0).data[0].zmid == 0

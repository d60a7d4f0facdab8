"""Figure helpers and the offline snippets used in book builds."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from optim_hunter.report import plots


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


def test_a_head_heatmap_puts_each_score_at_its_layer_and_head():
    scores = np.arange(6.0).reshape(2, 3)  # 2 layers, 3 heads: score = 3 * layer + head
    trace = plots.head_heatmap(scores, title="t").data[0]
    grid = np.asarray(trace.z)
    for l, layer in enumerate(trace.y):
        for h, head in enumerate(trace.x):
            assert grid[l, h] == 3 * int(layer[1:]) + int(head[1:])
    assert list(trace.x) == ["H0", "H1", "H2"] and list(trace.y) == ["L0", "L1"]
    with pytest.raises((ValueError, TypeError)):  # TypeError: jaxtyping's check, on in the tests
        plots.head_heatmap(np.zeros(3))


def _book_outputs(monkeypatch, draw):
    monkeypatch.setenv(plots.BOOK_ENV, "1")
    shown = []
    monkeypatch.setattr(plots, "_display_bundle", lambda data, metadata: shown.append((data, metadata)))
    draw()
    return shown


def test_book_outputs_carry_the_site_snippet_and_a_self_contained_figure(monkeypatch):
    attention = np.tril(np.ones((3, 4, 4)))
    attention /= attention.sum(-1, keepdims=True)
    shown = _book_outputs(monkeypatch, lambda: (
        plots.show(go.Figure(go.Scatter(x=[1, 2], y=[3, 4]), layout={"title": "tiny"})),
        plots.attention_heads(attention, ["a", "b", "a", "c"], head_names=["L0H0", "L0H1", "L1H0"])))
    (fig, fig_meta), (att, att_meta) = shown
    # the site renders the data: the snippet and a text line, nothing it would warn about
    assert set(fig) == set(att) == {"text/html", "text/plain"}
    assert "Plotly.newPlot" in fig["text/html"] and "CircuitsVis.render" in att["text/html"]
    assert "tiny" in fig["text/plain"] and "3 heads over 4 tokens" in att["text/plain"]
    # the figure for Jupyter outside the site waits in the metadata
    data = fig_meta[plots.OUTSIDE_SITE][plots.PLOTLY_MIME]["data"][0]
    assert data["type"] == "scatter" and data["x"] == [1, 2] and data["y"] == [3, 4]
    heat = att_meta[plots.OUTSIDE_SITE][plots.PLOTLY_MIME]
    assert [t["type"] for t in heat["data"]] == ["heatmap"] * 3
    assert [a["text"] for a in heat["layout"]["annotations"]] == ["L0H0", "L0H1", "L1H0"]
    assert heat["data"][0]["x"] == ["0: a", "1: b", "2: a", "3: c"]  # repeated tokens stay apart
    import json

    json.dumps([fig, fig_meta, att, att_meta])  # a notebook can store them


def test_site_independent_notebook_swaps_snippets_for_their_figures():
    import nbformat

    nb = nbformat.v4.new_notebook()
    figure = nbformat.v4.new_output("display_data", data={"text/html": "<div>site</div>", "text/plain": "f"},
                                    metadata={plots.OUTSIDE_SITE: {plots.PLOTLY_MIME: {"data": []}}})
    table = nbformat.v4.new_output("display_data", data={"text/html": "<table></table>", "text/plain": "t"})
    nb.cells.append(nbformat.v4.new_code_cell("x", outputs=[figure, table]))
    out = plots.site_independent_notebook(nb)
    nbformat.validate(out)
    first, second = out.cells[0].outputs
    assert first.data == {plots.PLOTLY_MIME: {"data": []}, "text/plain": "f"} and first.metadata == {}
    assert second == table  # outputs without an alternative are kept as they are
    assert "text/html" in nb.cells[0].outputs[0].data  # the input is not changed


def test_a_heatmap_grid_draws_better_than_zero_in_the_colour_its_title_names():
    import numpy as np

    from optim_hunter.report import plots

    values = np.array([[-3.0, 0.0, 3.0]])
    fig = plots.heatmap_grid([[("a", values, 3.0), ("b", values, 3.0)]], x=[1, 2, 3], y=["r"], colorscale="RdBu_r")
    scale = fig.data[0].colorscale  # plotly expands the name: the lowest value's colour comes first
    low, high = scale[0][1], scale[-1][1]
    assert "5,48,97" in low.replace(" ", "") and "103,0,31" in high.replace(" ", "")  # blue low, red high
    assert fig.layout.yaxis2.showticklabels is False  # the shared rows are named once

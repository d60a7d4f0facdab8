"""Tests of the plots.py helpers added for the gd_in_attention chapter: reference_lines,
against_diagonal, heatmap_grid, grouped_bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from optim_hunter.report import plots


def test_reference_lines_span_the_data_at_their_levels():
    fig = plots.lines(pd.DataFrame({"step": [3, 10, 50], "loss": [2.0, 1.0, 0.5], "run": "a"}),
                      x="step", y="loss", group="run", log_y=True)
    plots.reference_lines(fig, [("one GD step", 0.8), ("zero", 1.7)])
    assert [t.name for t in fig.data[1:]] == ["one GD step", "zero"]
    assert list(fig.data[1].x) == [3, 50] and list(fig.data[1].y) == [0.8, 0.8]
    assert fig.data[2].line.dash == "dot"
    with pytest.raises(ValueError):
        plots.reference_lines(go.Figure(), [("x", 1.0)])


def test_against_diagonal():
    fig = plots.against_diagonal([1.0, -3.0], [0.5, 2.0], x_title="a", y_title="b")
    assert list(fig.data[0].x) == [1.0, -3.0] and list(fig.data[0].y) == [0.5, 2.0]
    assert list(fig.data[1].x) == [-3.0, 3.0] == list(fig.data[1].y)  # y = x over the data's range
    with pytest.raises(ValueError):
        plots.against_diagonal([1.0], [1.0, 2.0], x_title="a", y_title="b")


def test_heatmap_grid_scales_each_panel():
    m = np.array([[1.0, -2.0], [0.5, 0.0]])
    fig = plots.heatmap_grid([[("a", m, 2.0), ("b", m, 2.0)], [("c", m, 4.0), ("d", m, 4.0)]],
                             x=["p", "q"], y=["p", "q"])
    assert len(fig.data) == 4
    assert [(t.zmin, t.zmax) for t in fig.data] == [(-2.0, 2.0)] * 2 + [(-4.0, 4.0)] * 2
    assert [a.text for a in fig.layout.annotations] == ["a", "b", "c", "d"]
    assert fig.data[3].xaxis == "x4"


def test_grouped_bars_one_trace_per_group():
    table = pd.DataFrame({"k": [1, 2, 1], "loss": [0.5, 0.3, 0.7], "method": ["GD", "GD", "LSA"]})
    fig = plots.grouped_bars(table, x="k", y="loss", group="method")
    assert [t.name for t in fig.data] == ["GD", "LSA"]
    assert list(fig.data[0].x) == ["1", "2"] and list(fig.data[0].y) == [0.5, 0.3]
    assert fig.layout.barmode == "group"
    with pytest.raises(ValueError):
        plots.grouped_bars(table, x="k", y="nope", group="method")

"""Every figure helper of the book, and the rendering that makes figures work in the static site.

Jupyter Book 1.x shows neither Plotly >= 6 figures (their output is a mime type it skips) nor
circuitsvis views offline (circuitsvis inlines its 1.3 MB bundle into every view). So, while the
book is being built (`OPTIM_HUNTER_BOOK=1`, set by `optim_hunter.book.sphinx_ext` for the kernels it
starts), `show` and `attention_heads` emit small HTML snippets that call the global `Plotly` and
`CircuitsVis` objects; the extension ships plotly.js and the circuitsvis bundle once, as static
files, to the pages that use them. Outside a book build they fall back to the libraries' own
rendering, so the same chapter code works in Jupyter.

Each book-build output carries the site's `text/html` snippet (plus a `text/plain` line) as its
data, and in its metadata (`OUTSIDE_SITE`) a self-contained `application/vnd.plotly.v1+json`
figure (for an attention view: its heads as Plotly heat maps), which JupyterLab, Notebook 7 and
VS Code draw natively. myst-nb renders only the data, so the page holds the snippet alone (and no
warning about a mime type it cannot render: a bare `fig.show()` still triggers that one), and
`site_independent_notebook` swaps the snippet for the figure in the `.ipynb` offered for download.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Sequence
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from jaxtyping import Float, Shaped

BOOK_ENV = "OPTIM_HUNTER_BOOK"
PLOTLY_MARK = "plotly-graph-div"
CIRCUITSVIS_MARK = "optim-hunter-circuitsvis"
TEMPLATE = "plotly_white"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
OUTSIDE_SITE = "optim_hunter_outside_site"  # output metadata: {mime type: data} to show off the site

_counter = itertools.count()


def in_book_build() -> bool:
    return os.environ.get(BOOK_ENV) == "1"


def _stable_id(prefix: str, payload: str) -> str:
    # Deterministic ids keep rebuilt pages byte-identical; the counter separates equal figures.
    digest = hashlib.sha1(payload.encode()).hexdigest()[:10]
    return f"{prefix}-{digest}-{next(_counter)}"


def figure_html(fig: go.Figure) -> str:
    """A figure as a <div> plus a call to the page's global Plotly (no plotly.js inlined)."""
    payload = fig.to_json()
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=_stable_id("oh-plot", payload),
        config={"responsive": True, "displaylogo": False},
    )


def plotly_json(fig: go.Figure) -> dict[str, Any]:
    """The figure as plotly's own mime renderer writes it (`application/vnd.plotly.v1+json`)."""
    from plotly.io._base_renderers import PlotlyRenderer

    return PlotlyRenderer(config={"displaylogo": False}).to_mimebundle(fig.to_dict())[PLOTLY_MIME]


def book_bundle(snippet: str, fig: go.Figure, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(data, metadata) of a book-build output: the site's `text/html` snippet and a plain-text
    line; the figure's self-contained plotly JSON waits in the metadata for the download."""
    return {"text/html": snippet, "text/plain": text}, {OUTSIDE_SITE: {PLOTLY_MIME: plotly_json(fig)}}


def _display_bundle(data: dict[str, Any], metadata: dict[str, Any]) -> None:
    from IPython.display import display

    display(data, metadata=metadata, raw=True)


def _describe(fig: go.Figure) -> str:
    title = fig.layout.title.text if fig.layout.title and fig.layout.title.text else ""
    return f"<Plotly figure{': ' + title if title else ''} ({len(fig.data)} traces)>"


def show(fig: go.Figure) -> None:
    """Display a plotly figure: static-site snippet (plus the figure's JSON for the downloadable
    notebook) in a book build, the usual renderer elsewhere."""
    if not isinstance(fig, go.Figure):
        raise TypeError(f"show() takes a plotly Figure, got {type(fig).__name__}")
    if in_book_build():
        _display_bundle(*book_bundle(figure_html(fig), fig, _describe(fig)))
    else:
        fig.show()


def site_independent_notebook(notebook: Any) -> Any:
    """A copy of an executed notebook (nbformat node) for use outside the site: every output with
    an `OUTSIDE_SITE` alternative shows that instead of its data (the site's snippets, which need
    the bundles the site ships); its `text/plain` line is kept."""
    import copy

    import nbformat

    notebook = copy.deepcopy(notebook)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            alternative = output.get("metadata", {}).pop(OUTSIDE_SITE, None)
            if alternative and "data" in output:
                plain = {k: v for k, v in output["data"].items() if k == "text/plain"}
                output["data"] = nbformat.from_dict({**alternative, **plain})
    return notebook


def circuitsvis_html(view: Any, /, **kwargs: Any) -> str:
    """Render any circuitsvis view function (e.g. `circuitsvis.attention.attention_heads`) as a
    <div> plus a call to the page's global `CircuitsVis`, with the bundle left out.

    The props are produced by circuitsvis itself: its `render` is intercepted so the prop names
    and conversions stay exactly those of the installed circuitsvis version.
    """
    import importlib

    module = importlib.import_module(view.__module__)
    captured: dict[str, Any] = {}

    def capture(react_element_name: str, **props: Any) -> str:
        captured["name"] = react_element_name
        captured["props"] = props
        return ""

    with mock.patch.object(module, "render", capture):
        view(**kwargs)
    if "name" not in captured:
        raise TypeError(f"{view.__qualname__} did not call circuitsvis' render()")
    from circuitsvis.utils.convert_props import convert_props

    props = convert_props(captured["props"])
    element = captured["name"]
    div_id = _stable_id("oh-cv", element + props)
    return (
        f'<div id="{div_id}" class="{CIRCUITSVIS_MARK}" style="margin: 15px 0;"></div>\n'
        f'<script>CircuitsVis.render("{div_id}", CircuitsVis.{element}, {props});</script>'
    )


def attention_heads(
    attention: Float[np.ndarray, "head query_pos key_pos"],
    tokens: Sequence[str],
    head_names: Sequence[str] | None = None,
) -> None:
    """Show attention patterns of several heads (circuitsvis AttentionHeads view)."""
    import circuitsvis.attention as cva

    attention = np.asarray(attention, dtype=np.float32)
    if attention.ndim != 3 or attention.shape[1] != attention.shape[2]:
        raise ValueError(f"attention must be [head, query_pos, key_pos] and square, got {attention.shape}")
    if attention.shape[1] != len(tokens):
        raise ValueError(f"{len(tokens)} tokens for an attention pattern over {attention.shape[1]}")
    kwargs: dict[str, Any] = {"attention": attention, "tokens": list(tokens)}
    if head_names is not None:
        kwargs["attention_head_names"] = list(head_names)
    if in_book_build():
        names = list(head_names) if head_names is not None else [f"head {i}" for i in range(len(attention))]
        snippet = circuitsvis_html(cva.attention_heads, **kwargs)
        text = f"<attention patterns of {len(attention)} heads over {len(tokens)} tokens>"
        _display_bundle(*book_bundle(snippet, attention_figure(attention, tokens, names), text))
    else:
        from IPython.display import display

        display(cva.attention_heads(**kwargs))


def attention_figure(
    attention: Float[np.ndarray, "head query_pos key_pos"], tokens: Sequence[str], head_names: Sequence[str],
    columns: int = 4,
) -> go.Figure:
    """Attention patterns as Plotly heat maps, one panel per head (query down, key across, 0 to 1):
    the self-contained stand-in for the circuitsvis view in a notebook opened outside the site."""
    from plotly.subplots import make_subplots

    n = len(attention)
    cols = min(columns, n)
    rows = -(-n // cols)
    # Tokens may repeat; plotly merges equal category labels, so make each one unique by position.
    labels = [f"{i}: {t}" for i, t in enumerate(tokens)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(head_names),
                        horizontal_spacing=0.12 / cols, vertical_spacing=0.25 / rows)
    for h in range(n):
        fig.add_trace(go.Heatmap(z=np.asarray(attention[h], dtype=np.float32), x=labels, y=labels, zmin=0,
                                 zmax=1, colorscale="Blues", showscale=h == 0,
                                 hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>"),
                      row=h // cols + 1, col=h % cols + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(showticklabels=len(tokens) <= 40)
    fig.update_yaxes(showticklabels=len(tokens) <= 40)
    fig.update_layout(template=TEMPLATE, height=320 * rows + 60, title="attention (query row, key column)")
    return fig


# --- figures shared by chapters ---------------------------------------------------------------


def _columns(table: pd.DataFrame, *names: str) -> None:
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise ValueError(f"the table has no column {missing}; its columns are {list(table.columns)}")


def error_bars(
    table: pd.DataFrame,
    *,
    value: str,
    low: str,
    high: str,
    label: str = "method",
    title: str = "",
    log_x: bool = False,
) -> go.Figure:
    """Horizontal bars with intervals, best (smallest) at the top: one bar per row of `table`."""
    _columns(table, value, low, high, label)
    ordered = table.sort_values(value, ascending=False)
    fig = go.Figure(
        go.Bar(
            x=ordered[value],
            y=ordered[label],
            orientation="h",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": ordered[high] - ordered[value],
                "arrayminus": ordered[value] - ordered[low],
            },
            hovertemplate="%{y}: %{x:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        xaxis_title=value,
        height=max(300, 22 * len(ordered) + 120),
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
    )
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def lines(
    table: pd.DataFrame,
    *,
    x: str,
    y: str,
    group: str,
    title: str = "",
    log_y: bool = False,
) -> go.Figure:
    """One line per group."""
    _columns(table, x, y, group)
    fig = go.Figure()
    for name, part in table.groupby(group, sort=False):
        part = part.sort_values(x)
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers", name=str(name)))
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title=x, yaxis_title=y)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def heatmap(
    values: Float[np.ndarray, "row col"],
    *,
    x: Sequence[Any] | Shaped[np.ndarray, " col"],
    y: Sequence[Any] | Shaped[np.ndarray, " row"],
    title: str = "",
    zmid: float | None = None,
    colorscale: str = "RdBu",
) -> go.Figure:
    """A labelled heat map (diverging around `zmid` when given)."""
    fig = go.Figure(
        go.Heatmap(z=np.asarray(values), x=list(x), y=list(y), zmid=zmid, colorscale=colorscale)
    )
    fig.update_layout(template=TEMPLATE, title=title)
    return fig


def head_heatmap(
    scores: Float[np.ndarray, "layer head"], *, title: str = "", zmid: float | None = None,
    colorscale: str = "Viridis",
) -> go.Figure:
    """One score per attention head (e.g. `analysis.heads.prefix_matching`) as a heat map: heads
    `H0, H1, ...` across, layers `L0, L1, ...` down with layer 0 at the top, the score on hover."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [layer, head], got shape {scores.shape}")
    n_layers, n_heads = scores.shape
    fig = heatmap(scores, x=[f"H{h}" for h in range(n_heads)], y=[f"L{l}" for l in range(n_layers)],
                  title=title, zmid=zmid, colorscale=colorscale)
    fig.update_traces(hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(xaxis_title="head", yaxis_title="layer")
    return fig



def reference_lines(fig: go.Figure, levels: Sequence[tuple[str, float]]) -> go.Figure:
    """Add each (name, level) as a dotted horizontal line trace across the x-range of the
    figure's data; returns `fig`. (Plotly shapes such as add_hline are placed in log10 units on a
    log axis, so they would land in the wrong place; traces do not.)"""
    xs = [x for trace in fig.data for x in trace.x]
    if not xs:
        raise ValueError("reference_lines needs a figure with data to span")
    for name, level in levels:
        fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[float(level)] * 2, mode="lines",
                                 name=name, line={"dash": "dot", "width": 1.5}))
    return fig


def against_diagonal(
    x: Sequence[float] | Float[np.ndarray, "..."], y: Sequence[float] | Float[np.ndarray, "..."], *,
    x_title: str, y_title: str, title: str = "",
) -> go.Figure:
    """A scatter of y against x with the diagonal y = x: equal values lie on it (arrays are
    flattened, so x and y need only hold as many values)."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.shape} vs {y.shape}")
    lim = float(np.abs(np.concatenate([x, y])).max())
    fig = go.Figure(go.Scatter(x=x, y=y, mode="markers", marker={"size": 3, "opacity": 0.5},
                               name="points"))
    fig.add_trace(go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", name="diagonal",
                             line={"dash": "dot"}))
    fig.update_layout(template=TEMPLATE, height=480, width=520, title=title, xaxis_title=x_title,
                      yaxis_title=y_title)
    return fig


def heatmap_grid(
    panels: Sequence[Sequence[tuple[str, Float[np.ndarray, "row col"], float]]],
    *,
    x: Sequence[Any] | Shaped[np.ndarray, " col"],
    y: Sequence[Any] | Shaped[np.ndarray, " row"],
    title: str = "",
    colorscale: str = "RdBu",
) -> go.Figure:
    """Heat maps in a grid: `panels[r][c]` is (title, matrix, zmax), each drawn on a diverging
    scale from -zmax to zmax (give the panels of a row one zmax to compare them directly);
    `colorscale` "RdBu" draws negative values red, "RdBu_r" blue. Every panel shares `y`, so only
    the first column names the rows."""
    from plotly.subplots import make_subplots

    n_rows, n_cols = len(panels), max(len(row) for row in panels)
    fig = make_subplots(rows=n_rows, cols=n_cols, horizontal_spacing=0.08, vertical_spacing=0.12,
                        subplot_titles=[name for row in panels for name, _, _ in row])
    for r, row in enumerate(panels, start=1):
        for c, (_, values, zmax) in enumerate(row, start=1):
            fig.add_trace(go.Heatmap(z=np.asarray(values), x=list(x), y=list(y), zmid=0, zmin=-zmax,
                                     zmax=zmax, colorscale=colorscale, showscale=False), row=r, col=c)
            if c > 1:
                fig.update_yaxes(showticklabels=False, row=r, col=c)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(template=TEMPLATE, height=360 * n_rows, title=title)
    return fig


def grouped_bars(
    table: pd.DataFrame, *, x: str, y: str, group: str, title: str = "", x_title: str = "",
    y_title: str = "",
) -> go.Figure:
    """Bars of `y` at each `x`, one colour per `group`, side by side."""
    _columns(table, x, y, group)
    fig = go.Figure()
    for name, part in table.groupby(group, sort=False):
        fig.add_trace(go.Bar(x=part[x].astype(str), y=part[y], name=str(name),
                             hovertemplate="%{y:.4f}<extra>" + str(name) + "</extra>"))
    fig.update_layout(template=TEMPLATE, barmode="group", title=title, xaxis_title=x_title or x,
                      yaxis_title=y_title or y)
    return fig


def scatter_fits(
    table: pd.DataFrame, *, x: str, y: str, group: str, title: str = "", x_title: str = "",
    y_title: str = "",
) -> go.Figure:
    """A scatter of `y` against `x` per group, each with its least-squares line (dotted) and the
    line's R² in the legend."""
    _columns(table, x, y, group)
    fig = go.Figure()
    for name, part in table.groupby(group, sort=False):
        xs, ys = part[x].to_numpy(float), part[y].to_numpy(float)
        slope, intercept = np.polyfit(xs, ys, 1)
        r2 = float(np.corrcoef(xs, ys)[0, 1] ** 2)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=f"{name} (R² {r2:.2f})",
                                 marker={"size": 5, "opacity": 0.7}))
        ends = np.array([xs.min(), xs.max()])
        fig.add_trace(go.Scatter(x=ends, y=slope * ends + intercept, mode="lines", showlegend=False,
                                 name=f"{name}: slope {slope:.2f}", line={"dash": "dot"}))
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title=x_title or x, yaxis_title=y_title or y)
    return fig

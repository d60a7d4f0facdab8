"""What the chapter's figures and tables share: a head's label (L1H0) and curves over training
steps drawn on a log axis, one line per head or per group.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from optim_hunter.report import plots


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def head_lines(steps: np.ndarray, values: np.ndarray, key: str) -> pd.DataFrame:
    """[snapshot, layer, head] -> long table (step, key, head), heads with finite scores only."""
    _, n_layers, n_heads = values.shape
    return pd.concat([
        pd.DataFrame({"step": steps, key: values[:, l, h], "head": head_label(l, h)})
        for l in range(n_layers) for h in range(n_heads) if np.isfinite(values[:, l, h]).all()
    ])


def log_lines(table: pd.DataFrame, *, x: str, y: str, group: str, title: str) -> go.Figure:
    """`plots.lines` with a log x axis."""
    fig = plots.lines(table, x=x, y=y, group=group, title=title)
    fig.update_xaxes(type="log")
    return fig

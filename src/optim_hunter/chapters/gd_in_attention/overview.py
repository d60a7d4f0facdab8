"""Every model of the gd_in_attention chapter side by side: the held-out loss during training of
every trained model beside the GD levels, and the loss of every method by number of steps / layers.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from optim_hunter.chapters.gd_in_attention.deeper_stacks import Deeper
from optim_hunter.chapters.gd_in_attention.gd_baseline import Baseline
from optim_hunter.chapters.gd_in_attention.one_layer import OneLayer
from optim_hunter.chapters.gd_in_attention.softmax_attention import Softmax
from optim_hunter.report import plots


def training_figure(baseline: Baseline, one: OneLayer, deep: Deeper, softmax: Softmax) -> go.Figure:
    """Held-out loss during training of every model, with the GD levels they are compared with."""
    runs = [one.trained, *deep.trained.values(), *softmax.trained.values()]
    histories = pd.concat([t.history.assign(model=t.name) for t in runs], ignore_index=True)
    fig = plots.lines(histories, x="step", y="eval_loss", group="model", log_y=True,
                      title="Held-out loss during training")
    top = max(deep.trained)
    return plots.reference_lines(fig, [
        ("one GD step", baseline.gd1_loss), ("2 GD steps", deep.reference_loss("GD, 2 steps")),
        (f"{top} GD++ steps", deep.reference_loss(f"GD++, {top} steps")),
    ])


def depth_table(baseline: Baseline, one: OneLayer, deep: Deeper, softmax: Softmax) -> pd.DataFrame:
    """Held-out loss of every method by number of steps / layers (columns method, steps, loss)."""
    rows = [("zero predictor", "—", baseline.zero_loss), ("GD", "1", baseline.gd1_loss),
            ("LSA trained", "1", one.trained_loss), ("softmax trained", "1", softmax.loss1)]
    rows += [(algo, str(k), deep.reference_loss(f"{algo}, {k} steps"))
             for k in sorted(deep.trained) for algo in ("GD", "GD++")]
    rows += [("LSA trained", str(k), float(deep.pair(k)[0].model_loss)) for k in sorted(deep.trained)]
    rows += [("softmax trained", "2", softmax.loss2)]
    return pd.DataFrame(rows, columns=["method", "steps / layers", "loss"])


def depth_figure(baseline: Baseline, one: OneLayer, deep: Deeper, softmax: Softmax) -> go.Figure:
    """`depth_table` as grouped bars."""
    return plots.grouped_bars(depth_table(baseline, one, deep, softmax), x="steps / layers", y="loss",
                              group="method", title="Loss by depth", x_title="GD steps / attention layers",
                              y_title="held-out loss")

"""Gradient descent at its best step size (gd_in_attention chapter): one GD step from W = 0, its
loss over a grid of step sizes, its exact best step size, and on the held-out tasks its loss and
the zero predictor's, the levels every trained model is measured against.

  gd_baseline         Baseline: one GD step at its best step size, and the zero predictor
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from optim_hunter.analysis import lsa
from optim_hunter.analysis.lsa_construction import gd_predict, gd_predictor
from optim_hunter.analysis.lsa_step_sizes import best_gd_lr, scan_gd_lr
from optim_hunter.chapters.gd_in_attention import task_stats
from optim_hunter.chapters.gd_in_attention.setting import CHAPTER, MODEL, SOURCE, TASK_UNITS, Setup
from optim_hunter.report import claims, plots
from optim_hunter.report.claims import Claim

ZERO_LOSS = claims.declare(
    "lsa.zero_loss", "Loss of the zero predictor (1/2 mean squared error, d=10, N=10, x ~ U(-1,1))",
    source_seed=SOURCE, unit="loss")
GD1_LR = claims.declare("lsa.gd1_lr", "Best step size of one GD step from W=0 (tuning tasks)",
                        source_seed=SOURCE, unit="eta")
GD1_LOSS = claims.declare("lsa.gd1_loss", "Loss of one GD step at its best step size",
                          source_seed=SOURCE, unit="loss")


@dataclasses.dataclass(frozen=True, eq=False)
class Baseline:
    """One GD step from W = 0: the loss over a grid of step sizes (`scan`, tuning tasks), the exact
    best step size, and on the evaluation tasks its per-task losses and the zero predictor's (half
    the squared error of each task) and their means."""

    scan: pd.DataFrame
    eta_best: float
    zero_tasks: np.ndarray
    gd1_tasks: np.ndarray
    profile: str

    @property
    def zero_loss(self) -> float:
        return float(self.zero_tasks.mean())

    @property
    def gd1_loss(self) -> float:
        return float(self.gd1_tasks.mean())

    @property
    def grid_min(self) -> float:
        return float(self.scan.loc[self.scan.loss.idxmin(), "eta"])

    def predictor(self) -> lsa.Predictor:
        return gd_predictor([self.eta_best])

    def figure(self) -> go.Figure:
        fig = plots.lines(self.scan.assign(method="one GD step"), x="eta", y="loss", group="method",
                          title="One GD step from W = 0: loss against step size (tuning tasks)")
        fig.add_vline(x=self.eta_best, line_dash="dot", annotation_text=f"best eta = {self.eta_best:.3f}")
        return fig

    def claims(self) -> list[Claim]:
        at = dict(chapter=CHAPTER, profile=self.profile, model=MODEL)
        return [ZERO_LOSS.measure(self.zero_loss, interval=task_stats.mean_interval(self.zero_tasks, TASK_UNITS), **at),
                GD1_LR.measure(self.eta_best, **at),
                GD1_LOSS.measure(self.gd1_loss, interval=task_stats.mean_interval(self.gd1_tasks, TASK_UNITS), **at)]

    def numbers(self) -> dict[str, Any]:
        return {"eta_best": self.eta_best, "eta_grid_min": self.grid_min,
                "zero_loss": self.zero_loss, "gd1_loss": self.gd1_loss}


def gd_baseline(setup: Setup, grid: np.ndarray | None = None) -> Baseline:
    """Scan one GD step's loss over `grid` (default 0.1..3.0 in 30 points), take the exact best step
    size (the loss is a parabola in eta), and measure it and the zero predictor on held-out tasks."""
    grid = np.round(np.linspace(0.1, 3.0, 30), 3) if grid is None else grid
    eta_best = best_gd_lr(setup.tune_tasks)
    tasks = setup.eval_tasks.to(torch.float64)
    y = tasks.y_query
    return Baseline(
        scan=scan_gd_lr(setup.tune_tasks, grid), eta_best=eta_best,
        zero_tasks=(0.5 * y**2).numpy(),
        gd1_tasks=(0.5 * (gd_predict(tasks, [eta_best]) - y) ** 2).numpy(),
        profile=setup.profile,
    )

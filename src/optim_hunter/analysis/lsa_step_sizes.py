"""Gradient descent at its best step sizes, the baselines a trained LSA model is measured against:
one GD step's loss over a grid of step sizes and its exact best step size, and per-step sizes
(and GD++ rates) of k steps tuned by L-BFGS.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from optim_hunter.analysis.lsa import Predictor, Tasks, loss
from optim_hunter.analysis.lsa_construction import gd_plus_predict, gd_predict, gd_predictor


def scan_gd_lr(tasks: Tasks, etas: Sequence[float] | Float[np.ndarray, " n"]) -> pd.DataFrame:
    """Loss of one GD step for each step size in `etas` (columns eta, loss)."""
    unit = gd_predict(tasks, [1.0])  # one step from W = 0 is linear in eta
    rows = [{"eta": float(eta), "loss": float(loss(eta * unit, tasks.y_query))} for eta in etas]
    return pd.DataFrame(rows)


def best_gd_lr(tasks: Tasks) -> float:
    """The exact minimiser over eta of the one-step GD loss on `tasks`: the loss is quadratic in
    eta, so eta* = <a, y> / <a, a> with a the one-step prediction at eta = 1."""
    unit = gd_predict(tasks, [1.0])
    return float((unit * tasks.y_query).sum() / (unit * unit).sum())


@dataclasses.dataclass(frozen=True)
class StepSizes:
    """Tuned step sizes of k GD steps (gammas None) or k GD++ steps, and their tuning loss."""

    etas: list[float]
    gammas: list[float] | None
    tuning_loss: float

    def predictor(self) -> Predictor:
        """These step sizes as a Predictor."""
        return gd_predictor(self.etas, self.gammas)


def tune_gd(
    tasks: Tasks,
    n_steps: int,
    plus: bool = False,
    starts: Sequence[float] = (0.5, 1.5, 3.0),
    max_iter: int = 200,
) -> StepSizes:
    """Per-step sizes (and GD++ gammas when `plus`) minimising the loss on `tasks`, by L-BFGS.

    The GD++ loss is not convex in its step sizes, so L-BFGS runs from several starts (plain GD
    with sizes spread around each value of `starts`; equal sizes would stay equal, since GD steps
    on a quadratic commute) and the best run is kept. Deterministic: no randomness is involved.
    """
    tasks = tasks.to(torch.float64)
    best: StepSizes | None = None
    best_loss = math.inf
    for eta0 in starts:
        spread = torch.linspace(0.8, 1.2, n_steps) if n_steps > 1 else torch.ones(1)
        etas = (eta0 * spread).to(torch.float64).requires_grad_(True)
        gammas = torch.zeros(n_steps, dtype=torch.float64, requires_grad=plus)
        opt = torch.optim.LBFGS([etas, gammas] if plus else [etas], max_iter=max_iter,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                                tolerance_change=1e-14)

        def closure() -> Tensor:
            opt.zero_grad()
            value = loss(gd_plus_predict(tasks, list(etas), list(gammas)), tasks.y_query)
            value.backward()
            return value

        opt.step(closure)
        with torch.no_grad():
            final = float(loss(gd_plus_predict(tasks, list(etas), list(gammas)), tasks.y_query))
        if math.isfinite(final) and final < best_loss:
            best_loss = final
            best = StepSizes(etas.detach().tolist(), gammas.detach().tolist() if plus else None,
                             final)
    if best is None:
        raise RuntimeError("every L-BFGS start diverged")
    return best

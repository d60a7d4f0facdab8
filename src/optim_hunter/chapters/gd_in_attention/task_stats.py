"""Per-task values and their intervals, shared by the sections of the gd_in_attention chapter.

Every loss, cosine and distance of the chapter is a mean over held-out tasks, so the results keep
the per-task values (`compare_per_task`, `readout_per_task`) and each claim row carries a 95%
bootstrap interval over those tasks (`mean_interval`, `ratio_interval`, or `claims.bootstrap`
with one of the statistics here), paired when two predictors answer the same tasks; a verdict is
decided on that interval (reproduced, not reproduced, or inconclusive when it straddles the bar).
`rows_by_id` and `verdict_in_words` serve the sections' `numbers()`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from optim_hunter.analysis import lsa
from optim_hunter.analysis.intervals import Interval
from optim_hunter.analysis.lsa_comparison import sensitivities
from optim_hunter.chapters.gd_in_attention.setting import TRAINED_UNITS
from optim_hunter.report import claims
from optim_hunter.report.claims import Claim


def rows_by_id(rows: list[Claim]) -> dict[str, Claim]:
    """Claim rows by their id."""
    return {row.id: row for row in rows}


def verdict_in_words(row: Claim) -> str:
    """A row's verdict as the prose says it."""
    return claims.verdict_words(row.to_json())


def ratio_of_means(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """mean(a) / mean(b) along `axis` (a bootstrap statistic)."""
    return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def mean_interval(values: np.ndarray, units: str = TRAINED_UNITS) -> Interval:
    """95% bootstrap interval of the mean of per-task values."""
    return claims.bootstrap(values, units=units)


def ratio_interval(a: np.ndarray, b: np.ndarray, units: str = TRAINED_UNITS) -> Interval:
    """95% paired bootstrap interval of mean(a) / mean(b), a and b measured on the same tasks."""
    return claims.bootstrap(a, b, statistic=ratio_of_means, paired=True, units=units)


def smallest_mean(*samples: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """The smallest of the samples' means (a bootstrap statistic: positive iff every mean is)."""
    return np.min(np.stack([np.mean(s, axis=axis) for s in samples]), axis=0)


def largest_step_ratio(*layers: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """The largest ratio of consecutive means, mean(layers[l]) / mean(layers[l - 1]) (a bootstrap
    statistic: below 1 iff every step lowers the mean)."""
    means = [np.mean(layer, axis=axis) for layer in layers]
    return np.max(np.stack([b / a for a, b in zip(means, means[1:])]), axis=0)


def compare_per_task(
    models: dict[str, lsa.Predictor], references: dict[str, lsa.Predictor], tasks: lsa.Tasks
) -> tuple[pd.DataFrame, dict[tuple[str, str], pd.DataFrame]]:
    """`lsa_comparison.compare_table`'s rows (the means) and, per (model, reference), the per-task
    values they average: model_loss and reference_loss (half the squared error), pred_diff
    (|answer difference|), sens_cosine and sens_l2 (cosine and L2 distance of the sensitivities).
    As in `lsa_comparison.compare`, everything in float64; each predictor's answers and
    sensitivities are computed once."""
    tasks = tasks.to(torch.float64)
    y = tasks.y_query

    def run(predictor: lsa.Predictor) -> tuple[torch.Tensor, torch.Tensor]:
        grad = sensitivities(predictor, tasks).double()
        with torch.no_grad():
            return predictor(tasks).double(), grad

    outs_m = {name: run(p) for name, p in models.items()}
    outs_r = {name: run(p) for name, p in references.items()}
    rows, per_task = [], {}
    for m, (pred_a, grad_a) in outs_m.items():
        for r, (pred_b, grad_b) in outs_r.items():
            cosine = F.cosine_similarity(grad_a, grad_b, dim=-1, eps=1e-12)
            frame = pd.DataFrame({
                "model_loss": (0.5 * (pred_a - y) ** 2).numpy(),
                "reference_loss": (0.5 * (pred_b - y) ** 2).numpy(),
                "pred_diff": (pred_a - pred_b).abs().numpy(),
                "sens_cosine": cosine.numpy(),
                "sens_l2": (grad_a - grad_b).norm(dim=-1).numpy(),
            })
            per_task[(m, r)] = frame
            rows.append({"model": m, "reference": r, **{k: float(v) for k, v in frame.mean().items()}})
    return pd.DataFrame(rows), per_task


def readout_per_task(model: lsa.AttentionModel, tasks: lsa.Tasks) -> np.ndarray:
    """`lsa_comparison.readout_losses` per task: half the squared error of the answer read out
    before the first layer and after each layer, shape (n_layers + 1, n_tasks)."""
    with torch.no_grad():
        states = model.residuals(lsa.tokens(tasks.to(model.dtype)))
    target = tasks.y_query.double()
    return np.stack([(0.5 * (-state[:, -1, -1].double() - target) ** 2).numpy() for state in states])


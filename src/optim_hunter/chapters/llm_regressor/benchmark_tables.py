"""What both regressor chapters read from the benchmark's results tables (`evaluation.evaluate`
rows and their `evaluation.summarize` table): a dataset's display name, a method's absolute errors
and the bootstrap interval of their mean, the MAE against the number of examples, and the failures
per size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from optim_hunter.report import claims, plots

NAMES = {"friedman1": "Friedman #1", "friedman2": "Friedman #2", "friedman3": "Friedman #3"}


def display_name(dataset: str) -> str:
    return NAMES.get(dataset, dataset)


def errors_of(results: pd.DataFrame, method: str, *, dataset: str | None = None,
              n_examples: int | None = None) -> np.ndarray:
    """`method`'s absolute errors on the problems it answered (failures are counted apart), in the
    table's order: the units its MAE averages."""
    keep = (results.method == method) & ~results.failed
    if dataset is not None:
        keep &= results.dataset == dataset
    if n_examples is not None:
        keep &= results.n_examples == n_examples
    return results.loc[keep, "abs_error"].to_numpy(dtype=float)


def mean_interval(values: np.ndarray, units: str = "problems") -> claims.Interval | None:
    """The 95% bootstrap interval of the mean of `values` over its units (None when there is none:
    every answer failed); the same interval as `evaluation.summarize`'s."""
    values = np.asarray(values, dtype=float)
    return claims.bootstrap(values, units=units) if values.size else None


def mae_curve_figure(table: pd.DataFrame, dataset: str) -> Any:
    """MAE of each method of a summary `table` against the number of in-context examples (log scale)."""
    return plots.lines(table, x="n_examples", y="mae", group="method", log_y=True,
                       title=f"{display_name(dataset)}: MAE against the number of in-context examples")


def failures_by_size(table: pd.DataFrame) -> pd.DataFrame:
    """Failed predictions per method (rows) and size (columns) of a summary `table`: counted, never
    scored as numbers."""
    return table.pivot(index="method", columns="n_examples", values="n_failed")

"""95% bootstrap intervals over the units a number of the chapter averages (held-out chains,
sequences, heads), and the rank correlation of per-head scores with its interval.

A number that averages held-out chains (windows, sequences) or heads is decided on a 95% bootstrap
interval over them: `bootstrap_means` for any function of the means of several per-unit rows,
resampled together (a ratio of means, a difference, the smallest of several margins), `resampled`
for any statistic of one resample's unit indices. Both are `claims.bootstrap_units`
(`analysis.intervals.bootstrap`: 2,000 percentile resamples, seed 0) with the statistic applied to
one resample at a time. Nothing here names a model, a claim or the chapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from jaxtyping import Float, Int

from optim_hunter.report import claims


def resampled(n: int, statistic: Callable[[Int[np.ndarray, " unit"]], float], units: str) -> claims.Interval:
    """`claims.bootstrap_units` for a statistic of one resample's unit indices at a time (`index`:
    a resample of 0..n-1, all quantities of one unit drawn together, e.g. a head with its whole
    trajectory). `statistic(np.arange(n))` is the point."""
    return claims.bootstrap_units(
        n, lambda idx: np.array([statistic(i) for i in idx.reshape(-1, n)]).reshape(idx.shape[:-1]), units)


def bootstrap_means(
    rows: Float[np.ndarray, "*quantity unit"], statistic: Callable[[Float[np.ndarray, " quantity"]], float], units: str,
) -> claims.Interval:
    """95% bootstrap interval of `statistic(means)`, `means` the mean over units of each row of
    `rows` [quantity, unit] (paired: the units are resampled together for every row). A ratio of
    means, a difference, the smallest of several margins: any function of the means."""
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    return resampled(rows.shape[1], lambda i: statistic(rows[:, i].mean(1)), units)


def ratio(num: float, den: float, *, undefined: float = -1.0) -> float:
    """num / den where den > 0, else `undefined`: a share whose denominator has the wrong sign has
    no meaning, and a resample where that happens counts as a value the claim's region excludes."""
    return float(num / den) if den > 0 else undefined


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman correlation and its p-value over the pairs where both are finite; (0, 1) where a
    sample has no variation (a bootstrap resample of one repeated unit)."""
    import warnings

    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = spearmanr(x[keep], y[keep])
    return float(result.statistic), float(result.pvalue)


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho without its p-value (fast), over the pairs where both are finite."""
    from scipy.stats import rankdata

    keep = np.isfinite(x) & np.isfinite(y)
    x, y = rankdata(x[keep]), rankdata(y[keep])
    return float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0 else 0.0


def correlation_over(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], units: str
) -> tuple[float, float, claims.Interval]:
    """Spearman correlation of the pairs of all units (each unit: a head, with one value or its
    whole trajectory), its p-value, and a bootstrap interval that resamples the units."""
    rho, p = spearman(np.concatenate(xs), np.concatenate(ys))
    interval = resampled(len(xs), lambda i: _rank_correlation(np.concatenate([xs[k] for k in i]),
                                                              np.concatenate([ys[k] for k in i])), units)
    return rho, p, interval

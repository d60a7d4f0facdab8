"""Intervals over units and over training seeds: the uncertainty a verdict is decided on.

A number measured over units (prompts, problems, held-out chains, heads) gets a 95% bootstrap
interval over them (`bootstrap`, `scipy.stats.bootstrap`, paired when two quantities are measured
on the same units; `bootstrap_units` for a statistic of unit indices). A number a training run
produces gets the range over seeds (`seed_range`), the 95% prediction interval for one more seed
(`prediction_interval`), the smallest interval holding every seed's (`union`, `over_seeds`), and,
for a count of units past a threshold, the count from each ranked unit's prediction interval
(`count_over_seeds`). `optim_hunter.report.verdicts` decides claims on them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclasses.dataclass(frozen=True)
class Interval:
    """[low, high] around a measured value; `kind` says what it is, `n` over how many units."""

    low: float
    high: float
    kind: str
    n: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"an interval needs finite low <= high, got [{self.low}, {self.high}]")
        if self.n < 1:
            raise ValueError(f"an interval needs at least one unit, got n={self.n}")

    def as_list(self) -> list[float]:
        return [float(self.low), float(self.high)]


def _mean(x: np.ndarray, axis: int = -1) -> Any:
    return np.mean(x, axis=axis)


def bootstrap(
    *samples: Sequence[float] | np.ndarray,
    statistic: Callable[..., Any] | None = None,
    units: str = "units",
    paired: bool = False,
    seed: int = 0,
) -> Interval:
    """95% percentile bootstrap interval of `statistic(*samples)` over the units of `samples`.

    `statistic` takes the samples (and `axis`), vectorised as `scipy.stats.bootstrap` wants; the
    default is the mean of one sample. `paired=True` resamples the same units in every sample
    (two methods scored on the same problems). Deterministic for a `seed`. A statistic that is
    constant over the resamples (all units equal) gives a zero-width interval, not an error.
    """
    from scipy.stats import bootstrap as scipy_bootstrap

    arrays = [np.asarray(s, dtype=float) for s in samples]
    if not arrays or any(a.ndim != 1 or a.size == 0 for a in arrays):
        raise ValueError("bootstrap needs one or more non-empty 1-d samples")
    if any(not np.isfinite(a).all() for a in arrays):
        raise ValueError("bootstrap samples must be finite: count failures apart, never as numbers")
    if paired and len({a.size for a in arrays}) != 1:
        raise ValueError("paired samples must have the same number of units")
    statistic = statistic or _mean
    n = arrays[0].size
    point = np.asarray(statistic(*arrays, axis=-1), dtype=float)
    if n == 1 or all(np.ptp(a) == 0 for a in arrays):
        low = high = float(point)
    else:
        result = scipy_bootstrap(
            tuple(arrays), statistic, paired=paired, vectorized=True, n_resamples=RESAMPLES,
            confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed),
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"the statistic is not finite on some resamples of the {n} {units} (interval "
                             f"[{low}, {high}]): make it finite on every resample, or record why there is no interval")
    label = "paired bootstrap" if paired else "bootstrap"
    return Interval(min(low, float(point)), max(high, float(point)),
                    f"{label} {CONFIDENCE:.0%} over {n} {units}", n)


def bootstrap_units(n: int, statistic: Callable[[np.ndarray], Any], units: str = "units") -> Interval:
    """95% bootstrap interval of `statistic(idx)` over `n` units, `idx` an integer array (..., n) of
    resampled unit indices and the statistic one value per resample (...): a number computed from
    per-unit arrays (a fit, a first stage, a correlation) resampled whole units at a time. Every array
    indexed by the same `idx` is resampled together (paired). `statistic(np.arange(n))` is the point."""
    return bootstrap(np.arange(n, dtype=float), units=units,
                     statistic=lambda idx, axis=-1: np.asarray(statistic(idx.astype(int)), dtype=float))


def seed_range(values: Sequence[float] | np.ndarray, units: str = "training seeds") -> Interval:
    """The range of a value over independent runs (training seeds), or over repeated evaluations of
    the same runs when that is all there is (say so in `units`): the smallest and the largest."""
    array = np.asarray(values, dtype=float)
    if array.size == 0 or not np.isfinite(array).all():
        raise ValueError("a seed range needs one or more finite values")
    return Interval(float(array.min()), float(array.max()), f"range over {array.size} {units}", int(array.size))


def prediction_interval(values: Sequence[float] | np.ndarray, units: str = "training seeds") -> Interval:
    """The 95% prediction interval for one more independent run's value, from `values` of n runs:
    mean +- t(0.975, n-1) * s * sqrt(1 + 1/n) (normal runs; Student's t for the unknown spread),
    widened to hold every value. One value gives that point (no spread is known). For three seeds
    the half-width is 4.97 standard deviations: wide, as three runs allow."""
    from scipy.stats import t as student_t

    array = np.asarray(values, dtype=float)
    if array.size == 0 or not np.isfinite(array).all():
        raise ValueError("a prediction interval needs one or more finite values")
    n = int(array.size)
    low, high = float(array.min()), float(array.max())
    if n >= 2:
        half = float(student_t.ppf(0.5 + CONFIDENCE / 2, n - 1) * array.std(ddof=1) * math.sqrt(1 + 1 / n))
        low, high = min(low, float(array.mean()) - half), max(high, float(array.mean()) + half)
    return Interval(low, high, f"{CONFIDENCE:.0%} prediction interval for another of {n} {units}", n)


def over_seeds(parts: Sequence[Interval | float], units: str = "training seeds") -> Interval:
    """The interval a claim about what training produces is decided on: the smallest interval holding
    every seed's part (its 95% interval, or its value where it has none) and the 95% prediction
    interval (`prediction_interval`) of the seeds' values (an interval's middle standing for its
    seed's value), so that a verdict holds for another training run, not only for these."""
    if len(parts) == 0:
        raise ValueError("over_seeds needs one or more per-seed intervals or values")
    spread = union(parts, units)
    centres = [(p.low + p.high) / 2 if isinstance(p, Interval) else float(p) for p in parts]
    predicted = prediction_interval(centres, units)
    return Interval(min(spread.low, predicted.low), max(spread.high, predicted.high),
                    f"{spread.kind}, widened to the {CONFIDENCE:.0%} prediction interval for another seed", len(parts))


def count_over_seeds(scores: Sequence[Sequence[float] | np.ndarray], threshold: float,
                     units: str = "training seeds", below: bool = False) -> Interval:
    """An interval for a count of units (heads) whose score is >= `threshold`, over training seeds:
    the units of each seed ranked by score (unit identities differ between runs), the r-th highest
    scores of the seeds give a 95% prediction interval for the r-th highest of another seed; the count
    is at least the number of ranks whose interval lies wholly at or above the threshold, and at
    most the number whose interval reaches it. Three seeds of 7, 7, 7 heads thus give [7, 7] only
    when the 8th-ranked head stays clearly below the threshold on every seed. `below=True` counts
    the units whose score is < `threshold` instead."""
    sign = -1.0 if below else 1.0  # a count below a threshold is a count of negated scores above it
    ranked = np.stack([np.sort(sign * np.asarray(s, dtype=float))[::-1] for s in scores])  # [seed, rank]
    if ranked.ndim != 2 or ranked.shape[1] == 0:
        raise ValueError("count_over_seeds needs the same number of units' scores from each seed")
    per_rank = [prediction_interval(ranked[:, r], units) for r in range(ranked.shape[1])]
    if below:
        low, high = sum(i.low > -threshold for i in per_rank), sum(i.high > -threshold for i in per_rank)
    else:
        low, high = sum(i.low >= threshold for i in per_rank), sum(i.high >= threshold for i in per_rank)
    return Interval(float(low), float(high),
                    f"count from the {CONFIDENCE:.0%} prediction interval of each ranked unit's score over "
                    f"{ranked.shape[0]} {units}", int(ranked.shape[0]))


def union(parts: Sequence[Interval | float], units: str = "training seeds") -> Interval:
    """The smallest interval holding every part: one per training seed, each that seed's 95% interval
    or, for a number that has none (a count over heads, a property of the weights), its value. A claim
    about what training produces is decided on it, so that the verdict holds at every seed's
    interval: reproduced when every seed's interval meets the criterion, not reproduced when none
    of them reaches it, inconclusive otherwise (seeds that disagree included). With points only it
    is `seed_range`."""
    if len(parts) == 0:
        raise ValueError("a union needs one or more intervals")
    intervals = [p if isinstance(p, Interval) else seed_range([p], "value") for p in parts]
    kinds = list(dict.fromkeys(p.kind for p in parts if isinstance(p, Interval)))
    if 0 < sum(isinstance(p, Interval) for p in parts) < len(parts):
        raise ValueError("a union mixes intervals with bare values: give every seed the same kind")
    inner = "values" if not kinds else "; ".join(kinds)
    return Interval(min(i.low for i in intervals), max(i.high for i in intervals),
                    f"range over {len(parts)} {units} of the per-seed {inner}", len(parts))

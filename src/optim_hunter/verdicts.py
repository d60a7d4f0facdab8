"""How a claim's verdict is decided: a criterion as a region of values, and an interval to test.

A claim's number is an average over units (prompts, problems, held-out chains, heads) or the
outcome of a training run, so it comes with an uncertainty. The verdict is decided on that
uncertainty, not on the point:

  * `Interval`: a 95% bootstrap interval over the units (`bootstrap`, `scipy.stats.bootstrap`,
    paired when two quantities are measured on the same units), or the range over training seeds
    (`seed_range`);
  * `Region`: the criterion as the set of values that support the source's statement
    (`at_least`, `above`, `at_most`, `below`, `between`), written before any number is known.

`Region.decide(interval)` is *reproduced* when the whole interval lies in the region, *not
reproduced* when none of it does, and *inconclusive* when it straddles the region's edge.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

Decision = Literal["reproduced", "not_reproduced", "inconclusive"]
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


@dataclasses.dataclass(frozen=True)
class Region:
    """The values that support a source's statement: from `low` to `high`, each edge open or closed.

    Callable (`region(value) -> bool`) for a point; `decide(interval)` for an interval.
    """

    low: float = -math.inf
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = True
    words: str = ""

    def __call__(self, value: float) -> bool:
        value = float(value)
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def decide(self, interval: Interval) -> Decision:
        inside = self(interval.low) and self(interval.high)
        if inside:
            return "reproduced"
        # The interval misses the region when it lies wholly below or wholly above it.
        below = interval.high < self.low or (interval.high == self.low and not self.low_closed)
        above = interval.low > self.high or (interval.low == self.high and not self.high_closed)
        return "not_reproduced" if below or above else "inconclusive"

    def examples(self) -> tuple[float, float]:
        """A value inside the region and one outside it (for the criterion's unit test)."""
        if math.isfinite(self.low) and math.isfinite(self.high):
            return ((self.low + self.high) / 2, self.high + max(1.0, abs(self.high)))
        if math.isfinite(self.low):
            return (self.low + max(1.0, abs(self.low)), self.low - max(1.0, abs(self.low)))
        return (self.high - max(1.0, abs(self.high)), self.high + max(1.0, abs(self.high)))


@dataclasses.dataclass(frozen=True)
class Covers:
    """A consistency test: the source's number lies inside our interval (a published value against
    our measurement of the same quantity). Decided on an interval only: reproduced when the interval
    holds `value`, not reproduced when it does not (there is no straddling)."""

    value: float
    words: str = ""

    def __post_init__(self) -> None:
        if not self.words:
            object.__setattr__(self, "words", f"{_g(self.value)} inside our 95% interval")

    def __call__(self, interval: Sequence[float]) -> bool:
        low, high = interval
        return float(low) <= self.value <= float(high)

    def decide(self, interval: Interval) -> Decision:
        return "reproduced" if self((interval.low, interval.high)) else "not_reproduced"

    def examples(self) -> tuple[tuple[float, float], tuple[float, float]]:
        width = max(1.0, abs(self.value))
        return ((self.value - width, self.value + width), (self.value + width, self.value + 2 * width))


def covers(value: float) -> Covers:
    return Covers(float(value))


def _g(x: float) -> str:
    return f"{x:g}"


def at_least(x: float) -> Region:
    return Region(low=x, words=f">= {_g(x)}")


def above(x: float) -> Region:
    return Region(low=x, low_closed=False, words=f"> {_g(x)}")


def at_most(x: float) -> Region:
    return Region(high=x, words=f"<= {_g(x)}")


def below(x: float) -> Region:
    return Region(high=x, high_closed=False, words=f"< {_g(x)}")


def between(low: float, high: float) -> Region:
    if low > high:
        raise ValueError(f"between({low}, {high}): low must not exceed high")
    return Region(low=low, high=high, words=f"in [{_g(low)}, {_g(high)}]")

"""How a claim's verdict is decided: a criterion as a region of values, and an interval to test.

A claim's number is an average over units (prompts, problems, held-out chains, heads) or the
outcome of a training run, so it comes with an uncertainty. The verdict is decided on that
uncertainty, not on the point:

  * `Interval`: a 95% bootstrap interval over the units (`bootstrap`, `scipy.stats.bootstrap`,
    paired when two quantities are measured on the same units), or the range over training seeds
    (`seed_range` of per-seed values; `union` of per-seed intervals);
  * `Region`: the criterion as the set of values that support the source's statement
    (`at_least`, `above`, `at_most`, `below`, `between`), written before any number is known.

`Region.decide(interval)` is *reproduced* when the whole interval lies in the region, *not
reproduced* when none of it does, and *inconclusive* when it straddles the region's edge.

A claim about what training produces is measured on every training seed's model and decided by
`across_seeds` on `over_seeds`: the per-seed intervals (a per-seed number without an interval
counting as its value) together with the 95% prediction interval for the value of one more training
seed (`prediction_interval`). One model's interval leaves out how far another training run, or the
same run on other float kernels, moves the number, and the range of three seeds leaves out a fourth:
two builds of one commit, one with other float kernels, once decided two affine claims differently
on that range (seeds 7, 8, 6 against 7, 7, 7 heads; 0.109, 0.075, 0.101 against 0.086, 0.066, 0.056).
The prediction interval of three seeds still decided two affine rows differently in two such builds
(0.081, 0.072, 0.067 against 0.078, 0.075, 0.080 for a criterion <= 0.1): its half-width, 4.97 sample
sd at n = 3, rests on an sd that three values barely estimate; the affine models now train five seeds
(3.04 sd; `zoo.SEEDS`).
A count of units past a threshold (heads whose score is >= 0.5) is decided the same way on each
ranked unit's score (`count_over_seeds`). `OverSeeds` holds a section's results over the seeds and
reads as seed 0's.
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


def across_seeds(rows_per_seed: Sequence[Sequence[Any]], units: str = "training seeds",
                 counts: dict[str, tuple[Sequence[Any], float, bool]] | None = None) -> list[Any]:
    """One claim row per claim from the rows each training seed's model gave (seed 0 first, the same
    claims in the same order): the rule for every claim about what training produces.

    The row shows seed 0's value (the model the figures show) and every seed's value in its text. A
    claim decided by a region is decided on `over_seeds`: the per-seed intervals (a per-seed number
    without one counts as its value) widened to the prediction interval for another seed, so that
    a verdict does not flip with the float kernels of another machine or another training run. A
    count of units past a threshold named in `counts` (claim id -> each seed's unit scores, the
    threshold, and whether the count is of scores below it) is decided on `count_over_seeds` instead. A claim whose test reads more than one
    number (no interval) gets the seeds' common verdict, inconclusive where they disagree; a check
    holds when it holds at every seed; a measured-only row gets the union as its interval. A row that
    is the same on every seed with its interval (a baseline that does not depend on training), and a
    check or a measured-only row that is the same on every seed, are kept as they are."""
    import dataclasses as dc

    per_seed = [list(rows) for rows in rows_per_seed]
    if not per_seed:
        raise ValueError("across_seeds needs the rows of one or more training seeds")
    ids = [row.id for row in per_seed[0]]
    for seed, rows in enumerate(per_seed):
        if [row.id for row in rows] != ids:
            raise ValueError(f"training seed {seed} gave other claims than seed 0: {[r.id for r in rows]} vs {ids}")
    out = []
    for i, base in enumerate(per_seed[0]):
        group = [rows[i] for rows in per_seed]
        if all(row == base for row in group) and (base.interval is not None or base.verdict in ("measured", "check")):
            out.append(base)  # the same on every seed, interval and all: it does not depend on training
            continue
        values = [row.measured for row in group]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        shown = "; ".join(f"{v:.4g}" if isinstance(v, (int, float)) else str(v) for v in values)
        text = f"{base.claim} [value of seed 0; per training seed: {shown}]"
        if base.verdict == "check":
            out.append(dc.replace(base, claim=text, holds=all(bool(row.holds) for row in group)))
            continue
        interval = None
        if numeric:
            parts = [Interval(row.interval[0], row.interval[1], row.interval_kind, int(row.n or 1))
                     if row.interval is not None else float(row.measured) for row in group]
            if counts and base.id in counts:
                scores, threshold, below = counts[base.id]
                interval = count_over_seeds(scores, threshold, units, below=below)
            elif len({isinstance(p, Interval) for p in parts}) == 1:
                interval = over_seeds(parts, units)
        spread = {} if interval is None else {"interval": interval.as_list(), "interval_kind": interval.kind,
                                              "n": interval.n, "why_no_interval": ""}
        if any(row.verdict == "measured" for row in group):
            out.append(dc.replace(base, claim=text, verdict="measured", criterion="", **spread))
            continue
        test = _declared_test(base.id)
        if isinstance(test, (Region, Covers)) and interval is not None:
            out.append(dc.replace(base, claim=text, verdict=test.decide(interval), **spread))
            continue
        decided = {row.verdict for row in group}
        why = (f"{base.why_no_interval + '; ' if base.why_no_interval else ''}decided at each of {len(group)} "
               f"{units}: their common verdict, inconclusive where they disagree")
        out.append(dc.replace(base, claim=text, verdict=decided.pop() if len(decided) == 1 else "inconclusive",
                              interval=None, interval_kind="", n=None, why_no_interval=why))
    return out


class OverSeeds:
    """A section's result on every training seed (seed 0 first). It reads as seed 0's result (its
    figures, tables and the numbers the prose quotes, `numbers()`), except `claims()`: one row per
    claim decided on all seeds (`across_seeds`). `spread(name)` is a number of `numbers()`
    on every seed."""

    def __init__(self, results: Sequence[Any], units: str = "training seeds"):
        if not results:
            raise ValueError("OverSeeds needs the result of one or more training seeds")
        self.results = tuple(results)
        self.units = units

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("results", "units"):
            raise AttributeError(name)
        return getattr(self.results[0], name)

    @property
    def n_seeds(self) -> int:
        return len(self.results)

    def claims(self) -> list[Any]:
        """Every claim decided over the seeds; a result with `unit_scores()` (claim id -> its units'
        scores, the threshold a count of them uses and whether it counts those below it) has those
        counts decided per ranked unit (`count_over_seeds`)."""
        counts = None
        if hasattr(self.results[0], "unit_scores"):
            per_seed = [r.unit_scores() for r in self.results]
            counts = {cid: ([seed[cid][0] for seed in per_seed], threshold, below)
                      for cid, (_, threshold, below) in per_seed[0].items()}
        return across_seeds([r.claims() for r in self.results], self.units, counts)

    def spread(self, name: str) -> list[Any]:
        return [r.numbers()[name] for r in self.results]

    def numbers(self) -> dict[str, Any]:
        """Seed 0's numbers, and for each number `<name>_seeds`: every seed's, as words ("8, 7"). A
        result whose `numbers` takes `rows` (the verdicts and intervals the prose quotes) gets the
        rows decided over the seeds."""
        import inspect

        every = [r.numbers() for r in self.results]
        numbers = dict(every[0])
        if "rows" in inspect.signature(self.results[0].numbers).parameters:
            numbers = dict(self.results[0].numbers(rows=self.claims()))
        for name, value in every[0].items():
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
                numbers[f"{name}_seeds"] = ", ".join(_short(seed[name]) for seed in every)
        return numbers


def _short(value: Any) -> str:
    """A number as the prose lists it: an integer whole, anything else to 3 significant figures."""
    if isinstance(value, (int, np.integer)) or float(value).is_integer() and abs(float(value)) < 1e6:
        return f"{int(value)}"
    return f"{float(value):.3g}"


def _declared_test(claim_id: str) -> Any:
    """The test of the declared claim a row's id comes from (its id, or a template of it)."""
    import re

    from optim_hunter import claims

    for spec in claims._DECLARED.values():
        if spec.id == claim_id:
            return spec.test
    for spec in claims._DECLARED.values():
        if "{" in spec.id:
            parts = re.split(r"(\{[^{}]*\})", spec.id)  # literal, field, literal, ...
            pattern = "".join("[a-z0-9_]+" if i % 2 else re.escape(part) for i, part in enumerate(parts))
            if re.fullmatch(pattern, claim_id):
                return spec.test
    raise KeyError(f"no declared claim gives the row id {claim_id!r}")


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
from collections.abc import Sequence
from typing import Literal

from optim_hunter.analysis.intervals import Interval

Decision = Literal["reproduced", "not_reproduced", "inconclusive"]


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

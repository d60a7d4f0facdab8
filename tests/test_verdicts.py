"""Verdicts on intervals: regions decided against a hand-made interval, and the bootstrap against an
independent resampling written here with numpy."""

import math

import numpy as np
import pytest

from optim_hunter import verdicts
from optim_hunter.verdicts import Interval


def iv(low, high):
    return Interval(low, high, "test", 10)


@pytest.mark.parametrize(
    "region, low, high, expected",
    [
        (verdicts.at_least(0.5), 0.6, 0.9, "reproduced"),
        (verdicts.at_least(0.5), 0.5, 0.9, "reproduced"),  # closed edge
        (verdicts.above(0.5), 0.5, 0.9, "inconclusive"),  # open edge: 0.5 itself fails
        (verdicts.at_least(0.5), 0.4, 0.6, "inconclusive"),
        (verdicts.at_least(0.5), 0.1, 0.4, "not_reproduced"),
        (verdicts.below(1.0), 0.2, 0.99, "reproduced"),
        (verdicts.below(1.0), 1.0, 1.2, "not_reproduced"),
        (verdicts.at_most(1.0), 0.9, 1.1, "inconclusive"),
        (verdicts.between(0.2, 0.3), 0.21, 0.29, "reproduced"),
        (verdicts.between(0.2, 0.3), 0.1, 0.4, "inconclusive"),  # straddles both edges
        (verdicts.between(0.2, 0.3), 0.31, 0.4, "not_reproduced"),
        (verdicts.between(0.2, 0.3), 0.0, 0.19, "not_reproduced"),
    ],
)
def test_a_region_decides_on_the_whole_interval(region, low, high, expected):
    assert region.decide(iv(low, high)) == expected


def test_covers_asks_whether_the_interval_holds_the_value():
    assert verdicts.covers(3.0).decide(iv(2.0, 4.0)) == "reproduced"
    assert verdicts.covers(3.0).decide(iv(3.5, 4.0)) == "not_reproduced"


@pytest.mark.parametrize("region", [verdicts.at_least(2), verdicts.above(-1), verdicts.at_most(0),
                                    verdicts.below(5), verdicts.between(0.2, 0.3), verdicts.covers(7)])
def test_derived_examples_pass_and_fail(region):
    passing, failing = region.examples()
    assert region(passing) and not region(failing)


def _numpy_percentile_bootstrap(x, stat, draws=20000, seed=1):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(draws, len(x)))
    values = stat(x[idx])
    return np.percentile(values, [2.5, 97.5])


def test_bootstrap_of_a_mean_matches_a_plain_numpy_resampling():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=60)
    interval = verdicts.bootstrap(x, units="prompts")
    low, high = _numpy_percentile_bootstrap(x, lambda a: a.mean(axis=-1))
    assert interval.low == pytest.approx(low, abs=0.1) and interval.high == pytest.approx(high, abs=0.1)
    assert interval.low < x.mean() < interval.high
    assert interval.kind == "bootstrap 95% over 60 prompts" and interval.n == 60
    # the normal-theory interval as a second reference: mean +- 1.96 standard errors
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert interval.low == pytest.approx(x.mean() - 1.96 * se, abs=0.15)


def test_a_paired_bootstrap_is_narrower_than_an_unpaired_one_on_correlated_units():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 5, size=40)  # problem difficulty, shared by both methods
    a, b = base + rng.normal(0, 0.3, 40), base + 0.5 + rng.normal(0, 0.3, 40)

    def diff(u, v, axis=-1):
        return np.mean(u, axis=axis) - np.mean(v, axis=axis)

    paired = verdicts.bootstrap(a, b, statistic=diff, paired=True, units="problems")
    unpaired = verdicts.bootstrap(a, b, statistic=diff, units="problems")
    assert paired.high < 0  # the paired design sees b is worse on every problem
    assert unpaired.low < 0 < unpaired.high or (unpaired.high - unpaired.low) > 5 * (paired.high - paired.low)
    assert paired.kind.startswith("paired bootstrap")


def test_bootstrap_is_deterministic_and_handles_constant_data():
    x = np.arange(20.0)
    assert verdicts.bootstrap(x) == verdicts.bootstrap(x)
    constant = verdicts.bootstrap(np.ones(5))
    assert (constant.low, constant.high) == (1.0, 1.0)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], np.ones((2, 2))])
def test_bootstrap_refuses_what_is_not_a_sample(bad):
    with pytest.raises(ValueError):
        verdicts.bootstrap(bad)


def test_seed_range_is_the_smallest_and_largest_run():
    interval = verdicts.seed_range([0.3, 0.1, 0.2])
    assert (interval.low, interval.high, interval.n, interval.kind) == (0.1, 0.3, 3, "range over 3 training seeds")
    with pytest.raises(ValueError):
        verdicts.seed_range([])


def test_bootstrap_units_resamples_whole_units_for_every_array():
    a = np.arange(10.0)
    b = 2 * a + 1  # paired with a, unit by unit
    interval = verdicts.bootstrap_units(10, lambda idx: (b[idx] - 2 * a[idx]).mean(-1), "prompts")
    assert (interval.low, interval.high) == (1.0, 1.0)  # the pairing survives every resample
    plain = verdicts.bootstrap_units(10, lambda idx: a[idx].mean(-1), "prompts")
    assert plain == verdicts.bootstrap(a, units="prompts")  # the same draws as the plain bootstrap

"""Claims about what training produces, decided over every training seed's model.

`across_seeds` turns the rows each seed's model gave into one row per claim (seed 0's value shown,
every seed's in its text), decided on the per-seed intervals widened to the prediction interval for
another seed (`intervals.over_seeds`), or for a count of units past a threshold on each ranked unit's
score (`intervals.count_over_seeds`). `OverSeeds` holds a section's results over the seeds and reads
as seed 0's.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from optim_hunter.analysis.intervals import Interval, count_over_seeds, over_seeds
from optim_hunter.report import claims
from optim_hunter.report.verdicts import Covers, Region


def across_seeds(rows_per_seed: Sequence[Sequence[Any]], units: str = "training seeds",
                 counts: dict[str, tuple[Sequence[Any], float, bool]] | None = None) -> list[Any]:
    """One claim row per claim from the rows each training seed's model gave (seed 0 first, the same
    claims in the same order): the rule for every claim about what training produces.

    The row shows seed 0's value (the model the figures show) and every seed's value in its text. A
    claim decided by a region is decided on `over_seeds`: the per-seed intervals (a per-seed number
    without one counts as its value) widened to the prediction interval for another seed, so that
    a verdict does not flip with the float kernels of another machine or another training run. A
    count of units past a threshold named in `counts` (claim id -> each seed's unit scores, the
    threshold, and whether the count is of scores below it) is decided on `count_over_seeds` instead.
    A claim whose test reads more than one number (no interval) gets the seeds' common verdict, inconclusive where they disagree; a check
    holds when it holds at every seed; a measured-only row gets the union as its interval. A row that
    is the same on every seed with its interval (a baseline that does not depend on training), and a
    check or a measured-only row that is the same on every seed, are kept as they are."""
    per_seed = [list(rows) for rows in rows_per_seed]
    if not per_seed:
        raise ValueError("across_seeds needs the rows of one or more training seeds")
    ids = [row.id for row in per_seed[0]]
    for seed, rows in enumerate(per_seed):
        if [row.id for row in rows] != ids:
            raise ValueError(f"training seed {seed} gave other claims than seed 0: {[r.id for r in rows]} vs {ids}")
    return [_one_claim([rows[i] for rows in per_seed], units, counts) for i in range(len(ids))]


def _one_claim(group: list[Any], units: str, counts: dict[str, tuple[Sequence[Any], float, bool]] | None) -> Any:
    """One claim's row from its row on every seed (seed 0 first): see `across_seeds`."""
    base = group[0]
    if all(row == base for row in group) and (base.interval is not None or base.verdict in ("measured", "check")):
        return base  # the same on every seed, interval and all: it does not depend on training
    values = [row.measured for row in group]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    shown = "; ".join(f"{v:.4g}" if isinstance(v, (int, float)) else str(v) for v in values)
    text = f"{base.claim} [value of seed 0; per training seed: {shown}]"
    if base.verdict == "check":
        return dataclasses.replace(base, claim=text, holds=all(bool(row.holds) for row in group))
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
        return dataclasses.replace(base, claim=text, verdict="measured", criterion="", **spread)
    test = claims.declared_test(base.id)
    if isinstance(test, (Region, Covers)) and interval is not None:
        return dataclasses.replace(base, claim=text, verdict=test.decide(interval), **spread)
    decided = {row.verdict for row in group}
    why = (f"{base.why_no_interval + '; ' if base.why_no_interval else ''}decided at each of {len(group)} "
           f"{units}: their common verdict, inconclusive where they disagree")
    return dataclasses.replace(base, claim=text, verdict=decided.pop() if len(decided) == 1 else "inconclusive",
                               interval=None, interval_kind="", n=None, why_no_interval=why)


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

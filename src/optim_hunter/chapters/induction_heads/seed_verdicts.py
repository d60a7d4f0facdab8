"""The chapter's claims over training seeds: seed 0's rows (its numbers, the ones its figures show),
each decided on every training seed's value of the same claim (`over_seeds`): the 95% prediction
interval for another seed, and the criterion applied to it. The claims are those of `claim_specs`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from optim_hunter.analysis import intervals
from optim_hunter.chapters.induction_heads import claim_specs
from optim_hunter.report import claims


def _seed_outcome(row: claims.Claim, spec: claims.ClaimSpec | None) -> bool | None:
    """Whether one seed's row meets its criterion (judged on its own value: the seed's point, not
    its interval over held-out chains); None where the row decides nothing (measured only)."""
    if row.verdict == "check":
        return bool(row.holds)
    if row.verdict == "measured" or spec is None:
        return None
    if isinstance(spec.test, claims.Region) and isinstance(row.measured, float):
        return bool(spec.test(row.measured))
    return row.verdict == "reproduced"


def _value(value: float | str | None) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def over_seeds(rows_by_seed: Sequence[Sequence[claims.Claim]], units: str = "training seeds") -> list[claims.Claim]:
    """Seed 0's rows (`rows_by_seed[0]`: its numbers, the ones its figures show), each decided on
    every seed's value of the same claim: the interval is `intervals.prediction_interval` of the
    values (the 95% prediction interval for another training seed, holding every seed's value), and
    the verdict is the criterion applied to it: reproduced when another seed would meet it too, not
    reproduced when it would miss it, inconclusive otherwise (seeds that disagree included). Where a value is not a number (a seed without a phase change has no window share) the
    verdict counts the seeds that meet the criterion the same way, without an interval. The row says
    how many seeds agree and lists their values. A claim measured on seed 0 alone keeps its row."""
    first = list(rows_by_seed[0])
    if len(rows_by_seed) == 1:
        return first
    specs, by_seed = claim_specs.specs(), [{r.id: r for r in rows} for rows in rows_by_seed]
    out = []
    for row in first:
        rows = [b.get(row.id) for b in by_seed]
        if any(r is None for r in rows):
            out.append(row)
            continue
        spec = specs.get(row.id)
        values = [r.measured for r in rows]
        numeric = all(isinstance(v, float) and np.isfinite(v) for v in values)
        interval = intervals.prediction_interval(values, units) if numeric else None
        outcomes = [_seed_outcome(r, spec) for r in rows]
        decided = [o for o in outcomes if o is not None]
        n = len(rows)
        listed = ", ".join(f"seed {k}: {_value(v)}" for k, v in enumerate(values))
        changes: dict[str, Any] = {}
        if row.verdict == "measured" or not decided:
            note = f" [{n} {units}: {listed}]"
        else:
            k = sum(decided)
            note = f" [{n} {units}: {k} of {len(decided)} meet the criterion; {listed}]"
            if row.verdict == "check":
                changes["holds"] = all(decided)
            elif interval is not None and isinstance(spec.test, claims.Region) and len(decided) == n:
                changes["verdict"] = spec.test.decide(interval)
            else:
                changes["verdict"] = "reproduced" if k == len(decided) else "not_reproduced" if k == 0 else "inconclusive"
        if interval is not None:
            changes.update(interval=interval.as_list(), interval_kind=interval.kind, n=interval.n, why_no_interval="")
        elif row.verdict not in ("measured", "check"):
            changes.update(interval=None, interval_kind="", n=None, why_no_interval=(
                f"a value of some {units} is not a number ({listed}): the verdict counts the seeds that meet the "
                "criterion"))
        out.append(dataclasses.replace(row, claim=row.claim + note, **changes))
    return out

"""Checking the construction (gd_in_attention chapter): constructed LSA stacks against gradient
descent and GD++ run in weight space, at d = 10 and at other input dimensions.

Our construction is algebra: these rows check it numerically (role "check"), they reproduce
nothing, and are never counted as reproducing a source claim.

  check_construction  ConstructionCheck: constructed stacks vs GD / GD++ in weight space
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from optim_hunter.analysis import lsa
from optim_hunter.analysis.lsa_construction import verify_construction
from optim_hunter.chapters.gd_in_attention.setting import CHAPTER, MODEL, SOURCE, Setup
from optim_hunter.report import claims
from optim_hunter.report.claims import Claim

BAR = 1e-6  # relative error a construction must stay under (float64 reaches ~1e-12)
_EXACT = dict(criterion=f"max relative error <= {BAR:g}", test=claims.at_most(BAR), role="check")


def _exact(id: str, claim: str, source_seed: str = "004", **source: str) -> claims.ClaimSpec:
    """Declare a check of the construction (max relative error <= BAR), from the 004 seed unless
    `source_seed` says otherwise; `source` holds its source_value and source_quote."""
    return claims.declare(id, claim, source_seed=source_seed, **source, **_EXACT)


ONE_LAYER_EXACT = _exact(
    "lsa.construction.max_rel_error",
    "One constructed LSA layer vs one GD step from W=0: max relative error of the query answer "
    "over {n_tasks} random tasks (float64)", source_value="exact (by construction)",
    source_quote="By carefully constructing the weight matrices W_Q, W_K, and W_V, we can make each "
                 "attention layer perform exactly one step of gradient-based optimization.")
STACKED_EXACT = _exact(
    "lsa.construction.stacked_max_rel_error",
    "k = 2..5 constructed layers vs k GD steps: max relative error over the answers and all "
    "tokens' output slots (training residuals included)", source_value="k layers = k steps",
    source_quote="By stacking multiple such layers, each performing one gradient step, transformers can "
                 "implement full gradient-based optimization within their forward pass.")
GDPP_EXACT = _exact(
    "lsa.construction.gdpp_max_rel_error",
    "k = 1..5 constructed GD++ layers vs GD++ in weight space: max relative error of the answer "
    "(von Oswald et al. define GD++ and its construction; the 004 seed does not mention it)",
    source_seed=SOURCE)
ANY_DIMENSION_EXACT = _exact(
    "lsa.construction.any_dimension_max_rel_error",
    "k = 1..5 constructed GD and GD++ layers vs their weight-space definitions at input "
    "dimensions d = {dims} (N = 10): max relative error over the answers and output slots",
    source_value="any d", source_quote="Works for arbitrary input dimensions")


@dataclasses.dataclass(frozen=True, eq=False)
class ConstructionCheck:
    """Per depth, constructed GD and GD++ stacks against the weight-space algorithms
    (`lsa_construction.verify_construction`), at d = 10 (`table`) and at other input dimensions
    (`dimensions`: d, algorithm, max_rel_error over depths, answers and output slots)."""

    table: pd.DataFrame
    dimensions: pd.DataFrame
    n_tasks: int
    profile: str

    def _part(self, algorithm: str) -> pd.DataFrame:
        return self.table[self.table.algorithm == algorithm]

    @property
    def one_layer_error(self) -> float:
        gd = self._part("GD")
        return float(gd.loc[gd.depth == 1, "pred_rel_error"].iloc[0])

    @property
    def stacked_error(self) -> float:
        gd = self._part("GD")
        return float(gd.loc[gd.depth > 1, ["pred_rel_error", "y_slots_rel_error"]].max().max())

    @property
    def plus_error(self) -> float:
        return float(self._part("GD++")["pred_rel_error"].max())

    @property
    def worst(self) -> float:
        """The largest relative error anywhere in `table`."""
        return float(self.table[["pred_rel_error", "y_slots_rel_error"]].max().max())

    @property
    def dimension_error(self) -> float:
        return float(self.dimensions["max_rel_error"].max())

    @property
    def dims(self) -> str:
        return ", ".join(str(d) for d in sorted(set(self.dimensions["d"])))

    def styled(self) -> Any:
        """`table` formatted for display (errors in scientific notation, NaN as a dash)."""
        return self.table.style.format(
            {"pred_rel_error": "{:.2e}", "y_slots_rel_error": "{:.2e}", "x_slots_max_change": "{:.1e}"},
            na_rep="—",
        )

    def claims(self) -> list[Claim]:
        at = dict(chapter=CHAPTER, profile=self.profile, model=MODEL)
        return [
            ONE_LAYER_EXACT.measure(self.one_layer_error, n_tasks=self.n_tasks, **at),
            STACKED_EXACT.measure(self.stacked_error, **at),
            GDPP_EXACT.measure(self.plus_error, **at),
            ANY_DIMENSION_EXACT.measure(self.dimension_error, dims=self.dims, **at),
        ]

    def numbers(self) -> dict[str, Any]:
        return {"one_layer_error": self.one_layer_error, "stacked_error": self.stacked_error,
                "plus_error": self.plus_error, "worst_error": self.worst,
                "float64_eps": float(np.finfo(np.float64).eps),
                "dimension_error": self.dimension_error, "dimensions": self.dims}


def check_construction(
    setup: Setup, n_tasks: int = 2_000, depth: int = 5, dims: tuple[int, ...] = (1, 2, 5, 20, 50)
) -> ConstructionCheck:
    """Constructed stacks of 1..`depth` layers, step sizes (and GD++ rates) drawn at random so
    equal steps cannot hide an error, against gradient descent run in weight space, in float64;
    then the same at the input dimensions `dims` (N unchanged, 200 tasks each)."""
    rng = np.random.default_rng(0)
    etas = list(rng.uniform(0.3, 2.0, size=depth))
    gammas = list(rng.uniform(0.0, 1.0, size=depth))
    tasks = lsa.sample_tasks(setup.task_cfg, n_tasks, generator=10_003)
    table = pd.concat([verify_construction(tasks, etas).assign(algorithm="GD"),
                       verify_construction(tasks, etas, gammas).assign(algorithm="GD++")],
                      ignore_index=True)
    rows = []
    for d in dims:
        other = lsa.sample_tasks(dataclasses.replace(setup.task_cfg, d=d), 200, generator=10_004)
        for algorithm, rates in (("GD", None), ("GD++", gammas)):
            errors = verify_construction(other, etas, rates)[["pred_rel_error", "y_slots_rel_error"]]
            rows.append({"d": d, "algorithm": algorithm, "max_rel_error": float(errors.max().max())})
    return ConstructionCheck(table, pd.DataFrame(rows), n_tasks, setup.profile)

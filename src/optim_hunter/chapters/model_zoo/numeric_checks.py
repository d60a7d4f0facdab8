"""The models chapter's checks of `numeric-icl`: the `zoo.numeric.*` claims on a yardstick result.

`optim_hunter.analysis.yardstick.evaluate_icl` measures the model; the bars below (the project's
own, set in its issue) are decided on the result's bootstrap intervals over problems and prompts
(paired where the model and the baseline answer the same problems). A task-trained model's rows
never decide a source claim (`zoo.is_pretrained`): the 004 study means a pretrained language model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optim_hunter import zoo
from optim_hunter.analysis.yardstick import ICLResult
from optim_hunter.core import settings
from optim_hunter.report import claims


def _strictly_falling(curve: Sequence[float]) -> bool:
    return all(b < a for a, b in zip(curve, curve[1:]))


FALLS = claims.declare(
    "zoo.numeric.mae_falls_with_examples", "held-out linear MAE falls as in-context examples grow ({curve})",
    source_seed="issue", unit="MAE at {k} examples", criterion="MAE strictly decreasing over {examples} examples",
    test=_strictly_falling, examples=([30.0, 20.0, 10.0], [30.0, 20.0, 25.0]),
    why_no_interval="the test is on the order of the curve's points (one MAE per number of examples); "
                    "their intervals over the problems are not combined into one",
)
# The bars below are the project's own, set in its issue (no source study states them): no source
# value, the number is in the criterion.
LINEAR = claims.declare(
    "zoo.numeric.linear_vs_average", "with {k} examples, held-out linear MAE is at most 1/3 of the average baseline's",
    source_seed="issue", unit="MAE ratio", criterion="ratio <= 1/3 (our bar, set in the issue)",
    test=claims.at_most(1 / 3),
)
FRIEDMAN2 = claims.declare(
    "zoo.numeric.friedman2_vs_average",
    "with {k} examples, Friedman #2 MAE ({mae}) beats the average baseline ({average}) on the same problems",
    source_seed="issue", unit="MAE difference (model minus average)",
    criterion="model MAE minus average MAE < 0, paired over the same problems", test=claims.below(0),
)
AFFINE = claims.declare(
    "zoo.numeric.affine_top1",
    "y = 2x + 3 with {n} examples and an unseen query x: the greedy answer is exact",
    source_seed="issue", unit="top-1 accuracy", criterion="accuracy >= 0.8 (our bar, set in the issue)",
    test=claims.at_least(0.8),
)
NO_UNITS = "this result keeps no per-problem values (built by hand): decided on the point"


def _number(value: float, why: str) -> float | str:
    return float(value) if np.isfinite(value) else why


def claims_of(result: ICLResult, *, profile: str | None = None, model: str = "numeric-icl") -> list[claims.Claim]:
    """The `zoo.numeric.*` claim rows of `result` (nothing shown: `claims.record_all` shows them),
    each decided on its interval over the problems (or prompts) where the result keeps them. They
    decide a source claim only for a pretrained `model`."""
    profile = settings.profile(profile)
    k = max(result.examples)
    common = dict(chapter="zoo", profile=profile, model=model, decides_source=zoo.is_pretrained(model))
    curve = [result.linear(n) for n in result.examples]
    f2, f2_average = result.mae["friedman2"][k], result.average_mae["friedman2"][k]
    unanswered = "no answer to test (every answer unparseable)"
    return [
        FALLS.measure(result.linear(k) if np.isfinite(curve).all() else f"{unanswered} at some size", tested=curve,
                      curve=", ".join(f"{n}: {v:.3g}" for n, v in zip(result.examples, curve)),
                      k=k, examples=", ".join(map(str, result.examples)), **common),
        LINEAR.measure(_number(result.linear_ratio, unanswered), k=k, interval=result.linear_ratio_interval(),
                       why_no_interval=NO_UNITS, **common),
        FRIEDMAN2.measure(_number(f2 - f2_average, unanswered), k=k, mae=f"{f2:.4g}", average=f"{f2_average:.4g}",
                          interval=result.friedman2_interval(), why_no_interval=NO_UNITS, **common),
        AFFINE.measure(_number(result.affine_top1, "no prompt"), n=result.affine_examples,
                       interval=result.affine_interval(), why_no_interval=NO_UNITS, **common),
    ]


def bars(result: ICLResult) -> dict[str, bool]:
    """Each declared check of this result (the `zoo.numeric.*` claims below), met or not: met
    when its claim is reproduced (an inconclusive one, its interval straddling the bar, is not)."""
    verdicts = {row.id.rsplit(".", 1)[1]: row.verdict == "reproduced" for row in claims_of(result)}
    return {
        "mae_falls_with_examples": verdicts["mae_falls_with_examples"],
        "linear_ratio_le_one_third": verdicts["linear_vs_average"],
        "friedman2_beats_average": verdicts["friedman2_vs_average"],
        "affine_top1_ge_0.8": verdicts["affine_top1"],
    }

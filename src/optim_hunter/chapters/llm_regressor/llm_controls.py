"""Controls of the language model as an in-context regressor (`Comparison.controls`,
`LLMCurve.controls` in `regression_benchmark`): the **shuffled-y control** (the same inputs and
query, the example outputs permuted among the examples by a fixed seeded permutation per problem,
`llm_regressor.shuffled_split`) and the **mean-of-outputs baseline** ("average", which the shuffled
control cannot change: the permutation keeps the outputs' mean); per problem, the paired
differences of absolute error (model − mean baseline, model − shuffled control) with paired
bootstrap intervals, and the answer–truth correlation (`controls_table`), their claim rows
(`control_rows`), verdicts (`control_verdicts`) and the chapter's sentence (`control_sentence`).

A result counts as in-context learning only where the model beats its shuffled control (the
difference's interval entirely below 0). An unparseable answer stays a counted failure: a problem
where either side of a difference failed is dropped from both sides of it, and the number dropped
is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from optim_hunter.chapters.llm_regressor.benchmark_tables import display_name
from optim_hunter.report import claims, plots
from optim_hunter.report.claim_rows import Recording

BEATS_SHUFFLED = claims.declare(
    "regressor.{dataset}.llm_beats_shuffled_control",
    "{lm} beats its shuffled-y control on {name} ({n_examples} examples): mean per-problem difference of "
    "absolute error, model − the same prompts with the outputs permuted among the examples ({n} problems; "
    "{dropped} dropped for an unparseable answer on either side)",
    source_seed="004", unit="MAE difference",
    criterion="< 0 over the whole interval: the error is lower when the outputs belong to their inputs "
              "(in-context learning shown; an interval across 0 is inconclusive; our control)",
    test=claims.below(0.0), examples=(-1.0, 1.0))
BEATS_MEAN = claims.declare(
    "regressor.{dataset}.llm_beats_mean_baseline",
    "{lm} beats the mean-of-outputs baseline on {name} ({n_examples} examples): mean per-problem difference "
    "of absolute error, model − predicting the mean of the examples' outputs ({n} problems; {dropped} dropped "
    "for an unparseable answer)",
    source_seed="004", unit="MAE difference",
    criterion="< 0 over the whole interval (our control)", test=claims.below(0.0), examples=(-1.0, 1.0))
ANSWER_TRUTH_R = claims.declare(
    "regressor.{dataset}.answer_truth_correlation",
    "{lm} on {name} ({n_examples} examples): Pearson correlation of its answers with the true outputs over the "
    "problems it answered "
    "({n}; the shuffled-y control's: {shuffled})",
    source_seed="004", unit="r")


def correlation(pred: np.ndarray, truth: np.ndarray, axis: int = -1) -> Any:
    """Pearson's r of `pred` and `truth` along `axis` (vectorised for `intervals.bootstrap`, paired);
    0 where either side is constant (a constant answer carries no information about the truth)."""
    dp = pred - pred.mean(axis, keepdims=True)
    dt = truth - truth.mean(axis, keepdims=True)
    spp, stt, spt = (dp**2).sum(axis), (dt**2).sum(axis), (dp * dt).sum(axis)
    ok = (spp > 1e-12 * np.maximum(1, (pred**2).sum(axis))) & (stt > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, spt / np.sqrt(np.where(ok, spp * stt, 1.0)), 0.0)


def paired_problems(results: pd.DataFrame, model: str, control: str | None, dataset: str,
                    n_examples: int | None = None) -> pd.DataFrame:
    """Per problem (seed, query) of `dataset`: the truth, the model's answer and absolute error (NaN
    where it failed), the mean-of-outputs baseline's error and, where the control `control` ran, the
    shuffled-y control's answer and error (NaN where it failed or did not run)."""
    keys = ["seed", "query"]
    part = results[results.dataset == dataset]
    if n_examples is not None:
        part = part[part.n_examples == n_examples]

    def of(method: str, column: str) -> pd.Series:
        return part[part.method == method].set_index(keys)[column]

    mine = part[part.method == model].set_index(keys)
    table = pd.DataFrame({"y_true": mine["y_true"], "model": mine["y_pred"].where(~mine["failed"]),
                          "model_error": mine["abs_error"], "mean_error": of("average", "abs_error")})
    if control is not None and (part.method == control).any():
        table["shuffled"] = of(control, "y_pred").where(~of(control, "failed"))
        table["shuffled_error"] = of(control, "abs_error")
    else:
        table["shuffled"] = table["shuffled_error"] = np.nan
    return table.sort_index()


def paired_difference(mine: Any, theirs: Any, units: str = "problems"
                      ) -> tuple[float, claims.Interval | None, int, int]:
    """Mean of mine − theirs over the units where both are numbers, its paired bootstrap interval,
    the number of pairs, and the number of units dropped (a failure on either side: never a number)."""
    mine, theirs = np.asarray(mine, dtype=float), np.asarray(theirs, dtype=float)
    both = np.isfinite(mine) & np.isfinite(theirs)
    dropped = int((~both).sum())
    if not both.any():
        return float("nan"), None, 0, dropped
    a, b = mine[both], theirs[both]
    interval = claims.bootstrap(a, b, statistic=lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True,
                                units=units)
    return float(np.mean(a - b)), interval, int(both.sum()), dropped


def answer_truth(pred: Any, truth: Any, units: str = "problems answered"
                 ) -> tuple[float, claims.Interval | None, int]:
    """Pearson's r of the answers with the truth over the answered problems, and its bootstrap interval."""
    keep = np.isfinite(np.asarray(pred, dtype=float))
    p, t = np.asarray(pred, dtype=float)[keep], np.asarray(truth, dtype=float)[keep]
    if len(p) < 3:
        return float("nan"), None, int(len(p))
    return float(correlation(p, t)), claims.bootstrap(p, t, statistic=correlation, paired=True, units=units), len(p)


def controls_table(results: pd.DataFrame, model: str, control: str, datasets: Sequence[str],
                   n_examples: dict[str, int] | int | None = None) -> pd.DataFrame:
    """Per dataset (or size): the model's, the shuffled control's and the mean baseline's MAE, the paired
    differences model − mean and model − shuffled (mean, 95% paired bootstrap interval, pairs, dropped)
    and the answer–truth correlations."""
    rows = []
    for dataset in datasets:
        size = n_examples.get(dataset) if isinstance(n_examples, dict) else n_examples
        p = paired_problems(results, model, control, dataset, size)
        ran = bool(((results.dataset == dataset) & (results.method == control)).any())
        row: dict[str, Any] = {"dataset": dataset, "problems": len(p), "model failed": int(p["model"].isna().sum()),
                               "shuffled run": ran}
        row["shuffled failed"] = int(p["shuffled"].isna().sum()) if row["shuffled run"] else np.nan
        for label, column in (("model", "model_error"), ("shuffled", "shuffled_error"), ("mean", "mean_error")):
            row[f"MAE {label}"] = float(p[column].mean()) if p[column].notna().any() else np.nan
        for label, other in (("mean", "mean_error"), ("shuffled", "shuffled_error")):
            if label == "shuffled" and not row["shuffled run"]:
                row.update({f"model − {label}": np.nan, f"model − {label} low": np.nan,
                            f"model − {label} high": np.nan, f"pairs vs {label}": 0, f"dropped vs {label}": np.nan})
                continue
            diff, ci, n, dropped = paired_difference(p["model_error"], p[other])
            row.update({f"model − {label}": diff, f"model − {label} low": ci.low if ci else np.nan,
                        f"model − {label} high": ci.high if ci else np.nan, f"pairs vs {label}": n,
                        f"dropped vs {label}": dropped})
        for label, column in (("model", "model"), ("shuffled", "shuffled")):
            r, ci, _ = answer_truth(p[column], p["y_true"])
            row.update({f"r {label}": r, f"r {label} low": ci.low if ci else np.nan,
                        f"r {label} high": ci.high if ci else np.nan})
        rows.append(row)
    return pd.DataFrame(rows).set_index("dataset")


def controls_figure(table: pd.DataFrame, title: str) -> Any:
    """The paired differences model − mean baseline and model − shuffled control, with their 95%
    paired bootstrap intervals, one bar per (dataset, comparison): below 0, the model is better."""
    rows = []
    for dataset, row in table.iterrows():
        for label in ("mean", "shuffled"):
            if np.isfinite(row[f"model − {label}"]):
                rows.append({"method": f"{display_name(str(dataset))}: model − {label}",
                             "difference": row[f"model − {label}"], "low": row[f"model − {label} low"],
                             "high": row[f"model − {label} high"]})
    return plots.error_bars(pd.DataFrame(rows), value="difference", low="low", high="high", title=title)


def control_rows(recording: Recording, table: pd.DataFrame, lm: str, n_examples: dict[str, int],
                 decides: bool) -> list[claims.Claim]:
    """The claim rows of a controls table: beats the shuffled control (where it ran), beats the mean
    baseline, and the answer–truth correlation, per dataset."""
    rows = []
    for dataset, row in table.iterrows():
        dataset = str(dataset)
        common = dict(lm=lm, dataset=dataset, name=display_name(dataset), n_examples=n_examples[dataset],
                      decides_source=decides)
        for spec, label in ((BEATS_SHUFFLED, "shuffled"), (BEATS_MEAN, "mean")):
            if label == "shuffled" and not row["shuffled run"]:
                continue
            n, dropped = int(row[f"pairs vs {label}"]), int(row[f"dropped vs {label}"])
            if n == 0:
                rows.append(recording.measure(spec, "every answer unparseable", n=0, dropped=dropped, **common))
                continue
            interval = claims.Interval(row[f"model − {label} low"], row[f"model − {label} high"],
                                       f"paired bootstrap 95% over {n} problems", n)
            rows.append(recording.measure(spec, float(row[f"model − {label}"]), interval=interval, n=n,
                                          dropped=dropped, **common))
        shuffled = (f"{row['r shuffled']:.2f} [{row['r shuffled low']:.2f}, {row['r shuffled high']:.2f}]"
                    if np.isfinite(row["r shuffled"]) else "not run")
        n_answered = int(row["problems"] - row["model failed"])
        if np.isfinite(row["r model"]):
            interval = claims.Interval(row["r model low"], row["r model high"],
                                       f"paired bootstrap 95% over {n_answered} problems answered", n_answered)
            rows.append(recording.measure(ANSWER_TRUTH_R, float(row["r model"]), interval=interval, n=n_answered,
                                          shuffled=shuffled, **common))
        else:
            rows.append(recording.measure(ANSWER_TRUTH_R, "fewer than 3 answers", n=n_answered, shuffled=shuffled,
                                          **common))
    return rows


def control_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per row of a controls table: the verdict of "beats the mean baseline" and of "beats its
    shuffled control" (decided as the claim rows are, on the paired intervals: below 0 throughout),
    and whether in-context learning is shown there (it beats its shuffled control)."""
    out = []
    for key, row in table.iterrows():
        verdicts = {}
        for label, spec in (("mean baseline", BEATS_MEAN), ("shuffled control", BEATS_SHUFFLED)):
            short = "mean" if label == "mean baseline" else "shuffled"
            low, high = row[f"model − {short} low"], row[f"model − {short} high"]
            if short == "shuffled" and not row["shuffled run"]:
                verdicts[f"beats the {label}"] = "not run"
            elif not (np.isfinite(low) and np.isfinite(high)):
                verdicts[f"beats the {label}"] = "no pairs"
            else:
                decision = spec.test.decide(claims.Interval(low, high, "paired bootstrap", 1))
                verdicts[f"beats the {label}"] = {"reproduced": "yes", "not_reproduced": "no",
                                                  "inconclusive": "inconclusive"}[decision]
        verdicts["in-context learning shown"] = verdicts["beats the shuffled control"] == "yes"
        out.append({table.index.name or "key": key, **verdicts})
    return pd.DataFrame(out).set_index(table.index.name or "key")


def control_sentence(verdicts: pd.DataFrame, model: str) -> str:
    """One sentence saying where `model` beats its shuffled control (in-context learning shown) and
    where it does not, from `control_verdicts`: the chapter's conclusion, true whatever the outcome."""
    ran = verdicts[verdicts["beats the shuffled control"] != "not run"]
    shown = [display_name(str(d)) for d in ran.index[ran["in-context learning shown"]]]
    names = lambda keys: ", ".join(display_name(str(d)) for d in keys) or "none"  # noqa: E731
    not_shown = {v: names(ran.index[ran["beats the shuffled control"] == v]) for v in ("no", "inconclusive")}
    mean = {v: names(verdicts.index[verdicts["beats the mean baseline"] == v]) for v in ("yes", "no", "inconclusive")}
    head = (f"{model} beats its shuffled-y control — in-context learning shown — on: {', '.join(shown)}."
            if shown else f"{model} beats its shuffled-y control on none of the datasets where it ran: "
                          "no in-context learning is shown here.")
    return (f"{head} Does not beat it (interval entirely at or above 0): {not_shown['no']}; inconclusive "
            f"(interval across 0): {not_shown['inconclusive']}. Against the mean-of-outputs baseline it is better "
            f"on: {mean['yes']}; worse or equal: {mean['no']}; inconclusive: {mean['inconclusive']}.")


def control_name(model: str) -> str:
    """The method name of a model's shuffled-y control in the results tables."""
    return f"{model} · shuffled y"

"""The evaluation harness: fit every method on each seed's in-context examples, predict the queries.

`evaluate` returns a tidy table, one row per (dataset, n_examples, seed, method, query); a method
that raises on some seed is kept as a failed row with its error message (never as a number), and
`summarize` reports how many failed. Work runs in parallel over seeds with joblib, with a progress
bar; results are ordered and deterministic whatever the number of workers.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from tqdm.auto import tqdm

from optim_hunter.analysis import intervals, regressors
from optim_hunter.analysis.regressors import Factory
from optim_hunter.data import datasets

Methods = Sequence[str] | Mapping[str, Factory]


def _factories(methods: Methods) -> dict[str, Factory]:
    if isinstance(methods, Mapping):
        return dict(methods)
    out = {}
    for name in methods:
        regressors.make(name)  # raises a clear error for an unknown name before any work starts
        out[name] = regressors.REGRESSORS[name]
    return out


def result_rows(
    dataset: str,
    n_examples: int,
    seed: int,
    method: str,
    y_query: np.ndarray,
    y_pred: np.ndarray,
    error: str | Sequence[str] = "",
) -> list[dict]:
    """Tidy rows for one method on one problem; a NaN prediction is a failure, never a number.

    `error` is one message for every query, or one per query ("" where the query succeeded).
    """
    errors = [error] * len(y_query) if isinstance(error, str) else list(error)
    rows = []
    for q, (y_true, pred, err) in enumerate(zip(y_query, y_pred, errors)):
        failed = bool(err) or not np.isfinite(pred)
        rows.append(
            {
                "dataset": dataset,
                "n_examples": n_examples,
                "seed": seed,
                "method": method,
                "query": q,
                "y_true": float(y_true),
                "y_pred": float(pred),
                "abs_error": float(abs(pred - y_true)) if not failed else np.nan,
                "sq_error": float((pred - y_true) ** 2) if not failed else np.nan,
                "failed": failed,
                "error": err or ("non-finite prediction" if failed else ""),
            }
        )
    return rows


def _one_task(
    dataset: str,
    n_examples: int,
    seed: int,
    factories: dict[str, Factory],
    noise: float,
    round_to: int | None,
) -> list[dict]:
    split = datasets.make_split(dataset, n_examples, seed, noise=noise, round_to=round_to)
    rows = []
    for name, factory in factories.items():
        error = ""
        try:
            with warnings.catch_warnings():
                # Small in-context sets make lbfgs MLPs and lasso stop early; that is the protocol.
                warnings.simplefilter("ignore", ConvergenceWarning)
                model: BaseEstimator = factory(seed)
                model.fit(split.x_train, split.y_train)
                pred = np.asarray(model.predict(split.x_query), dtype=np.float64).reshape(-1)
            if pred.shape != split.y_query.shape:
                raise ValueError(f"predicted {pred.shape} for {split.y_query.shape} queries")
        except Exception as err:  # a failing method is a result to report, not a crash
            pred = np.full(split.y_query.shape, np.nan)
            error = f"{type(err).__name__}: {err}"
        rows.extend(result_rows(dataset, n_examples, seed, name, split.y_query, pred, error))
    return rows


def problem_grid(
    dataset_names: str | Sequence[str], n_examples: int | Iterable[int], seeds: Iterable[int]
) -> tuple[list[str], list[int], list[int]]:
    """The datasets, sizes and seeds of an evaluation as lists, each non-empty and without
    repeats: a repeated seed would count the same problem twice (narrower intervals, wrong ranks)."""
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    sizes = [n_examples] if isinstance(n_examples, (int, np.integer)) else list(n_examples)
    if isinstance(seeds, (int, np.integer, str)):
        raise TypeError(f"seeds must be a collection of seeds, e.g. range({seeds!r}), not {seeds!r}")
    seed_list = list(seeds)
    if not names or not sizes or not seed_list:
        raise ValueError("need at least one dataset, one n_examples and one seed")
    for label, values in (("datasets", names), ("n_examples", sizes), ("seeds", seed_list)):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise ValueError(f"{label} repeat {repeated}: each problem must be counted once; "
                             f"pass each value once")
    return names, sizes, seed_list


def evaluate(
    methods: Methods,
    dataset_names: str | Sequence[str],
    *,
    n_examples: int | Iterable[int] = 25,
    seeds: Iterable[int] = range(100),
    noise: float = 0.0,
    round_to: int | None = None,
    n_jobs: int = -1,
    progress: bool = True,
) -> pd.DataFrame:
    """Fit-predict every method on every (dataset, n_examples, seed) problem; a tidy table."""
    factories = _factories(methods)
    if not factories:
        raise ValueError("no methods to evaluate")
    names, sizes, seed_list = problem_grid(dataset_names, n_examples, seeds)
    for name in names:
        datasets.spec(name)
    for size in sizes:  # validate sizes up front, before spending any time
        datasets.make_split(names[0], size, 0)
    tasks = [(d, n, s) for d in names for n in sizes for s in seed_list]
    jobs = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_one_task)(d, n, s, factories, noise, round_to) for d, n, s in tasks
    )
    rows: list[dict] = []
    for task_rows in tqdm(jobs, total=len(tasks), disable=not progress, desc="evaluate"):
        rows.extend(task_rows)
    return pd.DataFrame(rows)


def mean_interval(values: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of `values` over its units (`intervals.bootstrap`, the
    package's one bootstrap); NaN bounds when there is no value or a value is not finite (a
    failure is counted apart, never scored as a number)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0 or not np.isfinite(values).all():
        return np.nan, np.nan
    interval = intervals.bootstrap(values, seed=seed)
    return interval.low, interval.high


def add_ranks(results: pd.DataFrame) -> pd.DataFrame:
    """Rank methods by absolute error within each problem (1 = best, ties share the mean rank)."""
    out = results.copy()
    keys = ["dataset", "n_examples", "seed", "query"]
    out["rank"] = out.groupby(keys)["abs_error"].rank(method="average")
    return out


def summarize(results: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Per (dataset, n_examples, method): MAE and MSE with 95% bootstrap intervals over the
    problems (`mean_interval`), mean rank, and the number of failed predictions (excluded from
    the errors, reported here)."""
    needed = ["dataset", "n_examples", "seed", "method", "query", "abs_error", "sq_error", "failed"]
    missing = [c for c in needed if c not in getattr(results, "columns", [])]
    if missing or len(results) == 0:
        what = f"lacks the columns {missing}" if missing else "is empty"
        raise ValueError(f"the results table {what}: pass the table `evaluate` returns")
    ranked = add_ranks(results)
    rows = []
    for (dataset, size, method), part in ranked.groupby(["dataset", "n_examples", "method"], sort=False):
        good = part[~part["failed"]]
        abs_err = good["abs_error"].to_numpy()
        sq_err = good["sq_error"].to_numpy()
        mae_lo, mae_hi = mean_interval(abs_err, seed=seed)
        mse_lo, mse_hi = mean_interval(sq_err, seed=seed)
        rows.append(
            {
                "dataset": dataset,
                "n_examples": size,
                "method": method,
                "n": len(part),
                "n_failed": int(part["failed"].sum()),
                "mae": float(abs_err.mean()) if len(abs_err) else np.nan,
                "mae_low": mae_lo,
                "mae_high": mae_hi,
                "mse": float(sq_err.mean()) if len(sq_err) else np.nan,
                "mse_low": mse_lo,
                "mse_high": mse_hi,
                "mean_rank": float(good["rank"].mean()) if len(good) else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    return table.sort_values(["dataset", "n_examples", "mae"], ignore_index=True)


def regime_problems(results: pd.DataFrame, method: str, *, within: float = 0.10) -> pd.DataFrame:
    """Per problem (dataset, n_examples, seed, query) where some other method answered: `method`'s
    absolute error (`mine`, NaN where it failed), the best other method's (`best_other`), whether
    `method` beats every other method (`wins`: a failure never wins) and whether it is within
    `within` (relative) of the best other (`close`). The units `regimes` averages, and its
    intervals resample."""
    if method not in set(results["method"]):
        raise ValueError(f"method {method!r} is not in the results")
    keys = ["dataset", "n_examples", "seed", "query"]
    mine = results[results["method"] == method].set_index(keys)["abs_error"]
    others = results[results["method"] != method].groupby(keys)["abs_error"].min()
    joined = pd.DataFrame({"mine": mine, "best_other": others}).dropna(subset=["best_other"])
    joined["wins"] = joined["mine"] < joined["best_other"]  # NaN (failed) compares False
    joined["close"] = joined["mine"] <= (1 + within) * joined["best_other"]
    return joined


def mse_reduction(mine: np.ndarray, best_other: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """1 - mean(mine²) / mean(best_other²) along `axis` (vectorised, for `intervals.bootstrap`)."""
    return 1 - np.mean(np.square(mine), axis=axis) / np.mean(np.square(best_other), axis=axis)


def regimes(results: pd.DataFrame, method: str, *, within: float = 0.10) -> pd.DataFrame:
    """Per dataset: how often `method` beats every other method on a problem, how often it is
    within `within` (relative) of the best other method, and on the problems it wins, how much
    lower its squared error is than the best other method's (1 - its MSE / their best MSE).

    Problems where `method` failed count as not winning; other methods' failures are ignored.
    The per-problem outcomes are `regime_problems`."""
    joined = regime_problems(results, method, within=within)
    rows = []
    for dataset, part in joined.groupby(level="dataset", sort=False):
        won = part[part["wins"]]
        reduction = mse_reduction(won["mine"].to_numpy(), won["best_other"].to_numpy()) if len(won) else np.nan
        rows.append(
            {
                "dataset": dataset,
                "problems": len(part),
                "beats_all": float(part["wins"].mean()),
                f"within_{int(within * 100)}pct": float(part["close"].mean()),
                "mse_reduction_when_best": float(reduction),
            }
        )
    return pd.DataFrame(rows)

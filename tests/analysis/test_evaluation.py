"""The harness on a tiny grid: tidy rows, failures kept and counted, intervals, ranks, determinism."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error

from optim_hunter.analysis import evaluation, intervals, regressors
from optim_hunter.data import datasets


@pytest.fixture(scope="module")
def tiny():
    return evaluation.evaluate(
        ["linear_regression", "knn", "average"], ["friedman1", "linear_1_2"],
        n_examples=[3, 10], seeds=range(4), n_jobs=2, progress=False,
    )


def test_tidy_rows(tiny):
    assert len(tiny) == 3 * 2 * 2 * 4
    assert set(tiny.columns) >= {"dataset", "n_examples", "seed", "method", "y_true", "y_pred",
                                 "abs_error", "sq_error", "failed", "error"}


def test_errors_match_an_independent_computation(tiny):
    rows = tiny[(tiny.method == "linear_regression") & (tiny.dataset == "friedman1")
                & (tiny.n_examples == 10)]
    truth, preds = [], []
    for seed in range(4):
        split = datasets.make_split("friedman1", 10, seed)
        model = regressors.make("linear_regression").fit(split.x_train, split.y_train)
        truth.append(split.y_query[0])
        preds.append(model.predict(split.x_query)[0])
    assert rows["abs_error"].mean() == pytest.approx(mean_absolute_error(truth, preds))


def test_failures_are_kept_and_counted(tiny):
    # 5-nearest-neighbours cannot run on 3 examples: a counted failure, not a number.
    knn3 = tiny[(tiny.method == "knn") & (tiny.n_examples == 3)]
    assert knn3["failed"].all() and knn3["y_pred"].isna().all()
    assert knn3["error"].str.contains("n_neighbors").all()
    table = evaluation.summarize(tiny)
    row = table[(table.method == "knn") & (table.n_examples == 3)].iloc[0]
    assert row["n_failed"] == 4 and np.isnan(row["mae"])


def test_summary_intervals_and_ranks(tiny):
    table = evaluation.summarize(tiny)
    ok = table.dropna(subset=["mae"])
    assert (ok["mae_low"] <= ok["mae"]).all() and (ok["mae"] <= ok["mae_high"]).all()
    assert (ok["mse_low"] <= ok["mse"]).all() and (ok["mse"] <= ok["mse_high"]).all()
    assert ok["mean_rank"].between(1, 3).all()


def test_ranks_share_ties():
    df = pd.DataFrame({"dataset": "d", "n_examples": 1, "seed": 0, "query": 0,
                       "method": ["a", "b", "c"], "abs_error": [1.0, 1.0, 3.0]})
    assert evaluation.add_ranks(df)["rank"].tolist() == [1.5, 1.5, 3.0]


def test_deterministic_whatever_the_workers(tiny):
    again = evaluation.evaluate(
        ["linear_regression", "knn", "average"], ["friedman1", "linear_1_2"],
        n_examples=[3, 10], seeds=range(4), n_jobs=1, progress=False,
    )
    pd.testing.assert_frame_equal(tiny, again)
    pd.testing.assert_frame_equal(evaluation.summarize(tiny), evaluation.summarize(again))


def test_custom_methods_mapping():
    results = evaluation.evaluate({"mine": lambda seed: regressors.AverageBaseline()}, "friedman2",
                                  n_examples=5, seeds=range(2), n_jobs=1, progress=False)
    assert set(results.method) == {"mine"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"methods": ["nope"], "dataset_names": "friedman2"}, "unknown regressor"),
        ({"methods": ["ridge"], "dataset_names": "friedman9"}, "unknown dataset"),
        ({"methods": ["ridge"], "dataset_names": "friedman2", "n_examples": 0}, "n_examples"),
        ({"methods": ["ridge"], "dataset_names": "friedman2", "seeds": []}, "at least one"),
        ({"methods": [], "dataset_names": "friedman2"}, "no methods"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluation.evaluate(progress=False, n_jobs=1, **kwargs)


def test_regimes_by_hand():
    rows = []
    for seed, (mine, a, b) in enumerate([(1.0, 2.0, 3.0), (2.0, 1.0, 5.0), (1.05, 1.0, 9.0), (np.nan, 1.0, 1.0)]):
        for method, err in (("llm", mine), ("a", a), ("b", b)):
            rows.append({"dataset": "d", "n_examples": 5, "seed": seed, "query": 0, "method": method,
                         "abs_error": err})
    table = evaluation.regimes(pd.DataFrame(rows), "llm")
    row = table.iloc[0]
    assert row["problems"] == 4
    assert row["beats_all"] == 0.25  # only seed 0; the failed seed 3 is not a win
    assert row["within_10pct"] == 0.5  # seeds 0 and 2
    assert row["mse_reduction_when_best"] == pytest.approx(1 - 1.0 / 4.0)
    # the per-problem outcomes it averages (the units its intervals resample)
    problems = evaluation.regime_problems(pd.DataFrame(rows), "llm")
    assert problems["wins"].tolist() == [True, False, False, False]
    assert problems["close"].tolist() == [True, False, True, False]
    assert problems["best_other"].tolist() == [2.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="not in the results"):
        evaluation.regimes(pd.DataFrame(rows), "gpt")


@pytest.mark.parametrize("kwargs,label", [
    (dict(dataset_names=["friedman2", "friedman2"]), "datasets"),
    (dict(n_examples=[5, 5]), "n_examples"),
    (dict(seeds=[0, 1, 1]), "seeds"),
])
def test_repeated_problems_are_refused_before_work(kwargs, label):
    args = dict(dataset_names="friedman2", n_examples=5, seeds=range(2)) | kwargs
    with pytest.raises(ValueError, match=f"{label} repeat .*counted once"):
        evaluation.evaluate(["average"], args["dataset_names"], n_examples=args["n_examples"],
                            seeds=args["seeds"], progress=False)
    from oracle_model import CharTokenizer, OracleModel

    from optim_hunter.analysis import llm_regressor

    reg = llm_regressor.LLMRegressor(OracleModel(), CharTokenizer())
    with pytest.raises(ValueError, match=f"{label} repeat"):
        llm_regressor.evaluate(reg, "oracle", args["dataset_names"], n_examples=args["n_examples"],
                               seeds=args["seeds"], progress=False)


def test_summary_numbers_by_hand():
    """summarize's MAE, MSE, failures and mean ranks against a table worked out by hand; its
    bootstrap intervals against a plain percentile bootstrap of the same errors."""
    errors = {"a": [1.0, 2.0, 6.0, np.nan], "b": [2.0, 2.0, 1.0, 4.0]}  # a fails on seed 3
    rows = [{"dataset": "d", "n_examples": 5, "seed": s, "query": 0, "method": m, "abs_error": e[s],
             "sq_error": e[s] ** 2, "failed": bool(np.isnan(e[s]))} for m, e in errors.items() for s in range(4)]
    table = evaluation.summarize(pd.DataFrame(rows)).set_index("method")
    assert table.loc["a", "mae"] == pytest.approx(3.0) and table.loc["b", "mae"] == pytest.approx(2.25)
    assert table.loc["a", "mse"] == pytest.approx(41 / 3) and table.loc["b", "mse"] == pytest.approx(25 / 4)
    assert (table.loc["a", "n"], table.loc["a", "n_failed"], table.loc["b", "n_failed"]) == (4, 1, 0)
    # ranks per seed: a 1, 1.5, 2 (seed 3 failed: unranked); b 2, 1.5, 1, 1
    assert table.loc["a", "mean_rank"] == pytest.approx(4.5 / 3)
    assert table.loc["b", "mean_rank"] == pytest.approx(5.5 / 4)
    # bootstrap by hand: every resample of b's four errors equally likely; its 2.5% and 97.5% points
    import itertools

    means = sorted(np.mean(c) for c in itertools.product(errors["b"], repeat=4))
    low, high = np.percentile(means, [2.5, 97.5])
    assert table.loc["b", "mae_low"] == pytest.approx(low, abs=0.15)
    assert table.loc["b", "mae_high"] == pytest.approx(high, abs=0.15)
    assert list(evaluation.summarize(pd.DataFrame(rows)).method) == ["b", "a"]  # sorted by MAE


def test_summary_intervals_are_the_package_bootstrap():
    """One bootstrap in the package: summarize's interval is `intervals.bootstrap` of the errors;
    no value (every answer failed) gives NaN bounds, never a number."""

    errors = np.array([1.0, 2.0, 6.0, 3.0, 0.5])
    interval = intervals.bootstrap(errors)
    assert evaluation.mean_interval(errors) == (interval.low, interval.high)
    assert all(np.isnan(evaluation.mean_interval(np.array([]))))
    assert evaluation.mean_interval(np.array([2.0])) == (2.0, 2.0)

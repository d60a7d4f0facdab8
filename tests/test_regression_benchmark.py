"""The regressor chapters' results: baselines, published comparison, a language model beside them.

The language model is the oracle stub of test_llm_regressor (it answers the mean of the prompt's
outputs), so its errors are known independently: they are the mean-of-outputs baseline's.
"""

import numpy as np
import pandas as pd
import pytest

from optim_hunter import datasets, evaluation, llm_regressor, regression_benchmark
from optim_hunter.claim_rows import Recording
from test_llm_regressor import CharTokenizer, OracleModel

AT = Recording("test_chapter", "smoke", "oracle")


def by_id(result):
    return {row.id: row for row in result.claims()}


def test_baselines_name_the_best_method_and_the_average():
    base = regression_benchmark.baselines("friedman2", n_examples=6, seeds=range(4), recording=AT,
                               methods=["average", "last", "linear_regression"])
    # by hand: the mean-of-outputs prediction on each seed's query
    errors = [abs(s.y_train.mean() - s.y_query[0]) for s in (datasets.make_split("friedman2", 6, i) for i in range(4))]
    rows = by_id(base)
    assert rows["regressor.friedman2.average_baseline_mae"].measured == pytest.approx(np.mean(errors))
    best = rows["regressor.friedman2.best_baseline_mae"]
    assert best.measured == base.table["mae"].min() and f"({base.best['method']})" in best.claim
    assert "Friedman #2 with 6 examples" in best.claim and best.verdict == "measured"
    # measured rows carry the table's interval over the problems
    average = base.table.set_index("method").loc["average"]
    assert rows["regressor.friedman2.average_baseline_mae"].interval == pytest.approx(
        [average["mae_low"], average["mae_high"]])
    assert best.n == 4 and "over 4 problems" in best.interval_kind
    assert base.figure("mse", log_x=True).layout.xaxis.type == "log"


def test_benchmark_counts_failures_per_size():
    curve = regression_benchmark.benchmark(["knn", "average"], "friedman2", n_examples=[3, 6], seeds=range(2), recording=AT)
    assert curve.failures.loc["knn", 3] == 2 and curve.failures.loc["average", 3] == 0  # 5-NN needs 5 examples
    assert curve.claims() == [] and curve.sizes == [3, 6]


def test_published_verdict_is_the_interval_test():
    published = regression_benchmark.published(["average", "lr_poly"], seeds=range(1, 7), recording=AT, n_examples=10)
    rows = by_id(published)
    for method in ("average", "lr_poly"):
        row, table = rows[f"regressor.friedman2.llm4regression.{method}_mae"], published.table.loc[method]
        value = regression_benchmark.LLM4REGRESSION_FRIEDMAN2[method]
        inside = table["mae_low"] <= value <= table["mae_high"]
        assert row.verdict == ("reproduced" if inside else "not_reproduced") and bool(table["inside_ci"]) == inside
        assert row.source_value is None and f"{value:g}" in row.claim and row.measured == pytest.approx(table["mae"])
        # the row carries our interval (the table's), and the verdict is decided on it
        assert row.interval == pytest.approx([table["mae_low"], table["mae_high"]])
        assert row.n == 6 and "over 6 seeds" in row.interval_kind and "interval" in row.criterion
    # the baseline's own mean is inside its interval; lr_poly's 3.84 is far below its 10-example MAE
    assert rows["regressor.friedman2.llm4regression.lr_poly_mae"].verdict == "not_reproduced"


@pytest.fixture(scope="module")
def comparison():
    oracle = llm_regressor.LLMRegressor(OracleModel(), CharTokenizer(), round_to=2, max_new_tokens=10)
    lm = regression_benchmark.LanguageModel("oracle", oracle, {"friedman2": 5, "linear_2_3": 40})
    small = regression_benchmark.LanguageModel("small", oracle, {"friedman2": 3, "linear_2_3": 3})
    return regression_benchmark.compare_llm(lm, ["friedman2", "linear_2_3"], n_seeds={"friedman2": 3, "linear_2_3": 2},
                                 wanted_examples=4, contrasts=[small], recording=AT)


def test_comparison_scores_the_model_like_the_average_baseline(comparison):
    assert comparison.n_examples == {"friedman2": 4, "linear_2_3": 4}  # min(wanted, what fits)
    table = comparison.table.set_index(["dataset", "method"])
    for dataset in ("friedman2", "linear_2_3"):
        # the oracle writes the mean of the rounded outputs, rounded: the average baseline to 0.01
        assert table.loc[(dataset, "oracle"), "mae"] == pytest.approx(table.loc[(dataset, "average"), "mae"], abs=0.01)
    assert comparison.setup.loc["friedman2", "examples (small)"] == 3
    rows = by_id(comparison)
    assert rows["regressor.friedman2.llm_mae"].measured == pytest.approx(table.loc[("friedman2", "oracle"), "mae"])
    assert "place" in rows["regressor.friedman2.llm_mae"].claim and rows["regressor.llm.parse_failures"].measured == 0
    contrast = rows["regressor.linear_2_3.contrast_mae"]
    assert contrast.model == "small" and contrast.measured == pytest.approx(table.loc[("linear_2_3", "small"), "mae"])
    assert contrast.decides_source is False  # a contrast never decides a source claim
    assert contrast.interval == pytest.approx(list(table.loc[("linear_2_3", "small"), ["mae_low", "mae_high"]]))
    # "oracle" is no pretrained model: its rows are shown, never deciding; a pretrained one's decide
    assert not any(row.decides_source for row in rows.values()) and not comparison.decides
    assert len(comparison.figures()) == 2 and set(comparison.standing.index.get_level_values(1)) == {
        "oracle", "small", "average"}


def test_regimes_claims_apply_the_declared_tests(comparison):
    regimes = comparison.regimes()
    rows = by_id(regimes)
    f2 = evaluation.regimes(comparison.results, "oracle").set_index("dataset").loc["friedman2"]
    share = rows["regressor.friedman2.beats_all_share"]
    assert share.measured == f2["beats_all"] == regimes.share("friedman2")
    assert share.interval[0] <= share.measured <= share.interval[1] and share.n == 3
    assert share.verdict == regression_benchmark.BEATS_ALL.test.decide(regimes.interval("friedman2"))
    assert share.source_value is None and "our band" in share.criterion  # the 004 text states no share
    reduction = rows["regressor.friedman2.mse_reduction_when_best"]
    expected = f2["mse_reduction_when_best"]
    assert reduction.measured == ("no problem won" if np.isnan(expected) else pytest.approx(expected))
    assert reduction.source_value is None and rows["regressor.friedman2.within_10pct_share"].interval is not None


def test_regime_shares_are_decided_on_their_interval_over_problems():
    """Hand-made problems: the model wins 5 of 10. The share 0.5 is inside the [0.4, 0.6] band,
    but 10 problems cannot tell it from 0.3 or 0.7: inconclusive. On the 5 won problems its squared
    error is a quarter of the best other's (reduction 0.75, every resample alike): not reproduced."""
    rows = []
    for seed in range(10):
        mine, other = (1.0, 2.0) if seed < 5 else (3.0, 1.0)
        rows += [{"dataset": "friedman2", "n_examples": 5, "seed": seed, "query": 0, "method": m, "abs_error": e,
                  "failed": False} for m, e in (("lm", mine), ("ridge", other))]
    results = pd.DataFrame(rows)
    regimes = regression_benchmark.Regimes(evaluation.regimes(results, "lm"), AT,
                                           evaluation.regime_problems(results, "lm"), decides=True)
    got = by_id(regimes)
    share = got["regressor.friedman2.beats_all_share"]
    assert share.measured == 0.5 and share.interval[0] < 0.4 and share.interval[1] > 0.6
    assert share.verdict == "inconclusive" and share.decides_source
    reduction = got["regressor.friedman2.mse_reduction_when_best"]
    assert reduction.measured == pytest.approx(0.75) and reduction.interval == pytest.approx([0.75, 0.75])
    assert reduction.verdict == "not_reproduced" and reduction.n == 5


def test_llm_curve_reuses_the_comparison_at_its_size(comparison):
    curve = regression_benchmark.llm_curve(comparison, [1, 2, 9], n_seeds=2, methods=["average"])
    assert sorted(curve.table["n_examples"].unique()) == [1, 2, 4]
    top = curve.table[(curve.table.n_examples == 4) & (curve.table.method == "oracle")]["mae"].item()
    r = comparison.results
    reused = r[(r.dataset == "friedman2") & (r.seed < 2) & (r.method == "oracle")]["abs_error"].mean()
    assert top == pytest.approx(reused)
    (row,) = curve.claims()
    assert row.id == "regressor.friedman2.llm_mae_falls_with_examples" and "with 1 vs 4 examples" in row.claim
    assert isinstance(curve.mae, pd.DataFrame) and curve.failures.loc["oracle"].sum() == 0

"""The regressor chapters' results: baselines, published comparison, a language model beside them.

The language model is the oracle stub of test_llm_regressor (it answers the mean of the prompt's
outputs), so its errors are known independently: they are the mean-of-outputs baseline's.
"""

import numpy as np
import pandas as pd
import pytest
from oracle_model import CharTokenizer, OracleModel

from optim_hunter.analysis import evaluation, llm_regressor
from optim_hunter.chapters.llm_regressor import llm_controls, regression_benchmark
from optim_hunter.chapters.regressors_friedman2 import baselines
from optim_hunter.data import datasets
from optim_hunter.report.claim_rows import Recording

AT = Recording("test_chapter", "smoke", "oracle")


def by_id(result):
    return {row.id: row for row in result.claims()}


def test_baselines_name_the_best_method_and_the_average():
    base = baselines.baselines("friedman2", n_examples=6, seeds=range(4), recording=AT,
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
    curve = baselines.benchmark(["knn", "average"], "friedman2", n_examples=[3, 6], seeds=range(2), recording=AT)
    assert curve.failures.loc["knn", 3] == 2 and curve.failures.loc["average", 3] == 0  # 5-NN needs 5 examples
    assert curve.claims() == [] and curve.sizes == [3, 6]


def test_published_verdict_is_the_interval_test():
    published = baselines.published(["average", "lr_poly"], seeds=range(1, 7), recording=AT, n_examples=10)
    rows = by_id(published)
    for method in ("average", "lr_poly"):
        row, table = rows[f"regressor.friedman2.llm4regression.{method}_mae"], published.table.loc[method]
        value = baselines.LLM4REGRESSION_FRIEDMAN2[method]
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


# --- controls: the shuffled-y control, the mean baseline, paired differences, the correlation ------


def test_a_shuffled_control_keeps_the_inputs_and_the_multiset_of_outputs():
    split = datasets.make_split("friedman2", 9, 3, round_to=2)
    control = llm_regressor.shuffled_split(split, "friedman2", 9, 3)
    assert np.array_equal(control.x_train, split.x_train) and np.array_equal(control.x_query, split.x_query)
    assert np.array_equal(control.y_query, split.y_query)
    assert sorted(control.y_train) == sorted(split.y_train) and not np.array_equal(control.y_train, split.y_train)
    # fixed per problem, different across problems
    again = llm_regressor.shuffled_split(split, "friedman2", 9, 3)
    assert np.array_equal(again.y_train, control.y_train)
    orders = {tuple(llm_regressor.shuffle_permutation(9, "friedman2", 9, s)) for s in range(5)}
    assert len(orders) == 5
    # never the identity, even where the draw would be (two examples: half the draws are)
    for s in range(20):
        assert list(llm_regressor.shuffle_permutation(2, "friedman2", 2, s)) == [1, 0]


def test_a_paired_difference_of_a_constant_has_zero_width_and_failures_are_dropped_and_counted():
    mine = np.array([3.0, 5.0, np.nan, 8.0, 1.0])
    theirs = mine - 2.0
    theirs[4] = np.nan
    diff, ci, n, dropped = llm_controls.paired_difference(mine, theirs)
    assert diff == 2.0 and (ci.low, ci.high) == (2.0, 2.0) and (n, dropped) == (3, 2)
    assert "paired" in ci.kind and ci.n == 3
    diff, ci, n, dropped = llm_controls.paired_difference([np.nan], [1.0])
    assert np.isnan(diff) and ci is None and (n, dropped) == (0, 1)


def test_the_correlation_is_pearsons_and_zero_for_a_constant_answer():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert llm_controls.correlation(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert llm_controls.correlation(np.full(30, 7.0), y) == 0.0
    r, ci, n = llm_controls.answer_truth(np.append(x, np.nan), np.append(2 * x + 1, 5.0))
    assert r == pytest.approx(1.0) and n == 30 and ci.low == pytest.approx(1.0)


def test_a_model_copying_the_mean_is_its_own_shuffled_control_and_the_mean_baseline(comparison):
    """The oracle answers the mean of the outputs, which a permutation keeps: its answers under the
    shuffled control are its answers (difference exactly 0), and they are the mean baseline's (to
    the 0.01 the prompts round to). A difference of exactly 0 is not below 0: not reproduced."""
    controls = comparison.controls
    for dataset in ("friedman2", "linear_2_3"):
        row = controls.loc[dataset]
        assert row["model − shuffled"] == 0.0 and (row["model − shuffled low"], row["model − shuffled high"]) == (0, 0)
        assert abs(row["model − mean"]) <= 0.01 and row["pairs vs mean"] == comparison.n_seeds[dataset]
        assert row["MAE shuffled"] == pytest.approx(row["MAE model"])
    rows = by_id(comparison)
    beats = rows["regressor.friedman2.llm_beats_shuffled_control"]
    assert beats.measured == 0.0 and beats.verdict == "not_reproduced" and beats.n == 3
    assert "0 dropped" in beats.claim
    mean = rows["regressor.linear_2_3.llm_beats_mean_baseline"]
    assert mean.verdict in ("not_reproduced", "inconclusive") and mean.n == 2
    r = rows["regressor.friedman2.answer_truth_correlation"]
    p = llm_controls.paired_problems(comparison.results, "oracle", None, "friedman2")
    assert r.measured == pytest.approx(np.corrcoef(p["model"], p["y_true"])[0, 1])
    assert comparison.controls_figure() is not None


def test_paired_differences_drop_a_failed_problem_from_both_sides():
    rows = []
    for seed, (lm, shuffled, mean) in enumerate([(1.0, 3.0, 2.0), (np.nan, 1.0, 2.0), (2.0, np.nan, 4.0)]):
        for method, err in (("lm", lm), (llm_controls.control_name("lm"), shuffled), ("average", mean)):
            rows.append({"dataset": "friedman2", "n_examples": 5, "seed": seed, "query": 0, "method": method,
                         "y_true": 10.0, "y_pred": 10.0 + err, "abs_error": err, "failed": bool(np.isnan(err))})
    table = llm_controls.controls_table(pd.DataFrame(rows), "lm", llm_controls.control_name("lm"),
                                        ["friedman2"], 5).loc["friedman2"]
    assert table["model − shuffled"] == -2.0 and table["pairs vs shuffled"] == 1 and table["dropped vs shuffled"] == 2
    assert table["model − mean"] == pytest.approx(-1.5) and table["pairs vs mean"] == 2
    assert table["model failed"] == 1 and table["shuffled failed"] == 1


def test_the_curve_runs_the_shuffled_control_at_every_size_with_something_to_permute(comparison):
    curve = regression_benchmark.llm_curve(comparison, [1, 2], n_seeds=2, methods=["average"])
    control = llm_controls.control_name("oracle")
    assert sorted(curve.table[curve.table.method == control]["n_examples"]) == [2, 4]
    controls = curve.controls
    assert np.isnan(controls.loc[1, "model − shuffled"]) and controls.loc[2, "model − shuffled"] == 0.0
    assert curve.controls_figure() is not None


def test_control_verdicts_are_decided_on_the_paired_intervals():
    base = {"shuffled run": True, "model − mean": 0.0, "model − shuffled": 0.0}
    table = pd.DataFrame([
        {**base, "dataset": "friedman2", "model − mean low": 5.0, "model − mean high": 9.0,
         "model − shuffled low": -3.0, "model − shuffled high": -1.0},
        {**base, "dataset": "linear_2_3", "model − mean low": -2.0, "model − mean high": 1.0,
         "model − shuffled low": -1.0, "model − shuffled high": 2.0},
        {**base, "dataset": "friedman1", "shuffled run": False, "model − mean low": -4.0, "model − mean high": -1.0,
         "model − shuffled low": np.nan, "model − shuffled high": np.nan}]).set_index("dataset")
    v = llm_controls.control_verdicts(table)
    assert list(v["beats the mean baseline"]) == ["no", "inconclusive", "yes"]
    assert list(v["beats the shuffled control"]) == ["yes", "inconclusive", "not run"]
    assert list(v["in-context learning shown"]) == [True, False, False]
    sentence = llm_controls.control_sentence(v, "lm")
    assert "shown — on: Friedman #2." in sentence and "inconclusive (interval across 0): linear_2_3" in sentence
    none = llm_controls.control_sentence(v.iloc[1:], "lm")
    assert "on none of the datasets" in none

"""Tests of the gd_in_attention chapter's modules (optim_hunter.chapters.gd_in_attention): each
section of the chapter on a tiny setting (a few training steps, a few hundred tasks), its claim rows
against hand computations from the same numbers, and the glue the prose pastes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from optim_hunter.analysis import intervals, lsa, lsa_comparison, lsa_construction
from optim_hunter.chapters.gd_in_attention import (
    construction_check,
    deeper_stacks,
    gd_baseline,
    one_layer,
    overview,
    setting,
    softmax_attention,
    task_stats,
)
from optim_hunter.report import claims


@pytest.fixture(scope="module")
def tiny() -> setting.Setup:
    tune = lsa.sample_tasks(setting.TASKS, 300, generator=2)
    return setting.Setup(profile="smoke", task_cfg=setting.TASKS, steps_one=6, steps_deep=4,
                         tune_starts=(1.5,), tune_iters=5, eval_tasks=lsa.sample_tasks(setting.TASKS, 200, 1),
                         tune_tasks=tune, tune_multi=lsa.Tasks(*(t[:100] for t in tune)), batch_size=64)


@pytest.fixture(scope="module")
def sections(tiny):
    baseline = gd_baseline.gd_baseline(tiny)
    one = one_layer.train_one_layer(tiny, baseline, n_scatter=20)
    deep = deeper_stacks.deeper(tiny)
    return baseline, one, deep, softmax_attention.softmax_caveat(tiny, baseline, one)


@pytest.fixture(scope="module")
def seeded(tiny, sections):
    baseline = sections[0]
    one = one_layer.train_one_layer_seeds(tiny, baseline, seeds=2)
    deep = deeper_stacks.deeper_seeds(tiny, seeds=2)
    return baseline, one, deep, softmax_attention.softmax_seeds(tiny, baseline, one)


def by_id(rows) -> dict[str, claims.Claim]:
    return {row.id: row for row in rows}


def test_setup_budgets_follow_the_profile():
    smoke = setting.setup("smoke")
    assert (smoke.steps_one, smoke.steps_deep, smoke.eval_tasks.x.shape[0]) == (200, 150, 2_000)
    assert smoke.tune_multi.x.shape[0] == 1_000
    assert torch.equal(smoke.tune_multi.x, smoke.tune_tasks.x[:1_000])
    assert "2000 evaluation tasks" in smoke.describe()
    assert smoke.numbers()["lsa_batch"] == lsa.BATCH_SIZE


def test_example_tokens_are_the_task_tokens():
    table = setting.example_tokens(setting.TASKS, seed=0)
    tasks = lsa.sample_tasks(setting.TASKS, 1, generator=0)
    assert table.shape == (11, 11) and list(table.index)[-1] == "query"
    assert np.allclose(table.to_numpy()[:-1, :-1], tasks.x[0].numpy(), atol=0.005)
    assert np.allclose(table["y"].to_numpy()[:-1], tasks.y[0].numpy(), atol=0.005)
    assert table.iloc[-1, -1] == 0


def test_check_construction_rows(tiny):
    check = construction_check.check_construction(tiny, n_tasks=100, depth=3, dims=(1, 30))
    assert set(check.table.algorithm) == {"GD", "GD++"} and len(check.table) == 6
    assert sorted(set(check.dimensions.d)) == [1, 30] and check.dims == "1, 30"
    rows = by_id(check.claims())
    assert set(rows) == {"lsa.construction.max_rel_error", "lsa.construction.stacked_max_rel_error",
                         "lsa.construction.gdpp_max_rel_error",
                         "lsa.construction.any_dimension_max_rel_error"}
    # our construction is algebra: checks that hold, never reproductions of a source claim
    assert all(row.verdict == "check" and row.holds for row in rows.values())
    assert not any(row.decides_source for row in rows.values())
    assert "100 random tasks" in rows["lsa.construction.max_rel_error"].claim
    assert check.worst >= max(check.one_layer_error, check.stacked_error)
    assert check.numbers()["dimensions"] == "1, 30"


def test_baseline_is_the_exact_best_step(tiny, sections):
    baseline = sections[0]
    unit = lsa_construction.gd_predict(tiny.tune_tasks, [1.0]).numpy()
    y = tiny.tune_tasks.y_query.numpy()
    fine = np.linspace(0.5, 3.0, 25_001)
    brute = fine[np.argmin([np.mean((eta * unit - y) ** 2) for eta in fine])]
    assert baseline.eta_best == pytest.approx(brute, abs=1e-4)
    y_eval = tiny.eval_tasks.y_query.numpy()
    assert baseline.zero_loss == pytest.approx(0.5 * np.mean(y_eval**2))
    assert baseline.grid_min in set(baseline.scan.eta)
    assert baseline.gd1_loss == pytest.approx(
        float(lsa.loss(lsa_construction.gd_predict(tiny.eval_tasks, [baseline.eta_best]), tiny.eval_tasks.y_query)))
    rows = by_id(baseline.claims())
    assert rows["lsa.gd1_loss"].measured == baseline.gd1_loss
    assert all(row.verdict == "measured" for row in rows.values())
    low, high = rows["lsa.gd1_loss"].interval
    assert low <= baseline.gd1_loss <= high and rows["lsa.gd1_loss"].n == 200
    assert "trained model" not in rows["lsa.gd1_loss"].interval_kind  # no training here
    assert rows["lsa.gd1_lr"].interval is None


def test_compare_per_task_averages_to_lsa_compare_table(tiny, sections):
    one = sections[1]
    models = {"trained": lsa.model_predictor(one.trained.model)}
    references = {"gd1": sections[0].predictor(), "gd2": lsa_construction.gd_predictor([1.0, 0.5])}
    table, values = task_stats.compare_per_task(models, references, tiny.eval_tasks)
    expected = lsa_comparison.compare_table(models, references, tiny.eval_tasks)
    assert list(table.columns) == list(expected.columns)
    numeric = ["model_loss", "reference_loss", "pred_diff", "sens_cosine", "sens_l2"]
    assert np.allclose(table[numeric].to_numpy(), expected[numeric].to_numpy(), rtol=1e-12, atol=1e-15)
    assert set(values) == {("trained", "gd1"), ("trained", "gd2")}
    assert values[("trained", "gd1")].shape == (200, 5)


def test_bootstrap_statistics_match_their_definitions():
    a, b, c = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]), np.array([0.5, 0.5, 2.0])
    assert task_stats.ratio_of_means(a, b) == pytest.approx(1.0)
    assert task_stats.smallest_mean(a, -b, c) == pytest.approx(-2.0)
    assert task_stats.largest_step_ratio(b, a, c) == pytest.approx(max(2.0 / 2.0, 1.0 / 2.0))
    resampled = np.stack([a, c])  # the vectorised form scipy's bootstrap calls: one row per resample
    assert np.allclose(task_stats.largest_step_ratio(resampled, resampled / 2, axis=-1), [0.5, 0.5])


def test_one_layer_rows_and_verdicts(sections):
    baseline, one = sections[0], sections[1]
    rows = by_id(one.claims())
    assert len(rows) == 6 and all(row.chapter == "gd_in_attention" for row in rows.values())
    ratio = one.trained_loss / baseline.gd1_loss
    loss = rows["lsa.trained_loss"]
    assert loss.measured == pytest.approx(ratio) and one.loss_gap == pytest.approx(ratio - 1)
    low, high = loss.interval
    assert low <= loss.measured <= high and loss.n == 200
    assert "paired bootstrap" in loss.interval_kind and "one trained model" in loss.interval_kind
    assert loss.verdict == claims.between(0.98, 1.02).decide(task_stats.ratio_interval(
        one.per_task.model_loss.to_numpy(), one.per_task.reference_loss.to_numpy()))
    assert loss.source_value is None and "von Oswald et al. report" in loss.claim
    cosine = rows["lsa.trained_vs_gd.cosine"]
    assert cosine.measured == pytest.approx(one.per_task.sens_cosine.mean())
    assert cosine.verdict == claims.at_least(0.99).decide(task_stats.mean_interval(one.per_task.sens_cosine.to_numpy()))
    for id_ in ("lsa.trained_vs_construction.weight_cosine", "lsa.interpolation.max_loss_ratio"):
        assert rows[id_].verdict == "measured" and rows[id_].interval is None and rows[id_].why_no_interval
    assert rows["lsa.interpolation.max_loss_ratio"].measured == pytest.approx(
        one.path.loss.max() / baseline.gd1_loss)
    assert list(one.trained.history.step) == [0, 1, 2, 3, 4, 5, 6]
    assert one.sens_trained.shape == one.sens_gd.shape == (20 * 10,)
    for figure in (one.curve_figure(), one.sensitivity_figure(), one.weights_figure(), one.path_figure()):
        assert len(figure.data) >= 2
    numbers = one.numbers()
    assert numbers["trained_loss_verdict"] == loss.verdict.replace("_", " ")
    assert (numbers["loss_ratio_low"], numbers["loss_ratio_high"]) == (low, high)


def test_a_loss_ratio_straddling_the_bar_is_inconclusive(sections):
    """Per-task losses whose ratio of means sits on the 2% bar, with task-to-task noise: the
    interval straddles 1.02, so the verdict is inconclusive, neither reproduced nor not."""
    one = sections[1]
    noise = np.random.default_rng(0).normal(0.0, 0.1, 200)
    fake = pd.DataFrame({"model_loss": 1.02 + noise - noise.mean(), "reference_loss": np.ones(200),
                         "pred_diff": np.ones(200), "sens_cosine": np.ones(200), "sens_l2": np.ones(200)})
    row = by_id(dataclasses.replace(one, per_task=fake).claims())["lsa.trained_loss"]
    assert row.measured == pytest.approx(1.02)
    assert row.interval[0] < 1.02 < row.interval[1] and row.verdict == "inconclusive"
    # the same noise around a ratio well inside the bar is reproduced; far outside, not reproduced
    for centre, verdict in ((1.0, "reproduced"), (1.2, "not_reproduced")):
        moved = fake.assign(model_loss=fake.model_loss - 1.02 + centre)
        assert by_id(dataclasses.replace(one, per_task=moved).claims())["lsa.trained_loss"].verdict == verdict


def test_deeper_rows_match_the_table(tiny, sections):
    deep = sections[2]
    rows = by_id(deep.claims())
    assert len(rows) == 14
    for k in (2, 3):
        gd, pp = deep.pair(k)
        margins = (1 - gd.model_loss / gd.reference_loss, pp.sens_cosine - gd.sens_cosine,
                   1 - pp.sens_l2 / gd.sens_l2)
        row = rows[f"lsa.depth{k}.beyond_gd"]
        assert row.measured == pytest.approx(min(margins), abs=1e-12)
        assert row.interval[0] <= row.measured <= row.interval[1] and "paired bootstrap" in row.interval_kind
        assert row.verdict == claims.above(0).decide(
            claims.bootstrap(*deep.margins(k), statistic=task_stats.smallest_mean, paired=True))
        assert row.source_value is None
        assert rows[f"lsa.depth{k}.gdpp_loss"].measured == pytest.approx(pp.reference_loss)
        assert "trained model" not in rows[f"lsa.depth{k}.gd_loss"].interval_kind
        assert "one trained model" in rows[f"lsa.depth{k}.trained_loss"].interval_kind
        readout = lsa_comparison.readout_losses(deep.trained[k].model, tiny.eval_tasks)
        assert np.allclose(deep.readout_tasks[k].mean(axis=1), readout, rtol=1e-10)
        ratio = max(b / a for a, b in zip(readout, readout[1:]))
        falls = rows[f"lsa.depth{k}.readout_falls"]
        assert falls.measured == pytest.approx(ratio)
        assert falls.interval[0] <= ratio <= falls.interval[1]
        expected = "reproduced" if falls.interval[1] < 1 else ("not_reproduced" if falls.interval[0] >= 1
                                                              else "inconclusive")
        assert falls.verdict == expected
    assert len(deep.tuning_table()) == 4 and len(deep.readouts) == 3 + 4
    assert deep.numbers()["d3_gd_loss"] == pytest.approx(deep.reference_loss("GD, 3 steps"))


def test_softmax_rows(sections):
    baseline, softmax = sections[0], sections[3]
    rows = by_id(softmax.claims())
    ratio2 = softmax.loss2 / baseline.gd1_loss
    gap = rows["lsa.softmax2.closes_gap"]
    assert gap.measured == pytest.approx(ratio2)
    assert gap.verdict == claims.at_most(1.02).decide(softmax.intervals["ratio2"])
    assert gap.source_quote and "one trained model" in gap.interval_kind
    one = rows["lsa.softmax1.loss_ratio_to_gd1"]
    assert one.measured == pytest.approx(softmax.loss1 / baseline.gd1_loss)
    assert one.verdict == claims.above(1.02).decide(softmax.intervals["ratio1"]) and one.source_value is None
    assert rows["lsa.softmax2.cosine_gd"].measured == softmax.cosine2
    assert set(softmax.table.model) == {"softmax, 1 layer", "softmax, 2 layers", "LSA, 1 layer (trained)"}


def test_overview_figures(sections):
    table = overview.depth_table(*sections)
    assert len(table) == 11 and set(table.method) >= {"GD", "GD++", "LSA trained", "softmax trained"}
    assert len(overview.training_figure(*sections).data) == 5 + 3  # five runs, three levels
    assert len(overview.depth_figure(*sections).data) == table.method.nunique()


def test_every_source_value_is_quoted_from_the_seeds():
    from pathlib import Path

    seeds = Path(__file__).resolve().parents[3] / "shared" / "seeds"
    if not seeds.is_dir():
        pytest.skip("no seeds beside this checkout")
    text = claims.seed_text(seeds)
    specs = [spec for spec in claims.declared().values() if spec.id.startswith("lsa.")]
    for spec in specs:
        if spec.source_value is not None:
            assert spec.source_seed == "004" and claims.quote_found(spec.source_quote, text), spec.id
        assert spec.test is None or spec.test_examples() is not None, spec.id
    assert {spec.id for spec in specs if spec.role == "check"} == {
        "lsa.construction.max_rel_error", "lsa.construction.stacked_max_rel_error",
        "lsa.construction.gdpp_max_rel_error", "lsa.construction.any_dimension_max_rel_error"}


def test_a_verdict_in_words_is_decided_by_the_declared_test_of_its_numbers():
    spec = claims.ClaimSpec("t.gap{k}", "gap {k}", "004", None, "", criterion="a < b",
                            test=lambda e: e["a"] < e["b"], why_no_interval="two numbers of one run",
                            examples=({"a": 1, "b": 2}, {"a": 3, "b": 2}))
    row = spec.measure("a 1 vs b 2", chapter="c", profile="smoke", tested={"a": 1, "b": 2}, k=2)
    assert (row.id, row.claim, row.verdict, row.criterion) == ("t.gap2", "gap 2", "reproduced", "a < b")
    assert spec.measure("a 3 vs b 2", chapter="c", profile="smoke", tested={"a": 3, "b": 2}, k=2).verdict == "not_reproduced"




def test_every_number_the_chapter_pastes_is_glued(tiny, seeded):
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "book" / "gd_in_attention.md").read_text(encoding="utf-8")
    pasted = set(re.findall(r"\{glue:text\}`([a-z0-9_]+)", page))
    check = construction_check.check_construction(tiny, n_tasks=20, depth=2, dims=(1,))
    glued = set(tiny.numbers()) | set(setting.seeds_numbers().numbers())
    for result in (check, *seeded):
        glued |= set(result.numbers())
    assert pasted and pasted <= glued, sorted(pasted - glued)


def test_a_training_seed_changes_the_initial_weights_and_tasks(tiny):
    a, b = tiny.train("x", n_layers=1, seed=0), tiny.train("x", n_layers=1, seed=1)
    again = tiny.train("x", n_layers=1, seed=0)
    assert not torch.equal(a.model.layers[0].w_q.data, b.model.layers[0].w_q.data)
    assert torch.equal(a.model.layers[0].w_q.data, again.model.layers[0].w_q.data)


def test_trained_claims_are_decided_over_the_seeds(sections, seeded):
    _, one, deep, softmax = seeded
    assert one.n_seeds == deep.n_seeds == softmax.n_seeds == 2 and setting.SEEDS == 3
    assert one.results[0].trained.model.layers[0].w_q.data.equal(sections[1].trained.model.layers[0].w_q.data)
    for result in (one, deep, softmax):
        per_seed = [by_id(r.claims()) for r in result.results]
        for row in result.claims():
            parts = [seed[row.id] for seed in per_seed]
            if all(p == parts[0] for p in parts):  # does not depend on training (a tuned GD baseline)
                assert row == parts[0]
                continue
            assert row.measured == parts[0].measured and "per training seed" in row.claim
            if row.interval is not None:
                assert row.interval_kind.startswith("range over 2 training seeds of the per-seed")
                each = [intervals.Interval(*p.interval, p.interval_kind, p.n or 1) if p.interval else p.measured
                        for p in parts]
                assert row.interval == pytest.approx(intervals.over_seeds(each).as_list())
                assert row.interval[0] <= min(p.interval[0] if p.interval else p.measured for p in parts)
                spec = claims.declared()[row.id] if row.id in claims.declared() else None
                if spec is not None and isinstance(spec.test, claims.Region):
                    assert row.verdict == spec.test.decide(claims.Interval(*row.interval, "x", 2))
    rows = by_id(one.claims())
    numbers = one.numbers()
    assert numbers["trained_loss_verdict"] == claims.verdict_words(rows["lsa.trained_loss"].to_json())
    assert [numbers["loss_ratio_low"], numbers["loss_ratio_high"]] == rows["lsa.trained_loss"].interval
    assert len(numbers["loss_gap_seeds"].split(", ")) == 2
    assert rows["lsa.trained_vs_construction.weight_cosine"].interval_kind == \
        ("range over 2 training seeds of the per-seed values, widened to the 95% prediction interval "
         "for another seed")
    deep_numbers = deep.numbers()
    assert deep_numbers["d2_beyond_verdict"] == claims.verdict_words(by_id(deep.claims())["lsa.depth2.beyond_gd"].to_json())
    assert deep.results[0].tuned is deep.results[1].tuned  # GD and GD++ tuned once
    for k in deep.trained:
        assert by_id(deep.claims())[f"lsa.depth{k}.gd_loss"] == by_id(deep.results[0].claims())[f"lsa.depth{k}.gd_loss"]
    assert softmax.numbers()["sm2_verdict"] == claims.verdict_words(by_id(softmax.claims())["lsa.softmax2.closes_gap"].to_json())

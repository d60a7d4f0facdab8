"""Tests of optim_hunter.interp.lsa_experiments: each section of the gd_in_attention chapter on a
tiny setting (a few training steps, a few hundred tasks), its claim rows against hand computations
from the same numbers, and the glue the prose pastes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from optim_hunter import claims
from optim_hunter.interp import lsa
from optim_hunter.interp import lsa_experiments as study


@pytest.fixture(scope="module")
def tiny() -> study.Setup:
    tune = lsa.sample_tasks(study.TASKS, 300, generator=2)
    return study.Setup(profile="smoke", task_cfg=study.TASKS, steps_one=6, steps_deep=4,
                       tune_starts=(1.5,), tune_iters=5, eval_tasks=lsa.sample_tasks(study.TASKS, 200, 1),
                       tune_tasks=tune, tune_multi=lsa.Tasks(*(t[:100] for t in tune)), batch_size=64)


@pytest.fixture(scope="module")
def sections(tiny):
    baseline = study.gd_baseline(tiny)
    one = study.train_one_layer(tiny, baseline, n_scatter=20)
    deep = study.deeper(tiny)
    return baseline, one, deep, study.softmax_caveat(tiny, baseline, one)


def by_id(rows) -> dict[str, claims.Claim]:
    return {row.id: row for row in rows}


def test_setup_budgets_follow_the_profile():
    smoke = study.setup("smoke")
    assert (smoke.steps_one, smoke.steps_deep, smoke.eval_tasks.x.shape[0]) == (200, 150, 2_000)
    assert smoke.tune_multi.x.shape[0] == 1_000
    assert torch.equal(smoke.tune_multi.x, smoke.tune_tasks.x[:1_000])
    assert "2000 evaluation tasks" in smoke.describe()
    assert smoke.numbers()["lsa_batch"] == lsa.BATCH_SIZE


def test_example_tokens_are_the_task_tokens():
    table = study.example_tokens(study.TASKS, seed=0)
    tasks = lsa.sample_tasks(study.TASKS, 1, generator=0)
    assert table.shape == (11, 11) and list(table.index)[-1] == "query"
    assert np.allclose(table.to_numpy()[:-1, :-1], tasks.x[0].numpy(), atol=0.005)
    assert np.allclose(table["y"].to_numpy()[:-1], tasks.y[0].numpy(), atol=0.005)
    assert table.iloc[-1, -1] == 0


def test_check_construction_rows(tiny):
    check = study.check_construction(tiny, n_tasks=100, depth=3, dims=(1, 30))
    assert set(check.table.algorithm) == {"GD", "GD++"} and len(check.table) == 6
    assert sorted(set(check.dimensions.d)) == [1, 30] and check.dims == "1, 30"
    rows = by_id(check.claims())
    assert set(rows) == {"lsa.construction.max_rel_error", "lsa.construction.stacked_max_rel_error",
                         "lsa.construction.gdpp_max_rel_error",
                         "lsa.construction.any_dimension_max_rel_error"}
    assert all(row.verdict == "reproduced" for row in rows.values())
    assert "100 random tasks" in rows["lsa.construction.max_rel_error"].claim
    assert check.worst >= max(check.one_layer_error, check.stacked_error)
    assert check.numbers()["dimensions"] == "1, 30"


def test_baseline_is_the_exact_best_step(tiny, sections):
    baseline = sections[0]
    unit = lsa.gd_predict(tiny.tune_tasks, [1.0]).numpy()
    y = tiny.tune_tasks.y_query.numpy()
    fine = np.linspace(0.5, 3.0, 25_001)
    brute = fine[np.argmin([np.mean((eta * unit - y) ** 2) for eta in fine])]
    assert baseline.eta_best == pytest.approx(brute, abs=1e-4)
    y_eval = tiny.eval_tasks.y_query.numpy()
    assert baseline.zero_loss == pytest.approx(0.5 * np.mean(y_eval**2))
    assert baseline.grid_min in set(baseline.scan.eta)
    rows = by_id(baseline.claims())
    assert rows["lsa.gd1_loss"].measured == baseline.gd1_loss
    assert all(row.verdict == "measured" for row in rows.values())


def test_one_layer_rows_and_verdicts(sections):
    baseline, one = sections[0], sections[1]
    rows = by_id(one.claims())
    assert len(rows) == 6 and all(row.chapter == "gd_in_attention" for row in rows.values())
    gap = one.trained_loss / baseline.gd1_loss - 1
    expected = "reproduced" if abs(gap) <= 0.02 else "not_reproduced"
    assert rows["lsa.trained_loss"].verdict == expected
    assert rows["lsa.trained_loss"].measured == one.trained_loss
    cosine = rows["lsa.trained_vs_gd.cosine"]
    assert cosine.verdict == ("reproduced" if cosine.measured >= 0.99 else "not_reproduced")
    assert rows["lsa.interpolation.max_loss_ratio"].measured == pytest.approx(
        one.path.loss.max() / baseline.gd1_loss)
    assert list(one.trained.history.step) == [0, 1, 2, 3, 4, 5, 6]
    assert one.sens_trained.shape == one.sens_gd.shape == (20 * 10,)
    for figure in (one.curve_figure(), one.sensitivity_figure(), one.weights_figure(), one.path_figure()):
        assert len(figure.data) >= 2
    assert one.numbers()["trained_loss_verdict"] == expected.replace("_", " ")


def test_deeper_rows_match_the_table(tiny, sections):
    deep = sections[2]
    rows = by_id(deep.claims())
    assert len(rows) == 14
    for k in (2, 3):
        gd, pp = deep.pair(k)
        beats = gd.model_loss < gd.reference_loss
        closer = pp.sens_cosine > gd.sens_cosine and pp.sens_l2 < gd.sens_l2
        row = rows[f"lsa.depth{k}.beyond_gd"]
        assert row.verdict == ("reproduced" if beats and closer else "not_reproduced")
        assert row.measured.startswith(f"loss {gd.model_loss:.4f} vs GD {gd.reference_loss:.4f}")
        assert rows[f"lsa.depth{k}.gdpp_loss"].measured == pytest.approx(pp.reference_loss)
        readout = lsa.readout_losses(deep.trained[k].model, tiny.eval_tasks)
        ratio = max(b / a for a, b in zip(readout, readout[1:]))
        assert rows[f"lsa.depth{k}.readout_falls"].measured == pytest.approx(ratio)
        assert rows[f"lsa.depth{k}.readout_falls"].verdict == ("reproduced" if ratio < 1 else "not_reproduced")
    assert len(deep.tuning_table()) == 4
    assert deep.numbers()["d3_gd_loss"] == pytest.approx(deep.reference_loss("GD, 3 steps"))


def test_softmax_rows(sections):
    baseline, softmax = sections[0], sections[3]
    rows = by_id(softmax.claims())
    ratio2 = softmax.loss2 / baseline.gd1_loss
    assert rows["lsa.softmax2.closes_gap"].measured == pytest.approx(ratio2)
    assert rows["lsa.softmax2.closes_gap"].verdict == ("reproduced" if ratio2 <= 1.02 else "not_reproduced")
    assert rows["lsa.softmax1.loss_ratio_to_gd1"].verdict == (
        "reproduced" if softmax.loss1 / baseline.gd1_loss > 1.02 else "not_reproduced")
    assert rows["lsa.softmax2.cosine_gd"].measured == softmax.cosine2
    assert set(softmax.table.model) == {"softmax, 1 layer", "softmax, 2 layers", "LSA, 1 layer (trained)"}


def test_overview_figures(sections):
    table = study.depth_table(*sections)
    assert len(table) == 11 and set(table.method) >= {"GD", "GD++", "LSA trained", "softmax trained"}
    assert len(study.training_figure(*sections).data) == 5 + 3  # five runs, three levels
    assert len(study.depth_figure(*sections).data) == table.method.nunique()


def test_a_verdict_in_words_is_decided_by_the_declared_test_of_its_numbers():
    spec = claims.ClaimSpec("t.gap{k}", "gap {k}", "004", "x", "", criterion="a < b",
                            test=lambda e: e["a"] < e["b"])
    row = spec.measure("a 1 vs b 2", chapter="c", profile="smoke", tested={"a": 1, "b": 2}, k=2)
    assert (row.id, row.claim, row.verdict, row.criterion) == ("t.gap2", "gap 2", "reproduced", "a < b")
    assert spec.measure("a 3 vs b 2", chapter="c", profile="smoke", tested={"a": 3, "b": 2}, k=2).verdict == "not_reproduced"



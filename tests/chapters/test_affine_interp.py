"""The affine-recurrence study (`affine`), its task, training and error (`affine_training`), MLPs
(`affine_mlps`) and conjecture (`affine_conjecture`) against independent computations on small
random models; their results' claim rows against the declared criteria worked by hand."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from optim_hunter import zoo
from optim_hunter.chapters.affine_recurrences import affine as ia
from optim_hunter.chapters.affine_recurrences import affine_conjecture as ac
from optim_hunter.chapters.affine_recurrences import affine_interventions as ai
from optim_hunter.chapters.affine_recurrences import affine_mlps as am
from optim_hunter.chapters.affine_recurrences import affine_training as at
from optim_hunter.report import claims, training_seeds
from optim_hunter.zoo import affine

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


def test_mse_and_mse_by_position(setup):
    cfg, native, model, groups = setup
    by_hand, per_sequence = [], []
    for g in groups:
        pred = affine.predict(native, g.inputs).detach()
        by_hand.append(float(((pred[:, 2:] - g.targets[:, 2:]) ** 2).mean()))
        per_sequence += [float(((pred[i, 2:] - g.targets[i, 2:]) ** 2).mean()) for i in range(len(g))]
    assert affine.held_out_mse(model, groups) == pytest.approx(np.mean(by_hand), rel=1e-5)
    errors = ia.squared_errors(model, groups)
    np.testing.assert_allclose(errors, per_sequence, rtol=1e-5)
    assert errors.mean() == pytest.approx(affine.held_out_mse(model, groups), rel=1e-5)  # groups of equal size
    g = groups[-1]
    pred = affine.predict(native, g.inputs).detach()
    np.testing.assert_allclose(at.mse_by_position(model, g), ((pred - g.targets) ** 2).mean((0, 2)), rtol=1e-5)


def test_loss_curve_table():
    meta_ = {"losses": list(np.linspace(1, 0, 200)), "history": [{"step": 100, "mse": 0.5}, {"step": 200, "mse": 0.1}]}
    table = at.loss_curve(meta_)
    train = table[table.series.str.startswith("training")]
    assert len(train) == 100 and train.value.iloc[0] == pytest.approx(np.mean(meta_["losses"][:2]))
    assert table[table.series == "held-out MSE"].value.tolist() == [0.5, 0.1]


def test_study_properties_and_edited_copy(tiny_study):
    s = tiny_study
    assert s.longest is s.analysis[-1] and s.longest.inputs.shape[1] == 14
    assert s.n_analysis == 2 * 12
    assert s.clean_mse == pytest.approx(affine.held_out_mse(s.model, s.analysis))
    same = s.edited(lambda state: state)
    x = s.analysis[3].inputs
    torch.testing.assert_close(same(x), s.model(x))
    zeroed = s.edited(lambda state: {k: (v * 0 if k == "head.weight" else v) for k, v in state.items()})
    assert float(zeroed(x).abs().max()) == 0.0  # the edit took effect in the copy ...
    assert float(s.model(x).abs().max()) > 0.0  # ... and not in the model
    assert ia.filed("smoke") == {"chapter": "affine_recurrences", "profile": "smoke", "model": "affine-recurrence"}


def test_example_sequences_are_fixed():
    data = affine.AffineData()
    alternating, monotone = ia.example_sequences(data)
    again, _ = ia.example_sequences(data)
    np.testing.assert_array_equal(alternating.terms, again.terms)
    assert alternating.c.tolist() == [-0.8] and monotone.c.tolist() == [0.8]
    assert alternating.inputs.shape == (1, 14, 40)


def test_growth_factors_against_the_closed_form():
    data = affine.AffineData(dim=5)
    growth = at.growth_factors(data, n=300, steps=10, seed=4)
    seqs = affine.sample_sequences(np.random.default_rng(4), 300, 10, data)
    c = seqs.c[:, None]
    a0, d = seqs.raw_terms[:, 0], seqs.raw_d
    a10 = c**10 * a0 + d * (c**10 - 1) / (c - 1)  # a_n = c^n a_0 + d (c^n - 1) / (c - 1)
    np.testing.assert_allclose(growth, np.linalg.norm(a10, axis=1) / np.linalg.norm(a0, axis=1), rtol=1e-9)
    assert growth.max() > 50  # |c| near 2 grows the norm by about 2^10


def test_task_result(tiny_study):
    result = at.task(tiny_study)
    assert result.examples.c.tolist() == [-0.9, 0.6, 1.4] and len(result.growth) == 10_000
    assert len(result.figure().data) == 3
    (row,) = result.claims()
    assert row.id == "affine.data.growth_factor" and row.measured == pytest.approx(result.growth.max())
    # a property of our data generator: a check, never a reproduction
    assert row.verdict == "check" and row.holds == (result.growth.max() >= 500) and not row.decides_source
    assert "among 10,000 sequences" in row.claim
    assert set(result.numbers()) == {"growth_max", "growth_median", "growth_n"}


def test_training_result(tiny_study):
    result = at.training(tiny_study)
    assert result.clean_mse == pytest.approx(affine.held_out_mse(tiny_study.model, tiny_study.analysis))
    assert result.steps == 40 and result.seconds == 90.0 and result.batch_size == 4
    glued = result.numbers()
    assert glued["train_minutes"] == pytest.approx(1.5)
    assert glued["train_sequences"] == 160 and glued["train_share_of_seed"] == pytest.approx(160 / 1.6e6)
    assert glued["mse_drop_total"] == pytest.approx((2 / 10) / (2 / 40))  # first over last held-out MSE
    assert glued["mse_drop_last"] == pytest.approx((2 / 20) / (2 / 40))
    assert list(result.table().columns) == ["loss", "mse"] and list(result.table().index) == [10, 20, 40]
    assert result.position_table().shape == (2, 14)
    np.testing.assert_allclose(result.errors, ia.squared_errors(tiny_study.model, tiny_study.analysis))
    rows = {r.id: r for r in result.claims()}
    interval = claims.bootstrap(result.errors, units="held-out sequences")
    assert rows["affine.train.mse"].interval == interval.as_list()
    assert rows["affine.train.mse"].verdict == claims.at_most(1.5e-4).decide(interval)
    assert "mean over 24 sequences" in rows["affine.train.mse"].claim
    assert rows["affine.train.budget"].measured == 40 and rows["affine.train.budget"].verdict == "measured"
    assert rows["affine.train.seconds"].measured == 90.0
    assert len(result.figure().data) == 2


def test_the_loss_comparison_uses_the_evaluations_both_runs_share():
    seed_loss = {"history": [{"step": 500, "loss": 1.0, "mse": 0.4}, {"step": 1000, "mse": 0.2},
                             {"step": 1500, "mse": 0.1}, {"step": 2000, "mse": 0.05}]}
    every = {"history": [{"step": 500, "mse": 0.8}, {"step": 1000, "mse": 0.3}]}
    table = at.shared_evaluations(seed_loss, every)
    assert list(table.index) == [500, 1000]
    np.testing.assert_allclose(table["ratio"], [2.0, 1.5])
    result = at.LossPositionsResult("full", table)
    assert result.last_step == 1000 and result.ratio == pytest.approx(1.5)
    (row,) = result.claims()
    assert row.id == "affine.training.every_position_worse" and row.verdict == "reproduced"
    assert row.interval == pytest.approx([1.5, 2.0]) and "2 shared evaluations" in row.interval_kind  # two single runs: said
    tie = at.LossPositionsResult("full", at.shared_evaluations(
        seed_loss, {"history": [{"step": 500, "mse": 0.39}, {"step": 1000, "mse": 0.22}]}))
    assert tie.claims()[0].verdict == "inconclusive"  # 0.97 then 1.10: a tie, not "worse"
    assert "1,000 steps" in row.claim and "2.00 at 500" in row.claim
    assert result.numbers()["every_position_mse"] == pytest.approx(0.3)
    better = at.LossPositionsResult("full", at.shared_evaluations(seed_loss, {"history": [{"step": 500, "mse": 0.2}]}))
    assert better.claims()[0].verdict == "not_reproduced"
    assert len(result.figure().data) == 2
    with pytest.raises(ValueError, match="share no evaluation step"):
        at.shared_evaluations(seed_loss, {"history": [{"step": 250, "mse": 0.2}]})


def _mlp_result(late, early, spread=0.05, n=40, seed=0):
    """An MLPResult of `n` sequences whose summed attribution averages `late` over the last three
    positions and `early` over positions 2-10 (per-sequence noise of sd `spread`)."""
    gen = np.random.default_rng(seed)
    values = np.zeros((n, 3, 14))
    values[:, 0, 11:] = late + spread * gen.normal(size=(n, 1))
    values[:, 0, 2:11] = early + spread * gen.normal(size=(n, 1))
    values[:, 0, 11:] += late - values[:, 0, 11:].mean()  # exact means
    values[:, 0, 2:11] += early - values[:, 0, 2:11].mean()
    return am.MLPResult("smoke", values)


def test_the_late_mlp_claim_compares_with_the_early_positions():
    def verdict(late, early, **kw):
        (row,) = _mlp_result(late, early, **kw).claims()
        return row.verdict

    assert verdict(2.0, 1.0) == "reproduced"
    assert verdict(0.5, 1.0) == "not_reproduced"  # positive, but larger earlier
    assert verdict(-0.1, -1.0) == "not_reproduced"  # larger than earlier, but negative
    assert verdict(1.01, 1.0, spread=1.0) == "inconclusive"  # a margin inside the spread over sequences
    (row,) = _mlp_result(2.0, 1.0).claims()
    assert row.measured == pytest.approx(1.0) and row.interval_kind.endswith("over 40 14-vector sequences")
    with pytest.raises(TypeError):
        am.MLP_LATE.measure(2.0, late="2", **ia.filed("smoke"))  # the claim text needs both numbers


def test_mlp_attribution_by_position(setup):
    _, native, model, groups = setup
    g = groups[-1]
    with torch.no_grad():
        _, cache = model.run_with_cache(g.inputs)
    final = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"].double()
    sigma = ((final - final.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True).add(1e-5).sqrt()
    w_f, W_U = native.ln_out.weight.double(), native.head.weight.double().T
    ours = am.mlp_attribution_by_position(model, g)
    assert ours.shape == (model.cfg.n_layers, g.inputs.shape[1])
    np.testing.assert_allclose(am.mlp_attribution(model, g).mean(0), ours)
    for layer in range(model.cfg.n_layers):
        blk = native.layers[layer]
        mid = cache[f"blocks.{layer}.hook_resid_mid"]
        out = blk.mlp(blk.ln2(mid)).double().detach()
        read = ((out - out.mean(-1, keepdim=True)) / sigma * w_f) @ W_U
        np.testing.assert_allclose(ours[layer], (read * g.targets.double()).sum(-1).mean(0).numpy(), rtol=1e-5, atol=1e-9)


def test_mlp_result_late_and_early_by_hand(tiny_study):
    values = np.zeros((2, 3, 14))
    values[:, 0, 11:] = [[1.0, 2.0, 3.0], [1.5, 2.0, 2.5]]  # last three positions: mean 2 (summed over MLPs)
    values[:, 1, 2:11] = [[0.4], [0.6]]  # positions 2..10: mean 0.5
    result = am.MLPResult("smoke", values)
    assert result.late == pytest.approx(2.0) and result.early == pytest.approx(0.5)
    assert result.margin == pytest.approx(1.5) and result.attribution.shape == (3, 14)
    (row,) = result.claims()
    assert row.verdict == "reproduced" and "last 3 positions (2)" in row.claim and "positions 2-10 (1.5)" in row.claim
    (row,) = am.MLPResult("smoke", -values).claims()
    assert row.verdict == "not_reproduced"
    real = am.mlps(tiny_study)
    np.testing.assert_allclose(real.attribution, am.mlp_attribution_by_position(tiny_study.model, tiny_study.longest))
    assert real.per_sequence.shape == (2, 3, 14) and real.figure().data[0].z.shape == (3, 14)


def test_two_term_fit_and_alpha(setup):
    gen = np.random.default_rng(1)
    a_n, a_prev = gen.normal(size=(200, 6)), gen.normal(size=(200, 6))
    y = 0.7 * a_n + 1.61 * a_prev + 0.3 + 0.01 * gen.normal(size=(200, 6))
    u, v, r2 = ac.two_term_fit(y, a_n, a_prev)
    centred = [t - t.mean(0) for t in (y, a_n, a_prev)]
    (u2, v2), *_ = np.linalg.lstsq(np.stack([centred[1].ravel(), centred[2].ravel()], 1), centred[0].ravel(), rcond=None)
    assert (u, v) == pytest.approx((u2, v2)) and v / u == pytest.approx(2.3, rel=0.01) and r2 > 0.99
    _, native, model, groups = setup
    terms = ac.layer0_terms(model, groups)
    rows = sum(len(g) * (g.inputs.shape[1] - 2) for g in groups)
    assert all(t.shape == (rows, 6) for t in terms.values())
    np.testing.assert_allclose(terms["a_next"][:, :], np.concatenate([g.targets[:, 2:].reshape(-1, 6) for g in groups]), rtol=1e-6)
    with torch.no_grad():
        _, cache = model.run_with_cache(groups[0].inputs)
        r = cache["blocks.0.hook_resid_post"]
        lens = native.head(native.ln_out(r)).double()
    np.testing.assert_allclose(terms["after_l0"][: len(groups[0])], lens[:, 2:].reshape(-1, 6).numpy(), rtol=1e-5, atol=1e-6)
    y = 0.2 + a_n + 2.3 * a_prev + 0.01 * gen.normal(size=(200, 6))
    alpha, r2 = ac.alpha_fit(y, a_n, a_prev)
    c = [t - t.mean(0) for t in (y, a_n, a_prev)]
    (alpha2,), *_ = np.linalg.lstsq(c[2].reshape(-1, 1), (c[0] - c[1]).ravel(), rcond=None)
    assert alpha == pytest.approx(alpha2) and alpha == pytest.approx(2.3, abs=0.01) and r2 > 0.99
    table = ac.alpha_fits(terms)
    assert list(table["free v/u"]) == pytest.approx(list(table["free v"] / table["free u"]))
    for row, key in zip(table.itertuples(), ("after_l0", "a_next")):
        assert row.alpha == pytest.approx(ac.alpha_fit(terms[key], terms["a_n"], terms["a_prev"])[0])
    assert set(at.sequences_table(groups[0]).columns) == {"n", "value", "sequence"}
    curves = ac.conjecture_curves(model, groups[-1], 0, 2, {"seed": 2.3})
    assert set(curves.series) == {"a_n (input)", "after layer 0 (read out)", "a_n + 2.30 a_(n-1) (seed)", "a_(n+1) (target)"}
    a = groups[-1].inputs[0].double().numpy()
    guess = curves[curves.series == "a_n + 2.30 a_(n-1) (seed)"].value.to_numpy()
    np.testing.assert_allclose(guess, a[1:, 2] + 2.3 * a[:-1, 2], rtol=1e-12)


def test_conjecture_result(tiny_study):
    result = ac.conjecture(tiny_study)
    expected = ac.alpha_fits(ac.layer0_terms(tiny_study.model, tiny_study.analysis))
    assert result.alpha_after_l0 == pytest.approx(expected.alpha[0]) and result.alpha_next == pytest.approx(expected.alpha[1])
    assert f"a_n + {result.alpha_after_l0:.2f} a_(n-1) (fitted)" in set(result.curves.series)
    assert "a_n + 2.30 a_(n-1) (seed)" in set(result.curves.series)
    rows = result.claims()
    assert [r.id for r in rows] == ["affine.conjecture.alpha_after_l0", "affine.conjecture.alpha_next_term"]
    for row, alpha, key in zip(rows, (result.alpha_after_l0, result.alpha_next), ("after_l0", "a_next")):
        numerator, denominator = result.parts[key]
        assert len(numerator) == tiny_study.n_analysis and numerator.sum() / denominator.sum() == pytest.approx(alpha)
        assert row.interval[0] <= alpha <= row.interval[1]
        assert row.verdict == claims.between(2.1, 2.5).decide(claims.Interval(*row.interval, row.interval_kind, row.n))
    assert f"(R^2 {expected.R2[0]:.2f})" in rows[0].claim
    assert result.table().index.name == "fitted to"


def test_verdicts_table():
    errors = np.array([0.9e-4, 1.0e-4, 1.1e-4, 1.0e-4])
    rows = [
        at.TRAIN_MSE.measure(1e-4, interval=claims.bootstrap(errors), n="4", **ia.filed("smoke")),
        at.TRAIN_SECONDS.measure(12.0, **ia.filed("smoke")),
    ]

    @dataclasses.dataclass(frozen=True)
    class Result:
        def claims(self):
            return rows[1:]

    table = ia.verdicts(rows[0], Result())
    assert list(table.index) == ["train.mse", "train.seconds"]
    assert table.loc["train.mse", "verdict"] == "reproduced" and table.loc["train.seconds", "verdict"] == "measured"
    assert table.loc["train.mse", "seed"] == 1e-4 and isinstance(table, pd.DataFrame)
    assert table.loc["train.mse", "interval"].startswith("[") and table.loc["train.seconds", "interval"] == ""
    assert table.loc["train.mse", "ours (seed 0)"] == 1e-4


def test_every_declared_affine_claim_is_from_seed_001():
    declared = {k: v for k, v in claims.declared().items() if k.startswith("affine.")}
    assert len(declared) >= 35 and {v.source_seed for v in declared.values()} == {"001"}


def test_study_loads_the_zoo_model_and_draws_the_held_out_sets(monkeypatch):
    from affine_tiny import meta, study_config

    cfg = study_config()
    model = affine.hooked(affine.build_model(cfg.arch, 0).state_dict(), cfg)  # a real hooked model
    asked = []
    monkeypatch.setattr(zoo, "config", lambda name, profile: asked.append(("config", name, profile)) or cfg)
    monkeypatch.setattr(zoo, "load", lambda name, profile, progress=True: asked.append(("load", name, profile)) or model)
    monkeypatch.setattr(zoo, "metadata", lambda name, profile: meta())
    s = ia.study("smoke")
    assert ("load", "affine-recurrence", "smoke") in asked and s.model is model and s.cfg is cfg
    assert not any(p.requires_grad for p in model.parameters())
    assert [len(g) for g in s.analysis] == [20] * 12 and [g.inputs.shape[1] for g in s.analysis] == list(range(3, 15))
    np.testing.assert_array_equal(s.analysis[0].terms, affine.held_out(20, cfg.data, seed=20_001)[0].terms)
    np.testing.assert_array_equal(s.population[-1].terms, affine.held_out(20, cfg.data, seed=20_002)[-1].terms)


def test_train_mse_is_inconclusive_when_its_interval_straddles_the_criterion():
    kw = ia.filed("smoke")
    near = np.random.default_rng(0).normal(1.5e-4, 0.5e-4, 200)  # mean about the criterion's edge
    row = at.TRAIN_MSE.measure(float(near.mean()), interval=claims.bootstrap(near), n="200", **kw)
    assert row.verdict == "inconclusive"
    below = at.TRAIN_MSE.measure(1e-4, interval=claims.bootstrap(near - 0.5e-4), n="200", **kw)
    assert below.verdict == "reproduced"
    far = at.TRAIN_MSE.measure(3e-4, interval=claims.bootstrap(near + 1.5e-4), n="200", **kw)
    assert far.verdict == "not_reproduced"


def test_sequence_interval_resamples_whole_sequences():
    gen = np.random.default_rng(3)
    sums, counts = gen.normal(size=50) + 5, gen.integers(1, 12, 50).astype(float)
    interval = ia.ratio_interval(sums, counts)
    point = sums.sum() / counts.sum()
    assert interval.low <= point <= interval.high and interval.n == 50 and "50 held-out sequences" in interval.kind
    # the weights of a resample count how often each sequence is drawn: a row of ones is the data
    seen = []
    ia.sequence_interval(lambda w: seen.append(w.copy()) or w.sum(1), 7)
    assert np.array_equal(seen[0], np.ones((1, 7))) and all(np.allclose(w.sum(1), 7) for w in seen)
    # strata keep their sizes in every resample
    a, b = np.arange(0, 30), np.arange(30, 50)
    checked = []
    ia.sequence_interval(lambda w: checked.append((w[:, a].sum(1), w[:, b].sum(1))) or w.sum(1), 50, strata=[a, b])
    assert all(np.allclose(x, 30) and np.allclose(y, 20) for x, y in checked)
    strat = ia.sequence_interval(lambda w: w @ sums / w.sum(1), 50, strata=[a, b])
    assert strat.n == 50 and "2 strata of 30, 20" in strat.kind


def test_weighted_median_counts_each_value_by_its_weight():
    values = np.array([3.0, 1.0, 2.0, 10.0])
    assert ia.weighted_median(values, np.ones(4)) == pytest.approx(np.median(values))
    assert ia.weighted_median(values[:3], np.ones(3)) == pytest.approx(2.0)
    weights = np.array([0.0, 2.0, 1.0, 3.0])
    assert ia.weighted_median(values, weights) == pytest.approx(np.median(np.repeat(values, weights.astype(int))))
    gen = np.random.default_rng(0)
    for _ in range(20):
        v, w = gen.normal(size=15), gen.integers(0, 4, 15)
        if w.sum():
            assert ia.weighted_median(v, w) == pytest.approx(np.median(np.repeat(v, w)))


def test_row_sequences_label_the_rows_of_layer0_terms(setup):
    _, _, model, groups = setup
    ids = ia.row_sequences(groups)
    terms = ac.layer0_terms(model, groups)
    assert len(ids) == len(terms["a_n"])
    np.testing.assert_array_equal(np.bincount(ids), np.concatenate([[g.inputs.shape[1] - 2] * len(g) for g in groups]))
    first = groups[0]
    np.testing.assert_allclose(terms["a_n"][ids == 1], first.inputs[1, 2:].double().numpy())
    num, den = ac.alpha_parts(terms["a_next"], terms["a_n"], terms["a_prev"], ids, sum(len(g) for g in groups))
    alpha, _ = ac.alpha_fit(terms["a_next"], terms["a_n"], terms["a_prev"])
    assert num.sum() / den.sum() == pytest.approx(alpha)


def test_every_affine_claim_with_a_verdict_says_where_its_number_comes_from():
    declared = {k: v for k, v in claims.declared().items() if k.startswith("affine.")}
    text = claims.seed_text(SEEDS) if SEEDS.exists() else None
    for spec in declared.values():
        if spec.test is not None:
            passing, failing = spec.test_examples()
            assert spec.test(passing) and not spec.test(failing), spec.id
            if not isinstance(spec.test, claims.Region) and spec.role == "claim":
                assert spec.why_no_interval, f"{spec.id}: a function test cannot have an interval: say why"
        if spec.source_value is not None:
            assert spec.source_quote, f"{spec.id}: a source value needs the source's sentence"
            if text is not None:
                assert claims.quote_found(spec.source_quote, text), spec.id


def test_studies_load_every_training_seed_of_the_model(monkeypatch):
    from affine_tiny import meta, study_config

    cfg = study_config()
    model = affine.hooked(affine.build_model(cfg.arch, 0).state_dict(), cfg)
    loaded = []
    monkeypatch.setattr(zoo, "config", lambda name, profile: cfg)
    monkeypatch.setattr(zoo, "load", lambda name, profile, progress=True: loaded.append(name) or model)
    monkeypatch.setattr(zoo, "metadata", lambda name, profile: meta())
    studies = ia.studies("smoke")
    names = ["affine-recurrence"] + [f"affine-recurrence-seed{seed}" for seed in range(1, 5)]
    assert loaded == zoo.seed_names("affine-recurrence") == names
    assert [(s.name, s.seed) for s in studies] == [(name, seed) for seed, name in enumerate(names)]
    for other in studies[1:]:  # the same held-out sequences for every seed
        np.testing.assert_array_equal(studies[0].analysis[3].terms, other.analysis[3].terms)
    assert ia.seeds_numbers(studies).numbers() == {"n_seeds": 5, "seed_models": ", ".join(names)}


def test_each_seed_compares_with_the_every_position_run_of_the_same_seed(monkeypatch, tiny_study):
    asked = []
    every = {"history": [{"step": 500, "mse": 0.8}, {"step": 1000, "mse": 0.3}]}
    monkeypatch.setattr(zoo, "metadata", lambda name, profile: asked.append(name) or every)
    seeded = [dataclasses.replace(tiny_study, meta={"history": [{"step": 500, "mse": m}, {"step": 1000, "mse": m / 2}]},
                                  seed=seed, name=name)
              for seed, (name, m) in enumerate([("affine-recurrence", 0.4), ("affine-recurrence-seed1", 0.9)])]
    result = ia.over_seeds(at.loss_positions, seeded)
    assert asked == ["affine-every-position", "affine-every-position-seed1"]
    assert result.ratio == pytest.approx(0.3 / 0.2)  # reads as seed 0's
    (row,) = result.claims()
    # seed 0: ratios 2.0, 1.5; seed 1: 0.8 / 0.9, 0.3 / 0.45 -> the union [0.667, 2.0], widened to
    # another seed's prediction interval, straddles 1
    assert row.interval[0] < 0.3 / 0.45 and row.interval[1] > 2.0 and row.verdict == "inconclusive"
    assert row.interval_kind.startswith("range over 2 training seeds of the per-seed range over 2 shared evaluations")
    assert result.numbers()["every_position_ratio_seeds"] == "1.5, 0.667"


def test_a_count_over_heads_is_decided_on_the_range_over_seeds():
    kw = ia.filed("smoke")
    rows = [[ai.QK_IDENTITY_HEADS.measure(n, **kw)] for n in (8, 7)]
    assert [r[0].verdict for r in rows] == ["reproduced", "not_reproduced"]  # one seed each way: a flip
    (row,) = claims.rows_of(training_seeds.across_seeds(rows))
    assert (row.verdict, row.measured) == ("inconclusive", 8.0) and row.interval[0] < 7 and row.interval[1] > 8
    assert row.interval_kind.startswith("range over 2 training seeds of the per-seed values, widened")
    assert not row.why_no_interval

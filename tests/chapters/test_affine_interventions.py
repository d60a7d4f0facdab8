"""`affine_interventions` (mean ablation, QK circuits replaced by random projections) against
hooks written out by hand on small random models; its results' claim rows against the declared
criteria worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim_hunter.analysis import circuits
from optim_hunter.chapters.affine_recurrences import affine_interventions as ai
from optim_hunter.zoo import affine


def test_mean_ablation_by_hand(setup):
    _, _, model, groups = setup
    population = affine.held_out(3, affine.tiny_config().data, seed=5)
    zs = []
    for g in population:
        with torch.no_grad():
            _, cache = model.run_with_cache(g.inputs)
        zs.append(cache["blocks.1.attn.hook_z"].reshape(-1, model.cfg.n_heads, model.cfg.d_head))
    mean = torch.cat(zs).double().mean(0).float()
    torch.testing.assert_close(ai.mean_z(model, population, 1), mean)

    def replace(z, hook):
        return mean.expand_as(z).clone()

    errors, per_sequence = [], []
    for g in groups:
        with torch.no_grad():
            pred = model.run_with_hooks(g.inputs, fwd_hooks=[("blocks.1.attn.hook_z", replace)])
        errors.append(float(((pred[:, 2:] - g.targets[:, 2:]) ** 2).mean()))
        per_sequence.append(((pred[:, 2:] - g.targets[:, 2:]) ** 2).mean((1, 2)).numpy())
    assert ai.mean_ablated_mse(model, groups, population, 1) == pytest.approx(np.mean(errors), rel=1e-5)
    np.testing.assert_allclose(ai.mean_ablated_errors(model, groups, population, 1), np.concatenate(per_sequence), rtol=1e-5)
    assert affine.held_out_mse(model, groups) != pytest.approx(np.mean(errors), rel=1e-3)  # the hooks are gone again

    def replace_head0(z, hook):
        z = z.clone()
        z[:, :, 0] = mean[0]
        return z

    errors = []
    for g in groups:
        with torch.no_grad():
            pred = model.run_with_hooks(g.inputs, fwd_hooks=[("blocks.1.attn.hook_z", replace_head0)])
        errors.append(float(((pred[:, 2:] - g.targets[:, 2:]) ** 2).mean()))
    assert ai.mean_ablated_mse(model, groups, population, 1, heads_=[0]) == pytest.approx(np.mean(errors), rel=1e-5)


def test_identity_qk_edit_gives_projection_scores(setup):
    cfg, native, model, groups = setup
    layer, edited_heads = 1, [1]
    state = affine.state_dict_of(model)
    new = ai.with_identity_qk(state, layer, edited_heads, n_heads=cfg.arch.n_heads, seed=3)
    edited = affine.hooked(new, cfg)
    x = groups[-1].inputs
    with torch.no_grad():
        _, cache = edited.run_with_cache(x)
        _, before = model.run_with_cache(x)
    xh = circuits.normalize(cache[f"blocks.{layer}.hook_resid_pre"], edited.cfg.eps)
    Q, K = circuits.pinv_identity(cfg.arch.d_model, cfg.arch.d_head, seed=3 * 1000 + 0)
    scores = xh @ (Q @ K.T) @ xh.transpose(1, 2) / cfg.arch.d_head**0.5
    mask = torch.tril(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool))
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
    torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_pattern"][:, 1].double(), expected, atol=1e-5, rtol=1e-5)
    # the other head's pattern and all values (given the same input) are untouched
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], before["blocks.0.hook_resid_post"])
    torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_pattern"][:, 0], before[f"blocks.{layer}.attn.hook_pattern"][:, 0])
    torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_v"], before[f"blocks.{layer}.attn.hook_v"])
    # its folded QK circuit is a projection (centred): identity score 1 in both spaces
    for space in ("residual", "vector"):
        assert ai.qk_identity_score(edited, layer, space=space)[1] == pytest.approx(1.0, abs=1e-9)
        assert abs(ai.qk_identity_score(model, layer, space=space)[1]) < 0.999
    with pytest.raises(ValueError, match="out of range"):
        ai.with_identity_qk(state, layer, [5], n_heads=cfg.arch.n_heads)


def errors_of(mean: float, n: int = 240, spread: float = 0.1, seed: int = 0) -> np.ndarray:
    """`n` per-sequence MSEs with mean `mean` (relative per-sequence spread `spread`)."""
    values = mean * np.exp(spread * np.random.default_rng(seed).normal(size=n))
    return values * mean / values.mean()


def test_ablation_result_ratios_and_verdicts():
    clean = errors_of(1e-3)
    result = ai.AblationResult("smoke", clean, {0: errors_of(5e-2, seed=1), 1: errors_of(2.5e-3, seed=2),
                                                2: errors_of(4e-3, seed=3)})
    assert result.ratios == pytest.approx({0: 50.0, 1: 2.5, 2: 4.0})
    rows = {r.id: r for r in result.claims()}
    assert rows["affine.ablation.l1_ratio"].verdict == "reproduced"  # 2.5 <= 3, the whole interval
    assert rows["affine.ablation.l1_ratio"].interval_kind == "paired bootstrap 95% over 240 held-out sequences"
    assert rows["affine.ablation.l1_mse"].claim.endswith("(240 sequences; clean 1.00e-03)")
    assert rows["affine.ablation.l0_ratio"].verdict == "measured" and rows["affine.ablation.l2_ratio"].measured == pytest.approx(4.0)
    worse = ai.AblationResult("smoke", clean, {0: clean, 1: errors_of(3.5e-3, seed=2), 2: clean})
    assert {r.id: r.verdict for r in worse.claims()}["affine.ablation.l1_ratio"] == "not_reproduced"
    near = ai.AblationResult("smoke", clean, {0: clean, 1: errors_of(3.02e-3, spread=1.0, seed=2), 2: clean})
    assert {r.id: r.verdict for r in near.claims()}["affine.ablation.l1_ratio"] == "inconclusive"
    assert result.table().shape == (3, 2) and result.numbers()["ablation_ratio_l1"] == pytest.approx(2.5)


def test_mean_ablation_of_a_study(tiny_study):
    s = tiny_study
    result = ai.mean_ablation(s)
    assert result.clean == pytest.approx(affine.held_out_mse(s.model, s.analysis)) and result.n_sequences == 24
    np.testing.assert_allclose(result.clean_errors, s.clean_errors)
    for layer in range(3):
        assert result.ablated[layer] == pytest.approx(ai.mean_ablated_mse(s.model, s.analysis, s.population, layer))


def test_identity_qk_mse_against_models_built_by_hand(tiny_study):
    s = tiny_study
    state = affine.state_dict_of(s.model)
    by_hand = [affine.held_out_mse(affine.hooked(ai.with_identity_qk(state, 2, [1, 3], n_heads=8, seed=seed), s.cfg), s.analysis)
               for seed in range(2)]
    mean, sd = ai.identity_qk_mse(s, 2, [1, 3], draws=2)
    assert mean == pytest.approx(np.mean(by_hand), rel=1e-6) and sd == pytest.approx(np.std(by_hand), rel=1e-5, abs=1e-12)
    errors = ai.identity_qk_errors(s, 2, [1, 3], draws=2)
    assert errors.shape == (2, s.n_analysis)
    np.testing.assert_allclose(errors.mean(1), by_hand, rtol=1e-5)
    assert mean != pytest.approx(s.clean_mse, rel=1e-4)  # the edit changes the model's output


def test_qk_result_verdicts_by_hand():
    residual = np.array([0.9, 0.6, 0.55, 0.7, 0.8, 0.51, 0.95, 0.5])  # all eight >= 0.5
    clean = errors_of(1e-3)
    draws = {"top5": np.stack([errors_of(1.2e-3 * f, seed=s) for s, f in ((1, 0.99), (2, 1.01))]),
             "first5": np.stack([errors_of(2e-3, seed=3)] * 2), "all": np.stack([errors_of(5e-3, seed=4)] * 2)}
    result = ai.QKResult("smoke", residual, np.zeros(8), [6, 0, 4, 3, 1], clean, draws)
    rows = {r.id: r for r in result.claims()}
    assert rows["affine.qk.l2_identity_like_heads"].verdict == "reproduced"
    assert "count over the 8 heads" in rows["affine.qk.l2_identity_like_heads"].why_no_interval
    assert rows["affine.qk.l2_identity_like_heads_vector_space"].measured == 0
    assert rows["affine.qk.pinv_identity_ratio"].measured == pytest.approx(1.2)
    assert rows["affine.qk.pinv_identity_ratio"].verdict == "reproduced"
    assert "heads [6, 0, 4, 3, 1] (mean of 5 Q" in rows["affine.qk.pinv_identity_ratio"].claim
    assert rows["affine.qk.pinv_identity_heads_0_4_ratio"].measured == pytest.approx(2.0)
    assert rows["affine.qk.pinv_identity_heads_0_4_ratio"].verdict == "measured"
    assert result.mse_table()["MSE"].tolist() == pytest.approx([1e-3, 1.2e-3, 2e-3, 5e-3])
    assert result.edited["top5"][1] == pytest.approx(0.012e-3)  # the sd over the two draws of Q
    assert result.numbers()["qk_ratio_all"] == pytest.approx(5.0)
    near = dict(draws, top5=np.stack([errors_of(1.51e-3, spread=1.0, seed=5)] * 2))
    rows = {r.id: r for r in ai.QKResult("smoke", residual, np.zeros(8), [6, 0, 4, 3, 1], clean, near).claims()}
    assert rows["affine.qk.pinv_identity_ratio"].verdict == "inconclusive"


def test_qk_identity_of_a_study(tiny_study, monkeypatch):
    s = tiny_study
    calls = []
    monkeypatch.setattr(ai, "identity_qk_errors",
                        lambda s_, layer, heads_: calls.append((layer, heads_)) or np.ones((5, s.n_analysis)))
    result = ai.qk_identity(s)
    scores = ai.qk_identity_score(s.model, 2)
    assert result.top5 == [int(h) for h in np.argsort(-scores)[:5]]
    assert sorted(scores[result.top5]) == sorted(np.sort(scores)[-5:])
    assert calls == [(2, result.top5), (2, [0, 1, 2, 3, 4]), (2, list(range(8)))]
    assert result.ratio("top5") == pytest.approx(1.0 / s.clean_mse)


def test_qk_identity_score_against_eigenvalues(setup):
    _, _, model, _ = setup
    W_E = model.W_E.detach().double()
    for h in range(model.cfg.n_heads):  # the [d_vector, d_vector] and [d_model, d_model] circuits, explicitly
        eig = np.linalg.eigvals((W_E @ circuits.folded_qk(model, 1)[h] @ W_E.T).numpy())
        assert ai.qk_identity_score(model, 1, space="vector")[h] == pytest.approx(eig.real.sum() / np.abs(eig).sum(), abs=1e-6)
        eig = np.linalg.eigvals(circuits.folded_qk(model, 1)[h].numpy())
        assert ai.qk_identity_score(model, 1)[h] == pytest.approx(eig.real.sum() / np.abs(eig).sum(), abs=1e-6)
    with pytest.raises(ValueError, match="space"):
        ai.qk_identity_score(model, 1, space="other")

"""The affine-recurrence analyses against independent computations on a small random model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim_hunter.interp import affine as ia
from optim_hunter.interp import circuits
from optim_hunter.zoo import affine



@pytest.fixture(scope="module")
def setup():
    cfg = affine.tiny_config()
    native = affine.build_model(cfg.arch, 0)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in native.named_parameters():
            if name.endswith(".weight") and ("ln" in name):
                p.copy_(1 + 0.5 * torch.rand(p.shape, generator=gen))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    native.requires_grad_(False)
    model = affine.hooked(native.state_dict(), cfg)
    model.requires_grad_(False)
    groups = affine.held_out(4, cfg.data)
    return cfg, native, model, groups


def patterns(model, x, layer):
    with torch.no_grad():
        _, cache = model.run_with_cache(x)
    return cache[f"blocks.{layer}.attn.hook_pattern"].double()


def test_mse_and_mse_by_position(setup):
    cfg, native, model, groups = setup
    by_hand = []
    for g in groups:
        pred = affine.predict(native, g.inputs).detach()
        by_hand.append(float(((pred[:, 2:] - g.targets[:, 2:]) ** 2).mean()))
    assert ia.mse(model, groups) == pytest.approx(np.mean(by_hand), rel=1e-5)
    g = groups[-1]
    pred = affine.predict(native, g.inputs).detach()
    np.testing.assert_allclose(ia.mse_by_position(model, g), ((pred - g.targets) ** 2).mean((0, 2)), rtol=1e-5)


def test_loss_curve_table():
    meta = {"losses": list(np.linspace(1, 0, 200)), "history": [{"step": 100, "mse": 0.5}, {"step": 200, "mse": 0.1}]}
    table = ia.loss_curve(meta)
    train = table[table.series.str.startswith("training")]
    assert len(train) == 100 and train.value.iloc[0] == pytest.approx(np.mean(meta["losses"][:2]))
    assert table[table.series == "held-out MSE"].value.tolist() == [0.5, 0.1]


def test_attention_statistics(setup):
    _, _, model, groups = setup
    prev = np.zeros((model.cfg.n_layers, model.cfg.n_heads))
    pos1 = np.zeros(model.cfg.n_heads)
    n_prev = n_pos1 = 0
    for g in groups:
        L = g.inputs.shape[1]
        for layer in range(model.cfg.n_layers):
            p = patterns(model, g.inputs, layer)
            for q in range(1, L):
                prev[layer] += p[:, :, q, q - 1].sum(0).numpy()
                if layer == 1 and q >= 2:
                    pos1 += p[:, :, q, 1].sum(0).numpy()
        n_prev += len(g) * (L - 1)
        n_pos1 += len(g) * max(0, L - 2)
    np.testing.assert_allclose(ia.previous_token_scores(model, groups), prev / n_prev, rtol=1e-5)
    np.testing.assert_allclose(ia.attention_to_position(model, groups, 1), pos1 / n_pos1, rtol=1e-5)


def test_same_parity_share(setup):
    _, _, model, groups = setup
    table = ia.same_parity_share(model, groups, 1)
    sums: dict = {}
    for g in groups:
        p = patterns(model, g.inputs, 1)
        L = g.inputs.shape[1]
        for b in range(len(g)):
            kind = "alternating (c < 0)" if g.c[b] < 0 else "monotone (c > 0)"
            for h in range(model.cfg.n_heads):
                for q in range(2, L):
                    share = sum(float(p[b, h, q, k]) for k in range(q + 1) if (q - k) % 2 == 0)
                    uniform = len([k for k in range(q + 1) if (q - k) % 2 == 0]) / (q + 1)
                    sums.setdefault((kind, h), []).append((share, uniform))
    for row in table.itertuples():
        values = np.array(sums[(row.kind, row.head)])
        assert row.share == pytest.approx(values[:, 0].mean(), rel=1e-6)
        assert row.uniform == pytest.approx(values[:, 1].mean(), rel=1e-6)
    assert set(table.kind) == {"alternating (c < 0)", "monotone (c > 0)"}


def test_head_attribution_by_hand(setup):
    cfg, native, model, groups = setup
    n_layers, n_heads, d_head = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head
    w_f, b_f = native.ln_out.weight.double(), native.ln_out.bias.double()
    W_U = native.head.weight.double().T
    for target in ("next", "step"):
        total, count = np.zeros((n_layers, n_heads)), 0
        for g in groups:
            with torch.no_grad():
                _, cache = model.run_with_cache(g.inputs)
            final = cache[f"blocks.{n_layers - 1}.hook_resid_post"].double()
            sigma = ((final - final.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True).add(1e-5).sqrt()
            t = g.targets.double() if target == "next" else (g.targets - g.inputs).double()
            for layer in range(n_layers):
                blk = native.layers[layer]
                x = cache[f"blocks.{layer}.hook_resid_pre"].double()
                ln = torch.nn.functional.layer_norm(x, x.shape[-1:], blk.ln1.weight.double(), blk.ln1.bias.double())
                v = (ln @ blk.attn.v.weight.double().T + blk.attn.v.bias.double())
                v = v.view(*v.shape[:2], n_heads, d_head)
                bias_v = (blk.ln1.bias.double() @ blk.attn.v.weight.double().T + blk.attn.v.bias.double()).view(n_heads, d_head)
                A = cache[f"blocks.{layer}.attn.hook_pattern"].double()
                W_O = blk.attn.o.weight.double().T.view(n_heads, d_head, -1)
                for h in range(n_heads):
                    z = torch.einsum("bqk,bke->bqe", A[:, h], v[:, :, h]) - bias_v[h]
                    out = z @ W_O[h]
                    read = ((out - out.mean(-1, keepdim=True)) / sigma * w_f) @ W_U
                    total[layer, h] += float((read * t).sum(-1)[:, 2:].sum())
            count += len(g) * (g.inputs.shape[1] - 2)
        np.testing.assert_allclose(ia.head_attribution(model, groups, target=target), total / count, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="target"):
        ia.head_attribution(model, groups, target="other")


def test_mlp_attribution_by_position(setup):
    _, native, model, groups = setup
    g = groups[-1]
    with torch.no_grad():
        _, cache = model.run_with_cache(g.inputs)
    final = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"].double()
    sigma = ((final - final.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True).add(1e-5).sqrt()
    w_f, W_U = native.ln_out.weight.double(), native.head.weight.double().T
    ours = ia.mlp_attribution_by_position(model, g)
    assert ours.shape == (model.cfg.n_layers, g.inputs.shape[1])
    for layer in range(model.cfg.n_layers):
        blk = native.layers[layer]
        mid = cache[f"blocks.{layer}.hook_resid_mid"]
        out = blk.mlp(blk.ln2(mid)).double().detach()
        read = ((out - out.mean(-1, keepdim=True)) / sigma * w_f) @ W_U
        np.testing.assert_allclose(ours[layer], (read * g.targets.double()).sum(-1).mean(0).numpy(), rtol=1e-5, atol=1e-9)


def test_linear_fit_equals_polyfit():
    gen = np.random.default_rng(0)
    x = gen.normal(size=(5, 30))
    y = 2.3 * x + 0.1 + 0.5 * gen.normal(size=(5, 30))
    slope, intercept, r2 = ia.linear_fit(x, y)
    for i in range(5):
        s, c = np.polyfit(x[i], y[i], 1)
        assert slope[i] == pytest.approx(s) and intercept[i] == pytest.approx(c)
        assert r2[i] == pytest.approx(np.corrcoef(x[i], y[i])[0, 1] ** 2)


def test_ov_images_are_what_layer_0_writes_from_a_lone_first_vector(setup):
    _, _, model, groups = setup
    first = groups[0].inputs[:, :1]
    with torch.no_grad():
        _, cache = model.run_with_cache(first)
    x = cache["blocks.0.hook_resid_pre"][:, 0].double()
    bias = torch.einsum("he,hed->d", circuits.value_bias(model, 0), model.W_O[0].double()) + model.b_O[0].double()
    written = cache["blocks.0.hook_attn_out"][:, 0].double() - bias  # position 0 attends only to itself
    torch.testing.assert_close(ia.ov_images(model, x, 0), written.detach(), atol=1e-5, rtol=1e-5)
    fit = ia.ov_fit(model, x)
    s, c = np.polyfit(x[0].numpy(), written[0].detach().numpy(), 1)
    assert fit.slope[0] == pytest.approx(s, rel=1e-5) and fit.intercept[0] == pytest.approx(c, rel=1e-4, abs=1e-8)
    assert set(fit.summary()) >= {"r2_mean", "slope_median", "slope_p10", "slope_p90"}
    fit = ia.ov_readout_fit(model, groups[:1])
    images = ia.ov_images(model, ia.residual_vectors(model, groups[:1])) @ circuits.folded_unembed(model)
    inputs = groups[0].inputs.reshape(-1, 6).double()
    s, c = np.polyfit(inputs[4].numpy(), images[4].numpy(), 1)
    assert fit.slope[4] == pytest.approx(s, rel=1e-6) and len(fit.r2) == len(inputs)
    rand = ia.random_like(x, seed=1)
    np.testing.assert_allclose(rand.norm(dim=-1), x.norm(dim=-1))


def test_share_outside_embedding_by_least_squares(setup):
    _, _, model, groups = setup
    vectors = ia.residual_vectors(model, groups[:2])
    assert vectors.shape[1] == model.cfg.d_model
    images = ia.ov_images(model, vectors).numpy()
    W_E = model.W_E.detach().double().numpy()
    coef, *_ = np.linalg.lstsq(W_E.T, images.T, rcond=None)
    rest = images - (W_E.T @ coef).T
    np.testing.assert_allclose(ia.share_outside_embedding(model, vectors), np.linalg.norm(rest, axis=1) / np.linalg.norm(images, axis=1), rtol=1e-6)
    assert ia.random_direction_share(128, 40) == pytest.approx(np.sqrt(88 / 128), abs=0.01)


def test_mean_ablation_by_hand(setup):
    _, _, model, groups = setup
    population = affine.held_out(3, affine.tiny_config().data, seed=5)
    zs = []
    for g in population:
        with torch.no_grad():
            _, cache = model.run_with_cache(g.inputs)
        zs.append(cache["blocks.1.attn.hook_z"].reshape(-1, model.cfg.n_heads, model.cfg.d_head))
    mean = torch.cat(zs).double().mean(0).float()
    torch.testing.assert_close(ia.mean_z(model, population, 1), mean)

    def replace(z, hook):
        return mean.expand_as(z).clone()

    errors = []
    for g in groups:
        with torch.no_grad():
            pred = model.run_with_hooks(g.inputs, fwd_hooks=[("blocks.1.attn.hook_z", replace)])
        errors.append(float(((pred[:, 2:] - g.targets[:, 2:]) ** 2).mean()))
    assert ia.mean_ablated_mse(model, groups, population, 1) == pytest.approx(np.mean(errors), rel=1e-5)
    assert ia.mse(model, groups) != pytest.approx(np.mean(errors), rel=1e-3)  # the hooks are gone again

    def replace_head0(z, hook):
        z = z.clone()
        z[:, :, 0] = mean[0]
        return z

    errors = []
    for g in groups:
        with torch.no_grad():
            pred = model.run_with_hooks(g.inputs, fwd_hooks=[("blocks.1.attn.hook_z", replace_head0)])
        errors.append(float(((pred[:, 2:] - g.targets[:, 2:]) ** 2).mean()))
    assert ia.mean_ablated_mse(model, groups, population, 1, heads_=[0]) == pytest.approx(np.mean(errors), rel=1e-5)


def test_identity_qk_edit_gives_projection_scores(setup):
    cfg, native, model, groups = setup
    layer, edited_heads = 1, [1]
    state = affine.state_dict_of(model)
    new = ia.with_identity_qk(state, layer, edited_heads, n_heads=cfg.arch.n_heads, seed=3)
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
        assert ia.qk_identity_score(edited, layer, space=space)[1] == pytest.approx(1.0, abs=1e-9)
        assert abs(ia.qk_identity_score(model, layer, space=space)[1]) < 0.999
    W_E = model.W_E.detach().double()
    for h in range(cfg.arch.n_heads):  # the [d_vector, d_vector] and [d_model, d_model] circuits, explicitly
        eig = np.linalg.eigvals((W_E @ circuits.folded_qk(model, layer)[h] @ W_E.T).numpy())
        assert ia.qk_identity_score(model, layer, space="vector")[h] == pytest.approx(eig.real.sum() / np.abs(eig).sum(), abs=1e-6)
        eig = np.linalg.eigvals(circuits.folded_qk(model, layer)[h].numpy())
        assert ia.qk_identity_score(model, layer)[h] == pytest.approx(eig.real.sum() / np.abs(eig).sum(), abs=1e-6)
    with pytest.raises(ValueError, match="space"):
        ia.qk_identity_score(model, layer, space="other")
    with pytest.raises(ValueError, match="out of range"):
        ia.with_identity_qk(state, layer, [5], n_heads=cfg.arch.n_heads)


def test_two_term_fit_and_alpha(setup):
    gen = np.random.default_rng(1)
    a_n, a_prev = gen.normal(size=(200, 6)), gen.normal(size=(200, 6))
    y = 0.7 * a_n + 1.61 * a_prev + 0.3 + 0.01 * gen.normal(size=(200, 6))
    u, v, r2 = ia.two_term_fit(y, a_n, a_prev)
    centred = [t - t.mean(0) for t in (y, a_n, a_prev)]
    (u2, v2), *_ = np.linalg.lstsq(np.stack([centred[1].ravel(), centred[2].ravel()], 1), centred[0].ravel(), rcond=None)
    assert (u, v) == pytest.approx((u2, v2)) and v / u == pytest.approx(2.3, rel=0.01) and r2 > 0.99
    _, native, model, groups = setup
    terms = ia.layer0_terms(model, groups)
    rows = sum(len(g) * (g.inputs.shape[1] - 2) for g in groups)
    assert all(t.shape == (rows, 6) for t in terms.values())
    np.testing.assert_allclose(terms["a_next"][:, :], np.concatenate([g.targets[:, 2:].reshape(-1, 6) for g in groups]), rtol=1e-6)
    with torch.no_grad():
        _, cache = model.run_with_cache(groups[0].inputs)
        r = cache["blocks.0.hook_resid_post"]
        lens = native.head(native.ln_out(r)).double()
    np.testing.assert_allclose(terms["after_l0"][: len(groups[0])], lens[:, 2:].reshape(-1, 6).numpy(), rtol=1e-5, atol=1e-6)
    y = 0.2 + a_n + 2.3 * a_prev + 0.01 * gen.normal(size=(200, 6))
    alpha, r2 = ia.alpha_fit(y, a_n, a_prev)
    c = [t - t.mean(0) for t in (y, a_n, a_prev)]
    (alpha2,), *_ = np.linalg.lstsq(c[2].reshape(-1, 1), (c[0] - c[1]).ravel(), rcond=None)
    assert alpha == pytest.approx(alpha2) and alpha == pytest.approx(2.3, abs=0.01) and r2 > 0.99
    table = ia.alpha_fits(terms)
    assert list(table["free v/u"]) == pytest.approx(list(table["free v"] / table["free u"]))
    for row, key in zip(table.itertuples(), ("after_l0", "a_next")):
        assert row.alpha == pytest.approx(ia.alpha_fit(terms[key], terms["a_n"], terms["a_prev"])[0])
    fig = ia.ov_scatter_figure({"x": ia.ov_scatter_data(model, ia.residual_vectors(model, groups[:1])[0])})
    assert len(fig.data) == 2
    assert set(ia.sequences_table(groups[0]).columns) == {"n", "value", "sequence"}
    curves = ia.conjecture_curves(model, groups[-1], 0, 2, {"seed": 2.3})
    assert set(curves.series) == {"a_n (input)", "after layer 0 (read out)", "a_n + 2.30 a_(n-1) (seed)", "a_(n+1) (target)"}
    a = groups[-1].inputs[0].double().numpy()
    guess = curves[curves.series == "a_n + 2.30 a_(n-1) (seed)"].value.to_numpy()
    np.testing.assert_allclose(guess, a[1:, 2] + 2.3 * a[:-1, 2], rtol=1e-12)

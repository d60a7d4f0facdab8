"""The affine-recurrence family: data as the seed's section 3.1, the model, determinism, hooks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from optim_hunter.core import training
from optim_hunter.zoo import affine

HOOKS = (
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_scale",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_mlp_out",
    "blocks.1.hook_resid_post",
    "ln_final.hook_scale",
)



def test_sequences_follow_the_seed_recipe():
    data = affine.AffineData()
    seqs = affine.sample_sequences(np.random.default_rng(0), 500, 9, data)
    assert seqs.terms.shape == seqs.raw_terms.shape == (500, 10, 40)
    assert seqs.inputs.shape == seqs.targets.shape == (500, 9, 40)
    assert seqs.inputs.dtype == torch.float32
    # a_0, c, d ~ U[-2, 2], all of them used
    assert np.abs(seqs.raw_terms[:, 0]).max() <= 2 and np.abs(seqs.raw_d).max() <= 2
    assert np.abs(seqs.c).max() <= 2 and seqs.c.min() < -1.9 and seqs.c.max() > 1.9
    # before scaling the recurrence holds exactly, term by term
    for n in range(1, 10):
        assert np.array_equal(seqs.raw_terms[:, n], seqs.c[:, None] * seqs.raw_terms[:, n - 1] + seqs.raw_d)
    # scaling divides terms and d by the same factor: the same c, and the longest term has norm in [1, 2]
    np.testing.assert_allclose(seqs.terms * seqs.scale[:, None, None], seqs.raw_terms, rtol=1e-12)
    np.testing.assert_allclose(seqs.d * seqs.scale[:, None], seqs.raw_d, rtol=1e-12)
    np.testing.assert_allclose(
        seqs.terms[:, 1:], seqs.c[:, None, None] * seqs.terms[:, :-1] + seqs.d[:, None], atol=1e-12
    )
    longest = np.linalg.norm(seqs.terms, axis=-1).max(1)
    assert longest.min() >= 1 and longest.max() <= 2
    assert longest.min() < 1.05 and longest.max() > 1.95  # U(1, 2), not a constant
    # inputs a_0 .. a_{L-1}, targets a_1 .. a_L
    torch.testing.assert_close(seqs.inputs[:, 1:], seqs.targets[:, :-1])


def test_a_given_c_is_used():
    seqs = affine.sample_sequences(np.random.default_rng(1), 4, 5, c=-0.5)
    assert np.all(seqs.c == -0.5)
    signs = np.sign(np.diff(seqs.raw_terms[:, :, 0], axis=1))
    assert np.all(signs[:, 1:] == -signs[:, :-1])  # c < 0 alternates the differences


def test_batches_are_a_function_of_the_step():
    cfg = affine.config("full")
    x1, y1 = affine.make_batch(cfg, 17)
    x2, y2 = affine.make_batch(cfg, 17)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape[0] == cfg.batch_size and x1.shape[2] == 40
    lengths = {affine.batch_length(cfg, s) for s in range(300)}
    assert lengths == set(range(3, 15))  # one length per batch, every length 3..14 drawn
    other = affine.make_batch(cfg, 18)[0]
    assert other.shape != x1.shape or not torch.equal(other, x1)
    reseeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=1))
    assert not torch.equal(affine.make_batch(reseeded, 17)[0][:, :3], x1[:, :3])


def test_held_out_groups_cover_every_length():
    groups = affine.held_out(3)
    assert [g.inputs.shape[1] for g in groups] == list(range(3, 15))
    assert all(len(g) == 3 for g in groups)
    assert np.array_equal(affine.held_out(3)[5].terms, groups[5].terms)


def test_configs_have_the_seed_architecture():
    for profile in ("full", "smoke"):
        cfg = affine.config(profile)
        a = cfg.arch
        assert (a.d_vector, a.d_model, a.d_head, a.d_mlp, a.n_heads, a.n_layers, a.n_ctx) == (
            40, 128, 64, 3072, 8, 3, 32)
        assert cfg.train.weight_decay == 0.01
        assert (cfg.data.min_length, cfg.data.max_length, cfg.data.loss_from) == (3, 14, 2)
    with pytest.raises(ValueError, match="d_vector"):
        affine.AffineConfig(arch=affine.AffineArch(d_vector=8), train=training.TrainConfig(steps=1))


def test_the_every_position_variant_changes_only_the_loss_and_stops_early():
    for base in (affine.config("full"), affine.config("smoke"), affine.tiny_config()):
        every = affine.every_position(base)
        assert every.data == dataclasses.replace(base.data, loss_from=0)
        assert every.arch == base.arch and every.batch_size == base.batch_size
        assert every.train.schedule_steps == base.train.steps and every.train.snapshots == 1
        assert every.train.steps <= max(1, base.train.steps // 5) or every.train.steps == base.train.eval_every
        if base.train.eval_every:  # it stops on an evaluation step of both runs
            assert every.train.steps % base.train.eval_every == 0
        assert dataclasses.replace(every.train, steps=base.train.steps, schedule_steps=0, snapshots=base.train.snapshots,
                                   warmup_steps=base.train.warmup_steps) == base.train
        for step in range(3):  # the same batches
            for x, y in zip(affine.make_batch(every, step), affine.make_batch(base, step)):
                assert torch.equal(x, y)
    assert (affine.every_position(affine.config("full")).train.steps, affine.config("full").train.steps) == (2000, 10000)
    # the first step's loss scores every position, from the same initial weights
    base = affine.tiny_config()
    every = affine.every_position(base)
    model = affine.build_model(base.arch, base.train.seed)
    x, y = affine.make_batch(base, 0)
    with torch.no_grad():
        prediction = affine.predict(model, x)
        expected = float(((prediction - y) ** 2).mean())
        assert float(affine.train_spec(every).loss(model, (x, y))) == pytest.approx(expected, rel=1e-6)
        assert float(affine.train_spec(base).loss(model, (x, y))) == pytest.approx(
            float(((prediction - y)[:, 2:] ** 2).mean()), rel=1e-6)
    # both evaluate the seed's scored positions (a_3 on), so their held-out MSEs compare
    assert affine.train_spec(every).evaluate(model, 0) == affine.train_spec(base).evaluate(model, 0)


def test_loss_scores_positions_from_two():
    pred = torch.zeros(2, 5, 3)
    target = torch.zeros(2, 5, 3)
    target[:, :2] = 100.0  # a_1, a_2 cannot be predicted and are not scored
    target[:, 4] = 3.0
    assert float(affine.scored_mse(pred, target)) == pytest.approx(9.0 / 3)


def test_fused_forward_matches_native_model_and_the_hooked_bridge():
    cfg = affine.tiny_config()
    model = affine.build_model(cfg.arch, seed=0).eval()
    with torch.no_grad():
        for p in model.parameters():  # beyond the init's zeros and ones
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x, _ = affine.make_batch(cfg, 0)
    with torch.no_grad():
        ours = affine.predict(model, x)
        reference = model(inputs_embeds=x @ model.tok_embed.weight)  # NativeModel adds W_pos itself
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
        hooked = affine.hooked(model.state_dict(), cfg)
        torch.testing.assert_close(hooked(x), reference, atol=1e-5, rtol=1e-5)
        _, cache = hooked.run_with_cache(x)
    missing = [h for h in HOOKS if h not in cache]
    assert not missing
    resid = x @ model.tok_embed.weight + model.pos.weight[: x.shape[1]]
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], resid)
    n, p = x.shape[:2]
    assert cache["blocks.0.attn.hook_z"].shape == (n, p, cfg.arch.n_heads, cfg.arch.d_head)
    assert hooked.W_E.shape == (cfg.arch.d_vector, cfg.arch.d_model)
    assert hooked.W_U.shape == (cfg.arch.d_model, cfg.arch.d_vector)
    for name, tensor in affine.state_dict_of(hooked).items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    with pytest.raises(ValueError, match="vectors must be"):
        hooked(torch.zeros(1, 3, cfg.arch.d_vector + 1))
    example = affine.example_input(hooked)
    assert example.shape == (1, cfg.arch.n_ctx, cfg.arch.d_vector)
    assert hooked(example).shape == example.shape


def test_a_few_training_steps_are_deterministic_and_resume_exactly(tmp_path):
    cfg = affine.tiny_config()
    spec = affine.train_spec(cfg)
    a = training.train(spec, cfg.train, progress=False)
    b = training.train(spec, cfg.train, progress=False)
    assert a.losses == b.losses and len(a.losses) == cfg.train.steps
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    stopped = training.train(spec, cfg.train, tmp_path, progress=False, stop_at=2)
    assert stopped.steps == 2
    resumed = training.train(spec, cfg.train, tmp_path, progress=False)
    assert resumed.losses == a.losses
    for (name, x), (_, y) in zip(a.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(x, y), name
    assert "mse" in a.history[-1] and np.isfinite(a.history[-1]["mse"])
    decayed = spec.param_groups(a.model)
    assert len(decayed) == 1 and decayed[0]["weight_decay"] == cfg.train.weight_decay


def test_training_lowers_the_loss_on_the_tiny_model():
    cfg = affine.tiny_config()
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=150, lr=3e-3, warmup_steps=10))
    result = training.train(affine.train_spec(longer), longer.train, progress=False)
    assert np.mean(result.losses[-20:]) < 0.5 * np.mean(result.losses[:5])

"""The induction-head families: Markov-chain data, smeared keys, alphas in checkpoints, hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim_hunter import zoo
from optim_hunter.core import checkpoints, training, transformer
from optim_hunter.zoo import induction


def tiny(layers: int = 2, smeared: bool = False, steps: int = 3) -> induction.InductionConfig:
    return induction.make_config(
        layers, smeared, steps=steps, snapshots=2, d_model=16, n_heads=2, n_ctx=24, batch_size=4
    )


def test_transition_matrices_are_stochastic_and_chains_follow_them():
    rng = np.random.default_rng(0)
    matrices = induction.transition_matrices(rng, 3, 5)
    np.testing.assert_allclose(matrices.sum(-1), 1.0)
    chain = induction.sample_chains(matrices[:1], 20_000, np.random.default_rng(1))[0]
    counts = np.zeros((5, 5))
    np.add.at(counts, (chain[:-1], chain[1:]), 1)
    empirical = counts / counts.sum(1, keepdims=True)
    np.testing.assert_allclose(empirical, matrices[0], atol=0.03)


def test_batches_are_deterministic_in_the_seed():
    a = induction.markov_batch(4, 16, 10, (1, 7))
    b = induction.markov_batch(4, 16, 10, (1, 7))
    c = induction.markov_batch(4, 16, 10, (1, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < 10


def test_bayes_and_unigram_losses_match_explicit_loops():
    tokens = induction.markov_batch(3, 30, 4, 5)
    bayes = induction.bayes_loss_by_index(tokens, 4)
    unigram = induction.unigram_loss_by_index(tokens, 4)
    for b in range(3):
        x = tokens[b].tolist()
        for t in range(29):
            pairs = [(x[i], x[i + 1]) for i in range(t)]
            n_ab = sum(1 for p in pairs if p == (x[t], x[t + 1]))
            n_a = sum(1 for p in pairs if p[0] == x[t])
            assert bayes[b, t] == pytest.approx(-np.log((n_ab + 1) / (n_a + 4)))
            seen = x[: t + 1]
            assert unigram[b, t] == pytest.approx(-np.log((seen.count(x[t + 1]) + 1) / (len(seen) + 4)))


def test_smear_matches_the_definition():
    k = torch.randn(2, 5, 3, 4)
    alpha = torch.tensor([-1.0, 0.0, 2.0])
    out = transformer.smear(k, alpha)
    s = torch.sigmoid(alpha)
    torch.testing.assert_close(out[:, 0], k[:, 0])
    for j in range(1, 5):
        for h in range(3):
            torch.testing.assert_close(out[:, j, h], s[h] * k[:, j, h] + (1 - s[h]) * k[:, j - 1, h])


def test_alpha_gets_gradients_and_round_trips_through_a_checkpoint(tmp_path):
    cfg = tiny(2, True)
    spec = induction.train_spec(cfg)
    model = spec.build(0)
    names = [n for n, _ in model.named_parameters()]
    assert "alpha" in names
    loss = spec.loss(model, spec.batch(0))
    loss.backward()
    assert model.alpha.grad is not None and model.alpha.grad.abs().sum() > 0
    result = training.train(spec, cfg.train, tmp_path / "run", progress=False)
    assert not torch.equal(result.model.alpha.detach(), torch.zeros_like(result.model.alpha))
    checkpoints.save_checkpoint(tmp_path / "ckpt", result.model.state_dict(), {})
    tensors, _ = checkpoints.load_checkpoint(tmp_path / "ckpt")
    torch.testing.assert_close(tensors["alpha"], result.model.alpha.detach())
    snapshots = sorted((tmp_path / "run" / "snapshots").glob("*.json"))
    assert len(snapshots) == 2
    reloaded = induction.load_module(tensors, cfg)
    tokens = spec.batch(5)
    torch.testing.assert_close(reloaded(tokens), result.model(tokens))


@pytest.mark.parametrize("smeared", [False, True])
def test_hooked_bridge_computes_the_trained_function(smeared):
    cfg = tiny(2, smeared)
    model = induction.build_model(cfg, 3)
    if smeared:
        with torch.no_grad():
            model.alpha.copy_(torch.tensor([[-2.0, 1.0], [0.5, -0.5]]))
    bridge = induction.hooked(model.state_dict(), cfg, "t")
    tokens = induction.markov_batch(3, cfg.n_ctx, cfg.n_states, 0)
    with torch.no_grad():
        expected = model(tokens)
        torch.testing.assert_close(bridge(tokens), expected, atol=1e-5, rtol=1e-5)
        logits, cache = bridge.run_with_cache(tokens)  # the permanent smear hook stays on
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
        with bridge.hooks(fwd_hooks=[]):  # a temporary-hooks context keeps it too
            torch.testing.assert_close(bridge(tokens), expected, atol=1e-5, rtol=1e-5)
    assert cache["blocks.1.attn.hook_pattern"].shape == (3, 2, cfg.n_ctx, cfg.n_ctx)
    if smeared:
        plain = induction.hooked(
            {k: v for k, v in model.state_dict().items() if k != "alpha"},
            induction.make_config(2, False, steps=3, snapshots=2, d_model=16, n_heads=2, n_ctx=24, batch_size=4),
        )
        with torch.no_grad():
            assert not torch.allclose(plain(tokens), expected, atol=1e-4)


def test_variants_are_zoo_families():
    for variant, (layers, smeared) in induction.VARIANTS.items():
        family = zoo.family(variant)
        assert family.name == variant and family in induction.FAMILIES
        full, smoke = family.config("full"), family.config("smoke")
        assert full.arch.n_layers == layers and full.smeared == smeared and full.arch.attn_only
        assert full.train.snapshots >= 100 and smoke.train.snapshots >= 20
    # trained identically: only depth and smearing differ between variants
    one, two = induction.config_for("attn-only-1l", "full"), induction.config_for("smeared-2l", "full")
    assert one.train == two.train and one.batch_size == two.batch_size and one.arch.d_model == two.arch.d_model

"""ICL measurements against independent computations on small models and synthetic curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim_hunter.interp import icl
from optim_hunter.zoo import induction


def test_scaled_indices_follow_the_seed():
    assert icl.scaled_indices(512) == (50, 500)
    assert icl.scaled_indices(128) == (12, 125)


def test_icl_score_and_sensitivity():
    loss = np.arange(20, dtype=float)[None].repeat(3, 0) * -0.1  # falls 0.1 per index
    assert icl.icl_score(loss, 2, 12) == pytest.approx([-1.0] * 3)
    assert icl.icl_score(loss, 2, 12, half_width=2) == pytest.approx([-1.0] * 3)
    table = icl.icl_sensitivity(loss[0], [(1, 5), (2, 18)])
    assert table[(1, 5)] == pytest.approx(-0.4) and table[(2, 18)] == pytest.approx(-1.6)


def test_log_index_derivative_of_a_log_linear_curve():
    x = np.log(np.arange(1, 41))
    loss = 2.0 - 0.3 * x
    np.testing.assert_allclose(icl.log_index_derivative(loss), -0.3, atol=1e-9)


def test_phase_change_window_finds_a_sigmoid_in_log_steps():
    steps = np.unique(np.geomspace(1, 10_000, 120).astype(int))
    scores = -0.5 / (1 + np.exp(-(np.log10(steps) - 3.0) * 8))  # falls around step 1000
    window = icl.phase_change_window(steps, scores, smoothing=1)
    assert window.contains(1000) and 500 < window.peak < 2000
    assert window.drop == pytest.approx(0.5 * 0.76, abs=0.1)  # half-rate points of a logistic
    assert window.total_drop > 0.45
    assert icl.crossing_step(steps, -scores) == pytest.approx(1000, rel=0.15)
    assert icl.crossing_step(steps, np.ones(len(steps))) is None


def test_pca_matches_the_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 12)), rng.normal(size=(5, 12)) + 1.0
    proj, explained = icl.per_token_loss_pca({"a": a, "b": b}, n_components=2)
    stacked = np.concatenate([a, b])
    centred = stacked - stacked.mean(0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    top = vectors[:, ::-1][:, :2]
    theirs = centred @ top
    ours = np.concatenate([proj["a"], proj["b"]])
    for c in range(2):  # equal up to sign
        assert np.allclose(ours[:, c], theirs[:, c], atol=1e-8) or np.allclose(ours[:, c], -theirs[:, c], atol=1e-8)
    np.testing.assert_allclose(explained, values[::-1][:2] / values.sum(), atol=1e-10)


def test_before_after_attribution():
    before, after = np.array([3.0, 2.0, 1.0]), np.array([2.0, 2.0, 0.0])
    assert icl.before_after_attribution(before - after, before, after) == pytest.approx(1.0)
    assert icl.before_after_attribution(np.array([0.0, 5.0, 0.0]), before, after) == pytest.approx(0.0)


def _small(smeared=False):
    cfg = induction.make_config(2, smeared, steps=3, snapshots=2, d_model=16, n_heads=2, n_ctx=20, batch_size=4)
    module = induction.build_model(cfg, 1)
    return cfg, module, induction.hooked(module.state_dict(), cfg, "t")


def _manual_losses(module, tokens, frozen=None, ablate=None):
    """An independent forward of the attention-only native model (no LayerNorm folding, explicit
    softmax), zeroing head `ablate` = (layer, head) and optionally using given patterns."""
    m = module.native
    batch, seq = tokens.shape
    h = m.tok_embed(tokens) + m.pos.weight[:seq]
    patterns = []
    mask = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
    for l, block in enumerate(m.layers):
        attn = block.attn
        x = block.ln1(h)
        q = attn.q(x).view(batch, seq, attn.n_heads, -1)
        k = attn.k(x).view(batch, seq, attn.n_heads, -1)
        v = attn.v(x).view(batch, seq, attn.n_heads, -1)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / attn.scale
        pattern = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        if frozen is not None:
            pattern = frozen[l]
        patterns.append(pattern)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        if ablate is not None and ablate[0] == l:
            z = z.clone()
            z[:, :, ablate[1]] = 0
        h = h + attn.o(z.reshape(batch, seq, -1))
    logits = m.head(m.ln_out(h))
    return icl.token_losses(logits, tokens), patterns


@torch.no_grad()
def test_full_and_pattern_preserving_ablations_match_a_manual_forward():
    cfg, module, bridge = _small()
    tokens = induction.markov_batch(3, cfg.n_ctx, cfg.n_states, 2)
    clean, patterns = _manual_losses(module, tokens)
    np.testing.assert_allclose(icl.token_losses(bridge(tokens), tokens), clean, atol=1e-5)
    for layer, head in [(0, 1), (1, 0)]:
        full, _ = _manual_losses(module, tokens, ablate=(layer, head))
        kept, _ = _manual_losses(module, tokens, frozen=patterns, ablate=(layer, head))
        np.testing.assert_allclose(icl.ablated_losses(bridge, tokens, layer, head, preserve_patterns=False), full, atol=1e-5)
        np.testing.assert_allclose(icl.ablated_losses(bridge, tokens, layer, head, preserve_patterns=True), kept, atol=1e-5)
    # a layer-0 head changes layer-1 patterns: the two ablations differ there
    assert not np.allclose(
        icl.ablated_losses(bridge, tokens, 0, 0, preserve_patterns=False),
        icl.ablated_losses(bridge, tokens, 0, 0, preserve_patterns=True), atol=1e-6,
    )


@torch.no_grad()
def test_head_ablations_table_and_head_scores():
    cfg, module, bridge = _small(smeared=True)
    tokens = induction.markov_batch(4, cfg.n_ctx, cfg.n_states, 3)
    table = icl.head_ablations(bridge, tokens, 2, 15)
    clean = icl.token_losses(bridge(tokens), tokens)
    assert table.clean_icl == pytest.approx(float(icl.icl_score(clean.mean(0), 2, 15)))
    direct = icl.ablated_losses(bridge, tokens, 1, 1, preserve_patterns=False)
    assert table.icl_full[1, 1] == pytest.approx(float(icl.icl_score(direct.mean(0), 2, 15)))
    np.testing.assert_allclose(table.delta_full[1, 1], (direct - clean).reshape(-1), atol=1e-6)
    # in the last layer nothing reads the patterns downstream: both ablations agree
    np.testing.assert_allclose(table.delta_full[1], table.delta_preserved[1], atol=1e-5)
    scores = icl.head_scores(bridge, tokens)
    for name in ("prefix_matching", "copying", "previous_token", "k_composition"):
        assert scores[name].shape == (2, 2)
    assert np.isnan(scores["k_composition"][0]).all() and np.isfinite(scores["k_composition"][1]).all()
    # previous-token score, independently: mean attention from i to i-1 in the cache
    _, cache = bridge.run_with_cache(tokens)
    pattern = cache["blocks.0.attn.hook_pattern"]
    manual = torch.stack([pattern[:, h].diagonal(-1, -2, -1).mean() for h in range(2)]).numpy()
    np.testing.assert_allclose(scores["previous_token"][0], manual, atol=1e-6)


class _InductionOracle:
    """Logits that put everything on the token that followed the current token's previous
    occurrence (uniform where it has none): a perfect induction head, written out."""

    def __init__(self, d_vocab: int):
        self.d_vocab = d_vocab

    def __call__(self, tokens):
        batch, pos = tokens.shape
        logits = torch.zeros(batch, pos, self.d_vocab)
        for b in range(batch):
            seq = tokens[b].tolist()
            for i in range(pos):
                earlier = [j for j in range(i) if seq[j] == seq[i]]
                if earlier:
                    logits[b, i, seq[earlier[-1] + 1]] = 30.0
        return logits


@pytest.mark.parametrize("bos", [None, 0])
def test_repeat_loss_drop_of_a_perfect_induction_head_and_of_a_constant_model(bos):
    vocab = 50
    drop = icl.repeat_loss_drop(_InductionOracle(vocab), vocab, length=8, repeats=3, batch=3, bos=bos)
    assert drop == pytest.approx(np.log(vocab), abs=1e-3)  # first copy uniform, repeats exact
    constant = lambda tokens: torch.zeros(*tokens.shape, vocab)  # noqa: E731
    assert icl.repeat_loss_drop(constant, vocab, length=8, bos=bos) == pytest.approx(0.0, abs=1e-6)


def test_head_scores_with_a_bos_token():
    cfg, _, bridge = _small()
    tokens = induction.markov_batch(2, cfg.n_ctx, cfg.n_states, 4)
    with_bos = icl.head_scores(bridge, tokens, bos=0)
    without = icl.head_scores(bridge, tokens)
    assert with_bos["prefix_matching"].shape == (2, 2)
    assert not np.allclose(with_bos["prefix_matching"], without["prefix_matching"])
    np.testing.assert_allclose(with_bos["previous_token"], without["previous_token"])


def test_snapshot_measurements_match_direct_computation(tmp_path, monkeypatch):
    from optim_hunter import zoo

    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path))
    name = "attn-only-2l"
    cfg = induction.make_config(2, False, steps=6, snapshots=3, d_model=16, n_heads=2, n_ctx=20, batch_size=4)
    monkeypatch.setattr(zoo.family(name), "config", lambda profile=None: cfg)
    tokens = induction.markov_batch(5, cfg.n_ctx, cfg.n_states, 11)
    steps = zoo.snapshots(name, "smoke")
    out = icl.snapshot_measurements(name, tokens, profile="smoke", early=2, late=15, half_width=1,
                                    head_steps=[steps[0], steps[-1]])
    assert list(out["steps"]) == steps and out["by_index"].shape == (3, cfg.n_ctx - 1)
    assert list(out["head_steps"]) == [steps[0], steps[-1]] and out["prefix_matching"].shape == (2, 2, 2)
    final = zoo.load(name, "smoke", progress=False)
    direct = icl.token_losses(final(tokens), tokens).mean(0)
    np.testing.assert_allclose(out["by_index"][-1], direct, atol=1e-5)
    np.testing.assert_allclose(out["icl"], icl.icl_score(out["by_index"], 2, 15, 1))
    scores = icl.head_scores(final, tokens[:16])
    np.testing.assert_allclose(out["prefix_matching"][-1], scores["prefix_matching"], atol=1e-6)
    subset = icl.snapshot_measurements(name, tokens, profile="smoke", early=2, late=15, half_width=1,
                                       steps=[steps[-1]], head_steps=[])
    assert list(subset["steps"]) == [steps[-1]] and "prefix_matching" not in subset
    np.testing.assert_allclose(subset["icl"], out["icl"][-1:])
    with pytest.raises(ValueError, match="not among the snapshots"):
        icl.snapshot_measurements(name, tokens, profile="smoke", early=2, late=15, head_steps=[10_000])
    with pytest.raises(ValueError, match="not among the snapshots"):
        icl.snapshot_measurements(name, tokens, profile="smoke", early=2, late=15, steps=[10_000])

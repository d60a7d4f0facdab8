"""Residual patching: identity when runs agree, exact source output at the last stage."""

import numpy as np
import pytest
import torch

from optim_hunter.analysis import patching


def last_logit(token):
    return lambda logits: float(logits[0, -1, token])


@pytest.fixture(scope="module")
def runs(chars):
    source = torch.tensor(chars("(1, 5)\n(2, 7)\n(3, ")["input_ids"])
    target = torch.tensor(chars("(3, ")["input_ids"])
    return source, target


def test_patching_a_run_into_itself_changes_nothing(tiny_bridge, runs):
    source, _ = runs
    metric = last_logit(9)
    clean = metric(tiny_bridge(source[None]))
    grid = patching.residual_patching(tiny_bridge, source, source, metric)
    np.testing.assert_allclose(grid, clean, rtol=1e-5, atol=1e-5)


def test_last_stage_last_position_gives_the_source_output(tiny_bridge, runs):
    source, target = runs
    metric = last_logit(9)
    grid = patching.residual_patching(tiny_bridge, source, target, metric, positions=[len(target) - 1])
    assert grid.shape == (tiny_bridge.cfg.n_layers + 1, 1)
    assert grid[-1, 0] == pytest.approx(metric(tiny_bridge(source[None])), abs=1e-4)
    # an earlier position at the last stage cannot change the last logits
    early = patching.residual_patching(tiny_bridge, source, target, metric, positions=[0])
    assert early[-1, 0] == pytest.approx(metric(tiny_bridge(target[None])), abs=1e-5)


def test_first_transfer():
    assert patching.first_transfer(np.array([0.0, 0.2, 0.7, 1.0]), clean=1.0, corrupt=0.0) == 2
    assert patching.first_transfer(np.array([0.0, 0.1]), clean=1.0, corrupt=0.0) is None


def test_source_shorter_than_target_is_an_error(tiny_bridge, runs):
    source, target = runs
    with pytest.raises(ValueError, match="at least as long"):
        patching.residual_patching(tiny_bridge, target, source, last_logit(0))


def test_source_cache_from_an_ablated_run(tiny_bridge, runs):
    from optim_hunter.analysis import ablation

    source, target = runs
    metric = last_logit(9)
    with torch.no_grad(), ablation.ablated(tiny_bridge, ["blocks.0.attn.hook_z"]):
        ablated_logits, cache = tiny_bridge.run_with_cache(source[None])
    grid = patching.residual_patching(tiny_bridge, source, target, metric,
                                      positions=[len(target) - 1], source_cache=cache)
    assert grid[-1, 0] == pytest.approx(metric(ablated_logits), abs=1e-4)


def test_batched_grid_matches_the_per_cell_loop(tiny_bridge, runs):
    source, target = runs
    metric = last_logit(9)
    reference = patching.residual_patching(tiny_bridge, source, target, metric)
    for batch_size in (5, 64):  # chunks that split a stage's cells, and one forward for all
        batched = patching.residual_patching_batched(tiny_bridge, source, target, metric,
                                                     batch_size=batch_size)
        np.testing.assert_allclose(batched, reference, rtol=1e-5, atol=1e-5)
    some = patching.residual_patching_batched(tiny_bridge, source, target, metric, positions=[0, 3])
    np.testing.assert_allclose(some, reference[:, [0, 3]], rtol=1e-5, atol=1e-5)


def test_batched_grid_from_an_ablated_source_cache(tiny_bridge, runs):
    from optim_hunter.analysis import ablation

    source, target = runs
    metric = last_logit(9)
    with torch.no_grad(), ablation.ablated(tiny_bridge, ["blocks.0.attn.hook_z"]):
        _, cache = tiny_bridge.run_with_cache(source[None])
    reference = patching.residual_patching(tiny_bridge, source, target, metric, source_cache=cache)
    batched = patching.residual_patching_batched(tiny_bridge, source, target, metric, source_cache=cache)
    np.testing.assert_allclose(batched, reference, rtol=1e-5, atol=1e-5)


def test_stage_residuals_match_the_cache(tiny_bridge, runs):
    source, _ = runs
    tokens = torch.stack([source, source.flip(0)])
    kept = patching.stage_residuals(tiny_bridge, tokens, [[2, 5], [0, 1]])
    assert kept.shape == (2, 2, 3, tiny_bridge.cfg.d_model)
    _, cache = tiny_bridge.run_with_cache(tokens)
    for s, name in enumerate(patching.stage_hooks(2)):
        torch.testing.assert_close(kept[1, 0, s], cache[name][1, 0])
        torch.testing.assert_close(kept[0, 1, s], cache[name][0, 5])


def test_unpatched_rows_are_untouched(tiny_bridge, runs):
    source, target = runs
    tokens = torch.stack([target, target])
    donors = torch.randn(2, tiny_bridge.cfg.d_model)
    logits = patching.patched_logits(tiny_bridge, tokens, [None, 1], [0, 2], donors)
    torch.testing.assert_close(logits[0], tiny_bridge(target[None])[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits[1], logits[0])

"""Residual patching: identity when runs agree, exact source output at the last stage."""

import numpy as np
import pytest
import torch

from optim_hunter.interp import patching


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
    from optim_hunter.interp import ablation

    source, target = runs
    metric = last_logit(9)
    with torch.no_grad(), ablation.ablated(tiny_bridge, ["blocks.0.attn.hook_z"]):
        ablated_logits, cache = tiny_bridge.run_with_cache(source[None])
    grid = patching.residual_patching(tiny_bridge, source, target, metric,
                                      positions=[len(target) - 1], source_cache=cache)
    assert grid[-1, 0] == pytest.approx(metric(ablated_logits), abs=1e-4)

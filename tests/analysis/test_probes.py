"""Probes: perfect on a linear target, nothing on noise; residual stages have the right shape."""

import numpy as np
import pytest
import torch

from optim_hunter.analysis import probes


def test_probe_recovers_linear_targets_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    assert probes.probe_r2(x, x @ rng.normal(size=8)) > 0.99
    assert probes.probe_r2(x, rng.normal(size=200)) < 0.1


def test_residual_stages(tiny_bridge, chars):
    tokens = [torch.tensor(chars(t)["input_ids"]) for t in ["Output: 1\n", "Output: 22\nOutput:"]]
    stages = probes.residuals(tiny_bridge, tokens)
    assert stages.shape == (2, tiny_bridge.cfg.n_layers + 1, tiny_bridge.cfg.d_model)
    _, cache = tiny_bridge.run_with_cache(tokens[1][None])
    np.testing.assert_allclose(stages[1, -1], cache["blocks.1.hook_resid_post"][0, -1].numpy(),
                               atol=1e-6)
    assert probes.stage_labels(2) == ["before L0", "before L1", "after L1"]


def test_too_few_samples():
    with pytest.raises(ValueError, match="needs >= 10 samples"):
        probes.probe_r2(np.ones((5, 2)), np.ones(5))

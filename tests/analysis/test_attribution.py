"""Logit-difference attribution against the model's own logits (an independent computation)."""

import numpy as np
import pytest
import torch

from optim_hunter.analysis import attribution


@pytest.fixture(scope="module")
def contrast(chars):
    return attribution.make_contrast(chars, "Output: 12\nOutput:", " 34", " 37")


def test_contrast_finds_the_deciding_token(chars, contrast):
    assert chars.decode(contrast.tokens.tolist()) == "Output: 12\nOutput: 3"
    assert chars.decode([contrast.token_a, contrast.token_b]) == "47"
    assert attribution.make_contrast(chars, "x:", " 1", " 1") is None


def test_final_layer_equals_the_logit_difference(tiny_bridge, contrast):
    values, labels = attribution.by_layer(tiny_bridge, contrast)
    assert labels[-1] == "final_post" and len(values) == tiny_bridge.cfg.n_layers + 1
    bias = tiny_bridge.b_U[contrast.token_a] - tiny_bridge.b_U[contrast.token_b]
    expected = attribution.logit_difference(tiny_bridge, contrast) - float(bias)
    assert values[-1] == pytest.approx(expected, abs=1e-4)


def test_components_sum_to_the_total(tiny_bridge, contrast):
    values, labels = attribution.by_component(tiny_bridge, contrast)
    assert "L1H3" in labels and "1_mlp_out" in labels and "embed" in labels
    total, _ = attribution.by_layer(tiny_bridge, contrast)
    assert values.sum() == pytest.approx(total[-1], abs=1e-4)


def test_summary(tiny_bridge, chars, contrast):
    other = attribution.make_contrast(chars, "Output: 5\nOutput:", " 1", " 2")
    table = attribution.summarize(tiny_bridge, [contrast, None, other])
    assert list(table.n.unique()) == [2] and list(table.label)[-1] == "final_post"
    # the final stage by hand from the model's own logits: mean and standard error of two values
    finals = []
    for c in (contrast, other):
        with torch.no_grad():
            logits = tiny_bridge(c.tokens[None])[0, -1]
        finals.append(float(logits[c.token_a] - logits[c.token_b] - tiny_bridge.b_U[c.token_a]
                            + tiny_bridge.b_U[c.token_b]))
    assert table["mean"].iloc[-1] == pytest.approx(np.mean(finals), abs=1e-4)
    assert table["sem"].iloc[-1] == pytest.approx(abs(finals[0] - finals[1]) / 2, abs=1e-4)
    components = attribution.summarize(tiny_bridge, [contrast, other], per="component")
    assert components["mean"].sum() == pytest.approx(np.mean(finals), abs=1e-4)
    assert np.isnan(attribution.summarize(tiny_bridge, [contrast])["sem"]).all()
    with pytest.raises(ValueError, match="no contrast"):
        attribution.summarize(tiny_bridge, [None])

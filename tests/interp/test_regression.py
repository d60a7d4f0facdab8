"""Regression-prompt analyses against hand-made attention and the model's own MLP outputs."""

import types

import numpy as np
import pytest
import torch

from optim_hunter import datasets, positions, prompts
from optim_hunter.interp import attribution, regression


@pytest.fixture(scope="module")
def prompt(chars):
    split = datasets.make_split("friedman1", 4, 0, round_to=2)
    text = prompts.format_prompt(split.x_train, split.y_train, split.x_query[0])
    tokens = torch.tensor(chars(text)["input_ids"])
    return split, tokens, positions.token_roles(chars, text)


def test_role_masses_sum_to_one(tiny_bridge, prompt):
    _, tokens, layout = prompt
    table = regression.attention_by_role(tiny_bridge, [tokens], [layout])
    sums = table.groupby(["layer", "head"])["mass"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)


class PatternStub:
    """One head whose answer-position attention is given; everything else is irrelevant."""

    def __init__(self, last_row):
        self.cfg = types.SimpleNamespace(n_layers=1, n_heads=1)
        self.last_row = torch.as_tensor(last_row, dtype=torch.float32)

    def run_with_cache(self, tokens, names_filter=None):
        pos = tokens.shape[-1]
        pattern = torch.zeros(1, 1, pos, pos)
        pattern[0, 0, -1] = self.last_row
        return None, {"blocks.0.attn.hook_pattern": pattern}


def test_knn_alignment_extremes(prompt):
    split, tokens, layout = prompt
    near = regression.nearness(split.x_train, split.x_query[0])
    row = np.zeros(len(tokens))
    for e, value in enumerate(np.exp(near)):  # attention grows with nearness
        row[layout.where("output_value", example=e)] = value
    row /= row.sum()
    assert regression.knn_alignment(PatternStub(row), [tokens], [layout], [near])[0, 0] == pytest.approx(1)
    flat = np.full(len(tokens), 1 / len(tokens))
    assert regression.knn_alignment(PatternStub(flat), [tokens], [layout], [near])[0, 0] == 0


def test_nearness_is_scale_free():
    x = np.array([[0.0, 0.0], [0.1, 100.0], [3.0, 0.0], [0.0, 1000.0]])
    near = regression.nearness(x, np.array([0.0, 0.0]))
    assert near[0] == 0 and np.argsort(-near).tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(regression.nearness(x * [1, 0.001], np.zeros(2)), near)


def test_neurons_sum_to_the_mlp_direct_effect(tiny_bridge, chars):
    contrast = attribution.make_contrast(chars, "Output: 12\nOutput:", " 34", " 37")
    table = regression.neuron_attribution(tiny_bridge, contrast, top=None)
    _, cache = tiny_bridge.run_with_cache(contrast.tokens[None])
    direction = attribution.answer_direction(tiny_bridge, contrast)
    scale = cache["ln_final.hook_scale"][0, -1]
    for l in range(tiny_bridge.cfg.n_layers):
        mlp = cache[f"blocks.{l}.hook_mlp_out"][0, -1] - tiny_bridge.b_out[l]
        expected = float(mlp @ direction / scale)
        assert table[table.layer == l]["effect"].sum() == pytest.approx(expected, abs=1e-4)
    assert len(regression.neuron_attribution(tiny_bridge, contrast, top=3)) == 3


def test_reference_predictions(prompt):
    split, _, _ = prompt
    refs = regression.reference_predictions(split, ["average", "last"])
    assert refs == {"true": split.y_query[0], "average": pytest.approx(split.y_train.mean()),
                    "last": split.y_train[-1]}


def test_answer_contrasts(chars):
    out = regression.answer_contrasts(chars, ["Output:", "Output:", "Output:"],
                                      [12.0, np.nan, 5.0], [13.0, 1.0, 5.0])
    assert chars.decode(out[0].tokens.tolist()) == "Output: 1" and out[1] is None and out[2] is None

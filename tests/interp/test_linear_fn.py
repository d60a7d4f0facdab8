"""y = 2x + 3 analyses: prompts, answer tokens, Bayesian fits and head activity."""

import numpy as np
import pandas as pd
import pytest
import torch

from optim_hunter.interp import linear_fn


def test_problems_never_show_the_query():
    for p in linear_fn.problems(50, 10, seed=1):
        assert p.x not in p.xs and len(set(p.xs)) == 10 and p.answer == 2 * p.x + 3
    assert linear_fn.problems(1, 3, seed=0)[0].text().count("\n") == 3
    with pytest.raises(ValueError, match="x_max"):
        linear_fn.problems(1, 10, x_max=5)


def test_format_pairs():
    assert linear_fn.format_pairs([1, 2], [5, 7], 4) == "(1, 5)\n(2, 7)\n(4, "
    assert linear_fn.Problem(np.array([1]), 4, 2, 3).text(0) == "(4, "
    with pytest.raises(ValueError):
        linear_fn.format_pairs([1], [], None)


def test_first_token(chars):
    assert chars.decode([linear_fn.first_token(chars, "(4, ", "11)")]) == "1"
    with pytest.raises(ValueError, match="adds no token"):
        linear_fn.first_token(chars, "(4, ", "")


def test_classify():
    p = linear_fn.Problem(np.array([1]), 10, 2, 3)
    assert [linear_fn.classify(v, p) for v in (23, 21, 40, None)] == ["exact", "≈2x", "other", "unparseable"]


def test_additive_fit_recovers_a_line():
    curve = pd.DataFrame({"examples": range(6), "log_odds": [9.0] + [0.5 * i - 1 for i in range(1, 6)]})
    fit = linear_fn.additive_fit(curve)
    assert fit == pytest.approx({"slope": 0.5, "intercept": -1.0, "r2": 1.0})


def test_bayesian_curve_runs(tiny_bridge, chars):
    curve = linear_fn.bayesian_curve(tiny_bridge, chars, linear_fn.problems(3, 4, x_max=9), 4)
    assert list(curve["examples"]) == [0, 1, 2, 3, 4]
    assert curve["p_correct"].between(0, 1).all() and "p_2x" in curve


def test_head_effects_match_transformer_lens(tiny_bridge, chars):
    text = "(1, 5)\n(2, 7)\n(3, "
    tokens = torch.tensor(chars(text)["input_ids"])
    answer = linear_fn.first_token(chars, text, "9)")
    activity = linear_fn.head_activity(tiny_bridge, tokens, np.arange(0, 12), answer)
    assert activity.shape == (2, 4, 2) and ((activity[..., 0] >= 0) & (activity[..., 0] <= 1)).all()
    # by hand: z @ W_O, centred and divided by the final LayerNorm's scale, through W_U
    _, cache = tiny_bridge.run_with_cache(tokens[None])
    direction = tiny_bridge.W_U[:, answer] - tiny_bridge.W_U.mean(1)
    scale = cache["ln_final.hook_scale"][0, -1]
    expected = np.zeros((2, 4))
    for l in range(2):
        out = torch.einsum("hd,hdm->hm", cache[f"blocks.{l}.attn.hook_z"][0, -1], tiny_bridge.W_O[l])
        out = out - out.mean(-1, keepdim=True)
        expected[l] = ((out / scale) @ direction).detach().numpy()
    np.testing.assert_allclose(activity[..., 1], expected, atol=1e-4)


def test_chapter_experiments_run_and_have_their_shapes(tiny_bridge, chars):
    probs = linear_fn.problems(3, 4, x_max=9)
    acc, kinds = linear_fn.accuracy(tiny_bridge, chars, probs)
    assert 0 <= acc <= 1 and kinds.sum() == 3
    grid = linear_fn.patch_grid(tiny_bridge, chars, probs[0])
    n_query = len(linear_fn.encode(chars, probs[0].text(0)))
    assert grid.shape == (3, n_query) and ((grid >= 0) & (grid <= 1)).all()
    # patching the last stage at the last position gives run A's own answer distribution
    assert grid[-1, -1] == pytest.approx(linear_fn.p_correct(tiny_bridge, chars, probs[0]), abs=1e-5)
    table = linear_fn.transferred(tiny_bridge, chars, probs)
    assert list(table.index) == linear_fn.stage_names(2) and np.allclose(table.sum(1), 1)
    positions = linear_fn.example_positions(chars, probs[0])
    examples_text = probs[0].text()[: -len(probs[0].text(0))]
    assert chars.decode(linear_fn.encode(chars, probs[0].text())[positions].tolist()) == examples_text
    rounds = linear_fn.redundancy_rounds(tiny_bridge, chars, probs, first_stage=2, corrupt_p=0.0)
    assert 1 <= len(rounds) <= 2 and list(rounds["ablated layers"].iloc[0]) == [1]
    with pytest.raises(ValueError, match="read"):
        linear_fn.patch_grid(tiny_bridge, chars, probs[0], read="nope")

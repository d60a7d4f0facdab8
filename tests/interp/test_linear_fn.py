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


def test_encode_answers_matches_the_text_and_marks_every_answer(chars):
    p = linear_fn.setting_problems(linear_fn.Setting(), 1, 3, x_max=9)[0]
    e = linear_fn.encode_answers(chars, p)
    assert chars.decode(e.tokens.tolist()) == p.text() + f"{p.answer})"
    for (a, b), x in zip(e.spans, [*p.xs, p.x]):
        assert chars.decode(e.tokens[a:b].tolist()) == f"{2 * x + 3})"
    assert e.query_end == len(chars(p.text())["input_ids"]) - 1


def test_increasing_order_and_formats():
    for fmt in linear_fn.FORMATS:
        for p in linear_fn.setting_problems(linear_fn.Setting(fmt, "increasing"), 5, 6):
            assert (np.diff([*p.xs, p.x]) > 0).all() and p.fmt.name == fmt
    with pytest.raises(ValueError, match="unknown setting"):
        linear_fn.Setting("nope")


def test_forced_scores_match_token_by_token_decoding(tiny_bridge, chars):
    """One teacher-forced forward scores each example as separate prompts would."""
    p = linear_fn.problems(1, 3, x_max=9)[0]
    log_p, exact = linear_fn.forced(tiny_bridge, [linear_fn.encode_answers(chars, p, with_query=False)])
    for i, x in enumerate(p.xs):
        ids = chars(p.text(i)[: -len(p.fmt.query(p.x))] + p.fmt.query(int(x)))["input_ids"]
        total, greedy_ok = 0.0, True
        for t in chars(f"{2 * x + 3})")["input_ids"]:
            probs = torch.softmax(tiny_bridge(torch.tensor([ids]))[0, -1], -1)
            total += float(torch.log(probs[t]))
            greedy_ok &= int(probs.argmax()) == t
            ids = ids + [t]
        assert log_p[0, i] == pytest.approx(total, abs=1e-4) and exact[0, i] == greedy_ok


def test_direct_effects_match_transformer_lens(tiny_bridge, chars):
    text = "(1, 5)\n(2, 7)\n(3, "
    tokens = torch.tensor(chars(text)["input_ids"])
    answer = linear_fn.first_token(chars, text, "9)")
    _, cache = tiny_bridge.run_with_cache(tokens[None])
    z = torch.stack([cache[f"blocks.{l}.attn.hook_z"][0, -1] for l in range(2)])[None]
    ours = linear_fn.direct_effects(tiny_bridge, z, cache["ln_final.hook_scale"][:, -1], torch.tensor([answer]))
    results = cache.stack_head_results(layer=-1, pos_slice=-1, apply_ln=True)[:, 0] * tiny_bridge.ln_final.w
    direction = tiny_bridge.W_U[:, answer] - tiny_bridge.W_U.mean(1)
    torch.testing.assert_close(ours[0].flatten(), results @ direction, atol=1e-4, rtol=1e-4)


def test_chapter_experiments_run_and_have_their_shapes(tiny_bridge, chars):
    tiny_bridge.tokenizer = chars
    cfg = linear_fn.Config(n_prompts=2, n_examples=4, mech_examples=3, n_patch=2, n_grid=1, n_ablate=2,
                           rounds=1, x_max=9)
    sweep = linear_fn.format_sweep(tiny_bridge, chars, cfg, name="tiny", contrasts={"same": tiny_bridge},
                                   settings=[linear_fn.Setting(), linear_fn.Setting(order="increasing")])
    assert len(sweep.curves) == 3 * 4 and sweep.best in (linear_fn.Setting(), linear_fn.Setting(order="increasing"))
    assert {"top1_accuracy", "bayes.additive"} <= set(sweep.claims())
    study = linear_fn.patch_study(tiny_bridge, chars, linear_fn.Setting(), cfg)
    m = study.measurement
    assert m.last.shape == (2, 3) and m.grid.shape[:2] == (1, 3) and m.heads.shape == (2, 2, 4, 2)
    # the last stage patched at every position that reads the answer gives run A's own answer
    np.testing.assert_allclose(m.last[:, -1], m.clean_log_p, atol=1e-4)
    assert set(study.claims()) == {"first_patch_stage", "first_patch_gives_about_2x"}
    rounds = linear_fn.redundancy_rounds(tiny_bridge, chars, study, cfg)
    assert rounds.table["round"].iloc[0] == 0 and "heads_before_failure" in rounds.claims()


def test_batched_patch_rows_match_the_reference_loop(tiny_bridge, chars):
    """measure's per-position grid equals patching.residual_patching (one forward per cell)."""
    p = linear_fn.problems(1, 3, x_max=9)[0]
    m = linear_fn.measure(tiny_bridge, chars, [p], n_grid=1)
    a, b, width, _ = linear_fn._layout(chars, p)
    start, stop = b.spans[-1]

    def metric(logits):
        scores = torch.log_softmax(logits[0, start - 1 : stop - 1], -1)
        return float(scores.gather(-1, b.tokens[start:stop, None]).sum())

    reference = linear_fn.patching.residual_patching(tiny_bridge, a.tokens, b.tokens, metric,
                                                     positions=range(width))
    np.testing.assert_allclose(m.grid[0], reference, atol=1e-4)

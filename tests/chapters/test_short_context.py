"""Tests of interp.short_context: the four-token induction data, the scores against an oracle that
applies the rule by hand, and the claim's verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from optim_hunter.chapters.induction_heads import short_context as sc

CFG = sc.ShortContextConfig(n_tokens=12, steps=20, eval_sequences=600, d_model=16, n_heads=2)


def test_sequences_follow_the_rule():
    seqs = sc.sample(CFG, 3000, np.random.default_rng(0))
    t, at = seqs.tokens.numpy(), seqs.match_at.numpy()
    assert t.shape == (3000, 5) and t.min() >= 0 and t.max() < CFG.n_tokens
    assert all(len(set(row[:3])) == 3 for row in t)  # x0, x1, x2 distinct
    for row, a in zip(t, at):
        if a >= 0:  # x3 repeats x_a; x4 is the token after that earlier occurrence
            assert row[3] == row[a] and row[4] == row[a + 1]
        else:  # x3 is new
            assert row[3] not in row[:3]
    assert abs((at >= 0).mean() - CFG.p_match) < 0.03
    assert np.bincount(at[at >= 0], minlength=3).min() > 0.8 * (at >= 0).sum() / 3  # each place about as often
    # no match: x4 is uniform over every token
    counts = np.bincount(t[at < 0, 4], minlength=CFG.n_tokens)
    assert counts.min() > 0.5 * counts.mean()
    assert seqs.inputs.shape == (3000, sc.N_CTX)


def test_batches_are_a_function_of_the_step_and_held_out_differs():
    assert torch.equal(sc.batch(CFG, 3), sc.batch(CFG, 3))
    assert not torch.equal(sc.batch(CFG, 3), sc.batch(CFG, 4))
    assert sc.batch(CFG, 0).shape == (CFG.batch_size, 5)
    assert not torch.equal(sc.held_out(CFG).tokens[: CFG.batch_size], sc.batch(CFG, 0))


def test_config_checks_and_bayes_loss():
    assert CFG.bayes_loss == pytest.approx(0.5 * math.log(12))
    with pytest.raises(ValueError, match="p_match"):
        sc.ShortContextConfig(p_match=1.0)
    with pytest.raises(ValueError, match="n_tokens"):
        sc.ShortContextConfig(n_tokens=3)
    assert sc.config("full").steps > sc.config("smoke").steps


class Oracle(torch.nn.Module):
    """Applies the rule by hand at the last position: the token after x3's earlier occurrence
    (certain), uniform without one; earlier positions uniform."""

    def forward(self, tokens):
        batch, pos = tokens.shape
        logits = torch.zeros(batch, pos, CFG.n_tokens)
        for b in range(batch):
            row = tokens[b].tolist()
            earlier = [i for i in range(pos - 1) if row[i] == row[-1]]
            if earlier:
                nxt = row[earlier[0] + 1]
                logits[b, -1, nxt] = 100.0
        return logits


def test_scores_of_an_oracle_match_the_bayes_loss():
    seqs = sc.held_out(CFG)
    scores = sc.last_token_scores(Oracle(), seqs)
    unmatched = float((~seqs.matched).double().mean())
    assert scores["loss on x4"] == pytest.approx(unmatched * math.log(CFG.n_tokens), rel=1e-6)
    assert scores["p(answer) after a match"] == pytest.approx(1.0)
    assert [scores[f"accuracy, x3 = x{i}"] for i in range(3)] == [1.0, 1.0, 1.0]


def test_next_token_loss_reads_four_tokens_and_scores_all_four_predictions():
    seen = []

    class Uniform(torch.nn.Module):
        def forward(self, tokens):
            seen.append(tokens.shape)
            return torch.zeros(*tokens.shape, CFG.n_tokens)

    loss = sc.next_token_loss(Uniform(), sc.batch(CFG, 0))
    assert seen == [(CFG.batch_size, sc.N_CTX)]
    assert float(loss) == pytest.approx(math.log(CFG.n_tokens))


def _result(one: float, two: float, per_position: int = 200) -> sc.ShortContextResult:
    """A result whose per-sequence answers give the 1-layer model accuracy `one` after a match at x0
    and the 2-layer model `two` after a match at x2 (every other match right)."""
    match_at = np.repeat([0, 1, 2, -1], per_position)
    correct = {}
    for model, position, accuracy in (("1 layer", 0, one), ("2 layers", 2, two)):
        right = np.ones(len(match_at), dtype=bool)
        where = np.nonzero(match_at == position)[0]
        right[where[round(accuracy * per_position):]] = False
        correct[model] = right
    columns = {"loss on x4": [1.5, 1.0], "p(answer) after a match": [0.5, 0.9]}
    for i in range(3):
        columns[f"accuracy, x3 = x{i}"] = [float(correct[m][match_at == i].mean()) for m in ("1 layer", "2 layers")]
    scores = pd.DataFrame(columns, index=pd.Index(["1 layer", "2 layers"], name="model"))
    attention = pd.DataFrame({"layer 1: x3 -> after the match": [0.2, 0.7], "layer 0: previous token": [0.9, 0.1]})
    return sc.ShortContextResult("full", CFG, scores, attention, 12.0, pd.DataFrame(correct), match_at)


@pytest.mark.parametrize("one, two, verdict", [
    (0.6, 1.0, "reproduced"),
    (0.6, 0.97, "inconclusive"),  # 0.97 on 200 matches: within sampling noise of 0.95
    (0.6, 0.9, "not_reproduced"),
    (0.99, 1.0, "not_reproduced"),  # the control did it too
])
def test_claim_needs_the_two_layer_model_everywhere_and_the_one_layer_model_not(one, two, verdict):
    (row,) = _result(one, two).claims()
    assert row.id == "induction.short_context.learned" and row.verdict == verdict
    assert row.measured == pytest.approx(min(two - sc.THRESHOLD, sc.THRESHOLD - one))
    assert row.interval[0] <= row.measured <= row.interval[1] and row.interval_kind.endswith("held-out sequences")
    assert f"{one:.3f}" in row.claim and f"{two:.3f}" in row.claim


def test_margin_and_numbers():
    result = _result(one=0.6, two=0.97)
    assert sc.learned_margin(result.correct["2 layers"].to_numpy(), result.correct["1 layer"].to_numpy(),
                             result.match_at) == pytest.approx(0.02)
    assert sc.LEARNED.test(0.0) and not sc.LEARNED.test(-0.01)
    numbers = result.numbers()
    assert numbers["short_gap_two"] == pytest.approx(1.0 - CFG.bayes_loss)
    assert numbers["short_induction_attention"] == pytest.approx(0.7)
    assert numbers["short_previous_token"] == pytest.approx(0.9)


def test_study_trains_both_models_and_measures_them(monkeypatch):
    monkeypatch.setattr(sc, "config", lambda profile=None: CFG)
    result = sc.study("smoke", progress=False)
    assert list(result.scores.index) == ["1 layer", "2 layers"]
    assert result.attention.shape == (CFG.n_heads, 2)
    assert ((result.attention >= 0) & (result.attention <= 1)).all().all()
    assert result.seconds > 0 and len(result.claims()) == 1
    for model in ("1 layer", "2 layers"):  # the per-sequence answers give the accuracies of the table
        for at in range(3):
            assert result.correct[model][result.match_at == at].mean() == pytest.approx(
                result.scores.loc[model, f"accuracy, x3 = x{at}"])
    again = sc.study("smoke", progress=False)  # deterministic
    pd.testing.assert_frame_equal(result.scores, again.scores)

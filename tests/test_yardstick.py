"""The numeric yardstick: reading numbers, y = 2x + 3 prompts, evaluate_icl against scripted
answers (an independent stand-in for a model), and its declared claims."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim_hunter import datasets, yardstick
from optim_hunter.zoo import numeric_tokenizer

TOK = numeric_tokenizer.build_tokenizer()


class ScriptedModel:
    """Logits that continue any prompt ending in `Output:` with ` 12.5` and a new block, and any
    prompt ending in `, ` with `-7)`: an independent stand-in for a model."""

    def __init__(self):
        index = numeric_tokenizer.vocab_index()
        self.vocab = numeric_tokenizer.VOCAB_SIZE
        self.next = {
            index["\nOutput:"]: index[" "],
            index[" "]: index["12"],
            index["12"]: index[".5"],
            index[".5"]: index["\n\nFeature 0: "],
            index[", "]: index["-7"],
            index["-7"]: index[")"],
        }

    def __call__(self, tokens):
        logits = torch.zeros(*tokens.shape, self.vocab)
        for (b, p), t in np.ndenumerate(tokens.numpy()):
            logits[b, p, self.next.get(int(t), 0)] = 1.0
        return logits


def test_read_numbers_decodes_greedily_and_stops_after_the_number():
    texts = ["Feature 0: 1.00\nOutput:", "(1, 5)\n(2, ", "Feature 0: 1.00\nFeature 1: 2.00\nOutput:", "no number"]
    assert yardstick.read_numbers(ScriptedModel(), TOK, texts) == [12.5, -7.0, 12.5, None]
    one_by_one = [yardstick.read_numbers(ScriptedModel(), TOK, [t])[0] for t in texts]
    batched = yardstick.read_numbers(ScriptedModel(), TOK, texts, batch_size=2)
    assert batched == one_by_one


def test_affine_prompts_never_show_the_query():
    texts, answers = yardstick.affine_prompts(50, 10, seed=3)
    for text, answer in zip(texts, answers):
        lines = text.split("\n")
        assert len(lines) == 11 and lines[-1].endswith(", ")
        query = int(lines[-1][1:-2])
        assert answer == 2 * query + 3
        assert all(int(line[1:].split(",")[0]) != query for line in lines[:-1])
        assert all(int(line.split(", ")[1][:-1]) == 2 * int(line[1:].split(",")[0]) + 3 for line in lines[:-1])
    with pytest.raises(ValueError):
        yardstick.affine_prompts(1, 10, x_max=5)


def test_scripted_answers_give_the_expected_metrics():
    result = yardstick.evaluate_icl(
        ScriptedModel(), TOK, seeds=range(2), examples=(1,), datasets_=("friedman2",), affine_count=4, progress=False
    )
    assert result.affine_top1 == 0.0  # -7 is never 2x + 3
    assert all(result.failures[d][1] == 0 for d in result.failures)
    for name in ("friedman2", *datasets.LINEAR_FAMILIES):
        splits = [datasets.make_split(name, 1, s, round_to=2) for s in range(2)]
        errors = [abs(12.5 - split.y_query[0]) for split in splits]
        assert result.mae[name][1] == pytest.approx(np.mean(errors))
        # the average baseline on the same problems: the one example's y, against the query's
        baseline = [abs(split.y_train[0] - split.y_query[0]) for split in splits]
        assert result.average_mae[name][1] == pytest.approx(np.mean(baseline))


def test_claims():
    result = yardstick.ICLResult(
        examples=(1, 25),
        mae={d: {1: 50.0, 25: 10.0} for d in (*datasets.LINEAR_FAMILIES, "friedman2")},
        average_mae={d: {1: 60.0, 25: 40.0} for d in (*datasets.LINEAR_FAMILIES, "friedman2")},
        failures={},
        n_problems=100,
        affine_examples=10,
        affine_top1=0.9,
        affine_failures=0,
        affine_prompts=200,
    )
    rows = yardstick.claims_of(result, profile="smoke")
    assert [row.id for row in rows] == [
        "zoo.numeric.mae_falls_with_examples",
        "zoo.numeric.linear_vs_average",
        "zoo.numeric.friedman2_vs_average",
        "zoo.numeric.affine_top1",
    ]
    assert all(row.verdict == "reproduced" for row in rows)
    assert rows[1].measured == pytest.approx(0.25)



def test_claims_fail_when_their_checks_fail():
    result = yardstick.ICLResult(
        examples=(1, 5, 25),
        mae={d: {1: 50.0, 5: 55.0, 25: 30.0} for d in (*datasets.LINEAR_FAMILIES, "friedman2")},
        average_mae={d: {1: 60.0, 5: 60.0, 25: 40.0} for d in (*datasets.LINEAR_FAMILIES, "friedman2")},
        failures={}, n_problems=10, affine_examples=10, affine_top1=0.5, affine_failures=0, affine_prompts=20,
    )
    verdicts = {row.id: row.verdict for row in yardstick.claims_of(result, profile="smoke")}
    assert verdicts == {
        "zoo.numeric.mae_falls_with_examples": "not_reproduced",  # 50 -> 55 rises
        "zoo.numeric.linear_vs_average": "not_reproduced",  # 0.75 > 1/3
        "zoo.numeric.friedman2_vs_average": "reproduced",  # 30 < 40
        "zoo.numeric.affine_top1": "not_reproduced",
    }
    assert result.bars() == {"mae_falls_with_examples": False, "linear_ratio_le_one_third": False,
                             "friedman2_beats_average": True, "affine_top1_ge_0.8": False}


def test_the_baseline_is_scored_on_the_problems_the_model_answered(monkeypatch):
    """A failed answer is counted, and leaves the model's and the baseline's MAE alike."""
    calls = []

    def answers(model, tokenizer, texts, **kwargs):
        calls.append(len(texts))
        return [None if i % 2 else 10.0 for i in range(len(texts))]  # every second one fails

    monkeypatch.setattr(yardstick, "read_numbers", answers)
    result = yardstick.evaluate_icl(object(), TOK, seeds=range(4), examples=(1,), affine_count=2, progress=False)
    assert calls  # the answers came from the stand-in
    splits = [datasets.make_split("friedman2", 1, s, round_to=2) for s in range(4)]
    names = list(result.mae)
    offset = names.index("friedman2") * 4  # the jobs run dataset by dataset, seeds in order
    answered = [splits[s] for s in range(4) if (offset + s) % 2 == 0]
    assert result.failures["friedman2"][1] == 4 - len(answered)
    assert result.mae["friedman2"][1] == pytest.approx(np.mean([abs(10.0 - s.y_query[0]) for s in answered]))
    assert result.average_mae["friedman2"][1] == pytest.approx(
        np.mean([abs(s.y_train.mean() - s.y_query[0]) for s in answered]))

"""The numeric yardstick: reading numbers, y = 2x + 3 prompts, evaluate_icl against scripted
answers (an independent stand-in for a model), and its declared claims."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim_hunter import zoo
from optim_hunter.analysis import yardstick
from optim_hunter.chapters.model_zoo import numeric_checks
from optim_hunter.data import datasets
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
    rows = numeric_checks.claims_of(result, profile="smoke")
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
    verdicts = {row.id: row.verdict for row in numeric_checks.claims_of(result, profile="smoke")}
    assert verdicts == {
        "zoo.numeric.mae_falls_with_examples": "not_reproduced",  # 50 -> 55 rises
        "zoo.numeric.linear_vs_average": "not_reproduced",  # 0.75 > 1/3
        "zoo.numeric.friedman2_vs_average": "reproduced",  # 30 < 40
        "zoo.numeric.affine_top1": "not_reproduced",
    }
    assert numeric_checks.bars(result) == {"mae_falls_with_examples": False, "linear_ratio_le_one_third": False,
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


def with_problems(mine: dict[str, list[float]], average: dict[str, list[float]], hits: tuple[bool, ...]):
    """A one-size result built from per-problem errors (its MAEs their means), as evaluate_icl keeps them."""
    return yardstick.ICLResult(
        examples=(25,), mae={d: {25: float(np.mean(v))} for d, v in mine.items()},
        average_mae={d: {25: float(np.mean(v))} for d, v in average.items()}, failures={}, n_problems=len(mine["friedman2"]),
        affine_examples=10, affine_top1=float(np.mean(hits)), affine_failures=0, affine_prompts=len(hits),
        errors={d: {25: list(v)} for d, v in mine.items()}, average_errors={d: {25: list(v)} for d, v in average.items()},
        affine_hits=hits)


def test_a_tie_with_the_average_baseline_is_inconclusive():
    """384 against 386 (the margin once passed by a strict <): the paired interval of the
    difference over the problems straddles 0, so the bar is neither met nor missed."""
    rng = np.random.default_rng(0)
    base = rng.uniform(100, 700, size=40)
    f2_mine = base + rng.normal(0, 60, size=40)
    f2_mine += 384 - f2_mine.mean()
    f2_base = base + (386 - base.mean())
    linear = {d: [1.0, 2.0, 3.0] for d in datasets.LINEAR_FAMILIES}
    result = with_problems({"friedman2": f2_mine, **linear}, {"friedman2": f2_base, **{d: [9.0, 12.0, 9.0] for d in linear}},
                           (True,) * 17 + (False,) * 3)
    rows = {row.id: row for row in numeric_checks.claims_of(result, profile="smoke")}
    f2 = rows["zoo.numeric.friedman2_vs_average"]
    assert f2.measured == pytest.approx(-2.0) and f2.verdict == "inconclusive"
    assert f2.interval[0] < 0 < f2.interval[1] and f2.n == 40 and "paired" in f2.interval_kind
    assert numeric_checks.bars(result)["friedman2_beats_average"] is False  # inconclusive is not met
    # 0.85 accuracy over 20 prompts: above the 0.8 bar, but the interval reaches below it
    affine = rows["zoo.numeric.affine_top1"]
    assert affine.measured == pytest.approx(0.85) and affine.interval[0] < 0.8 and affine.verdict == "inconclusive"
    # the linear ratio 2 / 10, its interval over the 18 linear problems wholly <= 1/3
    linear_row = rows["zoo.numeric.linear_vs_average"]
    assert linear_row.measured == pytest.approx(0.2) and linear_row.interval[1] <= 1 / 3
    assert linear_row.verdict == "reproduced" and linear_row.n == 18
    # numeric-icl is a task-trained model: its rows never decide a source claim; a pretrained one's do
    assert not any(row.decides_source for row in rows.values())
    assert all(row.decides_source for row in numeric_checks.claims_of(result, profile="smoke", model="smollm2-135m"))


def test_the_linear_ratio_interval_is_around_the_mean_of_family_means():
    """Families answered on different numbers of problems: the interval's point is linear_ratio."""
    mine = {d: [1.0, 3.0] for d in datasets.LINEAR_FAMILIES}
    mine["linear_1_1"] = [2.0, 2.0, 8.0, 0.0]
    average = {d: [10.0] * len(v) for d, v in mine.items()}
    result = with_problems({"friedman2": [1.0, 2.0], **mine}, {"friedman2": [3.0, 4.0], **average}, (True, False))
    interval = result.linear_ratio_interval()
    assert interval.low <= result.linear_ratio <= interval.high and interval.n == 14
    assert result.linear_ratio == pytest.approx(np.mean([np.mean(v) for v in mine.values()]) / 10)


def test_evaluate_icl_keeps_the_units_of_its_intervals():
    result = yardstick.evaluate_icl(
        ScriptedModel(), TOK, seeds=range(3), examples=(1,), datasets_=("friedman2",), affine_count=4, progress=False
    )
    assert result.affine_hits == (False,) * 4
    for name in ("friedman2", *datasets.LINEAR_FAMILIES):
        assert len(result.errors[name][1]) == len(result.average_errors[name][1]) == 3
        assert np.mean(result.errors[name][1]) == pytest.approx(result.mae[name][1])
    assert result.friedman2_interval().n == 3 and result.affine_interval().as_list() == [0.0, 0.0]
    assert zoo.is_pretrained("smollm2-135m") and zoo.is_pretrained("hf:gpt2")
    assert not zoo.is_pretrained("numeric-icl")

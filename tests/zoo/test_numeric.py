"""The numeric in-context learner's yardstick: reading numbers, evaluate_icl, claims."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim_hunter import zoo
from optim_hunter.zoo import numeric, numeric_tokenizer

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
    assert numeric.read_numbers(ScriptedModel(), TOK, texts) == [12.5, -7.0, 12.5, None]
    one_by_one = [numeric.read_numbers(ScriptedModel(), TOK, [t])[0] for t in texts]
    batched = numeric.read_numbers(ScriptedModel(), TOK, texts, batch_size=2)
    assert batched == one_by_one


def test_affine_prompts_never_show_the_query():
    texts, answers = numeric.affine_prompts(50, 10, seed=3)
    for text, answer in zip(texts, answers):
        lines = text.split("\n")
        assert len(lines) == 11 and lines[-1].endswith(", ")
        query = int(lines[-1][1:-2])
        assert answer == 2 * query + 3
        assert all(int(line[1:].split(",")[0]) != query for line in lines[:-1])
        assert all(int(line.split(", ")[1][:-1]) == 2 * int(line[1:].split(",")[0]) + 3 for line in lines[:-1])
    with pytest.raises(ValueError):
        numeric.affine_prompts(1, 10, x_max=5)


def test_evaluate_icl_on_a_tiny_model(cache):
    model = zoo.load("numeric-icl", "smoke", progress=False)
    result = numeric.evaluate_icl(model, seeds=range(3), examples=(2, 1), affine_count=6, progress=False)
    assert result.examples == (1, 2)
    assert set(result.mae) >= {"friedman2", "linear_1_1", "linear_3_3"}
    assert all(result.average_mae[d][k] > 0 for d in result.mae for k in (1, 2))
    assert set(result.bars()) == {
        "mae_falls_with_examples", "linear_ratio_le_one_third", "friedman2_beats_average", "affine_top1_ge_0.8",
    }
    assert 0 <= result.affine_top1 <= 1 and result.affine_prompts == 6
    assert {"linear_mae_1", "linear_mae_2", "linear_ratio", "friedman2_mae", "affine_top1"} <= result.summary().keys()


def test_scripted_answers_give_the_expected_metrics():
    result = numeric.evaluate_icl(
        ScriptedModel(), TOK, seeds=range(2), examples=(1,), datasets_=("friedman2",), affine_count=4, progress=False
    )
    assert result.affine_top1 == 0.0  # -7 is never 2x + 3
    assert all(result.failures[d][1] == 0 for d in result.failures)
    from optim_hunter import datasets

    errors = [abs(12.5 - datasets.make_split("friedman2", 1, s, round_to=2).y_query[0]) for s in range(2)]
    assert result.mae["friedman2"][1] == pytest.approx(np.mean(errors))


def test_claims():
    result = numeric.ICLResult(
        examples=(1, 25),
        mae={d: {1: 50.0, 25: 10.0} for d in (*numeric.datasets.LINEAR_FAMILIES, "friedman2")},
        average_mae={d: {1: 60.0, 25: 40.0} for d in (*numeric.datasets.LINEAR_FAMILIES, "friedman2")},
        failures={},
        n_problems=100,
        affine_examples=10,
        affine_top1=0.9,
        affine_failures=0,
        affine_prompts=200,
    )
    rows = numeric.claims_of(result, profile="smoke")
    assert [row.id for row in rows] == [
        "zoo.numeric.mae_falls_with_examples",
        "zoo.numeric.linear_vs_average",
        "zoo.numeric.friedman2_vs_average",
        "zoo.numeric.affine_top1",
    ]
    assert all(row.verdict == "reproduced" for row in rows)
    assert rows[1].measured == pytest.approx(0.25)


def test_number_aware_initialisation():
    ids, values = numeric.number_values()
    words = TOK.convert_ids_to_tokens(ids.tolist())
    value = dict(zip(words, values))
    assert value["436"] == 436.5 and value["-436"] == -436.5 and value["-0"] == -0.5 and value[".49"] == 490
    features = numeric.number_features(np.array([436.5, 437.5, 900.5, -436.5]))
    near, far, mirror = features[0] @ features[1], features[0] @ features[2], features[0] @ features[3]
    assert near > far and near > mirror
    import dataclasses

    cfg = dataclasses.replace(numeric.tiny_config(), number_init=1.0)
    plain, informed = numeric.transformer.build(cfg.arch, 0), numeric.build_model(cfg, 0)
    changed = ~torch.isclose(plain.tok_embed.weight, informed.tok_embed.weight).all(dim=1)
    assert set(np.flatnonzero(changed.numpy())) == set(ids.tolist())

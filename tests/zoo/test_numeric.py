"""The numeric in-context learner: number-aware initialisation, training data and loss, and the
yardstick on its tiny model."""

from __future__ import annotations

import numpy as np
import torch

from optim_hunter import zoo
from optim_hunter.analysis import yardstick
from optim_hunter.chapters.model_zoo import numeric_checks
from optim_hunter.zoo import numeric, numeric_tokenizer

TOK = numeric_tokenizer.build_tokenizer()


def test_evaluate_icl_on_a_tiny_model(cache):
    model = zoo.load("numeric-icl", "smoke", progress=False)
    result = yardstick.evaluate_icl(model, seeds=range(3), examples=(2, 1), affine_count=6, progress=False)
    assert result.examples == (1, 2)
    assert set(result.mae) >= {"friedman2", "linear_1_1", "linear_3_3"}
    for d in result.mae:  # the baseline is scored where the model answered: NaN where it never did
        for k in (1, 2):
            answered = 3 - result.failures[d][k]
            assert (result.average_mae[d][k] > 0) if answered else np.isnan(result.average_mae[d][k])
    assert set(numeric_checks.bars(result)) == {
        "mae_falls_with_examples", "linear_ratio_le_one_third", "friedman2_beats_average", "affine_top1_ge_0.8",
    }
    assert 0 <= result.affine_top1 <= 1 and result.affine_prompts == 6
    assert {"linear_mae_1", "linear_mae_2", "linear_ratio", "friedman2_mae", "affine_top1"} <= result.summary().keys()


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

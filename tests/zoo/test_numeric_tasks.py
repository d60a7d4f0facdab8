"""The numeric task prior: the prompts' own format, deterministic draws, exact answer masks."""

from __future__ import annotations

import numpy as np
import pytest

from optim_hunter.data import prompts
from optim_hunter.zoo import numeric, numeric_tasks, numeric_tokenizer

TOK = numeric_tokenizer.build_tokenizer()


def test_blocks_text_is_format_prompt_plus_the_answer():
    rng = np.random.default_rng(0)
    for _ in range(20):
        task = numeric_tasks.sample_task(rng, 6)
        text = numeric_tasks.blocks_text(task.x, task.y, task.round_to)
        prompt = prompts.format_prompt(task.x[:-1], task.y[:-1], task.x[-1], task.round_to)
        assert text == prompt + " " + prompts.format_number(task.y[-1], task.round_to)


def test_draws_are_deterministic_and_cover_the_prior():
    a = [numeric_tasks.sample_task(np.random.default_rng([5, i]), 10) for i in range(300)]
    b = [numeric_tasks.sample_task(np.random.default_rng([5, i]), 10) for i in range(300)]
    assert all(np.array_equal(s.x, t.x) and np.array_equal(s.y, t.y) for s, t in zip(a, b))
    assert {t.family for t in a} == set(numeric_tasks.FAMILIES)
    assert {t.x.shape[1] for t in a} == {1, 2, 3, 4, 5}
    assert {t.round_to for t in a} == {0, 1, 2}
    magnitudes = np.array([np.abs(t.y).max() for t in a])
    assert magnitudes.min() < 1 and magnitudes.max() > 1000  # Friedman #2-sized outputs occur
    assert all(np.isfinite(t.x).all() and np.isfinite(t.y).all() for t in a)


def test_linear_tasks_are_exactly_linear():
    rng = np.random.default_rng(1)
    tasks = [numeric_tasks.sample_task(rng, 40) for _ in range(200)]
    for task in (t for t in tasks if t.family == "linear"):
        design = np.column_stack([task.x, np.ones(len(task.x))])
        coef, *_ = np.linalg.lstsq(design, task.y, rcond=None)
        np.testing.assert_allclose(design @ coef, task.y, atol=1e-6 * (1 + np.abs(task.y).max()))


def test_affine_pairs():
    rng = np.random.default_rng(2)
    task = numeric_tasks.sample_affine(rng, 12)
    assert len(set(task.x.tolist())) == 12 and task.a != 0
    np.testing.assert_array_equal(task.y, task.a * task.x + task.b)
    assert numeric_tasks.format_pairs([1, 2], [5, 7], 4) == "(1, 5)\n(2, 7)\n(4, "
    with pytest.raises(ValueError):
        numeric_tasks.format_pairs([1, 2], [5])


def test_answer_mask_marks_exactly_the_answers():
    text = numeric_tasks.blocks_text(np.array([[1.5], [-2.0]]), np.array([-12.25, 1436.0]), 2)
    ids, mask = numeric_tasks.pack([text], 64, TOK)
    words = TOK.convert_ids_to_tokens(ids[0])
    assert [w for w, m in zip(words, mask[0]) if m] == [" ", "-12", ".25", "\n\nFeature 0: ", " ", "1436", ".00"]
    ids, mask = numeric_tasks.pack(["(3, -9)\n(4, 11)"], 20, TOK)
    words = TOK.convert_ids_to_tokens(ids[0])
    assert [w for w, m in zip(words, mask[0]) if m] == ["-9", ")", "11", ")"]
    assert not mask[0][ids[0] == TOK.pad_token_id].any()


def test_batches_depend_on_the_step_alone():
    cfg = numeric.tiny_config()
    first, again, other = numeric.make_batch(cfg, 3), numeric.make_batch(cfg, 3), numeric.make_batch(cfg, 4)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    assert not np.array_equal(first[0][0], other[0][0])
    (blocks, block_mask), (pairs, _) = first
    assert blocks.shape == (cfg.block_rows, cfg.arch.n_ctx) and pairs.shape == (cfg.pair_rows, cfg.pair_length)
    assert block_mask.any()


def test_the_prior_rejects_bad_weights():
    with pytest.raises(ValueError, match="probabilities"):
        numeric_tasks.TaskPrior(n_features=(0.5, 0.6))
    with pytest.raises(ValueError, match="n >= 1"):
        numeric_tasks.sample_task(np.random.default_rng(0), 0)


def test_the_warmup_prior_serves_the_first_steps():
    import dataclasses

    easy = numeric_tasks.TaskPrior(n_features=(1, 0, 0, 0, 0), families=(1, 0, 0, 0, 0), p_increasing=1.0)
    cfg = dataclasses.replace(numeric.tiny_config(), warmup_prior=easy, warmup_prior_steps=2)
    plain = numeric.make_batch(dataclasses.replace(cfg, warmup_prior=None), 0)
    assert not np.array_equal(numeric.make_batch(cfg, 0)[0][0], plain[0][0])  # step 0: the easy prior
    later = numeric.make_batch(cfg, 2)  # from step 2 on: the main prior
    assert np.array_equal(later[0][0], numeric.make_batch(dataclasses.replace(cfg, warmup_prior=None), 2)[0][0])
    words = TOK.convert_ids_to_tokens(numeric.make_batch(cfg, 0)[0][0][0])
    assert "\nFeature 1: " not in words  # one feature only


def test_increasing_maps():
    prior = numeric_tasks.TaskPrior(n_features=(0, 0, 1, 0, 0), families=(1, 0, 0, 0, 0), p_increasing=1.0, p_shift=0)
    rng = np.random.default_rng(3)
    for _ in range(20):
        task = numeric_tasks.sample_task(rng, 60, prior)
        coef, *_ = np.linalg.lstsq(np.column_stack([task.x, np.ones(60)]), task.y, rcond=None)
        assert (coef[:3] >= -1e-9).all()

"""The LLM regressor on a stub model: prompts, greedy decoding, batching, counted parse failures.

The stub is an "oracle" language model over characters: it reads the prompt and spells out a
chosen answer one character per step, so the expected predictions are known independently.
"""


import numpy as np
import pytest
import torch
from oracle_model import CharTokenizer, OracleModel

from optim_hunter.analysis import evaluation, llm_regressor, regressors
from optim_hunter.data import datasets, prompts


def test_predicts_what_the_model_says():
    split = datasets.make_split("friedman1", 6, 0, n_queries=5, round_to=2)
    reg = llm_regressor.LLMRegressor(OracleModel(), CharTokenizer(), max_new_tokens=10)
    pred = reg.fit(split.x_train, split.y_train).predict(split.x_query)
    expected = regressors.AverageBaseline().fit(split.x_train, split.y_train).predict(split.x_query)
    np.testing.assert_allclose(pred, np.round(expected, 2))
    assert reg.n_failed_ == 0 and all(a.startswith(" ") and "\n" not in a for a in reg.answers_)


def test_unparseable_answers_are_counted_not_zeroed():
    split = datasets.make_split("friedman1", 6, 0, n_queries=20, round_to=2)
    reg = llm_regressor.LLMRegressor(OracleModel(refuse_above=0.5), CharTokenizer())
    pred = reg.fit(split.x_train, split.y_train).predict(split.x_query)
    refused = split.x_query[:, 0] > 0.5
    assert 0 < refused.sum() < 20
    assert reg.n_failed_ == refused.sum()
    assert np.isnan(pred[refused]).all() and np.isfinite(pred[~refused]).all()
    assert {f.text for f in reg.failures_} == {" no idea"}


def test_batched_equals_one_prompt_at_a_time():
    splits = [datasets.make_split("friedman2", n, s, round_to=2) for n in (3, 4) for s in range(4)]
    one = llm_regressor.LLMRegressor(OracleModel(), CharTokenizer(), batch_size=1)
    many_model = OracleModel()
    many = llm_regressor.LLMRegressor(many_model, CharTokenizer(), batch_size=16)
    a, _ = llm_regressor.predict_splits(one, splits, progress=False)
    b, _ = llm_regressor.predict_splits(many, splits, progress=False)
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    assert max(shape[0] for shape in many_model.calls) > 1  # it really batched


def test_in_the_harness_with_failures():
    reg = llm_regressor.LLMRegressor(OracleModel(refuse_above=0.5), CharTokenizer())
    rows = llm_regressor.evaluate(reg, "oracle", "friedman1", n_examples=5, seeds=range(6),
                                  progress=False)
    assert len(rows) == 6 and set(rows.method) == {"oracle"}
    failed = rows[rows.failed]
    assert len(failed) > 0 and failed["error"].str.startswith("unparseable answer").all()
    table = evaluation.summarize(rows)
    assert table.iloc[0]["n_failed"] == len(failed)


def test_clear_errors():
    reg = llm_regressor.LLMRegressor(OracleModel(), None)
    with pytest.raises(ValueError, match="tokenizer"):
        reg.fit(np.ones((2, 2)), np.ones(2)).predict(np.ones((1, 2)))
    reg = llm_regressor.LLMRegressor(OracleModel(), CharTokenizer())
    with pytest.raises(ValueError, match="features|X"):
        reg.fit(np.ones((2, 2)), np.ones(2)).predict(np.ones((1, 3)))
    with pytest.raises(ValueError):
        reg.fit(np.ones((2, 2)), np.ones(3))


def test_prompts_longer_than_the_context_are_refused():
    model = OracleModel()
    model.cfg = type("Cfg", (), {"n_ctx": 100})()
    split = datasets.make_split("friedman2", 10, 0, round_to=2)
    reg = llm_regressor.LLMRegressor(model, CharTokenizer())
    with pytest.raises(ValueError, match="exceeds the model's context of 100"):
        reg.fit(split.x_train, split.y_train).predict(split.x_query)
    fits = llm_regressor.max_examples(CharTokenizer(), "friedman2", 400, max_new_tokens=12)
    assert fits >= 1
    longest = max(len(prompts.format_prompt(s.x_train, s.y_train, s.x_query[0]))
                  for s in (datasets.make_split("friedman2", fits, k, round_to=2) for k in range(5)))
    assert longest + 12 <= 400


def test_right_padding_is_exact_on_a_real_transformer(tiny_bridge, chars):
    texts = [prompts.format_prompt(s.x_train, s.y_train, s.x_query[0])
             for s in (datasets.make_split("friedman2", n, k, round_to=2) for n in (1, 2, 3) for k in (0, 1))]
    assert len({len(chars(t)["input_ids"]) for t in texts}) > 1  # really different lengths
    one = llm_regressor.greedy_answers(tiny_bridge, chars, texts, max_new_tokens=6, batch_size=1)
    many = llm_regressor.greedy_answers(tiny_bridge, chars, texts, max_new_tokens=6, batch_size=6)
    assert one.texts == many.texts


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hf_models_through_the_same_path(tiny_hf_models, arch):
    """A bridged Hugging Face model: batched answers equal one-at-a-time answers, failures counted."""
    from optim_hunter import zoo

    model = zoo.load(f"hf:{tiny_hf_models[arch]}")
    texts = [prompts.format_prompt(s.x_train, s.y_train, s.x_query[0])
             for s in (datasets.make_split("linear_1_1", n, k, round_to=1) for n in (1, 2) for k in (0, 1))]
    one = llm_regressor.greedy_answers(model, model.tokenizer, texts, max_new_tokens=4, batch_size=1)
    many = llm_regressor.greedy_answers(model, model.tokenizer, texts, max_new_tokens=4, batch_size=4)
    assert one.texts == many.texts
    assert many.parsed.n_failed == int((~many.parsed.ok).sum())  # a random model mostly fails: counted


def test_an_answer_cut_off_by_the_token_budget_is_a_failure_not_a_number():
    split = datasets.make_split("friedman2", 4, 0, n_queries=3, round_to=2)
    mean = prompts.format_number(np.mean(split.y_train))  # e.g. "523.17": the oracle's answer
    # A budget that ends inside the number (space + all but its last character): never a value.
    short = llm_regressor.LLMRegressor(OracleModel(), CharTokenizer(), max_new_tokens=len(mean))
    pred = short.fit(split.x_train, split.y_train).predict(split.x_query)
    assert np.isnan(pred).all() and short.n_failed_ == 3
    assert {f.reason for f in short.failures_} == {prompts.UNFINISHED}
    rows = llm_regressor.evaluate(short, "oracle", "friedman2", n_examples=4, seeds=range(2), progress=False)
    assert rows.failed.all() and rows["error"].str.contains("unfinished answer").all()
    # One more token reaches the newline: the same answer, now complete, is a number.
    full = llm_regressor.LLMRegressor(OracleModel(), CharTokenizer(), max_new_tokens=len(mean) + 2)
    assert np.isfinite(full.fit(split.x_train, split.y_train).predict(split.x_query)).all()


def test_finished_flags_must_match_the_answers():
    with pytest.raises(ValueError, match="2 answers but 1 finished flags"):
        prompts.parse_answers([" 1", " 2"], [True])
    batch = prompts.parse_answers([" 12", " 3"], [False, True])
    assert batch.n_failed == 1 and batch.items[0].reason == prompts.UNFINISHED and batch.values[1] == 3


def test_zero_features_are_refused_at_fit():
    reg = llm_regressor.LLMRegressor(OracleModel(), CharTokenizer())
    with pytest.raises(ValueError, match="0 feature\(s\).*minimum of 1 is required"):
        reg.fit(np.zeros((3, 0)), np.zeros(3))


def test_a_plain_module_with_a_short_position_table_gets_a_clear_error():
    class Positional(torch.nn.Module):  # no cfg: its context is only in its position table
        def __init__(self):
            super().__init__()
            self.pos = torch.nn.Embedding(50, 4)
            self.out = torch.nn.Linear(4, 128)

        def forward(self, tokens):
            return self.out(self.pos(torch.arange(tokens.shape[1]))).expand(tokens.shape[0], -1, -1)

    with pytest.raises(ValueError, match=r"input of \d+ tokens \(IndexError.*fewer in-context examples"):
        llm_regressor.greedy_answers(Positional(), CharTokenizer(), ["x" * 80], max_new_tokens=3)
    hf_like = Positional()
    hf_like.config = type("Config", (), {"max_position_embeddings": 50})()
    with pytest.raises(ValueError, match="exceeds the model's context of 50"):
        llm_regressor.greedy_answers(hf_like, CharTokenizer(), ["x" * 80], max_new_tokens=3)


def test_bf16_decoding_runs_under_autocast():
    """`precision="bf16"` wraps the forward passes in bfloat16 autocast (the model sees it on)."""
    seen = []

    class Recording(OracleModel):
        def __call__(self, tokens):
            seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
            return super().__call__(tokens)

    split = datasets.make_split("friedman1", 6, 0, n_queries=3, round_to=2)
    fp32 = llm_regressor.LLMRegressor(Recording(), CharTokenizer(), max_new_tokens=10)
    bf16 = llm_regressor.LLMRegressor(Recording(), CharTokenizer(), max_new_tokens=10, precision="bf16")
    a = fp32.fit(split.x_train, split.y_train).predict(split.x_query)
    assert seen and not any(seen)
    seen.clear()
    b = bf16.fit(split.x_train, split.y_train).predict(split.x_query)
    assert seen and all(seen)
    np.testing.assert_array_equal(a, b)  # the oracle's answers do not depend on precision

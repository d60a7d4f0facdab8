"""The competence map against stub language models whose answers are known independently: a model
that fits the examples by least squares learns in context (it beats its shuffled-y control and the
mean baseline); one that answers the mean of the outputs does not; one that refuses fails to parse."""

import json
import re
import types

import numpy as np
import pandas as pd
import pytest
import torch

from optim_hunter.analysis import llm_regressor
from optim_hunter.chapters.competence import competence
from optim_hunter.chapters.competence.competence import Cell
from optim_hunter.data import prompts
from optim_hunter.report.claim_rows import Recording

AT = Recording("competence", "smoke", "stub")


class AsciiTokenizer:
    """One token per ASCII character; a toy chat template."""

    chat_template = "toy"

    def __call__(self, text):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"


def _examples(prompt: str):
    blocks = [b for b in prompt.split("\n\n") if "Feature 0:" in b]
    xs = [[float(v) for v in re.findall(r"Feature \d+: (-?[\d.]+)", b)] for b in blocks]
    ys = [float(m) for b in blocks[:-1] for m in re.findall(r"Output: (-?[\d.]+)", b)]
    return np.array(xs[:-1]), np.array(ys), np.array(xs[-1])


class StubModel(torch.nn.Module):
    """Spells out `answer(x_train, y_train, x_query)` (or `refuse`) after the prompt's last `Output:`."""

    def __init__(self, answer=None, round_to=0):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.answer, self.round_to = answer, round_to

    def forward(self, tokens):
        tok = AsciiTokenizer()
        logits = torch.full((*tokens.shape, 128), -1e9)
        for row in range(tokens.shape[0]):
            text = tok.decode(tokens[row].tolist())
            start = text.rfind("Output:") + len("Output:")
            prompt = text[:start]
            x, y, q = _examples(prompt)
            said = " no idea!" if self.answer is None else " " + prompts.format_number(self.answer(x, y, q),
                                                                                        self.round_to) + "\n"
            for p in range(start - 1, tokens.shape[1]):
                generated = text[start:p + 1]
                nxt = said[len(generated)] if len(generated) < len(said) else "\n"
                logits[row, p, ord(nxt)] = 0.0
        return logits


def least_squares(x, y, q):
    design = np.c_[x, np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(np.r_[q, 1.0] @ coef)


def mean_of_outputs(x, y, q):
    return float(np.mean(y))


CELLS = [Cell("affine_int", 4), Cell("add_c", 8), Cell("affine_int", 8, "chat", "increasing")]


@pytest.fixture(scope="module")
def fitted():
    return competence.measure(StubModel(least_squares), AsciiTokenizer(), CELLS, n_prompts=10, recording=AT)


@pytest.fixture(scope="module")
def averaged():
    return competence.measure(StubModel(mean_of_outputs, round_to=2), AsciiTokenizer(), CELLS, n_prompts=10, recording=AT)


def test_tasks_are_what_they_say():
    for seed in range(5):
        s = competence.make_split("copy", 6, seed)
        assert (s.y_train == s.x_train[:, 0]).all() and s.y_query[0] == s.x_query[0, 0]
        s = competence.make_split("add_c", 6, seed)
        c = s.y_train - s.x_train[:, 0]
        assert len(set(c)) == 1 and 1 <= c[0] <= 9 and s.y_query[0] - s.x_query[0, 0] == c[0]
        s = competence.make_split("affine_int", 6, seed)
        a, b = np.polyfit(s.x_train[:, 0], s.y_train, 1)
        assert round(a) in range(2, 6) and round(b) in range(1, 10)
        assert s.y_query[0] == pytest.approx(a * s.x_query[0, 0] + b)
    s = competence.make_split("friedman2", 4, 0)
    assert s.x_train.shape == (4, 4) and (np.round(s.y_train, 2) == s.y_train).all()
    with pytest.raises(ValueError, match="unknown task"):
        competence.make_split("sine", 4, 0)


def test_controls_keep_the_numbers_and_break_the_relation():
    for seed in range(20):
        split = competence.make_split("affine_int", 5, seed)
        control = competence.shuffled(split, seed)
        assert sorted(control.y_train) == sorted(split.y_train)
        assert not (control.y_train == split.y_train).all()
        assert (control.x_train == split.x_train).all() and control.y_query == split.y_query
    drawn = competence.make_split("linear_1_1", 8, 0)
    up = competence.ordered(drawn, "increasing")
    assert (np.diff(up.x_train[:, 0]) >= 0).all()
    assert set(zip(up.x_train[:, 0], up.y_train)) == set(zip(drawn.x_train[:, 0], drawn.y_train))


def test_chat_format_wraps_the_plain_prompt():
    split = competence.make_split("copy", 3, 0)
    plain = competence.prompt_text(split, 0)
    chat = competence.prompt_text(split, 0, "chat", AsciiTokenizer())
    assert plain in chat and chat.endswith("<assistant>Output:")
    with pytest.raises(ValueError, match="chat template"):
        competence.prompt_text(split, 0, "chat", None)


def test_least_squares_model_learns_in_context(fitted):
    table = fitted.table
    assert table.learns.all() and (table.failed == 0).all()
    assert (table.exact == 1).all() and (table.error == 0).all()  # the exact line, every time
    assert (table.rs_high < 0).all() and (table.rm_high < 0).all()
    assert fitted.chosen == Cell("affine_int", 4)  # the hardest task, in the plain format and drawn order
    rows = {r.id: r for r in fitted.claims()}
    assert len(rows) == 2 * len(CELLS)
    assert all(r.verdict == "reproduced" for r in rows.values())


def test_mean_model_does_not(averaged):
    table = averaged.table
    assert not table.learns.any() and averaged.chosen is None
    np.testing.assert_allclose(table.real_minus_mean, 0, atol=1e-3)  # the mean, to two decimals
    # the mean of shuffled outputs is the same mean: the control answers the same
    np.testing.assert_allclose(table.real_minus_shuffled, 0, atol=1e-12)
    np.testing.assert_allclose(table.error, 1.0, rtol=1e-2)
    verdicts = {r.id: r.verdict for r in averaged.claims()}
    assert "reproduced" not in verdicts.values()
    assert {v for k, v in verdicts.items() if k.endswith("shuffled")} == {"not_reproduced"}  # [0, 0]


def test_refusals_are_counted_never_scored():
    found = competence.measure(StubModel(None), AsciiTokenizer(), CELLS[:1], n_prompts=4, recording=AT)
    row = found.table.iloc[0]
    assert row.failed == 4 and row.failed_shuffled == 4 and not row.learns and np.isnan(row.error)
    assert found.prompts.real.isna().all() and found.prompts.real_text.str.startswith(" no idea!").all()
    assert all(r.verdict == "measured" for r in found.claims())


def test_best_ranks_learning_cells_first_and_keeps_the_rest(fitted, averaged):
    import pandas as pd

    mixed = competence.CompetenceMap(pd.concat([fitted.prompts[fitted.prompts.task == "add_c"],
                                                averaged.prompts[averaged.prompts.task == "affine_int"]]), AT)
    best = mixed.best
    assert best.learns.tolist() == [True, False, False] and best.task.iloc[0] == "add_c"
    assert mixed.chosen == Cell("add_c", 8)
    fig = mixed.figure()
    assert len(fig.data) == 2


def test_the_map_is_cached_and_read_back(tmp_path, monkeypatch, fitted):
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path))
    monkeypatch.setattr(competence, "book_grid", lambda profile: (CELLS[:2], 3))
    stub = StubModel(least_squares)
    stub.tokenizer = AsciiTokenizer()
    first = competence.run("stub", "smoke", recording=AT, load=lambda: stub)
    path = competence.cache_path("stub", "smoke")
    assert path.exists() and len(json.loads(path.read_text())["prompts"]) == 2 * 3

    def no_load():
        raise AssertionError("the cached map must be read, not measured again")

    again = competence.run("stub", "smoke", recording=AT, load=no_load)
    # exactly the measuring process's numbers: two builds sharing one cache (one measures, one reads)
    # must write identical claims (JSON of pandas rounds to 10 digits unless told otherwise)
    pd.testing.assert_frame_equal(again.table, first.table, check_exact=True)
    pd.testing.assert_frame_equal(again.prompts, first.prompts, check_exact=True)
    assert [r.__dict__ for r in again.claims()] == [r.__dict__ for r in first.claims()]
    assert not list(path.parent.glob("*.tmp"))


def test_a_map_from_answers_given_is_the_map_measure_computes(fitted):
    """`map_prompts` + `from_answers` (the two halves of `measure`, around the decoding) give the same
    map as `measure`, cell for cell: the real and shuffled answers stay paired with their prompt."""
    frame, texts = competence.map_prompts(CELLS, 10, AsciiTokenizer())
    answers = llm_regressor.greedy_answers(StubModel(least_squares), AsciiTokenizer(), texts, max_new_tokens=10,
                                           batch_size=32, stop=None)
    again = competence.from_answers(frame, answers, AT)
    pd.testing.assert_frame_equal(again.prompts, fitted.prompts)
    assert list(again.table.learns) == list(fitted.table.learns)
    # the real and shuffled answers of each prompt swapped: the relation is gone, no cell learns
    swap = lambda seq: [item for pair in zip(seq[1::2], seq[0::2]) for item in pair]  # noqa: E731
    swapped = types.SimpleNamespace(texts=swap(answers.texts), values=np.array(swap(list(answers.values))))
    assert not competence.from_answers(frame, swapped, AT).table.learns.any()

"""The numeric tokenizer: lossless, place-value chunks, and prompts tokenise as prefixes of training text."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optim_hunter.data import prompts
from optim_hunter.zoo import numeric_tasks, numeric_tokenizer

TOK = numeric_tokenizer.build_tokenizer()


def pieces(text: str) -> list[str]:
    ids = TOK(text)["input_ids"]
    assert ids[0] == TOK.bos_token_id  # like Llama's, the tokenizer adds BOS
    return TOK.convert_ids_to_tokens(ids[1:])


@pytest.mark.parametrize(
    "text,expected",
    [
        ("1436.49", ["1436", ".49"]),
        ("-1436.49", ["-1436", ".49"]),
        ("10005", ["10", "005"]),
        ("-1234567.5", ["-1234", "567", ".5"]),
        ("-12345678", ["-12", "345", "678"]),
        ("1999", ["1999"]),
        ("2000", ["2", "000"]),
        ("-0.07", ["-0", ".07"]),
        ("12.345", ["12", ".34", "5"]),
        ("Output: -336.41", ["Output:", " ", "-336", ".41"]),
        ("Feature 0: 1.00\nFeature 1: -2.50\nOutput:", ["Feature 0: ", "1", ".00", "\nFeature 1: ", "-2", ".50", "\nOutput:"]),
        ("Output: 3.00\n\nFeature 0: 4.00", ["Output:", " ", "3", ".00", "\n\nFeature 0: ", "4", ".00"]),
        ("(1, 5)\n(-2, -7)\n(4, ", ["(", "1", ", ", "5", ")", "\n(", "-2", ", ", "-7", ")", "\n(", "4", ", "]),
        ("Feature 40: 1", ["F", "e", "a", "t", "u", "r", "e", " ", "40", ":", " ", "1"]),
    ],
)
def test_pieces(text, expected):
    assert pieces(text) == expected


def test_unknown_characters_and_round_trip():
    text = "Predict: é!\tFeature 40: 1.00"
    ids = TOK(text)["input_ids"]
    assert TOK.unk_token_id in ids  # é
    assert TOK.decode(ids, skip_special_tokens=True) == text.replace("é", "")


def test_integer_tokens_are_in_value_order():
    ids = [numeric_tokenizer.integer_token_id(v) for v in (-1999, -1, 0, 7, 1999)]
    assert TOK.convert_ids_to_tokens(ids) == ["-1999", "-1", "0", "7", "1999"]
    assert TOK.convert_ids_to_tokens([numeric_tokenizer.integer_token_id(0, negative=True)]) == ["-0"]
    block = numeric_tokenizer.integer_slice()
    words = numeric_tokenizer.VOCAB[block]
    assert len(words) == 4000 and words[:2] == ("-1999", "-1998") and words[1999:2001] == ("-0", "0")
    with pytest.raises(ValueError):
        numeric_tokenizer.integer_token_id(2000)


def test_hugging_face_interface():
    batch = TOK(["Output:", "Feature 0: 2.00"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 4)
    assert batch["input_ids"][0, -1] == TOK.pad_token_id
    assert len(TOK) == numeric_tokenizer.VOCAB_SIZE


numbers = st.floats(min_value=-200000, max_value=200000, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.lists(numbers, min_size=3, max_size=3), min_size=2, max_size=6),
    round_to=st.integers(0, 3),
)
def test_a_prompt_tokenises_as_a_prefix_of_its_training_text(rows, round_to):
    data = np.array(rows)
    x, y = data[:, :2], data[:, 2]
    full = numeric_tasks.blocks_text(x, y, round_to)
    prompt = prompts.format_prompt(x[:-1], y[:-1], x[-1], round_to)
    assert full.startswith(prompt)
    full_ids, prompt_ids = TOK(full)["input_ids"], TOK(prompt)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    assert TOK.decode(full_ids, skip_special_tokens=True) == full
    assert TOK.unk_token_id not in full_ids


@settings(max_examples=40, deadline=None)
@given(xs=st.lists(st.integers(-999, 9999), min_size=2, max_size=8), a=st.integers(-9, 9), b=st.integers(-99, 99))
def test_pairs_prompts_are_prefixes_too(xs, a, b):
    ys = [a * x + b for x in xs]
    text = numeric_tasks.format_pairs(xs, ys)
    prompt = numeric_tasks.format_pairs(xs[:-1], ys[:-1], xs[-1])  # ends in "(x, "
    assert text.startswith(prompt)
    prompt_ids = TOK(prompt)["input_ids"]
    assert TOK(text)["input_ids"][: len(prompt_ids)] == prompt_ids

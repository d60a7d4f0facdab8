"""Prompt format and answer parsing: round trips, and failures that are counted, never zeroed."""

import math

import jaxtyping
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optim_hunter.data import prompts

finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(value=finite, round_to=st.integers(min_value=0, max_value=6))
def test_format_parse_round_trip(value, round_to):
    text = prompts.format_number(value, round_to)
    parsed = prompts.parse_number(" " + text + "\n\nFeature 0: 1.00")
    assert parsed.ok
    assert parsed.value == pytest.approx(round(value, round_to), abs=10.0 ** -round_to)
    assert "e" not in text.lower()  # never scientific notation
    assert prompts.format_number(parsed.value, round_to) == text  # one spelling per value


def test_no_negative_zero():
    assert prompts.format_number(-0.001, 2) == "0.00"


def test_prompt_layout():
    x = np.array([[1.0, 2.5], [3.0, 4.0]])
    y = np.array([10.0, 20.25])
    text = prompts.format_prompt(x, y, np.array([5.0, 6.0]))
    assert text == (
        "Feature 0: 1.00\nFeature 1: 2.50\nOutput: 10.00\n\n"
        "Feature 0: 3.00\nFeature 1: 4.00\nOutput: 20.25\n\n"
        "Feature 0: 5.00\nFeature 1: 6.00\nOutput:"
    )
    assert prompts.format_prompt(x, y, np.array([5.0, 6.0]), round_to=0).endswith(
        "Feature 1: 6\nOutput:"
    )
    assert prompts.format_prompt(x, y, np.array([5.0, 6.0]), instruction="Go.").startswith("Go.\n\n")


@pytest.mark.parametrize(
    "x, y, q",
    [
        (np.ones((2, 2)), np.ones(3), np.ones(2)),
        (np.ones((2, 2)), np.ones(2), np.ones(3)),
        (np.ones(2), np.ones(2), np.ones(1)),
    ],
)
def test_mismatched_shapes_raise(x, y, q, monkeypatch):
    # the shape annotations refuse these under the test-time checker; without it (the book, a
    # user's session) format_prompt's own check must, and that is what this test is about
    monkeypatch.setattr(jaxtyping.config, "jaxtyping_disable", True)
    with pytest.raises(ValueError):
        prompts.format_prompt(x, y, q)


def test_non_finite_numbers_cannot_enter_a_prompt():
    with pytest.raises(ValueError, match="non-finite"):
        prompts.format_number(math.inf)


@pytest.mark.parametrize(
    "text, value",
    [(" 336.41", 336.41), ("12", 12.0), ("-3.5\n\nFeature", -3.5), ("  .5 ", 0.5), ("7.", 7.0)],
)
def test_parse_numbers(text, value):
    assert prompts.parse_number(text).value == value


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("about 12", "does not start with a number"),
        ("12.3.4", "followed by"),
        ("12abc", "followed by"),
        ("-", "does not start with a number"),
    ],
)
def test_unparseable_answers_are_explicit_failures(text, reason):
    parsed = prompts.parse_number(text)
    assert not parsed.ok and parsed.value is None and reason in parsed.reason


def test_batch_counts_failures_and_never_zero_fills():
    batch = prompts.parse_answers([" 1.5", "oops", " 0", ""])
    assert batch.n_failed == 2
    assert [f.text for f in batch.failures] == ["oops", ""]
    np.testing.assert_array_equal(batch.ok, [True, False, True, False])
    assert batch.values[0] == 1.5 and batch.values[2] == 0.0
    assert np.isnan(batch.values[1]) and np.isnan(batch.values[3])


def test_parse_rejects_non_text():
    with pytest.raises(TypeError):
        prompts.parse_number(12.0)


@pytest.mark.parametrize("text", ["١٢٣", " ١٢٣\n", "１２", "-１２"])
def test_non_ascii_digits_are_failures_with_that_reason(text):
    parsed = prompts.parse_number(text)
    assert parsed.value is None and "ASCII" in parsed.reason


@pytest.mark.parametrize("text,rest", [(" 1e5", "e5"), ("12abc", "abc"), (" 3.5x\n", "x")])
def test_numbers_with_trailing_junk_say_what_follows(text, rest):
    parsed = prompts.parse_number(text)
    assert parsed.value is None and "followed by" in parsed.reason and rest in parsed.reason


def test_an_example_without_features_is_refused():
    with pytest.raises(ValueError, match="at least one feature"):
        prompts.format_example([], 3.0)
    with pytest.raises(ValueError, match="at least one feature"):
        prompts.format_prompt(np.zeros((2, 0)), np.array([1.0, 2.0]), np.zeros(0))

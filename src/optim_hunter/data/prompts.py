"""The text formats of numeric in-context prompts, and the parser for a model's numeric answer.

The (features -> output) format of the 004 seed and llm4regression, one example per block:

    Feature 0: 74.92
    Feature 1: 1436.49
    Output: 336.41

    Feature 0: 1.04
    Feature 1: 247.46
    Output:

and seed 002's "(x, y)" lines of integers (`format_pairs`). Numbers are written with a fixed
number of decimals (`round_to`, default 2) so every value has a
single spelling. The parser never turns an unreadable answer into a number: it returns an explicit
failure with its reason, and `parse_answers` counts them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import SupportsFloat

import numpy as np
from jaxtyping import Float, Real

DEFAULT_ROUND = 2
# ASCII digits only: the prompt format has one spelling of a number, so "١٢٣" or "１２" is no answer.
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))(?=\s|$)", re.ASCII)
_LEADING = re.compile(r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)


def format_number(value: SupportsFloat, round_to: int = DEFAULT_ROUND) -> str:
    """`value` rounded to `round_to` decimals, fixed-point (never scientific), no negative zero."""
    if round_to < 0:
        raise ValueError(f"round_to must be >= 0, got {round_to}")
    if not math.isfinite(value):
        raise ValueError(f"cannot write the non-finite number {value!r} into a prompt")
    text = f"{value:.{round_to}f}"
    if float(text) == 0:
        text = f"{0:.{round_to}f}"
    return text


def format_example(
    x: Sequence[SupportsFloat] | Real[np.ndarray, " feature"], y: SupportsFloat | None, round_to: int = DEFAULT_ROUND
) -> str:
    """One block: a line per feature, then `Output:` with y (or nothing, for the query)."""
    if len(x) == 0:
        raise ValueError("an example needs at least one feature (got none): a prompt of bare "
                         "`Output:` lines gives the model nothing to regress on")
    lines = [f"Feature {i}: {format_number(float(v), round_to)}" for i, v in enumerate(x)]
    lines.append("Output:" if y is None else f"Output: {format_number(float(y), round_to)}")
    return "\n".join(lines)


def format_prompt(
    x_train: Float[np.ndarray, "n feature"],
    y_train: Float[np.ndarray, " n"],
    x_query: Float[np.ndarray, " feature"],
    round_to: int = DEFAULT_ROUND,
    instruction: str | None = None,
) -> str:
    """The whole prompt: optional instruction, the examples, and the query ending in `Output:`."""
    x_train = np.asarray(x_train, dtype=np.float64)
    y_train = np.asarray(y_train, dtype=np.float64)
    x_query = np.asarray(x_query, dtype=np.float64)
    if x_train.ndim != 2 or y_train.shape != (x_train.shape[0],):
        raise ValueError(f"x_train {x_train.shape} and y_train {y_train.shape} do not match")
    if x_query.shape != (x_train.shape[1],):
        raise ValueError(f"x_query {x_query.shape} needs {x_train.shape[1]} features")
    blocks = [format_example(x, y, round_to) for x, y in zip(x_train, y_train)]
    blocks.append(format_example(x_query, None, round_to))
    body = "\n\n".join(blocks)
    return f"{instruction}\n\n{body}" if instruction else body


def format_pairs(
    xs: Sequence[SupportsFloat] | Real[np.ndarray, " n"],
    ys: Sequence[SupportsFloat] | Real[np.ndarray, " n"],
    x_query: SupportsFloat | None = None,
) -> str:
    """Seed 002's "(x, y)" lines of integers; with `x_query`, the prompt ends with the query's
    open line, "(x_query, ", for the model to complete.

    >>> format_pairs([1, 2], [5, 7], 4)
    '(1, 5)\\n(2, 7)\\n(4, '
    """
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x values but {len(ys)} y values")
    lines = [f"({format_number(x, 0)}, {format_number(y, 0)})" for x, y in zip(xs, ys)]
    if x_query is not None:
        lines.append(f"({format_number(x_query, 0)}, ")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Parsed:
    """A parsed answer: `value` is None exactly when parsing failed, and `reason` says why."""

    text: str
    value: float | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.value is not None


def parse_number(text: str) -> Parsed:
    """Read the number a model wrote at the start of its answer (e.g. ' 336.41\\n\\nFeature 0')."""
    if not isinstance(text, str):
        raise TypeError(f"expected the model's answer as text, got {type(text).__name__}")
    if not text.strip():
        return Parsed(text, None, "empty answer")
    match = _NUMBER.match(text)
    if match is None:
        lead = _LEADING.match(text)
        if lead is not None:
            rest = text[lead.end():lead.end() + 12]
            return Parsed(text, None, f"a number followed by {rest!r}: not a plain decimal number")
        if any(c.isdigit() for c in text.lstrip()[:1] + text.lstrip(" -+")[:1]):
            return Parsed(text, None, "digits other than ASCII 0-9: the prompt writes numbers in 0-9")
        return Parsed(text, None, "answer does not start with a number")
    value = float(match[1])
    if not math.isfinite(value):
        return Parsed(text, None, "number out of range")
    return Parsed(text, value)


@dataclasses.dataclass(frozen=True)
class ParsedBatch:
    values: Float[np.ndarray, " n"]  # NaN where parsing failed; use `ok` to select
    ok: np.ndarray
    failures: list[Parsed]
    items: list[Parsed] = dataclasses.field(default_factory=list)  # every answer, in order

    @property
    def n_failed(self) -> int:
        return len(self.failures)


UNFINISHED = "unfinished answer: no end within the token budget (max_new_tokens)"


def parse_answers(texts: Sequence[str], finished: Sequence[bool] | None = None) -> ParsedBatch:
    """Parse many answers; failures are kept (text and reason) and counted, never zero-filled.
    An answer marked not `finished` (cut off by the token budget: the model may have had more
    digits to write) is a failure whatever it starts with."""
    if finished is not None and len(finished) != len(texts):
        raise ValueError(f"{len(texts)} answers but {len(finished)} finished flags")
    parsed = [parse_number(t) if finished is None or finished[i] else Parsed(t, None, UNFINISHED)
              for i, t in enumerate(texts)]
    values = np.array([p.value if p.ok else np.nan for p in parsed], dtype=np.float64)
    ok = np.array([p.ok for p in parsed], dtype=bool)
    return ParsedBatch(values, ok, [p for p in parsed if not p.ok], parsed)

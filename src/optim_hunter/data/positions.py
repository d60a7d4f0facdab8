"""Which token of a numeric prompt is what: feature values, outputs, labels and separators.

Analyses of attention and probes need to know, for any tokenizer, where the in-context examples'
numbers sit. `token_roles` maps every token of a `prompts.format_prompt` text to its role and to
the example it belongs to, from the tokenizer's character offsets (or, for tokenizers without
offsets, from decoding growing prefixes).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

ROLES = ("feature_value", "output_value", "label", "separator")
_VALUE = re.compile(r"(Feature (\d+): |Output: )(-?\d+(?:\.\d+)?)")


@dataclasses.dataclass(frozen=True)
class PromptLayout:
    """Per token: role, example index (-1 for none), feature index (-1 unless a feature value)."""

    token_ids: list[int]
    roles: list[str]
    example: np.ndarray
    feature: np.ndarray

    def where(self, role: str, example: int | None = None) -> np.ndarray:
        """Positions of tokens with `role` (optionally in one example)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
        mask = np.array([r == role for r in self.roles])
        if example is not None:
            mask &= self.example == example
        return np.flatnonzero(mask)

    @property
    def n_examples(self) -> int:
        return int(self.example.max()) + 1 if len(self.example) else 0


def _offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    try:
        enc = tokenizer(text, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, KeyError, ValueError):
        pass
    ids = list(tokenizer(text)["input_ids"])
    offsets, end = [], 0
    for i in range(len(ids)):
        prefix = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        start, end = end, len(prefix)
        offsets.append((start, end))
    return ids, offsets


def token_roles(tokenizer: Any, text: str) -> PromptLayout:
    """Role of each token of `text` (a numeric prompt) under `tokenizer`."""
    char_role = np.full(len(text), "label", dtype=object)
    char_example = np.full(len(text), -1)
    char_feature = np.full(len(text), -1)
    for i, ch in enumerate(text):
        if ch == "\n":
            char_role[i] = "separator"
    example = 0
    for match in _VALUE.finditer(text):
        a, b = match.span(3)
        is_output = match[1].startswith("Output")
        char_role[a:b] = "output_value" if is_output else "feature_value"
        char_example[match.start() : b] = example
        if not is_output:
            char_feature[a:b] = int(match[2])
        else:
            example += 1
    # The query's own labels belong to the example after the last answered one.
    for i in range(len(text)):
        if char_example[i] == -1 and char_role[i] == "label":
            later = char_example[i:][char_example[i:] >= 0]
            char_example[i] = later[0] if len(later) else example
    ids, offsets = _offsets(tokenizer, text)
    roles, examples, features = [], [], []
    for start, end in offsets:
        if end <= start:  # special tokens (BOS) cover no characters
            roles.append("label")
            examples.append(-1)
            features.append(-1)
            continue
        span = char_role[start:end]
        # A token touching a number is that number (numbers win over labels and spaces).
        role = next((r for r in ("output_value", "feature_value") if r in span), None)
        role = role or ("separator" if all(r == "separator" for r in span) else "label")
        roles.append(role)
        examples.append(int(char_example[start:end].max()))
        features.append(int(char_feature[start:end].max()))
    return PromptLayout(ids, roles, np.array(examples), np.array(features))

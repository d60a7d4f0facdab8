"""The seed's pattern-matching test ("Behavior 3") for a pretrained model: prompts of lines
"(month|colour) (animal|fruit): label", the label naming the line's template, and the share of
attention from each colon to the labels of earlier lines of the same template, per head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "grey", "purple", "pink", "brown")
ANIMALS = ("bird", "fish", "dog", "cat", "horse", "cow", "lion", "mouse", "sheep", "tiger")
FRUITS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum", "melon")
TEMPLATES = ((MONTHS, ANIMALS), (MONTHS, FRUITS), (COLOURS, ANIMALS), (COLOURS, FRUITS))  # labels 0-3


@dataclasses.dataclass(frozen=True)
class PatternPrompt:
    """Lines "<a> <b>: <label>" with the label the line's template (0-3), as token positions."""

    tokens: Int[Tensor, " pos"]
    colons: tuple[int, ...]  # position of each line's colon
    labels: tuple[tuple[int, ...], ...]  # positions of each line's label tokens
    templates: tuple[int, ...]  # each line's template

    def targets(self) -> list[tuple[int, list[int]]]:
        """(colon, label positions of the earlier lines of the same template), for every line that
        has such an earlier line."""
        out = []
        for i, (colon, template) in enumerate(zip(self.colons, self.templates)):
            keys = [k for j in range(i) if self.templates[j] == template for k in self.labels[j]]
            if keys:
                out.append((colon, keys))
        return out


def pattern_prompts(tokenizer: Any, *, n: int, lines: int, bos: int | None, seed: int = 0) -> list[PatternPrompt]:
    """`n` prompts of `lines` lines, templates and words drawn with a fixed seed; each piece (the
    two words, the colon, " <label>", the newline) is encoded on its own so its positions are
    known (a BPE that splits on spaces and punctuation encodes the joined text the same way)."""
    rng = np.random.default_rng(seed)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompts = []
    for _ in range(n):
        ids = [] if bos is None else [bos]
        colons, labels, templates = [], [], []
        for _ in range(lines):
            t = int(rng.integers(len(TEMPLATES)))
            first, second = TEMPLATES[t]
            ids += encode(f"{first[rng.integers(len(first))]} {second[rng.integers(len(second))]}")
            colons.append(len(ids))
            ids += encode(":")
            label = encode(f" {t}")
            labels.append(tuple(range(len(ids), len(ids) + len(label))))
            ids += label + encode("\n")
            templates.append(t)
        prompts.append(PatternPrompt(torch.tensor(ids), tuple(colons), tuple(labels), tuple(templates)))
    return prompts


@torch.no_grad()
def pattern_shares(model: HookedModel, prompts: Sequence[PatternPrompt]) -> Float[np.ndarray, "n layer head"]:
    """Per prompt and head, the mean over colons of the attention on the labels of the earlier
    lines of the same template (NaN for a prompt without such a line)."""
    n_layers = model.cfg.n_layers
    names = {hooks.pattern(l) for l in range(n_layers)}
    out = np.full((len(prompts), n_layers, model.cfg.n_heads), np.nan)
    for i, prompt in enumerate(prompts):
        targets = prompt.targets()
        if not targets:
            continue
        _, cache = model.run_with_cache(prompt.tokens[None], names_filter=lambda n: n in names)
        for l in range(n_layers):
            pattern = cache[hooks.pattern(l)][0].float()  # [head, query, key]
            out[i, l] = torch.stack([pattern[:, q, keys].sum(-1) for q, keys in targets]).mean(0).numpy()
    return out

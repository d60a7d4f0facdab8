"""In-context learning of y = a x + b from "(x, y)" lines: prompts, answer probabilities,
patching from a run with context into one without, head ablations and Bayesian-looking updates.

A prompt is `(x1, y1)\\n(x2, y2)\\n...(x, ` and the answer is the first token of `y)`. Every
function takes token ids and reads hooks by name, so any hooked model with a tokenizer works.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from scipy.stats import linregress
from torch import Tensor

from optim_hunter import prompts
from optim_hunter.prompts import format_pairs


@dataclasses.dataclass(frozen=True)
class Problem:
    """One prompt: examples, the query and the first token of each candidate answer."""

    xs: np.ndarray
    x: int
    a: int
    b: int

    @property
    def answer(self) -> int:
        return self.a * self.x + self.b

    def text(self, n_examples: int | None = None) -> str:
        xs = self.xs if n_examples is None else self.xs[:n_examples]
        return format_pairs(xs, self.a * xs + self.b, self.x)


def problems(
    n: int, n_examples: int, *, a: int = 2, b: int = 3, x_max: int = 99, seed: int = 0
) -> list[Problem]:
    """`n` prompts of y = a x + b with distinct x values; the query x is never an example."""
    if n_examples + 1 > x_max + 1:
        raise ValueError(f"{n_examples} distinct examples and a new query need x_max >= {n_examples}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        xs = rng.choice(x_max + 1, size=n_examples + 1, replace=False)
        out.append(Problem(xs[:-1].astype(int), int(xs[-1]), a, b))
    return out


def first_token(tokenizer: Any, text: str, answer: str) -> int:
    """The first token of `answer` written after `text` (merges across the boundary respected)."""
    base = list(tokenizer(text)["input_ids"])
    full = list(tokenizer(text + answer)["input_ids"])
    k = next((i for i, (u, v) in enumerate(zip(base, full)) if u != v), len(base))
    if k >= len(full):
        raise ValueError(f"answer {answer!r} adds no token after the prompt")
    return full[k]


def encode(tokenizer: Any, text: str) -> Tensor:
    return torch.tensor(tokenizer(text)["input_ids"])


@torch.no_grad()
def last_probs(model: Any, tokens: Tensor) -> Float[Tensor, " vocab"]:
    return torch.softmax(model(tokens[None])[0, -1].float(), -1)


def candidates(problem: Problem) -> dict[str, int]:
    """The correct answer and the wrong answers the seed discusses (≈2x, off by one, ...)."""
    x = problem.x
    return {"exact": problem.answer, "2x": 2 * x, "2x+1": 2 * x + 1, "2x+2": 2 * x + 2,
            "2x+4": 2 * x + 4, "x": x, "x+3": x + 3}


def classify(answer: float | None, problem: Problem) -> str:
    """What a greedy answer is: the exact value, ≈2x (within 5 of 2x, not exact), or other."""
    if answer is None or not np.isfinite(answer):
        return "unparseable"
    if answer == problem.answer:
        return "exact"
    if abs(answer - 2 * problem.x) <= 5:
        return "≈2x"
    return "other"


def token_value(tokenizer: Any, token: int) -> float | None:
    """The number a single answer token spells (None if it is not a number)."""
    return prompts.parse_number(tokenizer.decode([token]) + " ").value


def bayesian_curve(
    model: Any, tokenizer: Any, probs: Sequence[Problem], max_examples: int
) -> pd.DataFrame:
    """Mean probability of the correct first token, of the main wrong candidates, and the mean
    log-odds log P(correct) / (1 - P(correct)) after i = 0..max_examples examples."""
    rows = []
    for i in range(max_examples + 1):
        p_correct, log_odds, wrong = [], [], {}
        for problem in probs:
            text = problem.text(i)
            p = last_probs(model, encode(tokenizer, text))
            for name, value in candidates(problem).items():
                token = first_token(tokenizer, text, f"{value})")
                if name == "exact":
                    pc = float(p[token])
                    p_correct.append(pc)
                    log_odds.append(np.log(max(pc, 1e-12)) - np.log(max(1 - pc, 1e-12)))
                else:
                    wrong.setdefault(name, []).append(float(p[token]))
        rows.append({"examples": i, "p_correct": np.mean(p_correct), "log_odds": np.mean(log_odds),
                     **{f"p_{k}": np.mean(v) for k, v in wrong.items()}})
    return pd.DataFrame(rows)


def additive_fit(curve: pd.DataFrame, *, start: int = 1) -> dict[str, float]:
    """Least-squares line through the log-odds from `start` examples on: slope, intercept, R²."""
    part = curve[curve["examples"] >= start]
    fit = linregress(part["examples"], part["log_odds"])
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue**2)}


def layer_heads(model: Any, layers: Sequence[int]) -> list[str]:
    """hook_z names of whole layers (ablating them removes every head of those layers)."""
    return [f"blocks.{l}.attn.hook_z" for l in layers]


@torch.no_grad()
def head_activity(
    model: Any, tokens: Tensor, example_positions: np.ndarray, answer_token: int
) -> Float[np.ndarray, "layer head 2"]:
    """Per head, at the last position: attention mass on the examples' tokens, and the head's
    direct effect on the answer's logit against the vocabulary's mean logit (its output through
    the final LayerNorm and W_U)."""
    _, cache = model.run_with_cache(tokens[None])
    # Every head's output through the final LayerNorm (centering and scale as the model does).
    results = cache.stack_head_results(layer=-1, pos_slice=-1, apply_ln=True)[:, 0]
    direction = model.W_U[:, answer_token] - model.W_U.mean(1)
    effects = (results @ direction).reshape(model.cfg.n_layers, model.cfg.n_heads)
    out = np.zeros((model.cfg.n_layers, model.cfg.n_heads, 2))
    out[..., 1] = effects.cpu().numpy()
    for l in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{l}.attn.hook_pattern"][0, :, -1]  # [head, src]
        out[l, :, 0] = pattern[:, example_positions].sum(-1).cpu().numpy()
    return out

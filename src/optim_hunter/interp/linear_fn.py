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

from optim_hunter import llm_regressor, prompts
from optim_hunter.interp import ablation, patching
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


# --- the chapter's experiments, on a list of problems ----------------------------------------------


def answer_token(tokenizer: Any, problem: Problem) -> int:
    """The first token of the correct answer `y)` after the query."""
    return first_token(tokenizer, problem.text(0), f"{problem.answer})")


def p_correct(model: Any, tokenizer: Any, problem: Problem, n_examples: int | None = None) -> float:
    """Probability of the correct answer's first token, with all (or `n_examples`) examples."""
    return float(last_probs(model, encode(tokenizer, problem.text(n_examples)))[answer_token(tokenizer, problem)])


def accuracy(model: Any, tokenizer: Any, probs: Sequence[Problem]) -> tuple[float, pd.Series]:
    """Share of prompts whose greedy answer is exactly a x + b, and the count of each answer kind
    (`classify`)."""
    answers = llm_regressor.greedy_answers(model, tokenizer, [p.text() for p in probs], max_new_tokens=4, stop=")")
    kinds = [classify(v if np.isfinite(v) else None, p) for v, p in zip(answers.values, probs)]
    return float(np.mean([k == "exact" for k in kinds])), pd.Series(kinds).value_counts()


def stage_names(n_layers: int) -> list[str]:
    """Labels of `patching.stage_hooks`: before each layer, then after the last."""
    return [f"before L{l}" for l in range(n_layers)] + [f"after L{n_layers - 1}"]


def patch_grid(
    model: Any, tokenizer: Any, problem: Problem, *, source_cache: Any = None, read: str = "p_correct"
) -> Float[np.ndarray, "stage pos"]:
    """Residual patching from the run with examples (A) into the run with only the query (B):
    per (stage, B position), B's probability of the correct answer (`read="p_correct"`) or B's
    greedy next token id (`read="argmax"`)."""
    source, target = encode(tokenizer, problem.text()), encode(tokenizer, problem.text(0))
    token = answer_token(tokenizer, problem)
    reads = {
        "p_correct": lambda logits: float(torch.softmax(logits[0, -1].float(), -1)[token]),
        "argmax": lambda logits: float(logits[0, -1].argmax()),
    }
    if read not in reads:
        raise ValueError(f"read must be one of {sorted(reads)}, got {read!r}")
    return patching.residual_patching(model, source, target, reads[read], source_cache=source_cache)


def transferred(
    model: Any, tokenizer: Any, probs: Sequence[Problem], source_caches: Sequence[Any] | None = None
) -> pd.DataFrame:
    """Per stage, the share of prompts whose patched run B answers exactly, ≈2x, or otherwise
    (its greedy first token, patched at B's last position)."""
    rows = []
    for i, problem in enumerate(probs):
        cache = source_caches[i] if source_caches is not None else None
        argmax = patch_grid(model, tokenizer, problem, source_cache=cache, read="argmax")[:, -1]
        rows.append([classify(token_value(tokenizer, int(t)), problem) for t in argmax])
    table = pd.DataFrame(rows, columns=stage_names(model.cfg.n_layers))
    return table.apply(lambda col: col.value_counts(normalize=True)).fillna(0).T


def example_positions(tokenizer: Any, problem: Problem) -> np.ndarray:
    """Token positions of the examples in the full prompt (after any BOS, before the query line)."""
    full, query = encode(tokenizer, problem.text()), encode(tokenizer, problem.text(0))
    bos = getattr(tokenizer, "bos_token_id", None)
    start = int(bos is not None and len(full) > 0 and int(full[0]) == bos)
    return np.arange(start, start + len(full) - len(query))


def mean_head_activity(model: Any, tokenizer: Any, probs: Sequence[Problem]) -> Float[np.ndarray, "layer head 2"]:
    """`head_activity` averaged over prompts (under whatever hooks are attached)."""
    return np.mean([
        head_activity(model, encode(tokenizer, p.text()), example_positions(tokenizer, p), answer_token(tokenizer, p))
        for p in probs
    ], axis=0)


def redundancy_rounds(
    model: Any, tokenizer: Any, probs: Sequence[Problem], first_stage: int | None, corrupt_p: float,
    *, stop_below: float = 0.5,
) -> pd.DataFrame:
    """Seed 002's loop: each round zero-ablates every head of one more layer — the highest not yet
    ablated below the current first transferring stage — in the run with examples, then measures
    the accuracy, P(correct), the new first transferring stage and the top backup head (the
    remaining head whose direct effect on the answer rose most). Stops when accuracy falls below
    `stop_below` or no layer is left."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = stage_names(n_layers)
    baseline = mean_head_activity(model, tokenizer, probs)
    ablated_layers: list[int] = []
    rounds, stage = [], first_stage
    while stage is not None and len(ablated_layers) < n_layers:
        below = [l for l in range(min(stage, n_layers) - 1, -1, -1) if l not in ablated_layers]
        if not below:
            break
        ablated_layers.append(below[0])
        hooks = layer_heads(model, ablated_layers)
        with ablation.ablated(model, hooks):
            acc, _ = accuracy(model, tokenizer, probs)
            caches = [model.run_with_cache(encode(tokenizer, p.text())[None])[1] for p in probs]
            source_p = float(np.mean([p_correct(model, tokenizer, p) for p in probs]))
            now = mean_head_activity(model, tokenizer, probs)
        curve = np.mean([patch_grid(model, tokenizer, p, source_cache=c)[:, -1] for p, c in zip(probs, caches)], axis=0)
        stage = patching.first_transfer(curve, source_p, corrupt_p)
        rise = now[..., 1] - baseline[..., 1]
        rise[ablated_layers] = -np.inf
        backup = np.unravel_index(np.argmax(rise), rise.shape)
        rounds.append({
            "ablated layers": list(ablated_layers), "heads ablated": n_heads * len(ablated_layers),
            "accuracy": acc, "P(correct) in A": source_p,
            "first transferring stage": names[stage] if stage is not None else "none",
            "top backup head": f"L{backup[0]}H{backup[1]}",
            "its attention to examples": f"{baseline[backup][0]:.2f} → {now[backup][0]:.2f}",
            "its direct effect": f"{baseline[backup][1]:.2f} → {now[backup][1]:.2f}",
        })
        if acc < stop_below:
            break
    return pd.DataFrame(rounds)

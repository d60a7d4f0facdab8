"""The numeric yardstick: held-out in-context performance of any hooked model with a tokenizer.

`evaluate_icl` answers scikit-learn's linear problems and Friedman #2 (which `numeric-icl`'s
training never draws) with 1 to 25 in-context examples, against the average baseline on the same
problems, and y = 2x + 3 prompts whose query is not among the examples (exact greedy answers). It
is `numeric-icl`'s in-training learning curve and the book's check of that model; the checks are
the models chapter's `zoo.numeric.*` claims (`optim_hunter.chapters.model_zoo.numeric_checks`).

The result keeps the per-problem errors and per-prompt hits, so each bar is decided on a 95%
bootstrap interval over them (paired where the model and the baseline answer the same problems):
a margin inside the noise of the problems is *inconclusive*, not met.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from optim_hunter.analysis import intervals, llm_regressor
from optim_hunter.data import datasets, prompts

EXAMPLES = (1, 5, 10, 25)


@dataclasses.dataclass
class ICLResult:
    """What `evaluate_icl` measured. MAEs (the model's and the average baseline's) are over the
    problems the model answered with a number; failures are counted apart."""

    examples: tuple[int, ...]
    mae: dict[str, dict[int, float]]  # dataset -> n_examples -> model MAE
    average_mae: dict[str, dict[int, float]]  # the same problems, AverageBaseline
    failures: dict[str, dict[int, int]]
    n_problems: int
    affine_examples: int
    affine_top1: float
    affine_failures: int
    affine_prompts: int
    # the units the intervals resample (empty in a result built without them):
    errors: dict[str, dict[int, list[float]]] = dataclasses.field(default_factory=dict)  # |model - truth|
    average_errors: dict[str, dict[int, list[float]]] = dataclasses.field(default_factory=dict)  # same problems
    affine_hits: tuple[bool, ...] = ()  # per y = 2x + 3 prompt: the answer is exact (unparseable: a miss)

    def linear(self, k: int) -> float:
        return float(np.mean([self.mae[d][k] for d in datasets.LINEAR_FAMILIES]))

    def linear_average(self, k: int) -> float:
        return float(np.mean([self.average_mae[d][k] for d in datasets.LINEAR_FAMILIES]))

    @property
    def linear_ratio(self) -> float:
        """Held-out linear MAE / average-baseline MAE at the most examples (bar: <= 1/3)."""
        k = max(self.examples)
        return self.linear(k) / self.linear_average(k)

    def linear_ratio_interval(self) -> intervals.Interval | None:
        """Paired 95% bootstrap interval of `linear_ratio` over the linear problems the model
        answered (each weighted by 1 / its family's count, so the point is the mean of the family
        means); None without per-problem errors or when a family has no answer."""
        k = max(self.examples)
        parts = [(self.errors.get(d, {}).get(k, []), self.average_errors.get(d, {}).get(k, []))
                 for d in datasets.LINEAR_FAMILIES]
        if any(not mine for mine, _ in parts):
            return None
        weights = np.concatenate([np.full(len(mine), 1 / len(mine)) for mine, _ in parts])
        mine = np.concatenate([m for m, _ in parts])
        average = np.concatenate([a for _, a in parts])
        return intervals.bootstrap(mine, average, weights, statistic=_weighted_ratio, paired=True,
                                units="linear problems")

    def friedman2_interval(self) -> intervals.Interval | None:
        """Paired 95% bootstrap interval, over the Friedman #2 problems the model answered, of its
        MAE minus the average baseline's on the same problems (None without per-problem errors)."""
        k = max(self.examples)
        mine = self.errors.get("friedman2", {}).get(k, [])
        if not mine:
            return None
        return intervals.bootstrap(mine, self.average_errors["friedman2"][k], statistic=_mean_difference, paired=True,
                                units="problems")

    def affine_interval(self) -> intervals.Interval | None:
        """95% bootstrap interval of the top-1 accuracy over the y = 2x + 3 prompts."""
        if not self.affine_hits:
            return None
        return intervals.bootstrap(np.asarray(self.affine_hits, dtype=float), units="prompts")

    def summary(self) -> dict[str, float]:
        k = max(self.examples)
        row = {f"linear_mae_{n}": self.linear(n) for n in self.examples}
        row |= {
            "linear_average_mae": self.linear_average(k),
            "linear_ratio": self.linear_ratio,
            "friedman2_mae": self.mae["friedman2"][k],
            "friedman2_average_mae": self.average_mae["friedman2"][k],
            "affine_top1": self.affine_top1,
            "failures": float(sum(sum(v.values()) for v in self.failures.values()) + self.affine_failures),
        }
        return row


def affine_prompts(
    n_prompts: int, n_examples: int = 10, *, a: int = 2, b: int = 3, x_max: int = 99, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """y = a x + b prompts in the "(x, y)" format; the query x never appears among the examples."""
    if n_examples + 1 > x_max + 1:
        raise ValueError(f"{n_examples} examples and a new query need x_max >= {n_examples}")
    rng = np.random.default_rng(seed)
    texts, answers = [], []
    for _ in range(n_prompts):
        xs = rng.choice(x_max + 1, size=n_examples + 1, replace=False)
        texts.append(prompts.format_pairs(xs[:-1], a * xs[:-1] + b, xs[-1]))
        answers.append(a * xs[-1] + b)
    return texts, np.asarray(answers)


def read_numbers(
    model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False
) -> list[float | None]:
    """The number each prompt is answered with (greedy, batched; None where it is no number)."""
    answers = llm_regressor.greedy_answers(
        model, tokenizer, texts, max_new_tokens=6, batch_size=batch_size, stop=None, progress=progress
    )
    return [float(v) if ok else None for v, ok in zip(answers.values, answers.parsed.ok)]


def evaluate_icl(
    model: Any,
    tokenizer: Any = None,
    *,
    seeds: Sequence[int] = range(100),
    examples: Sequence[int] = EXAMPLES,
    datasets_: Sequence[str] = (*datasets.LINEAR_FAMILIES, "friedman2"),
    round_to: int = prompts.DEFAULT_ROUND,
    affine_examples: int = 10,
    affine_count: int = 200,
    progress: bool = True,
) -> ICLResult:
    """Held-out in-context performance of any hooked model with a tokenizer.

    For each dataset, number of examples k and seed: `datasets.make_split(name, k, seed,
    round_to)` gives the problem, `prompts.format_prompt` the prompt; the answer is greedy-decoded.
    MAE is compared with the average baseline on the same problems. Then y = 2x + 3 prompts with
    `affine_examples` examples and an unseen query: top-1 = the greedy answer is exactly 2x + 3.
    """
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("evaluate_icl needs a tokenizer (pass one, or a model with .tokenizer)")
    examples = tuple(sorted(set(examples)))
    names = list(dict.fromkeys(datasets_))
    for needed in (*datasets.LINEAR_FAMILIES, "friedman2"):
        if needed not in names:
            names.append(needed)
    jobs = [(name, k, seed) for name in names for k in examples for seed in seeds]
    texts, truth, average = [], [], []
    for name, k, seed in jobs:
        split = datasets.make_split(name, k, seed, round_to=round_to)
        texts.append(prompts.format_prompt(split.x_train, split.y_train, split.x_query[0], round_to))
        truth.append(split.y_query[0])
        average.append(split.y_train.mean())
    answers = read_numbers(model, tokenizer, texts, progress=progress)
    mae, avg, fails, kept, kept_avg = _scored(names, jobs, answers, truth, average)
    a_texts, a_truth = affine_prompts(affine_count, affine_examples)
    a_answers = read_numbers(model, tokenizer, a_texts, progress=False)
    hits = [ans is not None and ans == y for ans, y in zip(a_answers, a_truth)]
    return ICLResult(
        examples=examples, mae=mae, average_mae=avg, failures=fails, n_problems=len(seeds),
        affine_examples=affine_examples, affine_top1=float(np.mean(hits)) if hits else float("nan"),
        affine_failures=sum(ans is None for ans in a_answers), affine_prompts=affine_count,
        errors=kept, average_errors=kept_avg, affine_hits=tuple(bool(h) for h in hits),
    )


def _scored(names: list[str], jobs: list[tuple[str, int, int]], answers: Sequence[float | None],
            truth: Sequence[float], average: Sequence[float]) -> tuple[dict, dict, dict, dict, dict]:
    """Per dataset and number of examples: the model's MAE, the average baseline's on the problems
    the model answered (like for like), the unanswered count, and both lists of absolute errors."""
    mae: dict[str, dict[int, float]] = {n: {} for n in names}
    avg: dict[str, dict[int, float]] = {n: {} for n in names}
    fails: dict[str, dict[int, int]] = {n: {} for n in names}
    errors: dict[tuple[str, int], list[float]] = {}
    avg_errors: dict[tuple[str, int], list[float]] = {}
    for (name, k, _), answer, y, mean in zip(jobs, answers, truth, average):
        errors.setdefault((name, k), [])
        avg_errors.setdefault((name, k), [])
        if answer is None:
            fails[name][k] = fails[name].get(k, 0) + 1
        else:
            errors[(name, k)].append(abs(answer - y))
            avg_errors[(name, k)].append(abs(mean - y))
    kept: dict[str, dict[int, list[float]]] = {n: {} for n in names}
    kept_avg: dict[str, dict[int, list[float]]] = {n: {} for n in names}
    for (name, k), errs in errors.items():
        mae[name][k] = float(np.mean(errs)) if errs else float("nan")
        avg[name][k] = float(np.mean(avg_errors[(name, k)])) if errs else float("nan")
        fails[name].setdefault(k, 0)
        kept[name][k], kept_avg[name][k] = [float(e) for e in errs], [float(e) for e in avg_errors[(name, k)]]
    return mae, avg, fails, kept, kept_avg


# --- the claims it checks ------------------------------------------------------------------------


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray | float:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _weighted_ratio(a: np.ndarray, b: np.ndarray, w: np.ndarray, axis: int = -1) -> np.ndarray | float:
    return np.sum(w * a, axis=axis) / np.sum(w * b, axis=axis)

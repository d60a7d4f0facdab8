"""In-context learning of y = a x + b (seed 002): prompt formats, accuracy and P(correct) against the
number of examples, patching from a run with context into one without, rounds of layer ablations
with backup heads, and the Bayesian-update fit.

A prompt is a run of example lines in one of `FORMATS` (e.g. `(x1, y1)\n(x2, y2)\n...(x, `) and
the answer is y followed by the line's end. Prompts are tokenized piece by piece (`encode_answers`)
so every answer's tokens are known: one teacher-forced forward then scores every example of a prompt
(its log P and whether greedy decoding writes it exactly). The chapter's sections each call one
function returning a small frozen result: `format_sweep` -> `Sweep`, `patch_study` -> `PatchStudy`,
`redundancy_rounds` -> `Redundancy`; each result's `claims()` holds the claims with their criteria,
fixed here before any number is measured. Everything reads hooks by name, so any hooked model with
a tokenizer works.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from scipy.stats import linregress
from torch import Tensor

from optim_hunter import claims, hooks, kv_decoding, plots, prompts
from optim_hunter.claim_rows import Recording
from optim_hunter.hooks import HookedModel
from optim_hunter.interp import ablation, patching
from optim_hunter.prompts import format_pairs


@dataclasses.dataclass(frozen=True)
class Format:
    """A line format: `prefix` (with `{x}`) + the number y + `suffix`; a query is its prefix."""

    name: str
    prefix: str
    suffix: str

    def line(self, x: int, y: int) -> str:
        return self.prefix.format(x=x) + str(y) + self.suffix

    def query(self, x: int) -> str:
        return self.prefix.format(x=x)


PAIRS = Format("(x, y)", "({x}, ", ")\n")
FORMATS = {f.name: f for f in (PAIRS, Format("Input: x Output: y", "Input: {x} Output: ", "\n"),
                                Format("x=x, y=y", "x={x}, y=", "\n"))}
ORDERS = ("random", "increasing")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One prompt: examples, the query, the rule y = a x + b and the line format."""

    xs: np.ndarray
    x: int
    a: int
    b: int
    fmt: Format = PAIRS
    ys: np.ndarray | None = None  # the examples' written answers; None: the rule's (a x + b)

    @property
    def answer(self) -> int:
        return self.a * self.x + self.b

    @property
    def example_ys(self) -> np.ndarray:
        """The y written on each example line: the rule's, or the control's (`shuffled_problem`)."""
        return (self.a * np.asarray(self.xs) + self.b).astype(int) if self.ys is None else np.asarray(self.ys)

    def text(self, n_examples: int | None = None) -> str:
        n = len(self.xs) if n_examples is None else n_examples
        return "".join(self.fmt.line(int(x), int(y)) for x, y in zip(self.xs[:n], self.example_ys[:n])) \
            + self.fmt.query(self.x)


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
def last_probs(model: HookedModel, tokens: Tensor) -> Float[Tensor, " d_vocab"]:
    return torch.softmax(model(tokens[None])[0, -1].float(), -1)


def candidates(problem: Problem) -> dict[str, int]:
    """The correct answer and the wrong answers the seed discusses (≈2x, off by one, ...)."""
    x = problem.x
    return {"exact": problem.answer, "2x": 2 * x, "2x+1": 2 * x + 1, "2x+2": 2 * x + 2,
            "2x+4": 2 * x + 4, "x": x, "x+3": x + 3}


def classify(answer: float | None, problem: Problem) -> str:
    """What an answer is, against the rule's exact answer a x + b and its slope part a x ("2x"):
    "exact"; "≈2x": within 5 of 2x and nearer 2x than the exact answer (so 2x + 3 is never ≈2x);
    "≈exact": within 5 of the exact answer, nearer it than 2x, not exact; "other"; "unparseable"."""
    if answer is None or not np.isfinite(answer):
        return "unparseable"
    if answer == problem.answer:
        return "exact"
    to_2x, to_exact = abs(answer - problem.a * problem.x), abs(answer - problem.answer)
    if to_2x <= 5 and to_2x < to_exact:
        return "≈2x"
    if to_exact <= 5:
        return "≈exact"
    return "other"


ON_TASK = ("exact", "≈2x", "≈exact")  # kinds within 5 of 2x or of the exact answer


def token_value(tokenizer: Any, token: int) -> float | None:
    """The number a single answer token spells (None if it is not a number)."""
    return prompts.parse_number(tokenizer.decode([token]) + " ").value


def bayesian_curve(
    model: HookedModel, tokenizer: Any, probs: Sequence[Problem], max_examples: int
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


def layer_heads(model: HookedModel, layers: Sequence[int]) -> list[str]:
    """hook_z names of whole layers (ablating them removes every head of those layers)."""
    return [hooks.z(l) for l in layers]


@torch.no_grad()
def head_activity(
    model: HookedModel, tokens: Tensor, example_positions: np.ndarray, answer_token: int
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
        pattern = cache[hooks.pattern(l)][0, :, -1]  # [head, key_pos]
        out[l, :, 0] = pattern[:, example_positions].sum(-1).cpu().numpy()
    return out


def stage_names(n_layers: int) -> list[str]:
    """Labels of `patching.stage_hooks`: before each layer, then after the last."""
    return [f"before L{l}" for l in range(n_layers)] + [f"after L{n_layers - 1}"]




# --- prompt formats, orders and one-forward reading of every example -------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
    """A prompt format and the order of the examples' x values."""

    format: str = PAIRS.name
    order: str = "random"

    def __post_init__(self) -> None:
        if self.format not in FORMATS or self.order not in ORDERS:
            raise ValueError(f"unknown setting {self}: formats {list(FORMATS)}, orders {ORDERS}")

    @property
    def label(self) -> str:
        return f"{self.format} · {self.order}"


def setting_problems(setting: Setting, n: int, n_examples: int, *, x_max: int = 99, seed: int = 0,
                     a: int = 2, b: int = 3) -> list[Problem]:
    """`problems` in a setting: with `increasing`, the x values (examples, then the query) rise."""
    out = []
    for p in problems(n, n_examples, a=a, b=b, x_max=x_max, seed=seed):
        xs = np.append(p.xs, p.x)
        if setting.order == "increasing":
            xs = np.sort(xs)
        out.append(Problem(xs[:-1], int(xs[-1]), a, b, FORMATS[setting.format]))
    return out


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Token ids of a prompt with every example's answer written out, and where each answer is:
    `spans[i]` = (first, stop) token indices of example i's y and the first token after it (the
    answer's end); the last span is the query's when the query's answer is appended."""

    tokens: Tensor
    spans: tuple[tuple[int, int], ...]

    @property
    def query_end(self) -> int:
        """Index of the last prompt token before the last answer."""
        return self.spans[-1][0] - 1


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_answers(tokenizer: Any, problem: Problem, n_examples: int | None = None,
                   *, with_query: bool = True) -> Encoded:
    """The prompt tokenized piece by piece (prefix, y, suffix of each line), so every answer's
    tokens are known exactly; with `with_query`, the query's correct answer is appended. For a
    tokenizer that writes digits one per token (SmolLM2, Llama-3) this is the text's own
    tokenization."""
    n = len(problem.xs) if n_examples is None else n_examples
    pairs = [(int(x), int(y)) for x, y in zip(problem.xs[:n], problem.example_ys[:n])]
    if with_query:
        pairs.append((problem.x, problem.answer))
    ids = list(tokenizer("")["input_ids"])  # a BOS token, for tokenizers that add one
    spans = []
    for x, y in pairs:
        ids += _ids(tokenizer, problem.fmt.query(x))
        answer = _ids(tokenizer, str(y)) + _ids(tokenizer, problem.fmt.suffix)[:1]
        spans.append((len(ids), len(ids) + len(answer)))
        ids += answer + _ids(tokenizer, problem.fmt.suffix)[1:]
    if with_query:
        ids = ids[: spans[-1][1]]
    return Encoded(torch.tensor(ids), tuple(spans))


def pad(rows: Sequence[Tensor]) -> Int[Tensor, "row pos"]:
    """Right-padded batch (under causal attention the padding cannot change real positions)."""
    out = torch.zeros((len(rows), max(len(r) for r in rows)), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def span_scores(
    logits: Float[Tensor, "row pos d_vocab"], tokens: Int[Tensor, "row pos"],
    spans: Sequence[Sequence[tuple[int, int]]],
) -> tuple[Float[np.ndarray, "row span"], np.ndarray]:
    """Per row and span: log P of the span's tokens given everything before them (teacher
    forcing), and whether greedy decoding would write exactly them (every argmax agrees)."""
    n_spans = max(len(s) for s in spans)
    log_p, exact = np.full((len(spans), n_spans), np.nan), np.zeros((len(spans), n_spans), bool)
    for r, row_spans in enumerate(spans):
        for i, (start, stop) in enumerate(row_spans):
            scores = logits[r, start - 1 : stop - 1].float()
            wanted = tokens[r, start:stop].to(scores.device)
            logp = torch.log_softmax(scores, -1).gather(-1, wanted[:, None])[:, 0]
            log_p[r, i] = float(logp.sum())
            exact[r, i] = bool((scores.argmax(-1) == wanted).all())
    return log_p, exact


def forced(model: HookedModel, encoded: Sequence[Encoded], *, batch_size: int = 8
           ) -> tuple[Float[np.ndarray, "row span"], np.ndarray]:
    """`span_scores` of every example of every prompt, `batch_size` prompts per forward (through
    the fast fused-attention twin when no hook is attached)."""
    log_p, exact = [], []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        tokens = pad([e.tokens for e in chunk])
        lp, ex = span_scores(kv_decoding.logits(model, tokens), tokens, [e.spans for e in chunk])
        log_p.append(lp)
        exact.append(ex)
    width = max(a.shape[1] for a in log_p)
    fill = lambda arrays, value: np.concatenate(  # noqa: E731
        [np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=value) for a in arrays])
    return fill(log_p, np.nan), fill(exact, False)


@dataclasses.dataclass(frozen=True)
class Config:
    """Sample sizes of the chapter (see `Config.for_profile`)."""

    n_prompts: int = 16  # prompts per setting in the sweep
    n_examples: int = 14  # examples per sweep prompt: the curve covers 0 .. n_examples - 1
    mech_examples: int = 16  # examples before the query in the mechanistic part
    n_patch: int = 12  # prompts patched where B reads the answer (P(correct) and read-out)
    n_grid: int = 1  # of those, prompts patched at each B prompt position (the heat map)
    n_ablate: int = 8  # prompts of the ablation rounds
    rounds: int = 3  # ablation rounds (the source ran three)
    x_max: int = 99
    profile: str = "full"  # the profile the claim rows are filed under

    @classmethod
    def for_profile(cls, profile: str) -> Config:
        from optim_hunter import settings

        return settings.pick(profile, full=cls(profile=profile), smoke=cls(
            n_prompts=2, n_examples=6, mech_examples=6, n_patch=2, n_grid=1, n_ablate=2, rounds=1,
            profile=profile))

    def recording(self, model: str) -> Recording:
        return Recording(CHAPTER, self.profile, model)


def log_odds(log_p: Float[np.ndarray, "..."]) -> Float[np.ndarray, "..."]:
    p = np.clip(np.exp(log_p), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def icl_scores(model: HookedModel, tokenizer: Any, setting: Setting, cfg: Config, *, seed: int = 0
               ) -> tuple[Float[np.ndarray, "batch example"], np.ndarray]:
    """Per prompt and example i: log P of example i's answer given the i examples before it
    (teacher-forced), and whether greedy decoding writes it exactly; one forward per prompt."""
    probs = setting_problems(setting, cfg.n_prompts, cfg.n_examples, x_max=cfg.x_max, seed=seed)
    return forced(model, [encode_answers(tokenizer, p, with_query=False) for p in probs])


def curve_of(log_p: Float[np.ndarray, "batch example"], exact: np.ndarray) -> pd.DataFrame:
    """Means over prompts of `icl_scores`: examples, accuracy (greedy answer exact), p_correct,
    log_p (mean log P), log_odds (mean)."""
    return pd.DataFrame({
        "examples": np.arange(log_p.shape[1]), "accuracy": exact.mean(0),
        "p_correct": np.exp(log_p).mean(0), "log_p": log_p.mean(0), "log_odds": log_odds(log_p).mean(0),
    })


def icl_curve(model: HookedModel, tokenizer: Any, setting: Setting, cfg: Config, *, seed: int = 0
              ) -> pd.DataFrame:
    """Accuracy and P(correct) against the number of examples seen (`curve_of` of `icl_scores`):
    example i of a prompt is scored (teacher-forced) with the i examples before it."""
    return curve_of(*icl_scores(model, tokenizer, setting, cfg, seed=seed))


# --- controls: the shuffled-y prompt and the constant answer ---------------------------------------

SHUFFLE_SEED = 2024  # one fixed permutation per prompt


def shuffled_problem(problem: Problem, seed: int) -> Problem:
    """The shuffled-y control of a prompt: the same x values, format and query, the examples' y values
    permuted among the lines (a fixed permutation for `seed`, never the identity when there are two
    lines or more): the same numbers are written, only their pairing with x is lost."""
    n = len(problem.xs)
    order = np.random.default_rng([SHUFFLE_SEED, seed]).permutation(n)
    if n > 1 and (order == np.arange(n)).all():
        order = np.roll(order, 1)
    return dataclasses.replace(problem, ys=problem.example_ys[order])


def last_line_problems(setting: Setting, cfg: Config, *, seed: int = 0, shuffle: bool = False) -> list[Problem]:
    """The sweep's prompts (`icl_scores`) asking their last example as the query: the first
    n_examples − 1 lines, then that example's x; with `shuffle`, the lines' y values permuted
    (`shuffled_problem`, seeded by the prompt's index)."""
    out = []
    for i, p in enumerate(setting_problems(setting, cfg.n_prompts, cfg.n_examples, x_max=cfg.x_max, seed=seed)):
        last = dataclasses.replace(p, xs=p.xs[:-1], x=int(p.xs[-1]))
        out.append(shuffled_problem(last, seed * 100_003 + i) if shuffle else last)
    return out


def query_scores(model: HookedModel, tokenizer: Any, probs: Sequence[Problem]
                 ) -> tuple[Float[np.ndarray, " batch"], np.ndarray]:
    """Per prompt: log P of the query's correct answer (a x + b) given its lines (teacher-forced), and
    whether greedy decoding writes it exactly."""
    log_p, exact = forced(model, [encode_answers(tokenizer, p) for p in probs])
    last = [len(encode_answers(tokenizer, p).spans) - 1 for p in probs]
    rows = np.arange(len(probs))
    return log_p[rows, last], exact[rows, last]


def constant_answer(probs: Sequence[Problem]) -> np.ndarray:
    """The constant-answer baseline: per prompt, whether the mean of the examples' y values (rounded;
    every y is distinct here, so the most frequent answer is no better defined) is the query's answer."""
    return np.array([int(np.rint(np.mean(p.example_ys))) == p.answer for p in probs])


def paired_gain(mine: np.ndarray, control: np.ndarray, units: str = "prompts") -> tuple[float, claims.Interval]:
    """Mean of mine − control over the prompts, with its paired 95% bootstrap interval."""
    mine, control = np.asarray(mine, dtype=float), np.asarray(control, dtype=float)
    interval = claims.bootstrap(mine, control, statistic=lambda a, b, axis=-1: np.mean(a - b, axis=axis),
                                paired=True, units=units)
    return float(np.mean(mine - control)), interval


def line_fits(x: Float[np.ndarray, " n"], y: Float[np.ndarray, "... n"]) -> dict[str, Any]:
    """Least-squares lines of each row of `y` on `x`: slope, intercept and r (0 for a flat row)."""
    x = np.asarray(x, dtype=float)
    dx, dy = x - x.mean(), y - y.mean(-1, keepdims=True)
    sxx, syy, sxy = (dx**2).sum(), (dy**2).sum(-1), (dy * dx).sum(-1)
    slope = sxy / sxx
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(syy > 0, sxy / np.sqrt(sxx * np.where(syy > 0, syy, 1.0)), 0.0)
    return {"slope": np.asarray(slope), "intercept": np.asarray(y.mean(-1) - slope * x.mean()), "r": r}


def _fit(x: pd.Series, y: pd.Series) -> dict[str, float]:
    """The least-squares line of y on x (two columns of a table): slope, intercept, R^2."""
    fit = linregress(x, y)
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue**2)}


# Claims, declared with their criteria before any number is measured. Depths are layer-relative:
# the source's "before layer 12 of 32" is 12 / 32 = 0.375 of the way through the model.
CHAPTER = "linear_fn"
SOURCE_DEPTHS = {"first": 12 / 32, "round1": 14 / 32, "round2": 16 / 32}
DEPTH_TOLERANCE = 0.1  # ±3 layers of 30, ±3.2 of 32
R2_ADDITIVE = 0.9
ENRICHMENT = 2.0  # attention on earlier answers' tokens, over their share of the context

# The source's sentences that state its values (verbatim, seed 002).
QUOTES = {
    "correct": "Ablating layer 15 still results in the model coming to the correct answer.",
    "format": "the task I'm going to be modelling is the task such that we give a pair of (x,y) in the following "
              "format",
    "log_c": "log(Ai+1)=log(Ai)+log(c)−norm",
    "additive": "In context learning works through addition of features, which are learnt through Bayesian updates",
    "first": "the hook point that first works to patch over some semblance of the original task was layer 12",
    "about_2x": "the hook point that first works to patch over some semblance of the original task was layer 12. "
                "At this layer, it seems like the model learns that y≈2x.",
    "survives": "Ablating all attention heads on layers 10 and 11 of the model given context (which I will now "
                "reference as Model A, and let the other be model B) does not change the model's answer significantly.",
    "deeper1": "However, when repeating patching, the first point that works is the portion of the residual stream "
               "before layer 14.",
    "deeper2": "Ablating layer 13 does something similar, except this time the first layer that works shifts from 14 "
               "to 16",
    "backup": "backup heads on layer 13 activate very strongly after the initial ablation",
    "late": "From patching, on no layer of patching does this behavior where the output should be ≈2x form. "
            "Instead, almost the exact answer is copied over from model A.",
    "pattern": "another attention head attends from the yi token to the token before yj, with j>i",
}

TOP1 = claims.declare(
    "linear_fn.top1_accuracy",
    "Greedy answer exactly 2x + 3, best setting ({setting}), mean over {late_from}+ examples (query x unseen); "
    "the best of the settings on the same prompts, so biased upwards",
    source_seed="002", source_value="correct answer", source_quote=QUOTES["correct"], unit="accuracy",
    test=claims.at_least(0.5), criterion="accuracy >= 0.5 (our threshold)")
_CONTROL = ("paired over the {n} prompts: the last example ({k} examples before it) asked after its lines, minus "
            "the same prompt with the y values permuted among the lines (prompt {real}, shuffled control {shuffled}, "
            "constant mean answer {constant})")
BEATS_SHUFFLED = claims.declare(
    "linear_fn.beats_shuffled_control",
    "Best setting ({setting}) beats its shuffled-y control: greedy accuracy, " + _CONTROL,
    source_seed="002", unit="accuracy difference", test=claims.above(0.0), examples=(0.5, -0.5),
    criterion="> 0 over the whole interval: the answers use the pairing of x and y (in-context learning shown; "
              "an interval across 0 is inconclusive; our control)")
P_BEATS_SHUFFLED = claims.declare(
    "linear_fn.p_correct_beats_shuffled_control",
    "Best setting ({setting}) beats its shuffled-y control: P(correct answer), " + _CONTROL,
    source_seed="002", unit="P difference", test=claims.above(0.0), examples=(0.5, -0.5),
    criterion="> 0 over the whole interval (our control)")
BEST_SETTING = claims.declare("linear_fn.best_setting", "Setting (format · order) with the best accuracy",
                              source_seed="002", source_value="(x, y) lines",
                              source_quote=QUOTES["format"], unit="setting")
BAYES_SLOPE = claims.declare(
    "linear_fn.bayes.slope",
    "Linear fit of the mean log-odds of the correct answer against the number of examples: slope",
    source_seed="002", unit="nats per example")
BAYES_INTERCEPT = claims.declare("linear_fn.bayes.intercept", "Same fit: intercept", source_seed="002", unit="nats")
BAYES_LOG_P_SLOPE = claims.declare(
    "linear_fn.bayes.log_p_slope", "Linear fit of mean log P(correct) against the number of examples: slope",
    source_seed="002", source_value="log c per example", source_quote=QUOTES["log_c"], unit="nats per example")
BAYES_ADDITIVE = claims.declare(
    "linear_fn.bayes.additive",
    "Evidence adds up: the mean log-odds grow linearly with the number of examples (R² of the line, signed by "
    "its slope: r·|r|)",
    source_seed="002", source_value="additive (Bayesian) updates", source_quote=QUOTES["additive"], unit="R²",
    test=claims.at_least(R2_ADDITIVE),
    criterion=f"R² >= {R2_ADDITIVE} with a positive slope (r·|r| >= {R2_ADDITIVE}; our threshold)")
FIRST_STAGE = claims.declare(
    "linear_fn.first_patch_stage",
    "First stage whose patch (where B reads the answer) recovers half of P(correct), as a fraction of the depth",
    source_seed="002", source_value="layer 12", source_quote=QUOTES["first"],
    unit="of depth ({stage})",
    test=claims.between(SOURCE_DEPTHS["first"] - DEPTH_TOLERANCE, SOURCE_DEPTHS["first"] + DEPTH_TOLERANCE),
    criterion=f"within ±{DEPTH_TOLERANCE} of 12/32 = 0.375 (llama-3-8b has 32 layers; our tolerance)")
# Where a prompt's patch first carries the task for good (`settled_kinds`), is its answer ≈2x (nearer 2x than
# 2x + 3) or the exact one? Over the prompts run A answers exactly: for those the last stage reads A's exact
# answer, so every one has such a stage; a prompt A gets wrong has no task to transfer.
_SETTLED = ("where the patch first carries the task for good (the first stage from which every later stage's "
            "patched answer is within 5 of 2x or of 2x + 3)")
ABOUT_2X_FIRST = claims.declare(
    "linear_fn.first_patch_gives_about_2x",
    f"Per prompt, {_SETTLED}, the answer is ≈2x (within 5 of 2x and nearer 2x than 2x + 3), not the exact answer: "
    "share of the {n} prompts run A answers exactly (stages where most prompts answer ≈2x: from {near}; exactly: "
    "from {exact})",
    source_seed="002", source_value="y≈2x at the first working layer (12)", source_quote=QUOTES["about_2x"],
    unit="share of prompts", test=claims.above(0.5), criterion="> 0.5: most prompts (our threshold)",
    first_criterion="the first stage where most patched answers are within 5 of 2x (the exact answer included) "
                    "comes before the first where most are exact, passing when no stage is exact; changed in "
                    "review, not after a result: that band holds 2x + 3 and a missing stage passed")
SURVIVES = claims.declare(
    "linear_fn.answer_survives_layer_ablation",
    "Of the {n} prompts run A answers exactly, the share still exact after ablating every head of the layer below "
    "the first stage (A's accuracy {unablated} → {ablated})",
    source_seed="002", source_value="answer unchanged", source_quote=QUOTES["survives"], unit="share of prompts",
    test=claims.at_least(0.8), criterion="at least 0.8 of them (our threshold for 'not significantly')")
_DEEPER = dict(source_seed="002", unit="of depth", test=claims.above(0.0),
               criterion="> 0: a later stage than in the round before")
MOVES_DEEPER = {
    1: claims.declare("linear_fn.first_patch_moves_deeper",
                      "After ablation round 1, the first stage recovering half of P(correct) moves deeper "
                      "({stages}): change in its depth", source_value="before layer 14",
                      source_quote=QUOTES["deeper1"], **_DEEPER),
    2: claims.declare("linear_fn.second_ablation_moves_deeper",
                      "After ablation round 2, the first stage recovering half of P(correct) moves deeper "
                      "({stages}): change in its depth", source_value="from 14 to 16",
                      source_quote=QUOTES["deeper2"], **_DEEPER),
}
HEADS_BEFORE_FAILURE = claims.declare(
    "linear_fn.heads_before_failure",
    "Heads ablated (whole layers, in the order of the rounds) before A's accuracy falls below 0.5",
    source_seed="002", source_value="still correct after the last round (layer 15 ablated too)",
    source_quote=QUOTES["correct"], unit="heads")
BACKUP_HEAD = claims.declare(
    "linear_fn.backup_head_below_new_stage",
    "After ablation round 1 (layer {ablated}), the head whose direct effect on the answer rose most ({head}, "
    "{rise} logits) lies above the ablated layer and below the new first stage ({stage}): its layer",
    source_seed="002", source_value="layer 13 (after the initial ablation)", source_quote=QUOTES["backup"],
    unit="layer", criterion="ablated layer < its layer < the new first stage's layer",
    test=lambda t: t[2] is not None and t[1] < t[0] < t[2],  # (its layer, ablated layer, first stage)
    examples=((13, 11, 14), (14, 11, 14)),
    why_no_interval="the head is an argmax over the heads of one model (of their mean rise over the round's "
                    "prompts): a choice of one head, not a mean with an interval")
LATE_EXACT = claims.declare(
    "linear_fn.late_patch_copies_exact_answer",
    f"After the last ablation round ({{round}}, layers {{layers}}): per prompt, {_SETTLED}, the answer is ≈2x "
    "(nearer 2x than 2x + 3): share of the {n} prompts ablated A answers exactly (stages where most prompts "
    "answer ≈2x: from {near}; exactly: from {exact})",
    source_seed="002", source_value="no ≈2x stage; the exact answer is copied", source_quote=QUOTES["late"],
    unit="share of prompts", test=claims.below(0.5),
    criterion="< 0.5: most prompts go straight to the exact side (our threshold)",
    first_criterion="no stage where most patched answers are within 5 of 2x (the exact answer included) before "
                    "the first where most are exact; changed in review, not after a result: that band holds "
                    "2x + 3, so it could not tell ≈2x from the exact answer")
TOP_HEADS_PATTERN = claims.declare(
    "linear_fn.top_heads_attend_to_answers",
    "The top head (direct effect, no ablation) of each ablated layer ({heads}) attends from the position "
    "before the answer to earlier answers' tokens: that attention over those tokens' share of the context "
    "(mean over prompts, median over the heads)",
    source_seed="002", source_value="y_i → token before y_j (j > i)", source_quote=QUOTES["pattern"],
    unit="x uniform", test=claims.at_least(ENRICHMENT),
    criterion=f"median >= {ENRICHMENT:g} (at least twice the uniform share; our threshold)")


def _stage(value: Any) -> int | None:
    """A stage index read back from a table, where pandas may have made it a float or NaN."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else int(value)


def _depth_label(stage: int | None, n_layers: int) -> str:
    stage = _stage(stage)
    return stage_names(n_layers)[stage] if stage is not None else "none"


@dataclasses.dataclass(frozen=True)
class BayesFit:
    """Lines through the best setting's mean log-odds and mean log P(correct) from one example on
    (zero examples is the prior, not an update); `log_p` holds the per-prompt values the means
    average, so every fitted number has a bootstrap interval over prompts."""

    curve: pd.DataFrame  # the best setting's `icl_curve` rows
    label: str
    recording: Recording
    log_p: Float[np.ndarray, "batch example"] | None = None  # per prompt: log P(correct) of example i

    @property
    def fit(self) -> dict[str, float]:
        c = self.curve[self.curve["examples"] >= 1]
        odds, logp = _fit(c["examples"], c["log_odds"]), _fit(c["examples"], c["log_p"])
        return {**odds, "log_p_slope": logp["slope"], "log_p_r2": logp["r2"]}

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame([self.fit])

    def figure(self) -> Any:
        fit = self.fit
        c = self.curve.assign(fit=lambda t: fit["intercept"] + fit["slope"] * t["examples"])
        return plots.lines(c.melt(id_vars="examples", value_vars=["log_odds", "fit"], var_name="series",
                                  value_name="log-odds"), x="examples", y="log-odds", group="series",
                           title=f"{self.label}: mean log-odds of the correct answer, and the line "
                                 f"fitted from 1 example (R² = {fit['r2']:.2f})")

    def intervals(self) -> dict[str, claims.Interval]:
        """Bootstrap intervals over prompts of the fits of the resampled prompts' mean curves:
        slope, intercept, log P slope and r·|r| (R² signed by the slope)."""
        if self.log_p is None:
            return {}
        examples = np.arange(self.log_p.shape[1], dtype=float)
        x, odds, logp = examples[1:], log_odds(self.log_p)[:, 1:], self.log_p[:, 1:]

        def fitted(key: str, values: np.ndarray) -> Any:
            def statistic(idx: np.ndarray) -> Any:
                fit = line_fits(x, values[idx].mean(-2))
                return fit["r"] * np.abs(fit["r"]) if key == "signed_r2" else fit[key]
            return statistic

        n = len(self.log_p)
        return {"slope": claims.bootstrap_units(n, fitted("slope", odds), "prompts"),
                "intercept": claims.bootstrap_units(n, fitted("intercept", odds), "prompts"),
                "log_p_slope": claims.bootstrap_units(n, fitted("slope", logp), "prompts"),
                "signed_r2": claims.bootstrap_units(n, fitted("signed_r2", odds), "prompts")}

    def claims(self) -> list[claims.Claim]:
        fit, at, ci = self.fit, self.recording, self.intervals()
        signed_r2 = float(np.sign(fit["slope"]) * fit["r2"])
        why = "" if ci else "no per-prompt values kept"
        return [at.measure(BAYES_SLOPE, fit["slope"], interval=ci.get("slope")),
                at.measure(BAYES_INTERCEPT, fit["intercept"], interval=ci.get("intercept")),
                at.measure(BAYES_LOG_P_SLOPE, fit["log_p_slope"], interval=ci.get("log_p_slope")),
                at.measure(BAYES_ADDITIVE, signed_r2, interval=ci.get("signed_r2"), why_no_interval=why)]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Accuracy and P(correct) against the number of examples for every setting (and contrast
    models); `best` is the setting with the highest accuracy over the second half of the curve
    (ties: higher mean P(correct) there). `scores` keeps the per-prompt values the curves average:
    (model, setting label) -> (log P [prompt, example], greedy exact [prompt, example])."""

    curves: pd.DataFrame  # model, setting, examples, accuracy, p_correct, log_p, log_odds
    model: str
    late_from: int
    profile: str = "full"
    scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)
    # (model, setting label) -> the last example asked after its lines: (log P, exact) of the prompt, of its
    # shuffled-y control, and the constant (mean) answer's exactness, per prompt (`last_line_problems`)
    controls: dict[tuple[str, str], dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    @property
    def control_table(self) -> pd.DataFrame:
        """Per (model, setting): at the last example, accuracy and P(correct) of the prompt, of its
        shuffled-y control and of the constant mean answer, and the paired differences prompt −
        control with their 95% bootstrap intervals over the prompts."""
        rows = []
        for (who, label), c in self.controls.items():
            acc, acc_ci = paired_gain(c["exact"], c["shuffled_exact"])
            p, p_ci = paired_gain(np.exp(c["log_p"]), np.exp(c["shuffled_log_p"]))
            rows.append({"model": who, "setting": label, "prompts": len(c["exact"]),
                         "accuracy": float(c["exact"].mean()), "shuffled accuracy": float(c["shuffled_exact"].mean()),
                         "constant-answer accuracy": float(c["constant"].mean()),
                         "P(correct)": float(np.exp(c["log_p"]).mean()),
                         "shuffled P(correct)": float(np.exp(c["shuffled_log_p"]).mean()),
                         "accuracy − shuffled": acc, "low": acc_ci.low, "high": acc_ci.high,
                         "P − shuffled P": p, "P low": p_ci.low, "P high": p_ci.high})
        return pd.DataFrame(rows).set_index(["model", "setting"]) if rows else pd.DataFrame()

    def beats_control(self, setting: Setting | None = None) -> str:
        """Whether `setting` (the best by default) beats its shuffled control on accuracy, decided as
        its claim row is: "yes", "no" or "inconclusive"."""
        row = self.control_table.loc[(self.model, (setting or self.best).label)]
        decision = BEATS_SHUFFLED.test.decide(claims.Interval(row["low"], row["high"], "paired bootstrap", 1))
        return {"reproduced": "yes", "not_reproduced": "no", "inconclusive": "inconclusive"}[decision]

    def control_statement(self, setting: Setting | None = None) -> str:
        """One sentence on whether the setting the mechanistic sections dissect beats its control."""
        setting = setting or self.best
        row = self.control_table.loc[(self.model, setting.label)]
        verdict = self.beats_control(setting)
        numbers = (f"accuracy at the last example {row['accuracy']:.2f} against {row['shuffled accuracy']:.2f} with "
                   f"the y values shuffled (difference {row['accuracy − shuffled']:+.2f}, 95% interval "
                   f"[{row['low']:+.2f}, {row['high']:+.2f}] over {int(row['prompts'])} prompts); the constant mean "
                   f"answer: {row['constant-answer accuracy']:.2f}")
        p_decision = P_BEATS_SHUFFLED.test.decide(claims.Interval(row["P low"], row["P high"], "paired bootstrap", 1))
        p_verdict = {"reproduced": "higher than", "not_reproduced": "not higher than",
                     "inconclusive": "not shown to differ from"}[p_decision]
        p_words = (f" P(correct) of the exact answer is {p_verdict} under the shuffled control: "
                   f"{row['P(correct)']:.3f} against {row['shuffled P(correct)']:.3f} (difference "
                   f"{row['P − shuffled P']:+.3f}, 95% interval [{row['P low']:+.3f}, {row['P high']:+.3f}]).")
        if verdict == "yes":
            return (f"{self.model} in {setting.label} beats its shuffled-y control — in-context learning shown: "
                    f"{numbers}.{p_words}")
        what = "does not beat" if verdict == "no" else "is not shown to beat (inconclusive)"
        return (f"{self.model} in {setting.label} {what} its shuffled-y control in accuracy: {numbers}.{p_words} "
                "The sections below dissect a setting where in-context learning of the exact answer is not shown.")

    def control_figure(self) -> Any:
        t = self.control_table.reset_index()
        t["method"] = t["model"] + ": " + t["setting"]
        return plots.error_bars(t, value="accuracy − shuffled", low="low", high="high",
                                title="Accuracy at the last example, prompt − its shuffled-y control (95% paired CI)")

    @property
    def summary(self) -> pd.DataFrame:
        late = self.curves[self.curves["examples"] >= self.late_from]
        return (late.groupby(["model", "setting"], sort=False)[["accuracy", "p_correct"]].mean()
                .sort_values(["accuracy", "p_correct"], ascending=False))

    @property
    def best(self) -> Setting:
        ours = self.summary.loc[self.model]
        fmt, order = ours.index[0].split(" · ")
        return Setting(fmt, order)

    @property
    def best_curve(self) -> pd.DataFrame:
        c = self.curves
        return c[(c["model"] == self.model) & (c["setting"] == self.best.label)]

    @property
    def accuracy(self) -> float:
        """The best setting's accuracy over the second half of the curve."""
        return float(self.summary.loc[(self.model, self.best.label), "accuracy"])

    @property
    def late_accuracy(self) -> Float[np.ndarray, " batch"]:
        """Per prompt of the best setting: the share of its examples from `late_from` on answered exactly
        (their mean is `accuracy`)."""
        _, exact = self.scores[(self.model, self.best.label)]
        return exact[:, self.late_from :].mean(1)

    def bayes_fit(self) -> BayesFit:
        """The additive-evidence fit of the best setting's curve."""
        log_p = self.scores.get((self.model, self.best.label), (None, None))[0]
        return BayesFit(self.best_curve, self.best.label, Recording(CHAPTER, self.profile, self.model), log_p)

    def figure(self, y: str = "accuracy") -> Any:
        table = self.curves.assign(curve=self.curves["model"] + ": " + self.curves["setting"])
        return plots.lines(table, x="examples", y=y, group="curve",
                           title=f"{y} of the answer to example i, given the i examples before it")

    def claims(self) -> list[claims.Claim]:
        at = Recording(CHAPTER, self.profile, self.model)
        rows = [at.measure(TOP1, self.accuracy, interval=claims.bootstrap(self.late_accuracy, units="prompts"),
                           setting=self.best.label, late_from=self.late_from),
                at.measure(BEST_SETTING, self.best.label)]
        if (self.model, self.best.label) in self.controls:
            c, row = self.controls[(self.model, self.best.label)], self.control_table.loc[(self.model, self.best.label)]
            n, k = len(c["exact"]), int(self.curves["examples"].max())
            words = dict(setting=self.best.label, n=n, k=k, constant=f"{row['constant-answer accuracy']:.2f}")
            for spec, mine, theirs, fmt in ((BEATS_SHUFFLED, c["exact"], c["shuffled_exact"], "{:.2f}"),
                                            (P_BEATS_SHUFFLED, np.exp(c["log_p"]), np.exp(c["shuffled_log_p"]), "{:.3f}")):
                diff, interval = paired_gain(mine, theirs)
                rows.append(at.measure(spec, diff, interval=interval, real=fmt.format(np.mean(mine)),
                                       shuffled=fmt.format(np.mean(theirs)), **words))
        return rows


def format_sweep(model: HookedModel, tokenizer: Any, cfg: Config, *, name: str = "model",
                 contrasts: dict[str, Any] | None = None, settings: Sequence[Setting] | None = None,
                 seed: int = 0, control: bool = True) -> Sweep:
    """`icl_curve` for every format and order (or `settings`) on `model`, and in the default
    setting on each contrast model (name -> model with `.tokenizer`); the per-prompt scores kept.
    With `control`, every run's last example is also asked after the shuffled-y lines
    (`last_line_problems`), and the constant mean answer scored (`Sweep.controls`)."""
    settings = [Setting(f, o) for f in FORMATS for o in ORDERS] if settings is None else settings
    runs = [(name, s, model, tokenizer) for s in settings]
    runs += [(other, Setting(), m, m.tokenizer) for other, m in (contrasts or {}).items()]
    scores, tables, controls = {}, [], {}
    for who, setting, m, tok in runs:
        scores[(who, setting.label)] = icl_scores(m, tok, setting, cfg, seed=seed)
        tables.append(curve_of(*scores[(who, setting.label)]).assign(model=who, setting=setting.label))
        if control:
            log_p, exact = scores[(who, setting.label)]
            shuffled = last_line_problems(setting, cfg, seed=seed, shuffle=True)
            s_log_p, s_exact = query_scores(m, tok, shuffled)
            controls[(who, setting.label)] = {
                "log_p": log_p[:, -1], "exact": exact[:, -1], "shuffled_log_p": s_log_p, "shuffled_exact": s_exact,
                "constant": constant_answer(last_line_problems(setting, cfg, seed=seed))}
    return Sweep(pd.concat(tables, ignore_index=True), name, cfg.n_examples // 2, cfg.profile, scores, controls)


# --- patching the context in, and the redundancy loop ---------------------------------------------


def leading_integer(text: str) -> int | None:
    """The integer a decoded answer starts with (None if it does not start with one)."""
    match = re.match(r"\s*(-?\d+)", text)
    return int(match[1]) if match else None


def _layout(tokenizer: Any, problem: Problem) -> tuple[Encoded, Encoded, int, np.ndarray]:
    """Run A (examples, query, answer), run B (query, answer), B's prompt length and A's example
    positions (after any BOS, before the query line)."""
    a, b = encode_answers(tokenizer, problem), encode_answers(tokenizer, problem, 0)
    bos = len(tokenizer("")["input_ids"])
    query_len = b.query_end + 1 - bos
    return a, b, b.query_end + 1, np.arange(bos, a.query_end + 1 - query_len)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Run A (with examples, possibly ablated) and its patches into run B, per prompt."""

    clean_log_p: Float[np.ndarray, " n"]  # A's log P(correct answer)
    clean_exact: np.ndarray  # A's greedy answer is exact
    corrupt_log_p: Float[np.ndarray, " n"]  # B's, unpatched
    last: Float[np.ndarray, "n stage"]  # B's log P(correct), patched where it reads the answer
    # per head at the query position: attention mass on the examples, direct effect on the answer,
    # and attention on the examples' answer (y) tokens over those tokens' share of the context
    heads: Float[np.ndarray, "n layer head 3"]
    grid: Float[np.ndarray, "grid stage pos"] | None = None  # log P, every B position
    answers: Any = None  # [n, stage] B's read-out (see `_patched_rows`) under that patch

    def subset(self, n: int) -> Measurement:
        answers = None if self.answers is None else self.answers[:n]
        return Measurement(self.clean_log_p[:n], self.clean_exact[:n], self.corrupt_log_p[:n],
                           self.last[:n], self.heads[:n], None, answers)

    @property
    def curve(self) -> Float[np.ndarray, " stage"]:
        return np.exp(self.last).mean(0)

    @property
    def first_stage(self) -> int | None:
        return patching.first_transfer(self.curve, float(np.exp(self.clean_log_p).mean()),
                                       float(np.exp(self.corrupt_log_p).mean()))


def _head_capture(model: HookedModel, query_pos: Tensor, example_mask: Tensor, store: dict,
                  answer_mask: Tensor | None = None) -> list:
    """Hooks keeping, at each row's query position, every head's z, its attention mass on the
    examples (and on the `answer_mask` positions), and the final norm's scale."""
    rows = torch.arange(len(query_pos))

    def keep_z(layer: int):
        def hook(z: Tensor, hook: Any) -> None:
            store[("z", layer)] = z[rows, query_pos].detach().clone()  # [row, head, d_head]
        return hook

    def keep_mass(layer: int):
        def hook(pattern: Tensor, hook: Any) -> None:  # [row, head, query_pos, key_pos]
            row = pattern[rows, :, query_pos]
            store[("mass", layer)] = (row * example_mask[:, None, : row.shape[-1]]).sum(-1).detach()
            if answer_mask is not None:
                store[("answers", layer)] = (row * answer_mask[:, None, : row.shape[-1]]).sum(-1).detach()
        return hook

    def keep_scale(scale: Tensor, hook: Any) -> None:
        store["scale"] = scale[rows, query_pos].detach().clone()

    captures = [(hooks.z(l), keep_z(l)) for l in range(model.cfg.n_layers)]
    captures += [(hooks.pattern(l), keep_mass(l)) for l in range(model.cfg.n_layers)]
    if "ln_final.hook_scale" in model.hook_dict:
        captures.append(("ln_final.hook_scale", keep_scale))
    return captures


def direct_effects(model: HookedModel, z: Float[Tensor, "row layer head d_head"],
                   scale: Float[Tensor, "row 1"] | None, answer: Int[Tensor, " row"]
                   ) -> Float[Tensor, "row layer head"]:
    """Each head's output at the read position, through the final norm (centred for LayerNorm,
    divided by its scale, times its weight) and W_U, along the answer's logit minus the
    vocabulary's mean logit."""
    out = torch.einsum("rlhd,lhdm->rlhm", z, model.W_O.to(z))
    if model.cfg.normalization_type in ("LN", "LNPre"):
        out = out - out.mean(-1, keepdim=True)
    if scale is not None:
        out = out / scale[:, None, None]
    weight = getattr(getattr(model, "ln_final", None), "w", None)
    if weight is not None:
        out = out * weight.to(out)
    direction = model.W_U[:, answer].T - model.W_U.mean(1)  # [row, d_model]
    return torch.einsum("rlhm,rm->rlh", out, direction.to(out))


def _patched_rows(model: HookedModel, tokenizer: Any, rows: list, batch_size: int
                  ) -> tuple[np.ndarray, list[int | None]]:
    """Per row (tokens, stage, position(s), donor(s), answer span): B's log P of the answer span
    (teacher-forced) and its read-out, the number spelled by the argmax token at each place of
    the span given the correct tokens before it (the greedy answer whenever it is exact)."""
    log_p, readout = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        tokens = pad([r[0] for r in chunk])
        logits = patching.patched_logits(model, tokens, [r[1] for r in chunk], [r[2] for r in chunk],
                                         [r[3] for r in chunk])
        for i, (_, _, _, _, (a, b)) in enumerate(chunk):
            scores = torch.log_softmax(logits[i, a - 1 : b - 1].float(), -1)
            log_p.append(float(scores.gather(-1, tokens[i, a:b, None]).sum()))
            readout.append(leading_integer(tokenizer.decode(scores.argmax(-1).tolist())))
    return np.array(log_p), readout


@torch.no_grad()
def measure(model: HookedModel, tokenizer: Any, probs: Sequence[Problem], *, ablate_layers: Sequence[int] = (),
            n_grid: int = 0, batch_size: int = 64) -> Measurement:
    """Run A with examples (heads of `ablate_layers` zeroed) and patch its residual stream, one
    stage at a time, into run B (the query alone, never ablated), positions aligned from the end.
    For every prompt the patch covers the positions that predict the answer (B's last prompt
    position and the answer's own tokens, which digit-per-token answers need); for the first
    `n_grid` prompts also each B prompt position alone. B's answer is read teacher-forced."""
    layouts = [_layout(tokenizer, p) for p in probs]
    width = max(len(lay[1].tokens) for lay in layouts)
    source = pad([lay[0].tokens for lay in layouts])
    query_pos = torch.tensor([lay[0].query_end for lay in layouts])
    offsets = [len(lay[0].tokens) - len(lay[1].tokens) for lay in layouts]
    donor_pos = [[o + min(j, len(lay[1].tokens) - 1) for j in range(width)] for o, lay in zip(offsets, layouts)]
    mask = torch.zeros(source.shape, dtype=torch.float32)
    answer_mask = torch.zeros(source.shape, dtype=torch.float32)  # the examples' y tokens
    for r, lay in enumerate(layouts):
        mask[r, lay[3]] = 1
        for first, stop in lay[0].spans[:-1]:
            answer_mask[r, first : stop - 1] = 1  # the span's last token is the line's end
    # a uniform head would put (y tokens) / (positions up to the query) of its attention there
    answer_share = answer_mask.sum(1) / (query_pos + 1).float()
    store: dict = {}
    with ablation.ablated(model, layer_heads(model, list(ablate_layers))), \
            model.hooks(fwd_hooks=_head_capture(model, query_pos, mask, store, answer_mask)):
        donors, logits = patching.stage_residuals(model, source, donor_pos, return_logits=True)
    clean_log_p, clean_exact = span_scores(logits, source, [[lay[0].spans[-1]] for lay in layouts])
    n_stages, n = model.cfg.n_layers + 1, len(probs)
    rows = [(lay[1].tokens, None, 0, donors[r, 0, 0], lay[1].spans[-1]) for r, lay in enumerate(layouts)]
    for r, lay in enumerate(layouts):
        reading = list(range(lay[1].spans[-1][0] - 1, lay[1].spans[-1][1] - 1))
        rows += [(lay[1].tokens, s, reading, donors[r, reading, s], lay[1].spans[-1]) for s in range(n_stages)]
    rows += [(lay[1].tokens, s, j, donors[r, j, s], lay[1].spans[-1])
             for r, lay in enumerate(layouts[:n_grid]) for s in range(n_stages) for j in range(lay[2])]
    log_p, readout = _patched_rows(model, tokenizer, rows, batch_size)
    last = log_p[n : n + n * n_stages].reshape(n, n_stages)
    answers = np.array(readout[n : n + n * n_stages], dtype=object).reshape(n, n_stages)
    grid = None
    if n_grid:
        grid = np.full((n_grid, n_stages, max(lay[2] for lay in layouts)), np.nan)
        at = n + n * n_stages
        for r, lay in enumerate(layouts[:n_grid]):
            grid[r, :, : lay[2]] = log_p[at : at + n_stages * lay[2]].reshape(n_stages, lay[2])
            at += n_stages * lay[2]
    z = torch.stack([store[("z", l)] for l in range(model.cfg.n_layers)], 1)
    mass = torch.stack([store[("mass", l)] for l in range(model.cfg.n_layers)], 1)
    on_answers = torch.stack([store[("answers", l)] for l in range(model.cfg.n_layers)], 1)
    answer_tok = torch.tensor([int(lay[0].tokens[lay[0].spans[-1][0]]) for lay in layouts])
    effects = direct_effects(model, z, store.get("scale"), answer_tok)
    enrichment = on_answers / answer_share.clamp_min(1e-9)[:, None, None].to(on_answers)
    heads = torch.stack([mass, effects.to(mass), enrichment], -1).cpu().numpy()
    return Measurement(clean_log_p[:, 0], clean_exact[:, 0], log_p[:n], last, heads, grid, answers)


def _depth(stage: int | None, n_layers: int) -> float | None:
    """A stage "before layer l" as a fraction of the depth: l / n_layers."""
    return None if stage is None else stage / n_layers


def _first_share(share: pd.Series, at_least: float = 0.5) -> int | None:
    """The first stage (position in `share`, a column of `answer_kinds`) with share >= at_least."""
    hits = np.flatnonzero(np.asarray(share) >= at_least)
    return int(hits[0]) if len(hits) else None


def answer_kinds(answers: Any, problems: Sequence[Problem], n_layers: int) -> pd.DataFrame:
    """Per stage, the share of prompts whose patched B reads out exactly 2x + 3, ≈2x (within 5 of 2x
    and nearer 2x than 2x + 3) or ≈exact (within 5 of 2x + 3, nearer it, not exact): `classify`;
    `answers` is [n, stage] (`Measurement.answers`)."""
    rows = []
    for s, name in enumerate(stage_names(n_layers)):
        kinds = [classify(answers[i, s], p) for i, p in enumerate(problems)]
        rows.append({"stage": name, **{kind: np.mean([k == kind for k in kinds]) for kind in ON_TASK}})
    return pd.DataFrame(rows).set_index("stage")


def first_kinds(answers: Any, problems: Sequence[Problem], n_layers: int) -> tuple[int | None, int | None]:
    """The first stage where most patched answers are ≈2x, and where most are exact."""
    kinds = answer_kinds(answers, problems, n_layers)
    return _first_share(kinds["≈2x"]), _first_share(kinds["exact"])


def settled_kinds(answers: Any, problems: Sequence[Problem]) -> list[str]:
    """Per prompt, what its patched answer is (`classify`) where the patch first carries the task for
    good: at the first stage from which every later stage's answer is on task (within 5 of 2x or of
    2x + 3); "never on task" when the last stage's answer is not."""
    out = []
    for i, problem in enumerate(problems):
        kinds = [classify(answers[i, s], problem) for s in range(answers.shape[1])]
        settled = len(kinds)
        while settled > 0 and kinds[settled - 1] in ON_TASK:
            settled -= 1
        out.append(kinds[settled] if settled < len(kinds) else "never on task")
    return out


def settles_about_2x(m: Measurement, problems: Sequence[Problem]) -> Float[np.ndarray, " n"]:
    """Over the prompts run A answers exactly (their last stage reads A's exact answer, so each has a
    settling stage): 1 where the settled answer is ≈2x, else 0 (`settled_kinds`)."""
    kinds = settled_kinds(m.answers, problems)
    return np.array([kind == "≈2x" for kind, ok in zip(kinds, m.clean_exact) if ok], dtype=float)


def first_depths(m: Measurement, idx: np.ndarray, n_layers: int) -> Any:
    """`Measurement.first_stage` as a depth (stage / n_layers) of the prompts `idx` (an integer array
    (..., n), one row per bootstrap resample): the first stage whose mean patched P(correct) recovers
    half of the way from B's to A's mean. A resample where none does (A's and B's means equal) counts
    as the last stage, depth 1."""
    clean, corrupt = np.exp(m.clean_log_p)[idx].mean(-1), np.exp(m.corrupt_log_p)[idx].mean(-1)
    curve = np.exp(m.last)[idx].mean(-2)
    span = clean - corrupt
    with np.errstate(invalid="ignore", divide="ignore"):
        recovered = (curve - corrupt[..., None]) / np.where(span == 0, np.nan, span)[..., None]
    hits = recovered >= 0.5
    return np.where(hits.any(-1), hits.argmax(-1), curve.shape[-1] - 1) / n_layers


def _settled_row(at: Recording, spec: claims.ClaimSpec, m: Measurement, problems: Sequence[Problem],
                 **fields: Any) -> claims.Claim:
    """`spec` measured on `settles_about_2x`: its share, with a bootstrap interval over the prompts."""
    values = settles_about_2x(m, problems)
    if not len(values):
        return at.measure(spec, "no prompt to test: run A answers none exactly", n=0, **fields)
    return at.measure(spec, float(values.mean()), interval=claims.bootstrap(values, units="prompts"),
                      n=len(values), **fields)


@dataclasses.dataclass(frozen=True)
class PatchStudy:
    """Patching run A (examples) into run B (query alone), stage by stage, without ablation."""

    setting: Setting
    problems: tuple[Problem, ...]
    measurement: Measurement
    n_layers: int
    grid_tokens: tuple[str, ...]
    recording: Recording = Recording(CHAPTER, "full")

    @property
    def stages(self) -> list[str]:
        return stage_names(self.n_layers)

    @property
    def answer_kinds(self) -> pd.DataFrame:
        """Per stage, the share of prompts whose patched B reads out exactly 2x + 3, ≈2x, or ≈exact
        (`answer_kinds`)."""
        return answer_kinds(self.measurement.answers, self.problems, self.n_layers)

    @property
    def first_about_2x(self) -> int | None:
        return _first_share(self.answer_kinds["≈2x"])

    @property
    def first_exact(self) -> int | None:
        return _first_share(self.answer_kinds["exact"])

    @property
    def summary(self) -> pd.DataFrame:
        m, name = self.measurement, lambda s: self.stages[s] if s is not None else "none"
        return pd.DataFrame([{
            "P(correct) in A": float(np.exp(m.clean_log_p).mean()), "A exact": float(m.clean_exact.mean()),
            "P(correct) in B": float(np.exp(m.corrupt_log_p).mean()),
            "first stage recovering half of P": name(m.first_stage),
            "first stage where most answer ≈2x": name(self.first_about_2x),
            "first stage where most answer exactly": name(self.first_exact)}]).T.rename(columns={0: "value"})

    def figure(self) -> Any:
        grid = np.exp(self.measurement.grid).mean(0)
        return plots.heatmap(grid, x=[f"{i}:{t!r}" for i, t in enumerate(self.grid_tokens)], y=self.stages,
                             colorscale="Viridis",
                             title="P(correct answer) in run B after patching one vector from run A")

    def answers_figure(self) -> Any:
        table = self.answer_kinds.assign(**{"P(correct) / P in A": self.measurement.curve
                                            / float(np.exp(self.measurement.clean_log_p).mean())})
        long = table.reset_index().melt(id_vars="stage", var_name="read", value_name="share")
        long["stage index"] = long["stage"].map({s: i for i, s in enumerate(self.stages)})
        return plots.lines(long, x="stage index", y="share", group="read",
                           title="Run B patched where it reads the answer: its read-out answers, and P(correct)")

    def claims(self) -> list[claims.Claim]:
        m, n, at = self.measurement, self.n_layers, self.recording
        first = m.first_stage
        label = lambda s: _depth_label(s, n)  # noqa: E731
        if first is None:
            first_row = at.measure(FIRST_STAGE, "none", stage="none")
        else:
            first_row = at.measure(FIRST_STAGE, _depth(first, n), stage=label(first),
                                   interval=claims.bootstrap_units(len(m.last), lambda idx: first_depths(m, idx, n), "prompts"))
        return [first_row, _settled_row(at, ABOUT_2X_FIRST, m, self.problems, near=label(self.first_about_2x),
                                        exact=label(self.first_exact))]


def patch_study(model: HookedModel, tokenizer: Any, setting: Setting, cfg: Config, *, name: str = "model",
                seed: int = 1) -> PatchStudy:
    """`measure` without ablation on `cfg.n_patch` prompts of `setting` (each B prompt position
    patched alone for the first `cfg.n_grid`)."""
    probs = setting_problems(setting, cfg.n_patch, cfg.mech_examples, x_max=cfg.x_max, seed=seed)
    m = measure(model, tokenizer, probs, n_grid=cfg.n_grid)
    _, b, width, _ = _layout(tokenizer, probs[0])
    tokens = tuple(tokenizer.convert_ids_to_tokens(b.tokens[:width].tolist()))
    return PatchStudy(setting, tuple(probs), m, model.cfg.n_layers, tokens, cfg.recording(name))


@dataclasses.dataclass(frozen=True)
class Redundancy:
    """Seed 002's loop: rounds of ablating every head of one more layer in run A. `measurements`
    keeps each round's per-prompt values (one per row of `table`, on `problems`), so the claims
    have bootstrap intervals over prompts."""

    table: pd.DataFrame  # one row per round, round 0 without ablation
    curves: pd.DataFrame  # round, stage index, recovered share of P(correct)
    n_layers: int
    n_heads: int
    top_heads: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # per ablated layer
    recording: Recording = Recording(CHAPTER, "full")
    measurements: tuple[Measurement, ...] = ()
    problems: tuple[Problem, ...] = ()

    def figure(self) -> Any:
        return plots.lines(self.curves, x="stage index", y="recovered", group="round",
                           title="Share of P(correct) recovered by patching where B reads the answer, per round")

    def claims(self) -> list[claims.Claim]:
        rows, at, n, ms = self.table.to_dict("records"), self.recording, self.n_layers, self.measurements
        if len(ms) != len(rows):
            raise ValueError(f"{len(rows)} rounds in the table but {len(ms)} measurements")
        missing = f"not run ({len(rows) - 1} rounds)"
        first = rows[1] if len(rows) > 1 else None
        out = [self._survives_claim(first)]
        for i, spec in MOVES_DEEPER.items():
            if len(rows) <= i:
                out.append(at.measure(spec, missing, stages="not run"))
                continue
            before, after = _stage(rows[i - 1]["first stage index"]), _stage(rows[i]["first stage index"])
            stages = f"{rows[i - 1]['first stage']} → {rows[i]['first stage']}"
            if after is None or before is None:
                out.append(at.measure(spec, "no stage transfers", stages=stages))
                continue
            change = claims.bootstrap_units(len(ms[i].last), lambda idx, i=i: first_depths(ms[i], idx, n)
                                            - first_depths(ms[i - 1], idx, n), "prompts")
            out.append(at.measure(spec, _depth(after, n) - _depth(before, n), interval=change, stages=stages))
        failed = [r for r in rows[1:] if r["A exact"] < 0.5]
        out.append(at.measure(HEADS_BEFORE_FAILURE, float(failed[0]["heads ablated"]) if failed
                              else f"still ≥ 0.5 after {len(rows) - 1} rounds ({rows[-1]['heads ablated']} heads)"))
        out.append(self._backup_claim(first))
        last = rows[-1]
        near, exact = _stage(last["first ≈2x stage"]), _stage(last["first exact stage"])
        where = dict(round=f"round {last['round']}", layers=str(last["ablated layers"]),
                     near=_depth_label(near, n), exact=_depth_label(exact, n))
        if first is None:
            out.append(at.measure(LATE_EXACT, missing, n=0, **where))
        else:
            out.append(_settled_row(at, LATE_EXACT, ms[-1], self.problems, **where))
        out.append(self._pattern_claim(missing))
        return out

    def _survives_claim(self, first: dict | None) -> claims.Claim:
        base = self.table.iloc[0]
        words = dict(unablated=f"{base['A exact']:.2f}")
        if first is None:
            return self.recording.measure(SURVIVES, "not run (0 rounds)", n=0, ablated="not run", **words)
        words["ablated"] = f"{first['A exact']:.2f}"
        kept = self.measurements[1].clean_exact[self.measurements[0].clean_exact].astype(float)
        if not len(kept):
            return self.recording.measure(SURVIVES, "no prompt to test: run A answers none exactly", n=0, **words)
        return self.recording.measure(SURVIVES, float(kept.mean()), interval=claims.bootstrap(kept, units="prompts"),
                                      n=len(kept), **words)

    def _pattern_claim(self, missing: str) -> claims.Claim:
        if not len(self.top_heads):
            return self.recording.measure(TOP_HEADS_PATTERN, missing, heads="none")
        where = [(int(h[1 : h.index("H")]), int(h[h.index("H") + 1 :])) for h in self.top_heads["head"]]
        enrichment = np.stack([self.measurements[0].heads[:, l, h, 2] for l, h in where], 1)  # [prompt, head]
        median = lambda idx: np.median(enrichment[idx].mean(-2), -1)  # noqa: E731
        return self.recording.measure(TOP_HEADS_PATTERN, float(np.median(enrichment.mean(0))),
                                      interval=claims.bootstrap_units(len(enrichment), median, "prompts"),
                                      heads=", ".join(self.top_heads["head"]))

    def _backup_claim(self, first: dict | None) -> claims.Claim:
        if first is None:
            return self.recording.measure(BACKUP_HEAD, "not run (0 rounds)", ablated="none", head="none",
                                          rise="no", stage="none")
        ablated, stage = first["ablated layers"][-1], _stage(first["first stage index"])
        head = first["top backup head"]
        layer = int(head[1 : head.index("H")])
        return self.recording.measure(BACKUP_HEAD, float(layer), tested=(layer, ablated, stage), ablated=str(ablated),
                                      head=head, rise=f"{first['its direct effect rise']:+.2f}", stage=first["first stage"])


def redundancy_rounds(model: HookedModel, tokenizer: Any, study: PatchStudy, cfg: Config) -> Redundancy:
    """Each round zero-ablates (hook_z) every head of the highest layer not yet ablated below the
    current first transferring stage, in run A only, on the first `cfg.n_ablate` prompts of
    `study`; measures A's accuracy, the new first stage, the first stages where most patched answers
    are ≈2x and exact, and the top backup head (the remaining head whose direct effect on the answer
    rose most from round 0). Stops when no stage transfers. `top_heads`: the head of each ablated
    layer with the largest direct effect in round 0, and its attention on earlier answers' tokens."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    probs = list(study.problems[: cfg.n_ablate])
    names = stage_names(n_layers)
    base = study.measurement.subset(cfg.n_ablate)
    rounds, curves, layers, measured = [], [], [], []
    m: Measurement | None = base
    for r in range(cfg.rounds + 1):
        if r > 0:
            below = [l for l in range(min(m.first_stage, n_layers) - 1, -1, -1) if l not in layers]
            if not below:
                break
            layers = layers + [below[0]]
            m = measure(model, tokenizer, probs, ablate_layers=layers)
        measured.append(m)
        clean, corrupt = float(np.exp(m.clean_log_p).mean()), float(np.exp(m.corrupt_log_p).mean())
        recovered = (m.curve - corrupt) / (clean - corrupt) if clean != corrupt else m.curve * np.nan
        curves.append(pd.DataFrame({"round": f"round {r}: ablated {layers}", "stage index": np.arange(n_layers + 1),
                                    "recovered": recovered}))
        rise = m.heads[..., 1].mean(0) - base.heads[..., 1].mean(0)
        rise[layers] = -np.inf
        l, h = np.unravel_index(np.argmax(rise), rise.shape)
        near, exact = first_kinds(m.answers, probs, n_layers)
        rounds.append({
            "round": r, "ablated layers": list(layers), "heads ablated": n_heads * len(layers),
            "A exact": float(m.clean_exact.mean()), "P(correct) in A": clean,
            "first stage": names[m.first_stage] if m.first_stage is not None else "none",
            "first stage index": m.first_stage, "depth": _depth(m.first_stage, n_layers),
            "first ≈2x stage": near, "first exact stage": exact,
            "top backup head": f"L{l}H{h}" if r > 0 else "",
            "its attention to examples": f"{base.heads[:, l, h, 0].mean():.2f} → {m.heads[:, l, h, 0].mean():.2f}",
            "its direct effect": f"{base.heads[:, l, h, 1].mean():.2f} → {m.heads[:, l, h, 1].mean():.2f}",
            "its direct effect rise": float(rise[l, h]) if r > 0 else np.nan,
        })
        if m.first_stage is None:
            break
    effect = base.heads[..., 1].mean(0)
    top = [(l, int(np.argmax(effect[l]))) for l in layers]
    top_heads = pd.DataFrame({"layer": [l for l, _ in top], "head": [f"L{l}H{h}" for l, h in top],
                              "direct effect": [float(effect[l, h]) for l, h in top],
                              "enrichment": [float(base.heads[:, l, h, 2].mean()) for l, h in top]})
    return Redundancy(pd.DataFrame(rounds), pd.concat(curves, ignore_index=True), n_layers, n_heads, top_heads,
                      study.recording, tuple(measured), tuple(probs))


@torch.no_grad()
def head_patterns(model: HookedModel, tokenizer: Any, problem: Problem, heads: Sequence[str]
                  ) -> tuple[Float[np.ndarray, "head query_pos key_pos"], list[str]]:
    """Attention patterns of heads named `L{layer}H{head}` on one prompt (clean run), caching
    only their layers' patterns."""
    tokens = encode_answers(tokenizer, problem).tokens
    where = [(int(n[1 : n.index("H")]), int(n[n.index("H") + 1 :])) for n in heads]
    names = {hooks.pattern(l) for l, _ in where}
    _, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n in names)
    pattern = np.stack([cache[hooks.pattern(l)][0, h].float().cpu().numpy() for l, h in where])
    return pattern, tokenizer.convert_ids_to_tokens(tokens.tolist())

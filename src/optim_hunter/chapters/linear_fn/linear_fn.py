"""In-context learning of y = a x + b (seed 002): the prompts, their tokens and the teacher-forced
scores every section of the chapter reads.

A prompt is a run of example lines in one of `FORMATS` (e.g. `(x1, y1)\n(x2, y2)\n...(x, `) and
the answer is y followed by the line's end. Prompts are tokenized piece by piece (`encode_answers`)
so every answer's tokens are known: one teacher-forced forward (`forced`) then scores every example
of a prompt (its log P and whether greedy decoding writes it exactly). Here too: the answer kinds
(`classify`), the first-token Bayesian curve (`bayesian_curve`), per-head activity, the chapter's
sample sizes (`Config`) and the source's sentences (`QUOTES`).

The chapter's sections each call one function returning a small frozen result, in the modules
beside this one: `sweep.format_sweep` -> `Sweep` (with its controls and `BayesFit`),
`patch_study.patch_study` -> `PatchStudy`, `patch_study.redundancy_rounds` -> `Redundancy` (on the
patching measurement of `measurement`); each result's `claims()` holds the claims with their
criteria, fixed before any number is measured. Everything reads hooks by name, so any hooked model
with a tokenizer works.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from scipy.stats import linregress
from torch import Tensor

from optim_hunter.analysis import kv_decoding
from optim_hunter.chapters.linear_fn import CHAPTER as RECORD
from optim_hunter.core import hooks, settings
from optim_hunter.core.hooks import HookedModel
from optim_hunter.data import prompts
from optim_hunter.report.claim_rows import Recording

CHAPTER = RECORD.name  # the chapter the claim rows are filed under: "linear_fn"


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
        return settings.pick(profile, full=cls(profile=profile), smoke=cls(
            n_prompts=2, n_examples=6, mech_examples=6, n_patch=2, n_grid=1, n_ablate=2, rounds=1,
            profile=profile))

    def recording(self, model: str) -> Recording:
        return Recording(CHAPTER, self.profile, model)


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

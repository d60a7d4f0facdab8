"""Where does a language model learn in context? A competence map, measured against controls.

Tasks of graded difficulty (`TASKS`, easiest first):

  copy          y = x                       integers 0..99
  add_c         y = x + c                   c drawn per prompt from 1..9, x from 0..89
  affine_int    y = a x + b                 a from 2..5, b from 1..9, x from 0..20
  linear_1_1    one-feature `make_regression`, two decimals
  friedman3, friedman1, friedman2           as in `optim_hunter.data.datasets`, two decimals

crossed with the number of in-context examples and the prompt format (`Cell`: plain text or the
model's chat template; examples in drawn or increasing order of feature 0). Every prompt is written
by `prompts.format_prompt` and answered by `llm_regressor.greedy_answers` (batched, key/value
cached). Each prompt comes with two controls:

  * the *shuffled-y* prompt: the same examples and query with the outputs permuted (never the
    identity permutation), so the x -> y relation is gone but every number is still there;
  * the *mean baseline*: the mean of the example outputs, what a model that ignores the inputs
    would best answer.

Errors are scale-free: |answer - truth| over the spread (standard deviation) of that prompt's
example outputs, so tasks with outputs of different sizes compare. A cell *learns in context* when
(1) the paired bootstrap interval over prompts of (real error - shuffled error) lies below 0, (2)
that of (real error - mean-baseline error) lies below 0, and (3) at most `MAX_FAILED_SHARE` of
its real answers failed to parse. Unparseable answers are counted, never scored: a paired
difference uses the prompts where both sides have a number.

`measure` computes a `CompetenceMap` (`.table`, `.figure()`, `.best`, `.chosen`, `.claims()`);
`run` caches it on disk (settings.cache_dir()/competence/<model>-<profile>-<code hash>.json,
written atomically, one writer at a time) so a second chapter reads it instead of recomputing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock
from jaxtyping import Float

from optim_hunter import zoo
from optim_hunter.analysis import kv_decoding, llm_regressor
from optim_hunter.core import diskspace, settings
from optim_hunter.data import datasets, prompts
from optim_hunter.data.datasets import Split
from optim_hunter.report import claims, plots
from optim_hunter.report.claim_rows import Recording

FLOOR = 2.0 ** -6  # the figure draws an error below 1/64 of the mean baseline's (exact answers: 0) at 1/64
MAX_FAILED_SHARE = 0.1  # a cell whose real answers fail more often than this does not learn
FORMATS = ("plain", "chat")
ORDERS = ("random", "increasing")
CHAT_INSTRUCTION = "Continue the pattern: give the Output of the last example, as a number."


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    label: str
    difficulty: int  # 0 = easiest
    round_to: int
    integer: bool  # outputs are integers: exact match is reported too


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("copy", "y = x", 0, 0, True),
    Task("add_c", "y = x + c", 1, 0, True),
    Task("affine_int", "y = a x + b (small integers)", 2, 0, True),
    Task("linear_1_1", "one-feature linear, decimals", 3, 2, False),
    Task("friedman3", "Friedman #3", 4, 2, False),
    Task("friedman1", "Friedman #1", 5, 2, False),
    Task("friedman2", "Friedman #2", 6, 2, False),
)}


def task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]


def _integer_task(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([list(TASKS).index(name), seed])
    if name == "copy":
        x = rng.choice(100, n, replace=False).astype(float)
        return x, x.copy()
    if name == "add_c":
        c = int(rng.integers(1, 10))
        x = rng.choice(90, n, replace=False).astype(float)
        return x, x + c
    a, b = int(rng.integers(2, 6)), int(rng.integers(1, 10))
    x = rng.choice(21, n, replace=False).astype(float)
    return x, a * x + b


def make_split(name: str, n_examples: int, seed: int) -> Split:
    """One problem of task `name`: `n_examples` examples and one query, rounded as the task writes them."""
    spec = task(name)
    if spec.integer:
        if not 1 <= n_examples <= 19:
            raise ValueError(f"{name} draws distinct x's: 1..19 examples, got {n_examples}")
        x, y = _integer_task(name, n_examples + 1, seed)
        x = x[:, None]
        return Split(x[:n_examples], y[:n_examples], x[n_examples:], y[n_examples:])

    return datasets.make_split(name, n_examples, seed, round_to=spec.round_to)


def shuffled(split: Split, seed: int) -> Split:
    """The same examples and query with the example outputs permuted (never the identity)."""
    rng = np.random.default_rng([7, seed])
    n = len(split.y_train)
    perm = np.arange(n)
    while n > 1 and (perm == np.arange(n)).all():
        perm = rng.permutation(n)
    return Split(split.x_train, split.y_train[perm], split.x_query, split.y_query)


def ordered(split: Split, order: str) -> Split:
    """The examples in drawn order, or sorted by feature 0 (`increasing`)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order == "random":
        return split
    idx = np.argsort(split.x_train[:, 0], kind="stable")
    return Split(split.x_train[idx], split.y_train[idx], split.x_query, split.y_query)


def prompt_text(split: Split, round_to: int, fmt: str = "plain", tokenizer: Any = None) -> str:
    """The prompt of `split`: `prompts.format_prompt`, or in the chat format the same text as the
    user's message and the assistant's turn opened with `Output:` (the answer follows it)."""
    text = prompts.format_prompt(split.x_train, split.y_train, split.x_query[0], round_to)
    if fmt == "plain":
        return text
    if fmt != "chat":
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("the chat format needs a tokenizer with a chat template")
    messages = [{"role": "user", "content": f"{CHAT_INSTRUCTION}\n\n{text}"}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + "Output:"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One setting of the map: a task, a number of examples, a prompt format and an example order."""

    task: str
    n_examples: int
    format: str = "plain"
    order: str = "random"

    @property
    def key(self) -> str:
        """A lowercase id word: `affine_int_n8_plain_random`."""
        return f"{self.task}_n{self.n_examples}_{self.format}_{self.order}"


def grid(tasks: Sequence[str], sizes: Sequence[int], *, variants: Sequence[tuple[str, int]] = (),
         sizes_by_task: dict[str, Sequence[int]] | None = None) -> list[Cell]:
    """The plain-format cells `tasks x sizes` (`sizes_by_task` overrides a task's sizes), then the
    three format variants (chat; increasing x; both) of each (task, n) in `variants`."""
    cells = [Cell(t, n) for t in tasks for n in (sizes_by_task or {}).get(t, sizes)]
    for t, n in variants:
        cells += [Cell(t, n, "chat", "random"), Cell(t, n, "plain", "increasing"), Cell(t, n, "chat", "increasing")]
    return cells


def cell_prompts(cell: Cell, seed: int, tokenizer: Any = None) -> tuple[Split, str, str]:
    """(split, real prompt, shuffled-y prompt) of prompt `seed` of `cell`."""
    spec = task(cell.task)
    split = ordered(make_split(cell.task, cell.n_examples, seed), cell.order)
    return (split, prompt_text(split, spec.round_to, cell.format, tokenizer),
            prompt_text(shuffled(split, seed), spec.round_to, cell.format, tokenizer))


# --- claims (declared before any number is known; our own bars, source "issue") ----------------------

# The bars of a cell's two control claims (the map's rule: the paired difference of scale-free errors
# below 0). A chapter that records the map's rows under its own ids declares them with these, so every
# such pair has the same bar (and each stays declared by, and owned by, its chapter).
CONTROL_BARS = {
    "shuffled": dict(source_seed="issue", unit="output spreads", test=claims.below(0),
                     criterion="< 0: the real prompt beats its shuffled-y control (paired interval over prompts "
                               "below 0)"),
    "mean": dict(source_seed="issue", unit="output spreads", test=claims.below(0),
                 criterion="< 0: the real prompt beats the mean baseline (paired interval over prompts below 0)"),
}
BEATS_SHUFFLED = claims.declare(
    "competence.{cell}.real_minus_shuffled",
    "{label}, {n} examples, {fmt}: mean over prompts of the error on the real prompt minus the error on "
    "its shuffled-y control (errors in spreads of the example outputs; {failed} of {n_prompts} real answers "
    "unparseable)", **CONTROL_BARS["shuffled"])
BEATS_MEAN = claims.declare(
    "competence.{cell}.real_minus_mean",
    "{label}, {n} examples, {fmt}: mean over prompts of the error on the real prompt minus the error of "
    "answering the mean of the example outputs", **CONTROL_BARS["mean"])


def _mean_diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> Any:
    return np.mean(a - b, axis=axis)


def paired_interval(a: Float[np.ndarray, " n"], b: Float[np.ndarray, " n"]) -> claims.Interval | None:
    """`intervals.bootstrap` of mean(a - b) over the prompts where both are numbers (None with fewer than 2)."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2:
        return None
    return claims.bootstrap(a[keep], b[keep], statistic=_mean_diff, paired=True, units="prompts")


def summarize_cell(part: pd.DataFrame) -> dict[str, Any]:
    """One cell's row of the map from its prompts (columns truth, mean, scale, real, shuffled)."""
    truth, scale = part["truth"].to_numpy(float), part["scale"].to_numpy(float)
    err = {k: np.abs(part[k].to_numpy(float) - truth) / scale for k in ("real", "shuffled", "mean")}
    n = len(part)
    failed = int(np.isnan(err["real"]).sum())
    vs_shuffled = paired_interval(err["real"], err["shuffled"])
    vs_mean = paired_interval(err["real"], err["mean"])
    answered = np.isfinite(err["real"])
    mean_err = float(err["mean"][answered].mean()) if answered.any() else np.nan
    mean_err_shuffled = float(err["mean"][np.isfinite(err["shuffled"])].mean()) if np.isfinite(err["shuffled"]).any() else np.nan
    learns = (vs_shuffled is not None and vs_mean is not None and vs_shuffled.high < 0 and vs_mean.high < 0
              and failed <= MAX_FAILED_SHARE * n)
    row = {
        "n_prompts": n, "failed": failed, "failed_shuffled": int(np.isnan(err["shuffled"]).sum()),
        "error": np.nanmean(err["real"]) / mean_err if failed < n else np.nan,
        "error_shuffled": (np.nanmean(err["shuffled"]) / mean_err_shuffled if np.isfinite(err["shuffled"]).any()
                           else np.nan),
        "exact": float((part["real"] == part["truth"]).mean()),
        "exact_shuffled": float((part["shuffled"] == part["truth"]).mean()),
        "real_minus_shuffled": float(np.nanmean(err["real"] - err["shuffled"])) if vs_shuffled else np.nan,
        "rs_low": vs_shuffled.low if vs_shuffled else np.nan, "rs_high": vs_shuffled.high if vs_shuffled else np.nan,
        "real_minus_mean": float(np.nanmean(err["real"] - err["mean"])) if vs_mean else np.nan,
        "rm_low": vs_mean.low if vs_mean else np.nan, "rm_high": vs_mean.high if vs_mean else np.nan,
        "learns": bool(learns),
    }
    return row


KEYS = ["task", "n_examples", "format", "order"]


@dataclasses.dataclass(frozen=True)
class CompetenceMap:
    """The map: `prompts` holds one row per (cell, prompt) with the answers to the real and the
    shuffled prompt, the truth, the mean baseline and the spread; `table` one row per cell."""

    prompts: pd.DataFrame
    recording: Recording
    seconds: float = float("nan")  # the time the map took to compute (NaN: unknown)

    @property
    def table(self) -> pd.DataFrame:
        """Per cell: n_prompts, failed (unparseable real answers), error and error_shuffled (mean
        scale-free error over that of the mean baseline on the same answered prompts: 1 = no better
        than the mean), exact
        match shares, the two paired differences with their 95% intervals, and `learns`."""
        rows = [{**dict(zip(KEYS, key)), **summarize_cell(part)}
                for key, part in self.prompts.groupby(KEYS, sort=False)]
        table = pd.DataFrame(rows)
        table["difficulty"] = table["task"].map(lambda t: TASKS[t].difficulty)
        table["integer"] = table["task"].map(lambda t: TASKS[t].integer)
        return table

    @property
    def best(self) -> pd.DataFrame:
        """The cells that learn in context (by the rule above), hardest task first, then lowest error;
        the failing cells follow, marked `learns = False`, as contrast."""
        table = self.table.sort_values(["learns", "difficulty", "error"], ascending=[False, False, True])
        return table.reset_index(drop=True)

    @property
    def chosen(self) -> Cell | None:
        """The plain-format, drawn-order cell of the hardest task the model learns (lowest error among
        its sizes): where the mechanistic analyses run. None when no such cell learns."""
        best = self.best
        ok = best[best.learns & (best.format == "plain") & (best.order == "random")]
        if not len(ok):
            return None
        row = ok.iloc[0]
        return Cell(row["task"], int(row["n_examples"]), row["format"], row["order"])

    def cell(self, cell: Cell) -> pd.Series:
        table = self.table.set_index(KEYS)
        return table.loc[(cell.task, cell.n_examples, cell.format, cell.order)]

    def figure(self) -> Any:
        """Heat maps of log2(error / mean-baseline error), plain format, tasks x examples: the real
        prompt beside its shuffled-y control (0: as good as the mean; below: better)."""
        plain = self.table[(self.table.format == "plain") & (self.table.order == "random")]
        tasks = [t for t in TASKS if t in set(plain.task)]
        sizes = sorted(set(plain.n_examples))
        panels = []
        for column, title in (("error", "real prompt"), ("error_shuffled", "shuffled-y control")):
            grid_values = plain.pivot(index="task", columns="n_examples", values=column).reindex(index=tasks,
                                                                                               columns=sizes)
            panels.append((title, np.log2(np.maximum(grid_values.to_numpy(float), FLOOR)), 3.0))
        return plots.heatmap_grid([panels], x=[f"{n} examples" for n in sizes],
                                  y=[TASKS[t].label for t in tasks],
                                  title="log2(error / error of the mean baseline): blue beats the mean, red loses",
                                  colorscale="RdBu_r")  # negative (better than the mean) blue, as the title says

    def claims(self, cells: Sequence[Cell] | None = None, *, specs: tuple[claims.ClaimSpec, claims.ClaimSpec] | None = None,
               recording: Recording | None = None) -> list[claims.Claim]:
        """The two control rows (`specs`: real vs shuffled-y, real vs the mean baseline; by default
        this module's) of every cell, or of `cells`, recorded at `recording` (default the map's)."""
        shuffled_spec, mean_spec = specs or (BEATS_SHUFFLED, BEATS_MEAN)
        at = recording or self.recording
        table = self.table.set_index(KEYS)
        rows = []
        wanted = None if cells is None else {(c.task, c.n_examples, c.format, c.order) for c in cells}
        for key, row in table.iterrows():
            if wanted is not None and key not in wanted:
                continue
            cell = Cell(*key)
            common = dict(cell=cell.key, label=TASKS[cell.task].label, n=cell.n_examples,
                          fmt=f"{cell.format} format, {cell.order} order")
            for spec, col, lo, hi, extra in (
                (shuffled_spec, "real_minus_shuffled", "rs_low", "rs_high",
                 dict(failed=int(row["failed"]), n_prompts=int(row["n_prompts"]))),
                (mean_spec, "real_minus_mean", "rm_low", "rm_high", {}),
            ):
                if np.isfinite(row[col]):
                    interval = claims.Interval(float(row[lo]), float(row[hi]),
                                               f"paired bootstrap 95% over {int(row['n_prompts'])} prompts",
                                               int(row["n_prompts"]))
                    rows.append(at.measure(spec, float(row[col]), interval=interval, **common, **extra))
                else:
                    rows.append(at.measure(spec, "fewer than two answered prompts", **common, **extra))
        return rows

    def to_json(self) -> dict[str, Any]:
        # 17 significant digits (Python's float repr): pandas' own JSON keeps 10, and a build reading the
        # cached map would then write other claims than the build that measured it
        records = self.prompts.astype(object).where(self.prompts.notna(), None).to_dict(orient="records")
        return {"prompts": [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
                            for row in records], "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict[str, Any], recording: Recording) -> CompetenceMap:
        frame = pd.DataFrame(data["prompts"])
        for col in ("real", "shuffled"):
            frame[col] = frame[col].astype(float)
        return cls(frame, recording, float(data.get("seconds") or float("nan")))


def map_prompts(cells: Sequence[Cell], n_prompts: int, tokenizer: Any = None) -> tuple[pd.DataFrame, list[str]]:
    """(one row per cell and prompt: its truth, mean baseline and spread; the texts to answer, real and
    shuffled-y prompt alternating) for prompts 0..n_prompts-1 of every cell."""
    rows, texts = [], []
    for cell in cells:
        for seed in range(n_prompts):
            split, real, control = cell_prompts(cell, seed, tokenizer)
            spread = float(np.std(split.y_train))
            rows.append({"task": cell.task, "n_examples": cell.n_examples, "format": cell.format,
                         "order": cell.order, "seed": seed, "truth": float(split.y_query[0]),
                         "mean": float(np.mean(split.y_train)), "scale": spread if spread > 0 else 1.0})
            texts += [real, control]
    return pd.DataFrame(rows), texts


def from_answers(frame: pd.DataFrame, answers: Any, recording: Recording, seconds: float = float("nan")) -> CompetenceMap:
    """The map from `map_prompts`' frame and the answers (`llm_regressor.Answers`) to its texts."""
    frame = frame.copy()
    frame["real"], frame["shuffled"] = answers.values[0::2], answers.values[1::2]
    frame["real_text"], frame["shuffled_text"] = answers.texts[0::2], answers.texts[1::2]
    return CompetenceMap(frame, recording, seconds)


def measure(model: Any, tokenizer: Any, cells: Sequence[Cell], *, n_prompts: int, recording: Recording,
            batch_size: int = 32, progress: bool = False, precision: str = "fp32") -> CompetenceMap:
    """Prompts 0..n_prompts-1 of every cell, real and shuffled-y, answered greedily in one batched pass
    (at most 10 new tokens, stopped when the number is complete; `precision` as in
    `llm_regressor.greedy_answers`)."""
    start = time.perf_counter()
    frame, texts = map_prompts(cells, n_prompts, tokenizer)
    answers = llm_regressor.greedy_answers(model, tokenizer, texts, max_new_tokens=10, batch_size=batch_size,
                                           stop=None, progress=progress, precision=precision)
    return from_answers(frame, answers, recording, time.perf_counter() - start)


# --- the book's map, cached on disk ------------------------------------------------------------------

PLAIN_TASKS = tuple(TASKS)
ONE_FEATURE = ("copy", "add_c", "affine_int", "linear_1_1")


def book_grid(profile: str) -> tuple[list[Cell], int]:
    """The book's cells and prompts per cell: one-feature tasks at 4, 8 and 16 examples; the Friedman
    tasks (50-60 tokens an example) at 4 only; the format variants on y = a x + b and the one-feature
    linear task at 8 examples."""
    sizes = settings.pick(profile, full=[4, 8, 16], smoke=[4, 8])
    friedman = {t: [4] for t in ("friedman3", "friedman1", "friedman2")}
    variants = settings.pick(profile, full=[("affine_int", 8), ("linear_1_1", 8)], smoke=[("affine_int", 8)])
    return grid(PLAIN_TASKS, sizes, variants=variants, sizes_by_task=friedman), settings.pick(profile, full=16, smoke=3)


def code_hash() -> str:
    """What the cached map depends on: this module and the prompt, decoding and data code."""
    digest = hashlib.sha256()
    for module in (__import__(__name__, fromlist=["_"]), prompts, llm_regressor, kv_decoding, datasets):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


def cache_path(model_name: str, profile: str) -> Path:
    return settings.cache_dir() / "competence" / f"{settings.slug(model_name)}-{profile}-{code_hash()}.json"


def run(model_name: str, profile: str, *, recording: Recording, load: Callable[[], Any] | None = None) -> CompetenceMap:
    """The book's map for `model_name` under `profile`: read from the cache, else measured (the model
    from `load()`, by default `zoo.load(model_name)`) and written there. One process measures at a
    time (`<map>.lock`, held through `filelock` as the cache's lock `core.locks.exclusive` is): a second
    chapter waiting on it reads the first one's map."""
    path = cache_path(model_name, profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_suffix(".lock")):
        if path.exists():
            return CompetenceMap.from_json(json.loads(path.read_text(encoding="utf-8")), recording)
        if load is None:
            model = zoo.load(model_name)
        else:
            model = load()
        cells, n_prompts = book_grid(profile)
        found = measure(model, model.tokenizer, cells, n_prompts=n_prompts, recording=recording)
        text = json.dumps(found.to_json())
        diskspace.atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), len(text))
        return CompetenceMap.from_json(json.loads(text), recording)  # what every later reader gets

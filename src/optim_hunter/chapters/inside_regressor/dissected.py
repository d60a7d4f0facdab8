"""The settings the inside_regressor chapter dissects and their prompts.

Which setting the sections read is picked by measurement: `controls(competence_map)` -> `Controls`
names the competence map's chosen cell (the hardest task where the model's real prompts beat their
shuffled-y control and the mean baseline) and Friedman #2 as the contrast, with the map's control
rows for both (claims declared here, by the map's rule). `answer_problems` -> `Problems` answers one
prompt per seed of a setting beside the reference methods' predictions; the sections accept any
competence-map task (`make_split`: the map's own prompts, seed for seed) or `datasets` name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from optim_hunter.analysis import llm_regressor
from optim_hunter.chapters.competence import competence
from optim_hunter.chapters.competence.competence import Cell
from optim_hunter.chapters.inside_regressor.regression import reference_predictions
from optim_hunter.core.hooks import HookedModel
from optim_hunter.data import datasets
from optim_hunter.data.prompts import format_prompt
from optim_hunter.report import claims
from optim_hunter.report.claim_rows import Recording

REFERENCES = ("linear_regression", "knn", "average", "last")

# The controls of the settings this chapter dissects (our own bars; the same rule as the competence map).
CONTROL_SHUFFLED = claims.declare(
    "inside.control.{cell}.real_minus_shuffled",
    "Dissected setting {label}, {n} examples ({fmt}): error on the real prompt minus error on its shuffled-y "
    "control, mean over prompts (errors in spreads of the example outputs; {failed} of {n_prompts} real answers "
    "unparseable)", **competence.CONTROL_BARS["shuffled"])
CONTROL_MEAN = claims.declare(
    "inside.control.{cell}.real_minus_mean",
    "Dissected setting {label}, {n} examples ({fmt}): error on the real prompt minus the error of answering the "
    "mean of the example outputs, mean over prompts", **competence.CONTROL_BARS["mean"])


@dataclasses.dataclass(frozen=True)
class Controls:
    """The competence map's rows for the settings dissected here: `studied` (where the model learns,
    if any) and `contrast` (Friedman #2)."""

    cmap: Any  # competence.CompetenceMap
    cells: dict[str, Any]  # role -> competence.Cell
    recording: Recording

    @property
    def table(self) -> pd.DataFrame:
        cols = ["n_prompts", "failed", "error", "error_shuffled", "exact", "real_minus_shuffled", "rs_low",
                "rs_high", "real_minus_mean", "rm_low", "rm_high", "learns"]
        rows = [{"role": role, "task": competence.TASKS[c.task].label, "n_examples": c.n_examples,
                 **self.cmap.cell(c)[cols].to_dict()} for role, c in self.cells.items()]
        return pd.DataFrame(rows)

    def claims(self) -> list[claims.Claim]:
        return self.cmap.claims(list(dict.fromkeys(self.cells.values())), specs=(CONTROL_SHUFFLED, CONTROL_MEAN),
                                recording=self.recording)


def controls(cmap: Any, *, contrast: str = "friedman2", recording: Recording) -> Controls:
    """The settings to dissect, picked by the competence map `cmap`: its `chosen` cell (None when no
    cell learns in context) and the plain-format cell of `contrast` with the fewest examples."""
    table = cmap.table
    rows = table[(table.task == contrast) & (table.format == "plain") & (table.order == "random")]

    cells = {} if cmap.chosen is None else {"studied": cmap.chosen}
    if len(rows):
        cells["contrast"] = Cell(contrast, int(rows.n_examples.min()))
    return Controls(cmap, cells, recording)


def prompt_text(split: Any, round_to: int) -> str:
    return format_prompt(split.x_train, split.y_train, split.x_query[0], round_to)


def task_round_to(dataset: str, round_to: int | None) -> int:
    """`round_to`, or the decimals a competence-map task writes (two for any other dataset)."""
    if round_to is not None:
        return round_to
    return competence.TASKS[dataset].round_to if dataset in competence.TASKS else 2


def make_split(dataset: str, n_examples: int, seed: int, round_to: int | None = None) -> Any:
    """Problem `seed` of a competence-map task (`competence.make_split`: the map's own prompts), or of
    any other `datasets` name, rounded to `round_to` decimals (default: the task's)."""
    if dataset in competence.TASKS and round_to in (None, competence.TASKS[dataset].round_to):
        return competence.make_split(dataset, n_examples, seed)
    return datasets.make_split(dataset, n_examples, seed, round_to=task_round_to(dataset, round_to))


@dataclasses.dataclass(frozen=True)
class Problems:
    """One prompt per seed: its true output, some classical methods' predictions, the model's
    greedy answer and its error (`table`, one row per prompt)."""

    splits: tuple[Any, ...]
    texts: tuple[str, ...]
    table: pd.DataFrame  # true, each reference method, llm, llm_error
    n_failed: int
    round_to: int

    @property
    def low_error(self) -> np.ndarray:
        """Prompts whose answer's error is at most the median (an unparseable answer is high)."""
        errors = self.table["llm_error"]
        return (errors <= errors.median()).to_numpy()


def answer_problems(model: HookedModel, tokenizer: Any, dataset: str, *, n_seeds: int, n_examples: int,
                    round_to: int | None = None, references: Sequence[str] = REFERENCES) -> Problems:
    """Seeds 0..n_seeds-1 of `dataset` (a competence-map task or a `datasets` name) with `n_examples`
    examples: the model's greedy answers (at most 10 tokens, batches of 32) beside the true output and
    the reference methods' predictions. The same seeds as the competence map's prompts of that cell."""
    round_to = task_round_to(dataset, round_to)
    splits = [make_split(dataset, n_examples, s, round_to) for s in range(n_seeds)]
    texts = [prompt_text(s, round_to) for s in splits]
    answers = llm_regressor.greedy_answers(model, tokenizer, texts, max_new_tokens=10, batch_size=32)
    table = pd.DataFrame([{**reference_predictions(s, references, seed=i), "llm": v}
                          for i, (s, v) in enumerate(zip(splits, answers.values))])
    table["llm_error"] = (table["llm"] - table["true"]).abs()
    return Problems(tuple(splits), tuple(texts), table, answers.parsed.n_failed, round_to)

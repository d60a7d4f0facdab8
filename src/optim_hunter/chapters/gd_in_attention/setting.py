"""The setting of the chapter "Gradient descent inside linear self-attention"
(book/gd_in_attention.md): its constants, the task family, the profile's budgets and the task sets
every number is measured on, and how many training seeds every trained model has.

The chapter's experiments live beside this module, one module per section (`construction_check`,
`gd_baseline`, `one_layer`, `deeper_stacks`, `softmax_attention`, and `overview`: every model side
by side), on top of `optim_hunter.analysis.lsa` and its `lsa_*` companions; `task_stats` holds the
per-task values and the bootstrap intervals the sections share. Each section returns a
frozen result holding the numbers, with `figure`-style methods (built with
`optim_hunter.report.plots` helpers), `claims()` (the rows of the claims declared beside the code
that measures them, with criteria fixed before any number is known) and `numbers()` (the values
the chapter's prose pastes with myst-nb glue).

Training seeds. A claim about a trained model is a claim about what training produces, so every
trained model is trained on `SEEDS` training seeds (initial weights and training tasks; the
evaluation and tuning tasks and the tuned GD / GD++ baselines are shared) and its claims are
decided by one rule, `training_seeds.across_seeds`: the interval holds the per-seed 95% bootstrap
intervals over the held-out tasks and the 95% prediction interval for another training seed
(`intervals.over_seeds`; a number without a per-seed interval, such as a property of the weights,
counts as its value). A verdict is reproduced only if that whole interval meets the criterion,
not reproduced if none of it does, inconclusive otherwise. Figures and the prose's numbers are
seed 0's (`training_seeds.OverSeeds`); the verdicts and intervals the prose quotes are the seeds'
(`numbers(rows=...)`).

  Setup, setup        the task family, the profile's budgets, evaluation and tuning tasks
  example_tokens      one task as the table of its tokens
  seeds_numbers       SeedsInfo: the number of training seeds, for the prose
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pandas as pd

from optim_hunter.analysis import lsa
from optim_hunter.chapters.gd_in_attention import CHAPTER as RECORD
from optim_hunter.core import settings

CHAPTER = RECORD.name
SOURCE = "von-oswald-2023"
MODEL = "lsa"
TASKS = lsa.TaskConfig(d=10, n_context=10, x_range=1.0, w_scale=1.0)  # von Oswald et al.'s setting

LOSS_BAR = 0.02  # "the same loss": within 2%
COSINE_BAR = 0.99  # "the same function of the query": mean sensitivity cosine
SEEDS = 3  # training seeds of every trained model

# The units of an interval: held-out evaluation tasks; for a trained model, the held-out tasks of
# one training seed's model (its rows then take the range of these intervals over the SEEDS seeds).
TASK_UNITS = "held-out tasks"
TRAINED_UNITS = "held-out tasks of one trained model"
SEED_UNITS = "training seeds"


# --- the setting ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
    """Budgets of a profile and the task sets every number is measured on (held-out evaluation
    tasks; tuning tasks for the gradient-descent step sizes, a prefix of them for L-BFGS)."""

    profile: str
    task_cfg: lsa.TaskConfig
    steps_one: int  # training steps, one-layer models
    steps_deep: int  # training steps, two- and three-layer models
    tune_starts: tuple[float, ...]
    tune_iters: int
    eval_tasks: lsa.Tasks
    tune_tasks: lsa.Tasks
    tune_multi: lsa.Tasks
    batch_size: int = lsa.BATCH_SIZE
    lr_one: float = 3e-3
    lr_deep: float = 5e-3

    def train(self, name: str, n_layers: int, softmax: bool = False, seed: int = 0) -> lsa.Trained:
        """Train an attention model of this profile's budget with `lsa.recipe` (training `seed`:
        initial weights and training tasks)."""
        steps, lr = (self.steps_one, self.lr_one) if n_layers == 1 else (self.steps_deep, self.lr_deep)
        config = lsa.recipe(steps, lr, seed=seed, eval_every=max(steps // 30, 1))
        return lsa.train(self.task_cfg, config, self.eval_tasks, n_layers=n_layers, softmax=softmax,
                         batch_size=self.batch_size, name=name)

    def describe(self) -> str:
        return (f"profile={self.profile}: d={self.task_cfg.d}, N={self.task_cfg.n_context}, "
                f"{self.eval_tasks.x.shape[0]} evaluation tasks, {self.steps_one}/{self.steps_deep} "
                "training steps (one layer / deeper)")

    def numbers(self) -> dict[str, Any]:
        return {"lsa_batch": self.batch_size, "lr_one": self.lr_one, "lr_deep": self.lr_deep,
                "loss_bar": LOSS_BAR, "cosine_bar": COSINE_BAR}


def setup(profile: str) -> Setup:
    """The chapter's setting under `profile` (full or smoke budgets)."""
    profile = settings.profile(profile)
    pick = functools.partial(settings.pick, profile)
    tune = lsa.sample_tasks(TASKS, pick(full=20_000, smoke=2_000), generator=10_002)
    n_multi = pick(full=4_000, smoke=1_000)
    return Setup(
        profile=profile, task_cfg=TASKS,
        steps_one=pick(full=1500, smoke=200), steps_deep=pick(full=2500, smoke=150),
        tune_starts=pick(full=(0.5, 1.5, 3.0), smoke=(1.5,)), tune_iters=pick(full=200, smoke=30),
        eval_tasks=lsa.sample_tasks(TASKS, pick(full=10_000, smoke=2_000), generator=10_001),
        tune_tasks=tune, tune_multi=lsa.Tasks(*(t[:n_multi] for t in tune)),
    )


def example_tokens(cfg: lsa.TaskConfig = TASKS, seed: int = 0) -> pd.DataFrame:
    """One task's tokens as a table: a row per example e_i = (x_i, y_i), then the query (x, 0)."""
    e = lsa.tokens(lsa.sample_tasks(cfg, 1, generator=seed))[0]
    return pd.DataFrame(
        e.numpy(),
        index=[f"e_{i + 1}" for i in range(cfg.n_context)] + ["query"],
        columns=[f"x[{k}]" for k in range(cfg.d)] + ["y"],
    ).round(2)


# --- training seeds -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SeedsInfo:
    """How many training seeds every trained model has (for the prose)."""

    seeds: int = SEEDS

    def numbers(self) -> dict[str, Any]:
        return {"n_seeds": self.seeds}


def seeds_numbers(seeds: int = SEEDS) -> SeedsInfo:
    """The number of training seeds, for the prose's glue."""
    return SeedsInfo(seeds)


"""The softmax caveat (gd_in_attention chapter): one- and two-layer softmax attention, trained like
the LSA models, against one GD step at its best step size.

  softmax_caveat      Softmax: one- and two-layer softmax attention against one GD step
  softmax_seeds       the same on every training seed, each beside the same seed's LSA layer
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pandas as pd

from optim_hunter.analysis import lsa
from optim_hunter.analysis.intervals import Interval
from optim_hunter.chapters.gd_in_attention import task_stats
from optim_hunter.chapters.gd_in_attention.gd_baseline import Baseline
from optim_hunter.chapters.gd_in_attention.one_layer import OneLayer
from optim_hunter.chapters.gd_in_attention.setting import CHAPTER, COSINE_BAR, LOSS_BAR, MODEL, SEED_UNITS, Setup
from optim_hunter.report import claims
from optim_hunter.report.claims import Claim
from optim_hunter.report.training_seeds import OverSeeds

SOFTMAX1_LOSS = claims.declare(
    "lsa.softmax1.trained_loss", "Loss of a trained one-layer softmax attention model (same setting)",
    source_seed="004", unit="loss")
SOFTMAX1_RATIO = claims.declare(
    "lsa.softmax1.loss_ratio_to_gd1",
    "One-layer softmax model's loss relative to one GD step (1 = equal). The seed says a first "
    "softmax layer must cancel the softmax before a second can implement GD; our reading of it: "
    "one softmax layer alone falls short of one GD step",
    source_seed="004", unit="ratio",
    criterion=f"ratio > {1 + LOSS_BAR:g} (worse than one GD step by more than our {LOSS_BAR:.0%} bar)",
    test=claims.above(1 + LOSS_BAR))
SOFTMAX2_LOSS = claims.declare(
    "lsa.softmax2.trained_loss", "Loss of a trained two-layer softmax attention model",
    source_seed="004", unit="loss")
SOFTMAX2_GAP = claims.declare(
    "lsa.softmax2.closes_gap",
    "A second softmax layer recovers (at least) one GD step's loss: loss ratio to lsa.gd1_loss",
    source_seed="004", source_value="2-layer softmax achieves equivalent performance",
    source_quote="the authors show that 2-layer networks with softmax can achieve equivalent performance",
    unit="ratio",
    criterion=f"two-layer softmax loss <= {1 + LOSS_BAR:g} x one-GD-step loss (our {LOSS_BAR:.0%} bar)",
    test=claims.at_most(1 + LOSS_BAR))
SOFTMAX2_COSINE = claims.declare(
    "lsa.softmax2.cosine_gd",
    "Mean cosine between the trained two-layer softmax model's and one GD step's sensitivities "
    "d(answer)/d(query): does its answer apply gradient descent's function to the query?",
    source_seed="004", source_value="the second layer implements GD",
    source_quote="The first layer learns to cancel out the softmax nonlinearity, allowing the second "
                 "layer to implement gradient descent.",
    unit="cosine", criterion=f"mean cosine >= {COSINE_BAR} (our bar)", test=claims.at_least(COSINE_BAR))


@dataclasses.dataclass(frozen=True, eq=False)
class Softmax:
    """One- and two-layer softmax attention trained like the LSA models, against one GD step
    (`table`: lsa_comparison.compare_table rows, the trained one-layer LSA model included;
    `per_task`: the per-task values of each row, keyed by (model, "one GD step"))."""

    trained: dict[int, lsa.Trained]
    table: pd.DataFrame
    per_task: dict[tuple[str, str], pd.DataFrame]
    gd1_loss: float
    profile: str

    def _row(self, model: str) -> pd.Series:
        return self.table.set_index("model").loc[model]

    def _tasks(self, model: str) -> pd.DataFrame:
        return self.per_task[(model, "one GD step")]

    @property
    def loss1(self) -> float:
        return float(self._row("softmax, 1 layer").model_loss)

    @property
    def loss2(self) -> float:
        return float(self._row("softmax, 2 layers").model_loss)

    @property
    def cosine2(self) -> float:
        return float(self._row("softmax, 2 layers").sens_cosine)

    def ratio(self, model: str) -> float:
        """`model`'s loss relative to one GD step's on the same tasks."""
        t = self._tasks(model)
        return float(task_stats.ratio_of_means(t.model_loss.to_numpy(), t.reference_loss.to_numpy()))

    @functools.cached_property
    def intervals(self) -> dict[str, Interval]:
        """95% bootstrap intervals over the held-out tasks (this training seed's models)."""
        one, two = self._tasks("softmax, 1 layer"), self._tasks("softmax, 2 layers")
        return {"loss1": task_stats.mean_interval(one.model_loss.to_numpy()),
                "ratio1": task_stats.ratio_interval(one.model_loss.to_numpy(), one.reference_loss.to_numpy()),
                "loss2": task_stats.mean_interval(two.model_loss.to_numpy()),
                "ratio2": task_stats.ratio_interval(two.model_loss.to_numpy(), two.reference_loss.to_numpy()),
                "cosine2": task_stats.mean_interval(two.sens_cosine.to_numpy())}

    def claims(self) -> list[Claim]:
        at = dict(chapter=CHAPTER, profile=self.profile, model=MODEL)
        ci = self.intervals
        return [
            SOFTMAX1_LOSS.measure(self.loss1, interval=ci["loss1"], **at),
            SOFTMAX1_RATIO.measure(self.ratio("softmax, 1 layer"), interval=ci["ratio1"], **at),
            SOFTMAX2_LOSS.measure(self.loss2, interval=ci["loss2"], **at),
            SOFTMAX2_GAP.measure(self.ratio("softmax, 2 layers"), interval=ci["ratio2"], **at),
            SOFTMAX2_COSINE.measure(self.cosine2, interval=ci["cosine2"], **at),
        ]

    def numbers(self, rows: list[Claim] | None = None) -> dict[str, Any]:
        """The prose's numbers; verdicts and intervals from `rows` (by default this seed's claims;
        `OverSeeds` passes the rows decided over the seeds)."""
        by_id = task_stats.rows_by_id(self.claims() if rows is None else rows)
        gap = by_id[SOFTMAX2_GAP.id]
        return {"sm1_loss": self.loss1, "sm1_ratio": self.ratio("softmax, 1 layer"),
                "sm1_verdict": task_stats.verdict_in_words(by_id[SOFTMAX1_RATIO.id]), "sm2_loss": self.loss2,
                "sm2_ratio": self.ratio("softmax, 2 layers"), "sm2_verdict": task_stats.verdict_in_words(gap),
                "sm2_ratio_low": gap.interval[0], "sm2_ratio_high": gap.interval[1],
                "sm2_cosine": self.cosine2,
                "sm2_cosine_verdict": task_stats.verdict_in_words(by_id[SOFTMAX2_COSINE.id])}


def softmax_caveat(setup: Setup, baseline: Baseline, one: OneLayer, seed: int = 0) -> Softmax:
    """Train softmax attention with one and two layers (training `seed`) and compare them (and the
    trained LSA layer of `one`, the same seed's) with one GD step at its best step size."""
    trained = {k: setup.train(f"softmax, {k} layer{'s' if k > 1 else ''}", n_layers=k, softmax=True, seed=seed)
               for k in (1, 2)}
    models = {t.name: lsa.model_predictor(t.model) for t in trained.values()}
    models["LSA, 1 layer (trained)"] = lsa.model_predictor(one.trained.model)
    table, per_task = task_stats.compare_per_task(models, {"one GD step": baseline.predictor()}, setup.eval_tasks)
    return Softmax(trained, table, per_task, baseline.gd1_loss, setup.profile)


def softmax_seeds(setup: Setup, baseline: Baseline, one: OverSeeds) -> OverSeeds:
    """`softmax_caveat` on every training seed of `one` (each beside the same seed's LSA layer)."""
    return OverSeeds([softmax_caveat(setup, baseline, o, seed=seed) for seed, o in enumerate(one.results)],
                     SEED_UNITS)

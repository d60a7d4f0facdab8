"""Deeper stacks (gd_in_attention chapter): trained 2- and 3-layer LSA stacks against k steps of
GD and of GD++ with step sizes tuned by L-BFGS, and the answer read out after every layer.

  deeper              Deeper: 2- and 3-layer stacks against tuned GD and GD++, layer readouts
  deeper_seeds        the same on every training seed, GD and GD++ tuned once
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from optim_hunter.analysis import lsa
from optim_hunter.analysis.intervals import Interval
from optim_hunter.analysis.lsa_step_sizes import StepSizes, tune_gd
from optim_hunter.chapters.gd_in_attention import task_stats
from optim_hunter.chapters.gd_in_attention.setting import (
    CHAPTER,
    MODEL,
    SEED_UNITS,
    SEEDS,
    SOURCE,
    TASK_UNITS,
    TRAINED_UNITS,
    Setup,
)
from optim_hunter.report import claims, plots
from optim_hunter.report.claims import Claim
from optim_hunter.report.training_seeds import OverSeeds

DEPTHS = (2, 3)


DEPTH_TRAINED = claims.declare("lsa.depth{k}.trained_loss",
                               "Loss of a {k}-layer LSA stack trained from random init",
                               source_seed=SOURCE, unit="loss")
DEPTH_GD = claims.declare("lsa.depth{k}.gd_loss", "Loss of {k} GD steps with tuned per-step sizes",
                          source_seed=SOURCE, unit="loss")
DEPTH_GDPP = claims.declare("lsa.depth{k}.gdpp_loss",
                            "Loss of {k} GD++ steps with tuned sizes and rates (best found)",
                            source_seed=SOURCE, unit="loss")
DEPTH_COSINE_GD = claims.declare("lsa.depth{k}.cosine_gd",
                                 "Mean sensitivity cosine, trained {k}-layer LSA vs {k} tuned GD steps",
                                 source_seed=SOURCE, unit="cosine")
DEPTH_COSINE_GDPP = claims.declare("lsa.depth{k}.cosine_gdpp",
                                   "Mean sensitivity cosine, trained {k}-layer LSA vs {k} tuned GD++ steps",
                                   source_seed=SOURCE, unit="cosine")
BEYOND_GD = claims.declare(
    "lsa.depth{k}.beyond_gd",
    "A trained {k}-layer LSA stack beats {k} GD steps and resembles GD++ more than GD (von Oswald "
    "et al. report both for their trained deeper models): the smallest of three margins, "
    "(GD loss - trained loss) / GD loss, cosine with GD++ - cosine with GD, and "
    "(L2 to GD - L2 to GD++) / L2 to GD (sensitivities; denominators from all tasks)",
    source_seed=SOURCE, unit="smallest margin",
    criterion="smallest margin > 0: trained loss < tuned-GD loss, and sensitivities closer to GD++ "
              "than to GD (higher cosine and lower L2), all three on the whole interval",
    test=claims.above(0))
READOUT_FALLS = claims.declare(
    "lsa.depth{k}.readout_falls",
    "The answer read out after each layer of the trained {k}-layer LSA stack (minus the query's "
    "output slot) improves layer by layer: largest ratio of a layer's readout loss to the previous "
    "layer's (before layer 1 the slot holds 0, the zero predictor)",
    source_seed="004", source_value="internal representations track optimization progress",
    source_quote="Internal representations that track optimization progress",
    unit="ratio", criterion="ratio < 1 (every layer lowers the loss)", test=claims.below(1))


@dataclasses.dataclass(frozen=True, eq=False)
class Deeper:
    """Trained 2- and 3-layer LSA stacks against GD and GD++ with tuned step sizes: `tuned` (name ->
    lsa_step_sizes.StepSizes), `trained` (depth -> lsa.Trained), `table`
    (lsa_comparison.compare_table rows),
    `per_task` ((model, reference) -> the per-task values a row averages), `readout_tasks` (depth
    -> per-task readout losses, layers x tasks) and `readouts` (model, layer, loss: their means,
    the answer read out after each layer, evaluation tasks)."""

    tuned: dict[str, StepSizes]
    trained: dict[int, lsa.Trained]
    table: pd.DataFrame
    per_task: dict[tuple[str, str], pd.DataFrame]
    readout_tasks: dict[int, np.ndarray]
    profile: str

    @property
    def readouts(self) -> pd.DataFrame:
        return pd.DataFrame([
            {"model": f"LSA, {k} layers (trained)", "layer": layer, "loss": float(value)}
            for k in sorted(self.readout_tasks) for layer, value in enumerate(self.readout_tasks[k].mean(axis=1))
        ])

    def tuning_table(self) -> pd.DataFrame:
        """Tuned step sizes and rates (the last layer's gamma left out: it changes nothing)."""
        return pd.DataFrame([
            {"algorithm": name, "step sizes (eta)": np.round(s.etas, 3),
             "input rates (gamma)": "—" if s.gammas is None else np.round(s.gammas[:-1], 3),
             "tuning loss": s.tuning_loss}
            for name, s in self.tuned.items()
        ])

    def pair(self, k: int) -> tuple[pd.Series, pd.Series]:
        """The rows (trained k-layer stack vs k GD steps, vs k GD++ steps)."""
        part = self.table[self.table.model == f"LSA, {k} layers (trained)"].set_index("reference")
        return part.loc[f"GD, {k} steps"], part.loc[f"GD++, {k} steps"]

    def reference_loss(self, name: str) -> float:
        return float(self.table.groupby("reference")["reference_loss"].first()[name])

    def tasks_of(self, k: int, algorithm: str) -> pd.DataFrame:
        """Per-task values of the trained k-layer stack against k steps of `algorithm` (GD, GD++)."""
        return self.per_task[(f"LSA, {k} layers (trained)", f"{algorithm}, {k} steps")]

    def readout_ratio(self, k: int) -> float:
        """Largest ratio of a layer's readout loss to the previous layer's, in the k-layer stack."""
        return float(task_stats.largest_step_ratio(*self.readout_tasks[k]))

    def margins(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-task margins of `lsa.depth{k}.beyond_gd`, each positive on average when the stack
        does as the source says: GD's loss minus the trained loss (over GD's mean loss), cosine
        with GD++ minus cosine with GD, L2 to GD minus L2 to GD++ (over the mean L2 to GD). The
        denominators are constants from all tasks, so a margin's sign is its numerator's."""
        gd, pp = self.tasks_of(k, "GD"), self.tasks_of(k, "GD++")
        return ((gd.reference_loss - gd.model_loss).to_numpy() / gd.reference_loss.mean(),
                (pp.sens_cosine - gd.sens_cosine).to_numpy(),
                (gd.sens_l2 - pp.sens_l2).to_numpy() / gd.sens_l2.mean())

    @functools.cached_property
    def intervals(self) -> dict[tuple[int, str], Interval]:
        """95% bootstrap intervals over the held-out tasks, per (depth, quantity); paired where two
        predictors are scored on the same tasks (this training seed's stacks)."""
        out: dict[tuple[int, str], Interval] = {}
        for k in sorted(self.trained):
            gd, pp = self.tasks_of(k, "GD"), self.tasks_of(k, "GD++")
            out |= {
                (k, "trained_loss"): task_stats.mean_interval(gd.model_loss.to_numpy()),
                (k, "gd_loss"): task_stats.mean_interval(gd.reference_loss.to_numpy(), TASK_UNITS),
                (k, "gdpp_loss"): task_stats.mean_interval(pp.reference_loss.to_numpy(), TASK_UNITS),
                (k, "cos_gd"): task_stats.mean_interval(gd.sens_cosine.to_numpy()),
                (k, "cos_gdpp"): task_stats.mean_interval(pp.sens_cosine.to_numpy()),
                (k, "beyond"): claims.bootstrap(*self.margins(k), statistic=task_stats.smallest_mean, paired=True,
                                                units=TRAINED_UNITS),
                (k, "readout"): claims.bootstrap(*self.readout_tasks[k], statistic=task_stats.largest_step_ratio,
                                                 paired=True, units=TRAINED_UNITS),
            }
        return out

    def readout_figure(self) -> go.Figure:
        return plots.lines(self.readouts, x="layer", y="loss", group="model", log_y=True,
                           title="Loss of the answer read out after each layer (layer 0: the zero predictor)")

    def claims(self) -> list[Claim]:
        at = dict(chapter=CHAPTER, profile=self.profile, model=MODEL)
        ci = self.intervals
        rows = []
        for k in sorted(self.trained):
            gd, pp = self.pair(k)
            rows += [
                DEPTH_TRAINED.measure(float(gd.model_loss), interval=ci[k, "trained_loss"], k=k, **at),
                DEPTH_GD.measure(float(gd.reference_loss), interval=ci[k, "gd_loss"], k=k, **at),
                DEPTH_GDPP.measure(float(pp.reference_loss), interval=ci[k, "gdpp_loss"], k=k, **at),
                DEPTH_COSINE_GD.measure(float(gd.sens_cosine), interval=ci[k, "cos_gd"], k=k, **at),
                DEPTH_COSINE_GDPP.measure(float(pp.sens_cosine), interval=ci[k, "cos_gdpp"], k=k, **at),
                BEYOND_GD.measure(float(task_stats.smallest_mean(*self.margins(k))), interval=ci[k, "beyond"],
                                  k=k, **at),
                READOUT_FALLS.measure(self.readout_ratio(k), interval=ci[k, "readout"], k=k, **at),
            ]
        return rows

    def numbers(self, rows: list[Claim] | None = None) -> dict[str, Any]:
        """The prose's numbers; verdicts and intervals from `rows` (by default this seed's claims;
        `OverSeeds` passes the rows decided over the seeds)."""
        by_id = task_stats.rows_by_id(self.claims() if rows is None else rows)
        verdicts = {row_id: task_stats.verdict_in_words(row) for row_id, row in by_id.items()}
        out: dict[str, Any] = {}
        for k in sorted(self.trained):
            gd, pp = self.pair(k)
            out |= {f"d{k}_trained_loss": float(gd.model_loss), f"d{k}_gd_loss": float(gd.reference_loss),
                    f"d{k}_gdpp_loss": float(pp.reference_loss), f"d{k}_cos_gd": float(gd.sens_cosine),
                    f"d{k}_cos_gdpp": float(pp.sens_cosine), f"d{k}_l2_gd": float(gd.sens_l2),
                    f"d{k}_l2_gdpp": float(pp.sens_l2), f"d{k}_readout_ratio": self.readout_ratio(k),
                    f"d{k}_margin": float(task_stats.smallest_mean(*self.margins(k))),
                    f"d{k}_margin_low": by_id[f"lsa.depth{k}.beyond_gd"].interval[0],
                    f"d{k}_margin_high": by_id[f"lsa.depth{k}.beyond_gd"].interval[1],
                    f"d{k}_beyond_verdict": verdicts[f"lsa.depth{k}.beyond_gd"],
                    f"d{k}_readout_verdict": verdicts[f"lsa.depth{k}.readout_falls"]}
        return out


def tune(setup: Setup, depths: tuple[int, ...] = DEPTHS) -> dict[str, StepSizes]:
    """k GD and k GD++ steps tuned by L-BFGS on the tuning tasks, for every depth k."""
    tuned: dict[str, StepSizes] = {}
    for k in depths:
        for algo, plus in (("GD", False), ("GD++", True)):
            tuned[f"{algo}, {k} steps"] = tune_gd(setup.tune_multi, k, plus=plus,
                                                  starts=setup.tune_starts, max_iter=setup.tune_iters)
    return tuned


def deeper(setup: Setup, depths: tuple[int, ...] = DEPTHS, seed: int = 0,
           tuned: dict[str, StepSizes] | None = None) -> Deeper:
    """Tune k GD and k GD++ steps by L-BFGS (tuning tasks; `tuned` when given), train k-layer LSA
    stacks (training `seed`), compare them on the evaluation tasks, and read each stack's answer
    out after every layer."""
    tuned = tune(setup, depths) if tuned is None else tuned
    trained = {k: setup.train(f"LSA, {k} layers", n_layers=k, seed=seed) for k in depths}
    tables, per_task = [], {}
    for k in depths:
        table, values = task_stats.compare_per_task(
            {f"LSA, {k} layers (trained)": lsa.model_predictor(trained[k].model)},
            {f"{algo}, {k} steps": tuned[f"{algo}, {k} steps"].predictor() for algo in ("GD", "GD++")},
            setup.eval_tasks,
        )
        tables.append(table)
        per_task |= values
    readout_tasks = {k: task_stats.readout_per_task(trained[k].model, setup.eval_tasks) for k in depths}
    return Deeper(tuned, trained, pd.concat(tables, ignore_index=True), per_task, readout_tasks, setup.profile)


def deeper_seeds(setup: Setup, depths: tuple[int, ...] = DEPTHS, seeds: int = SEEDS) -> OverSeeds:
    """`deeper` on every training seed, against GD and GD++ tuned once."""
    tuned = tune(setup, depths)
    return OverSeeds([deeper(setup, depths, seed=seed, tuned=tuned) for seed in range(seeds)], SEED_UNITS)

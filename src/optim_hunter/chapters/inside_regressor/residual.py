"""The logit-difference readouts of the inside_regressor chapter: answer pairs' logit differences
read after every layer, low- and high-error prompts apart (`logit_readouts` -> `Readouts`), and
linear probes of the residual stream at the answer position (`probe_study` -> `Probes`), with the
claims they measure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from optim_hunter.analysis import probes
from optim_hunter.chapters.inside_regressor.dissected import Problems
from optim_hunter.chapters.inside_regressor.regression import layer_readouts
from optim_hunter.core.hooks import HookedModel
from optim_hunter.report import claims, plots
from optim_hunter.report.claim_rows import Recording

PAIRS = (("true", "average"), ("true", "last"), ("true", "knn"), ("linear_regression", "knn"),
         ("llm", "average"), ("llm", "last"))

LLM_VS_AVERAGE = claims.declare(
    "inside.logit_diff.llm_vs_average_{split}_error",
    "Final logit difference, the model's answer vs the mean of outputs, {split} error seeds (n = {n})",
    source_seed="004", unit="logits")
TRUE_VS_AVERAGE = claims.declare(
    "inside.logit_diff.true_vs_average_final",
    "Final logit difference, true output vs mean-of-outputs answer (mean over seeds)",
    source_seed="004", unit="logits")
DECIDING_STAGE = claims.declare(
    "inside.logit_diff.deciding_stage",
    "First residual stage holding half of the final true-vs-average logit difference",
    source_seed="004", unit="stage of {stages}")
PROBE_BEST = claims.declare(
    "inside.probe.{target}_best_r2",
    "Best held-out R² of a linear probe for the {target} prediction (at {stage})",
    source_seed="004", unit="R²")


@dataclasses.dataclass(frozen=True)
class Readouts:
    """Logit differences of answer pairs read after every layer (`values`, a tidy table with a
    `seeds` column: low or high error) and the residual stream at the answer position (`stages`)."""

    stages: Float[np.ndarray, "n stage d_model"]
    values: pd.DataFrame  # prompt, pair, stage, label, value, seeds
    n_layers: int
    recording: Recording

    @property
    def by_layer(self) -> pd.DataFrame:
        return self.values.groupby(["seeds", "pair", "stage"])["value"].agg(["mean", "count"]).reset_index()

    @property
    def final(self) -> pd.DataFrame:
        """The mean final logit difference of each pair, low- and high-error seeds apart."""
        b = self.by_layer
        return b[b.stage == b.stage.max()].pivot(index="pair", columns="seeds", values="mean")

    def figure(self, seeds: str = "low error") -> Any:
        part = self.by_layer[self.by_layer.seeds == seeds]
        return plots.lines(part, x="stage", y="mean", group="pair",
                           title=f"Logit difference after each layer ({seeds} seeds; "
                                 "stage i = before layer i, last = final)")

    def per_prompt(self, pair: str) -> pd.DataFrame:
        """One pair's logit difference per prompt (rows) and stage (columns); prompts without it left out."""
        part = self.values[self.values.pair == pair]
        return part.pivot(index="prompt", columns="stage", values="value").sort_index(axis=1)

    def claims(self) -> list[claims.Claim]:
        """Measured only (the source gives no number); each mean with a bootstrap interval over its prompts."""
        at, rows = self.recording, []
        llm = self.per_prompt("llm vs average") if len(self.values) else pd.DataFrame()
        if len(llm):
            split = self.values.drop_duplicates("prompt").set_index("prompt")["seeds"]
            for seeds in ("low error", "high error"):
                final = llm.loc[split.loc[llm.index] == seeds].iloc[:, -1].to_numpy()
                if len(final):
                    rows.append(at.measure(LLM_VS_AVERAGE, float(final.mean()), split=seeds.split()[0], n=len(final),
                                           interval=claims.bootstrap(final, units="prompts")))
        true = self.per_prompt("true vs average") if len(self.values) else pd.DataFrame()
        if not len(true):
            return rows
        values = true.to_numpy()  # [prompt, stage]
        rows.append(at.measure(TRUE_VS_AVERAGE, float(values[:, -1].mean()),
                               interval=claims.bootstrap(values[:, -1], units="prompts")))
        rows.append(at.measure(DECIDING_STAGE, float(deciding_stage(values, np.arange(len(values)))),
                               interval=claims.bootstrap_units(len(values), lambda idx: deciding_stage(values, idx), "prompts"),
                               stages=self.n_layers + 1))
        return rows


def deciding_stage(values: Float[np.ndarray, "batch stage"], idx: np.ndarray) -> Any:
    """The first stage whose mean (over the prompts `idx`, (..., n)) holds half of the final mean in size."""
    mean = values[idx].mean(-2)
    return np.argmax(np.abs(mean) >= 0.5 * np.abs(mean[..., -1:]), axis=-1)


def logit_readouts(model: HookedModel, tokenizer: Any, problems: Problems, pairs: Sequence[tuple[str, str]] = PAIRS,
                   *, recording: Recording) -> Readouts:
    """`layer_readouts` of every problem (one pass per prompt), split by the model's error."""
    stages, values = layer_readouts(model, tokenizer, list(problems.texts), problems.table, pairs,
                                    problems.round_to)
    values["seeds"] = np.where(problems.low_error[values["prompt"].to_numpy()], "low error", "high error")
    return Readouts(stages, values, model.cfg.n_layers, recording)


@dataclasses.dataclass(frozen=True)
class Probes:
    """Held-out R² of ridge probes at every stage, one target at a time."""

    table: pd.DataFrame  # stage, index, target, r2
    recording: Recording

    @property
    def by_stage(self) -> pd.DataFrame:
        return self.table.pivot(index="stage", columns="target", values="r2")

    def figure(self) -> Any:
        return plots.lines(self.table, x="index", y="r2", group="target",
                           title="Held-out R² of linear probes at the answer position, by depth")

    def claims(self) -> list[claims.Claim]:
        best = self.table.loc[self.table.groupby("target", sort=False)["r2"].idxmax()].set_index("target")
        return [self.recording.measure(PROBE_BEST, float(row["r2"]), target=target, stage=row["stage"])
                for target, row in best.iterrows()]


def probe_study(readouts: Readouts, problems: Problems, targets: Sequence[str] = ("true", "linear_regression", "knn"),
                *, recording: Recording) -> Probes:
    """`probes.r2_by_layer` of each target column of `problems.table` on the readouts' stages."""
    labels = probes.stage_labels(readouts.n_layers)
    rows = [{"stage": labels[s], "index": s, "target": key, "r2": r2}
            for key in targets for s, r2 in enumerate(probes.r2_by_layer(readouts.stages,
                                                                          problems.table[key].to_numpy()))]
    return Probes(pd.DataFrame(rows), recording)

"""The models chapter's views of the zoo: the registry at a glance, a trained model's run, and the
held-out in-context check of `numeric-icl` with its claims.

  models_table   every zoo name with its description and cache state
  training_run   a trained model's size, speed, loss curve and the measures logged during training
  icl_check      `yardstick.evaluate_icl` as a result: error curves, failures, bars and the
                 `zoo.numeric.*` claim rows (declared and decided in `yardstick`)
  in_build       whether a contrast model is trained in this build ($OPTIM_HUNTER_CONTRASTS), and
  not_in_build   the note shown in its place when it is not
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

from optim_hunter import zoo
from optim_hunter.analysis import yardstick
from optim_hunter.chapters.model_zoo import numeric_checks
from optim_hunter.report import plots


def in_build(name: str = "numeric-icl") -> bool:
    """Whether contrast model `name` is trained and shown in this build: it is among
    `zoo.contrasts()` ($OPTIM_HUNTER_CONTRASTS; none by default)."""
    return name in zoo.contrasts()


def not_in_build(name: str = "numeric-icl") -> str:
    """What the models chapter shows in place of a contrast model's training and check when the
    build leaves it out: that it is not trained, why, and how to include it."""
    return (f"{name} is not trained in the default build. At the training budget the book's build can afford, "
            "it did not learn the book's tasks in context (on Friedman #2 it did worse than predicting the mean of "
            "the examples' outputs; on y = 2x + 3 it rarely wrote the exact answer): see the language-model "
            f"chapter's contrast, built with OPTIM_HUNTER_CONTRASTS={name}. To include it — its training run, this "
            f"chapter's in-context check and its contrast rows in the language-model chapters — build with "
            f"OPTIM_HUNTER_CONTRASTS={name} (e.g. `OPTIM_HUNTER_CONTRASTS={name} make book`).")


def models_table(profile: str) -> pd.DataFrame:
    """Every zoo model: name, description and its state under `profile`."""
    def description(name: str) -> str:
        family = zoo.family(name)  # a `Family` record, or (older layout) the family's module
        return getattr(family, "description", None) or family.DESCRIPTION

    return pd.DataFrame([{"name": name, "description": description(name), "status": zoo.status(name, profile).state}
                         for name in zoo.names()])


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """What the trainer recorded for one model (`zoo.metadata`) and the hooked model's shape."""

    name: str
    shape: dict[str, int]  # layers, d_model, heads, context, vocabulary
    meta: dict[str, Any]

    @property
    def summary(self) -> pd.Series:
        m = self.meta
        return pd.Series({**self.shape, "steps": m["steps"], "train seconds": round(m["train_seconds"]),
                          "tokens per second": round(m["tokens_per_second"])}, name=self.name)

    @property
    def losses(self) -> pd.DataFrame:
        """The training loss per step and its 25-step running mean."""
        table = pd.DataFrame({"step": range(1, len(self.meta["losses"]) + 1), "loss": self.meta["losses"]})
        return table.assign(smoothed=table["loss"].rolling(25, min_periods=1).mean())

    @property
    def history(self) -> pd.DataFrame:
        """The measures logged during training, one row per evaluation step."""
        return pd.DataFrame(self.meta["history"])

    def loss_figure(self) -> Any:
        return plots.lines(self.losses.assign(series="loss, 25-step mean"), x="step", y="smoothed", group="series",
                           log_y=True, title=f"{self.name} training loss (answer tokens)")

    def history_figure(self, measures: Sequence[str] = ("linear_ratio", "affine_top1"), title: str = "") -> Any:
        long = self.history.melt(id_vars="step", value_vars=list(measures), var_name="measure", value_name="value")
        return plots.lines(long, x="step", y="value", group="measure", title=title)


def training_run(name: str, profile: str, model: Any) -> TrainingRun:
    """The trainer's record of `name` under `profile` (the model loaded, so its shape is read from it)."""
    cfg = model.cfg
    shape = {"layers": cfg.n_layers, "d_model": cfg.d_model, "heads": cfg.n_heads, "context": cfg.n_ctx,
             "vocabulary": cfg.d_vocab}
    return TrainingRun(name, shape, zoo.metadata(name, profile))


@dataclasses.dataclass(frozen=True)
class ICLCheck:
    """`yardstick.evaluate_icl` of one model, with the rows of its `zoo.numeric.*` claims."""

    result: Any  # yardstick.ICLResult
    profile: str
    model: str

    @property
    def curve(self) -> pd.DataFrame:
        """Held-out MAE against the number of examples: linear families (mean) and Friedman #2,
        each beside the mean-of-outputs baseline on the same problems."""
        r = self.result
        return pd.DataFrame([{"examples": k, "linear MAE": r.linear(k), "linear average-baseline MAE": r.linear_average(k),
                              "friedman2 MAE": r.mae["friedman2"][k], "friedman2 average MAE": r.average_mae["friedman2"][k]}
                             for k in r.examples]).set_index("examples")

    @property
    def table(self) -> pd.DataFrame:
        """The curve and the unparseable answers per dataset and size."""
        return pd.concat([self.curve, pd.DataFrame(self.result.failures).add_prefix("failed ")], axis=1)

    @property
    def affine(self) -> pd.Series:
        r = self.result
        return pd.Series({"examples": r.affine_examples, "top-1": r.affine_top1, "unparseable": r.affine_failures,
                          "prompts": r.affine_prompts}, name="y = 2x + 3, unseen query")

    @property
    def bars(self) -> pd.DataFrame:
        """Each bar of `ICLResult.bars` and whether it is met."""
        return pd.DataFrame({"met": numeric_checks.bars(self.result)}).rename_axis("bar")

    def sentence(self) -> str:
        """The check in one sentence: y = 2x + 3 top-1 and how many bars are met."""
        bars = self.bars
        return (f"On y = 2x + 3 with an unseen query the greedy answer is exact for a share "
                f"{self.result.affine_top1:.2f} of the prompts; {int(bars['met'].sum())} of the {len(bars)} bars "
                "are met.")

    def figure(self) -> Any:
        long = self.curve.reset_index().melt(id_vars="examples", var_name="series", value_name="MAE")
        return plots.lines(long, x="examples", y="MAE", group="series", log_y=True,
                           title="Held-out error against the number of in-context examples")

    def claims(self) -> list:
        return numeric_checks.claims_of(self.result, profile=self.profile, model=self.model)


def icl_check(model: Any, *, seeds: Sequence[int], profile: str, name: str = "numeric-icl") -> ICLCheck:
    """Held-out in-context performance of `model` (`yardstick.evaluate_icl` over `seeds`)."""
    return ICLCheck(yardstick.evaluate_icl(model, seeds=seeds), profile, name)

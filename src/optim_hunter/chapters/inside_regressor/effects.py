"""Which components carry the inside_regressor chapter's answer: direct effects of every head and
MLP on the model-vs-average logit difference (`component_attribution` -> `Components`), the
neurons with the largest direct effects (`top_neurons`), and the model's error with groups of
MLPs zeroed (`mlp_ablation` -> `MLPAblation`), with the claims they measure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from optim_hunter.analysis import ablation, attribution, llm_regressor
from optim_hunter.analysis.attribution import Contrast
from optim_hunter.chapters.inside_regressor.dissected import Problems, make_split, prompt_text, task_round_to
from optim_hunter.chapters.inside_regressor.regression import answer_contrasts, neuron_attribution
from optim_hunter.core.hooks import HookedModel
from optim_hunter.report import claims, plots
from optim_hunter.report.claim_rows import Recording

# The source's sentence that states its value (verbatim, seed 004).
QUOTES = {"late_mlps": "That the important work is happening in the last few MLP layers 27 - 31."}

# Measured only: in almost any language model the last MLPs write closest to the logits, so the largest
# direct effect lands late whatever the model computes; no control computed here could make it fail.
LARGEST_DIRECT_MLP = claims.declare(
    "inside.mlp.largest_direct_effect_is_late",
    "The MLP with the largest direct effect on the model-vs-average decision (the source's layers 27–31 of 32 "
    "are its last 5/32): its layer, of {n_layers}. Measured only: the last MLPs write nearest the logits in "
    "almost any language model, so a late layer here cannot tell the source's account from any other",
    source_seed="004", source_value="MLP layers 27–31 of 32", source_quote=QUOTES["late_mlps"], unit="layer")
MLP_LATE_FROM = 2 / 3  # the last third of the layers
MLP_ABLATION_LATE = claims.declare(
    "inside.mlp.most_important_layer_is_late",
    "The MLP layers whose zero-ablation hurts MAE most (layers {layers} of {n_layers}) are in the last third: "
    "the group's last layer over the number of layers",
    source_seed="004", source_value="last MLP layers (27–31 of 32)", source_quote=QUOTES["late_mlps"],
    unit="of depth", test=claims.at_least(MLP_LATE_FROM),
    criterion="last layer of the group / layers >= 2/3 (in the last third; our reading of 'last few')")


@dataclasses.dataclass(frozen=True)
class Components:
    """Direct contributions of every head and MLP to the model-vs-average logit difference."""

    table: pd.DataFrame  # `attribution.summarize(..., per="component")`
    contrasts: tuple[Any, ...]  # the model's answer vs the mean of outputs, per prompt (None: none)
    n_layers: int
    recording: Recording

    @property
    def mlps(self) -> pd.DataFrame:
        mlp = self.table[self.table.label.str.endswith("_mlp_out")].reset_index(drop=True)
        return mlp.assign(layer=mlp.label.str.split("_").str[0].astype(int))

    def top(self, k: int = 10) -> pd.DataFrame:
        return self.table.reindex(self.table["mean"].abs().sort_values(ascending=False).index).head(k)

    def figure(self) -> Any:
        return plots.lines(self.mlps.assign(series="MLP"), x="layer", y="mean", group="series",
                           title="Direct effect of each MLP on the model-vs-average logit difference")

    def claims(self) -> list[claims.Claim]:
        mlps, n = self.mlps, self.n_layers
        layer = int(mlps.loc[mlps["mean"].abs().idxmax(), "layer"])
        return [self.recording.measure(LARGEST_DIRECT_MLP, float(layer), n_layers=n)]


def component_attribution(model: HookedModel, tokenizer: Any, problems: Problems, *, recording: Recording) -> Components:
    """`attribution.summarize` per component of the model's answer vs the mean of the outputs."""
    contrasts = answer_contrasts(tokenizer, list(problems.texts), problems.table["llm"], problems.table["average"],
                                 problems.round_to)
    table = attribution.summarize(model, contrasts, per="component")
    return Components(table, tuple(contrasts), model.cfg.n_layers, recording)


def top_neurons(model: HookedModel, contrasts: Sequence[Contrast | None], *, top: int = 10) -> pd.DataFrame:
    """The `top` neurons by mean direct effect (over contrasts) on their logit differences."""
    rows = [neuron_attribution(model, c, top=None) for c in contrasts if c is not None]
    mean = pd.concat(rows).groupby(["layer", "neuron"])["effect"].mean().reset_index()
    return mean.sort_values("effect", key=np.abs, ascending=False).head(top)


@dataclasses.dataclass(frozen=True)
class MLPAblation:
    """The model's MAE with the MLPs of consecutive layers zeroed, group by group; `errors` keeps
    the per-prompt absolute errors behind each MAE (NaN where the answer failed to parse)."""

    table: pd.DataFrame  # layers, last layer, mae, failed; the first row unablated
    errors: Float[np.ndarray, "batch row"]  # one column per row of `table`
    n_layers: int
    recording: Recording

    def worst_group(self, idx: np.ndarray) -> Any:
        """Over the prompts `idx` ((..., n), one row per resample): the index (among the ablated rows
        of `table`) of the group whose ablation gives the highest MAE. Failures are counted apart: a
        group whose every answer fails counts as the most damaging (the first such group on ties)."""
        errors = self.errors[idx][..., 1:]  # [..., prompt, group]
        answered = np.isfinite(errors).sum(-2)
        total = np.where(np.isfinite(errors), errors, 0.0).sum(-2)
        mae = np.where(answered > 0, total / np.maximum(answered, 1), np.inf)
        return np.argmax(mae, axis=-1)

    def worst_depth(self, idx: np.ndarray) -> Any:
        """The worst group's (`worst_group`) last layer over the number of layers."""
        return self.table["last layer"].to_numpy()[1:][self.worst_group(idx)] / self.n_layers

    def claims(self) -> list[claims.Claim]:
        n = len(self.errors)
        worst = self.table.iloc[1 + int(self.worst_group(np.arange(n)))]
        return [self.recording.measure(MLP_ABLATION_LATE, float(self.worst_depth(np.arange(n))),
                                       interval=claims.bootstrap_units(n, self.worst_depth, "prompts"), layers=worst["layers"],
                                       n_layers=self.n_layers)]


def mlp_ablation(model: HookedModel, tokenizer: Any, dataset: str, *, n_prompts: int, n_examples: int,
                 round_to: int | None = None, group: int | None = None, recording: Recording) -> MLPAblation:
    """Seeds 0..n_prompts-1 answered (greedy, batches of 32) with no ablation, then with the MLP
    outputs of each group of `group` consecutive layers zeroed (default 3 layers from 12 layers
    on, else 1); failed answers are counted, not scored."""
    n_layers = model.cfg.n_layers
    group = group or (3 if n_layers >= 12 else 1)
    round_to = task_round_to(dataset, round_to)
    splits = [make_split(dataset, n_examples, s, round_to) for s in range(n_prompts)]
    texts = [prompt_text(s, round_to) for s in splits]
    truth = np.array([float(s.y_query[0]) for s in splits])

    def run() -> np.ndarray:
        answers = llm_regressor.greedy_answers(model, tokenizer, texts, max_new_tokens=10, batch_size=32)
        return np.abs(answers.values - truth)

    def row(layers: str, last: int, errors: np.ndarray) -> dict[str, Any]:
        ok = np.isfinite(errors)
        return {"layers": layers, "last layer": last, "mae": float(errors[ok].mean()) if ok.any() else np.nan,
                "failed": int((~ok).sum())}

    clean = run()
    rows, errors = [row("none", -1, clean)], [clean]
    for layers in [list(range(start, min(start + group, n_layers))) for start in range(0, n_layers, group)]:
        with ablation.mlps_zeroed(model, layers):
            ablated = run()
        rows.append(row(f"{layers[0]}–{layers[-1]}", layers[-1], ablated))
        errors.append(ablated)
    return MLPAblation(pd.DataFrame(rows), np.stack(errors, 1), n_layers, recording)

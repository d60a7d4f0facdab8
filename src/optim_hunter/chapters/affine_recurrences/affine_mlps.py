"""What the MLPs of the affine-recurrence model write directly to the output (seed 001), with the
claim it tests: the seed found them contributing in the right direction mainly at the final few
positions (`mlps`: each MLP's direct attribution to a_{m+1}, by position, on the longest sequences).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from jaxtyping import Float

from optim_hunter.analysis import circuits
from optim_hunter.chapters.affine_recurrences.affine import SEED, Study, filed
from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel
from optim_hunter.report import claims, plots
from optim_hunter.zoo.affine import Sequences

# --- the MLPs ------------------------------------------------------------------------------------

MLP_LATE = claims.declare(
    "affine.mlp.late_positions",
    "summed MLP direct attribution to a_(m+1) on the 14-vector sequences: the smaller of its mean over the last "
    "3 positions ({late}) and that mean's excess over positions 2-10 ({excess})",
    source_seed=SEED, source_value="positive, mainly at the final positions", unit="dot product",
    source_quote="found that they primarily contribute in the correct direction for the final few sequence positions",
    criterion="> 0: positive at the last 3 positions and larger there than at positions 2-10", test=claims.above(0),
)


@torch.no_grad()
def mlp_attribution(model: HookedModel, seqs: Sequences) -> Float[np.ndarray, "batch layer pos"]:
    """Direct attribution of each MLP's output to a_{m+1} at every position m of every sequence of one group."""
    n_layers = model.cfg.n_layers
    names = {hooks.mlp_out(l) for l in range(n_layers)} | {"ln_final.hook_scale"}
    _, cache = model.run_with_cache(seqs.inputs, names_filter=lambda n: n in names)
    outs = torch.stack([cache[hooks.mlp_out(l)] for l in range(n_layers)], 2)  # [b, p, l, d]
    return circuits.direct_attribution(model, cache, outs, seqs.targets).transpose(1, 2).numpy()


def mlp_attribution_by_position(model: HookedModel, seqs: Sequences) -> Float[np.ndarray, "layer pos"]:
    """Mean direct attribution of each MLP's output to a_{m+1} at every position m of one group."""
    return mlp_attribution(model, seqs).mean(0)


def late_and_early(attribution: Float[np.ndarray, "... layer pos"]) -> tuple[Any, Any]:
    """The MLPs' summed attribution, mean over the last three positions and over positions 2 .. L-4."""
    summed = np.asarray(attribution).sum(-2)
    return summed[..., -3:].mean(-1), summed[..., 2:-3].mean(-1)


def _late_margin(late: np.ndarray, early: np.ndarray, axis: int = -1) -> Any:
    """min(late, late - early) of the means: > 0 exactly when late > 0 and late > early."""
    late_mean = np.mean(late, axis=axis)
    return np.minimum(late_mean, late_mean - np.mean(early, axis=axis))


@dataclasses.dataclass(frozen=True)
class MLPResult:
    """Direct attribution of each MLP to a_{m+1}, by position, on every 14-vector sequence."""

    profile: str
    per_sequence: Float[np.ndarray, "batch layer pos"]

    @property
    def attribution(self) -> Float[np.ndarray, "layer pos"]:
        """The mean over the sequences."""
        return self.per_sequence.mean(0)

    @property
    def late(self) -> float:
        """The MLPs' summed attribution, mean over the last three positions."""
        return float(late_and_early(self.attribution)[0])

    @property
    def early(self) -> float:
        """The same over positions 2 .. L-4."""
        return float(late_and_early(self.attribution)[1])

    @property
    def margin(self) -> float:
        """min(late, late - early): what the claim tests."""
        return float(min(self.late, self.late - self.early))

    def figure(self) -> go.Figure:
        a = self.attribution
        return plots.heatmap(a, x=[f"m={m}" for m in range(a.shape[1])], y=[f"MLP {l}" for l in range(a.shape[0])],
                             zmid=0, title=f"Direct attribution of each MLP to a_(m+1), by position (L = {a.shape[1]})")

    def claims(self) -> list[claims.Claim]:
        late, early = late_and_early(self.per_sequence)
        interval = claims.bootstrap(late, early, statistic=_late_margin, paired=True, units="14-vector sequences")
        return [MLP_LATE.measure(self.margin, interval=interval, late=f"{self.late:.3g}",
                                 excess=f"{self.late - self.early:.3g}", **filed(self.profile))]

    def numbers(self) -> dict[str, Any]:
        return {"mlp_late": self.late, "mlp_early": self.early}


def mlps(s: Study) -> MLPResult:
    return MLPResult(s.profile, mlp_attribution(s.model, s.longest))


"""The seed's "crude guess" conjecture for the affine-recurrence model (seed 001): layer 0 writes
a_n + alpha a_{n-1} with alpha about 2.3, tested by fitting alpha to the residual stream after
layer 0 (read out as the final layer reads it) and to a_{n+1}, over every scored position of the
held-out sequences (`conjecture`), with the seed's Figure 17 redrawn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter.analysis import circuits
from optim_hunter.chapters.affine_recurrences.affine import (
    SEED,
    Study,
    example_sequences,
    filed,
    ratio_interval,
    row_sequences,
)
from optim_hunter.core.hooks import HookedModel
from optim_hunter.report import claims, plots
from optim_hunter.zoo.affine import SCORED_FROM, Sequences

# --- the conjecture: layer 0 writes a crude a_n + alpha a_{n-1} -----------------------------------

ALPHA_QUOTE = "with the transformation  $\\vec{a}_n \\rightarrow \\vec{a}_n + 2.3\\vec{a}_{n-1}$  (green)"
ALPHA_AFTER_L0 = claims.declare(
    "affine.conjecture.alpha_after_l0",
    "alpha in a_n + alpha a_(n-1) fitted to the read-out of the residual stream after layer 0 (R^2 {r2})",
    source_seed=SEED, source_value=2.3, unit="alpha", source_quote=ALPHA_QUOTE,
    criterion="alpha in [2.1, 2.5] (the seed's slope range)", test=claims.between(2.1, 2.5),
)
ALPHA_NEXT = claims.declare(
    "affine.conjecture.alpha_next_term", "alpha in a_n + alpha a_(n-1) fitted to a_(n+1) (R^2 {r2})",
    source_seed=SEED, source_value=2.3, unit="alpha", source_quote=ALPHA_QUOTE,
    criterion="alpha in [2.1, 2.5] (the seed's slope range)", test=claims.between(2.1, 2.5),
)
SEED_ALPHA = 2.3


def two_term_fit(
    y: Float[np.ndarray, "n d_vector"], first: Float[np.ndarray, "n d_vector"], second: Float[np.ndarray, "n d_vector"]
) -> tuple[float, float, float]:
    """Least squares y ~ u first + v second + (a constant per coordinate), pooled over rows and
    coordinates: (u, v, R^2). alpha = v / u is the fit's shape, free of its overall scale."""
    y, first, second = (np.asarray(t, float) for t in (y, first, second))
    y, first, second = (t - t.mean(0, keepdims=True) for t in (y, first, second))
    design = np.stack([first.ravel(), second.ravel()], 1)
    (u, v), *_ = np.linalg.lstsq(design, y.ravel(), rcond=None)
    residual = y.ravel() - design @ np.array([u, v])
    return float(u), float(v), float(1 - (residual**2).sum() / (y**2).sum())


@torch.no_grad()
def readout(model: HookedModel, cache: Any, name: str) -> Float[Tensor, "batch pos d_vector"]:
    """The residual stream at hook `name` read out as the final layer would read it (final
    LayerNorm with this residual's own scale, then W_U; the constant b_final W_U included)."""
    _, b = circuits.layer_norm(model.ln_final)
    return circuits.normalize(cache[name], model.cfg.eps) @ circuits.folded_unembed(model) + b @ model.W_U.double()


@torch.no_grad()
def layer0_terms(model: HookedModel, groups: Sequence[Sequences], scored_from: int = SCORED_FROM) -> dict[str, np.ndarray]:
    """At every scored position n: a_n, a_{n-1}, a_{n+1} and the read-out of the residual stream
    after layer 0, stacked over sequences and positions ([row, d_vector] each)."""
    name = "blocks.0.hook_resid_post"
    parts: dict[str, list] = {"a_n": [], "a_prev": [], "a_next": [], "after_l0": []}
    for g in groups:
        if g.inputs.shape[1] <= scored_from:
            continue
        _, cache = model.run_with_cache(g.inputs, names_filter=lambda n: n == name)
        x = g.inputs.double()
        parts["a_n"].append(x[:, scored_from:])
        parts["a_prev"].append(x[:, scored_from - 1 : -1])
        parts["a_next"].append(g.targets.double()[:, scored_from:])
        parts["after_l0"].append(readout(model, cache, name)[:, scored_from:])
    return {k: torch.cat([p.reshape(-1, p.shape[-1]) for p in v]).numpy() for k, v in parts.items()}


def alpha_parts(
    y: Float[np.ndarray, "n d_vector"], a_n: Float[np.ndarray, "n d_vector"], a_prev: Float[np.ndarray, "n d_vector"],
    sequence: Int[np.ndarray, " n"], n_sequences: int,
) -> tuple[Float[np.ndarray, " batch"], Float[np.ndarray, " batch"]]:
    """`alpha_fit`'s numerator and denominator summed per sequence: alpha = sum(numerator) /
    sum(denominator), so resampling sequences resamples alpha (the per-coordinate constant held at
    its fit on all rows)."""
    y, a_n, a_prev = (np.asarray(t, float) for t in (y, a_n, a_prev))
    y, a_n, a_prev = (t - t.mean(0, keepdims=True) for t in (y, a_n, a_prev))
    numerator = np.bincount(sequence, ((y - a_n) * a_prev).sum(1), minlength=n_sequences)
    denominator = np.bincount(sequence, (a_prev * a_prev).sum(1), minlength=n_sequences)
    return numerator, denominator


def alpha_fit(
    y: Float[np.ndarray, "n d_vector"], a_n: Float[np.ndarray, "n d_vector"], a_prev: Float[np.ndarray, "n d_vector"]
) -> tuple[float, float]:
    """Least squares y ~ a_n + alpha a_prev + (a constant per coordinate), the coefficient of a_n
    fixed at one as in the seed's a_n -> a_n + alpha a_{n-1}: (alpha, R^2)."""
    y, a_n, a_prev = (np.asarray(t, float) for t in (y, a_n, a_prev))
    y, a_n, a_prev = (t - t.mean(0, keepdims=True) for t in (y, a_n, a_prev))
    alpha = float(((y - a_n) * a_prev).sum() / (a_prev * a_prev).sum())
    residual = y - a_n - alpha * a_prev
    return alpha, float(1 - (residual**2).sum() / (y**2).sum())


def alpha_fits(terms: dict[str, np.ndarray]) -> pd.DataFrame:
    """alpha in a_n + alpha a_{n-1} fitted to the read-out after layer 0 and to a_{n+1}; beside
    it the free fit u a_n + v a_{n-1} (its shape v / u is unstable when u is near zero)."""
    rows = []
    for target, label in (("after_l0", "residual stream after layer 0 (read out)"), ("a_next", "a_(n+1)")):
        alpha, r2 = alpha_fit(terms[target], terms["a_n"], terms["a_prev"])
        u, v, r2_free = two_term_fit(terms[target], terms["a_n"], terms["a_prev"])
        rows.append({"fitted to": label, "alpha": alpha, "R2": r2, "free u": u, "free v": v,
                     "free v/u": v / u, "free R2": r2_free})
    return pd.DataFrame(rows)


@torch.no_grad()
def conjecture_curves(
    model: HookedModel, seqs: Sequences, index: int, dim: int, alphas: dict[str, float]
) -> pd.DataFrame:
    """One coordinate of one sequence along n >= 1: a_n, a_{n+1}, the read-out of the residual
    stream after layer 0 and a_n + alpha a_{n-1} for each labelled alpha (the seed's Figure 17)."""
    x = seqs.inputs[index : index + 1]
    _, cache = model.run_with_cache(x, names_filter=lambda n: n == "blocks.0.hook_resid_post")
    after = readout(model, cache, "blocks.0.hook_resid_post")[0, 1:].numpy()
    a = x[0].double().numpy()
    series = {"a_n (input)": a[1:, dim], "after layer 0 (read out)": after[:, dim]}
    for label, alpha in alphas.items():
        series[f"a_n + {alpha:.2f} a_(n-1) ({label})"] = (a[1:] + alpha * a[:-1])[:, dim]
    series["a_(n+1) (target)"] = seqs.targets[index].double().numpy()[1:, dim]
    n = np.arange(1, a.shape[0])
    return pd.DataFrame([{"n": int(k), "series": s, "value": float(v[i])} for s, v in series.items()
                         for i, k in enumerate(n)])


@dataclasses.dataclass(frozen=True)
class ConjectureResult:
    """The alpha fits (a row for the read-out after layer 0, one for a_{n+1}), their numerators
    and denominators per held-out sequence (`alpha_parts`, for the intervals) and the seed's
    Figure 17 redrawn for coordinate 0 of the alternating example."""

    profile: str
    alphas: pd.DataFrame
    curves: pd.DataFrame
    parts: Mapping[str, tuple[np.ndarray, np.ndarray]]  # "after_l0", "a_next" -> (numerator, denominator)

    @property
    def alpha_after_l0(self) -> float:
        return float(self.alphas["alpha"].iloc[0])

    @property
    def alpha_next(self) -> float:
        return float(self.alphas["alpha"].iloc[1])

    def table(self) -> pd.DataFrame:
        return self.alphas.set_index("fitted to")

    def figure(self) -> go.Figure:
        return plots.lines(self.curves, x="n", y="value", group="series",
                           title="Coordinate 0 of the alternating example (c = -0.8)")

    def claims(self) -> list[claims.Claim]:
        kw = filed(self.profile)
        r2 = self.alphas["R2"]
        after, following = (ratio_interval(*self.parts[k]) for k in ("after_l0", "a_next"))
        return [ALPHA_AFTER_L0.measure(self.alpha_after_l0, interval=after, r2=f"{r2.iloc[0]:.2f}", **kw),
                ALPHA_NEXT.measure(self.alpha_next, interval=following, r2=f"{r2.iloc[1]:.2f}", **kw)]

    def numbers(self) -> dict[str, Any]:
        return {"alpha_after_l0": self.alpha_after_l0, "alpha_next": self.alpha_next,
                "alpha_after_l0_r2": float(self.alphas["R2"].iloc[0]), "alpha_next_r2": float(self.alphas["R2"].iloc[1])}


def conjecture(s: Study) -> ConjectureResult:
    """alpha fitted over every scored position of the analysis set, and the curves of the
    alternating example with the fitted alpha and the seed's."""
    terms = layer0_terms(s.model, s.analysis)
    alphas = alpha_fits(terms)
    sequence = row_sequences(s.analysis)
    parts = {k: alpha_parts(terms[k], terms["a_n"], terms["a_prev"], sequence, s.n_analysis)
             for k in ("after_l0", "a_next")}
    alternating, _ = example_sequences(s.cfg.data)
    fitted = float(alphas["alpha"].iloc[0])
    curves = conjecture_curves(s.model, alternating, 0, 0, {"fitted": fitted, "seed": SEED_ALPHA})
    return ConjectureResult(s.profile, alphas, curves, parts)


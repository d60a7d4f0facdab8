"""What the attention heads of the affine-recurrence model read and write (seed 001), with the
claims they test: attention statistics (previous-token heads in layer 0, attention to a_1 in
layer 1, the checkerboard of layer 2), direct attribution of every head, layer 0's OV circuit as a
copy of alpha times its input, and the OV eigenvalue scores and effective ranks of every head.

Each chapter section calls one function here (`attention`, `attention_examples`, `attribution`,
`layer0_ov`, `ov_scores`) and gets a frozen result with `.figure()` / `.table()`, `.claims()` and
`.numbers()`; the measurements below them take any hooked model with the `VectorModel` interface
and held-out `Sequences` groups (see `interp.affine`). Weight-based quantities fold the
LayerNorms and value biases in (`interp.circuits`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from optim_hunter import claims, hooks, plots
from optim_hunter.hooks import HookedModel
from optim_hunter.interp import circuits, heads
from optim_hunter.interp.affine import LOSS_FROM, SEED, Study, example_sequences, filed
from optim_hunter.zoo.affine import Sequences

L0, L1, L2 = 0, 1, 2


def _patterns(model: HookedModel, vectors: Tensor, layer: int) -> Float[Tensor, "batch head query_pos key_pos"]:
    name = hooks.pattern(layer)
    with torch.no_grad():
        _, cache = model.run_with_cache(vectors, names_filter=lambda n: n == name)
    return cache[name].double()


# --- attention patterns --------------------------------------------------------------------------

PREVIOUS_TOKEN_HEADS = claims.declare(
    "affine.attn.l0_previous_token_heads",
    "layer-0 heads whose mean attention to the previous position is >= 0.5 (seed: all but the last)",
    source_seed=SEED, source_value=7, unit="heads of 8",
    criterion="exactly 7 of 8 heads score >= 0.5", test=lambda v: v == 7,
)
PREVIOUS_TOKEN_MEAN = claims.declare(
    "affine.attn.l0_previous_token_mean", "mean previous-token score of the layer-0 heads",
    source_seed=SEED, unit="attention",
)
SECOND_VECTOR_HEADS = claims.declare(
    "affine.attn.l1_second_vector_heads",
    "layer-1 heads paying >= 0.5 of their attention (from positions >= 2) to a_1 (seed: the majority)",
    source_seed=SEED, source_value="majority of 8", unit="heads of 8",
    criterion=">= 5 of 8 heads", test=lambda v: v >= 5,
)
CHECKERBOARD = claims.declare(
    "affine.attn.l2_checkerboard",
    "layer-2 even-distance attention share, alternating minus monotone sequences "
    "({alternating} vs {monotone}; uniform attention: {uniform})",
    source_seed=SEED, source_value="checkerboard for c < 0 only", unit="share difference",
    criterion="difference >= 0.2", test=lambda v: v >= 0.2,
)
ALTERNATING, MONOTONE = "alternating (c < 0)", "monotone (c > 0)"


def previous_token_scores(model: HookedModel, groups: Sequence[Sequences]) -> Float[np.ndarray, "layer head"]:
    """Mean attention from each position to the one before it (`heads.previous_token`), averaged
    over groups weighted by their number of (sequence, query) pairs."""
    scores, weights = [], []
    for g in groups:
        L = g.inputs.shape[1]
        if L < 2:
            continue
        scores.append(heads.previous_token(model, g.inputs))
        weights.append(len(g) * (L - 1))
    return np.average(np.stack(scores), axis=0, weights=weights)


def attention_to_position(
    model: HookedModel, groups: Sequence[Sequences], layer: int, *, position: int = 1, from_position: int = 2
) -> Float[np.ndarray, " head"]:
    """Mean attention paid to `position` by queries at `from_position` onwards."""
    total, count = 0.0, 0
    for g in groups:
        if g.inputs.shape[1] <= from_position:
            continue
        pattern = _patterns(model, g.inputs, layer)  # [batch, head, query_pos, key_pos]
        part = pattern[:, :, from_position:, position]
        total = total + part.sum((0, 2))
        count += part.shape[0] * part.shape[2]
    return (total / count).numpy()


def same_parity_share(
    model: HookedModel, groups: Sequence[Sequences], layer: int, *, from_position: int = 2
) -> pd.DataFrame:
    """Attention on keys at an even distance (q - k even, the key itself included) for queries at
    `from_position` onwards, per head, separately for alternating (c < 0) and monotone (c > 0)
    recurrences: a checkerboard pattern puts nearly all attention on even distances. `uniform` is
    the share uniform causal attention would give."""
    rows = []
    for g in groups:
        L = g.inputs.shape[1]
        if L <= from_position:
            continue
        pattern = _patterns(model, g.inputs, layer)[:, :, from_position:]  # [batch, head, query_pos, key_pos]
        q = torch.arange(from_position, L)[:, None]
        k = torch.arange(L)[None, :]
        even = (((q - k) % 2 == 0) & (k <= q)).double()
        share = (pattern * even).sum(-1)  # [batch, head, query_pos]
        for b in range(share.shape[0]):
            kind = ALTERNATING if g.c[b] < 0 else MONOTONE
            for h in range(share.shape[1]):
                for i in range(share.shape[2]):
                    rows.append((kind, h, float(share[b, h, i]), float(even[i].sum() / (i + from_position + 1))))
    table = pd.DataFrame(rows, columns=["kind", "head", "share", "uniform"])
    return table.groupby(["kind", "head"], as_index=False)[["share", "uniform"]].mean()


@dataclasses.dataclass(frozen=True)
class AttentionResult:
    """Per head, over every held-out sequence: the previous-token score of every layer, the
    attention of layers 1 and 2 to a_1 and a_0 (from positions >= 2) and layer 2's even-distance
    share on alternating and monotone sequences."""

    profile: str
    previous: Float[np.ndarray, "layer head"]
    l1_to_second: Float[np.ndarray, " head"]
    l1_to_first: Float[np.ndarray, " head"]
    l2_to_first: Float[np.ndarray, " head"]
    parity: pd.DataFrame  # same_parity_share of layer 2

    @property
    def n_previous_token(self) -> int:
        return int((self.previous[L0] >= 0.5).sum())

    @property
    def n_second_vector(self) -> int:
        return int((self.l1_to_second >= 0.5).sum())

    def share(self, kind: str) -> float:
        """Layer 2's mean even-distance share on `ALTERNATING` or `MONOTONE` sequences."""
        return float(self.parity[self.parity.kind == kind].share.mean())

    @property
    def checkerboard_gap(self) -> float:
        return self.share(ALTERNATING) - self.share(MONOTONE)

    @property
    def uniform_share(self) -> float:
        return float(self.parity["uniform"].mean())

    def table(self) -> pd.DataFrame:
        wide = self.parity.pivot(index="head", columns="kind", values="share")
        return pd.DataFrame({
            "L0 previous-token score": self.previous[L0],
            "L1 attention to a1": self.l1_to_second,
            "L1 attention to a0": self.l1_to_first,
            "L2 attention to a0": self.l2_to_first,
            "L2 even-distance share, c < 0": wide[ALTERNATING],
            "L2 even-distance share, c > 0": wide[MONOTONE],
        }, index=pd.Index(range(len(self.l1_to_second)), name="head"))

    def claims(self) -> list[claims.Claim]:
        kw = filed(self.profile)
        return [
            PREVIOUS_TOKEN_HEADS.measure(self.n_previous_token, **kw),
            PREVIOUS_TOKEN_MEAN.measure(float(self.previous[L0].mean()), **kw),
            SECOND_VECTOR_HEADS.measure(self.n_second_vector, **kw),
            CHECKERBOARD.measure(self.checkerboard_gap, alternating=f"{self.share(ALTERNATING):.2f}",
                                 monotone=f"{self.share(MONOTONE):.2f}", uniform=f"{self.uniform_share:.2f}", **kw),
        ]

    def numbers(self) -> dict[str, Any]:
        return {
            "n_previous_token": self.n_previous_token, "previous_token_mean": float(self.previous[L0].mean()),
            "n_second_vector": self.n_second_vector, "second_vector_mean": float(self.l1_to_second.mean()),
            "share_alternating": self.share(ALTERNATING), "share_monotone": self.share(MONOTONE),
            "share_uniform": self.uniform_share,
            "n_l1_first": int((self.l1_to_first >= 0.2).sum()), "n_l2_first": int((self.l2_to_first >= 0.2).sum()),
        }


def attention(s: Study) -> AttentionResult:
    m, groups = s.model, s.analysis
    return AttentionResult(
        profile=s.profile, previous=previous_token_scores(m, groups),
        l1_to_second=attention_to_position(m, groups, L1, position=1, from_position=2),
        l1_to_first=attention_to_position(m, groups, L1, position=0, from_position=2),
        l2_to_first=attention_to_position(m, groups, L2, position=0, from_position=2),
        parity=same_parity_share(m, groups, L2),
    )


def example_patterns(model: HookedModel, seqs: Sequences, index: int, layer: int) -> Float[np.ndarray, "head query_pos key_pos"]:
    return _patterns(model, seqs.inputs[index : index + 1], layer)[0].numpy()


def position_labels(length: int) -> list[str]:
    return [f"a{n}" for n in range(length)]


@dataclasses.dataclass(frozen=True)
class AttentionExamples:
    """Every layer's attention patterns on the alternating (c = -0.8) and monotone (c = 0.8)
    examples: `patterns[kind][layer]` is [head, query_pos, key_pos]."""

    patterns: dict[str, list[Float[np.ndarray, "head query_pos key_pos"]]]

    def show(self, layer: int, kind: str = ALTERNATING) -> None:
        """The heads of `layer` on one example, as a circuitsvis view (`plots.attention_heads`)."""
        pattern = self.patterns[kind][layer]
        sign = "c < 0" if kind == ALTERNATING else "c > 0"
        plots.attention_heads(pattern, position_labels(pattern.shape[-1]),
                              [f"L{layer}H{h} ({sign})" for h in range(pattern.shape[0])])


def attention_examples(s: Study) -> AttentionExamples:
    alternating, monotone = example_sequences(s.cfg.data)
    layers = range(s.model.cfg.n_layers)
    return AttentionExamples({kind: [example_patterns(s.model, seqs, 0, l) for l in layers]
                              for kind, seqs in ((ALTERNATING, alternating), (MONOTONE, monotone))})


# --- direct attribution --------------------------------------------------------------------------

DLA_L0 = claims.declare(
    "affine.dla.{kind}.l0", "summed direct attribution of the layer-0 heads to {target}",
    source_seed=SEED, source_value="positive", unit="dot product", criterion="> 0", test=lambda v: v > 0,
)
DLA_L1 = claims.declare(
    "affine.dla.{kind}.l1", "summed direct attribution of the layer-1 heads to {target}",
    source_seed=SEED, source_value="about 0", unit="dot product", criterion="|L1| <= 0.1 x max(|L0|, |L2|)",
    test=lambda t: abs(t["l1"]) <= 0.1 * max(abs(t["l0"]), abs(t["l2"])),
)
DLA_L2 = claims.declare(
    "affine.dla.{kind}.l2", "summed direct attribution of the layer-2 heads to {target}",
    source_seed=SEED, source_value="negative", unit="dot product", criterion="< 0", test=lambda v: v < 0,
)
TARGETS = {"next": "a_(m+1)", "step": "a_(m+1) - a_m"}


@torch.no_grad()
def head_attribution(
    model: HookedModel, groups: Sequence[Sequences], *, target: str = "next", loss_from: int = LOSS_FROM
) -> Float[np.ndarray, "layer head"]:
    """Mean direct attribution of every head (value biases and LayerNorms folded) at the scored
    positions m: <final_LN(head output) W_U, t_m>, with t_m = a_{m+1} (`target="next"`) or
    a_{m+1} - a_m (`"step"`). Pooled over all (sequence, position) pairs."""
    if target not in TARGETS:
        raise ValueError(f"target must be 'next' or 'step', got {target!r}")
    n_layers = model.cfg.n_layers
    total, count = 0.0, 0
    names = {hooks.z(l) for l in range(n_layers)} | {"ln_final.hook_scale"}
    for g in groups:
        if g.inputs.shape[1] <= loss_from:
            continue
        _, cache = model.run_with_cache(g.inputs, names_filter=lambda n: n in names)
        direction = g.targets if target == "next" else g.targets - g.inputs
        outs = torch.stack([circuits.head_outputs(model, cache, l) for l in range(n_layers)], 2)  # [b,p,l,h,d]
        dla = circuits.direct_attribution(model, cache, outs, direction)[:, loss_from:]  # [b, p, l, h]
        total = total + dla.sum((0, 1))
        count += dla.shape[0] * dla.shape[1]
    return (total / count).numpy()


@dataclasses.dataclass(frozen=True)
class AttributionResult:
    """Mean direct attribution of every head to a_{m+1} (`next`) and to a_{m+1} - a_m (`step`)."""

    profile: str
    next: Float[np.ndarray, "layer head"]
    step: Float[np.ndarray, "layer head"]

    def sums(self, kind: str) -> Float[np.ndarray, " layer"]:
        """Per layer, the attribution summed over its heads."""
        return getattr(self, kind).sum(1)

    def figure(self, kind: str = "next") -> go.Figure:
        values = getattr(self, kind)
        return plots.heatmap(values, x=[f"H{h}" for h in range(values.shape[1])],
                             y=[f"layer {l}" for l in range(values.shape[0])], zmid=0,
                             title=f"Direct attribution to {TARGETS[kind]}, per head")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"to a_(m+1)": self.sums("next"), "to a_(m+1) - a_m": self.sums("step"),
                             "heads > 0 (to a_(m+1))": (self.next > 0).sum(1)},
                            index=[f"layer {l}" for l in range(self.next.shape[0])])

    def claims(self) -> list[claims.Claim]:
        rows = []
        for kind, target in TARGETS.items():
            sums, kw = self.sums(kind), {"kind": kind, "target": target, **filed(self.profile)}
            rows += [DLA_L0.measure(float(sums[L0]), **kw),
                     DLA_L1.measure(float(sums[L1]), tested={"l0": sums[L0], "l1": sums[L1], "l2": sums[L2]}, **kw),
                     DLA_L2.measure(float(sums[L2]), **kw)]
        return rows

    def numbers(self) -> dict[str, Any]:
        return {f"dla_{kind}_l{l}": float(v) for kind in TARGETS for l, v in enumerate(self.sums(kind))}


def attribution(s: Study) -> AttributionResult:
    return AttributionResult(s.profile, head_attribution(s.model, s.analysis, target="next"),
                             head_attribution(s.model, s.analysis, target="step"))


# --- layer 0's OV circuit ------------------------------------------------------------------------

OV_R2_RESIDUAL = claims.declare(
    "affine.ov.l0_r2_residual", "layer-0 OV: mean R^2 of (x_d, (OV x)_d) over residual-stream vectors",
    source_seed=SEED, source_value=0.83, unit="R^2", criterion="within 0.1 of 0.83",
    test=lambda v: abs(v - 0.83) <= 0.1,
)
OV_R2_RANDOM = claims.declare(
    "affine.ov.l0_r2_random", "layer-0 OV: mean R^2 of (x_d, (OV x)_d) over random vectors",
    source_seed=SEED, source_value=0.598, unit="R^2", criterion="within 0.1 of 0.598",
    test=lambda v: abs(v - 0.598) <= 0.1,
)
OV_R2_GAP = claims.declare(
    "affine.ov.l0_r2_gap", "layer-0 OV fits residual-stream vectors better than random ones (R^2 difference)",
    source_seed=SEED, source_value=0.83 - 0.598, unit="R^2", criterion="difference >= 0.1", test=lambda v: v >= 0.1,
)
OV_SLOPE = claims.declare(
    "affine.ov.l0_slope",
    "layer-0 OV: median slope of (x_d, (OV x)_d) over residual-stream vectors (10th-90th percentile {p10} to {p90})",
    source_seed=SEED, source_value="2.1 to 2.5", unit="slope", criterion="median in [2.1, 2.5]",
    test=lambda v: 2.1 <= v <= 2.5,
)
OV_INTERCEPT = claims.declare(
    "affine.ov.l0_intercept",
    "layer-0 OV: mean |intercept| of the line through (x_d, (OV x)_d), in units of the sd of (OV x)_d, "
    "over residual-stream vectors",
    source_seed=SEED, source_value="about 0", unit="sd of (OV x)_d", criterion="<= 0.1", test=lambda v: v <= 0.1,
)
OV_R2_VECTOR = claims.declare(
    "affine.ov.l0_r2_vector_space",
    "layer-0 OV read out through W_U against the input vector: mean R^2 over the 40 coordinates",
    source_seed=SEED, unit="R^2",
)
OV_OUTSIDE = claims.declare(
    "affine.ov.l0_outside_embedding",
    "mean share of |OV x| outside the row space of W_E, layer 0, residual-stream x",
    source_seed=SEED, source_value=0.8415, unit="share of norm", criterion="within 0.05 of 0.8415",
    test=lambda v: abs(v - 0.8415) <= 0.05,
)
OV_OUTSIDE_BASELINE = claims.declare(
    "affine.ov.outside_random_direction",
    "the same share for a uniformly random direction in the residual stream (baseline)",
    source_seed=SEED, unit="share of norm",
)


def linear_fit(x: Float[np.ndarray, "row col"], y: Float[np.ndarray, "row col"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the least-squares line y = slope x + intercept over the k points (x_j, y_j):
    (slope, intercept, R^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    slope = (xc * yc).sum(1) / (xc**2).sum(1)
    intercept = y.mean(1) - slope * x.mean(1)
    residual = yc - slope[:, None] * xc
    r2 = 1 - (residual**2).sum(1) / (yc**2).sum(1)
    return slope, intercept, r2


@torch.no_grad()
def residual_vectors(model: HookedModel, groups: Sequence[Sequences], layer: int = 0) -> Float[Tensor, "n d_model"]:
    """Every position's residual stream entering `layer` (`blocks.{layer}.hook_resid_pre`)."""
    name = hooks.resid_pre(layer)
    rows = []
    for g in groups:
        _, cache = model.run_with_cache(g.inputs, names_filter=lambda n: n == name)
        rows.append(cache[name].reshape(-1, cache[name].shape[-1]))
    return torch.cat(rows).double()


def ov_images(model: HookedModel, vectors: Float[Tensor, "n d_model"], layer: int = 0, heads_: Sequence[int] | None = None,
              eps: float | None = None) -> Float[Tensor, "n d_model"]:
    """What the layer's heads together (or `heads_`) would write if each attended only to x:
    normalize(x) (sum of folded OV), value biases left out."""
    ov = circuits.folded_ov(model, layer)
    ov = ov.sum(0) if heads_ is None else ov[list(heads_)].sum(0)
    eps = model.cfg.eps if eps is None else eps
    return circuits.normalize(vectors, eps) @ ov


@dataclasses.dataclass(frozen=True)
class OVFit:
    """Per vector, the line through its points (x_d, y_d): slope, intercept, R^2 and the standard
    deviation of the y_d (the scale the intercept is measured against)."""

    slope: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray
    y_sd: np.ndarray

    def summary(self) -> dict[str, float]:
        return {
            "r2_mean": float(self.r2.mean()),
            "slope_median": float(np.median(self.slope)),
            "slope_p10": float(np.quantile(self.slope, 0.1)),
            "slope_p90": float(np.quantile(self.slope, 0.9)),
            "intercept_abs_mean": float(np.abs(self.intercept).mean()),
            "intercept_rel_mean": float((np.abs(self.intercept) / self.y_sd).mean()),
        }


def _fit(x: np.ndarray, y: np.ndarray) -> OVFit:
    return OVFit(*linear_fit(x, y), np.asarray(y, float).std(1))


def ov_fit(model: HookedModel, vectors: Float[Tensor, "n d_model"], layer: int = 0) -> OVFit:
    """Per vector x, the line through the d_model points (x_d, (OV x)_d) (the seed's Figure 8)."""
    return _fit(vectors.numpy(), ov_images(model, vectors, layer).numpy())


@torch.no_grad()
def ov_readout_fit(model: HookedModel, groups: Sequence[Sequences], layer: int = 0) -> OVFit:
    """The same line fit in the vector space: per position, (a_d, (OV x W_U)_d) over the d_vector
    coordinates, a the input vector there, x the residual stream entering `layer` and the OV image
    read out through the folded unembedding (without the final LayerNorm's scale, so only R^2 and
    the sign of the slope are meaningful)."""
    vectors = residual_vectors(model, groups, layer)
    inputs = torch.cat([g.inputs.reshape(-1, g.inputs.shape[-1]) for g in groups]).double()
    read = ov_images(model, vectors, layer) @ circuits.folded_unembed(model)
    return _fit(inputs.numpy(), read.numpy())


def random_like(vectors: Float[Tensor, "n d_model"], *, seed: int = 0) -> Float[Tensor, "n d_model"]:
    """Gaussian vectors with the norms of `vectors` (the fit's R^2 does not depend on the norm)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(vectors.shape, generator=gen, dtype=torch.float64)
    return noise / noise.norm(dim=-1, keepdim=True) * vectors.norm(dim=-1, keepdim=True)


def share_outside_embedding(model: HookedModel, vectors: Float[Tensor, "n d_model"], layer: int = 0) -> Float[np.ndarray, " n"]:
    """For each x, the share of |OV x| outside the row space of W_E (the seed's section 4.4)."""
    return circuits.share_outside(ov_images(model, vectors, layer), model.W_E.detach())


def random_direction_share(d_model: int, rank: int) -> float:
    """E|v - P v| / |v| ~ sqrt(1 - rank/d_model) for a uniformly random direction v (the mean of
    the exact distribution, by Monte Carlo)."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(20_000, d_model, generator=gen, dtype=torch.float64)
    return float((v[:, rank:].norm(dim=-1) / v.norm(dim=-1)).mean())


def ov_scatter_data(model: HookedModel, vector: Float[Tensor, " d_model"], layer: int = 0) -> pd.DataFrame:
    image = ov_images(model, vector[None], layer)[0]
    return pd.DataFrame({"x_d": vector.numpy(), "OV_x_d": image.numpy()})


@dataclasses.dataclass(frozen=True)
class Layer0OVResult:
    """Layer 0's OV circuit as a line: fits for residual-stream vectors, random vectors of the same
    norms and the read-out into the vector space; the share of its output outside the row space
    of W_E against a random direction's; one example scatter (position 7 of the first 14-vector
    sequence, and a random vector of its norm)."""

    profile: str
    residual: OVFit
    random: OVFit
    vector_space: OVFit
    outside: float  # mean share for residual-stream x
    outside_random_input: float  # for random x
    baseline: float  # a uniformly random direction
    scatter: pd.DataFrame  # columns x_d, OV_x_d, vector

    def figure(self) -> go.Figure:
        return plots.scatter_fits(self.scatter, x="x_d", y="OV_x_d", group="vector",
                                  title="Layer 0: OV image against input, coordinate by coordinate",
                                  x_title="x_d (residual coordinate d)", y_title="(OV x)_d")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"residual-stream vectors": self.residual.summary(),
                             "random vectors": self.random.summary()}).T

    def outside_table(self) -> pd.DataFrame:
        return pd.DataFrame({"share outside row space of W_E": [self.outside, self.outside_random_input, self.baseline]},
                            index=["OV x, residual-stream x", "OV x, random x", "random direction (baseline)"])

    def claims(self) -> list[claims.Claim]:
        kw = filed(self.profile)
        res, rnd = self.residual.summary(), self.random.summary()
        return [
            OV_R2_RESIDUAL.measure(res["r2_mean"], **kw),
            OV_R2_RANDOM.measure(rnd["r2_mean"], **kw),
            OV_R2_GAP.measure(res["r2_mean"] - rnd["r2_mean"], **kw),
            OV_SLOPE.measure(res["slope_median"], p10=f"{res['slope_p10']:.2f}", p90=f"{res['slope_p90']:.2f}", **kw),
            OV_INTERCEPT.measure(res["intercept_rel_mean"], **kw),
            OV_R2_VECTOR.measure(self.vector_space.summary()["r2_mean"], **kw),
            OV_OUTSIDE.measure(self.outside, **kw),
            OV_OUTSIDE_BASELINE.measure(self.baseline, **kw),
        ]

    def numbers(self) -> dict[str, Any]:
        res = self.residual.summary()
        return {
            "ov_n_vectors": len(self.residual.r2), "ov_r2_residual": res["r2_mean"],
            "ov_r2_random": self.random.summary()["r2_mean"], "ov_slope_median": res["slope_median"],
            "ov_slope_p10": res["slope_p10"], "ov_slope_p90": res["slope_p90"],
            "ov_intercept_rel": res["intercept_rel_mean"],
            "ov_r2_vector_space": self.vector_space.summary()["r2_mean"],
            "ov_positive_slope_vector_space": float((self.vector_space.slope > 0).mean()),
            "ov_outside": self.outside, "ov_outside_random_input": self.outside_random_input,
            "ov_outside_baseline": self.baseline,
        }


def layer0_ov(s: Study) -> Layer0OVResult:
    m = s.model
    vectors = residual_vectors(m, s.analysis, L0)
    random_vectors = random_like(vectors, seed=1)
    example = residual_vectors(m, [s.longest], L0)[7]  # position 7 of the first 14-vector sequence
    scatter = pd.concat([
        ov_scatter_data(m, example).assign(vector="residual-stream vector"),
        ov_scatter_data(m, random_like(example[None], seed=2)[0]).assign(vector="random vector"),
    ], ignore_index=True)
    rank = int(torch.linalg.matrix_rank(m.W_E.double()))
    return Layer0OVResult(
        profile=s.profile, residual=ov_fit(m, vectors), random=ov_fit(m, random_vectors),
        vector_space=ov_readout_fit(m, s.analysis),
        outside=float(share_outside_embedding(m, vectors).mean()),
        outside_random_input=float(share_outside_embedding(m, random_vectors).mean()),
        baseline=random_direction_share(m.cfg.d_model, rank), scatter=scatter,
    )


# --- OV eigenvalue scores and effective ranks of every head ---------------------------------------

EIGEN_L2_NEGATIVE = claims.declare(
    "affine.ov.eigen_l2_negative_heads",
    "layer-2 heads with a negative OV eigenvalue score (residual stream; mean {mean})",
    source_seed=SEED, source_value="all (negative copying heads)", unit="heads of 8",
    criterion="all 8 heads < 0", test=lambda v: v == 8,
)
EIGEN_L2_VECTOR = claims.declare(
    "affine.ov.eigen_l2_mean_vector_space",
    "mean OV eigenvalue score of the layer-2 heads between input vectors (W_E OV W_U)", source_seed=SEED, unit="score",
)
EIGEN_L1_MEAN = claims.declare(
    "affine.ov.eigen_l1_mean", "mean OV eigenvalue score of the layer-1 heads (residual stream)",
    source_seed=SEED, unit="score",
)
EIGEN_L0_VECTOR = claims.declare(
    "affine.ov.eigen_l0_mean_vector_space", "mean OV eigenvalue score of the layer-0 heads between input vectors",
    source_seed=SEED, unit="score",
)
L1_LOW_RANK = claims.declare(
    "affine.ov.l1_min_effective_rank",
    "lowest effective rank (exp of the entropy of the normalised singular values) among the layer-1 heads' "
    "folded OV circuits in the residual stream (head {head}; d_head 64)",
    source_seed=SEED, source_value="low effective rank (head 0)", unit="effective rank",
    criterion="<= 16 (a quarter of d_head)", test=lambda v: v <= 16,
)


def effective_rank(matrix: Float[Tensor, "... row col"]) -> Float[np.ndarray, "..."]:
    """exp(-sum p_i log p_i), p_i = sigma_i / sum sigma (Roy & Vetterli 2007): the number of
    equally strong directions that would give the singular values' entropy (1 for rank one,
    n for a multiple of an orthogonal n x n matrix)."""
    s = torch.linalg.svdvals(torch.as_tensor(matrix).double())
    p = s / s.sum(-1, keepdim=True)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    return torch.exp(entropy).numpy()


def ov_effective_ranks(model: HookedModel) -> Float[np.ndarray, "layer head"]:
    """Effective rank of every head's folded OV circuit [d_model, d_model] (LayerNorm folded)."""
    return np.stack([effective_rank(circuits.folded_ov(model, l)) for l in range(model.cfg.n_layers)])


@dataclasses.dataclass(frozen=True)
class OVScoresResult:
    """Per head: the OV eigenvalue score in the residual stream and between input vectors, and the
    effective rank of its folded OV circuit."""

    profile: str
    residual: Float[np.ndarray, "layer head"]
    vector_space: Float[np.ndarray, "layer head"]
    effective_rank: Float[np.ndarray, "layer head"]

    @property
    def n_negative_l2(self) -> int:
        return int((self.residual[L2] < 0).sum())

    def figure(self) -> go.Figure:
        return plots.heatmap(self.residual, x=[f"H{h}" for h in range(self.residual.shape[1])],
                             y=[f"layer {l}" for l in range(self.residual.shape[0])], zmid=0,
                             title="OV eigenvalue score Σλ/Σ|λ| per head (residual stream, LayerNorm folded)")

    def table(self) -> pd.DataFrame:
        """The eigenvalue score between input vectors (W_E OV W_U), a row per layer."""
        return self._frame(self.vector_space)

    def rank_table(self) -> pd.DataFrame:
        return self._frame(self.effective_rank)

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=[f"layer {l}" for l in range(values.shape[0])],
                            columns=[f"H{h}" for h in range(values.shape[1])])

    def claims(self) -> list[claims.Claim]:
        kw = filed(self.profile)
        lowest = int(np.argmin(self.effective_rank[L1]))
        return [
            EIGEN_L2_NEGATIVE.measure(self.n_negative_l2, mean=f"{self.residual[L2].mean():.2f}", **kw),
            EIGEN_L2_VECTOR.measure(float(self.vector_space[L2].mean()), **kw),
            EIGEN_L1_MEAN.measure(float(self.residual[L1].mean()), **kw),
            EIGEN_L0_VECTOR.measure(float(self.vector_space[L0].mean()), **kw),
            L1_LOW_RANK.measure(float(self.effective_rank[L1, lowest]), head=lowest, **kw),
        ]

    def numbers(self) -> dict[str, Any]:
        return {
            "n_negative_l2": self.n_negative_l2, "ov_eigen_l2_mean": float(self.residual[L2].mean()),
            "ov_eigen_l2_mean_vector": float(self.vector_space[L2].mean()),
            "ov_eigen_l1_mean": float(self.residual[L1].mean()),
            "l1_min_effective_rank": float(self.effective_rank[L1].min()),
            **{f"effective_rank_l{l}_median": float(np.median(r)) for l, r in enumerate(self.effective_rank)},
        }


def ov_scores(s: Study) -> OVScoresResult:
    return OVScoresResult(s.profile, circuits.ov_scores(s.model), circuits.full_ov_scores(s.model),
                          ov_effective_ranks(s.model))


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
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter import claims, hooks, plots
from optim_hunter.hooks import HookedModel
from optim_hunter.interp import circuits, heads
from optim_hunter.interp.affine import (
    LOSS_FROM,
    SEED,
    Study,
    example_sequences,
    filed,
    ratio_interval,
    sequence_interval,
    weighted_median,
)
from optim_hunter.zoo.affine import Sequences

L0, L1, L2 = 0, 1, 2


def _patterns(model: HookedModel, vectors: Tensor, layer: int) -> Float[Tensor, "batch head query_pos key_pos"]:
    name = hooks.pattern(layer)
    with torch.no_grad():
        _, cache = model.run_with_cache(vectors, names_filter=lambda n: n == name)
    return cache[name].double()


# --- attention patterns --------------------------------------------------------------------------

HEAD_COUNT = ("a count over the 8 heads of one trained model: each head's score averages over the held-out "
              "sequences, but the count of heads past a threshold has no interval over them; across training "
              "seeds it is decided on the prediction interval of each ranked head's score "
              "(`verdicts.count_over_seeds`)")
PREVIOUS_TOKEN_HEADS = claims.declare(
    "affine.attn.l0_previous_token_heads",
    "layer-0 heads whose mean attention to the previous position is >= 0.5 (seed: all but the last)",
    source_seed=SEED, source_value=7, unit="heads of 8",
    source_quote="In the zeroth layer (indexed from zero), all attention appears to be directed toward the previous "
                 "vector, except for the last head.",
    criterion="exactly 7 of 8 heads score >= 0.5", test=claims.between(7, 7), examples=(7, 4),
    why_no_interval=HEAD_COUNT,
)
PREVIOUS_TOKEN_MEAN = claims.declare(
    "affine.attn.l0_previous_token_mean", "mean previous-token score of the layer-0 heads",
    source_seed=SEED, unit="attention",
)
SECOND_VECTOR_HEADS = claims.declare(
    "affine.attn.l1_second_vector_heads",
    "layer-1 heads paying >= 0.5 of their attention (from positions >= 2) to a_1 (seed: the majority)",
    source_seed=SEED, source_value="the majority of the heads", unit="heads of 8",
    source_quote="In the first layer attention patterns shown in Figure 4, the majority of attention heads focus "
                 "specifically on the second vector.",
    criterion=">= 5 of 8 heads", test=claims.at_least(5), examples=(5, 2), why_no_interval=HEAD_COUNT,
)
CHECKERBOARD = claims.declare(
    "affine.attn.l2_checkerboard",
    "layer-2 even-distance attention share, alternating minus monotone sequences "
    "({alternating} vs {monotone}; uniform attention: {uniform})",
    source_seed=SEED, source_value="checkerboard for alternating sequences only", unit="share difference",
    source_quote="Finally, in the second layer, the attention patterns shown in Figure 5 exhibit a checkerboard-like "
                 "structure, reminiscent of the alternating sequence mentioned earlier. Notably, when the affine "
                 "recurrence is non-alternating, the attention pattern differs significantly, as shown in Figure 6.",
    criterion="difference >= 0.2 (our threshold)", test=claims.at_least(0.2),
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


def previous_token_by_sequence(
    model: HookedModel, groups: Sequence[Sequences], layer: int = L0
) -> tuple[Float[np.ndarray, "batch head"], Float[np.ndarray, " batch"]]:
    """Per sequence (the groups one after the other): each head's attention to the previous
    position summed over the sequence's positions 1 .. L-1, and that number of positions. The
    sums over all sequences, divided by the summed counts, give `previous_token_scores(...)[layer]`."""
    sums, counts = [], []
    for g in groups:
        L = g.inputs.shape[1]
        if L < 2:
            sums.append(np.zeros((len(g), model.cfg.n_heads)))
            counts.append(np.zeros(len(g)))
            continue
        diagonal = torch.diagonal(_patterns(model, g.inputs, layer), offset=-1, dim1=-2, dim2=-1)  # [b, h, L-1]
        sums.append(diagonal.sum(-1).numpy())
        counts.append(np.full(len(g), L - 1.0))
    return np.concatenate(sums), np.concatenate(counts)


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


@dataclasses.dataclass(frozen=True)
class ParityShares:
    """Per sequence, for queries at `from_position` onwards: each head's attention on keys at an
    even distance (q - k even, the key itself included) summed over the queries (`share`), the
    number of queries, the same sum for uniform causal attention, and whether the sequence
    alternates (c < 0). Means pool over (sequence, query) pairs."""

    share: Float[np.ndarray, "batch head"]
    queries: Float[np.ndarray, " batch"]
    uniform: Float[np.ndarray, " batch"]
    alternating: np.ndarray  # bool [seq]

    def mask(self, kind: str) -> np.ndarray:
        return self.alternating if kind == ALTERNATING else ~self.alternating

    def mean(self, kind: str, weights: np.ndarray | None = None) -> Any:
        """The mean share over the heads and the (sequence, query) pairs of one kind, each sequence
        weighted by `weights` ([seq], or [resample, seq] for one mean per resample); a float without."""
        w = np.ones(len(self.queries)) if weights is None else np.asarray(weights, float)
        w = w * self.mask(kind)
        value = w @ self.share.mean(1) / (w @ self.queries)
        return float(value) if weights is None else value

    def gap(self, weights: np.ndarray | None = None) -> Any:
        """Alternating minus monotone mean share."""
        return self.mean(ALTERNATING, weights) - self.mean(MONOTONE, weights)

    def gap_interval(self) -> claims.Interval:
        """95% bootstrap interval of `gap` over the sequences, alternating and monotone ones
        resampled apart (each resample keeps both kinds' numbers)."""
        strata = [np.flatnonzero(self.alternating), np.flatnonzero(~self.alternating)]
        return sequence_interval(self.gap, len(self.queries), strata=strata)

    @property
    def uniform_share(self) -> float:
        return float(self.uniform.sum() / self.queries.sum())

    def table(self) -> pd.DataFrame:
        """Per kind and head, the mean share and the uniform share (columns kind, head, share, uniform)."""
        rows = []
        for kind in (ALTERNATING, MONOTONE):
            m = self.mask(kind)
            if not m.any():
                continue
            for h in range(self.share.shape[1]):
                rows.append((kind, h, float(self.share[m, h].sum() / self.queries[m].sum()),
                             float(self.uniform[m].sum() / self.queries[m].sum())))
        return pd.DataFrame(rows, columns=["kind", "head", "share", "uniform"])


def parity_shares(
    model: HookedModel, groups: Sequence[Sequences], layer: int, *, from_position: int = 2
) -> ParityShares:
    """`ParityShares` of `layer` over every sequence of `groups` (the groups one after the other;
    a sequence too short for any query counts zero queries)."""
    share, queries, uniform, alternating = [], [], [], []
    for g in groups:
        L = g.inputs.shape[1]
        alternating.append(np.asarray(g.c) < 0)
        if L <= from_position:
            share.append(np.zeros((len(g), model.cfg.n_heads)))
            queries.append(np.zeros(len(g)))
            uniform.append(np.zeros(len(g)))
            continue
        pattern = _patterns(model, g.inputs, layer)[:, :, from_position:]  # [batch, head, query_pos, key_pos]
        q = torch.arange(from_position, L)[:, None]
        k = torch.arange(L)[None, :]
        even = (((q - k) % 2 == 0) & (k <= q)).double()
        share.append((pattern * even).sum(-1).sum(-1).numpy())  # [batch, head]
        queries.append(np.full(len(g), float(L - from_position)))
        uniform.append(np.full(len(g), float((even.sum(-1) / (q[:, 0] + 1)).sum())))
    return ParityShares(*(np.concatenate(part) for part in (share, queries, uniform, alternating)))


def same_parity_share(
    model: HookedModel, groups: Sequence[Sequences], layer: int, *, from_position: int = 2
) -> pd.DataFrame:
    """Attention on keys at an even distance (q - k even, the key itself included) for queries at
    `from_position` onwards, per head, separately for alternating (c < 0) and monotone (c > 0)
    recurrences: a checkerboard pattern puts nearly all attention on even distances. `uniform` is
    the share uniform causal attention would give."""
    return parity_shares(model, groups, layer, from_position=from_position).table()


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
    parity: ParityShares  # of layer 2, per sequence
    previous_l0: tuple[np.ndarray, np.ndarray]  # previous_token_by_sequence of layer 0: (sums [seq, head], counts)

    @property
    def n_previous_token(self) -> int:
        return int((self.previous[L0] >= 0.5).sum())

    @property
    def n_second_vector(self) -> int:
        return int((self.l1_to_second >= 0.5).sum())

    def share(self, kind: str) -> float:
        """Layer 2's mean even-distance share on `ALTERNATING` or `MONOTONE` sequences."""
        return self.parity.mean(kind)

    @property
    def checkerboard_gap(self) -> float:
        return self.parity.gap()

    @property
    def uniform_share(self) -> float:
        return self.parity.uniform_share

    def table(self) -> pd.DataFrame:
        wide = self.parity.table().pivot(index="head", columns="kind", values="share")
        return pd.DataFrame({
            "L0 previous-token score": self.previous[L0],
            "L1 attention to a1": self.l1_to_second,
            "L1 attention to a0": self.l1_to_first,
            "L2 attention to a0": self.l2_to_first,
            "L2 even-distance share, c < 0": wide[ALTERNATING],
            "L2 even-distance share, c > 0": wide[MONOTONE],
        }, index=pd.Index(range(len(self.l1_to_second)), name="head"))

    def unit_scores(self) -> dict[str, tuple[np.ndarray, float, bool]]:
        """The heads' scores the two head counts threshold (for `verdicts.count_over_seeds`)."""
        return {PREVIOUS_TOKEN_HEADS.id: (self.previous[L0], 0.5, False), SECOND_VECTOR_HEADS.id: (self.l1_to_second, 0.5, False)}

    def claims(self) -> list[claims.Claim]:
        kw = filed(self.profile)
        sums, counts = self.previous_l0
        return [
            PREVIOUS_TOKEN_HEADS.measure(self.n_previous_token, **kw),
            PREVIOUS_TOKEN_MEAN.measure(float(self.previous[L0].mean()), interval=ratio_interval(sums.mean(1), counts),
                                        **kw),
            SECOND_VECTOR_HEADS.measure(self.n_second_vector, **kw),
            CHECKERBOARD.measure(self.checkerboard_gap, interval=self.parity.gap_interval(),
                                 alternating=f"{self.share(ALTERNATING):.2f}", monotone=f"{self.share(MONOTONE):.2f}",
                                 uniform=f"{self.uniform_share:.2f}", **kw),
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
        parity=parity_shares(m, groups, L2), previous_l0=previous_token_by_sequence(m, groups, L0),
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
    source_seed=SEED, source_value="positive", unit="dot product",
    source_quote="heads in the zeroth layer add information in the correct direction",
    criterion="> 0", test=claims.above(0),
)
DLA_L1 = claims.declare(
    "affine.dla.{kind}.l1",
    "|summed direct attribution of the layer-1 heads to {target}| over the larger of layers 0 and 2 "
    "(L1 {l1}; L0 {l0}, L2 {l2})",
    source_seed=SEED, source_value="about 0", unit="ratio of |dot products|",
    source_quote="Given that the direct logit attribution scores of all heads in the first layer are near zero",
    criterion="<= 0.1, i.e. |L1| <= 0.1 x max(|L0|, |L2|) (our threshold)", test=claims.at_most(0.1),
)
DLA_L2 = claims.declare(
    "affine.dla.{kind}.l2", "summed direct attribution of the layer-2 heads to {target}",
    source_seed=SEED, source_value="negative", unit="dot product",
    source_quote="Strikingly, heads in the second layer appear to add information in the opposite direction of the "
                 "output vector.",
    criterion="< 0", test=claims.below(0),
)
TARGETS = {"next": "a_(m+1)", "step": "a_(m+1) - a_m"}


@dataclasses.dataclass(frozen=True)
class HeadAttribution:
    """Direct attribution of every head, per held-out sequence: summed over the sequence's scored
    positions (`sums`), with their number (`positions`). The mean pools (sequence, position) pairs."""

    sums: Float[np.ndarray, "batch layer head"]
    positions: Float[np.ndarray, " batch"]

    @property
    def mean(self) -> Float[np.ndarray, "layer head"]:
        return self.sums.sum(0) / self.positions.sum()

    def layer_means(self, weights: np.ndarray | None = None) -> Float[np.ndarray, "... layer"]:
        """Per layer, the mean attribution summed over its heads, each sequence weighted by
        `weights` ([seq], or [resample, seq] for one row of means per resample)."""
        w = np.ones(len(self.positions)) if weights is None else np.asarray(weights, float)
        return (w @ self.sums.sum(2)) / np.asarray(w @ self.positions)[..., None]


@torch.no_grad()
def head_attribution_by_sequence(
    model: HookedModel, groups: Sequence[Sequences], *, target: str = "next", loss_from: int = LOSS_FROM
) -> HeadAttribution:
    """Direct attribution of every head (value biases and LayerNorms folded) at the scored
    positions m: <final_LN(head output) W_U, t_m>, with t_m = a_{m+1} (`target="next"`) or
    a_{m+1} - a_m (`"step"`), summed over each sequence's scored positions (the groups one after
    the other)."""
    if target not in TARGETS:
        raise ValueError(f"target must be 'next' or 'step', got {target!r}")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    sums, positions = [], []
    names = {hooks.z(l) for l in range(n_layers)} | {"ln_final.hook_scale"}
    for g in groups:
        if g.inputs.shape[1] <= loss_from:
            sums.append(np.zeros((len(g), n_layers, n_heads)))
            positions.append(np.zeros(len(g)))
            continue
        _, cache = model.run_with_cache(g.inputs, names_filter=lambda n: n in names)
        direction = g.targets if target == "next" else g.targets - g.inputs
        outs = torch.stack([circuits.head_outputs(model, cache, l) for l in range(n_layers)], 2)  # [b,p,l,h,d]
        dla = circuits.direct_attribution(model, cache, outs, direction)[:, loss_from:]  # [b, p, l, h]
        sums.append(dla.sum(1).double().numpy())
        positions.append(np.full(len(g), float(dla.shape[1])))
    return HeadAttribution(np.concatenate(sums), np.concatenate(positions))


def head_attribution(
    model: HookedModel, groups: Sequence[Sequences], *, target: str = "next", loss_from: int = LOSS_FROM
) -> Float[np.ndarray, "layer head"]:
    """Mean direct attribution of every head at the scored positions (`head_attribution_by_sequence`),
    pooled over all (sequence, position) pairs."""
    return head_attribution_by_sequence(model, groups, target=target, loss_from=loss_from).mean


def _l1_share(layers: np.ndarray) -> Any:
    """|L1| / max(|L0|, |L2|) of per-layer attributions ([layer], or [..., layer])."""
    layers = np.asarray(layers)
    return np.abs(layers[..., L1]) / np.maximum(np.abs(layers[..., L0]), np.abs(layers[..., L2]))


@dataclasses.dataclass(frozen=True)
class AttributionResult:
    """Direct attribution of every head to a_{m+1} (`next`) and to a_{m+1} - a_m (`step`), per
    held-out sequence (`by_sequence[kind]`); `next` and `step` are the means."""

    profile: str
    by_sequence: dict[str, HeadAttribution]

    @property
    def next(self) -> Float[np.ndarray, "layer head"]:
        return self.by_sequence["next"].mean

    @property
    def step(self) -> Float[np.ndarray, "layer head"]:
        return self.by_sequence["step"].mean

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
            parts = self.by_sequence[kind]
            n = len(parts.positions)
            layer = [sequence_interval(lambda w, l=l: parts.layer_means(w)[..., l], n) for l in (L0, L2)]
            share = sequence_interval(lambda w: _l1_share(parts.layer_means(w)), n)
            rows += [DLA_L0.measure(float(sums[L0]), interval=layer[0], **kw),
                     DLA_L1.measure(float(_l1_share(sums)), interval=share, l1=f"{sums[L1]:+.3g}",
                                    l0=f"{sums[L0]:+.3g}", l2=f"{sums[L2]:+.3g}", **kw),
                     DLA_L2.measure(float(sums[L2]), interval=layer[1], **kw)]
        return rows

    def numbers(self) -> dict[str, Any]:
        return {f"dla_{kind}_l{l}": float(v) for kind in TARGETS for l, v in enumerate(self.sums(kind))}


def attribution(s: Study) -> AttributionResult:
    return AttributionResult(s.profile, {kind: head_attribution_by_sequence(s.model, s.analysis, target=kind)
                                         for kind in TARGETS})


# --- layer 0's OV circuit ------------------------------------------------------------------------

R2_RANDOM_QUOTE = ("the  $R^2$  values for random vectors averaged 0.598, compared to 0.832 for residual stream "
                   "vectors. This indicates that the OV circuit acts more like a copying head for residual stream "
                   "vectors than for random vectors")
LINE_QUOTE = ("Over multiple residual stream vectors, the y-intercept remains close to zero, while the slope varies "
              "between 2.1 and 2.5.")
OV_R2_RESIDUAL = claims.declare(
    "affine.ov.l0_r2_residual", "layer-0 OV: mean R^2 of (x_d, (OV x)_d) over residual-stream vectors",
    source_seed=SEED, source_value=0.83, unit="R^2",
    source_quote="Surprisingly, the points form a nearly linear relationship, with an  $R^2$  value of 0.83—a "
                 "significant result.",
    criterion="within 0.1 of 0.83 (our tolerance)", test=claims.between(0.73, 0.93),
)
OV_R2_RANDOM = claims.declare(
    "affine.ov.l0_r2_random", "layer-0 OV: mean R^2 of (x_d, (OV x)_d) over random vectors",
    source_seed=SEED, source_value=0.598, unit="R^2", source_quote=R2_RANDOM_QUOTE,
    criterion="within 0.1 of 0.598 (our tolerance)", test=claims.between(0.498, 0.698),
)
OV_R2_GAP = claims.declare(
    "affine.ov.l0_r2_gap", "layer-0 OV fits residual-stream vectors better than random ones (R^2 difference)",
    source_seed=SEED, source_value="0.832 against 0.598", unit="R^2", source_quote=R2_RANDOM_QUOTE,
    criterion="difference >= 0.1 (our threshold)", test=claims.at_least(0.1),
)
OV_SLOPE = claims.declare(
    "affine.ov.l0_slope",
    "layer-0 OV: median slope of (x_d, (OV x)_d) over residual-stream vectors (10th-90th percentile {p10} to {p90})",
    source_seed=SEED, source_value="2.1 to 2.5", unit="slope", source_quote=LINE_QUOTE,
    criterion="median in [2.1, 2.5]", test=claims.between(2.1, 2.5),
)
OV_INTERCEPT = claims.declare(
    "affine.ov.l0_intercept",
    "layer-0 OV: mean |intercept| of the line through (x_d, (OV x)_d), in units of the sd of (OV x)_d, "
    "over residual-stream vectors",
    source_seed=SEED, source_value="close to zero", unit="sd of (OV x)_d", source_quote=LINE_QUOTE,
    criterion="<= 0.1 (our threshold)", test=claims.at_most(0.1),
)
OV_R2_VECTOR = claims.declare(
    "affine.ov.l0_r2_vector_space",
    "layer-0 OV read out through W_U against the input vector: mean R^2 over the 40 coordinates",
    source_seed=SEED, unit="R^2",
)
OV_OUTSIDE = claims.declare(
    "affine.ov.l0_outside_embedding",
    "mean share of |OV x| outside the row space of W_E, layer 0, residual-stream x ({share}), minus the share "
    "of a uniformly random direction ({baseline}): does layer 0 write outside the embedding space more than "
    "chance?",
    source_seed=SEED, source_value="84.15% outside (no baseline given)",
    unit="share of norm, minus a random direction's",
    source_quote="We found that this quantity was 84.15%, indicating that, on average, 84.15% of the information "
                 "moved by the OV circuits in layer 0 resides in the orthogonal complement of the embedding space.",
    criterion="difference > 0 (more outside than a random direction)", test=claims.above(0),
    first_criterion="the share itself within 0.05 of the seed's 0.8415; changed after review because a random "
                    "direction's share is about 0.83, so a share near 0.84 says nothing on its own about where the "
                    "circuit writes",
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


def vector_sequences(groups: Sequence[Sequences]) -> Int[np.ndarray, " n"]:
    """For every row of `residual_vectors(model, groups)` (every position of every sequence), the
    index of its sequence among all sequences of `groups`."""
    ids, offset = [], 0
    for g in groups:
        ids.append(np.repeat(offset + np.arange(len(g)), g.inputs.shape[1]))
        offset += len(g)
    return np.concatenate(ids)


def random_like(vectors: Float[Tensor, "n d_model"], *, seed: int = 0) -> Float[Tensor, "n d_model"]:
    """Gaussian vectors with the norms of `vectors` (the fit's R^2 does not depend on the norm)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(vectors.shape, generator=gen, dtype=torch.float64)
    return noise / noise.norm(dim=-1, keepdim=True) * vectors.norm(dim=-1, keepdim=True)


def share_outside_embedding(model: HookedModel, vectors: Float[Tensor, "n d_model"], layer: int = 0) -> Float[np.ndarray, " n"]:
    """For each x, the share of |OV x| outside the row space of W_E (the seed's section 4.4)."""
    return circuits.share_outside(ov_images(model, vectors, layer), model.W_E.detach())


def random_direction_share(d_model: int, rank: int) -> float:
    """E|v - P v| / |v| ~ sqrt(1 - rank/d_model) for a uniformly random direction v, P the projection
    on a fixed `rank`-dimensional subspace: exactly, since |v - P v|^2 / |v|^2 ~ Beta((d_model - rank)/2,
    rank/2) and E sqrt(X) = B(a + 1/2, b) / B(a, b) (no Monte Carlo noise in the baseline)."""
    from scipy.special import gammaln

    if rank <= 0:
        return 1.0
    if rank >= d_model:
        return 0.0
    a, b = (d_model - rank) / 2, rank / 2
    return float(np.exp(gammaln(a + 0.5) + gammaln(a + b) - gammaln(a) - gammaln(a + b + 0.5)))


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
    outside_shares: Float[np.ndarray, " n"]  # the share of every residual-stream x
    outside_random_input: float  # mean share for random x
    baseline: float  # a uniformly random direction
    scatter: pd.DataFrame  # columns x_d, OV_x_d, vector
    sequence: Int[np.ndarray, " n"]  # the held-out sequence of every residual-stream vector (and its random twin)

    @property
    def outside(self) -> float:
        """The mean share for residual-stream x."""
        return float(self.outside_shares.mean())

    @property
    def n_sequences(self) -> int:
        return int(self.sequence.max()) + 1

    def _mean_interval(self, values: np.ndarray) -> claims.Interval:
        """95% bootstrap interval over the held-out sequences of the mean of per-vector `values`."""
        n = self.n_sequences
        return ratio_interval(np.bincount(self.sequence, values, minlength=n), np.bincount(self.sequence, minlength=n))

    def _median_interval(self, values: np.ndarray) -> claims.Interval:
        """The same for the median of per-vector `values` (the vectors of a resampled sequence counted as often)."""
        order = np.argsort(values, kind="stable")
        ascending, sequence = np.asarray(values, float)[order], self.sequence[order]
        return sequence_interval(
            lambda w: np.array([weighted_median(ascending, row[sequence], presorted=True) for row in w]),
            self.n_sequences)

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
        intercept = np.abs(self.residual.intercept) / self.residual.y_sd
        return [
            OV_R2_RESIDUAL.measure(res["r2_mean"], interval=self._mean_interval(self.residual.r2), **kw),
            OV_R2_RANDOM.measure(rnd["r2_mean"], interval=self._mean_interval(self.random.r2), **kw),
            OV_R2_GAP.measure(res["r2_mean"] - rnd["r2_mean"],
                              interval=self._mean_interval(self.residual.r2 - self.random.r2), **kw),
            OV_SLOPE.measure(res["slope_median"], interval=self._median_interval(self.residual.slope),
                             p10=f"{res['slope_p10']:.2f}", p90=f"{res['slope_p90']:.2f}", **kw),
            OV_INTERCEPT.measure(res["intercept_rel_mean"], interval=self._mean_interval(intercept), **kw),
            OV_R2_VECTOR.measure(self.vector_space.summary()["r2_mean"],
                                 interval=self._mean_interval(self.vector_space.r2), **kw),
            OV_OUTSIDE.measure(self.outside_excess, interval=self.outside_excess_interval, share=f"{self.outside:.4f}",
                               baseline=f"{self.baseline:.4f}", **kw),
            OV_OUTSIDE_BASELINE.measure(self.baseline, **kw),
        ]

    @property
    def outside_excess(self) -> float:
        """The mean share outside the row space of W_E minus a random direction's (exact) share."""
        return self.outside - self.baseline

    @functools.cached_property
    def outside_excess_interval(self) -> claims.Interval:
        return self._mean_interval(self.outside_shares - self.baseline)

    def numbers(self, rows: list[claims.Claim] | None = None) -> dict[str, Any]:
        """The prose's numbers; the interval of the outside-the-embedding claim from `rows` (by
        default this model's; `OverSeeds` passes the rows decided over the training seeds)."""
        res = self.residual.summary()
        outside = next(r for r in (self.claims() if rows is None else rows) if r.id == OV_OUTSIDE.id)
        return {
            "ov_n_vectors": len(self.residual.r2), "ov_r2_residual": res["r2_mean"],
            "ov_r2_random": self.random.summary()["r2_mean"], "ov_slope_median": res["slope_median"],
            "ov_slope_p10": res["slope_p10"], "ov_slope_p90": res["slope_p90"],
            "ov_intercept_rel": res["intercept_rel_mean"],
            "ov_r2_vector_space": self.vector_space.summary()["r2_mean"],
            "ov_positive_slope_vector_space": float((self.vector_space.slope > 0).mean()),
            "ov_outside": self.outside, "ov_outside_random_input": self.outside_random_input,
            "ov_outside_baseline": self.baseline, "ov_outside_excess": self.outside_excess,
            "ov_outside_excess_low": outside.interval[0], "ov_outside_excess_high": outside.interval[1],
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
        vector_space=ov_readout_fit(m, s.analysis), outside_shares=share_outside_embedding(m, vectors),
        outside_random_input=float(share_outside_embedding(m, random_vectors).mean()),
        baseline=random_direction_share(m.cfg.d_model, rank), scatter=scatter, sequence=vector_sequences(s.analysis),
    )


# --- OV eigenvalue scores and effective ranks of every head ---------------------------------------

WEIGHTS_ONLY = ("computed from the weights of one trained model: no sampled input enters it; across training seeds "
                "it is decided on the prediction interval for another seed (`verdicts.over_seeds`; a count of "
                "heads on each ranked head's score, `verdicts.count_over_seeds`)")
EIGEN_L2_NEGATIVE = claims.declare(
    "affine.ov.eigen_l2_negative_heads",
    "layer-2 heads with a negative OV eigenvalue score (residual stream; mean {mean})",
    source_seed=SEED, source_value="all (negative copying heads)", unit="heads of 8",
    source_quote="We found that the second-layer heads indeed function as negative copying heads.",
    criterion="all 8 heads < 0", test=claims.between(8, 8), examples=(8, 5),
    why_no_interval=f"a count over the 8 heads of one model, {WEIGHTS_ONLY}",
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
    source_quote="As shown in Figure 11, the OV matrix appears sparse and exhibits low effective rank",
    criterion="<= 16 (a quarter of d_head; our threshold)", test=claims.at_most(16),
    why_no_interval=f"a property of one head's weights, {WEIGHTS_ONLY}",
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

    def unit_scores(self) -> dict[str, tuple[np.ndarray, float, bool]]:
        """The layer-2 heads' scores the negative-head count thresholds (`verdicts.count_over_seeds`)."""
        return {EIGEN_L2_NEGATIVE.id: (self.residual[L2], 0.0, True)}

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


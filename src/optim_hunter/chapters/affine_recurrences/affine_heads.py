"""What the attention heads of the affine-recurrence model attend to and what they write directly
to the output (seed 001), with the claims they test: attention statistics (previous-token heads in
layer 0, attention to a_1 in layer 1, the checkerboard of layer 2), the patterns of two example
sequences, and the direct attribution of every head to a_{m+1} and to a_{m+1} - a_m.

Each chapter section calls one function here (`attention`, `attention_examples`, `attribution`)
and gets a frozen result with `.figure()` / `.table()` (or `.show()`), `.claims()` and
`.numbers()`; the measurements below them take any hooked model with the `VectorModel` interface
and held-out `Sequences` groups (see `chapters.affine_recurrences.affine`). Attribution folds the
LayerNorms and value biases in (`analysis.circuits`). The heads' OV circuits are `affine_ov`'s.
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

from optim_hunter.analysis import circuits, heads
from optim_hunter.chapters.affine_recurrences.affine import (
    L0,
    L1,
    L2,
    SEED,
    Study,
    example_sequences,
    filed,
    ratio_interval,
    sequence_interval,
)
from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel
from optim_hunter.report import claims, plots
from optim_hunter.zoo.affine import SCORED_FROM, Sequences


def _patterns(model: HookedModel, vectors: Tensor, layer: int) -> Float[Tensor, "batch head query_pos key_pos"]:
    name = hooks.pattern(layer)
    with torch.no_grad():
        _, cache = model.run_with_cache(vectors, names_filter=lambda n: n == name)
    return cache[name].double()


# --- attention patterns --------------------------------------------------------------------------

HEAD_COUNT = ("a count over the 8 heads of one trained model: each head's score averages over the held-out "
              "sequences, but the count of heads past a threshold has no interval over them; across training "
              "seeds it is decided on the prediction interval of each ranked head's score "
              "(`intervals.count_over_seeds`)")
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
        """The heads' scores the two head counts threshold (for `intervals.count_over_seeds`)."""
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
    model: HookedModel, groups: Sequence[Sequences], *, target: str = "next", scored_from: int = SCORED_FROM
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
        if g.inputs.shape[1] <= scored_from:
            sums.append(np.zeros((len(g), n_layers, n_heads)))
            positions.append(np.zeros(len(g)))
            continue
        _, cache = model.run_with_cache(g.inputs, names_filter=lambda n: n in names)
        direction = g.targets if target == "next" else g.targets - g.inputs
        outs = torch.stack([circuits.head_outputs(model, cache, l) for l in range(n_layers)], 2)  # [b,p,l,h,d]
        dla = circuits.direct_attribution(model, cache, outs, direction)[:, scored_from:]  # [b, p, l, h]
        sums.append(dla.sum(1).double().numpy())
        positions.append(np.full(len(g), float(dla.shape[1])))
    return HeadAttribution(np.concatenate(sums), np.concatenate(positions))


def head_attribution(
    model: HookedModel, groups: Sequence[Sequences], *, target: str = "next", scored_from: int = SCORED_FROM
) -> Float[np.ndarray, "layer head"]:
    """Mean direct attribution of every head at the scored positions (`head_attribution_by_sequence`),
    pooled over all (sequence, position) pairs."""
    return head_attribution_by_sequence(model, groups, target=target, scored_from=scored_from).mean


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

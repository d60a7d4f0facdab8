"""Ablations of the chapter's focus Markov-chain model (the 2-layer attention-only model), in one
call, `ablation_study`: every head of the final model ablated alone (full and pattern-preserving,
`interventions`), attributed to the ICL score and to the before-and-after vector of the phase
change; the induction heads ablated together at the end of training and across the window; the
strongest previous-token and induction heads' patterns replaced by idealised ones. The result,
`AblationStudy`, holds them with its table, figures and claim rows, for every training seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import Tensor

from optim_hunter import zoo
from optim_hunter.chapters.induction_heads.claim_specs import (
    ABLATION_REMOVES,
    ABLATION_THROUGH,
    BEFORE_AFTER,
    CHAPTER,
    FOCUS,
    IDEAL_INDUCTION,
    IDEAL_PREVIOUS,
    IDEAL_TWO_TOKEN,
    OTHER_ABLATIONS,
    measured_only,
)
from optim_hunter.chapters.induction_heads.figures import head_label
from optim_hunter.chapters.induction_heads.icl_metrics import HALF_WIDTH, PhaseWindow, icl_score, token_losses
from optim_hunter.chapters.induction_heads.interventions import (
    HeadAblation,
    ablate_heads,
    before_after_attribution,
    head_ablations,
    idealised_pattern,
    recovery_losses,
)
from optim_hunter.chapters.induction_heads.phase_change import PhaseChangeStudy
from optim_hunter.chapters.induction_heads.resampling import bootstrap_means, ratio
from optim_hunter.chapters.induction_heads.seed_verdicts import over_seeds
from optim_hunter.chapters.induction_heads.snapshots import snapshot_models
from optim_hunter.core import settings
from optim_hunter.core.hooks import HookedModel
from optim_hunter.core.losses import next_token_losses
from optim_hunter.report import claims, plots
from optim_hunter.zoo import induction


@dataclasses.dataclass(frozen=True, eq=False)
class AblationStudy:
    """Head ablations of a final model and across its window, and idealised heads (`ablation_study`)."""

    profile: str
    name: str
    n_tokens: int
    early: int
    late: int
    window: PhaseWindow
    ablation: HeadAblation  # every head of the final model, alone
    attribution: Mapping[str, np.ndarray]  # full / preserved -> [layer, head] on the before-and-after vector
    prefix: np.ndarray  # [layer, head] final prefix-matching scores
    previous: np.ndarray  # [layer, head] final previous-token scores
    before_step: int
    last_step: int
    induction_heads: tuple[tuple[int, int], ...]
    icl_without: float  # ICL score with the induction heads ablated together
    across_steps: np.ndarray  # [step] snapshots spanning the window
    across: Mapping[str, np.ndarray]  # full / preserved -> [step, layer * head] ICL-score change
    across_clean: np.ndarray  # [step] clean ICL score
    across_removed: np.ndarray  # [step] share of the ICL score removed by the induction heads (NaN: no ICL)
    idealised_heads: Mapping[str, tuple[int, int]]  # previous / induction -> (layer, head)
    recovery: Mapping[str, float]  # previous / induction / induction2 -> fraction of ablation loss recovered
    # per held-out chain, the values the numbers above average (for their bootstrap intervals)
    without_chains: np.ndarray  # [chain] ICL score with the induction heads ablated together (mean: icl_without)
    across_chains: np.ndarray  # [step, clean / induction heads ablated, chain] ICL scores on the first half
    recovery_chains: Mapping[str, np.ndarray]  # previous / induction / induction2 -> `recovery_losses` [3, chain]
    before_after: np.ndarray  # [chain, index] per-token loss at the window's start minus at the end of training
    seed: int = 0  # the training seed of the ablated model
    seeds: tuple[AblationStudy, ...] = ()  # the same ablations of the other training seeds' models

    @property
    def removed_fraction(self) -> float:
        return 1 - self.icl_without / self.ablation.clean_icl

    @property
    def whole_layers(self) -> list[int]:
        """The layers all of whose heads are induction heads: there, ablating the induction heads
        together is ablating the layer, and cannot tell the induction heads from it."""
        L, H = self.prefix.shape
        return [l for l in range(L) if sum(layer == l for layer, _ in self.induction_heads) == H]

    def chain_icl(self, head: tuple[int, int] | None = None) -> np.ndarray:
        """The final model's ICL score per held-out chain, clean or with `head` ablated (full)."""
        return self.ablation.chain_icl(self.early, self.late, HALF_WIDTH, head=head)

    @property
    def head_names(self) -> list[str]:
        L, H = self.prefix.shape
        return [head_label(l, h) for l in range(L) for h in range(H)]

    def table(self) -> pd.DataFrame:
        a = self.ablation
        L, H = self.prefix.shape
        return pd.DataFrame([{
            "head": head_label(l, h), "prefix matching": self.prefix[l, h], "previous token": self.previous[l, h],
            "ΔICL full": a.icl_full[l, h] - a.clean_icl, "ΔICL preserved": a.icl_preserved[l, h] - a.clean_icl,
            "attribution full": self.attribution["full"][l, h],
            "attribution preserved": self.attribution["preserved"][l, h],
        } for l in range(L) for h in range(H)]).set_index("head")

    def across_figures(self) -> list[go.Figure]:
        return [plots.heatmap(values, x=self.head_names, y=[str(s) for s in self.across_steps], zmid=0,
                              title=f"{self.name}: ICL-score change when a head is ablated ({kind}), by training step")
                for kind, values in self.across.items()]

    def numbers(self) -> dict[str, Any]:
        return {
            "ih_clean_icl": self.ablation.clean_icl, "ih_before_step": self.before_step, "ih_last_step": self.last_step,
            "ih_induction_heads": ", ".join(head_label(*h) for h in self.induction_heads),
            "ih_icl_without": self.icl_without, "ih_removed": self.removed_fraction,
            "ih_recovery_previous": self.recovery["previous"], "ih_recovery_induction": self.recovery["induction"],
            "ih_recovery_induction2": self.recovery["induction2"],
            "ih_previous_head": head_label(*self.idealised_heads["previous"]),
            "ih_induction_head": head_label(*self.idealised_heads["induction"]),
        }

    def claims(self) -> list[claims.Claim]:
        """Seed 0's rows decided over the training seeds (`over_seeds`)."""
        return over_seeds([study.seed_claims() for study in (self, *self.seeds)])

    def seeds_table(self) -> pd.DataFrame:
        """Per training seed: the induction heads, the share of the ICL score their joint ablation
        removes, and the idealised heads' recoveries."""
        return pd.DataFrame([
            {"seed": a.seed, "induction heads": ", ".join(head_label(*h) for h in a.induction_heads),
             "clean ICL score": a.ablation.clean_icl, "ICL score without them": a.icl_without,
             "share removed": a.removed_fraction, "previous-token recovery": a.recovery["previous"],
             "induction recovery": a.recovery["induction"]}
            for a in (self, *self.seeds)]).set_index("seed")

    def seed_claims(self) -> list[claims.Claim]:
        """The rows of this study's training seed alone."""
        return [*self._removal_rows(), self._other_heads_row(), self._attribution_row(), *self._idealised_rows()]

    def _row(self, spec: claims.ClaimSpec, measured: Any, **fields: Any) -> claims.Claim:
        """`spec`'s row of the ablated model (the chapter, profile and model filled in)."""
        return spec.measure(measured, chapter=CHAPTER, profile=self.profile, model=self.name, name=self.name, **fields)

    def _removal_rows(self) -> list[claims.Claim]:
        """The share of the ICL score the induction heads' joint ablation removes, at the end of
        training and at every measured snapshot from the window's start."""
        names = ", ".join(head_label(*h) for h in self.induction_heads)
        removes, through, note = ABLATION_REMOVES, ABLATION_THROUGH, ""
        if self.whole_layers:  # the induction heads are the whole layer: the rows cannot tell them from it
            removes, through = measured_only(removes), measured_only(through)
            note = (f"; every head of layer {', '.join(map(str, self.whole_layers))} is an induction head here, so "
                    "this ablates the whole layer and cannot tell the induction heads from it: measured only, "
                    "not a reproduction")
        both = np.stack([self.without_chains, self.chain_icl()])
        rows = [self._row(removes, self.removed_fraction, interval=bootstrap_means(both, _removed, "held-out chains"),
                          heads=names, note=note)]
        from_start = [k for k, (s, f) in enumerate(zip(self.across_steps, self.across_removed))
                      if s >= self.window.start and np.isfinite(f)]
        detail = ", ".join(f"step {self.across_steps[k]} {self.across_removed[k]:.0%}" for k in from_start) or "none"
        if from_start:
            across = self.across_chains[from_start][:, ::-1].reshape(2 * len(from_start), -1)  # ablated, clean pairs
            smallest = lambda m: min(_removed(m[2 * k : 2 * k + 2]) for k in range(len(from_start)))  # noqa: E731
            rows.append(self._row(through, smallest(across.mean(1)),
                                  interval=bootstrap_means(across, smallest, "held-out chains"), heads=names,
                                  start=self.window.start, detail=detail, note=note))
        else:
            rows.append(self._row(through, "no snapshot with in-context learning from the window on", heads=names,
                                  start=self.window.start, detail=detail, note=note))
        return rows

    def _other_heads_row(self) -> claims.Claim:
        """The share of the other heads whose ablation increases in-context learning."""
        L, H = self.prefix.shape
        others = [(l, h) for l in range(L) for h in range(H) if (l, h) not in self.induction_heads]
        if not others:
            return self._row(OTHER_ABLATIONS, "no other heads", heads="none")
        icl_rows = np.stack([self.chain_icl()] + [self.chain_icl(h) for h in others])
        lower = lambda m: float(np.mean(m[1:] < m[0]))  # noqa: E731  (share of heads whose ablation lowers it)
        return self._row(OTHER_ABLATIONS, lower(icl_rows.mean(1)),
                         interval=bootstrap_means(icl_rows, lower, "held-out chains"),
                         heads=", ".join(head_label(*h) for h in others))

    def _attribution_row(self) -> claims.Claim:
        """The smallest attribution of an induction head's ablation to the before-and-after vector."""
        # attribution = sum over tokens of delta * direction / sum of direction^2: per chain, a numerator and a
        # denominator whose means give it
        direction = self.before_after
        n = direction.shape[0]
        attribution_rows = np.stack([(self.ablation.delta_full[h].reshape(n, -1) * direction).sum(1)
                                     for h in self.induction_heads] + [(direction**2).sum(1)])
        smallest_attribution = lambda m: float(m[:-1].min() / m[-1])  # noqa: E731
        attribution = {h: float(self.attribution["full"][h]) for h in self.induction_heads}
        return self._row(BEFORE_AFTER, smallest_attribution(attribution_rows.mean(1)),
                         interval=bootstrap_means(attribution_rows, smallest_attribution, "held-out chains"),
                         detail=", ".join(f"{head_label(*h)} {v:.2f}" for h, v in attribution.items()))

    def _idealised_rows(self) -> list[claims.Claim]:
        """The share of the ablation loss the idealised previous-token and induction patterns recover."""
        prev, ind = (head_label(*self.idealised_heads[k]) for k in ("previous", "induction"))
        r, parts = self.recovery, self.recovery_chains
        recovered = lambda m: ratio(m[1] - m[2], m[1] - m[0])  # noqa: E731  (clean, ablated, idealised)
        rows = [self._row(spec, r[kind], interval=bootstrap_means(parts[kind], recovered, "held-out chains"), head=head)
                for spec, kind, head in ((IDEAL_PREVIOUS, "previous", prev), (IDEAL_INDUCTION, "induction", ind))]
        two_rows = np.concatenate([parts["induction"], parts["induction2"][2:]])  # clean, ablated, one, two
        more = lambda m: ratio(m[2] - m[3], m[1] - m[0])  # noqa: E731
        rows.append(self._row(IDEAL_TWO_TOKEN, r["induction2"] - r["induction"],
                              interval=bootstrap_means(two_rows, more, "held-out chains"), head=ind,
                              one=f"{r['induction']:.3f}", two=f"{r['induction2']:.3f}"))
        return rows


def _removed(m: np.ndarray) -> float:
    """The share of the ICL score removed, from the means (ICL score with the heads ablated, clean):
    (ablated - clean) / -clean."""
    return ratio(m[0] - m[1], -m[1])


def _before_after_vectors(name: str, before_step: int, profile: str, final: HookedModel,
                          tokens: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-token losses (flat) of zoo model `name` at `before_step` and of its `final` model."""
    before_fused, _ = snapshot_models(name, before_step, profile, hooked=False)
    with torch.no_grad():
        before_vec = next_token_losses(before_fused(tokens), tokens).numpy().reshape(-1)
        after_vec = token_losses(final(tokens), tokens).reshape(-1)
    return before_vec, after_vec


def _induction_heads(prefix: np.ndarray) -> tuple[tuple[int, int], ...]:
    """The heads of layers >= 1 whose final prefix-matching score is at least half the largest."""
    L, H = prefix.shape
    return tuple((l, h) for l in range(1, L) for h in range(H) if prefix[l, h] >= 0.5 * np.nanmax(prefix[1:]))


def _across_window(name: str, profile: str, steps: np.ndarray, tokens: Tensor, chosen: Sequence[tuple[int, int]],
                   early: int, late: int) -> dict[str, Any]:
    """Every head's ablation and the induction heads' joint ablation at each of `steps`: the
    `AblationStudy` fields `across`, `across_clean`, `across_removed` and `across_chains`."""
    across, clean, removed, across_chains = {"full": [], "preserved": []}, [], [], []
    for step in steps:
        _, bridge = snapshot_models(name, int(step), profile)
        a = head_ablations(bridge, tokens, early, late, HALF_WIDTH)
        across["full"].append((a.icl_full - a.clean_icl).reshape(-1))
        across["preserved"].append((a.icl_preserved - a.clean_icl).reshape(-1))
        joint_losses = ablate_heads(bridge, tokens, chosen, preserve_patterns=False).astype(np.float64)
        joint = float(icl_score(joint_losses.mean(0), early, late, HALF_WIDTH))
        across_chains.append([a.chain_icl(early, late, HALF_WIDTH), icl_score(joint_losses, early, late, HALF_WIDTH)])
        clean.append(a.clean_icl)
        removed.append(1 - joint / a.clean_icl if a.clean_icl < 0 else np.nan)
    return {"across": {k: np.stack(v) for k, v in across.items()}, "across_clean": np.asarray(clean),
            "across_removed": np.asarray(removed), "across_chains": np.asarray(across_chains, dtype=np.float64)}


def _idealised(final: HookedModel, tokens: Tensor, prefix: np.ndarray, previous: np.ndarray) -> dict[str, Any]:
    """The strongest previous-token (layer 0) and induction (layer >= 1) heads with their patterns
    idealised: the `AblationStudy` fields `idealised_heads`, `recovery_chains` and `recovery`."""
    H = prefix.shape[1]
    top = int(np.nanargmax(prefix[1:]))
    ideal_heads = {"previous": (0, int(np.argmax(previous[0]))), "induction": (1 + top // H, top % H)}
    parts = {kind: recovery_losses(final, tokens, *ideal_heads["previous" if kind == "previous" else "induction"],
                                   idealised_pattern(tokens, kind))
             for kind in ("previous", "induction", "induction2")}
    recovery = {kind: float((m[1] - m[2]) / (m[1] - m[0])) for kind, m in ((k, v.mean(1)) for k, v in parts.items())}
    return {"idealised_heads": ideal_heads, "recovery_chains": parts, "recovery": recovery}


def ablation_study(study: PhaseChangeStudy, *, name: str = FOCUS, n_tokens: int | None = None,
                   across: int | None = None, seed_across: int | None = None) -> AblationStudy:
    """Ablate every head of the final `name` (full and pattern-preserving) on `n_tokens` other
    held-out chains (full 128), attribute to the before-and-after vector (window start -> end of
    training), repeat at up to 8 snapshots spanning the window (on half the chains), ablate the
    induction heads (layer >= 1, prefix matching at least half the largest) together, and replace
    the strongest previous-token and induction heads' patterns by idealised ones. The same for the
    other training seeds' models of `study.seeds` (`AblationStudy.seeds`), with up to `seed_across`
    snapshots across the window (full 4) instead of `across` (8)."""
    profile, run = study.profile, study.runs[name]
    across = across or 8
    seed_across = seed_across or settings.pick(profile, full=4, smoke=3)
    seeds = tuple(ablation_study(s, name=name, n_tokens=n_tokens, across=seed_across) for s in study.seeds)
    label, name = name, run.name  # the zoo name of this seed's model
    cfg = zoo.config(name, profile)
    n_tokens = n_tokens or settings.pick(profile, full=128, smoke=32)
    tokens = induction.eval_tokens(cfg, n_tokens, seed=7)
    early, late, steps, w = study.early, study.late, run.steps, run.window
    before_step = int(steps[np.searchsorted(steps, w.start)])
    final = zoo.load(name, profile, progress=False)
    before_vec, after_vec = _before_after_vectors(name, before_step, profile, final, tokens)
    abl = head_ablations(final, tokens, early, late, HALF_WIDTH)
    attribution = {kind: before_after_attribution(getattr(abl, f"delta_{kind}"), before_vec, after_vec)
                   for kind in ("full", "preserved")}
    prefix = run.final_prefix
    chosen_heads = _induction_heads(prefix)
    both = ablate_heads(final, tokens, chosen_heads, preserve_patterns=False).astype(np.float64)
    inside = steps[(steps >= w.start // 2) & (steps <= min(steps[-1], 2 * w.end))]
    across_steps = inside[np.unique(np.linspace(0, len(inside) - 1, min(across, len(inside))).astype(int))]
    across_fields = _across_window(name, profile, across_steps, tokens[: n_tokens // 2], chosen_heads, early, late)
    previous = run.scores["previous_token"][-1]
    return AblationStudy(
        profile=profile, name=label, n_tokens=n_tokens, early=early, late=late, window=w, ablation=abl,
        attribution=attribution, prefix=prefix, previous=previous, before_step=before_step, last_step=int(steps[-1]),
        induction_heads=chosen_heads, icl_without=float(icl_score(both.mean(0), early, late, HALF_WIDTH)),
        across_steps=across_steps, without_chains=np.asarray(icl_score(both, early, late, HALF_WIDTH)),
        before_after=(before_vec.astype(np.float64) - after_vec.astype(np.float64)).reshape(n_tokens, -1),
        seed=study.seed, seeds=seeds, **across_fields, **_idealised(final, tokens, prefix, previous),
    )

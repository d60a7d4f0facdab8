"""The affine-recurrence chapter's study (seed 001, Bhargav & Gu 2024): the trained model and its
held-out sequences, the tools every section shares, and the closing table of every claim.

The chapter's analyses live in seven modules:

- `affine` (here): `Study` (the trained `affine-recurrence` model and its held-out sequences),
  `studies` and `over_seeds` (every training seed), the bootstrap intervals over held-out
  sequences, the per-sequence error, and the closing table of every claim (`verdicts`);
- `affine_training`: the task and its data (`task`), the training run and the model's error
  (`training`), and the loss on every position against the seed's (`loss_positions`);
- `affine_heads`: what the attention heads attend to and what they write directly to the output
  (`attention`, `attention_examples`, `attribution`);
- `affine_ov`: the heads' OV circuits (layer 0's as a copy of alpha times its input, the OV
  eigenvalue scores and effective ranks of every head: `layer0_ov`, `ov_scores`);
- `affine_interventions`: what changes when heads are edited (mean ablation; layer 2's QK circuits
  scored against the identity and replaced by random projections);
- `affine_mlps` and `affine_conjecture`: the MLPs' direct attribution (`mlps`) and the conjecture
  that layer 0 writes a_n + alpha a_{n-1} (`conjecture`).

Every section of the chapter calls one function that returns a frozen result: its numbers, with
`.figure()` / `.table()` where it has them, `.claims()` (the rows of the claims declared beside
the measuring code, each with the criterion fixed before any number is known) and `.numbers()`
(the numbers the prose quotes, for `glue`). A number that averages over the held-out sequences is
decided on its 95% bootstrap interval over them (`sequence_interval`: whole sequences resampled,
so the positions and vectors of one sequence stay together).

Training seeds. Every claim here is about what training produces, and one trained model's
bootstrap interval leaves out how much a second training run (or the same run on other float
kernels) moves the number. The zoo trains the model on `zoo.SEEDS["affine-recurrence"]` training
seeds (`studies`), every section is measured on each (`over_seeds`), and one rule decides every
row (`training_seeds.across_seeds`): the interval holds the per-seed 95% intervals and the 95%
prediction interval for another training seed (`intervals.over_seeds`; a property of the weights,
which has no interval on one model, counts as its value; a count of heads past a threshold is
decided on each ranked head's score, `intervals.count_over_seeds`). A verdict is reproduced only if
that whole interval meets the criterion, not reproduced if none of it does, and inconclusive
otherwise. The row shows seed 0's value, the one the figures show,
with every seed's value in its text. Head numbers mean nothing across seeds: head-level claims are
counts or choices by score (the five most identity-like heads, the layer-1 head of lowest rank).

The measurements take any hooked model with the `VectorModel` interface (`model(vectors)`,
`run_with_cache(vectors)`, the weight properties) and held-out `Sequences` groups (one per
length); weight-based quantities fold the LayerNorms and value biases in (`analysis.circuits`).

Positions: the model reads a_0 .. a_{L-1}; position m predicts a_{m+1}. "Scored" positions are
m >= `zoo.affine.SCORED_FROM` (2: the training loss).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter import zoo
from optim_hunter.analysis.intervals import CONFIDENCE
from optim_hunter.chapters.affine_recurrences import CHAPTER as RECORD
from optim_hunter.core import settings
from optim_hunter.core.hooks import HookedModel
from optim_hunter.report import claims
from optim_hunter.report.training_seeds import OverSeeds
from optim_hunter.zoo import affine as family
from optim_hunter.zoo.affine import SCORED_FROM, AffineData, Sequences, held_out, held_out_mse, sample_sequences

NAME = "affine-recurrence"
SEED = "001"
L0, L1, L2 = 0, 1, 2  # the model's three layers

# --- the study: one trained model, its held-out sequences ----------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Study:
    """The trained model of a profile with the held-out sequences every analysis uses:
    `analysis` (`per_length` sequences of each length 3..14: every number of the chapter) and
    `population` (as many again, for the means of the ablation)."""

    profile: str
    model: HookedModel
    cfg: Any  # the family's AffineConfig
    meta: Mapping[str, Any]
    analysis: list[Sequences]
    population: list[Sequences]
    name: str = NAME  # the zoo model: NAME, or one of its other training seeds
    seed: int = 0  # its training seed

    @property
    def longest(self) -> Sequences:
        """The sequences of the greatest length (14 vectors)."""
        return self.analysis[-1]

    @property
    def n_analysis(self) -> int:
        return sum(len(g) for g in self.analysis)

    @functools.cached_property
    def clean_mse(self) -> float:
        return held_out_mse(self.model, self.analysis)

    @functools.cached_property
    def clean_errors(self) -> Float[np.ndarray, " n"]:
        """The clean model's MSE on every analysis sequence (`squared_errors`)."""
        return squared_errors(self.model, self.analysis)

    def edited(self, edit: Callable[[dict[str, Tensor]], dict[str, Tensor]]) -> Any:
        """A hooked copy of the model whose weights are `edit(state dict)` (the model is untouched).
        The only place the analyses reach into the zoo family's model core."""
        return family.hooked(edit(family.state_dict_of(self.model)), self.cfg).requires_grad_(False)


def study(profile: str | None = None, seed: int = 0) -> Study:
    """The `affine-recurrence` model of `profile` and training `seed` (trained on first use, then
    cached) and its held-out sequences: 84 of each length (smoke: 20) for the analyses, as many
    for the means (the same sequences for every training seed)."""
    torch.set_num_threads(1)  # small matrices: a second thread only slows a shared machine down
    profile = settings.profile(profile)
    name = zoo.seed_names(NAME)[seed]
    cfg = zoo.config(name, profile)
    model = zoo.load(name, profile, progress=False)
    model.requires_grad_(False)
    per_length = settings.pick(profile, full=84, smoke=20)
    return Study(
        profile=profile, model=model, cfg=cfg, meta=zoo.metadata(name, profile),
        analysis=held_out(per_length, cfg.data, seed=20_001),
        population=held_out(per_length, cfg.data, seed=20_002), name=name, seed=seed,
    )


def studies(profile: str | None = None) -> list[Study]:
    """`study` of every training seed of the model (`zoo.seed_names`), seed 0 first."""
    return [study(profile, seed) for seed in range(len(zoo.seed_names(NAME)))]


SEED_UNITS = "training seeds"


@dataclasses.dataclass(frozen=True)
class SeedsInfo:
    """How many training seeds the chapter's numbers come from (for the prose)."""

    names: tuple[str, ...]

    def numbers(self) -> dict[str, Any]:
        return {"n_seeds": len(self.names), "seed_models": ", ".join(self.names)}


def seeds_numbers(studies_: Sequence[Study]) -> SeedsInfo:
    return SeedsInfo(tuple(s.name for s in studies_))


def over_seeds(section: Callable[[Study], Any], studies_: Sequence[Study]) -> OverSeeds:
    """`section(s)` for the study of every training seed: a `training_seeds.OverSeeds` (reads as seed 0's
    result; its claims are decided over the seeds by `training_seeds.across_seeds`)."""
    return OverSeeds([section(s) for s in studies_], SEED_UNITS)


def filed(profile: str) -> dict[str, str]:
    """The keywords that file a claim row under this chapter, `profile` and the model."""
    return {"chapter": RECORD.name, "profile": profile, "model": NAME}


UNITS = "held-out sequences"


def sequence_interval(
    statistic: Callable[[np.ndarray], np.ndarray], n: int, *, units: str = UNITS,
    strata: Sequence[np.ndarray] | None = None,
) -> claims.Interval:
    """95% bootstrap interval over `n` held-out sequences of `statistic(weights)`: weights is
    [resample, n], weights[r, i] how often sequence i is drawn into resample r (a row of ones: the
    data as measured), and the statistic returns one value per row.

    A number pooled over the positions or vectors of the sequences (a ratio of sums, a median)
    resamples whole sequences this way, so that the correlated rows of one sequence stay together:
    the statistic weights every row by its sequence's weight. `strata` (index arrays that
    partition the sequences, e.g. alternating and monotone ones) resamples each apart, so that
    every resample keeps each stratum's size (a difference between two kinds of sequences)."""
    groups = [np.arange(n)] if strata is None else [np.asarray(g, dtype=int) for g in strata if len(g)]

    def resampled(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        flat = [np.asarray(i).astype(int).reshape(-1, np.shape(i)[-1]) for i in indices]
        rows = flat[0].shape[0]
        offsets = n * np.arange(rows)[:, None]
        weights = sum(np.bincount((f + offsets).ravel(), minlength=rows * n) for f in flat).reshape(rows, n)
        return np.asarray(statistic(weights.astype(float)), dtype=float).reshape(np.shape(indices[0])[:-1])

    interval = claims.bootstrap(*(g.astype(float) for g in groups), statistic=resampled, units=units)
    if len(groups) == 1:
        return interval
    total = sum(len(g) for g in groups)
    return claims.Interval(interval.low, interval.high, f"bootstrap {CONFIDENCE:.0%} over {total} {units}, "
                           f"{len(groups)} strata of {', '.join(str(len(g)) for g in groups)} resampled apart", total)


def ratio_interval(numerator: np.ndarray, denominator: np.ndarray, *, units: str = UNITS) -> claims.Interval:
    """95% bootstrap interval over sequences of sum(numerator) / sum(denominator), one entry of
    each per sequence (a mean pooled over a sequence's positions: its sum and its count)."""
    num, den = np.asarray(numerator, float), np.asarray(denominator, float)
    return sequence_interval(lambda w: w @ num / (w @ den), len(num), units=units)


def weighted_median(values: np.ndarray, weights: np.ndarray, *, presorted: bool = False) -> float:
    """The median of `values`, each counted `weights` times (np.median for equal weights: the mean
    of the middle pair when the total weight is even). `presorted`: `values` already ascending."""
    v, w = np.asarray(values, float), np.asarray(weights, float)
    if not presorted:
        order = np.argsort(v, kind="stable")
        v, w = v[order], w[order]
    v, w = v[w > 0], w[w > 0]
    cum = np.cumsum(w)
    half = cum[-1] / 2
    k = int(np.searchsorted(cum, half * (1 - 1e-12)))  # the first value whose cumulative weight reaches half
    if np.isclose(cum[k], half) and k + 1 < len(v):
        return float((v[k] + v[k + 1]) / 2)
    return float(v[k])


def example_sequences(data: AffineData) -> tuple[Sequences, Sequences]:
    """The chapter's two single examples of 14 vectors: an alternating (c = -0.8) and a monotone
    (c = 0.8) recurrence, the same every time."""
    rng = np.random.default_rng(11)
    alternating = sample_sequences(rng, 1, 14, data, c=-0.8)
    monotone = sample_sequences(rng, 1, 14, data, c=0.8)
    return alternating, monotone


# --- the error of a model on every held-out sequence ---------------------------------------------


@torch.no_grad()
def squared_errors(
    model: HookedModel, groups: Sequence[Sequences], scored_from: int = SCORED_FROM
) -> Float[np.ndarray, " n"]:
    """Per held-out sequence (the groups one after the other), the MSE over its scored positions
    and coordinates: the units the held-out MSE averages. With groups of equal size (every
    `Study` set) their mean is `zoo.affine.held_out_mse`."""
    parts = [((model(g.inputs) - g.targets)[:, scored_from:].double() ** 2).mean((1, 2)).numpy() for g in groups]
    return np.concatenate(parts)


def row_sequences(groups: Sequence[Sequences], scored_from: int = SCORED_FROM) -> Int[np.ndarray, " row"]:
    """For every row of a table of the positions `scored_from` .. L-1 of every sequence of `groups`
    (the groups one after the other: `affine_conjecture.layer0_terms`, or with `scored_from` 0
    `affine_ov.residual_vectors`), the index of its sequence among all sequences of `groups`."""
    ids, offset = [], 0
    for g in groups:
        L = g.inputs.shape[1]
        if L > scored_from:
            ids.append(np.repeat(offset + np.arange(len(g)), L - scored_from))
        offset += len(g)
    return np.concatenate(ids) if ids else np.zeros(0, dtype=int)


# --- what holds up -------------------------------------------------------------------------------


def verdicts(*results: Any) -> pd.DataFrame:
    """Every claim row of `results` as one table: the seed's value, ours (seed 0; the claim text
    lists every training seed's), the interval that decides it (over the training seeds, where it
    has one) and the verdict."""
    rows = claims.rows_of(*results)
    return pd.DataFrame(
        {"claim": [r.claim for r in rows], "seed": [r.source_value for r in rows],
         "ours (seed 0)": [r.measured for r in rows],
         "interval": [f"[{r.interval[0]:.4g}, {r.interval[1]:.4g}]" if r.interval else "" for r in rows],
         "unit": [r.unit for r in rows], "verdict": [claims.verdict_words(r.to_json()) for r in rows]},
        index=pd.Index([r.id.removeprefix("affine.") for r in rows], name="claim id"),
    )

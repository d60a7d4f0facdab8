"""The phase change in the chapter's Markov-chain models (Olsson et al. 2022): every snapshot of the
five models (attention-only with 1, 2 and 3 layers, smeared keys with 1 and 2) and of their other
training seeds' models, measured in one call, `phase_change_study`, whose result
(`PhaseChangeStudy`) holds the loss by index, ICL score, head scores, windows and PCA trajectories,
with the tables and figures of the chapter; its claim rows are built in `phase_change_claims`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import Tensor

from optim_hunter import zoo
from optim_hunter.analysis import heads
from optim_hunter.chapters.induction_heads import phase_change_claims
from optim_hunter.chapters.induction_heads.claim_specs import FOCUS, MARKOV_MODELS, change_margin, is_phase_change
from optim_hunter.chapters.induction_heads.figures import head_label, head_lines, log_lines
from optim_hunter.chapters.induction_heads.icl_metrics import (
    HALF_WIDTH,
    crossing_step,
    icl_score,
    log_index_derivative,
    per_token_loss_pca,
    scaled_indices,
    smooth,
    trajectory_turns,
    window_drops,
)
from optim_hunter.chapters.induction_heads.resampling import bootstrap_means
from optim_hunter.chapters.induction_heads.seed_verdicts import over_seeds
from optim_hunter.chapters.induction_heads.snapshots import MarkovRun, markov_run
from optim_hunter.core import hooks, settings
from optim_hunter.core.hooks import HookedModel
from optim_hunter.report import claims, plots
from optim_hunter.zoo import induction


@dataclasses.dataclass(frozen=True, eq=False)
class PhaseChangeStudy:
    """The Markov-chain models of the chapter, every snapshot measured (`phase_change_study`)."""

    profile: str
    models: pd.DataFrame  # configuration and training time of every model
    n_ctx: int
    n_states: int
    n_eval: int
    n_pca: int
    early: int
    late: int
    warmup_steps: int
    train_steps: int
    reference: Mapping[str, float]  # ICL scores of the Bayes-optimal and unigram predictors
    reference_chains: Mapping[str, np.ndarray]  # ... per held-out chain [chain] (mean: `reference`)
    runs: Mapping[str, MarkovRun]
    demo: Mapping[str, Any]  # the focus model's strongest induction head on a repeated sequence
    seconds: float  # measuring every snapshot
    seed: int = 0  # the training seed of `runs` (keyed by base name; `MarkovRun.name` is the zoo name)
    seeds: tuple[PhaseChangeStudy, ...] = ()  # the same study of the other training seeds' models

    # --- derived numbers
    def change_numbers(self, name: str) -> dict[str, float]:
        """What `is_phase_change` reads of model `name`: its window's fall, its final ICL score and
        the unigram predictor's."""
        r = self.runs[name]
        return {"drop": r.window.drop, "final": float(r.icl[-1]), "unigram": self.reference["unigram"]}

    def change_rows(self, name: str) -> np.ndarray:
        """`change_numbers` per held-out chain [3, chain]: the fall of the chain's ICL score across
        the model's window (`window_drops`), its final ICL score, the unigram predictor's; the row
        means are `change_numbers`."""
        r = self.runs[name]
        return np.stack([window_drops(r.steps, r.icl_chains, r.window), r.icl_chains[-1],
                         self.reference_chains["unigram"]])

    def change_margin(self, *names: str) -> tuple[float, claims.Interval]:
        """The smallest `change_margin` of the models `names` and its bootstrap interval over the
        held-out chains (all models are measured on the same chains: resampled together)."""
        rows = np.concatenate([self.change_rows(n) for n in names])
        smallest = lambda m: min(change_margin(*m[3 * k : 3 * k + 3]) for k in range(len(names)))  # noqa: E731
        return smallest(rows.mean(1)), bootstrap_means(rows, smallest, "held-out chains")

    def has_change(self, name: str) -> bool:
        """A phase change (`is_phase_change`): the ICL score falls by >= DROP in the window and ends
        below the unigram predictor's."""
        return is_phase_change(self.change_numbers(name))

    @property
    def multi_layer(self) -> list[str]:
        return [n for n, r in self.runs.items() if r.n_layers > 1]

    def formed(self) -> dict[str, int | None]:
        """Step at which the largest prefix-matching score (layers >= 1; any layer with smeared
        keys) first reaches half its rise, per model that can form induction heads."""
        out = {}
        for name, r in self.runs.items():
            if r.n_layers == 1 and not r.smeared:
                continue
            first = 0 if r.smeared else 1  # smeared keys allow induction in layer 0
            curve = np.nanmax(r.scores["prefix_matching"][:, first:].reshape(len(r.head_steps), -1), axis=1)
            out[name] = crossing_step(r.head_steps, curve)
        return out

    def bump(self, name: str = FOCUS) -> tuple[float, float, float]:
        """Training-loss fall per decade inside the window over the fall over the same log-length
        stretch just before it (smoothed over 25 steps): (ratio, rate inside, rate before)."""
        r = self.runs[name]
        losses = smooth(r.train_losses, 25)
        start, end = max(r.window.start, 2), max(r.window.end, r.window.start + 1)
        span = end / start
        before = max(1, int(start / span))
        rate_in = (losses[start - 1] - losses[end - 1]) / np.log10(span)
        rate_before = (losses[before - 1] - losses[start - 1]) / max(np.log10(start / before), 1e-9)
        return (rate_in / rate_before if rate_before > 0 else float("inf")), float(rate_in), float(rate_before)

    @functools.cached_property
    def pca(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return per_token_loss_pca({name: r.pca_vectors for name, r in self.runs.items()})

    def turns(self) -> dict[str, tuple[np.ndarray, int | None, float]]:
        projected, _ = self.pca
        return {name: trajectory_turns(projected[name], r.steps) for name, r in self.runs.items()}

    def index_pairs(self) -> list[tuple[int, int]]:
        n = self.n_ctx - 1
        e, l = self.early, self.late
        return [(e, l), (max(1, e // 2), l), (2 * e, l), (e, n // 2), (e, n - 1)]

    def numbers(self) -> dict[str, Any]:
        """The numbers the chapter's prose cites (glue names)."""
        ends = [study.runs[FOCUS].window.end for study in (self, *self.seeds)]
        return {
            "ih_n_ctx": self.n_ctx, "ih_early": self.early, "ih_late": self.late, "ih_half_width": HALF_WIDTH,
            "ih_n_eval": self.n_eval, "ih_n_pca": self.n_pca,
            "ih_bayes": self.reference["bayes"], "ih_unigram": self.reference["unigram"],
            "ih_uniform_loss": float(np.log(self.n_states)),
            "ih_snapshots": int(sum(len(r.steps) for study in (self, *self.seeds) for r in study.runs.values())),
            "ih_seconds": self.seconds, "ih_demo_head": self.demo["head"], "ih_warmup": self.warmup_steps,
            "ih_seeds": 1 + len(self.seeds), "ih_train_steps": self.train_steps,
            "ih_seed_head_snapshots": len(self.seeds[0].runs[FOCUS].head_steps) if self.seeds else len(self.runs[FOCUS].head_steps),
            "ih_train_seconds": float(self.models["train seconds"].sum()),
            "ih_focus_ends": "–".join(f"{e:,}" for e in sorted({min(ends), max(ends)})),
        }

    # --- tables and figures
    def models_table(self) -> pd.DataFrame:
        return self.models

    def windows_table(self) -> pd.DataFrame:
        return pd.DataFrame([
            {"model": name, "window start": r.window.start, "peak": r.window.peak, "window end": r.window.end,
             "drop in window (nats)": r.window.drop, "final ICL score": r.icl[-1],
             "max prefix matching": r.final_prefix.max(), "phase change": self.has_change(name)}
            for name, r in self.runs.items()
        ]).set_index("model")

    def sensitivity_table(self) -> pd.DataFrame:
        """Final ICL score of every model under other (early, late) pairs, and without averaging."""
        e, l = self.early, self.late
        return pd.DataFrame({
            name: {**{f"({a}, {b})": float(icl_score(r.by_index[-1], a, b, HALF_WIDTH)) for a, b in self.index_pairs()},
                   f"({e}, {l}) no averaging": float(icl_score(r.by_index[-1], e, l))}
            for name, r in self.runs.items()
        }).T

    def icl_figure(self) -> go.Figure:
        table = pd.concat([pd.DataFrame({"step": r.steps, "ICL score (nats)": r.icl, "model": name})
                           for name, r in self.runs.items()])
        fig = log_lines(table, x="step", y="ICL score (nats)", group="model",
                         title="ICL score (late-index loss minus early-index loss) over training")
        for label, key in (("Bayes-optimal", "bayes"), ("unigram", "unigram")):
            fig.add_hline(y=self.reference[key], line_dash="dot", annotation_text=label)
        return fig

    def loss_index_figures(self, name: str = FOCUS) -> list[go.Figure]:
        r = self.runs[name]
        index = np.arange(1, self.n_ctx)
        return [
            plots.heatmap(r.by_index - r.by_index[:, :1], x=index, y=r.steps, zmid=0,
                          title=f"{name}: loss at each context index minus loss at index 0 (rows: training step)"),
            plots.heatmap(log_index_derivative(r.by_index), x=index, y=r.steps, zmid=0,
                          title=f"{name}: d loss / d log(index) (negative: context helps)"),
        ]

    def head_figures(self, name: str = FOCUS) -> list[go.Figure]:
        r = self.runs[name]
        out = []
        for key in ("prefix_matching", "previous_token", "k_composition", "copying"):
            fig = log_lines(head_lines(r.head_steps, r.scores[key], key), x="step", y=key, group="head",
                             title=f"{name}: {key} per head")
            fig.add_vrect(x0=r.window.start, x1=r.window.end, fillcolor="grey", opacity=0.15, line_width=0)
            out.append(fig)
        return out

    def show_attention(self) -> None:
        """The focus model's strongest induction head and its layer's other heads on two repeats of
        every state in random order (circuitsvis)."""
        d = self.demo
        plots.attention_heads(d["pattern"], d["tokens"], d["names"])

    def pca_figure(self) -> go.Figure:
        projected, explained = self.pca
        fig = go.Figure()
        for name, xy in projected.items():
            fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="lines+markers", name=name,
                                     text=[f"step {s}" for s in self.runs[name].steps], marker={"size": 4}))
        fig.update_layout(template=plots.TEMPLATE, title="Per-token-loss PCA trajectories (all models, one basis)",
                          xaxis_title=f"PC1 ({explained[0]:.0%})", yaxis_title=f"PC2 ({explained[1]:.0%})")
        return fig

    def seeds_table(self) -> pd.DataFrame:
        """Per model and training seed: the window, its fall, the final ICL score, the largest final
        prefix-matching score and whether there is a phase change."""
        return pd.DataFrame([
            {"model": name, "seed": study.seed, "window start": r.window.start, "peak": r.window.peak,
             "window end": r.window.end, "drop in window (nats)": r.window.drop, "final ICL score": r.icl[-1],
             "final loss": r.loss[-1], "max prefix matching": r.final_prefix.max(),
             "phase change": study.has_change(name)}
            for name in self.runs for study in (self, *self.seeds) for r in (study.runs[name],)
        ]).set_index(["model", "seed"])

    # --- claims
    def claims(self) -> list[claims.Claim]:
        """One row per claim: seed 0's row (its numbers, its figures) decided on the range of the
        values over the training seeds (`over_seeds`)."""
        return over_seeds([study.seed_claims() for study in (self, *self.seeds)])

    def seed_claims(self) -> list[claims.Claim]:
        """The rows of this study's training seed alone (`phase_change_claims.seed_claims`)."""
        return phase_change_claims.seed_claims(self)


def _models_table(names: Mapping[int, Mapping[str, str]], profile: str) -> pd.DataFrame:
    """Train (first use) every model of `names` (training seed -> base name -> zoo name) and list
    its configuration and training time."""
    rows = []
    for seed, by_name in names.items():
        for name in by_name.values():
            zoo.load(name, profile, progress=False)  # trains on first use, then cached
            meta, cfg = zoo.metadata(name, profile), zoo.config(name, profile)
            rows.append({
                "model": name, "layers": cfg.arch.n_layers, "smeared keys": cfg.smeared, "training seed": seed,
                "d_model": cfg.arch.d_model, "heads": cfg.arch.n_heads, "context": cfg.n_ctx, "batch": cfg.batch_size,
                "steps": cfg.train.steps, "lr": cfg.train.lr, "snapshots": len(meta["snapshot_steps"]),
                "train seconds": meta["train_seconds"],
            })
    return pd.DataFrame(rows).set_index("model")


def _reference_chains(tokens: Tensor, n_states: int, early: int, late: int) -> dict[str, np.ndarray]:
    """ICL scores of the Bayes-optimal and unigram predictors per held-out chain of `tokens`."""
    return {
        "bayes": np.asarray(icl_score(induction.bayes_loss_by_index(tokens, n_states), early, late, HALF_WIDTH)),
        "unigram": np.asarray(icl_score(induction.unigram_loss_by_index(tokens, n_states), early, late,
                                        HALF_WIDTH)),
    }


def _demo(final: HookedModel, prefix: np.ndarray, n_states: int, n_heads: int) -> dict[str, Any]:
    """The attention of the final model's strongest induction head (by final `prefix` matching) and
    its layer's other heads on two repeats of every state in random order."""
    layer, head = np.unravel_index(np.nanargmax(prefix), prefix.shape)
    sequence = heads.repeated_random_tokens(n_states, length=n_states, repeats=2, batch=1, bos=None, seed=3)
    with torch.no_grad():
        _, cache = final.run_with_cache(sequence)
    return {"pattern": cache[hooks.pattern(int(layer))][0].numpy(),
            "tokens": [str(t) for t in sequence[0].tolist()],
            "names": [head_label(int(layer), h) for h in range(n_heads)], "head": head_label(int(layer), int(head))}


def phase_change_study(
    profile: str | None = None, *, models: Sequence[str] = MARKOV_MODELS, n_eval: int | None = None,
    n_pca: int | None = None, seeds: int | None = None, head_every: int | None = None,
) -> PhaseChangeStudy:
    """Train (first use) and measure every snapshot of the Markov-chain `models` (they must include
    attn-only-1l, -2l, -3l and smeared-1l, -2l for the claims) and of their other training seeds'
    models (`seeds` per model, default `zoo.SEEDS`): per-token losses on `n_eval` held-out chains
    (full 256), head scores, windows, and the per-token losses of the first `n_pca` chains (full 24)
    for the PCA. Seed 0 has its heads scored at every snapshot; the other seeds at every
    `head_every`-th snapshot and the last (full 3: the hooked model is most of a snapshot's cost)."""
    profile = settings.profile(profile)
    n_eval = n_eval or settings.pick(profile, full=256, smoke=64)
    n_pca = n_pca or settings.pick(profile, full=24, smoke=8)
    seeds = seeds or zoo.SEEDS.get(FOCUS, 1)
    head_every = head_every or settings.pick(profile, full=3, smoke=2)
    names = {seed: {name: zoo.seed_names(name)[seed] for name in models} for seed in range(seeds)}
    table = _models_table(names, profile)
    cfg = zoo.config(FOCUS, profile)
    early, late = scaled_indices(cfg.n_ctx)
    tokens = induction.eval_tokens(cfg, n_eval)
    reference_chains = _reference_chains(tokens, cfg.n_states, early, late)
    reference = {key: float(values.mean()) for key, values in reference_chains.items()}
    final = zoo.load(FOCUS, profile, progress=False)
    common = dict(profile=profile, models=table, n_ctx=cfg.n_ctx,
                  n_states=cfg.n_states, n_eval=n_eval, n_pca=n_pca, early=early, late=late,
                  warmup_steps=cfg.train.warmup_steps, train_steps=cfg.train.steps, reference=reference,
                  reference_chains=reference_chains)
    studies = []
    for seed in reversed(range(seeds)):  # seed 0 last: it holds the others
        started = time.perf_counter()
        runs = {name: markov_run(zoo_name, profile, tokens, n_pca, early, late, 1 if seed == 0 else head_every)
                for name, zoo_name in names[seed].items()}
        seconds = time.perf_counter() - started
        demo: dict[str, Any] = {}
        if seed == 0:
            demo = _demo(final, runs[FOCUS].final_prefix, cfg.n_states, cfg.arch.n_heads)
            seconds += sum(s.seconds for s in studies)
        studies.append(PhaseChangeStudy(**common, runs=runs, demo=demo, seconds=seconds, seed=seed,
                                        seeds=tuple(reversed(studies)) if seed == 0 else ()))
    return studies[-1]

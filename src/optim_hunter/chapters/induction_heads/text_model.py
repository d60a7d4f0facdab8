"""The 2-layer attention-only model trained on natural text (Python source, `zoo.code_corpus`): its
snapshots measured in one call, `text_study` (losses on held-out files, ICL score, repeated-sequence
loss drop, head scores), whose result `TextStudy` holds the window of its phase change, its figures,
tables and claim rows.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from optim_hunter import zoo
from optim_hunter.chapters.induction_heads.claim_specs import (
    CHAPTER,
    PREFIX_MIN,
    TEXT_BEFORE,
    TEXT_CHANGE,
    TEXT_MODEL,
    TEXT_POST,
    fmt,
    measured_only,
    text_change,
)
from optim_hunter.chapters.induction_heads.figures import head_label, head_lines, log_lines
from optim_hunter.chapters.induction_heads.icl_metrics import (
    HALF_WIDTH,
    PhaseWindow,
    phase_change_window,
    scaled_indices,
    smooth,
)
from optim_hunter.chapters.induction_heads.snapshots import SCORES, snapshot_measurements
from optim_hunter.core import settings
from optim_hunter.report import claims
from optim_hunter.zoo import code_corpus


@dataclasses.dataclass(frozen=True, eq=False)
class TextStudy:
    """The 2-layer attention-only model trained on Python source (`text_study`)."""

    profile: str
    name: str
    config: pd.DataFrame  # configuration, corpus and training time
    sample: str  # the start of a held-out window, tokens separated by |
    curves: Mapping[str, np.ndarray]  # `snapshot_measurements` on n_text windows
    final: Mapping[str, np.ndarray]  # ... of the final model on n_final other windows
    train_losses: np.ndarray
    n_text: int
    n_final: int
    n_ctx: int
    early: int
    late: int
    budget: str  # steps and tokens trained on
    train_seconds: float
    seconds: float  # measuring

    @functools.cached_property
    def window(self) -> PhaseWindow:
        return phase_change_window(self.curves["steps"], self.curves["icl"])

    @property
    def best(self) -> tuple[float, int, int]:
        """Largest final prefix-matching score of a layer >= 1 head, and its (layer, head)."""
        scores = self.curves["prefix_matching"][-1][1:]  # a layer-0 head has no earlier head to compose with
        layer, head = np.unravel_index(np.argmax(scores), scores.shape)
        return float(scores.max()), int(layer) + 1, int(head)

    @property
    def formed(self) -> bool:
        return self.best[0] >= PREFIX_MIN

    @property
    def change_numbers(self) -> dict[str, float]:
        """What the phase-change criterion (`text_change`) reads: the best prefix-matching score of
        a layer >= 1 head and the ICL score's fall in the window."""
        return {"best": self.best[0], "drop": self.window.drop}

    @property
    def changed(self) -> bool:
        return text_change(self.change_numbers)

    @property
    def icl_before(self) -> float:
        return float(self.curves["icl"][np.searchsorted(self.curves["steps"], self.window.start)])

    def figures(self) -> list[go.Figure]:
        c = self.curves
        curve = smooth(self.train_losses, 25)
        train = pd.DataFrame({"step": np.arange(1, len(curve) + 1), "loss (nats)": curve,
                              "curve": "training (smoothed over 25 steps)"})
        held = pd.DataFrame({"step": c["steps"], "loss (nats)": c["loss"], "curve": "held-out files"})
        behaviour = pd.concat([
            pd.DataFrame({"step": c["steps"], "nats": c["icl"], "measure": "ICL score (late minus early index)"}),
            pd.DataFrame({"step": c["steps"], "nats": -c["repeat_drop"], "measure": "loss on repeats minus first copy"}),
        ])
        return [
            log_lines(pd.concat([train.iloc[::5], held]), x="step", y="loss (nats)", group="curve",
                       title=f"{self.name}: loss over training"),
            log_lines(behaviour, x="step", y="nats", group="measure",
                       title=f"{self.name}: in-context learning over training (negative: context helps)"),
        ] + [log_lines(head_lines(c["head_steps"], c[key], key), x="step", y=key, group="head",
                        title=f"{self.name}: {key} per head") for key in ("prefix_matching", "previous_token", "copying")]

    def heads_table(self) -> pd.DataFrame:
        c = self.curves
        L, H = c["prefix_matching"].shape[1:]
        return pd.DataFrame([{"head": head_label(l, h), **{key: c[key][-1][l, h] for key in SCORES}}
                             for l in range(L) for h in range(H)]).set_index("head")

    def numbers(self) -> dict[str, Any]:
        c, f = self.curves, self.final
        best, layer, head = self.best
        return {
            "ih_text_loss": float(f["loss"][-1]), "ih_text_icl": float(f["icl"][-1]), "ih_text_best": best,
            "ih_text_head": head_label(layer, head), "ih_text_kcomp": float(c["k_composition"][-1][layer, head]),
            "ih_text_repeat": float(-f["repeat_drop"][-1]), "ih_text_prev_min": float(c["previous_token"][-1][0].min()),
            "ih_text_prev_max": float(c["previous_token"][-1][0].max()),
            "ih_text_copy_min": float(np.nanmin(c["copying"][-1])), "ih_text_copy_max": float(np.nanmax(c["copying"][-1])),
            "ih_text_drop": self.window.drop, "ih_text_start": self.window.start, "ih_text_end": self.window.end,
            "ih_text_before": self.icl_before, "ih_text_budget": self.budget, "ih_text_train_seconds": self.train_seconds,
            "ih_text_seconds": self.seconds, "ih_text_n": self.n_text, "ih_text_n_final": self.n_final,
            "ih_text_snapshots": len(c["steps"]), "ih_text_head_snapshots": len(c["head_steps"]),
            "ih_prefix_min": PREFIX_MIN,
        }

    def claims(self) -> list[claims.Claim]:
        p, w = self.profile, self.window
        best, layer, head = self.best
        before = self.curves["icl_units"][np.searchsorted(self.curves["steps"], w.start)]  # [window]
        # "before the phase change" presupposes one: without it the row is measured only
        spec, note = (TEXT_BEFORE, "") if self.changed else (
            measured_only(TEXT_BEFORE), "; the model has no phase change by the chapter's criterion, so there is "
                                         "no change to be before: measured only, not a reproduction")
        return [
            TEXT_CHANGE.measure(best, chapter=CHAPTER, profile=p, model=self.name, tested=self.change_numbers,
                                budget=self.budget, best=fmt(best), head=head_label(layer, head), drop=fmt(w.drop),
                                start=w.start, end=w.end),
            spec.measure(self.icl_before, chapter=CHAPTER, profile=p, model=self.name,
                         interval=claims.bootstrap(before, units="held-out windows"), start=w.start, note=note),
            TEXT_POST.measure(float(self.final["icl"][-1]), chapter=CHAPTER, profile=p, model=self.name,
                              interval=claims.bootstrap(self.final["icl_units"][-1], units="held-out windows"),
                              early=self.early, late=self.late, n_ctx=self.n_ctx, n=self.n_final,
                              status="after a phase change" if self.changed else "no phase change by our criterion"),
        ]


def text_study(profile: str | None = None, *, name: str = TEXT_MODEL) -> TextStudy:
    """Train (first use) and measure the code model: every other snapshot's losses on `n_text`
    held-out windows (full 128), head scores at every fourth (prefix matching and copying on
    random tokens after `<|endoftext|>`, id 0), and the final model on `n_final` others (full 1024)."""
    profile = settings.profile(profile)
    model = zoo.load(name, profile, progress=False)  # builds the corpus and trains on first use
    meta, cfg = zoo.metadata(name, profile), zoo.config(name, profile)
    started = time.perf_counter()
    corpus = code_corpus.load(cfg.corpus)
    early, late = scaled_indices(cfg.n_ctx)
    n_text, n_final = settings.pick(profile, full=128, smoke=32), settings.pick(profile, full=1024, smoke=128)
    tokens = code_corpus.eval_tokens(cfg, n_text, corpus=corpus)
    trained = cfg.train.steps * cfg.batch_size * cfg.n_ctx
    config = pd.DataFrame([{
        "files (train / held out)": f"{len(corpus.train_files)} / {len(corpus.held_out_files)}",
        "tokens (train / held out)": f"{len(corpus.train):,} / {len(corpus.held_out):,}",
        "BPE vocabulary": cfg.corpus.vocab_size, "d_model": cfg.arch.d_model, "heads": cfg.arch.n_heads,
        "context": cfg.n_ctx, "batch": cfg.batch_size, "steps": cfg.train.steps, "lr": cfg.train.lr,
        "tokens trained on": trained, "train seconds": meta["train_seconds"],
    }], index=[name]).T
    sample = "|".join(model.tokenizer.decode([t]) for t in tokens[0, :64].tolist())
    steps = zoo.snapshots(name, profile)
    loss_steps = sorted(set(steps[::2]) | {steps[-1]})  # every other snapshot, and the last
    head_steps = sorted(set(steps[::4]) | {steps[-1]})
    curves = snapshot_measurements(name, tokens, profile=profile, early=early, late=late, half_width=HALF_WIDTH,
                                   steps=loss_steps, head_steps=head_steps, bos=0)
    final = snapshot_measurements(name, code_corpus.eval_tokens(cfg, n_final, seed=7, corpus=corpus), profile=profile,
                                  early=early, late=late, half_width=HALF_WIDTH, steps=[steps[-1]], head_steps=[], bos=0)
    return TextStudy(
        profile=profile, name=name, config=config, sample=sample, curves=curves, final=final,
        train_losses=np.asarray(meta["losses"], dtype=np.float64), n_text=n_text, n_final=n_final, n_ctx=cfg.n_ctx,
        early=early, late=late, budget=f"{cfg.train.steps} steps, {trained / 1e6:.1f}M tokens",
        train_seconds=float(meta["train_seconds"]), seconds=time.perf_counter() - started,
    )

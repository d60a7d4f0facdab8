"""Every training snapshot of a zoo model, measured: the per-token losses, ICL scores and head
scores the chapter's studies read.

  snapshot_models        a zoo model after a number of training steps, fused and hooked
  head_scores            prefix matching, copying, previous token and K-composition of every head
  repeat_loss_drop       the loss a model saves on the later copies of repeated random tokens
  snapshot_measurements  loss by index, ICL score, repeat drop and head scores of every snapshot
                         (the text-trained model's study)
  markov_run             the same of a Markov-chain model, kept per held-out chain (`MarkovRun`)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from optim_hunter import zoo
from optim_hunter.analysis import heads
from optim_hunter.chapters.induction_heads.icl_metrics import (
    HALF_WIDTH,
    PhaseWindow,
    Steps,
    icl_score,
    phase_change_window,
    token_losses,
)
from optim_hunter.core.hooks import HookedModel
from optim_hunter.core.losses import next_token_losses

SCORES = ("prefix_matching", "copying", "previous_token", "k_composition")  # what `head_scores` returns


# --- head scores on a Markov-chain model ---------------------------------------------------------


def head_scores(
    model: HookedModel, data: Int[Tensor, "batch pos"], *, repeats: int = 3, batch: int = 10, bos: int | None = None,
) -> dict[str, np.ndarray]:
    """Prefix matching, copying, previous token and K-composition scores [layer, head]. The random
    sequences are 25 distinct tokens (every token once for a smaller vocabulary), after `bos` if
    given (a text model's BOS token; None for the Markov-chain models, which have none)."""
    length = min(25, model.cfg.d_vocab - (bos is not None))
    repeats = max(2, min(repeats, (model.cfg.n_ctx - (bos is not None)) // length))
    prefix = heads.prefix_matching(model, length=length, repeats=repeats, batch=batch, bos=bos)
    copy = heads.copying(model, length=length, batch=batch, bos=bos)
    prev = heads.previous_token(model, data)
    kcomp = heads.k_composition_trace(model, prev)
    return {"prefix_matching": prefix, "copying": copy, "previous_token": prev, "k_composition": kcomp}


# --- every snapshot of a zoo model ---------------------------------------------------------------


def snapshot_models(name: str, step: int, profile: str | None, *, hooked: bool = True) -> tuple[Any, Any]:
    """Zoo model `name` after `step` training steps, from one read of its snapshot: the fused,
    unhooked module (`transformer.LM`: fast losses) and, with `hooked`, its TransformerLens bridge
    (None without). The one place the chapter builds models from snapshots."""
    family, cfg = zoo.family(name), zoo.config(name, profile)
    state = zoo.snapshot_state(name, step, profile)
    fused = family.fused(state, cfg).eval()
    bridge = family.hooked(state, cfg, f"{name}@{step}").eval() if hooked else None
    return fused, bridge


def repeat_loss_drop(
    model: Callable[[Tensor], Tensor], d_vocab: int, *, length: int = 25, repeats: int = 2, batch: int = 10, bos: int | None = None,
    seed: int = 0,
) -> float:
    """Mean loss on the first copy of random token sequences minus the mean loss on the later
    copies (nats; positive when the model predicts a repeat from its first occurrence, the
    behaviour induction heads implement). `model(tokens)` must return logits."""
    tokens = heads.repeated_random_tokens(d_vocab, length=length, repeats=repeats, batch=batch, bos=bos, seed=seed)
    with torch.no_grad():
        losses = token_losses(model(tokens), tokens)  # index i predicts token i + 1
    start = 0 if bos is None else 1  # losses[:, start + j] predicts position j + 1 of the first copy
    first = losses[:, start : start + length - 1]  # positions 1.. of the first copy
    later = losses[:, start + length :]  # positions 1.. of the second copy, then every later token
    return float(first.mean() - later.mean())


def snapshot_measurements(
    name: str, tokens: Int[Tensor, "batch pos"], *, profile: str | None = None, early: int, late: int,
    half_width: int = 0, steps: Sequence[int] | None = None, head_steps: Sequence[int] | None = None,
    head_data: Tensor | None = None, bos: int | None = None,
) -> dict[str, Any]:
    """Loss by index, mean loss, ICL score (and per sequence of `tokens`, "icl_units" [snapshot,
    sequence]) and repeated-sequence loss drop (64 sequences of 25 tokens, twice) of the snapshots
    of zoo model `name` at `steps` (default: every snapshot; fused forward on `tokens`), and
    `head_scores` [layer, head] at `head_steps` (default: `steps`; previous-token scores on
    `head_data`, default the first 16 of `tokens`). Works for any family built on
    `zoo.induction`'s model (`load_module`, `hooked`); the models come from `snapshot_models`."""
    cfg = zoo.config(name, profile)
    kept = zoo.snapshots(name, profile)
    steps = sorted(set(kept if steps is None else steps))
    head_steps = list(steps if head_steps is None else head_steps)
    missing = sorted(set(steps) - set(kept)) or sorted(set(head_steps) - set(steps))
    if missing:
        raise ValueError(f"{name}: steps {missing} are not among the snapshots measured (kept: {kept})")
    head_data = tokens[:16] if head_data is None else head_data
    by_index, units, repeat, scores = [], [], [], {}
    for step in steps:
        fused, bridge = snapshot_models(name, step, profile, hooked=step in head_steps)
        with torch.no_grad():  # in chunks: logits of many long windows are large
            losses = torch.cat([next_token_losses(fused(part), part) for part in tokens.split(128)]).numpy().astype(np.float64)
        by_index.append(losses.mean(0))
        units.append(icl_score(losses, early, late, half_width))
        length = min(25, cfg.arch.d_vocab - (bos is not None))
        repeat.append(repeat_loss_drop(fused, cfg.arch.d_vocab, length=length, batch=64, bos=bos))
        if bridge is not None:
            for key, value in head_scores(bridge, head_data, bos=bos).items():
                scores.setdefault(key, []).append(value)
    by_index = np.stack(by_index)
    return {
        "steps": np.asarray(steps), "by_index": by_index, "loss": by_index.mean(1),
        "icl": icl_score(by_index, early, late, half_width), "icl_units": np.stack(units),
        "repeat_drop": np.asarray(repeat),
        "head_steps": np.asarray(sorted(head_steps)), **{k: np.stack(v) for k, v in scores.items()},
    }


# --- the Markov-chain models: every snapshot ------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class MarkovRun:
    """Every snapshot of one Markov-chain model, measured on the same held-out chains."""

    name: str
    n_layers: int
    smeared: bool
    steps: np.ndarray  # [snapshot]
    by_index: np.ndarray  # [snapshot, index]: mean loss over the held-out chains
    pca_vectors: np.ndarray  # [snapshot, token]: per-token losses of the first chains (for the PCA)
    scores: Mapping[str, np.ndarray]  # SCORES -> [snapshot, layer, head]
    ov_eigenvalues: np.ndarray  # [layer, head] of the final snapshot
    icl: np.ndarray  # [snapshot]
    window: PhaseWindow
    train_losses: np.ndarray  # [step]: the training loss of every step
    icl_chains: np.ndarray  # [snapshot, chain]: the ICL score of each held-out chain (mean: `icl`)
    loss_chains: np.ndarray  # [snapshot, chain]: each chain's mean loss over its indices (mean: `loss`)
    final_losses: np.ndarray  # [chain, index]: the last snapshot's per-token losses (mean: `by_index[-1]`)
    head_steps: np.ndarray  # [head snapshot]: the snapshots `scores` are measured at (the last is the final one)

    @property
    def loss(self) -> np.ndarray:
        return self.by_index.mean(1)

    @property
    def final_prefix(self) -> np.ndarray:
        return self.scores["prefix_matching"][-1]


def head_grid(steps: Steps, every: int) -> list[int]:
    """Every `every`-th of `steps` and the last one: the snapshots whose heads are scored."""
    steps = [int(s) for s in steps]
    return sorted(set(steps[::max(1, every)]) | {steps[-1]})


def markov_run(name: str, profile: str, tokens: Tensor, n_pca: int, early: int, late: int,
                head_every: int = 1) -> MarkovRun:
    """Every snapshot of zoo model `name` on `tokens`; head scores at every `head_every`-th
    snapshot and the last (building the hooked model is most of a snapshot's cost)."""
    cfg = zoo.config(name, profile)
    steps = zoo.snapshots(name, profile)
    scored = set(head_grid(steps, head_every))
    by_index, pca_rows, scores, bridge = [], [], {k: [] for k in SCORES}, None
    chains, chain_loss = [], []
    for step in steps:
        fused, bridge = snapshot_models(name, step, profile, hooked=step in scored)
        with torch.no_grad():
            losses = next_token_losses(fused(tokens), tokens).numpy().astype(np.float64)  # float64: the per-chain values
        by_index.append(losses.mean(0))  # ... average to these to rounding
        chains.append(icl_score(losses, early, late, HALF_WIDTH))
        chain_loss.append(losses.mean(1))
        pca_rows.append(losses[:n_pca].reshape(-1))
        if bridge is not None:
            for key, value in head_scores(bridge, tokens[:16]).items():
                scores[key].append(value)
    by_index = np.stack(by_index)
    icl = icl_score(by_index, early, late, HALF_WIDTH)
    return MarkovRun(
        name=name, n_layers=cfg.arch.n_layers, smeared=cfg.smeared, steps=np.asarray(steps), by_index=by_index,
        pca_vectors=np.stack(pca_rows), scores={k: np.stack(v) for k, v in scores.items()},
        ov_eigenvalues=heads.ov_eigenvalue_score(bridge), icl=icl, window=phase_change_window(steps, icl),
        train_losses=np.asarray(zoo.metadata(name, profile)["losses"], dtype=np.float64),
        icl_chains=np.stack(chains), loss_chains=np.stack(chain_loss), final_losses=losses,
        head_steps=np.asarray(sorted(scored)),
    )

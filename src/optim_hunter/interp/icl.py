"""In-context-learning measurements of the induction-heads chapter (Olsson et al. 2022).

  loss by index     per-token loss [.., pos] where index i predicts token i+1 from i+1 tokens
  ICL score         loss at a late index minus loss at an early one (negative: later tokens are
                    predicted better, i.e. the model learns from its context); the indices scale
                    with the context (the seed's 500th and 50th of 512 tokens)
  d loss / d log i  derivative of the loss with respect to the log of the context length
  phase change      the window of training steps where the ICL score falls fastest per log step
  PCA               per-token-loss vectors of every snapshot of several models, one shared basis
  ablations         per head, full (the head's output zeroed) and pattern-preserving (the head's
                    output zeroed while every attention pattern is frozen to its clean value, so
                    the head only loses its effect through values, not through later heads' keys
                    and queries); attributed to the ICL score and to the before/after vector

Head scores (prefix matching, copying, previous token, K-composition) are `interp.heads`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter import hooks
from optim_hunter.interp import ablation, heads

SEED_EARLY, SEED_LATE, SEED_CONTEXT = 50, 500, 512  # Olsson et al.'s token indices and context


# --- ICL score and loss by index ------------------------------------------------------------------


def scaled_indices(n_ctx: int, early: int = SEED_EARLY, late: int = SEED_LATE, context: int = SEED_CONTEXT):
    """The seed's (early, late) token indices scaled to a context of `n_ctx` tokens, as indices
    into a per-token-loss array of length n_ctx - 1."""
    e = int(round(early / context * n_ctx))
    l = int(round(late / context * n_ctx))
    return max(0, min(e, n_ctx - 2)), max(0, min(l, n_ctx - 2))


def icl_score(
    loss_by_index: Float[np.ndarray, "... pos"], early: int, late: int, half_width: int = 0
) -> Float[np.ndarray, "..."]:
    """Mean loss over [late ± half_width] minus mean loss over [early ± half_width]."""
    loss = np.asarray(loss_by_index, dtype=np.float64)
    n = loss.shape[-1]

    def window(i: int) -> slice:
        return slice(max(0, i - half_width), min(n, i + half_width + 1))

    return loss[..., window(late)].mean(-1) - loss[..., window(early)].mean(-1)


def icl_sensitivity(
    loss_by_index: Float[np.ndarray, "... pos"], pairs: Sequence[tuple[int, int]], half_width: int = 0
) -> dict[tuple[int, int], np.ndarray]:
    """The ICL score for several (early, late) choices."""
    return {(e, l): icl_score(loss_by_index, e, l, half_width) for e, l in pairs}


def log_index_derivative(loss_by_index: Float[np.ndarray, "... pos"]) -> Float[np.ndarray, "... pos"]:
    """d loss / d log(context length), context length = index + 1 (second-order differences on
    the non-uniform log grid, as numpy.gradient)."""
    loss = np.asarray(loss_by_index, dtype=np.float64)
    x = np.log(np.arange(1, loss.shape[-1] + 1, dtype=np.float64))
    return np.gradient(loss, x, axis=-1)


def smooth(values: Sequence[float], width: int) -> np.ndarray:
    """Centred moving average (shrinking at the ends); width 1 returns the values."""
    v = np.asarray(values, dtype=np.float64)
    if width <= 1:
        return v.copy()
    half = width // 2
    return np.array([v[max(0, i - half) : i + half + 1].mean() for i in range(len(v))])


@dataclasses.dataclass(frozen=True)
class PhaseWindow:
    """Where the ICL score falls fastest per log training step."""

    start: int  # first step of the window
    end: int  # last step of the window
    peak: int  # step of the fastest fall
    peak_rate: float  # -d ICL / d log10(step) at the peak (nats per decade)
    drop: float  # ICL score at the window's start minus at its end (nats)
    total_drop: float  # over the whole run: ICL score at the first snapshot minus the last

    def contains(self, step: float) -> bool:
        return self.start <= step <= self.end


def phase_change_window(
    steps: Sequence[int], scores: Sequence[float], *, fraction: float = 0.5, smoothing: int = 5,
    min_step: int = 10,
) -> PhaseWindow:
    """The contiguous range of steps around the fastest fall of the (smoothed) ICL score per
    log10 step where the fall rate stays above `fraction` of its peak. Steps below `min_step`
    (the first few updates, where everything changes) are ignored."""
    steps_a = np.asarray(steps, dtype=np.float64)
    keep = steps_a >= min_step
    s, v = steps_a[keep], smooth(np.asarray(scores, dtype=np.float64)[keep], smoothing)
    if len(s) < 3:
        raise ValueError("need at least three snapshots at or after min_step")
    rate = -np.gradient(v, np.log10(s))
    peak = int(np.argmax(rate))
    lo = hi = peak
    while lo > 0 and rate[lo - 1] >= fraction * rate[peak]:
        lo -= 1
    while hi < len(s) - 1 and rate[hi + 1] >= fraction * rate[peak]:
        hi += 1
    raw = np.asarray(scores, dtype=np.float64)[keep]
    return PhaseWindow(
        start=int(s[lo]), end=int(s[hi]), peak=int(s[peak]), peak_rate=float(rate[peak]),
        drop=float(v[lo] - v[hi]), total_drop=float(raw[0] - raw[-1]),
    )


def crossing_step(steps: Sequence[int], values: Sequence[float], fraction: float = 0.5) -> int | None:
    """First step at which `values` reaches first + fraction * (max - first), or None if it never
    rises."""
    v = np.asarray(values, dtype=np.float64)
    top = v.max()
    if top <= v[0]:
        return None
    level = v[0] + fraction * (top - v[0])
    return int(np.asarray(steps)[int(np.argmax(v >= level))])


# --- PCA of per-token losses ---------------------------------------------------------------------


def per_token_loss_pca(
    vectors: Mapping[str, Float[np.ndarray, "snapshot token"]], n_components: int = 2
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Project every model's per-token-loss vectors (one row per snapshot) onto the top principal
    components of all rows together (centred on their joint mean). Returns the projections per
    model [snapshot, component] and the explained-variance ratios."""
    names = list(vectors)
    stacked = np.concatenate([np.asarray(vectors[n], dtype=np.float64) for n in names])
    centred = stacked - stacked.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[:n_components]
    # Fix the sign: the first component points where the mean loss falls (the last rows' side).
    for c in range(len(basis)):
        if basis[c].sum() > 0:
            basis[c] = -basis[c]
    explained = (sv**2 / (sv**2).sum())[:n_components]
    out, offset = {}, 0
    for n in names:
        rows = len(vectors[n])
        out[n] = centred[offset : offset + rows] @ basis.T
        offset += rows
    return out, explained


# --- losses of a hooked model, ablations ---------------------------------------------------------


def token_losses(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]) -> np.ndarray:
    """Per-token cross-entropy [batch, pos-1] (predicting token i+1 at index i)."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1), reduction="none"
    ).view(tokens.shape[0], -1).detach().numpy()


def _pattern_names(model: Any) -> list[str]:
    return [hooks.pattern(l) for l in range(model.cfg.n_layers)]


@contextlib.contextmanager
def frozen_patterns(model: Any, patterns: Mapping[str, Tensor]) -> Iterator[None]:
    """Every attention pattern replaced by the given (clean) one."""
    hooks = [(name, lambda act, hook, value=value: value.to(act)) for name, value in patterns.items()]
    with model.hooks(fwd_hooks=hooks):
        yield


@torch.no_grad()
def clean_patterns(model: Any, tokens: Tensor) -> dict[str, Tensor]:
    names = set(_pattern_names(model))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {n: cache[n].clone() for n in _pattern_names(model)}


@torch.no_grad()
def ablate_heads(
    model: Any, tokens: Int[Tensor, "batch pos"], pairs: Sequence[tuple[int, int]], *, preserve_patterns: bool,
    patterns: Mapping[str, Tensor] | None = None,
) -> np.ndarray:
    """Per-token losses [batch, pos-1] with the heads `pairs` = [(layer, head), ...] zero-ablated
    (their `hook_z`); with `preserve_patterns`, every attention pattern is frozen to its clean
    value."""
    chosen: dict[str, list[int]] = {}
    for layer, head in pairs:
        chosen.setdefault(hooks.z(layer), []).append(head)
    with contextlib.ExitStack() as stack:
        if preserve_patterns:
            stack.enter_context(frozen_patterns(model, patterns or clean_patterns(model, tokens)))
        stack.enter_context(ablation.ablated(model, list(chosen), mode="zero", heads=chosen))
        logits = model(tokens)
    return token_losses(logits, tokens)


def ablated_losses(
    model: Any, tokens: Int[Tensor, "batch pos"], layer: int, head: int, *, preserve_patterns: bool,
    patterns: Mapping[str, Tensor] | None = None,
) -> np.ndarray:
    """`ablate_heads` for the single head (layer, head)."""
    return ablate_heads(model, tokens, [(layer, head)], preserve_patterns=preserve_patterns, patterns=patterns)


@dataclasses.dataclass
class HeadAblation:
    """Per-head ablation effects [layer, head]."""

    clean_icl: float
    icl_full: np.ndarray  # ICL score with the head ablated (full)
    icl_preserved: np.ndarray  # ... pattern-preserving
    loss_full: np.ndarray  # mean loss change, full ablation
    loss_preserved: np.ndarray
    delta_full: np.ndarray  # [layer, head, batch * (pos-1)] per-token loss change, full
    delta_preserved: np.ndarray


@torch.no_grad()
def head_ablations(model: Any, tokens: Tensor, early: int, late: int, half_width: int = 0) -> HeadAblation:
    """Full and pattern-preserving zero ablation of every head, one at a time."""
    clean = token_losses(model(tokens), tokens)
    patterns = clean_patterns(model, tokens)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    shape = (n_layers, n_heads)
    out = {k: np.zeros(shape) for k in ("icl_full", "icl_preserved", "loss_full", "loss_preserved")}
    deltas = {k: np.zeros(shape + (clean.size,)) for k in ("full", "preserved")}
    for l in range(n_layers):
        for h in range(n_heads):
            for kind, preserve in (("full", False), ("preserved", True)):
                losses = ablated_losses(model, tokens, l, h, preserve_patterns=preserve, patterns=patterns)
                out[f"icl_{kind}"][l, h] = float(icl_score(losses.mean(0), early, late, half_width))
                out[f"loss_{kind}"][l, h] = float(losses.mean() - clean.mean())
                deltas[kind][l, h] = (losses - clean).reshape(-1)
    return HeadAblation(
        clean_icl=float(icl_score(clean.mean(0), early, late, half_width)),
        delta_full=deltas["full"], delta_preserved=deltas["preserved"], **out,
    )


def before_after_attribution(
    delta: Float[np.ndarray, "... token"], before: Float[np.ndarray, " token"], after: Float[np.ndarray, " token"]
) -> np.ndarray:
    """How much of the before->after per-token-loss change an ablation undoes: the projection
    coefficient of the ablation's per-token change on (before - after). 1 means the ablation
    returns the model exactly to the 'before' losses along that direction; 0 means unrelated."""
    direction = np.asarray(before, dtype=np.float64) - np.asarray(after, dtype=np.float64)
    return np.asarray(delta, dtype=np.float64) @ direction / float(direction @ direction)


# --- head scores on a Markov-chain model ---------------------------------------------------------


def head_scores(
    model: Any, data: Int[Tensor, "batch pos"], *, repeats: int = 3, batch: int = 10, bos: int | None = None,
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


def repeat_loss_drop(
    model: Any, d_vocab: int, *, length: int = 25, repeats: int = 2, batch: int = 10, bos: int | None = None,
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
    """Loss by index, mean loss, ICL score and repeated-sequence loss drop (64 sequences of 25
    tokens, twice) of the snapshots of zoo model `name` at `steps` (default: every snapshot;
    fused forward on `tokens`), and
    `head_scores` [layer, head] at `head_steps` (default: `steps`; previous-token scores on
    `head_data`, default the first 16 of `tokens`). Works for any family built on
    `zoo.induction`'s model (`load_module`, `hooked`)."""
    from optim_hunter import zoo
    from optim_hunter.zoo import induction

    module, cfg = zoo.family(name), zoo.config(name, profile)
    kept = zoo.snapshots(name, profile)
    steps = sorted(set(kept if steps is None else steps))
    head_steps = list(steps if head_steps is None else head_steps)
    missing = sorted(set(steps) - set(kept)) or sorted(set(head_steps) - set(steps))
    if missing:
        raise ValueError(f"{name}: steps {missing} are not among the snapshots measured (kept: {kept})")
    head_data = tokens[:16] if head_data is None else head_data
    by_index, repeat, scores = [], [], {}
    for step in steps:
        state = induction.snapshot_state(name, step, profile)
        fused = induction.load_module(state, cfg)
        with torch.no_grad():  # in chunks: logits of many long windows are large
            losses = [induction.per_token_loss(fused, part) for part in tokens.split(128)]
        by_index.append(torch.cat(losses).mean(0).numpy())
        length = min(25, cfg.arch.d_vocab - (bos is not None))
        repeat.append(repeat_loss_drop(fused, cfg.arch.d_vocab, length=length, batch=64, bos=bos))
        if step in head_steps:
            bridge = module.hooked(state, cfg, f"{name}@{step}")
            for key, value in head_scores(bridge, head_data, bos=bos).items():
                scores.setdefault(key, []).append(value)
    by_index = np.stack(by_index)
    return {
        "steps": np.asarray(steps), "by_index": by_index, "loss": by_index.mean(1),
        "icl": icl_score(by_index, early, late, half_width), "repeat_drop": np.asarray(repeat),
        "head_steps": np.asarray(sorted(head_steps)), **{k: np.stack(v) for k, v in scores.items()},
    }

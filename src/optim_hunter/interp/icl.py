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

  idealised heads  a head's attention pattern replaced by an ideal one (exact previous token;
                    uniform over induction targets), scored by the share of the head's ablation
                    loss it recovers (Redwood's replication in the seed)

Head scores (prefix matching, copying, previous token, K-composition) are `interp.heads`.

The chapter's analyses, each one call that loads its models from the zoo (by name and profile) and
returns a result object with its tables, figures and claim rows (`claims()`):

  phase_change_study   every snapshot of the five Markov-chain models: loss by index, ICL score,
                       head scores, windows, PCA trajectories, and the claims they decide
  ablation_study       ablations of the final 2-layer model and across its window, idealised heads
  text_study           the 2-layer model trained on Python source

The claims are declared below (`claims.declare`), each with its criterion in words and the test
that implements it. A number that averages held-out chains (windows, sequences) or heads is decided
on a 95% bootstrap interval over them (`bootstrap_means`, `resampled`: the per-unit values are kept
on the result objects); a criterion with two conditions becomes one number where it can (the
phase-change margin, `change_margin`). A property of one training run (a window, a peak step, a
turn, a count of heads) is tested on its value, with the reason it has no interval; such a test
reads the numbers the analysis passes as `tested=` (`ClaimSpec.measure`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter import claims, hooks, settings, verdicts
from optim_hunter.hooks import HookedModel
from optim_hunter.interp import ablation, heads

SEED_EARLY, SEED_LATE, SEED_CONTEXT = 50, 500, 512  # Olsson et al.'s token indices and context
CHAPTER, SOURCE = "induction_heads", "003"
MARKOV_MODELS = ("attn-only-1l", "attn-only-2l", "attn-only-3l", "smeared-1l", "smeared-2l")
FOCUS = "attn-only-2l"  # the model the chapter looks at closely
TEXT_MODEL = "attn-only-2l-code"
HALF_WIDTH = 2  # the ICL score averages the loss over index +- 2 (5 indices) at each end
DROP = 0.05  # nats: a phase change is a fall of the ICL score of at least this much in its window ...
# ... that ends beyond what order-blind counting (the unigram predictor) reaches
PREFIX_MIN = 0.3  # an induction head: prefix-matching score at least this (chance is ~0.1 here)
SCORES = ("prefix_matching", "copying", "previous_token", "k_composition")

# one value per training snapshot, as a list or an array
Steps = Sequence[int] | Int[np.ndarray, " snapshot"]
Curve = Sequence[float] | Float[np.ndarray, " snapshot"]


# --- ICL score and loss by index ------------------------------------------------------------------


def scaled_indices(n_ctx: int, early: int = SEED_EARLY, late: int = SEED_LATE, context: int = SEED_CONTEXT):
    """The seed's (early, late) token indices scaled to a context of `n_ctx` tokens, as indices
    into a per-token-loss array of length n_ctx - 1."""
    e = int(round(early / context * n_ctx))
    l = int(round(late / context * n_ctx))
    return max(0, min(e, n_ctx - 2)), max(0, min(l, n_ctx - 2))


def icl_score(
    loss_by_index: Float[np.ndarray, "... index"], early: int, late: int, half_width: int = 0
) -> Float[np.ndarray, "..."] | float:
    """Mean loss over [late ± half_width] minus mean loss over [early ± half_width] (a numpy float
    for one curve)."""
    return window_mean(loss_by_index, late, half_width) - window_mean(loss_by_index, early, half_width)


def window_mean(
    loss_by_index: Float[np.ndarray, "... index"], index: int, half_width: int = 0
) -> Float[np.ndarray, "..."] | float:
    """Mean over indices [index - half_width, index + half_width] (clipped to the array; a numpy
    float for one curve)."""
    loss = np.asarray(loss_by_index, dtype=np.float64)
    n = loss.shape[-1]
    return loss[..., max(0, index - half_width) : min(n, index + half_width + 1)].mean(-1)


def icl_sensitivity(
    loss_by_index: Float[np.ndarray, "... index"], pairs: Sequence[tuple[int, int]], half_width: int = 0
) -> dict[tuple[int, int], Float[np.ndarray, "..."] | float]:
    """The ICL score for several (early, late) choices."""
    return {(e, l): icl_score(loss_by_index, e, l, half_width) for e, l in pairs}


def log_index_derivative(loss_by_index: Float[np.ndarray, "... index"]) -> Float[np.ndarray, "... index"]:
    """d loss / d log(context length), context length = index + 1 (second-order differences on
    the non-uniform log grid, as numpy.gradient)."""
    loss = np.asarray(loss_by_index, dtype=np.float64)
    x = np.log(np.arange(1, loss.shape[-1] + 1, dtype=np.float64))
    return np.gradient(loss, x, axis=-1)


def smooth(values: Sequence[float] | Float[np.ndarray, "_ ..."], width: int) -> np.ndarray:
    """Centred moving average along the first axis (shrinking at the ends); width 1 returns the
    values. Linear: the smoothed mean of several curves is the mean of their smoothed curves."""
    v = np.asarray(values, dtype=np.float64)
    if width <= 1 or len(v) == 0:
        return v.copy()
    half = width // 2
    return np.stack([v[max(0, i - half) : i + half + 1].mean(0) for i in range(len(v))])


@dataclasses.dataclass(frozen=True)
class PhaseWindow:
    """Where the ICL score falls fastest per log training step."""

    start: int  # first step of the window
    end: int  # last step of the window
    peak: int  # step of the fastest fall
    peak_rate: float  # -d ICL / d log10(step) at the peak (nats per decade)
    drop: float  # ICL score at the window's start minus at its end (nats)
    total_drop: float  # over the whole run: ICL score at the first snapshot minus the last

    def contains(self, step: int) -> bool:
        return self.start <= step <= self.end


def phase_change_window(
    steps: Steps, scores: Curve, *, fraction: float = 0.5, smoothing: int = 5,
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


def window_drops(
    steps: Steps, unit_scores: Float[np.ndarray, "snapshot unit"], window: PhaseWindow, *, smoothing: int = 5,
    min_step: int = 10,
) -> Float[np.ndarray, " unit"]:
    """The fall of each unit's (held-out chain's) ICL score across `window`, smoothed as
    `phase_change_window` smooths the mean score: their mean is `window.drop` (smoothing is linear).
    The window is the one found on the mean curve, held fixed."""
    s = np.asarray(steps)
    keep = s >= min_step
    kept = s[keep]
    v = smooth(np.asarray(unit_scores, dtype=np.float64)[keep], smoothing)
    lo, hi = int(np.searchsorted(kept, window.start)), int(np.searchsorted(kept, window.end))
    return v[lo] - v[hi]


def resampled(n: int, statistic: Callable[[Int[np.ndarray, " unit"]], float], units: str) -> claims.Interval:
    """`claims.bootstrap_units` for a statistic of one resample's unit indices at a time (`index`:
    a resample of 0..n-1, all quantities of one unit drawn together, e.g. a head with its whole
    trajectory). `statistic(np.arange(n))` is the point."""
    return claims.bootstrap_units(
        n, lambda idx: np.array([statistic(i) for i in idx.reshape(-1, n)]).reshape(idx.shape[:-1]), units)


def bootstrap_means(
    rows: Float[np.ndarray, "*quantity unit"], statistic: Callable[[Float[np.ndarray, " quantity"]], float], units: str,
) -> claims.Interval:
    """95% bootstrap interval of `statistic(means)`, `means` the mean over units of each row of
    `rows` [quantity, unit] (paired: the units are resampled together for every row). A ratio of
    means, a difference, the smallest of several margins: any function of the means."""
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    return resampled(rows.shape[1], lambda i: statistic(rows[:, i].mean(1)), units)


def ratio(num: float, den: float, *, undefined: float = -1.0) -> float:
    """num / den where den > 0, else `undefined`: a share whose denominator has the wrong sign has
    no meaning, and a resample where that happens counts as a value the claim's region excludes."""
    return float(num / den) if den > 0 else undefined


def crossing_step(steps: Steps, values: Curve, fraction: float = 0.5) -> int | None:
    """First step at which `values` reaches first + fraction * (max - first), or None if it never
    rises."""
    v = np.asarray(values, dtype=np.float64)
    top = v.max()
    if top <= v[0]:
        return None
    level = v[0] + fraction * (top - v[0])
    return int(np.asarray(steps)[int(np.argmax(v >= level))])


def fall_rate(steps: Steps, values: Curve, start: float | int, end: float | int) -> float:
    """Fall of `values` per decade of steps between `start` and `end` (linear interpolation in
    log10 step): (v(start) - v(end)) / log10(end / start)."""
    x = np.log10(np.asarray(steps, dtype=np.float64))
    v = np.asarray(values, dtype=np.float64)
    a, b = np.log10(start), np.log10(end)
    if b <= a:
        raise ValueError(f"need start < end, got {start} and {end}")
    return float((np.interp(a, x, v) - np.interp(b, x, v)) / (b - a))


def first_divergence(
    steps: Steps, reference: Curve, values: Curve, *, margin: float, min_step: int = 10
) -> int | None:
    """First step (at or after `min_step`) at which `values` lies at least `margin` below
    `reference` (two curves on the same steps), or None."""
    s = np.asarray(steps)
    gap = np.asarray(reference, dtype=np.float64) - np.asarray(values, dtype=np.float64)
    hits = np.nonzero((s >= min_step) & (gap >= margin))[0]
    return int(s[hits[0]]) if len(hits) else None


def nonconvex_steps(
    steps: Steps, losses: Curve, *, tolerance: float = 0.1, min_step: int = 10
) -> list[int]:
    """Steps where a loss curve stops being convex in log step: with r_i the fall per decade
    between snapshots i-1 and i (steps >= `min_step`), the snapshot between two intervals where
    r_i - r_(i-1) exceeds `tolerance` times the largest fall rate (the fall steepens)."""
    s = np.asarray(steps, dtype=np.float64)
    keep = s >= min_step
    s, v = s[keep], np.asarray(losses, dtype=np.float64)[keep]
    if len(s) < 3:
        return []
    rate = (v[:-1] - v[1:]) / np.diff(np.log10(s))  # interval i -> i+1
    top = rate.max()
    if top <= 0:
        return []
    steeper = np.nonzero(np.diff(rate) > tolerance * top)[0]  # interval k+1 steeper than k
    return [int(s[k + 1]) for k in steeper]


def trajectory_turns(
    points: Float[np.ndarray, "snapshot col"], steps: Steps, *, chord: int = 3,
    min_chord: float = 0.1, min_step: int = 10,
) -> tuple[np.ndarray, int | None, float]:
    """How sharply a trajectory turns at each snapshot: the angle (degrees) between the chords
    P[i] - P[i - chord] and P[i + chord] - P[i], only where both chords are at least `min_chord`
    times the trajectory's longest chord (where it moves at all) and the step is >= `min_step`
    (NaN elsewhere). Returns the angles, the step of the largest turn (None if none) and that
    angle (0 if none)."""
    p = np.asarray(points, dtype=np.float64)
    s = np.asarray(steps)
    n = len(p)
    angles = np.full(n, np.nan)
    if n < 2 * chord + 1:
        return angles, None, 0.0
    back = p[chord : n - chord] - p[: n - 2 * chord]
    ahead = p[2 * chord :] - p[chord : n - chord]
    lb, la = np.linalg.norm(back, axis=1), np.linalg.norm(ahead, axis=1)
    longest = max(lb.max(), la.max())
    ok = (lb >= min_chord * longest) & (la >= min_chord * longest) & (s[chord : n - chord] >= min_step)
    ok &= longest > 0
    cos = np.einsum("ij,ij->i", back, ahead) / np.maximum(lb * la, 1e-300)
    angles[chord : n - chord] = np.where(ok, np.degrees(np.arccos(np.clip(cos, -1, 1))), np.nan)
    if not np.isfinite(angles).any():
        return angles, None, 0.0
    top = int(np.nanargmax(angles))
    return angles, int(s[top]), float(angles[top])


# --- PCA of per-token losses ---------------------------------------------------------------------


def per_token_loss_pca(
    vectors: Mapping[str, Float[np.ndarray, "snapshot feature"]], n_components: int = 2
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


def token_losses(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> np.ndarray:
    """Per-token cross-entropy [batch, pos-1] (predicting token i+1 at index i)."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1), reduction="none"
    ).view(tokens.shape[0], -1).detach().numpy()


def _pattern_names(model: HookedModel) -> list[str]:
    return [hooks.pattern(l) for l in range(model.cfg.n_layers)]


@contextlib.contextmanager
def frozen_patterns(model: HookedModel, patterns: Mapping[str, Tensor]) -> Iterator[None]:
    """Every attention pattern replaced by the given (clean) one."""
    hooks = [(name, lambda act, hook, value=value: value.to(act)) for name, value in patterns.items()]
    with model.hooks(fwd_hooks=hooks):
        yield


@torch.no_grad()
def clean_patterns(model: HookedModel, tokens: Tensor) -> dict[str, Tensor]:
    names = set(_pattern_names(model))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {n: cache[n].clone() for n in _pattern_names(model)}


@torch.no_grad()
def ablate_heads(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], pairs: Sequence[tuple[int, int]], *, preserve_patterns: bool,
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
    model: HookedModel, tokens: Int[Tensor, "batch pos"], layer: int, head: int, *, preserve_patterns: bool,
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
    clean_losses: np.ndarray  # [batch, pos-1] per-token losses of the model itself

    def chain_icl(self, early: int, late: int, half_width: int = 0, *, head: tuple[int, int] | None = None,
                  kind: str = "full") -> np.ndarray:
        """ICL score per sequence [batch], clean or with `head` = (layer, head) ablated (`kind`):
        the per-unit values whose mean is `clean_icl` / `icl_{kind}[head]`."""
        losses = self.clean_losses
        if head is not None:
            losses = losses + getattr(self, f"delta_{kind}")[head].reshape(losses.shape)
        return np.asarray(icl_score(losses, early, late, half_width))


@torch.no_grad()
def head_ablations(model: HookedModel, tokens: Tensor, early: int, late: int, half_width: int = 0) -> HeadAblation:
    """Full and pattern-preserving zero ablation of every head, one at a time (losses in float64, so
    that the per-sequence values average to the numbers to rounding)."""
    clean = token_losses(model(tokens), tokens).astype(np.float64)
    patterns = clean_patterns(model, tokens)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    shape = (n_layers, n_heads)
    out = {k: np.zeros(shape) for k in ("icl_full", "icl_preserved", "loss_full", "loss_preserved")}
    deltas = {k: np.zeros(shape + (clean.size,)) for k in ("full", "preserved")}
    for l in range(n_layers):
        for h in range(n_heads):
            for kind, preserve in (("full", False), ("preserved", True)):
                losses = ablated_losses(model, tokens, l, h, preserve_patterns=preserve, patterns=patterns)
                losses = losses.astype(np.float64)
                out[f"icl_{kind}"][l, h] = float(icl_score(losses.mean(0), early, late, half_width))
                out[f"loss_{kind}"][l, h] = float(losses.mean() - clean.mean())
                deltas[kind][l, h] = (losses - clean).reshape(-1)
    return HeadAblation(
        clean_icl=float(icl_score(clean.mean(0), early, late, half_width)),
        delta_full=deltas["full"], delta_preserved=deltas["preserved"], clean_losses=clean, **out,
    )


def before_after_attribution(
    delta: Float[np.ndarray, "... feature"], before: Float[np.ndarray, " feature"], after: Float[np.ndarray, " feature"]
) -> Float[np.ndarray, "..."] | float:
    """How much of the before->after per-token-loss change an ablation undoes: the projection
    coefficient of the ablation's per-token change on (before - after). 1 means the ablation
    returns the model exactly to the 'before' losses along that direction; 0 means unrelated."""
    direction = np.asarray(before, dtype=np.float64) - np.asarray(after, dtype=np.float64)
    return np.asarray(delta, dtype=np.float64) @ direction / float(direction @ direction)


# --- idealised attention patterns (the seed's Redwood replication) -------------------------------


def idealised_pattern(tokens: Int[Tensor, "batch pos"], kind: str) -> Float[Tensor, "batch query_pos key_pos"]:
    """An ideal attention pattern [batch, query, key] for one head, by `kind`:

    - `previous`: exactly the previous token (the first token attends to itself);
    - `induction`: uniform over the induction targets (the tokens that followed earlier
      occurrences of the current token); the first token where there is none;
    - `induction2`: the same, with targets whose two-token prefix also matches
      ([A][B][C] ... [A][B] -> [C]) weighted twice."""
    batch, pos = tokens.shape
    if kind == "previous":
        out = torch.zeros(batch, pos, pos)
        out[:, 0, 0] = 1.0
        out[:, torch.arange(1, pos), torch.arange(pos - 1)] = 1.0
        return out
    if kind not in ("induction", "induction2"):
        raise ValueError(f"unknown pattern {kind!r}: previous, induction or induction2")
    rows = []
    for seq in tokens:
        target = heads.induction_targets(seq)  # [q, k]: token k-1 equals token q, k-1 < q
        if kind == "induction2":
            second = torch.zeros_like(target)  # also token k-2 equals token q-1
            same = (seq[:, None] == seq[None, :]).float()  # [q-1, k-2] after shifting
            second[1:, 2:] = same[:-1, :-2]
            target = target + target * second
        none = target.sum(-1) == 0
        target[none, 0] = 1.0
        rows.append(target / target.sum(-1, keepdim=True))
    return torch.stack(rows)


@torch.no_grad()
def patched_pattern_losses(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], layer: int, head: int, pattern: Float[Tensor, "batch query_pos key_pos"]
) -> np.ndarray:
    """Per-token losses [batch, pos-1] with head (layer, head)'s attention pattern replaced."""

    def replace(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        act[:, head] = pattern.to(act)
        return act

    with model.hooks(fwd_hooks=[(hooks.pattern(layer), replace)]):
        logits = model(tokens)
    return token_losses(logits, tokens)


@torch.no_grad()
def recovery_losses(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], layer: int, head: int, pattern: Float[Tensor, "batch query_pos key_pos"]
) -> Float[np.ndarray, "3 batch"]:
    """Mean loss of each sequence [clean / head zero-ablated (`hook_z`) / head's pattern idealised,
    batch]: what `pattern_recovery` compares, per sequence."""
    clean = token_losses(model(tokens), tokens).astype(np.float64).mean(1)
    ablated = ablated_losses(model, tokens, layer, head, preserve_patterns=False).astype(np.float64).mean(1)
    ideal = patched_pattern_losses(model, tokens, layer, head, pattern).astype(np.float64).mean(1)
    return np.stack([clean, ablated, ideal])


def pattern_recovery(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], layer: int, head: int, pattern: Float[Tensor, "batch query_pos key_pos"]
) -> float:
    """The share of the head's ablation loss that an idealised pattern recovers:
    (L_ablated - L_idealised) / (L_ablated - L_clean), mean losses, zero ablation of `hook_z`
    (1: the ideal pattern does everything the head's own does; 0: no better than no head)."""
    clean, ablated, ideal = recovery_losses(model, tokens, layer, head, pattern).mean(1)
    return float((ablated - ideal) / (ablated - clean))


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


def _snapshot_models(name: str, step: int, profile: str | None, *, hooked: bool = True) -> tuple[Any, Any]:
    """Zoo model `name` after `step` training steps, from one read of its snapshot: the fused,
    unhooked module (`transformer.LM`: fast losses) and, with `hooked`, its TransformerLens bridge
    (None without). The one place this module builds models from snapshots."""
    from optim_hunter import zoo

    family, cfg = zoo.family(name), zoo.config(name, profile)
    state = zoo.snapshot_state(name, step, profile)
    fused = family.fused(state, cfg).eval()
    bridge = family.hooked(state, cfg, f"{name}@{step}").eval() if hooked else None
    return fused, bridge


def _per_token_loss(fused: Any, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos_1"]:
    """Cross-entropy of predicting token i+1 from tokens 0..i [batch, pos-1] (the fused module)."""
    logits = fused(tokens)
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
    ).view(tokens.shape[0], -1)


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
    `zoo.induction`'s model (`load_module`, `hooked`); the models come from `_snapshot_models`."""
    from optim_hunter import zoo

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
        fused, bridge = _snapshot_models(name, step, profile, hooked=step in head_steps)
        with torch.no_grad():  # in chunks: logits of many long windows are large
            losses = torch.cat([_per_token_loss(fused, part) for part in tokens.split(128)]).numpy().astype(np.float64)
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


# --- claims of the chapter ------------------------------------------------------------------------


def is_phase_change(t: Mapping[str, float]) -> bool:
    """The criterion of a phase change, on {"drop": the ICL score's fall in the window, "final": the
    final ICL score, "unigram": the unigram predictor's ICL score}: a fall of at least `DROP` nats
    that ends below what order-blind counting reaches."""
    return bool(t["drop"] >= DROP and t["final"] < t["unigram"])


def change_margin(drop: float, final: float, unigram: float) -> float:
    """The phase-change criterion as one number (nats): the smaller of (the window's fall - `DROP`)
    and (the unigram predictor's ICL score - the final ICL score). Positive: a phase change
    (`is_phase_change`); negative: none. A mean over held-out chains of each of the three, so it
    has a bootstrap interval over the chains."""
    return float(min(drop - DROP, unigram - final))


def _in_window(t: Mapping[str, Any]) -> bool:
    """{"step": a step or None, "start", "end": a window}: the step lies in the window."""
    return t["step"] is not None and t["start"] <= t["step"] <= t["end"]


def _earlier_change(t: Mapping[str, Mapping[str, float]]) -> bool:
    """{"smeared" / "plain": `is_phase_change`'s numbers and the window's "peak" step}."""
    return is_phase_change(t["smeared"]) and is_phase_change(t["plain"]) and t["smeared"]["peak"] < t["plain"]["peak"]


def _pivots(t: Mapping[str, Any]) -> bool:
    """{"pivots": per model with >1 layer {"step" of its largest turn (or None), "start", "end" of
    its window, "angle" of that turn}, "one_layer": the one-layer model's largest turn}."""
    return all(_in_window(p) for p in t["pivots"]) and all(p["angle"] > t["one_layer"] for p in t["pivots"])


def _text_change(t: Mapping[str, float]) -> bool:
    """{"best": the best layer >= 1 prefix-matching score, "drop": the ICL score's fall in the window}."""
    return t["best"] >= PREFIX_MIN and t["drop"] >= DROP


def _declare(id: str, claim: str, *, value: Any, unit: str, quote: str = "", test: Callable[[Any], bool] | None = None,
             criterion: str = "", role: claims.Role = "claim", why: str = "",
             examples: tuple[Any, Any] | None = None) -> claims.ClaimSpec:
    return claims.declare(id, claim, source_seed=SOURCE, source_value=value, unit=unit, criterion=criterion, test=test,
                          source_quote=quote, role=role, why_no_interval=why, examples=examples)


def _measured_only(spec: claims.ClaimSpec) -> claims.ClaimSpec:
    """`spec` without its test: the row shows the number, no verdict (the caller's claim text says
    why). Not declared: the declared spec keeps its test."""
    return dataclasses.replace(spec, test=None, criterion="", why_no_interval="", examples=None)


TEXT_ONE_RUN = ("one training seed: the code model's training is the chapter's largest (about 340 s of the build), "
                "so it is not repeated over seeds")
ONE_RUN = ("one value per training run; the row is decided over the training seeds, each meeting the criterion or "
           "not (`over_seeds`)")
_MARGIN = f"nats: the smaller of (window fall - {DROP}) and (unigram ICL score - final ICL score)"
_CHANGE = (f"a phase change is a fall of the ICL score of at least {DROP} nats in its window (our threshold) "
           "ending below the unigram predictor's ICL score")
_CHANGE_EXAMPLE = {"drop": 0.3, "final": -0.8, "unigram": -0.2}  # a clear phase change

ONE_LAYER_NO_CHANGE = _declare(
    "induction.one_layer_no_phase_change",
    "A one-layer attention-only model shows no phase change (ICL-score fall in its window {drop} nats; final ICL "
    "score {final} nats, the unigram predictor's {unigram})",
    value="no phase change", unit=_MARGIN, test=claims.below(0), criterion=f"< 0: no phase change ({_CHANGE})",
    quote="a one-layer smeared-key model experiences the phase change, while a regular one-layer model does not")
SMEARED_ONE_LAYER = _declare(
    "induction.smeared_one_layer_phase_change",
    "A one-layer model with smeared keys has a phase change (window {start}-{end} steps, fall {drop} nats; final ICL "
    "score {final} nats, the unigram predictor's {unigram})",
    value="phase change", unit=_MARGIN, test=claims.above(0), criterion=f"> 0: a phase change ({_CHANGE})",
    quote="a one-layer smeared-key model experiences the phase change, while a regular one-layer model does not")
SMEARED_EARLIER = _declare(
    "induction.smeared_two_layer_earlier",
    "Smeared keys move the 2-layer phase change earlier (peak step {smeared} vs {plain} without smearing)",
    value="earlier", unit="peak step ratio smeared / plain",
    quote="the two-layer smeared-key model experiences a phase change earlier than a baseline model",
    test=_earlier_change, criterion="both have a phase change and the smeared model's peak step is smaller",
    why="the peak steps are found on one ICL-score curve each, of one training run per model (" + ONE_RUN + ")",
    examples=({"smeared": {**_CHANGE_EXAMPLE, "peak": 200}, "plain": {**_CHANGE_EXAMPLE, "peak": 400}},
              {"smeared": {**_CHANGE_EXAMPLE, "peak": 400}, "plain": {**_CHANGE_EXAMPLE, "peak": 200}}))
HEADS_IN_WINDOW = _declare(
    "induction.heads_form_in_window",
    "Induction heads (max prefix-matching score reaching half its rise) form inside the phase-change window: "
    "{detail}", value="inside the window", unit="fraction of models with a phase change",
    quote="we find that induction heads form abruptly during exactly the same window where in-context learning "
          "develops",
    test=lambda t: bool(t) and all(_in_window(c) for c in t),  # no model with a phase change: not reproduced
    criterion="for every model with a phase change, the crossing step lies in its window",
    why="crossing steps and windows are found on the curves of one training run per model (" + ONE_RUN + ")",
    examples=([{"step": 300, "start": 200, "end": 500}], [{"step": 700, "start": 200, "end": 500}]))
LOSS_BUMP = _declare(
    "induction.loss_bump",
    "The training loss of {name} steepens during the phase change ({inside} nats/decade inside the window vs "
    "{before} just before)", value="visible bump", unit="ratio of fall rates",
    quote="whatever's occurring is visible as a bump on the training curve (figure below)",
    test=claims.at_least(2), criterion="fall rate in window >= 2x the rate before it (our threshold)",
    why="a ratio of fall rates on the training-loss curve (the training batches) of one run (" + ONE_RUN + ")")
POST_CHANGE_ICL = _declare(
    "induction.post_change_icl_score",
    "ICL score after the phase change ({name}, Markov chains, indices {early}/{late} of {n_ctx}; Bayes-optimal "
    "{bayes}, unigram {unigram}); the seed's value is on natural text (its roughly 0.4 nats of in-context learning, "
    "early minus late, is -0.4 in this late-minus-early sign)", value=-0.4, unit="nats (late minus early)",
    quote="after it there is roughly 0.4 nats")
ICL_SHARE_IN_WINDOW = _declare(
    "induction.icl_share_in_window",
    "Most of the final in-context learning of {name} forms inside the phase-change window (fall of the ICL "
    "score in the window {drop} nats, final ICL score {final} nats)", value=">75%",
    unit="fraction of the final ICL score", quote="Since over 75% of final in-context learning forms in this window",
    test=claims.above(0.75))
ICL_CONSTANT = _declare(
    "induction.icl_constant_after_change",
    "The ICL score of {name} stays constant after the phase change (range of the 5-snapshot-smoothed score "
    "from step {end} on, over the final score {final} nats)", value="constant",
    unit="range / |final ICL score|", quote="an amount that remains constant for the rest of training",
    test=claims.at_most(0.1), criterion="<= 0.1: the range at most a tenth of the final score (our threshold)")
MULTI_LAYER_CHANGE = _declare(
    "induction.multi_layer_all_change",
    "Every model with more than one layer goes through the phase change (the smallest margin of the models "
    "with >1 layer: {detail})", value="all models with >1 layer", unit=_MARGIN + ", smallest over the models",
    quote="Provided there's more than one layer, all of them go through a phase change.",
    test=claims.above(0), criterion=f"> 0: every one has a phase change ({_CHANGE})")
ONE_LAYER_NO_HEADS = _declare(
    "induction.one_layer_no_induction_heads",
    "Induction heads never form in the one-layer attention-only model (largest prefix-matching score of any "
    "head at any snapshot)", value="never form", unit="prefix-matching score",
    quote="The exception is the one-layer model, where induction heads never form",
    test=claims.below(PREFIX_MIN), criterion=f"< {PREFIX_MIN} (our induction-head threshold)",
    why="the largest score over every head and snapshot of one training run (" + ONE_RUN + "); each score "
        "averages 10 random sequences inside heads.prefix_matching, whose per-sequence values are not kept")
DIVERGES_AT_CHANGE = _declare(
    "induction.diverges_at_change",
    "The held-out loss of the 2- and 3-layer models first falls below the one-layer model's (by 0.02 nats) "
    "inside their phase-change windows: {detail}", value="first divergence in the window", unit="fraction of models",
    quote="This shift also appears to be the first point where, at least for small models, the loss curve diverges "
          "from a one-layer model",
    test=lambda fraction: fraction == 1, criterion="for both models the first divergence step lies in the window",
    why="divergence steps and windows are found on the curves of one training run per model (" + ONE_RUN + ")",
    examples=(1.0, 0.5))
PCA_PIVOT = _declare(
    "induction.pca_pivot",
    "Per-token-loss PCA trajectories pivot in the window for models with more than one layer, not for the "
    "one-layer model (largest turn: {detail})", value="pivot in window", unit="fraction of models with >1 layer",
    quote="Note how it abruptly pivots for models with more than one layer.", test=_pivots,
    criterion="every model with >1 layer turns most inside its window, and more than the one-layer model ever does",
    why="the turns of trajectories over the snapshots of one training run per model (" + ONE_RUN + ")",
    examples=({"pivots": [{"step": 300, "start": 200, "end": 500, "angle": 90.0}], "one_layer": 30.0},
              {"pivots": [{"step": 50, "start": 200, "end": 500, "angle": 90.0}], "one_layer": 30.0}))
HEADS_LAST_LAYER = _declare(
    "induction.heads_in_last_layer",
    "In the 3-layer attention-only model the induction heads are in the last layer ({detail})", value="last layer",
    unit=f"fraction of heads with prefix matching >= {PREFIX_MIN}",
    quote="In our attention-only models, induction heads form in the last layer.",
    test=claims.above(0.5), criterion="> 0.5: more than half in the last layer",
    why="a count over the heads of one trained model (" + ONE_RUN + ")")
PREFIX_VS_KCOMP = _declare(
    "induction.prefix_vs_k_composition",
    "Prefix matching correlates with the previous-token K-composition trace (heads of layers >= 1 at every "
    "snapshot of the 2- and 3-layer attention-only models; p = {p})", value="correlates well",
    unit="Spearman correlation",
    quote="Our prefix matching evaluator correlates well with the trace of QK eigenvalues for the previous-token "
          "QK-circuit term.",
    test=claims.at_least(0.5), criterion=">= 0.5 (our threshold for 'correlates well')")
COPYING_VS_OV = _declare(
    "induction.copying_vs_ov_eigenvalues",
    "The copying score correlates with the OV eigenvalue score sum(lambda)/sum(|lambda|) (every head of the "
    "five final Markov-chain models; p = {p})", value="correlates well", unit="Spearman correlation",
    quote="Our copying evaluator correlates well with the OV matrix of each head.",
    test=claims.at_least(0.5), criterion=">= 0.5 (our threshold for 'correlates well')")
NON_CONVEX = _declare(
    "induction.only_non_convex_point",
    "The phase change is the only place where the held-out loss of {name} is not convex in log step (steps "
    "where the fall steepens: {inside} inside the window, {outside} outside)", value="only non-convex place",
    unit="non-convex steps outside the window",
    quote="It is in fact the only place in training where the loss is not convex (monotonically decreasing in "
          "slope).",
    test=lambda t: bool(t["inside"]) and not t["outside"],
    criterion="at least one step where the fall steepens (by > 10% of the largest fall rate; our threshold) inside "
              "the window, none outside",
    why="steps found on the held-out loss curve of one training run (" + ONE_RUN + ")",
    examples=({"inside": [300], "outside": []}, {"inside": [300], "outside": [40]}))
NOT_SCHEDULE = _declare(
    "induction.not_schedule_driven",
    "The phase change does not coincide with a scheduled hyperparameter change. True by our schedule, so a check "
    "of our set-up and not a reproduction: its only change is the end of warm-up at step {warmup}, early in "
    "training, and the learning rate is constant after it with no weight decay (windows: {detail})",
    value="not schedule-driven", unit="models whose window holds the change",
    quote="the window where the phase change happens doesn't appear to correspond to a scheduled change in learning "
          "rate, warmup, or weight decay",
    role="check", test=lambda v: v == 0, criterion="no model with a phase change has the end of warm-up inside its "
                                                   "window", examples=(0.0, 1.0))
WINDOW_FRACTION = _declare(
    "induction.window_fraction_of_training",
    "How far through training the phase change of {name} ends (window end step {end} of {steps}); the seed's "
    "1-2% is for large models trained on far more tokens", value="1-2%", unit="fraction of training steps",
    quote="for large models this is maybe 1-2% of the way through training")
EARLY_ADVANTAGE = _declare(
    "induction.size.early_advantage",
    "The larger model (attn-only-3l) gains most of its advantage over the smaller (attn-only-2l) in the first "
    "tokens (index {first} against index {late}; a resample where the larger model is not better at the late index "
    "counts as -1)", value="first 10 tokens", unit="advantage at the first index / at the late index",
    quote="In fact, the majority of the difference forms in the first ten tokens",
    test=claims.above(0.5), criterion="> 0.5: the majority")
MID_CONTEXT = _declare(
    "induction.size.mid_context_catch_up",
    "Around index {index} (the seed's token 100 scaled) the smaller model reduces its loss more per log index "
    "than the larger (attn-only-2l against attn-only-3l)", value="token ≈100",
    unit="d loss / d log index, larger minus smaller",
    quote="Around token 100, there's a regime where small models reduce their loss very slightly more per token "
          "than large models.",
    test=claims.above(0))
DERIVATIVE_ORDER = _declare(
    "induction.size.derivative_order_inverts",
    "The held-out loss of the smaller model (attn-only-2l) falls more slowly per decade of steps than the "
    "larger's (attn-only-3l) before the phase change and faster after it ({detail})",
    value="order inverts at the phase change",
    unit="nats per decade: the smaller of (larger minus smaller model's fall rate before both windows) and "
         "(smaller minus larger after both)",
    quote="The key observation is that the loss decreases more slowly for small models than large models before "
          "the phase change, but the opposite is true after.",
    test=claims.above(0), criterion="> 0: both orderings as the seed's")
_UNDEFINED = " (a resample where the ablation does not raise the loss counts as -1)"
IDEAL_PREVIOUS = _declare(
    "induction.idealised.previous_token",
    "Replacing the previous-token head's pattern ({head} of {name}) by exact previous-token attention recovers "
    "its ablation's loss" + _UNDEFINED, value="99%", unit="fraction of the ablation loss recovered",
    quote="Replacing the previous-token head's scores with exact previous-token attention recovered 99% of the loss "
          "difference.",
    test=claims.at_least(0.9), criterion=">= 0.9 (our threshold; the seed's 99%)")
IDEAL_INDUCTION = _declare(
    "induction.idealised.induction",
    "Replacing the induction head's pattern ({head} of {name}) by uniform attention on the tokens after earlier "
    "occurrences of the current token recovers part of its ablation's loss" + _UNDEFINED, value="≈65%",
    unit="fraction of the ablation loss recovered",
    quote="Replacing the induction head's scores with a simple approximation (attending to the first token and to "
          "exact [A][B]...[A] matches) recovered about 65% of the loss difference.",
    test=claims.between(0.45, 0.85), criterion="within 0.2 of 0.65 (our tolerance): in [0.45, 0.85]")
IDEAL_TWO_TOKEN = _declare(
    "induction.idealised.two_token_prefix",
    "Weighting two-token prefix matches ([A][B][C] ... [A][B] -> [C]) twice in the idealised pattern of {head} "
    "of {name} recovers more ({one} -> {two})" + _UNDEFINED, value="+10%", unit="additional fraction recovered",
    quote="including this in the substituted attention scores recovered an additional 10% of loss difference",
    test=claims.at_least(0.05), criterion=">= 0.05 (our threshold: half the seed's)")
ABLATION_REMOVES = _declare(
    "induction.ablation_removes_icl",
    "Ablating the induction heads of {name} ({heads}) removes most of the ICL score{note}", value="almost all",
    unit="fraction of ICL score removed",
    quote="In fact, *almost all* the in-context learning in small attention-only models appears to come from these "
          "induction heads!",
    test=claims.at_least(0.5), criterion=">= 0.5 (our threshold for 'most'; the seed says almost all)")
ABLATION_THROUGH = _declare(
    "induction.ablation_through_training",
    "Ablating the final induction heads of {name} ({heads}) removes most of the ICL score at every measured "
    "snapshot from the window's start (step {start}) on: {detail}{note}", value="from window start to end",
    unit="smallest fraction of ICL score removed",
    quote="This begins at the start of the phase change, and remains true through the end of training.",
    test=claims.at_least(0.5), criterion=">= 0.5 at every one (our threshold for 'most')")
OTHER_ABLATIONS = _declare(
    "induction.other_ablations_increase_icl",
    "Ablating most other heads of {name} ({heads}) increases in-context learning (a more negative ICL score)",
    value="increase", unit="fraction of the other heads",
    quote="In fact, ablating most other attention heads appears to *increase* in-context learning.",
    test=claims.above(0.5), criterion="> 0.5: more than half")
BEFORE_AFTER = _declare(
    "induction.before_after_negative",
    "Ablating an induction head of {name} undoes the phase change along the before-and-after vector "
    "(attributions {detail}; +1 undoes it, the seed's sign is the opposite)", value="negative (undoes the change)",
    unit="smallest attribution of an induction head",
    quote="For induction heads, this dot product is negative, indicating that removing induction heads is like "
          "*un*doing the changes to model behavior that happened during the phase change.",
    test=claims.above(0), criterion="> 0 for every induction head")
ICL_INDEX_CHOICE = _declare(
    "induction.icl_index_choice",
    "Under other choices of the early and late indices the final ICL score varies only slightly between the "
    "models with more than one layer ({detail})", value="insensitive",
    unit="largest (max - min) / |mean| over index pairs",
    quote="all definitions appear to show that the amount of in-context learning varies only slightly between "
          "models",
    test=claims.at_most(0.25), criterion="<= 0.25 for every pair (our threshold)")
TEXT_CHANGE = _declare(
    "induction.text.phase_change",
    "A 2-layer attention-only model on natural text (Python source) goes through the phase change within "
    "{budget}: best layer-1 prefix-matching score {best} ({head}); steepest ICL-score fall {drop} nats "
    "(steps {start}-{end})", value="phase change", unit="best prefix-matching score, layer >= 1",
    quote="Second, we tried out training some of the small models on a different dataset, and we observed the "
          "phase change develop in the same way",
    test=_text_change,
    criterion=f"a layer >= 1 head with prefix matching >= {PREFIX_MIN} and an ICL-score fall >= {DROP} nats in the "
              "window (our thresholds)",
    why="two conditions in different units: the largest prefix-matching score over the heads of one model (each "
        "averaging 10 random sequences whose values are not kept) and the fall in a window found on the ICL-score "
        "curve of one training run (" + TEXT_ONE_RUN + ")",
    examples=({"best": 0.5, "drop": 0.2}, {"best": 0.05, "drop": 0.01}))
TEXT_BEFORE = _declare(
    "induction.text.icl_before_change",
    "In-context learning on natural text before the phase change (ICL score at step {start}, where the window of "
    "steepest ICL-score fall starts{note})", value="< 0.15 nats", unit="nats (late minus early)",
    quote="Before this window there is less than 0.15 nats of in-context learning",
    test=claims.above(-0.15),
    criterion="> -0.15 nats (less than 0.15 nats of ICL), decided only when the model has a phase change by "
              "induction.text.phase_change's criterion (measured only without one)")
TEXT_POST = _declare(
    "induction.text.post_change_icl_score",
    "Final ICL score on held-out Python source (indices {early}/{late} of {n_ctx}, {n} windows; {status}); "
    "the seed's value is after one (its roughly 0.4 nats of in-context learning is -0.4 in this sign)", value=-0.4,
    unit="nats (late minus early)", quote="after it there is roughly 0.4 nats")


def _f(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def _head(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman correlation and its p-value over the pairs where both are finite; (0, 1) where a
    sample has no variation (a bootstrap resample of one repeated unit)."""
    import warnings

    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = spearmanr(x[keep], y[keep])
    return float(result.statistic), float(result.pvalue)


def _correlation_over(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], units: str
) -> tuple[float, float, claims.Interval]:
    """Spearman correlation of the pairs of all units (each unit: a head, with one value or its
    whole trajectory), its p-value, and a bootstrap interval that resamples the units."""
    from scipy.stats import rankdata

    def rho_of(x: np.ndarray, y: np.ndarray) -> float:  # Spearman's rho without its p-value (fast)
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = rankdata(x[keep]), rankdata(y[keep])
        return float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0 else 0.0

    rho, p = _spearman(np.concatenate(xs), np.concatenate(ys))
    interval = resampled(len(xs), lambda i: rho_of(np.concatenate([xs[k] for k in i]),
                                                   np.concatenate([ys[k] for k in i])), units)
    return rho, p, interval


def _head_lines(steps: np.ndarray, values: np.ndarray, key: str) -> pd.DataFrame:
    """[snapshot, layer, head] -> long table (step, key, head), heads with finite scores only."""
    _, n_layers, n_heads = values.shape
    return pd.concat([
        pd.DataFrame({"step": steps, key: values[:, l, h], "head": _head(l, h)})
        for l in range(n_layers) for h in range(n_heads) if np.isfinite(values[:, l, h]).all()
    ])


def _log_lines(table: pd.DataFrame, *, x: str, y: str, group: str, title: str) -> go.Figure:
    from optim_hunter import plots

    fig = plots.lines(table, x=x, y=y, group=group, title=title)
    fig.update_xaxes(type="log")
    return fig


# --- claims over training seeds -------------------------------------------------------------------


def _specs() -> dict[str, claims.ClaimSpec]:
    return {v.id: v for v in globals().values() if isinstance(v, claims.ClaimSpec)}


def _seed_outcome(row: claims.Claim, spec: claims.ClaimSpec | None) -> bool | None:
    """Whether one seed's row meets its criterion (judged on its own value: the seed's point, not
    its interval over held-out chains); None where the row decides nothing (measured only)."""
    if row.verdict == "check":
        return bool(row.holds)
    if row.verdict == "measured" or spec is None:
        return None
    if isinstance(spec.test, claims.Region) and isinstance(row.measured, float):
        return bool(spec.test(row.measured))
    return row.verdict == "reproduced"


def _value(value: float | str | None) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def over_seeds(rows_by_seed: Sequence[Sequence[claims.Claim]], units: str = "training seeds") -> list[claims.Claim]:
    """Seed 0's rows (`rows_by_seed[0]`: its numbers, the ones its figures show), each decided on
    every seed's value of the same claim: the interval is `verdicts.prediction_interval` of the
    values (the 95% prediction interval for another training seed, holding every seed's value), and
    the verdict is the criterion applied to it: reproduced when another seed would meet it too, not
    reproduced when it would miss it, inconclusive otherwise (seeds that disagree included). Where a value is not a number (a seed without a phase change has no window share) the
    verdict counts the seeds that meet the criterion the same way, without an interval. The row says
    how many seeds agree and lists their values. A claim measured on seed 0 alone keeps its row."""
    first = list(rows_by_seed[0])
    if len(rows_by_seed) == 1:
        return first
    specs, by_seed = _specs(), [{r.id: r for r in rows} for rows in rows_by_seed]
    out = []
    for row in first:
        rows = [b.get(row.id) for b in by_seed]
        if any(r is None for r in rows):
            out.append(row)
            continue
        spec = specs.get(row.id)
        values = [r.measured for r in rows]
        numeric = all(isinstance(v, float) and np.isfinite(v) for v in values)
        interval = verdicts.prediction_interval(values, units) if numeric else None
        outcomes = [_seed_outcome(r, spec) for r in rows]
        decided = [o for o in outcomes if o is not None]
        n = len(rows)
        listed = ", ".join(f"seed {k}: {_value(v)}" for k, v in enumerate(values))
        changes: dict[str, Any] = {}
        if row.verdict == "measured" or not decided:
            note = f" [{n} {units}: {listed}]"
        else:
            k = sum(decided)
            note = f" [{n} {units}: {k} of {len(decided)} meet the criterion; {listed}]"
            if row.verdict == "check":
                changes["holds"] = all(decided)
            elif interval is not None and isinstance(spec.test, claims.Region) and len(decided) == n:
                changes["verdict"] = spec.test.decide(interval)
            else:
                changes["verdict"] = "reproduced" if k == len(decided) else "not_reproduced" if k == 0 else "inconclusive"
        if interval is not None:
            changes.update(interval=interval.as_list(), interval_kind=interval.kind, n=interval.n, why_no_interval="")
        elif row.verdict not in ("measured", "check"):
            changes.update(interval=None, interval_kind="", n=None, why_no_interval=(
                f"a value of some {units} is not a number ({listed}): the verdict counts the seeds that meet the "
                "criterion"))
        out.append(dataclasses.replace(row, claim=row.claim + note, **changes))
    return out


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


def _markov_run(name: str, profile: str, tokens: Tensor, n_pca: int, early: int, late: int,
                head_every: int = 1) -> MarkovRun:
    """Every snapshot of zoo model `name` on `tokens`; head scores at every `head_every`-th
    snapshot and the last (building the hooked model is most of a snapshot's cost)."""
    from optim_hunter import zoo

    cfg = zoo.config(name, profile)
    steps = zoo.snapshots(name, profile)
    scored = set(head_grid(steps, head_every))
    by_index, pca_rows, scores, bridge = [], [], {k: [] for k in SCORES}, None
    chains, chain_loss = [], []
    for step in steps:
        fused, bridge = _snapshot_models(name, step, profile, hooked=step in scored)
        with torch.no_grad():
            losses = _per_token_loss(fused, tokens).numpy().astype(np.float64)  # float64: the per-chain values
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
        fig = _log_lines(table, x="step", y="ICL score (nats)", group="model",
                         title="ICL score (late-index loss minus early-index loss) over training")
        for label, key in (("Bayes-optimal", "bayes"), ("unigram", "unigram")):
            fig.add_hline(y=self.reference[key], line_dash="dot", annotation_text=label)
        return fig

    def loss_index_figures(self, name: str = FOCUS) -> list[go.Figure]:
        from optim_hunter import plots

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
            fig = _log_lines(_head_lines(r.head_steps, r.scores[key], key), x="step", y=key, group="head",
                             title=f"{name}: {key} per head")
            fig.add_vrect(x0=r.window.start, x1=r.window.end, fillcolor="grey", opacity=0.15, line_width=0)
            out.append(fig)
        return out

    def show_attention(self) -> None:
        """The focus model's strongest induction head and its layer's other heads on two repeats of
        every state in random order (circuitsvis)."""
        from optim_hunter import plots

        d = self.demo
        plots.attention_heads(d["pattern"], d["tokens"], d["names"])

    def pca_figure(self) -> go.Figure:
        from optim_hunter import plots

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
        """The rows of this study's training seed alone."""
        p = self.profile
        runs, focus = self.runs, self.runs[FOCUS]
        rows = []
        one, sm1 = runs["attn-only-1l"], runs["smeared-1l"]
        unigram = _f(self.reference["unigram"])
        margin, interval = self.change_margin("attn-only-1l")
        rows.append(ONE_LAYER_NO_CHANGE.measure(
            margin, chapter=CHAPTER, profile=p, model="attn-only-1l", interval=interval, drop=_f(one.window.drop),
            unigram=unigram, final=_f(one.icl[-1])))
        margin, interval = self.change_margin("smeared-1l")
        rows.append(SMEARED_ONE_LAYER.measure(
            margin, chapter=CHAPTER, profile=p, model="smeared-1l", interval=interval, drop=_f(sm1.window.drop),
            unigram=unigram, start=sm1.window.start, end=sm1.window.end, final=_f(sm1.icl[-1])))
        p2, ps2 = runs["attn-only-2l"].window.peak, runs["smeared-2l"].window.peak
        rows.append(SMEARED_EARLIER.measure(
            ps2 / p2, chapter=CHAPTER, profile=p, model="smeared-2l",
            tested={"smeared": {**self.change_numbers("smeared-2l"), "peak": ps2},
                    "plain": {**self.change_numbers("attn-only-2l"), "peak": p2}}, smeared=ps2, plain=p2))
        formed = self.formed()
        crossings = [{"step": formed[n], "start": runs[n].window.start, "end": runs[n].window.end}
                     for n in formed if self.has_change(n)]  # the models with a phase change
        rows.append(HEADS_IN_WINDOW.measure(
            float(np.mean([_in_window(c) for c in crossings])) if crossings else "no model had a phase change",
            chapter=CHAPTER, profile=p, model="all", tested=crossings,
            detail="; ".join(f"{n} at step {formed[n]} (window {runs[n].window.start}-{runs[n].window.end})"
                             for n in formed)))
        bump, rate_in, rate_before = self.bump(FOCUS)
        rows.append(LOSS_BUMP.measure(
            bump if np.isfinite(bump) else "no fall before the window", chapter=CHAPTER, profile=p, model=FOCUS,
            tested=bump, name=FOCUS, inside=_f(rate_in), before=_f(rate_before)))
        rows.append(POST_CHANGE_ICL.measure(
            float(focus.icl[-1]), chapter=CHAPTER, profile=p, model=FOCUS,
            interval=claims.bootstrap(focus.icl_chains[-1], units="held-out chains"), name=FOCUS, early=self.early,
            late=self.late, n_ctx=self.n_ctx, bayes=_f(self.reference["bayes"]), unigram=_f(self.reference["unigram"])))
        rows += self._new_claims()
        return rows

    def _new_claims(self) -> list[claims.Claim]:
        p, runs, focus = self.profile, self.runs, self.runs[FOCUS]
        w, final = focus.window, float(focus.icl[-1])
        # both presuppose a phase change (a share of ICL formed in a window without one means nothing)
        changed = self.has_change(FOCUS)
        if changed:
            share = lambda m: ratio(m[0], -m[1])  # noqa: E731  (the window's fall over the final ICL, per chain)
            share_rows = self.change_rows(FOCUS)[:2]
            rows = [ICL_SHARE_IN_WINDOW.measure(
                share(share_rows.mean(1)), chapter=CHAPTER, profile=p, model=FOCUS,
                interval=bootstrap_means(share_rows, share, "held-out chains"), name=FOCUS, drop=_f(w.drop),
                final=_f(final))]
            keep = focus.steps >= 10
            after = smooth(focus.icl_chains[keep], 5)[focus.steps[keep] >= w.end]  # [snapshot, chain]
            spread_rows = np.concatenate([after, focus.icl_chains[-1:]])
            spread = lambda m: float((m[:-1].max() - m[:-1].min()) / abs(m[-1]))  # noqa: E731
            rows.append(ICL_CONSTANT.measure(
                spread(spread_rows.mean(1)), chapter=CHAPTER, profile=p, model=FOCUS,
                interval=bootstrap_means(spread_rows, spread, "held-out chains"), name=FOCUS, end=w.end,
                final=_f(final)))
        else:
            rows = [spec.measure(f"{FOCUS} has no phase change", chapter=CHAPTER, profile=p, model=FOCUS, name=FOCUS,
                                 **fields)
                    for spec, fields in ((ICL_SHARE_IN_WINDOW, {"drop": _f(w.drop), "final": _f(final)}),
                                         (ICL_CONSTANT, {"end": w.end, "final": _f(final)}))]
        multi = self.multi_layer
        margin, interval = self.change_margin(*multi)
        rows.append(MULTI_LAYER_CHANGE.measure(
            margin, chapter=CHAPTER, profile=p, model=", ".join(multi), interval=interval,
            detail="; ".join(f"{n}: {'yes' if self.has_change(n) else 'no'} (fall {_f(runs[n].window.drop)} nats, "
                             f"final {_f(runs[n].icl[-1])}, margin {_f(change_margin(**self.change_numbers(n)), 4)})"
                             for n in multi)))
        rows.append(ONE_LAYER_NO_HEADS.measure(
            float(np.nanmax(runs["attn-only-1l"].scores["prefix_matching"])), chapter=CHAPTER, profile=p,
            model="attn-only-1l"))
        one = runs["attn-only-1l"]
        found = {}
        for name in ("attn-only-2l", "attn-only-3l"):
            if not np.array_equal(runs[name].steps, one.steps):
                raise ValueError(f"{name} and attn-only-1l have different snapshot steps")
            found[name] = first_divergence(one.steps, one.loss, runs[name].loss, margin=0.02)
        ins = [runs[n].window.contains(s) if s is not None else False for n, s in found.items()]
        rows.append(DIVERGES_AT_CHANGE.measure(
            float(np.mean(ins)), chapter=CHAPTER, profile=p, model="attn-only-2l, attn-only-3l",
            detail="; ".join(f"{n} at step {s} (window {runs[n].window.start}-{runs[n].window.end})"
                             for n, s in found.items())))
        turns = self.turns()
        pivots = {n: turns[n] for n in multi}
        one_turn = turns["attn-only-1l"][2]
        turned = [{"step": s, "start": runs[n].window.start, "end": runs[n].window.end, "angle": a}
                  for n, (_, s, a) in pivots.items()]
        rows.append(PCA_PIVOT.measure(
            float(np.mean([_in_window(t) for t in turned])), chapter=CHAPTER, profile=p, model="all",
            tested={"pivots": turned, "one_layer": one_turn},
            detail="; ".join([f"{n} {a:.0f} degrees at step {s} (window {runs[n].window.start}-{runs[n].window.end})"
                              for n, (_, s, a) in pivots.items()] + [f"attn-only-1l {one_turn:.0f} degrees"])))
        three = runs["attn-only-3l"].final_prefix
        layers = np.nonzero(three >= PREFIX_MIN)[0]
        rows.append(HEADS_LAST_LAYER.measure(
            float(np.mean(layers == three.shape[0] - 1)) if len(layers) else f"no head with prefix matching >= {PREFIX_MIN}",
            chapter=CHAPTER, profile=p, model="attn-only-3l",
            detail=f"heads with prefix matching >= {PREFIX_MIN} by layer: "
                   + ", ".join(str(int((layers == l).sum())) for l in range(three.shape[0]))))
        # each head of layers >= 1 with its whole trajectory is one unit of the bootstrap
        pm, kc = ([runs[n].scores[key][:, 1:].reshape(len(runs[n].head_steps), -1).T
                   for n in ("attn-only-2l", "attn-only-3l")] for key in ("prefix_matching", "k_composition"))
        rho, pval, interval = _correlation_over([h for m in pm for h in m], [h for m in kc for h in m],
                                                "heads (each with every snapshot)")
        rows.append(PREFIX_VS_KCOMP.measure(rho, chapter=CHAPTER, profile=p, model="attn-only-2l, attn-only-3l",
                                            interval=interval, p=f"{pval:.2g}"))
        cp = np.concatenate([r.scores["copying"][-1].ravel() for r in runs.values()])
        ov = np.concatenate([r.ov_eigenvalues.ravel() for r in runs.values()])
        keep = np.isfinite(cp) & np.isfinite(ov)
        rho, pval, interval = _correlation_over(list(cp[keep, None]), list(ov[keep, None]), "heads")
        rows.append(COPYING_VS_OV.measure(rho, chapter=CHAPTER, profile=p, model="all", interval=interval,
                                          p=f"{pval:.2g}"))
        steeper = nonconvex_steps(focus.steps, focus.loss)
        inside = [s for s in steeper if w.contains(s)]
        outside = [s for s in steeper if not w.contains(s)]
        rows.append(NON_CONVEX.measure(float(len(outside)), chapter=CHAPTER, profile=p, model=FOCUS,
                                       tested={"inside": inside, "outside": outside}, name=FOCUS,
                                       inside=inside or "none", outside=outside or "none"))
        with_change = [n for n in runs if self.has_change(n)]
        rows.append(NOT_SCHEDULE.measure(
            float(sum(runs[n].window.contains(self.warmup_steps) for n in with_change)) if with_change
            else "no model had a phase change", chapter=CHAPTER, profile=p, model="all", warmup=self.warmup_steps,
            detail="; ".join(f"{n} {runs[n].window.start}-{runs[n].window.end}" for n in with_change) or "none"))
        rows.append(WINDOW_FRACTION.measure(w.end / self.train_steps, chapter=CHAPTER, profile=p, model=FOCUS,
                                            name=FOCUS, end=w.end, steps=self.train_steps))
        rows += self._size_claims()
        pairs = self.index_pairs()
        scores = np.stack([icl_score(runs[n].final_losses, a, b, HALF_WIDTH) for a, b in pairs for n in multi])

        def spreads(means: np.ndarray) -> np.ndarray:  # (max - min) / |mean| over the models, per pair
            m = means.reshape(len(pairs), len(multi))
            return (m.max(1) - m.min(1)) / np.abs(m.mean(1))

        point = spreads(scores.mean(1))
        rows.append(ICL_INDEX_CHOICE.measure(
            float(point.max()), chapter=CHAPTER, profile=p, model=", ".join(multi),
            interval=bootstrap_means(scores, lambda m: float(spreads(m).max()), "held-out chains"),
            detail="; ".join(f"({a}, {b}): {s:.2f}" for (a, b), s in zip(pairs, point))))
        return rows

    def _size_claims(self) -> list[claims.Claim]:
        p, small, large = self.profile, self.runs["attn-only-2l"], self.runs["attn-only-3l"]
        gap = small.final_losses - large.final_losses  # [chain, index]: the larger model's advantage
        first = max(1, int(round(10 / SEED_CONTEXT * self.n_ctx)))
        gaps = np.stack([window_mean(gap, first, HALF_WIDTH), window_mean(gap, self.late, HALF_WIDTH)])
        late_gap = float(gaps[1].mean())
        share = lambda m: ratio(m[0], m[1])  # noqa: E731
        rows = [EARLY_ADVANTAGE.measure(
            share(gaps.mean(1)) if late_gap > 0 else "the larger model is not better at the late index",
            chapter=CHAPTER, profile=p, model="attn-only-2l, attn-only-3l",
            interval=bootstrap_means(gaps, share, "held-out chains") if late_gap > 0 else None,
            first=first, late=self.late)]
        index = int(round(100 / SEED_CONTEXT * self.n_ctx))
        lo, hi = int(round(index / np.sqrt(2))), int(round(index * np.sqrt(2)))
        slope = {n: log_index_derivative(r.final_losses)[:, lo : hi + 1].mean(1) for n, r in
                 (("small", small), ("large", large))}  # [chain]
        catch_up = slope["large"] - slope["small"]
        rows.append(MID_CONTEXT.measure(float(catch_up.mean()), chapter=CHAPTER, profile=p,
                                        model="attn-only-2l, attn-only-3l",
                                        interval=claims.bootstrap(catch_up, units="held-out chains"), index=index))
        steps = small.steps
        a, d = int(steps[steps >= 10][0]), int(steps[-1])
        b = min(small.window.start, large.window.start)
        c = max(small.window.end, large.window.end)
        if b <= a or d <= c:
            rows.append(DERIVATIVE_ORDER.measure("no stretch before or after both windows", chapter=CHAPTER, profile=p,
                                                 model="attn-only-2l, attn-only-3l", detail=f"windows end at {c}"))
            return rows
        # fall per decade of each chain's loss (linear in the loss: the mean over chains is the mean curve's)
        rates = np.stack([[fall_rate(r.steps, curve, *span) for curve in r.loss_chains.T]
                          for span in ((a, b), (c, d)) for r in (small, large)])  # small, large before; after
        order = lambda m: float(min(m[1] - m[0], m[2] - m[3]))  # noqa: E731
        mean = rates.mean(1)
        rows.append(DERIVATIVE_ORDER.measure(
            order(mean), chapter=CHAPTER, profile=p, model="attn-only-2l, attn-only-3l",
            interval=bootstrap_means(rates, order, "held-out chains"),
            detail=f"nats per decade, steps {a}-{b}: {_f(mean[0])} vs {_f(mean[1])}; "
                   f"steps {c}-{d}: {_f(mean[2])} vs {_f(mean[3])}"))
        return rows


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
    from optim_hunter import zoo
    from optim_hunter.zoo import induction

    profile = settings.profile(profile)
    n_eval = n_eval or settings.pick(profile, full=256, smoke=64)
    n_pca = n_pca or settings.pick(profile, full=24, smoke=8)
    seeds = seeds or zoo.SEEDS.get(FOCUS, 1)
    head_every = head_every or settings.pick(profile, full=3, smoke=2)
    names = {seed: {name: zoo.seed_names(name)[seed] for name in models} for seed in range(seeds)}
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
    cfg = zoo.config(FOCUS, profile)
    early, late = scaled_indices(cfg.n_ctx)
    tokens = induction.eval_tokens(cfg, n_eval)
    reference_chains = {
        "bayes": np.asarray(icl_score(induction.bayes_loss_by_index(tokens, cfg.n_states), early, late, HALF_WIDTH)),
        "unigram": np.asarray(icl_score(induction.unigram_loss_by_index(tokens, cfg.n_states), early, late,
                                        HALF_WIDTH)),
    }
    reference = {key: float(values.mean()) for key, values in reference_chains.items()}
    final = zoo.load(FOCUS, profile, progress=False)
    common = dict(profile=profile, models=pd.DataFrame(rows).set_index("model"), n_ctx=cfg.n_ctx,
                  n_states=cfg.n_states, n_eval=n_eval, n_pca=n_pca, early=early, late=late,
                  warmup_steps=cfg.train.warmup_steps, train_steps=cfg.train.steps, reference=reference,
                  reference_chains=reference_chains)
    studies = []
    for seed in reversed(range(seeds)):  # seed 0 last: it holds the others
        started = time.perf_counter()
        runs = {name: _markov_run(zoo_name, profile, tokens, n_pca, early, late, 1 if seed == 0 else head_every)
                for name, zoo_name in names[seed].items()}
        seconds = time.perf_counter() - started
        demo: dict[str, Any] = {}
        if seed == 0:
            prefix = runs[FOCUS].final_prefix
            layer, head = np.unravel_index(np.nanargmax(prefix), prefix.shape)
            sequence = heads.repeated_random_tokens(cfg.n_states, length=cfg.n_states, repeats=2, batch=1, bos=None,
                                                    seed=3)
            with torch.no_grad():
                _, cache = final.run_with_cache(sequence)
            demo = {"pattern": cache[hooks.pattern(int(layer))][0].numpy(),
                    "tokens": [str(t) for t in sequence[0].tolist()],
                    "names": [_head(int(layer), h) for h in range(cfg.arch.n_heads)], "head": _head(int(layer), int(head))}
            seconds += sum(s.seconds for s in studies)
        studies.append(PhaseChangeStudy(**common, runs=runs, demo=demo, seconds=seconds, seed=seed,
                                        seeds=tuple(reversed(studies)) if seed == 0 else ()))
    return studies[-1]


# --- ablations of the 2-layer model ---------------------------------------------------------------


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
        return [_head(l, h) for l in range(L) for h in range(H)]

    def table(self) -> pd.DataFrame:
        a = self.ablation
        L, H = self.prefix.shape
        return pd.DataFrame([{
            "head": _head(l, h), "prefix matching": self.prefix[l, h], "previous token": self.previous[l, h],
            "ΔICL full": a.icl_full[l, h] - a.clean_icl, "ΔICL preserved": a.icl_preserved[l, h] - a.clean_icl,
            "attribution full": self.attribution["full"][l, h],
            "attribution preserved": self.attribution["preserved"][l, h],
        } for l in range(L) for h in range(H)]).set_index("head")

    def across_figures(self) -> list[go.Figure]:
        from optim_hunter import plots

        return [plots.heatmap(values, x=self.head_names, y=[str(s) for s in self.across_steps], zmid=0,
                              title=f"{self.name}: ICL-score change when a head is ablated ({kind}), by training step")
                for kind, values in self.across.items()]

    def numbers(self) -> dict[str, Any]:
        return {
            "ih_clean_icl": self.ablation.clean_icl, "ih_before_step": self.before_step, "ih_last_step": self.last_step,
            "ih_induction_heads": ", ".join(_head(*h) for h in self.induction_heads),
            "ih_icl_without": self.icl_without, "ih_removed": self.removed_fraction,
            "ih_recovery_previous": self.recovery["previous"], "ih_recovery_induction": self.recovery["induction"],
            "ih_recovery_induction2": self.recovery["induction2"],
            "ih_previous_head": _head(*self.idealised_heads["previous"]),
            "ih_induction_head": _head(*self.idealised_heads["induction"]),
        }

    def claims(self) -> list[claims.Claim]:
        """Seed 0's rows decided over the training seeds (`over_seeds`)."""
        return over_seeds([study.seed_claims() for study in (self, *self.seeds)])

    def seeds_table(self) -> pd.DataFrame:
        """Per training seed: the induction heads, the share of the ICL score their joint ablation
        removes, and the idealised heads' recoveries."""
        return pd.DataFrame([
            {"seed": a.seed, "induction heads": ", ".join(_head(*h) for h in a.induction_heads),
             "clean ICL score": a.ablation.clean_icl, "ICL score without them": a.icl_without,
             "share removed": a.removed_fraction, "previous-token recovery": a.recovery["previous"],
             "induction recovery": a.recovery["induction"]}
            for a in (self, *self.seeds)]).set_index("seed")

    def seed_claims(self) -> list[claims.Claim]:
        p, name, a = self.profile, self.name, self.ablation
        names = ", ".join(_head(*h) for h in self.induction_heads)
        removed = lambda m: ratio(m[0] - m[1], -m[1])  # noqa: E731  (ICL without minus clean, over -clean)
        removes, through, note = ABLATION_REMOVES, ABLATION_THROUGH, ""
        if self.whole_layers:  # the induction heads are the whole layer: the rows cannot tell them from it
            removes, through = _measured_only(removes), _measured_only(through)
            note = (f"; every head of layer {', '.join(map(str, self.whole_layers))} is an induction head here, so "
                    "this ablates the whole layer and cannot tell the induction heads from it: measured only, "
                    "not a reproduction")
        both = np.stack([self.without_chains, self.chain_icl()])
        rows = [removes.measure(self.removed_fraction, chapter=CHAPTER, profile=p, model=name,
                                interval=bootstrap_means(both, removed, "held-out chains"), name=name, heads=names,
                                note=note)]
        from_start = [k for k, (s, f) in enumerate(zip(self.across_steps, self.across_removed))
                      if s >= self.window.start and np.isfinite(f)]
        detail = ", ".join(f"step {self.across_steps[k]} {self.across_removed[k]:.0%}" for k in from_start) or "none"
        if from_start:
            across = self.across_chains[from_start][:, ::-1].reshape(2 * len(from_start), -1)  # ablated, clean pairs
            smallest = lambda m: min(removed(m[2 * k : 2 * k + 2]) for k in range(len(from_start)))  # noqa: E731
            rows.append(through.measure(
                smallest(across.mean(1)), chapter=CHAPTER, profile=p, model=name,
                interval=bootstrap_means(across, smallest, "held-out chains"), name=name, heads=names,
                start=self.window.start, detail=detail, note=note))
        else:
            rows.append(through.measure("no snapshot with in-context learning from the window on", chapter=CHAPTER,
                                        profile=p, model=name, name=name, heads=names, start=self.window.start,
                                        detail=detail, note=note))
        L, H = self.prefix.shape
        others = [(l, h) for l in range(L) for h in range(H) if (l, h) not in self.induction_heads]
        if others:
            icl_rows = np.stack([self.chain_icl()] + [self.chain_icl(h) for h in others])
            lower = lambda m: float(np.mean(m[1:] < m[0]))  # noqa: E731  (share of heads whose ablation lowers it)
            rows.append(OTHER_ABLATIONS.measure(
                lower(icl_rows.mean(1)), chapter=CHAPTER, profile=p, model=name,
                interval=bootstrap_means(icl_rows, lower, "held-out chains"), name=name,
                heads=", ".join(_head(*h) for h in others)))
        else:
            rows.append(OTHER_ABLATIONS.measure("no other heads", chapter=CHAPTER, profile=p, model=name, name=name,
                                                heads="none"))
        # attribution = sum over tokens of delta * direction / sum of direction^2: per chain, a numerator and a
        # denominator whose means give it
        direction = self.before_after
        n = direction.shape[0]
        attribution_rows = np.stack([(a.delta_full[h].reshape(n, -1) * direction).sum(1) for h in self.induction_heads]
                                    + [(direction**2).sum(1)])
        smallest_attribution = lambda m: float(m[:-1].min() / m[-1])  # noqa: E731
        attribution = {h: float(self.attribution["full"][h]) for h in self.induction_heads}
        rows.append(BEFORE_AFTER.measure(
            smallest_attribution(attribution_rows.mean(1)), chapter=CHAPTER, profile=p, model=name,
            interval=bootstrap_means(attribution_rows, smallest_attribution, "held-out chains"), name=name,
            detail=", ".join(f"{_head(*h)} {v:.2f}" for h, v in attribution.items())))
        prev, ind = (_head(*self.idealised_heads[k]) for k in ("previous", "induction"))
        r, parts = self.recovery, self.recovery_chains
        recovered = lambda m: ratio(m[1] - m[2], m[1] - m[0])  # noqa: E731  (clean, ablated, idealised)
        for spec, kind, head in ((IDEAL_PREVIOUS, "previous", prev), (IDEAL_INDUCTION, "induction", ind)):
            rows.append(spec.measure(r[kind], chapter=CHAPTER, profile=p, model=name,
                                     interval=bootstrap_means(parts[kind], recovered, "held-out chains"), name=name,
                                     head=head))
        two_rows = np.concatenate([parts["induction"], parts["induction2"][2:]])  # clean, ablated, one, two
        more = lambda m: ratio(m[2] - m[3], m[1] - m[0])  # noqa: E731
        rows.append(IDEAL_TWO_TOKEN.measure(
            r["induction2"] - r["induction"], chapter=CHAPTER, profile=p, model=name,
            interval=bootstrap_means(two_rows, more, "held-out chains"), name=name, head=ind,
            one=f"{r['induction']:.3f}", two=f"{r['induction2']:.3f}"))
        return rows


def ablation_study(study: PhaseChangeStudy, *, name: str = FOCUS, n_tokens: int | None = None,
                   across: int | None = None, seed_across: int | None = None) -> AblationStudy:
    """Ablate every head of the final `name` (full and pattern-preserving) on `n_tokens` other
    held-out chains (full 128), attribute to the before-and-after vector (window start -> end of
    training), repeat at up to 8 snapshots spanning the window (on half the chains), ablate the
    induction heads (layer >= 1, prefix matching at least half the largest) together, and replace
    the strongest previous-token and induction heads' patterns by idealised ones. The same for the
    other training seeds' models of `study.seeds` (`AblationStudy.seeds`), with up to `seed_across`
    snapshots across the window (full 4) instead of `across` (8)."""
    from optim_hunter import zoo
    from optim_hunter.zoo import induction

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
    before_fused, _ = _snapshot_models(name, before_step, profile, hooked=False)
    with torch.no_grad():
        before_vec = _per_token_loss(before_fused, tokens).numpy().reshape(-1)
        after_vec = token_losses(final(tokens), tokens).reshape(-1)
    abl = head_ablations(final, tokens, early, late, HALF_WIDTH)
    attribution = {kind: before_after_attribution(getattr(abl, f"delta_{kind}"), before_vec, after_vec)
                   for kind in ("full", "preserved")}
    prefix = run.final_prefix
    L, H = prefix.shape
    chosen_heads = tuple((l, h) for l in range(1, L) for h in range(H) if prefix[l, h] >= 0.5 * np.nanmax(prefix[1:]))
    both = ablate_heads(final, tokens, chosen_heads, preserve_patterns=False).astype(np.float64)
    without_chains = np.asarray(icl_score(both, early, late, HALF_WIDTH))
    icl_without = float(icl_score(both.mean(0), early, late, HALF_WIDTH))
    inside = steps[(steps >= w.start // 2) & (steps <= min(steps[-1], 2 * w.end))]
    across_steps = inside[np.unique(np.linspace(0, len(inside) - 1, min(across, len(inside))).astype(int))]
    half = tokens[: n_tokens // 2]
    across, clean, removed, across_chains = {"full": [], "preserved": []}, [], [], []
    for step in across_steps:
        _, bridge = _snapshot_models(name, int(step), profile)
        a = head_ablations(bridge, half, early, late, HALF_WIDTH)
        across["full"].append((a.icl_full - a.clean_icl).reshape(-1))
        across["preserved"].append((a.icl_preserved - a.clean_icl).reshape(-1))
        joint_losses = ablate_heads(bridge, half, chosen_heads, preserve_patterns=False).astype(np.float64)
        joint = float(icl_score(joint_losses.mean(0), early, late, HALF_WIDTH))
        across_chains.append([a.chain_icl(early, late, HALF_WIDTH), icl_score(joint_losses, early, late, HALF_WIDTH)])
        clean.append(a.clean_icl)
        removed.append(1 - joint / a.clean_icl if a.clean_icl < 0 else np.nan)
    previous = run.scores["previous_token"][-1]
    top = int(np.nanargmax(prefix[1:]))
    ideal_heads = {"previous": (0, int(np.argmax(previous[0]))), "induction": (1 + top // H, top % H)}
    parts = {kind: recovery_losses(final, tokens, *ideal_heads["previous" if kind == "previous" else "induction"],
                                   idealised_pattern(tokens, kind))
             for kind in ("previous", "induction", "induction2")}
    recovery = {kind: float((m[1] - m[2]) / (m[1] - m[0])) for kind, m in ((k, v.mean(1)) for k, v in parts.items())}
    return AblationStudy(
        profile=profile, name=label, n_tokens=n_tokens, early=early, late=late, window=w, ablation=abl,
        attribution=attribution, prefix=prefix, previous=previous, before_step=before_step, last_step=int(steps[-1]),
        induction_heads=chosen_heads, icl_without=icl_without, across_steps=across_steps,
        across={k: np.stack(v) for k, v in across.items()}, across_clean=np.asarray(clean),
        across_removed=np.asarray(removed), idealised_heads=ideal_heads, recovery=recovery,
        without_chains=without_chains, across_chains=np.asarray(across_chains, dtype=np.float64),
        recovery_chains=parts,
        before_after=(before_vec.astype(np.float64) - after_vec.astype(np.float64)).reshape(n_tokens, -1),
        seed=study.seed, seeds=seeds,
    )


# --- the 2-layer model on Python source -----------------------------------------------------------


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
        """What the phase-change criterion (`_text_change`) reads: the best prefix-matching score of
        a layer >= 1 head and the ICL score's fall in the window."""
        return {"best": self.best[0], "drop": self.window.drop}

    @property
    def changed(self) -> bool:
        return _text_change(self.change_numbers)

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
            _log_lines(pd.concat([train.iloc[::5], held]), x="step", y="loss (nats)", group="curve",
                       title=f"{self.name}: loss over training"),
            _log_lines(behaviour, x="step", y="nats", group="measure",
                       title=f"{self.name}: in-context learning over training (negative: context helps)"),
        ] + [_log_lines(_head_lines(c["head_steps"], c[key], key), x="step", y=key, group="head",
                        title=f"{self.name}: {key} per head") for key in ("prefix_matching", "previous_token", "copying")]

    def heads_table(self) -> pd.DataFrame:
        c = self.curves
        L, H = c["prefix_matching"].shape[1:]
        return pd.DataFrame([{"head": _head(l, h), **{key: c[key][-1][l, h] for key in SCORES}}
                             for l in range(L) for h in range(H)]).set_index("head")

    def numbers(self) -> dict[str, Any]:
        c, f = self.curves, self.final
        best, layer, head = self.best
        return {
            "ih_text_loss": float(f["loss"][-1]), "ih_text_icl": float(f["icl"][-1]), "ih_text_best": best,
            "ih_text_head": _head(layer, head), "ih_text_kcomp": float(c["k_composition"][-1][layer, head]),
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
            _measured_only(TEXT_BEFORE), "; the model has no phase change by the chapter's criterion, so there is "
                                         "no change to be before: measured only, not a reproduction")
        return [
            TEXT_CHANGE.measure(best, chapter=CHAPTER, profile=p, model=self.name, tested=self.change_numbers,
                                budget=self.budget, best=_f(best), head=_head(layer, head), drop=_f(w.drop),
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
    from optim_hunter import zoo
    from optim_hunter.zoo import code_corpus

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

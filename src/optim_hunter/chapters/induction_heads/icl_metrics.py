"""The in-context-learning measures of the induction-heads chapter (Olsson et al. 2022): functions
of per-token losses and of curves over training snapshots, no model or claim named.

  loss by index     per-token loss [.., pos] where index i predicts token i+1 from i+1 tokens
                    (`token_losses`)
  ICL score         loss at a late index minus loss at an early one (negative: later tokens are
                    predicted better, i.e. the model learns from its context); the indices scale
                    with the context (the seed's 500th and 50th of 512 tokens)
  d loss / d log i  derivative of the loss with respect to the log of the context length
  phase change      the window of training steps where the ICL score falls fastest per log step
                    (`phase_change_window`), and the other curve measures the claims read: crossing
                    steps, fall rates per decade, divergence of two curves, non-convex steps, turns
                    of a trajectory
  PCA               per-token-loss vectors of every snapshot of several models, one shared basis
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter.core.losses import next_token_losses

SEED_EARLY, SEED_LATE, SEED_CONTEXT = 50, 500, 512  # Olsson et al.'s token indices and context
HALF_WIDTH = 2  # the ICL score averages the loss over index +- 2 (5 indices) at each end

# one value per training snapshot, as a list or an array
Steps = Sequence[int] | Int[np.ndarray, " snapshot"]
Curve = Sequence[float] | Float[np.ndarray, " snapshot"]


def token_losses(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> np.ndarray:
    """Per-token cross-entropy [batch, pos-1] (predicting token i+1 at index i), in float32 numpy."""
    return next_token_losses(logits.float(), tokens).detach().numpy()


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

"""Interventions on the attention heads of a hooked model, scored by per-token losses (no zoo model
or claim named: any `HookedModel` and tokens).

  ablations        per head, full (the head's output zeroed) and pattern-preserving (the head's
                   output zeroed while every attention pattern is frozen to its clean value, so
                   the head only loses its effect through values, not through later heads' keys
                   and queries); attributed to the ICL score and to the before/after vector
  idealised heads  a head's attention pattern replaced by an ideal one (exact previous token;
                   uniform over induction targets), scored by the share of the head's ablation
                   loss it recovers (Redwood's replication in the seed)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter.analysis import ablation, heads
from optim_hunter.chapters.induction_heads.icl_metrics import icl_score, token_losses
from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel

# --- ablations -----------------------------------------------------------------------------------


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

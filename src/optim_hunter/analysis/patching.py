"""Activation patching of the residual stream from one run into another, layer by position.

The source run (e.g. with in-context examples) and the target run (e.g. the bare query) may differ
in length: positions are aligned from the end, so the target's last token receives the source's
last token, and so on. Each cell of the result is the target's metric with one residual-stream
vector (before layer l, or after the last layer) replaced by the source's.

`residual_patching` runs one forward pass per cell (the reference); `residual_patching_batched`
computes the same grid with every cell a row of one batched forward, each stage's hook patching
only its own rows (`patched_logits`, which analyses also use directly with rows from many prompts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], float]


def stage_hooks(n_layers: int) -> list[str]:
    """Residual hooks in depth order: before each layer, then after the last."""
    return hooks.resid_stages(n_layers)


def _aligned(source: Tensor, target: Tensor, positions: Sequence[int] | None) -> tuple[int, list[int]]:
    """How far the source runs ahead of the target (the runs are end-aligned), and the target
    positions to patch (default: all)."""
    offset = source.shape[-1] - target.shape[-1]
    if offset < 0:
        raise ValueError("the source run must be at least as long as the target (end-aligned)")
    return offset, list(range(target.shape[-1])) if positions is None else list(positions)


@torch.no_grad()
def residual_patching(
    model: HookedModel,
    source: Int[Tensor, " source_pos"],
    target: Int[Tensor, " pos"],
    metric: Metric,
    *,
    positions: Sequence[int] | None = None,
    source_cache: Any = None,
    progress: bool = False,
) -> Float[np.ndarray, "stage _pos"]:
    """Metric of the target run with the residual stream at (stage, target position) taken from
    the source run. `positions` are target positions (default: all); stages are `stage_hooks`.
    `source_cache` (from `run_with_cache` of the source, e.g. under an ablation) replaces the
    clean source run."""
    offset, positions = _aligned(source, target, positions)
    hooks = stage_hooks(model.cfg.n_layers)
    wanted = set(hooks)
    cache = source_cache
    if cache is None:
        _, cache = model.run_with_cache(source[None], names_filter=lambda n: n in wanted)
    out = np.zeros((len(hooks), len(positions)))
    cells = [(s, p) for s in range(len(hooks)) for p in range(len(positions))]
    for s, p in tqdm(cells, disable=not progress, desc="patch"):
        pos = positions[p]
        donor = cache[hooks[s]][0, pos + offset]

        def patch(activation: Tensor, hook: Any, pos: int = pos, donor: Tensor = donor) -> Tensor:
            activation = activation.clone()
            activation[:, pos] = donor
            return activation

        logits = model.run_with_hooks(target[None], fwd_hooks=[(hooks[s], patch)])
        out[s, p] = metric(logits)
    return out


def first_transfer(
    effect: Float[np.ndarray, " stage"], clean: float, corrupt: float, threshold: float = 0.5
) -> int | None:
    """First stage whose patched metric recovers `threshold` of the way from corrupt to clean
    (None if none does): "the first layer at which patching transfers the task"."""
    span = clean - corrupt
    if span == 0:
        return None
    recovered = (np.asarray(effect) - corrupt) / span
    hits = np.flatnonzero(recovered >= threshold)
    return int(hits[0]) if len(hits) else None


def stage_residuals(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    positions: Int[Tensor, "batch _pos"] | Sequence[Sequence[int]],
    *,
    return_logits: bool = False,
) -> Float[Tensor, "batch _pos stage d_model"] | tuple[Tensor, Tensor]:
    """The residual stream at every stage (`stage_hooks`) at `positions[b]` of each row b: the
    donors of a patch. Only those vectors are kept, never a full cache; with `return_logits`,
    the run's logits too."""
    hooks = stage_hooks(model.cfg.n_layers)
    index = torch.as_tensor(positions)
    rows = torch.arange(tokens.shape[0])[:, None]
    kept: dict[str, Tensor] = {}

    def keeper(name: str) -> Callable:
        def keep(activation: Tensor, hook: Any) -> None:  # hook.name may be an alias's target
            kept[name] = activation[rows, index.to(activation.device)].detach().clone()

        return keep

    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(name, keeper(name)) for name in hooks])
    residuals = torch.stack([kept[name] for name in hooks], dim=2)
    return (residuals, logits) if return_logits else residuals


def patch_hooks(
    n_layers: int,
    stages: Sequence[int | None],
    positions: Sequence[int | Sequence[int]],
    donors: Sequence[Tensor] | Float[Tensor, "row ..."],
) -> list[tuple[str, Callable]]:
    """Forward hooks that write `donors[r]` into row r's residual stream at stage `stages[r]`
    and position(s) `positions[r]` (an int with a [d_model] donor, or a list with [k, d_model]);
    each stage's hook touches only its own rows (stage None: an unpatched row)."""
    names = stage_hooks(n_layers)
    hooks = []
    for stage in sorted({s for s in stages if s is not None}):
        cells = [(r, positions[r], donors[r]) for r, s in enumerate(stages) if s == stage]

        def patch(activation: Tensor, hook: Any, cells=cells) -> Tensor:
            activation = activation.clone()
            for row, pos, value in cells:
                activation[row, pos] = value.to(activation)
            return activation

        hooks.append((names[stage], patch))
    return hooks


@torch.no_grad()
def patched_logits(
    model: HookedModel,
    tokens: Int[Tensor, "row pos"],
    stages: Sequence[int | None],
    positions: Sequence[int | Sequence[int]],
    donors: Sequence[Tensor] | Float[Tensor, "row ..."],
) -> Float[Tensor, "row pos d_vocab"]:
    """One batched forward in which every row carries its own patch (see `patch_hooks`)."""
    hooks = patch_hooks(model.cfg.n_layers, stages, positions, donors)
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


@torch.no_grad()
def residual_patching_batched(
    model: HookedModel,
    source: Int[Tensor, " source_pos"],
    target: Int[Tensor, " pos"],
    metric: Metric,
    *,
    positions: Sequence[int] | None = None,
    source_cache: Any = None,
    batch_size: int = 64,
) -> Float[np.ndarray, "stage _pos"]:
    """`residual_patching` with every (stage, position) cell a row of a batched forward: the same
    grid in `ceil(cells / batch_size)` forward passes instead of one per cell."""
    offset, positions = _aligned(source, target, positions)
    n_stages = model.cfg.n_layers + 1
    if source_cache is None:
        donors = stage_residuals(model, source[None], [[p + offset for p in positions]])[0]
    else:
        hooks = stage_hooks(model.cfg.n_layers)
        donors = torch.stack([source_cache[h][0, [p + offset for p in positions]] for h in hooks], 1)
    cells = [(s, p) for s in range(n_stages) for p in range(len(positions))]
    out = np.zeros((n_stages, len(positions)))
    for start in range(0, len(cells), batch_size):
        chunk = cells[start : start + batch_size]
        logits = patched_logits(
            model, target[None].expand(len(chunk), -1), [s for s, _ in chunk],
            [positions[p] for _, p in chunk], torch.stack([donors[p, s] for s, p in chunk]),
        )
        for row, (s, p) in enumerate(chunk):
            out[s, p] = metric(logits[row : row + 1])
    return out

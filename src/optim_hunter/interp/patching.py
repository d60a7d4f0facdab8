"""Activation patching of the residual stream from one run into another, layer by position.

The source run (e.g. with in-context examples) and the target run (e.g. the bare query) may differ
in length: positions are aligned from the end, so the target's last token receives the source's
last token, and so on. Each cell of the result is the target's metric with one residual-stream
vector (before layer l, or after the last layer) replaced by the source's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

Metric = Callable[[Float[Tensor, "batch pos vocab"]], float]


def stage_hooks(n_layers: int) -> list[str]:
    """Residual hooks in depth order: before each layer, then after the last."""
    return [f"blocks.{l}.hook_resid_pre" for l in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"
    ]


@torch.no_grad()
def residual_patching(
    model: Any,
    source: Int[Tensor, " src_pos"],
    target: Int[Tensor, " tgt_pos"],
    metric: Metric,
    *,
    positions: Sequence[int] | None = None,
    source_cache: Any = None,
    progress: bool = False,
) -> Float[np.ndarray, "stage pos"]:
    """Metric of the target run with the residual stream at (stage, target position) taken from
    the source run. `positions` are target positions (default: all); stages are `stage_hooks`.
    `source_cache` (from `run_with_cache` of the source, e.g. under an ablation) replaces the
    clean source run."""
    offset = source.shape[-1] - target.shape[-1]
    if offset < 0:
        raise ValueError("the source run must be at least as long as the target (end-aligned)")
    hooks = stage_hooks(model.cfg.n_layers)
    wanted = set(hooks)
    cache = source_cache
    if cache is None:
        _, cache = model.run_with_cache(source[None], names_filter=lambda n: n in wanted)
    positions = list(range(target.shape[-1])) if positions is None else list(positions)
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

"""Ablations by hook name: zero or mean ablation of whole components or single attention heads.

`ablated(model, ...)` is a context manager: inside it, every forward pass of `model` (including
generation by `LLMRegressor`) runs with the chosen activations replaced. Means are computed over
positions and prompts by `mean_activations`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from optim_hunter.core import twins
from optim_hunter.core.hooks import HookedModel

MODES = ("zero", "mean")


@torch.no_grad()
def mean_activations(
    model: HookedModel, token_lists: Sequence[Tensor], hook_names: Sequence[str]
) -> dict[str, Float[Tensor, "..."]]:
    """Mean of each hook's activation over all positions of all prompts (the last dims kept)."""
    sums: dict[str, Tensor] = {}
    count = 0
    names = set(hook_names)
    for tokens in token_lists:
        _, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n in names)
        for name in hook_names:
            act = cache[name][0].double()  # [pos, ...]
            sums[name] = sums.get(name, 0) + act.sum(0)
        count += tokens.shape[-1]
    if count == 0:
        raise ValueError("mean_activations needs at least one prompt")
    return {name: (total / count).float() for name, total in sums.items()}


def _replacement(mode: str, mean: Tensor | None, heads: Sequence[int] | None):
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "mean" and mean is None:
        raise ValueError("mean ablation needs the mean activation (see mean_activations)")

    def hook(activation: Tensor, hook: Any) -> Tensor:
        value = torch.zeros_like(activation) if mode == "zero" else mean.to(activation).expand_as(activation)
        if heads is None:
            return value
        out = activation.clone()
        out[:, :, list(heads)] = value[:, :, list(heads)]  # hook_z is [batch, pos, head, d_head]
        return out

    return hook


@contextlib.contextmanager
def ablated(
    model: HookedModel,
    hook_names: Sequence[str],
    *,
    mode: str = "zero",
    means: Mapping[str, Tensor] | None = None,
    heads: Mapping[str, Sequence[int]] | None = None,
) -> Iterator[None]:
    """Run `model` with the activations at `hook_names` zeroed or replaced by their means.

    `heads` restricts an `...attn.hook_z` hook to some heads (the rest run normally).
    """
    hooks = [
        (name, _replacement(mode, (means or {}).get(name), (heads or {}).get(name)))
        for name in hook_names
    ]
    with model.hooks(fwd_hooks=hooks):
        yield


@contextlib.contextmanager
def mlps_zeroed(model: HookedModel, layers: Sequence[int]) -> Iterator[None]:
    """Zero the MLP output of `layers` with plain PyTorch hooks, in the hooked model's blocks and
    in its fused twin (`core.twins.fast_twin`) alike, so KV-cached decoding stays available and every
    path computes the same ablated function. Equivalent to zero-ablating `blocks.{l}.hook_mlp_out`
    (`ablated`), which instead sends everything through the slower hooked forward."""

    def zero(module: Any, args: Any, output: Tensor) -> Tensor:
        return torch.zeros_like(output)

    modules = [model.blocks[l].mlp for l in layers]
    twin = twins.fast_twin(model)
    if twin is not None:
        modules += [twin.base_model.layers[l].mlp for l in layers]
    handles = [module.register_forward_hook(zero) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()

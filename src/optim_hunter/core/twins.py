"""A hooked model's fast twin: the same weights without hook points, attached where the model loads.

A bridged Hugging Face model routes every module through hook points and eager attention, about
2x slower on a CPU than the model itself. The loader (`optim_hunter.zoo.hf.bridge`) therefore
attaches a *twin* sharing every parameter tensor (so a weight edit is seen by both) with fused
attention. Analyses read it here, below the zoo, so they run on any model: `fast_twin(model)` is the
twin only while no hook is attached to `model` (an ablation or a patch must go through the hooks),
and None for a model that has none (the book's own transformers).
"""

from __future__ import annotations

import weakref
from typing import Any

_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attach(model: Any, twin: Any) -> None:
    """Record `twin` as the un-hooked model computing what `model` computes."""
    _TWINS[model] = twin


def fast_twin(model: Any) -> Any | None:
    """The fused-attention model computing what `model` computes, or None when `model` has none
    or has a hook attached."""
    twin = _TWINS.get(model) if _weakrefable(model) else None
    if twin is None or hooks_attached(model):
        return None
    return twin


def _weakrefable(model: Any) -> bool:
    try:
        weakref.ref(model)
    except TypeError:
        return False
    return True


def hooks_attached(model: Any) -> bool:
    """True when any TransformerLens hook point of `model` has a hook (e.g. inside `model.hooks`)."""
    hook_dict = getattr(model, "hook_dict", {}) or {}
    return any(len(hp._forward_hooks) or len(hp._backward_hooks) for hp in hook_dict.values())

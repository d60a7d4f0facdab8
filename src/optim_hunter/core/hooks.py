"""One hook vocabulary: the hook points the analyses read, the residual-stream stages with their
labels, and the protocol every hooked model in the book satisfies.

Every zoo model — the book's own (bridged with `TransformerBridge.boot_native`), SmolLM2 and any
`hf:` model (bridged with `boot_transformers`) — exposes TransformerLens's standard hook names, so
an analysis written against the names below runs unchanged on all of them. Analyses build names
here instead of typing f-strings: one place to read what is hooked, one place to change it.

    pattern(l), scores(l)            attention probabilities / pre-softmax scores [batch, head, query_pos, key_pos]
    q(l), k(l), v(l), z(l)           per-head vectors [batch, pos, head, d_head]
    resid_pre(l), resid_mid(l), resid_post(l), attn_out(l), mlp_out(l)   [batch, pos, d_model]
    mlp_post(l)                      MLP hidden activations [batch, pos, d_mlp]
    resid_stages(n), stage_labels(n) the residual stream before each layer and after the last
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

EMBED = "hook_embed"
POS_EMBED = "hook_pos_embed"


def pattern(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def scores(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_attn_scores"


def q(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_q"


def k(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_k"


def v(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_v"


def z(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def resid_pre(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def resid_mid(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_mid"


def resid_post(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def attn_out(layer: int) -> str:
    return f"blocks.{layer}.hook_attn_out"


def mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def mlp_post(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


def resid_stages(n_layers: int) -> list[str]:
    """The residual stream before each layer, then after the last: n_layers + 1 stages."""
    return [resid_pre(layer) for layer in range(n_layers)] + [resid_post(n_layers - 1)]


def stage_labels(n_layers: int) -> list[str]:
    """Labels of `resid_stages`, for tables and figure axes."""
    return [f"before L{layer}" for layer in range(n_layers)] + [f"after L{n_layers - 1}"]


def only(names: Iterable[str]) -> Callable[[str], bool]:
    """A `names_filter` for `run_with_cache` that keeps exactly `names`."""
    wanted = frozenset(names)
    return wanted.__contains__


@runtime_checkable
class HookedModel(Protocol):
    """A TransformerLens-shaped model, as the analyses take it: a `TransformerBridge`, the affine
    model's `transformer.VectorModel`, or a test's stand-in. Analyses use its `cfg`, and as they
    need them its forward (`model(tokens)`), `run_with_cache`, `hooks(...)` and weight properties
    (`W_E`, `W_Q`, `W_O`, `W_U`, ...); only `cfg` is common to all, so only `cfg` is checked at run
    time (under pytest), and the names of the others are the hook vocabulary of this module."""

    cfg: Any

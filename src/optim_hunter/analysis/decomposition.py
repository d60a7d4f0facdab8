"""The residual stream at the last position, split into its writers, in one fused forward pass.

For a bridged Hugging Face Llama-family model (the book's pretrained `smollm2-135m`), hooked
`run_with_cache` forwards are eager and slow, and caching every hook costs gigabytes. This module
reads the same quantities from the model's fused-attention twin (`core.twins.fast_twin`) with plain
PyTorch hooks: the embedding, every attention head's output (its slice of `o_proj`'s input times
that slice of `o_proj`), every MLP's output, and the final residual before the final norm, all at
the last position. The pieces add up to the final residual exactly, so the residual before each
layer (`stages`) and the direct contribution of each component to a logit difference (`readout`,
through the final RMSNorm's own scale and weight) follow with no approximation; the last stage's
readout is the model's own logit difference.

Inside `reusing_prefixes()`, successive calls share the key/value cache of their common prefix:
many contrasts after one long prompt cost one pass over the prompt plus a few tokens each.

`available(model)` says whether this path applies (a twin of the Llama layout, no hook attached);
callers fall back to the hook-based analyses otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter.core import twins
from optim_hunter.core.hooks import HookedModel


def _layout(twin: Any) -> tuple[Any, Any] | None:
    base = getattr(twin, "base_model", None)
    layers, norm = getattr(base, "layers", None), getattr(base, "norm", None)
    if layers is None or norm is None or not hasattr(layers[0], "self_attn"):
        return None
    if not hasattr(layers[0].self_attn, "o_proj") or not hasattr(getattr(layers[0], "mlp", None), "down_proj"):
        return None
    return layers, norm


def available(model: HookedModel) -> bool:
    twin = twins.fast_twin(model)
    return twin is not None and _layout(twin) is not None


@dataclasses.dataclass(frozen=True)
class Decomposition:
    """Writers of the residual stream at one position of one prompt."""

    embed: Float[Tensor, " d_model"]
    heads: Float[Tensor, "layer head d_model"]
    mlps: Float[Tensor, "layer d_model"]
    final: Float[Tensor, " d_model"]  # the residual after the last layer, before the final norm
    neurons: Float[Tensor, "layer d_mlp"]  # each MLP's hidden activations (down_proj's input)
    norm_weight: Float[Tensor, " d_model"]
    norm_eps: float
    last_logits: Float[Tensor, " d_vocab"]

    def stages(self) -> Float[Tensor, "stage d_model"]:
        """The residual before each layer, then after the last (`probes.stage_labels`)."""
        per_layer = self.heads.sum(1) + self.mlps
        return torch.cat([self.embed[None], self.embed[None] + per_layer.cumsum(0)])

    def scale(self) -> Tensor:
        """The final RMSNorm's multiplier at this position: weight / rms(final residual)."""
        rms = torch.sqrt(self.final.pow(2).mean() + self.norm_eps)
        return self.norm_weight / rms

    def readout(self, vectors: Float[Tensor, "... d_model"], direction: Float[Tensor, " d_model"]) -> Tensor:
        """What each vector contributes along an unembedding direction, through the final norm
        as this position applies it (linear, since the norm's scale is fixed by `final`)."""
        return (vectors * self.scale()) @ direction


def neuron_effects(model: HookedModel, parts: Decomposition, direction: Float[Tensor, " d_model"]) -> Float[Tensor, "layer d_mlp"]:
    """Each MLP neuron's direct effect along `direction`: its activation times its output row
    (`down_proj` column) read through the final norm (the neurons of a layer sum to its MLP's
    readout)."""
    layers, _ = _layout(twins.fast_twin(model))
    read = parts.scale() * direction
    return torch.stack([
        parts.neurons[l] * (layer.mlp.down_proj.weight.float().T @ read) for l, layer in enumerate(layers)
    ])


_PREFIX: dict[str, Any] = {}  # active only inside `reusing_prefixes`: twin, tokens, cache
# Recent results per model (a weak key: a new model can never inherit a freed one's results, as
# an id() could), then keyed by tokens and the model's state.
_RESULTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KEEP = 64


def _state(twin: Any) -> tuple[int, int]:
    """What a result depends on besides the model and the tokens: its weights (in-place edits
    bump a tensor's version counter) and the PyTorch hooks on its modules (an ablation)."""
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in twin.modules())
    return sum(p._version for p in twin.parameters()), hooks


@contextlib.contextmanager
def reusing_prefixes() -> Iterator[None]:
    """Within this block, `decompose` reuses the key/value cache of the previous call's tokens for
    the prefix the next call shares with them (nothing may change the model meanwhile)."""
    _PREFIX.clear()
    _PREFIX["on"] = True
    try:
        yield
    finally:
        _PREFIX.clear()


def _shared(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@torch.no_grad()
def decompose(model: HookedModel, tokens: Int[Tensor, " pos"]) -> Decomposition:
    """The writers of the residual stream at the last position of `tokens` (one prompt)."""
    twin = twins.fast_twin(model)
    layout = _layout(twin) if twin is not None else None
    if layout is None:
        raise ValueError("decompose needs a bridged HF Llama-family model with no hook attached")
    key = (tuple(tokens.tolist()), _state(twin))
    remembered = _RESULTS.setdefault(twin, {})
    if key in remembered:  # the same prompt on the same model, e.g. contrasts, then their neurons
        return remembered[key]
    layers, norm = layout
    captured: dict[str, Any] = {"z": [], "mlp": [], "neurons": []}
    handles = _capture_hooks(layers, norm, captured)
    try:
        logits = _last_logits(twin, tokens)
    finally:
        for handle in handles:
            handle.remove()
    heads = []
    n_heads = twin.config.num_attention_heads
    for layer, z in zip(layers, captured["z"]):
        W_O = layer.self_attn.o_proj.weight  # [d_model, head * d_head]
        d_head = W_O.shape[1] // n_heads
        per_head = z.view(n_heads, d_head)
        heads.append(torch.einsum("hd,mhd->hm", per_head, W_O.view(W_O.shape[0], n_heads, d_head)))
    result = Decomposition(
        embed=captured["embed"].float(), heads=torch.stack(heads).float(),
        mlps=torch.stack(captured["mlp"]).float(), final=captured["final"].float(),
        neurons=torch.stack(captured["neurons"]).float(),
        norm_weight=norm.weight.detach().float(), norm_eps=float(getattr(norm, "variance_epsilon", 1e-6)),
        last_logits=logits.float(),
    )
    if len(remembered) >= _KEEP:
        remembered.pop(next(iter(remembered)))
    remembered[key] = result
    return result


def _capture_hooks(layers: Any, norm: Any, captured: dict[str, Any]) -> list[Any]:
    """Plain PyTorch hooks filling `captured` with the last position's embedding, each layer's
    head outputs before o_proj (`z`), MLP outputs and MLP neurons, and the final norm's input."""

    def take_embed(module, args, kwargs):
        captured.setdefault("embed", (args[0] if args else kwargs["hidden_states"])[0, -1])

    def take_z(module, args):
        captured["z"].append(args[0][0, -1])

    def take_mlp(module, args, output):
        captured["mlp"].append(output[0, -1])

    def take_neurons(module, args):
        captured["neurons"].append(args[0][0, -1])

    def take_final(module, args):
        captured["final"] = args[0][0, -1]

    handles = [layers[0].register_forward_pre_hook(take_embed, with_kwargs=True),
               norm.register_forward_pre_hook(take_final)]
    for layer in layers:
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(take_z))
        handles.append(layer.mlp.register_forward_hook(take_mlp))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(take_neurons))
    return handles


def _last_logits(twin: Any, tokens: Int[Tensor, " pos"]) -> Float[Tensor, " d_vocab"]:
    """The twin's logits at the last position; with the shared-prefix cache on, only the tokens
    after the prefix the previous prompt shares run (the hooks read the last one, which sees it all)."""
    ids = tokens.tolist()
    device = next(twin.parameters()).device
    if not _PREFIX.get("on"):
        # only the last position is unembedded (the 49k-wide unembedding is a fifth of a pass)
        return twin(tokens[None].to(device), logits_to_keep=1).logits[0, -1]
    from transformers import DynamicCache  # transformers takes seconds to import: only here

    start = 0
    if _PREFIX.get("twin") is twin:
        start = min(_shared(_PREFIX["tokens"], ids), len(ids) - 1)
    if start == 0:
        _PREFIX.update(twin=twin, cache=DynamicCache(config=twin.config))
    elif _PREFIX["cache"].get_seq_length() > start:
        _PREFIX["cache"].crop(start - _PREFIX["cache"].get_seq_length())  # drop the rest
    logits = twin(tokens[None, start:].to(device), past_key_values=_PREFIX["cache"],
                  use_cache=True, logits_to_keep=1).logits[0, -1]
    _PREFIX["tokens"] = ids
    return logits

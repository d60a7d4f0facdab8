"""Greedy decoding with a key/value cache for TransformerLens-native models (no hooks involved).

Recomputing the whole prompt for every generated token costs a full forward pass per token; with a
cache, the prompt is processed once and each further token attends to stored keys and values.
`NativeKVDecoder` does this for the `TransformerBridge.boot_native` architecture (learned absolute
or rotary positions, causal attention, no GQA / soft-caps), reading the native modules directly.
Because that bypasses hook points, `supports(model)` is False whenever any hook is attached (an
ablation, a patch): callers then fall back to full forward passes through the hooked model.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def _native(model: Any) -> Any:
    from transformer_lens.model_bridge.sources.native import NativeModel

    native = getattr(model, "original_model", None)
    return native if isinstance(native, NativeModel) else None


def hooks_attached(model: Any) -> bool:
    """True when any TransformerLens hook point of `model` has a hook (e.g. inside `model.hooks`)."""
    hook_dict = getattr(model, "hook_dict", {}) or {}
    return any(len(hp._forward_hooks) or len(hp._backward_hooks) for hp in hook_dict.values())


def supports(model: Any) -> bool:
    """Whether `NativeKVDecoder` computes exactly what `model(tokens)` computes."""
    native = _native(model)
    if native is None or hooks_attached(model):
        return False
    if float(getattr(native, "output_logits_soft_cap", 0) or 0) > 0:
        return False
    for block in native.layers:
        attn = block.attn
        if attn.kv_repeats != 1 or not attn.causal:
            return False
        if float(attn.attn_scores_soft_cap or 0) > 0:
            return False
    return True


class NativeKVDecoder:
    """Prefill a right-padded batch once, then extend every row by one token per step."""

    def __init__(self, model: Any):
        if not supports(model):
            raise ValueError("this model (or its attached hooks) needs the full forward path")
        self.native = _native(model)
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.valid: Bool[Tensor, "batch key"] | None = None

    def _attend(self, layer: int, x: Tensor, positions: Tensor, mask: Tensor) -> Tensor:
        attn = self.native.layers[layer].attn
        b, s, _ = x.shape
        q = attn.q(x).view(b, s, attn.n_heads, attn.d_head).transpose(1, 2)
        k = attn.k(x).view(b, s, attn.n_heads, attn.d_head).transpose(1, 2)
        v = attn.v(x).view(b, s, attn.n_heads, attn.d_head).transpose(1, 2)
        if attn.rotary is not None:  # keys are stored rotated, each at its own row's position
            q, k = attn.rotary.apply_rope(q, k, position_ids=positions)
        if len(self.keys) > layer:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
            self.keys[layer], self.values[layer] = k, v
        else:
            self.keys.append(k)
            self.values.append(v)
        scores = (q @ k.transpose(-2, -1)) / attn.scale
        scores = scores.masked_fill(mask[:, None], float("-inf"))
        pattern = torch.softmax(scores, dim=-1).masked_fill(mask[:, None], 0.0)
        out = (pattern @ v).transpose(1, 2).contiguous().view(b, s, -1)
        return attn.o(out)

    def _run(self, ids: Tensor, positions: Tensor, mask: Tensor) -> Tensor:
        native = self.native
        h = native.tok_embed(ids)
        if native.pos is not None:
            h = h + native.pos(positions)
        for layer, block in enumerate(native.layers):
            h = h + self._attend(layer, block.ln1(h), positions, mask)
            if not native.cfg.attn_only:
                h = h + block.mlp(block.ln2(h))
        return native.head(native.ln_out(h))

    @torch.no_grad()
    def prefill(self, tokens: Int[Tensor, "batch pos"], lengths: Int[Tensor, " batch"]) -> Float[Tensor, "batch vocab"]:
        """Logits after each row's last real token (rows right-padded to a common width)."""
        b, t = tokens.shape
        positions = torch.arange(t, device=tokens.device).expand(b, t)
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=tokens.device), diagonal=1)
        self.keys, self.values = [], []
        logits = self._run(tokens, positions, causal.expand(b, t, t))
        self.valid = torch.arange(t, device=tokens.device)[None] < lengths[:, None]
        self.next_position = lengths.clone()
        return logits[torch.arange(b), lengths - 1]

    @torch.no_grad()
    def step(self, next_ids: Int[Tensor, " batch"]) -> Float[Tensor, "batch vocab"]:
        """Append one token to every row; the logits that follow it."""
        b = next_ids.shape[0]
        self.valid = torch.cat([self.valid, torch.ones(b, 1, dtype=torch.bool, device=next_ids.device)], 1)
        mask = ~self.valid[:, None, :]  # [batch, 1 query, keys]
        logits = self._run(next_ids[:, None], self.next_position[:, None], mask)
        self.next_position = self.next_position + 1
        return logits[:, -1]

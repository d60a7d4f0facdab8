"""TransformerLens-native decoder-only models: the architecture config, a fused training forward,
and the hooked `TransformerBridge` built around trained weights.

The book's own language models are TransformerLens's `NativeModel` (the model behind
`TransformerBridge.boot_native`: pre-LayerNorm GPT-2-style blocks), so analyses see the standard
hook names and weight properties (`W_Q`, `W_O`, `W_U`, ...). Training does not go through the
bridge: `hidden` computes the same function with `scaled_dot_product_attention` (the native
attention materialises masked score matrices and is ~4x slower on a CPU), and tests check it
against `NativeModel.forward`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class NativeArch:
    """The shape of a native model. `d_mlp` 0 means 4 * d_model."""

    n_layers: int
    d_model: int
    n_heads: int
    n_ctx: int
    d_vocab: int
    d_mlp: int = 0
    act_fn: str = "gelu"
    positional: str = "standard"  # learned absolute positions (GPT-2) or "rotary" (Llama)
    attn_only: bool = False

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "n_ctx", "d_vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"NativeArch.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.positional not in ("standard", "rotary"):
            raise ValueError(f"positional must be 'standard' or 'rotary', got {self.positional!r}")
        if self.d_mlp < 0:
            raise ValueError(f"d_mlp must be >= 0, got {self.d_mlp}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


def bridge_config(arch: NativeArch, seed: int | None = None, model_name: str = "native"):
    """The `TransformerBridgeConfig` that `NativeModel` / `boot_native` take."""
    from transformer_lens.config import TransformerBridgeConfig

    return TransformerBridgeConfig(
        n_layers=arch.n_layers,
        d_model=arch.d_model,
        n_heads=arch.n_heads,
        d_head=arch.d_head,
        d_mlp=arch.d_mlp or 4 * arch.d_model,
        n_ctx=arch.n_ctx,
        d_vocab=arch.d_vocab,
        act_fn=arch.act_fn,
        normalization_type="LN",
        positional_embedding_type=arch.positional,
        attn_only=arch.attn_only,
        seed=seed,
        init_mode="gpt2",
        model_name=model_name,
        architecture="TransformerLensNative",
    )


def build(arch: NativeArch, seed: int) -> torch.nn.Module:
    """A freshly initialised `NativeModel`; the same seed gives the same weights."""
    from transformer_lens.model_bridge.sources.native import NativeModel, initialize_native_model

    cfg = bridge_config(arch, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # nn.Linear's own init draws before the seeded re-init
        model = NativeModel(cfg)
        initialize_native_model(model, model.cfg, seed=seed)
    return model


def hidden(
    model: torch.nn.Module, tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos d_model"]:
    """The final (post-LayerNorm) residual stream of a `NativeModel`, with fused attention."""
    batch, seq = tokens.shape
    if seq > model.cfg.n_ctx:
        raise ValueError(f"{seq} tokens exceed the model's context of {model.cfg.n_ctx}")
    h = model.tok_embed(tokens)
    if model.pos is not None:
        h = h + model.pos.weight[:seq]
    for block in model.layers:
        attn = block.attn
        x = block.ln1(h)
        q = attn.q(x).view(batch, seq, attn.n_heads, attn.d_head).transpose(1, 2)
        k = attn.k(x).view(batch, seq, attn.n_kv_heads, attn.d_head).transpose(1, 2)
        v = attn.v(x).view(batch, seq, attn.n_kv_heads, attn.d_head).transpose(1, 2)
        if attn.rotary is not None:
            q, k = attn.rotary.apply_rope(q, k)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / attn.scale)
        h = h + attn.o(z.transpose(1, 2).reshape(batch, seq, -1))
        if not model.cfg.attn_only:
            h = h + block.mlp(block.ln2(h))
    return model.ln_out(h)


def logits(model: torch.nn.Module, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos vocab"]:
    """`NativeModel.forward(tokens)` computed with fused attention."""
    return model.head(hidden(model, tokens))


def to_bridge(state_dict: dict[str, Tensor], arch: NativeArch, tokenizer: Any, name: str):
    """A hooked `TransformerBridge` around a fresh `NativeModel` holding `state_dict`.

    The bridge replaces the model's submodules in place, so it always gets its own copy.
    """
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    model = build(arch, seed=0)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    return build_bridge_from_module(
        model,
        architecture="TransformerLensNative",
        tl_config=copy.deepcopy(model.cfg),
        tokenizer=tokenizer,
        model_name=name,
    )

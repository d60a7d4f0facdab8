"""The one model core: the book's own transformers, their single forward, and their hooked bridge.

Every model the package trains is TransformerLens's `NativeModel` (the model behind
`TransformerBridge.boot_native`: pre-LayerNorm GPT-2-style blocks), so analyses see the standard
hook names and weight properties (`W_Q`, `W_O`, `W_U`, ...). `Arch` says which one:

    read_in      "tokens" (an embedding lookup) or "vectors" (x @ W_E: the affine-recurrence model)
    positional   "standard" (learned absolute, GPT-2) or "rotary" (Llama)
    attn_only    no MLPs (the induction-heads models)
    smeared keys k_j <- s k_j + (1 - s) k_{j-1}, s = sigmoid(alpha) per head (Olsson et al. 2022),
                 held by `LM` beside the native model

`forward` is the one forward pass, with fused attention (`scaled_dot_product_attention`; the native
attention materialises masked score matrices and is ~4x slower on a CPU). Training, fused
evaluation and key/value-cached decoding (`KVCache`, used by `kv_decoding.NativeKVDecoder`) all go
through it; tests check it against `NativeModel.forward` and the hooked bridge. `to_bridge` is the
one construction of the hooked `TransformerBridge` around trained weights; a vector read-in happens
before the bridge, so `VectorModel` wraps it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from optim_hunter.core import hooks
from optim_hunter.core.checkpoints import KEY_OMITS_DEFAULT


@dataclasses.dataclass(frozen=True)
class Arch:
    """The shape of a model. `d_mlp` 0 means 4 * d_model; `d_head` 0 means d_model // n_heads."""

    n_layers: int
    d_model: int
    n_heads: int
    n_ctx: int
    d_vocab: int  # tokens, or the width of the input and output vectors
    d_mlp: int = 0
    act_fn: str = "gelu"
    positional: str = "standard"  # learned absolute positions (GPT-2) or "rotary" (Llama)
    attn_only: bool = False
    d_head: int = dataclasses.field(default=0, metadata=KEY_OMITS_DEFAULT)
    read_in: str = dataclasses.field(default="tokens", metadata=KEY_OMITS_DEFAULT)

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "n_ctx", "d_vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Arch.{name} must be a positive integer, got {value!r}")
        if not self.d_head and self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.positional not in ("standard", "rotary"):
            raise ValueError(f"positional must be 'standard' or 'rotary', got {self.positional!r}")
        if self.read_in not in ("tokens", "vectors"):
            raise ValueError(f"read_in must be 'tokens' or 'vectors', got {self.read_in!r}")
        if self.read_in == "vectors" and self.positional != "standard":
            raise ValueError("a vector read-in needs learned positions (positional='standard')")
        if self.d_mlp < 0 or self.d_head < 0:
            raise ValueError(f"d_mlp and d_head must be >= 0, got {self.d_mlp}, {self.d_head}")

    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.n_heads


def bridge_config(arch: Arch, seed: int | None = None, model_name: str = "native"):
    """The `TransformerBridgeConfig` that `NativeModel` / `boot_native` take."""
    from transformer_lens.config import TransformerBridgeConfig

    return TransformerBridgeConfig(
        n_layers=arch.n_layers,
        d_model=arch.d_model,
        n_heads=arch.n_heads,
        d_head=arch.head_dim,
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


def build(arch: Arch, seed: int) -> nn.Module:
    """A freshly initialised `NativeModel`; the same seed gives the same weights."""
    from transformer_lens.model_bridge.sources.native import NativeModel, initialize_native_model

    cfg = bridge_config(arch, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # nn.Linear's own init draws before the seeded re-init
        model = NativeModel(cfg)
        initialize_native_model(model, model.cfg, seed=seed)
    return model


# --- the forward ---------------------------------------------------------------------------------


def smear(k: Float[Tensor, "batch pos head d_head"], alpha: Float[Tensor, " head"]) -> Tensor:
    """k_j <- sigmoid(alpha) k_j + (1 - sigmoid(alpha)) k_{j-1} for j >= 1; k_0 unchanged."""
    s = torch.sigmoid(alpha)[None, None, :, None].to(k.dtype)
    mixed = s * k[:, 1:] + (1 - s) * k[:, :-1]
    return torch.cat([k[:, :1], mixed], dim=1)


def read_in(W_E: Tensor, W_pos: Tensor, vectors: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, "batch pos d_model"]:
    """The residual stream entering block 0 of a vector model: vectors @ W_E + W_pos."""
    if vectors.ndim != 3 or vectors.shape[-1] != W_E.shape[0]:
        raise ValueError(f"vectors must be [batch, pos, {W_E.shape[0]}], got {tuple(vectors.shape)}")
    if vectors.shape[1] > W_pos.shape[0]:
        raise ValueError(f"{vectors.shape[1]} positions exceed the context of {W_pos.shape[0]}")
    return vectors.to(W_E.dtype) @ W_E + W_pos[: vectors.shape[1]]


class KVCache:
    """Keys and values of the positions seen so far, per layer ([batch, head, key_pos, d_head]), for
    decoding one token at a time (keys are stored after rotation, at their own positions)."""

    def __init__(self) -> None:
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []

    def extend(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if len(self.keys) > layer:
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=2)
            self.values[layer] = torch.cat([self.values[layer], v], dim=2)
        else:
            self.keys.append(k)
            self.values.append(v)
        return self.keys[layer], self.values[layer]


def _attention(
    attn: nn.Module,
    x: Float[Tensor, "batch pos d_model"],
    alpha: Float[Tensor, " head"] | None,
    cache: KVCache | None,
    layer: int,
    positions: Int[Tensor, "batch pos"] | None,
    keep: Bool[Tensor, "batch 1 1 key_pos"] | None,
) -> Float[Tensor, "batch pos d_model"]:
    batch, seq, _ = x.shape
    q = attn.q(x).view(batch, seq, attn.n_heads, attn.d_head)
    k = attn.k(x).view(batch, seq, attn.n_kv_heads, attn.d_head)
    v = attn.v(x).view(batch, seq, attn.n_kv_heads, attn.d_head)
    if alpha is not None:
        k = smear(k, alpha)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if attn.rotary is not None:
        q, k = attn.rotary.apply_rope(q, k) if positions is None else attn.rotary.apply_rope(q, k, position_ids=positions)
    if cache is not None:
        k, v = cache.extend(layer, k, v)
    # Rows of a decoded batch are right-padded: causal masking keeps a row's real positions from
    # seeing its padding during the prefill; later steps mask the padding keys with `keep`.
    z = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, is_causal=keep is None, scale=1.0 / attn.scale)
    return attn.o(z.transpose(1, 2).reshape(batch, seq, -1))


def forward(
    native: nn.Module,
    inputs: Int[Tensor, "batch pos"] | Float[Tensor, "batch pos d_vocab"],
    *,
    alpha: Float[Tensor, "layer head"] | None = None,
    cache: KVCache | None = None,
    positions: Int[Tensor, "batch pos"] | None = None,
    keep: Bool[Tensor, "batch 1 1 key_pos"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """The residual stream after the last block (before the final LayerNorm) of a `NativeModel`.

    `inputs` are token ids, or [batch, pos, d_vocab] vectors for a vector read-in. `alpha` smears
    the keys. With a `cache`, the inputs continue the cached positions: `positions` says where each
    row's inputs sit and `keep` which cached keys each row may see (None: causal, for a prefill).
    """
    seq = inputs.shape[1]
    if positions is None and seq > native.cfg.n_ctx:
        raise ValueError(f"{seq} tokens exceed the model's context of {native.cfg.n_ctx}")
    if alpha is not None and cache is not None:
        raise ValueError("smeared keys mix each key with the previous one: decode without a cache")
    if inputs.is_floating_point():
        h = read_in(native.tok_embed.weight, native.pos.weight, inputs)
    else:
        h = native.tok_embed(inputs)
        if native.pos is not None:
            h = h + (native.pos.weight[:seq] if positions is None else native.pos(positions))
    for layer, block in enumerate(native.layers):
        smeared = None if alpha is None else alpha[layer]
        h = h + _attention(block.attn, block.ln1(h), smeared, cache, layer, positions, keep)
        if not native.cfg.attn_only:
            h = h + block.mlp(block.ln2(h))
    return h


def hidden(native: nn.Module, inputs: Tensor, **kwargs: Any) -> Float[Tensor, "batch pos d_model"]:
    """The final (post-LayerNorm) residual stream: what the unembedding reads."""
    return native.ln_out(forward(native, inputs, **kwargs))


def logits(native: nn.Module, inputs: Tensor, **kwargs: Any) -> Float[Tensor, "batch pos d_vocab"]:
    """`NativeModel.forward(tokens)` (or a vector model's predictions), with fused attention."""
    return native.head(hidden(native, inputs, **kwargs))


class LM(nn.Module):
    """A `NativeModel` plus, for smeared keys, `alpha` [layer, head], run by the one fused forward:
    the trained module of the attention-only families and every family's fast unhooked module. `state_dict()` holds `native.*` and `alpha`, so the trainer's
    optimiser and checkpoints see the alphas."""

    def __init__(self, arch: Arch, seed: int, smeared: bool = False):
        super().__init__()
        self.native = build(arch, seed)
        self.smeared = smeared
        if smeared:
            self.alpha = nn.Parameter(torch.zeros(arch.n_layers, arch.n_heads))

    def forward(self, inputs: Int[Tensor, "batch pos"] | Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits for tokens, or predicted vectors for a vector read-in."""
        return logits(self.native, inputs, alpha=self.alpha if self.smeared else None)

    @classmethod
    def from_state(cls, state_dict: Mapping[str, Tensor], arch: Arch) -> LM:
        """An `LM` holding a checkpoint's weights, in eval mode: an `LM`'s own (`native.*`, and
        `alpha` for smeared keys) or a bare `NativeModel`'s."""
        lm = cls(arch, seed=0, smeared="alpha" in state_dict)
        if any(k.startswith("native.") for k in state_dict):
            lm.load_state_dict(dict(state_dict), strict=True)
        else:
            lm.native.load_state_dict(dict(state_dict), strict=True)
        return lm.eval()


def lm_bridge(state_dict: Mapping[str, Tensor], arch: Arch, tokenizer: Any, name: str) -> Any:
    """The hooked bridge of an `LM` checkpoint: its native weights, and for smeared keys
    permanent hooks applying the trained alphas."""
    weights = {k[len("native."):]: v for k, v in state_dict.items() if k.startswith("native.")}
    bridge = to_bridge(weights, arch, tokenizer, name)
    if "alpha" in state_dict:
        add_smear_hooks(bridge, state_dict["alpha"])
    return bridge


# --- the hooked model ----------------------------------------------------------------------------


def to_bridge(state_dict: Mapping[str, Tensor], arch: Arch, tokenizer: Any, name: str) -> Any:
    """A hooked `TransformerBridge` around a fresh `NativeModel` holding `state_dict`, in eval
    mode; a `VectorModel` around it for a vector read-in. The bridge replaces the model's
    submodules in place, so it always gets its own copy."""
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    model = build(arch, seed=0)
    model.load_state_dict(dict(state_dict), strict=True)
    model.eval()
    bridge = build_bridge_from_module(
        model,
        architecture="TransformerLensNative",
        tl_config=copy.deepcopy(model.cfg),
        tokenizer=tokenizer,
        model_name=name,
    )
    return (VectorModel(bridge) if arch.read_in == "vectors" else bridge).eval()


def add_smear_hooks(bridge: Any, alpha: Float[Tensor, "layer head"]) -> None:
    """Permanent hooks on `blocks.{l}.attn.hook_k` applying the smear with `alpha` (kept on the
    bridge as `.smear_alpha`)."""
    bridge.smear_alpha = alpha.detach().clone()
    for layer in range(alpha.shape[0]):
        def hook(k: Tensor, hook: Any, layer: int = layer) -> Tensor:
            return smear(k, bridge.smear_alpha[layer])

        bridge.add_hook(hooks.k(layer), hook, is_permanent=True)


class VectorModel(nn.Module):
    """A hooked `TransformerBridge` that reads vectors: `model(vectors)` is the bridge run from
    block 0 on `vectors @ W_E + W_pos`, so it has no `hook_embed` (`blocks.0.hook_resid_pre`
    holds the read-in). Attributes not defined here (W_Q, cfg, hooks, blocks, ...) are the
    bridge's."""

    def __init__(self, bridge: nn.Module):
        super().__init__()
        self.bridge = bridge

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            bridge = self._modules.get("bridge")
            if bridge is None:
                raise
            return getattr(bridge, name)

    def embed(self, vectors: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, "batch pos d_model"]:
        return read_in(self.bridge.W_E, self.bridge.W_pos, vectors)

    def forward(self, vectors: Tensor, **kwargs: Any) -> Tensor:
        """The bridge's output for `vectors` [batch, pos, d_vocab], run from block 0."""
        return self.bridge(self.embed(vectors), start_at_layer=0, **kwargs)

    def run_with_cache(self, vectors: Tensor, **kwargs: Any):
        return self.bridge.run_with_cache(self.embed(vectors), start_at_layer=0, **kwargs)

    def run_with_hooks(self, vectors: Tensor, **kwargs: Any):
        return self.bridge.run_with_hooks(self.embed(vectors), start_at_layer=0, **kwargs)


def native_of(model: Any) -> nn.Module | None:
    """The `NativeModel` behind a bridge, a `VectorModel`, an `LM` or itself; None for other models."""
    from transformer_lens.model_bridge.sources.native import NativeModel

    if isinstance(model, LM):
        model = model.native
    elif isinstance(model, VectorModel):
        model = model.bridge
    if not isinstance(model, NativeModel):
        model = getattr(model, "original_model", None)
    return model if isinstance(model, NativeModel) else None


def state_dict_of(model: Any) -> dict[str, Tensor]:
    """The `NativeModel` state dict behind a bridge, a `VectorModel` or a plain model (copies).

    The bridge lists every weight under several aliases and carries an unembedding bias the
    native model lacks: the native model's own keys are picked out (the bias must be zero)."""
    from transformer_lens.model_bridge.sources.native import NativeModel

    original = native_of(model)
    if original is None:
        raise TypeError(f"{type(model).__name__} holds no TransformerLens NativeModel")
    state = {k.replace("._original_component", ""): v for k, v in original.state_dict().items()}
    bias = state.get("head.bias")
    if bias is not None and bool(bias.any()):
        raise ValueError("the bridge's unembedding has a nonzero bias: not a plain native model")
    wanted = NativeModel(copy.deepcopy(original.cfg)).state_dict().keys()
    return {k: state[k].detach().clone() for k in wanted}

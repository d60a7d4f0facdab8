"""FLOPs of a model's forward passes, attention included: what the speed goals divide by.

`torch.utils.flop_counter` counts matrix products, but it has no formula for the attention kernel
PyTorch runs on a CPU (`aten._scaled_dot_product_flash_attention_for_cpu`), so on a CPU it counts
a language model's prompt pass without its attention: about a fifth of the work of a 1,400-token
prompt of SmolLM2-135M, left out of every rate computed from it. `counted(fn)` adds that formula,
and counts what a causal kernel has to compute: the score and value products of the (query, key)
pairs the mask keeps (`attended_pairs`), not the whole score matrix.

Counting every operation that way slows a pass down, so a whole chapter is tallied differently:
`watch(hf_model)` hooks a Hugging Face causal LM (the model, and the one inside a bridge) and adds
up, for every pass, what the same products cost (`pass_flops`: 2 FLOPs per weight of the
blocks' linear layers per token, the attended pairs of a causal pass over cached keys, and the
unembedding for the positions it reads out). `TALLY` holds the process's total; with
`OPTIM_HUNTER_FLOPS_LOG` set (the book's executor sets it for each chapter) it is written there,
atomically, every few seconds and at exit: the compute floor `make bench` divides by.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

from optim_hunter.core import diskspace

T = TypeVar("T")
_CPU_ATTENTION = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def attended_pairs(queries: int, keys: int, causal: bool) -> int:
    """(query, key) pairs an attention computes. Causal as PyTorch's `is_causal` defines it: query
    i sees keys 0 .. i (the mask aligned at the top left), every key when `causal` is False."""
    if queries < 0 or keys < 0:
        raise ValueError(f"queries and keys must be >= 0, got {queries} and {keys}")
    if not causal:
        return queries * keys
    seen = min(queries, keys)  # queries 0 .. seen-1 see i + 1 keys; any later one sees them all
    return seen * (seen + 1) // 2 + (queries - seen) * keys


def _cpu_attention_flops(query_shape: tuple[int, ...], key_shape: tuple[int, ...], value_shape: tuple[int, ...],
                         dropout_p: float = 0.0, is_causal: bool = False, *args: Any, attn_mask: Any = None,
                         out_shape: Any = None, **kwargs: Any) -> int:
    """Scores (2 d_head FLOPs a pair) and the weighted values (2 d_value a pair), every head.
    A mask passed as a tensor is counted as attending to every key: the kernel computes them."""
    batch, heads, queries, d_head = query_shape
    keys, d_value = key_shape[-2], value_shape[-1]
    causal = bool(is_causal) and attn_mask is None
    return 2 * batch * heads * attended_pairs(queries, keys, causal) * (d_head + d_value)


def counter() -> FlopCounterMode:
    """torch's FLOP counter with the CPU attention kernel counted."""
    return FlopCounterMode(display=False, custom_mapping={_CPU_ATTENTION: _cpu_attention_flops})


def counted(fn: Callable[[], T]) -> tuple[T, int]:
    """`fn()`'s result and the FLOPs it ran (matrix products and attention)."""
    with counter() as mode:
        result = fn()
    return result, int(mode.get_total_flops())


# --- a tally of a language model's passes ----------------------------------------------------------

LOG_ENV = "OPTIM_HUNTER_FLOPS_LOG"
WRITE_EVERY_S = 5.0


@dataclasses.dataclass(frozen=True)
class DecoderCost:
    """What one token costs in a causal decoder: the weights of its blocks' linear layers, and per
    attended (query, key) pair 2 (d_head + d_value) FLOPs in each head of each layer."""

    block_weights: int
    layers: int
    heads: int
    d_head: int

    @classmethod
    def of(cls, hf_model: Any) -> DecoderCost:
        """From a Hugging Face causal LM (its `base_model` and `config`)."""
        config = hf_model.config
        heads = config.num_attention_heads
        d_head = getattr(config, "head_dim", None) or config.hidden_size // heads
        weights = sum(m.in_features * m.out_features for m in hf_model.base_model.modules()
                      if isinstance(m, torch.nn.Linear))
        return cls(weights, config.num_hidden_layers, heads, d_head)


def pass_flops(cost: DecoderCost, rows: int, new: int, past: int) -> int:
    """The blocks of one causal pass: `rows` rows of `new` tokens after `past` cached ones (query i
    sees the cached keys and new keys 0 .. i), the unembedding left out."""
    pairs = new * past + new * (new + 1) // 2
    return 2 * rows * new * cost.block_weights + 2 * rows * cost.layers * cost.heads * pairs * 2 * cost.d_head


@dataclasses.dataclass
class Tally:
    """FLOPs and passes counted so far in this process, written to `OPTIM_HUNTER_FLOPS_LOG`."""

    flops: int = 0
    passes: int = 0
    written_at: float = 0.0

    def add(self, flops: int, passes: int = 0) -> None:
        self.flops += int(flops)
        self.passes += passes
        if time.monotonic() - self.written_at >= WRITE_EVERY_S:
            self.write()

    def write(self) -> None:
        path = os.environ.get(LOG_ENV)
        self.written_at = time.monotonic()
        if path and self.passes:
            text = json.dumps({"flops": self.flops, "passes": self.passes})
            diskspace.atomic_write(Path(path), lambda tmp: tmp.write_text(text))


TALLY = Tally()
atexit.register(TALLY.write)


def watch(hf_model: Any, tally: Tally = TALLY) -> None:
    """Count every pass of `hf_model` (a Hugging Face causal LM, bridged or not) into `tally`. A
    call the hooks cannot read (no input tensor, an unknown cache) is left uncounted, never
    refused: counting must not break an analysis."""
    cost = DecoderCost.of(hf_model)
    d_model = hf_model.config.hidden_size

    def blocks(module: Any, args: tuple, kwargs: dict) -> None:
        inputs = kwargs.get("input_ids", args[0] if args else None)
        if inputs is None:
            inputs = kwargs.get("inputs_embeds")
        past = _cached_length(kwargs.get("past_key_values"))
        if isinstance(inputs, torch.Tensor) and inputs.dim() >= 2 and past is not None:
            tally.add(pass_flops(cost, inputs.shape[0], inputs.shape[1], past), passes=1)

    def unembedding(module: Any, args: tuple, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            tally.add(2 * output.numel() * d_model)

    hf_model.base_model.register_forward_pre_hook(blocks, with_kwargs=True)
    hf_model.get_output_embeddings().register_forward_hook(unembedding)


def _cached_length(cache: Any) -> int | None:
    """Positions already in a pass's key/value cache (0 without one); None when unreadable."""
    if cache is None:
        return 0
    try:
        return int(cache.get_seq_length())
    except (AttributeError, TypeError, ValueError):
        return None

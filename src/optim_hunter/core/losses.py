"""The one next-token cross-entropy: what every trainer, evaluation and analysis of the package
scores a language model's logits with.
"""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


def cross_entropy(
    logits: Float[Tensor, "*batch d_vocab"], targets: Int[Tensor, "*batch"], reduction: str = "mean"
) -> Tensor:
    """Cross-entropy of `targets` under `logits` (aligned: position i's logits score target i);
    `reduction` "none" keeps the targets' shape, "mean" and "sum" reduce over every position."""
    out = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)
    return out.view(targets.shape) if reduction == "none" else out


def next_token_losses(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos_1"]:
    """Per-token loss of predicting token i + 1 from position i: [batch, pos - 1], on the logits' device."""
    return cross_entropy(logits[:, :-1], tokens[:, 1:].to(logits.device), "none")

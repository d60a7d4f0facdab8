"""Direct attribution along an answer direction: logit differences per layer and per component.

A *contrast* is one prompt and two candidate answers (say the true y and the kNN prediction). Both
answers are tokenized after the prompt; at the first token where they differ, the unembedding
direction W_U[:, a] - W_U[:, b] separates them. Projecting the (final-LayerNorm-scaled) residual
stream on that direction gives the logit difference the model has accumulated after each layer,
and how much each attention head, MLP and the embeddings contribute to it. Written against hook
names and `W_U`, so it runs on zoo models and bridged Hugging Face models alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter.analysis import decomposition
from optim_hunter.core.hooks import HookedModel


@dataclasses.dataclass(frozen=True)
class Contrast:
    """Input tokens up to the deciding position, and the two tokens that decide between answers."""

    tokens: Int[Tensor, " pos"]
    token_a: int
    token_b: int


def make_contrast(tokenizer: Any, prompt: str, answer_a: str, answer_b: str) -> Contrast | None:
    """The contrast of two answers after `prompt`, or None when they tokenize identically."""
    ids_a = list(tokenizer(prompt + answer_a)["input_ids"])
    ids_b = list(tokenizer(prompt + answer_b)["input_ids"])
    for k, (a, b) in enumerate(zip(ids_a, ids_b)):
        if a != b:
            if k == 0:
                raise ValueError("the answers change the prompt's first token; nothing to contrast")
            return Contrast(torch.tensor(ids_a[:k]), a, b)
    return None


def answer_direction(model: HookedModel, contrast: Contrast) -> Float[Tensor, " d_model"]:
    W_U = model.W_U
    return W_U[:, contrast.token_a] - W_U[:, contrast.token_b]


@torch.no_grad()
def logit_difference(model: HookedModel, contrast: Contrast) -> float:
    """The model's own logit(a) - logit(b) at the deciding position."""
    logits = model(contrast.tokens[None])
    return float(logits[0, -1, contrast.token_a] - logits[0, -1, contrast.token_b])


def _fast(model: HookedModel, contrast: Contrast):
    """The one-pass decomposition (`analysis.decomposition`) and the answer direction, when the
    model has a fused twin; None otherwise (the hooked path below runs instead)."""
    if not decomposition.available(model):
        return None
    return decomposition.decompose(model, contrast.tokens), answer_direction(model, contrast).float()


@torch.no_grad()
def by_layer(model: HookedModel, contrast: Contrast) -> tuple[Float[np.ndarray, " stage"], list[str]]:
    """Logit difference read from the accumulated residual stream before each layer (and at the
    end), after the final LayerNorm's scaling: where in depth the decision appears. On a bridged
    HF model the final norm's weight is applied too, so the last stage is the model's own logit
    difference."""
    fast = _fast(model, contrast)
    if fast is not None:
        parts, direction = fast
        labels = [f"{l}_pre" for l in range(model.cfg.n_layers)] + ["final_post"]
        return parts.readout(parts.stages(), direction).cpu().numpy(), labels
    _, cache = model.run_with_cache(contrast.tokens[None])
    stack, labels = cache.accumulated_resid(layer=-1, incl_mid=False, pos_slice=-1, return_labels=True)
    scaled = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
    values = (scaled[:, 0] @ answer_direction(model, contrast)).cpu().numpy()
    return values, list(labels)


@torch.no_grad()
def by_component(model: HookedModel, contrast: Contrast) -> tuple[Float[np.ndarray, " component"], list[str]]:
    """Direct contribution of every attention head, every MLP, the embeddings and the biases to
    the logit difference (they sum to the total up to the unembedding bias)."""
    fast = _fast(model, contrast)
    if fast is not None:
        parts, direction = fast
        n_layers, n_heads = parts.heads.shape[:2]
        vectors = torch.cat([parts.heads.reshape(-1, parts.heads.shape[-1]), parts.mlps, parts.embed[None]])
        labels = [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]
        labels += [f"{l}_mlp_out" for l in range(n_layers)] + ["embed"]
        return parts.readout(vectors, direction).cpu().numpy(), labels
    _, cache = model.run_with_cache(contrast.tokens[None])
    stack, labels = cache.get_full_resid_decomposition(
        layer=-1, expand_neurons=False, apply_ln=True, pos_slice=-1, return_labels=True
    )
    values = (stack[:, 0] @ answer_direction(model, contrast)).cpu().numpy()
    return values, list(labels)


def summarize(
    model: HookedModel, contrasts: Sequence[Contrast | None], *, per: str = "layer"
) -> pd.DataFrame:
    """Mean and standard error over contrasts of `by_layer` or `by_component` (None skipped)."""
    fn = {"layer": by_layer, "component": by_component}[per]
    rows, labels = [], None
    with decomposition.reusing_prefixes():  # contrasts after one prompt share its pass
        for contrast in contrasts:
            if contrast is None:
                continue
            values, labels = fn(model, contrast)
            rows.append(values)
    if not rows:
        raise ValueError("no contrast to summarize (all answer pairs were identical)")
    data = np.stack(rows)
    return pd.DataFrame(
        {
            "label": labels,
            "mean": data.mean(0),
            "sem": data.std(0, ddof=1) / np.sqrt(len(data)) if len(data) > 1 else np.nan,
            "n": len(data),
        }
    )


def by_layer_many(model: HookedModel, contrasts: dict[Any, Contrast | None]) -> pd.DataFrame:
    """`by_layer` of many contrasts as a tidy table (key, stage, label, value), None skipped.
    Contrasts are read in the mapping's order, and consecutive ones after the same prompt share
    its pass (`decomposition.reusing_prefixes`): put each prompt's contrasts together."""
    rows = []
    with decomposition.reusing_prefixes():
        for key, contrast in contrasts.items():
            if contrast is None:
                continue
            values, labels = by_layer(model, contrast)
            rows.extend({"key": key, "stage": s, "label": labels[s], "value": float(v)}
                        for s, v in enumerate(values))
    return pd.DataFrame(rows, columns=["key", "stage", "label", "value"])

"""OV and QK circuits and direct attribution with the LayerNorms folded in, for pre-LN models.

A pre-LayerNorm block reads its input x (a residual-stream row vector) as

    LN(x) = C x / sigma(x) * w + b,   C = I - 11^T / d_model,   sigma(x) = sqrt(var(x) + eps),

so everything a head computes from x is a fixed linear map of the normalised vector
x_hat = C x / sigma(x), plus constants. Folding (Elhage et al. 2021; TransformerLens's `fold_ln`)
moves the LayerNorm's centring and weight into the next matrices and its bias into the biases:

    folded W_V  = C diag(w) W_V            value bias  = b W_V + b_V
    folded W_Q  = C diag(w) W_Q            query bias  = b W_Q + b_Q     (keys alike)
    folded W_U  = C diag(w_final) W_U      constant    = b_final W_U

The value bias reaches the residual stream as (value bias) W_O whatever the attention pattern
(each pattern row sums to one), so "folding value biases" moves it into the output bias and leaves
each head's output as (z - value bias) W_O. Direct attribution of a component c (any vector
written into the residual stream) at a position reads it as the final LayerNorm reads it:
(C c / sigma_final) diag(w_final) W_U, with sigma_final the whole residual's scale there; summed
over every component it gives the model's output minus b_final W_U.

Everything is computed from the weight properties and LayerNorm parameters of a TransformerBridge
(or any object exposing `W_Q`, `W_K`, `W_V`, `W_O`, `b_V`, `W_U`, `blocks[l].ln1`, `ln_final`) and
from standard hook names, never from a processed copy of the model, so the model is left as is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel


def _centering(d: int, dtype=torch.float64) -> Tensor:
    return torch.eye(d, dtype=dtype) - torch.full((d, d), 1.0 / d, dtype=dtype)


def layer_norm(module: Any) -> tuple[Tensor, Tensor]:
    """(weight, bias) of a LayerNorm or a bridge wrapping one, in float64."""
    return module.weight.detach().double(), module.bias.detach().double()


def ln1(model: HookedModel, layer: int) -> tuple[Tensor, Tensor]:
    return layer_norm(model.blocks[layer].ln1)


def normalize(x: Float[Tensor, "... d_model"], eps: float = 1e-5) -> Float[Tensor, "... d_model"]:
    """x_hat = (x - mean) / sqrt(var + eps): LayerNorm without its weight and bias."""
    x = x.double()
    centred = x - x.mean(-1, keepdim=True)
    return centred / (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def folded_W_V(model: HookedModel, layer: int) -> Float[Tensor, "head d_model d_head"]:
    w, _ = ln1(model, layer)
    C = _centering(w.shape[0])
    return (C * w[None, :]) @ model.W_V[layer].detach().double()  # C diag(w) W_V per head


def folded_W_Q(model: HookedModel, layer: int) -> Float[Tensor, "head d_model d_head"]:
    w, _ = ln1(model, layer)
    return (_centering(w.shape[0]) * w[None, :]) @ model.W_Q[layer].detach().double()


def folded_W_K(model: HookedModel, layer: int) -> Float[Tensor, "head d_model d_head"]:
    w, _ = ln1(model, layer)
    return (_centering(w.shape[0]) * w[None, :]) @ model.W_K[layer].detach().double()


def value_bias(model: HookedModel, layer: int) -> Float[Tensor, "head d_head"]:
    """The constant part of every value vector: b_ln1 W_V + b_V."""
    _, b = ln1(model, layer)
    return torch.einsum("d,hde->he", b, model.W_V[layer].detach().double()) + model.b_V[layer].detach().double()


def folded_ov(model: HookedModel, layer: int) -> Float[Tensor, "head d_model d_model"]:
    """Per head, the map from the block's input x to what the head writes when it attends to x
    with weight one, without the value bias: x_hat (folded W_V) W_O, with x_hat = normalize(x)."""
    return folded_W_V(model, layer) @ model.W_O[layer].detach().double()


def folded_qk(model: HookedModel, layer: int) -> Float[Tensor, "head d_model d_model"]:
    """Per head, the bilinear form of the attention score without biases:
    score = x_hat_q (folded W_Q)(folded W_K)^T x_hat_k^T / sqrt(d_head)."""
    return folded_W_Q(model, layer) @ folded_W_K(model, layer).transpose(-1, -2)


def folded_unembed(model: HookedModel) -> Float[Tensor, "d_model d_vocab"]:
    """C diag(w_final) W_U: the read-out of a normalised residual vector (b_final W_U aside)."""
    w, _ = layer_norm(model.ln_final)
    return (_centering(w.shape[0]) * w[None, :]) @ model.W_U.detach().double()


def head_outputs(model: HookedModel, cache: Any, layer: int) -> Float[Tensor, "batch pos head d_model"]:
    """What each head writes into the residual stream with its value bias folded out:
    (z - value bias) W_O, from the cached `blocks.{layer}.attn.hook_z`."""
    z = cache[hooks.z(layer)].double()
    z = z - value_bias(model, layer)[None, None]
    return torch.einsum("bphe,hed->bphd", z, model.W_O[layer].detach().double())


def final_scale(cache: Any) -> Float[Tensor, "batch pos 1"]:
    return cache["ln_final.hook_scale"].double()


def direct_attribution(
    model: HookedModel, cache: Any, components: Float[Tensor, "batch pos ... d_model"],
    direction: Float[Tensor, "batch pos d_vocab"],
) -> Float[Tensor, "batch pos ..."]:
    """<final_LN(component) W_U, direction> at every position, the final LayerNorm applied with
    the scale of the whole residual stream there (a linear read of each component)."""
    scale = final_scale(cache)  # [batch, pos, 1]
    extra = components.ndim - 3
    scale = scale.reshape(scale.shape[:2] + (1,) * extra + (1,))
    read = (components.double() / scale) @ folded_unembed(model)  # centring is inside the fold
    direction = direction.double().reshape(direction.shape[:2] + (1,) * extra + direction.shape[-1:])
    return (read * direction).sum(-1)


def eigenvalue_score(matrix: Float[Tensor, "... row col"]) -> Float[np.ndarray, "..."]:
    """sum(lambda) / sum(|lambda|) over the eigenvalues of each square matrix: +1 for a copying
    map (positive eigenvalues), -1 for a negative copying one."""
    eig = torch.linalg.eigvals(torch.as_tensor(matrix).double())
    return (eig.real.sum(-1) / eig.abs().sum(-1)).numpy()


def ov_scores(model: HookedModel, layers: list[int] | None = None) -> Float[np.ndarray, "layer head"]:
    """Eigenvalue score of every head's folded OV circuit in the residual stream ([d_model,
    d_model], TransformerLens's `model.OV` after `fold_ln`): does the head write (minus) what it
    reads? Computed on the [d_head, d_head] twin W_O (folded W_V), which has the same nonzero
    eigenvalues and no cloud of numerically-zero ones."""
    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    return np.stack([eigenvalue_score(model.W_O[l].detach().double() @ folded_W_V(model, l)) for l in layers])


def full_ov_scores(model: HookedModel, layers: list[int] | None = None) -> Float[np.ndarray, "layer head"]:
    """Eigenvalue score of the folded full OV circuit W_E (folded OV) (folded W_U) of every head,
    [d_vocab, d_vocab], computed on its [d_head, d_head] twin W_O (folded W_U) W_E (folded W_V)
    with the same nonzero eigenvalues."""
    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    back = folded_unembed(model) @ model.W_E.detach().double()  # [d_model, d_model]
    return np.stack([
        eigenvalue_score(model.W_O[l].detach().double() @ back @ folded_W_V(model, l)) for l in layers
    ])


def qk_scores(model: HookedModel, layer: int, inner: Tensor | None = None) -> Float[np.ndarray, " head"]:
    """Eigenvalue score of each head's folded QK form, (folded W_Q)(folded W_K)^T [d_model,
    d_model], or of W_E (QK) W_E^T when `inner` = W_E^T W_E is given; computed on the [d_head,
    d_head] twin (folded W_K)^T [inner] (folded W_Q)."""
    W_Q, W_K = folded_W_Q(model, layer), folded_W_K(model, layer)
    middle = W_K.transpose(-1, -2) if inner is None else W_K.transpose(-1, -2) @ inner.double()
    return eigenvalue_score(middle @ W_Q)


def pinv_identity(d_model: int, d_head: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(Q, K) with Q K^T = Q pinv(Q): a random rank-d_head orthogonal projection, the closest a
    d_head-wide QK circuit gets to the identity (Q has N(0, 1) entries, K = pinv(Q)^T)."""
    gen = torch.Generator().manual_seed(seed)
    Q = torch.randn(d_model, d_head, generator=gen, dtype=torch.float64)
    return Q, torch.linalg.pinv(Q).T


def share_outside(vectors: Float[Tensor, "n col"], basis_rows: Float[Tensor, "row col"]) -> Float[np.ndarray, " n"]:
    """|v - P v| / |v| for each row v, P the orthogonal projection on the span of `basis_rows`
    (computed by SVD, so the rows need not be orthogonal)."""
    basis_rows = torch.as_tensor(basis_rows).double()
    _, s, vh = torch.linalg.svd(basis_rows, full_matrices=False)
    rank = int((s > s.max() * 1e-10).sum())
    V = vh[:rank]  # orthonormal rows spanning the row space
    vectors = torch.as_tensor(vectors).double()
    outside = vectors - (vectors @ V.T) @ V
    return (outside.norm(dim=-1) / vectors.norm(dim=-1)).numpy()

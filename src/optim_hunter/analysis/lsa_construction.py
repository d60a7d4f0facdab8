"""Gradient descent inside linear self-attention: the weights that make each LSA layer one step of
gradient descent (or of GD++), the algorithms written in weight space to check them against, and
the check itself.

  construction    gd_layer_weights, constructed_model: each layer one step of GD (or of GD++)
  references      gd_weights, gd_predict, gd_token_ys, gd_plus_predict, gd_predictor: the
                  algorithms written in weight space, to check the construction against
  the check       relative_error, verify_construction
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from optim_hunter.analysis.lsa import AttentionModel, Predictor, Tasks, tokens

# --- the construction -------------------------------------------------------------------------


def gd_layer_weights(
    d: int,
    n_context: int,
    eta: float,
    gamma: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Tensor]:
    """Weights that make one LSA layer one gradient-descent step of size `eta` on
    L(W) = 1/(2N) sum_i (W x_i - y_i)^2, written into the y-slots of all tokens.

    W_K = W_Q = [[I_d, 0], [0, 0]] so the score of (i, j) is x_i . x_j; W_V = [[0, 0], [0, -1]] and
    P = (eta / N) I so the value carried is -(eta/N) y_i. With `gamma` (GD++), W_V = -I and
    P = diag(gamma/N I_d, eta/N): the x-slots are also moved, x_j <- (I - gamma/N X^T X) x_j, the
    curvature correction von Oswald et al. find in trained deep models.
    """
    eye = torch.eye(d + 1, dtype=dtype)
    select_x = eye.clone()
    select_x[d, d] = 0.0
    if gamma is None:
        w_v = torch.zeros(d + 1, d + 1, dtype=dtype)
        w_v[d, d] = -1.0
        p = eye * (eta / n_context)
    else:
        w_v = -eye
        p = torch.diag(torch.tensor([gamma / n_context] * d + [eta / n_context], dtype=dtype))
    return {"w_q": select_x, "w_k": select_x.clone(), "w_v": w_v, "p": p}


def constructed_model(
    d: int,
    n_context: int,
    etas: Sequence[float],
    gammas: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> AttentionModel:
    """An LSA stack whose layer k is GD step k (size etas[k]), or GD++ step k with gammas."""
    model = AttentionModel(d, n_layers=len(etas), softmax=False, init_scale=0.0, dtype=dtype)
    for k, (layer, eta) in enumerate(zip(model.layers, etas, strict=True)):
        gamma = None if gammas is None else gammas[k]
        layer.set_weights(gd_layer_weights(d, n_context, eta, gamma, dtype))
    return model


# --- gradient descent in weight space (the references) -----------------------------------------


def gd_weights(tasks: Tasks, etas: Sequence[float]) -> list[Float[Tensor, "batch feature"]]:
    """W_0 = 0 and W_{k+1} = W_k - eta_k grad L(W_k), with L(W) = 1/(2N) sum_i (W x_i - y_i)^2."""
    w = torch.zeros_like(tasks.x_query)
    trajectory = [w]
    for eta in etas:
        residual = torch.einsum("bnd,bd->bn", tasks.x, w) - tasks.y
        grad = torch.einsum("bn,bnd->bd", residual, tasks.x) / tasks.x.shape[1]
        w = w - eta * grad
        trajectory.append(w)
    return trajectory


def gd_predict(tasks: Tasks, etas: Sequence[float]) -> Float[Tensor, "batch"]:
    """The query prediction W_k . x after len(etas) GD steps from W = 0."""
    return (gd_weights(tasks, etas)[-1] * tasks.x_query).sum(-1)


def gd_token_ys(tasks: Tasks, etas: Sequence[float]) -> Float[Tensor, "batch pos"]:
    """What the y-slots of all tokens should hold after the constructed layers: the residuals
    y_i - W_k x_i for the context tokens and -W_k x for the query (its y starts at 0)."""
    w = gd_weights(tasks, etas)[-1]
    context = tasks.y - torch.einsum("bnd,bd->bn", tasks.x, w)
    query = -(w * tasks.x_query).sum(-1)
    return torch.cat([context, query[:, None]], dim=1)


def gd_plus_predict(
    tasks: Tasks, etas: Sequence[float | Tensor], gammas: Sequence[float | Tensor]
) -> Float[Tensor, "batch"]:
    """GD++: a GD step on the current inputs, then every input (context and query) is moved by
    x <- (I - gamma C) x with C = X^T X / N, the empirical second moment of the current context.

    Moving the inputs this way preconditions the next step (it shrinks the directions of large
    curvature), which is why trained multi-layer LSA can beat plain GD.
    """
    x, x_query, residual = tasks.x, tasks.x_query, tasks.y
    n = x.shape[1]
    prediction = torch.zeros_like(tasks.y_query)
    for eta, gamma in zip(etas, gammas, strict=True):
        # the GD step, taken from W = 0 on the current residuals
        delta_w = eta * torch.einsum("bn,bnd->bd", residual, x) / n
        residual = residual - torch.einsum("bnd,bd->bn", x, delta_w)
        prediction = prediction + (delta_w * x_query).sum(-1)
        second_moment = x.transpose(1, 2) @ x / n  # [batch d d], symmetric
        x = x - gamma * x @ second_moment
        x_query = x_query - gamma * torch.einsum("bd,bde->be", x_query, second_moment)
    return prediction


def gd_predictor(etas: Sequence[float], gammas: Sequence[float] | None = None) -> Predictor:
    """A Predictor for GD (or GD++ when gammas are given) with fixed step sizes."""
    if gammas is None:
        return lambda tasks: gd_predict(tasks, etas)
    return lambda tasks: gd_plus_predict(tasks, etas, gammas)


# --- the check ----------------------------------------------------------------------------------


def relative_error(a: Tensor, b: Tensor) -> float:
    """max |a - b| / |b| over entries (b is the reference)."""
    a, b = a.detach(), b.detach()
    return float(((a - b).abs() / b.abs().clamp_min(torch.finfo(b.dtype).tiny)).max())


def verify_construction(
    tasks: Tasks, etas: Sequence[float], gammas: Sequence[float] | None = None
) -> pd.DataFrame:
    """Check, for every depth k = 1..len(etas), the constructed stack of k layers against k steps
    of the weight-space reference, in float64. Columns: depth, pred_rel_error (the query's
    answer), y_slots_rel_error (all tokens' y-slots: context residuals and the query), and
    x_slots_max_change (GD leaves inputs untouched; GD++ rows leave it NaN, inputs move)."""
    tasks = tasks.to(torch.float64)
    rows = []
    for k in range(1, len(etas) + 1):
        step_gammas = None if gammas is None else list(gammas[:k])
        model = constructed_model(tasks.x.shape[-1], tasks.x.shape[1], list(etas[:k]), step_gammas)
        with torch.no_grad():
            e0 = tokens(tasks)
            out = model(e0)
        if gammas is None:
            reference_pred = gd_predict(tasks, etas[:k])
            y_error = relative_error(out[..., -1], gd_token_ys(tasks, etas[:k]))
            x_change = float((out[..., :-1] - e0[..., :-1]).abs().max())
        else:
            reference_pred = gd_plus_predict(tasks, etas[:k], step_gammas)
            y_error, x_change = float("nan"), float("nan")
        rows.append({
            "depth": k,
            "pred_rel_error": relative_error(-out[:, -1, -1], reference_pred),
            "y_slots_rel_error": y_error,
            "x_slots_max_change": x_change,
        })
    return pd.DataFrame(rows)

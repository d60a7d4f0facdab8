"""A trained LSA model against the algorithms: von Oswald et al.'s alignment measures between two
Predictors (answers and sensitivities to the query), the answer read out after each layer, and
the weights compared with the construction (effective weights, the scale symmetry, their cosine
and the loss along the straight path between them).

  functions       sensitivities, compare, compare_table, readout_losses
  weights         effective_weights, from_effective, align_scale, weight_cosine, interpolation
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from optim_hunter.analysis.lsa import AttentionLayer, AttentionModel, Predictor, Tasks, loss, predict, tokens


def sensitivities(predictor: Predictor, tasks: Tasks) -> Float[Tensor, "batch feature"]:
    """d prediction / d x_query for every task: the linear model the predictor applies to the
    query (for LSA and GD it is exactly that model, since both are linear in the query)."""
    x_query = tasks.x_query.detach().clone().requires_grad_(True)
    prediction = predictor(tasks._replace(x_query=x_query))
    # Tasks do not interact, so the gradient of the sum is every task's own gradient.
    (grad,) = torch.autograd.grad(prediction.sum(), x_query)
    return grad


def compare(a: Predictor, b: Predictor, tasks: Tasks) -> dict[str, float]:
    """Von Oswald et al.'s three alignment measures between two predictors on `tasks`, plus
    both losses: mean |pred_a - pred_b|, mean cosine of the sensitivities, mean L2 distance of the
    sensitivities. Everything is computed in float64."""
    tasks = tasks.to(torch.float64)
    grad_a = sensitivities(a, tasks).double()
    grad_b = sensitivities(b, tasks).double()
    with torch.no_grad():
        pred_a = a(tasks).double()
        pred_b = b(tasks).double()
    cosine = torch.nn.functional.cosine_similarity(grad_a, grad_b, dim=-1, eps=1e-12)
    return {
        "loss_a": float(loss(pred_a, tasks.y_query)),
        "loss_b": float(loss(pred_b, tasks.y_query)),
        "pred_diff": float((pred_a - pred_b).abs().mean()),
        "sens_cosine": float(cosine.mean()),
        "sens_l2": float((grad_a - grad_b).norm(dim=-1).mean()),
    }


def readout_losses(model: AttentionModel, tasks: Tasks) -> list[float]:
    """The loss of the answer read out from the residual stream (minus the query's y-slot) before
    the first layer (the slot holds 0: the zero predictor) and after each layer: n_layers + 1
    values. The forward runs in the model's type, the loss in float64."""
    with torch.no_grad():
        states = model.residuals(tokens(tasks.to(model.dtype)))
    target = tasks.y_query.double()
    return [float(loss(-state[:, -1, -1].double(), target)) for state in states]


def effective_weights(layer: AttentionLayer) -> tuple[Tensor, Tensor]:
    """The two products a linear layer depends on: QK = W_K^T W_Q (score of (i, j) is
    e_i^T QK e_j) and PV = P W_V (what a unit score moves). Returns (QK, PV), detached."""
    with torch.no_grad():
        return (layer.w_k.T @ layer.w_q).double(), (layer.p @ layer.w_v).double()


def from_effective(pairs: Sequence[tuple[Tensor, Tensor]], d: int) -> AttentionModel:
    """An LSA stack with the given (QK, PV) per layer (W_K = W_V = I, W_Q = QK, P = PV)."""
    model = AttentionModel(d, n_layers=len(pairs), init_scale=0.0, dtype=torch.float64)
    eye = torch.eye(d + 1, dtype=torch.float64)
    for layer, (qk, pv) in zip(model.layers, pairs, strict=True):
        layer.set_weights({"w_q": qk, "w_k": eye, "w_v": eye, "p": pv})
    return model


def align_scale(qk: Tensor, pv: Tensor, reference_qk: Tensor) -> tuple[Tensor, Tensor]:
    """(QK, PV) -> (s QK, PV / s), which leaves a linear layer unchanged, with s chosen so that QK
    gets the norm and sign of `reference_qk`: comparisons and interpolations of weights then do
    not just walk along this symmetry."""
    scale = reference_qk.norm() / qk.norm()
    if (qk * reference_qk).sum() < 0:
        scale = -scale
    return qk * scale, pv / scale


def weight_cosine(trained: AttentionModel, constructed: AttentionModel) -> float:
    """Cosine between the parts of one-layer models that set the prediction: the query's
    prediction is -sum_i (PV[-1] . e_i)(e_i^T QK[:, :d] x), a function of the tensor
    PV[-1] (x) QK[:, :d]; its cosine is the product of the two factors' cosines (scale-free)."""
    (qk_t, pv_t), (qk_c, pv_c) = (effective_weights(m.layers[0]) for m in (trained, constructed))
    d = trained.d

    def cos(a: Tensor, b: Tensor) -> float:
        return float((a * b).sum() / (a.norm() * b.norm()))

    return cos(pv_t[-1], pv_c[-1]) * cos(qk_t[:, :d], qk_c[:, :d])


def interpolation(
    trained: AttentionModel, constructed: AttentionModel, tasks: Tasks,
    alphas: Sequence[float] | Float[np.ndarray, " n"],
) -> pd.DataFrame:
    """Loss along the straight path from trained (alpha = 0) to constructed (alpha = 1) weights,
    taken in the effective (QK, PV) coordinates after removing the scale symmetry per layer."""
    tasks = tasks.to(torch.float64)
    ends = []
    for lt, lc in zip(trained.layers, constructed.layers, strict=True):
        qk_c, pv_c = effective_weights(lc)
        qk_t, pv_t = align_scale(*effective_weights(lt), qk_c)
        ends.append((qk_t, pv_t, qk_c, pv_c))
    rows = []
    for alpha in alphas:
        pairs = [((1 - alpha) * qt + alpha * qc, (1 - alpha) * pt + alpha * pc)
                 for qt, pt, qc, pc in ends]
        with torch.no_grad():
            value = loss(predict(from_effective(pairs, trained.d), tasks), tasks.y_query)
        rows.append({"alpha": float(alpha), "loss": float(value)})
    return pd.DataFrame(rows)


def compare_table(
    models: dict[str, Predictor], references: dict[str, Predictor], tasks: Tasks
) -> pd.DataFrame:
    """`compare` for every (model, reference) pair, one row each."""
    rows = []
    for model_name, model in models.items():
        for ref_name, ref in references.items():
            result = compare(model, ref, tasks)
            rows.append({
                "model": model_name, "reference": ref_name,
                "model_loss": result["loss_a"], "reference_loss": result["loss_b"],
                "pred_diff": result["pred_diff"], "sens_cosine": result["sens_cosine"],
                "sens_l2": result["sens_l2"],
            })
    return pd.DataFrame(rows)


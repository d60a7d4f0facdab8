"""Linear probes on the residual stream: which quantity does the model's state track, by layer?

`residuals` collects the residual stream at one position (the answer position by default) before
every layer and after the last; `probe_r2` fits a ridge probe with cross-validation and reports the
held-out R^2 of predicting a target (e.g. the OLS prediction, the kNN prediction, the true y).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from optim_hunter.analysis import decomposition
from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel


@torch.no_grad()
def residuals(
    model: HookedModel, token_lists: Sequence[Tensor], position: int = -1
) -> Float[np.ndarray, "n stage d_model"]:
    """Residual stream at `position` of each prompt: before layer 0..L-1, then after the last.
    At the last position of a bridged HF model, one fused pass (`analysis.decomposition`) reads it."""
    if position == -1 and decomposition.available(model):
        return np.stack([decomposition.decompose(model, t).stages().cpu().numpy() for t in token_lists])
    names = hooks.resid_stages(model.cfg.n_layers)
    out = []
    for tokens in token_lists:
        _, cache = model.run_with_cache(tokens[None], names_filter=hooks.only(names))
        out.append(torch.stack([cache[n][0, position] for n in names]).float().cpu().numpy())
    return np.stack(out)


def stage_labels(n_layers: int) -> list[str]:
    return hooks.stage_labels(n_layers)


def probe_r2(
    features: Float[np.ndarray, "n feature"], target: Float[np.ndarray, " n"], *, folds: int = 5, seed: int = 0
) -> float:
    """Held-out R^2 of a standardized ridge probe (alpha chosen by inner CV), by K-fold."""
    features = np.asarray(features, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if features.ndim != 2 or target.ndim != 1 or len(features) != len(target):
        raise ValueError(f"features [n, feature] and target [n] must have one row per sample, got "
                         f"{features.shape} and {target.shape}")
    if len(target) < 2 * folds:
        raise ValueError(f"a {folds}-fold probe needs >= {2 * folds} samples, got {len(target)}")
    bad = np.flatnonzero(~np.isfinite(target)).tolist() + \
        sorted(set(np.argwhere(~np.isfinite(features))[:, 0].tolist()))
    if bad:
        raise ValueError(f"non-finite target or features at samples {sorted(set(bad))[:10]}: drop them "
                         "(e.g. failed answers) before probing")
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
    predicted = cross_val_predict(probe, features, target, cv=KFold(folds, shuffle=True, random_state=seed))
    residual = ((target - predicted) ** 2).sum()
    total = ((target - target.mean()) ** 2).sum()
    return float(1 - residual / total) if total > 0 else float("nan")


def r2_by_layer(
    stages: Float[np.ndarray, "n stage d_model"], target: Float[np.ndarray, " n"], **kwargs
) -> Float[np.ndarray, " stage"]:
    """`probe_r2` at every stage of `residuals`."""
    return np.array([probe_r2(stages[:, s], target, **kwargs) for s in range(stages.shape[1])])

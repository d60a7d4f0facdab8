"""The scikit-learn baselines the 004 seed compares a language model against, in one registry.

`REGRESSORS[name](seed)` returns a fresh, seeded, unfitted scikit-learn estimator. The settings
follow the llm4regression study the seed builds on (e.g. lbfgs MLPs, depth-3 random forest,
degree-10 Bayesian ridge); `lr_poly` (linear regression on degree-2 features) is added because
that study reports it as the best method on Friedman #2.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import (
    AdaBoostRegressor,
    BaggingRegressor,
    GradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import BayesianRidge, Lasso, LinearRegression, Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from sklearn.svm import SVR
from sklearn.utils.validation import check_is_fitted, validate_data

Factory = Callable[[int], BaseEstimator]


class _YBaseline(RegressorMixin, BaseEstimator):
    """Baselines that ignore x and answer from the in-context y values alone."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True)
        self.y_train_ = np.asarray(y, dtype=np.float64)
        return self

    def predict(self, X):
        check_is_fitted(self, "y_train_")
        X = validate_data(self, X, reset=False)
        return self._answer(len(X))

    def _answer(self, n: int) -> np.ndarray:
        raise NotImplementedError


class AverageBaseline(_YBaseline):
    """Predicts the mean of the in-context outputs."""

    def _answer(self, n: int) -> np.ndarray:
        return np.full(n, self.y_train_.mean())


class LastBaseline(_YBaseline):
    """Predicts the last in-context output."""

    def _answer(self, n: int) -> np.ndarray:
        return np.full(n, self.y_train_[-1])


class RandomBaseline(_YBaseline):
    """Predicts an in-context output chosen uniformly at random (seeded)."""

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def _answer(self, n: int) -> np.ndarray:
        rng = np.random.default_rng(self.random_state)
        return rng.choice(self.y_train_, size=n)


class AdaptiveKNN(RegressorMixin, BaseEstimator):
    """Distance-weighted kNN whose k grows with the number of examples (1, 3, then 5)."""

    def fit(self, X, y):
        n = len(X)
        k = 1 if n < 3 else 3 if n < 7 else 5
        self.model_ = KNeighborsRegressor(n_neighbors=k, weights="distance").fit(X, y)
        self.n_features_in_ = self.model_.n_features_in_
        return self

    def predict(self, X):
        check_is_fitted(self, "model_")
        return self.model_.predict(X)


def _mlp(hidden: tuple[int, ...]) -> Factory:
    return lambda seed: MLPRegressor(
        hidden_layer_sizes=hidden, activation="relu", solver="lbfgs", random_state=seed
    )


# scikit-learn 1.9 passes LinearRegression's `tol` (default 1e-6) to scipy's lstsq as the cutoff
# for small singular values: on Friedman #2's degree-2 features (spanning ~1e6) that drops real
# directions and the fit is no longer least squares (MAE 12-18% worse). scipy's own default cutoff,
# machine epsilon, is what least squares (and scikit-learn before 1.9) means.
_LSTSQ = dict(tol=float(np.finfo(np.float64).eps))

REGRESSORS: dict[str, Factory] = {
    "linear_regression": lambda seed: LinearRegression(**_LSTSQ),
    "ridge": lambda seed: Ridge(random_state=seed),
    "lasso": lambda seed: Lasso(random_state=seed),
    "lr_poly": lambda seed: make_pipeline(PolynomialFeatures(degree=2), LinearRegression(**_LSTSQ)),
    # "Universal approximation" MLPs: one hidden layer of growing width.
    "mlp_uat_1": _mlp((10,)),
    "mlp_uat_2": _mlp((100,)),
    "mlp_uat_3": _mlp((1000,)),
    "mlp_deep_1": _mlp((10, 10)),
    "mlp_deep_2": _mlp((10, 20, 10)),
    "mlp_deep_3": _mlp((10, 20, 30, 20, 10)),
    "random_forest": lambda seed: RandomForestRegressor(max_depth=3, random_state=seed),
    "bagging": lambda seed: BaggingRegressor(random_state=seed),
    "gradient_boosting": lambda seed: GradientBoostingRegressor(random_state=seed),
    "adaboost": lambda seed: AdaBoostRegressor(n_estimators=100, random_state=seed),
    "bayesian_ridge": lambda seed: make_pipeline(
        PolynomialFeatures(degree=10, include_bias=False), StandardScaler(), BayesianRidge()
    ),
    "svr": lambda seed: SVR(),
    "svr_scaled": lambda seed: make_pipeline(StandardScaler(), SVR()),
    "knn": lambda seed: KNeighborsRegressor(),
    "knn_distance": lambda seed: KNeighborsRegressor(weights="distance"),
    "knn_3_distance": lambda seed: KNeighborsRegressor(n_neighbors=3, weights="distance"),
    "knn_1": lambda seed: KNeighborsRegressor(n_neighbors=1, weights="distance"),
    "knn_adaptive": lambda seed: AdaptiveKNN(),
    "kernel_ridge": lambda seed: KernelRidge(),
    "average": lambda seed: AverageBaseline(),
    "last": lambda seed: LastBaseline(),
    "random": lambda seed: RandomBaseline(random_state=seed),
}

BASELINES = ("average", "last", "random")


def make(name: str, seed: int = 0) -> BaseEstimator:
    """A fresh seeded estimator by registry name, or a ValueError naming the known ones."""
    try:
        factory = REGRESSORS[name]
    except KeyError:
        raise ValueError(f"unknown regressor {name!r}: choose one of {', '.join(REGRESSORS)}") from None
    return factory(seed)


def names(*, include_baselines: bool = True) -> list[str]:
    return [n for n in REGRESSORS if include_baselines or n not in BASELINES]

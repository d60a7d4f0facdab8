"""Every registered regressor fits and predicts, seeded; the baselines do what they say."""

import numpy as np
import pytest

from optim_hunter.analysis import regressors
from optim_hunter.data import datasets


@pytest.mark.parametrize("name", regressors.names())
def test_fits_and_predicts(name):
    split = datasets.make_split("friedman1", 20, 0, n_queries=4)
    model = regressors.make(name, seed=0).fit(split.x_train, split.y_train)
    pred = model.predict(split.x_query)
    assert pred.shape == (4,) and np.all(np.isfinite(pred))


@pytest.mark.parametrize("name", ["mlp_uat_1", "random_forest", "random", "bagging"])
def test_seeded(name):
    split = datasets.make_split("friedman2", 15, 1, n_queries=3)
    a = regressors.make(name, 5).fit(split.x_train, split.y_train).predict(split.x_query)
    b = regressors.make(name, 5).fit(split.x_train, split.y_train).predict(split.x_query)
    np.testing.assert_array_equal(a, b)


def test_registry_covers_the_seed_methods():
    names = set(regressors.names())
    assert {"linear_regression", "ridge", "lasso", "random_forest", "bagging", "gradient_boosting",
            "adaboost", "bayesian_ridge", "svr", "svr_scaled", "kernel_ridge"} <= names
    assert len([n for n in names if n.startswith("mlp_uat")]) == 3
    assert len([n for n in names if n.startswith("mlp_deep")]) == 3
    assert len([n for n in names if n.startswith("knn")]) == 5
    assert set(regressors.BASELINES) <= names
    assert "average" not in regressors.names(include_baselines=False)


def test_baselines():
    x = np.zeros((3, 2))
    y = np.array([1.0, 2.0, 6.0])
    q = np.zeros((2, 2))
    assert regressors.make("average").fit(x, y).predict(q).tolist() == [3.0, 3.0]
    assert regressors.make("last").fit(x, y).predict(q).tolist() == [6.0, 6.0]
    assert set(regressors.make("random", 3).fit(x, y).predict(q)) <= set(y)


def test_adaptive_knn_grows_k():
    y = np.arange(10.0)
    x = y[:, None]
    assert regressors.make("knn_adaptive").fit(x[:2], y[:2]).model_.n_neighbors == 1
    assert regressors.make("knn_adaptive").fit(x[:5], y[:5]).model_.n_neighbors == 3
    assert regressors.make("knn_adaptive").fit(x, y).model_.n_neighbors == 5


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown regressor 'xgboost'"):
        regressors.make("xgboost")


def _naive_knn(x, y, q, k, weighted):
    """k nearest neighbours by a plain loop over the distances (1/d weights when `weighted`)."""
    out = []
    for row in q:
        d = np.sqrt(((x - row) ** 2).sum(1))
        near = np.argsort(d, kind="stable")[:k]
        w = 1 / d[near] if weighted else np.ones(k)
        out.append((w * y[near]).sum() / w.sum())
    return np.array(out)


def test_settings_against_independent_references():
    """The registry's settings (what the book compares against) against closed forms and naive loops."""
    split = datasets.make_split("friedman2", 30, 3, n_queries=5)
    x, y, q = split.x_train, split.y_train, split.x_query
    pred = {n: regressors.make(n, 0).fit(x, y).predict(q) for n in
            ("linear_regression", "ridge", "kernel_ridge", "knn", "knn_distance",
             "knn_3_distance", "knn_1", "knn_adaptive")}
    ones = np.ones((len(x), 1))
    coef = np.linalg.lstsq(np.hstack([ones, x]), y, rcond=None)[0]
    np.testing.assert_allclose(pred["linear_regression"], np.hstack([np.ones((5, 1)), q]) @ coef, rtol=1e-6)

    # ridge, alpha 1, unpenalised intercept: centre, solve (X'X + I) w = X'y
    xc, yc = x - x.mean(0), y - y.mean()
    w = np.linalg.solve(xc.T @ xc + np.eye(4), xc.T @ yc)
    np.testing.assert_allclose(pred["ridge"], (q - x.mean(0)) @ w + y.mean(), rtol=1e-6)
    # kernel ridge, linear kernel, alpha 1, no intercept: K(q, x) (K + I)^-1 y
    np.testing.assert_allclose(pred["kernel_ridge"], q @ x.T @ np.linalg.solve(x @ x.T + np.eye(30), y), rtol=1e-6)
    np.testing.assert_allclose(pred["knn"], _naive_knn(x, y, q, 5, False), rtol=1e-9)
    np.testing.assert_allclose(pred["knn_distance"], _naive_knn(x, y, q, 5, True), rtol=1e-9)
    np.testing.assert_allclose(pred["knn_3_distance"], _naive_knn(x, y, q, 3, True), rtol=1e-9)
    np.testing.assert_allclose(pred["knn_1"], _naive_knn(x, y, q, 1, True), rtol=1e-9)
    np.testing.assert_allclose(pred["knn_adaptive"], _naive_knn(x, y, q, 5, True), rtol=1e-9)  # 30 examples: k 5
    small = regressors.make("knn_adaptive").fit(x[:4], y[:4]).predict(q)
    np.testing.assert_allclose(small, _naive_knn(x[:4], y[:4], q, 3, True), rtol=1e-9)  # 4 examples: k 3
    # the seed's fixed settings that no closed form shows
    forest = regressors.make("random_forest", 7)
    assert (forest.max_depth, forest.random_state) == (3, 7)
    mlp = regressors.make("mlp_deep_2", 2)
    assert (mlp.hidden_layer_sizes, mlp.solver, mlp.activation, mlp.random_state) == ((10, 20, 10), "lbfgs", "relu", 2)
    bayes = regressors.make("bayesian_ridge").fit(x, y)
    assert bayes.steps[0][1].degree == 10 and not bayes.steps[0][1].include_bias
    # a different seed is a different random model
    assert not np.array_equal(regressors.make("random_forest", 0).fit(x, y).predict(q),
                              regressors.make("random_forest", 1).fit(x, y).predict(q))


def _quadratic(a):
    """1, x_i, and every x_i x_j with i <= j: the degree-2 features, written out."""
    i, j = np.triu_indices(a.shape[1])
    return np.hstack([np.ones((len(a), 1)), a, a[:, i] * a[:, j]])


def test_lr_poly_is_the_least_squares_quadratic():
    """On Friedman #2's unscaled degree-2 features (x1^2 ~ 1e6, x2^2 ~ 0.1): scikit-learn >= 1.9's
    default tol=1e-6 cut small singular values here (twice the residual sum of squares)."""
    split = datasets.make_split("friedman2", 30, 3, n_queries=5)
    x, y, q = split.x_train, split.y_train, split.x_query
    coef = np.linalg.lstsq(_quadratic(x), y, rcond=None)[0]  # 15 features, 30 examples: one optimum
    pred = regressors.make("lr_poly").fit(x, y).predict(q)
    np.testing.assert_allclose(pred, _quadratic(q) @ coef, rtol=1e-5)


def test_lr_poly_is_the_least_squares_quadratic_where_well_conditioned():
    split = datasets.make_split("friedman1", 30, 3, n_queries=5)  # features in [0, 1]
    x, y, q = split.x_train, split.y_train, split.x_query
    x, q = x[:, :4], q[:, :4]
    coef = np.linalg.lstsq(_quadratic(x), y, rcond=None)[0]
    pred = regressors.make("lr_poly").fit(x, y).predict(q)
    np.testing.assert_allclose(pred, _quadratic(q) @ coef, rtol=1e-6)

"""Every registered regressor fits and predicts, seeded; the baselines do what they say."""

import numpy as np
import pytest

from optim_hunter import datasets, regressors


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

"""`LLMRegressor` as a scikit-learn citizen: clone, cross-validation, pipelines and grid search hold
the model by reference (no copy of its weights per clone), and scikit-learn's own estimator checks
pass except the ones listed with the reason each cannot hold for a language model.

The model here is a fast test double over characters that answers "1" to any prompt: the checks
exercise the estimator's contract (parameters, fitting, shapes, errors), not the model's skill.
"""

import numpy as np
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from optim_hunter.analysis.llm_regressor import LLMRegressor

CHARS = "\n :.-0123456789abcdefghijklmnopqrstuvwxyzFOIeE+,[]()"


class CharTokenizer:
    def __call__(self, text):
        return {"input_ids": [CHARS.index(c) if c in CHARS else 1 for c in text]}

    def decode(self, ids):
        return "".join(CHARS[i] for i in ids)


class AnswersOne(torch.nn.Module):
    """Writes "1" then a newline after any prompt (vectorised: fast enough for every check)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens):
        logits = torch.full((*tokens.shape, len(CHARS)), -1e4)
        after_one = tokens == CHARS.index("1")
        logits[..., CHARS.index("1")] = torch.where(after_one, -1e4, 1e4)
        logits[..., CHARS.index("\n")] = torch.where(after_one, 1e4, -1e4)
        return logits


MODEL = AnswersOne()


def make(**kwargs):
    return LLMRegressor(MODEL, CharTokenizer(), max_new_tokens=4, **kwargs)


# Checks that cannot hold for an in-context language model, each with the reason.
EXPECTED_FAILURES = {
    "check_estimators_overwrite_params": (
        "compares joblib hashes of each parameter with those of a deep copy, and a deep-copied torch module never "
        "hashes like the original (test_a_deep_copied_module_hashes_differently); "
        "test_fit_and_predict_leave_the_model_untouched checks the weights instead"),
    "check_dict_unchanged": (
        "predict records its raw answers and parse failures (answers_, failures_, n_failed_): an unparseable "
        "answer is a counted failure the caller can read, never silently a number"),
    "check_do_not_raise_errors_in_init_or_set_params": (
        "under pytest the package's annotations are type-checked at run time (jaxtyping's import hook), so a "
        "wrong-typed parameter is refused in __init__; outside the tests __init__ stores it unchecked as "
        "scikit-learn asks"),
}


def test_clone_shares_the_model_and_copies_the_rest():
    est = make(round_to=3)
    twin = clone(est)
    assert twin is not est and twin.model is MODEL and twin.tokenizer is est.tokenizer and twin.round_to == 3
    assert est.get_params(deep=True) == est.get_params(deep=False)


def test_cross_validation_pipeline_and_grid_search_hold_the_model():
    rng = np.random.default_rng(0)
    X, y = rng.uniform(0, 1, (12, 2)), rng.uniform(0, 2, 12)
    scores = cross_val_score(make(), X, y, cv=3, scoring="neg_mean_absolute_error")
    np.testing.assert_allclose(scores, [-np.abs(part - 1).mean() for part in np.array_split(y, 3)])
    assert len(cross_val_score(make_pipeline(StandardScaler(), make()), X, y, cv=3)) == 3
    search = GridSearchCV(make(), {"round_to": [1, 2]}, cv=3, scoring="neg_mean_absolute_error").fit(X, y)
    assert search.best_estimator_.model is MODEL and search.best_params_["round_to"] in (1, 2)


def test_a_deep_copied_module_hashes_differently():
    import copy

    import joblib

    assert joblib.hash(copy.deepcopy(MODEL)) != joblib.hash(MODEL)


def test_fit_and_predict_leave_the_model_untouched():
    before = {k: v.clone() for k, v in MODEL.state_dict().items()}
    est = make().fit(np.ones((3, 2)), np.ones(3))
    est.predict(np.ones((2, 2)))
    assert all(torch.equal(before[k], v) for k, v in MODEL.state_dict().items())
    assert est.model is MODEL


@parametrize_with_checks([make()], expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)

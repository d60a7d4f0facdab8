"""Regression tasks split into in-context examples and queries.

Every task draws `n_examples + n_queries` points from one scikit-learn generator call seeded with
`seed`; the first `n_examples` are the in-context (training) examples and the rest the queries.

  friedman1         5 features, y = 10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4
  friedman2         4 features, y = sqrt(x0^2 + (x1 x2 - 1/(x1 x3))^2)
  friedman3         4 features, y = arctan((x1 x2 - 1/(x1 x3)) / x0)
  linear_<i>_<f>    `make_regression` with f features of which i are informative (1 <= i <= f <= 10)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
from jaxtyping import Float
from sklearn.datasets import make_friedman1, make_friedman2, make_friedman3, make_regression

Generator = Callable[[int, int, float], tuple[np.ndarray, np.ndarray]]

MAX_LINEAR_FEATURES = 10
_LINEAR = re.compile(r"^linear_(\d+)_(\d+)$")


@dataclasses.dataclass(frozen=True)
class Split:
    """One in-context regression problem."""

    x_train: Float[np.ndarray, "n feature"]
    y_train: Float[np.ndarray, " n"]
    x_query: Float[np.ndarray, "query feature"]
    y_query: Float[np.ndarray, " query"]

    def __iter__(self):  # allows `x_train, y_train, x_query, y_query = split`
        return iter((self.x_train, self.y_train, self.x_query, self.y_query))

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    n_features: int
    generate: Generator  # (n_samples, seed, noise) -> (X, y)
    description: str


def _friedman1(n: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    return make_friedman1(n_samples=n, n_features=5, noise=noise, random_state=seed)


def _friedman2(n: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    return make_friedman2(n_samples=n, noise=noise, random_state=seed)


def _friedman3(n: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    return make_friedman3(n_samples=n, noise=noise, random_state=seed)


def _linear(n_informative: int, n_features: int) -> Generator:
    def generate(n: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
        return make_regression(
            n_samples=n,
            n_features=n_features,
            n_informative=n_informative,
            noise=noise,
            random_state=seed,
        )

    return generate


FIXED: dict[str, DatasetSpec] = {
    "friedman1": DatasetSpec("friedman1", 5, _friedman1, "Friedman #1 (5 features)"),
    "friedman2": DatasetSpec("friedman2", 4, _friedman2, "Friedman #2"),
    "friedman3": DatasetSpec("friedman3", 4, _friedman3, "Friedman #3"),
}
# The linear families the llm4regression study uses (informative / total features).
LINEAR_FAMILIES = ("linear_1_1", "linear_1_2", "linear_1_3", "linear_2_2", "linear_2_3", "linear_3_3")


def names() -> list[str]:
    """The named datasets (any `linear_<i>_<f>` with 1 <= i <= f <= 10 is also accepted)."""
    return [*FIXED, *LINEAR_FAMILIES]


def spec(name: str) -> DatasetSpec:
    """The dataset called `name`, or a ValueError naming the known ones."""
    if name in FIXED:
        return FIXED[name]
    match = _LINEAR.match(name)
    if match:
        informative, features = int(match[1]), int(match[2])
        if not 1 <= informative <= features <= MAX_LINEAR_FEATURES:
            raise ValueError(
                f"{name}: need 1 <= informative ({informative}) <= features ({features}) "
                f"<= {MAX_LINEAR_FEATURES}"
            )
        return DatasetSpec(
            name,
            features,
            _linear(informative, features),
            f"linear, {informative} informative of {features} features",
        )
    raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(names())} or linear_<i>_<f>")


MAX_ROWS = 1_000_000  # examples or queries of one problem
MAX_DECIMALS = 15  # a float64 holds about 15 significant digits; more rounds to inf/NaN garbage


def make_split(
    name: str,
    n_examples: int,
    seed: int = 0,
    *,
    n_queries: int = 1,
    noise: float = 0.0,
    round_to: int | None = None,
) -> Split:
    """Draw one in-context problem: `n_examples` (x, y) examples and `n_queries` queries.

    `round_to` rounds features and targets to that many decimals (the text-prompt protocol), so a
    regressor and a language model see the same numbers.
    """
    data = spec(name)
    for label, value, low in (("n_examples", n_examples, 1), ("n_queries", n_queries, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
        if value > MAX_ROWS:  # checked before allocating: a typo must not eat the machine's memory
            raise ValueError(f"{label} must be at most {MAX_ROWS:,}, got {value:,}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(noise, (int, float, np.integer, np.floating)) and np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    if round_to is not None and not 0 <= round_to <= MAX_DECIMALS:
        raise ValueError(f"round_to must be between 0 and {MAX_DECIMALS} decimals, got {round_to}")
    x, y = data.generate(int(n_examples + n_queries), int(seed), float(noise))
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if round_to is not None:
        x, y = np.round(x, round_to), np.round(y, round_to)
    return Split(x[:n_examples], y[:n_examples], x[n_examples:], y[n_examples:])

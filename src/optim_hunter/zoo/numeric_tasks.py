"""The task prior the numeric in-context learner is trained on, written in the book's text formats.

Two formats, the ones the chapters prompt with:

  * (features -> output) blocks, written by `optim_hunter.data.prompts.format_example` exactly as
    `format_prompt` writes them (so a prompt is a prefix of a training text), with 1-5 features and
    2 decimals mostly (1 and 0 decimals sometimes, since `format_prompt` rounding is configurable);
  * "(x, y)" lines of integer affine maps, the y = 2x + 3 chapter's format (`format_pairs`).

Regression tasks are a function family applied to standardised inputs, then scaled and shifted
to a random output range, so magnitudes from 0.1 to thousands (Friedman #2 reaches ~1700) occur:
linear maps of 1-5 features (some features uninformative) with and without noise, random ReLU
networks, products of two features and square roots. Inputs are drawn per feature from N(0, 1),
U(0, 1) or randomly scaled and shifted uniform/normal ranges. Friedman #1/#2/#3 are never drawn:
they are the held-out tasks the model is measured on.

Every draw takes a `numpy.random.Generator`, so a batch is a function of (seed, step) alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from jaxtyping import Bool, Float, Int

from optim_hunter.data import prompts
from optim_hunter.zoo import numeric_tokenizer as ntok

FAMILIES = ("linear", "linear_noisy", "relu", "product", "sqrt")
_SQRT_SHIFT = 0.5  # sqrt(|z.beta + 0.5|): a kink off the centre, unlike sqrt(|z.beta|)


@dataclasses.dataclass(frozen=True)
class TaskPrior:
    """Weights of the prior over tasks (each tuple: probabilities over the listed choices)."""

    n_features: tuple[float, ...] = (0.3, 0.25, 0.2, 0.15, 0.1)  # P(1 feature), ..., P(5)
    families: tuple[float, ...] = (0.35, 0.2, 0.15, 0.15, 0.15)  # over FAMILIES
    inputs: tuple[float, ...] = (0.35, 0.2, 0.3, 0.15)  # N(0,1), U(0,1), scaled uniform, scaled normal
    round_to: tuple[tuple[int, float], ...] = ((2, 0.8), (1, 0.1), (0, 0.1))
    log10_y_scale: tuple[float, float] = (-1.0, 3.0)  # output std from 0.1 to 1000
    p_shift: float = 0.7  # probability that the outputs are shifted off zero
    p_increasing: float = 0.0  # probability that a linear map's coefficients are all made >= 0
    max_abs_value: float = 2000  # redraw tasks with numbers beyond the single-token range (1999)

    def __post_init__(self) -> None:
        checks = (("n_features", self.n_features), ("families", self.families), ("inputs", self.inputs))
        for name, weights in checks:
            if abs(sum(weights) - 1) > 1e-9 or min(weights) < 0:
                raise ValueError(f"TaskPrior.{name} must be probabilities, got {weights}")
        if len(self.families) != len(FAMILIES):
            raise ValueError(f"TaskPrior.families needs {len(FAMILIES)} weights ({FAMILIES})")


@dataclasses.dataclass(frozen=True)
class RegressionTask:
    """One drawn function with its inputs: `x` [n, feature] and `y` [n], in example order."""

    family: str
    x: Float[np.ndarray, "n feature"]
    y: Float[np.ndarray, " n"]
    round_to: int


def _inputs(
    rng: np.random.Generator, n: int, d: int, weights: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs [n, d] and each feature's mean and std (used to standardise before the function)."""
    x = np.empty((n, d))
    mean = np.empty(d)
    std = np.empty(d)
    for j in range(d):
        kind = rng.choice(4, p=weights)
        if kind == 0:  # make_regression's inputs
            mean[j], std[j] = 0.0, 1.0
            x[:, j] = rng.standard_normal(n)
        elif kind == 1:  # Friedman #1's
            mean[j], std[j] = 0.5, 12**-0.5
            x[:, j] = rng.random(n)
        elif kind == 2:  # a scaled, shifted range (Friedman #2's run to ~1760)
            width = 10 ** rng.uniform(np.log10(0.5), np.log10(2000))
            low = 0.0 if rng.random() < 0.5 else width * rng.uniform(-1, 1)
            mean[j], std[j] = low + width / 2, width * 12**-0.5
            x[:, j] = low + width * rng.random(n)
        else:
            std[j] = 10 ** rng.uniform(-1, 2.5)
            mean[j] = 0.0 if rng.random() < 0.5 else std[j] * rng.uniform(-3, 3)
            x[:, j] = mean[j] + std[j] * rng.standard_normal(n)
    return x, mean, std


def _direction(rng: np.random.Generator, d: int) -> np.ndarray:
    """A random unit vector over a random non-empty subset of the d features."""
    k = int(rng.integers(1, d + 1))
    beta = np.zeros(d)
    beta[rng.choice(d, size=k, replace=False)] = rng.standard_normal(k)
    return beta / np.linalg.norm(beta)


def _function(rng: np.random.Generator, family: str, d: int, std: np.ndarray, p_increasing: float = 0.0):
    """g(z, x): the family's function of standardised inputs z (and raw inputs x)."""
    if family in ("linear", "linear_noisy"):
        beta = _direction(rng, d)
        if p_increasing and rng.random() < p_increasing:
            beta = np.abs(beta)
        return lambda z, x: z @ beta
    if family == "relu":
        hidden = int(rng.integers(4, 17))
        w1 = rng.standard_normal((d, hidden)) / np.sqrt(d)
        b1 = 0.5 * rng.standard_normal(hidden)
        w2 = rng.standard_normal(hidden)
        return lambda z, x: np.maximum(z @ w1 + b1, 0) @ w2
    if family == "product":
        i, j = rng.integers(0, d, size=2)
        if rng.random() < 0.5:  # of centred features
            return lambda z, x: z[:, i] * z[:, j]
        # of raw features in units of their spread (x1 * x2 of Friedman #2 is of this kind)
        return lambda z, x: (x[:, i] / std[i]) * (x[:, j] / std[j])
    if family == "sqrt":
        beta = _direction(rng, d)
        if rng.random() < 0.5:
            return lambda z, x: np.sqrt(np.abs(z @ beta + _SQRT_SHIFT))
        gamma = _direction(rng, d)
        return lambda z, x: np.sqrt((z @ beta) ** 2 + (z @ gamma) ** 2)
    raise ValueError(f"unknown task family {family!r}: choose one of {', '.join(FAMILIES)}")


def sample_task(rng: np.random.Generator, n: int, prior: TaskPrior = TaskPrior()) -> RegressionTask:
    """Draw a function from the prior and `n` examples of it."""
    if n < 1:
        raise ValueError(f"need n >= 1 examples, got {n}")
    for _ in range(100):
        d = int(rng.choice(len(prior.n_features), p=prior.n_features)) + 1
        family = FAMILIES[int(rng.choice(len(FAMILIES), p=prior.families))]
        x, mean, std = _inputs(rng, n + 256, d, prior.inputs)
        g_fn = _function(rng, family, d, std, prior.p_increasing)
        g = g_fn((x - mean) / std, x)
        # Standardise g on all drawn points (the last 256 are never shown) so the output scale
        # is the prior's choice, not an accident of the family.
        spread = g.std()
        if not np.isfinite(spread) or spread < 1e-9:
            continue
        g = (g - g.mean()) / spread
        scale = 10 ** rng.uniform(*prior.log10_y_scale)
        shift = scale * rng.uniform(-4, 4) if rng.random() < prior.p_shift else 0.0
        y = scale * g + shift
        if family == "linear_noisy" or (family != "linear" and rng.random() < 0.3):
            y = y + scale * 10 ** rng.uniform(-2, -0.5) * rng.standard_normal(len(y))
        x, y = x[:n], y[:n]
        if np.abs(x).max() >= prior.max_abs_value or np.abs(y).max() >= prior.max_abs_value:
            continue
        choices, weights = zip(*prior.round_to)
        round_to = int(choices[int(rng.choice(len(choices), p=np.asarray(weights) / sum(weights)))])
        return RegressionTask(family, x, y, round_to)
    raise RuntimeError("could not draw a finite task in 100 tries; the prior is degenerate")


def blocks_text(x: Float[np.ndarray, "n feature"], y: Float[np.ndarray, " n"], round_to: int) -> str:
    """All n examples as (features -> output) blocks, exactly as `prompts.format_prompt` writes
    them: `format_prompt(x[:-1], y[:-1], x[-1])` is this text up to the last `Output:`."""
    return "\n\n".join(prompts.format_example(xi, yi, round_to) for xi, yi in zip(x, y))


# Seed 002's "(x, y)" lines: the one definition lives with the other text formats.
format_pairs = prompts.format_pairs


@dataclasses.dataclass(frozen=True)
class AffineTask:
    a: int
    b: int
    x: Int[np.ndarray, " n"]

    @property
    def y(self) -> Int[np.ndarray, " n"]:
        return self.a * self.x + self.b


@dataclasses.dataclass(frozen=True)
class AffinePrior:
    """y = a x + b: a in 1..a_max (or -1..-a_negative with p_negative), b in -b_small..b_small
    (or -b_large..b_large with p_large_b), x in one of `x_ranges` (weights `x_weights`)."""

    a_max: int = 10
    a_negative: int = 5
    p_negative: float = 0.25
    b_small: int = 20
    b_large: int = 200
    p_large_b: float = 0.3
    x_ranges: tuple[tuple[int, int], ...] = ((0, 20), (0, 50), (0, 100), (1, 100), (-50, 50), (0, 200), (0, 500))
    x_weights: tuple[float, ...] = (0.1, 0.15, 0.3, 0.15, 0.1, 0.1, 0.1)

    def __post_init__(self) -> None:
        if len(self.x_ranges) != len(self.x_weights) or abs(sum(self.x_weights) - 1) > 1e-9:
            raise ValueError("AffinePrior.x_weights must be probabilities, one per x range")
        if self.a_max < 1 or min(high - low for low, high in self.x_ranges) < 1:
            raise ValueError("AffinePrior needs a_max >= 1 and non-empty x ranges")


def sample_affine(rng: np.random.Generator, n: int, prior: AffinePrior = AffinePrior()) -> AffineTask:
    """y = a x + b with integers a != 0, b and distinct integer x where the range allows."""
    low, high = prior.x_ranges[int(rng.choice(len(prior.x_ranges), p=prior.x_weights))]
    if prior.a_negative and rng.random() < prior.p_negative:
        a = -int(rng.integers(1, prior.a_negative + 1))
    else:
        a = int(rng.integers(1, prior.a_max + 1))
    bound = prior.b_large if rng.random() < prior.p_large_b else prior.b_small
    b = int(rng.integers(-bound, bound + 1))
    size = high - low + 1
    x = low + rng.choice(size, size=n, replace=n > size)
    return AffineTask(a, b, x.astype(np.int64))


# --- token ids and loss masks -------------------------------------------------------------------


def _ids(words: Sequence[str]) -> np.ndarray:
    index = {w: i for i, w in enumerate(ntok.VOCAB)}
    return np.array([index[w] for w in words], dtype=np.int64)


IS_NUMBER = np.array([ntok.is_number_piece(w) for w in ntok.VOCAB])
OUTPUT_LABELS = _ids(["Output:", "\nOutput:"])
SPACE, COMMA, PAD_ID, BOS_ID = _ids([" ", ", ", ntok.PAD, ntok.BOS])


def answer_mask(ids: Int[np.ndarray, " pos"]) -> Bool[np.ndarray, " pos"]:
    """True at the tokens a model must predict to answer: the space after `Output:`, the number
    (after that space, or after the comma and space of an "(x, y)" line), and the token that ends the number
    (so greedy decoding knows where to stop)."""
    mask = np.zeros(len(ids), dtype=bool)
    state = 0  # 0 outside, 1 after "Output:", 2 inside an answer
    for i, t in enumerate(ids.tolist()):
        if state == 2:
            mask[i] = True
            if not IS_NUMBER[t]:
                state = 1 if t in OUTPUT_LABELS else 0  # this token ended the number
            continue
        if t in OUTPUT_LABELS:
            state = 1
        elif state == 1 and t == SPACE:
            mask[i] = True  # trivial, but greedy decoding must learn to write it
            state = 2
        elif t == COMMA:
            state = 2
        else:
            state = 0
    return mask


def pack(
    texts: Sequence[str], length: int, tokenizer
) -> tuple[Int[np.ndarray, "batch pos"], Bool[np.ndarray, "batch pos"]]:
    """Tokenise, cut to `length` tokens (a cut example still trains on what is left of it) or pad,
    and mark the answer tokens. Padding is never a target."""
    encoded = tokenizer(list(texts))["input_ids"]
    ids = np.full((len(texts), length), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(texts), length), dtype=bool)
    for row, seq in enumerate(encoded):
        seq = np.asarray(seq[:length], dtype=np.int64)
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = answer_mask(seq)
    return ids, mask


def examples_to_fill(n_features: int, length: int) -> int:
    """A generous number of examples to draw so the text fills `length` tokens (then cut)."""
    per_example = 3 * n_features + 4  # the fewest: label + 2 number tokens per feature, output
    return max(2, length // per_example + 2)

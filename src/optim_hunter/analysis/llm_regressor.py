"""Any causal language model (hooked or not) as a scikit-learn-style in-context regressor.

`fit` stores the in-context examples; `predict` writes one prompt per query with
`optim_hunter.data.prompts.format_prompt`, decodes the answer greedily and parses it. Prompts are batched
by token length (equal-length prompts share a batch, so no padding enters the computation and a
batched answer equals the one-prompt-at-a-time answer). Unparseable answers are kept: their
prediction is NaN, and `failures_` / `n_failed_` say which and why.

The model is anything that maps token ids [batch, pos] to logits [batch, pos, d_vocab] (a
TransformerLens `TransformerBridge`, a `HookedRootModule`, a plain torch module); the tokenizer is a
Hugging Face tokenizer (`tokenizer(text)["input_ids"]`, `tokenizer.decode(ids)`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor
from tqdm.auto import tqdm

from optim_hunter.analysis import evaluation, kv_decoding
from optim_hunter.core import devices
from optim_hunter.data import datasets, prompts
from optim_hunter.data.datasets import Split

Model = Callable[[Int[Tensor, "batch pos"]], Float[Tensor, "batch pos d_vocab"]]
PRECISIONS = ("fp32", "bf16")  # of the forward passes while decoding (bf16: under autocast)


@dataclasses.dataclass(frozen=True)
class Answers:
    """Greedy answers to a list of prompts, parsed."""

    texts: list[str]
    parsed: prompts.ParsedBatch

    @property
    def values(self) -> Float[np.ndarray, " n"]:
        return self.parsed.values


def _encode(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text)["input_ids"]
    if not ids:
        raise ValueError("the tokenizer produced no tokens for a prompt")
    return list(ids)


@torch.no_grad()
def greedy_answers(
    model: Model,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_new_tokens: int = 12,
    batch_size: int = 16,
    stop: str | None = "\n",
    progress: bool = False,
    precision: str = "fp32",
) -> Answers:
    """Greedy continuations of `texts`, stopped at `stop` or after `max_new_tokens` tokens. An
    answer that has not ended by then is parsed as a failure (`prompts.UNFINISHED`), never as the
    number it had written so far.

    `precision="bf16"` runs the forward passes under bfloat16 autocast (weights stay float32):
    faster on CPUs with bf16 matrix units, and answers may differ from float32 ones where two
    tokens' logits are close (`make bench` measures how often).

    `stop=None` stops as soon as a number is complete (followed by anything that cannot continue
    it) and keeps only the number: the way to read "(x, y)" answers and regression outputs alike.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be >= 1")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if isinstance(texts, str):  # a string is a sequence too: of one-character prompts
        raise TypeError("texts must be a list of prompts; for one prompt pass [text]")
    encoded = [_encode(tokenizer, t) for t in texts]
    n_ctx = context_length(model)
    longest = max((len(ids) for ids in encoded), default=0)
    if n_ctx is not None and longest + max_new_tokens > n_ctx:
        raise ValueError(
            f"a prompt of {longest} tokens plus {max_new_tokens} answer tokens exceeds the model's "
            f"context of {n_ctx}: use fewer in-context examples (see max_examples)"
        )
    # Similar lengths share a batch; rows are right-padded. Under causal attention a pad token
    # after a row's last real token cannot change that row's logits, so each row's answer is
    # exactly its unbatched answer (read at its own last position, written over its padding).
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    device = devices.of(model)
    answers: list[str] = [""] * len(texts)
    finished: list[bool] = [False] * len(texts)
    use_cache = kv_decoding.decoder(model) is not None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        _decode_batches(model, tokenizer, encoded, batches, answers, finished, max_new_tokens=max_new_tokens,
                        stop=stop, use_cache=use_cache, device=device, progress=progress)
    return Answers(answers, prompts.parse_answers(answers, finished))


def _decode_batches(model: Model, tokenizer: Any, encoded: list[list[int]], batches: list[list[int]],
                    answers: list[str], finished: list[bool], *, max_new_tokens: int, stop: str | None,
                    use_cache: bool, device: torch.device, progress: bool) -> None:
    """`greedy_answers`' loop: fills `answers` and `finished` for each batch of prompt indices."""
    for batch in tqdm(batches, disable=not progress, desc="generate"):
        longest = max(len(encoded[i]) for i in batch)
        padded = torch.zeros((len(batch), longest + max_new_tokens), dtype=torch.long)
        for row, i in enumerate(batch):
            padded[row, : len(encoded[i])] = torch.tensor(encoded[i])
        tokens = padded.to(device)  # one copy to the model's device per batch, none per row or token
        lengths = torch.tensor([len(encoded[i]) for i in batch], device=device)
        rows = torch.arange(len(batch), device=device)
        generated: list[list[int]] = [[] for _ in batch]
        done = [False] * len(batch)
        if use_cache:  # the prompt once, then one token per step (exact; no hooks attached)
            decoder = kv_decoding.decoder(model)
            last_logits = decoder.prefill(tokens[:, :longest], lengths)
        for step in range(max_new_tokens):
            if not use_cache:
                # Only columns up to the longest row's current end are needed this step.
                logits = _forward(model, tokens[:, : longest + step])
                last_logits = logits[rows, lengths + step - 1]
            next_ids = last_logits.argmax(dim=-1).to(device)  # a placed model's logits: its last device
            tokens[rows, lengths + step] = next_ids
            for row, token in enumerate(next_ids.tolist()):  # the one read-back per step: b token ids
                if done[row]:
                    continue
                generated[row].append(token)
                done[row] = _finished(tokenizer.decode(generated[row]), stop)
            if all(done):
                break
            if use_cache and step + 1 < max_new_tokens:
                last_logits = decoder.step(next_ids)
        for row, index in enumerate(batch):
            answers[index] = trim_answer(tokenizer.decode(generated[row]), stop)
            finished[index] = done[row]


def context_length(model: Any) -> int | None:
    """The longest input `model` accepts, where it says: TransformerLens `cfg.n_ctx`, or a Hugging
    Face `config.max_position_embeddings` / `n_positions`; None for a plain callable."""
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if n_ctx is None:
        config = getattr(model, "config", None)
        n_ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(n_ctx) if n_ctx is not None else None


def _forward(model: Model, tokens: Tensor) -> Tensor:
    try:
        return model(tokens)
    except IndexError as err:  # e.g. a position table shorter than the prompt, in a plain module
        raise ValueError(
            f"the model failed on an input of {tokens.shape[1]} tokens ({type(err).__name__}: {err}); "
            "the prompt is probably longer than its context: use fewer in-context examples, or "
            "give the model a cfg.n_ctx so the length is checked before any work"
        ) from err


_NUMBER_DONE = re.compile(r"^\s*[-+]?\d+(?:\.\d*)?(?=[^\d.])", re.ASCII)  # a number, then something else


def _finished(text: str, stop: str | None) -> bool:
    if stop is None:
        return bool(_NUMBER_DONE.match(text))
    return stop in text.lstrip(stop + " ")  # a leading separator is allowed


def trim_answer(text: str, stop: str | None) -> str:
    """The answer without the stop separator and what follows it."""
    if stop is None:
        match = _NUMBER_DONE.match(text)
        return match[0] if match else text
    head = text.lstrip(stop + " ")
    cut = head.find(stop)
    return text if cut < 0 else text[: len(text) - len(head) + cut]


def max_examples(
    tokenizer: Any, dataset: str, n_ctx: int, *, round_to: int = prompts.DEFAULT_ROUND,
    max_new_tokens: int = 12, seeds: Sequence[int] = range(5), limit: int = 200,
) -> int:
    """The most in-context examples of `dataset` whose prompts (longest over `seeds`) fit in a
    context of `n_ctx` tokens with room for the answer."""
    best = 0
    for n in range(1, limit + 1):
        longest = max(
            len(_encode(tokenizer, prompts.format_prompt(s.x_train, s.y_train, s.x_query[0], round_to)))
            for s in (datasets.make_split(dataset, n, seed, round_to=round_to) for seed in seeds)
        )
        if longest + max_new_tokens > n_ctx:
            if n == 1:
                raise ValueError(
                    f"a context of {n_ctx} tokens holds no {dataset} prompt: one example needs "
                    f"{longest} tokens plus {max_new_tokens} for the answer")
            break
        best = n
    return best


class LLMRegressor(RegressorMixin, BaseEstimator):
    """A language model as an in-context regressor.

    After `predict`, `answers_` holds the raw answers, `failures_` the unparseable ones and
    `n_failed_` their count; failed predictions are NaN (never zero).
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        round_to: int = prompts.DEFAULT_ROUND,
        max_new_tokens: int = 12,
        batch_size: int = 16,
        instruction: str | None = None,
        precision: str = "fp32",
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.round_to = round_to
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.instruction = instruction
        self.precision = precision

    # scikit-learn copies an estimator's parameters when it clones one (cross-validation, grid
    # search, pipelines). A language model is not an estimator: deep-copying it would copy its
    # weights for every fold, and a TransformerBridge's own `get_params` takes no `deep`. So the
    # model and the tokenizer are held by reference: a clone shares them, every other parameter is
    # cloned as scikit-learn does.
    _SHARED = ("model", "tokenizer")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return super().get_params(deep=False)  # no parameter is an estimator with parameters of its own

    def __sklearn_clone__(self) -> LLMRegressor:
        params = self.get_params()
        return type(self)(**{k: v if k in self._SHARED else clone(v, safe=False) for k, v in params.items()})

    def _tok(self) -> Any:
        tokenizer = self.tokenizer if self.tokenizer is not None else getattr(self.model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("LLMRegressor needs a tokenizer (pass one, or a model with .tokenizer)")
        return tokenizer

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True  # an in-context learner need not fit its examples well
        return tags

    def fit(self, X, y):
        """Store the in-context examples (validated as scikit-learn validates: 2-d finite X, 1-d y)."""
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        self.X_train_, self.y_train_ = X, np.asarray(y, dtype=np.float64)
        return self

    def prompts_for(self, X) -> list[str]:
        check_is_fitted(self, "n_features_in_")  # sklearn's NotFittedError: "call fit first"
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return [
            prompts.format_prompt(self.X_train_, self.y_train_, x, self.round_to, self.instruction)
            for x in X
        ]

    def predict(self, X) -> Float[np.ndarray, " n"]:
        answers = greedy_answers(
            self.model, self._tok(), self.prompts_for(X),
            max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, precision=self.precision,
        )
        self.answers_ = answers.texts
        self.failures_ = answers.parsed.failures
        self.n_failed_ = answers.parsed.n_failed
        return answers.values


def predict_splits(
    regressor: LLMRegressor, splits: Sequence[Split], *, progress: bool = True
) -> tuple[list[np.ndarray], Answers]:
    """Predict the queries of many problems in one batched pass (all prompts share batches).

    Returns the predictions per split and the Answers (texts, parse failures) of the whole run.
    """
    texts: list[str] = []
    counts: list[int] = []
    for split in splits:
        regressor.fit(split.x_train, split.y_train)
        batch = regressor.prompts_for(split.x_query)
        texts.extend(batch)
        counts.append(len(batch))
    answers = greedy_answers(
        regressor.model, regressor._tok(), texts,
        max_new_tokens=regressor.max_new_tokens, batch_size=regressor.batch_size, progress=progress,
        precision=regressor.precision,
    )
    bounds = np.cumsum([0, *counts])
    return [answers.values[a:b] for a, b in zip(bounds[:-1], bounds[1:])], answers


SHUFFLE_SEED = 2024  # the shuffled-y control's permutations: one fixed permutation per problem


def shuffle_permutation(n: int, dataset: str, n_examples: int, seed: int) -> Int[np.ndarray, " n"]:
    """The fixed permutation of a problem's `n` example outputs in its shuffled-y control, seeded by
    the problem (dataset, size, seed), never the identity when n > 1 (a control that moved nothing
    would be the prompt itself)."""
    import zlib

    rng = np.random.default_rng([SHUFFLE_SEED, zlib.crc32(dataset.encode()), n_examples, seed])
    order = rng.permutation(n)
    if n > 1 and (order == np.arange(n)).all():
        order = np.roll(order, 1)
    return order


def shuffled_split(split: Split, dataset: str, n_examples: int, seed: int) -> Split:
    """The shuffled-y control of a problem: the same inputs and query, the example outputs permuted
    among the examples (`shuffle_permutation`): the multiset of outputs, hence their mean, is kept,
    and only the pairing of each output with its input is lost."""
    order = shuffle_permutation(len(split.y_train), dataset, n_examples, seed)
    return dataclasses.replace(split, y_train=np.asarray(split.y_train)[order])


def evaluate(
    regressor: LLMRegressor,
    method: str,
    dataset_names: str | Sequence[str],
    *,
    n_examples: int | Sequence[int] = 25,
    seeds: Sequence[int] = range(100),
    noise: float = 0.0,
    round_to: int | None = prompts.DEFAULT_ROUND,
    progress: bool = True,
    shuffle_y: bool = False,
):
    """The language model in the evaluation harness: the same tidy rows as
    `optim_hunter.analysis.evaluation.evaluate`, all problems' prompts decoded in shared batches; a parse
    failure is a failed row carrying the reason. With `shuffle_y`, every prompt is its shuffled-y
    control (`shuffled_split`), scored against the problem's true query output."""
    import pandas as pd

    names, sizes, seed_list = evaluation.problem_grid(dataset_names, n_examples, seeds)
    problems = [(d, n, s) for d in names for n in sizes for s in seed_list]
    splits = [datasets.make_split(d, n, s, noise=noise, round_to=round_to) for d, n, s in problems]
    if shuffle_y:
        splits = [shuffled_split(split, *problem) for split, problem in zip(splits, problems)]
    predictions, answers = predict_splits(regressor, splits, progress=progress)
    reasons = iter(item.reason for item in answers.parsed.items)
    rows = []
    for (dataset, size, seed), split, pred in zip(problems, splits, predictions):
        errors = [next(reasons) for _ in pred]
        errors = [f"unparseable answer: {e}" if e else "" for e in errors]
        rows.extend(evaluation.result_rows(dataset, size, seed, method, split.y_query, pred, errors))
    return pd.DataFrame(rows)

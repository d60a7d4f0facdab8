"""Linear self-attention (LSA) models of in-context linear regression (von Oswald et al., 2023,
"Transformers learn in-context by gradient descent"): the tasks, the attention layer and model,
the loss, and training through optim_hunter.core.training.

Setting. A task is N context pairs (x_i, y_i) with y_i = w·x_i and one query x. Pair i becomes the
token e_i = (x_i, y_i) in R^(d+1); the query becomes (x, 0) and is the last token. An attention
layer adds to every token j

    e_j <- e_j + P sum_i (W_V e_i) <W_K e_i, W_Q e_j>

with i running over the N context tokens only: the query is never a key or a value, so context
tokens never see it (von Oswald's `include_query = False`). Without softmax this is LSA; with a
softmax over i of the scores it is ordinary (single-head, attention-only) softmax attention. The
model's prediction is minus the query's y-slot after the last layer.

What lives here:
  tasks           TaskConfig, Tasks, sample_tasks, tokens
  models          AttentionLayer, AttentionModel (linear or softmax), predict, model_predictor
  loss            loss: von Oswald et al.'s half mean squared error
  training        TaskStream, recipe, eval_loss, train_spec, train, Trained: through
                  optim_hunter.core.training

Beside it: `lsa_construction` (weights that make LSA gradient descent, and the algorithms written
in weight space), `lsa_step_sizes` (gradient descent at its best step sizes) and `lsa_comparison`
(trained models against the algorithms).

A Predictor is any function Tasks -> answers that is differentiable in the query inputs: trained
models, constructed models and the weight-space algorithms are all compared through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.nn import functional as F

from optim_hunter.core import devices, training

Predictor = Callable[["Tasks"], Float[Tensor, "batch"]]


# --- tasks ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """The regression task family: w ~ N(0, w_scale^2 I), x ~ U(-x_range, x_range)^d, no noise."""

    d: int = 10
    n_context: int = 10
    x_range: float = 1.0
    w_scale: float = 1.0


class Tasks(NamedTuple):
    """A batch of tasks: context inputs and outputs, one query each, and the true weights."""

    x: Float[Tensor, "batch n feature"]
    y: Float[Tensor, "batch n"]
    x_query: Float[Tensor, "batch feature"]
    y_query: Float[Tensor, "batch"]
    w: Float[Tensor, "batch feature"]

    def to(self, dtype: torch.dtype, device: torch.device | str | None = None) -> Tasks:
        """The same tasks in another floating-point type (and on `device`, when given)."""
        return Tasks(*(t.to(device=device, dtype=dtype) for t in self))


def sample_tasks(
    cfg: TaskConfig,
    n_tasks: int,
    generator: torch.Generator | int,
    dtype: torch.dtype = torch.float64,
) -> Tasks:
    """Draw `n_tasks` tasks; `generator` is a torch.Generator or a seed (all randomness is here)."""
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    w = torch.randn(n_tasks, cfg.d, generator=generator, dtype=torch.float64) * cfg.w_scale
    x_all = (torch.rand(n_tasks, cfg.n_context + 1, cfg.d, generator=generator,
                        dtype=torch.float64) * 2 - 1) * cfg.x_range
    y_all = torch.einsum("bnd,bd->bn", x_all, w)
    tasks = Tasks(x=x_all[:, :-1], y=y_all[:, :-1], x_query=x_all[:, -1], y_query=y_all[:, -1], w=w)
    return tasks.to(dtype)


def tokens(tasks: Tasks) -> Float[Tensor, "batch pos d_model"]:
    """Tokens (x_i, y_i) for the context, then the query (x, 0): pos = N + 1, d_model = d + 1."""
    context = torch.cat([tasks.x, tasks.y[..., None]], dim=-1)
    query = torch.cat([tasks.x_query, torch.zeros_like(tasks.y_query)[..., None]], dim=-1)
    return torch.cat([context, query[:, None]], dim=1)


# --- models -----------------------------------------------------------------------------------


class AttentionLayer(nn.Module):
    """One single-head, attention-only residual layer; keys and values come from context tokens.

    Parameters follow von Oswald et al.: W_Q, W_K [key, d_model], W_V [d_model, d_model] and the
    output projection P [d_model, d_model]; there are no biases, no MLP and no layer norm.
    """

    def __init__(
        self,
        d_model: int,
        key_size: int | None = None,
        softmax: bool = False,
        init_scale: float = 0.02,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        key_size = key_size or d_model
        self.softmax = softmax

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter(
                torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype) * init_scale
            )

        self.w_q = init(key_size, d_model)
        self.w_k = init(key_size, d_model)
        self.w_v = init(d_model, d_model)
        self.p = init(d_model, d_model)

    def forward(
        self, e: Float[Tensor, "batch pos d_model"], n_context: int
    ) -> Float[Tensor, "batch pos d_model"]:
        """Every token (query included) attends to the first `n_context` tokens; residual add."""
        context = e[:, :n_context]
        q = F.linear(e, self.w_q)  # every token asks, the query included
        k = F.linear(context, self.w_k)
        v = F.linear(context, self.w_v)
        scores = q @ k.transpose(1, 2)  # [batch pos n]
        if self.softmax:
            scores = scores.softmax(dim=-1)
        return e + F.linear(scores @ v, self.p)

    @torch.no_grad()
    def set_weights(self, weights: dict[str, Tensor]) -> AttentionLayer:
        """Overwrite w_q, w_k, w_v, p (shapes must match); returns self."""
        for name, value in weights.items():
            getattr(self, name).copy_(value)
        return self


class AttentionModel(nn.Module):
    """A stack of AttentionLayers acting on the residual stream of the task tokens."""

    def __init__(
        self,
        d: int,
        n_layers: int = 1,
        softmax: bool = False,
        init_scale: float = 0.02,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        key_size: int | None = None,
    ):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.d = d
        self.layers = nn.ModuleList(
            AttentionLayer(d + 1, key_size, softmax, init_scale, generator, dtype)
            for _ in range(n_layers)
        )

    def residuals(self, e: Float[Tensor, "batch pos d_model"]) -> list[Tensor]:
        """The token states before the first layer and after each layer (n_layers + 1 entries)."""
        n_context = e.shape[1] - 1
        states = [e]
        for layer in self.layers:
            states.append(layer(states[-1], n_context))
        return states

    def forward(self, e: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        """The token states after the last layer."""
        return self.residuals(e)[-1]

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' floating-point type (inputs are cast to it)."""
        return self.layers[0].w_q.dtype


def predict(model: AttentionModel, tasks: Tasks) -> Float[Tensor, "batch"]:
    """The model's answer: minus the query's y-slot after the last layer (on the model's device)."""
    return -model(tokens(tasks.to(model.dtype, devices.of(model))))[:, -1, -1]


def model_predictor(model: AttentionModel) -> Predictor:
    """`model` as a Predictor (a function of Tasks), the form `lsa_comparison.compare` takes."""
    return lambda tasks: predict(model, tasks)


# --- the loss -----------------------------------------------------------------------------------


def loss(prediction: Float[Tensor, "batch"], target: Float[Tensor, "batch"]) -> Tensor:
    """Von Oswald et al.'s loss: half the mean squared error over tasks."""
    return 0.5 * ((prediction - target) ** 2).mean()


# --- training (through optim_hunter.core.training, the book's one trainer) ---------------------------

BATCH_SIZE = 512  # fresh tasks per training step


class TaskStream:
    """Training batches as a function of the step, as the trainer requires: batch `s` is the
    (s+1)-th draw of `sample_tasks(cfg, batch_size, ...)` from one generator seeded with `seed`.

    Steps asked for in order cost one draw each; an earlier step (a resumed run) replays the
    stream from its start, so the batch of a step never depends on what was asked before.
    """

    def __init__(self, cfg: TaskConfig, batch_size: int, seed: int, dtype: torch.dtype = torch.float32):
        self.cfg, self.batch_size, self.seed, self.dtype = cfg, batch_size, seed, dtype
        self._generator: torch.Generator | None = None
        self._next = 0  # the step the generator's next draw belongs to

    def __call__(self, step: int) -> Tasks:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self._generator is None or step < self._next:
            self._generator, self._next = torch.Generator().manual_seed(self.seed), 0
        while self._next <= step:
            batch = sample_tasks(self.cfg, self.batch_size, self._generator, dtype=self.dtype)
            self._next += 1
        return batch


def recipe(steps: int, lr: float = 3e-3, seed: int = 0, eval_every: int = 100) -> training.TrainConfig:
    """The LSA training recipe as a trainer config: Adam (no weight decay, betas 0.9 / 0.98, no
    gradient clipping, no warm-up), the learning rate decayed by a cosine to 5% of `lr`, one CPU
    thread (the matrices are 11 x 11: more threads only contend). `seed` sets the initial weights
    and, through `train`, the training tasks."""
    return training.TrainConfig(
        steps=steps, lr=lr, warmup_steps=0, schedule="cosine", min_lr_ratio=0.05, weight_decay=0.0,
        betas=(0.9, 0.98), grad_clip=None, seed=seed, eval_every=eval_every, threads=1,
    )


def eval_loss(model: AttentionModel, tasks: Tasks) -> float:
    """The model's loss on `tasks`, computed in the model's floating-point type."""
    tasks = tasks.to(model.dtype, devices.of(model))
    with torch.no_grad():
        return float(loss(predict(model, tasks), tasks.y_query))


def train_spec(
    task_cfg: TaskConfig,
    *,
    n_layers: int = 1,
    softmax: bool = False,
    eval_tasks: Tasks | None = None,
    batch_size: int = BATCH_SIZE,
    data_seed: int = 0,
    init_scale: float = 0.02,
) -> training.TrainSpec:
    """An AttentionModel family for `training.train`: built from the trainer's seed (entries
    N(0, init_scale^2)), trained on `TaskStream(task_cfg, batch_size, data_seed)` to minimise
    `loss` of the answer, evaluated (history column `eval_loss`) on `eval_tasks` when given."""
    evaluate = None
    if eval_tasks is not None:
        evaluate = lambda model, step: {"eval_loss": eval_loss(model, eval_tasks)}  # noqa: E731
    return training.TrainSpec(
        build=lambda seed: AttentionModel(task_cfg.d, n_layers=n_layers, softmax=softmax,
                                          init_scale=init_scale, seed=seed),
        batch=TaskStream(task_cfg, batch_size, data_seed),
        loss=lambda model, batch: loss(predict(model, batch), batch.y_query),
        tokens=lambda batch: batch.x.shape[0] * (batch.x.shape[1] + 1),
        evaluate=evaluate,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Trained:
    """A trained AttentionModel and its curve: columns step, train_loss (mean training loss since
    the previous row), eval_loss; the row of step 0 is the initial model."""

    name: str
    model: AttentionModel
    history: pd.DataFrame


def train(
    task_cfg: TaskConfig,
    config: training.TrainConfig,
    eval_tasks: Tasks,
    *,
    n_layers: int = 1,
    softmax: bool = False,
    batch_size: int = BATCH_SIZE,
    name: str = "LSA",
    progress: bool = False,
    run_dir: str | None = None,
) -> Trained:
    """Train an AttentionModel with `training.train` (see `recipe` for the usual config).

    The initial weights and the training tasks both come from `config.seed`, so the result is a
    pure function of the arguments; `run_dir` (optional) is the trainer's folder for resume points.
    """
    spec = train_spec(task_cfg, n_layers=n_layers, softmax=softmax, eval_tasks=eval_tasks,
                      batch_size=batch_size, data_seed=config.seed)
    initial = eval_loss(spec.build(config.seed), eval_tasks)  # the trainer builds the same model
    start = {"step": 0, "train_loss": float("nan"), "eval_loss": initial}
    result = training.train(spec, config, run_dir, progress=progress, description=name)
    rows = [start] + [{"step": row["step"], "train_loss": row.get("loss", float("nan")),
                       "eval_loss": row["eval_loss"]} for row in result.history]
    return Trained(name, result.model, pd.DataFrame(rows))

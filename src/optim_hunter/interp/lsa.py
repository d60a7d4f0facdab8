"""Linear self-attention (LSA) as gradient descent: the layer, the weight construction that turns
it into one gradient-descent step, the gradient-descent baselines, training, and the metrics that
compare a trained layer with the algorithm (von Oswald et al., 2023, "Transformers learn in-context
by gradient descent").

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
  construction    gd_layer_weights, constructed_model: each layer one step of GD (or of GD++)
  references      gd_weights, gd_predict, gd_token_ys, gd_plus_predict, gd_predictor: the
                  algorithms written in weight space, to check the construction against
  step sizes      loss, scan_gd_lr, best_gd_lr, StepSizes, tune_gd: baselines at their best
  training        TaskStream, recipe, train_spec, train, Trained: through optim_hunter.training
  comparison      relative_error, verify_construction, sensitivities, compare, compare_table,
                  readout_losses, effective_weights, from_effective, align_scale, weight_cosine,
                  interpolation

A Predictor is any function Tasks -> answers that is differentiable in the query inputs: trained
models, constructed models and the weight-space algorithms are all compared through it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.nn import functional as F

from optim_hunter import devices, training

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
    """`model` as a Predictor (a function of Tasks), the form `compare` takes."""
    return lambda tasks: predict(model, tasks)


# --- the construction -------------------------------------------------------------------------


def gd_layer_weights(
    d: int,
    n_context: int,
    eta: float,
    gamma: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Tensor]:
    """Weights that make one LSA layer one gradient-descent step of size `eta` on
    L(W) = 1/(2N) sum_i (W x_i - y_i)^2, written into the y-slots of all tokens.

    W_K = W_Q = [[I_d, 0], [0, 0]] so the score of (i, j) is x_i . x_j; W_V = [[0, 0], [0, -1]] and
    P = (eta / N) I so the value carried is -(eta/N) y_i. With `gamma` (GD++), W_V = -I and
    P = diag(gamma/N I_d, eta/N): the x-slots are also moved, x_j <- (I - gamma/N X^T X) x_j, the
    curvature correction von Oswald et al. find in trained deep models.
    """
    eye = torch.eye(d + 1, dtype=dtype)
    select_x = eye.clone()
    select_x[d, d] = 0.0
    if gamma is None:
        w_v = torch.zeros(d + 1, d + 1, dtype=dtype)
        w_v[d, d] = -1.0
        p = eye * (eta / n_context)
    else:
        w_v = -eye
        p = torch.diag(torch.tensor([gamma / n_context] * d + [eta / n_context], dtype=dtype))
    return {"w_q": select_x, "w_k": select_x.clone(), "w_v": w_v, "p": p}


def constructed_model(
    d: int,
    n_context: int,
    etas: Sequence[float],
    gammas: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> AttentionModel:
    """An LSA stack whose layer k is GD step k (size etas[k]), or GD++ step k with gammas."""
    model = AttentionModel(d, n_layers=len(etas), softmax=False, init_scale=0.0, dtype=dtype)
    for k, (layer, eta) in enumerate(zip(model.layers, etas, strict=True)):
        gamma = None if gammas is None else gammas[k]
        layer.set_weights(gd_layer_weights(d, n_context, eta, gamma, dtype))
    return model


# --- gradient descent in weight space (the references) -----------------------------------------


def gd_weights(tasks: Tasks, etas: Sequence[float]) -> list[Float[Tensor, "batch feature"]]:
    """W_0 = 0 and W_{k+1} = W_k - eta_k grad L(W_k), with L(W) = 1/(2N) sum_i (W x_i - y_i)^2."""
    w = torch.zeros_like(tasks.x_query)
    trajectory = [w]
    for eta in etas:
        residual = torch.einsum("bnd,bd->bn", tasks.x, w) - tasks.y
        grad = torch.einsum("bn,bnd->bd", residual, tasks.x) / tasks.x.shape[1]
        w = w - eta * grad
        trajectory.append(w)
    return trajectory


def gd_predict(tasks: Tasks, etas: Sequence[float]) -> Float[Tensor, "batch"]:
    """The query prediction W_k . x after len(etas) GD steps from W = 0."""
    return (gd_weights(tasks, etas)[-1] * tasks.x_query).sum(-1)


def gd_token_ys(tasks: Tasks, etas: Sequence[float]) -> Float[Tensor, "batch pos"]:
    """What the y-slots of all tokens should hold after the constructed layers: the residuals
    y_i - W_k x_i for the context tokens and -W_k x for the query (its y starts at 0)."""
    w = gd_weights(tasks, etas)[-1]
    context = tasks.y - torch.einsum("bnd,bd->bn", tasks.x, w)
    query = -(w * tasks.x_query).sum(-1)
    return torch.cat([context, query[:, None]], dim=1)


def gd_plus_predict(
    tasks: Tasks, etas: Sequence[float | Tensor], gammas: Sequence[float | Tensor]
) -> Float[Tensor, "batch"]:
    """GD++: a GD step on the current inputs, then every input (context and query) is moved by
    x <- (I - gamma C) x with C = X^T X / N, the empirical second moment of the current context.

    Moving the inputs this way preconditions the next step (it shrinks the directions of large
    curvature), which is why trained multi-layer LSA can beat plain GD.
    """
    x, x_query, residual = tasks.x, tasks.x_query, tasks.y
    n = x.shape[1]
    prediction = torch.zeros_like(tasks.y_query)
    for eta, gamma in zip(etas, gammas, strict=True):
        # the GD step, taken from W = 0 on the current residuals
        delta_w = eta * torch.einsum("bn,bnd->bd", residual, x) / n
        residual = residual - torch.einsum("bnd,bd->bn", x, delta_w)
        prediction = prediction + (delta_w * x_query).sum(-1)
        second_moment = x.transpose(1, 2) @ x / n  # [batch d d], symmetric
        x = x - gamma * x @ second_moment
        x_query = x_query - gamma * torch.einsum("bd,bde->be", x_query, second_moment)
    return prediction


def gd_predictor(etas: Sequence[float], gammas: Sequence[float] | None = None) -> Predictor:
    """A Predictor for GD (or GD++ when gammas are given) with fixed step sizes."""
    if gammas is None:
        return lambda tasks: gd_predict(tasks, etas)
    return lambda tasks: gd_plus_predict(tasks, etas, gammas)


# --- learning rates ---------------------------------------------------------------------------


def loss(prediction: Float[Tensor, "batch"], target: Float[Tensor, "batch"]) -> Tensor:
    """Von Oswald et al.'s loss: half the mean squared error over tasks."""
    return 0.5 * ((prediction - target) ** 2).mean()


def scan_gd_lr(tasks: Tasks, etas: Sequence[float] | Float[np.ndarray, " n"]) -> pd.DataFrame:
    """Loss of one GD step for each step size in `etas` (columns eta, loss)."""
    unit = gd_predict(tasks, [1.0])  # one step from W = 0 is linear in eta
    rows = [{"eta": float(eta), "loss": float(loss(eta * unit, tasks.y_query))} for eta in etas]
    return pd.DataFrame(rows)


def best_gd_lr(tasks: Tasks) -> float:
    """The exact minimiser over eta of the one-step GD loss on `tasks`: the loss is quadratic in
    eta, so eta* = <a, y> / <a, a> with a the one-step prediction at eta = 1."""
    unit = gd_predict(tasks, [1.0])
    return float((unit * tasks.y_query).sum() / (unit * unit).sum())


@dataclasses.dataclass(frozen=True)
class StepSizes:
    """Tuned step sizes of k GD steps (gammas None) or k GD++ steps, and their tuning loss."""

    etas: list[float]
    gammas: list[float] | None
    tuning_loss: float

    def predictor(self) -> Predictor:
        """These step sizes as a Predictor."""
        return gd_predictor(self.etas, self.gammas)


def tune_gd(
    tasks: Tasks,
    n_steps: int,
    plus: bool = False,
    starts: Sequence[float] = (0.5, 1.5, 3.0),
    max_iter: int = 200,
) -> StepSizes:
    """Per-step sizes (and GD++ gammas when `plus`) minimising the loss on `tasks`, by L-BFGS.

    The GD++ loss is not convex in its step sizes, so L-BFGS runs from several starts (plain GD
    with sizes spread around each value of `starts`; equal sizes would stay equal, since GD steps
    on a quadratic commute) and the best run is kept. Deterministic: no randomness is involved.
    """
    tasks = tasks.to(torch.float64)
    best: StepSizes | None = None
    best_loss = math.inf
    for eta0 in starts:
        spread = torch.linspace(0.8, 1.2, n_steps) if n_steps > 1 else torch.ones(1)
        etas = (eta0 * spread).to(torch.float64).requires_grad_(True)
        gammas = torch.zeros(n_steps, dtype=torch.float64, requires_grad=plus)
        opt = torch.optim.LBFGS([etas, gammas] if plus else [etas], max_iter=max_iter,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                                tolerance_change=1e-14)

        def closure() -> Tensor:
            opt.zero_grad()
            value = loss(gd_plus_predict(tasks, list(etas), list(gammas)), tasks.y_query)
            value.backward()
            return value

        opt.step(closure)
        with torch.no_grad():
            final = float(loss(gd_plus_predict(tasks, list(etas), list(gammas)), tasks.y_query))
        if math.isfinite(final) and final < best_loss:
            best_loss = final
            best = StepSizes(etas.detach().tolist(), gammas.detach().tolist() if plus else None,
                             final)
    if best is None:
        raise RuntimeError("every L-BFGS start diverged")
    return best


# --- training (through optim_hunter.training, the book's one trainer) ---------------------------

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


# --- comparison -------------------------------------------------------------------------------


def relative_error(a: Tensor, b: Tensor) -> float:
    """max |a - b| / |b| over entries (b is the reference)."""
    a, b = a.detach(), b.detach()
    return float(((a - b).abs() / b.abs().clamp_min(torch.finfo(b.dtype).tiny)).max())


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


def verify_construction(
    tasks: Tasks, etas: Sequence[float], gammas: Sequence[float] | None = None
) -> pd.DataFrame:
    """Check, for every depth k = 1..len(etas), the constructed stack of k layers against k steps
    of the weight-space reference, in float64. Columns: depth, pred_rel_error (the query's
    answer), y_slots_rel_error (all tokens' y-slots: context residuals and the query), and
    x_slots_max_change (GD leaves inputs untouched; GD++ rows leave it NaN, inputs move)."""
    tasks = tasks.to(torch.float64)
    rows = []
    for k in range(1, len(etas) + 1):
        step_gammas = None if gammas is None else list(gammas[:k])
        model = constructed_model(tasks.x.shape[-1], tasks.x.shape[1], list(etas[:k]), step_gammas)
        with torch.no_grad():
            e0 = tokens(tasks)
            out = model(e0)
        if gammas is None:
            reference_pred = gd_predict(tasks, etas[:k])
            y_error = relative_error(out[..., -1], gd_token_ys(tasks, etas[:k]))
            x_change = float((out[..., :-1] - e0[..., :-1]).abs().max())
        else:
            reference_pred = gd_plus_predict(tasks, etas[:k], step_gammas)
            y_error, x_change = float("nan"), float("nan")
        rows.append({
            "depth": k,
            "pred_rel_error": relative_error(-out[:, -1, -1], reference_pred),
            "y_slots_rel_error": y_error,
            "x_slots_max_change": x_change,
        })
    return pd.DataFrame(rows)

"""The one trainer behind every model the book trains, and its checkpoint format.

A model family hands `train` a `TrainSpec` (how to build the model from a seed, the batch of a
given step, the loss, optional evaluation) and a `TrainConfig` (steps, learning-rate schedule,
evaluation and snapshot schedules). The trainer is

  * deterministic: the model is built from `config.seed` and batch `s` is `spec.batch(s)`, a
    function of the step alone, so the same seed gives the same weights, and a run resumed after
    an interruption ends with exactly the weights of an uninterrupted one;
  * observable: a tqdm bar, a `history` of evaluation rows (every `eval_every` steps and at the
    end) for metrics-over-training figures, and snapshots at log-spaced steps;
  * safe on disk: resume points and snapshots are `optim_hunter.core.checkpoints` (verified,
    written atomically); a Ctrl-C or SIGTERM stops at a step boundary after writing a resume point.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from optim_hunter.core import devices, diskspace
from optim_hunter.core.checkpoints import (
    KEY_OMITS_DEFAULT,
    RESUME_SLOTS,
    CheckpointError,
    fingerprint,
    load_checkpoint,
    remove_resume_points,
    resume_paths,
    save_checkpoint,
    snapshot_path,
)

# Part of every zoo cache key: bump it when a change here changes the weights training produces.
CODE_VERSION = "1"
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("fp32", "bf16")


# --- configuration -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How long and how to optimise; every model's config embeds one.

    `eval_every` 0 evaluates only at the end; `snapshots` N keeps N log-spaced snapshots (the last
    is the final step); `checkpoint_every` 0 writes a resume checkpoint only on interruption.
    `schedule_steps` lays the learning-rate schedule out over more steps than the run takes (0: over
    `steps`): a run that stops early on another run's schedule, so the two compare step for step.
    `fused_optimizer` runs AdamW's fused kernel, one pass over all parameters instead of a loop of
    small ops per tensor: for models with many small steps (affine-recurrence: the optimiser's 7.2 ms
    of a 49 ms step become 2.6 ms); the weights then differ from the loop's in the last bits.
    `threads` sets torch's CPU threads for the run (None leaves them as they are). `precision`
    "bf16" runs the loss under CPU bfloat16 autocast (weights and optimiser stay float32); on
    CPUs with AVX-512 BF16 that is ~1.5x faster for the book's small models.
    """

    steps: int
    lr: float = 1e-3
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float | None = 1.0
    seed: int = 0
    eval_every: int = 0
    snapshots: int = 0
    checkpoint_every: int = 0
    threads: int | None = None
    precision: str = "fp32"
    schedule_steps: int = dataclasses.field(default=0, metadata=KEY_OMITS_DEFAULT)
    fused_optimizer: bool = dataclasses.field(default=False, metadata=KEY_OMITS_DEFAULT)

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

        need(isinstance(self.steps, int) and self.steps >= 1, f"steps must be >= 1, got {self.steps!r}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, got {self.lr}")
        need(0 <= self.warmup_steps <= self.steps, f"warmup_steps must be in [0, steps], got {self.warmup_steps}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive or None")
        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        for name in ("eval_every", "snapshots", "checkpoint_every"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.snapshots <= self.steps, f"cannot keep {self.snapshots} snapshots of {self.steps} steps")
        need(self.schedule_steps == 0 or self.schedule_steps >= self.steps,
             f"schedule_steps must be 0 or >= steps ({self.steps}), got {self.schedule_steps}")
        need(self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}")
        need(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """What a model family supplies.

    build(seed) -> a fresh model; batch(step) -> that step's batch (deterministic in `step`);
    loss(model, batch) -> a scalar tensor; tokens(batch) -> tokens in the batch (throughput);
    evaluate(model, step) -> metrics for the history (called in eval mode, without gradients).
    `param_groups(model)` may split parameters, e.g. to exempt embeddings from weight decay.
    """

    build: Callable[[int], nn.Module]
    batch: Callable[[int], Any]
    loss: Callable[[nn.Module, Any], Tensor]
    tokens: Callable[[Any], int] = lambda batch: 0
    evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None = None
    param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None


@dataclasses.dataclass
class TrainResult:
    model: nn.Module
    steps: int
    history: list[dict[str, int | float]]  # evaluation rows: {"step" (an int), "loss", **metrics}
    losses: list[float]  # training loss at every step
    seconds: float  # training time in this call (evaluation excluded)
    tokens: int  # tokens trained on in this call
    snapshot_steps: list[int]
    resumed_from: int = 0  # steps already done (a resume point) when this call began

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def lr_at(config: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to `min_lr_ratio * lr` over `schedule_steps` (or `steps`),
    or constant."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    total = config.schedule_steps or config.steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def snapshot_steps(total: int, count: int) -> list[int]:
    """`count` distinct steps in [1, total], log-spaced (dense early, where training changes most),
    always ending at `total`."""
    if count <= 0:
        return []
    if count > total:
        raise ValueError(f"cannot take {count} distinct snapshots of {total} steps")
    steps: set[int] = {total}
    grid = count
    while len(steps) < count:
        # Rounding merges early points; widen the grid until there are enough distinct steps.
        steps = {int(round(v)) for v in np.geomspace(1, total, grid)} | {total}
        grid += 1
    ordered = sorted(steps)
    while len(ordered) > count:  # drop from the dense early end, keep 1 and total
        ordered.pop(1)
    return ordered


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only; biases, norms and embeddings are not decayed."""
    decay, keep = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_embedding = "embed" in name or name.startswith("pos")
        (decay if param.ndim >= 2 and not is_embedding else keep).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


class _StopRequests:
    """SIGINT / SIGTERM while training ask the loop to stop at the end of the current step, after
    saving a resume point; more of them meanwhile (an impatient second Ctrl-C) change nothing, and
    none can interrupt a checkpoint write. A third Ctrl-C outside a write stops at once, for a step
    that never ends (the resume point on disk is then the previous one, still complete). Only in
    the main thread (elsewhere Python delivers no signals)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.count = 0
        self.writing = 0
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, sig: int, frame: Any) -> None:
        self.count += 1
        if self.count >= 3 and not self.writing and sig == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = self.signal or sig

    @contextlib.contextmanager
    def writing_files(self) -> Iterator[None]:
        self.writing += 1
        try:
            yield
        finally:
            self.writing -= 1

    def stop(self) -> None:
        """Raise what the received signal asked for (KeyboardInterrupt; SystemExit for SIGTERM)."""
        if self.signal == signal.SIGTERM:
            raise SystemExit(128 + signal.SIGTERM)
        raise KeyboardInterrupt


# --- optimizer state <-> flat tensors (for resume checkpoints) -----------------------------------


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: v for k, v in group.items()} for group in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [dict(group, betas=tuple(group["betas"])) if "betas" in group else group for group in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- the training loop ---------------------------------------------------------------------------


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def train(
    spec: TrainSpec,
    config: TrainConfig,
    run_dir: Path | str | None = None,
    *,
    callbacks: Sequence[Callable[[nn.Module, int], Mapping[str, float] | None]] = (),
    progress: bool = True,
    description: str = "train",
    run_key: str = "",
    stop_at: int | None = None,
    clean_up: bool = True,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train `spec` under `config`, resuming from `run_dir` if it holds a matching resume point.

    With `run_dir`, resume checkpoints (every `checkpoint_every` steps, and on Ctrl-C) and
    snapshots (`run_dir/snapshots/step_XXXXXXX`) are written there; `run_key` identifies the
    run so a resume point of a different configuration is ignored. `callbacks(model, step)` run
    with `spec.evaluate` at every evaluation and may return metrics for the history. `stop_at`
    stops after that step as an interruption would (leaving a resume checkpoint): for tests.

    Ctrl-C or SIGTERM stops at the end of the current step, after writing a resume point; resume
    points alternate between two slots, so an interrupted write never loses the previous one.
    `clean_up=False` keeps a resume point at the final step, for a caller that removes it
    (`remove_resume_points`) only once it has saved the final weights.

    `device` (default the CPU): the model, every batch (`devices.move`) and the optimizer's state live
    there, and the family's `evaluate` runs there; checkpoints are written from the CPU copies. Float
    kernels differ between devices, so a run on another device type has its own resume key.
    """
    where = torch.device(device) if device is not None else torch.device("cpu")
    on_device = {} if where.type == "cpu" else {"device": where.type}  # CPU keys as before: nothing retrains
    key = fingerprint({"config": config, "run_key": run_key, "code": CODE_VERSION, **on_device})
    with _threads(config.threads):
        torch.manual_seed(config.seed)  # for anything a family draws from the global generator
        run = _Run(spec, config, Path(run_dir) if run_dir is not None else None, where, key,
                   list(callbacks), progress, description)
        run.loop(stop_at, clean_up)
    run.model.eval()
    return TrainResult(run.model, run.step, run.history, run.losses, run.seconds, run.tokens,
                       sorted(s for s in run.snaps if s <= run.step), run.resumed_from)


class _Run:
    """One call of `train`: the model and optimizer (resumed from the newest valid resume point of
    this run's key), the history and losses so far, and the steps of the loop."""

    def __init__(self, spec: TrainSpec, config: TrainConfig, run_dir: Path | None, where: torch.device, key: str,
                 callbacks: list, progress: bool, description: str) -> None:
        self.spec, self.config, self.run_dir, self.where, self.key = spec, config, run_dir, where, key
        self.callbacks, self.progress, self.description = callbacks, progress, description
        self.snaps = set(snapshot_steps(config.steps, config.snapshots))
        self.model = spec.build(config.seed).to(where)
        groups = (spec.param_groups or (lambda m: default_param_groups(m, config.weight_decay)))(self.model)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay, fused=config.fused_optimizer or None)
        self.step, self.history, self.losses = 0, [], []
        newest = self._newest_resume_point()
        if newest is not None:
            _, _, tensors, meta = newest
            self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            _load_optimizer(self.optimizer, tensors, meta["optimizer"])
            self.step, self.history, self.losses = meta["step"], meta["history"], meta["losses"]
        self.resumed_from = self.step
        # the next resume point goes to the slot that does not hold the newest one
        self.next_slot = RESUME_SLOTS[1] if newest is not None and newest[1] == RESUME_SLOTS[0] else RESUME_SLOTS[0]
        self.requests = _StopRequests()
        self.seconds, self.tokens = 0.0, 0

    def _newest_resume_point(self) -> tuple[int, str, dict, dict] | None:
        points = []  # (step, slot, tensors, meta) of every valid resume point of this run
        for path in resume_paths(self.run_dir) if self.run_dir is not None else []:
            try:
                tensors, meta = load_checkpoint(path)
            except CheckpointError as err:
                warnings.warn(f"ignoring a damaged resume point ({path.name}): {err}", stacklevel=4)
                continue
            if meta.get("key") == self.key:
                points.append((int(meta["step"]), path.name, tensors, meta))
        return max(points, key=lambda p: p[0]) if points else None

    def save_resume(self, step: int) -> None:
        if self.run_dir is None:
            return
        opt_tensors, opt_meta = _optimizer_tensors(self.optimizer)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()} | opt_tensors
        meta = {"key": self.key, "step": step, "history": self.history, "losses": self.losses, "optimizer": opt_meta}
        with self.requests.writing_files():
            save_checkpoint(self.run_dir / self.next_slot, tensors, meta)
        self.next_slot = RESUME_SLOTS[1] if self.next_slot == RESUME_SLOTS[0] else RESUME_SLOTS[0]

    def evaluate(self, step: int) -> None:
        row: dict[str, int | float] = {"step": step}
        if self.losses:
            recent = self.losses[-max(1, min(len(self.losses), self.config.eval_every or 50)) :]
            row["loss"] = float(np.mean(recent))
        with _evaluating(self.model):
            for fn in ([self.spec.evaluate] if self.spec.evaluate else []) + list(self.callbacks):
                row.update(fn(self.model, step) or {})
        self.history.append(row)
        if self.progress:  # the learning curve as it happens, above the bar
            tqdm.write(f"{self.description} @ {step}: "
                       + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step"))

    def optimizer_step(self) -> float:
        """One step of training (the learning rate of this step, the batch, the update); its loss."""
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(config, self.step)
        batch = devices.move(self.spec.batch(self.step), self.where)
        with torch.autocast(self.where.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss = self.spec.loss(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{self.description}: loss became {value} at step {self.step}")
        self.losses.append(value)
        self.step += 1
        self.tokens += self.spec.tokens(batch)
        return value

    def after_step(self, bar: Any, value: float, stop_at: int | None) -> bool:
        """Progress, evaluation, snapshot and resume point after a step; True to stop the loop."""
        config, step = self.config, self.step
        if self.progress:
            bar.update(1)
            if step % 10 == 0 or step == config.steps:
                bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{self.tokens / max(self.seconds, 1e-9):.0f}")
        if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
            self.evaluate(step)
        if step in self.snaps and self.run_dir is not None:
            with self.requests.writing_files():
                save_checkpoint(snapshot_path(self.run_dir, step), self.model.state_dict(), {"step": step})
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            self.save_resume(step)
        if stop_at is not None and step >= stop_at and step < config.steps:
            self.save_resume(step)
            return True
        if self.requests.signal is not None:  # Ctrl-C or SIGTERM: at a step boundary
            self.save_resume(step)
            self.requests.stop()
        return False

    def loop(self, stop_at: int | None, clean_up: bool) -> None:
        config = self.config
        self.model.train()
        bar = tqdm(total=config.steps, initial=self.step, desc=self.description, disable=not self.progress,
                   dynamic_ncols=True)
        if self.run_dir is not None:
            diskspace.remove_stale_temporaries(self.run_dir)  # left by a run killed mid-write
        try:
            self.requests.install()
            while self.step < config.steps:
                began = time.perf_counter()
                value = self.optimizer_step()
                self.seconds += time.perf_counter() - began
                if self.after_step(bar, value, stop_at):
                    break
            if self.step >= config.steps and self.run_dir is not None and not clean_up:
                self.save_resume(self.step)  # the caller saves the final weights, then removes this
        except KeyboardInterrupt:
            if self.requests.signal is None:  # raised inside the step (not by a signal we deferred)
                self.save_resume(self.step)  # the next call resumes here
            raise
        finally:
            self.requests.restore()
            bar.close()
        if self.step >= config.steps and self.run_dir is not None and clean_up:
            remove_resume_points(self.run_dir)  # finished: the caller keeps the final weights

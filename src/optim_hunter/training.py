"""The one trainer behind every model the book trains, and its checkpoint format.

A model family hands `train` a `TrainSpec` (how to build the model from a seed, the batch of a
given step, the loss, optional evaluation) and a `TrainConfig` (steps, learning-rate schedule,
evaluation and snapshot schedules). The trainer is

  * deterministic: the model is built from `config.seed` and batch `s` is `spec.batch(s)`, a
    function of the step alone, so the same seed gives the same weights, and a run resumed after
    an interruption ends with exactly the weights of an uninterrupted one;
  * observable: a tqdm bar, a `history` of evaluation rows (every `eval_every` steps and at the
    end) for metrics-over-training figures, and snapshots at log-spaced steps;
  * safe on disk: checkpoints are a safetensors file plus a JSON sidecar that carries one sha256
    over the tensors and the metadata (steps, losses, the resume point: an edited sidecar is as
    corrupt as an edited tensor). Both are written to a temporary name and moved into place (`os.replace`), the
    JSON last, so a crash never leaves a checkpoint that looks complete; loading verifies the hash
    and never unpickles anything.

Checkpoint `PATH` means the pair `PATH.safetensors` / `PATH.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from optim_hunter import devices, diskspace

# Part of every zoo cache key: bump it when a change here changes the weights training produces.
CODE_VERSION = "1"
FORMAT = "optim_hunter.checkpoint/2"  # /2: the hash covers the metadata too
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("fp32", "bf16")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, partial or corrupt (the message says which and where)."""


# --- configuration -------------------------------------------------------------------------------


# Fields added after models were trained: left at their default they stay out of a configuration's
# cache key (`fingerprint`), so adding one does not retrain every cached model.
KEY_OMITS_DEFAULT = {"key_omits_default": True}


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
        need(self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be positive or None")
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


# --- checkpoints ---------------------------------------------------------------------------------


def content_hash(tensors: Mapping[str, Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in name order: independent of how
    the file lays them out, so it checks what a loader gets back."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _sealed_hash(tensors_hash: str, meta: Mapping[str, Any]) -> str:
    """One sha256 over the tensors' hash and the metadata as a loader reads it back (canonical JSON)."""
    canonical = json.dumps(meta, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(f"{tensors_hash}|{canonical}".encode()).hexdigest()


def _write_temporary(path: Path, write: Callable[[Path], None]) -> Path:
    """`write` the content of `path` to a temporary beside it, synced to disk; return the
    temporary (removed if anything fails)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        # safetensors creates its files owner-only (0600); a shared cache needs the umask's usual
        # permissions, as for any other file the user creates
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _atomic_write(path: Path, write: Callable[[Path], None], size: int = 0) -> None:
    """Write `path` through a temporary moved into place: the previous file stays whole until the
    new one is complete. A full disk raises `diskspace.DiskFullError` (naming the folder and about
    `size` bytes) and leaves no temporary behind."""
    with diskspace.writing(path, size):
        tmp = _write_temporary(path, write)
    try:
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path: Path | str, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Write `path`.safetensors then `path`.json (with the content hash), each atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    # the metadata exactly as `load_checkpoint` will read it (dataclasses become dicts, ...)
    meta = json.loads(json.dumps(dict(meta), default=_json_default))
    sidecar = {"format": FORMAT, "sha256": _sealed_hash(content_hash(flat), meta), "n_tensors": len(flat),
               "meta": meta}
    text = json.dumps(sidecar, indent=1, sort_keys=True, default=_json_default)
    # Both files are written in full before either replaces its predecessor, so a disk that fills
    # meanwhile leaves the previous checkpoint whole (the space they need is then named); the JSON
    # moves last: its presence says the tensors beside it are complete.
    tensors_file, sidecar_file = path.with_suffix(".safetensors"), path.with_suffix(".json")
    needed = sum(t.numel() * t.element_size() for t in flat.values()) + len(text.encode()) + 64 * len(flat) + 1024
    temporaries: list[Path] = []
    with diskspace.writing(tensors_file, needed, temporaries):
        temporaries.append(_write_temporary(tensors_file, lambda tmp: save_file(flat, str(tmp))))
        temporaries.append(_write_temporary(sidecar_file, lambda tmp: tmp.write_text(text, encoding="utf-8")))
    try:
        os.replace(temporaries[0], tensors_file)
        os.replace(temporaries[1], sidecar_file)
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path | str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint, verified; CheckpointError if partial or corrupt."""
    path = Path(path)
    tensors_file, sidecar_file = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not sidecar_file.exists() or not tensors_file.exists():
        missing = [str(f) for f in (tensors_file, sidecar_file) if not f.exists()]
        raise CheckpointError(f"checkpoint {path} is missing or partial: no {', '.join(missing)}")
    try:
        sidecar = json.loads(sidecar_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {path}: unreadable {sidecar_file.name}: {err}") from err
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT or "sha256" not in sidecar:
        raise CheckpointError(f"checkpoint {path}: {sidecar_file.name} is not a {FORMAT} sidecar")
    try:
        tensors = load_file(str(tensors_file))  # safetensors: no pickle, no code execution
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path}: corrupt {tensors_file.name}: {err}") from err
    meta = sidecar.get("meta")
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: {sidecar_file.name} has no metadata object")
    actual = _sealed_hash(content_hash(tensors), meta)
    if actual != sidecar["sha256"]:
        raise CheckpointError(
            f"checkpoint {path}: content hash mismatch (expected {sidecar['sha256'][:12]}..., "
            f"got {actual[:12]}...): the tensors or the metadata were modified or damaged"
        )
    return tensors, meta


_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(folder: Path | str) -> list[Path]:
    """Delete the temporary files (and staging folders) named `.<name>.tmp-<pid>` that a writer
    left under `folder` when it was killed mid-write (its pid is dead); the removed paths. A live
    writer's are kept."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for file in folder.rglob(".*.tmp-*"):
        match = _TEMPORARY.match(file.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(file) if file.is_dir() else file.unlink()
                removed.append(file)
    return removed


def is_temporary(file: Path) -> bool:
    return bool(_TEMPORARY.match(file.name))


def snapshot_path(run_dir: Path | str, step: int) -> Path:
    """Where `train` keeps the snapshot of step `step` of a run (checkpoint path)."""
    return Path(run_dir) / "snapshots" / f"step_{step:07d}"


# --- resume points --------------------------------------------------------------------------------
# Two slots, written alternately: a kill or a second Ctrl-C during one write can damage only the
# slot being written, never the previous resume point.
RESUME_SLOTS = ("resume", "resume-alt")


def resume_paths(run_dir: Path | str) -> list[Path]:
    """The resume checkpoints present in `run_dir` (either slot)."""
    return [Path(run_dir) / slot for slot in RESUME_SLOTS if checkpoint_exists(Path(run_dir) / slot)]


def remove_resume_points(run_dir: Path | str) -> None:
    for slot in RESUME_SLOTS:
        remove_checkpoint(Path(run_dir) / slot)


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


LOCK_NAME = ".lock"
OWNER_NAME = ".lock.owner"  # who holds the lock: read by a writer that has to wait


def _owner_text(path: Path) -> str:
    """'pid 123 on host (train affine-recurrence, since 12:01:02)' from an owner file, or ''."""
    try:
        owner = json.loads(path.read_text())
        return (f"pid {owner['pid']} on {owner['host']} ({owner['purpose'] or 'no purpose given'}, "
                f"since {owner['since']})")
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def exclusive(directory: Path | str, purpose: str = "") -> Iterator[None]:
    """Hold `directory/.lock` (created with the folder) while writing into it: a second writer, in
    this process or another, waits, with one line on stderr saying for whom.

    The lock is the operating system's (`filelock`), so a killed holder never leaves it held; the
    `.lock.owner` note it leaves behind names a dead process, which the next writer says it replaces.
    A folder that cannot be created gets an error naming the fix."""
    from filelock import FileLock, Timeout

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / LOCK_NAME).touch()
    except OSError as err:
        raise OSError(f"cannot write into the cache {directory} ({err.strerror or err}); set "
                      "OPTIM_HUNTER_CACHE to a writable folder") from err
    lock, owner = FileLock(directory / LOCK_NAME), directory / OWNER_NAME
    try:
        lock.acquire(timeout=0)
    except Timeout:
        # the holder writes its note just after taking the lock: give the note a moment to appear
        # (two builds started together meet here), taking the lock if it is freed meanwhile
        who, deadline, acquired = _owner_text(owner), time.monotonic() + 2.0, False
        while not who and not acquired and time.monotonic() < deadline:
            try:
                lock.acquire(timeout=0.05)
                acquired = True
            except Timeout:
                who = _owner_text(owner)
        if not acquired:
            print(f"{directory}: waiting for {who or 'another writer'} to finish", file=sys.stderr, flush=True)
            lock.acquire()
    try:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            stale = json.loads(owner.read_text())
            if stale["host"] == socket.gethostname() and not _alive(int(stale["pid"])):
                print(f"{directory}: the previous writer (pid {stale['pid']}, {stale['purpose']}) died "
                      "without finishing; its lock was released with it, its work resumes here",
                      file=sys.stderr, flush=True)
        _atomic_write(owner, lambda tmp: tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                                        "since": time.strftime("%H:%M:%S")})))
        yield
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()


def remove_checkpoint(path: Path | str) -> None:
    path = Path(path)
    for suffix in (".json", ".safetensors"):  # the sidecar first: never a JSON without tensors
        with contextlib.suppress(FileNotFoundError):
            path.with_suffix(suffix).unlink()


def checkpoint_exists(path: Path | str) -> bool:
    path = Path(path)
    return path.with_suffix(".json").exists() and path.with_suffix(".safetensors").exists()


def checkpoint_bytes(path: Path | str) -> int:
    path = Path(path)
    return sum(f.stat().st_size for f in (path.with_suffix(".safetensors"), path.with_suffix(".json")) if f.exists())


def _plain(value: Any) -> Any:
    """A dataclass as nested dicts, like `dataclasses.asdict`, except that a field marked
    `key_omits_default` is left out while it holds its default (see `KEY_OMITS_DEFAULT`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not (f.metadata.get("key_omits_default") and getattr(value, f.name) == f.default)
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return _plain(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fingerprint(value: Any) -> str:
    """sha256 of a canonical JSON rendering (dataclasses become dicts): the basis of cache keys."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=_json_default).encode()).hexdigest()


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


def _model_tensors(model: nn.Module) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


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
    run_dir = Path(run_dir) if run_dir is not None else None
    where = torch.device(device) if device is not None else torch.device("cpu")
    on_device = {} if where.type == "cpu" else {"device": where.type}  # CPU keys as before: nothing retrains
    key = fingerprint({"config": config, "run_key": run_key, "code": CODE_VERSION, **on_device})
    snaps = set(snapshot_steps(config.steps, config.snapshots))

    with _threads(config.threads):
        torch.manual_seed(config.seed)  # for anything a family draws from the global generator
        model = spec.build(config.seed).to(where)
        groups = (spec.param_groups or (lambda m: default_param_groups(m, config.weight_decay)))(model)
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                      fused=config.fused_optimizer or None)
        start, history, losses = 0, [], []
        points = []  # (step, slot, tensors, meta) of every valid resume point of this run
        for path in resume_paths(run_dir) if run_dir is not None else []:
            try:
                tensors, meta = load_checkpoint(path)
            except CheckpointError as err:
                import warnings

                warnings.warn(f"ignoring a damaged resume point ({path.name}): {err}", stacklevel=2)
                continue
            if meta.get("key") == key:
                points.append((int(meta["step"]), path.name, tensors, meta))
        newest = max(points, key=lambda p: p[0]) if points else None
        if newest is not None:
            _, _, tensors, meta = newest
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            _load_optimizer(optimizer, tensors, meta["optimizer"])
            start, history, losses = meta["step"], meta["history"], meta["losses"]
        resumed_from = start
        # the next resume point goes to the slot that does not hold the newest one
        next_slot = RESUME_SLOTS[1] if newest is not None and newest[1] == RESUME_SLOTS[0] else RESUME_SLOTS[0]
        requests = _StopRequests()

        def save_resume(step: int) -> None:
            nonlocal next_slot
            if run_dir is None:
                return
            opt_tensors, opt_meta = _optimizer_tensors(optimizer)
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | opt_tensors
            meta = {"key": key, "step": step, "history": history, "losses": losses, "optimizer": opt_meta}
            with requests.writing_files():
                save_checkpoint(run_dir / next_slot, tensors, meta)
            next_slot = RESUME_SLOTS[1] if next_slot == RESUME_SLOTS[0] else RESUME_SLOTS[0]

        def evaluate(step: int) -> None:
            row: dict[str, int | float] = {"step": step}
            if losses:
                recent = losses[-max(1, min(len(losses), config.eval_every or 50)) :]
                row["loss"] = float(np.mean(recent))
            with _evaluating(model):
                for fn in ([spec.evaluate] if spec.evaluate else []) + list(callbacks):
                    row.update(fn(model, step) or {})
            history.append(row)
            if progress:  # the learning curve as it happens, above the bar
                tqdm.write(f"{description} @ {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step"))

        model.train()
        seconds, tokens = 0.0, 0
        bar = tqdm(total=config.steps, initial=start, desc=description, disable=not progress, dynamic_ncols=True)
        step = start
        if run_dir is not None:
            remove_stale_temporaries(run_dir)  # left by a run killed mid-write
        try:
            requests.install()
            while step < config.steps:
                began = time.perf_counter()
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(config, step)
                batch = devices.move(spec.batch(step), where)
                with torch.autocast(where.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                    loss = spec.loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"{description}: loss became {value} at step {step}")
                losses.append(value)
                step += 1
                seconds += time.perf_counter() - began
                tokens += spec.tokens(batch)
                if progress:
                    bar.update(1)
                    if step % 10 == 0 or step == config.steps:
                        bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{tokens / max(seconds, 1e-9):.0f}")
                if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
                    evaluate(step)
                if step in snaps and run_dir is not None:
                    with requests.writing_files():
                        save_checkpoint(snapshot_path(run_dir, step), model.state_dict(), {"step": step})
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
                    save_resume(step)
                if stop_at is not None and step >= stop_at and step < config.steps:
                    save_resume(step)
                    break
                if requests.signal is not None:  # Ctrl-C or SIGTERM: at a step boundary
                    save_resume(step)
                    requests.stop()
            if step >= config.steps and run_dir is not None and not clean_up:
                save_resume(step)  # the caller saves the final weights, then removes this
        except KeyboardInterrupt:
            if requests.signal is None:  # raised inside the step (not by a signal we deferred)
                save_resume(step)  # the next call resumes here
            raise
        finally:
            requests.restore()
            bar.close()
        if step >= config.steps and run_dir is not None and clean_up:
            remove_resume_points(run_dir)  # finished: the caller keeps the final weights
    model.eval()
    return TrainResult(model, step, history, losses, seconds, tokens, sorted(s for s in snaps if s <= step),
                       resumed_from)

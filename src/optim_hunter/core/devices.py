"""Which device the language model runs on: `OPTIM_HUNTER_DEVICE`, checked before anything loads.

  OPTIM_HUNTER_DEVICE  `auto` (default: the first CUDA GPU when PyTorch sees one, else the CPU),
                       `cpu`, `cuda`, `cuda:<index>` or `mps`

A device this machine does not have (CUDA asked of a CPU-only PyTorch, `cuda:3` with one GPU, MPS
off a Mac) is a `ValueError` naming the variable and the fix, raised by `device()` before any
weight is read. The language model's dtype on that device is `precision.inference_dtype`. A
placement across several devices (`OPTIM_HUNTER_DEVICE_MAP` / `OPTIM_HUNTER_N_DEVICES`, see
`placement`) replaces the one device; asking for both is refused.

The trained toy models are not concerned: they train and run on the CPU (`make book` gives them
the CPU lanes, see `optim_hunter.book.book_executor`). `of(module)` is the package's one answer to
"where are this model's weights" (where inputs must go), `describe(model)` the line a chapter
prints to say where its model runs and in which dtype.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from optim_hunter.core import precision

ENV = "OPTIM_HUNTER_DEVICE"
PLACEMENT_ENVS = ("OPTIM_HUNTER_DEVICE_MAP", "OPTIM_HUNTER_N_DEVICES")
CHOICES = "auto, cpu, cuda, cuda:<index> or mps"


def requested(env: dict[str, str] | None = None) -> str:
    """$OPTIM_HUNTER_DEVICE as written (lower case, `auto` when unset or empty)."""
    return (os.environ if env is None else env).get(ENV, "auto").strip().lower() or "auto"


def placed(env: dict[str, str] | None = None) -> bool:
    """Whether a placement across devices (OPTIM_HUNTER_DEVICE_MAP / _N_DEVICES) is set."""
    source = os.environ if env is None else env
    return any(source.get(name, "").strip() for name in PLACEMENT_ENVS)


def device(value: str | None = None, env: dict[str, str] | None = None) -> torch.device:
    """The validated device: `value` if given, else $OPTIM_HUNTER_DEVICE, else `auto`.

    `auto` is `cuda:<current>` where PyTorch sees CUDA, else `cpu`; `cuda` is the current CUDA
    device. Anything this machine lacks is a clear `ValueError` (what to set instead)."""
    source = ENV if value is None else "device"
    name = (value.strip().lower() or "auto") if value is not None else requested(env)
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        chosen = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{source}={name!r} is not a device: use {CHOICES}") from None
    if chosen.type == "cpu":
        return torch.device("cpu")
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{source}={name!r} asks for a CUDA GPU, but this PyTorch ({torch.__version__}) sees none: "
                f"set {ENV}=cpu (or auto, which picks CUDA only where there is one), or install a "
                f"CUDA build of PyTorch on a machine with an NVIDIA GPU")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if chosen.index is None else chosen.index
        if index >= count:
            raise ValueError(
                f"{source}={name!r}: this machine has {count} CUDA device{'s' if count != 1 else ''} "
                f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}): set {ENV} to one of them, or "
                f"to auto; CUDA_VISIBLE_DEVICES renumbers the visible ones from 0")
        return torch.device("cuda", index)
    if chosen.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{source}={name!r} asks for Apple's MPS, which this machine does not have: "
                             f"set {ENV}=cpu or auto")
        return torch.device("mps")
    raise ValueError(f"{source}={name!r}: the package runs on {CHOICES}, not {chosen.type}")


def validated(env: dict[str, str] | None = None) -> torch.device:
    """`device()`, after refusing a device asked for beside a placement (the two exclude each
    other: with a placement the model is spread as it says)."""
    if placed(env) and requested(env) != "auto":
        raise ValueError(f"{ENV}={requested(env)!r} and a placement ({' / '.join(PLACEMENT_ENVS)}) are both "
                         f"set: unset {ENV} (or set it to auto) to spread the model as the placement says, "
                         f"or unset the placement to run on one device")
    return device(env=env)


def is_accelerator(dev: torch.device | str) -> bool:
    """Whether `dev` is a GPU (CUDA or MPS): a device one model copy should own."""
    return torch.device(dev).type in ("cuda", "mps")


def of(module: Any, default: torch.device | str = "cpu") -> torch.device:
    """Where `module`'s first parameter lives (its inputs go there: the embedding of a model
    placed across devices comes first); `default` for a module without parameters."""
    try:
        return next(module.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device(default)


def move(value: Any, device: torch.device | str) -> Any:
    """`value` with every tensor in it on `device`: a tensor, or tuples (named ones too), lists, dicts
    and dataclasses of them, nested; anything else (numpy arrays, numbers) as it is. A training batch
    goes to the model's device this way, whatever its family's batch looks like."""
    import dataclasses

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(move(v, device) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(move(v, device) for v in value)
    if isinstance(value, dict):
        return {k: move(v, device) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: move(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value) if f.init})
    return value


def placement_of(module: Any) -> tuple[list[str], list[str]]:
    """The distinct devices and dtypes of `module`'s parameters, in order of first appearance."""
    devs: dict[str, None] = {}
    dtypes: dict[str, None] = {}
    try:
        for p in module.parameters():
            devs[str(p.device)] = None
            dtypes[str(p.dtype).removeprefix("torch.")] = None
    except (AttributeError, TypeError):
        pass
    return list(devs), list(dtypes)


def describe(model: Any, name: str | None = None) -> str:
    """One line saying where `model` runs and in which dtype, read from its weights, e.g.
    `smollm2-135m on cpu in float32 (OPTIM_HUNTER_DEVICE=auto, OPTIM_HUNTER_DTYPE=auto)`."""
    devs, dtypes = placement_of(model)
    where = ("across " + ", ".join(devs)) if len(devs) > 1 else f"on {devs[0] if devs else 'cpu'}"
    settings = f"{ENV}={requested()}, {precision.ENV}={precision.requested_name()}"
    if placed():
        settings += ", " + ", ".join(f"{n}={os.environ[n]}" for n in PLACEMENT_ENVS if os.environ.get(n, "").strip())
    return f"{name or type(model).__name__} {where} in {'/'.join(dtypes) or 'float32'} ({settings})"


DEVICE_MAP_WORDS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's strategies


def placement(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """`device_map` / `n_devices` for `boot_transformers`, from OPTIM_HUNTER_DEVICE_MAP and
    OPTIM_HUNTER_N_DEVICES (empty when neither is set: one device, the default)."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    device_map = env.get("OPTIM_HUNTER_DEVICE_MAP", "").strip()
    if device_map:
        if device_map.startswith("{"):
            try:
                out["device_map"] = json.loads(device_map)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"OPTIM_HUNTER_DEVICE_MAP={device_map!r} is not valid JSON ({err.msg}); use "
                    "auto, balanced, sequential or a JSON object of module -> device"
                ) from None
        else:
            if device_map not in DEVICE_MAP_WORDS:
                try:
                    torch.device(device_map)  # one device for the whole model: cpu, cuda:1, mps
                except RuntimeError:
                    raise ValueError(
                        f"OPTIM_HUNTER_DEVICE_MAP={device_map!r}: use {', '.join(DEVICE_MAP_WORDS)}, one "
                        "device (e.g. cuda:0) or a JSON object of module -> device"
                    ) from None
            out["device_map"] = device_map
    n_devices = env.get("OPTIM_HUNTER_N_DEVICES", "").strip()
    if n_devices:
        if not n_devices.isdigit() or int(n_devices) < 1:
            raise ValueError(f"OPTIM_HUNTER_N_DEVICES={n_devices!r}: use a positive integer, e.g. 2")
        out["n_devices"] = int(n_devices)
    return out

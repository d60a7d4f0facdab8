"""Which floating-point precision training and the language model run in, chosen by the machine.

bfloat16 autocast halves a small model's training time on a CPU with AVX-512 BF16 or AMX units and
makes it several times slower (or, with PyTorch's kernels set below AVX-512, fails outright in the
bf16 attention kernel) on one without. A model family asks for bf16 with `training_precision("bf16")`
and gets it only where it is fast; the answer is part of the model's configuration, hence of its
cache key, so a model trained in bf16 is never served as the fp32 one (or the reverse).

The language model's inference dtype (`inference_dtype(device)`) is the other use of the same
setting: weights and activations of a pretrained or `hf:` model are held in it on its device.

`OPTIM_HUNTER_DTYPE` forces both: `float32` (or `fp32`), `bfloat16` (or `bf16`), or `float16` (or
`fp16`, the language model only). `auto` (the default) means, for each use:
  * training (`training_precision`): bf16 only where the family prefers it and the CPU has fast bf16
    units (AVX-512 BF16 / AMX, kernels at AVX-512), else fp32;
  * the language model (`inference_dtype`): bfloat16 on a CUDA GPU, float32 on the CPU (and MPS).

float16 is an inference dtype only (training in it would need loss scaling, which the package does
not do): with `float16` set, training keeps its `auto` choice.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

ENV = "OPTIM_HUNTER_DTYPE"
_NAMES = {"auto": "auto", "float32": "fp32", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16",
          "float16": "fp16", "fp16": "fp16"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: no flags to read, so no claim of fast bf16
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.cache
def fast_bf16_cpu() -> bool:
    """Whether this CPU has bfloat16 matrix units (AVX-512 BF16 or AMX) and PyTorch's kernels run at
    AVX-512 or above (`ATEN_CPU_CAPABILITY=avx2` sets them below)."""
    capability = torch.backends.cpu.get_cpu_capability()
    return capability.startswith(("AVX512", "AMX")) and any(flag in _cpu_flags() for flag in _BF16_FLAGS)


def requested_name(env: dict[str, str] | None = None) -> str:
    """`OPTIM_HUNTER_DTYPE` as written (lower case; `auto` when unset or empty)."""
    return (os.environ if env is None else env).get(ENV, "auto").strip().lower() or "auto"


def requested(env: dict[str, str] | None = None) -> str:
    """`OPTIM_HUNTER_DTYPE` as "auto", "fp32", "bf16" or "fp16"; a clear error for anything else."""
    value = requested_name(env)
    if value not in _NAMES:
        raise ValueError(f"{ENV}={value!r} is not a precision: use auto, float32, bfloat16 or float16 "
                         f"(float16: the language model only)")
    return _NAMES[value]


def training_precision(preferred: str, env: dict[str, str] | None = None) -> str:
    """The precision a family that prefers `preferred` ("bf16" or "fp32") trains in on this machine."""
    forced = requested(env)
    if forced in ("fp32", "bf16"):
        return forced
    if preferred == "bf16" and not fast_bf16_cpu():
        return "fp32"
    return preferred


def inference_dtype(device: torch.device | str, env: dict[str, str] | None = None) -> torch.dtype:
    """The dtype the language model is held in on `device`: the forced one, else (`auto`) bfloat16
    on CUDA and float32 elsewhere (a CPU's bf16 matmuls are slow or emulated on most machines, and
    float32 keeps the CPU book's answers as they were)."""
    forced = requested(env)
    if forced != "auto":
        return DTYPES[forced]
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> "bfloat16"."""
    return str(dtype).removeprefix("torch.")

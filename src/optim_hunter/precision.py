"""Which floating-point precision training runs in, chosen by what the machine does fast.

bfloat16 autocast halves a small model's training time on a CPU with AVX-512 BF16 or AMX units and
makes it several times slower (or, with PyTorch's kernels set below AVX-512, fails outright in the
bf16 attention kernel) on one without. A model family asks for bf16 with `training_precision("bf16")`
and gets it only where it is fast; the answer is part of the model's configuration, hence of its
cache key, so a model trained in bf16 is never served as the fp32 one (or the reverse).

`OPTIM_HUNTER_DTYPE` forces it: `float32` (or `fp32`) or `bfloat16` (or `bf16`); `auto` (the
default) decides by the machine.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

ENV = "OPTIM_HUNTER_DTYPE"
_NAMES = {"auto": "auto", "float32": "fp32", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16"}
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


def requested(env: dict[str, str] | None = None) -> str:
    """`OPTIM_HUNTER_DTYPE` as "auto", "fp32" or "bf16"; a clear error for anything else."""
    value = (os.environ if env is None else env).get(ENV, "auto").strip().lower() or "auto"
    if value not in _NAMES:
        raise ValueError(f"{ENV}={value!r} is not a precision: use auto, float32 or bfloat16")
    return _NAMES[value]


def training_precision(preferred: str, env: dict[str, str] | None = None) -> str:
    """The precision a family that prefers `preferred` ("bf16" or "fp32") trains in on this machine."""
    forced = requested(env)
    if forced != "auto":
        return forced
    if preferred == "bf16" and not fast_bf16_cpu():
        return "fp32"
    return preferred

"""Run-time settings shared by chapters and the CLI: profile budgets, model name, cache location.

A chapter's `parameters` cell reads two environment variables:
  OPTIM_HUNTER_PROFILE  `full` (default) or `smoke` (tiny budgets, the whole book in minutes)
  OPTIM_HUNTER_MODEL    the zoo model the LLM chapters use (default `smollm2-135m`), or `hf:<name>`
  OPTIM_HUNTER_CONTRASTS  trained zoo models shown beside it as contrasts (comma-separated; none by
                        default: `numeric-icl` left the default build, as it does not learn the
                        tasks in context - see the language-model chapter)
  OPTIM_HUNTER_DEVICE   where the language model runs: `auto` (default: CUDA when there, else
                        the CPU), `cpu`, `cuda`, `cuda:<index>`, `mps` (`optim_hunter.core.devices`)
  OPTIM_HUNTER_DTYPE    its dtype there: `auto` (bfloat16 on CUDA, float32 on the CPU), `float32`,
                        `bfloat16`, `float16`; for training, `auto` means bf16 only on a CPU with
                        fast bf16 units (`optim_hunter.core.precision`)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TypeVar

PROFILES = ("full", "smoke")
DEFAULT_PROFILE = "full"
DEFAULT_MODEL = "smollm2-135m"

T = TypeVar("T")


def variables() -> list[tuple[str, str, str]]:
    """Every environment variable that steers a build: (name, values with the default, effect).
    The front page's table is rendered from this list (`{settings-table}`), never typed."""
    return [
        ("OPTIM_HUNTER_PROFILE", f"{', '.join(PROFILES)} (default {DEFAULT_PROFILE})",
         "smoke runs tiny budgets: the whole book executes in minutes"),
        ("OPTIM_HUNTER_MODEL", f"a pretrained or zoo model, or hf:<name-or-path> (default {DEFAULT_MODEL})",
         "the language model the LLM chapters measure and dissect"),
        ("OPTIM_HUNTER_CONTRASTS", "comma-separated zoo models (default: none)",
         "trained models shown beside the language model; they never decide a source claim"),
        ("OPTIM_HUNTER_CACHE", "an absolute folder (default ~/.cache/optim_hunter)",
         "where trained models and other expensive results are cached"),
        ("OPTIM_HUNTER_DEVICE", "auto, cpu, cuda, cuda:<index>, mps (default auto: CUDA when there, else cpu)",
         "where the language model runs"),
        ("OPTIM_HUNTER_DTYPE", "auto, float32, bfloat16, float16 (default auto)",
         "the language model's dtype (auto: bfloat16 on CUDA, float32 on the CPU) and the training "
         "precision (auto: bfloat16 only on a CPU with fast bf16 units)"),
        ("OPTIM_HUNTER_DEVICE_MAP, OPTIM_HUNTER_N_DEVICES", "as TransformerBridge.boot_transformers takes them",
         "spread an hf: model over several GPUs"),
    ]


def profile(value: str | None = None) -> str:
    """The validated profile: `value` if given, else $OPTIM_HUNTER_PROFILE, else `full`."""
    name = value if value is not None else os.environ.get("OPTIM_HUNTER_PROFILE", DEFAULT_PROFILE)
    name = name.strip().lower()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return name


def run_context() -> dict[str, str]:
    """The language model's device and dtype as the build records them (execution cache key):
    `device` is `cpu`, `cuda:0`... or `placed:<map>` when a placement spreads the model."""
    # imported here: settings is read by the CLI and the Sphinx extension, which need no torch
    from optim_hunter.core import devices, precision

    dev = devices.validated()  # with a clear error before any load
    where = str(dev)
    if devices.placed():
        spread = devices.placement()
        where = "placed:" + ",".join(f"{k}={v}" for k, v in sorted(spread.items()) if k != "max_memory")
    return {"device": where, "dtype": precision.dtype_name(precision.inference_dtype(dev))}


def pick(profile_name: str, *, full: T, smoke: T) -> T:
    """Choose a budget by profile, so every chapter states both of its budgets side by side."""
    return {"full": full, "smoke": smoke}[profile(profile_name)]


def cache_dir() -> Path:
    """Where trained models and other expensive artefacts are cached ($OPTIM_HUNTER_CACHE)."""
    root = Path(os.environ.get("OPTIM_HUNTER_CACHE") or Path.home() / ".cache" / "optim_hunter").expanduser()
    if not root.is_absolute():
        # chapters execute in book/, the CLI wherever it is called: one relative path would name
        # two caches, and every model would train twice
        raise ValueError(f"OPTIM_HUNTER_CACHE={str(root)!r} is a relative path; give an absolute one, "
                         f"e.g. {Path.cwd() / root}")
    return root


def slug(text: str) -> str:
    """A filesystem-safe name for a profile/model pair (e.g. per-profile cache folders)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "default"

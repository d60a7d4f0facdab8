"""Checkpoints: a safetensors file and a JSON sidecar, sealed by one hash, written atomically.

Checkpoint `PATH` means the pair `PATH.safetensors` / `PATH.json`. The sidecar carries one sha256
over the tensors and the metadata (steps, losses, the resume point: an edited sidecar is as corrupt
as an edited tensor). Both are written to a temporary name and moved into place (`os.replace`),
the JSON last, so a crash never leaves a checkpoint that looks complete; loading verifies the hash
and never unpickles anything. `fingerprint` is the canonical hash cache keys are made of.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from optim_hunter.core import diskspace

FORMAT = "optim_hunter.checkpoint/2"  # /2: the hash covers the metadata too


class CheckpointError(RuntimeError):
    """A checkpoint is missing, partial or corrupt (the message says which and where)."""


# Fields added after models were trained: left at their default they stay out of a configuration's
# cache key (`fingerprint`), so adding one does not retrain every cached model.
KEY_OMITS_DEFAULT = {"key_omits_default": True}


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
        temporaries.append(diskspace.write_temporary(tensors_file, lambda tmp: save_file(flat, str(tmp))))
        temporaries.append(diskspace.write_temporary(sidecar_file, lambda tmp: tmp.write_text(text, encoding="utf-8")))
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


def remove_checkpoint(path: Path | str) -> None:
    path = Path(path)
    for suffix in (".json", ".safetensors"):  # the sidecar first: never a JSON without tensors
        with contextlib.suppress(FileNotFoundError):
            path.with_suffix(suffix).unlink()


def checkpoint_exists(path: Path | str) -> bool:
    path = Path(path)
    return path.with_suffix(".json").exists() and path.with_suffix(".safetensors").exists()


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

"""The model zoo: every model a chapter uses, by name, as a TransformerLens-hooked model.

    load("numeric-icl")      the book's own models: trained on first use, then cached
    load("smollm2-135m")     a pretrained model shipped in a registry package (zoo.pretrained)
    load("hf:gpt2")          a Hugging Face causal LM from a local folder or the HF cache (offline)

Every model comes back with the standard hook names (`hook_embed`, `blocks.{i}.hook_resid_pre`,
`blocks.{i}.attn.hook_pattern`, `blocks.{i}.attn.hook_z`, `blocks.{i}.hook_attn_out`,
`blocks.{i}.hook_mlp_out`, `blocks.{i}.hook_resid_post`, `ln_final.*`, ...), `run_with_cache`,
the weight properties (`W_E`, `W_Q`, `W_K`, `W_V`, `W_O`, `W_U`, ...) and a Hugging Face
tokenizer as `.tokenizer` (plus `to_tokens` / `to_string`), so analyses written against them run
unchanged on our models and on real ones.

Trained models live in `settings.cache_dir()/zoo/<name>/<profile>-<key>/` (`OPTIM_HUNTER_CACHE`
moves it). The key hashes the model's configuration, its family's code version and the trainer's,
so a changed configuration trains a new model rather than serving a stale one. A damaged or
partial checkpoint is detected (content hash) and retrained with a warning.

A family is a module with `VERSION`, `DESCRIPTION`, `config(profile)`, `train_spec(config)` and
`hooked(state_dict, config, name)` (see `numeric`); adding a model is adding a line to `FAMILIES`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import shutil
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from optim_hunter import settings, training

HF_PREFIX = "hf:"
FAMILIES: dict[str, str] = {
    "numeric-icl": "optim_hunter.zoo.numeric",
    # attention-only models on in-context Markov chains (the induction-heads chapter)
    "attn-only-1l": "optim_hunter.zoo.induction.attn_only_1l",
    "attn-only-2l": "optim_hunter.zoo.induction.attn_only_2l",
    "attn-only-3l": "optim_hunter.zoo.induction.attn_only_3l",
    "smeared-1l": "optim_hunter.zoo.induction.smeared_1l",
    "smeared-2l": "optim_hunter.zoo.induction.smeared_2l",
    # the same 2-layer attention-only model on natural text: the CPython standard library, BPE
    "attn-only-2l-code": "optim_hunter.zoo.code_corpus",
    # a 3-layer transformer fed vectors of an affine recurrence (the affine-recurrences chapter)
    "affine-recurrence": "optim_hunter.zoo.affine",
}


def names() -> list[str]:
    """The models the package trains itself (any `hf:<name-or-path>` is accepted as well)."""
    return list(FAMILIES)


def pretrained_names() -> list[str]:
    """The pretrained models shipped inside registry packages (see zoo.pretrained)."""
    from optim_hunter.zoo import pretrained

    return list(pretrained.MODELS)


def family(name: str) -> ModuleType:
    """The module that defines model `name`, or a ValueError listing the known names."""
    if name not in FAMILIES:
        known = ", ".join(names() + pretrained_names())
        if name in pretrained_names():
            raise ValueError(f"{name!r} is pretrained (shipped in a package): it is loaded, not trained")
        if isinstance(name, str) and name.startswith(HF_PREFIX):
            raise ValueError(f"{name!r} is a Hugging Face model: it is loaded, not trained; the models "
                             f"the package trains are {', '.join(names())}")
        raise ValueError(f"unknown model {name!r}: choose one of {known} or hf:<name-or-path>")
    return importlib.import_module(FAMILIES[name])


def config(name: str, profile: str | None = None) -> Any:
    return family(name).config(settings.profile(profile))


def cache_key(name: str, cfg: Any) -> str:
    """16 hex digits of the hash of (name, configuration, family and trainer code versions)."""
    return training.fingerprint(
        {"name": name, "config": cfg, "family": family(name).VERSION, "training": training.CODE_VERSION}
    )[:16]


def run_dir(name: str, profile: str | None = None) -> Path:
    profile = settings.profile(profile)
    return settings.cache_dir() / "zoo" / name / f"{profile}-{cache_key(name, config(name, profile))}"


def _final(directory: Path) -> Path:
    return directory / "model"


# what `train` writes beside the final weights and the package reads back
META_KEYS = ("name", "profile", "key", "config", "steps", "history", "losses", "train_seconds",
             "tokens_per_second", "snapshot_steps")


def _read_final(final: Path) -> tuple[dict, dict]:
    """The final checkpoint, verified, with every metadata key the package reads (CheckpointError if
    not: e.g. written by another version of the package)."""
    tensors, meta = training.load_checkpoint(final)
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise training.CheckpointError(f"checkpoint {final}: metadata lacks {', '.join(missing)}")
    return tensors, meta


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    name: str
    profile: str
    state: str  # "cached", "missing", "partial" (an interrupted run can resume) or "corrupt"
    path: Path
    size_bytes: int

    @property
    def cached(self) -> bool:
        return self.state == "cached"


def status(name: str, profile: str | None = None, *, verify: bool = True) -> ModelStatus:
    """Whether `name` is trained and cached for `profile`, where, and how big (all files)."""
    profile = settings.profile(profile)
    directory = run_dir(name, profile)
    # the lock file and a killed writer's temporary file say nothing about the model
    files = [f for f in directory.rglob("*") if f.is_file() and f.name != ".lock" and not training.is_temporary(f)] \
        if directory.exists() else []
    size = sum(f.stat().st_size for f in files)
    final = _final(directory)
    if training.checkpoint_exists(final):
        state = "cached"
        if verify:
            try:
                _read_final(final)
            except training.CheckpointError:
                state = "corrupt"
    elif training.resume_paths(directory):
        state = "partial"
    else:
        state = "missing" if size == 0 else "corrupt"
    return ModelStatus(name, profile, state, directory, size)


@contextlib.contextmanager
def lock(directory: Path):
    """One trainer per model at a time (e.g. two notebooks executing at once): the second waits."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / ".lock", "a")  # noqa: SIM115 - closed below
    except OSError as err:
        raise OSError(f"cannot train into the model cache {directory} ({err.strerror or err}); set "
                      "OPTIM_HUNTER_CACHE to a writable folder") from err
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        with handle:
            yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train(name: str, profile: str | None = None, *, force: bool = False, progress: bool = True) -> Path:
    """Train `name` under `profile` unless a verified checkpoint is cached; its checkpoint path.

    An interrupted run resumes where it stopped; `force` discards the cache and starts over.
    """
    return _trained(name, settings.profile(profile), force=force, progress=progress)[0]


def _trained(name: str, profile: str, *, force: bool = False, progress: bool = True) -> tuple[Path, dict, dict]:
    """`train`'s work; the checkpoint path with its tensors and metadata, read and verified once."""
    module = family(name)
    cfg = module.config(profile)
    directory = run_dir(name, profile)
    final = _final(directory)
    if not force and training.checkpoint_exists(final):
        # Served without the lock: checkpoints are written atomically and verified on reading, so
        # a read-only or shared cache serves a trained model (the lock needs a writable folder).
        try:
            return (final, *_read_final(final))
        except training.CheckpointError:
            pass  # damaged: retrained below, under the lock
    with lock(directory):
        if force:
            for child in directory.iterdir():
                if child.name != ".lock":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        if training.checkpoint_exists(final):
            try:
                return (final, *_read_final(final))
            except training.CheckpointError as err:
                warnings.warn(f"{name} ({profile}): {err}; retraining", stacklevel=2)
                training.remove_checkpoint(final)
        result = training.train(
            module.train_spec(cfg),
            cfg.train,
            directory,
            progress=progress,
            description=f"train {name} ({profile})",
            run_key=cache_key(name, cfg),
            clean_up=False,  # the resume point stays until the final weights are saved
        )
        meta = {
            "name": name,
            "profile": profile,
            "key": cache_key(name, cfg),
            "config": cfg,
            "family_version": module.VERSION,
            "training_version": training.CODE_VERSION,
            "steps": result.steps,
            "history": result.history,
            "losses": result.losses,
            "train_seconds": result.seconds,
            "tokens_per_second": result.tokens_per_second,
            "snapshot_steps": result.snapshot_steps,
            "resumed_from": result.resumed_from,
        }
        training.save_checkpoint(final, result.model.state_dict(), meta)
        training.remove_resume_points(directory)
    return (final, *_read_final(final))


def _load_final(name: str, profile: str, progress: bool) -> tuple[dict, dict]:
    _, tensors, meta = _trained(name, profile, progress=progress)
    return tensors, meta


def load(name: str, profile: str | None = None, *, progress: bool = True) -> Any:
    """The hooked model `name` (training and caching it first if needed), in eval mode."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name.startswith(HF_PREFIX):
        from optim_hunter.zoo import hf

        return hf.load(name[len(HF_PREFIX) :])
    if name in pretrained_names():
        from optim_hunter.zoo import pretrained

        return pretrained.load(name)
    profile = settings.profile(profile)
    module = family(name)
    tensors, _ = _load_final(name, profile, progress)
    model = module.hooked(tensors, module.config(profile), name)
    model.eval()
    return model


def metadata(name: str, profile: str | None = None) -> dict[str, Any]:
    """The final checkpoint's metadata (config, learning curves `history`, losses, timings)."""
    _, meta = _load_final(name, settings.profile(profile), progress=True)
    return meta


def snapshots(name: str, profile: str | None = None) -> list[int]:
    """Steps at which snapshots of `name` were kept (training it first if needed)."""
    return list(metadata(name, profile)["snapshot_steps"])


def load_snapshot(name: str, step: int, profile: str | None = None) -> Any:
    """The hooked model `name` as it was after `step` training steps (a kept snapshot)."""
    available = snapshots(name, profile)
    if step not in available:
        raise ValueError(f"{name} has no snapshot at step {step}; kept: {available}")
    profile = settings.profile(profile)
    module = family(name)
    path = training.snapshot_path(run_dir(name, profile), step)
    tensors, _ = training.load_checkpoint(path)
    model = module.hooked(tensors, module.config(profile), f"{name}@{step}")
    model.eval()
    return model

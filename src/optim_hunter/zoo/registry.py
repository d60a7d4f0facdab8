"""`Family`: one trainable model of the zoo, as a typed record, and the one owner of its cache layout.

Each family module (`numeric`, `induction`, `code_corpus`, `affine`) declares its `Family` objects
in a `FAMILIES` tuple; `optim_hunter.zoo` maps names to those modules and imports one on first use
(importing them all would load scikit-learn, tokenizers and the rest for every `zoo` call).

A family's trained weights live in `settings.cache_dir()/zoo/<name>/<profile>-<key>/`: `model` (the
final checkpoint), `snapshots/step-<n>` (kept during training), resume points while a run is
unfinished, and `.lock`. The key hashes the configuration, the family's `version` and the trainer's
code version, so a changed configuration trains a new model rather than serving a stale one. Only
this module and the trainer know that layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from jaxtyping import Float, Int
from torch import Tensor, nn

from optim_hunter.core import checkpoints, locks, settings, training


@dataclasses.dataclass(frozen=True)
class Family:
    """What the zoo needs to train, cache and serve one model."""

    name: str
    description: str
    version: str  # part of the cache key: bump when data or model code changes the weights
    config: Callable[[str], Any]  # profile -> configuration (a frozen dataclass with a `.train`)
    tiny_config: Callable[[], Any]  # a configuration that trains in a second or two: for tests
    train_spec: Callable[[Any], training.TrainSpec]
    hooked: Callable[[Mapping[str, Tensor], Any, str], Any]  # (weights, configuration, name) -> hooked
    fused: Callable[[Mapping[str, Tensor], Any], nn.Module]  # the plain module: fast unhooked work
    example_input: Callable[[Any], Int[Tensor, "batch pos"] | Float[Tensor, "batch pos d_vocab"]]
    reads: str = "tokens"  # or "vectors": read in before the bridge, so there is no hook_embed

    def with_seed(self, seed: int, name: str) -> Family:
        """The same model trained from training seed `seed` (`cfg.train.seed`: the initialisation
        and, for every family here, the order and draw of the training batches), called `name`."""

        def config(profile: str | None = None) -> Any:
            cfg = self.config(profile)
            return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))

        return dataclasses.replace(self, name=name, description=f"{self.description} (training seed {seed})",
                                   config=config)

    def cache_key(self, cfg: Any) -> str:
        """16 hex digits of the hash of (name, configuration, family and trainer code versions)."""
        return checkpoints.fingerprint(
            {"name": self.name, "config": cfg, "family": self.version, "training": training.CODE_VERSION}
        )[:16]

    def run_dir(self, profile: str | None = None) -> Path:
        profile = settings.profile(profile)
        key = self.cache_key(self.config(profile))
        return settings.cache_dir() / "zoo" / self.name / f"{profile}-{key}"

    def final_path(self, profile: str | None = None) -> Path:
        return self.run_dir(profile) / "model"

    def snapshot_state(self, step: int, profile: str | None = None) -> dict[str, Tensor]:
        """The weights after `step` training steps (a kept snapshot), verified."""
        tensors, _ = checkpoints.load_checkpoint(checkpoints.snapshot_path(self.run_dir(profile), step))
        return tensors

    @contextlib.contextmanager
    def lock(self, profile: str | None = None, purpose: str = "") -> Iterator[Path]:
        """One trainer per model at a time (e.g. two notebooks executing at once): the second waits."""
        directory = self.run_dir(profile)
        with locks.exclusive(directory, purpose or f"write {self.name}"):
            yield directory

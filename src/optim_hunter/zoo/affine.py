"""`affine-recurrence`: a 3-layer transformer that continues vector affine recurrences (seed 001).

The task of Bhargav & Gu (2024): a sequence of vectors a_0, a_1, ... with a_n = c a_{n-1} + d,
where the scalar c and the vector d are drawn afresh for every sequence and never shown. The model
reads a_0 .. a_{L-1} and must output a_1 .. a_L; it can only infer c and d in context.

Data (the seed's section 3.1): a_0, d ~ U[-2, 2]^40 and c ~ U[-2, 2]; the L + 1 terms a_0 .. a_L
are computed, then every term and d are divided by (max_n |a_n|) / U(1, 2), so the longest vector
of each sequence has norm between 1 and 2 and the scaled sequence is again an affine recurrence
with the same c. One length L in {3, ..., 14} is drawn per batch. Every batch is a function of
(seed, step) alone, as the trainer requires.

Model (the seed's section 3.2): a TransformerLens `NativeModel` (pre-LayerNorm GPT-2-style blocks,
learned positions) with d_model 128, 8 heads of d_head 64, d_mlp 3072, 3 layers, n_ctx 32, ReLU
MLPs. There are no tokens: the input vectors are read in linearly, x @ W_E + W_pos, where W_E is
the [40, 128] matrix stored as the model's token-embedding weight, and read out by the [128, 40]
unembedding W_U (no bias). The loss is the mean squared error of the predictions of a_3 onwards
(positions 2 .. L-1): a_1 and a_2 cannot be predicted, since two terms do not determine c and d.
A second family, `affine-every-position` (`every_position`), scores every position instead, for the
first fifth of the same run: the seed's remark that this trains worse, tested step for step.

`hooked` returns a `transformer.VectorModel`: the hooked `TransformerBridge` plus the vector read-in, so
`model(vectors)` and `model.run_with_cache(vectors)` take [batch, pos, 40] float tensors and the
bridge runs from its first block (`start_at_layer=0`) with the standard hook names
(`blocks.{i}.hook_resid_pre`, `blocks.{i}.attn.hook_pattern`, `blocks.{i}.attn.hook_z`,
`blocks.{i}.hook_mlp_out`, `ln_final.hook_scale`, ...). Weight properties (`W_E`, `W_pos`, `W_Q`,
`W_V`, `W_O`, `W_U`, ...) and `hooks(...)` pass through to the bridge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from optim_hunter.core import devices, settings, training, transformer
from optim_hunter.zoo.registry import Family

VERSION = "1"  # part of the cache key: bump when data or model code changes the weights
DESCRIPTION = "3-layer transformer continuing vector affine recurrences a_n = c a_(n-1) + d (seed 001)"
EVERY_POSITION = "affine-every-position"
EVERY_POSITION_DESCRIPTION = (
    "affine-recurrence with the loss on every position, for the first fifth of the same schedule (seed 001's "
    "loss comparison)"
)
SCORED_FROM = 2  # the seed's loss, and every model's held-out MSE: predictions of a_3 onwards


# --- configuration -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AffineArch:
    """The transformer's shape (the seed's section 3.2)."""

    d_vector: int = 40  # the seed's d_vocab: the width of the input and output vectors
    d_model: int = 128
    d_head: int = 64
    d_mlp: int = 3072
    n_heads: int = 8
    n_layers: int = 3
    n_ctx: int = 32
    act_fn: str = "relu"

    def __post_init__(self) -> None:
        for name in ("d_vector", "d_model", "d_head", "d_mlp", "n_heads", "n_layers", "n_ctx"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"AffineArch.{name} must be a positive integer, got {value!r}")

    @property
    def model(self) -> transformer.Arch:
        """The same shape as the one model core describes it: a vector read-in."""
        return transformer.Arch(
            n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads, n_ctx=self.n_ctx,
            d_vocab=self.d_vector, d_mlp=self.d_mlp, act_fn=self.act_fn, d_head=self.d_head, read_in="vectors",
        )


@dataclasses.dataclass(frozen=True)
class AffineData:
    """The sequence distribution (the seed's section 3.1)."""

    dim: int = 40
    coef_range: float = 2.0  # a_0, c, d ~ U[-coef_range, coef_range]
    scale_low: float = 1.0  # the longest term's norm after scaling is U(scale_low, scale_high)
    scale_high: float = 2.0
    min_length: int = 3  # input vectors per sequence, one length per batch
    max_length: int = 14
    # keeps the name `loss_from` (not `scored_from`): field names are in the trained models' cache key
    loss_from: int = SCORED_FROM  # first position whose prediction is scored (it predicts a_3)

    def __post_init__(self) -> None:
        if not 0 < self.scale_low <= self.scale_high:
            raise ValueError("need 0 < scale_low <= scale_high")
        if not self.loss_from < self.min_length <= self.max_length:
            raise ValueError("need loss_from < min_length <= max_length (every batch must be scored)")


@dataclasses.dataclass(frozen=True)
class AffineConfig:
    arch: AffineArch
    train: training.TrainConfig
    data: AffineData = AffineData()
    batch_size: int = 16
    eval_per_length: int = 20  # held-out sequences per length for the in-training MSE

    def __post_init__(self) -> None:
        if self.arch.d_vector != self.data.dim:
            raise ValueError(f"arch.d_vector {self.arch.d_vector} != data.dim {self.data.dim}")
        if self.data.max_length > self.arch.n_ctx:
            raise ValueError(f"max_length {self.data.max_length} exceeds n_ctx {self.arch.n_ctx}")
        if self.batch_size < 1 or self.eval_per_length < 1:
            raise ValueError("batch_size and eval_per_length must be >= 1")


def config(profile: str | None = None) -> AffineConfig:
    """`full`: the seed's architecture and batch size (16), trained for 10,000 steps (the seed ran
    100,000 on a GPU) with a warmed-up cosine schedule from 1e-3 and AdamW's fused kernel (9% faster
    steps than its loop here): about eight minutes on one CPU core; `smoke`: 500 steps,
    about a minute (far from converged: for checking the machinery). One thread: for these small
    matrices a second thread makes every step slower on a shared two-core machine."""
    return settings.pick(
        settings.profile(profile),
        full=_seed_setup(steps=10000, warmup_steps=300, min_lr_ratio=0.02, eval_every=500, snapshots=4),
        smoke=_seed_setup(steps=500, warmup_steps=50, min_lr_ratio=0.05, eval_every=250, snapshots=2,
                          eval_per_length=8),
    )


def _seed_setup(
    *, steps: int, warmup_steps: int, min_lr_ratio: float, eval_every: int, snapshots: int, **fields: Any
) -> AffineConfig:
    """The seed's architecture, batch size (16) and AdamW (lr 1e-3, weight decay 0.01; the fused
    kernel, one thread) on a schedule of `steps` steps; `fields`: the configuration's other fields."""
    return AffineConfig(
        arch=AffineArch(),
        train=training.TrainConfig(
            steps=steps, lr=1e-3, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, weight_decay=0.01,
            eval_every=eval_every, snapshots=snapshots, threads=1, fused_optimizer=True,
        ),
        batch_size=16,
        **fields,
    )


def every_position(base: AffineConfig) -> AffineConfig:
    """`base` with the loss on every position (`loss_from` 0, predicting a_1 on), trained for the
    first fifth of `base`'s steps on `base`'s own learning-rate schedule (`schedule_steps`), up to an
    evaluation step of both: the held-out MSE of the two runs (scored from a_3 on) then compares
    step for step, with the same initial weights and batches."""
    steps = base.train.steps // 5
    if base.train.eval_every:
        steps = base.train.eval_every * max(1, steps // base.train.eval_every)
    return dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, loss_from=0),
        train=dataclasses.replace(base.train, steps=max(1, steps), schedule_steps=base.train.steps, snapshots=1,
                                  warmup_steps=min(base.train.warmup_steps, max(1, steps))),
    )


def tiny_config() -> AffineConfig:
    """Trains in a second or two: for tests of the machinery, not of the task."""
    return AffineConfig(
        arch=AffineArch(d_vector=6, d_model=16, d_head=4, d_mlp=32, n_heads=2, n_layers=2, n_ctx=8),
        train=training.TrainConfig(steps=4, lr=1e-3, warmup_steps=1, snapshots=2, threads=1),
        data=AffineData(dim=6, max_length=6),
        batch_size=4,
        eval_per_length=2,
    )


# --- data ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sequences:
    """A batch of affine recurrences, scaled and unscaled (float64).

    terms[:, n] = a_n (scaled) for n = 0 .. L; `raw_terms` and `raw_d` are the same recurrences
    before the division by `scale`, so raw_terms[:, n] = c raw_terms[:, n-1] + raw_d exactly.
    """

    terms: Float[np.ndarray, "batch term d_vector"]
    c: Float[np.ndarray, " batch"]
    d: Float[np.ndarray, "batch d_vector"]
    scale: Float[np.ndarray, " batch"]
    raw_terms: Float[np.ndarray, "batch term d_vector"]
    raw_d: Float[np.ndarray, "batch d_vector"]

    @property
    def inputs(self) -> Float[Tensor, "batch pos d_vector"]:
        """a_0 .. a_{L-1}, what the model reads (float32)."""
        return torch.from_numpy(self.terms[:, :-1]).float()

    @property
    def targets(self) -> Float[Tensor, "batch pos d_vector"]:
        """a_1 .. a_L, what it must output at each position (float32)."""
        return torch.from_numpy(self.terms[:, 1:]).float()

    def __len__(self) -> int:
        return self.terms.shape[0]


def sample_sequences(
    rng: np.random.Generator, batch: int, length: int, data: AffineData = AffineData(),
    *, c: float | Float[np.ndarray, " batch"] | None = None,
) -> Sequences:
    """`batch` recurrences with `length` input vectors each (L + 1 terms); `c` may be given, one
    for every sequence or one each."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    r = data.coef_range
    a0 = rng.uniform(-r, r, (batch, data.dim))
    coef = rng.uniform(-r, r, batch) if c is None else np.broadcast_to(np.asarray(c, float), (batch,)).copy()
    d = rng.uniform(-r, r, (batch, data.dim))
    raw = np.empty((batch, length + 1, data.dim))
    raw[:, 0] = a0
    for n in range(1, length + 1):
        raw[:, n] = coef[:, None] * raw[:, n - 1] + d
    longest = np.linalg.norm(raw, axis=-1).max(axis=1)
    scale = longest / rng.uniform(data.scale_low, data.scale_high, batch)
    return Sequences(
        terms=raw / scale[:, None, None], c=coef, d=d / scale[:, None], scale=scale, raw_terms=raw, raw_d=d
    )


def batch_length(cfg: AffineConfig, step: int) -> int:
    rng = np.random.default_rng([cfg.train.seed, step, 0xAFF1])
    return int(rng.integers(cfg.data.min_length, cfg.data.max_length + 1))


def make_batch(cfg: AffineConfig, step: int) -> tuple[Tensor, Tensor]:
    """(inputs, targets) of training step `step`: a function of (seed, step) only."""
    rng = np.random.default_rng([cfg.train.seed, step, 0xAFF0])
    seqs = sample_sequences(rng, cfg.batch_size, batch_length(cfg, step), cfg.data)
    return seqs.inputs, seqs.targets


def example_input(model: Any, length: int | None = None) -> Tensor:
    """A [1, length, d_vector] input for a hooked model of this family (one held-out sequence),
    for code that exercises every zoo model: a vector model has no tokenizer, and its read-in
    happens before the bridge, so it has no `hook_embed` (`blocks.0.hook_resid_pre` holds it)."""
    dim = int(model.cfg.d_vocab)
    length = min(AffineData().max_length, int(model.cfg.n_ctx)) if length is None else length
    data = AffineData(dim=dim, max_length=max(length, AffineData().min_length))
    return sample_sequences(np.random.default_rng([10_000, length]), 1, length, data).inputs


def held_out(per_length: int, data: AffineData = AffineData(), *, seed: int = 10_001) -> list[Sequences]:
    """Held-out sequences: `per_length` of every length min_length .. max_length (one group each).
    Seeds >= 10_000 never coincide with a training batch's (seed, step, tag) stream."""
    return [
        sample_sequences(np.random.default_rng([seed, length]), per_length, length, data)
        for length in range(data.min_length, data.max_length + 1)
    ]


# --- the model -----------------------------------------------------------------------------------


def build_model(arch: AffineArch, seed: int) -> torch.nn.Module:
    """A freshly initialised `NativeModel` of this shape; the same seed gives the same weights."""
    return transformer.build(arch.model, seed)


def predict(native: torch.nn.Module, vectors: Float[Tensor, "batch pos d_vector"]) -> Float[Tensor, "batch pos d_vector"]:
    """The predictions of a plain `NativeModel` (the one fused forward: the training forward), on
    the model's device."""
    return transformer.logits(native, vectors.to(devices.of(native)))


def scored_mse(predictions: Tensor, targets: Tensor, scored_from: int = SCORED_FROM) -> Tensor:
    """Mean squared error over the scored positions (scored_from onwards) and all coordinates."""
    return F.mse_loss(predictions[:, scored_from:], targets[:, scored_from:])


def all_param_groups(weight_decay: float):
    """Weight decay on every parameter, as the seed's plain AdamW(model.parameters(), 0.01)."""
    return lambda model: [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]


@torch.no_grad()
def held_out_mse(
    forward: Callable[[Tensor], Tensor], groups: Sequence[Sequences], scored_from: int = SCORED_FROM
) -> float:
    """The held-out MSE: mean over the groups (lengths) of the MSE over the scored positions and
    coordinates, as the training loss averages over batches. `forward` maps inputs to predictions:
    a plain model's `predict`, or a hooked model itself (hooks and edits in effect); the targets go
    where it put its predictions."""
    def mse(g: Sequences) -> float:
        predictions = forward(g.inputs)
        return float(scored_mse(predictions, g.targets.to(predictions.device), scored_from))

    return float(np.mean([mse(g) for g in groups]))


def train_spec(cfg: AffineConfig) -> training.TrainSpec:
    groups = held_out(cfg.eval_per_length, cfg.data)

    def evaluate(model: torch.nn.Module, step: int) -> dict[str, float]:
        return {"mse": held_out_mse(lambda x: predict(model, x), groups, SCORED_FROM)}

    return training.TrainSpec(
        build=lambda seed: build_model(cfg.arch, seed),
        batch=lambda step: make_batch(cfg, step),
        loss=lambda model, batch: scored_mse(predict(model, batch[0]), batch[1], cfg.data.loss_from),
        tokens=lambda batch: int(batch[0].shape[0] * batch[0].shape[1]),
        evaluate=evaluate,
        param_groups=all_param_groups(cfg.train.weight_decay),
    )


# --- the hooked model ----------------------------------------------------------------------------


def hooked(state_dict: Mapping[str, Tensor], cfg: AffineConfig, name: str = "affine-recurrence") -> transformer.VectorModel:
    """The trained weights as a `transformer.VectorModel` around a TransformerBridge (its own copy)."""
    return transformer.to_bridge(state_dict, cfg.arch.model, None, name)


state_dict_of = transformer.state_dict_of


def _fused(state_dict: Mapping[str, Tensor], cfg: AffineConfig) -> transformer.LM:
    return transformer.LM.from_state(state_dict, cfg.arch.model)


def _family(name: str, description: str, config: Any, tiny_config: Any) -> Family:
    """A family of this module: everything but the name, description and configurations is shared."""
    return Family(name=name, description=description, version=VERSION, config=config, tiny_config=tiny_config,
                  train_spec=train_spec, hooked=hooked, fused=_fused, example_input=example_input, reads="vectors")


FAMILIES = (
    _family("affine-recurrence", DESCRIPTION, config, tiny_config),
    _family(EVERY_POSITION, EVERY_POSITION_DESCRIPTION, lambda profile=None: every_position(config(profile)),
            lambda: every_position(tiny_config())),
)

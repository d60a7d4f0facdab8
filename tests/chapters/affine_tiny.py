"""Tiny random affine-recurrence models for the tests of the chapter package `affine_recurrences`
(imported by those test modules; pytest collects nothing here)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from optim_hunter.chapters.affine_recurrences import affine as ia
from optim_hunter.zoo import affine


def randomize(native: torch.nn.Module, seed: int = 7) -> torch.nn.Module:
    """Large random weights (LayerNorm weights in [1, 1.5]), so that every circuit is far from its
    initialisation and a wrong fold or sign shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in native.named_parameters():
            if name.endswith(".weight") and ("ln" in name):
                p.copy_(1 + 0.5 * torch.rand(p.shape, generator=gen))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return native.requires_grad_(False)


def two_layer():
    """(cfg, native, hooked model, held-out groups) of `affine.tiny_config()`: 2 layers, 2 heads."""
    cfg = affine.tiny_config()
    native = randomize(affine.build_model(cfg.arch, 0))
    model = affine.hooked(native.state_dict(), cfg).requires_grad_(False)
    return cfg, native, model, affine.held_out(4, cfg.data)


def study_config() -> affine.AffineConfig:
    """The chapter's shape in miniature: 3 layers of 8 heads, sequences of 3 .. 14 vectors of 6."""
    tiny = affine.tiny_config()
    arch = dataclasses.replace(tiny.arch, n_layers=3, n_heads=8, d_head=2, n_ctx=16)
    return dataclasses.replace(tiny, arch=arch, data=dataclasses.replace(tiny.data, max_length=14))


def meta(steps: int = 40) -> dict:
    losses = list(np.linspace(1.0, 0.1, steps))
    history = [{"step": s, "loss": 1.0 / s, "mse": 2.0 / s} for s in (10, 20, 40)]
    return {"losses": losses, "history": history, "steps": steps, "train_seconds": 90.0}


def study() -> ia.Study:
    """A `Study` of a random 3-layer, 8-head model with 2 sequences of each length 3 .. 14."""
    cfg = study_config()
    native = randomize(affine.build_model(cfg.arch, 0), seed=3)
    model = affine.hooked(native.state_dict(), cfg).requires_grad_(False)
    return ia.Study(profile="smoke", model=model, cfg=cfg, meta=meta(),
                    analysis=affine.held_out(2, cfg.data, seed=20_001),
                    population=affine.held_out(2, cfg.data, seed=20_002))

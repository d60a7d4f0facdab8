"""Fixtures for the zoo tests: a private cache and tiny configurations (tiny offline HF models
live in tests/conftest.py, shared with the analysis tests)."""

from __future__ import annotations

import pytest

from optim_hunter import zoo

STANDARD_HOOKS = (
    "hook_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "blocks.1.hook_resid_post",
    "ln_final.hook_normalized",
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """OPTIM_HUNTER_CACHE in a temp folder, and every zoo family shrunk to its tiny config."""
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path / "cache"))
    for name in zoo.names():
        shrink(monkeypatch, name, zoo.family(name).tiny_config())
    return tmp_path / "cache"


def shrink(monkeypatch, name, cfg, **changes):
    """Give family `name` the configuration `cfg` in every profile (and any other field changes),
    in the zoo's table, for one test."""
    import dataclasses

    fam = dataclasses.replace(zoo.family(name), config=lambda profile=None: cfg, **changes)
    monkeypatch.setitem(zoo._FAMILIES, name, fam)

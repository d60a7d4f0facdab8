"""The hook vocabulary names hook points that exist, with the documented shapes, on the book's own
models and on bridged Hugging Face models alike (the reference: each model's own hook registry)."""

from __future__ import annotations

import pytest
import torch

from optim_hunter import zoo
from optim_hunter.core import hooks


def _names(layer: int) -> dict[str, str]:
    return {"pattern": hooks.pattern(layer), "scores": hooks.scores(layer), "q": hooks.q(layer),
            "k": hooks.k(layer), "v": hooks.v(layer), "z": hooks.z(layer),
            "resid_pre": hooks.resid_pre(layer), "resid_mid": hooks.resid_mid(layer),
            "resid_post": hooks.resid_post(layer), "attn_out": hooks.attn_out(layer),
            "mlp_out": hooks.mlp_out(layer), "mlp_post": hooks.mlp_post(layer)}


@pytest.mark.parametrize("which", ["native", "hf-llama"])
def test_every_name_is_a_hook_point_with_its_shape(which, tiny_bridge, tiny_hf_models):
    model = tiny_bridge if which == "native" else zoo.load(f"hf:{tiny_hf_models['llama']}")
    assert isinstance(model, hooks.HookedModel)
    cfg, last = model.cfg, model.cfg.n_layers - 1
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    names = _names(last) | {"embed": hooks.EMBED}
    _, cache = model.run_with_cache(tokens, names_filter=hooks.only(names.values()))
    assert set(cache.keys()) == set(names.values())  # every name exists; `only` keeps just them
    pos, heads = 5, cfg.n_heads
    assert cache[names["pattern"]].shape == (1, heads, pos, pos)
    assert cache[names["z"]].shape[:3] == (1, pos, heads)
    for key in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "embed"):
        assert cache[names[key]].shape == (1, pos, cfg.d_model), key
    stages = hooks.resid_stages(cfg.n_layers)
    assert len(stages) == len(hooks.stage_labels(cfg.n_layers)) == cfg.n_layers + 1
    assert stages[0] == "blocks.0.hook_resid_pre" and stages[-1] == f"blocks.{last}.hook_resid_post"

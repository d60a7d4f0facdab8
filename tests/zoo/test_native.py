"""The native-model helpers: the fused training forward computes what NativeModel and the bridge do."""

from __future__ import annotations

import pytest
import torch

from optim_hunter.zoo import native


@pytest.mark.parametrize("positional", ["standard", "rotary"])
def test_fused_forward_matches_native_model_and_bridge(positional):
    arch = native.NativeArch(n_layers=2, d_model=32, n_heads=4, n_ctx=24, d_vocab=50, positional=positional)
    model = native.build(arch, seed=0).eval()
    tokens = torch.randint(0, 50, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(tokens)  # TransformerLens's own NativeModel.forward
        torch.testing.assert_close(native.logits(model, tokens), reference, atol=1e-5, rtol=1e-5)
        bridge = native.to_bridge(model.state_dict(), arch, tokenizer=None, name="t")
        torch.testing.assert_close(bridge(tokens), reference, atol=1e-5, rtol=1e-5)


def test_build_is_seeded():
    arch = native.NativeArch(n_layers=1, d_model=16, n_heads=2, n_ctx=8, d_vocab=10)
    a, b, c = native.build(arch, 3), native.build(arch, 3), native.build(arch, 4)
    for (name, x), (_, y), (_, z) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert torch.equal(x, y), name
    assert not torch.equal(a.tok_embed.weight, c.tok_embed.weight)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"d_model": 30, "n_heads": 4}, "divisible"),
        ({"n_layers": 0}, "n_layers"),
        ({"positional": "alibi"}, "positional"),
        ({"d_mlp": -1}, "d_mlp"),
    ],
)
def test_impossible_sizes_are_rejected(kwargs, message):
    base = dict(n_layers=1, d_model=16, n_heads=2, n_ctx=8, d_vocab=10)
    with pytest.raises(ValueError, match=message):
        native.NativeArch(**(base | kwargs))


def test_too_long_inputs_are_rejected():
    arch = native.NativeArch(n_layers=1, d_model=16, n_heads=2, n_ctx=8, d_vocab=10)
    with pytest.raises(ValueError, match="exceed the model's context of 8"):
        native.hidden(native.build(arch, 0), torch.zeros(1, 9, dtype=torch.long))

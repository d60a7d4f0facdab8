"""The one model core: its fused forward (plain, cached, smeared, vector read-in) computes what
TransformerLens's NativeModel and the hooked bridge compute."""

from __future__ import annotations

import pytest
import torch

from optim_hunter.core import checkpoints, transformer


@pytest.mark.parametrize("positional", ["standard", "rotary"])
def test_fused_forward_matches_native_model_and_bridge(positional):
    arch = transformer.Arch(n_layers=2, d_model=32, n_heads=4, n_ctx=24, d_vocab=50, positional=positional)
    model = transformer.build(arch, seed=0).eval()
    tokens = torch.randint(0, 50, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(tokens)  # TransformerLens's own NativeModel.forward
        torch.testing.assert_close(transformer.logits(model, tokens), reference, atol=1e-5, rtol=1e-5)
        bridge = transformer.to_bridge(model.state_dict(), arch, tokenizer=None, name="t")
        torch.testing.assert_close(bridge(tokens), reference, atol=1e-5, rtol=1e-5)


def test_build_is_seeded():
    arch = transformer.Arch(n_layers=1, d_model=16, n_heads=2, n_ctx=8, d_vocab=10)
    a, b, c = transformer.build(arch, 3), transformer.build(arch, 3), transformer.build(arch, 4)
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
        transformer.Arch(**(base | kwargs))


def test_too_long_inputs_are_rejected():
    arch = transformer.Arch(n_layers=1, d_model=16, n_heads=2, n_ctx=8, d_vocab=10)
    with pytest.raises(ValueError, match="exceed the model's context of 8"):
        transformer.hidden(transformer.build(arch, 0), torch.zeros(1, 9, dtype=torch.long))


def _perturbed(model):
    """Weights away from the init's zeros and ones (LayerNorms, biases), so every term counts."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model.eval()


@pytest.mark.parametrize("positional", ["standard", "rotary"])
@pytest.mark.parametrize("attn_only", [False, True])
def test_cached_decoding_matches_the_full_forward(positional, attn_only):
    arch = transformer.Arch(n_layers=2, d_model=32, n_heads=4, n_ctx=24, d_vocab=50, positional=positional,
                            attn_only=attn_only)
    model = _perturbed(transformer.build(arch, seed=0))
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model(tokens)  # NativeModel.forward over the whole sequence
        cache = transformer.KVCache()
        positions = torch.arange(12).expand(2, 12)
        h = transformer.forward(model, tokens[:, :8], cache=cache, positions=positions[:, :8])
        steps = [model.head(model.ln_out(h))]
        for t in range(8, 12):
            keep = torch.ones(2, 1, 1, t + 1, dtype=torch.bool)
            h = transformer.forward(model, tokens[:, t : t + 1], cache=cache, positions=positions[:, t : t + 1], keep=keep)
            steps.append(model.head(model.ln_out(h)))
    torch.testing.assert_close(torch.cat(steps, dim=1), reference, atol=1e-5, rtol=1e-5)


def test_smeared_keys_match_a_naive_attention():
    """The smeared forward against attention written out by hand from the weights (no SDPA)."""
    arch = transformer.Arch(n_layers=1, d_model=8, n_heads=2, n_ctx=6, d_vocab=5, attn_only=True)
    lm = transformer.LM(arch, seed=1, smeared=True)
    _perturbed(lm.native)
    with torch.no_grad():
        lm.alpha.copy_(torch.tensor([[-1.0, 2.0]]))
    tokens = torch.tensor([[0, 3, 1, 4, 2, 2]])
    native = lm.native
    with torch.no_grad():
        h = native.tok_embed(tokens) + native.pos.weight[:6]
        attn, x = native.layers[0].attn, native.layers[0].ln1(h)
        heads = []
        for i in range(2):
            part = slice(4 * i, 4 * i + 4)
            q, k, v = (lin(x)[0, :, part] for lin in (attn.q, attn.k, attn.v))
            s = torch.sigmoid(lm.alpha[0, i])
            k = torch.stack([k[0]] + [s * k[j] + (1 - s) * k[j - 1] for j in range(1, 6)])
            scores = (q @ k.T) / 2.0 + torch.triu(torch.full((6, 6), float("-inf")), 1)
            heads.append(torch.softmax(scores, -1) @ v)
        h = h + attn.o(torch.cat(heads, -1)[None])
        expected = native.head(native.ln_out(h))
        torch.testing.assert_close(lm(tokens), expected, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="without a cache"):
            transformer.forward(native, tokens, alpha=lm.alpha, cache=transformer.KVCache())


def test_vector_read_in_and_bridge():
    arch = transformer.Arch(n_layers=2, d_model=16, n_heads=2, d_head=4, n_ctx=8, d_vocab=6, d_mlp=32,
                            act_fn="relu", read_in="vectors")
    model = _perturbed(transformer.build(arch, seed=0))
    x = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(inputs_embeds=x @ model.tok_embed.weight)  # NativeModel adds W_pos itself
        torch.testing.assert_close(transformer.logits(model, x), reference, atol=1e-5, rtol=1e-5)
        hooked = transformer.to_bridge(model.state_dict(), arch, None, "v")
        assert isinstance(hooked, transformer.VectorModel)
        torch.testing.assert_close(hooked(x), reference, atol=1e-5, rtol=1e-5)
    assert hooked.W_Q.shape[-1] == 4  # d_head set apart from d_model / n_heads
    for name, tensor in transformer.state_dict_of(hooked).items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    with pytest.raises(ValueError, match="positional='standard'"):
        transformer.Arch(n_layers=1, d_model=8, n_heads=2, n_ctx=4, d_vocab=3, read_in="vectors", positional="rotary")
    with pytest.raises(ValueError, match="read_in"):
        transformer.Arch(n_layers=1, d_model=8, n_heads=2, n_ctx=4, d_vocab=3, read_in="pixels")


def test_fields_added_later_stay_out_of_the_cache_key_at_their_default():
    base = dict(n_layers=1, d_model=8, n_heads=2, n_ctx=4, d_vocab=3)
    plain = {**base, "d_mlp": 0, "act_fn": "gelu", "positional": "standard", "attn_only": False}
    assert checkpoints.fingerprint(transformer.Arch(**base)) == checkpoints.fingerprint(plain)
    assert checkpoints.fingerprint(transformer.Arch(**base, d_head=2)) != checkpoints.fingerprint(plain)

"""KV-cached decoding equals full forward passes on a real native TransformerLens model."""

import pytest
import torch

from optim_hunter.analysis import ablation, kv_decoding, llm_regressor
from optim_hunter.core import transformer, twins
from optim_hunter.data import datasets, prompts


@pytest.fixture(params=["standard", "rotary"])
def any_bridge(request, tiny_bridge, chars):
    """The tiny learned-position bridge, and a rotary one (the numeric-icl architecture)."""
    if request.param == "standard":
        return tiny_bridge
    arch = transformer.Arch(n_layers=2, d_model=32, n_heads=4, n_ctx=512, d_vocab=len(chars),
                             positional="rotary")
    return transformer.to_bridge(transformer.build(arch, seed=1).state_dict(), arch, None, "rotary")


def test_prefill_and_steps_match_full_forward(any_bridge):
    tiny_bridge = any_bridge
    assert kv_decoding.supports(tiny_bridge)
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 9, 7])
    tokens = torch.randint(0, 40, (3, 12), generator=g)
    decoder = kv_decoding.NativeKVDecoder(tiny_bridge)
    first = decoder.prefill(tokens[:, :9], lengths)
    with torch.no_grad():
        for row, n in enumerate(lengths.tolist()):
            full = tiny_bridge(tokens[row : row + 1, :n])
            torch.testing.assert_close(first[row], full[0, -1], atol=1e-4, rtol=1e-4)
        extra = torch.randint(0, 40, (3, 2), generator=g)
        logits = [decoder.step(extra[:, 0]), decoder.step(extra[:, 1])]
        for row, n in enumerate(lengths.tolist()):
            seq = torch.cat([tokens[row, :n], extra[row]])[None]
            full = tiny_bridge(seq)
            torch.testing.assert_close(logits[0][row], full[0, -2], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(logits[1][row], full[0, -1], atol=1e-4, rtol=1e-4)


def test_hooks_disable_the_cache(tiny_bridge):
    with ablation.ablated(tiny_bridge, ["blocks.0.hook_mlp_out"]):
        assert kv_decoding.hooks_attached(tiny_bridge) and not kv_decoding.supports(tiny_bridge)
    assert kv_decoding.supports(tiny_bridge)


def test_cached_answers_equal_full_path_answers(any_bridge, chars, monkeypatch):
    tiny_bridge = any_bridge
    texts = [prompts.format_prompt(s.x_train, s.y_train, s.x_query[0])
             for s in (datasets.make_split("friedman2", n, k, round_to=2) for n in (1, 2) for k in (0, 1, 2))]
    assert kv_decoding.supports(tiny_bridge)
    cached = llm_regressor.greedy_answers(tiny_bridge, chars, texts, max_new_tokens=6, batch_size=4)
    monkeypatch.setattr(kv_decoding, "supports", lambda model: False)
    full = llm_regressor.greedy_answers(tiny_bridge, chars, texts, max_new_tokens=6, batch_size=1)
    assert cached.texts == full.texts


@pytest.fixture(params=["gpt2", "llama"])
def tiny_hf(request, tiny_hf_models):
    from optim_hunter import zoo

    return zoo.load(f"hf:{tiny_hf_models[request.param]}")


def test_hf_prefill_and_steps_match_the_hooked_bridge(tiny_hf):
    decoder = kv_decoding.decoder(tiny_hf)
    assert isinstance(decoder, kv_decoding.HFKVDecoder)
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 9, 7])
    tokens = torch.randint(0, 300, (3, 9), generator=g)
    first = decoder.prefill(tokens, lengths)
    extra = torch.randint(0, 300, (3, 2), generator=g)
    steps = [decoder.step(extra[:, 0]), decoder.step(extra[:, 1])]
    with torch.no_grad():
        for row, n in enumerate(lengths.tolist()):
            seq = torch.cat([tokens[row, :n], extra[row]])[None]
            full = tiny_hf(seq)  # the hooked bridge (eager attention): an independent path
            torch.testing.assert_close(first[row], full[0, -3], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(steps[0][row], full[0, -2], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(steps[1][row], full[0, -1], atol=1e-4, rtol=1e-4)


def test_hf_twin_shares_weights_and_steps_aside_for_hooks(tiny_hf):

    tokens = torch.tensor([[5, 17, 42, 9]])
    assert twins.fast_twin(tiny_hf) is not None
    with torch.no_grad():
        tiny_hf.W_U[:, 7] += 3.0  # a weight edit through the bridge reaches the twin
        torch.testing.assert_close(kv_decoding.logits(tiny_hf, tokens), tiny_hf(tokens), atol=1e-4, rtol=1e-4)
    with ablation.ablated(tiny_hf, ["blocks.0.hook_mlp_out"]):
        assert twins.fast_twin(tiny_hf) is None and kv_decoding.decoder(tiny_hf) is None
        with torch.no_grad():
            torch.testing.assert_close(kv_decoding.logits(tiny_hf, tokens), tiny_hf(tokens))


def test_hf_cached_answers_equal_full_path_answers(tiny_hf, monkeypatch):
    from optim_hunter.zoo import hf

    texts = [prompts.format_pairs([1, 2, 5][:n], [5, 7, 13][:n], x) for n in (1, 2, 3) for x in (4, 10)]
    cached = llm_regressor.greedy_answers(tiny_hf, tiny_hf.tokenizer, texts, max_new_tokens=6, batch_size=4)
    monkeypatch.setattr(twins, "fast_twin", lambda model: None)
    full = llm_regressor.greedy_answers(tiny_hf, tiny_hf.tokenizer, texts, max_new_tokens=6, batch_size=1)
    assert cached.texts == full.texts

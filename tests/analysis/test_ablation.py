"""Ablations against independent computations: weights set to zero, means taken by hand."""

import copy

import pytest
import torch

from optim_hunter.analysis import ablation
from optim_hunter.core import twins


@pytest.fixture(scope="module")
def tokens(chars):
    return [torch.tensor(chars(t)["input_ids"]) for t in ["Output: 12\n", "Feature 0: 3.5\nOutput:"]]


def test_zeroing_every_head_equals_zero_output_weights(tiny_bridge, tokens):
    names = [f"blocks.{l}.attn.hook_z" for l in range(tiny_bridge.cfg.n_layers)]
    with torch.no_grad():
        clean = tiny_bridge(tokens[1][None])  # before the context
    with torch.no_grad(), ablation.ablated(tiny_bridge, names, mode="zero"):
        ablated = tiny_bridge(tokens[1][None])
    reference = copy.deepcopy(tiny_bridge)
    with torch.no_grad():
        for l in range(reference.cfg.n_layers):
            reference.blocks[l].attn.o.weight.zero_()  # W_O = 0: heads write only their bias
        expected = reference(tokens[1][None])
    torch.testing.assert_close(ablated, expected, atol=1e-5, rtol=1e-5)
    # outside the context the model is untouched: after it, the logits from before it
    with torch.no_grad():
        torch.testing.assert_close(tiny_bridge(tokens[1][None]), clean, atol=0, rtol=0)
    assert not torch.allclose(clean, ablated)


def test_single_heads_only(tiny_bridge, tokens):
    name = "blocks.0.attn.hook_z"
    seen = {}
    with torch.no_grad(), ablation.ablated(tiny_bridge, [name], heads={name: [1]}):
        _, cache = tiny_bridge.run_with_cache(tokens[0][None], names_filter=lambda n: n == name)
    _, clean = tiny_bridge.run_with_cache(tokens[0][None], names_filter=lambda n: n == name)
    z, z0 = cache[name], clean[name]
    assert torch.all(z[:, :, 1] == 0)
    torch.testing.assert_close(z[:, :, [0, 2, 3]], z0[:, :, [0, 2, 3]])


def test_mean_activations_by_hand(tiny_bridge, tokens):
    name = "blocks.1.hook_mlp_out"
    means = ablation.mean_activations(tiny_bridge, tokens, [name])
    acts = [tiny_bridge.run_with_cache(t[None])[1][name][0] for t in tokens]
    torch.testing.assert_close(means[name], torch.cat(acts).mean(0), atol=1e-5, rtol=1e-5)
    with torch.no_grad(), ablation.ablated(tiny_bridge, [name], mode="mean", means=means):
        _, cache = tiny_bridge.run_with_cache(tokens[0][None], names_filter=lambda n: n == name)
    torch.testing.assert_close(cache[name][0, 3], means[name])


def test_bad_modes():
    with pytest.raises(ValueError, match="unknown ablation mode"):
        ablation._replacement("random", None, None)
    with pytest.raises(ValueError, match="needs the mean"):
        ablation._replacement("mean", None, None)


def test_zeroed_mlps_equal_hook_ablation_on_every_path(tiny_hf_models):
    from optim_hunter import zoo
    from optim_hunter.analysis import kv_decoding, llm_regressor
    from optim_hunter.data import prompts

    model = zoo.load(f"hf:{tiny_hf_models['llama']}")
    texts = [prompts.format_pairs([1, 2, 5][:n], [5, 7, 13][:n], x) for n in (1, 2, 3) for x in (4, 10)]
    tokens = model.to_tokens(texts[-1])
    with ablation.ablated(model, ["blocks.1.hook_mlp_out"]):  # the reference: TransformerLens hooks
        reference = llm_regressor.greedy_answers(model, model.tokenizer, texts, max_new_tokens=5)
        with torch.no_grad():
            reference_logits = model(tokens)
    clean = llm_regressor.greedy_answers(model, model.tokenizer, texts, max_new_tokens=5)
    with ablation.mlps_zeroed(model, [1]):
        assert twins.fast_twin(model) is not None  # the fast path stays on
        fast = llm_regressor.greedy_answers(model, model.tokenizer, texts, max_new_tokens=5)
        with torch.no_grad():
            torch.testing.assert_close(kv_decoding.logits(model, tokens), reference_logits, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(model(tokens), reference_logits, atol=1e-4, rtol=1e-4)
    assert fast.texts == reference.texts
    with torch.no_grad():
        assert not torch.allclose(model(tokens), reference_logits)  # hooks removed on exit
    assert clean.texts == llm_regressor.greedy_answers(model, model.tokenizer, texts, max_new_tokens=5).texts

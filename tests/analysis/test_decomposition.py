"""The one-pass decomposition against the hooked bridge: the same residual stream before every
layer, and readouts that add up to the model's own logit difference."""

import pytest
import torch

from optim_hunter import zoo
from optim_hunter.analysis import attribution, decomposition, probes
from optim_hunter.core import twins


@pytest.fixture(scope="module")
def llama(tiny_hf_models):
    return zoo.load(f"hf:{tiny_hf_models['llama']}")


def test_stages_equal_the_hooked_residual_stream(llama):
    tokens = llama.to_tokens("(1, 5)\n(2, 7)\n(4, ")[0]
    parts = decomposition.decompose(llama, tokens)
    names = [f"blocks.{l}.hook_resid_pre" for l in range(llama.cfg.n_layers)]
    names.append(f"blocks.{llama.cfg.n_layers - 1}.hook_resid_post")
    _, cache = llama.run_with_cache(tokens[None], names_filter=lambda n: n in names)
    expected = torch.stack([cache[n][0, -1] for n in names])
    torch.testing.assert_close(parts.stages(), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(parts.final, expected[-1], atol=1e-5, rtol=1e-4)
    assert parts.heads.shape == (llama.cfg.n_layers, llama.cfg.n_heads, llama.cfg.d_model)


def test_readouts_add_up_to_the_models_logit_difference(llama):
    contrast = attribution.Contrast(llama.to_tokens("(1, 5)\n(2, 7)\n(4, ")[0], 40, 41)
    with torch.no_grad():
        logits = llama(contrast.tokens[None])[0, -1]  # the hooked bridge, eager attention
    expected = float(logits[40] - logits[41])
    by_layer, labels = attribution.by_layer(llama, contrast)
    assert labels[-1] == "final_post" and len(by_layer) == llama.cfg.n_layers + 1
    assert by_layer[-1] == pytest.approx(expected, abs=1e-4)
    components, names = attribution.by_component(llama, contrast)
    assert components.sum() == pytest.approx(expected, abs=1e-4)
    assert names[0] == "L0H0" and names[-1] == "embed"


def test_no_fast_path_under_hooks_and_probes_agree(llama):
    tokens = llama.to_tokens("(3, 9)\n(5, ")[0]
    assert decomposition.available(llama)
    with llama.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: x)]):
        assert not decomposition.available(llama)
        with pytest.raises(ValueError, match="no hook attached"):
            decomposition.decompose(llama, tokens)
        hooked = probes.residuals(llama, [tokens])  # the hooked path
    fast = probes.residuals(llama, [tokens])
    assert twins.fast_twin(llama) is not None
    torch.testing.assert_close(torch.tensor(fast), torch.tensor(hooked), atol=1e-5, rtol=1e-4)


def test_neuron_effects_sum_to_each_mlps_readout(llama):
    from optim_hunter.chapters.inside_regressor import regression

    contrast = attribution.Contrast(llama.to_tokens("(1, 5)\n(2, 7)\n(4, ")[0], 40, 41)
    parts = decomposition.decompose(llama, contrast.tokens)
    direction = attribution.answer_direction(llama, contrast).float()
    effects = decomposition.neuron_effects(llama, parts, direction)
    torch.testing.assert_close(effects.sum(1), parts.readout(parts.mlps, direction), atol=1e-5, rtol=1e-4)
    # each neuron against the hooked bridge: its activation times its W_out row along the direction,
    # over the final RMSNorm's scale at the last position
    with torch.no_grad():
        _, cache = llama.run_with_cache(contrast.tokens[None])
        scale = cache["ln_final.hook_scale"][0, -1]
        for l in range(llama.cfg.n_layers):
            by_hand = cache[f"blocks.{l}.mlp.hook_post"][0, -1] * (llama.W_out[l] @ direction) / scale
            torch.testing.assert_close(effects[l], by_hand, atol=1e-7, rtol=1e-4)
    table = regression.neuron_attribution(llama, contrast, top=None)
    assert len(table) == effects.numel()
    assert table["effect"].abs().iloc[0] == pytest.approx(float(effects.abs().max()), rel=1e-5)


def test_reused_prefixes_give_the_same_decompositions(llama):
    prompt = llama.to_tokens("(1, 5)\n(2, 7)\n(4, ")[0].tolist()
    sequences = [prompt, prompt + [40], prompt + [40, 41], prompt + [52], prompt[:5], prompt]
    alone = [decomposition.decompose(llama, torch.tensor(s)) for s in sequences]
    with decomposition.reusing_prefixes():
        shared = [decomposition.decompose(llama, torch.tensor(s)) for s in sequences]
    for a, b in zip(alone, shared):
        torch.testing.assert_close(b.stages(), a.stages(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b.last_logits, a.last_logits, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b.neurons, a.neurons, atol=1e-5, rtol=1e-4)


def test_by_layer_many_equals_one_at_a_time(llama):
    prompt = llama.to_tokens("(1, 5)\n(2, 7)\n(4, ")[0]
    contrasts = {("p", 0): attribution.Contrast(prompt, 40, 41), ("q", 0): None,
                 ("p", 1): attribution.Contrast(torch.cat([prompt, torch.tensor([40])]), 52, 53)}
    table = attribution.by_layer_many(llama, contrasts)
    assert set(table["key"]) == {("p", 0), ("p", 1)}
    for key in (("p", 0), ("p", 1)):
        expected, _ = attribution.by_layer(llama, contrasts[key])
        got = table[table["key"] == key].sort_values("stage")["value"].to_numpy()
        assert got == pytest.approx(expected, abs=1e-4)


def test_remembered_results_follow_weight_edits_and_ablations(llama):
    from optim_hunter.analysis import ablation

    tokens = llama.to_tokens("(2, 7)\n(6, ")[0]
    first = decomposition.decompose(llama, tokens)
    assert decomposition.decompose(llama, tokens) is first  # remembered
    with ablation.mlps_zeroed(llama, [0]):
        ablated = decomposition.decompose(llama, tokens)
        assert ablated is not first and float(ablated.mlps[0].abs().max()) == 0.0
    with torch.no_grad():
        llama.W_U[:, 3] += 1.0  # an in-place weight edit
    edited = decomposition.decompose(llama, tokens)
    assert edited is not first
    assert not torch.allclose(edited.last_logits[3], first.last_logits[3])


def test_layer_readouts_equal_separate_unshared_passes(llama):
    import numpy as np
    import pandas as pd

    from optim_hunter.chapters.inside_regressor import regression

    tok = llama.tokenizer
    texts = ["(1, 5)\n(2, 7)\n(4,", "(3, 1)\n(0, 2)\n(5,"]
    answers = pd.DataFrame({"a": [12.5, 3.0], "b": [13.0, np.nan], "c": [12.5, 4.0]})
    stages, table = regression.layer_readouts(llama, tok, texts, answers, [("a", "b"), ("c", "a")], 1)
    assert stages.shape == (2, llama.cfg.n_layers + 1, llama.cfg.d_model)
    # row 0: a vs b, and c vs a (same answer: no rows); row 1: b missing, c vs a
    assert sorted(set(zip(table["prompt"], table["pair"]))) == [(0, "a vs b"), (1, "c vs a")]
    names = [f"blocks.{l}.hook_resid_pre" for l in range(llama.cfg.n_layers)]
    names.append(f"blocks.{llama.cfg.n_layers - 1}.hook_resid_post")
    for i, text in enumerate(texts):
        _, cache = llama.run_with_cache(torch.tensor([tok(text)["input_ids"]]), names_filter=lambda n: n in names)
        expected = torch.stack([cache[n][0, -1] for n in names]).numpy()
        np.testing.assert_allclose(stages[i], expected, atol=1e-5, rtol=1e-4)
    decomposition._RESULTS.clear()  # the reference is a fresh full pass, not a remembered one
    for (i, pair), (a, b) in zip([(0, "a vs b"), (1, "c vs a")], [(12.5, 13.0), (4.0, 3.0)]):
        contrast = regression.answer_contrasts(tok, [texts[i]], [a], [b], 1)[0]
        expected, _ = attribution.by_layer(llama, contrast)
        got = table[(table.prompt == i) & (table.pair == pair)].sort_values("stage")["value"].to_numpy()
        assert got == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="no column"):
        regression.layer_readouts(llama, tok, texts, answers, [("a", "zz")], 1)

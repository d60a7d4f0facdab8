"""Every analysis entry point runs unchanged on bridged Hugging Face models (tiny, offline)."""

import numpy as np
import pytest
import torch

from optim_hunter import zoo
from optim_hunter.analysis import ablation, attribution, heads, patching, probes
from optim_hunter.chapters.inside_regressor import regression
from optim_hunter.chapters.linear_fn import linear_fn
from optim_hunter.data import datasets, positions, prompts


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def hf(request, tiny_hf_models):
    return zoo.load(f"hf:{tiny_hf_models[request.param]}")


def test_regression_analyses(hf):
    tok = hf.tokenizer
    split = datasets.make_split("linear_1_1", 2, 0, round_to=1)
    text = prompts.format_prompt(split.x_train, split.y_train, split.x_query[0], 1)
    tokens = torch.tensor(tok(text)["input_ids"])
    layout = positions.token_roles(tok, text)
    roles = regression.attention_by_role(hf, [tokens], [layout])
    np.testing.assert_allclose(roles.groupby(["layer", "head"])["mass"].sum(), 1.0, atol=1e-4)
    near = regression.nearness(split.x_train, split.x_query[0])
    assert regression.knn_alignment(hf, [tokens], [layout], [near]).shape == (hf.cfg.n_layers, hf.cfg.n_heads)
    contrast = attribution.make_contrast(tok, text, " 1.5", " 7.5")
    values, labels = attribution.by_layer(hf, contrast)
    assert len(values) == hf.cfg.n_layers + 1 and np.isfinite(values).all()
    components, _ = attribution.by_component(hf, contrast)
    assert components.sum() == pytest.approx(values[-1], abs=1e-3)
    assert len(regression.neuron_attribution(hf, contrast, top=5)) == 5
    stages = probes.residuals(hf, [tokens, tokens])
    assert stages.shape == (2, hf.cfg.n_layers + 1, hf.cfg.d_model)


def test_linear_fn_analyses(hf):
    tok = hf.tokenizer
    problems = linear_fn.problems(2, 3, x_max=9)
    curve = linear_fn.bayesian_curve(hf, tok, problems, 3)
    assert curve["p_correct"].between(0, 1).all()
    source, target = (linear_fn.encode(tok, problems[0].text(k)) for k in (None, 0))
    metric = lambda logits: float(logits[0, -1, 0])  # noqa: E731
    grid = patching.residual_patching(hf, source, target, metric)
    assert grid.shape == (hf.cfg.n_layers + 1, len(target))
    with torch.no_grad():  # the last stage at the last position carries the source's own output
        assert grid[-1, -1] == pytest.approx(metric(hf(source[None])), abs=1e-4)
        assert grid[-1, 0] == pytest.approx(metric(hf(target[None])), abs=1e-4)  # too late to matter
    with ablation.ablated(hf, linear_fn.layer_heads(hf, [0])):
        activity = linear_fn.head_activity(hf, source, np.arange(1, 4), 5)
    assert activity.shape == (hf.cfg.n_layers, hf.cfg.n_heads, 2)


def test_head_scores(hf):
    tokens = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    prev = heads.previous_token(hf, tokens)
    assert prev.shape == (hf.cfg.n_layers, hf.cfg.n_heads)
    _, cache = hf.run_with_cache(tokens)  # by hand: attention from q to q - 1, averaged
    for l in range(hf.cfg.n_layers):
        pattern = cache[f"blocks.{l}.attn.hook_pattern"]
        expected = np.mean([pattern[:, :, q, q - 1].numpy() for q in range(1, 12)], axis=(0, 1))
        np.testing.assert_allclose(prev[l], expected, atol=1e-6)
    assert heads.prefix_matching(hf, length=6, repeats=2, batch=2).shape == prev.shape


def test_head_scores_of_a_bfloat16_model_are_those_of_its_float32_copy(tiny_hf_models):
    """A language model held in bfloat16 (the default on a GPU) is scored like any other: float32
    numbers on the CPU, equal to its float32 copy's to bfloat16's precision."""
    from optim_hunter.zoo import hf as hf_models

    folder = str(tiny_hf_models["llama"])
    full, half = (hf_models.load(folder, device="cpu", dtype=dtype) for dtype in (torch.float32, torch.bfloat16))
    tokens = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    for score in (lambda m: heads.prefix_matching(m, length=6, repeats=2, batch=2),
                  lambda m: heads.previous_token(m, tokens)):
        ours, reference = score(half), score(full)
        assert ours.dtype == np.float32 and ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, atol=2e-2)
        assert not np.array_equal(ours, reference)  # it did run in bfloat16

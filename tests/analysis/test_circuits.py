"""Folded OV/QK circuits and direct attribution against the model's own cached activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim_hunter.analysis import circuits
from optim_hunter.zoo import affine


def random_model(seed: int = 0, **changes):
    """A tiny vector-input bridge with every weight, bias and LayerNorm parameter random."""
    cfg = affine.tiny_config()
    native = affine.build_model(cfg.arch, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in native.named_parameters():
            if name.endswith("ln1.weight") or name.endswith("ln2.weight") or name.startswith("ln_out.weight"):
                p.copy_(1 + 0.5 * torch.rand(p.shape, generator=gen))
            else:
                p.copy_(0.4 * torch.randn(p.shape, generator=gen))
            if name in changes:
                p.copy_(changes[name](p))
    return affine.hooked(native.state_dict(), cfg), cfg



@pytest.fixture(scope="module")
def model_and_batch():
    model, cfg = random_model()
    x, y = affine.make_batch(cfg, 3)
    with torch.no_grad():
        out, cache = model.run_with_cache(x)
    return model, cfg, x, y, out, cache


def test_normalize_is_layer_norm_without_affine():
    x = torch.randn(5, 7, 16)
    torch.testing.assert_close(circuits.normalize(x).float(), torch.nn.functional.layer_norm(x, (16,)), atol=1e-5, rtol=1e-5)


def test_head_outputs_sum_to_attn_out_with_the_folded_biases(model_and_batch):
    model, _, _, _, _, cache = model_and_batch
    for layer in range(model.cfg.n_layers):
        heads = circuits.head_outputs(model, cache, layer).sum(2)
        bias = torch.einsum("he,hed->d", circuits.value_bias(model, layer), model.W_O[layer].double())
        total = heads + bias + model.b_O[layer].double()
        torch.testing.assert_close(total, cache[f"blocks.{layer}.hook_attn_out"].double(), atol=1e-5, rtol=1e-5)


def test_folded_ov_is_what_a_head_writes_when_it_attends_to_itself_only(model_and_batch):
    model, _, x, _, _, cache = model_and_batch
    first = x[:, :1]  # position 0 can only attend to itself
    with torch.no_grad():
        _, c1 = model.run_with_cache(first)
    resid = c1["blocks.0.hook_resid_pre"][:, 0]
    expected = circuits.head_outputs(model, c1, 0)[:, 0]  # [batch, head, d_model]
    ours = torch.einsum("bd,hde->bhe", circuits.normalize(resid, model.cfg.eps), circuits.folded_ov(model, 0))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_folded_qk_gives_the_attention_scores_when_biases_are_zero():
    zero = lambda p: torch.zeros_like(p)  # noqa: E731
    model, cfg = random_model(
        1, **{"layers.0.ln1.bias": zero, "layers.0.attn.q.bias": zero, "layers.0.attn.k.bias": zero}
    )
    x, _ = affine.make_batch(cfg, 5)
    with torch.no_grad():
        _, cache = model.run_with_cache(x)
    xh = circuits.normalize(cache["blocks.0.hook_resid_pre"], model.cfg.eps)
    scores = torch.einsum("bqd,hde,bke->bhqk", xh, circuits.folded_qk(model, 0), xh) / model.cfg.d_head**0.5
    mask = torch.tril(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool))
    qk = torch.einsum("bqhe,bkhe->bhqk", cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_k"])
    torch.testing.assert_close(scores[..., mask], qk.double()[..., mask] / model.cfg.d_head**0.5, atol=1e-4, rtol=1e-4)
    pattern = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
    torch.testing.assert_close(pattern, cache["blocks.0.attn.hook_pattern"].double(), atol=1e-5, rtol=1e-5)


def test_direct_attribution_of_all_components_sums_to_the_output(model_and_batch):
    model, _, x, y, out, cache = model_and_batch
    n_layers = model.cfg.n_layers
    parts = [cache["blocks.0.hook_resid_pre"].double()]
    for layer in range(n_layers):
        parts += list(circuits.head_outputs(model, cache, layer).unbind(2))
        bias = torch.einsum("he,hed->d", circuits.value_bias(model, layer), model.W_O[layer].double())
        parts.append((bias + model.b_O[layer].double()).expand_as(parts[0]))
        parts.append(cache[f"blocks.{layer}.hook_mlp_out"].double())
    stacked = torch.stack(parts, 2)
    total = circuits.direct_attribution(model, cache, stacked, y).sum(-1)
    _, b_final = circuits.layer_norm(model.ln_final)
    expected = ((out.double() - b_final @ model.W_U.double()) * y.double()).sum(-1)
    torch.testing.assert_close(total, expected, atol=1e-5, rtol=1e-5)
    # one component alone: the final LayerNorm's centring, its scale and W_U by hand
    c = parts[3]
    w_f, _ = circuits.layer_norm(model.ln_final)
    by_hand = (((c - c.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"].double()) * w_f) @ model.W_U.double()
    torch.testing.assert_close(circuits.direct_attribution(model, cache, c, y), (by_hand * y).sum(-1))


def test_eigenvalue_score_on_known_matrices():
    assert circuits.eigenvalue_score(torch.eye(4)) == pytest.approx(1)
    assert circuits.eigenvalue_score(-2 * torch.eye(3)) == pytest.approx(-1)
    assert circuits.eigenvalue_score(torch.diag(torch.tensor([1.0, 2.0, -3.0]))) == pytest.approx(0)
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    assert circuits.eigenvalue_score(rotation) == pytest.approx(0, abs=1e-12)
    batch = circuits.eigenvalue_score(torch.stack([torch.eye(2), -torch.eye(2)]))
    np.testing.assert_allclose(batch, [1, -1])


def test_full_ov_scores_equal_the_eigenvalues_of_the_vocab_space_circuit(model_and_batch):
    model = model_and_batch[0]
    ours = circuits.full_ov_scores(model)
    W_E = model.W_E.double()
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            full = W_E.detach() @ circuits.folded_ov(model, layer)[head] @ circuits.folded_unembed(model)  # [vocab, vocab]
            eig = np.linalg.eigvals(full.numpy())
            assert ours[layer, head] == pytest.approx(eig.real.sum() / np.abs(eig).sum(), abs=1e-6)


def test_residual_ov_scores(model_and_batch):
    model = model_and_batch[0]
    ours = circuits.ov_scores(model)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            ov = (model.W_V[layer, head] @ model.W_O[layer, head]).detach().double()
            w, _ = circuits.ln1(model, layer)
            folded = (torch.eye(len(w), dtype=torch.float64) - 1 / len(w)) @ torch.diag(w) @ ov
            eig = np.linalg.eigvals(folded.numpy())
            assert ours[layer, head] == pytest.approx(eig.real.sum() / np.abs(eig).sum(), abs=1e-6)


def test_pinv_identity_is_a_random_projection_of_rank_d_head():
    Q, K = circuits.pinv_identity(12, 5, seed=3)
    P = Q @ K.T
    torch.testing.assert_close(P, P.T)
    torch.testing.assert_close(P @ P, P)
    assert int(torch.linalg.matrix_rank(P)) == 5
    assert not torch.equal(Q, circuits.pinv_identity(12, 5, seed=4)[0])


def test_share_outside_a_row_space():
    basis = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])  # spans e0, e1
    vectors = torch.tensor([[3.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], [1.0, 0.0, 1.0, 0.0]])
    np.testing.assert_allclose(circuits.share_outside(vectors, basis), [0.0, 1.0, np.sqrt(0.5)], atol=1e-12)
    gen = torch.Generator().manual_seed(0)
    A, v = torch.randn(3, 9, generator=gen), torch.randn(6, 9, generator=gen)
    coef = torch.linalg.lstsq(A.T.double(), v.T.double()).solution
    rest = v.double() - (A.T.double() @ coef).T
    np.testing.assert_allclose(circuits.share_outside(v, A), (rest.norm(dim=1) / v.double().norm(dim=1)).numpy())

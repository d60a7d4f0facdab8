"""Head scores against TransformerLens's detector and explicit (token-space) computations."""

import types

import numpy as np
import pytest
import torch
from transformer_lens import head_detector

from optim_hunter.analysis import heads


def test_induction_targets_equal_transformer_lens_pattern():
    tokens = torch.randint(0, 7, (40,), generator=torch.Generator().manual_seed(0))
    ours = heads.induction_targets(tokens)
    theirs = head_detector.get_induction_head_detection_pattern(tokens[None])
    torch.testing.assert_close(ours, theirs)


def test_prefix_matching_equals_detect_head_mul_score():
    tokens = heads.repeated_random_tokens(30, length=6, repeats=3, batch=1, bos=0)
    logits = torch.randn(2, tokens.shape[1], tokens.shape[1], generator=torch.Generator().manual_seed(1))
    mask = torch.tril(torch.ones(tokens.shape[1], tokens.shape[1])).bool()
    pattern = torch.softmax(logits.masked_fill(~mask, -1e9), -1)
    ours = heads.prefix_matching_from_patterns(pattern[None], tokens)
    detection = head_detector.get_induction_head_detection_pattern(tokens)
    for h in range(2):
        theirs = head_detector.compute_head_attention_similarity_score(
            pattern[h], detection, exclude_bos=False, exclude_current_token=False, error_measure="mul")
        assert ours[h] == pytest.approx(theirs, abs=1e-6)


def test_repeated_tokens():
    tokens = heads.repeated_random_tokens(50, length=5, repeats=3, batch=2, bos=0, seed=3)
    assert tokens.shape == (2, 16) and (tokens[:, 0] == 0).all()
    assert torch.equal(tokens[:, 1:6], tokens[:, 6:11]) and len(tokens[0, 1:6].unique()) == 5
    with pytest.raises(ValueError, match="distinct"):
        heads.repeated_random_tokens(4, length=5)


def test_scores_run_on_a_bridge(tiny_bridge):
    n_layers, n_heads = tiny_bridge.cfg.n_layers, tiny_bridge.cfg.n_heads
    pm = heads.prefix_matching(tiny_bridge, length=8, repeats=2, batch=2)
    prev = heads.previous_token(tiny_bridge, torch.randint(0, 40, (2, 12)))
    copy = heads.copying(tiny_bridge, length=8, batch=2)
    for score in (pm, prev, copy):
        assert score.shape == (n_layers, n_heads) and np.isfinite(score).all()
    assert ((pm >= 0) & (pm <= 1)).all() and ((copy >= -1) & (copy <= 1)).all()
    kc = heads.k_composition_trace(tiny_bridge, prev)
    assert np.isnan(kc[0]).all() and np.isfinite(kc[1:]).all()


def fake_model(W_E, W_Q, W_K, W_V, W_O, W_U):
    n_layers, n_heads = W_Q.shape[:2]
    cfg = types.SimpleNamespace(n_layers=n_layers, n_heads=n_heads, d_vocab=W_E.shape[0])
    return types.SimpleNamespace(cfg=cfg, W_E=W_E, W_Q=W_Q, W_K=W_K, W_V=W_V, W_O=W_O, W_U=W_U)


def test_weight_scores_against_token_space_matrices():
    g = torch.Generator().manual_seed(0)
    vocab, d, dh = 9, 5, 3
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    m = fake_model(r(vocab, d), r(2, 2, d, dh), r(2, 2, d, dh), r(2, 2, d, dh), r(2, 2, dh, d), r(d, vocab))
    prev = np.array([[0.9, 0.1], [0.0, 0.0]])
    raw = heads.k_composition_trace(m, prev, normalize=False)
    scaled = heads.k_composition_trace(m, prev)
    ov = heads.ov_eigenvalue_score(m)
    for h in range(2):
        M = sum(prev[0, k] * m.W_V[0, k] @ m.W_O[0, k] for k in range(2))
        full = m.W_E @ m.W_Q[1, h] @ m.W_K[1, h].T @ M.T @ m.W_E.T  # [vocab, vocab]
        eig = np.linalg.eigvals(full.numpy())
        assert raw[1, h] == pytest.approx(np.trace(full.numpy()), rel=1e-8)
        assert scaled[1, h] == pytest.approx(eig.real.sum() / np.abs(eig).sum(), rel=1e-6)
        circuit = (m.W_E @ m.W_V[1, h] @ m.W_O[1, h] @ m.W_U).numpy()
        eig = np.linalg.eigvals(circuit)
        assert ov[1, h] == pytest.approx(eig.real.sum() / np.abs(eig).sum(), rel=1e-6)


def test_ov_score_extremes():
    eye = torch.eye(4, dtype=torch.float64)
    copy = fake_model(eye, eye[None, None], eye[None, None], eye[None, None], eye[None, None], eye)
    anti = fake_model(eye, eye[None, None], eye[None, None], eye[None, None], -eye[None, None], eye)
    assert heads.ov_eigenvalue_score(copy)[0, 0] == pytest.approx(1.0)
    assert heads.ov_eigenvalue_score(anti)[0, 0] == pytest.approx(-1.0)


class CopyingStub:
    """One head whose output is exactly the one-hot of the previous token (or its negation)."""

    def __init__(self, vocab, sign):
        self.cfg = types.SimpleNamespace(n_layers=1, n_heads=1, d_vocab=vocab)
        self.W_O = sign * torch.eye(vocab)[None, None]
        self.W_U = torch.eye(vocab)
        self.sign = sign

    def run_with_cache(self, tokens, names_filter=None):
        b, pos = tokens.shape
        pattern = torch.zeros(b, 1, pos, pos)
        pattern[:, 0, 0, 0] = 1
        idx = torch.arange(1, pos)
        pattern[:, 0, idx, idx - 1] = 1
        onehot = torch.nn.functional.one_hot(tokens, self.cfg.d_vocab).float()
        z = torch.einsum("bqk,bkv->bqv", pattern[:, 0], onehot)[:, :, None]
        return None, {"blocks.0.attn.hook_z": z, "blocks.0.attn.hook_pattern": pattern}


def test_copying_extremes():
    assert heads.copying(CopyingStub(40, 1.0), length=10, batch=3) == pytest.approx(1.0, abs=1e-6)
    assert heads.copying(CopyingStub(40, -1.0), length=10, batch=3) == pytest.approx(-1.0, abs=1e-6)

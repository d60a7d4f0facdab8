"""Attention-head scores from the induction-heads study (Olsson et al. 2022, appendix), plus the
OV eigenvalue score, all computed from hook names and weight properties.

  prefix matching   on [BOS] + a random sequence repeated, attention from each token to the tokens
                    that followed its earlier occurrences (what induction would predict next)
  copying           whether the head's direct effect raises the logits of the tokens it attends to:
                    per position, a = raise of the attended tokens (attention-weighted),
                    b = raise of every token of the sample, ratio a / (a + b) in [0, 0.5], mapped
                    to [-1, 1] (the appendix's "0 to 0.5, scaled into -1 to 1")
  previous token    mean attention from token i to token i - 1 on training-distribution data
  K-composition     trace of W_E W_Q^h W_K^h^T (sum_k s_k W_OV^k)^T W_E^T, the pure K-composition
  QK trace          term with earlier heads k weighted by their previous-token scores s_k
  OV eigenvalues    sum(lambda) / sum(|lambda|) of W_E W_OV W_U: +1 copying, -1 anti-copying

Scores are arrays [layer, head]. LayerNorm is ignored in the weight-based scores (exact for the
book's attention-only models without it; an approximation elsewhere).
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter.core import devices, hooks
from optim_hunter.core.hooks import HookedModel


def repeated_random_tokens(
    d_vocab: int, *, length: int = 25, repeats: int = 4, batch: int = 10, bos: int | None = None,
    exclude: tuple[int, ...] = (), seed: int = 0,
) -> Int[Tensor, "batch pos"]:
    """`batch` sequences of `length` distinct random tokens repeated `repeats` times, optionally
    after a BOS token; `exclude` lists tokens never drawn (e.g. BOS itself)."""
    allowed = torch.tensor([t for t in range(d_vocab) if t not in set(exclude) and t != bos])
    return repeated_draws(allowed, length=length, repeats=repeats, batch=batch, bos=bos, seed=seed)


def repeated_draws(
    allowed: Int[Tensor, " n"], *, length: int, repeats: int, batch: int, bos: int | None, seed: int = 0
) -> Int[Tensor, "batch pos"]:
    """`batch` rows of `length` distinct tokens drawn from `allowed`, repeated `repeats` times,
    after `bos` when given."""
    if len(allowed) < length:
        raise ValueError(f"need {length} distinct tokens, only {len(allowed)} allowed")
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        seq = allowed[torch.randperm(len(allowed), generator=gen)[:length]].repeat(repeats)
        rows.append(seq if bos is None else torch.cat([torch.tensor([bos]), seq]))
    return torch.stack(rows)


def induction_targets(tokens: Int[Tensor, " pos"]) -> Float[Tensor, "query_pos key_pos"]:
    """1 at (i, j) when token j-1 equals token i and j-1 < i: the positions induction points to."""
    same = (tokens[:, None] == tokens[None, :]).float()
    same = torch.tril(same, diagonal=-1)  # earlier occurrences only
    target = torch.zeros_like(same)
    target[:, 1:] = same[:, :-1]  # shift to the token after each earlier occurrence
    return torch.tril(target)


def _patterns(model: HookedModel, tokens: Tensor) -> Float[Tensor, "layer batch head query_pos key_pos"]:
    """Every layer's attention pattern, in float32 on the CPU whatever the model's device and dtype
    (a language model on a GPU in bfloat16 gives the scores a CPU run gives, to its precision)."""
    names = {hooks.pattern(l) for l in range(model.cfg.n_layers)}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens.to(devices.of(model)), names_filter=lambda n: n in names)
    return torch.stack([cache[hooks.pattern(l)].float().cpu() for l in range(model.cfg.n_layers)])


def prefix_matching_from_patterns(
    patterns: Float[Tensor, "batch head query_pos key_pos"], tokens: Int[Tensor, "batch pos"], *, from_position: int = 0
) -> Float[np.ndarray, " head"]:
    """Attention on induction targets over all attention, from queries at `from_position` on."""
    scores = []
    for b in range(tokens.shape[0]):
        target = induction_targets(tokens[b])[from_position:]
        pattern = patterns[b][:, from_position:]
        scores.append(((pattern * target).sum((-1, -2)) / pattern.sum((-1, -2))).numpy())
    return np.mean(scores, axis=0)


def prefix_matching(
    model: HookedModel, *, length: int = 25, repeats: int = 4, batch: int = 10, bos: int | None = 0, seed: int = 0
) -> Float[np.ndarray, "layer head"]:
    """Prefix-matching score per head, measured on queries in the repeats (not the first copy)."""
    tokens = repeated_random_tokens(
        model.cfg.d_vocab, length=length, repeats=repeats, batch=batch, bos=bos, seed=seed
    )
    patterns = _patterns(model, tokens)
    start = length + (0 if bos is None else 1)
    return np.stack([prefix_matching_from_patterns(p, tokens, from_position=start) for p in patterns])


def previous_token(
    model: HookedModel, tokens: Int[Tensor, "batch pos"] | Float[Tensor, "batch pos d_vocab"]
) -> Float[np.ndarray, "layer head"]:
    """Mean attention from each token to the one before it."""
    patterns = _patterns(model, tokens)  # [layer, batch, head, q, k]
    diagonal = torch.diagonal(patterns, offset=-1, dim1=-2, dim2=-1)  # [layer, batch, head, q-1]
    return diagonal.mean((1, 3)).numpy()


@torch.no_grad()
def copying(
    model: HookedModel, *, length: int = 25, batch: int = 10, bos: int | None = 0, seed: int = 0
) -> Float[np.ndarray, "layer head"]:
    """Copying score per head on random sequences (direct path through the unembedding)."""
    tokens = repeated_random_tokens(model.cfg.d_vocab, length=length, repeats=1, batch=batch,
                                    bos=bos, seed=seed)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = {name for l in range(n_layers) for name in (hooks.z(l), hooks.pattern(l))}
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    W_O, W_U = model.W_O, model.W_U
    out = np.zeros((n_layers, n_heads))
    for l in range(n_layers):
        z = cache[hooks.z(l)]  # [batch, pos, head, d_head]
        pattern = cache[hooks.pattern(l)]  # [batch, head, q, k]
        for h in range(n_heads):
            logits = (z[:, :, h] @ W_O[l, h]) @ W_U  # [batch, pos, vocab]
            raised = torch.relu(logits - logits.mean(-1, keepdim=True))
            ratios = []
            for b in range(tokens.shape[0]):
                sample = tokens[b].unique()
                attended = raised[b][:, tokens[b]]  # [q, k]: raise of the token at each key
                a = (pattern[b, h] * attended).sum(-1)
                total = raised[b][:, sample].sum(-1)
                ratios.append((a / (a + total).clamp_min(1e-12)).mean())
            out[l, h] = float(4 * torch.stack(ratios).mean() - 1)
    return out


def ov_eigenvalue_score(model: HookedModel) -> Float[np.ndarray, "layer head"]:
    """sum(lambda)/sum(|lambda|) of the full OV circuit W_E W_V W_O W_U (over token space).

    The nonzero eigenvalues of the [vocab, vocab] matrix W_E (W_V W_O W_U) are those of the
    [d_model, d_model] matrix (W_V W_O)(W_U W_E): computed there."""
    W_E, W_U = model.W_E.detach().double(), model.W_U.detach().double()
    W_V, W_O = model.W_V.detach().double(), model.W_O.detach().double()
    inner = W_U @ W_E  # [d_model, d_model]
    out = np.zeros(W_V.shape[:2])
    for l in range(W_V.shape[0]):
        for h in range(W_V.shape[1]):
            eig = torch.linalg.eigvals((W_V[l, h] @ W_O[l, h]) @ inner)
            out[l, h] = float(eig.real.sum() / eig.abs().sum())
    return out


def k_composition_trace(
    model: HookedModel, previous_token_scores: Float[np.ndarray, "layer head"], *, normalize: bool = True
) -> Float[np.ndarray, "layer head"]:
    """Trace of the previous-token K-composition QK term for heads in layer >= 1 (NaN in layer 0).

    W^h = W_E W_Q^h W_K^h^T M^T W_E^T with M = sum_k s_k W_V^k W_O^k over heads k in earlier layers.
    With `normalize`, the trace is divided by the sum of |eigenvalues| (a score in [-1, 1])."""
    W_E = model.W_E.detach().double()
    W_Q, W_K = model.W_Q.detach().double(), model.W_K.detach().double()
    W_V, W_O = model.W_V.detach().double(), model.W_O.detach().double()
    gram = W_E.T @ W_E  # the nonzero spectrum of W_E A W_E^T is that of A W_E^T W_E
    n_layers, n_heads = W_Q.shape[:2]
    scores = torch.as_tensor(previous_token_scores, dtype=torch.float64)
    out = np.full((n_layers, n_heads), np.nan)
    for l in range(1, n_layers):
        mix = torch.einsum("kh,khij->ij", scores[:l], W_V[:l] @ W_O[:l])  # sum_k s_k W_OV^k
        for h in range(n_heads):
            a = W_Q[l, h] @ W_K[l, h].T @ mix.T @ gram
            if normalize:
                eig = torch.linalg.eigvals(a)
                out[l, h] = float(eig.real.sum() / eig.abs().sum())
            else:
                out[l, h] = float(torch.trace(a))
    return out

"""What `pretrained_induction` measures in a pretrained language model, for any hooked model:

  head scores     prefix matching and copying of every head from ONE hooked run on [BOS] + 25
                  random tokens repeated 4 times (the seed's recipe): prefix matching and copying
                  on the queries of the repeats (the seed defines an induction head by both
                  properties on a repeated random sequence), and copying on BOS and the first
                  copy too (the appendix's evaluator on 25 unrepeated tokens: causal attention
                  makes the first copy exactly that sequence)
  copying         the same score as `heads.copying`, computed on the sample's tokens only (the
                  vocabulary mean of a linear map is the map of the mean), and, by default,
                  through the final norm's gain (and centring, for LayerNorm): the per-position
                  scale of the norm cancels in the ratio, its gain does not
  text losses     per-token losses on natural text through the fast forward, and the least-squares
                  line of the loss against log(index + 1) (per sequence too: a least-squares slope
                  is linear in the curve)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter.analysis import heads, kv_decoding
from optim_hunter.chapters.induction_heads.icl_metrics import token_losses
from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel
from optim_hunter.core.losses import next_token_losses

# --- head scores ----------------------------------------------------------------------------------


def final_norm_map(model: HookedModel) -> tuple[Float[Tensor, " d_model"], bool]:
    """The final norm's gain and whether it centres (LayerNorm) its input."""
    centre = str(getattr(model.cfg, "normalization_type", "") or "").upper().startswith("LN")
    ln = getattr(model, "ln_final", None)
    gain = getattr(ln, "w", None) if ln is not None else None
    if gain is None:
        gain = torch.ones(model.cfg.d_model)
    return gain.detach(), centre


@dataclasses.dataclass(frozen=True)
class RowUnembedding:
    """What the copying score needs of the unembedding for some rows of tokens: the column of
    each row's distinct tokens and the vocabulary-mean column (so no full logits are formed)."""

    mean: Float[Tensor, " d_model"]  # float64
    columns: tuple[Tensor, ...]  # per row [d_model, distinct] float64
    where: tuple[Tensor, ...]  # per row [pos]: index of each position's token among the distinct

    @classmethod
    def of(cls, W_U: Float[Tensor, "d_model d_vocab"], tokens: Int[Tensor, "batch pos"]) -> RowUnembedding:
        uniques = [row.unique(return_inverse=True) for row in tokens]
        return cls(mean=W_U.detach().mean(1, dtype=torch.float64),
                   columns=tuple(W_U[:, u].detach().double() for u, _ in uniques),
                   where=tuple(w for _, w in uniques))


@torch.no_grad()
def copying_ratios(
    z: Float[Tensor, "batch pos head d_head"], pattern: Float[Tensor, "batch head query_pos key_pos"],
    W_O: Float[Tensor, "head d_head d_model"], unembedding: RowUnembedding, *,
    gain: Float[Tensor, " d_model"] | None = None, centre: bool = False,
) -> Float[Tensor, "batch pos head"]:
    """Per query, a / (a + b): a = attention-weighted raise (ReLU of logit minus the vocabulary
    mean) of the attended tokens, b = raise of every distinct token of the row, both from the
    head's output alone. `gain` / `centre` apply the final norm (without its per-position scale,
    which cancels in the ratio) to the head's output first."""
    out = torch.einsum("bphd,hdm->bphm", z.double(), W_O.double())  # [batch, query, head, d_model]
    if centre:
        out = out - out.mean(-1, keepdim=True)
    if gain is not None:
        out = out * gain.double()
    mean = out @ unembedding.mean  # [batch, query, head]: vocabulary mean of the logits
    ratios = []
    for b in range(z.shape[0]):
        raised = torch.relu(out[b] @ unembedding.columns[b] - mean[b][..., None])  # [query, head, distinct]
        attended = raised[:, :, unembedding.where[b]]  # [query, head, key]: raise of the token at each key
        a = (pattern[b].double().transpose(0, 1) * attended).sum(-1)  # [query, head]
        ratios.append(a / (a + raised.sum(-1)).clamp_min(1e-12))
    return torch.stack(ratios)


def copying_from_cache(
    tokens: Int[Tensor, "batch pos"], z: Float[Tensor, "batch pos head d_head"],
    pattern: Float[Tensor, "batch head query_pos key_pos"], W_O: Float[Tensor, "head d_head d_model"],
    W_U: Float[Tensor, "d_model d_vocab"], *, gain: Float[Tensor, " d_model"] | None = None,
    centre: bool = False, from_position: int = 0,
) -> Float[np.ndarray, " head"]:
    """`heads.copying`'s score for one layer from its cached `hook_z` and `hook_pattern` over all
    positions of `tokens`: 4 mean(a / (a + b)) - 1 over queries from `from_position` on (see
    `copying_ratios`); only the row's tokens' logits are formed."""
    ratios = copying_ratios(z, pattern, W_O, RowUnembedding.of(W_U, tokens), gain=gain, centre=centre)
    return (4 * ratios[:, from_position:].mean((0, 1)) - 1).numpy()


@torch.no_grad()
def head_scores(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], *, length: int, bos: bool, final_norm: bool = True,
) -> dict[str, Float[np.ndarray, "layer head"]]:
    """Prefix matching and copying of every head, from one hooked run on repeated random `tokens`:
    `prefix_matching` and `copying` on the queries of the repeats (the definition: both properties
    on a repeated random sequence), `copying_first_copy` on BOS and the first copy (the appendix's
    evaluator: 25 random tokens, no repeat; causal attention keeps later keys out of it), and
    `repeat_losses` [batch, pos - 1], the per-token loss of the same run (index i predicts token
    i + 1)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = {name for l in range(n_layers) for name in (hooks.z(l), hooks.pattern(l))}
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    first = length + int(bos)  # positions [0, first) hold BOS and the first copy
    gain, centre = final_norm_map(model) if final_norm else (None, False)
    W_O = model.W_O.detach()  # a bridge property: stacked once
    unembedding = RowUnembedding.of(model.W_U, tokens)
    patterns = [cache[hooks.pattern(l)].float() for l in range(n_layers)]
    # every layer's heads side by side: the induction targets are built once per row
    prefix = heads.prefix_matching_from_patterns(torch.cat(patterns, 1), tokens, from_position=first)
    repeats, first_copy = [], []
    for l in range(n_layers):
        ratios = copying_ratios(cache[hooks.z(l)], patterns[l], W_O[l], unembedding,
                                gain=gain, centre=centre)
        repeats.append(4 * ratios[:, first:].mean((0, 1)) - 1)
        first_copy.append(4 * ratios[:, :first].mean((0, 1)) - 1)
    return {
        "prefix_matching": prefix.reshape(n_layers, n_heads),
        "copying": torch.stack(repeats).numpy(), "copying_first_copy": torch.stack(first_copy).numpy(),
        "repeat_losses": token_losses(logits, tokens),
    }


# --- in-context learning on text ------------------------------------------------------------------


@torch.no_grad()
def text_losses(model: HookedModel, tokens: Int[Tensor, "n pos"], *, chunk: int = 2) -> Float[np.ndarray, "n index"]:
    """Per-token losses [n, pos - 1] (index i predicts token i + 1), through the fast forward."""
    out = []
    for part in tokens.split(chunk):
        logits = kv_decoding.logits(model, part)
        out.append(next_token_losses(logits.float(), part).cpu().numpy())
    return np.concatenate(out)


def log_index_fit(loss_by_index: Float[np.ndarray, " index"], start: int) -> tuple[float, float]:
    """Least-squares line loss = a + b log(index + 1) over indices >= `start`: (a, b)."""
    y = np.asarray(loss_by_index, dtype=np.float64)[start:]
    x = np.log(np.arange(start, start + len(y)) + 1.0)
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def log_index_slopes(losses: Float[np.ndarray, "n index"], start: int) -> Float[np.ndarray, " n"]:
    """`log_index_fit`'s slope of each sequence's loss curve. A least-squares slope is linear in
    the curve, so their mean is the slope of the mean curve (what `claims.bootstrap` resamples)."""
    y = np.asarray(losses, dtype=np.float64)[:, start:]
    x = np.log(np.arange(start, start + y.shape[1]) + 1.0)
    return np.polyfit(x, y.T, 1)[0]

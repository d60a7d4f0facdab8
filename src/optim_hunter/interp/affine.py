"""Analyses of the affine-recurrence transformer (seed 001, Bhargav & Gu 2024).

Every function takes the hooked `VectorModel` of `optim_hunter.zoo.affine` (or anything with
its interface: `run_with_cache(vectors)`, `hooks`, the weight properties) and held-out
`Sequences` groups (`zoo.affine.held_out`: one group per length), and returns plain arrays or
tables; the chapter turns them into claims and figures. Weight-based quantities fold the
LayerNorms and value biases in (`interp.circuits`).

Positions: the model reads a_0 .. a_{L-1}; position m predicts a_{m+1}. "Scored" positions are
m >= 2 (the training loss), "queries" of attention statistics are positions >= 2 unless stated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from optim_hunter import hooks
from optim_hunter.interp import ablation, circuits, heads
from optim_hunter.zoo import affine as zoo_affine
from optim_hunter.zoo.affine import Sequences

LOSS_FROM = 2


def _patterns(model: Any, vectors: Tensor, layer: int) -> Float[Tensor, "batch head q k"]:
    name = hooks.pattern(layer)
    with torch.no_grad():
        _, cache = model.run_with_cache(vectors, names_filter=lambda n: n == name)
    return cache[name].double()


# --- the model's error ---------------------------------------------------------------------------


@torch.no_grad()
def mse(model: Any, groups: Sequence[Sequences], loss_from: int = LOSS_FROM) -> float:
    """Held-out MSE of a hooked model (hooks and edits in effect): mean over the groups (lengths)
    of the MSE over scored positions and coordinates, as the training loss."""
    return zoo_affine.held_out_mse(model, groups, loss_from)


@torch.no_grad()
def mse_by_position(model: Any, seqs: Sequences) -> Float[np.ndarray, " pos"]:
    """MSE at each position (over sequences and coordinates) of one group."""
    return ((model(seqs.inputs) - seqs.targets) ** 2).mean((0, 2)).double().numpy()


def loss_curve(meta: dict) -> pd.DataFrame:
    """Training loss (mean of every `window` steps) and held-out MSE over training, from the zoo's
    checkpoint metadata: long format for `plots.lines`."""
    losses = np.asarray(meta["losses"], dtype=float)
    window = max(1, len(losses) // 100)
    rows = [
        {"step": (i + 1) * window, "value": float(losses[i * window : (i + 1) * window].mean()),
         "series": f"training loss (mean of {window} steps)"}
        for i in range(len(losses) // window)
    ]
    rows += [{"step": r["step"], "value": r["mse"], "series": "held-out MSE"} for r in meta["history"] if "mse" in r]
    return pd.DataFrame(rows)


# --- attention patterns --------------------------------------------------------------------------


def previous_token_scores(model: Any, groups: Sequence[Sequences]) -> Float[np.ndarray, "layer head"]:
    """Mean attention from each position to the one before it (`heads.previous_token`), averaged
    over groups weighted by their number of (sequence, query) pairs."""
    scores, weights = [], []
    for g in groups:
        L = g.inputs.shape[1]
        if L < 2:
            continue
        scores.append(heads.previous_token(model, g.inputs))
        weights.append(len(g) * (L - 1))
    return np.average(np.stack(scores), axis=0, weights=weights)


def attention_to_position(
    model: Any, groups: Sequence[Sequences], layer: int, *, position: int = 1, from_position: int = 2
) -> Float[np.ndarray, " head"]:
    """Mean attention paid to `position` by queries at `from_position` onwards."""
    total, count = 0.0, 0
    for g in groups:
        if g.inputs.shape[1] <= from_position:
            continue
        pattern = _patterns(model, g.inputs, layer)  # [batch, head, q, k]
        part = pattern[:, :, from_position:, position]
        total = total + part.sum((0, 2))
        count += part.shape[0] * part.shape[2]
    return (total / count).numpy()


def same_parity_share(
    model: Any, groups: Sequence[Sequences], layer: int, *, from_position: int = 2
) -> pd.DataFrame:
    """Attention on keys at an even distance (q - k even, the key itself included) for queries at
    `from_position` onwards, per head, separately for alternating (c < 0) and monotone (c > 0)
    recurrences: a checkerboard pattern puts nearly all attention on even distances. `uniform` is
    the share uniform causal attention would give."""
    rows = []
    for g in groups:
        L = g.inputs.shape[1]
        if L <= from_position:
            continue
        pattern = _patterns(model, g.inputs, layer)[:, :, from_position:]  # [b, h, q, k]
        q = torch.arange(from_position, L)[:, None]
        k = torch.arange(L)[None, :]
        even = (((q - k) % 2 == 0) & (k <= q)).double()
        share = (pattern * even).sum(-1)  # [b, h, q]
        for b in range(share.shape[0]):
            kind = "alternating (c < 0)" if g.c[b] < 0 else "monotone (c > 0)"
            for h in range(share.shape[1]):
                for i in range(share.shape[2]):
                    rows.append((kind, h, float(share[b, h, i]), float(even[i].sum() / (i + from_position + 1))))
    table = pd.DataFrame(rows, columns=["kind", "head", "share", "uniform"])
    return table.groupby(["kind", "head"], as_index=False)[["share", "uniform"]].mean()


def example_patterns(model: Any, seqs: Sequences, index: int, layer: int) -> Float[np.ndarray, "head q k"]:
    return _patterns(model, seqs.inputs[index : index + 1], layer)[0].numpy()


def position_labels(length: int) -> list[str]:
    return [f"a{n}" for n in range(length)]


# --- direct attribution --------------------------------------------------------------------------


@torch.no_grad()
def head_attribution(
    model: Any, groups: Sequence[Sequences], *, target: str = "next", loss_from: int = LOSS_FROM
) -> Float[np.ndarray, "layer head"]:
    """Mean direct attribution of every head (value biases and LayerNorms folded) at the scored
    positions m: <final_LN(head output) W_U, t_m>, with t_m = a_{m+1} (`target="next"`) or
    a_{m+1} - a_m (`"step"`). Pooled over all (sequence, position) pairs."""
    n_layers = model.cfg.n_layers
    total, count = 0.0, 0
    names = {hooks.z(l) for l in range(n_layers)} | {"ln_final.hook_scale"}
    for g in groups:
        if g.inputs.shape[1] <= loss_from:
            continue
        _, cache = model.run_with_cache(g.inputs, names_filter=lambda n: n in names)
        direction = g.targets if target == "next" else g.targets - g.inputs
        if target not in ("next", "step"):
            raise ValueError(f"target must be 'next' or 'step', got {target!r}")
        outs = torch.stack([circuits.head_outputs(model, cache, l) for l in range(n_layers)], 2)  # [b,p,l,h,d]
        dla = circuits.direct_attribution(model, cache, outs, direction)[:, loss_from:]  # [b, p, l, h]
        total = total + dla.sum((0, 1))
        count += dla.shape[0] * dla.shape[1]
    return (total / count).numpy()


@torch.no_grad()
def mlp_attribution_by_position(model: Any, seqs: Sequences) -> Float[np.ndarray, "layer pos"]:
    """Mean direct attribution of each MLP's output to a_{m+1} at every position m of one group."""
    n_layers = model.cfg.n_layers
    names = {hooks.mlp_out(l) for l in range(n_layers)} | {"ln_final.hook_scale"}
    _, cache = model.run_with_cache(seqs.inputs, names_filter=lambda n: n in names)
    outs = torch.stack([cache[hooks.mlp_out(l)] for l in range(n_layers)], 2)  # [b, p, l, d]
    return circuits.direct_attribution(model, cache, outs, seqs.targets).mean(0).T.numpy()


# --- layer 0's OV circuit ------------------------------------------------------------------------


def linear_fit(x: Float[np.ndarray, "n k"], y: Float[np.ndarray, "n k"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the least-squares line y = slope x + intercept over the k points (x_j, y_j):
    (slope, intercept, R^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    slope = (xc * yc).sum(1) / (xc**2).sum(1)
    intercept = y.mean(1) - slope * x.mean(1)
    residual = yc - slope[:, None] * xc
    r2 = 1 - (residual**2).sum(1) / (yc**2).sum(1)
    return slope, intercept, r2


@torch.no_grad()
def residual_vectors(model: Any, groups: Sequence[Sequences], layer: int = 0) -> Float[Tensor, "n d_model"]:
    """Every position's residual stream entering `layer` (`blocks.{layer}.hook_resid_pre`)."""
    name = hooks.resid_pre(layer)
    rows = []
    for g in groups:
        _, cache = model.run_with_cache(g.inputs, names_filter=lambda n: n == name)
        rows.append(cache[name].reshape(-1, cache[name].shape[-1]))
    return torch.cat(rows).double()


def ov_images(model: Any, vectors: Float[Tensor, "n d_model"], layer: int = 0, heads_: Sequence[int] | None = None,
              eps: float | None = None) -> Float[Tensor, "n d_model"]:
    """What the layer's heads together (or `heads_`) would write if each attended only to x:
    normalize(x) (sum of folded OV), value biases left out."""
    ov = circuits.folded_ov(model, layer)
    ov = ov.sum(0) if heads_ is None else ov[list(heads_)].sum(0)
    eps = model.cfg.eps if eps is None else eps
    return circuits.normalize(vectors, eps) @ ov


@dataclasses.dataclass(frozen=True)
class OVFit:
    slope: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray

    def summary(self) -> dict[str, float]:
        return {
            "r2_mean": float(self.r2.mean()),
            "slope_median": float(np.median(self.slope)),
            "slope_p10": float(np.quantile(self.slope, 0.1)),
            "slope_p90": float(np.quantile(self.slope, 0.9)),
            "intercept_abs_mean": float(np.abs(self.intercept).mean()),
        }


def ov_fit(model: Any, vectors: Float[Tensor, "n d_model"], layer: int = 0) -> OVFit:
    """Per vector x, the line through the d_model points (x_d, (OV x)_d) (the seed's Figure 8)."""
    images = ov_images(model, vectors, layer)
    return OVFit(*linear_fit(vectors.numpy(), images.numpy()))


@torch.no_grad()
def ov_readout_fit(model: Any, groups: Sequence[Sequences], layer: int = 0) -> OVFit:
    """The same line fit in the vector space: per position, (a_d, (OV x W_U)_d) over the d_vector
    coordinates, a the input vector there, x the residual stream entering `layer` and the OV image
    read out through the folded unembedding (without the final LayerNorm's scale, so only R^2 and
    the sign of the slope are meaningful)."""
    vectors = residual_vectors(model, groups, layer)
    inputs = torch.cat([g.inputs.reshape(-1, g.inputs.shape[-1]) for g in groups]).double()
    read = ov_images(model, vectors, layer) @ circuits.folded_unembed(model)
    return OVFit(*linear_fit(inputs.numpy(), read.numpy()))


def random_like(vectors: Float[Tensor, "n d_model"], *, seed: int = 0) -> Float[Tensor, "n d_model"]:
    """Gaussian vectors with the norms of `vectors` (the fit's R^2 does not depend on the norm)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(vectors.shape, generator=gen, dtype=torch.float64)
    return noise / noise.norm(dim=-1, keepdim=True) * vectors.norm(dim=-1, keepdim=True)


def share_outside_embedding(model: Any, vectors: Float[Tensor, "n d_model"], layer: int = 0) -> Float[np.ndarray, " n"]:
    """For each x, the share of |OV x| outside the row space of W_E (the seed's section 4.4)."""
    return circuits.share_outside(ov_images(model, vectors, layer), model.W_E.detach())


def random_direction_share(d_model: int, rank: int) -> float:
    """E|v - P v| / |v| ~ sqrt(1 - rank/d_model) for a uniformly random direction v (the mean of
    the exact distribution, by Monte Carlo)."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(20_000, d_model, generator=gen, dtype=torch.float64)
    return float((v[:, rank:].norm(dim=-1) / v.norm(dim=-1)).mean())


def ov_scatter_data(model: Any, vector: Float[Tensor, " d_model"], layer: int = 0) -> pd.DataFrame:
    image = ov_images(model, vector[None], layer)[0]
    return pd.DataFrame({"x_d": vector.numpy(), "OV_x_d": image.numpy()})


# --- ablation and the QK intervention ------------------------------------------------------------


@torch.no_grad()
def mean_z(model: Any, groups: Sequence[Sequences], layer: int) -> Float[Tensor, "head d_head"]:
    """Mean of `blocks.{layer}.attn.hook_z` over every position of every sequence."""
    name = hooks.z(layer)
    total, count = 0.0, 0
    for g in groups:
        _, cache = model.run_with_cache(g.inputs, names_filter=lambda n: n == name)
        z = cache[name].double()
        total = total + z.sum((0, 1))
        count += z.shape[0] * z.shape[1]
    return (total / count).float()


def mean_ablated_mse(
    model: Any, groups: Sequence[Sequences], population: Sequence[Sequences], layer: int,
    heads_: Sequence[int] | None = None,
) -> float:
    """MSE on `groups` with the heads of `layer` (all, or `heads_`) replaced by their mean output
    over `population` (`ablation.ablated`, mean mode, on hook_z)."""
    name = hooks.z(layer)
    means = {name: mean_z(model, population, layer)}
    selected = None if heads_ is None else {name: list(heads_)}
    with ablation.ablated(model, [name], mode="mean", means=means, heads=selected):
        return mse(model, groups)


def qk_identity_score(model: Any, layer: int, *, space: str = "residual") -> Float[np.ndarray, " head"]:
    """How close each head's folded QK circuit is to a positive multiple of the identity:
    sum(lambda) / sum(|lambda|) over its eigenvalues, 1 for a positive semi-definite form, about 0
    for a random one. `space="residual"`: the [d_model, d_model] form (TransformerLens's
    `model.QK`, LayerNorm folded); `"vector"`: read between input vectors, W_E (QK) W_E^T."""
    if space == "residual":
        return circuits.qk_scores(model, layer)
    if space == "vector":
        W_E = model.W_E.detach().double()
        return circuits.qk_scores(model, layer, inner=W_E.T @ W_E)
    raise ValueError(f"space must be 'residual' or 'vector', got {space!r}")


def with_identity_qk(
    state_dict: dict[str, Tensor], layer: int, heads_: Sequence[int], *, n_heads: int, seed: int = 0,
) -> dict[str, Tensor]:
    """A copy of a `NativeModel` state dict in which the given heads of `layer` score keys by
    x_hat_q Q pinv(Q) x_hat_k^T / sqrt(d_head) (`circuits.pinv_identity`, one random Q per head),
    x_hat the LayerNorm-normalised input: the raw query/key weights become diag(1/w) Q and
    diag(1/w) pinv(Q)^T, and their biases cancel the LayerNorm bias. Values are untouched."""
    out = {k: v.clone() for k, v in state_dict.items()}
    prefix = f"layers.{layer}"
    w = out[f"{prefix}.ln1.weight"].double()
    b = out[f"{prefix}.ln1.bias"].double()
    q_w, k_w = out[f"{prefix}.attn.q.weight"], out[f"{prefix}.attn.k.weight"]
    q_b, k_b = out[f"{prefix}.attn.q.bias"], out[f"{prefix}.attn.k.bias"]
    d_model = w.shape[0]
    d_head = q_w.shape[0] // n_heads
    for i, h in enumerate(heads_):
        if not 0 <= h < n_heads:
            raise ValueError(f"head {h} out of range [0, {n_heads})")
        Q, K = circuits.pinv_identity(d_model, d_head, seed=seed * 1000 + i)
        rows = slice(h * d_head, (h + 1) * d_head)
        for weight, bias, M in ((q_w, q_b, Q), (k_w, k_b, K)):
            raw = M / w[:, None]  # diag(1/w) M, so diag(w) raw = M
            weight[rows] = raw.T.to(weight.dtype)
            bias[rows] = (-(b @ raw)).to(bias.dtype)
    return out



# --- the conjecture: layer 0 writes a crude a_n + alpha a_{n-1} -----------------------------------


def two_term_fit(
    y: Float[np.ndarray, "n dim"], first: Float[np.ndarray, "n dim"], second: Float[np.ndarray, "n dim"]
) -> tuple[float, float, float]:
    """Least squares y ~ u first + v second + (a constant per coordinate), pooled over rows and
    coordinates: (u, v, R^2). alpha = v / u is the fit's shape, free of its overall scale."""
    y, first, second = (np.asarray(t, float) for t in (y, first, second))
    y, first, second = (t - t.mean(0, keepdims=True) for t in (y, first, second))
    design = np.stack([first.ravel(), second.ravel()], 1)
    (u, v), *_ = np.linalg.lstsq(design, y.ravel(), rcond=None)
    residual = y.ravel() - design @ np.array([u, v])
    return float(u), float(v), float(1 - (residual**2).sum() / (y**2).sum())


@torch.no_grad()
def readout(model: Any, cache: Any, name: str) -> Float[Tensor, "batch pos dim"]:
    """The residual stream at hook `name` read out as the final layer would read it (final
    LayerNorm with this residual's own scale, then W_U; the constant b_final W_U included)."""
    _, b = circuits.layer_norm(model.ln_final)
    return circuits.normalize(cache[name], model.cfg.eps) @ circuits.folded_unembed(model) + b @ model.W_U.double()


@torch.no_grad()
def layer0_terms(model: Any, groups: Sequence[Sequences], loss_from: int = LOSS_FROM) -> dict[str, np.ndarray]:
    """At every scored position n: a_n, a_{n-1}, a_{n+1} and the read-out of the residual stream
    after layer 0, stacked over sequences and positions ([rows, dim] each)."""
    name = "blocks.0.hook_resid_post"
    parts: dict[str, list] = {"a_n": [], "a_prev": [], "a_next": [], "after_l0": []}
    for g in groups:
        if g.inputs.shape[1] <= loss_from:
            continue
        _, cache = model.run_with_cache(g.inputs, names_filter=lambda n: n == name)
        x = g.inputs.double()
        parts["a_n"].append(x[:, loss_from:])
        parts["a_prev"].append(x[:, loss_from - 1 : -1])
        parts["a_next"].append(g.targets.double()[:, loss_from:])
        parts["after_l0"].append(readout(model, cache, name)[:, loss_from:])
    return {k: torch.cat([p.reshape(-1, p.shape[-1]) for p in v]).numpy() for k, v in parts.items()}


def alpha_fit(
    y: Float[np.ndarray, "n dim"], a_n: Float[np.ndarray, "n dim"], a_prev: Float[np.ndarray, "n dim"]
) -> tuple[float, float]:
    """Least squares y ~ a_n + alpha a_prev + (a constant per coordinate), the coefficient of a_n
    fixed at one as in the seed's a_n -> a_n + alpha a_{n-1}: (alpha, R^2)."""
    y, a_n, a_prev = (np.asarray(t, float) for t in (y, a_n, a_prev))
    y, a_n, a_prev = (t - t.mean(0, keepdims=True) for t in (y, a_n, a_prev))
    alpha = float(((y - a_n) * a_prev).sum() / (a_prev * a_prev).sum())
    residual = y - a_n - alpha * a_prev
    return alpha, float(1 - (residual**2).sum() / (y**2).sum())


def alpha_fits(terms: dict[str, np.ndarray]) -> pd.DataFrame:
    """alpha in a_n + alpha a_{n-1} fitted to the read-out after layer 0 and to a_{n+1}; beside
    it the free fit u a_n + v a_{n-1} (its shape v / u is unstable when u is near zero)."""
    rows = []
    for target, label in (("after_l0", "residual stream after layer 0 (read out)"), ("a_next", "a_(n+1)")):
        alpha, r2 = alpha_fit(terms[target], terms["a_n"], terms["a_prev"])
        u, v, r2_free = two_term_fit(terms[target], terms["a_n"], terms["a_prev"])
        rows.append({"fitted to": label, "alpha": alpha, "R2": r2, "free u": u, "free v": v,
                     "free v/u": v / u, "free R2": r2_free})
    return pd.DataFrame(rows)


@torch.no_grad()
def conjecture_curves(
    model: Any, seqs: Sequences, index: int, dim: int, alphas: dict[str, float]
) -> pd.DataFrame:
    """One coordinate of one sequence along n >= 1: a_n, a_{n+1}, the read-out of the residual
    stream after layer 0 and a_n + alpha a_{n-1} for each labelled alpha (the seed's Figure 17)."""
    x = seqs.inputs[index : index + 1]
    _, cache = model.run_with_cache(x, names_filter=lambda n: n == "blocks.0.hook_resid_post")
    after = readout(model, cache, "blocks.0.hook_resid_post")[0, 1:].numpy()
    a = x[0].double().numpy()
    series = {"a_n (input)": a[1:, dim], "after layer 0 (read out)": after[:, dim]}
    for label, alpha in alphas.items():
        series[f"a_n + {alpha:.2f} a_(n-1) ({label})"] = (a[1:] + alpha * a[:-1])[:, dim]
    series["a_(n+1) (target)"] = seqs.targets[index].double().numpy()[1:, dim]
    n = np.arange(1, a.shape[0])
    return pd.DataFrame([{"n": int(k), "series": s, "value": float(v[i])} for s, v in series.items()
                         for i, k in enumerate(n)])


# --- figures the book's plot helpers do not cover (built here, shown with plots.show) -------------


def ov_scatter_figure(panels: dict[str, pd.DataFrame], *, title: str = "") -> go.Figure:
    """Scatter of (x_d, (OV x)_d) per panel (`ov_scatter_data` tables), each with its
    least-squares line and R^2 in the legend."""
    fig = go.Figure()
    for name, table in panels.items():
        slope, intercept, r2 = linear_fit(table.x_d.to_numpy()[None], table.OV_x_d.to_numpy()[None])
        fig.add_trace(go.Scatter(x=table.x_d, y=table.OV_x_d, mode="markers", name=f"{name} (R² {r2[0]:.2f})",
                                 marker={"size": 5, "opacity": 0.7}))
        xs = np.array([table.x_d.min(), table.x_d.max()])
        fig.add_trace(go.Scatter(x=xs, y=slope[0] * xs + intercept[0], mode="lines", showlegend=False,
                                 name=f"{name}: slope {slope[0]:.2f}", line={"dash": "dot"}))
    fig.update_layout(template="plotly_white", title=title, xaxis_title="x_d (residual coordinate d)",
                      yaxis_title="(OV x)_d")
    return fig


def sequences_table(seqs: Sequences, coordinate: int = 0) -> pd.DataFrame:
    """One coordinate of each sequence along n, labelled by its c (for `plots.lines`)."""
    return pd.DataFrame([
        {"n": n, "value": float(seqs.terms[i, n, coordinate]), "sequence": f"c = {seqs.c[i]:+.2f}"}
        for i in range(len(seqs)) for n in range(seqs.terms.shape[1])
    ])

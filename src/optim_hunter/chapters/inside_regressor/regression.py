"""Analyses of a language model answering a numeric regression prompt.

  attention_by_role   per head, the attention the answer position pays to feature values, past
                      outputs, labels and separators
  knn_alignment       per head, whether attention to the examples' outputs follows how near each
                      example is to the query (kNN-like) or is spread evenly (regression-like)
  neuron_attribution  MLP neurons' direct contributions to a logit difference at the answer position
  layer_readouts      per prompt, in one shared pass: the residual stream at the answer position
                      at every depth (for probes) and the logit difference of answer pairs by layer

All take token ids and the `positions.PromptLayout` of the prompt, so any tokenizer works.

The inside_regressor chapter's sections each call one function of the modules beside this one,
returning a small frozen result with the claims it measures (declared there with their criteria):
`dissected.controls(competence_map)` -> `Controls` (the settings dissected) and
`dissected.answer_problems` -> `Problems`, `residual.logit_readouts` -> `Readouts` and
`residual.probe_study` -> `Probes`, `effects.component_attribution` -> `Components`,
`effects.top_neurons` and `effects.mlp_ablation` -> `MLPAblation`, `attention_heads.attention_study`
-> `Attention`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor

from optim_hunter.analysis import attribution, decomposition, probes, regressors
from optim_hunter.analysis.attribution import Contrast, answer_direction, make_contrast
from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel
from optim_hunter.data.positions import ROLES, PromptLayout
from optim_hunter.data.prompts import format_number


@torch.no_grad()
def answer_patterns(model: HookedModel, tokens: Tensor) -> Float[Tensor, "layer head key_pos"]:
    """Attention of every head from the last position (where the answer is produced)."""
    names = {hooks.pattern(l) for l in range(model.cfg.n_layers)}
    _, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n in names)
    return torch.stack([cache[hooks.pattern(l)][0, :, -1] for l in range(model.cfg.n_layers)])


def attention_by_role(
    model: HookedModel, token_lists: Sequence[Tensor], layouts: Sequence[PromptLayout]
) -> pd.DataFrame:
    """Mean attention mass from the answer position to each token role, per head."""
    totals = np.zeros((model.cfg.n_layers, model.cfg.n_heads, len(ROLES)))
    for tokens, layout in zip(token_lists, layouts):
        pattern = answer_patterns(model, tokens).cpu().numpy()
        for r, role in enumerate(ROLES):
            totals[:, :, r] += pattern[:, :, layout.where(role)].sum(-1)
    totals /= len(token_lists)
    rows = [
        {"layer": l, "head": h, "role": role, "mass": totals[l, h, r]}
        for l in range(totals.shape[0]) for h in range(totals.shape[1]) for r, role in enumerate(ROLES)
    ]
    return pd.DataFrame(rows)


def nearness(x_train: Float[np.ndarray, "n feature"], x_query: Float[np.ndarray, " feature"]) -> Float[np.ndarray, " n"]:
    """Minus the Euclidean distance of each example to the query, features standardized by the
    examples' spread (so no feature dominates by its units)."""
    scale = x_train.std(0)
    scale[scale == 0] = 1
    return -np.linalg.norm((x_train - x_query) / scale, axis=1)


def knn_alignment(
    model: HookedModel,
    token_lists: Sequence[Tensor],
    layouts: Sequence[PromptLayout],
    nearness_lists: Sequence[Float[np.ndarray, " n"]],
) -> Float[np.ndarray, "layer head"]:
    """Per head, the mean over prompts of the Spearman correlation between the attention paid to
    each example's output tokens and that example's nearness to the query (+1: attends to the
    nearest neighbours; 0: no preference, as a spread-out, regression-like head)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    scores = np.zeros((len(token_lists), n_layers, n_heads))
    for i, (tokens, layout, near) in enumerate(zip(token_lists, layouts, nearness_lists)):
        pattern = answer_patterns(model, tokens).cpu().numpy()
        per_example = np.stack(
            [pattern[:, :, layout.where("output_value", example=e)].sum(-1) for e in range(len(near))],
            axis=-1,
        )  # [layer, head, example]
        for l in range(n_layers):
            for h in range(n_heads):
                a = per_example[l, h]
                scores[i, l, h] = 0.0 if np.ptp(a) == 0 else spearmanr(a, near).statistic
    return scores.mean(0)


@torch.no_grad()
def neuron_attribution(model: HookedModel, contrast: Contrast, *, top: int | None = 10) -> pd.DataFrame:
    """Neurons whose direct effect (activation x W_out row, along the answer direction, scaled by
    the final LayerNorm) most moves the logit difference at the deciding position."""
    direction = answer_direction(model, contrast)
    if decomposition.available(model):  # one fused pass; the final norm's weight included
        parts = decomposition.decompose(model, contrast.tokens)
        effects = decomposition.neuron_effects(model, parts, direction.float()).cpu().numpy()
    else:
        names = {hooks.mlp_post(l) for l in range(model.cfg.n_layers)} | {"ln_final.hook_scale"}
        _, cache = model.run_with_cache(contrast.tokens[None], names_filter=lambda n: n in names)
        scale = cache["ln_final.hook_scale"][0, -1] if "ln_final.hook_scale" in cache else torch.ones(1)
        effects = np.stack([
            (cache[hooks.mlp_post(l)][0, -1] * (model.W_out[l] @ direction) / scale).cpu().numpy()
            for l in range(model.cfg.n_layers)
        ])
    layer, neuron = np.indices(effects.shape)
    table = pd.DataFrame({"layer": layer.ravel(), "neuron": neuron.ravel(), "effect": effects.ravel()})
    ordered = table.reindex(table["effect"].abs().sort_values(ascending=False).index)
    return ordered if top is None else ordered.head(top)


def reference_predictions(
    split: Any, methods: Sequence[str], *, seed: int = 0
) -> dict[str, float]:
    """The true output of the first query and each scikit-learn method's prediction of it (a
    neighbours method asked for more neighbours than there are examples uses them all)."""
    out = {"true": float(split.y_query[0])}
    for name in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = regressors.make(name, seed)
            if getattr(model, "n_neighbors", 0) > len(split.x_train):
                model.set_params(n_neighbors=len(split.x_train))
            model.fit(split.x_train, split.y_train)
        out[name] = float(model.predict(split.x_query[:1])[0])
    return out


def answer_contrasts(
    tokenizer: Any, texts: Sequence[str], first: Sequence[float], second: Sequence[float],
    round_to: int = 2,
) -> list[Contrast | None]:
    """The contrast of answering `first[i]` vs `second[i]` after prompt `texts[i]`, as the prompt
    format writes numbers (a space, then the number); None where either value is missing."""
    out = []
    for text, a, b in zip(texts, first, second):
        if not (np.isfinite(a) and np.isfinite(b)):
            out.append(None)
            continue
        out.append(make_contrast(tokenizer, text, " " + format_number(a, round_to),
                                 " " + format_number(b, round_to)))
    return out


@torch.no_grad()
def layer_readouts(
    model: HookedModel, tokenizer: Any, texts: Sequence[str], answers: pd.DataFrame,
    pairs: Sequence[tuple[str, str]], round_to: int = 2,
) -> tuple[Float[np.ndarray, "n stage d_model"], pd.DataFrame]:
    """For prompt `texts[i]`: its residual stream at the answer position before every layer and
    after the last (`probes.residuals`), and, for each pair (a, b) of columns of `answers` (row i
    holds prompt i's candidate answers), the logit difference "a vs b" read after every layer
    (`attribution.by_layer`).

    Each prompt runs once: its contrasts extend its key/value cache by their few answer tokens
    (`decomposition.reusing_prefixes`). Returns the stages and a tidy table
    (prompt, pair, stage, label, value); a pair with a missing answer or answers that tokenize
    identically has no rows."""
    if len(answers) != len(texts):
        raise ValueError(f"answers has {len(answers)} rows for {len(texts)} prompts; one row per prompt")
    missing = sorted({c for pair in pairs for c in pair} - set(answers.columns))
    if missing:
        raise ValueError(f"answers has no column {missing}; it has {list(answers.columns)}")
    stages, rows = [], []
    with decomposition.reusing_prefixes():
        for i, text in enumerate(texts):
            stages.append(probes.residuals(model, [torch.tensor(tokenizer(text)["input_ids"])])[0])
            row = answers.iloc[i]
            for a, b in pairs:
                contrast = answer_contrasts(tokenizer, [text], [row[a]], [row[b]], round_to)[0]
                if contrast is None:
                    continue
                values, labels = attribution.by_layer(model, contrast)
                rows.extend({"prompt": i, "pair": f"{a} vs {b}", "stage": s, "label": labels[s],
                             "value": float(v)} for s, v in enumerate(values))
    return np.stack(stages), pd.DataFrame(rows, columns=["prompt", "pair", "stage", "label", "value"])

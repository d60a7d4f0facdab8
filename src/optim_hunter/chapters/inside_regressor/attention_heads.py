"""Attention in the inside_regressor chapter: per head, the attention from the answer position by
token role, its alignment with the examples' nearness to the query (kNN-like or spread), and the
prefix-matching (induction) score, with the patterns of two heads on one short prompt
(`attention_study` -> `Attention`), and the claims they measure.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from optim_hunter.analysis import heads
from optim_hunter.chapters.induction_heads import pretrained_induction
from optim_hunter.chapters.inside_regressor.dissected import make_split, prompt_text, task_round_to
from optim_hunter.chapters.inside_regressor.regression import attention_by_role, knn_alignment, nearness
from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel
from optim_hunter.data import positions
from optim_hunter.report import claims, plots
from optim_hunter.report.claim_rows import Recording

TOP_SHARE = 0.1  # the "top heads" of a score: its highest tenth
OVERLAP = 0.5

# The source's sentence that states its value (verbatim, seed 004).
QUOTES = {"induction": "A lot of over lap with induction heads which is expected."}

MAX_KNN = claims.declare(
    "inside.attention.max_knn_alignment",
    "Most kNN-like head ({head}): Spearman alignment of attention with example nearness",
    source_seed="004", unit="Spearman")
INDUCTION_OVERLAP = claims.declare(
    "inside.attention.induction_overlap",
    "Of the top tenth of heads by attention from the answer position to the examples' outputs ({k} heads), "
    "the share also in the top tenth by prefix-matching (induction) score",
    source_seed="004", source_value="a lot of overlap", source_quote=QUOTES["induction"], unit="share",
    criterion=f"share >= {OVERLAP} (our threshold; chance: {TOP_SHARE})", test=claims.at_least(OVERLAP),
    why_no_interval="the overlap of two top-tenth sets over the heads of one model (a count of heads); the "
                    "induction scores come from one draw of random tokens, so no unit here is resampled")


@torch.no_grad()
def induction_scores(model: HookedModel, tokenizer: Any, *, length: int = 25, repeats: int = 2, batch: int = 4,
                     seed: int = 0) -> Float[np.ndarray, "layer head"]:
    """Prefix-matching score of every head (`heads.prefix_matching_from_patterns`) on `batch`
    sequences of `length` random tokens repeated `repeats` times after a BOS token; the tokens are
    drawn as the pretrained induction chapter draws them (the middle 80% of ids, no special token)."""
    vocab = tokenizer.get_vocab()
    bos = vocab.get("<|endoftext|>", tokenizer.bos_token_id)
    allowed = pretrained_induction.allowed_tokens(model.cfg.d_vocab, trim=0.1, exclude=tokenizer.all_special_ids)
    tokens = heads.repeated_draws(allowed, length=length, repeats=repeats, batch=batch, bos=bos, seed=seed)
    names = {hooks.pattern(l) for l in range(model.cfg.n_layers)}
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    start = length + (bos is not None)
    return np.stack([heads.prefix_matching_from_patterns(cache[hooks.pattern(l)].float().cpu(), tokens,
                                                         from_position=start)
                     for l in range(model.cfg.n_layers)])


def top_overlap(a: Float[np.ndarray, "..."], b: Float[np.ndarray, "..."], share: float = TOP_SHARE
                ) -> tuple[float, int]:
    """The share of the top `share` of entries of `a` (k = ceil(share * size)) that are also among
    the top k of `b`, and k. NaN ranks last."""
    a, b = np.nan_to_num(np.ravel(a), nan=-np.inf), np.nan_to_num(np.ravel(b), nan=-np.inf)
    k = int(np.ceil(share * a.size))
    top_a, top_b = set(np.argsort(-a, kind="stable")[:k]), set(np.argsort(-b, kind="stable")[:k])
    return len(top_a & top_b) / k, k


@dataclasses.dataclass(frozen=True)
class Attention:
    """Per head: attention from the answer position by token role, kNN alignment, and prefix-matching
    (induction) score; the patterns of the two heads shown on one short prompt."""

    roles: pd.DataFrame  # (layer, head) x role masses, and knn_alignment
    knn: Float[np.ndarray, "layer head"]
    induction: Float[np.ndarray, "layer head"]
    shown: tuple[tuple[int, int], ...]
    patterns: Float[np.ndarray, "_head query_pos key_pos"]  # one per `shown` head, not per head of a layer
    tokens: tuple[str, ...]
    recording: Recording

    @property
    def knn_head(self) -> tuple[int, int]:
        flat = np.nan_to_num(self.knn, nan=-2)
        return tuple(int(i) for i in np.unravel_index(np.argmax(flat), flat.shape))

    @property
    def output_mass(self) -> Float[np.ndarray, "layer head"]:
        return self.roles["output_value"].to_numpy().reshape(self.knn.shape)

    def figure(self) -> Any:
        n_layers, n_heads = self.knn.shape
        return plots.heatmap(self.knn, x=[f"H{h}" for h in range(n_heads)], y=[f"L{l}" for l in range(n_layers)],
                             zmid=0, title="kNN alignment of attention to example outputs")

    def show_heads(self) -> None:
        for (layer, head), pattern in zip(self.shown, self.patterns):
            plots.attention_heads(np.round(pattern[None], 3), list(self.tokens), head_names=[f"L{layer}H{head}"])

    def claims(self) -> list[claims.Claim]:
        l, h = self.knn_head
        share, k = top_overlap(self.output_mass, self.induction)
        return [self.recording.measure(MAX_KNN, float(self.knn[l, h]), head=f"L{l}H{h}"),
                self.recording.measure(INDUCTION_OVERLAP, share, k=k)]


def attention_study(model: HookedModel, tokenizer: Any, dataset: str, *, n_prompts: int, n_examples: int,
                    round_to: int | None = None, shown_examples: int = 5, recording: Recording) -> Attention:
    """Seeds 0..n_prompts-1 with `n_examples` examples (hooked forwards, so fewer and shorter
    prompts): attention by role and kNN alignment per head; induction scores on random repeated
    tokens; and the patterns of the most kNN-like head and the head attending most to past outputs
    on seed 0 with `shown_examples` examples."""
    round_to = task_round_to(dataset, round_to)
    splits = [make_split(dataset, n_examples, s, round_to) for s in range(n_prompts)]
    texts = [prompt_text(s, round_to) for s in splits]
    token_lists = [torch.tensor(tokenizer(t)["input_ids"]) for t in texts]
    layouts = [positions.token_roles(tokenizer, t) for t in texts]
    roles = attention_by_role(model, token_lists, layouts).pivot_table(index=["layer", "head"], columns="role",
                                                                        values="mass")
    knn = knn_alignment(model, token_lists, layouts, [nearness(s.x_train, s.x_query[0]) for s in splits])
    roles["knn_alignment"] = knn.reshape(-1)
    result = Attention(roles, knn, induction_scores(model, tokenizer), (), np.zeros((0, 1, 1)), (), recording)
    spread = np.unravel_index(np.argmax(result.output_mass), knn.shape)
    shown = tuple(sorted({result.knn_head, (int(spread[0]), int(spread[1]))}))
    small = make_split(dataset, shown_examples, 0, round_to)
    tokens = torch.tensor(tokenizer(prompt_text(small, round_to))["input_ids"])
    wanted = {hooks.pattern(layer) for layer, _ in shown}
    _, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n in wanted)
    patterns = np.stack([cache[hooks.pattern(l)][0, h].detach().float().cpu().numpy() for l, h in shown])
    return dataclasses.replace(result, shown=shown, patterns=patterns,
                               tokens=tuple(tokenizer.convert_ids_to_tokens(tokens.tolist())))

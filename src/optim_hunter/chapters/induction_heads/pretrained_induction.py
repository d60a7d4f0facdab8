"""Induction heads and in-context learning in a pretrained language model (Olsson et al. 2022, the
claims about large models), measured in one call: `measure(model, config)`.

  head scores     prefix matching and copying of every head from one hooked run on [BOS] + 25
                  random tokens repeated 4 times (the seed's recipe; `pretrained_scores`)
  ICL score       loss at token index 500 minus loss at index 50 on natural text, each averaged
                  over +- `half_width` indices; the loss against log(index + 1), fitted by least
                  squares from index 50 on; 95% intervals by resampling the text sequences (both
                  are linear in the loss curve, so each is the mean of its per-sequence values and
                  `claims.bootstrap` resamples those)
  natural text    the Python Language Reference topics shipped with every CPython
                  (`pydoc_data.topics`): each sequence is [BOS] + the start of one topic long
                  enough to fill it, topics drawn with a fixed seed
  pattern task    the seed's pattern-matching test (`pattern_task`): the share of attention from
                  each colon to the labels of earlier lines of the same template, per head (the
                  head is picked among the prefix-matching heads on half the prompts, measured on
                  the others)

The claims the measurement decides (`pretrained_claims`) are the rows of
`PretrainedInduction.claims()`. Where a number averages sequences or prompts, its verdict is decided
on its 95% interval over them; the counts and maxima over one model's heads have none, and say so.
The copying score's chance level is not 0: a head that raises its attended token no more than the
row's other distinct tokens scores 4 / (n + 1) - 1 (n = 26 with BOS and 25 random tokens, about
-0.85).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Int
from torch import Tensor

from optim_hunter import zoo
from optim_hunter.analysis import heads, intervals
from optim_hunter.chapters.induction_heads import CHAPTER as RECORD
from optim_hunter.chapters.induction_heads.icl_metrics import icl_score, smooth
from optim_hunter.chapters.induction_heads.pattern_task import pattern_prompts, pattern_shares
from optim_hunter.chapters.induction_heads.pretrained_claims import (
    CLAIMS,
    COPYING_MIN,
    PATTERN_MIN,
    PREFIX_MIN,
)
from optim_hunter.chapters.induction_heads.pretrained_scores import (
    head_scores,
    log_index_fit,
    log_index_slopes,
    text_losses,
)
from optim_hunter.core import settings
from optim_hunter.core.hooks import HookedModel
from optim_hunter.report import claims, plots

CHAPTER = RECORD.name


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the measurement (see `for_profile`)."""

    model: str = "smollm2-135m"
    length: int = 25  # random tokens per copy (the seed's 25)
    repeats: int = 4  # copies (the seed's 4)
    batch: int = 10  # random sequences (the seed averages over 10)
    vocab_trim: float = 0.1  # drop the first and last 10% of token ids (BPE ids follow merge order:
    # the seed excludes the most and least common tokens)
    n_text: int = 10  # natural-text sequences
    text_length: int = 512  # tokens per sequence, BOS included (the seed's context of 512)
    early: int = 50  # the seed's token indices
    late: int = 500
    half_width: int = 10  # the ICL score averages the loss over index +- this at each end
    final_norm: bool = True  # copying through the final norm's gain (and centring)
    seed: int = 0
    # torch threads while measuring (restored after). None: the process's own count, which
    # `optim-hunter execute` sets per lane; taking every core beside another lane's task made this
    # section 8.6x slower (178 s against 21 s alone, measured).
    threads: int | None = None
    pattern_prompts: int = 8  # prompts of the pattern task (half pick the head, half measure it)
    pattern_lines: int = 24  # lines per prompt
    profile: str | None = None  # the profile the claim rows are filed under (None: the environment's)

    @classmethod
    def for_profile(cls, profile: str | None = None, **overrides: Any) -> Config:
        profile = settings.profile(profile)
        sizes = dict(batch=settings.pick(profile, full=10, smoke=2),
                     n_text=settings.pick(profile, full=10, smoke=2),
                     pattern_prompts=settings.pick(profile, full=8, smoke=2), profile=profile)
        return cls(**{**sizes, **overrides})


# --- inputs ---------------------------------------------------------------------------------------


def allowed_tokens(d_vocab: int, *, trim: float, exclude: Sequence[int] = ()) -> Int[Tensor, " n"]:
    """Token ids in [trim * d_vocab, (1 - trim) * d_vocab), without `exclude` (special tokens)."""
    lo, hi = int(round(trim * d_vocab)), int(round((1 - trim) * d_vocab))
    ids = torch.arange(lo, hi)
    if len(exclude):
        ids = ids[~torch.isin(ids, torch.as_tensor(list(exclude)))]
    return ids


def repeated_tokens(
    allowed: Int[Tensor, " n"], *, length: int, repeats: int, batch: int, bos: int | None, seed: int = 0
) -> Int[Tensor, "batch pos"]:
    """`batch` rows of `length` distinct tokens drawn from `allowed`, repeated `repeats` times,
    after `bos` when given (the draws are those of `heads.repeated_random_tokens` over `allowed`)."""
    return heads.repeated_draws(allowed, length=length, repeats=repeats, batch=batch, bos=bos, seed=seed)


def reference_topics() -> dict[str, str]:
    """The Python Language Reference topics of the running interpreter (`pydoc_data.topics`)."""
    from pydoc_data.topics import topics

    return dict(topics)


def text_tokens(
    tokenizer: Any, texts: dict[str, str], *, n: int, length: int, bos: int | None, seed: int = 0
) -> tuple[Int[Tensor, "n pos"], tuple[str, ...]]:
    """`n` sequences of `length` tokens: [bos] + the first tokens of a text long enough to fill the
    sequence; the texts are drawn (without replacement, fixed seed) from those that are."""
    body = length - (bos is not None)
    encoded = {k: tokenizer(v, add_special_tokens=False)["input_ids"] for k, v in sorted(texts.items())}
    eligible = [k for k, ids in encoded.items() if len(ids) >= body]
    if len(eligible) < n:
        raise ValueError(f"only {len(eligible)} texts have {body} tokens, {n} asked for")
    chosen = [eligible[i] for i in np.random.default_rng(seed).permutation(len(eligible))[:n]]
    rows = [([] if bos is None else [bos]) + encoded[k][:body] for k in chosen]
    return torch.tensor(rows), tuple(chosen)


@dataclasses.dataclass(frozen=True)
class PretrainedInduction:
    """Head scores [layer, head] on repeated random tokens and per-token losses on text."""

    config: Config
    prefix_matching: np.ndarray  # [layer, head]
    copying: np.ndarray  # [layer, head], on the repeats
    copying_first_copy: np.ndarray  # [layer, head], on BOS and the first copy (the appendix's recipe)
    repeat_losses: np.ndarray  # [batch, index]: per-token loss on the repeated random tokens
    losses: np.ndarray  # [sequence, index]: per-token loss on the natural text
    topics: tuple[str, ...]  # the text of each sequence (pydoc topic names)
    bos: str  # the BOS token placed before every sequence
    seconds: dict[str, float]  # wall time of each part (load excluded)
    pattern_shares: np.ndarray | None = None  # [prompt, layer, head]: the pattern task (None: not run)

    # derived numbers
    @property
    def n_layers(self) -> int:
        return self.prefix_matching.shape[0]

    @property
    def loss_by_index(self) -> np.ndarray:
        return self.losses.mean(0)

    def _icl(self, loss_by_index: np.ndarray) -> float:
        c = self.config
        return float(icl_score(loss_by_index, c.early, c.late, c.half_width))

    def _slope(self, loss_by_index: np.ndarray) -> float:
        return log_index_fit(loss_by_index, self.config.early)[1]

    @property
    def icl_score(self) -> float:
        return self._icl(self.loss_by_index)

    @functools.cached_property
    def icl_bootstrap(self) -> claims.Interval:
        """95% bootstrap interval of the ICL score over the text sequences (the mean of the
        per-sequence scores: the score is linear in the loss curve)."""
        c = self.config
        return claims.bootstrap(icl_score(self.losses, c.early, c.late, c.half_width), units="text sequences",
                                seed=c.seed)

    @property
    def icl_interval(self) -> tuple[float, float]:
        return self.icl_bootstrap.low, self.icl_bootstrap.high

    @property
    def log_slope(self) -> float:
        return self._slope(self.loss_by_index)

    @functools.cached_property
    def log_slope_bootstrap(self) -> claims.Interval:
        """95% bootstrap interval of the log-index slope over the text sequences (the mean of the
        per-sequence slopes: a least-squares slope is linear in the curve)."""
        return claims.bootstrap(log_index_slopes(self.losses, self.config.early), units="text sequences",
                                seed=self.config.seed)

    @property
    def log_slope_interval(self) -> tuple[float, float]:
        return self.log_slope_bootstrap.low, self.log_slope_bootstrap.high

    @property
    def fitted_icl(self) -> float:
        """The ICL score the log-index line predicts: slope * (log(late + 1) - log(early + 1))."""
        c = self.config
        return self.log_slope * float(np.log((c.late + 1) / (c.early + 1)))

    @property
    def prefix_copying_correlation(self) -> tuple[float, float]:
        """Spearman correlation of prefix matching and copying over all heads, and its p-value."""
        from scipy.stats import spearmanr

        result = spearmanr(self.prefix_matching.ravel(), self.copying.ravel())
        return float(result.statistic), float(result.pvalue)

    @property
    def copying_chance(self) -> float:
        """The copying score of a head that raises the attended token no more than the row's other
        distinct tokens (BOS and the `length` random ones): a / (a + b) = 1 / (n + 1)."""
        return 4 / (self.config.length + 2) - 1

    @property
    def prefix_heads(self) -> np.ndarray:
        return self.prefix_matching >= PREFIX_MIN

    @property
    def induction_heads(self) -> np.ndarray:
        return self.prefix_heads & (self.copying > COPYING_MIN)

    @property
    def anti_copying_heads(self) -> np.ndarray:
        return self.prefix_heads & (self.copying < COPYING_MIN)

    def _layer_span(self) -> str:
        layers = np.nonzero(self.prefix_heads)[0]
        return f"{layers.min()}-{layers.max()}" if len(layers) else "none"

    def heads_table(self) -> pd.DataFrame:
        """Every head, strongest prefix matching first."""
        L, H = self.prefix_matching.shape
        rows = [{"head": f"L{l}H{h}", "layer": l, "depth": (l + 0.5) / L,
                 "prefix matching": self.prefix_matching[l, h], "copying": self.copying[l, h],
                 "copying (first copy)": self.copying_first_copy[l, h],
                 "induction head": bool(self.induction_heads[l, h]),
                 "anti-copying": bool(self.anti_copying_heads[l, h])}
                for l in range(L) for h in range(H)]
        return pd.DataFrame(rows).sort_values("prefix matching", ascending=False).set_index("head")

    @property
    def first_copy_loss(self) -> float:
        """Mean loss on the first copy's tokens 2..length (token 1 follows BOS alone)."""
        return float(self.repeat_losses[:, 1 : self.config.length].mean())

    @property
    def repeat_loss(self) -> float:
        """Mean loss on the tokens of the later copies (predictable from the first)."""
        return float(self.repeat_losses[:, self.config.length + 1 :].mean())

    def summary(self) -> dict[str, Any]:
        lo, hi = self.icl_interval
        slo, shi = self.log_slope_interval
        best = self.heads_table().iloc[0]
        return {
            "loss on the first copy / on the repeats (nats)": f"{self.first_copy_loss:.2f} / {self.repeat_loss:.2f}",
            "prefix-matching heads": int(self.prefix_heads.sum()),
            "induction heads (and copying)": int(self.induction_heads.sum()),
            "anti-copying prefix-matching heads": int(self.anti_copying_heads.sum()),
            "... of them below the chance copying score": f"{int((self.prefix_heads & (self.copying < self.copying_chance)).sum())} "
                                                          f"(chance {self.copying_chance:.3f})",
            "Spearman(prefix matching, copying), p": "{:.3f}, {:.2g}".format(*self.prefix_copying_correlation),
            "strongest prefix matching": f"{best.name} ({best['prefix matching']:.3f}, copying {best['copying']:.3f})",
            "ICL score (nats)": f"{self.icl_score:.3f} [{lo:.3f}, {hi:.3f}]",
            "slope on log index (nats)": f"{self.log_slope:.3f} [{slo:.3f}, {shi:.3f}]",
            "ICL score from the fit (nats)": f"{self.fitted_icl:.3f}",
        }

    def summary_table(self) -> pd.DataFrame:
        return pd.Series(self.summary(), name=self.config.model).to_frame()

    def measured(self, id: str) -> tuple[float | str, Any]:
        """The measured value of claim `id` and what its declared test (in `CLAIMS`) reads."""
        induction, anti = self.induction_heads, self.anti_copying_heads
        if id == "induction.pretrained.icl_score":
            return self.icl_score, self.icl_score
        if id == "induction.pretrained.loss_falls_past_50":
            return self.log_slope, self.log_slope
        if id == "induction.pretrained.heads_before_half_depth":
            layers = np.nonzero(self.prefix_heads)[0]
            share = float(np.mean(layers < self.n_layers / 2)) if len(layers) else "no prefix-matching head"
            return share, {"layers": layers.tolist(), "n_layers": self.n_layers}
        if id == "induction.pretrained.anti_copying_heads":
            n_anti, n_ind = int(anti.sum()), int(induction.sum())
            return float(n_anti), {"anti_copying": n_anti, "copying": n_ind}
        if id == "induction.pretrained.copying_follows_prefix":
            rho, p = self.prefix_copying_correlation
            if not np.isfinite(rho):  # a constant score over the heads: no rank correlation, none shown
                return "undefined (a score is constant over the heads)", {"rho": rho, "p": p}
            return rho, {"rho": rho, "p": p}
        if id == "induction.pretrained.literal_copying_head":
            both = float(np.minimum(self.prefix_matching, self.copying).max())
            return both, both
        if id == "induction.pretrained.pattern_head_attention_share":
            if self.pattern_head is None:
                return "no prefix-matching head or no pattern task", None
            share = float(self.pattern_test_shares[self.pattern_head])
            if not np.isfinite(share):
                return "no measuring prompt with an earlier line of the same template", None
            return share, share
        if id == "induction.pretrained.pattern_matching_induction_head":
            if self.pattern_shares is None:
                return "no pattern task", {"heads": None}
            n = int((induction & (self.pattern_test_shares > PATTERN_MIN)).sum())
            return float(n), {"heads": n}
        raise KeyError(id)

    def holds(self, id: str) -> bool:
        """Whether claim `id`'s declared criterion holds on the point (its test on what `measured`
        gives it; nothing to test: False). A claim with an `interval` is decided on that instead."""
        tested = self.measured(id)[1]
        return tested is not None and bool(CLAIMS[id].test(tested))

    def interval(self, id: str) -> claims.Interval | None:
        """The 95% interval claim `id` is decided on: over the text sequences, or over the measuring
        prompts of the pattern task; None for the counts and maxima over the heads."""
        if id == "induction.pretrained.icl_score":
            return self.icl_bootstrap
        if id == "induction.pretrained.loss_falls_past_50":
            return self.log_slope_bootstrap
        if id == "induction.pretrained.pattern_head_attention_share" and self.pattern_head is not None:
            per_prompt = self.pattern_shares[self.pattern_split :][(slice(None), *self.pattern_head)]
            per_prompt = per_prompt[np.isfinite(per_prompt)]  # a prompt without a target line has no share
            return claims.bootstrap(per_prompt, units="measuring prompts", seed=self.config.seed) if per_prompt.size else None
        return None

    # the pattern task
    @property
    def pattern_split(self) -> int:
        """Prompts [0, split) pick the head, [split, n) measure it."""
        return max(1, len(self.pattern_shares) // 2) if self.pattern_shares is not None else 0

    @property
    def pattern_head(self) -> tuple[int, int] | None:
        """The prefix-matching head with the largest share on the picking prompts (None if none)."""
        if self.pattern_shares is None or not self.prefix_heads.any() or len(self.pattern_shares) < 2:
            return None
        picking = np.nanmean(self.pattern_shares[: self.pattern_split], 0)
        picking = np.where(self.prefix_heads & np.isfinite(picking), picking, -np.inf)
        layer, head = np.unravel_index(np.argmax(picking), picking.shape)
        return int(layer), int(head)

    @property
    def pattern_test_shares(self) -> np.ndarray:
        """[layer, head] mean share on the measuring prompts."""
        return np.nanmean(self.pattern_shares[self.pattern_split :], 0)

    def claims(self) -> list[claims.Claim]:
        """The rows of every declared `induction.pretrained.*` claim."""
        c = self.config
        head = self.pattern_head
        n_pick = self.pattern_split
        n_measure = 0 if self.pattern_shares is None else len(self.pattern_shares) - n_pick
        pattern = (f" ({'L{}H{}'.format(*head) if head else 'no head'}, picked on {n_pick} of "
                   f"{n_pick + n_measure} prompts of {c.pattern_lines} lines, measured on the others)")
        context = {
            "induction.pretrained.icl_score": f" ({c.n_text} sequences of the Python Language Reference, "
            f"±{c.half_width} indices)",
            "induction.pretrained.heads_before_half_depth": f" ({int(self.prefix_heads.sum())} prefix-matching "
            f"heads in layers {self._layer_span()} of {self.n_layers})",
            "induction.pretrained.anti_copying_heads": f" ({int(self.prefix_heads.sum())} prefix-matching "
            f"heads, {int(self.induction_heads.sum())} of them copying)",
            "induction.pretrained.pattern_head_attention_share": pattern,
            "induction.pretrained.pattern_matching_induction_head": f" (measured on {n_measure} of "
            f"{n_pick + n_measure} prompts)",
        }

        decides = zoo.is_pretrained(c.model)  # the seed's claims are about large pretrained models
        rows = []
        for id, spec in CLAIMS.items():
            measured, tested = self.measured(id)
            rows.append(spec.measure(measured, chapter=CHAPTER, profile=settings.profile(c.profile), model=c.model,
                                     tested=tested, interval=self.interval(id), decides_source=decides,
                                     detail=f": {c.model}{context.get(id, '')}"))
        return rows

    def numbers(self) -> dict[str, Any]:
        """The numbers the chapter's prose cites (glue names)."""
        c = self.config
        prefix = self.heads_table()
        prefix = prefix[prefix["prefix matching"] >= PREFIX_MIN]
        lo, hi = self.icl_interval
        slo, shi = self.log_slope_interval
        none = float("nan")
        share = self.pattern_test_shares if self.pattern_shares is not None else None
        return {
            "lm_batch": c.batch, "lm_bos": self.bos, "lm_length": c.length, "lm_repeats": c.repeats,
            "lm_middle": 1 - 2 * c.vocab_trim, "lm_n_text": c.n_text, "lm_text_length": c.text_length,
            "lm_topics": ", ".join(self.topics), "lm_early": c.early, "lm_late": c.late, "lm_half_width": c.half_width,
            "lm_bootstrap": intervals.RESAMPLES, "lm_n_prefix": len(prefix), "lm_n_heads": self.prefix_matching.size,
            "lm_prefix_min": PREFIX_MIN, "lm_n_layers": self.n_layers,
            "lm_first_layer": int(prefix["layer"].min()) if len(prefix) else none,
            "lm_last_layer": int(prefix["layer"].max()) if len(prefix) else none,
            "lm_first_depth": float(prefix["depth"].min()) if len(prefix) else none,
            "lm_copy_min": float(prefix["copying"].min()) if len(prefix) else none,
            "lm_copy_max": float(prefix["copying"].max()) if len(prefix) else none,
            "lm_first_copy_min": float(prefix["copying (first copy)"].min()) if len(prefix) else none,
            "lm_first_copy_max": float(prefix["copying (first copy)"].max()) if len(prefix) else none,
            "lm_chance": self.copying_chance, "lm_all_copy_min": float(self.copying.min()),
            "lm_all_copy_max": float(self.copying.max()), "lm_icl": self.icl_score, "lm_icl_lo": lo, "lm_icl_hi": hi,
            "lm_slope": -self.log_slope, "lm_slope_lo": -shi, "lm_slope_hi": -slo, "lm_fitted_icl": self.fitted_icl,
            "lm_mean_loss": float(self.losses.mean()),
            "lm_pattern_prompts": c.pattern_prompts, "lm_pattern_lines": c.pattern_lines,
            "lm_pattern_head": "L{}H{}".format(*self.pattern_head) if self.pattern_head else "none",
            "lm_pattern_share": float(share[self.pattern_head]) if self.pattern_head else none,
            "lm_pattern_best": float(np.nanmax(share)) if share is not None else none,
            "lm_seconds": ", ".join(f"{k}: {v:.0f} s" for k, v in self.seconds.items()),
        }

    # figures
    def figures(self) -> list[go.Figure]:
        L, H = self.prefix_matching.shape
        heads_x, layers_y = [f"H{h}" for h in range(H)], [f"L{l}" for l in range(L)]
        out = [
            plots.heatmap(self.prefix_matching, x=heads_x, y=layers_y, colorscale="Viridis",
                          title=f"{self.config.model}: prefix-matching score per head (rows: layers)"),
            plots.heatmap(self.copying, x=heads_x, y=layers_y, zmid=0,
                          title=f"{self.config.model}: copying score per head (rows: layers)"),
        ]
        table = self.heads_table()
        scatter = go.Figure(go.Scatter(
            x=table["prefix matching"], y=table["copying"], mode="markers", text=table.index,
            marker={"color": table["layer"], "colorscale": "Viridis", "showscale": True,
                    "colorbar": {"title": "layer"}, "size": 7},
        ))
        scatter.add_vline(x=PREFIX_MIN, line_dash="dot")
        scatter.add_hline(y=COPYING_MIN, line_dash="dot")
        scatter.update_layout(template=plots.TEMPLATE, xaxis_title="prefix matching", yaxis_title="copying",
                              title=f"{self.config.model}: every head, prefix matching against copying")
        out.append(scatter)
        c = self.config
        index = np.arange(1, self.losses.shape[1])  # index 0 (predicted from BOS alone) has no log
        a, b = log_index_fit(self.loss_by_index, c.early)
        curve = go.Figure([
            go.Scatter(x=index, y=smooth(self.loss_by_index, 2 * c.half_width + 1)[1:], mode="lines",
                       name=f"mean loss (moving average over {2 * c.half_width + 1} indices)"),
            go.Scatter(x=index[c.early - 1:], y=a + b * np.log(index[c.early - 1:] + 1.0), mode="lines",
                       name=f"fit from index {c.early}: {b:.3f} nats per unit log", line={"dash": "dash"}),
        ])
        for i in (c.early, c.late):
            curve.add_vline(x=i, line_dash="dot")
        curve.update_xaxes(type="log", title="token index")
        curve.update_layout(template=plots.TEMPLATE, yaxis_title="loss (nats)",
                            title=f"{c.model}: loss against token index on natural text (log axis)")
        out.append(curve)
        return out


def measure(model: HookedModel = None, config: Config | None = None) -> PretrainedInduction:
    """Every number of the section: head scores on repeated random tokens, losses on text, the
    pattern task. `model` None loads `config.model` from the zoo (its load time is not counted)."""
    config = config or Config.for_profile()
    if model is None:
        model = zoo.load(config.model)
    tok = model.tokenizer
    vocab = tok.get_vocab()  # the document separator of pretraining, else the tokenizer's BOS
    bos_id = vocab["<|endoftext|>"] if "<|endoftext|>" in vocab else tok.bos_token_id
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or previous_threads)
    try:
        return _measure(model, config, tok, bos_id)
    finally:
        torch.set_num_threads(previous_threads)


def _measure(model: HookedModel, config: Config, tok: Any, bos_id: int) -> PretrainedInduction:
    seconds = {}
    started = time.perf_counter()
    allowed = allowed_tokens(model.cfg.d_vocab, trim=config.vocab_trim, exclude=tok.all_special_ids)
    random_tokens = repeated_tokens(allowed, length=config.length, repeats=config.repeats,
                                    batch=config.batch, bos=bos_id, seed=config.seed)
    scores = head_scores(model, random_tokens, length=config.length, bos=True, final_norm=config.final_norm)
    seconds["head scores"] = time.perf_counter() - started
    started = time.perf_counter()
    tokens, topics = text_tokens(tok, reference_topics(), n=config.n_text, length=config.text_length,
                                 bos=bos_id, seed=config.seed)
    losses = text_losses(model, tokens)
    seconds["text losses"] = time.perf_counter() - started
    started = time.perf_counter()
    shares = pattern_shares(model, pattern_prompts(tok, n=config.pattern_prompts, lines=config.pattern_lines,
                                                   bos=bos_id, seed=config.seed))
    seconds["pattern task"] = time.perf_counter() - started
    return PretrainedInduction(config=config, **scores, losses=losses, topics=topics,
                               bos=tok.convert_ids_to_tokens(bos_id), seconds=seconds, pattern_shares=shares)

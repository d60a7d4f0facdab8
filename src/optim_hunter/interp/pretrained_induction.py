"""Induction heads and in-context learning in a pretrained language model (Olsson et al. 2022, the
claims about large models), measured in one call: `measure(model, config)`.

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
  ICL score       loss at token index 500 minus loss at index 50 on natural text, each averaged
                  over +- `half_width` indices; the loss against log(index + 1), fitted by least
                  squares from index 50 on; 95% intervals by resampling the text sequences (both
                  are linear in the loss curve, so each is the mean of its per-sequence values and
                  `claims.bootstrap` resamples those)
  natural text    the Python Language Reference topics shipped with every CPython
                  (`pydoc_data.topics`): each sequence is [BOS] + the start of one topic long
                  enough to fill it, topics drawn with a fixed seed
  pattern task    the seed's pattern-matching test: lines "(month|colour) (animal|fruit): label",
                  the label naming the line's template; the share of attention from each colon to
                  the labels of earlier lines of the same template, per head (the head is picked
                  among the prefix-matching heads on half the prompts, measured on the others)

The claims the measurement decides (ids `induction.pretrained.*`, declared below with the source's
value, the sentence that states it, and the criterion; two criteria were revised after a first run,
and their rows show the first form and why) are the rows of `PretrainedInduction.claims()`. Where a
number averages sequences or prompts, its verdict is decided on its 95% interval over them; the
counts and maxima over one model's heads have none, and say so. The copying score's chance level
is not 0: a head that raises its attended token no more than the row's other distinct tokens
scores 4 / (n + 1) - 1 (n = 26 with BOS and 25 random tokens, about -0.85).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter import claims, hooks, kv_decoding, settings, verdicts
from optim_hunter.hooks import HookedModel
from optim_hunter.interp import heads, icl

SOURCE = "003"
CHAPTER = icl.CHAPTER
PATTERN_MIN = 0.5  # a pattern-matching head puts more than this share of its colon attention on the right lines
PREFIX_MIN = 0.3  # a prefix-matching head: score at least this (chance is about 1 / context length)
COPYING_MIN = 0.0  # an induction head also copies (copying score above this); below: anti-copying
LITERAL_MIN = 0.5  # a literal-copying induction head: both scores at least this
ICL_SOURCE, ICL_TOLERANCE = -0.4, 0.2  # the seed's ≈0.4 nats (late minus early), and our tolerance


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
        "repeat_losses": icl.token_losses(logits, tokens),
    }


# --- in-context learning on text ------------------------------------------------------------------


@torch.no_grad()
def text_losses(model: HookedModel, tokens: Int[Tensor, "n pos"], *, chunk: int = 2) -> Float[np.ndarray, "n index"]:
    """Per-token losses [n, pos - 1] (index i predicts token i + 1), through the fast forward."""
    out = []
    for part in tokens.split(chunk):
        logits = kv_decoding.logits(model, part)
        out.append(F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), part[:, 1:].flatten(),
                                   reduction="none").view(len(part), -1).cpu().numpy())
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


# --- the pattern-matching task (the seed's "Behavior 3") --------------------------------------------

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "grey", "purple", "pink", "brown")
ANIMALS = ("bird", "fish", "dog", "cat", "horse", "cow", "lion", "mouse", "sheep", "tiger")
FRUITS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum", "melon")
TEMPLATES = ((MONTHS, ANIMALS), (MONTHS, FRUITS), (COLOURS, ANIMALS), (COLOURS, FRUITS))  # labels 0-3


@dataclasses.dataclass(frozen=True)
class PatternPrompt:
    """Lines "<a> <b>: <label>" with the label the line's template (0-3), as token positions."""

    tokens: Int[Tensor, " pos"]
    colons: tuple[int, ...]  # position of each line's colon
    labels: tuple[tuple[int, ...], ...]  # positions of each line's label tokens
    templates: tuple[int, ...]  # each line's template

    def targets(self) -> list[tuple[int, list[int]]]:
        """(colon, label positions of the earlier lines of the same template), for every line that
        has such an earlier line."""
        out = []
        for i, (colon, template) in enumerate(zip(self.colons, self.templates)):
            keys = [k for j in range(i) if self.templates[j] == template for k in self.labels[j]]
            if keys:
                out.append((colon, keys))
        return out


def pattern_prompts(tokenizer: Any, *, n: int, lines: int, bos: int | None, seed: int = 0) -> list[PatternPrompt]:
    """`n` prompts of `lines` lines, templates and words drawn with a fixed seed; each piece (the
    two words, the colon, " <label>", the newline) is encoded on its own so its positions are
    known (a BPE that splits on spaces and punctuation encodes the joined text the same way)."""
    rng = np.random.default_rng(seed)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompts = []
    for _ in range(n):
        ids = [] if bos is None else [bos]
        colons, labels, templates = [], [], []
        for _ in range(lines):
            t = int(rng.integers(len(TEMPLATES)))
            first, second = TEMPLATES[t]
            ids += encode(f"{first[rng.integers(len(first))]} {second[rng.integers(len(second))]}")
            colons.append(len(ids))
            ids += encode(":")
            label = encode(f" {t}")
            labels.append(tuple(range(len(ids), len(ids) + len(label))))
            ids += label + encode("\n")
            templates.append(t)
        prompts.append(PatternPrompt(torch.tensor(ids), tuple(colons), tuple(labels), tuple(templates)))
    return prompts


@torch.no_grad()
def pattern_shares(model: HookedModel, prompts: Sequence[PatternPrompt]) -> Float[np.ndarray, "n layer head"]:
    """Per prompt and head, the mean over colons of the attention on the labels of the earlier
    lines of the same template (NaN for a prompt without such a line)."""
    n_layers = model.cfg.n_layers
    names = {hooks.pattern(l) for l in range(n_layers)}
    out = np.full((len(prompts), n_layers, model.cfg.n_heads), np.nan)
    for i, prompt in enumerate(prompts):
        targets = prompt.targets()
        if not targets:
            continue
        _, cache = model.run_with_cache(prompt.tokens[None], names_filter=lambda n: n in names)
        for l in range(n_layers):
            pattern = cache[hooks.pattern(l)][0].float()  # [head, query, key]
            out[i, l] = torch.stack([pattern[:, q, keys].sum(-1) for q, keys in targets]).mean(0).numpy()
    return out


# --- the measurement ------------------------------------------------------------------------------


def _declare(id: str, claim: str, source_value: Any, unit: str, criterion: str, test: Callable[[Any], bool], *,
             quote: str, examples: tuple[Any, Any] | None = None, why_no_interval: str = "",
             first_criterion: str = "") -> claims.ClaimSpec:
    return claims.declare(id, claim, source_seed=SOURCE, source_value=source_value, unit=unit, criterion=criterion,
                          test=test,  # reads what `PretrainedInduction.measured` gives it
                          source_quote=quote, examples=examples, why_no_interval=why_no_interval,
                          first_criterion=first_criterion)


def _before_half_depth(t: dict[str, Any]) -> bool:
    """{"layers": the layer of every prefix-matching head, "n_layers": the model's depth}."""
    layers = np.asarray(t["layers"])
    return len(layers) > 0 and float(np.mean(layers < t["n_layers"] / 2)) > 0.5


HEAD_COUNT = "a count over the heads of one model (its heads are not a sample); the noise of the scores over " \
             "the random sequences is not propagated"

CLAIMS: dict[str, claims.ClaimSpec] = {spec.id: spec for spec in (
    _declare("induction.pretrained.icl_score",
             "ICL score of a pretrained model on natural text (loss at index 500 minus at 50){detail}",
             ICL_SOURCE, "nats (late minus early)", f"within {ICL_TOLERANCE} nats of {ICL_SOURCE} (our tolerance)",
             claims.between(ICL_SOURCE - ICL_TOLERANCE, ICL_SOURCE + ICL_TOLERANCE),
             quote="Before this window there is less than 0.15 nats of in-context learning, after it there is "
                   "roughly 0.4 nats"),
    _declare("induction.pretrained.loss_falls_past_50",
             "Past token 50 the loss keeps falling with log(token index){detail}", "keeps improving",
             "nats per unit log(index)", "slope of loss on log(index + 1) from index 50 on below 0",
             claims.below(0),
             quote="after the phase change, loss continues to improve past that point."),
    # The seed's location plots show prefix matching only; a first version of this criterion also
    # asked for copying > 0, which no head of smollm2-135m has (see the chapter).
    _declare("induction.pretrained.heads_before_half_depth",
             "Induction (prefix-matching) heads of a deep model sit before half its depth{detail}",
             "majority before half depth", "fraction of prefix-matching heads",
             f"more than half of the heads with prefix matching >= {PREFIX_MIN} are in layers < n_layers / 2",
             _before_half_depth,
             quote="In fact, in 24L and 40L models the majority of induction heads form before the halfway point "
                   "in model depth.",
             examples=({"layers": [3, 5, 20], "n_layers": 30}, {"layers": [3, 20, 25], "n_layers": 30}),
             why_no_interval=HEAD_COUNT,
             first_criterion=f"more than half of the induction heads (prefix matching >= {PREFIX_MIN} and copying > "
                             f"{COPYING_MIN}) are in layers < n_layers / 2; changed after the first run on "
                             "smollm2-135m, where no head had copying > 0, to prefix matching alone (the score the "
                             "seed's location plots show)"),
    _declare("induction.pretrained.anti_copying_heads",
             "A few prefix-matching heads copy negatively (anti-copying){detail}", "a small number", "heads",
             f"at least one head with prefix matching >= {PREFIX_MIN} and copying < {COPYING_MIN}, "
             "and fewer of them than prefix-matching heads that copy",
             lambda t: 1 <= t["anti_copying"] < t["copying"],
             quote='Full-scale models above 16 layers start to show a small number of heads that score well on '
                   '"prefix search", but get a *negative* score on copying, which means they are not induction heads.',
             examples=({"anti_copying": 2, "copying": 10}, {"anti_copying": 12, "copying": 3}),
             why_no_interval=HEAD_COUNT),
    # A first version compared the fractions of heads with copying > 0, uninformative when no head
    # has a positive copying score (the chapter says so); the rank correlation uses every head.
    _declare("induction.pretrained.copying_follows_prefix",
             "Heads that match prefixes more also copy more{detail}", "positive correlation",
             "Spearman correlation over all heads",
             "Spearman correlation of prefix matching and copying over all heads > 0 with p < 0.05",
             lambda t: t["rho"] > 0 and t["p"] < 0.05,
             quote="In both cases, heads with a positive prefix matching score are more likely to have a positive "
                   "copying score, and this correlation is even stronger for the highest prefix matching scores.",
             examples=({"rho": 0.4, "p": 0.001}, {"rho": -0.1, "p": 0.2}),
             why_no_interval="a rank correlation over the heads of one model, decided by its p-value (< 0.05)",
             first_criterion=f"the share of heads with copying > {COPYING_MIN} is larger among the heads with prefix "
                             f"matching >= {PREFIX_MIN} than among the others; changed after the first run on "
                             "smollm2-135m, where no head had a positive copying score (both shares 0, the comparison "
                             "uninformative), to the rank correlation over every head"),
    _declare("induction.pretrained.literal_copying_head",
             "A literal-copying induction head: high prefix matching and high copying in one head{detail}",
             "copying 0.89, prefix matching 0.75 (layer 21 of 40)", "min(prefix, copying) of the best head",
             f"some head has both scores >= {LITERAL_MIN}", claims.at_least(LITERAL_MIN),
             quote="Literal copying head 21/40 0.89 0.75",
             why_no_interval="the best head of one model: a maximum over its heads, which a bootstrap over heads "
                             "cannot bound"),
    _declare("induction.pretrained.pattern_head_attention_share",
             "A prefix-matching head attends from the colons of \"(month|colour) (animal|fruit): label\" lines to "
             "the labels of earlier lines of the same template more often than not{detail}", "≈65%",
             "share of the colon's attention",
             f"more than {PATTERN_MIN} for the prefix-matching head picked on the other half of the prompts",
             claims.above(PATTERN_MIN),
             quote="empirically it allocates about 65% of its attention from the colons to the correct positions"),
    _declare("induction.pretrained.pattern_matching_induction_head",
             "An induction head (prefix matching and copying) that also matches the abstract pattern of "
             "\"(month|colour) (animal|fruit): label\" lines{detail}", "copying 0.69, prefix matching 0.94 "
             "(layer 8 of 40)", "heads",
             f"at least one head with prefix matching >= {PREFIX_MIN}, copying > {COPYING_MIN} and more than "
             f"{PATTERN_MIN} of its colon attention on the right labels (measurement prompts)",
             lambda t: t["heads"] is not None and t["heads"] >= 1,  # heads None: no pattern task
             quote="Pattern-matching head 8 / 40 0.69 0.94",
             examples=({"heads": 1}, {"heads": 0}), why_no_interval=HEAD_COUNT),
)}


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
        return float(icl.icl_score(loss_by_index, c.early, c.late, c.half_width))

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
        return claims.bootstrap(icl.icl_score(self.losses, c.early, c.late, c.half_width), units="text sequences",
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
        from optim_hunter import yardstick

        decides = yardstick.pretrained(c.model)  # the seed's claims are about large pretrained models
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
            "lm_bootstrap": verdicts.RESAMPLES, "lm_n_prefix": len(prefix), "lm_n_heads": self.prefix_matching.size,
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
        from optim_hunter import plots

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
            go.Scatter(x=index, y=icl.smooth(self.loss_by_index, 2 * c.half_width + 1)[1:], mode="lines",
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
        from optim_hunter import zoo

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

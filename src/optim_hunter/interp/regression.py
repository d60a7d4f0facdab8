"""Analyses of a language model answering a numeric regression prompt.

  attention_by_role   per head, the attention the answer position pays to feature values, past
                      outputs, labels and separators
  knn_alignment       per head, whether attention to the examples' outputs follows how near each
                      example is to the query (kNN-like) or is spread evenly (regression-like)
  neuron_attribution  MLP neurons' direct contributions to a logit difference at the answer position
  layer_readouts      per prompt, in one shared pass: the residual stream at the answer position
                      at every depth (for probes) and the logit difference of answer pairs by layer

All take token ids and the `positions.PromptLayout` of the prompt, so any tokenizer works.

The inside_regressor chapter's sections each call one function below returning a small frozen
result with the claims it measures (declared here with their criteria): `answer_problems` ->
`Problems`, `logit_readouts` -> `Readouts`, `component_attribution` -> `Components`,
`attention_study` -> `Attention` (with `induction_scores` and `top_overlap`), `mlp_ablation` ->
`MLPAblation`, `top_neurons`, `probe_study` -> `Probes`. Which setting they read is picked by
measurement: `controls(competence_map)` -> `Controls` names the competence map's chosen cell (the
hardest task where the model's real prompts beat their shuffled-y control and the mean baseline)
and Friedman #2 as the contrast, with the map's control rows for both; the sections accept any
competence-map task (`make_split`: the map's own prompts, seed for seed) or `datasets` name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from scipy.stats import spearmanr
from torch import Tensor

from optim_hunter import claims, hooks, plots
from optim_hunter.claim_rows import Recording
from optim_hunter.hooks import HookedModel
from optim_hunter.interp.attribution import Contrast, answer_direction
from optim_hunter.positions import ROLES, PromptLayout


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
    from optim_hunter.interp import decomposition

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
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from optim_hunter import regressors

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
    from optim_hunter.interp.attribution import make_contrast
    from optim_hunter.prompts import format_number

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
    from optim_hunter.interp import attribution, decomposition, probes

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


# --- the inside_regressor chapter: one result per section, with the claims it measures -----------

REFERENCES = ("linear_regression", "knn", "average", "last")
PAIRS = (("true", "average"), ("true", "last"), ("true", "knn"), ("linear_regression", "knn"),
         ("llm", "average"), ("llm", "last"))
TOP_SHARE = 0.1  # the "top heads" of a score: its highest tenth
OVERLAP = 0.5

# The source's sentences that state its values (verbatim, seed 004).
QUOTES = {
    "late_mlps": "That the important work is happening in the last few MLP layers 27 - 31.",
    "induction": "A lot of over lap with induction heads which is expected.",
}

LLM_VS_AVERAGE = claims.declare(
    "inside.logit_diff.llm_vs_average_{split}_error",
    "Final logit difference, the model's answer vs the mean of outputs, {split} error seeds (n = {n})",
    source_seed="004", unit="logits")
TRUE_VS_AVERAGE = claims.declare(
    "inside.logit_diff.true_vs_average_final",
    "Final logit difference, true output vs mean-of-outputs answer (mean over seeds)",
    source_seed="004", unit="logits")
DECIDING_STAGE = claims.declare(
    "inside.logit_diff.deciding_stage",
    "First residual stage holding half of the final true-vs-average logit difference",
    source_seed="004", unit="stage of {stages}")
# Measured only: in almost any language model the last MLPs write closest to the logits, so the largest
# direct effect lands late whatever the model computes; no control computed here could make it fail.
LARGEST_DIRECT_MLP = claims.declare(
    "inside.mlp.largest_direct_effect_is_late",
    "The MLP with the largest direct effect on the model-vs-average decision (the source's layers 27–31 of 32 "
    "are its last 5/32): its layer, of {n_layers}. Measured only: the last MLPs write nearest the logits in "
    "almost any language model, so a late layer here cannot tell the source's account from any other",
    source_seed="004", source_value="MLP layers 27–31 of 32", source_quote=QUOTES["late_mlps"], unit="layer")
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
MLP_LATE_FROM = 2 / 3  # the last third of the layers
MLP_ABLATION_LATE = claims.declare(
    "inside.mlp.most_important_layer_is_late",
    "The MLP layers whose zero-ablation hurts MAE most (layers {layers} of {n_layers}) are in the last third: "
    "the group's last layer over the number of layers",
    source_seed="004", source_value="last MLP layers (27–31 of 32)", source_quote=QUOTES["late_mlps"],
    unit="of depth", test=claims.at_least(MLP_LATE_FROM),
    criterion="last layer of the group / layers >= 2/3 (in the last third; our reading of 'last few')")
PROBE_BEST = claims.declare(
    "inside.probe.{target}_best_r2",
    "Best held-out R² of a linear probe for the {target} prediction (at {stage})",
    source_seed="004", unit="R²")


# The controls of the settings this chapter dissects (our own bars; the same rule as the competence map).
CONTROL_SHUFFLED = claims.declare(
    "inside.control.{cell}.real_minus_shuffled",
    "Dissected setting {label}, {n} examples ({fmt}): error on the real prompt minus error on its shuffled-y "
    "control, mean over prompts (errors in spreads of the example outputs; {failed} of {n_prompts} real answers "
    "unparseable)",
    source_seed="issue", unit="output spreads", test=claims.below(0),
    criterion="< 0: the real prompt beats its shuffled-y control (paired interval over prompts below 0)")
CONTROL_MEAN = claims.declare(
    "inside.control.{cell}.real_minus_mean",
    "Dissected setting {label}, {n} examples ({fmt}): error on the real prompt minus the error of answering the "
    "mean of the example outputs, mean over prompts",
    source_seed="issue", unit="output spreads", test=claims.below(0),
    criterion="< 0: the real prompt beats the mean baseline (paired interval over prompts below 0)")


@dataclasses.dataclass(frozen=True)
class Controls:
    """The competence map's rows for the settings dissected here: `studied` (where the model learns,
    if any) and `contrast` (Friedman #2)."""

    cmap: Any  # competence.CompetenceMap
    cells: dict[str, Any]  # role -> competence.Cell
    recording: Recording

    @property
    def table(self) -> pd.DataFrame:
        from optim_hunter import competence

        cols = ["n_prompts", "failed", "error", "error_shuffled", "exact", "real_minus_shuffled", "rs_low",
                "rs_high", "real_minus_mean", "rm_low", "rm_high", "learns"]
        rows = [{"role": role, "task": competence.TASKS[c.task].label, "n_examples": c.n_examples,
                 **self.cmap.cell(c)[cols].to_dict()} for role, c in self.cells.items()]
        return pd.DataFrame(rows)

    def claims(self) -> list[claims.Claim]:
        return self.cmap.claims(list(dict.fromkeys(self.cells.values())), specs=(CONTROL_SHUFFLED, CONTROL_MEAN),
                                recording=self.recording)


def controls(cmap: Any, *, contrast: str = "friedman2", recording: Recording) -> Controls:
    """The settings to dissect, picked by the competence map `cmap`: its `chosen` cell (None when no
    cell learns in context) and the plain-format cell of `contrast` with the fewest examples."""
    table = cmap.table
    rows = table[(table.task == contrast) & (table.format == "plain") & (table.order == "random")]
    from optim_hunter.competence import Cell

    cells = {} if cmap.chosen is None else {"studied": cmap.chosen}
    if len(rows):
        cells["contrast"] = Cell(contrast, int(rows.n_examples.min()))
    return Controls(cmap, cells, recording)


def prompt_text(split: Any, round_to: int) -> str:
    from optim_hunter.prompts import format_prompt

    return format_prompt(split.x_train, split.y_train, split.x_query[0], round_to)


def task_round_to(dataset: str, round_to: int | None) -> int:
    """`round_to`, or the decimals a competence-map task writes (two for any other dataset)."""
    from optim_hunter import competence

    if round_to is not None:
        return round_to
    return competence.TASKS[dataset].round_to if dataset in competence.TASKS else 2


def make_split(dataset: str, n_examples: int, seed: int, round_to: int | None = None) -> Any:
    """Problem `seed` of a competence-map task (`competence.make_split`: the map's own prompts), or of
    any other `datasets` name, rounded to `round_to` decimals (default: the task's)."""
    from optim_hunter import competence, datasets

    if dataset in competence.TASKS and round_to in (None, competence.TASKS[dataset].round_to):
        return competence.make_split(dataset, n_examples, seed)
    return datasets.make_split(dataset, n_examples, seed, round_to=task_round_to(dataset, round_to))


@dataclasses.dataclass(frozen=True)
class Problems:
    """One prompt per seed: its true output, some classical methods' predictions, the model's
    greedy answer and its error (`table`, one row per prompt)."""

    splits: tuple[Any, ...]
    texts: tuple[str, ...]
    table: pd.DataFrame  # true, each reference method, llm, llm_error
    n_failed: int
    round_to: int

    @property
    def low_error(self) -> np.ndarray:
        """Prompts whose answer's error is at most the median (an unparseable answer is high)."""
        errors = self.table["llm_error"]
        return (errors <= errors.median()).to_numpy()


def answer_problems(model: HookedModel, tokenizer: Any, dataset: str, *, n_seeds: int, n_examples: int,
                    round_to: int | None = None, references: Sequence[str] = REFERENCES) -> Problems:
    """Seeds 0..n_seeds-1 of `dataset` (a competence-map task or a `datasets` name) with `n_examples`
    examples: the model's greedy answers (at most 10 tokens, batches of 32) beside the true output and
    the reference methods' predictions. The same seeds as the competence map's prompts of that cell."""
    from optim_hunter import llm_regressor

    round_to = task_round_to(dataset, round_to)
    splits = [make_split(dataset, n_examples, s, round_to) for s in range(n_seeds)]
    texts = [prompt_text(s, round_to) for s in splits]
    answers = llm_regressor.greedy_answers(model, tokenizer, texts, max_new_tokens=10, batch_size=32)
    table = pd.DataFrame([{**reference_predictions(s, references, seed=i), "llm": v}
                          for i, (s, v) in enumerate(zip(splits, answers.values))])
    table["llm_error"] = (table["llm"] - table["true"]).abs()
    return Problems(tuple(splits), tuple(texts), table, answers.parsed.n_failed, round_to)


@dataclasses.dataclass(frozen=True)
class Readouts:
    """Logit differences of answer pairs read after every layer (`values`, a tidy table with a
    `seeds` column: low or high error) and the residual stream at the answer position (`stages`)."""

    stages: Float[np.ndarray, "n stage d_model"]
    values: pd.DataFrame  # prompt, pair, stage, label, value, seeds
    n_layers: int
    recording: Recording

    @property
    def by_layer(self) -> pd.DataFrame:
        return self.values.groupby(["seeds", "pair", "stage"])["value"].agg(["mean", "count"]).reset_index()

    @property
    def final(self) -> pd.DataFrame:
        """The mean final logit difference of each pair, low- and high-error seeds apart."""
        b = self.by_layer
        return b[b.stage == b.stage.max()].pivot(index="pair", columns="seeds", values="mean")

    def figure(self, seeds: str = "low error") -> Any:
        part = self.by_layer[self.by_layer.seeds == seeds]
        return plots.lines(part, x="stage", y="mean", group="pair",
                           title=f"Logit difference after each layer ({seeds} seeds; "
                                 "stage i = before layer i, last = final)")

    def per_prompt(self, pair: str) -> pd.DataFrame:
        """One pair's logit difference per prompt (rows) and stage (columns); prompts without it left out."""
        part = self.values[self.values.pair == pair]
        return part.pivot(index="prompt", columns="stage", values="value").sort_index(axis=1)

    def claims(self) -> list[claims.Claim]:
        """Measured only (the source gives no number); each mean with a bootstrap interval over its prompts."""
        at, rows = self.recording, []
        llm = self.per_prompt("llm vs average") if len(self.values) else pd.DataFrame()
        if len(llm):
            split = self.values.drop_duplicates("prompt").set_index("prompt")["seeds"]
            for seeds in ("low error", "high error"):
                final = llm.loc[split.loc[llm.index] == seeds].iloc[:, -1].to_numpy()
                if len(final):
                    rows.append(at.measure(LLM_VS_AVERAGE, float(final.mean()), split=seeds.split()[0], n=len(final),
                                           interval=claims.bootstrap(final, units="prompts")))
        true = self.per_prompt("true vs average") if len(self.values) else pd.DataFrame()
        if not len(true):
            return rows
        values = true.to_numpy()  # [prompt, stage]
        rows.append(at.measure(TRUE_VS_AVERAGE, float(values[:, -1].mean()),
                               interval=claims.bootstrap(values[:, -1], units="prompts")))
        rows.append(at.measure(DECIDING_STAGE, float(deciding_stage(values, np.arange(len(values)))),
                               interval=claims.bootstrap_units(len(values), lambda idx: deciding_stage(values, idx), "prompts"),
                               stages=self.n_layers + 1))
        return rows


def deciding_stage(values: Float[np.ndarray, "batch stage"], idx: np.ndarray) -> Any:
    """The first stage whose mean (over the prompts `idx`, (..., n)) holds half of the final mean in size."""
    mean = values[idx].mean(-2)
    return np.argmax(np.abs(mean) >= 0.5 * np.abs(mean[..., -1:]), axis=-1)


def logit_readouts(model: HookedModel, tokenizer: Any, problems: Problems, pairs: Sequence[tuple[str, str]] = PAIRS,
                   *, recording: Recording) -> Readouts:
    """`layer_readouts` of every problem (one pass per prompt), split by the model's error."""
    stages, values = layer_readouts(model, tokenizer, list(problems.texts), problems.table, pairs,
                                    problems.round_to)
    values["seeds"] = np.where(problems.low_error[values["prompt"].to_numpy()], "low error", "high error")
    return Readouts(stages, values, model.cfg.n_layers, recording)


@dataclasses.dataclass(frozen=True)
class Components:
    """Direct contributions of every head and MLP to the model-vs-average logit difference."""

    table: pd.DataFrame  # `attribution.summarize(..., per="component")`
    contrasts: tuple[Any, ...]  # the model's answer vs the mean of outputs, per prompt (None: none)
    n_layers: int
    recording: Recording

    @property
    def mlps(self) -> pd.DataFrame:
        mlp = self.table[self.table.label.str.endswith("_mlp_out")].reset_index(drop=True)
        return mlp.assign(layer=mlp.label.str.split("_").str[0].astype(int))

    def top(self, k: int = 10) -> pd.DataFrame:
        return self.table.reindex(self.table["mean"].abs().sort_values(ascending=False).index).head(k)

    def figure(self) -> Any:
        return plots.lines(self.mlps.assign(series="MLP"), x="layer", y="mean", group="series",
                           title="Direct effect of each MLP on the model-vs-average logit difference")

    def claims(self) -> list[claims.Claim]:
        mlps, n = self.mlps, self.n_layers
        layer = int(mlps.loc[mlps["mean"].abs().idxmax(), "layer"])
        return [self.recording.measure(LARGEST_DIRECT_MLP, float(layer), n_layers=n)]


def component_attribution(model: HookedModel, tokenizer: Any, problems: Problems, *, recording: Recording) -> Components:
    """`attribution.summarize` per component of the model's answer vs the mean of the outputs."""
    from optim_hunter.interp import attribution

    contrasts = answer_contrasts(tokenizer, list(problems.texts), problems.table["llm"], problems.table["average"],
                                 problems.round_to)
    table = attribution.summarize(model, contrasts, per="component")
    return Components(table, tuple(contrasts), model.cfg.n_layers, recording)


def top_neurons(model: HookedModel, contrasts: Sequence[Contrast | None], *, top: int = 10) -> pd.DataFrame:
    """The `top` neurons by mean direct effect (over contrasts) on their logit differences."""
    rows = [neuron_attribution(model, c, top=None) for c in contrasts if c is not None]
    mean = pd.concat(rows).groupby(["layer", "neuron"])["effect"].mean().reset_index()
    return mean.sort_values("effect", key=np.abs, ascending=False).head(top)


@torch.no_grad()
def induction_scores(model: HookedModel, tokenizer: Any, *, length: int = 25, repeats: int = 2, batch: int = 4,
                     seed: int = 0) -> Float[np.ndarray, "layer head"]:
    """Prefix-matching score of every head (`heads.prefix_matching_from_patterns`) on `batch`
    sequences of `length` random tokens repeated `repeats` times after a BOS token; the tokens are
    drawn as the pretrained induction chapter draws them (the middle 80% of ids, no special token)."""
    from optim_hunter.interp import heads, pretrained_induction

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
    from optim_hunter import positions

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


@dataclasses.dataclass(frozen=True)
class MLPAblation:
    """The model's MAE with the MLPs of consecutive layers zeroed, group by group; `errors` keeps
    the per-prompt absolute errors behind each MAE (NaN where the answer failed to parse)."""

    table: pd.DataFrame  # layers, last layer, mae, failed; the first row unablated
    errors: Float[np.ndarray, "batch row"]  # one column per row of `table`
    n_layers: int
    recording: Recording

    def worst_group(self, idx: np.ndarray) -> Any:
        """Over the prompts `idx` ((..., n), one row per resample): the index (among the ablated rows
        of `table`) of the group whose ablation gives the highest MAE. Failures are counted apart: a
        group whose every answer fails counts as the most damaging (the first such group on ties)."""
        errors = self.errors[idx][..., 1:]  # [..., prompt, group]
        answered = np.isfinite(errors).sum(-2)
        total = np.where(np.isfinite(errors), errors, 0.0).sum(-2)
        mae = np.where(answered > 0, total / np.maximum(answered, 1), np.inf)
        return np.argmax(mae, axis=-1)

    def worst_depth(self, idx: np.ndarray) -> Any:
        """The worst group's (`worst_group`) last layer over the number of layers."""
        return self.table["last layer"].to_numpy()[1:][self.worst_group(idx)] / self.n_layers

    def claims(self) -> list[claims.Claim]:
        n = len(self.errors)
        worst = self.table.iloc[1 + int(self.worst_group(np.arange(n)))]
        return [self.recording.measure(MLP_ABLATION_LATE, float(self.worst_depth(np.arange(n))),
                                       interval=claims.bootstrap_units(n, self.worst_depth, "prompts"), layers=worst["layers"],
                                       n_layers=self.n_layers)]


def mlp_ablation(model: HookedModel, tokenizer: Any, dataset: str, *, n_prompts: int, n_examples: int,
                 round_to: int | None = None, group: int | None = None, recording: Recording) -> MLPAblation:
    """Seeds 0..n_prompts-1 answered (greedy, batches of 32) with no ablation, then with the MLP
    outputs of each group of `group` consecutive layers zeroed (default 3 layers from 12 layers
    on, else 1); failed answers are counted, not scored."""
    from optim_hunter import llm_regressor
    from optim_hunter.interp import ablation

    n_layers = model.cfg.n_layers
    group = group or (3 if n_layers >= 12 else 1)
    round_to = task_round_to(dataset, round_to)
    splits = [make_split(dataset, n_examples, s, round_to) for s in range(n_prompts)]
    texts = [prompt_text(s, round_to) for s in splits]
    truth = np.array([float(s.y_query[0]) for s in splits])

    def run() -> np.ndarray:
        answers = llm_regressor.greedy_answers(model, tokenizer, texts, max_new_tokens=10, batch_size=32)
        return np.abs(answers.values - truth)

    def row(layers: str, last: int, errors: np.ndarray) -> dict[str, Any]:
        ok = np.isfinite(errors)
        return {"layers": layers, "last layer": last, "mae": float(errors[ok].mean()) if ok.any() else np.nan,
                "failed": int((~ok).sum())}

    clean = run()
    rows, errors = [row("none", -1, clean)], [clean]
    for layers in [list(range(start, min(start + group, n_layers))) for start in range(0, n_layers, group)]:
        with ablation.mlps_zeroed(model, layers):
            ablated = run()
        rows.append(row(f"{layers[0]}–{layers[-1]}", layers[-1], ablated))
        errors.append(ablated)
    return MLPAblation(pd.DataFrame(rows), np.stack(errors, 1), n_layers, recording)


@dataclasses.dataclass(frozen=True)
class Probes:
    """Held-out R² of ridge probes at every stage, one target at a time."""

    table: pd.DataFrame  # stage, index, target, r2
    recording: Recording

    @property
    def by_stage(self) -> pd.DataFrame:
        return self.table.pivot(index="stage", columns="target", values="r2")

    def figure(self) -> Any:
        return plots.lines(self.table, x="index", y="r2", group="target",
                           title="Held-out R² of linear probes at the answer position, by depth")

    def claims(self) -> list[claims.Claim]:
        best = self.table.loc[self.table.groupby("target", sort=False)["r2"].idxmax()].set_index("target")
        return [self.recording.measure(PROBE_BEST, float(row["r2"]), target=target, stage=row["stage"])
                for target, row in best.iterrows()]


def probe_study(readouts: Readouts, problems: Problems, targets: Sequence[str] = ("true", "linear_regression", "knn"),
                *, recording: Recording) -> Probes:
    """`probes.r2_by_layer` of each target column of `problems.table` on the readouts' stages."""
    from optim_hunter.interp import probes

    labels = probes.stage_labels(readouts.n_layers)
    rows = [{"stage": labels[s], "index": s, "target": key, "r2": r2}
            for key in targets for s, r2 in enumerate(probes.r2_by_layer(readouts.stages,
                                                                          problems.table[key].to_numpy()))]
    return Probes(pd.DataFrame(rows), recording)

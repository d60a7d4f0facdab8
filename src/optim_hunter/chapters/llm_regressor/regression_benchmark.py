"""The language model of the 004 study as an in-context regressor, beside every classical
baseline on the same problems, as result objects for the llm_regressor chapter.

  compare_llm   a language model (and a task-trained contrast) beside every baseline on several
                datasets (`Comparison`: ranks, regimes, parse failures, controls, claims)
  llm_curve     the language model's error against the number of examples (`LLMCurve`)

Their controls (the shuffled-y prompt and the mean-of-outputs baseline, paired per problem) are
`llm_controls`; the classical baselines alone (the Friedman #2 chapter) are
`optim_hunter.chapters.regressors_friedman2.baselines`; what both read of the results tables is
`benchmark_tables`.

Every result keeps its numbers in tables and holds the claims it measures (declared below, with
their criteria, before anything runs); a chapter shows `.figure()` / `.table` and records
`claims.record_all(result)`. The harness underneath is `optim_hunter.analysis.evaluation` (classical
methods) and `optim_hunter.analysis.llm_regressor.evaluate` (the language model), unchanged.

Each number a claim shows is a mean over problems (or a share of them), so its row carries the 95%
bootstrap interval over those problems (`claims.bootstrap`, the intervals of the tables), and a
verdict is decided on it: a margin inside the noise of the problems is *inconclusive*. Rows of the
language model decide a 004 claim only when it is a pretrained model (`zoo.is_pretrained`); a
task-trained model (`numeric-icl`) is a contrast, shown beside it, never deciding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from optim_hunter import zoo
from optim_hunter.analysis import evaluation, llm_regressor, regressors
from optim_hunter.chapters.llm_regressor.benchmark_tables import (
    display_name,
    errors_of,
    failures_by_size,
    mae_curve_figure,
    mean_interval,
)
from optim_hunter.chapters.llm_regressor.llm_controls import (
    control_name,
    control_rows,
    control_sentence,
    control_verdicts,
    controls_figure,
    controls_table,
)
from optim_hunter.report import claims, plots
from optim_hunter.report.claim_rows import Recording

LLM_MAE = claims.declare("regressor.{dataset}.llm_mae", "{lm} on {dataset} ({n_examples} examples): MAE ({place})",
                         source_seed="004", unit="MAE")
CONTRAST_MAE = claims.declare(
    "regressor.{dataset}.contrast_mae",
    "Contrast: the task-trained {contrast} on {dataset}: MAE (the pretrained model: {pretrained_mae})",
    source_seed="004", unit="MAE", role="contrast")  # a model the 004 study did not mean: never decides
PARSE_FAILURES = claims.declare(
    "regressor.llm.parse_failures", "Unparseable answers over all datasets (counted, never scored as numbers)",
    source_seed="004", unit="answers")
# The 004 text states neither number (it keeps only the code that printed its table): the bands
# below are ours, around what the project's issue attributes to the study, and carry no source value.
BEATS_ALL = claims.declare(
    "regressor.friedman2.beats_all_share",
    "Share of Friedman #2 problems where the model beats every classical method (the 004 text states no share)",
    source_seed="004", unit="share",
    criterion="our band for about half: share in [0.4, 0.6]", test=claims.between(0.4, 0.6))
MSE_REDUCTION = claims.declare(
    "regressor.friedman2.mse_reduction_when_best",
    "On the problems it wins, the model's MSE reduction against the best classical method (the 004 text "
    "states no number)",
    source_seed="004", unit="fraction",
    criterion="our band: reduction in [0.2, 0.3]", test=claims.between(0.2, 0.3))
WITHIN_10PCT = claims.declare(
    "regressor.friedman2.within_10pct_share",
    "Share of Friedman #2 problems where the model is within 10% of the best other method",
    source_seed="004", unit="share")


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    """A zoo model as an in-context regressor, with the most examples of each dataset its context holds."""

    name: str
    regressor: llm_regressor.LLMRegressor
    fits: dict[str, int]

    @classmethod
    def load(cls, name: str, datasets: Sequence[str], *, round_to: int = 2, max_new_tokens: int = 10,
             batch_size: int = 8) -> LanguageModel:
        model = zoo.load(name)
        fits = {d: llm_regressor.max_examples(model.tokenizer, d, model.cfg.n_ctx, round_to=round_to,
                                              max_new_tokens=max_new_tokens) for d in datasets}
        reg = llm_regressor.LLMRegressor(model, model.tokenizer, round_to=round_to,
                                         max_new_tokens=max_new_tokens, batch_size=batch_size)
        return cls(name, reg, fits)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The language model and every classical method on the same problems of each dataset, and
    the contrast models beside them (with as many examples as their context holds)."""

    lm: LanguageModel
    contrasts: tuple[LanguageModel, ...]
    results: pd.DataFrame  # the model and the classical methods (`evaluation.evaluate` rows)
    contrast_results: pd.DataFrame
    table: pd.DataFrame  # `evaluation.summarize` of everything
    n_examples: dict[str, int]
    n_seeds: dict[str, int]
    round_to: int
    recording: Recording
    control_results: pd.DataFrame | None = None  # the model's shuffled-y control (`control_name`)

    @property
    def model(self) -> str:
        return self.lm.name

    @property
    def controls(self) -> pd.DataFrame:
        """Per dataset: the model beside its shuffled-y control and the mean-of-outputs baseline
        (`controls_table`: MAEs, paired differences with their intervals, answer–truth correlations)."""
        parts = [self.results] if self.control_results is None else [self.results, self.control_results]
        return controls_table(pd.concat(parts, ignore_index=True), self.model, control_name(self.model),
                              self.datasets, self.n_examples)

    @property
    def verdicts(self) -> pd.DataFrame:
        """Per dataset: does the model beat the mean baseline, its shuffled control (`control_verdicts`)?"""
        return control_verdicts(self.controls)

    def control_sentence(self) -> str:
        return control_sentence(self.verdicts, self.model)

    def controls_figure(self) -> Any:
        return controls_figure(self.controls, f"{self.model}: paired differences of absolute error per problem "
                                              "(below 0: the model is better; 95% paired bootstrap CI)")

    @property
    def decides(self) -> bool:
        """Whether the model's rows may decide a 004 claim: a pretrained model, not a task-trained one."""
        return zoo.is_pretrained(self.model)

    @property
    def datasets(self) -> list[str]:
        return list(self.n_examples)

    @property
    def setup(self) -> pd.DataFrame:
        """Examples (the context's cap applied) and seeds per dataset, for the model and each contrast."""
        rows = {"seeds": self.n_seeds, f"examples ({self.model})": self.n_examples}
        for c in self.contrasts:
            rows[f"examples ({c.name})"] = {d: min(n, c.fits[d]) for d, n in self.n_examples.items()}
        return pd.DataFrame(rows)

    @property
    def failures(self) -> pd.DataFrame:
        """The model's unparseable answers (dataset, seed, reason)."""
        r = self.results
        return r[(r.method == self.model) & r.failed][["dataset", "seed", "error"]]

    @property
    def ranked(self) -> pd.DataFrame:
        """The summary with each method's place by MAE within its dataset."""
        return self.table.assign(place=self.table.groupby("dataset")["mae"].rank(method="min"))

    @property
    def standing(self) -> pd.DataFrame:
        """The model, the contrasts and the mean-of-outputs baseline: MAE, rank, place, failures."""
        shown = [self.model, *(c.name for c in self.contrasts), "average"]
        r = self.ranked
        return r[r.method.isin(shown)].set_index(["dataset", "method"])[
            ["mae", "mae_low", "mae_high", "mse", "mean_rank", "place", "n_failed"]]

    def figures(self) -> list[Any]:
        """Error bars of every method's MAE, one figure per dataset."""
        out = []
        for dataset in self.datasets:
            part = self.table[self.table.dataset == dataset].reset_index(drop=True)
            out.append(plots.error_bars(
                part, value="mae", low="mae_low", high="mae_high", log_x=True,
                title=f"{dataset}, {self.n_examples[dataset]} examples, {self.n_seeds[dataset]} seeds: MAE (95% CI)"))
        return out

    def regimes(self) -> Regimes:
        return Regimes(evaluation.regimes(self.results, self.model), self.recording,
                       evaluation.regime_problems(self.results, self.model), self.decides)

    def claims(self) -> list[claims.Claim]:
        ranked = self.ranked
        mine = ranked[ranked.method == self.model].set_index("dataset")
        rows = []
        for dataset in self.datasets:
            row = mine.loc[dataset]
            n_methods = int((self.table.dataset == dataset).sum())
            place = f"place {int(row['place'])} of {n_methods}" if pd.notna(row["place"]) else "no place"
            measured = float(row["mae"]) if pd.notna(row["mae"]) else "every answer unparseable"
            rows.append(self.recording.measure(
                LLM_MAE, measured, lm=self.model, dataset=dataset, n_examples=self.n_examples[dataset], place=place,
                interval=mean_interval(errors_of(self.results, self.model, dataset=dataset)),
                decides_source=self.decides))
        for c in self.contrasts:
            theirs = ranked[ranked.method == c.name].set_index("dataset")
            at = dataclasses.replace(self.recording, model=c.name)
            rows += [at.measure(CONTRAST_MAE, float(theirs.loc[d, "mae"]), dataset=d, contrast=c.name,
                                pretrained_mae=f"{mine.loc[d, 'mae']:.4g}",
                                interval=mean_interval(errors_of(self.contrast_results, c.name, dataset=d)))
                     for d in self.datasets]
        rows.append(self.recording.measure(PARSE_FAILURES, float(len(self.failures)), decides_source=self.decides))
        rows += control_rows(self.recording, self.controls, self.model, self.n_examples, self.decides)
        return rows


def compare_llm(lm: LanguageModel, datasets: Sequence[str], *, n_seeds: dict[str, int], wanted_examples: int = 25,
                round_to: int = 2, contrasts: Sequence[LanguageModel] = (), recording: Recording,
                shuffled: Sequence[str] | None = None) -> Comparison:
    """For each dataset and its seeds: every classical method and the language model on the same
    rounded problems (`wanted_examples`, capped by the model's context); each contrast model on
    the same problems with as many of the examples as its context holds; on the datasets in
    `shuffled` (all by default) the model's shuffled-y control on the same problems."""
    n_examples = {d: min(wanted_examples, lm.fits[d]) for d in datasets}
    shuffled = list(datasets) if shuffled is None else [d for d in datasets if d in set(shuffled)]
    control_parts = [llm_regressor.evaluate(lm.regressor, control_name(lm.name), d, n_examples=n_examples[d],
                                            seeds=range(n_seeds[d]), round_to=round_to, shuffle_y=True)
                     for d in shuffled]
    parts, contrast_parts = [], []
    for dataset in datasets:
        seeds = range(n_seeds[dataset])
        parts.append(evaluation.evaluate(regressors.names(), dataset, n_examples=n_examples[dataset],
                                         seeds=seeds, round_to=round_to))
        parts.append(llm_regressor.evaluate(lm.regressor, lm.name, dataset, n_examples=n_examples[dataset],
                                            seeds=seeds, round_to=round_to))
        for c in contrasts:
            contrast_parts.append(llm_regressor.evaluate(
                c.regressor, c.name, dataset, n_examples=min(n_examples[dataset], c.fits[dataset]), seeds=seeds,
                round_to=round_to, progress=False).assign(n_examples=n_examples[dataset]))
    results = pd.concat(parts, ignore_index=True)
    table = evaluation.summarize(pd.concat([results, *contrast_parts], ignore_index=True))
    contrast_results = pd.concat(contrast_parts, ignore_index=True) if contrast_parts else results.iloc[:0]
    control_results = pd.concat(control_parts, ignore_index=True) if control_parts else results.iloc[:0]
    return Comparison(lm, tuple(contrasts), results, contrast_results, table, n_examples,
                      {d: n_seeds[d] for d in datasets}, round_to, recording, control_results)


@dataclasses.dataclass(frozen=True)
class Regimes:
    """`evaluation.regimes` of the model: how often it beats every classical method, per dataset,
    with the per-problem outcomes (`evaluation.regime_problems`) its intervals resample."""

    table: pd.DataFrame
    recording: Recording
    problems: pd.DataFrame  # per problem: mine, best_other, wins, close
    decides: bool = True  # the model is pretrained: its rows may decide a 004 claim

    def share(self, dataset: str, column: str = "beats_all") -> float:
        return float(self.table.set_index("dataset").loc[dataset, column])

    def interval(self, dataset: str, column: str = "wins") -> claims.Interval:
        """95% bootstrap interval over the problems of the share where `column` ("wins", "close") holds."""
        return claims.bootstrap(self.problems.loc[dataset, column].to_numpy(dtype=float), units="problems")

    def reduction_interval(self, dataset: str) -> claims.Interval | None:
        """Paired 95% bootstrap interval, over the problems the model won, of its MSE reduction
        against the best other method on them (None when it won none). The set of won problems is
        taken as found: the interval is of the mean over them."""
        won = self.problems.loc[dataset]
        won = won[won["wins"]]
        if not len(won):
            return None
        return claims.bootstrap(won["mine"].to_numpy(), won["best_other"].to_numpy(),
                                statistic=evaluation.mse_reduction, paired=True, units="problems won")

    def claims(self) -> list[claims.Claim]:
        f2 = self.table.set_index("dataset").loc["friedman2"]
        reduction = f2["mse_reduction_when_best"]
        at = dict(decides_source=self.decides)
        return [self.recording.measure(BEATS_ALL, float(f2["beats_all"]), interval=self.interval("friedman2"), **at),
                self.recording.measure(MSE_REDUCTION, float(reduction) if pd.notna(reduction) else "no problem won",
                                       interval=self.reduction_interval("friedman2"), **at),
                self.recording.measure(WITHIN_10PCT, float(f2["within_10pct"]),
                                       interval=self.interval("friedman2", "close"), **at)]


LLM_CURVE = claims.declare(
    "regressor.{dataset}.llm_mae_falls_with_examples",
    "{lm} {name} MAE with {first} vs {last} examples", source_seed="004", unit="MAE")


@dataclasses.dataclass(frozen=True)
class LLMCurve:
    """MAE of the language model, its shuffled-y control and a few methods against the number of examples."""

    table: pd.DataFrame  # `evaluation.summarize` rows (the shuffled control as `control_name(model)`)
    model: str
    dataset: str
    recording: Recording
    results: pd.DataFrame | None = None  # the rows summarized (per problem)

    def figure(self) -> Any:
        return mae_curve_figure(self.table, self.dataset)

    @property
    def mae(self) -> pd.DataFrame:
        return self.table.pivot(index="method", columns="n_examples", values="mae")

    @property
    def failures(self) -> pd.DataFrame:
        return failures_by_size(self.table)

    @property
    def controls(self) -> pd.DataFrame:
        """Per size: `controls_table` (the model against its shuffled control and the mean baseline,
        paired per problem); the shuffled columns empty where the control did not run (one example:
        nothing to permute)."""
        if self.results is None:
            return pd.DataFrame()
        sizes = sorted(self.results["n_examples"].unique())
        parts = [controls_table(self.results, self.model, control_name(self.model), [self.dataset], int(n))
                 .assign(n_examples=int(n)) for n in sizes]
        return pd.concat(parts).reset_index().set_index("n_examples")

    def controls_figure(self) -> Any:
        long = []
        for n, row in self.controls.iterrows():
            for label in ("mean", "shuffled"):
                if np.isfinite(row[f"model − {label}"]):
                    long.append({"n_examples": n, "comparison": f"model − {label}",
                                 "difference": row[f"model − {label}"]})
        return plots.lines(pd.DataFrame(long), x="n_examples", y="difference", group="comparison",
                           title=f"{display_name(self.dataset)}: paired difference of absolute error against the "
                                 "number of examples (below 0: the model is better)")

    def claims(self) -> list[claims.Claim]:
        mine = self.table[self.table.method == self.model].set_index("n_examples")["mae"].sort_index()
        return [self.recording.measure(
            LLM_CURVE, f"{mine.iloc[0]:.4g} → {mine.iloc[-1]:.4g}", lm=self.model, dataset=self.dataset,
            name=display_name(self.dataset), first=int(mine.index[0]), last=int(mine.index[-1]),
            decides_source=zoo.is_pretrained(self.model))]


def llm_curve(comparison: Comparison, sizes: Sequence[int], *, n_seeds: int, methods: Sequence[str],
              dataset: str = "friedman2", shuffled: bool = True) -> LLMCurve:
    """The model and `methods` on the first `n_seeds` problems at each size below the comparison's
    (each evaluated afresh), and at the comparison's size (its answers reused); with `shuffled`, the
    model's shuffled-y control at every size of two examples or more (reused at the comparison's
    size where the comparison ran it)."""
    top, r = comparison.n_examples[dataset], comparison.results
    sizes = sorted({n for n in sizes if n < top})
    same = (r.dataset == dataset) & (r.seed < n_seeds) & r.method.isin([*methods, comparison.model])
    parts = [r[same]]
    control = control_name(comparison.model)
    if sizes:
        parts = [evaluation.evaluate(list(methods), dataset, n_examples=sizes, seeds=range(n_seeds),
                                     round_to=comparison.round_to),
                 llm_regressor.evaluate(comparison.lm.regressor, comparison.model, dataset, n_examples=sizes,
                                        seeds=range(n_seeds), round_to=comparison.round_to), *parts]
    if shuffled:
        c = comparison.control_results if comparison.control_results is not None else r.iloc[:0]
        reused = c[(c.dataset == dataset) & (c.seed < n_seeds) & (c.method == control)]
        todo = [n for n in sizes if n > 1] + ([] if len(reused) else [top])
        if todo:
            parts.append(llm_regressor.evaluate(comparison.lm.regressor, control, dataset, n_examples=todo,
                                                seeds=range(n_seeds), round_to=comparison.round_to, shuffle_y=True))
        parts.append(reused)
    results = pd.concat(parts, ignore_index=True)
    table = evaluation.summarize(results)
    return LLMCurve(table, comparison.model, dataset, comparison.recording, results)

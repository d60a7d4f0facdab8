"""The regression benchmark of the 004 study: classical baselines and language models on the same
in-context problems, as result objects for the two regressor chapters.

  baselines     every method on one dataset and size (`Baselines`: table, error bars, the best and
                mean-of-outputs MAE as claims)
  benchmark     methods over several sizes (`Benchmark`: learning curves, failures per size)
  published     llm4regression's published Friedman #2 MAEs against our bootstrap intervals
  compare_llm   a language model (and a task-trained contrast) beside every baseline on several
                datasets (`Comparison`: ranks, regimes, parse failures, claims)
  llm_curve     the language model's error against the number of examples (`LLMCurve`)

Every result keeps its numbers in tables and holds the claims it measures (declared below, with
their criteria, before anything runs); a chapter shows `.figure()` / `.table` and records
`claims.record_all(result)`. The harness underneath is `optim_hunter.evaluation` (classical
methods) and `optim_hunter.llm_regressor.evaluate` (the language model), unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from optim_hunter import claims, evaluation, llm_regressor, plots, regressors
from optim_hunter.claim_rows import Recording

NAMES = {"friedman1": "Friedman #1", "friedman2": "Friedman #2", "friedman3": "Friedman #3"}


def display_name(dataset: str) -> str:
    return NAMES.get(dataset, dataset)


# --- classical baselines ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """`evaluation.evaluate` rows of some methods on one dataset, and their `summarize` table."""

    results: pd.DataFrame
    table: pd.DataFrame
    dataset: str
    n_seeds: int
    recording: Recording

    @property
    def sizes(self) -> list[int]:
        return sorted(self.table["n_examples"].unique().tolist())

    def figure(self, value: str = "mae", *, log_x: bool = False) -> Any:
        """Error bars of `value` ("mae" or "mse") with 95% bootstrap intervals, at the largest size."""
        part = self.table[self.table["n_examples"] == self.sizes[-1]]
        scale = ", log scale" if log_x else ""
        return plots.error_bars(
            part, value=value, low=f"{value}_low", high=f"{value}_high", log_x=log_x,
            title=f"{display_name(self.dataset)}, {self.sizes[-1]} examples, {self.n_seeds} seeds: "
                  f"{value.upper()} (95% CI{scale})")

    def curve_figure(self) -> Any:
        return plots.lines(self.table, x="n_examples", y="mae", group="method", log_y=True,
                           title=f"{display_name(self.dataset)}: MAE against the number of in-context examples")

    @property
    def failures(self) -> pd.DataFrame:
        """Failed predictions per method and size (counted, never scored as numbers)."""
        return self.table.pivot(index="method", columns="n_examples", values="n_failed")

    def claims(self) -> list[claims.Claim]:
        return []


BEST_BASELINE = claims.declare(
    "regressor.{dataset}.best_baseline_mae",
    "Best classical method on {name} with {n_examples} examples ({method}): MAE",
    source_seed="004", unit="MAE")
AVERAGE_BASELINE = claims.declare(
    "regressor.{dataset}.average_baseline_mae",
    "Mean-of-outputs baseline on {name} with {n_examples} examples: MAE",
    source_seed="004", unit="MAE")


@dataclasses.dataclass(frozen=True)
class Baselines(Benchmark):
    """The baselines at one size; its claims are the best method's and the mean-of-outputs MAE."""

    @property
    def best(self) -> pd.Series:
        return self.table.iloc[0]

    def claims(self) -> list[claims.Claim]:
        best, n = self.best, int(self.sizes[-1])
        average = self.table.set_index("method").loc["average"]
        common = dict(dataset=self.dataset, name=display_name(self.dataset), n_examples=n)
        return [self.recording.measure(BEST_BASELINE, float(best["mae"]), method=best["method"], **common),
                self.recording.measure(AVERAGE_BASELINE, float(average["mae"]), **common)]


def benchmark(methods: Sequence[str], dataset: str, *, n_examples: int | Sequence[int], seeds: Sequence[int],
              round_to: int | None = None, recording: Recording) -> Benchmark:
    """Every method on every (size, seed) problem of `dataset`, summarized."""
    results = evaluation.evaluate(list(methods), dataset, n_examples=n_examples, seeds=seeds, round_to=round_to)
    return Benchmark(results, evaluation.summarize(results), dataset, len(list(seeds)), recording)


def baselines(dataset: str, *, n_examples: int, seeds: Sequence[int], recording: Recording,
              methods: Sequence[str] | None = None) -> Baselines:
    """Every registered method (or `methods`; "average" among them) at one size."""
    found = benchmark(regressors.names() if methods is None else methods, dataset, n_examples=n_examples,
                      seeds=seeds, recording=recording)
    return Baselines(**{f.name: getattr(found, f.name) for f in dataclasses.fields(found)})


# --- published numbers ---------------------------------------------------------------------------

# llm4regression (Vacareanu et al., 2024), Friedman #2, 50 examples, two decimals, seeds 1-100: MAE
LLM4REGRESSION_FRIEDMAN2 = {"lr_poly": 3.84, "gradient_boosting": 75.4, "random_forest": 110.9,
                            "linear_regression": 117.9, "knn": 244.2, "average": 354.9}

PUBLISHED_MAE = {  # one declaration per published number (its source value)
    method: claims.declare(
        f"regressor.friedman2.llm4regression.{method}_mae", f"{method} on Friedman #2 (50 examples, 2 decimals): MAE",
        source_seed="llm4regression", source_value=value, unit="MAE",
        criterion="published value inside our 95% CI [{low}, {high}] over {n_seeds} seeds",
        test=lambda interval, value=value: interval[0] <= value <= interval[1])
    for method, value in LLM4REGRESSION_FRIEDMAN2.items()
}


@dataclasses.dataclass(frozen=True)
class Published:
    """Our MAE with its 95% bootstrap interval beside each published MAE."""

    table: pd.DataFrame  # method -> published_mae, mae, mae_low, mae_high, inside_ci
    n_seeds: int
    recording: Recording

    def claims(self) -> list[claims.Claim]:
        return [self.recording.measure(PUBLISHED_MAE[method], float(row["mae"]), tested=(row["mae_low"], row["mae_high"]),
                                       low=f"{row['mae_low']:.3g}", high=f"{row['mae_high']:.3g}", n_seeds=self.n_seeds)
                for method, row in self.table.iterrows()]


def published(methods: Sequence[str] = tuple(LLM4REGRESSION_FRIEDMAN2), *, seeds: Sequence[int],
              recording: Recording, n_examples: int = 50, round_to: int = 2) -> Published:
    """llm4regression's protocol on Friedman #2 (50 examples rounded to two decimals) on `seeds`:
    is each published MAE (of `methods`) inside our interval?"""
    seeds, dataset = list(seeds), "friedman2"
    values = {m: LLM4REGRESSION_FRIEDMAN2[m] for m in methods}
    ours = evaluation.summarize(evaluation.evaluate(list(values), dataset, n_examples=n_examples, seeds=seeds,
                                                    round_to=round_to)).set_index("method")
    ours["published_mae"] = pd.Series(values)
    ours["inside_ci"] = ours.eval("mae_low <= published_mae <= mae_high")
    table = ours.loc[list(values), ["published_mae", "mae", "mae_low", "mae_high", "inside_ci"]]
    return Published(table, len(seeds), recording)


# --- a language model beside the baselines -------------------------------------------------------

LLM_MAE = claims.declare("regressor.{dataset}.llm_mae", "{lm} on {dataset} ({n_examples} examples): MAE ({place})",
                         source_seed="004", unit="MAE")
CONTRAST_MAE = claims.declare(
    "regressor.{dataset}.contrast_mae",
    "Contrast: the task-trained {contrast} on {dataset}: MAE (the pretrained model: {pretrained_mae})",
    source_seed="004", unit="MAE")
PARSE_FAILURES = claims.declare(
    "regressor.llm.parse_failures", "Unparseable answers over all datasets (counted, never scored as numbers)",
    source_seed="004", unit="answers")
BEATS_ALL = claims.declare(
    "regressor.friedman2.beats_all_share",
    "Share of Friedman #2 problems where the model beats every classical method",
    source_seed="004", source_value=0.5, unit="share",
    criterion="share in [0.4, 0.6] (about half)", test=lambda share: 0.4 <= share <= 0.6)
MSE_REDUCTION = claims.declare(
    "regressor.friedman2.mse_reduction_when_best",
    "On the problems it wins, the model's MSE reduction against the best classical method",
    source_seed="004", source_value="0.2–0.3", unit="fraction",
    criterion="reduction in [0.2, 0.3]", test=lambda reduction: 0.2 <= reduction <= 0.3)
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
        from optim_hunter import zoo

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

    @property
    def model(self) -> str:
        return self.lm.name

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
        return Regimes(evaluation.regimes(self.results, self.model), self.recording)

    def claims(self) -> list[claims.Claim]:
        ranked = self.ranked
        mine = ranked[ranked.method == self.model].set_index("dataset")
        rows = []
        for dataset in self.datasets:
            row = mine.loc[dataset]
            n_methods = int((self.table.dataset == dataset).sum())
            place = f"place {int(row['place'])} of {n_methods}" if pd.notna(row["place"]) else "no place"
            measured = float(row["mae"]) if pd.notna(row["mae"]) else "every answer unparseable"
            rows.append(self.recording.measure(LLM_MAE, measured, lm=self.model, dataset=dataset,
                                               n_examples=self.n_examples[dataset], place=place))
        for c in self.contrasts:
            theirs = ranked[ranked.method == c.name].set_index("dataset")
            at = dataclasses.replace(self.recording, model=c.name)
            rows += [at.measure(CONTRAST_MAE, float(theirs.loc[d, "mae"]), dataset=d, contrast=c.name,
                                pretrained_mae=f"{mine.loc[d, 'mae']:.4g}") for d in self.datasets]
        rows.append(self.recording.measure(PARSE_FAILURES, float(len(self.failures))))
        return rows


def compare_llm(lm: LanguageModel, datasets: Sequence[str], *, n_seeds: dict[str, int], wanted_examples: int = 25,
                round_to: int = 2, contrasts: Sequence[LanguageModel] = (), recording: Recording) -> Comparison:
    """For each dataset and its seeds: every classical method and the language model on the same
    rounded problems (`wanted_examples`, capped by the model's context); each contrast model on
    the same problems with as many of the examples as its context holds."""
    n_examples = {d: min(wanted_examples, lm.fits[d]) for d in datasets}
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
    return Comparison(lm, tuple(contrasts), results, contrast_results, table, n_examples,
                      {d: n_seeds[d] for d in datasets}, round_to, recording)


@dataclasses.dataclass(frozen=True)
class Regimes:
    """`evaluation.regimes` of the model: how often it beats every classical method, per dataset."""

    table: pd.DataFrame
    recording: Recording

    def share(self, dataset: str, column: str = "beats_all") -> float:
        return float(self.table.set_index("dataset").loc[dataset, column])

    def claims(self) -> list[claims.Claim]:
        f2 = self.table.set_index("dataset").loc["friedman2"]
        reduction = f2["mse_reduction_when_best"]
        return [self.recording.measure(BEATS_ALL, float(f2["beats_all"])),
                self.recording.measure(MSE_REDUCTION, float(reduction) if pd.notna(reduction) else "no problem won"),
                self.recording.measure(WITHIN_10PCT, float(f2["within_10pct"]))]


LLM_CURVE = claims.declare(
    "regressor.{dataset}.llm_mae_falls_with_examples",
    "{lm} {name} MAE with {first} vs {last} examples", source_seed="004", unit="MAE")


@dataclasses.dataclass(frozen=True)
class LLMCurve:
    """MAE of the language model and a few methods against the number of examples."""

    table: pd.DataFrame  # `evaluation.summarize` rows
    model: str
    dataset: str
    recording: Recording

    def figure(self) -> Any:
        return plots.lines(self.table, x="n_examples", y="mae", group="method", log_y=True,
                           title=f"{display_name(self.dataset)}: MAE against the number of in-context examples")

    @property
    def mae(self) -> pd.DataFrame:
        return self.table.pivot(index="method", columns="n_examples", values="mae")

    @property
    def failures(self) -> pd.DataFrame:
        return self.table.pivot(index="method", columns="n_examples", values="n_failed")

    def claims(self) -> list[claims.Claim]:
        mine = self.table[self.table.method == self.model].set_index("n_examples")["mae"].sort_index()
        return [self.recording.measure(
            LLM_CURVE, f"{mine.iloc[0]:.4g} → {mine.iloc[-1]:.4g}", lm=self.model, dataset=self.dataset,
            name=display_name(self.dataset), first=int(mine.index[0]), last=int(mine.index[-1]))]


def llm_curve(comparison: Comparison, sizes: Sequence[int], *, n_seeds: int, methods: Sequence[str],
              dataset: str = "friedman2") -> LLMCurve:
    """The model and `methods` on the first `n_seeds` problems at each size below the comparison's
    (each evaluated afresh), and at the comparison's size (its answers reused)."""
    top, r = comparison.n_examples[dataset], comparison.results
    sizes = sorted({n for n in sizes if n < top})
    same = (r.dataset == dataset) & (r.seed < n_seeds) & r.method.isin([*methods, comparison.model])
    parts = [r[same]]
    if sizes:
        parts = [evaluation.evaluate(list(methods), dataset, n_examples=sizes, seeds=range(n_seeds),
                                     round_to=comparison.round_to),
                 llm_regressor.evaluate(comparison.lm.regressor, comparison.model, dataset, n_examples=sizes,
                                        seeds=range(n_seeds), round_to=comparison.round_to), *parts]
    table = evaluation.summarize(pd.concat(parts, ignore_index=True))
    return LLMCurve(table, comparison.model, dataset, comparison.recording)

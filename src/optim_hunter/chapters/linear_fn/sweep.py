"""The format sweep of the y = a x + b chapter: accuracy and P(correct) against the number of
examples for every prompt format and order (`format_sweep` -> `Sweep`), the controls of its last
example (the shuffled-y prompt and the constant mean answer), and the Bayesian-update fit of the
best setting's log-odds (`BayesFit`), with the claims they measure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float
from scipy.stats import linregress

from optim_hunter.chapters.linear_fn.linear_fn import (
    CHAPTER,
    FORMATS,
    ORDERS,
    QUOTES,
    Config,
    Problem,
    Setting,
    encode_answers,
    forced,
    setting_problems,
)
from optim_hunter.core.hooks import HookedModel
from optim_hunter.report import claims, plots
from optim_hunter.report.claim_rows import Recording


def log_odds(log_p: Float[np.ndarray, "..."]) -> Float[np.ndarray, "..."]:
    p = np.clip(np.exp(log_p), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def icl_scores(model: HookedModel, tokenizer: Any, setting: Setting, cfg: Config, *, seed: int = 0
               ) -> tuple[Float[np.ndarray, "batch example"], np.ndarray]:
    """Per prompt and example i: log P of example i's answer given the i examples before it
    (teacher-forced), and whether greedy decoding writes it exactly; one forward per prompt."""
    probs = setting_problems(setting, cfg.n_prompts, cfg.n_examples, x_max=cfg.x_max, seed=seed)
    return forced(model, [encode_answers(tokenizer, p, with_query=False) for p in probs])


def curve_of(log_p: Float[np.ndarray, "batch example"], exact: np.ndarray) -> pd.DataFrame:
    """Means over prompts of `icl_scores`: examples, accuracy (greedy answer exact), p_correct,
    log_p (mean log P), log_odds (mean)."""
    return pd.DataFrame({
        "examples": np.arange(log_p.shape[1]), "accuracy": exact.mean(0),
        "p_correct": np.exp(log_p).mean(0), "log_p": log_p.mean(0), "log_odds": log_odds(log_p).mean(0),
    })


def icl_curve(model: HookedModel, tokenizer: Any, setting: Setting, cfg: Config, *, seed: int = 0
              ) -> pd.DataFrame:
    """Accuracy and P(correct) against the number of examples seen (`curve_of` of `icl_scores`):
    example i of a prompt is scored (teacher-forced) with the i examples before it."""
    return curve_of(*icl_scores(model, tokenizer, setting, cfg, seed=seed))


# --- controls: the shuffled-y prompt and the constant answer ---------------------------------------

SHUFFLE_SEED = 2024  # one fixed permutation per prompt


def shuffled_problem(problem: Problem, seed: int) -> Problem:
    """The shuffled-y control of a prompt: the same x values, format and query, the examples' y values
    permuted among the lines (a fixed permutation for `seed`, never the identity when there are two
    lines or more): the same numbers are written, only their pairing with x is lost."""
    n = len(problem.xs)
    order = np.random.default_rng([SHUFFLE_SEED, seed]).permutation(n)
    if n > 1 and (order == np.arange(n)).all():
        order = np.roll(order, 1)
    return dataclasses.replace(problem, ys=problem.example_ys[order])


def last_line_problems(setting: Setting, cfg: Config, *, seed: int = 0, shuffle: bool = False) -> list[Problem]:
    """The sweep's prompts (`icl_scores`) asking their last example as the query: the first
    n_examples − 1 lines, then that example's x; with `shuffle`, the lines' y values permuted
    (`shuffled_problem`, seeded by the prompt's index)."""
    out = []
    for i, p in enumerate(setting_problems(setting, cfg.n_prompts, cfg.n_examples, x_max=cfg.x_max, seed=seed)):
        last = dataclasses.replace(p, xs=p.xs[:-1], x=int(p.xs[-1]))
        out.append(shuffled_problem(last, seed * 100_003 + i) if shuffle else last)
    return out


def query_scores(model: HookedModel, tokenizer: Any, probs: Sequence[Problem]
                 ) -> tuple[Float[np.ndarray, " batch"], np.ndarray]:
    """Per prompt: log P of the query's correct answer (a x + b) given its lines (teacher-forced), and
    whether greedy decoding writes it exactly."""
    log_p, exact = forced(model, [encode_answers(tokenizer, p) for p in probs])
    last = [len(encode_answers(tokenizer, p).spans) - 1 for p in probs]
    rows = np.arange(len(probs))
    return log_p[rows, last], exact[rows, last]


def constant_answer(probs: Sequence[Problem]) -> np.ndarray:
    """The constant-answer baseline: per prompt, whether the mean of the examples' y values (rounded;
    every y is distinct here, so the most frequent answer is no better defined) is the query's answer."""
    return np.array([int(np.rint(np.mean(p.example_ys))) == p.answer for p in probs])


def paired_gain(mine: np.ndarray, control: np.ndarray, units: str = "prompts") -> tuple[float, claims.Interval]:
    """Mean of mine − control over the prompts, with its paired 95% bootstrap interval."""
    mine, control = np.asarray(mine, dtype=float), np.asarray(control, dtype=float)
    interval = claims.bootstrap(mine, control, statistic=lambda a, b, axis=-1: np.mean(a - b, axis=axis),
                                paired=True, units=units)
    return float(np.mean(mine - control)), interval


def line_fits(x: Float[np.ndarray, " n"], y: Float[np.ndarray, "... n"]) -> dict[str, Any]:
    """Least-squares lines of each row of `y` on `x`: slope, intercept and r (0 for a flat row)."""
    x = np.asarray(x, dtype=float)
    dx, dy = x - x.mean(), y - y.mean(-1, keepdims=True)
    sxx, syy, sxy = (dx**2).sum(), (dy**2).sum(-1), (dy * dx).sum(-1)
    slope = sxy / sxx
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(syy > 0, sxy / np.sqrt(sxx * np.where(syy > 0, syy, 1.0)), 0.0)
    return {"slope": np.asarray(slope), "intercept": np.asarray(y.mean(-1) - slope * x.mean()), "r": r}


def _fit(x: pd.Series, y: pd.Series) -> dict[str, float]:
    """The least-squares line of y on x (two columns of a table): slope, intercept, R^2."""
    fit = linregress(x, y)
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue**2)}


# Claims, declared with their criteria before any number is measured.
R2_ADDITIVE = 0.9

TOP1 = claims.declare(
    "linear_fn.top1_accuracy",
    "Greedy answer exactly 2x + 3, best setting ({setting}), mean over {late_from}+ examples (query x unseen); "
    "the best of the settings on the same prompts, so biased upwards",
    source_seed="002", source_value="correct answer", source_quote=QUOTES["correct"], unit="accuracy",
    test=claims.at_least(0.5), criterion="accuracy >= 0.5 (our threshold)")
_CONTROL = ("paired over the {n} prompts: the last example ({k} examples before it) asked after its lines, minus "
            "the same prompt with the y values permuted among the lines (prompt {real}, shuffled control {shuffled}, "
            "constant mean answer {constant})")
BEATS_SHUFFLED = claims.declare(
    "linear_fn.beats_shuffled_control",
    "Best setting ({setting}) beats its shuffled-y control: greedy accuracy, " + _CONTROL,
    source_seed="002", unit="accuracy difference", test=claims.above(0.0), examples=(0.5, -0.5),
    criterion="> 0 over the whole interval: the answers use the pairing of x and y (in-context learning shown; "
              "an interval across 0 is inconclusive; our control)")
P_BEATS_SHUFFLED = claims.declare(
    "linear_fn.p_correct_beats_shuffled_control",
    "Best setting ({setting}) beats its shuffled-y control: P(correct answer), " + _CONTROL,
    source_seed="002", unit="P difference", test=claims.above(0.0), examples=(0.5, -0.5),
    criterion="> 0 over the whole interval (our control)")
BEST_SETTING = claims.declare("linear_fn.best_setting", "Setting (format · order) with the best accuracy",
                              source_seed="002", source_value="(x, y) lines",
                              source_quote=QUOTES["format"], unit="setting")
BAYES_SLOPE = claims.declare(
    "linear_fn.bayes.slope",
    "Linear fit of the mean log-odds of the correct answer against the number of examples: slope",
    source_seed="002", unit="nats per example")
BAYES_INTERCEPT = claims.declare("linear_fn.bayes.intercept", "Same fit: intercept", source_seed="002", unit="nats")
BAYES_LOG_P_SLOPE = claims.declare(
    "linear_fn.bayes.log_p_slope", "Linear fit of mean log P(correct) against the number of examples: slope",
    source_seed="002", source_value="log c per example", source_quote=QUOTES["log_c"], unit="nats per example")
BAYES_ADDITIVE = claims.declare(
    "linear_fn.bayes.additive",
    "Evidence adds up: the mean log-odds grow linearly with the number of examples (R² of the line, signed by "
    "its slope: r·|r|)",
    source_seed="002", source_value="additive (Bayesian) updates", source_quote=QUOTES["additive"], unit="R²",
    test=claims.at_least(R2_ADDITIVE),
    criterion=f"R² >= {R2_ADDITIVE} with a positive slope (r·|r| >= {R2_ADDITIVE}; our threshold)")


@dataclasses.dataclass(frozen=True)
class BayesFit:
    """Lines through the best setting's mean log-odds and mean log P(correct) from one example on
    (zero examples is the prior, not an update); `log_p` holds the per-prompt values the means
    average, so every fitted number has a bootstrap interval over prompts."""

    curve: pd.DataFrame  # the best setting's `icl_curve` rows
    label: str
    recording: Recording
    log_p: Float[np.ndarray, "batch example"] | None = None  # per prompt: log P(correct) of example i

    @property
    def fit(self) -> dict[str, float]:
        c = self.curve[self.curve["examples"] >= 1]
        odds, logp = _fit(c["examples"], c["log_odds"]), _fit(c["examples"], c["log_p"])
        return {**odds, "log_p_slope": logp["slope"], "log_p_r2": logp["r2"]}

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame([self.fit])

    def figure(self) -> Any:
        fit = self.fit
        c = self.curve.assign(fit=lambda t: fit["intercept"] + fit["slope"] * t["examples"])
        return plots.lines(c.melt(id_vars="examples", value_vars=["log_odds", "fit"], var_name="series",
                                  value_name="log-odds"), x="examples", y="log-odds", group="series",
                           title=f"{self.label}: mean log-odds of the correct answer, and the line "
                                 f"fitted from 1 example (R² = {fit['r2']:.2f})")

    def intervals(self) -> dict[str, claims.Interval]:
        """Bootstrap intervals over prompts of the fits of the resampled prompts' mean curves:
        slope, intercept, log P slope and r·|r| (R² signed by the slope)."""
        if self.log_p is None:
            return {}
        examples = np.arange(self.log_p.shape[1], dtype=float)
        x, odds, logp = examples[1:], log_odds(self.log_p)[:, 1:], self.log_p[:, 1:]

        def fitted(key: str, values: np.ndarray) -> Any:
            def statistic(idx: np.ndarray) -> Any:
                fit = line_fits(x, values[idx].mean(-2))
                return fit["r"] * np.abs(fit["r"]) if key == "signed_r2" else fit[key]
            return statistic

        n = len(self.log_p)
        return {"slope": claims.bootstrap_units(n, fitted("slope", odds), "prompts"),
                "intercept": claims.bootstrap_units(n, fitted("intercept", odds), "prompts"),
                "log_p_slope": claims.bootstrap_units(n, fitted("slope", logp), "prompts"),
                "signed_r2": claims.bootstrap_units(n, fitted("signed_r2", odds), "prompts")}

    def claims(self) -> list[claims.Claim]:
        fit, at, ci = self.fit, self.recording, self.intervals()
        signed_r2 = float(np.sign(fit["slope"]) * fit["r2"])
        why = "" if ci else "no per-prompt values kept"
        return [at.measure(BAYES_SLOPE, fit["slope"], interval=ci.get("slope")),
                at.measure(BAYES_INTERCEPT, fit["intercept"], interval=ci.get("intercept")),
                at.measure(BAYES_LOG_P_SLOPE, fit["log_p_slope"], interval=ci.get("log_p_slope")),
                at.measure(BAYES_ADDITIVE, signed_r2, interval=ci.get("signed_r2"), why_no_interval=why)]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Accuracy and P(correct) against the number of examples for every setting (and contrast
    models); `best` is the setting with the highest accuracy over the second half of the curve
    (ties: higher mean P(correct) there). `scores` keeps the per-prompt values the curves average:
    (model, setting label) -> (log P [prompt, example], greedy exact [prompt, example])."""

    curves: pd.DataFrame  # model, setting, examples, accuracy, p_correct, log_p, log_odds
    model: str
    late_from: int
    profile: str = "full"
    scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)
    # (model, setting label) -> the last example asked after its lines: (log P, exact) of the prompt, of its
    # shuffled-y control, and the constant (mean) answer's exactness, per prompt (`last_line_problems`)
    controls: dict[tuple[str, str], dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    @property
    def control_table(self) -> pd.DataFrame:
        """Per (model, setting): at the last example, accuracy and P(correct) of the prompt, of its
        shuffled-y control and of the constant mean answer, and the paired differences prompt −
        control with their 95% bootstrap intervals over the prompts."""
        rows = []
        for (who, label), c in self.controls.items():
            acc, acc_ci = paired_gain(c["exact"], c["shuffled_exact"])
            p, p_ci = paired_gain(np.exp(c["log_p"]), np.exp(c["shuffled_log_p"]))
            rows.append({"model": who, "setting": label, "prompts": len(c["exact"]),
                         "accuracy": float(c["exact"].mean()), "shuffled accuracy": float(c["shuffled_exact"].mean()),
                         "constant-answer accuracy": float(c["constant"].mean()),
                         "P(correct)": float(np.exp(c["log_p"]).mean()),
                         "shuffled P(correct)": float(np.exp(c["shuffled_log_p"]).mean()),
                         "accuracy − shuffled": acc, "low": acc_ci.low, "high": acc_ci.high,
                         "P − shuffled P": p, "P low": p_ci.low, "P high": p_ci.high})
        return pd.DataFrame(rows).set_index(["model", "setting"]) if rows else pd.DataFrame()

    def beats_control(self, setting: Setting | None = None) -> str:
        """Whether `setting` (the best by default) beats its shuffled control on accuracy, decided as
        its claim row is: "yes", "no" or "inconclusive"."""
        row = self.control_table.loc[(self.model, (setting or self.best).label)]
        decision = BEATS_SHUFFLED.test.decide(claims.Interval(row["low"], row["high"], "paired bootstrap", 1))
        return {"reproduced": "yes", "not_reproduced": "no", "inconclusive": "inconclusive"}[decision]

    def control_statement(self, setting: Setting | None = None) -> str:
        """One sentence on whether the setting the mechanistic sections dissect beats its control."""
        setting = setting or self.best
        row = self.control_table.loc[(self.model, setting.label)]
        verdict = self.beats_control(setting)
        numbers = (f"accuracy at the last example {row['accuracy']:.2f} against {row['shuffled accuracy']:.2f} with "
                   f"the y values shuffled (difference {row['accuracy − shuffled']:+.2f}, 95% interval "
                   f"[{row['low']:+.2f}, {row['high']:+.2f}] over {int(row['prompts'])} prompts); the constant mean "
                   f"answer: {row['constant-answer accuracy']:.2f}")
        p_decision = P_BEATS_SHUFFLED.test.decide(claims.Interval(row["P low"], row["P high"], "paired bootstrap", 1))
        p_verdict = {"reproduced": "higher than", "not_reproduced": "not higher than",
                     "inconclusive": "not shown to differ from"}[p_decision]
        p_words = (f" P(correct) of the exact answer is {p_verdict} under the shuffled control: "
                   f"{row['P(correct)']:.3f} against {row['shuffled P(correct)']:.3f} (difference "
                   f"{row['P − shuffled P']:+.3f}, 95% interval [{row['P low']:+.3f}, {row['P high']:+.3f}]).")
        if verdict == "yes":
            return (f"{self.model} in {setting.label} beats its shuffled-y control — in-context learning shown: "
                    f"{numbers}.{p_words}")
        what = "does not beat" if verdict == "no" else "is not shown to beat (inconclusive)"
        return (f"{self.model} in {setting.label} {what} its shuffled-y control in accuracy: {numbers}.{p_words} "
                "The sections below dissect a setting where in-context learning of the exact answer is not shown.")

    def control_figure(self) -> Any:
        t = self.control_table.reset_index()
        t["method"] = t["model"] + ": " + t["setting"]
        return plots.error_bars(t, value="accuracy − shuffled", low="low", high="high",
                                title="Accuracy at the last example, prompt − its shuffled-y control (95% paired CI)")

    @property
    def summary(self) -> pd.DataFrame:
        late = self.curves[self.curves["examples"] >= self.late_from]
        return (late.groupby(["model", "setting"], sort=False)[["accuracy", "p_correct"]].mean()
                .sort_values(["accuracy", "p_correct"], ascending=False))

    @property
    def best(self) -> Setting:
        ours = self.summary.loc[self.model]
        fmt, order = ours.index[0].split(" · ")
        return Setting(fmt, order)

    @property
    def best_curve(self) -> pd.DataFrame:
        c = self.curves
        return c[(c["model"] == self.model) & (c["setting"] == self.best.label)]

    @property
    def accuracy(self) -> float:
        """The best setting's accuracy over the second half of the curve."""
        return float(self.summary.loc[(self.model, self.best.label), "accuracy"])

    @property
    def late_accuracy(self) -> Float[np.ndarray, " batch"]:
        """Per prompt of the best setting: the share of its examples from `late_from` on answered exactly
        (their mean is `accuracy`)."""
        _, exact = self.scores[(self.model, self.best.label)]
        return exact[:, self.late_from :].mean(1)

    def bayes_fit(self) -> BayesFit:
        """The additive-evidence fit of the best setting's curve."""
        log_p = self.scores.get((self.model, self.best.label), (None, None))[0]
        return BayesFit(self.best_curve, self.best.label, Recording(CHAPTER, self.profile, self.model), log_p)

    def figure(self, y: str = "accuracy") -> Any:
        table = self.curves.assign(curve=self.curves["model"] + ": " + self.curves["setting"])
        return plots.lines(table, x="examples", y=y, group="curve",
                           title=f"{y} of the answer to example i, given the i examples before it")

    def claims(self) -> list[claims.Claim]:
        at = Recording(CHAPTER, self.profile, self.model)
        rows = [at.measure(TOP1, self.accuracy, interval=claims.bootstrap(self.late_accuracy, units="prompts"),
                           setting=self.best.label, late_from=self.late_from),
                at.measure(BEST_SETTING, self.best.label)]
        if (self.model, self.best.label) in self.controls:
            c, row = self.controls[(self.model, self.best.label)], self.control_table.loc[(self.model, self.best.label)]
            n, k = len(c["exact"]), int(self.curves["examples"].max())
            words = dict(setting=self.best.label, n=n, k=k, constant=f"{row['constant-answer accuracy']:.2f}")
            for spec, mine, theirs, fmt in ((BEATS_SHUFFLED, c["exact"], c["shuffled_exact"], "{:.2f}"),
                                            (P_BEATS_SHUFFLED, np.exp(c["log_p"]), np.exp(c["shuffled_log_p"]), "{:.3f}")):
                diff, interval = paired_gain(mine, theirs)
                rows.append(at.measure(spec, diff, interval=interval, real=fmt.format(np.mean(mine)),
                                       shuffled=fmt.format(np.mean(theirs)), **words))
        return rows


def format_sweep(model: HookedModel, tokenizer: Any, cfg: Config, *, name: str = "model",
                 contrasts: dict[str, Any] | None = None, settings: Sequence[Setting] | None = None,
                 seed: int = 0, control: bool = True) -> Sweep:
    """`icl_curve` for every format and order (or `settings`) on `model`, and in the default
    setting on each contrast model (name -> model with `.tokenizer`); the per-prompt scores kept.
    With `control`, every run's last example is also asked after the shuffled-y lines
    (`last_line_problems`), and the constant mean answer scored (`Sweep.controls`)."""
    settings = [Setting(f, o) for f in FORMATS for o in ORDERS] if settings is None else settings
    runs = [(name, s, model, tokenizer) for s in settings]
    runs += [(other, Setting(), m, m.tokenizer) for other, m in (contrasts or {}).items()]
    scores, tables, controls = {}, [], {}
    for who, setting, m, tok in runs:
        scores[(who, setting.label)] = icl_scores(m, tok, setting, cfg, seed=seed)
        tables.append(curve_of(*scores[(who, setting.label)]).assign(model=who, setting=setting.label))
        if control:
            log_p, exact = scores[(who, setting.label)]
            shuffled = last_line_problems(setting, cfg, seed=seed, shuffle=True)
            s_log_p, s_exact = query_scores(m, tok, shuffled)
            controls[(who, setting.label)] = {
                "log_p": log_p[:, -1], "exact": exact[:, -1], "shuffled_log_p": s_log_p, "shuffled_exact": s_exact,
                "constant": constant_answer(last_line_problems(setting, cfg, seed=seed))}
    return Sweep(pd.concat(tables, ignore_index=True), name, cfg.n_examples // 2, cfg.profile, scores, controls)

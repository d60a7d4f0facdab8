"""The claims of the induction-heads chapter's own models (the Markov-chain models and the model
trained on Python source), declared with `claims.declare`: each with the seed's value and sentence,
its criterion in words and the test that implements it, and the thresholds the tests use.

A number that averages held-out chains (windows, sequences) or heads is decided on a 95% bootstrap
interval over them (`resampling.bootstrap_means`, `resampling.resampled`: the per-unit values are
kept on the result objects); a criterion with two conditions becomes one number where it can (the
phase-change margin, `change_margin`). A property of one training run (a window, a peak step, a
turn, a count of heads) is tested on its value, with the reason it has no interval; such a test
reads the numbers the analysis passes as `tested=` (`ClaimSpec.measure`). The rows are measured in
`phase_change_claims`, `markov_ablations` and `text_model`, and decided over the training seeds in
`seed_verdicts`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from optim_hunter.chapters.induction_heads import CHAPTER as RECORD
from optim_hunter.report import claims

CHAPTER, SOURCE = RECORD.name, "003"
MARKOV_MODELS = ("attn-only-1l", "attn-only-2l", "attn-only-3l", "smeared-1l", "smeared-2l")
FOCUS = "attn-only-2l"  # the model the chapter looks at closely
TEXT_MODEL = "attn-only-2l-code"
DROP = 0.05  # nats: a phase change is a fall of the ICL score of at least this much in its window ...
# ... that ends beyond what order-blind counting (the unigram predictor) reaches
PREFIX_MIN = 0.3  # an induction head: prefix-matching score at least this (chance is ~0.1 here)


def fmt(value: float, digits: int = 3) -> str:
    """A number as the claims' texts show it."""
    return f"{value:.{digits}f}"


def specs() -> dict[str, claims.ClaimSpec]:
    """Every claim declared here, by id."""
    return {v.id: v for v in globals().values() if isinstance(v, claims.ClaimSpec)}


# --- the criteria -------------------------------------------------------------------------------


def is_phase_change(t: Mapping[str, float]) -> bool:
    """The criterion of a phase change, on {"drop": the ICL score's fall in the window, "final": the
    final ICL score, "unigram": the unigram predictor's ICL score}: a fall of at least `DROP` nats
    that ends below what order-blind counting reaches."""
    return bool(t["drop"] >= DROP and t["final"] < t["unigram"])


def change_margin(drop: float, final: float, unigram: float) -> float:
    """The phase-change criterion as one number (nats): the smaller of (the window's fall - `DROP`)
    and (the unigram predictor's ICL score - the final ICL score). Positive: a phase change
    (`is_phase_change`); negative: none. A mean over held-out chains of each of the three, so it
    has a bootstrap interval over the chains."""
    return float(min(drop - DROP, unigram - final))


def in_window(t: Mapping[str, Any]) -> bool:
    """{"step": a step or None, "start", "end": a window}: the step lies in the window."""
    return t["step"] is not None and t["start"] <= t["step"] <= t["end"]


def _earlier_change(t: Mapping[str, Mapping[str, float]]) -> bool:
    """{"smeared" / "plain": `is_phase_change`'s numbers and the window's "peak" step}."""
    return is_phase_change(t["smeared"]) and is_phase_change(t["plain"]) and t["smeared"]["peak"] < t["plain"]["peak"]


def _pivots(t: Mapping[str, Any]) -> bool:
    """{"pivots": per model with >1 layer {"step" of its largest turn (or None), "start", "end" of
    its window, "angle" of that turn}, "one_layer": the one-layer model's largest turn}."""
    return all(in_window(p) for p in t["pivots"]) and all(p["angle"] > t["one_layer"] for p in t["pivots"])


def text_change(t: Mapping[str, float]) -> bool:
    """{"best": the best layer >= 1 prefix-matching score, "drop": the ICL score's fall in the window}."""
    return t["best"] >= PREFIX_MIN and t["drop"] >= DROP


def _declare(id: str, claim: str, *, value: Any, unit: str, quote: str = "", test: Callable[[Any], bool] | None = None,
             criterion: str = "", role: claims.Role = "claim", why: str = "",
             examples: tuple[Any, Any] | None = None) -> claims.ClaimSpec:
    return claims.declare(id, claim, source_seed=SOURCE, source_value=value, unit=unit, criterion=criterion, test=test,
                          source_quote=quote, role=role, why_no_interval=why, examples=examples)


def measured_only(spec: claims.ClaimSpec) -> claims.ClaimSpec:
    """`spec` without its test: the row shows the number, no verdict (the caller's claim text says
    why). Not declared: the declared spec keeps its test."""
    return dataclasses.replace(spec, test=None, criterion="", why_no_interval="", examples=None)


# --- the declarations ---------------------------------------------------------------------------

TEXT_ONE_RUN = ("one training seed: the code model's training is the chapter's largest (about 340 s of the build), "
                "so it is not repeated over seeds")
ONE_RUN = ("one value per training run; the row is decided over the training seeds, each meeting the criterion or "
           "not (`over_seeds`)")
_MARGIN = f"nats: the smaller of (window fall - {DROP}) and (unigram ICL score - final ICL score)"
_CHANGE = (f"a phase change is a fall of the ICL score of at least {DROP} nats in its window (our threshold) "
           "ending below the unigram predictor's ICL score")
_CHANGE_EXAMPLE = {"drop": 0.3, "final": -0.8, "unigram": -0.2}  # a clear phase change

ONE_LAYER_NO_CHANGE = _declare(
    "induction.one_layer_no_phase_change",
    "A one-layer attention-only model shows no phase change (ICL-score fall in its window {drop} nats; final ICL "
    "score {final} nats, the unigram predictor's {unigram})",
    value="no phase change", unit=_MARGIN, test=claims.below(0), criterion=f"< 0: no phase change ({_CHANGE})",
    quote="a one-layer smeared-key model experiences the phase change, while a regular one-layer model does not")
SMEARED_ONE_LAYER = _declare(
    "induction.smeared_one_layer_phase_change",
    "A one-layer model with smeared keys has a phase change (window {start}-{end} steps, fall {drop} nats; final ICL "
    "score {final} nats, the unigram predictor's {unigram})",
    value="phase change", unit=_MARGIN, test=claims.above(0), criterion=f"> 0: a phase change ({_CHANGE})",
    quote="a one-layer smeared-key model experiences the phase change, while a regular one-layer model does not")
SMEARED_EARLIER = _declare(
    "induction.smeared_two_layer_earlier",
    "Smeared keys move the 2-layer phase change earlier (peak step {smeared} vs {plain} without smearing)",
    value="earlier", unit="peak step ratio smeared / plain",
    quote="the two-layer smeared-key model experiences a phase change earlier than a baseline model",
    test=_earlier_change, criterion="both have a phase change and the smeared model's peak step is smaller",
    why="the peak steps are found on one ICL-score curve each, of one training run per model (" + ONE_RUN + ")",
    examples=({"smeared": {**_CHANGE_EXAMPLE, "peak": 200}, "plain": {**_CHANGE_EXAMPLE, "peak": 400}},
              {"smeared": {**_CHANGE_EXAMPLE, "peak": 400}, "plain": {**_CHANGE_EXAMPLE, "peak": 200}}))
HEADS_IN_WINDOW = _declare(
    "induction.heads_form_in_window",
    "Induction heads (max prefix-matching score reaching half its rise) form inside the phase-change window: "
    "{detail}", value="inside the window", unit="fraction of models with a phase change",
    quote="we find that induction heads form abruptly during exactly the same window where in-context learning "
          "develops",
    test=lambda t: bool(t) and all(in_window(c) for c in t),  # no model with a phase change: not reproduced
    criterion="for every model with a phase change, the crossing step lies in its window",
    why="crossing steps and windows are found on the curves of one training run per model (" + ONE_RUN + ")",
    examples=([{"step": 300, "start": 200, "end": 500}], [{"step": 700, "start": 200, "end": 500}]))
LOSS_BUMP = _declare(
    "induction.loss_bump",
    "The training loss of {name} steepens during the phase change ({inside} nats/decade inside the window vs "
    "{before} just before)", value="visible bump", unit="ratio of fall rates",
    quote="whatever's occurring is visible as a bump on the training curve (figure below)",
    test=claims.at_least(2), criterion="fall rate in window >= 2x the rate before it (our threshold)",
    why="a ratio of fall rates on the training-loss curve (the training batches) of one run (" + ONE_RUN + ")")
POST_CHANGE_ICL = _declare(
    "induction.post_change_icl_score",
    "ICL score after the phase change ({name}, Markov chains, indices {early}/{late} of {n_ctx}; Bayes-optimal "
    "{bayes}, unigram {unigram}); the seed's value is on natural text (its roughly 0.4 nats of in-context learning, "
    "early minus late, is -0.4 in this late-minus-early sign)", value=-0.4, unit="nats (late minus early)",
    quote="after it there is roughly 0.4 nats")
ICL_SHARE_IN_WINDOW = _declare(
    "induction.icl_share_in_window",
    "Most of the final in-context learning of {name} forms inside the phase-change window (fall of the ICL "
    "score in the window {drop} nats, final ICL score {final} nats)", value=">75%",
    unit="fraction of the final ICL score", quote="Since over 75% of final in-context learning forms in this window",
    test=claims.above(0.75))
ICL_CONSTANT = _declare(
    "induction.icl_constant_after_change",
    "The ICL score of {name} stays constant after the phase change (range of the 5-snapshot-smoothed score "
    "from step {end} on, over the final score {final} nats)", value="constant",
    unit="range / |final ICL score|", quote="an amount that remains constant for the rest of training",
    test=claims.at_most(0.1), criterion="<= 0.1: the range at most a tenth of the final score (our threshold)")
MULTI_LAYER_CHANGE = _declare(
    "induction.multi_layer_all_change",
    "Every model with more than one layer goes through the phase change (the smallest margin of the models "
    "with >1 layer: {detail})", value="all models with >1 layer", unit=_MARGIN + ", smallest over the models",
    quote="Provided there's more than one layer, all of them go through a phase change.",
    test=claims.above(0), criterion=f"> 0: every one has a phase change ({_CHANGE})")
ONE_LAYER_NO_HEADS = _declare(
    "induction.one_layer_no_induction_heads",
    "Induction heads never form in the one-layer attention-only model (largest prefix-matching score of any "
    "head at any snapshot)", value="never form", unit="prefix-matching score",
    quote="The exception is the one-layer model, where induction heads never form",
    test=claims.below(PREFIX_MIN), criterion=f"< {PREFIX_MIN} (our induction-head threshold)",
    why="the largest score over every head and snapshot of one training run (" + ONE_RUN + "); each score "
        "averages 10 random sequences inside heads.prefix_matching, whose per-sequence values are not kept")
DIVERGES_AT_CHANGE = _declare(
    "induction.diverges_at_change",
    "The held-out loss of the 2- and 3-layer models first falls below the one-layer model's (by 0.02 nats) "
    "inside their phase-change windows: {detail}", value="first divergence in the window", unit="fraction of models",
    quote="This shift also appears to be the first point where, at least for small models, the loss curve diverges "
          "from a one-layer model",
    test=lambda fraction: fraction == 1, criterion="for both models the first divergence step lies in the window",
    why="divergence steps and windows are found on the curves of one training run per model (" + ONE_RUN + ")",
    examples=(1.0, 0.5))
PCA_PIVOT = _declare(
    "induction.pca_pivot",
    "Per-token-loss PCA trajectories pivot in the window for models with more than one layer, not for the "
    "one-layer model (largest turn: {detail})", value="pivot in window", unit="fraction of models with >1 layer",
    quote="Note how it abruptly pivots for models with more than one layer.", test=_pivots,
    criterion="every model with >1 layer turns most inside its window, and more than the one-layer model ever does",
    why="the turns of trajectories over the snapshots of one training run per model (" + ONE_RUN + ")",
    examples=({"pivots": [{"step": 300, "start": 200, "end": 500, "angle": 90.0}], "one_layer": 30.0},
              {"pivots": [{"step": 50, "start": 200, "end": 500, "angle": 90.0}], "one_layer": 30.0}))
HEADS_LAST_LAYER = _declare(
    "induction.heads_in_last_layer",
    "In the 3-layer attention-only model the induction heads are in the last layer ({detail})", value="last layer",
    unit=f"fraction of heads with prefix matching >= {PREFIX_MIN}",
    quote="In our attention-only models, induction heads form in the last layer.",
    test=claims.above(0.5), criterion="> 0.5: more than half in the last layer",
    why="a count over the heads of one trained model (" + ONE_RUN + ")")
PREFIX_VS_KCOMP = _declare(
    "induction.prefix_vs_k_composition",
    "Prefix matching correlates with the previous-token K-composition trace (heads of layers >= 1 at every "
    "snapshot of the 2- and 3-layer attention-only models; p = {p})", value="correlates well",
    unit="Spearman correlation",
    quote="Our prefix matching evaluator correlates well with the trace of QK eigenvalues for the previous-token "
          "QK-circuit term.",
    test=claims.at_least(0.5), criterion=">= 0.5 (our threshold for 'correlates well')")
COPYING_VS_OV = _declare(
    "induction.copying_vs_ov_eigenvalues",
    "The copying score correlates with the OV eigenvalue score sum(lambda)/sum(|lambda|) (every head of the "
    "five final Markov-chain models; p = {p})", value="correlates well", unit="Spearman correlation",
    quote="Our copying evaluator correlates well with the OV matrix of each head.",
    test=claims.at_least(0.5), criterion=">= 0.5 (our threshold for 'correlates well')")
NON_CONVEX = _declare(
    "induction.only_non_convex_point",
    "The phase change is the only place where the held-out loss of {name} is not convex in log step (steps "
    "where the fall steepens: {inside} inside the window, {outside} outside)", value="only non-convex place",
    unit="non-convex steps outside the window",
    quote="It is in fact the only place in training where the loss is not convex (monotonically decreasing in "
          "slope).",
    test=lambda t: bool(t["inside"]) and not t["outside"],
    criterion="at least one step where the fall steepens (by > 10% of the largest fall rate; our threshold) inside "
              "the window, none outside",
    why="steps found on the held-out loss curve of one training run (" + ONE_RUN + ")",
    examples=({"inside": [300], "outside": []}, {"inside": [300], "outside": [40]}))
NOT_SCHEDULE = _declare(
    "induction.not_schedule_driven",
    "The phase change does not coincide with a scheduled hyperparameter change. True by our schedule, so a check "
    "of our set-up and not a reproduction: its only change is the end of warm-up at step {warmup}, early in "
    "training, and the learning rate is constant after it with no weight decay (windows: {detail})",
    value="not schedule-driven", unit="models whose window holds the change",
    quote="the window where the phase change happens doesn't appear to correspond to a scheduled change in learning "
          "rate, warmup, or weight decay",
    role="check", test=lambda v: v == 0, criterion="no model with a phase change has the end of warm-up inside its "
                                                   "window", examples=(0.0, 1.0))
WINDOW_FRACTION = _declare(
    "induction.window_fraction_of_training",
    "How far through training the phase change of {name} ends (window end step {end} of {steps}); the seed's "
    "1-2% is for large models trained on far more tokens", value="1-2%", unit="fraction of training steps",
    quote="for large models this is maybe 1-2% of the way through training")
EARLY_ADVANTAGE = _declare(
    "induction.size.early_advantage",
    "The larger model (attn-only-3l) gains most of its advantage over the smaller (attn-only-2l) in the first "
    "tokens (index {first} against index {late}; a resample where the larger model is not better at the late index "
    "counts as -1)", value="first 10 tokens", unit="advantage at the first index / at the late index",
    quote="In fact, the majority of the difference forms in the first ten tokens",
    test=claims.above(0.5), criterion="> 0.5: the majority")
MID_CONTEXT = _declare(
    "induction.size.mid_context_catch_up",
    "Around index {index} (the seed's token 100 scaled) the smaller model reduces its loss more per log index "
    "than the larger (attn-only-2l against attn-only-3l)", value="token ≈100",
    unit="d loss / d log index, larger minus smaller",
    quote="Around token 100, there's a regime where small models reduce their loss very slightly more per token "
          "than large models.",
    test=claims.above(0))
DERIVATIVE_ORDER = _declare(
    "induction.size.derivative_order_inverts",
    "The held-out loss of the smaller model (attn-only-2l) falls more slowly per decade of steps than the "
    "larger's (attn-only-3l) before the phase change and faster after it ({detail})",
    value="order inverts at the phase change",
    unit="nats per decade: the smaller of (larger minus smaller model's fall rate before both windows) and "
         "(smaller minus larger after both)",
    quote="The key observation is that the loss decreases more slowly for small models than large models before "
          "the phase change, but the opposite is true after.",
    test=claims.above(0), criterion="> 0: both orderings as the seed's")
_UNDEFINED = " (a resample where the ablation does not raise the loss counts as -1)"
IDEAL_PREVIOUS = _declare(
    "induction.idealised.previous_token",
    "Replacing the previous-token head's pattern ({head} of {name}) by exact previous-token attention recovers "
    "its ablation's loss" + _UNDEFINED, value="99%", unit="fraction of the ablation loss recovered",
    quote="Replacing the previous-token head's scores with exact previous-token attention recovered 99% of the loss "
          "difference.",
    test=claims.at_least(0.9), criterion=">= 0.9 (our threshold; the seed's 99%)")
IDEAL_INDUCTION = _declare(
    "induction.idealised.induction",
    "Replacing the induction head's pattern ({head} of {name}) by uniform attention on the tokens after earlier "
    "occurrences of the current token recovers part of its ablation's loss" + _UNDEFINED, value="≈65%",
    unit="fraction of the ablation loss recovered",
    quote="Replacing the induction head's scores with a simple approximation (attending to the first token and to "
          "exact [A][B]...[A] matches) recovered about 65% of the loss difference.",
    test=claims.between(0.45, 0.85), criterion="within 0.2 of 0.65 (our tolerance): in [0.45, 0.85]")
IDEAL_TWO_TOKEN = _declare(
    "induction.idealised.two_token_prefix",
    "Weighting two-token prefix matches ([A][B][C] ... [A][B] -> [C]) twice in the idealised pattern of {head} "
    "of {name} recovers more ({one} -> {two})" + _UNDEFINED, value="+10%", unit="additional fraction recovered",
    quote="including this in the substituted attention scores recovered an additional 10% of loss difference",
    test=claims.at_least(0.05), criterion=">= 0.05 (our threshold: half the seed's)")
ABLATION_REMOVES = _declare(
    "induction.ablation_removes_icl",
    "Ablating the induction heads of {name} ({heads}) removes most of the ICL score{note}", value="almost all",
    unit="fraction of ICL score removed",
    quote="In fact, *almost all* the in-context learning in small attention-only models appears to come from these "
          "induction heads!",
    test=claims.at_least(0.5), criterion=">= 0.5 (our threshold for 'most'; the seed says almost all)")
ABLATION_THROUGH = _declare(
    "induction.ablation_through_training",
    "Ablating the final induction heads of {name} ({heads}) removes most of the ICL score at every measured "
    "snapshot from the window's start (step {start}) on: {detail}{note}", value="from window start to end",
    unit="smallest fraction of ICL score removed",
    quote="This begins at the start of the phase change, and remains true through the end of training.",
    test=claims.at_least(0.5), criterion=">= 0.5 at every one (our threshold for 'most')")
OTHER_ABLATIONS = _declare(
    "induction.other_ablations_increase_icl",
    "Ablating most other heads of {name} ({heads}) increases in-context learning (a more negative ICL score)",
    value="increase", unit="fraction of the other heads",
    quote="In fact, ablating most other attention heads appears to *increase* in-context learning.",
    test=claims.above(0.5), criterion="> 0.5: more than half")
BEFORE_AFTER = _declare(
    "induction.before_after_negative",
    "Ablating an induction head of {name} undoes the phase change along the before-and-after vector "
    "(attributions {detail}; +1 undoes it, the seed's sign is the opposite)", value="negative (undoes the change)",
    unit="smallest attribution of an induction head",
    quote="For induction heads, this dot product is negative, indicating that removing induction heads is like "
          "*un*doing the changes to model behavior that happened during the phase change.",
    test=claims.above(0), criterion="> 0 for every induction head")
ICL_INDEX_CHOICE = _declare(
    "induction.icl_index_choice",
    "Under other choices of the early and late indices the final ICL score varies only slightly between the "
    "models with more than one layer ({detail})", value="insensitive",
    unit="largest (max - min) / |mean| over index pairs",
    quote="all definitions appear to show that the amount of in-context learning varies only slightly between "
          "models",
    test=claims.at_most(0.25), criterion="<= 0.25 for every pair (our threshold)")
TEXT_CHANGE = _declare(
    "induction.text.phase_change",
    "A 2-layer attention-only model on natural text (Python source) goes through the phase change within "
    "{budget}: best layer-1 prefix-matching score {best} ({head}); steepest ICL-score fall {drop} nats "
    "(steps {start}-{end})", value="phase change", unit="best prefix-matching score, layer >= 1",
    quote="Second, we tried out training some of the small models on a different dataset, and we observed the "
          "phase change develop in the same way",
    test=text_change,
    criterion=f"a layer >= 1 head with prefix matching >= {PREFIX_MIN} and an ICL-score fall >= {DROP} nats in the "
              "window (our thresholds)",
    why="two conditions in different units: the largest prefix-matching score over the heads of one model (each "
        "averaging 10 random sequences whose values are not kept) and the fall in a window found on the ICL-score "
        "curve of one training run (" + TEXT_ONE_RUN + ")",
    examples=({"best": 0.5, "drop": 0.2}, {"best": 0.05, "drop": 0.01}))
TEXT_BEFORE = _declare(
    "induction.text.icl_before_change",
    "In-context learning on natural text before the phase change (ICL score at step {start}, where the window of "
    "steepest ICL-score fall starts{note})", value="< 0.15 nats", unit="nats (late minus early)",
    quote="Before this window there is less than 0.15 nats of in-context learning",
    test=claims.above(-0.15),
    criterion="> -0.15 nats (less than 0.15 nats of ICL), decided only when the model has a phase change by "
              "induction.text.phase_change's criterion (measured only without one)")
TEXT_POST = _declare(
    "induction.text.post_change_icl_score",
    "Final ICL score on held-out Python source (indices {early}/{late} of {n_ctx}, {n} windows; {status}); "
    "the seed's value is after one (its roughly 0.4 nats of in-context learning is -0.4 in this sign)", value=-0.4,
    unit="nats (late minus early)", quote="after it there is roughly 0.4 nats")

"""The claim rows of one training seed's `PhaseChangeStudy` (the Markov-chain models): each claim
declared in `claim_specs` measured on the study's numbers, with its bootstrap interval over the
held-out chains or heads where the number averages them. `seed_claims` lists them in the chapter's
order; `PhaseChangeStudy.claims` decides them over the training seeds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from optim_hunter.chapters.induction_heads.claim_specs import (
    CHAPTER,
    COPYING_VS_OV,
    DERIVATIVE_ORDER,
    DIVERGES_AT_CHANGE,
    EARLY_ADVANTAGE,
    FOCUS,
    HEADS_IN_WINDOW,
    HEADS_LAST_LAYER,
    ICL_CONSTANT,
    ICL_INDEX_CHOICE,
    ICL_SHARE_IN_WINDOW,
    LOSS_BUMP,
    MID_CONTEXT,
    MULTI_LAYER_CHANGE,
    NON_CONVEX,
    NOT_SCHEDULE,
    ONE_LAYER_NO_CHANGE,
    ONE_LAYER_NO_HEADS,
    PCA_PIVOT,
    POST_CHANGE_ICL,
    PREFIX_MIN,
    PREFIX_VS_KCOMP,
    SMEARED_EARLIER,
    SMEARED_ONE_LAYER,
    WINDOW_FRACTION,
    change_margin,
    fmt,
    in_window,
)
from optim_hunter.chapters.induction_heads.icl_metrics import (
    HALF_WIDTH,
    SEED_CONTEXT,
    fall_rate,
    first_divergence,
    icl_score,
    log_index_derivative,
    nonconvex_steps,
    smooth,
    window_mean,
)
from optim_hunter.chapters.induction_heads.resampling import bootstrap_means, correlation_over, ratio
from optim_hunter.report import claims

if TYPE_CHECKING:
    from optim_hunter.chapters.induction_heads.phase_change import PhaseChangeStudy

SMALL_LARGE = "attn-only-2l, attn-only-3l"  # the models the size claims compare


def seed_claims(study: PhaseChangeStudy) -> list[claims.Claim]:
    """The rows of `study`'s training seed alone, in the chapter's order."""
    return (_change_rows(study) + _formation_rows(study) + _window_rows(study) + _layer_rows(study)
            + [_pivot_row(study), _last_layer_row(study)] + _correlation_rows(study) + _training_curve_rows(study)
            + [_early_advantage_row(study), _mid_context_row(study), _derivative_order_row(study),
               _index_choice_row(study)])


def _row(study: PhaseChangeStudy, spec: claims.ClaimSpec, measured: Any, model: str, **fields: Any) -> claims.Claim:
    """`spec`'s row of `study`'s training seed (the chapter and the profile filled in)."""
    return spec.measure(measured, chapter=CHAPTER, profile=study.profile, model=model, **fields)


def _span(study: PhaseChangeStudy, name: str) -> str:
    """Model `name`'s window as the claims' texts show it."""
    w = study.runs[name].window
    return f"{w.start}-{w.end}"


def _change_rows(study: PhaseChangeStudy) -> list[claims.Claim]:
    """No phase change in the one-layer model, one with smeared keys, earlier with smeared keys."""
    runs = study.runs
    one, sm1 = runs["attn-only-1l"], runs["smeared-1l"]
    unigram = fmt(study.reference["unigram"])
    margin, interval = study.change_margin("attn-only-1l")
    rows = [_row(study, ONE_LAYER_NO_CHANGE, margin, "attn-only-1l", interval=interval, drop=fmt(one.window.drop),
                 unigram=unigram, final=fmt(one.icl[-1]))]
    margin, interval = study.change_margin("smeared-1l")
    rows.append(_row(study, SMEARED_ONE_LAYER, margin, "smeared-1l", interval=interval, drop=fmt(sm1.window.drop),
                     unigram=unigram, start=sm1.window.start, end=sm1.window.end, final=fmt(sm1.icl[-1])))
    p2, ps2 = runs["attn-only-2l"].window.peak, runs["smeared-2l"].window.peak
    rows.append(_row(study, SMEARED_EARLIER, ps2 / p2, "smeared-2l",
                     tested={"smeared": {**study.change_numbers("smeared-2l"), "peak": ps2},
                             "plain": {**study.change_numbers("attn-only-2l"), "peak": p2}}, smeared=ps2, plain=p2))
    return rows


def _formation_rows(study: PhaseChangeStudy) -> list[claims.Claim]:
    """Induction heads form in the window, the training loss bumps there, the ICL score after it."""
    runs, focus = study.runs, study.runs[FOCUS]
    formed = study.formed()
    crossings = [{"step": formed[n], "start": runs[n].window.start, "end": runs[n].window.end}
                 for n in formed if study.has_change(n)]  # the models with a phase change
    rows = [_row(study, HEADS_IN_WINDOW,
                 float(np.mean([in_window(c) for c in crossings])) if crossings else "no model had a phase change",
                 "all", tested=crossings,
                 detail="; ".join(f"{n} at step {formed[n]} (window {_span(study, n)})" for n in formed))]
    bump, rate_in, rate_before = study.bump(FOCUS)
    rows.append(_row(study, LOSS_BUMP, bump if np.isfinite(bump) else "no fall before the window", FOCUS,
                     tested=bump, name=FOCUS, inside=fmt(rate_in), before=fmt(rate_before)))
    rows.append(_row(study, POST_CHANGE_ICL, float(focus.icl[-1]), FOCUS,
                     interval=claims.bootstrap(focus.icl_chains[-1], units="held-out chains"), name=FOCUS,
                     early=study.early, late=study.late, n_ctx=study.n_ctx, bayes=fmt(study.reference["bayes"]),
                     unigram=fmt(study.reference["unigram"])))
    return rows


def _window_rows(study: PhaseChangeStudy) -> list[claims.Claim]:
    """The share of the final ICL formed in the window, and its constancy after it: both presuppose
    a phase change (a share of ICL formed in a window without one means nothing)."""
    focus = study.runs[FOCUS]
    w, final = focus.window, float(focus.icl[-1])
    if not study.has_change(FOCUS):
        return [_row(study, spec, f"{FOCUS} has no phase change", FOCUS, name=FOCUS, **fields)
                for spec, fields in ((ICL_SHARE_IN_WINDOW, {"drop": fmt(w.drop), "final": fmt(final)}),
                                     (ICL_CONSTANT, {"end": w.end, "final": fmt(final)}))]
    share = lambda m: ratio(m[0], -m[1])  # noqa: E731  (the window's fall over the final ICL, per chain)
    share_rows = study.change_rows(FOCUS)[:2]
    rows = [_row(study, ICL_SHARE_IN_WINDOW, share(share_rows.mean(1)), FOCUS,
                 interval=bootstrap_means(share_rows, share, "held-out chains"), name=FOCUS, drop=fmt(w.drop),
                 final=fmt(final))]
    keep = focus.steps >= 10
    after = smooth(focus.icl_chains[keep], 5)[focus.steps[keep] >= w.end]  # [snapshot, chain]
    spread_rows = np.concatenate([after, focus.icl_chains[-1:]])
    spread = lambda m: float((m[:-1].max() - m[:-1].min()) / abs(m[-1]))  # noqa: E731
    rows.append(_row(study, ICL_CONSTANT, spread(spread_rows.mean(1)), FOCUS,
                     interval=bootstrap_means(spread_rows, spread, "held-out chains"), name=FOCUS, end=w.end,
                     final=fmt(final)))
    return rows


def _layer_rows(study: PhaseChangeStudy) -> list[claims.Claim]:
    """Every model with >1 layer changes, no induction head in one layer, the loss diverges from the
    one-layer model's in the window."""
    runs, multi = study.runs, study.multi_layer
    margin, interval = study.change_margin(*multi)
    rows = [_row(study, MULTI_LAYER_CHANGE, margin, ", ".join(multi), interval=interval,
                 detail="; ".join(f"{n}: {'yes' if study.has_change(n) else 'no'} (fall {fmt(runs[n].window.drop)} "
                                  f"nats, final {fmt(runs[n].icl[-1])}, margin "
                                  f"{fmt(change_margin(**study.change_numbers(n)), 4)})" for n in multi))]
    rows.append(_row(study, ONE_LAYER_NO_HEADS, float(np.nanmax(runs["attn-only-1l"].scores["prefix_matching"])),
                     "attn-only-1l"))
    one = runs["attn-only-1l"]
    found = {}
    for name in ("attn-only-2l", "attn-only-3l"):
        if not np.array_equal(runs[name].steps, one.steps):
            raise ValueError(f"{name} and attn-only-1l have different snapshot steps")
        found[name] = first_divergence(one.steps, one.loss, runs[name].loss, margin=0.02)
    ins = [runs[n].window.contains(s) if s is not None else False for n, s in found.items()]
    rows.append(_row(study, DIVERGES_AT_CHANGE, float(np.mean(ins)), SMALL_LARGE,
                     detail="; ".join(f"{n} at step {s} (window {_span(study, n)})" for n, s in found.items())))
    return rows


def _pivot_row(study: PhaseChangeStudy) -> claims.Claim:
    """The per-token-loss PCA trajectories turn most inside the windows of the models with >1 layer."""
    turns, runs = study.turns(), study.runs
    pivots = {n: turns[n] for n in study.multi_layer}
    one_turn = turns["attn-only-1l"][2]
    turned = [{"step": s, "start": runs[n].window.start, "end": runs[n].window.end, "angle": a}
              for n, (_, s, a) in pivots.items()]
    return _row(study, PCA_PIVOT, float(np.mean([in_window(t) for t in turned])), "all",
                tested={"pivots": turned, "one_layer": one_turn},
                detail="; ".join([f"{n} {a:.0f} degrees at step {s} (window {_span(study, n)})"
                                  for n, (_, s, a) in pivots.items()] + [f"attn-only-1l {one_turn:.0f} degrees"]))


def _last_layer_row(study: PhaseChangeStudy) -> claims.Claim:
    """The induction heads of the 3-layer model are in its last layer."""
    three = study.runs["attn-only-3l"].final_prefix
    layers = np.nonzero(three >= PREFIX_MIN)[0]
    return _row(study, HEADS_LAST_LAYER,
                float(np.mean(layers == three.shape[0] - 1)) if len(layers)
                else f"no head with prefix matching >= {PREFIX_MIN}", "attn-only-3l",
                detail=f"heads with prefix matching >= {PREFIX_MIN} by layer: "
                       + ", ".join(str(int((layers == l).sum())) for l in range(three.shape[0])))


def _correlation_rows(study: PhaseChangeStudy) -> list[claims.Claim]:
    """Prefix matching against the K-composition trace, copying against the OV eigenvalues."""
    runs = study.runs
    # each head of layers >= 1 with its whole trajectory is one unit of the bootstrap
    pm, kc = ([runs[n].scores[key][:, 1:].reshape(len(runs[n].head_steps), -1).T
               for n in ("attn-only-2l", "attn-only-3l")] for key in ("prefix_matching", "k_composition"))
    rho, pval, interval = correlation_over([h for m in pm for h in m], [h for m in kc for h in m],
                                           "heads (each with every snapshot)")
    rows = [_row(study, PREFIX_VS_KCOMP, rho, SMALL_LARGE, interval=interval, p=f"{pval:.2g}")]
    cp = np.concatenate([r.scores["copying"][-1].ravel() for r in runs.values()])
    ov = np.concatenate([r.ov_eigenvalues.ravel() for r in runs.values()])
    keep = np.isfinite(cp) & np.isfinite(ov)
    rho, pval, interval = correlation_over(list(cp[keep, None]), list(ov[keep, None]), "heads")
    rows.append(_row(study, COPYING_VS_OV, rho, "all", interval=interval, p=f"{pval:.2g}"))
    return rows


def _training_curve_rows(study: PhaseChangeStudy) -> list[claims.Claim]:
    """The only non-convex place of the loss, not the schedule, how far through training."""
    runs, w = study.runs, study.runs[FOCUS].window
    steeper = nonconvex_steps(runs[FOCUS].steps, runs[FOCUS].loss)
    inside = [s for s in steeper if w.contains(s)]
    outside = [s for s in steeper if not w.contains(s)]
    rows = [_row(study, NON_CONVEX, float(len(outside)), FOCUS, tested={"inside": inside, "outside": outside},
                 name=FOCUS, inside=inside or "none", outside=outside or "none")]
    with_change = [n for n in runs if study.has_change(n)]
    rows.append(_row(study, NOT_SCHEDULE,
                     float(sum(runs[n].window.contains(study.warmup_steps) for n in with_change)) if with_change
                     else "no model had a phase change", "all", warmup=study.warmup_steps,
                     detail="; ".join(f"{n} {_span(study, n)}" for n in with_change) or "none"))
    rows.append(_row(study, WINDOW_FRACTION, w.end / study.train_steps, FOCUS, name=FOCUS, end=w.end,
                     steps=study.train_steps))
    return rows


def _early_advantage_row(study: PhaseChangeStudy) -> claims.Claim:
    """The larger model's advantage over the smaller at the first tokens over at the late index."""
    small, large = study.runs["attn-only-2l"], study.runs["attn-only-3l"]
    gap = small.final_losses - large.final_losses  # [chain, index]: the larger model's advantage
    first = max(1, int(round(10 / SEED_CONTEXT * study.n_ctx)))
    gaps = np.stack([window_mean(gap, first, HALF_WIDTH), window_mean(gap, study.late, HALF_WIDTH)])
    late_gap = float(gaps[1].mean())
    share = lambda m: ratio(m[0], m[1])  # noqa: E731
    return _row(study, EARLY_ADVANTAGE,
                share(gaps.mean(1)) if late_gap > 0 else "the larger model is not better at the late index",
                SMALL_LARGE, interval=bootstrap_means(gaps, share, "held-out chains") if late_gap > 0 else None,
                first=first, late=study.late)


def _mid_context_row(study: PhaseChangeStudy) -> claims.Claim:
    """Around index 100 (scaled) the smaller model's loss falls more per log index than the larger's."""
    small, large = study.runs["attn-only-2l"], study.runs["attn-only-3l"]
    index = int(round(100 / SEED_CONTEXT * study.n_ctx))
    lo, hi = int(round(index / np.sqrt(2))), int(round(index * np.sqrt(2)))
    slope = {n: log_index_derivative(r.final_losses)[:, lo : hi + 1].mean(1) for n, r in
             (("small", small), ("large", large))}  # [chain]
    catch_up = slope["large"] - slope["small"]
    return _row(study, MID_CONTEXT, float(catch_up.mean()), SMALL_LARGE,
                interval=claims.bootstrap(catch_up, units="held-out chains"), index=index)


def _derivative_order_row(study: PhaseChangeStudy) -> claims.Claim:
    """The smaller model's loss falls more slowly per decade than the larger's before both windows
    and faster after both."""
    small, large = study.runs["attn-only-2l"], study.runs["attn-only-3l"]
    steps = small.steps
    a, d = int(steps[steps >= 10][0]), int(steps[-1])
    b = min(small.window.start, large.window.start)
    c = max(small.window.end, large.window.end)
    if b <= a or d <= c:
        return _row(study, DERIVATIVE_ORDER, "no stretch before or after both windows", SMALL_LARGE,
                    detail=f"windows end at {c}")
    # fall per decade of each chain's loss (linear in the loss: the mean over chains is the mean curve's)
    rates = np.stack([[fall_rate(r.steps, curve, *span) for curve in r.loss_chains.T]
                      for span in ((a, b), (c, d)) for r in (small, large)])  # small, large before; after
    order = lambda m: float(min(m[1] - m[0], m[2] - m[3]))  # noqa: E731
    mean = rates.mean(1)
    return _row(study, DERIVATIVE_ORDER, order(mean), SMALL_LARGE,
                interval=bootstrap_means(rates, order, "held-out chains"),
                detail=f"nats per decade, steps {a}-{b}: {fmt(mean[0])} vs {fmt(mean[1])}; "
                       f"steps {c}-{d}: {fmt(mean[2])} vs {fmt(mean[3])}")


def _index_choice_row(study: PhaseChangeStudy) -> claims.Claim:
    """The final ICL score of the models with >1 layer under other (early, late) index pairs."""
    runs, multi, pairs = study.runs, study.multi_layer, study.index_pairs()
    scores = np.stack([icl_score(runs[n].final_losses, a, b, HALF_WIDTH) for a, b in pairs for n in multi])

    def spreads(means: np.ndarray) -> np.ndarray:  # (max - min) / |mean| over the models, per pair
        m = means.reshape(len(pairs), len(multi))
        return (m.max(1) - m.min(1)) / np.abs(m.mean(1))

    point = spreads(scores.mean(1))
    return _row(study, ICL_INDEX_CHOICE, float(point.max()), ", ".join(multi),
                interval=bootstrap_means(scores, lambda m: float(spreads(m).max()), "held-out chains"),
                detail="; ".join(f"({a}, {b}): {s:.2f}" for (a, b), s in zip(pairs, point)))

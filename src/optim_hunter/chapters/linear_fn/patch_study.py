"""The patching section and the redundancy loop of the y = a x + b chapter: patching the context
into the query alone (`patch_study` -> `PatchStudy`), seed 002's rounds of layer ablations with
backup heads (`redundancy_rounds` -> `Redundancy`), the attention patterns of named heads
(`head_patterns`), and the claims they measure (on `measurement.Measurement`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from optim_hunter.chapters.linear_fn.linear_fn import (
    CHAPTER,
    QUOTES,
    Config,
    Problem,
    Setting,
    encode_answers,
    setting_problems,
    stage_names,
)
from optim_hunter.chapters.linear_fn.measurement import (
    Measurement,
    answer_kinds,
    as_stage,
    first_depths,
    first_kinds,
    first_share,
    measure,
    patch_layout,
    settles_about_2x,
    stage_depth,
    stage_label,
)
from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel
from optim_hunter.report import claims, plots
from optim_hunter.report.claim_rows import Recording

# Claims, declared with their criteria before any number is measured. Depths are layer-relative:
# the source's "before layer 12 of 32" is 12 / 32 = 0.375 of the way through the model.
SOURCE_DEPTHS = {"first": 12 / 32, "round1": 14 / 32, "round2": 16 / 32}
DEPTH_TOLERANCE = 0.1  # ±3 layers of 30, ±3.2 of 32
ENRICHMENT = 2.0  # attention on earlier answers' tokens, over their share of the context

FIRST_STAGE = claims.declare(
    "linear_fn.first_patch_stage",
    "First stage whose patch (where B reads the answer) recovers half of P(correct), as a fraction of the depth",
    source_seed="002", source_value="layer 12", source_quote=QUOTES["first"],
    unit="of depth ({stage})",
    test=claims.between(SOURCE_DEPTHS["first"] - DEPTH_TOLERANCE, SOURCE_DEPTHS["first"] + DEPTH_TOLERANCE),
    criterion=f"within ±{DEPTH_TOLERANCE} of 12/32 = 0.375 (llama-3-8b has 32 layers; our tolerance)")
# Where a prompt's patch first carries the task for good (`settled_kinds`), is its answer ≈2x (nearer 2x than
# 2x + 3) or the exact one? Over the prompts run A answers exactly: for those the last stage reads A's exact
# answer, so every one has such a stage; a prompt A gets wrong has no task to transfer.
_SETTLED = ("where the patch first carries the task for good (the first stage from which every later stage's "
            "patched answer is within 5 of 2x or of 2x + 3)")
ABOUT_2X_FIRST = claims.declare(
    "linear_fn.first_patch_gives_about_2x",
    f"Per prompt, {_SETTLED}, the answer is ≈2x (within 5 of 2x and nearer 2x than 2x + 3), not the exact answer: "
    "share of the {n} prompts run A answers exactly (stages where most prompts answer ≈2x: from {near}; exactly: "
    "from {exact})",
    source_seed="002", source_value="y≈2x at the first working layer (12)", source_quote=QUOTES["about_2x"],
    unit="share of prompts", test=claims.above(0.5), criterion="> 0.5: most prompts (our threshold)",
    first_criterion="the first stage where most patched answers are within 5 of 2x (the exact answer included) "
                    "comes before the first where most are exact, passing when no stage is exact; changed in "
                    "review, not after a result: that band holds 2x + 3 and a missing stage passed")
SURVIVES = claims.declare(
    "linear_fn.answer_survives_layer_ablation",
    "Of the {n} prompts run A answers exactly, the share still exact after ablating every head of the layer below "
    "the first stage (A's accuracy {unablated} → {ablated})",
    source_seed="002", source_value="answer unchanged", source_quote=QUOTES["survives"], unit="share of prompts",
    test=claims.at_least(0.8), criterion="at least 0.8 of them (our threshold for 'not significantly')")
_DEEPER = dict(source_seed="002", unit="of depth", test=claims.above(0.0),
               criterion="> 0: a later stage than in the round before")
MOVES_DEEPER = {
    1: claims.declare("linear_fn.first_patch_moves_deeper",
                      "After ablation round 1, the first stage recovering half of P(correct) moves deeper "
                      "({stages}): change in its depth", source_value="before layer 14",
                      source_quote=QUOTES["deeper1"], **_DEEPER),
    2: claims.declare("linear_fn.second_ablation_moves_deeper",
                      "After ablation round 2, the first stage recovering half of P(correct) moves deeper "
                      "({stages}): change in its depth", source_value="from 14 to 16",
                      source_quote=QUOTES["deeper2"], **_DEEPER),
}
HEADS_BEFORE_FAILURE = claims.declare(
    "linear_fn.heads_before_failure",
    "Heads ablated (whole layers, in the order of the rounds) before A's accuracy falls below 0.5",
    source_seed="002", source_value="still correct after the last round (layer 15 ablated too)",
    source_quote=QUOTES["correct"], unit="heads")
BACKUP_HEAD = claims.declare(
    "linear_fn.backup_head_below_new_stage",
    "After ablation round 1 (layer {ablated}), the head whose direct effect on the answer rose most ({head}, "
    "{rise} logits) lies above the ablated layer and below the new first stage ({stage}): its layer",
    source_seed="002", source_value="layer 13 (after the initial ablation)", source_quote=QUOTES["backup"],
    unit="layer", criterion="ablated layer < its layer < the new first stage's layer",
    test=lambda t: t[2] is not None and t[1] < t[0] < t[2],  # (its layer, ablated layer, first stage)
    examples=((13, 11, 14), (14, 11, 14)),
    why_no_interval="the head is an argmax over the heads of one model (of their mean rise over the round's "
                    "prompts): a choice of one head, not a mean with an interval")
LATE_EXACT = claims.declare(
    "linear_fn.late_patch_copies_exact_answer",
    f"After the last ablation round ({{round}}, layers {{layers}}): per prompt, {_SETTLED}, the answer is ≈2x "
    "(nearer 2x than 2x + 3): share of the {n} prompts ablated A answers exactly (stages where most prompts "
    "answer ≈2x: from {near}; exactly: from {exact})",
    source_seed="002", source_value="no ≈2x stage; the exact answer is copied", source_quote=QUOTES["late"],
    unit="share of prompts", test=claims.below(0.5),
    criterion="< 0.5: most prompts go straight to the exact side (our threshold)",
    first_criterion="no stage where most patched answers are within 5 of 2x (the exact answer included) before "
                    "the first where most are exact; changed in review, not after a result: that band holds "
                    "2x + 3, so it could not tell ≈2x from the exact answer")
TOP_HEADS_PATTERN = claims.declare(
    "linear_fn.top_heads_attend_to_answers",
    "The top head (direct effect, no ablation) of each ablated layer ({heads}) attends from the position "
    "before the answer to earlier answers' tokens: that attention over those tokens' share of the context "
    "(mean over prompts, median over the heads)",
    source_seed="002", source_value="y_i → token before y_j (j > i)", source_quote=QUOTES["pattern"],
    unit="x uniform", test=claims.at_least(ENRICHMENT),
    criterion=f"median >= {ENRICHMENT:g} (at least twice the uniform share; our threshold)")


def _settled_row(at: Recording, spec: claims.ClaimSpec, m: Measurement, problems: Sequence[Problem],
                 **fields: Any) -> claims.Claim:
    """`spec` measured on `settles_about_2x`: its share, with a bootstrap interval over the prompts."""
    values = settles_about_2x(m, problems)
    if not len(values):
        return at.measure(spec, "no prompt to test: run A answers none exactly", n=0, **fields)
    return at.measure(spec, float(values.mean()), interval=claims.bootstrap(values, units="prompts"),
                      n=len(values), **fields)


@dataclasses.dataclass(frozen=True)
class PatchStudy:
    """Patching run A (examples) into run B (query alone), stage by stage, without ablation."""

    setting: Setting
    problems: tuple[Problem, ...]
    measurement: Measurement
    n_layers: int
    grid_tokens: tuple[str, ...]
    recording: Recording = Recording(CHAPTER, "full")

    @property
    def stages(self) -> list[str]:
        return stage_names(self.n_layers)

    @property
    def answer_kinds(self) -> pd.DataFrame:
        """Per stage, the share of prompts whose patched B reads out exactly 2x + 3, ≈2x, or ≈exact
        (`answer_kinds`)."""
        return answer_kinds(self.measurement.answers, self.problems, self.n_layers)

    @property
    def first_about_2x(self) -> int | None:
        return first_share(self.answer_kinds["≈2x"])

    @property
    def first_exact(self) -> int | None:
        return first_share(self.answer_kinds["exact"])

    @property
    def summary(self) -> pd.DataFrame:
        m, name = self.measurement, lambda s: self.stages[s] if s is not None else "none"
        return pd.DataFrame([{
            "P(correct) in A": float(np.exp(m.clean_log_p).mean()), "A exact": float(m.clean_exact.mean()),
            "P(correct) in B": float(np.exp(m.corrupt_log_p).mean()),
            "first stage recovering half of P": name(m.first_stage),
            "first stage where most answer ≈2x": name(self.first_about_2x),
            "first stage where most answer exactly": name(self.first_exact)}]).T.rename(columns={0: "value"})

    def figure(self) -> Any:
        grid = np.exp(self.measurement.grid).mean(0)
        return plots.heatmap(grid, x=[f"{i}:{t!r}" for i, t in enumerate(self.grid_tokens)], y=self.stages,
                             colorscale="Viridis",
                             title="P(correct answer) in run B after patching one vector from run A")

    def answers_figure(self) -> Any:
        table = self.answer_kinds.assign(**{"P(correct) / P in A": self.measurement.curve
                                            / float(np.exp(self.measurement.clean_log_p).mean())})
        long = table.reset_index().melt(id_vars="stage", var_name="read", value_name="share")
        long["stage index"] = long["stage"].map({s: i for i, s in enumerate(self.stages)})
        return plots.lines(long, x="stage index", y="share", group="read",
                           title="Run B patched where it reads the answer: its read-out answers, and P(correct)")

    def claims(self) -> list[claims.Claim]:
        m, n, at = self.measurement, self.n_layers, self.recording
        first = m.first_stage
        label = lambda s: stage_label(s, n)  # noqa: E731
        if first is None:
            first_row = at.measure(FIRST_STAGE, "none", stage="none")
        else:
            first_row = at.measure(FIRST_STAGE, stage_depth(first, n), stage=label(first),
                                   interval=claims.bootstrap_units(len(m.last), lambda idx: first_depths(m, idx, n), "prompts"))
        return [first_row, _settled_row(at, ABOUT_2X_FIRST, m, self.problems, near=label(self.first_about_2x),
                                        exact=label(self.first_exact))]


def patch_study(model: HookedModel, tokenizer: Any, setting: Setting, cfg: Config, *, name: str = "model",
                seed: int = 1) -> PatchStudy:
    """`measure` without ablation on `cfg.n_patch` prompts of `setting` (each B prompt position
    patched alone for the first `cfg.n_grid`)."""
    probs = setting_problems(setting, cfg.n_patch, cfg.mech_examples, x_max=cfg.x_max, seed=seed)
    m = measure(model, tokenizer, probs, n_grid=cfg.n_grid)
    _, b, width, _ = patch_layout(tokenizer, probs[0])
    tokens = tuple(tokenizer.convert_ids_to_tokens(b.tokens[:width].tolist()))
    return PatchStudy(setting, tuple(probs), m, model.cfg.n_layers, tokens, cfg.recording(name))


@dataclasses.dataclass(frozen=True)
class Redundancy:
    """Seed 002's loop: rounds of ablating every head of one more layer in run A. `measurements`
    keeps each round's per-prompt values (one per row of `table`, on `problems`), so the claims
    have bootstrap intervals over prompts."""

    table: pd.DataFrame  # one row per round, round 0 without ablation
    curves: pd.DataFrame  # round, stage index, recovered share of P(correct)
    n_layers: int
    n_heads: int
    top_heads: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # per ablated layer
    recording: Recording = Recording(CHAPTER, "full")
    measurements: tuple[Measurement, ...] = ()
    problems: tuple[Problem, ...] = ()

    def figure(self) -> Any:
        return plots.lines(self.curves, x="stage index", y="recovered", group="round",
                           title="Share of P(correct) recovered by patching where B reads the answer, per round")

    def claims(self) -> list[claims.Claim]:
        rows, at, n, ms = self.table.to_dict("records"), self.recording, self.n_layers, self.measurements
        if len(ms) != len(rows):
            raise ValueError(f"{len(rows)} rounds in the table but {len(ms)} measurements")
        missing = f"not run ({len(rows) - 1} rounds)"
        first = rows[1] if len(rows) > 1 else None
        out = [self._survives_claim(first)]
        for i, spec in MOVES_DEEPER.items():
            if len(rows) <= i:
                out.append(at.measure(spec, missing, stages="not run"))
                continue
            before, after = as_stage(rows[i - 1]["first stage index"]), as_stage(rows[i]["first stage index"])
            stages = f"{rows[i - 1]['first stage']} → {rows[i]['first stage']}"
            if after is None or before is None:
                out.append(at.measure(spec, "no stage transfers", stages=stages))
                continue
            change = claims.bootstrap_units(len(ms[i].last), lambda idx, i=i: first_depths(ms[i], idx, n)
                                            - first_depths(ms[i - 1], idx, n), "prompts")
            out.append(at.measure(spec, stage_depth(after, n) - stage_depth(before, n), interval=change, stages=stages))
        failed = [r for r in rows[1:] if r["A exact"] < 0.5]
        out.append(at.measure(HEADS_BEFORE_FAILURE, float(failed[0]["heads ablated"]) if failed
                              else f"still ≥ 0.5 after {len(rows) - 1} rounds ({rows[-1]['heads ablated']} heads)"))
        out.append(self._backup_claim(first))
        last = rows[-1]
        near, exact = as_stage(last["first ≈2x stage"]), as_stage(last["first exact stage"])
        where = dict(round=f"round {last['round']}", layers=str(last["ablated layers"]),
                     near=stage_label(near, n), exact=stage_label(exact, n))
        if first is None:
            out.append(at.measure(LATE_EXACT, missing, n=0, **where))
        else:
            out.append(_settled_row(at, LATE_EXACT, ms[-1], self.problems, **where))
        out.append(self._pattern_claim(missing))
        return out

    def _survives_claim(self, first: dict | None) -> claims.Claim:
        base = self.table.iloc[0]
        words = dict(unablated=f"{base['A exact']:.2f}")
        if first is None:
            return self.recording.measure(SURVIVES, "not run (0 rounds)", n=0, ablated="not run", **words)
        words["ablated"] = f"{first['A exact']:.2f}"
        kept = self.measurements[1].clean_exact[self.measurements[0].clean_exact].astype(float)
        if not len(kept):
            return self.recording.measure(SURVIVES, "no prompt to test: run A answers none exactly", n=0, **words)
        return self.recording.measure(SURVIVES, float(kept.mean()), interval=claims.bootstrap(kept, units="prompts"),
                                      n=len(kept), **words)

    def _pattern_claim(self, missing: str) -> claims.Claim:
        if not len(self.top_heads):
            return self.recording.measure(TOP_HEADS_PATTERN, missing, heads="none")
        where = [(int(h[1 : h.index("H")]), int(h[h.index("H") + 1 :])) for h in self.top_heads["head"]]
        enrichment = np.stack([self.measurements[0].heads[:, l, h, 2] for l, h in where], 1)  # [prompt, head]
        median = lambda idx: np.median(enrichment[idx].mean(-2), -1)  # noqa: E731
        return self.recording.measure(TOP_HEADS_PATTERN, float(np.median(enrichment.mean(0))),
                                      interval=claims.bootstrap_units(len(enrichment), median, "prompts"),
                                      heads=", ".join(self.top_heads["head"]))

    def _backup_claim(self, first: dict | None) -> claims.Claim:
        if first is None:
            return self.recording.measure(BACKUP_HEAD, "not run (0 rounds)", ablated="none", head="none",
                                          rise="no", stage="none")
        ablated, stage = first["ablated layers"][-1], as_stage(first["first stage index"])
        head = first["top backup head"]
        layer = int(head[1 : head.index("H")])
        return self.recording.measure(BACKUP_HEAD, float(layer), tested=(layer, ablated, stage), ablated=str(ablated),
                                      head=head, rise=f"{first['its direct effect rise']:+.2f}", stage=first["first stage"])


def redundancy_rounds(model: HookedModel, tokenizer: Any, study: PatchStudy, cfg: Config) -> Redundancy:
    """Each round zero-ablates (hook_z) every head of the highest layer not yet ablated below the
    current first transferring stage, in run A only, on the first `cfg.n_ablate` prompts of
    `study`; measures A's accuracy, the new first stage, the first stages where most patched answers
    are ≈2x and exact, and the top backup head (the remaining head whose direct effect on the answer
    rose most from round 0). Stops when no stage transfers. `top_heads`: the head of each ablated
    layer with the largest direct effect in round 0, and its attention on earlier answers' tokens."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    probs = list(study.problems[: cfg.n_ablate])
    names = stage_names(n_layers)
    base = study.measurement.subset(cfg.n_ablate)
    rounds, curves, layers, measured = [], [], [], []
    m: Measurement | None = base
    for r in range(cfg.rounds + 1):
        if r > 0:
            below = [l for l in range(min(m.first_stage, n_layers) - 1, -1, -1) if l not in layers]
            if not below:
                break
            layers = layers + [below[0]]
            m = measure(model, tokenizer, probs, ablate_layers=layers)
        measured.append(m)
        clean, corrupt = float(np.exp(m.clean_log_p).mean()), float(np.exp(m.corrupt_log_p).mean())
        recovered = (m.curve - corrupt) / (clean - corrupt) if clean != corrupt else m.curve * np.nan
        curves.append(pd.DataFrame({"round": f"round {r}: ablated {layers}", "stage index": np.arange(n_layers + 1),
                                    "recovered": recovered}))
        rise = m.heads[..., 1].mean(0) - base.heads[..., 1].mean(0)
        rise[layers] = -np.inf
        l, h = np.unravel_index(np.argmax(rise), rise.shape)
        near, exact = first_kinds(m.answers, probs, n_layers)
        rounds.append({
            "round": r, "ablated layers": list(layers), "heads ablated": n_heads * len(layers),
            "A exact": float(m.clean_exact.mean()), "P(correct) in A": clean,
            "first stage": names[m.first_stage] if m.first_stage is not None else "none",
            "first stage index": m.first_stage, "depth": stage_depth(m.first_stage, n_layers),
            "first ≈2x stage": near, "first exact stage": exact,
            "top backup head": f"L{l}H{h}" if r > 0 else "",
            "its attention to examples": f"{base.heads[:, l, h, 0].mean():.2f} → {m.heads[:, l, h, 0].mean():.2f}",
            "its direct effect": f"{base.heads[:, l, h, 1].mean():.2f} → {m.heads[:, l, h, 1].mean():.2f}",
            "its direct effect rise": float(rise[l, h]) if r > 0 else np.nan,
        })
        if m.first_stage is None:
            break
    effect = base.heads[..., 1].mean(0)
    top = [(l, int(np.argmax(effect[l]))) for l in layers]
    top_heads = pd.DataFrame({"layer": [l for l, _ in top], "head": [f"L{l}H{h}" for l, h in top],
                              "direct effect": [float(effect[l, h]) for l, h in top],
                              "enrichment": [float(base.heads[:, l, h, 2].mean()) for l, h in top]})
    return Redundancy(pd.DataFrame(rounds), pd.concat(curves, ignore_index=True), n_layers, n_heads, top_heads,
                      study.recording, tuple(measured), tuple(probs))


@torch.no_grad()
def head_patterns(model: HookedModel, tokenizer: Any, problem: Problem, heads: Sequence[str]
                  ) -> tuple[Float[np.ndarray, "head query_pos key_pos"], list[str]]:
    """Attention patterns of heads named `L{layer}H{head}` on one prompt (clean run), caching
    only their layers' patterns."""
    tokens = encode_answers(tokenizer, problem).tokens
    where = [(int(n[1 : n.index("H")]), int(n[n.index("H") + 1 :])) for n in heads]
    names = {hooks.pattern(l) for l, _ in where}
    _, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n in names)
    pattern = np.stack([cache[hooks.pattern(l)][0, h].float().cpu().numpy() for l, h in where])
    return pattern, tokenizer.convert_ids_to_tokens(tokens.tolist())

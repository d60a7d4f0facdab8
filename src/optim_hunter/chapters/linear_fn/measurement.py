"""Patching run A of the y = a x + b chapter (the examples, then the query; its heads possibly
ablated) into run B (the query alone), stage by stage (`measure` -> `Measurement`), each head's
activity at the query position, and what the patched run B reads out (`answer_kinds`,
`settled_kinds`, `first_depths`): the measurement the patching section and the redundancy loop
(`patch_study`) take their claims from.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from optim_hunter.analysis import ablation, patching
from optim_hunter.chapters.linear_fn.linear_fn import (
    ON_TASK,
    Encoded,
    Problem,
    classify,
    encode_answers,
    layer_heads,
    pad,
    span_scores,
    stage_names,
)
from optim_hunter.core import hooks
from optim_hunter.core.hooks import HookedModel


def leading_integer(text: str) -> int | None:
    """The integer a decoded answer starts with (None if it does not start with one)."""
    match = re.match(r"\s*(-?\d+)", text)
    return int(match[1]) if match else None


def patch_layout(tokenizer: Any, problem: Problem) -> tuple[Encoded, Encoded, int, np.ndarray]:
    """Run A (examples, query, answer), run B (query, answer), B's prompt length and A's example
    positions (after any BOS, before the query line)."""
    a, b = encode_answers(tokenizer, problem), encode_answers(tokenizer, problem, 0)
    bos = len(tokenizer("")["input_ids"])
    query_len = b.query_end + 1 - bos
    return a, b, b.query_end + 1, np.arange(bos, a.query_end + 1 - query_len)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Run A (with examples, possibly ablated) and its patches into run B, per prompt."""

    clean_log_p: Float[np.ndarray, " n"]  # A's log P(correct answer)
    clean_exact: np.ndarray  # A's greedy answer is exact
    corrupt_log_p: Float[np.ndarray, " n"]  # B's, unpatched
    last: Float[np.ndarray, "n stage"]  # B's log P(correct), patched where it reads the answer
    # per head at the query position: attention mass on the examples, direct effect on the answer,
    # and attention on the examples' answer (y) tokens over those tokens' share of the context
    heads: Float[np.ndarray, "n layer head 3"]
    grid: Float[np.ndarray, "grid stage pos"] | None = None  # log P, every B position
    answers: Any = None  # [n, stage] B's read-out (see `_patched_rows`) under that patch

    def subset(self, n: int) -> Measurement:
        answers = None if self.answers is None else self.answers[:n]
        return Measurement(self.clean_log_p[:n], self.clean_exact[:n], self.corrupt_log_p[:n],
                           self.last[:n], self.heads[:n], None, answers)

    @property
    def curve(self) -> Float[np.ndarray, " stage"]:
        return np.exp(self.last).mean(0)

    @property
    def first_stage(self) -> int | None:
        return patching.first_transfer(self.curve, float(np.exp(self.clean_log_p).mean()),
                                       float(np.exp(self.corrupt_log_p).mean()))


def _head_capture(model: HookedModel, query_pos: Tensor, example_mask: Tensor, store: dict,
                  answer_mask: Tensor | None = None) -> list:
    """Hooks keeping, at each row's query position, every head's z, its attention mass on the
    examples (and on the `answer_mask` positions), and the final norm's scale."""
    rows = torch.arange(len(query_pos))

    def keep_z(layer: int):
        def hook(z: Tensor, hook: Any) -> None:
            store[("z", layer)] = z[rows, query_pos].detach().clone()  # [row, head, d_head]
        return hook

    def keep_mass(layer: int):
        def hook(pattern: Tensor, hook: Any) -> None:  # [row, head, query_pos, key_pos]
            row = pattern[rows, :, query_pos]
            store[("mass", layer)] = (row * example_mask[:, None, : row.shape[-1]]).sum(-1).detach()
            if answer_mask is not None:
                store[("answers", layer)] = (row * answer_mask[:, None, : row.shape[-1]]).sum(-1).detach()
        return hook

    def keep_scale(scale: Tensor, hook: Any) -> None:
        store["scale"] = scale[rows, query_pos].detach().clone()

    captures = [(hooks.z(l), keep_z(l)) for l in range(model.cfg.n_layers)]
    captures += [(hooks.pattern(l), keep_mass(l)) for l in range(model.cfg.n_layers)]
    if "ln_final.hook_scale" in model.hook_dict:
        captures.append(("ln_final.hook_scale", keep_scale))
    return captures


def direct_effects(model: HookedModel, z: Float[Tensor, "row layer head d_head"],
                   scale: Float[Tensor, "row 1"] | None, answer: Int[Tensor, " row"]
                   ) -> Float[Tensor, "row layer head"]:
    """Each head's output at the read position, through the final norm (centred for LayerNorm,
    divided by its scale, times its weight) and W_U, along the answer's logit minus the
    vocabulary's mean logit."""
    out = torch.einsum("rlhd,lhdm->rlhm", z, model.W_O.to(z))
    if model.cfg.normalization_type in ("LN", "LNPre"):
        out = out - out.mean(-1, keepdim=True)
    if scale is not None:
        out = out / scale[:, None, None]
    weight = getattr(getattr(model, "ln_final", None), "w", None)
    if weight is not None:
        out = out * weight.to(out)
    direction = model.W_U[:, answer].T - model.W_U.mean(1)  # [row, d_model]
    return torch.einsum("rlhm,rm->rlh", out, direction.to(out))


def _patched_rows(model: HookedModel, tokenizer: Any, rows: list, batch_size: int
                  ) -> tuple[np.ndarray, list[int | None]]:
    """Per row (tokens, stage, position(s), donor(s), answer span): B's log P of the answer span
    (teacher-forced) and its read-out, the number spelled by the argmax token at each place of
    the span given the correct tokens before it (the greedy answer whenever it is exact)."""
    log_p, readout = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        tokens = pad([r[0] for r in chunk])
        logits = patching.patched_logits(model, tokens, [r[1] for r in chunk], [r[2] for r in chunk],
                                         [r[3] for r in chunk])
        for i, (_, _, _, _, (a, b)) in enumerate(chunk):
            scores = torch.log_softmax(logits[i, a - 1 : b - 1].float(), -1)
            log_p.append(float(scores.gather(-1, tokens[i, a:b, None]).sum()))
            readout.append(leading_integer(tokenizer.decode(scores.argmax(-1).tolist())))
    return np.array(log_p), readout


@torch.no_grad()
def measure(model: HookedModel, tokenizer: Any, probs: Sequence[Problem], *, ablate_layers: Sequence[int] = (),
            n_grid: int = 0, batch_size: int = 64) -> Measurement:
    """Run A with examples (heads of `ablate_layers` zeroed) and patch its residual stream, one
    stage at a time, into run B (the query alone, never ablated), positions aligned from the end.
    For every prompt the patch covers the positions that predict the answer (B's last prompt
    position and the answer's own tokens, which digit-per-token answers need); for the first
    `n_grid` prompts also each B prompt position alone. B's answer is read teacher-forced."""
    layouts = [patch_layout(tokenizer, p) for p in probs]
    width = max(len(lay[1].tokens) for lay in layouts)
    source = pad([lay[0].tokens for lay in layouts])
    query_pos = torch.tensor([lay[0].query_end for lay in layouts])
    offsets = [len(lay[0].tokens) - len(lay[1].tokens) for lay in layouts]
    donor_pos = [[o + min(j, len(lay[1].tokens) - 1) for j in range(width)] for o, lay in zip(offsets, layouts)]
    mask = torch.zeros(source.shape, dtype=torch.float32)
    answer_mask = torch.zeros(source.shape, dtype=torch.float32)  # the examples' y tokens
    for r, lay in enumerate(layouts):
        mask[r, lay[3]] = 1
        for first, stop in lay[0].spans[:-1]:
            answer_mask[r, first : stop - 1] = 1  # the span's last token is the line's end
    # a uniform head would put (y tokens) / (positions up to the query) of its attention there
    answer_share = answer_mask.sum(1) / (query_pos + 1).float()
    store: dict = {}
    with ablation.ablated(model, layer_heads(model, list(ablate_layers))), \
            model.hooks(fwd_hooks=_head_capture(model, query_pos, mask, store, answer_mask)):
        donors, logits = patching.stage_residuals(model, source, donor_pos, return_logits=True)
    clean_log_p, clean_exact = span_scores(logits, source, [[lay[0].spans[-1]] for lay in layouts])
    n_stages, n = model.cfg.n_layers + 1, len(probs)
    rows = [(lay[1].tokens, None, 0, donors[r, 0, 0], lay[1].spans[-1]) for r, lay in enumerate(layouts)]
    for r, lay in enumerate(layouts):
        reading = list(range(lay[1].spans[-1][0] - 1, lay[1].spans[-1][1] - 1))
        rows += [(lay[1].tokens, s, reading, donors[r, reading, s], lay[1].spans[-1]) for s in range(n_stages)]
    rows += [(lay[1].tokens, s, j, donors[r, j, s], lay[1].spans[-1])
             for r, lay in enumerate(layouts[:n_grid]) for s in range(n_stages) for j in range(lay[2])]
    log_p, readout = _patched_rows(model, tokenizer, rows, batch_size)
    last = log_p[n : n + n * n_stages].reshape(n, n_stages)
    answers = np.array(readout[n : n + n * n_stages], dtype=object).reshape(n, n_stages)
    grid = None
    if n_grid:
        grid = np.full((n_grid, n_stages, max(lay[2] for lay in layouts)), np.nan)
        at = n + n * n_stages
        for r, lay in enumerate(layouts[:n_grid]):
            grid[r, :, : lay[2]] = log_p[at : at + n_stages * lay[2]].reshape(n_stages, lay[2])
            at += n_stages * lay[2]
    z = torch.stack([store[("z", l)] for l in range(model.cfg.n_layers)], 1)
    mass = torch.stack([store[("mass", l)] for l in range(model.cfg.n_layers)], 1)
    on_answers = torch.stack([store[("answers", l)] for l in range(model.cfg.n_layers)], 1)
    answer_tok = torch.tensor([int(lay[0].tokens[lay[0].spans[-1][0]]) for lay in layouts])
    effects = direct_effects(model, z, store.get("scale"), answer_tok)
    enrichment = on_answers / answer_share.clamp_min(1e-9)[:, None, None].to(on_answers)
    heads = torch.stack([mass, effects.to(mass), enrichment], -1).cpu().numpy()
    return Measurement(clean_log_p[:, 0], clean_exact[:, 0], log_p[:n], last, heads, grid, answers)


def stage_depth(stage: int | None, n_layers: int) -> float | None:
    """A stage "before layer l" as a fraction of the depth: l / n_layers."""
    return None if stage is None else stage / n_layers


def first_share(share: pd.Series, at_least: float = 0.5) -> int | None:
    """The first stage (position in `share`, a column of `answer_kinds`) with share >= at_least."""
    hits = np.flatnonzero(np.asarray(share) >= at_least)
    return int(hits[0]) if len(hits) else None


def answer_kinds(answers: Any, problems: Sequence[Problem], n_layers: int) -> pd.DataFrame:
    """Per stage, the share of prompts whose patched B reads out exactly 2x + 3, ≈2x (within 5 of 2x
    and nearer 2x than 2x + 3) or ≈exact (within 5 of 2x + 3, nearer it, not exact): `classify`;
    `answers` is [n, stage] (`Measurement.answers`)."""
    rows = []
    for s, name in enumerate(stage_names(n_layers)):
        kinds = [classify(answers[i, s], p) for i, p in enumerate(problems)]
        rows.append({"stage": name, **{kind: np.mean([k == kind for k in kinds]) for kind in ON_TASK}})
    return pd.DataFrame(rows).set_index("stage")


def first_kinds(answers: Any, problems: Sequence[Problem], n_layers: int) -> tuple[int | None, int | None]:
    """The first stage where most patched answers are ≈2x, and where most are exact."""
    kinds = answer_kinds(answers, problems, n_layers)
    return first_share(kinds["≈2x"]), first_share(kinds["exact"])


def settled_kinds(answers: Any, problems: Sequence[Problem]) -> list[str]:
    """Per prompt, what its patched answer is (`classify`) where the patch first carries the task for
    good: at the first stage from which every later stage's answer is on task (within 5 of 2x or of
    2x + 3); "never on task" when the last stage's answer is not."""
    out = []
    for i, problem in enumerate(problems):
        kinds = [classify(answers[i, s], problem) for s in range(answers.shape[1])]
        settled = len(kinds)
        while settled > 0 and kinds[settled - 1] in ON_TASK:
            settled -= 1
        out.append(kinds[settled] if settled < len(kinds) else "never on task")
    return out


def settles_about_2x(m: Measurement, problems: Sequence[Problem]) -> Float[np.ndarray, " n"]:
    """Over the prompts run A answers exactly (their last stage reads A's exact answer, so each has a
    settling stage): 1 where the settled answer is ≈2x, else 0 (`settled_kinds`)."""
    kinds = settled_kinds(m.answers, problems)
    return np.array([kind == "≈2x" for kind, ok in zip(kinds, m.clean_exact) if ok], dtype=float)


def first_depths(m: Measurement, idx: np.ndarray, n_layers: int) -> Any:
    """`Measurement.first_stage` as a depth (stage / n_layers) of the prompts `idx` (an integer array
    (..., n), one row per bootstrap resample): the first stage whose mean patched P(correct) recovers
    half of the way from B's to A's mean. A resample where none does (A's and B's means equal) counts
    as the last stage, depth 1."""
    clean, corrupt = np.exp(m.clean_log_p)[idx].mean(-1), np.exp(m.corrupt_log_p)[idx].mean(-1)
    curve = np.exp(m.last)[idx].mean(-2)
    span = clean - corrupt
    with np.errstate(invalid="ignore", divide="ignore"):
        recovered = (curve - corrupt[..., None]) / np.where(span == 0, np.nan, span)[..., None]
    hits = recovered >= 0.5
    return np.where(hits.any(-1), hits.argmax(-1), curve.shape[-1] - 1) / n_layers


def as_stage(value: Any) -> int | None:
    """A stage index read back from a table, where pandas may have made it a float or NaN."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else int(value)


def stage_label(stage: int | None, n_layers: int) -> str:
    stage = as_stage(stage)
    return stage_names(n_layers)[stage] if stage is not None else "none"


"""The Performance page's tables, rendered as HTML from one `make bench` run (`_build/bench.json`).

`optim_hunter.book.sphinx_ext` puts `render(path)` where the page has its `{bench-table}` directive:
the goals with their measured values and ratios, every zoo model's training throughput against a
bare PyTorch loop and its model FLOP utilisation, the side-by-side training check, and where the
cold build's time went (the install, each training and chapter on its lane, the render).
`precisions(profile)` adds which floating-point precision each cached zoo model trained in, and why.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from optim_hunter import zoo
from optim_hunter.core import precision


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return ('<table class="table"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + cells + "</tbody></table>")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else html.escape(str(value))


def render(path: Path) -> str:
    if not path.exists():
        return "<p><b>No benchmark results on this machine yet</b>: run <code>make bench</code>, then build the book.</p>"
    report = json.loads(path.read_text(encoding="utf-8"))
    builds = report.get("builds_measured")
    when = "" if not builds or builds == report.get("started") else (
        f" (the build figures in an earlier run on the same checkout, {html.escape(builds)})")
    head = (f"<p>Measured {html.escape(report.get('started', '?'))} on {html.escape(str(report.get('machine')))} "
            f"({report.get('cpus')} CPUs), profile <code>{html.escape(report.get('profile', '?'))}</code>{when}.</p>")
    return (head + goals(report) + compute_floor(report) + decoding(report) + training(report) + side_by_side(report)
            + costs(report))


def precisions(profile: str) -> str:
    """Each zoo model trained in this cache: the precision it trained in (read from its checkpoint's
    metadata, nothing trained here) and why, from what this machine offers (`optim_hunter.core.precision`)."""
    fast = precision.fast_bf16_cpu()
    forced = precision.requested()
    rows = []
    for name in zoo.names():
        final = zoo.family(name).final_path(profile).with_suffix(".json")
        try:
            used = json.loads(final.read_text(encoding="utf-8"))["meta"]["config"]["train"]["precision"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not trained in this cache (e.g. numeric-icl outside the default build)
        if forced != "auto":
            why = f"forced by {precision.ENV}={forced}"
        elif used == "bf16":
            why = "the family prefers bf16, and this CPU has bf16 matrix units with PyTorch at AVX-512"
        elif fast:
            why = "the family trains in fp32 (its small matrix products gain nothing from bf16)"
        else:
            why = "fp32: the family's precision, or bf16 preferred but not fast on this machine"
        rows.append([f"<code>{html.escape(name)}</code>", used, html.escape(why)])
    if not rows:
        return "<p>No trained model in this cache yet.</p>"
    return (f"<p>Training precision of each model in this build's cache (profile <code>{html.escape(profile)}</code>; "
            f"this CPU {'has' if fast else 'lacks'} fast bf16):</p>" + _table(["model", "precision", "why"], rows))


def goals(report: dict[str, Any]) -> str:
    rows = []
    for key, goal in report.get("goals", {}).items():
        met = "met" if goal["met"] else "missed"
        rows.append([f"<code>{html.escape(key)}</code>", _number(report[key]), html.escape(goal["goal"]),
                     f'<span class="goal-{met}">{met}</span>'])
    if "side_by_side_speedup" in report:
        rows.append(["<code>side_by_side_speedup</code>", _number(report["side_by_side_speedup"]), "—", "measured"])
    return _table(["figure", "value", "goal", ""], rows)


def compute_floor(report: dict[str, Any]) -> str:
    """Each language-model chapter's seconds in the cold build against its compute floor."""
    floor = report.get("llm_chapters") or {}
    if not floor.get("chapters"):
        return ""
    rows = [[f"<code>{html.escape(doc)}</code>", f"{c['seconds']:,.0f}", f"{c['passes']:,}", f"{c['flops'] / 1e12:,.1f}",
             f"{c['floor_s']:,.0f}", f"{c['seconds'] / max(c['floor_s'], 1e-9):.2f}"]
            for doc, c in floor["chapters"].items()]
    return (f"<p>The language-model chapters in the cold build against their compute floor: the FLOPs of the "
            f"passes each ran (linear layers, causal attention, the unembedding; tallied as they ran) at "
            f"{floor['matmul_flops'] / 1e9:.0f} GFLOP/s, a 2048² fp32 matmul with the lane's {floor['threads']} "
            f"thread(s). What is above the floor is everything else the chapter does (tokenizing, decoding "
            f"step by step, the classical regressors, figures) and the passes' own inefficiency.</p>"
            + _table(["chapter", "seconds", "passes", "TFLOPs", "floor (s)", "ratio (≤ 1.5)"], rows))


def decoding(report: dict[str, Any]) -> str:
    """bfloat16 decoding measured beside float32 (the batched-decoding benchmark's `--bf16`)."""
    detail = report.get("batched_eval_detail") or {}
    if "bf16_speedup" not in detail:
        return _competence_bf16(report)
    return (f"<p>Decoding under bfloat16 autocast was {detail['bf16_speedup']:.2f}× faster than float32 on "
            f"the same {detail['prompts']} prompts, but only {100 * detail['bf16_identical_answer_share']:.0f}% "
            "of its answers were identical to float32's: the chapters decode in float32.</p>") + _competence_bf16(report)


def _competence_bf16(report: dict[str, Any]) -> str:
    """The same comparison on the competence map's tasks (bench/bf16_competence.py)."""
    detail = report.get("bf16_competence") or {}
    if "bf16_identical_answer_share" not in detail:
        return ""
    by_task = ", ".join(f"{html.escape(t)} {100 * v:.0f}%" for t, v in detail["bf16_identical_by_task"].items())
    changed = ", ".join(html.escape(k) for k in detail["verdict_changes"]) or "none"
    return (f"<p>On the competence map's {detail['answers']:,} prompts (real and shuffled-y, "
            f"{detail['cells']} cells), {100 * detail['bf16_identical_answer_share']:.0f}% of the bfloat16 answers "
            f"were identical to float32's (by task: {by_task}); cells whose \"learns in context\" verdict "
            f"changed: {changed}.</p>")


def training(report: dict[str, Any]) -> str:
    models = report.get("train_throughput") or []
    if not models:
        return ""
    rows = [[f"<code>{html.escape(m['name'])}</code>", m["precision"], f"{m['trainer_tokens_per_s']:,.0f}",
             f"{m['bare_tokens_per_s']:,.0f}", f"{m['ratio']:.3f}", f"{m['flops_per_token'] / 1e6:.2f}",
             f"{m['mfu']:.3f}"] for m in models]
    peaks = ", ".join(f"{p}: {v / 1e9:.0f} GFLOP/s" for p, v in (report.get("matmul_flops_one_thread") or {}).items())
    return (f"<p>Training, one thread (as <code>make book</code> trains): the trainer against a bare PyTorch "
            f"loop on the same batches, and the model FLOP utilisation against this machine's measured matmul "
            f"rate ({html.escape(peaks)}).</p>"
            + _table(["model", "precision", "trainer tokens/s", "bare loop tokens/s", "ratio (≥ 0.8)",
                      "MFLOPs per token", "MFU"], rows))


def side_by_side(report: dict[str, Any]) -> str:
    side = report.get("side_by_side_detail")
    if not side:
        return ""
    rows = [[f"<code>{html.escape(n)}</code>", str(side["steps"][n]), f"{side['train_seconds_alone_all_threads'][n]:.1f}",
             f"{side['train_seconds_alone_one_thread'][n]:.1f}", f"{side['train_seconds_side_by_side'][n]:.1f}",
             f"{side['second_thread_speedup'][n]:.2f}"] for n in side["steps"]]
    return (f"<p>Two trainings one after another with {side['cores']} threads each took "
            f"{side['sequential_all_threads_s']:.1f} s; side by side with one thread each, "
            f"{side['side_by_side_one_thread_s']:.1f} s ({side['side_by_side_speedup']:.2f}× faster), which is why "
            "<code>make book</code> runs two lanes. Training seconds of each:</p>"
            + _table(["model", "steps", "alone, all threads", "alone, one thread", "side by side, one thread",
                      "second thread's speed-up"], rows))


def costs(report: dict[str, Any]) -> str:
    """Where the cold build's time went: [{"part", "seconds", "lane", "start"}] (older runs: no lanes)."""
    parts = report.get("costs") or []
    if not parts:
        return ""
    total = report.get("cold_build_s") or sum(c["seconds"] for c in parts)
    rows = [[html.escape(c["part"]), "—" if c.get("lane") is None else str(c["lane"] + 1),
             "—" if c.get("start") is None else f"{c['start']:.0f}", f"{c['seconds']:.0f}",
             f"{100 * c['seconds'] / total:.0f}%"] for c in parts]
    lanes = report.get("lanes")
    intro = (f"<p>Where the cold build's {total:.0f} s went: the install, then every training and chapter "
             + (f"on {lanes} lanes side by side (so the shares add up to more than 100%), " if lanes else "")
             + "then the render.</p>")
    return intro + _table(["part", "lane", "starts at (s)", "seconds", "share of the cold build"], rows)

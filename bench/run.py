"""`make bench`: every performance figure of the book, measured in one run on this machine.

Writes `_build/bench.json` (shown on the book's Performance page at the next build):

  train_throughput_ratio   the lowest, over the zoo's models, of trainer tokens/s / bare PyTorch
                           loop tokens/s (`train_throughput`: each model's tokens/s and MFU,
                           counted FLOPs x tokens/s / measured matmul FLOP/s, one thread)
                                                                             (goal >= 0.8)
  side_by_side_speedup     the two longest trainings one after another (all threads) / side by
                           side (one thread each): why `make book` runs two lanes (reported)
  batched_eval_speedup     TransformerLens generate one prompt at a time / our batched decoder,
                           on the default pretrained model (smollm2-135m), prompts of 10
                           Friedman #2 examples (~600 tokens: the prompt's forward pass dominates)
                                                                             (goal >= 10)
  batched_eval_speedup_short_prompts   the same with 2 examples (~130 tokens: decoding dominates)
                                                                             (goal >= 10)
  pretrained_forward_ratio tokens/s of the package's hook-free forward / the bare HF model's
                                                                             (goal >= 0.9)
  prefill_matmul_ratio     the package's prefill FLOP/s / a 2048^2 fp32 matmul's, same threads
                                                                             (goal >= 0.8)
  batched_vs_one_at_a_time greedy decoding one prompt at a time / in batches of 8 (seconds)
                                                                             (goal >= 1)
  llm_chapters_floor_ratio the language-model chapters' seconds in the cold build / their compute
                           floor: the FLOPs of the passes they ran (tallied by
                           `optim_hunter.analysis.flops`) / a 2048^2 fp32 matmul's FLOP/s with the
                           lane's threads (`llm_chapters`: each chapter's figures)
                                                                             (goal <= 1.5)
  cold_build_s             `make book` in a fresh clone (_build/bench-clone) with an empty model
                           cache and a new venv (`costs`: the install, every training and chapter
                           with its lane and start, the render)
                                                                             (goal <= 2400)
  warm_build_s             `make book` again, nothing changed              (goal <= 60)
  max_page_mb              largest page of the built site                  (goal <= 3)

    python bench/run.py [--profile full|smoke] [--skip-builds [--keep-builds]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOALS = {
    "train_throughput_ratio": (">=", 0.8),  # the lowest over the zoo's models
    "batched_eval_speedup": (">=", 10.0),
    "batched_eval_speedup_short_prompts": (">=", 10.0),
    "pretrained_forward_ratio": (">=", 0.9),
    "prefill_matmul_ratio": (">=", 0.8),  # the package's prefill FLOP/s / a matmul's, same threads
    "batched_vs_one_at_a_time": (">=", 1.0),  # batched decoding never slower than one at a time
    "llm_chapters_floor_ratio": ("<=", 1.5),  # the LLM chapters' seconds / FLOPs of their passes / matmul rate
    "cold_build_s": ("<=", 2400.0),  # issue #25: 40 minutes on the 2-core machine
    "warm_build_s": ("<=", 60.0),
    "max_page_mb": ("<=", 3.0),
}


def run_json(args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out[out.index("{"):])


def timed_make(target: str, clone: Path, env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(["make", target], cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def build_costs(clone: Path, install_s: float, book_s: float) -> list[dict]:
    """The cold build's parts: the install, then every task `optim-hunter execute` ran (training a
    model or executing a chapter: its lane, start and seconds, from `_build/schedule.json`), then
    the Sphinx build (what is left of `make book`)."""
    costs = [{"part": "install (venv + pip)", "seconds": install_s, "lane": None, "start": 0.0}]
    schedule = json.loads((clone / "_build" / "schedule.json").read_text())
    for task in sorted(schedule["tasks"], key=lambda t: t["start"]):
        costs.append({"part": task["task"], "seconds": task["end"] - task["start"], "lane": task["lane"],
                      "start": install_s + task["start"]})
    costs.append({"part": "jupyter-book build (render)", "seconds": book_s - schedule["seconds"], "lane": None,
                  "start": install_s + schedule["seconds"]})
    return costs


def llm_chapters(clone: Path) -> dict:
    """Each language-model chapter of the cold build: its seconds, the FLOPs its passes ran, and
    its compute floor (those FLOPs at the matmul rate of its lane's threads)."""
    from train_throughput import matmul_flops  # the rate the training MFU divides by, measured alike

    from optim_hunter import chapters
    from optim_hunter.book import book_executor

    schedule = json.loads((clone / "_build" / "schedule.json").read_text())
    rate = matmul_flops(schedule["threads_per_lane"], size=2048, repeats=30)
    seconds = {t["task"]: t["end"] - t["start"] for t in schedule["tasks"]}
    rows = {}
    for doc, chapter in chapters.records().items():
        task = book_executor.Task("execute", doc)
        log = book_executor.flops_log(clone, task)
        if not chapter.language_model or task.name not in seconds or not log.exists():
            continue
        tally = json.loads(log.read_text())
        rows[doc] = {"seconds": seconds[task.name], "flops": tally["flops"], "passes": tally["passes"],
                     "floor_s": tally["flops"] / rate}
    total = sum(r["seconds"] for r in rows.values()) / max(sum(r["floor_s"] for r in rows.values()), 1e-9)
    return {"matmul_flops": rate, "threads": schedule["threads_per_lane"], "chapters": rows, "ratio": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=os.environ.get("OPTIM_HUNTER_PROFILE", "full"))
    parser.add_argument("--skip-builds", action="store_true", help="leave out the cold/warm builds")
    parser.add_argument("--keep-builds", action="store_true",
                        help="with --skip-builds: keep the build figures of the previous _build/bench.json "
                             "(marked with the time they were measured)")
    args = parser.parse_args()
    env = {**os.environ, "OPTIM_HUNTER_PROFILE": args.profile}
    report: dict = {"profile": args.profile, "machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    target = ROOT / "_build" / "bench.json"
    if args.skip_builds and args.keep_builds and target.exists():
        previous = json.loads(target.read_text())
        for key in ("cold_build_s", "warm_build_s", "max_page_mb", "max_page", "costs", "llm_chapters",
                    "llm_chapters_floor_ratio"):
            if key in previous:
                report[key] = previous[key]
        report["builds_measured"] = previous.get("builds_measured", previous.get("started"))
        if "model_cache" in previous:
            env["OPTIM_HUNTER_CACHE"] = previous["model_cache"]
    if not args.skip_builds:
        # The cold build comes first: its freshly trained models then serve the benchmarks below.
        clone = ROOT / "_build" / "bench-clone"
        shutil.rmtree(clone, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env["OPTIM_HUNTER_CACHE"] = str(clone / "_build" / "model-cache")
        report["model_cache"] = env["OPTIM_HUNTER_CACHE"]
        report["builds_measured"] = report["started"]
        install_s = timed_make("install", clone, env)
        book_s = timed_make("book", clone, env)
        report["cold_build_s"] = install_s + book_s
        report["costs"] = build_costs(clone, install_s, book_s)
        report["lanes"] = json.loads((clone / "_build" / "schedule.json").read_text())["lanes"]
        floor = llm_chapters(clone)
        if floor["chapters"]:
            report["llm_chapters"] = floor
            report["llm_chapters_floor_ratio"] = floor["ratio"]
        report["warm_build_s"] = timed_make("book", clone, env)
        pages = list((clone / "_build" / "html").rglob("*.html"))
        largest = max(pages, key=lambda p: p.stat().st_size)
        report["max_page_mb"] = largest.stat().st_size / 2**20
        report["max_page"] = str(largest.relative_to(clone / "_build" / "html"))

    # Every zoo model's training, with one thread (how `make book` trains them, two at a time).
    throughput = run_json(["bench/train_throughput.py", "--profile", args.profile, "--repeats", "2",
                           "--threads", "1"], env)
    report["train_throughput"] = throughput["models"]
    report["train_throughput_ratio"] = throughput["min_ratio"]
    report["matmul_flops_one_thread"] = throughput["matmul_flops"]
    side = run_json(["bench/side_by_side.py", "--profile", args.profile], env)
    report["side_by_side_speedup"] = side["side_by_side_speedup"]
    report["side_by_side_detail"] = side

    # TransformerLens generate runs the eager hooked forward for every new token: on the 30-layer
    # model that is minutes per long prompt, so this comparison uses 8 prompts of 10 examples.
    decode = run_json(["bench/batched_eval.py", "--profile", args.profile, "--model", "smollm2-135m",
                       "--prompts", "8", "--examples", "10", "--batch", "8", "--repeats", "1", "--bf16"], env)
    report["batched_eval_speedup"] = decode["batched_eval_speedup"]
    report["batched_eval_identical_answers"] = decode["identical_answers"]
    report["batched_eval_detail"] = decode
    # Where decoding rather than the prompt's forward pass dominates (few examples: short prompts),
    # batching and the cache pay off; with long prompts both sides spend most time in the same
    # compute-bound prefill matmuls.
    short = run_json(["bench/batched_eval.py", "--profile", args.profile, "--model", "smollm2-135m",
                      "--prompts", "16", "--examples", "2", "--batch", "16", "--repeats", "1"], env)
    report["batched_eval_speedup_short_prompts"] = short["batched_eval_speedup"]
    report["batched_eval_short_identical_answers"] = short["identical_answers"]
    report["batched_eval_short_detail"] = short
    small = run_json(["bench/batched_eval.py", "--profile", args.profile, "--model", "numeric-icl"], env)
    report["batched_eval_numeric_icl"] = small

    # bf16 again on the competence map's tasks: do its answers and the map's verdicts change?
    report["bf16_competence"] = run_json(["bench/bf16_competence.py", "--profile", args.profile,
                                          "--model", "smollm2-135m"], env)

    forward = run_json(["bench/pretrained_forward.py"], env)
    report["pretrained_forward_ratio"] = forward["pretrained_forward_ratio"]
    report["pretrained_forward_detail"] = forward
    report["prefill_matmul_ratio"] = forward["prefill_matmul_ratio"]
    report["batched_vs_one_at_a_time"] = forward["batched_vs_one_at_a_time"]

    report["goals"] = {
        key: {"goal": f"{op} {value:g}", "met": (report[key] >= value) if op == ">=" else (report[key] <= value)}
        for key, (op, value) in GOALS.items() if key in report
    }
    target.parent.mkdir(exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp-{os.getpid()}")  # never a half-written bench.json
    partial.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(partial, target)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

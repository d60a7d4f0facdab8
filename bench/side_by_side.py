"""Two trainings side by side (one thread each) against one after another (all threads each).

`make book` trains and executes two tasks at a time with one thread each (`optim-hunter execute`),
because small models gain little from a second thread. This checks that choice on this machine:
the two longest zoo trainings (numeric-icl, affine-recurrence) each train a fixed number of steps,
first alone one after the other with every core's thread, then at the same time with one thread
each, in fresh processes. Also reported: each model's steps/s with one thread alone and with all
threads alone (the second thread's speed-up). Prints one JSON object.

    python bench/side_by_side.py [--profile full|smoke] [--steps-numeric 24] [--steps-affine 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

MODELS = ("numeric-icl", "affine-recurrence")


def worker(name: str, profile: str, steps: int, threads: int) -> None:
    """Train `steps` steps of `name` (no evaluation, nothing written); print the seconds."""
    from optim_hunter import zoo
    from optim_hunter.core import training

    family = zoo.family(name)
    cfg = family.config(profile)
    spec = dataclasses.replace(family.train_spec(cfg), evaluate=None)
    config = dataclasses.replace(cfg.train, steps=steps, warmup_steps=min(cfg.train.warmup_steps, steps),
                                 eval_every=0, snapshots=0, checkpoint_every=0, threads=threads)
    result = training.train(spec, config, None, progress=False)
    print(json.dumps({"name": name, "steps": steps, "threads": threads, "seconds": result.seconds}))


def _spawn(name: str, profile: str, steps: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, __file__, "--worker", name, "--profile", profile, "--steps", str(steps),
                             "--threads", str(threads)], env=env, stdout=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"worker failed ({process.args})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--steps-numeric", type=int, default=24)
    parser.add_argument("--steps-affine", type=int, default=400)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.profile, args.steps, args.threads)
        return
    cores = os.cpu_count() or 1
    steps = dict(zip(MODELS, (args.steps_numeric, args.steps_affine)))

    alone_all, alone_one = {}, {}
    began = time.perf_counter()
    for name in MODELS:  # one after another, every core's thread
        alone_all[name] = _finish(_spawn(name, args.profile, steps[name], cores))
    sequential = time.perf_counter() - began
    began = time.perf_counter()
    together = [_finish(p) for p in [_spawn(name, args.profile, steps[name], 1) for name in MODELS]]
    side_by_side = time.perf_counter() - began
    for name in MODELS:  # one thread, alone: the second thread's speed-up
        alone_one[name] = _finish(_spawn(name, args.profile, steps[name], 1))
    print(json.dumps({
        "benchmark": "side_by_side",
        "profile": args.profile,
        "cores": cores,
        "steps": steps,
        "sequential_all_threads_s": sequential,
        "side_by_side_one_thread_s": side_by_side,
        "side_by_side_speedup": sequential / side_by_side,
        "train_seconds_alone_all_threads": {n: r["seconds"] for n, r in alone_all.items()},
        "train_seconds_alone_one_thread": {n: r["seconds"] for n, r in alone_one.items()},
        "train_seconds_side_by_side": {r["name"]: r["seconds"] for r in together},
        "second_thread_speedup": {n: alone_one[n]["seconds"] / alone_all[n]["seconds"] for n in MODELS},
    }, indent=1))


if __name__ == "__main__":
    main()

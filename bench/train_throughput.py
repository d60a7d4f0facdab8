"""Training throughput of every zoo model: `optim_hunter.core.training.train` against a bare PyTorch loop,
and each one's model FLOP utilisation, in one run.

For each family (the book's profile), both train the same architecture on the same pre-generated
batches with the family's own loss, precision (bf16 autocast where it uses it), AdamW parameter
groups, schedule and gradient clipping; the trainer adds what it adds (config checks, progress
bar, loss bookkeeping, evaluation/snapshot/resume checks; evaluation itself is off on both sides).
They run in alternation, `--repeats` times each, so background load hits both alike; the ratio of
the summed tokens/s is the trainer's efficiency (goal >= 0.8).

MFU: FLOPs of one training step counted by `torch.utils.flop_counter` (forward and backward, the
attention through the math kernel so its two products are counted, over the whole score matrix as
Kaplan et al. 2020 do) per token, times the trainer's tokens/s, over this machine's measured matmul
FLOP/s in the family's precision with the same threads. Everything runs with `--threads` threads
(1: how `make book` trains, two models side by side). Prints one JSON object.

    python bench/train_throughput.py [--profile full|smoke] [--repeats 2] [--threads 1] [--only NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time

import torch

from optim_hunter import zoo
from optim_hunter.core import settings, training

# Steps per timed run: a few seconds each on the book's 2-core machine.
STEPS = {"numeric-icl": 8, "affine-recurrence": 80}
DEFAULT_STEPS = 30


def bare_loop(spec: training.TrainSpec, config: training.TrainConfig, batches: list, steps: int) -> tuple[float, int]:
    """The same optimisation as the trainer, written out: seconds and tokens over `steps`."""
    torch.manual_seed(config.seed)
    model = spec.build(config.seed)
    model.train()
    groups = (spec.param_groups or (lambda m: training.default_param_groups(m, config.weight_decay)))(model)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                  fused=config.fused_optimizer or None)  # the same kernel as the model's run
    seconds, tokens = 0.0, 0
    for step in range(steps):
        began = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = training.lr_at(config, step)
        batch = batches[step % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss = spec.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        float(loss)
        seconds += time.perf_counter() - began
        tokens += spec.tokens(batch)
    return seconds, tokens


def trainer_run(spec: training.TrainSpec, config: training.TrainConfig, batches: list, steps: int,
                run_dir: str) -> tuple[float, int]:
    spec = dataclasses.replace(spec, batch=lambda step: batches[step % len(batches)], evaluate=None)
    config = dataclasses.replace(config, steps=steps, warmup_steps=min(config.warmup_steps, steps), eval_every=0,
                                 snapshots=0, checkpoint_every=0, threads=None)
    result = training.train(spec, config, run_dir, progress=False)
    return result.seconds, result.tokens


def flops_per_token(spec: training.TrainSpec, config: training.TrainConfig, batch) -> float:
    """Counted FLOPs of one forward and backward pass over `batch`, per token."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = spec.build(config.seed)
    model.train()
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss = spec.loss(model, batch)
        loss.backward()
    return counter.get_total_flops() / spec.tokens(batch)


def matmul_flops(threads: int, precision: str = "fp32", size: int = 1024, repeats: int = 20) -> float:
    """Sustained matmul FLOP/s of this machine with `threads` threads, in `precision`."""
    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - began)


def measure(name: str, profile: str, repeats: int, threads: int, peaks: dict[str, float]) -> dict:
    family = zoo.family(name)
    cfg = family.config(profile)
    spec, config = family.train_spec(cfg), cfg.train
    steps = STEPS.get(name, DEFAULT_STEPS)
    batches = [spec.batch(step) for step in range(steps)]
    bare_loop(spec, config, batches, 2)  # warm up allocator and kernels
    totals = {"trainer": [0.0, 0], "bare": [0.0, 0]}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for side, run in (("bare", lambda: bare_loop(spec, config, batches, steps)),
                              ("trainer", lambda: trainer_run(spec, config, batches, steps, tmp))):
                seconds, tokens = run()
                totals[side][0] += seconds
                totals[side][1] += tokens
    rate = {side: tokens / seconds for side, (seconds, tokens) in totals.items()}
    per_token = flops_per_token(spec, config, batches[0])
    if config.precision not in peaks:
        peaks[config.precision] = matmul_flops(threads, config.precision)
    return {
        "name": name,
        "steps": steps,
        "precision": config.precision,
        "trainer_tokens_per_s": rate["trainer"],
        "bare_tokens_per_s": rate["bare"],
        "ratio": rate["trainer"] / rate["bare"],
        "flops_per_token": per_token,
        "mfu": per_token * rate["trainer"] / peaks[config.precision],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="full", choices=settings.PROFILES)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default=None, help="one zoo model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peaks: dict[str, float] = {}
    rows = [measure(name, args.profile, args.repeats, args.threads, peaks)
            for name in ([args.only] if args.only else zoo.names())]
    torch.set_num_threads(args.threads)
    report = {
        "benchmark": "train_throughput",
        "profile": args.profile,
        "threads": args.threads,
        "repeats": args.repeats,
        "models": rows,
        "matmul_flops": peaks,
        "min_ratio": min(row["ratio"] for row in rows),
        "goal": 0.8,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""Training throughput: `optim_hunter.training.train` against a bare PyTorch loop, in one run.

Both train the same architecture (the numeric-icl model of a profile) on the same pre-generated
batches with the same loss, precision (bf16 autocast when the profile uses it), optimiser,
schedule and gradient clipping; the trainer adds what it
adds (its config, progress bar, loss bookkeeping, evaluation/snapshot/resume checks). They run in
alternation, `--repeats` times each, so background load hits both alike; the ratio of the summed
tokens/s is the trainer's efficiency (goal >= 0.8). For context it also measures the data
pipeline alone and a bare loop over TransformerLens's own `NativeModel.forward` (the unfused
attention the hooked model runs). Prints one JSON object.

    python bench/train_throughput.py [--profile full|smoke] [--steps 20] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time

import torch
import torch.nn.functional as F

from optim_hunter import training
from optim_hunter.zoo import numeric


def bare_loop(cfg, batches, steps: int, loss_fn) -> tuple[float, int]:
    """The same optimisation as the trainer, written out: seconds and tokens over `steps`."""
    model = numeric.build_model(cfg, cfg.train.seed)
    model.train()
    groups = training.default_param_groups(model, cfg.train.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr, betas=cfg.train.betas)
    seconds, tokens = 0.0, 0
    for step in range(steps):
        began = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = training.lr_at(cfg.train, step)
        batch = batches[step % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
            loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        float(loss)
        seconds += time.perf_counter() - began
        tokens += sum(ids.size for ids, _ in batch)
    return seconds, tokens


def unfused_loss(model, batch):
    """The answer loss through `NativeModel.forward` (full logits, unfused attention)."""
    total, count = 0.0, 0
    for ids, mask in batch:
        ids_t, where = torch.from_numpy(ids), torch.from_numpy(mask)[:, 1:]
        logits = model(ids_t[:, :-1])
        total = total + F.cross_entropy(logits[where], ids_t[:, 1:][where], reduction="sum")
        count += int(where.sum())
    return total / count


def trainer_run(cfg, batches, steps: int, run_dir) -> tuple[float, int]:
    spec = training.TrainSpec(
        build=lambda seed: numeric.build_model(cfg, seed),
        batch=lambda step: batches[step % len(batches)],
        loss=numeric.answer_loss,
        tokens=lambda batch: int(sum(ids.size for ids, _ in batch)),
    )
    config = dataclasses.replace(cfg.train, steps=steps, warmup_steps=min(cfg.train.warmup_steps, steps),
                                 eval_every=0, snapshots=0, checkpoint_every=0, threads=None)
    result = training.train(spec, config, run_dir, progress=True, description="trainer")
    return result.seconds, result.tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="full", choices=("full", "smoke"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--unfused", action="store_true", help="also time NativeModel.forward")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = numeric.config(args.profile)

    began = time.perf_counter()
    batches = [numeric.make_batch(cfg, step) for step in range(args.steps)]
    data_seconds = time.perf_counter() - began
    data_tokens = sum(sum(ids.size for ids, _ in batch) for batch in batches)

    bare_loop(cfg, batches, 2, numeric.answer_loss)  # warm up allocator and kernels
    totals = {"trainer": [0.0, 0], "bare": [0.0, 0], "bare_unfused": [0.0, 0]}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, run in (
                ("bare", lambda: bare_loop(cfg, batches, args.steps, numeric.answer_loss)),
                ("trainer", lambda: trainer_run(cfg, batches, args.steps, tmp)),
            ):
                seconds, tokens = run()
                totals[name][0] += seconds
                totals[name][1] += tokens
        if args.unfused:
            seconds, tokens = bare_loop(cfg, batches, max(2, args.steps // 4), unfused_loss)
            totals["bare_unfused"] = [seconds, tokens]
    rate = {name: tokens / seconds for name, (seconds, tokens) in totals.items() if seconds > 0}
    report = {
        "benchmark": "train_throughput",
        "profile": args.profile,
        "arch": dataclasses.asdict(cfg.arch),
        "tokens_per_step": data_tokens // args.steps,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": args.threads,
        "trainer_tokens_per_s": rate["trainer"],
        "bare_tokens_per_s": rate["bare"],
        "ratio": rate["trainer"] / rate["bare"],
        "goal": 0.8,
        "data_tokens_per_s": data_tokens / data_seconds,
        "bare_unfused_tokens_per_s": rate.get("bare_unfused"),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""GPU training check: the zoo's toy families trained on a CUDA GPU, against the same runs on the CPU.

Run it where a GPU is lent; without one it says `no GPU: skipped` and exits 0. `--dry-run` runs
every step with the CPU standing in for the GPU and the families' tiny configurations (the script's
own test, no speed claims). For each family (`--families`, the smoke profile's configuration,
`--steps` steps) it trains once on the CPU and once on the GPU (`training.train(..., device=)`) and
reports: whether every parameter ended on the GPU, the first step's loss on each (same weights, same
batch: they differ only by float kernels), the last evaluation's metrics on each, and tokens/s.
One JSON object on stdout.

    python bench/gpu_train_check.py [--families affine-recurrence,attn-only-2l] [--steps 300] [--dry-run]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch


def run(name: str, steps: int, device: torch.device, tiny: bool) -> dict:
    from optim_hunter import zoo
    from optim_hunter.core import training

    fam = zoo.family(name)
    cfg = fam.tiny_config() if tiny else fam.config("smoke")
    train = dataclasses.replace(cfg.train, steps=min(steps, cfg.train.steps), eval_every=0, snapshots=0,
                                checkpoint_every=0, threads=None)
    result = training.train(fam.train_spec(cfg), train, progress=False, device=device)
    where = {p.device.type for p in result.model.parameters()}
    return {"device": str(device), "parameters_on": sorted(where), "steps": result.steps,
            "first_loss": result.losses[0], "last_loss": result.losses[-1],
            "last_eval": {k: v for k, v in result.history[-1].items() if k != "step"},
            "tokens_per_second": result.tokens_per_second}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", default="affine-recurrence,attn-only-2l")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--dry-run", action="store_true", help="the CPU stands in for the GPU, tiny sizes")
    args = parser.parse_args()
    if args.dry_run:
        gpu = torch.device("cpu")
    elif torch.cuda.is_available():
        gpu = torch.device("cuda", 0)
    else:
        print("no GPU: skipped")
        return 0
    report = {"gpu": torch.cuda.get_device_name(0) if gpu.type == "cuda" else "cpu (dry run)", "families": {}}
    for name in args.families.split(","):
        cpu = run(name, args.steps, torch.device("cpu"), args.dry_run)
        on_gpu = run(name, args.steps, gpu, args.dry_run)
        report["families"][name] = {
            "cpu": cpu, "gpu": on_gpu,
            "all_parameters_on_gpu": on_gpu["parameters_on"] == [gpu.type],
            "first_loss_relative_difference": abs(on_gpu["first_loss"] - cpu["first_loss"]) / abs(cpu["first_loss"]),
            "speedup": on_gpu["tokens_per_second"] / cpu["tokens_per_second"],
        }
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0 if all(f["all_parameters_on_gpu"] for f in report["families"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

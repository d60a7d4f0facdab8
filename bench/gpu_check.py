"""GPU check: the language model's core passes on a CUDA GPU, their speed, and their answers against the CPU.

Run it where a GPU is lent (`make gpu-check`); without one it says `no GPU: skipped` and exits 0,
so nothing depends on a GPU. `--dry-run` does every step on the CPU with tiny sizes (the script's
own test, no speed claims). It
  1. measures the GPU's matmul rate (8192^3 products, bf16 and fp32, TF32 as PyTorch defaults it);
  2. loads the bridged model (`OPTIM_HUNTER_MODEL`, default smollm2-135m) on the GPU in bf16 and in
     fp32, and on the CPU in fp32;
  3. on Friedman #2 prompts (the language-model chapter's dataset, `--examples` in-context
     examples, one seed per prompt) times the prefill (`kv_decoding` decoder: the prompt once,
     unembedded at the last position) as tokens/s and as a share of the matmul rate (2 FLOPs per
     parameter per token, attention not counted: a lower bound), and batched greedy decoding
     (`llm_regressor.greedy_answers`, the package's path) as new tokens/s;
  4. counts the prompts whose greedy answers differ: fp32-CUDA vs fp32-CPU and bf16-CUDA vs
     fp32-CPU (the CPU book's answers are the reference).
One JSON object on stdout. About a minute for smollm2-135m on an H200 (most of it the CPU answers).

    python bench/gpu_check.py [--prompts 128] [--examples 25] [--batch 32] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up (kernel choice)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def load(name: str, device: torch.device, dtype: torch.dtype):
    from optim_hunter import zoo
    from optim_hunter.zoo import hf, pretrained

    if name.startswith(zoo.HF_PREFIX):
        return hf.load(name[len(zoo.HF_PREFIX):], device=device, dtype=dtype)
    if name in pretrained.MODELS:
        return pretrained.load(name, device=device, dtype=dtype)
    raise SystemExit(f"gpu check: {name} is a trained toy, not a language model: set OPTIM_HUNTER_MODEL to "
                     f"smollm2-135m or hf:<name-or-path>")


def friedman2_prompts(n: int, examples: int) -> list[str]:
    from optim_hunter.data import datasets, prompts

    splits = (datasets.make_split("friedman2", examples, seed) for seed in range(n))
    return [prompts.format_prompt(s.x_train, s.y_train, s.x_query[0]) for s in splits]


@torch.no_grad()
def prefill_rate(model, texts: list[str], batch: int, device: torch.device) -> tuple[float, int]:
    """Tokens/s of the cached decoder's prompt pass over right-padded batches (real tokens only)."""
    from optim_hunter.analysis import kv_decoding

    encoded = sorted((model.tokenizer(t)["input_ids"] for t in texts), key=len)
    batches = []
    for start in range(0, len(encoded), batch):
        rows = encoded[start:start + batch]
        tokens = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for i, ids in enumerate(rows):
            tokens[i, :len(ids)] = torch.tensor(ids)
        batches.append((tokens.to(device), torch.tensor([len(r) for r in rows], device=device)))
    decoder = kv_decoding.decoder(model)
    if decoder is None:
        raise SystemExit("gpu check: the model has no fast path (a hook attached?)")
    decoder.prefill(*batches[0])  # warm-up
    _sync(device)
    start = time.perf_counter()
    for tokens, lengths in batches:
        decoder.prefill(tokens, lengths)
    _sync(device)
    total = sum(len(ids) for ids in encoded)
    return total / (time.perf_counter() - start), total


def answers(model, texts: list[str], batch: int, device: torch.device) -> tuple[list[str], float, int]:
    """Greedy answers through the package, their seconds and the new tokens they took."""
    from optim_hunter.analysis import llm_regressor

    _sync(device)
    start = time.perf_counter()
    out = llm_regressor.greedy_answers(model, model.tokenizer, texts, max_new_tokens=12, batch_size=batch)
    _sync(device)
    seconds = time.perf_counter() - start
    new_tokens = sum(len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in out.texts)
    return out.texts, seconds, new_tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--examples", type=int, default=25)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU, tiny sizes")
    args = parser.parse_args()
    from optim_hunter.core import devices

    if args.dry_run:
        gpu = torch.device("cpu")
        args.prompts, args.examples, args.batch = min(args.prompts, 4), min(args.examples, 5), min(args.batch, 2)
        size, repeats = 256, 2
    elif not torch.cuda.is_available():
        print(f"no GPU: skipped (this PyTorch, {torch.__version__}, sees no CUDA device; "
              f"`--dry-run` runs the same steps on the CPU)")
        return 0
    else:
        requested = devices.requested()
        gpu = devices.device() if requested.startswith("cuda") else torch.device("cuda", torch.cuda.current_device())
        size, repeats = 8192, 20
    try:
        name = zoo.model_name()
    except ValueError as err:
        print(f"gpu check: {err}", file=sys.stderr)
        return 2
    report: dict = {"model": name, "device": str(gpu), "dry_run": args.dry_run, "prompts": args.prompts,
                    "examples": args.examples, "batch": args.batch}
    if gpu.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(gpu)
    report["matmul_tflops"] = {"bf16": matmul_tflops(gpu, torch.bfloat16, size, repeats),
                               "fp32": matmul_tflops(gpu, torch.float32, size, repeats)}
    texts = friedman2_prompts(args.prompts, args.examples)
    cpu = torch.device("cpu")
    try:
        reference = load(name, cpu, torch.float32)
    except FileNotFoundError as err:  # ModelNotAvailable / PretrainedNotAvailable say what to do
        print(f"gpu check: {err}", file=sys.stderr)
        return 2
    n_params = sum(p.numel() for n, p in reference.original_model.named_parameters() if "embed" not in n)
    report["parameters_without_embedding"] = n_params
    cpu_texts, cpu_seconds, _ = answers(reference, texts, args.batch, cpu)
    report["cpu_fp32_answer_seconds"] = cpu_seconds
    del reference
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = load(name, gpu, dtype)
        rate, tokens = prefill_rate(model, texts, args.batch, gpu)
        gpu_texts, seconds, new_tokens = answers(model, texts, args.batch, gpu)
        differ = [i for i, (a, b) in enumerate(zip(gpu_texts, cpu_texts)) if a != b]
        report[label] = {
            "described": devices.describe(model, name),
            "prefill_tokens": tokens, "prefill_tokens_per_s": rate,
            "prefill_share_of_matmul_rate": 2 * n_params * rate / 1e12 / report["matmul_tflops"][label],
            "decoding_new_tokens_per_s": new_tokens / seconds, "answer_seconds": seconds,
            "answers_differing_from_cpu_fp32": len(differ), "of": len(texts),
            "first_differences": [{"prompt": i, "gpu": gpu_texts[i], "cpu": cpu_texts[i]} for i in differ[:5]],
        }
        del model
        if gpu.type == "cuda":
            torch.cuda.empty_cache()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

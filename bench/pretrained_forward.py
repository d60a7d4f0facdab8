"""Forward speed of the pretrained model through the package against the bare Hugging Face model.

The same prompts (Friedman #2 with 25 examples, about 1,400 tokens) run through: (1) the bare HF
model as transformers loads it (fused SDPA attention), (2) the package's hook-free path,
`kv_decoding.logits` (the bridge's fused twin), (3) the hooked bridge itself (eager attention, what
pattern hooks need). Alternating `--repeats` times so background load hits all alike. Also
measures bf16 autocast against fp32: speed, and how often the greedy next token agrees at the
answer position (bf16 is used nowhere its answers differ). Prints one JSON object;
`pretrained_forward_ratio` = tokens/s of (2) / tokens/s of (1), goal >= 0.9.

Against the machine's limit: `prefill_matmul_ratio` = the package's prefill FLOP/s (FLOPs of one
prompt's pass counted by `optim_hunter.analysis.flops`: torch's counter with the CPU attention
kernel counted, causally; torch's own leaves it out; times its tokens/s) / a 2048x2048 fp32
matmul's FLOP/s on the same threads (goal >= 0.8). Decoding: `batched_vs_one_at_a_time` = seconds of
`greedy_answers` one prompt at a time / seconds in batches of 8 on the same 8 distinct prompts
(goal >= 1: batching is never slower).

    python bench/pretrained_forward.py [--prompts 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from optim_hunter import zoo
from optim_hunter.analysis import flops, kv_decoding, llm_regressor
from optim_hunter.data import datasets, prompts
from optim_hunter.zoo import pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--examples", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--decode-prompts", type=int, default=8, help="distinct prompts decoded both ways")
    args = parser.parse_args()
    spec = pretrained.MODELS[args.model]
    bare, _ = pretrained.load_hf(spec)  # its own copy: nothing of the bridge touches it
    model = zoo.load(args.model)
    tok = model.tokenizer
    batches = []
    for seed in range(args.prompts):
        split = datasets.make_split("friedman2", args.examples, seed, round_to=2)
        batches.append(torch.tensor([tok(prompts.format_prompt(split.x_train, split.y_train,
                                                               split.x_query[0], 2))["input_ids"]]))
    n_tokens = sum(b.shape[1] for b in batches)
    paths = {
        "bare_hf": lambda t: bare(t).logits,
        "package": lambda t: kv_decoding.logits(model, t),
        "hooked_bridge": lambda t: model(t),
    }
    seconds = dict.fromkeys(paths, 0.0)
    with torch.inference_mode():
        for fn in paths.values():
            fn(batches[0][:, :64])  # warm up
        for _ in range(args.repeats):
            for name, fn in paths.items():
                began = time.perf_counter()
                for tokens in batches:
                    fn(tokens)
                seconds[name] += time.perf_counter() - began
        agree, fp32_s, bf16_s = 0, 0.0, 0.0
        for tokens in batches:
            start = time.perf_counter()
            full = kv_decoding.logits(model, tokens)[0, -1]
            fp32_s += time.perf_counter() - start
            with torch.autocast("cpu", dtype=torch.bfloat16):
                start = time.perf_counter()
                half = kv_decoding.logits(model, tokens)[0, -1]
                bf16_s += time.perf_counter() - start
            agree += int(full.argmax() == half.argmax())
    rate = {name: args.repeats * n_tokens / s for name, s in seconds.items()}
    with torch.inference_mode():
        _, counted = flops.counted(lambda: kv_decoding.logits(model, batches[0]))
    flops_per_token = counted / batches[0].shape[1]
    size = 2048
    a, b = torch.randn(size, size), torch.randn(size, size)

    def matmul_rate() -> float:
        for _ in range(3):
            a @ b
        began = time.perf_counter()
        for _ in range(10):
            a @ b
        return 2 * size**3 * 10 / (time.perf_counter() - began)

    # the best of three tries around a prefill timed again: both at their quietest
    prefill = []
    rates = []
    with torch.inference_mode():
        for _ in range(3):
            rates.append(matmul_rate())
            began = time.perf_counter()
            kv_decoding.logits(model, batches[0])
            prefill.append(batches[0].shape[1] / (time.perf_counter() - began))
    matmul = max(rates)
    # the chapter's kind of prompt, every one a different problem (repeated prompts would flatter batching)
    texts = [prompts.format_prompt(s.x_train, s.y_train, s.x_query[0], 2)
             for s in (datasets.make_split("friedman2", args.examples, seed, round_to=2)
                       for seed in range(args.decode_prompts))]
    timing = {}
    for label, size_ in (("one_at_a_time", 1), ("batched", 8)):
        began = time.perf_counter()
        said = llm_regressor.greedy_answers(model, tok, texts, batch_size=size_, max_new_tokens=8)
        timing[label] = (time.perf_counter() - began, said.texts)
    print(json.dumps({
        "model": args.model, "prompts": args.prompts, "tokens": n_tokens,
        "threads": torch.get_num_threads(),
        "tokens_per_s": rate,
        "pretrained_forward_ratio": rate["package"] / rate["bare_hf"],
        "hooked_bridge_ratio": rate["hooked_bridge"] / rate["bare_hf"],
        "bf16_next_token_agreement": agree / len(batches),
        "bf16_speedup": fp32_s / bf16_s,
        "flops_per_token": flops_per_token,
        "matmul_flops": matmul,
        "prefill_tokens_per_s": max(prefill),
        "prefill_matmul_ratio": max(prefill) * flops_per_token / matmul,
        "decoding_seconds": {k: v[0] for k, v in timing.items()},
        "batched_vs_one_at_a_time": timing["one_at_a_time"][0] / timing["batched"][0],
        "batched_identical_answers": timing["one_at_a_time"][1] == timing["batched"][1],
    }))


if __name__ == "__main__":
    main()

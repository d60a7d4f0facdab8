"""Batched evaluation of the LLM regressor against one-prompt-at-a-time generation, in one run.

The 004 study generated one prompt at a time with TransformerLens's `generate`. Here the same
Friedman #2 prompts are decoded greedily three ways, alternating `--repeats` times so background
load hits all alike: (1) `model.generate` per prompt, as the original ran; (2) our decoder one
prompt at a time; (3) our decoder batched (right-padded batches, key/value cache). The answers
must agree exactly. Prints one JSON object; `batched_eval_speedup` = (1) / (3), goal >= 10.
With `--bf16`, (3) also runs under bfloat16 autocast: its speed-up over float32 and the share of
answers identical to float32's (why the book decodes in float32).

    python bench/batched_eval.py [--profile full|smoke] [--prompts 64] [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from optim_hunter import zoo
from optim_hunter.analysis import llm_regressor
from optim_hunter.core import settings
from optim_hunter.data import datasets, prompts


def tl_generate(model, tok, text: str, max_new_tokens: int = 10, stop: str = "\n") -> str:
    """One prompt through TransformerLens's own greedy `generate`, cut at the answer's end."""
    ids = torch.tensor(tok(text)["input_ids"])[None]
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, verbose=False,
                         stop_at_eos=False)
    return llm_regressor.trim_answer(tok.decode(out[0, ids.shape[1]:].tolist()), stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--examples", type=int, default=25)
    # 16: on a 2-core CPU bigger batches gain nothing and time less steadily (batches of 64 took
    # 0.87-1.37 s for the same 64 prompts across runs, the allocator growing its heap).
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also time batched bf16 decoding and compare answers")
    args = parser.parse_args()
    profile, name = settings.profile(args.profile), zoo.model_name(args.model)
    model = zoo.load(name, profile, progress=False) if not name.startswith("hf:") else zoo.load(name)
    tok = model.tokenizer
    texts = []
    for seed in range(args.prompts):
        split = datasets.make_split("friedman2", args.examples, seed, round_to=2)
        texts.append(prompts.format_prompt(split.x_train, split.y_train, split.x_query[0]))
    timings = {"batched": 0.0, "one_at_a_time": 0.0, "tl_generate": 0.0}
    answers = {}
    with torch.inference_mode():
        # Warm every path up first: steady-state timings for all three. (The first passes over
        # large batches are slow while the allocator grows its heap: measured 1.35 s, then 0.87 s.)
        for _ in range(2):
            llm_regressor.greedy_answers(model, tok, texts, max_new_tokens=10, batch_size=args.batch)
        llm_regressor.greedy_answers(model, tok, texts[:2], max_new_tokens=10, batch_size=1)
        tl_generate(model, tok, texts[0])
        for _ in range(args.repeats):
            for mode, batch in (("batched", args.batch), ("one_at_a_time", 1)):
                began = time.perf_counter()
                result = llm_regressor.greedy_answers(model, tok, texts, max_new_tokens=10, batch_size=batch)
                timings[mode] += time.perf_counter() - began
                answers[mode] = result.texts
            began = time.perf_counter()
            answers["tl_generate"] = [tl_generate(model, tok, text) for text in texts]
            timings["tl_generate"] += time.perf_counter() - began
        if args.bf16:
            began = time.perf_counter()
            bf16 = llm_regressor.greedy_answers(model, tok, texts, max_new_tokens=10, batch_size=args.batch,
                                                precision="bf16")
            timings["batched_bf16"] = time.perf_counter() - began
    identical = answers["batched"] == answers["one_at_a_time"] == answers["tl_generate"]
    extra = {} if not args.bf16 else {
        "bf16_speedup": timings["batched"] / args.repeats / timings["batched_bf16"],
        "bf16_identical_answer_share": float(np.mean([a == b for a, b in zip(bf16.texts, answers["batched"])])),
        "bf16_failed": int(bf16.parsed.n_failed),
    }
    print(json.dumps({**extra,
        "model": name, "profile": profile, "prompts": len(texts), "batch_size": args.batch,
        "threads": torch.get_num_threads(),
        "batched_s": timings["batched"] / args.repeats,
        "one_at_a_time_s": timings["one_at_a_time"] / args.repeats,
        "tl_generate_s": timings["tl_generate"] / args.repeats,
        "batched_eval_speedup": timings["tl_generate"] / timings["batched"],
        "speedup_vs_own_one_at_a_time": timings["one_at_a_time"] / timings["batched"],
        "identical_answers": identical,
        "mean_prompt_tokens": float(np.mean([len(tok(t)["input_ids"]) for t in texts])),
    }))


if __name__ == "__main__":
    main()

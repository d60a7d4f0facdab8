"""bfloat16 against float32 on the competence map's tasks: do the answers, and the map's verdicts, change?

The book decodes in float32 because bf16 autocast changed greedy answers on the regression prompts.
This measures it again where the language model does or does not learn in context: every cell of the
book's competence map (`competence.book_grid`, real and shuffled-y prompts), answered greedily once in
float32 and once under bfloat16 autocast, in one run. Prints one JSON object: the share of answers
identical to float32's, per task and overall; the cells whose "learns in context" verdict differs
between the two; each precision's decoding seconds (a ratio only when the machine was quiet).

    python bench/bf16_competence.py [--profile full|smoke] [--model smollm2-135m] [--prompts N]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from optim_hunter import competence, llm_regressor, settings, zoo
from optim_hunter.claim_rows import Recording


def answered(model, tokenizer, texts: list[str], precision: str) -> tuple[llm_regressor.Answers, float]:
    """The competence map's decoding of `texts` (as `competence.measure` calls it) and its seconds."""
    began = time.perf_counter()
    with torch.inference_mode():
        out = llm_regressor.greedy_answers(model, tokenizer, texts, max_new_tokens=10, batch_size=32, stop=None,
                                           precision=precision)
    return out, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", type=int, default=None, help="prompts per cell (default: the book's)")
    args = parser.parse_args()
    profile, name = settings.profile(args.profile), settings.model(args.model)
    model = zoo.load(name, profile, progress=False) if not name.startswith("hf:") else zoo.load(name)
    tokenizer = model.tokenizer
    cells, n_prompts = competence.book_grid(profile)
    n_prompts = args.prompts or n_prompts
    frame, texts = competence.map_prompts(cells, n_prompts, tokenizer)
    recording = Recording(chapter="bench", profile=profile, model=name)
    fp32, fp32_s = answered(model, tokenizer, texts, "fp32")
    bf16, bf16_s = answered(model, tokenizer, texts, "bf16")
    same = np.array([a == b for a, b in zip(fp32.texts, bf16.texts)])
    task_of = np.repeat(frame["task"].to_numpy(), 2)  # real and shuffled prompt of each row
    learns = {precision: competence.from_answers(frame, result, recording).table.set_index(
        ["task", "n_examples", "format", "order"])["learns"] for precision, result in (("fp32", fp32), ("bf16", bf16))}
    key = lambda index: "_".join(str(part) for part in index)  # noqa: E731
    print(json.dumps({
        "model": name, "profile": profile, "cells": len(cells), "prompts_per_cell": n_prompts,
        "answers": len(texts), "threads": torch.get_num_threads(),
        "bf16_identical_answer_share": float(same.mean()),
        "bf16_identical_by_task": {task: float(same[task_of == task].mean()) for task in dict.fromkeys(task_of)},
        "fp32_failed": int(fp32.parsed.n_failed), "bf16_failed": int(bf16.parsed.n_failed),
        "cells_learning_fp32": [key(i) for i, v in learns["fp32"].items() if v],
        "cells_learning_bf16": [key(i) for i, v in learns["bf16"].items() if v],
        "verdict_changes": [key(i) for i in learns["fp32"].index if learns["fp32"][i] != learns["bf16"][i]],
        "fp32_s": fp32_s, "bf16_s": bf16_s, "bf16_speedup": fp32_s / bf16_s,
    }, indent=1))


if __name__ == "__main__":
    main()

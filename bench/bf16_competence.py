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

import numpy as np
import torch

from optim_hunter import zoo
from optim_hunter.chapters.competence import competence
from optim_hunter.core import settings
from optim_hunter.report.claim_rows import Recording


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", type=int, default=None, help="prompts per cell (default: the book's)")
    args = parser.parse_args()
    profile, name = settings.profile(args.profile), zoo.model_name(args.model)
    model = zoo.load(name, profile, progress=False) if not name.startswith("hf:") else zoo.load(name)
    cells, n_prompts = competence.book_grid(profile)
    n_prompts = args.prompts or n_prompts
    recording = Recording(chapter="bench", profile=profile, model=name)
    with torch.inference_mode():
        maps = {p: competence.measure(model, model.tokenizer, cells, n_prompts=n_prompts, recording=recording,
                                      precision=p) for p in ("fp32", "bf16")}
    fp32, bf16 = maps["fp32"].prompts, maps["bf16"].prompts
    same = np.concatenate([(fp32[c] == bf16[c]).to_numpy() for c in ("real_text", "shuffled_text")])
    task_of = np.concatenate([fp32["task"].to_numpy()] * 2)
    learns = {p: m.table.set_index(competence.KEYS)["learns"] for p, m in maps.items()}
    key = lambda index: "_".join(str(part) for part in index)  # noqa: E731
    print(json.dumps({
        "model": name, "profile": profile, "cells": len(cells), "prompts_per_cell": n_prompts,
        "answers": len(same), "threads": torch.get_num_threads(),
        "bf16_identical_answer_share": float(same.mean()),
        "bf16_identical_by_task": {task: float(same[task_of == task].mean()) for task in dict.fromkeys(task_of)},
        "fp32_failed": int(maps["fp32"].table.failed.sum() + maps["fp32"].table.failed_shuffled.sum()),
        "bf16_failed": int(maps["bf16"].table.failed.sum() + maps["bf16"].table.failed_shuffled.sum()),
        "cells_learning_fp32": [key(i) for i, v in learns["fp32"].items() if v],
        "cells_learning_bf16": [key(i) for i, v in learns["bf16"].items() if v],
        "verdict_changes": [key(i) for i in learns["fp32"].index if learns["fp32"][i] != learns["bf16"][i]],
        "fp32_s": maps["fp32"].seconds, "bf16_s": maps["bf16"].seconds,
        "bf16_speedup": maps["fp32"].seconds / maps["bf16"].seconds,
    }, indent=1))


if __name__ == "__main__":
    main()

"""A stub language model over characters for the LLM-regressor tests: `OracleModel` reads the
prompt and spells out the mean of its outputs one character per step (or refuses), so the expected
predictions are known independently of any trained model."""

import re

import numpy as np
import torch

from optim_hunter.data import prompts

CHARS = "\n :.-0123456789abcdefghijklmnopqrstuvwxyzFO"


class CharTokenizer:
    def __call__(self, text):
        return {"input_ids": [CHARS.index(c) for c in text]}

    def decode(self, ids):
        return "".join(CHARS[i] for i in ids)


class OracleModel(torch.nn.Module):
    """Answers the mean of the prompt's outputs; refuses ('no idea') when feature 0 > threshold."""

    def __init__(self, refuse_above=np.inf):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.refuse_above = refuse_above
        self.calls = []

    def forward(self, tokens):
        """Causal: the logits at position p depend only on tokens[:p + 1] (one char per token)."""
        self.calls.append(tuple(tokens.shape))
        logits = torch.full((*tokens.shape, len(CHARS)), -1e9)
        tok = CharTokenizer()
        for row in range(tokens.shape[0]):
            text = tok.decode(tokens[row].tolist())
            for p in range(len(text)):
                prefix = text[: p + 1]
                if "Output:" not in prefix or not re.search(r"Feature 0: ", prefix):
                    continue
                prompt, generated = prefix.rsplit("Output:", 1)
                outputs = [float(v) for v in re.findall(r"Output: (-?[\d.]+)", prompt + "Output:")]
                if not outputs:
                    continue
                query0 = float(re.findall(r"Feature 0: (-?[\d.]+)", prompt)[-1])
                answer = " no idea\n" if query0 > self.refuse_above else (
                    " " + prompts.format_number(np.mean(outputs)) + "\n\nFeature"
                )
                nxt = answer[len(generated)] if len(generated) < len(answer) else "\n"
                logits[row, p, CHARS.index(nxt)] = 0.0
        return logits

"""Bad input a user would try, across the public API, the CLI and the settings: each gets an error
that names the input and the fix, before any work (issue #14's sweep; the cases that failed it)."""

from __future__ import annotations

import jaxtyping
import numpy as np
import pandas as pd
import pytest
import torch

from optim_hunter import zoo
from optim_hunter.analysis import evaluation, llm_regressor, probes
from optim_hunter.book import cli
from optim_hunter.core import devices
from optim_hunter.data import datasets
from optim_hunter.report import claims, plots


class CharTokenizer:
    def __call__(self, text):
        return {"input_ids": [ord(c) % 128 for c in text]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def zeros(tokens):
    return torch.zeros(tokens.shape[0], tokens.shape[1], 128)


def claim_fields(**overrides):
    fields = dict(chapter="c", claim="c", source_seed="004", source_value=None, measured=1.0, unit="u",
                  profile="full")
    return fields | overrides


@pytest.mark.parametrize("call, error, message", [
    (lambda: zoo.model_name("nope"), ValueError, "unknown model 'nope'.*smollm2-135m.*hf:<name-or-path>"),
    (lambda: zoo.model_name("hf:"), ValueError, "names no Hugging Face model"),
    (lambda: devices.placement({"OPTIM_HUNTER_DEVICE_MAP": "gpu0"}), ValueError, "DEVICE_MAP='gpu0'.*auto"),
    (lambda: datasets.make_split("friedman2", 5, noise=float("nan")), ValueError, "noise must be a finite"),
    (lambda: evaluation.evaluate(["average"], "friedman2", n_examples=5, seeds=5), TypeError, r"range\(5\)"),
    (lambda: evaluation.summarize(pd.DataFrame()), ValueError, "results table lacks the columns"),
    (lambda: llm_regressor.greedy_answers(zeros, CharTokenizer(), "abc"), TypeError, r"for one prompt pass \[text\]"),
    (lambda: llm_regressor.greedy_answers(zeros, CharTokenizer(), ["abc"], precision="fp16"), ValueError,
     r"precision must be one of \('fp32', 'bf16'\)"),
    (lambda: llm_regressor.LLMRegressor(zeros, CharTokenizer()).predict(np.ones((1, 1))), ValueError, "not fitted"),
    (lambda: llm_regressor.max_examples(CharTokenizer(), "friedman2", 5), ValueError, "context of 5 tokens holds no"),
    (lambda: probes.probe_r2(np.ones((20, 2)), np.ones(19)), ValueError, "one row per sample"),
    (lambda: probes.probe_r2(np.random.default_rng(0).random((20, 2)), np.r_[np.ones(19), np.nan]), ValueError,
     r"non-finite target or features at samples \[19\]"),
    (lambda: claims.make_claim("a.b", **claim_fields(profile="fulll")), ValueError, "unknown profile 'fulll'"),
    (lambda: plots.lines(pd.DataFrame({"x": [1]}), x="x", y="y", group="g"), ValueError, r"no column \['y', 'g'\]"),
])
def test_bad_input_is_named_with_its_fix(call, error, message, monkeypatch):
    # Under pytest the annotations are checked at run time and refuse some of these first; the
    # message tested here is the one a user meets without that checker (the book, a session).
    monkeypatch.setattr(jaxtyping.config, "jaxtyping_disable", True)
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("argv, message", [
    (["eval", "friedman2", "--round", "-1"], "--round must be between 0 and 15"),
    (["eval", "friedman2", "--jobs", "0"], "--jobs must be a number of workers"),
    (["execute", "--root", "/nonexistent-book"], "has no _toc.yml: run this in the book's folder or pass --root"),
    (["execute", "--lanes", "0"], "--lanes must be >= 1"),
    (["execute", "--profile", "fulll"], "unknown profile 'fulll'"),
])
def test_cli_refuses_before_any_work(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "evaluate" not in err.replace("optim-hunter", "")  # no progress bar
    assert len(err.strip().splitlines()) == 1

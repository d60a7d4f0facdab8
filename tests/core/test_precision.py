"""Training precision chosen by the machine (bf16 only where it is fast), forced by
OPTIM_HUNTER_DTYPE, and part of the model's cache key."""

import subprocess
import sys

import pytest

from optim_hunter.core import precision


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("", "auto"), ("float32", "fp32"), ("FP32", "fp32"),
                                             ("bfloat16", "bf16"), ("bf16", "bf16")])
def test_the_setting_is_read(value, expected):
    assert precision.requested({precision.ENV: value}) == expected


def test_a_bad_setting_names_itself_and_the_choices():
    with pytest.raises(ValueError, match="OPTIM_HUNTER_DTYPE='float16x' is not a precision: use auto, float32"):
        precision.requested({precision.ENV: "float16x"})


def test_bf16_only_where_it_is_fast(monkeypatch):
    monkeypatch.setattr(precision, "fast_bf16_cpu", lambda: False)
    assert precision.training_precision("bf16", {}) == "fp32"
    assert precision.training_precision("bf16", {precision.ENV: "bfloat16"}) == "bf16"  # forced
    monkeypatch.setattr(precision, "fast_bf16_cpu", lambda: True)
    assert precision.training_precision("bf16", {}) == "bf16"
    assert precision.training_precision("bf16", {precision.ENV: "float32"}) == "fp32"
    assert precision.training_precision("fp32", {}) == "fp32"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor: 0\nflags\t\t: fpu avx2 avx512f amx_bf16\n")
    assert {"avx2", "amx_bf16"} <= precision._cpu_flags(info)
    assert precision._cpu_flags(tmp_path / "missing") == set()


_KEY = ("from optim_hunter import zoo; from optim_hunter.zoo import numeric; cfg = numeric.config('full'); "
        "print(cfg.train.precision, zoo.cache_key('numeric-icl', cfg))")


def _run(env_extra):
    import os

    env = {**os.environ, **env_extra}
    env.pop(precision.ENV, None) if precision.ENV not in env_extra else None
    out = subprocess.run([sys.executable, "-c", _KEY], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_kernels_below_avx512_train_numeric_icl_in_fp32_under_another_key():
    # ATEN_CPU_CAPABILITY=avx2 is a CPU without AVX-512 to PyTorch: bf16 attention would fail there
    # ("pack_vnni2 is only supported when avx512 is supported") or crawl.
    slow_precision, slow_key = _run({"ATEN_CPU_CAPABILITY": "avx2"})
    assert slow_precision == "fp32"
    forced_precision, forced_key = _run({precision.ENV: "float32"})
    assert (forced_precision, forced_key) == ("fp32", slow_key)  # the key says the precision
    bf16_precision, bf16_key = _run({precision.ENV: "bfloat16"})
    assert bf16_precision == "bf16" and bf16_key != slow_key


def test_float16_is_for_the_language_model_only(monkeypatch):
    # training in fp16 would need loss scaling: with float16 set, training keeps its auto choice
    monkeypatch.setattr(precision, "fast_bf16_cpu", lambda: False)
    assert precision.requested({precision.ENV: "float16"}) == "fp16"
    assert precision.training_precision("bf16", {precision.ENV: "float16"}) == "fp32"
    assert precision.training_precision("fp32", {precision.ENV: "fp16"}) == "fp32"
    import torch

    assert precision.inference_dtype("cpu", {precision.ENV: "float16"}) == torch.float16


def test_auto_means_two_things_documented_in_one_place():
    import torch

    # training: bf16 only on a fast-bf16 CPU (above); the language model: bf16 on CUDA, fp32 on the CPU
    assert precision.inference_dtype("cpu", {}) == torch.float32
    assert precision.inference_dtype("cuda:0", {}) == torch.bfloat16
    assert "training (`training_precision`)" in precision.__doc__ and "(`inference_dtype`)" in precision.__doc__

"""The language model's device: parsing and validation before any load, device-generic fast paths
(run on `meta` tensors: nothing moves to the CPU unasked), decoding that keeps its key/value cache
under a placement, the execution cache key, and one GPU lane in `optim-hunter execute`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from optim_hunter import chapters
from optim_hunter.analysis import kv_decoding, llm_regressor
from optim_hunter.book import book_executor, chapter_cache
from optim_hunter.book.book_executor import Task
from optim_hunter.core import devices, precision, settings, transformer, twins

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in (devices.ENV, precision.ENV, *devices.PLACEMENT_ENVS):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def one_gpu(monkeypatch, no_cuda):
    """A machine with one CUDA device, as far as the decision functions can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.mark.parametrize("value, expected", [("auto", "cpu"), ("", "cpu"), ("cpu", "cpu"), ("CPU", "cpu")])
def test_cpu_machine_resolves_to_the_cpu(no_cuda, value, expected):
    assert devices.device(env={devices.ENV: value}) == torch.device(expected)
    assert devices.device(value) == torch.device(expected)


@pytest.mark.parametrize("value, expected", [("auto", "cuda:0"), ("cuda", "cuda:0"), ("cuda:0", "cuda:0"), ("cpu", "cpu")])
def test_a_gpu_machine_resolves_auto_to_cuda(one_gpu, value, expected):
    assert devices.device(env={devices.ENV: value}) == torch.device(expected)


def test_cuda_without_cuda_is_a_clear_error_naming_the_fix(no_cuda):
    with pytest.raises(ValueError, match=r"OPTIM_HUNTER_DEVICE='cuda' asks for a CUDA GPU, .* set OPTIM_HUNTER_DEVICE=cpu"):
        devices.device(env={devices.ENV: "cuda"})


def test_a_gpu_index_the_machine_lacks_is_refused(one_gpu):
    with pytest.raises(ValueError, match=r"OPTIM_HUNTER_DEVICE='cuda:3': this machine has 1 CUDA device \(cuda:0\)"):
        devices.device(env={devices.ENV: "cuda:3"})


def test_bad_device_names_are_refused_with_the_choices(no_cuda, monkeypatch):
    for bad in ("tpu", "gpu", "cuda:x"):
        with pytest.raises(ValueError, match=f"OPTIM_HUNTER_DEVICE='{bad}'.*auto, cpu, cuda"):
            devices.device(env={devices.ENV: bad})
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="MPS, which this machine does not have"):
        devices.device(env={devices.ENV: "mps"})


def test_a_device_beside_a_placement_is_refused(no_cuda):
    env = {devices.ENV: "cpu", "OPTIM_HUNTER_DEVICE_MAP": "auto"}
    with pytest.raises(ValueError, match="both set: unset OPTIM_HUNTER_DEVICE"):
        devices.validated(env)
    assert devices.validated({"OPTIM_HUNTER_DEVICE_MAP": "auto"}) == torch.device("cpu")


def test_the_language_model_s_dtype_follows_the_device_unless_forced():
    assert precision.inference_dtype("cpu", {}) == torch.float32
    assert precision.inference_dtype(torch.device("cuda", 0), {}) == torch.bfloat16
    assert precision.inference_dtype("mps", {}) == torch.float32
    assert precision.inference_dtype("cuda:0", {precision.ENV: "float32"}) == torch.float32
    assert precision.inference_dtype("cpu", {precision.ENV: "bf16"}) == torch.bfloat16
    assert precision.inference_dtype("cuda:0", {precision.ENV: "float16"}) == torch.float16
    with pytest.raises(ValueError, match="OPTIM_HUNTER_DTYPE='half8' is not a precision"):
        precision.inference_dtype("cpu", {precision.ENV: "half8"})


def test_settings_give_device_dtype_and_the_run_context(no_cuda, monkeypatch):
    assert devices.validated() == torch.device("cpu") and precision.inference_dtype("cpu") == torch.float32
    assert settings.run_context() == {"device": "cpu", "dtype": "float32"}
    assert precision.inference_dtype("cpu", {precision.ENV: "bfloat16"}) == torch.bfloat16
    monkeypatch.setenv(devices.ENV, "cuda")
    with pytest.raises(ValueError, match="OPTIM_HUNTER_DEVICE='cuda'"):
        settings.run_context()


def test_hf_load_validates_the_device_before_reading_anything(no_cuda, monkeypatch):
    from optim_hunter.zoo import hf

    monkeypatch.setenv(devices.ENV, "cuda:1")
    with pytest.raises(ValueError, match="OPTIM_HUNTER_DEVICE='cuda:1' asks for a CUDA GPU"):
        hf.load("/no/such/model/anywhere")  # the device is refused, not the missing folder


def test_describe_is_one_line_read_from_the_weights(no_cuda):
    line = devices.describe(torch.nn.Linear(2, 2), "toy")
    assert line == "toy on cpu in float32 (OPTIM_HUNTER_DEVICE=auto, OPTIM_HUNTER_DTYPE=auto)"
    assert "in bfloat16" in devices.describe(torch.nn.Linear(2, 2).to(torch.bfloat16), "toy")
    assert devices.of(torch.nn.Linear(2, 2).to("meta")) == torch.device("meta")
    assert devices.of(lambda x: x) == torch.device("cpu")


# --- the fast paths on any device -------------------------------------------------------------


def test_native_cached_decoding_stays_on_the_model_s_device():
    # meta tensors carry shapes and devices only: any tensor made on (or moved to) the CPU would
    # meet a meta one and fail, and the outputs would not be on meta
    arch = transformer.Arch(n_layers=2, d_model=32, n_heads=4, n_ctx=64, d_vocab=40, positional="rotary")
    model = transformer.to_bridge(transformer.build(arch, seed=1).state_dict(), arch, None, "rotary").to("meta")
    decoder = kv_decoding.decoder(model)
    assert isinstance(decoder, kv_decoding.NativeKVDecoder)
    first = decoder.prefill(torch.randint(0, 40, (3, 9)), torch.tensor([5, 9, 7]))  # CPU inputs: moved
    step = decoder.step(first.argmax(-1))
    assert first.device.type == step.device.type == "meta" and step.shape == (3, 40)
    assert kv_decoding.logits(model, torch.randint(0, 40, (2, 6))).device.type == "meta"  # CPU tokens moved


def test_hf_prefill_stays_on_the_model_s_device():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64, max_position_embeddings=128, vocab_size=50)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.set_attn_implementation("sdpa")
    model.eval()
    last = kv_decoding.HFKVDecoder(model).prefill(torch.randint(0, 50, (3, 9)), torch.tensor([5, 9, 7]))
    assert last.device.type == "meta" and last.shape == (3, 50)  # unembedded at the last position only


def test_placement_keeps_the_key_value_cache(tiny_hf_models, monkeypatch, no_cuda):
    """With OPTIM_HUNTER_DEVICE_MAP set, k new tokens cost k forward passes (the prompt once, then
    one token per pass), never one pass over the whole prompt per token."""
    from optim_hunter import zoo

    monkeypatch.setenv("OPTIM_HUNTER_DEVICE_MAP", "cpu")
    model = zoo.load(f"hf:{tiny_hf_models['llama']}")
    twin = twins.fast_twin(model)
    assert twin is not None and kv_decoding.decoder(model) is not None
    widths: list[int] = []
    twin.model.register_forward_pre_hook(lambda mod, args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
                                         with_kwargs=True)
    prompt = "1 2 3 4 5 6 7"
    k = 5
    llm_regressor.greedy_answers(model, model.tokenizer, [prompt], max_new_tokens=k, stop="\x00")  # never stops early
    assert len(widths) == k <= k + 1  # the prompt pass gives the first token, each later pass one more
    assert widths[0] == len(model.tokenizer(prompt)["input_ids"]) and widths[1:] == [1] * (k - 1)


# --- the build: cache key and lanes ------------------------------------------------------------


def test_the_execution_cache_key_says_device_and_dtype_for_the_language_model_chapters(no_cuda, monkeypatch,
                                                                                      tmp_path):
    monkeypatch.delenv("OPTIM_HUNTER_CONTRASTS", raising=False)
    llm, toy = REPO / "book" / "linear_fn.md", REPO / "book" / "induction_heads.md"
    cpu = chapter_cache.chapter_context("book/linear_fn", llm)
    assert (cpu["device"], cpu["dtype"]) == ("cpu", "float32")
    build = tmp_path / "_build"
    same = chapter_cache.cache_path(build, "book/linear_fn", cpu)
    assert "cpu" not in same.name  # the CPU book's folder names carry no device
    toy_cpu = chapter_cache.chapter_context("book/induction_heads", toy)
    monkeypatch.setattr(settings, "run_context", lambda: {"device": "cuda:0", "dtype": "bfloat16"})
    gpu = chapter_cache.chapter_context("book/linear_fn", llm)
    assert gpu != cpu and chapter_cache.cache_path(build, "book/linear_fn", gpu) != same
    bf16, fp32 = (chapter_cache.cache_path(build, "book/linear_fn", {**gpu, "dtype": d}) for d in ("bfloat16", "float32"))
    assert bf16 != fp32 and fp32 != same
    # a chapter that trains its own toys: the language model's device is no part of its key
    assert chapter_cache.chapter_context("book/induction_heads", toy) == toy_cpu
    assert "device" not in toy_cpu and "model" not in toy_cpu


def _sleeper(seconds: float):
    def command(task, root, profile, out):
        return [sys.executable, "-c", f"import time; time.sleep({seconds})"]
    return command


def _overlap(a, b) -> bool:
    return a.start < b.end and b.start < a.end


@pytest.mark.parametrize("gpu", [True, False])
def test_llm_chapters_share_one_gpu_lane(tmp_path, monkeypatch, capsys, gpu):
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    monkeypatch.setattr(devices, "validated", lambda env=None: device)
    monkeypatch.setattr(book_executor, "_store", lambda cache, out: None)
    monkeypatch.setattr(book_executor, "execution_cache", lambda root, profile, doc: None)  # no chapter files here
    llm = [Task("execute", doc) for doc, record in chapters.records().items() if record.language_model]
    toys = [Task("train", "a"), Task("train", "b")]
    outcomes = book_executor.run(tmp_path, "smoke", lanes=2, tasks=llm + toys, progress=False, command=_sleeper(0.6))
    by = {o.task: o for o in outcomes}
    assert all(o.status == "done" for o in outcomes)
    said = capsys.readouterr().out
    llm_runs = [by[t.name] for t in llm]
    if gpu:
        assert {o.lane for o in llm_runs} == {2} and {by[t.name].lane for t in toys} <= {0, 1}
        assert not any(_overlap(a, b) for i, a in enumerate(llm_runs) for b in llm_runs[i + 1:])
        assert said.count("the language-model chapters run one at a time in lane 2") == 1
        assert said.startswith("cuda:0: ")  # said once, before any work
    else:
        assert all(o.lane in (0, 1) for o in outcomes) and "language-model chapters" not in said

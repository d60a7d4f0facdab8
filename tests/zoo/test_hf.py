"""Real models through `load("hf:...")`: tiny GPT-2 and Llama built offline, and the missing-model error."""

from __future__ import annotations

import pytest
import torch
from conftest import STANDARD_HOOKS

from optim_hunter import zoo
from optim_hunter.analysis import yardstick
from optim_hunter.core import devices, twins
from optim_hunter.zoo import hf


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_tiny_hf_models_load_hooked_with_standard_names(tiny_hf_models, arch):
    model = zoo.load(f"hf:{tiny_hf_models[arch]}")
    tokens = model.to_tokens("Feature 0: 12.50\nOutput:")
    logits, activations = model.run_with_cache(tokens)
    assert logits.shape[:2] == tokens.shape
    missing = [hook for hook in STANDARD_HOOKS if hook not in activations]
    assert not missing
    assert ("hook_pos_embed" in activations) == (arch == "gpt2")  # Llama is rotary
    assert model.W_Q.shape[:2] == (2, 4) and model.W_U.shape == (32, model.cfg.d_vocab)
    assert model.to_string(tokens[0, 1:]) == "Feature 0: 12.50\nOutput:"
    assert model.tokenizer.decode(model.tokenizer("(1, 5)")["input_ids"], skip_special_tokens=True) == "(1, 5)"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hf_logits_match_transformers(tiny_hf_models, arch):
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(tiny_hf_models[arch], attn_implementation="eager").eval()
    model = zoo.load(f"hf:{tiny_hf_models[arch]}")
    tokens = model.to_tokens("(1, 5)\n(2, 7)\n(4,")
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), reference(tokens).logits, atol=1e-4, rtol=1e-4)


def test_the_numeric_yardstick_runs_on_hf_models(tiny_hf_models):
    model = zoo.load(f"hf:{tiny_hf_models['gpt2']}")
    numbers = yardstick.read_numbers(model, model.tokenizer, ["Feature 0: 1.00\nOutput:", "(1, 5)\n(2, "])
    assert len(numbers) == 2 and all(v is None or isinstance(v, float) for v in numbers)


def test_a_missing_folder_names_what_to_do(tmp_path):
    with pytest.raises(hf.ModelNotAvailable, match="no such folder.*save_pretrained"):
        zoo.load(f"hf:{tmp_path / 'not-there'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(hf.ModelNotAvailable, match="no config.json"):
        zoo.load(f"hf:{tmp_path / 'empty'}")


def test_a_missing_hub_model_names_the_download_and_the_cache(tmp_path):
    with pytest.raises(hf.ModelNotAvailable) as err:
        hf.load("some-org/tiny-model-that-is-not-cached", cache_dir=tmp_path / "hub")
    message = str(err.value)
    assert "hf download some-org/tiny-model-that-is-not-cached" in message
    assert "huggingface-cli download some-org/tiny-model-that-is-not-cached" in message
    assert str(tmp_path / "hub") in message
    with pytest.raises(hf.ModelNotAvailable, match="hf download gpt2-surely-absent"):
        zoo.load("hf:gpt2-surely-absent")  # the default cache, offline


def test_bad_hf_names_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        zoo.load("hf:")
    with pytest.raises(ValueError, match="valid model id"):
        zoo.load("hf:not a valid !! id")


def test_device_placement_settings_are_parsed_and_refused_clearly():
    assert devices.placement({}) == {}
    assert devices.placement({"OPTIM_HUNTER_DEVICE_MAP": "auto", "OPTIM_HUNTER_N_DEVICES": "2"}) == {
        "device_map": "auto", "n_devices": 2}
    assert devices.placement({"OPTIM_HUNTER_DEVICE_MAP": '{"": "cpu"}'}) == {"device_map": {"": "cpu"}}
    with pytest.raises(ValueError, match="OPTIM_HUNTER_DEVICE_MAP.*not valid JSON"):
        devices.placement({"OPTIM_HUNTER_DEVICE_MAP": "{oops"})
    with pytest.raises(ValueError, match="OPTIM_HUNTER_N_DEVICES='two'.*positive integer"):
        devices.placement({"OPTIM_HUNTER_N_DEVICES": "two"})


def test_the_device_map_setting_places_the_model_and_keeps_the_fast_twin(tiny_hf_models, monkeypatch):
    """With OPTIM_HUNTER_DEVICE_MAP the HF model is loaded already placed (transformers' device_map),
    then bridged; the fast twin stays, so decoding keeps its key/value cache."""
    from transformers import AutoModelForCausalLM

    seen = {}
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    monkeypatch.setenv("OPTIM_HUNTER_DEVICE_MAP", '{"": "cpu"}')
    model = zoo.load(f"hf:{tiny_hf_models['llama']}")
    assert seen["device_map"] == {"": "cpu"}
    assert {p.device.type for p in model.parameters()} == {"cpu"}  # placed where the map says
    assert twins.fast_twin(model) is not None
    tokens = model.to_tokens("(1, 5)")
    assert model(tokens).shape[:2] == tokens.shape


def test_a_folder_without_tokenizer_files_is_refused_before_loading(tiny_hf_models, tmp_path):
    import shutil

    folder = tmp_path / "weights-only"
    shutil.copytree(tiny_hf_models["llama"], folder)
    for name in hf.TOKENIZER_FILES + ("special_tokens_map.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(hf.ModelNotAvailable, match=r"no tokenizer files.*tokenizer.save_pretrained"):
        zoo.load(f"hf:{folder}")

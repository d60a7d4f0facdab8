"""The CPython-stdlib corpus (files, split, BPE, token arrays, cache) and the attn-only-2l-code family."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from optim_hunter import zoo
from optim_hunter.core import checkpoints, training
from optim_hunter.zoo import code_corpus as cc

# A slice of the library, a small BPE: the corpus builds in about a second.
TINY = cc.CorpusConfig(vocab_size=300, bpe_bytes=40_000, max_bytes=100_000)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_source_files_are_the_stdlib_without_site_packages_or_tests():
    paths = cc.source_files()
    assert paths == sorted(paths) and len(paths) > 100
    assert all(p.endswith(".py") and "site-packages" not in p for p in paths)
    assert not any(cc.TEST_DIRS.intersection(p.split("/")[:-1]) for p in paths)
    assert "os.py" in paths and "json/decoder.py" in paths
    with_tests = cc.source_files(include_tests=True)
    assert set(paths) < set(with_tests)


def test_split_is_disjoint_complete_and_deterministic():
    paths = cc.source_files()
    train, held = cc.split_files(paths, 0.05, seed=0)
    assert not set(train) & set(held) and sorted(train + held) == paths
    assert 0.02 < len(held) / len(paths) < 0.09
    assert cc.split_files(paths, 0.05, seed=0) == (train, held)
    assert cc.split_files(paths, 0.05, seed=1) != (train, held)
    # a file's side depends on its own path, not on which other files exist
    train_sub, held_sub = cc.split_files(paths[::2], 0.05, seed=0)
    assert set(held_sub) <= set(held) and set(train_sub) <= set(train)
    capped = cc.files(TINY)
    assert capped.train and capped.held_out and not set(capped.train) & set(capped.held_out)
    assert set(capped.train) <= set(train) and set(capped.held_out) <= set(held)


def test_bpe_training_is_deterministic_and_round_trips():
    root = cc.stdlib_root()
    texts = [cc.read_text(root, p) for p in cc.take_bytes(root, cc.source_files(), 30_000)]
    a, b = cc.train_bpe(texts, 300), cc.train_bpe(texts, 300)
    assert a.to_str() == b.to_str() and a.get_vocab_size() == 300 and a.token_to_id(cc.EOT) == 0
    wrapped = cc.wrap_tokenizer(a)
    source = "def f(x):\n    return {'é': x ** 2}  # ünïcode\n"
    ids = wrapped(source)["input_ids"]
    assert ids[0] == 0 and wrapped.decode(ids, skip_special_tokens=True) == source


def test_corpus_is_cached_and_identical_across_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path / "one"))
    first = cc.load(TINY)
    assert first.path.is_relative_to(tmp_path / "one")
    assert first.train.dtype == torch.int64 and 0 <= int(first.train.min()) and int(first.train.max()) < 300
    assert first.train[0] == 0 and first.held_out[0] == 0  # every file starts after <|endoftext|>
    assert int((first.train == 0).sum()) == len(first.train_files)
    again = cc.load(TINY)
    assert torch.equal(first.train, again.train) and torch.equal(first.held_out, again.held_out)
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path / "two"))
    other = cc.load(TINY)
    assert torch.equal(first.train, other.train)
    assert first.tokenizer.backend_tokenizer.to_str() == other.tokenizer.backend_tokenizer.to_str()
    text = first.tokenizer.decode(first.held_out[1:200].tolist())
    assert text == cc.read_text(cc.stdlib_root(), first.held_out_files[0])[: len(text)]


def test_windows_are_deterministic_in_the_seed(private_cache):
    corpus = cc.load(TINY)
    a, b, c = (corpus.windows(4, 32, seed) for seed in ((1, 7), (1, 7), (1, 8)))
    assert a.shape == (4, 32) and torch.equal(a, b) and not torch.equal(a, c)
    slices = corpus.train.unfold(0, 32, 1)  # every run of 32 consecutive training tokens
    assert all(bool((slices == row).all(1).any()) for row in a)
    held = corpus.windows(3, 32, 0, split="held_out")
    assert torch.equal(held, corpus.windows(3, 32, 0, split="held_out"))
    cfg = dataclasses.replace(cc.tiny_config(), corpus=TINY)
    spec = cc.train_spec(cfg)
    assert torch.equal(spec.batch(5), spec.batch(5)) and not torch.equal(spec.batch(5), spec.batch(6))
    assert spec.batch(0).shape == (cfg.batch_size, cfg.n_ctx)


def test_a_corrupt_tokenizer_is_retrained_with_a_warning(private_cache):
    good = cc.load(TINY)
    path = good.path / "tokenizer.safetensors"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoints.CheckpointError, match="hash mismatch"):
        checkpoints.load_checkpoint(good.path / "tokenizer")
    with pytest.warns(UserWarning, match="hash mismatch.*retraining"):
        rebuilt = cc.load(TINY)
    checkpoints.load_checkpoint(good.path / "tokenizer")  # verified again
    assert rebuilt.tokenizer.backend_tokenizer.to_str() == good.tokenizer.backend_tokenizer.to_str()
    assert torch.equal(rebuilt.train, good.train)
    # a tokenizer file that is intact but not this configuration's is not used either
    sidecar = good.path / "tokenizer"
    tensors, meta = checkpoints.load_checkpoint(sidecar)
    checkpoints.save_checkpoint(sidecar, {"json": cc._bytes_tensor("{}")}, meta)
    with pytest.warns(UserWarning, match="unreadable.*retraining"):
        assert cc.tokenizer(TINY).backend_tokenizer.to_str() == good.tokenizer.backend_tokenizer.to_str()


def test_corrupt_tokens_are_re_encoded(private_cache):
    good = cc.load(TINY)
    (good.path / "tokens.json").unlink()  # a partial cache
    fresh = cc.load(TINY)
    assert torch.equal(fresh.train, good.train)
    path = good.path / "tokens.safetensors"
    data = bytearray(path.read_bytes())
    data[-8] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="re-encoding"):
        again = cc.load(TINY)
    assert torch.equal(again.held_out, good.held_out)


def test_impossible_sizes_raise_clearly(private_cache):
    with pytest.raises(ValueError, match="vocab_size must be at least 257"):
        cc.CorpusConfig(vocab_size=200)
    with pytest.raises(ValueError, match="held_out_fraction"):
        cc.CorpusConfig(held_out_fraction=1.0)
    with pytest.raises(ValueError, match="max_bytes"):
        cc.CorpusConfig(max_bytes=-1)
    with pytest.raises(ValueError, match="d_vocab"):
        dataclasses.replace(cc.tiny_config(), corpus=cc.CorpusConfig(vocab_size=512))
    with pytest.raises(ValueError, match="yield only .* tokens, not vocab_size 30000"):
        cc.load(cc.CorpusConfig(vocab_size=30_000, bpe_bytes=1_000, max_bytes=100_000))
    corpus = cc.load(TINY)
    with pytest.raises(ValueError, match="do not fit the held_out split"):
        corpus.windows(1, len(corpus.held_out) + 1, 0, split="held_out")
    with pytest.raises(ValueError, match="split must be"):
        corpus.windows(1, 8, 0, split="test")
    huge = cc.make_config(steps=2, snapshots=0, d_model=16, n_heads=2, n_ctx=len(corpus.train) + 1,
                          vocab_size=300, bpe_bytes=40_000, max_bytes=100_000)
    with pytest.raises(ValueError, match="do not fit the train split"):
        cc.train_spec(huge)


def test_family_interface_and_profiles():
    family = zoo.family("attn-only-2l-code")
    assert family in cc.FAMILIES and family.version == cc.VERSION and family.config is cc.config
    full, smoke = cc.config("full"), cc.config("smoke")
    assert full.arch.attn_only and full.arch.n_layers == 2 and full.train.snapshots >= 100
    assert smoke.train.snapshots >= 20 and smoke.train.steps < full.train.steps
    assert full.arch.d_vocab == full.corpus.vocab_size and full.corpus.max_bytes == 0


def test_tiny_family_trains_through_the_zoo(cache):
    model = zoo.load("attn-only-2l-code", "smoke", progress=False)
    assert isinstance(model.tokenizer, PreTrainedTokenizerFast)
    assert model.cfg.d_vocab == cc.tiny_config().corpus.vocab_size
    tokens = model.to_tokens("import os\n")
    assert tokens[0, 0].item() == 0 and model.to_string(tokens[0, 1:]) == "import os\n"
    steps = zoo.snapshots("attn-only-2l-code", "smoke")
    assert steps == training.snapshot_steps(cc.tiny_config().train.steps, 2)
    cfg = zoo.config("attn-only-2l-code", "smoke")
    state = zoo.snapshot_state("attn-only-2l-code", steps[-1], "smoke")
    batch = cc.eval_tokens(cfg, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(batch), cc.fused(state, cfg)(batch), atol=1e-5, rtol=1e-5)
    _, activations = model.run_with_cache(batch)
    for hook in ("hook_embed", "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z", "blocks.1.hook_resid_post"):
        assert hook in activations
    meta = zoo.metadata("attn-only-2l-code", "smoke")
    assert "eval_loss" in meta["history"][-1]

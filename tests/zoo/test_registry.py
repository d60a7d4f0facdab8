"""The zoo registry: load by name, cache keys, corrupt checkpoints, hook names on every model."""

from __future__ import annotations

import pytest
import torch
from conftest import STANDARD_HOOKS, shrink

from optim_hunter import zoo
from optim_hunter.book import cli
from optim_hunter.core import checkpoints, locks, training
from optim_hunter.zoo import numeric


def test_names_and_unknown_model_error():
    assert "numeric-icl" in zoo.names()
    with pytest.raises(ValueError, match="numeric-icl") as err:
        zoo.load("no-such-model")
    assert "hf:<name-or-path>" in str(err.value)


def test_load_trains_once_then_serves_the_cache(cache, monkeypatch):
    first = zoo.load("numeric-icl", "smoke", progress=False)
    status = zoo.status("numeric-icl", "smoke")
    assert status.cached and status.size_bytes > 0
    assert status.path.is_relative_to(cache)
    calls = []
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(1))
    second = zoo.load("numeric-icl", "smoke", progress=False)
    assert not calls  # served from the cache
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_cache_key_covers_config_and_code_versions(cache, monkeypatch):
    cfg = numeric.tiny_config()
    key = zoo.cache_key("numeric-icl", cfg)
    assert key == zoo.cache_key("numeric-icl", numeric.tiny_config())  # stable
    import dataclasses

    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=2e-3))
    assert zoo.cache_key("numeric-icl", changed) != key
    shrink(monkeypatch, "numeric-icl", cfg, version=numeric.VERSION + "-changed")
    assert zoo.cache_key("numeric-icl", cfg) != key
    monkeypatch.undo()
    monkeypatch.setattr(training, "CODE_VERSION", training.CODE_VERSION + "-changed")
    assert zoo.cache_key("numeric-icl", cfg) != key


def test_a_changed_config_retrains_instead_of_serving_a_stale_model(cache, monkeypatch):
    zoo.load("numeric-icl", "smoke", progress=False)
    old_dir = zoo.run_dir("numeric-icl", "smoke")
    import dataclasses

    base = numeric.tiny_config()
    longer = dataclasses.replace(base, train=dataclasses.replace(base.train, steps=5))
    shrink(monkeypatch, "numeric-icl", longer)
    assert zoo.status("numeric-icl", "smoke").state == "missing"
    zoo.load("numeric-icl", "smoke", progress=False)
    new_dir = zoo.run_dir("numeric-icl", "smoke")
    assert new_dir != old_dir and zoo.status("numeric-icl", "smoke").cached
    assert zoo.metadata("numeric-icl", "smoke")["steps"] == 5


def test_a_corrupt_checkpoint_is_retrained_with_a_warning(cache):
    zoo.load("numeric-icl", "smoke", progress=False)
    final = zoo.run_dir("numeric-icl", "smoke") / "model.safetensors"
    good = zoo.load("numeric-icl", "smoke", progress=False).state_dict()
    data = bytearray(final.read_bytes())
    data[-10] ^= 0x55
    final.write_bytes(bytes(data))
    assert zoo.status("numeric-icl", "smoke").state == "corrupt"
    with pytest.warns(UserWarning, match="hash mismatch.*retraining"):
        model = zoo.load("numeric-icl", "smoke", progress=False)
    assert zoo.status("numeric-icl", "smoke").cached
    for name, tensor in model.state_dict().items():  # deterministic: the same weights again
        assert torch.equal(tensor, good[name]), name


def test_a_partial_checkpoint_is_retrained(cache):
    zoo.train("numeric-icl", "smoke", progress=False)
    (zoo.run_dir("numeric-icl", "smoke") / "model.json").unlink()
    assert zoo.status("numeric-icl", "smoke").state == "corrupt"
    zoo.load("numeric-icl", "smoke", progress=False)
    assert zoo.status("numeric-icl", "smoke").cached


def test_a_cached_model_is_served_without_the_lock(cache, monkeypatch):
    """A read-only or shared cache: serving needs no writable lock file."""
    zoo.train("numeric-icl", "smoke", progress=False)
    monkeypatch.setattr(locks, "exclusive", lambda *args, **kwargs: pytest.fail("took the lock to serve a cached model"))
    zoo.load("numeric-icl", "smoke", progress=False)
    assert zoo.train("numeric-icl", "smoke", progress=False).name == "model"


def test_an_unwritable_cache_names_the_setting(cache, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(blocker))
    with pytest.raises(OSError, match="OPTIM_HUNTER_CACHE to a writable folder"):
        zoo.train("numeric-icl", "smoke", progress=False)


def test_metadata_missing_a_key_is_retrained_not_a_keyerror(cache):
    final = zoo.train("numeric-icl", "smoke", progress=False)
    tensors, meta = checkpoints.load_checkpoint(final)
    del meta["snapshot_steps"]  # as an older package version might have written it, hash intact
    checkpoints.save_checkpoint(final, tensors, meta)
    with pytest.warns(UserWarning, match="lacks snapshot_steps.*retraining"):
        assert zoo.snapshots("numeric-icl", "smoke")


def test_a_killed_writers_temporary_file_is_not_corruption(cache):
    import subprocess
    import sys

    directory = zoo.run_dir("numeric-icl", "smoke")
    directory.mkdir(parents=True)
    pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                         text=True, check=True).stdout.strip()
    orphan = directory / f".model.safetensors.tmp-{pid}"
    orphan.write_bytes(b"x" * 1000)  # what a kill during the final save leaves
    assert zoo.status("numeric-icl", "smoke").state == "missing"
    zoo.train("numeric-icl", "smoke", progress=False)
    assert zoo.status("numeric-icl", "smoke").cached and not orphan.exists()


def test_cli_train_reports_the_steps_of_this_run(cache, capsys):
    cfg = zoo.config("numeric-icl", "smoke")
    training.train(numeric.train_spec(cfg), cfg.train, zoo.run_dir("numeric-icl", "smoke"), progress=False,
                   run_key=zoo.cache_key("numeric-icl", cfg), stop_at=2)  # an interrupted run
    assert cli.main(["train", "numeric-icl", "--profile", "smoke", "--quiet"]) == 0
    total = cfg.train.steps
    assert f"{total - 2} steps (resumed at step 2 of {total})" in capsys.readouterr().out
    assert cli.main(["train", "numeric-icl", "--profile", "smoke", "--quiet"]) == 0
    assert f"already trained ({total} steps), cached" in capsys.readouterr().out


def test_snapshots_load_as_hooked_models(cache):
    steps = zoo.snapshots("numeric-icl", "smoke")
    assert steps == training.snapshot_steps(numeric.tiny_config().train.steps, 2)
    early = zoo.load_snapshot("numeric-icl", steps[0], "smoke")
    final = zoo.load("numeric-icl", "smoke", progress=False)
    assert not torch.equal(early.W_E, final.W_E)
    last = zoo.load_snapshot("numeric-icl", steps[-1], "smoke")
    assert torch.equal(last.W_E, final.W_E)
    with pytest.raises(ValueError, match="no snapshot"):
        zoo.load_snapshot("numeric-icl", 10_000, "smoke")


def test_history_records_metrics_over_training(cache):
    meta = zoo.metadata("numeric-icl", "smoke")
    assert [row["step"] for row in meta["history"]] == [numeric.tiny_config().train.steps]
    row = meta["history"][-1]
    assert {"loss", "linear_mae_1", "linear_ratio", "friedman2_mae", "affine_top1"} <= row.keys()
    assert len(meta["losses"]) == meta["steps"]


def example_input(name, model):
    """What a family's model reads: a numeric prompt for numeric-icl, vectors or states otherwise."""
    return zoo.family(name).example_input(model)


@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_model_is_hooked_with_standard_names(cache, name):
    model = zoo.load(name, "smoke", progress=False)
    inputs = example_input(name, model)
    logits, activations = model.run_with_cache(inputs)
    pos = inputs.shape[1]
    assert logits.shape[:2] == (1, pos)
    attn_only = bool(getattr(model.cfg, "attn_only", False))
    vectors = zoo.family(name).reads == "vectors"  # read in before the bridge
    wanted = [h for h in STANDARD_HOOKS if not (attn_only and ("mlp" in h or "resid_mid" in h or "ln2" in h))
              and not (h.startswith("blocks.") and int(h.split(".")[1]) >= model.cfg.n_layers)
              and not (vectors and h == "hook_embed")]
    missing = [hook for hook in wanted if hook not in activations]
    assert not missing
    n_layers, n_heads, d_model, d_head = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model, model.cfg.d_head
    assert activations["blocks.0.attn.hook_pattern"].shape == (1, n_heads, pos, pos)
    assert activations["blocks.0.attn.hook_z"].shape == (1, pos, n_heads, d_head)
    assert model.W_Q.shape == model.W_K.shape == model.W_V.shape == (n_layers, n_heads, d_model, d_head)
    assert model.W_O.shape == (n_layers, n_heads, d_head, d_model)
    # the residual stream adds up: resid_post = resid_pre + attn_out (+ mlp_out)
    expected = activations["blocks.0.hook_resid_pre"] + activations["blocks.0.hook_attn_out"]
    if not attn_only:
        expected = expected + activations["blocks.0.hook_mlp_out"]
    torch.testing.assert_close(activations["blocks.0.hook_resid_post"], expected)


def test_numeric_icl_tokenizer_through_the_bridge(cache):
    model = zoo.load("numeric-icl", "smoke", progress=False)
    tokens = example_input("numeric-icl", model)
    assert tokens[0, 0].item() == model.tokenizer.bos_token_id
    assert model.W_E.shape == (model.cfg.d_vocab, model.cfg.d_model)
    assert model.W_U.shape == (model.cfg.d_model, model.cfg.d_vocab)
    assert "hook_pos_embed" in model.run_with_cache(tokens)[1]
    assert model.to_string(tokens[0, 1:]).endswith("Output:")
    tok = model.tokenizer
    assert tok.decode(tok("Output: 12.5")["input_ids"], skip_special_tokens=True) == "Output: 12.5"
    assert tok.convert_ids_to_tokens(tok("12.5")["input_ids"])[1:] == ["12", ".5"]


def test_cli_models_and_train(cache, capsys):
    assert cli.main(["models", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "numeric-icl" in out and "missing" in out
    assert cli.main(["train", "numeric-icl", "--profile", "smoke", "--quiet"]) == 0
    assert cli.main(["models", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "cached" in out and str(cache) in out
    assert cli.main(["train", "no-such-model", "--profile", "smoke"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_cli_user_mistakes_are_one_line_with_exit_2(cache, capsys, tmp_path, monkeypatch):
    assert cli.main(["train", "hf:gpt2", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "loaded, not trained" in err and "Traceback" not in err and "or hf:" not in err
    assert cli.main(["eval", "friedman2", "--round", "400", "--seeds", "2"]) == 2
    assert "--round must be between 0 and 15" in capsys.readouterr().err
    assert cli.main(["eval", "friedman2", "--examples", "10000000000", "--seeds", "2"]) == 2
    assert "n_examples must be at most 1,000,000" in capsys.readouterr().err
    assert cli.main(["eval", "friedman2", "--seeds", "1000000000"]) == 2
    assert "--seeds must be between 1 and 100,000" in capsys.readouterr().err
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(blocked))
    assert cli.main(["train", "numeric-icl", "--profile", "smoke", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optim-hunter: error:" in err and "Traceback" not in err


def test_cli_models_lists_the_pretrained_model(cache, capsys):
    assert cli.main(["models", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "verified" in out and "SmolLM2-135M-Instruct.Q4_1.gguf" in out


@pytest.mark.parametrize("name", zoo.names())
def test_the_fused_module_computes_what_the_hooked_model_does(cache, name):
    """zoo.load_fused (the one fused forward, no hooks) against the hooked bridge, final and at
    the first snapshot."""
    fam = zoo.family(name)
    model = zoo.load(name, "smoke", progress=False)
    inputs = fam.example_input(model)
    first = zoo.snapshots(name, "smoke")[0]
    with torch.no_grad():
        torch.testing.assert_close(zoo.load_fused(name, profile="smoke")(inputs), model(inputs), atol=1e-5, rtol=1e-5)
        early = zoo.load_snapshot(name, first, "smoke")
        torch.testing.assert_close(zoo.load_fused(name, first, "smoke")(inputs), early(inputs), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no snapshot at step"):
        zoo.snapshot_state(name, 10**6, "smoke")

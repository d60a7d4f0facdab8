"""The trainer: determinism, resume, schedules, snapshots and the checkpoint format."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from optim_hunter.core import checkpoints, diskspace, training
from optim_hunter.core.checkpoints import CheckpointError
from optim_hunter.core.training import TrainConfig, TrainSpec


class TinyLM(nn.Module):
    """Embedding -> MLP -> logits: enough to exercise every trainer path in milliseconds."""

    def __init__(self, vocab: int = 11, width: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, vocab))

    def forward(self, tokens):
        return self.mlp(self.embed(tokens))


def tiny_spec(**overrides) -> TrainSpec:
    def build(seed):
        torch.manual_seed(seed)
        return TinyLM()

    def batch(step):
        rng = np.random.default_rng(step)
        x = torch.from_numpy(rng.integers(0, 11, size=(8, 6)))
        return x, (x + 1) % 11  # learn "next number"

    def loss(model, batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())

    return TrainSpec(build=build, batch=batch, loss=loss, tokens=lambda b: b[0].numel(), **overrides)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_identical_weights():
    config = TrainConfig(steps=6, warmup_steps=2, seed=3)
    first = training.train(tiny_spec(), config, progress=False)
    second = training.train(tiny_spec(), config, progress=False)
    assert same(weights(first.model), weights(second.model))
    assert first.losses == second.losses
    other = training.train(tiny_spec(), TrainConfig(steps=6, warmup_steps=2, seed=4), progress=False)
    assert not same(weights(first.model), weights(other.model))


def test_training_reduces_the_loss():
    result = training.train(tiny_spec(), TrainConfig(steps=60, lr=1e-2), progress=False)
    assert np.mean(result.losses[-5:]) < 0.5 * np.mean(result.losses[:5])
    assert result.tokens == 60 * 48 and result.tokens_per_second > 0


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path):
    config = TrainConfig(steps=8, warmup_steps=2, eval_every=2, seed=1)
    evals = lambda model, step: {"probe": float(next(model.parameters()).sum())}  # noqa: E731
    straight = training.train(tiny_spec(evaluate=evals), config, progress=False)
    stopped = training.train(tiny_spec(evaluate=evals), config, tmp_path, stop_at=3, progress=False)
    assert stopped.steps == 3
    assert checkpoints.checkpoint_exists(tmp_path / "resume")
    resumed = training.train(tiny_spec(evaluate=evals), config, tmp_path, progress=False)
    assert resumed.steps == 8 and resumed.resumed_from == 3
    assert same(weights(straight.model), weights(resumed.model))
    assert resumed.losses == straight.losses
    assert resumed.history == straight.history
    assert not checkpoints.checkpoint_exists(tmp_path / "resume")  # finished runs clean up


def test_ctrl_c_leaves_a_resume_point(tmp_path):
    config = TrainConfig(steps=6, seed=2)
    spec = tiny_spec()

    def interrupted_batch(step):
        if step == 4:
            raise KeyboardInterrupt
        return spec.batch(step)

    with pytest.raises(KeyboardInterrupt):
        training.train(TrainSpec(spec.build, interrupted_batch, spec.loss), config, tmp_path, progress=False)
    _, meta = checkpoints.load_checkpoint(tmp_path / "resume")
    assert meta["step"] == 4
    resumed = training.train(spec, config, tmp_path, progress=False)
    straight = training.train(spec, config, progress=False)
    assert same(weights(straight.model), weights(resumed.model))


def test_a_resume_point_of_another_config_is_ignored(tmp_path):
    training.train(tiny_spec(), TrainConfig(steps=6, seed=0), tmp_path, stop_at=2, progress=False)
    other = TrainConfig(steps=6, seed=1)
    resumed = training.train(tiny_spec(), other, tmp_path, progress=False)
    straight = training.train(tiny_spec(), other, progress=False)
    assert same(weights(straight.model), weights(resumed.model))


def test_evaluation_callbacks_and_history():
    calls = []

    def callback(model, step):
        calls.append((step, model.training))
        return {"double": 2.0 * step}

    result = training.train(
        tiny_spec(evaluate=lambda m, s: {"step_seen": float(s)}),
        TrainConfig(steps=7, eval_every=3),
        callbacks=[callback],
        progress=False,
    )
    assert [row["step"] for row in result.history] == [3, 6, 7]
    assert all(row["double"] == 2 * row["step"] and row["step_seen"] == row["step"] for row in result.history)
    assert all(not training_mode for _, training_mode in calls)  # evaluated in eval mode
    assert all(math.isfinite(row["loss"]) for row in result.history)


def test_snapshots_are_written_at_log_spaced_steps(tmp_path):
    result = training.train(tiny_spec(), TrainConfig(steps=20, snapshots=5), tmp_path, progress=False)
    assert result.snapshot_steps == training.snapshot_steps(20, 5)
    for step in result.snapshot_steps:
        tensors, meta = checkpoints.load_checkpoint(tmp_path / "snapshots" / f"step_{step:07d}")
        assert meta["step"] == step
    final, _ = checkpoints.load_checkpoint(tmp_path / "snapshots" / "step_0000020")
    assert same(final, weights(result.model))


@pytest.mark.parametrize("total,count", [(10, 1), (10, 10), (100, 8), (5000, 100), (7, 3)])
def test_snapshot_steps(total, count):
    steps = training.snapshot_steps(total, count)
    assert len(steps) == count == len(set(steps))
    assert steps == sorted(steps) and steps[-1] == total and steps[0] >= 1
    if count > 3:
        gaps = np.diff(steps)
        assert gaps[0] <= gaps[-1]  # dense early, sparse late


def test_snapshot_steps_rejects_impossible_counts():
    assert training.snapshot_steps(10, 0) == []
    with pytest.raises(ValueError, match="distinct"):
        training.snapshot_steps(5, 6)


def test_learning_rate_schedule():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert training.lr_at(config, 0) == pytest.approx(0.1)
    assert training.lr_at(config, 9) == pytest.approx(1.0)
    assert training.lr_at(config, 10) == pytest.approx(1.0)
    assert training.lr_at(config, 100) == pytest.approx(0.1)
    values = [training.lr_at(config, s) for s in range(10, 101)]
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))
    constant = TrainConfig(steps=10, lr=0.5, schedule="constant")
    assert {training.lr_at(constant, s) for s in range(10)} == {0.5}


def test_a_run_can_stop_early_on_a_longer_schedule():
    full = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    early = dataclasses.replace(full, steps=20, schedule_steps=100)
    assert [training.lr_at(early, s) for s in range(20)] == [training.lr_at(full, s) for s in range(20)]
    # the closed form at step 55: halfway through the cosine of the 100-step schedule
    assert training.lr_at(dataclasses.replace(full, steps=60, schedule_steps=100), 55) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="schedule_steps"):
        dataclasses.replace(full, schedule_steps=50)
    # left at their defaults they are not in the cache key: adding the fields retrained no model
    assert "fused_optimizer" not in checkpoints._plain(full)
    assert checkpoints.fingerprint(full) != checkpoints.fingerprint(dataclasses.replace(full, fused_optimizer=True))
    assert checkpoints.fingerprint(full) == checkpoints.fingerprint(dataclasses.replace(full, schedule_steps=0))
    assert "schedule_steps" not in checkpoints._plain(full)
    assert checkpoints.fingerprint(early) != checkpoints.fingerprint(dataclasses.replace(early, schedule_steps=0))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 10, "lr": -1}, "lr"),
        ({"steps": 10, "warmup_steps": 11}, "warmup"),
        ({"steps": 10, "schedule": "linear"}, "schedule"),
        ({"steps": 10, "snapshots": 11}, "snapshots"),
        ({"steps": 10, "threads": 0}, "threads"),
        ({"steps": 10, "eval_every": -1}, "eval_every"),
    ],
)
def test_bad_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_a_diverging_loss_stops_training():
    spec = tiny_spec()
    nan_loss = lambda model, batch: spec.loss(model, batch) * float("nan")  # noqa: E731
    with pytest.raises(FloatingPointError, match="step 0"):
        training.train(TrainSpec(spec.build, spec.batch, nan_loss), TrainConfig(steps=3), progress=False)


# --- checkpoints ---------------------------------------------------------------------------------


def sample_tensors():
    return {
        "a.weight": torch.randn(3, 4),
        "b.bias": torch.arange(5, dtype=torch.int64),
        "scalar": torch.tensor(2.5),
        "half": torch.ones(2, dtype=torch.float16),
    }


def test_checkpoint_round_trip(tmp_path):
    tensors = sample_tensors()
    checkpoints.save_checkpoint(tmp_path / "ckpt", tensors, {"step": 7, "config": {"x": [1, 2]}})
    loaded, meta = checkpoints.load_checkpoint(tmp_path / "ckpt")
    assert same(loaded, tensors) and all(loaded[k].dtype == tensors[k].dtype for k in tensors)
    assert meta == {"step": 7, "config": {"x": [1, 2]}}
    sidecar = json.loads((tmp_path / "ckpt.json").read_text())
    # an independent reading of the seal: sha256 of "<tensor hash>|<canonical metadata JSON>"
    import hashlib

    expected = hashlib.sha256(
        (checkpoints.content_hash(tensors) + '|{"config":{"x":[1,2]},"step":7}').encode()).hexdigest()
    assert sidecar["sha256"] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.json", "ckpt.safetensors"]  # no temp files


def test_checkpoints_are_never_unpickled(tmp_path, monkeypatch):
    checkpoints.save_checkpoint(tmp_path / "ckpt", sample_tensors(), {})
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load (pickle) was called"))
    import pickle

    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads was called"))
    checkpoints.load_checkpoint(tmp_path / "ckpt")
    header = (tmp_path / "ckpt.safetensors").read_bytes()
    length = int.from_bytes(header[:8], "little")
    assert json.loads(header[8 : 8 + length])  # a safetensors file: JSON header, raw tensor bytes


def test_content_hash_ignores_order_but_not_content():
    tensors = sample_tensors()
    reordered = dict(reversed(list(tensors.items())))
    assert checkpoints.content_hash(tensors) == checkpoints.content_hash(reordered)
    changed = dict(tensors, scalar=torch.tensor(2.5000002))
    assert checkpoints.content_hash(tensors) != checkpoints.content_hash(changed)
    renamed = {("z" if k == "scalar" else k): v for k, v in tensors.items()}
    assert checkpoints.content_hash(tensors) != checkpoints.content_hash(renamed)


def test_a_flipped_byte_is_detected(tmp_path):
    checkpoints.save_checkpoint(tmp_path / "ckpt", sample_tensors(), {})
    path = tmp_path / "ckpt.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the tensor data: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="hash mismatch"):
        checkpoints.load_checkpoint(tmp_path / "ckpt")


@pytest.mark.parametrize("edit", [
    lambda meta: meta.update(steps=meta["steps"] + 1),  # the resume step
    lambda meta: meta["losses"].__setitem__(0, 0.5),  # a learning curve
    lambda meta: meta.pop("losses"),
])
def test_edited_metadata_is_corruption(tmp_path, edit):
    checkpoints.save_checkpoint(tmp_path / "ckpt", sample_tensors(), {"steps": 40, "losses": [2.0, 1.0]})
    sidecar = json.loads((tmp_path / "ckpt.json").read_text())
    edit(sidecar["meta"])
    (tmp_path / "ckpt.json").write_text(json.dumps(sidecar))  # still valid JSON, tensors untouched
    with pytest.raises(CheckpointError, match="hash mismatch"):
        checkpoints.load_checkpoint(tmp_path / "ckpt")


def test_a_truncated_file_is_detected(tmp_path):
    checkpoints.save_checkpoint(tmp_path / "ckpt", sample_tensors(), {})
    path = tmp_path / "ckpt.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoints.load_checkpoint(tmp_path / "ckpt")


def test_partial_checkpoints_are_detected(tmp_path):
    checkpoints.save_checkpoint(tmp_path / "ckpt", sample_tensors(), {})
    (tmp_path / "ckpt.json").unlink()  # a crash between the two writes
    with pytest.raises(CheckpointError, match="missing or partial"):
        checkpoints.load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="missing or partial"):
        checkpoints.load_checkpoint(tmp_path / "never-written")


def test_a_damaged_sidecar_is_detected(tmp_path):
    checkpoints.save_checkpoint(tmp_path / "ckpt", sample_tensors(), {})
    (tmp_path / "ckpt.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        checkpoints.load_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt.json").write_text(json.dumps({"sha256": "0"}))
    with pytest.raises(CheckpointError, match="not a"):
        checkpoints.load_checkpoint(tmp_path / "ckpt")


def test_a_damaged_resume_point_restarts_with_a_warning(tmp_path):
    config = TrainConfig(steps=5, seed=0)
    training.train(tiny_spec(), config, tmp_path, stop_at=2, progress=False)
    (tmp_path / "resume.safetensors").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="damaged resume point"):
        resumed = training.train(tiny_spec(), config, tmp_path, progress=False)
    straight = training.train(tiny_spec(), config, progress=False)
    assert same(weights(straight.model), weights(resumed.model))


def test_threads_are_restored():
    before = torch.get_num_threads()
    training.train(tiny_spec(), TrainConfig(steps=1, threads=1), progress=False)
    assert torch.get_num_threads() == before


def test_bf16_autocast_is_deterministic_and_trains():
    config = TrainConfig(steps=30, lr=1e-2, seed=5, precision="bf16")
    first = training.train(tiny_spec(), config, progress=False)
    second = training.train(tiny_spec(), config, progress=False)
    assert same(weights(first.model), weights(second.model))
    assert all(t.dtype == torch.float32 for t in weights(first.model).values())  # weights stay fp32
    assert np.mean(first.losses[-5:]) < np.mean(first.losses[:5])
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(steps=1, precision="fp8")


def test_a_damaged_newest_resume_point_falls_back_to_the_previous_one(tmp_path):
    config = TrainConfig(steps=9, checkpoint_every=2, seed=6)
    training.train(tiny_spec(), config, tmp_path, stop_at=5, progress=False)  # points at 4, then 5
    steps = {p.name: checkpoints.load_checkpoint(p)[1]["step"] for p in checkpoints.resume_paths(tmp_path)}
    assert sorted(steps.values()) == [4, 5]  # two slots: the newest and the one before
    newest = max(steps, key=steps.get)
    (tmp_path / f"{newest}.safetensors").write_bytes(b"cut off mid-write")
    with pytest.warns(UserWarning, match="damaged resume point"):
        resumed = training.train(tiny_spec(), config, tmp_path, progress=False)
    assert resumed.resumed_from == 4
    straight = training.train(tiny_spec(), config, progress=False)
    assert same(weights(straight.model), weights(resumed.model)) and resumed.losses == straight.losses
    assert checkpoints.resume_paths(tmp_path) == []


def test_stale_temporary_files_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    orphan = tmp_path / "snapshots" / f".step_0000004.safetensors.tmp-{dead.stdout.strip()}"
    orphan.parent.mkdir()
    orphan.write_bytes(b"x" * 100)
    staged = tmp_path / f".tokenizer.tmp-{dead.stdout.strip()}"  # a staging folder
    staged.mkdir()
    (staged / "tokenizer.json").write_text("{}")
    live = tmp_path / f".model.json.tmp-{os.getppid()}"  # a running process (pytest's parent)
    live.write_text("{}")
    training.train(tiny_spec(), TrainConfig(steps=3, seed=0), tmp_path, progress=False)
    assert not orphan.exists() and not staged.exists() and live.exists()
    assert diskspace.is_temporary(live) and not diskspace.is_temporary(tmp_path / "model.json")


SIGNAL_SCRIPT = """
import sys, time
import torch
torch.set_num_threads(1)  # as under pytest (conftest): the same arithmetic, so the same weights
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_training import tiny_spec
from optim_hunter.core import training
from optim_hunter.core.training import TrainConfig, TrainSpec
spec = tiny_spec()
def slow_batch(step):
    if step == 5:
        Path({ready!r}).write_text("5")
    time.sleep(0.02)
    return spec.batch(step)
training.train(TrainSpec(spec.build, slow_batch, spec.loss), TrainConfig(steps=2000, seed=7), {run!r},
               progress=False)
"""


@pytest.mark.parametrize("signals", [("SIGINT",), ("SIGINT", "SIGINT"), ("SIGTERM",)])
def test_a_real_signal_leaves_a_resume_point_that_resumes_exactly(tmp_path, signals):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    run, ready = tmp_path / "run", tmp_path / "ready"
    script = SIGNAL_SCRIPT.format(tests=str(Path(__file__).parent), ready=str(ready), run=str(run))
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.01)
    assert ready.exists(), child.communicate()[1]
    for name in signals:  # a second Ctrl-C right after the first, while the resume point is written
        os.kill(child.pid, getattr(signal, name))
        time.sleep(0.005)
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0
    assert not [f for f in run.rglob("*") if diskspace.is_temporary(f)]  # nothing half-written
    points = checkpoints.resume_paths(run)
    assert points, err
    step = max(checkpoints.load_checkpoint(p)[1]["step"] for p in points)
    assert step >= 5
    original = TrainConfig(steps=2000, seed=7)  # the child's run: its key must match to resume
    assert checkpoints.load_checkpoint(max(points, key=lambda p: checkpoints.load_checkpoint(p)[1]["step"]))[1]["key"] \
        == checkpoints.fingerprint({"config": original, "run_key": "", "code": training.CODE_VERSION})
    stopped = training.train(tiny_spec(), original, run, stop_at=step + 3, progress=False)
    assert stopped.resumed_from == step
    straight = training.train(tiny_spec(), original, stop_at=step + 3, progress=False)
    assert same(weights(straight.model), weights(stopped.model)) and stopped.losses == straight.losses


def test_checkpoint_files_get_the_umasks_permissions_not_owner_only(tmp_path):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        checkpoints.save_checkpoint(tmp_path / "ckpt", sample_tensors(), {})
    finally:
        os.umask(previous)
    for suffix in (".safetensors", ".json"):  # readable by the group and others: a shared cache
        assert stat.S_IMODE((tmp_path / f"ckpt{suffix}").stat().st_mode) == 0o644


@pytest.mark.parametrize("fused", [False, True])
def test_training_equals_a_hand_written_adamw_loop(fused):
    """`train` against AdamW written out by hand: the warmup-then-cosine rate in closed form, the
    weight decay on matrices only (not embeddings or biases), global-norm clipping, one batch per
    step; with AdamW's loop and with its fused kernel."""
    config = TrainConfig(steps=7, lr=3e-2, warmup_steps=2, min_lr_ratio=0.2, weight_decay=0.3,
                         betas=(0.8, 0.9), grad_clip=0.05, seed=4, fused_optimizer=fused)
    spec = tiny_spec()
    result = training.train(spec, config, progress=False)

    torch.manual_seed(config.seed)
    model = spec.build(config.seed)
    params = dict(model.named_parameters())
    decayed = {"mlp.0.weight", "mlp.2.weight"}  # embed.weight and the biases are not decayed
    m = {k: torch.zeros_like(p) for k, p in params.items()}
    v = {k: torch.zeros_like(p) for k, p in params.items()}
    b1, b2, eps = 0.8, 0.9, 1e-8
    losses = []
    for step in range(7):
        if step < 2:
            lr = 3e-2 * (step + 1) / 2
        else:
            lr = 3e-2 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * (step - 2) / 5)))
        loss = spec.loss(model, spec.batch(step))
        grads = torch.autograd.grad(loss, list(params.values()))
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        factor = min(1.0, 0.05 / (float(norm) + 1e-6))
        assert factor < 1  # the clip really acts
        with torch.no_grad():
            for (name, p), g in zip(params.items(), grads):
                g = g * factor
                if name in decayed:
                    p.mul_(1 - lr * 0.3)
                m[name] = b1 * m[name] + (1 - b1) * g
                v[name] = b2 * v[name] + (1 - b2) * g * g
                m_hat, v_hat = m[name] / (1 - b1 ** (step + 1)), v[name] / (1 - b2 ** (step + 1))
                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
        losses.append(float(loss.detach()))
    assert set(dict(result.model.named_parameters())) == set(params)
    for name, p in result.model.named_parameters():
        torch.testing.assert_close(p, params[name], atol=2e-6, rtol=1e-5, msg=name)
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5)
    # the schedule's middle, in closed form: halfway through the cosine is the mean of lr and its floor
    halfway = TrainConfig(steps=102, lr=1.0, warmup_steps=2, min_lr_ratio=0.1)
    assert training.lr_at(halfway, 52) == pytest.approx(0.55)
    assert training.lr_at(halfway, 27) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))

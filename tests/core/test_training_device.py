"""Training on a chosen device: every batch and every family's loss and evaluation inputs follow the
model's device. Without a GPU here, the model sits on `meta` (shapes only: any tensor a family made
on the CPU would meet it in an op and fail); `bench/gpu_train_check.py` trains for real on CUDA."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import pytest
import torch

from optim_hunter import zoo
from optim_hunter.analysis import lsa
from optim_hunter.core import devices, training
from optim_hunter.zoo import affine, induction

META = torch.device("meta")


class Pair(NamedTuple):
    a: torch.Tensor
    b: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Record:
    x: torch.Tensor
    ids: np.ndarray
    name: str


def test_move_reaches_every_tensor_of_a_nested_batch_and_leaves_the_rest():
    batch = {"pairs": [Pair(torch.ones(2), torch.zeros(3))], "record": Record(torch.ones(1), np.arange(3), "r"),
             "plain": (torch.ones(4), 7)}
    moved = devices.move(batch, META)
    assert isinstance(moved["pairs"][0], Pair) and moved["pairs"][0].a.device == META == moved["pairs"][0].b.device
    assert isinstance(moved["record"], Record) and moved["record"].x.device == META
    assert moved["record"].ids is batch["record"].ids and moved["record"].name == "r"
    assert moved["plain"][0].device == META and moved["plain"][1] == 7
    assert batch["plain"][0].device.type == "cpu"  # the original is left as it was


@pytest.mark.parametrize("name", ["affine-recurrence", "attn-only-2l", "smeared-1l", "attn-only-2l-code", "numeric-icl"])
def test_a_family_s_training_loss_runs_where_its_model_is(name):
    import torch.fx.experimental._config as fx_config

    fam = zoo.family(name)
    cfg = fam.tiny_config()
    spec = fam.train_spec(cfg)
    model = spec.build(0).to(META)
    # numeric-icl picks answer tokens by a mask: on meta, assume every entry is picked (shapes agree)
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        loss = spec.loss(model, devices.move(spec.batch(0), META))
    assert loss.device == META and loss.shape == ()


def test_the_lsa_loss_and_evaluation_inputs_follow_the_model():
    cfg = lsa.TaskConfig(d=3, n_context=5)
    spec = lsa.train_spec(cfg)
    model = spec.build(0).to(META)
    assert spec.loss(model, devices.move(spec.batch(0), META)).device == META
    tasks = lsa.sample_tasks(cfg, 4, 0)  # on the CPU, as evaluation sets are made
    assert lsa.predict(model, tasks).device == META


def test_evaluation_inputs_made_on_the_cpu_go_to_the_model():
    fam = zoo.family("affine-recurrence")
    cfg = fam.tiny_config()
    model = fam.train_spec(cfg).build(0).to(META)
    vectors = torch.randn(2, 5, cfg.arch.d_vector)
    assert affine.predict(model, vectors).device == META
    lm = zoo.family("attn-only-2l").train_spec(zoo.family("attn-only-2l").tiny_config()).build(0).to(META)
    assert induction.per_token_loss(lm, torch.zeros(2, 6, dtype=torch.long)).device == META


def test_device_cpu_is_the_default_run_exactly():
    fam = zoo.family("attn-only-2l")
    cfg = fam.tiny_config()
    steps = dataclasses.replace(cfg.train, steps=4, eval_every=2)
    default = training.train(fam.train_spec(cfg), steps, progress=False)
    explicit = training.train(fam.train_spec(cfg), steps, progress=False, device="cpu")
    assert default.losses == explicit.losses and default.history == explicit.history
    assert all(p.device.type == "cpu" for p in explicit.model.parameters())


def test_the_gpu_training_check_dry_run_trains_every_family_on_both_and_reports(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_train_check.py"
    done = subprocess.run([sys.executable, str(script), "--dry-run", "--steps", "3"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    for name, family in report["families"].items():
        assert family["all_parameters_on_gpu"] and family["gpu"]["steps"] == 3, name
        assert family["first_loss_relative_difference"] == 0.0, name  # the same device: the same run

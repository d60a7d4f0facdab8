"""Two builds, one cache (issue #29, item 3): two `optim-hunter train` processes started together on
the same empty OPTIM_HUNTER_CACHE train the model once (a model whose smoke training takes
about 10 s, so that the second meets the first in it); the other waits, with a line naming the
trainer, then reads the model; both exit 0 and serve the same weights."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from optim_hunter.core import checkpoints, locks

EXE = Path(sys.executable).parent / "optim-hunter"


@pytest.mark.slow
def test_two_processes_on_one_empty_cache_train_once(tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, OPTIM_HUNTER_CACHE=str(cache), OPTIM_HUNTER_PROFILE="smoke")
    # its smoke training takes about 10 s: long enough that the second process meets the first in it
    command = [str(EXE), "train", "affine-every-position", "--profile", "smoke"]  # the progress bar says who trained
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for proc in (first, second):
        out, err = proc.communicate(timeout=600)
        results[proc.pid] = (proc.returncode, out, err)
        print(f"pid {proc.pid}, exit {proc.returncode}\nstdout: {out}\nstderr: {err}")
    assert all(code == 0 for code, _, _ in results.values()), results
    bar = re.compile(r"train affine-every-position \(smoke\):\s+\d+%")  # the trainer's progress bar
    trainers = [pid for pid, (_, _, err) in results.items() if bar.search(err)]
    assert len(trainers) == 1, results  # one progress bar: the model trained once
    (waiter,) = set(results) - set(trainers)
    waited = results[waiter][2]
    assert f"waiting for pid {trainers[0]} on " in waited and "(train affine-every-position (smoke), pid" in waited, waited
    assert "Traceback" not in waited and "died without finishing" not in waited
    # both name the same checkpoint, which is whole, and the lock is free with no owner note left
    paths = {out.strip().rsplit("-> ", 1)[-1] for _, out, _ in results.values()}
    assert len(paths) == 1, results
    (final,) = [p for p in cache.rglob("model.json")]
    tensors, meta = checkpoints.load_checkpoint(final.with_suffix(""))
    assert meta["name"] == "affine-every-position" and meta["resumed_from"] == 0
    assert not list(cache.rglob(locks.OWNER_NAME)) and not [p for p in cache.rglob("*") if ".tmp" in p.name]

"""`locks.exclusive`: one writer per cache folder across processes, a waiting line naming the
holder, and nothing left held by a killed process (two builds sharing one OPTIM_HUNTER_CACHE)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from optim_hunter.core import locks

HOLD = """
import sys, time
from optim_hunter.core import locks
with locks.exclusive(sys.argv[1], "train demo (holder)"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(directory: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), str(seconds)], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_waits_and_says_for_whom(tmp_path, capfd):
    holder = _holder(tmp_path, 1.5)
    began = time.perf_counter()
    with locks.exclusive(tmp_path, "second"):
        waited = time.perf_counter() - began
    holder.wait(timeout=30)
    assert waited > 0.5  # it did wait for the holder
    err = capfd.readouterr().err
    assert f"waiting for pid {holder.pid}" in err and "train demo (holder)" in err
    assert not (tmp_path / locks.OWNER_NAME).exists()  # released: no owner note left


def test_a_killed_holder_leaves_no_lock_and_is_named(tmp_path, capfd):
    holder = _holder(tmp_path, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    began = time.perf_counter()
    with locks.exclusive(tmp_path, "after the kill"):
        assert time.perf_counter() - began < 5  # not held by the dead process
    err = capfd.readouterr().err
    assert f"pid {holder.pid}" in err and "died" in err


def test_an_uncontended_lock_is_silent(tmp_path, capfd):
    with locks.exclusive(tmp_path / "new", "alone"):
        assert (tmp_path / "new" / locks.OWNER_NAME).exists()
    assert capfd.readouterr().err == ""

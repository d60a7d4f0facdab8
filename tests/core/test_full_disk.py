"""A full disk (issue #29, item 5): running out of space while writing a checkpoint, a resume point
or the claims file gives one error naming the folder and the space needed, leaves the previous file
valid and no temporary behind, and the next run with room continues. The disk is a small tmpfs
mounted by the test (root only; skipped with the reason otherwise). The pretrained cache's case is in
tests/zoo/test_pretrained.py."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_training import same, tiny_spec, weights

from optim_hunter.core import checkpoints, diskspace, training
from optim_hunter.core.diskspace import DiskFullError
from optim_hunter.core.training import TrainConfig


def _mount(folder: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")


def _resize(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB filesystem, unmounted afterwards."""
    folder = tmp_path / "disk"
    _mount(folder, "1m")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    """Take every free byte of `folder`'s filesystem; the filler file (delete it to give them back)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(small_disk):
    path = small_disk / "models" / "weights"
    old = {"w": torch.arange(1000, dtype=torch.float32)}
    checkpoints.save_checkpoint(path, old, {"step": 1})
    big = {"w": torch.ones(400_000)}  # 1.6 MB on a 1 MB disk
    with pytest.raises(DiskFullError) as caught:
        checkpoints.save_checkpoint(path, big, {"step": 2})
    message = str(caught.value)
    assert message.startswith(f"no space left in {path.parent}: writing weights.safetensors needs about 1.6 MB, ")
    assert message.endswith("free space there or set OPTIM_HUNTER_CACHE to a disk with room")
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    tensors, meta = checkpoints.load_checkpoint(path)  # the previous checkpoint, whole
    assert meta == {"step": 1} and torch.equal(tensors["w"], old["w"])
    assert _temporaries(small_disk) == []
    _resize(small_disk, "4m")  # room again: the same write succeeds
    checkpoints.save_checkpoint(path, big, {"step": 2})
    assert checkpoints.load_checkpoint(path)[1] == {"step": 2}


def test_a_full_disk_while_writing_a_resume_point_resumes_from_the_previous(small_disk):
    config = TrainConfig(steps=8, warmup_steps=2, checkpoint_every=1, seed=1)
    straight = training.train(tiny_spec(), config, progress=False)
    run = small_disk / "run"
    training.train(tiny_spec(), config, run, stop_at=3, progress=False)
    filler = _fill(small_disk)
    with pytest.raises(DiskFullError, match=rf"^no space left in {run}: writing resume(-alt)?\.safetensors needs about"):
        training.train(tiny_spec(), config, run, progress=False)
    assert _temporaries(small_disk) == []
    assert max(checkpoints.load_checkpoint(p)[1]["step"] for p in checkpoints.resume_paths(run)) == 3  # all valid
    filler.unlink()  # room again: the next run resumes at step 3 and ends as an uninterrupted one
    resumed = training.train(tiny_spec(), config, run, progress=False)
    assert resumed.resumed_from == 3 and resumed.steps == 8
    assert same(weights(straight.model), weights(resumed.model))


def test_a_full_disk_while_writing_the_claims_file_keeps_the_previous_one(small_disk):
    from optim_hunter.book import sphinx_ext

    target = small_disk / "claims.json"
    sphinx_ext._write_json(target, [{"id": "a", "verdict": "reproduced"}])
    before = target.read_text()
    with pytest.raises(DiskFullError, match=rf"^no space left in {small_disk}: writing claims.json needs about 2.0 MB"):
        sphinx_ext._write_json(target, [{"id": "b", "note": "x" * 2_000_000}])
    assert target.read_text() == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["claims.json"]


def test_other_write_errors_are_not_taken_for_a_full_disk(tmp_path):
    with pytest.raises(PermissionError):
        with diskspace.writing(tmp_path / "x", 10):
            raise PermissionError(errno.EACCES, "denied")
    assert diskspace.is_full(OSError(errno.EDQUOT, "quota"))
    assert diskspace.is_full(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"))


@pytest.mark.slow
def test_the_cli_says_the_disk_is_full_in_one_line_and_continues_with_room(tmp_path):
    """`optim-hunter train` on a full cache: one line, exit 1, no traceback; with room, it trains."""
    disk = tmp_path / "disk"
    _mount(disk, "64k")
    try:
        env = dict(os.environ, OPTIM_HUNTER_CACHE=str(disk), OPTIM_HUNTER_PROFILE="smoke")
        command = [str(Path(sys.executable).parent / "optim-hunter"), "train", "attn-only-1l", "--profile", "smoke", "--quiet"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 1, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert "Traceback" not in done.stderr
        assert len(lines) == 1 and lines[0].startswith(f"optim-hunter: error: no space left in {disk}/zoo/attn-only-1l/"), lines
        assert "needs about" in lines[0] and "OPTIM_HUNTER_CACHE" in lines[0]
        assert _temporaries(disk) == []
        _resize(disk, "64m")
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr
        assert "attn-only-1l (smoke):" in again.stdout
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)

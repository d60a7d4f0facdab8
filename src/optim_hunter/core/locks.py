"""The cache's one lock: `exclusive(folder)` while writing into a folder of the cache.

The lock is the operating system's (`filelock`), so a killed holder never leaves it held; a
`.lock.owner` note says who holds it, for a writer that has to wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from optim_hunter.core import diskspace

LOCK_NAME = ".lock"
OWNER_NAME = ".lock.owner"  # who holds the lock: read by a writer that has to wait


def _owner_text(path: Path) -> str:
    """'pid 123 on host (train affine-recurrence, since 12:01:02)' from an owner file, or ''."""
    try:
        owner = json.loads(path.read_text())
        return (f"pid {owner['pid']} on {owner['host']} ({owner['purpose'] or 'no purpose given'}, "
                f"since {owner['since']})")
    except (OSError, ValueError, KeyError, TypeError):
        return ""


@contextlib.contextmanager
def exclusive(directory: Path | str, purpose: str = "") -> Iterator[None]:
    """Hold `directory/.lock` (created with the folder) while writing into it: a second writer, in
    this process or another, waits, with one line on stderr saying for whom.

    The lock is the operating system's (`filelock`), so a killed holder never leaves it held; the
    `.lock.owner` note it leaves behind names a dead process, which the next writer says it replaces.
    A folder that cannot be created gets an error naming the fix."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / LOCK_NAME).touch()
    except OSError as err:
        raise OSError(f"cannot write into the cache {directory} ({err.strerror or err}); set "
                      "OPTIM_HUNTER_CACHE to a writable folder") from err
    lock, owner = FileLock(directory / LOCK_NAME), directory / OWNER_NAME
    try:
        lock.acquire(timeout=0)
    except Timeout:
        # the holder writes its note just after taking the lock: give the note a moment to appear
        # (two builds started together meet here), taking the lock if it is freed meanwhile
        who, deadline, acquired = _owner_text(owner), time.monotonic() + 2.0, False
        while not who and not acquired and time.monotonic() < deadline:
            try:
                lock.acquire(timeout=0.05)
                acquired = True
            except Timeout:
                who = _owner_text(owner)
        if not acquired:
            print(f"{directory}: waiting for {who or 'another writer'} to finish", file=sys.stderr, flush=True)
            lock.acquire()
    try:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            stale = json.loads(owner.read_text())
            if stale["host"] == socket.gethostname() and not diskspace.pid_alive(int(stale["pid"])):
                print(f"{directory}: the previous writer (pid {stale['pid']}, {stale['purpose']}) died "
                      "without finishing; its lock was released with it, its work resumes here",
                      file=sys.stderr, flush=True)
        diskspace.atomic_write(owner, lambda tmp: tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                                        "since": time.strftime("%H:%M:%S")})))
        yield
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()

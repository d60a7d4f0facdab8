"""Writing a file on a disk that may fill up: one clear error, no half-written file left behind.

Every file the package writes for later (a checkpoint, a resume point, the dequantized pretrained
copy, `_build/claims.json`) is written to a temporary name and moved into place. When the disk
fills (`ENOSPC`, or `EDQUOT` for a quota) during that write, `writing` removes the temporary file
and raises `DiskFullError`, whose message names the folder, the file and the space it needs; the
previous file of that name is untouched, so a rerun with room continues from it. safetensors
reports a full disk as its own error type carrying the OS message, recognised here too.

`atomic_write` is that route for one file (`write_temporary` writes and syncs the temporary); a
writer killed mid-write leaves a `.<name>.tmp-<pid>` behind, which `remove_stale_temporaries`
deletes once its process is dead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# how a full disk reads in errors that are not OSError (safetensors' Rust writer)
_FULL_TEXTS = ("os error 28", "os error 122", "No space left on device", "Disk quota exceeded")
CACHE_HINT = "free space there or set OPTIM_HUNTER_CACHE to a disk with room"


def size_text(n: int | float) -> str:
    """Bytes as a short human size: '3.2 MB', '12 kB'."""
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{max(n, 1) / 1e3:.0f} kB"


def free_bytes(folder: Path | str) -> int | None:
    """Free bytes on the filesystem of `folder` (or its nearest existing parent); None if unknown."""
    folder = Path(folder)
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


class DiskFullError(OSError):
    """No space left where a file was being written; `folder`, `file` and `needed` (bytes) say
    where, what and how much. An OSError with errno ENOSPC, so `except OSError` still catches it."""

    def __init__(self, folder: Path | str, file: str, needed: int, hint: str = CACHE_HINT) -> None:
        self.folder, self.file, self.needed = Path(folder), file, int(needed)
        free = free_bytes(folder)
        free_text = "" if free is None else f", {size_text(free)} free"
        self.message = (f"no space left in {self.folder}: writing {file} needs about {size_text(needed)}"
                        f"{free_text}; {hint}")
        super().__init__(errno.ENOSPC, self.message, str(self.folder))

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable (raised inside worker processes)
        return (_rebuild, (str(self.folder), self.file, self.needed, self.message))


def _rebuild(folder: str, file: str, needed: int, message: str) -> DiskFullError:
    err = DiskFullError.__new__(DiskFullError)
    OSError.__init__(err, errno.ENOSPC, message, folder)
    err.folder, err.file, err.needed, err.message = Path(folder), file, needed, message
    return err


def is_full(err: BaseException) -> bool:
    """Whether `err` says the disk (or the user's quota) is full."""
    if isinstance(err, OSError) and err.errno in FULL_ERRNOS:
        return True
    text = str(err)
    return any(mark in text for mark in _FULL_TEXTS)


@contextmanager
def writing(target: Path | str, needed: int, temporaries: Iterable[Path] = (),
            hint: str = CACHE_HINT) -> Iterator[None]:
    """Around the writing of `target` (about `needed` bytes, through the `temporaries`): a full disk
    removes the temporaries and becomes one `DiskFullError`; any other error passes unchanged."""
    target = Path(target)
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if not is_full(err):
            raise
        for tmp in temporaries:
            try:
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)
            except OSError:
                pass
        raise DiskFullError(target.parent, target.name, needed, hint) from err


def write_temporary(path: Path, write: Callable[[Path], None]) -> Path:
    """`write` the content of `path` to a temporary beside it, synced to disk; return the
    temporary (removed if anything fails)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        # safetensors creates its files owner-only (0600); a shared cache needs the umask's usual
        # permissions, as for any other file the user creates
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: Path, write: Callable[[Path], None], size: int = 0) -> None:
    """Write `path` through a temporary moved into place: the previous file stays whole until the
    new one is complete. A full disk raises `DiskFullError` (naming the folder and about
    `size` bytes) and leaves no temporary behind."""
    with writing(path, size):
        tmp = write_temporary(path, write)
    try:
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(folder: Path | str) -> list[Path]:
    """Delete the temporary files (and staging folders) named `.<name>.tmp-<pid>` that a writer
    left under `folder` when it was killed mid-write (its pid is dead); the removed paths. A live
    writer's are kept."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for file in folder.rglob(".*.tmp-*"):
        match = _TEMPORARY.match(file.name)
        if match and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(file) if file.is_dir() else file.unlink()
                removed.append(file)
    return removed


def is_temporary(file: Path) -> bool:
    return bool(_TEMPORARY.match(file.name))

"""Writing a file on a disk that may fill up: one clear error, no half-written file left behind.

Every file the package writes for later (a checkpoint, a resume point, the dequantized pretrained
copy, `_build/claims.json`) is written to a temporary name and moved into place. When the disk
fills (`ENOSPC`, or `EDQUOT` for a quota) during that write, `writing` removes the temporary file
and raises `DiskFullError`, whose message names the folder, the file and the space it needs; the
previous file of that name is untouched, so a rerun with room continues from it. safetensors
reports a full disk as its own error type carrying the OS message, recognised here too.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable, Iterator
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

"""Small blocking helpers for durable file I/O. Call them from a worker thread."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd`, however short the individual writes are."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:  # no progress and no error: a full disk, not a reason to spin
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (a create, a rename) survive a crash."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

"""Small blocking helpers for durable file I/O. Call them from a worker thread."""

from __future__ import annotations

import errno
import os
from pathlib import Path

READ_CHUNK = 64 * 1024
"""What `read_at_most` asks for at a time once a file turns out longer than its size said."""


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


def read_at_most(fd: int, limit: int, size_hint: int) -> bytes:
    """Up to `limit` bytes, read until end of file, as a buffered ``read(limit)`` would.

    Plain `os.read` sized by fstat's size: a buffered stream would allocate the
    whole `limit` for every few-hundred-byte file, which dominated loading
    thousands of them, and reading on to an empty read costs a system call more.
    The size is only a hint (a /proc file says 0, a file may grow), so one byte
    more is asked for: getting exactly the size back is the end of the file, and
    anything else reads on until an empty read.
    """
    chunks: list[bytes] = []
    total = 0
    request = min(size_hint + 1, limit)
    while total < limit:
        chunk = os.read(fd, min(request, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total == size_hint:
            break
        request = READ_CHUNK
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)

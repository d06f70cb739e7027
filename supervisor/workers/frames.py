"""Messages between the daemon and a processor worker: a pickle, after its length.

The daemon reads without blocking (`FrameReader`, fed what the pipe holds); the worker,
which has nothing else to do, reads and writes blocking (`read_frame`, `write_frame`).
"""

from __future__ import annotations

import os
import pickle
import struct

from supervisor.durable import write_all

_LENGTH = struct.Struct(">Q")


def frame(message: object) -> bytes:
    """`message` pickled, after its length: what goes down the pipe."""
    return framed(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def framed(blob: bytes) -> bytes:
    """An already pickled message, after its length."""
    return _LENGTH.pack(len(blob)) + blob


class FrameReader:
    """Frames out of a byte stream read in chunks of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._wanted = -1
        """The length of the frame being read; -1 while its length is not yet read."""

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk

    def next(self) -> bytes | None:
        """The next whole frame's pickle, or None until more is fed."""
        if self._wanted < 0:
            if len(self._buffer) < _LENGTH.size:
                return None
            (self._wanted,) = _LENGTH.unpack_from(self._buffer)
            del self._buffer[: _LENGTH.size]
        if len(self._buffer) < self._wanted:
            return None
        blob = bytes(self._buffer[: self._wanted])
        del self._buffer[: self._wanted]
        self._wanted = -1
        return blob

    def pending(self) -> int:
        """Bytes held that are not yet a whole frame."""
        return len(self._buffer)


def read_frame(fd: int) -> bytes | None:
    """The next frame's pickle from a blocking `fd`; None at its end (the daemon closed it)."""
    header = _read_exactly(fd, _LENGTH.size)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    blob = _read_exactly(fd, length)
    if blob is None:
        raise EOFError(f"the pipe ended inside a frame of {length} bytes")
    return blob


def write_frame(fd: int, blob: bytes) -> None:
    """An already pickled message to a blocking `fd`."""
    write_all(fd, framed(blob))


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            if left == size:
                return None
            raise EOFError(f"the pipe ended {left} bytes short of a frame")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)

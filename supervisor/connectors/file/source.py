"""The ``file`` source: the lines of a local file, followed across rotation.

Each `FileSource.read` makes one trip to a worker thread, which reads at most
one chunk (`READ_CHUNK_BYTES`) with ``pread``, splits it with bytes methods and
decodes the batch in one go. Lines read but not yet returned wait in memory; a
partial last line is held back until its newline arrives.

The offset (`FilePosition`) is the start of the first line not yet returned, in
the file being read. While a rotated file is drained, that file is the one the
offset names, so after a restart it is found again among the rotated copies (by
inode, then by fingerprint) and finished before the new file is read from 0.

Rotation is looked for only at the end of the data, where there is time for it:

- rename-and-create: the path names another file, or none. The open file is
  drained; once the path names a new file and the old one has not grown for a
  poll interval (a writer may append briefly after the rename), the new file
  is read from byte 0.
- copytruncate: the file at the path no longer starts with the fingerprinted
  bytes, or is shorter than what was read. The copy is found by fingerprint and
  drained from the position, then the truncated file is read from byte 0.

A drained file's partial last line is returned as a line of its own: that file
is finished. The next file is then the rotated copy written soonest after it,
if any (a reader that fell several rotations behind, while stopped or between
two polls, reads each in turn), and finally the file at the path.

Whoever writes the log directory may be someone else (the application), so the
path and the rotated copies are opened through `supervisor.safe_open`: never
through a symlink (unless `follow_symlinks`, and then only to its owner's file),
only as regular files, never blocking on a FIFO; a symlink is never a rotated copy.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import anyio
import anyio.to_thread
import structlog

from supervisor.codec import JSON, Codec
from supervisor.connectors.file.config import FileSourceConfig
from supervisor.connectors.file.lines import LineBuffer
from supervisor.connectors.file.position import (
    FINGERPRINT_BYTES,
    FileIdentity,
    FilePosition,
    find_next_in_rotation,
    find_rotated_copy,
    read_identity,
    starts_with_fingerprint,
)
from supervisor.protocols import Batch, Offset, Record, Rejected
from supervisor.safe_open import open_regular, open_through_link, writable_by_others

READ_CHUNK_BYTES = 1 << 20
"""The most bytes one `read` takes from the file: bounds the time and memory of a hop."""
SIZE_INTERVAL = 1.0
"""Seconds between two looks at the file's size, for the lag `progress` shows."""

_SYMLINK_HINT = (
    ", or set source.follow_symlinks = true to read through a link owned by its target's owner"
)

log = structlog.get_logger("supervisor.source.file")


@dataclass(slots=True)
class _OpenFile:
    """A file being read, and how far."""

    fd: int
    name: Path
    identity: FileIdentity
    pos: int
    """The start of the first line not yet returned: where a restart resumes."""
    read_pos: int
    """Bytes before this have been returned, or wait in memory as lines or the partial line."""
    at_path: bool
    """False once the path names another file: this one is drained, then that one read."""


class _Step(NamedTuple):
    records: list[Record]
    rejects: list[Rejected]
    end: bool
    progressed: bool
    """Bytes were read or the position moved, so it is worth looking again at once."""


class FileSource:
    """Lines (or JSON documents, one a line) of a local file, optionally followed."""

    replayable = True
    """Reopened at an offset, it reads the same lines again (`supervisor.protocols`)."""

    def __init__(
        self, config: FileSourceConfig, *, chunk_bytes: int = READ_CHUNK_BYTES, codec: Codec = JSON
    ) -> None:
        self._path = config.path
        self._follow = config.follow
        self._follow_symlinks = config.follow_symlinks
        self._start_at_end = config.start == "end"
        self._poll_interval = config.poll_interval
        self._chunk_bytes = chunk_bytes
        self._file: _OpenFile | None = None
        self._offset_without_file: Offset | None = None
        self._buffer = LineBuffer(jsonl=config.format == "jsonl", codec=codec)
        self._drained_since: float | None = None
        """When a rotated file was first seen at its end with a new file at the path."""
        self.bytes_read = 0
        """Bytes read from files (shown as `stream_supervisor_bytes_read_total`)."""
        self._size = 0
        self._sized_at = -math.inf
        """The size of the file being read, as last looked at (at most once a second)."""

    @staticmethod
    def check_offset(offset: Offset) -> None:
        """ValueError unless `offset` is a position this source wrote (`FilePosition`)."""
        FilePosition.from_offset(offset)

    async def open(self, offset: Offset | None) -> None:
        saved = None if offset is None else FilePosition.from_offset(offset)
        self._offset_without_file = offset
        await anyio.to_thread.run_sync(self._open_sync, saved)

    def position(self) -> Offset | None:
        """Where reading begins or goes on: pinned by the attempt before its first read,
        and the offset of every batch."""
        if self._file is None:
            return self._offset_without_file
        return FilePosition(self._file.identity, self._file.pos).to_offset()

    def progress(self) -> dict[str, object] | None:
        """`lag`: bytes of the file being read that were not delivered yet (its size as
        of the last read, at most a second old)."""
        file = self._file
        if file is None:
            return None
        return {"lag": max(self._size - file.pos, 0)}

    async def read(self, max_records: int, wait: float) -> Batch:
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        deadline = anyio.current_time() + wait
        while True:
            step = await anyio.to_thread.run_sync(self._step, max_records, anyio.current_time())
            remaining = deadline - anyio.current_time()
            if step.records or step.rejects or step.end or remaining <= 0:
                return Batch(step.records, self.position(), end=step.end, rejects=step.rejects)
            if not step.progressed:
                await anyio.sleep(min(self._poll_interval, remaining))

    async def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            os.close(file.fd)

    # --- in the worker thread -------------------------------------------------------

    def _open_sync(self, saved: FilePosition | None) -> None:
        self._warn_if_directory_is_shared()
        fd = self._open_path()
        if saved is None:
            if fd is not None:
                start = os.fstat(fd).st_size if self._start_at_end else 0
                self._file = _OpenFile(fd, self._path, read_identity(fd), start, start, True)
            return
        if fd is not None and saved.identity.same_inode(st := os.fstat(fd)):
            self._file = _OpenFile(fd, self._path, saved.identity, saved.pos, saved.pos, True)
            if starts_with_fingerprint(fd, saved.identity) and st.st_size >= saved.pos:
                self._file.identity = read_identity(fd)
            else:  # same file, other bytes: copied and truncated while we were stopped
                self._on_truncated(self._file)
            return
        # The path names another file, or none: rotated while we were stopped.
        found = find_rotated_copy(self._path, saved.identity, saved.pos)
        if found is None:
            log.warning(
                "source.file.rotated_copy_missing", path=str(self._path), **saved.to_offset()
            )
            if fd is not None:
                self._file = _OpenFile(fd, self._path, read_identity(fd), 0, 0, True)
            return
        if fd is not None:
            os.close(fd)
        copy_path, copy_fd = found
        log.info(
            "source.file.resumed_in_rotated_copy",
            path=str(self._path),
            copy=str(copy_path),
            pos=saved.pos,
        )
        self._file = _OpenFile(
            copy_fd, copy_path, read_identity(copy_fd), saved.pos, saved.pos, False
        )

    def _step(self, max_records: int, now: float) -> _Step:
        before = self._progress_mark()
        end = False
        if not self._buffer.has_lines:
            end = self._refill(now)
        records, rejects = self._take(max_records)
        end = end and not self._buffer.has_lines
        if self._file is not None and now - self._sized_at >= SIZE_INTERVAL:
            self._size, self._sized_at = os.fstat(self._file.fd).st_size, now
        return _Step(records, rejects, end, self._progress_mark() != before)

    def _refill(self, now: float) -> bool:
        """Read the next chunk into the buffer; True once an unfollowed file is finished."""
        file = self._file
        if file is None:
            fd = self._open_path()
            if fd is None:
                return False
            file = self._file = _OpenFile(fd, self._path, read_identity(fd), 0, 0, True)
        if self._follow and file.at_path and not starts_with_fingerprint(file.fd, file.identity):
            self._on_truncated(file)
            return self._refill(now)
        data = os.pread(file.fd, self._chunk_bytes, file.read_pos)
        if data:
            self._add_data(file, data)
            # Unfollowed, reaching the size is the end: say so with the last records.
            if self._follow or file.read_pos < os.fstat(file.fd).st_size:
                return False
        elif self._follow:
            return self._at_end_of_followed_file(file, now)
        # An unfollowed file is complete, so its partial line is a line.
        if self._buffer.partial_bytes:
            self._buffer.finish_line()
            return file.at_path
        if data or file.at_path:
            return file.at_path  # a drained copy is left for the path's file on the next read
        self._switch_to_path()
        return self._refill(now)

    def _at_end_of_followed_file(self, file: _OpenFile, now: float) -> bool:
        try:
            at_path: os.stat_result | None = self._path.stat(follow_symlinks=self._follow_symlinks)
        except FileNotFoundError:
            at_path = None
        still_there = at_path is not None and file.identity.same_inode(at_path)
        if file.at_path:
            if not still_there:
                file.at_path = False
                log.info("source.file.rotated", path=str(self._path), kind="rename", pos=file.pos)
            elif os.fstat(file.fd).st_size < file.read_pos:
                self._on_truncated(file)
                return self._refill(now)
            else:
                return False
        elif still_there:  # renamed back
            file.at_path = True
            self._drained_since = None
            return False
        # Finish the old file once the path names a new one and the old one has
        # not grown for a poll interval: a writer may append just after rotating.
        if at_path is None:
            self._drained_since = None
            return False
        if self._drained_since is None:
            self._drained_since = now
        if now - self._drained_since < self._poll_interval:
            return False
        if self._buffer.partial_bytes:
            self._buffer.finish_line()
            return False
        if self._switch_to_path():
            return self._refill(now)
        return False

    def _on_truncated(self, file: _OpenFile) -> None:
        """The file at the path was copied and truncated: drain the copy, then read it from 0."""
        found = find_rotated_copy(self._path, file.identity, file.pos)
        held = self._buffer.drop_partial()  # re-read from the copy, or lost with the line's rest
        self._drained_since = None
        if found is None:
            log.warning(
                "source.file.truncated",
                path=str(self._path),
                pos=file.pos,
                copy_found=False,
                dropped_partial_line_bytes=held,
            )
            file.identity = read_identity(file.fd)
            file.pos = file.read_pos = 0
            return
        copy_path, copy_fd = found
        log.info(
            "source.file.rotated",
            path=str(self._path),
            kind="copytruncate",
            copy=str(copy_path),
            pos=file.pos,
        )
        os.close(file.fd)
        self._file = _OpenFile(
            copy_fd, copy_path, read_identity(copy_fd), file.pos, file.pos, False
        )

    def _switch_to_path(self) -> bool:
        """Leave the drained file for the next one, from byte 0: a rotated copy written
        after it (the reader fell more than one rotation behind), else the file at the
        path. False if there is none yet."""
        if self._file is not None:
            found = find_next_in_rotation(self._path, os.fstat(self._file.fd))
            if found is not None:
                next_path, next_fd = found
                log.info(
                    "source.file.rotated",
                    path=str(self._path),
                    kind="next_copy",
                    copy=str(next_path),
                    pos=self._file.pos,
                )
                os.close(self._file.fd)
                self._file = _OpenFile(next_fd, next_path, read_identity(next_fd), 0, 0, False)
                self._drained_since = None
                return True
        fd = self._open_path()
        if fd is None:
            return False
        if self._file is not None:
            os.close(self._file.fd)
        self._file = _OpenFile(fd, self._path, read_identity(fd), 0, 0, True)
        self._drained_since = None
        return True

    def _warn_if_directory_is_shared(self) -> None:
        """Whoever else can write the directory can plant symlinks and FIFOs there: those
        are refused, but the operator should know the log is in someone else's hands."""
        directory = self._path.parent
        try:
            info = directory.stat()
        except OSError:
            return
        if writable_by_others(info):
            log.warning(
                "source.file.directory_writable",
                path=str(self._path),
                directory=str(directory),
                owner_uid=info.st_uid,
                mode=f"{stat.S_IMODE(info.st_mode):04o}",
            )

    def _open_path(self) -> int | None:
        """The file at the path: never through a symlink (unless `follow_symlinks`), never
        anything but a regular file, never blocking (a FIFO would hold the thread)."""
        try:
            if self._follow_symlinks:
                return open_through_link(self._path, os.O_RDONLY, role="source.path")
            return open_regular(
                self._path, os.O_RDONLY, role="source.path", symlink_hint=_SYMLINK_HINT
            )
        except FileNotFoundError:
            if self._follow:
                return None
            raise

    def _add_data(self, file: _OpenFile, data: bytes) -> None:
        file.read_pos += len(data)
        self.bytes_read += len(data)
        self._drained_since = None
        if file.identity.fingerprint_len < FINGERPRINT_BYTES:
            file.identity = read_identity(file.fd)
        self._buffer.add(data)

    def _take(self, max_records: int) -> tuple[list[Record], list[Rejected]]:
        """Up to `max_records` buffered records and the lines that were not records;
        the position moves past both."""
        file = self._file
        if file is None:
            return [], []
        taken = self._buffer.take(max_records)
        rejects = [
            Rejected(
                bad.text,
                json.JSONDecodeError(
                    f"{bad.error.msg} (the line at byte {file.pos + bad.at} of {file.name})",
                    bad.error.doc,
                    bad.error.pos,
                ),
            )
            for bad in taken.bad
        ]
        file.pos += taken.consumed
        return taken.records, rejects

    def _progress_mark(self) -> tuple[int, int, int, int] | None:
        file = self._file
        if file is None:
            return None
        return (file.identity.dev, file.identity.ino, file.read_pos, file.pos)

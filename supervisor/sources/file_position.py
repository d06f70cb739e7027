"""Where a file source is: the offset it checkpoints, and finding that file again.

A path is not an identity: rotation moves a file away and puts another in its
place. So the offset names the file by device and inode, plus a fingerprint of
its first bytes (inode numbers are reused once a file is deleted, and a
copytruncate copy has a new inode but the same first bytes), and the position
is a byte count into that file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from supervisor.protocols import Offset

FINGERPRINT_BYTES = 256
"""How many leading bytes identify a file; a shorter file is fingerprinted whole."""

COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".br", ".z", ".zip")
"""Rotated copies with these endings are skipped: their bytes are not the file's."""

_OFFSET_KEYS = frozenset({"dev", "ino", "pos", "fingerprint", "fingerprint_len"})


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What tells one file apart from another, whatever its name is now."""

    dev: int
    ino: int
    fingerprint: str
    """Hex SHA-256 of the first `fingerprint_len` bytes."""
    fingerprint_len: int

    def same_inode(self, st: os.stat_result) -> bool:
        return st.st_dev == self.dev and st.st_ino == self.ino


def read_identity(fd: int) -> FileIdentity:
    """The identity of the open file `fd`, fingerprinting its first bytes as they are now."""
    st = os.fstat(fd)
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    return FileIdentity(st.st_dev, st.st_ino, hashlib.sha256(head).hexdigest(), len(head))


def starts_with_fingerprint(fd: int, identity: FileIdentity) -> bool:
    """Whether the open file `fd` still begins with the bytes `identity` was taken from."""
    head = os.pread(fd, identity.fingerprint_len, 0)
    return (
        len(head) == identity.fingerprint_len
        and hashlib.sha256(head).hexdigest() == identity.fingerprint
    )


@dataclass(frozen=True, slots=True)
class FilePosition:
    """A byte position in one particular file: the file source's offset."""

    identity: FileIdentity
    pos: int

    def to_offset(self) -> dict[str, Offset]:
        return {
            "dev": self.identity.dev,
            "ino": self.identity.ino,
            "pos": self.pos,
            "fingerprint": self.identity.fingerprint,
            "fingerprint_len": self.identity.fingerprint_len,
        }

    @classmethod
    def from_offset(cls, offset: Offset) -> FilePosition:
        """Parse an offset written by `to_offset`; ValueError if it is not one."""
        if not isinstance(offset, dict) or set(offset) != _OFFSET_KEYS:
            raise ValueError(f"file source offset must be a table of {sorted(_OFFSET_KEYS)}")
        fingerprint = offset["fingerprint"]
        if not (isinstance(fingerprint, str) and len(fingerprint) == 64):
            raise ValueError(f"file source offset has a bad fingerprint: {fingerprint!r}")
        dev, ino, pos, fingerprint_len = (
            _natural_number(offset, key) for key in ("dev", "ino", "pos", "fingerprint_len")
        )
        return cls(FileIdentity(dev, ino, fingerprint, fingerprint_len), pos)


def _natural_number(offset: dict[str, Offset], key: str) -> int:
    value = offset[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"file source offset has a bad {key}: {value!r}")
    return value


def find_rotated_copy(path: Path, identity: FileIdentity, min_size: int) -> tuple[Path, int] | None:
    """Find and open the file `identity` names among `path`'s rotated siblings.

    Siblings are files in the same directory whose names start with `path`'s
    name (``app.log.1``, ``app.log-20260101``), uncompressed. A sibling with
    the same inode wins; failing that, the most recently modified one that
    starts with the same fingerprint (a copytruncate copy has a new inode).
    Either way it must hold at least `min_size` bytes, the position to resume
    at. Returns the sibling's path and an open descriptor, or None.
    """
    siblings: list[tuple[Path, os.stat_result]] = []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return None
    for entry in entries:
        name = entry.name
        if name == path.name or not name.startswith(path.name):
            continue
        if name.lower().endswith(COMPRESSED_SUFFIXES):
            continue
        try:
            if entry.is_file():
                siblings.append((Path(entry.path), entry.stat()))
        except OSError:  # rotated away again while we looked
            continue
    by_inode = [sibling for sibling in siblings if identity.same_inode(sibling[1])]
    # An empty fingerprint matches every file, so it identifies none.
    by_fingerprint = (
        sorted(siblings, key=lambda sibling: sibling[1].st_mtime_ns, reverse=True)
        if identity.fingerprint_len
        else []
    )
    for sibling_path, st in by_inode + by_fingerprint:
        if st.st_size < min_size:
            continue
        try:
            fd = os.open(sibling_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        if starts_with_fingerprint(fd, identity) and os.fstat(fd).st_size >= min_size:
            return sibling_path, fd
        os.close(fd)
    return None

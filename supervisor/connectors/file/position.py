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

from supervisor.errors import UnsafeFile
from supervisor.protocols import Offset
from supervisor.safe_open import open_regular

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
    siblings = _rotated_siblings(path)
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
            fd = open_regular(sibling_path, os.O_RDONLY, role="rotated copy")
        except (OSError, UnsafeFile):  # gone, or swapped for a symlink, since the listing
            continue
        if starts_with_fingerprint(fd, identity) and os.fstat(fd).st_size >= min_size:
            return sibling_path, fd
        os.close(fd)
    return None


def find_next_in_rotation(path: Path, drained: os.stat_result) -> tuple[Path, int] | None:
    """Open the rotated copy written next after the file `drained` describes, if it is
    not the file at `path` itself: a reader that fell more than one rotation behind
    reads every copy in between, in the order written.

    Candidates are `path`'s rotated siblings and its file; the next is the one
    modified soonest after the drained file, strictly after (ties by inode). Each
    step moves strictly forward in time, so the walk always ends at the file at
    `path`; a copytruncate copy, written before its original was truncated, is
    never taken as coming after it. Copies rotated within one file-system
    timestamp tick of each other cannot be ordered and the later may be skipped.
    Returns None when the file at `path` is next (or nothing is): the caller
    opens the path as usual.
    """
    try:
        current: os.stat_result | None = path.stat()
    except FileNotFoundError:
        current = None
    candidates = [
        ((st.st_mtime_ns, st.st_ino), sibling_path)
        for sibling_path, st in _rotated_siblings(path)
        if st.st_mtime_ns > drained.st_mtime_ns
        and not (current is not None and _same_file(st, current))
    ]
    if current is not None and current.st_mtime_ns > drained.st_mtime_ns:
        candidates.append(((current.st_mtime_ns, current.st_ino), path))
    for _, candidate in sorted(candidates):
        if candidate == path:
            return None
        try:
            return candidate, open_regular(candidate, os.O_RDONLY, role="rotated copy")
        except (OSError, UnsafeFile):  # rotated away (or swapped) while we looked: the next
            continue
    return None


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _rotated_siblings(path: Path) -> list[tuple[Path, os.stat_result]]:
    """Uncompressed regular files beside `path` whose names start with its name.

    Symlinks are not rotated copies: whoever can write the directory could point
    one at a file only the supervisor may read (and forge mtimes to put it next).
    """
    siblings: list[tuple[Path, os.stat_result]] = []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return siblings
    for entry in entries:
        name = entry.name
        if name == path.name or not name.startswith(path.name):
            continue
        if name.lower().endswith(COMPRESSED_SUFFIXES):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                siblings.append((Path(entry.path), entry.stat(follow_symlinks=False)))
        except OSError:  # rotated away again while we looked
            continue
    return siblings

"""A power-cut model of one directory, for checking a durable writer.

A process kill keeps the page cache, so it can never show a missing fsync or a
rename before fsync. This module can: run the writer inside `recording(dir)`
and its os calls happen for real, while each one that changes the file system
is also replayed on a model that keeps apart what is durable and what is still
only in memory. After every call it lists the directories a power cut at that
instant could leave, under a conservative model (weaker than ext4 or xfs):

- file data written since the file's last fsync may be lost, cut short, kept
  whole, or come back as zeros of the new length (the size reached the disk
  before the blocks, as ext4 data=writeback allows); fsynced data persists;
- a name operation (create, rename, link, unlink) since the directory's last
  fsync may or may not have happened, each independently of the others: any
  subset of them, applied in order (a journal would keep their order; this
  model does not count on it). A rename is one operation: both names or none;
- fsync of a file makes its data durable, not its name.

Only calls through the `os` module are seen (os.open, os.write, os.fsync, ...);
a writer using `open()` or `Path.write_bytes` would go unrecorded.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

Image = frozenset[tuple[str, bytes]]
"""A directory as a power cut left it: its names and what each one reads."""

_Change = tuple[str, int | None]  # a name now refers to an inode, or is gone


@dataclass
class _Inode:
    data: bytearray
    synced: bytes
    """What a power cut cannot take away: the data as of the last fsync."""


@dataclass
class DirectoryModel:
    """Names and inodes, each in two versions: as the program sees them, and as durable."""

    inodes: list[_Inode] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)
    durable: dict[str, int] = field(default_factory=dict)
    pending: list[tuple[_Change, ...]] = field(default_factory=list)

    @classmethod
    def of(cls, directory: Path) -> DirectoryModel:
        """The directory as it is now, all of it durable (its writer fsynced it)."""
        model = cls()
        for path in sorted(directory.iterdir()):
            model.inodes.append(_Inode(bytearray(path.read_bytes()), path.read_bytes()))
            model.names[path.name] = model.durable[path.name] = len(model.inodes) - 1
        return model

    def rename(self, *changes: _Change) -> None:
        """One name operation: visible now, durable at the next directory fsync."""
        for name, inode in changes:
            if inode is None:
                del self.names[name]
            else:
                self.names[name] = inode
        self.pending.append(changes)

    def create(self, name: str) -> int:
        self.inodes.append(_Inode(bytearray(), b""))
        self.rename((name, len(self.inodes) - 1))
        return len(self.inodes) - 1

    def fsync_directory(self) -> None:
        self.durable, self.pending = dict(self.names), []

    def images(self) -> set[Image]:
        """Every directory a power cut now could leave."""
        found: set[Image] = set()
        for kept in itertools.product((False, True), repeat=len(self.pending)):
            names = dict(self.durable)
            for changes in itertools.compress(self.pending, kept):
                for name, inode in changes:
                    if inode is None:
                        names.pop(name, None)
                    else:
                        names[name] = inode
            inodes = sorted(set(names.values()))
            for contents in itertools.product(*(self._contents(i) for i in inodes)):
                read = dict(zip(inodes, contents, strict=True))
                found.add(frozenset((name, read[inode]) for name, inode in names.items()))
        return found

    def _contents(self, inode: int) -> set[bytes]:
        node = self.inodes[inode]
        now = bytes(node.data)
        if now == node.synced:
            return {now}
        return {node.synced, now, now[: len(now) // 2], bytes(len(now))}


@dataclass
class Recording:
    """The crash images after each recorded call: ``[(call, images), ...]``, in order."""

    directory: Path
    model: DirectoryModel
    points: list[tuple[str, set[Image]]] = field(default_factory=list)
    _directory_fds: set[int] = field(default_factory=set)
    _files: dict[int, list[int]] = field(default_factory=dict)  # fd -> [inode, position]

    def point(self, call: str) -> None:
        self.points.append((call, self.model.images()))

    def name(self, path: Any, dir_fd: int | None) -> str:
        if dir_fd is not None:
            assert dir_fd in self._directory_fds, "a call relative to another directory"
            return str(os.fspath(path))
        assert Path(path).parent == self.directory, f"{path} is outside {self.directory}"
        return Path(path).name


@contextlib.contextmanager
def recording(directory: Path) -> Iterator[Recording]:
    """Record what the os calls made in the block do to `directory` (and only to it)."""
    real = {name: getattr(os, name) for name in ("open", "write", "fsync", "close")}
    real |= {name: getattr(os, name) for name in ("rename", "replace", "link", "unlink")}
    rec = Recording(directory, DirectoryModel.of(directory))
    model = rec.model

    def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd: int = real["open"](path, flags, mode, dir_fd=dir_fd)
        if flags & os.O_DIRECTORY:
            assert Path(path) == directory
            rec._directory_fds.add(fd)
            return fd
        name = rec.name(path, dir_fd)
        created = bool(flags & os.O_CREAT) and name not in model.names
        inode = model.create(name) if created else model.names[name]
        rec._files[fd] = [inode, 0]
        if flags & os.O_TRUNC:
            del model.inodes[inode].data[:]
        if created or flags & os.O_TRUNC:
            rec.point(f"open({name})")
        return fd

    def write(fd: int, data: Any) -> int:
        written: int = real["write"](fd, data)
        if fd in rec._files:
            inode, position = rec._files[fd]
            model.inodes[inode].data[position : position + written] = bytes(data)[:written]
            rec._files[fd][1] += written
            rec.point(f"write({written} bytes)")
        return written

    def fsync(fd: int) -> None:
        real["fsync"](fd)
        if fd in rec._directory_fds:
            model.fsync_directory()
            rec.point("fsync(directory)")
        elif fd in rec._files:
            node = model.inodes[rec._files[fd][0]]
            node.synced = bytes(node.data)
            rec.point("fsync(file)")

    def close(fd: int) -> None:
        real["close"](fd)
        rec._directory_fds.discard(fd)
        rec._files.pop(fd, None)

    def rename(src: Any, dst: Any, *, src_dir_fd: Any = None, dst_dir_fd: Any = None) -> None:
        real["replace"](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        old, new = rec.name(src, src_dir_fd), rec.name(dst, dst_dir_fd)
        model.rename((new, model.names[old]), (old, None))
        rec.point(f"rename({old}, {new})")

    def link(
        src: Any, dst: Any, *, src_dir_fd: Any = None, dst_dir_fd: Any = None, **_: Any
    ) -> None:
        real["link"](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
        old, new = rec.name(src, src_dir_fd), rec.name(dst, dst_dir_fd)
        model.rename((new, model.names[old]))
        rec.point(f"link({old}, {new})")

    def unlink(path: Any, *, dir_fd: int | None = None) -> None:
        real["unlink"](path, dir_fd=dir_fd)
        name = rec.name(path, dir_fd)
        model.rename((name, None))
        rec.point(f"unlink({name})")

    rec.point("start")
    fakes = {"open": open_, "write": write, "fsync": fsync, "close": close}
    fakes |= {"rename": rename, "replace": rename, "link": link, "unlink": unlink}
    with pytest.MonkeyPatch.context() as patch:
        for name, fake in fakes.items():
            patch.setattr(os, name, fake)
        yield rec

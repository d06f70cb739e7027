"""The state directory and its snapshot files: the blocking primitives of `SnapshotStore`.

Files in the state directory, for the job ``orders``::

    orders.snapshot.toml                       the current generation
    orders.snapshot.prev.toml                  the generation before it
    orders.snapshot.broken-<UTC>.toml          a file that failed its checks, kept for a post-mortem
    orders.snapshot.<reason>-<UTC>.toml        set aside (a FAILED job started afresh), and
    orders.snapshot.<reason>-<UTC>.prev.toml   its previous generation
    .orders.snapshot.<16 hex>.tmp              a write in flight; `prepare_directory` removes it
    supervisor.lock                            the daemon's lock on the directory; holds its PID

Every name is opened relative to one O_NOFOLLOW descriptor of the directory
(`open_directory`), so a planted symlink is refused, never written through.
The directory itself must be a real directory (not a symlink), owned by the
user the supervisor runs as, and writable by no one else (as sshd's StrictModes
and PostgreSQL's data directory check demand): anyone who can write to it can
swap a snapshot, or plant a link, under the supervisor's feet. It is checked on
the open descriptor, each time, so the check and the use are of the same inode.

Everything here blocks and nothing here decodes a snapshot: which file is valid,
and what a write does in which order, is `supervisor.snapshot_store`'s to say.
Call these from a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import stat
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import structlog

from supervisor.durable import fsync_directory, read_at_most, write_all
from supervisor.errors import (
    SnapshotCorrupt,
    SnapshotError,
    SnapshotWriteError,
    StateDirectoryLocked,
)

log = structlog.get_logger("supervisor.snapshot")

WRITE_STEPS = ("temp_written", "temp_fsynced", "previous_kept", "renamed", "directory_fsynced")
"""The steps of a write, in order; `SnapshotStore(on_step=...)` is called after each."""

Step = Callable[[str], None]
"""Called with each step of `WRITE_STEPS` once it is done (tests crash or watch there)."""

LOCK_NAME = "supervisor.lock"
"""The file in the state directory that the daemon using it holds an exclusive `flock` on."""

_JOB = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_REASON = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_TEMP = re.compile(r"\.([a-z0-9][a-z0-9_-]{0,62})\.snapshot\.[0-9a-f]{16}\.tmp")
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP})
_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted at a snapshot name must not hang the reader.
_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_LOCK = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


# --- names -------------------------------------------------------------------------------


def current_name(job: str) -> str:
    """The current snapshot's file name; ValueError unless `job` is a valid job name."""
    # Names are validated with the job config too; checked again so no path leaves the directory.
    if not _JOB.fullmatch(job):
        raise ValueError(f"not a valid job name: {job!r}")
    return f"{job}.snapshot.toml"


def previous_name(job: str) -> str:
    return f"{job}.snapshot.prev.toml"


def temp_name(job: str) -> str:
    return f".{job}.snapshot.{secrets.token_hex(8)}.tmp"


def check_reason(reason: str) -> None:
    """ValueError unless `reason` is safe in a file name (it names files set aside)."""
    if not _REASON.fullmatch(reason):
        raise ValueError(f"not a safe reason for a file name: {reason!r}")


def aside_stem(fd: int, job: str, label: str) -> str:
    """``<job>.snapshot.<label>-<UTC>``, with a counter if that is taken: never overwrite."""
    stem = f"{job}.snapshot.{label}-{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}"
    candidate, count = stem, 0
    while exists(fd, f"{candidate}.toml") or exists(fd, f"{candidate}.prev.toml"):
        count += 1
        candidate = f"{stem}-{count}"
    return candidate


# --- the directory -----------------------------------------------------------------------


@contextlib.contextmanager
def open_directory(path: Path) -> Iterator[int]:
    """An O_NOFOLLOW descriptor of the state directory, once it is found safe to use."""
    try:
        fd = os.open(path, _OPEN_DIRECTORY)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OSError(
                exc.errno,
                "a symlink or not a directory: refused; set state_dir to a real directory",
            ) from exc
        raise
    try:
        _check_directory(fd, path)
        yield fd
    finally:
        os.close(fd)


def _check_directory(fd: int, path: Path) -> None:
    """Refuse a directory someone other than this process's user could write to."""
    info, user = os.fstat(fd), os.geteuid()
    if info.st_uid != user:
        raise SnapshotError(
            f"state directory {path} is owned by uid {info.st_uid}, not by uid {user} that "
            f"the supervisor runs as: refused, since its owner could replace snapshots; "
            f"`chown {user} {path}`, or run the supervisor as uid {info.st_uid}"
        )
    if stat.S_IMODE(info.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
        raise SnapshotError(
            f"state directory {path} is writable by its group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): refused, since they could replace "
            f"snapshots; `chmod go-w {path}` (0700 is what the supervisor creates)"
        )


def prepare_directory(directory: Path, *, lock: bool) -> DirectoryLock | None:
    """Create `directory` (0700) if missing, refuse an unsafe one, remove crashed writes;
    with `lock`, take the directory's lock first and return it. SnapshotError naming
    the directory on any OSError; StateDirectoryLocked if another process holds the lock."""
    try:
        missing = []
        for path in (directory, *directory.parents):
            if path.exists():
                break
            missing.append(path)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for created in missing:  # its name in its parent must survive a power cut too
            fsync_directory(created.parent)
        with open_directory(directory) as fd:
            # Before anything in it is touched: the temp files below may be another
            # daemon's writes in flight, not a crash's leftovers.
            held = DirectoryLock(_lock_directory(fd, directory)) if lock else None
            try:
                for name in os.listdir(fd):  # noqa: PTH208 - by descriptor: no symlink race
                    if match := _TEMP.fullmatch(name):
                        _remove_stale_temp(fd, directory, match.group(1), name)
            except BaseException:
                if held is not None:
                    held.release()
                raise
            return held
    except OSError as exc:
        raise SnapshotError(f"state directory {directory}: {why(exc)}") from exc


def _remove_stale_temp(fd: int, directory: Path, job: str, name: str) -> None:
    """A crashed write's temp file is removed; anything else by that name is kept aside."""
    path = directory / name
    if stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
        os.unlink(name, dir_fd=fd)
        log.warning("snapshot.stale_temp_removed", path=str(path))
        return
    # Not something the store writes (a planted symlink, a FIFO): never followed, kept.
    log.error("snapshot.corrupt", job=job, path=str(path), error="not a regular file")
    move_broken_aside(fd, job, path)


class DirectoryLock:
    """A descriptor holding the state directory's flock: released when closed, or when
    dropped (as a file object would be)."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1

    def __del__(self) -> None:
        self.release()


def _lock_directory(fd: int, path: Path) -> int:
    """Take the exclusive lock on the state directory `fd` and write our PID into the lock
    file; the locked descriptor. StateDirectoryLocked, naming the holder, if it is taken."""
    lock_path = path / LOCK_NAME
    try:
        lock = os.open(LOCK_NAME, _OPEN_LOCK, 0o600, dir_fd=fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SnapshotError(
                f"{lock_path} is a symlink: refused; remove it (the supervisor creates its own)"
            ) from exc
        raise
    try:
        _take_lock(lock, path, lock_path)
    except BaseException:
        os.close(lock)
        raise
    return lock


def _take_lock(lock: int, path: Path, lock_path: Path) -> None:
    if not stat.S_ISREG(os.fstat(lock).st_mode):
        raise SnapshotError(f"{lock_path} is not a regular file: refused; remove it")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        # The holder writes its PID right after locking: empty only in that instant.
        holder = os.pread(lock, 32, 0).decode(errors="replace").strip() or "unknown"
        raise StateDirectoryLocked(
            f"state directory {path} is in use by another supervisor (pid {holder}, "
            f"holding {lock_path}): stop that one first, or give this one its own state_dir"
        ) from None
    os.fchmod(lock, 0o600)
    os.ftruncate(lock, 0)
    write_all(lock, f"{os.getpid()}\n".encode())


# --- files in the directory `fd` ---------------------------------------------------------


def read_file(fd: int, path: Path) -> bytes | None:
    """The bytes of the regular file `path` (in the directory `fd`), None if it is missing;
    SnapshotCorrupt if it is a symlink or not a regular file."""
    try:
        file = os.open(path.name, _OPEN_READ, dir_fd=fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SnapshotCorrupt(f"corrupt snapshot {path}: it is a symlink") from None
        raise
    try:
        info = os.fstat(file)
        if not stat.S_ISREG(info.st_mode):
            raise SnapshotCorrupt(f"corrupt snapshot {path}: not a regular file")
        return read_at_most(file, sys.maxsize, info.st_size)
    finally:
        os.close(file)


def stage(fd: int, job: str, data: bytes, step: Step) -> str:
    """A new temp file in the directory `fd` holding `data`, fsynced; its name."""
    name = temp_name(job)
    file = os.open(name, _OPEN_TEMP, 0o600, dir_fd=fd)
    try:
        try:
            write_all(file, data)
            step("temp_written")
            os.fsync(file)
        finally:
            os.close(file)
        step("temp_fsynced")
    except BaseException:
        remove(fd, name)
        raise
    return name


def duplicate(fd: int, directory: Path, job: str, name: str, target: str) -> None:
    """Atomically make `target` hold what `name` holds, leaving `name` in place: a hard
    link renamed over `target`, or a copy where the filesystem has no hard links."""
    temp = temp_name(job)
    try:
        os.link(name, temp, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        data = None
        with contextlib.suppress(SnapshotCorrupt):
            data = read_file(fd, directory / name)
        if data is None:
            raise
        temp = stage(fd, job, data, no_step)
    try:
        os.replace(temp, target, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        # Also after a rename that succeeded: when `target` already was a link of `name`
        # (a kill between keeping prev and renaming the new file), renaming one link of a
        # file over another does nothing (POSIX) and the temp link would stay.
        remove(fd, temp)


def move_broken_aside(fd: int, job: str, path: Path) -> None:
    """Rename `path` to ``<job>.snapshot.broken-<UTC>.toml``: kept for a post-mortem."""
    aside = f"{aside_stem(fd, job, 'broken')}.toml"
    os.rename(path.name, aside, src_dir_fd=fd, dst_dir_fd=fd)
    log.warning("snapshot.moved_aside", job=job, path=str(path), to=aside)
    # Not durable yet is fine: the next load finds the same file and does the same.
    with contextlib.suppress(OSError):
        os.fsync(fd)


def set_aside(directory: Path, job: str, reason: str) -> Path | None:
    """Rename the current and previous files of `job` aside, durably; the current one's new
    path (None if there was none). SnapshotWriteError if that cannot be done."""
    current = directory / current_name(job)
    try:
        with open_directory(directory) as fd:
            stem = aside_stem(fd, job, reason)
            # prev first, and durably: a power cut in between must leave the current
            # file in place, never prev alone (which load would take for the current).
            if exists(fd, previous_name(job)):
                os.rename(previous_name(job), f"{stem}.prev.toml", src_dir_fd=fd, dst_dir_fd=fd)
                os.fsync(fd)
            moved = None
            if exists(fd, current.name):
                os.rename(current.name, f"{stem}.toml", src_dir_fd=fd, dst_dir_fd=fd)
                moved = directory / f"{stem}.toml"
            os.fsync(fd)
    except OSError as exc:
        raise SnapshotWriteError(f"cannot set aside snapshot {current}: {why(exc)}") from exc
    log.warning("snapshot.set_aside", job=job, reason=reason, path=str(moved))
    return moved


def regular_or_missing(fd: int, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return True


def exists(fd: int, name: str) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return bool(os.stat(name, dir_fd=fd, follow_symlinks=False))
    return False


def remove(fd: int, name: str) -> None:
    with contextlib.suppress(OSError):  # a leftover temp file is removed by the next prepare
        os.unlink(name, dir_fd=fd)


def no_step(step: str) -> None:
    pass


# --- small helpers -----------------------------------------------------------------------


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def why(exc: OSError) -> str:
    """The errno's name and text, as error messages quote it: ``EIO (Input/output error)``."""
    if exc.errno is None:
        return str(exc)
    return f"{errno.errorcode.get(exc.errno, str(exc.errno))} ({exc.strerror})"


_Error = TypeVar("_Error", bound=SnapshotError)


def raised(error: _Error, cause: BaseException) -> _Error:
    """`error` as `raise error from cause` would leave it, for a result handed back."""
    error.__cause__ = cause
    return error

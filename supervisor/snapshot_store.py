"""Snapshot files on disk: durable writes, the previous generation kept, nothing deleted.

Files in the state directory, for the job ``orders``::

    orders.snapshot.toml                       the current generation
    orders.snapshot.prev.toml                  the generation before it
    orders.snapshot.broken-<UTC>.toml          a file that failed its checks, kept for a post-mortem
    orders.snapshot.<reason>-<UTC>.toml        set aside (a FAILED job started afresh), and
    orders.snapshot.<reason>-<UTC>.prev.toml   its previous generation
    .orders.snapshot.<16 hex>.tmp              a write in flight; `prepare` removes it after a crash
    supervisor.lock                            the daemon's lock on the directory; holds its PID

A write (`WRITE_STEPS`), its encoding included, runs in a worker thread: new
bytes to a fresh temp file, fsynced; the current file, if valid, hard-linked
(copied if links are unsupported) to a temp name that then replaces ``prev``
(a corrupt one is kept aside instead); the temp file replaces the current one;
the directory is fsynced. Writes of several jobs that meet are one batch
(`supervisor.group_commit`): one worker-thread trip, each job's steps in turn,
then one fsync of the directory for all their renames; each job's write still
succeeds or fails on its own. The current name never disappears: a crash at any
instant leaves it holding the old or the new generation, each complete on disk.
A current file holding exactly the bytes (same SHA-256) this store last wrote or
loaded there is valid without being decoded again; any other is checked in full.
``prev`` is examined by the first write after a load (a load of a valid current
reads only that): a corrupt one is then kept aside, never replaced.
Every name is opened relative to one O_NOFOLLOW descriptor of the directory,
so a planted symlink is refused, never written through.

The directory itself must be a real directory (not a symlink), owned by the
user the supervisor runs as, and writable by no one else (as sshd's StrictModes
and PostgreSQL's data directory check demand): anyone who can write to it can
swap a snapshot, or plant a link, under the supervisor's feet. It is checked on
the open descriptor, each time, so the check and the use are of the same inode.
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import structlog

from supervisor.durable import fsync_directory, read_at_most, write_all
from supervisor.errors import (
    SnapshotCorrupt,
    SnapshotError,
    SnapshotUnsupported,
    SnapshotWriteError,
    StateDirectoryLocked,
)
from supervisor.group_commit import GroupCommit
from supervisor.snapshot import Snapshot, decode, encode

log = structlog.get_logger("supervisor.snapshot")

WRITE_STEPS = ("temp_written", "temp_fsynced", "previous_kept", "renamed", "directory_fsynced")
"""The steps of a write, in order; `SnapshotStore(on_step=...)` is called after each."""

_JOB = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_REASON = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_TEMP = re.compile(r"\.([a-z0-9][a-z0-9_-]{0,62})\.snapshot\.[0-9a-f]{16}\.tmp")
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP})
_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted at a snapshot name must not hang the reader.
_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_LOCK = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

LOCK_NAME = "supervisor.lock"
"""The file in the state directory that the daemon using it holds an exclusive `flock` on."""

SNAPSHOT_THREADS = 4
"""Worker threads of a store's own, for its reads and writes. Not anyio's default pool,
which sources and sinks share: 40 blocked in it (a reader stuck on a FIFO, a sink on a
hung mount) would otherwise stall every job's checkpoints. Writes go one batch at a time,
so one thread writes; the rest serve loads."""


class SnapshotStore:
    """The snapshots of every job in one state directory."""

    def __init__(self, directory: Path, *, on_step: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self._on_step = on_step or _crash_point_from_environment()
        self._generations: dict[str, int] = {}  # highest written or loaded, per job
        # Per job, the SHA-256 of the bytes this store last wrote or found valid at the
        # current name: a write finding exactly those there need not decode them again.
        self._verified: dict[str, bytes] = {}
        # Jobs whose prev this store has examined since it last loaded them: from then on the
        # prev name holds only what its own writes put there.
        self._previous_examined: set[str] = set()
        self._locks: dict[str, anyio.Lock] = {}
        self._threads = anyio.CapacityLimiter(SNAPSHOT_THREADS)
        self._directory_lock: _HeldLock | None = None
        """The lock on the directory, from `prepare` until `close`."""
        # Writes of different jobs that meet share one worker-thread trip and one fsync of
        # the directory: a storm of failing jobs is a storm of state writes.
        self._commits = GroupCommit(
            self._write_batch, failed=self._batch_failed, limiter=self._threads
        )

    def path_for(self, job: str) -> Path:
        """Where the current snapshot of `job` lives."""
        return self.directory / _current(job)

    async def prepare(self, *, lock: bool = False) -> None:
        """Create the directory (0700) if missing, refuse an unsafe one, remove crashed writes.

        Refused with SnapshotError naming the path and the fix: a symlink, a
        non-directory, a directory owned by another user, or one that its group
        or others may write to.

        With `lock` (the daemon's), an exclusive lock on the directory is taken
        first, before anything in it is touched, and held until `close` (or until
        the store is dropped): StateDirectoryLocked, naming its PID, if another
        process holds it. Two daemons on one directory would run every job twice,
        and each would delete the other's writes in flight as a crash's leftovers.
        """
        await anyio.to_thread.run_sync(self._prepare, lock, limiter=self._threads)

    def close(self) -> None:
        """Release the lock on the directory taken by `prepare`."""
        if self._directory_lock is not None:
            self._directory_lock.release()
            self._directory_lock = None

    async def load(self, job: str) -> Snapshot | None:
        """The last valid snapshot of `job`, None if it was never checkpointed.

        Falls back to the previous generation when the current file is missing
        or corrupt (the corrupt one is renamed aside); raises SnapshotCorrupt
        naming the paths when no file is valid, leaving them where they are.
        """
        async with self._lock(job):
            snapshot = await anyio.to_thread.run_sync(self._load, job, limiter=self._threads)
            self._loaded(job, snapshot)
            return snapshot

    async def load_many(self, jobs: Sequence[str]) -> dict[str, Snapshot | SnapshotError | None]:
        """`load` of each job in one worker-thread trip (for startup): per job, in order, what
        `load` would return, or the SnapshotError it would raise; one bad job stops no other.

        ValueError, before anything is read, if a name is not a valid job name.
        """
        wanted = list(dict.fromkeys(jobs))
        locks = [self._lock(job) for job in sorted(wanted)]  # one order: no deadlock
        held: list[anyio.Lock] = []
        try:
            for lock in locks:
                try:
                    lock.acquire_nowait()  # no loop turn per job when nothing holds it
                except anyio.WouldBlock:
                    await lock.acquire()
                held.append(lock)
            results = await anyio.to_thread.run_sync(self._load_many, wanted, limiter=self._threads)
        finally:
            for lock in held:
                lock.release()
        for job, result in results.items():
            if not isinstance(result, SnapshotError):
                self._loaded(job, result)
        return results

    def _loaded(self, job: str, snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            seen = self._generations.get(job, snapshot.generation)
            self._generations[job] = max(seen, snapshot.generation)

    async def write(self, snapshot: Snapshot) -> Snapshot:
        """Write `snapshot` durably and return it as written (with `written_at`).

        Raises SnapshotWriteError naming the path and errno; the previous
        snapshot is then intact. ValueError if the generation does not grow, or if
        the offset is not one TOML can hold (nothing is written).
        """
        job = snapshot.job
        async with self._lock(job):
            last = self._generations.get(job)
            if last is not None and snapshot.generation <= last:
                raise ValueError(
                    f"snapshot of {job} has generation {snapshot.generation}, "
                    f"not above {last}: generations only grow"
                )
            written = replace(snapshot, written_at=datetime.now(UTC))
            await self._commits.submit(written)
            # Only a completed write counts: after a failure the caller retries this generation.
            self._generations[job] = written.generation
        log.debug("snapshot.written", job=job, generation=written.generation, offset=written.offset)
        return written

    async def set_aside(self, job: str, reason: str) -> Path | None:
        """Rename the files of `job` aside (never deleted); the current one's new path."""
        if not _REASON.fullmatch(reason):
            raise ValueError(f"not a safe reason for a file name: {reason!r}")
        async with self._lock(job):
            return await anyio.to_thread.run_sync(
                self._set_aside, job, reason, limiter=self._threads
            )

    def _lock(self, job: str) -> anyio.Lock:
        lock = self._locks.get(job)
        if lock is None:
            _current(job)  # validates the name before anything is keyed by it
            # fast_acquire: a free lock is taken without a turn of the event loop; every
            # write takes it, and nothing else holds it but a load or a set-aside.
            lock = self._locks[job] = anyio.Lock(fast_acquire=True)
        return lock

    # --- blocking parts: each runs whole in one worker thread ----------------------------

    def _prepare(self, lock: bool) -> None:
        try:
            missing = []
            for path in (self.directory, *self.directory.parents):
                if path.exists():
                    break
                missing.append(path)
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for created in missing:  # its name in its parent must survive a power cut too
                fsync_directory(created.parent)
            with _directory(self.directory) as fd:
                # Before anything in it is touched: the temp files below may be another
                # daemon's writes in flight, not a crash's leftovers.
                if lock and self._directory_lock is None:
                    self._directory_lock = _HeldLock(_lock_directory(fd, self.directory))
                for name in os.listdir(fd):  # noqa: PTH208 - by descriptor: no symlink race
                    if match := _TEMP.fullmatch(name):
                        self._remove_stale_temp(fd, match.group(1), name)
        except OSError as exc:
            raise SnapshotError(f"state directory {self.directory}: {_why(exc)}") from exc

    def _remove_stale_temp(self, fd: int, job: str, name: str) -> None:
        """A crashed write's temp file is removed; anything else by that name is kept aside."""
        path = self.directory / name
        if stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=fd)
            log.warning("snapshot.stale_temp_removed", path=str(path))
            return
        # Not something this store writes (a planted symlink, a FIFO): never followed, kept.
        log.error("snapshot.corrupt", job=job, path=str(path), error="not a regular file")
        self._move_broken_aside(fd, job, path)

    def _load(self, job: str) -> Snapshot | None:
        try:
            with _directory(self.directory) as fd:
                return self._load_from(fd, job)
        except OSError as exc:
            raise self._unreadable(job, exc) from exc

    def _load_many(self, jobs: list[str]) -> dict[str, Snapshot | SnapshotError | None]:
        results: dict[str, Snapshot | SnapshotError | None] = {}
        try:
            with _directory(self.directory) as fd:
                # One listing, not two failed opens (and two raised FileNotFoundErrors) for
                # each job that has no file yet: that was 0.3 s of a 10,000-job cold start.
                present = frozenset(os.listdir(fd))  # noqa: PTH208 - by descriptor
                for job in jobs:
                    try:
                        results[job] = self._load_from(fd, job, present)
                    except OSError as exc:
                        results[job] = _raised(self._unreadable(job, exc), exc)
                    except SnapshotError as exc:
                        results[job] = exc
        except OSError as exc:  # the directory cannot be opened: so each job's load says
            for job in jobs:
                results.setdefault(job, _raised(self._unreadable(job, exc), exc))
        except SnapshotError as exc:  # the directory is refused: each job's load is too
            for job in jobs:
                results.setdefault(job, type(exc)(*exc.args))
        return results

    def _unreadable(self, job: str, exc: OSError) -> SnapshotError:
        return SnapshotError(f"cannot read snapshot {self.path_for(job)}: {_why(exc)}")

    def _load_from(
        self, fd: int, job: str, present: frozenset[str] | None = None
    ) -> Snapshot | None:
        """`load` of `job` in the directory `fd`, whose names are `present` if that was
        listed; OSError is left to the caller."""
        self._verified.pop(job, None)
        self._previous_examined.discard(job)
        if present is not None and _current(job) not in present and _previous(job) not in present:
            return None  # never checkpointed
        current = self.path_for(job)
        found = _examine(fd, job, current, verified=self._verified)
        if isinstance(found, Snapshot):
            # prev is examined by the first write, before it could replace a corrupt one:
            # a load of a valid current reads one file, not two.
            return found
        previous = self.directory / _previous(job)
        fallback = _examine(fd, job, previous)
        if isinstance(fallback, SnapshotCorrupt):
            reasons = "; ".join(str(error) for error in (found, fallback) if error)
            raise SnapshotCorrupt(f"no valid snapshot of {job}: {reasons}")
        if fallback is None:
            if found is None:
                return None
            raise SnapshotCorrupt(f"{found}; and there is no {previous}")
        if found is None:  # a crash mid-write, or an earlier fallback
            log.warning("snapshot.previous_used", job=job, path=str(previous))
        else:
            self._move_broken_aside(fd, job, current)
        return fallback

    def _move_broken_aside(self, fd: int, job: str, path: Path) -> None:
        aside = f"{_aside_stem(fd, job, 'broken')}.toml"
        os.rename(path.name, aside, src_dir_fd=fd, dst_dir_fd=fd)
        log.warning("snapshot.moved_aside", job=job, path=str(path), to=aside)
        # Not durable yet is fine: the next load finds the same file and does the same.
        with contextlib.suppress(OSError):
            os.fsync(fd)

    def _write_batch(self, snapshots: Sequence[Snapshot]) -> list[Exception | None]:
        """Encode and write each snapshot, in the worker thread: a storm's thousand encodings
        kept off the event loop's turns. Per snapshot, None or the error its write met; an
        offset TOML cannot hold is that snapshot's ValueError alone, not its batch's, and so
        is anything else its encoding raises (as a SnapshotWriteError)."""
        outcomes: list[Exception | None] = []
        writes: list[tuple[str, bytes]] = []
        for snapshot in snapshots:
            try:
                writes.append((snapshot.job, encode(snapshot)))
                outcomes.append(None)
            except ValueError as exc:
                outcomes.append(exc)
            except Exception as exc:  # noqa: BLE001 - a plugin's value may raise anything
                error = SnapshotWriteError(
                    f"cannot encode snapshot {self.path_for(snapshot.job)}: "
                    f"{type(exc).__name__}: {exc}; the previous snapshot is intact"
                )
                outcomes.append(_raised(error, exc))
        written = iter(self._write_all(writes) if writes else [])
        return [next(written) if outcome is None else outcome for outcome in outcomes]

    def _batch_failed(self, snapshot: Snapshot, exc: Exception) -> Exception:
        """What each write of a batch that raised whole gets: its own error, naming its file."""
        return SnapshotWriteError(
            f"cannot write snapshot {self.path_for(snapshot.job)}: {type(exc).__name__}: "
            f"{exc}; the previous snapshot is intact"
        )

    def _write(self, job: str, data: bytes) -> None:
        """One write on its own (tests drive the steps through it)."""
        (error,) = self._write_all([(job, data)])
        if error is not None:
            raise error

    def _write_all(self, writes: Sequence[tuple[str, bytes]]) -> list[SnapshotError | None]:
        """Write each job's bytes; one fsync of the directory makes all their renames
        durable. Per write, None or the error it met (a batch's writes fail alone)."""
        errors: list[SnapshotError | None] = [None] * len(writes)
        try:
            with _directory(self.directory) as fd:
                renamed = []
                for index, (job, data) in enumerate(writes):
                    errors[index] = self._replace_current(fd, job, data)
                    if errors[index] is None:
                        renamed.append(index)
                if not renamed:
                    return errors
                try:
                    os.fsync(fd)
                except OSError as exc:
                    for index in renamed:
                        errors[index] = SnapshotWriteError(
                            f"snapshot {self.path_for(writes[index][0])} was renamed into place "
                            f"but fsync of its directory failed: {_why(exc)}; it may not survive "
                            "a power cut (the previous generation is kept)"
                        )
                    return errors
                self._on_step("directory_fsynced")
        except OSError as exc:
            return [self._cannot_write(job, exc) for job, _ in writes]
        except SnapshotError as exc:  # the directory itself was refused
            return [_raised(SnapshotError(str(exc)), exc) for _ in writes]
        return errors

    def _replace_current(self, fd: int, job: str, data: bytes) -> SnapshotError | None:
        """Stage `data`, keep the current file as prev, rename the new one over it; None, or
        why not (this job's alone: the batch's other writes go on)."""
        try:
            temp = self._stage(fd, job, data, self._on_step)
            try:
                self._keep_previous(fd, job)
                self._on_step("previous_kept")
                os.replace(temp, _current(job), src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                _remove(fd, temp)
                raise
        except OSError as exc:
            return self._cannot_write(job, exc)
        except SnapshotError as exc:  # e.g. the current file is of a newer format: not replaced
            return exc
        self._verified[job] = _digest(data)
        self._on_step("renamed")
        return None

    def _cannot_write(self, job: str, exc: OSError) -> SnapshotWriteError:
        error = SnapshotWriteError(
            f"cannot write snapshot {self.path_for(job)}: {_why(exc)}; "
            "the previous snapshot is intact"
        )
        return _raised(error, exc)

    def _stage(self, fd: int, job: str, data: bytes, step: Callable[[str], None]) -> str:
        """A new temp file in the directory holding `data`, fsynced; its name."""
        name = _temp_name(job)
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
            _remove(fd, name)
            raise
        return name

    def _keep_previous(self, fd: int, job: str) -> None:
        """Make ``prev`` the current generation if it is valid; keep a corrupt one aside."""
        current, previous = self.path_for(job), self.directory / _previous(job)
        if job not in self._previous_examined:
            # Not looked at since the load: a corrupt prev is kept aside, never replaced.
            # A newer-format prev predates this current: it is rotated out.
            with contextlib.suppress(SnapshotUnsupported):
                if isinstance(_examine(fd, job, previous), SnapshotCorrupt):
                    self._move_broken_aside(fd, job, previous)
            self._previous_examined.add(job)
        if not _regular_or_missing(fd, previous.name):
            # Planted at prev: replaced by a rename it is never followed, but keep it for a look.
            log.error("snapshot.corrupt", job=job, path=str(previous), error="not a regular file")
            self._move_broken_aside(fd, job, previous)
        found: bytes | Snapshot | SnapshotCorrupt | None = _read_examined(fd, job, current)
        if isinstance(found, bytes) and _digest(found) != self._verified.get(job):
            found = _decode_examined(found, job, current)
        # Still bytes: what this store wrote or found valid there, so not decoded again.
        if isinstance(found, bytes | Snapshot):
            self._duplicate(fd, job, current.name, _previous(job))
        elif found is not None:  # the last good generation stays in prev; the bad file is kept
            self._duplicate(fd, job, current.name, f"{_aside_stem(fd, job, 'broken')}.toml")

    def _duplicate(self, fd: int, job: str, name: str, target: str) -> None:
        """Atomically make `target` hold what `name` holds, leaving `name` in place."""
        temp = _temp_name(job)
        try:
            os.link(name, temp, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            data = None
            with contextlib.suppress(SnapshotCorrupt):
                data = _read(fd, self.directory / name)
            if data is None:
                raise
            temp = self._stage(fd, job, data, _no_step)
        try:
            os.replace(temp, target, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            _remove(fd, temp)
            raise

    def _set_aside(self, job: str, reason: str) -> Path | None:
        current = self.path_for(job)
        self._verified.pop(job, None)
        self._previous_examined.discard(job)
        try:
            with _directory(self.directory) as fd:
                stem = _aside_stem(fd, job, reason)
                # prev first, and durably: a power cut in between must leave the current
                # file in place, never prev alone (which load would take for the current).
                if _exists(fd, _previous(job)):
                    os.rename(_previous(job), f"{stem}.prev.toml", src_dir_fd=fd, dst_dir_fd=fd)
                    os.fsync(fd)
                moved = None
                if _exists(fd, current.name):
                    os.rename(current.name, f"{stem}.toml", src_dir_fd=fd, dst_dir_fd=fd)
                    moved = self.directory / f"{stem}.toml"
                os.fsync(fd)
        except OSError as exc:
            raise SnapshotWriteError(f"cannot set aside snapshot {current}: {_why(exc)}") from exc
        log.warning("snapshot.set_aside", job=job, reason=reason, path=str(moved))
        return moved


def _current(job: str) -> str:
    # Names are validated with the job config too; checked again so no path leaves the directory.
    if not _JOB.fullmatch(job):
        raise ValueError(f"not a valid job name: {job!r}")
    return f"{job}.snapshot.toml"


def _previous(job: str) -> str:
    return f"{job}.snapshot.prev.toml"


def _temp_name(job: str) -> str:
    return f".{job}.snapshot.{secrets.token_hex(8)}.tmp"


CRASH_AT_ENV = "SUPERVISOR_CRASH_AT"
"""Crash-consistency testing: name a step of WRITE_STEPS and the process dies
(exit 70, no cleanup) right after that step of its first snapshot write."""


def _crash_point_from_environment() -> Callable[[str], None]:
    crash_at = os.environ.get(CRASH_AT_ENV)
    if crash_at not in WRITE_STEPS:
        return _no_step

    def crash(step: str) -> None:
        if step == crash_at:
            os._exit(70)

    return crash


def _no_step(step: str) -> None:
    pass


def _aside_stem(fd: int, job: str, label: str) -> str:
    """``<job>.snapshot.<label>-<UTC>``, with a counter if that is taken: never overwrite."""
    stem = f"{job}.snapshot.{label}-{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}"
    candidate, count = stem, 0
    while _exists(fd, f"{candidate}.toml") or _exists(fd, f"{candidate}.prev.toml"):
        count += 1
        candidate = f"{stem}-{count}"
    return candidate


@contextlib.contextmanager
def _directory(path: Path) -> Iterator[int]:
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


class _HeldLock:
    """A descriptor holding the state directory's flock: released when closed, or when the
    store that took it is dropped (as a file object would be)."""

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


def _regular_or_missing(fd: int, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return True


def _examine(
    fd: int, job: str, path: Path, *, verified: dict[str, bytes] | None = None
) -> Snapshot | SnapshotCorrupt | None:
    """The snapshot at `path`, None if there is no file, or why it is corrupt (logged).

    With `verified`, the SHA-256 of a valid file's bytes is recorded there under `job`.
    """
    data = _read_examined(fd, job, path)
    if not isinstance(data, bytes):
        return data
    found = _decode_examined(data, job, path)
    if verified is not None and isinstance(found, Snapshot):
        verified[job] = _digest(data)
    return found


def _read_examined(fd: int, job: str, path: Path) -> bytes | SnapshotCorrupt | None:
    """The bytes of `path`, None if there is no file, or why it is no snapshot (logged)."""
    try:
        return _read(fd, path)
    except SnapshotCorrupt as exc:
        return _reported(job, path, exc)


def _decode_examined(data: bytes, job: str, path: Path) -> Snapshot | SnapshotCorrupt:
    """The snapshot in `data`, read from `path`, or why it is corrupt (logged)."""
    try:
        return decode(data, job=job, path=path)
    except SnapshotCorrupt as exc:
        return _reported(job, path, exc)


def _reported(job: str, path: Path, problem: SnapshotCorrupt) -> SnapshotCorrupt:
    log.error("snapshot.corrupt", job=job, path=str(path), error=str(problem))
    return problem


def _read(fd: int, path: Path) -> bytes | None:
    """The bytes of the regular file `path` (in the directory `fd`), None if it is missing."""
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


_Error = TypeVar("_Error", bound=SnapshotError)


def _raised(error: _Error, cause: BaseException) -> _Error:
    """`error` as `raise error from cause` would leave it, for a result handed back."""
    error.__cause__ = cause
    return error


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _exists(fd: int, name: str) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return bool(os.stat(name, dir_fd=fd, follow_symlinks=False))
    return False


def _remove(fd: int, name: str) -> None:
    with contextlib.suppress(OSError):  # a leftover temp file is removed by the next prepare()
        os.unlink(name, dir_fd=fd)


def _why(exc: OSError) -> str:
    if exc.errno is None:
        return str(exc)
    return f"{errno.errorcode.get(exc.errno, str(exc.errno))} ({exc.strerror})"

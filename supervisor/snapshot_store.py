"""Snapshots of every job in one state directory, written durably, loaded with recovery.

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
reads only that): a corrupt one is then kept aside, never replaced. A load falls
back to ``prev`` when the current file is missing or corrupt.

The store neither counts generations nor orders a job's calls: it writes the
snapshot it is given. A job's `supervisor.ledger.JobLedger` numbers its
generations and makes its calls one at a time; the daemon loads a job only while
no ledger of it is in use. A call overlapping another of the same job is a bug,
refused with RuntimeError: two worker threads must never work on one job's files.

The files, their names and the checks of the directory are in
`supervisor.snapshot_files`. Longer than 400 lines: a write's steps and a load's
recovery share what this store remembers of each job's files (`_verified`,
`_previous_examined`), so both stay with the one object that holds it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread
import structlog

from supervisor.errors import (
    SnapshotCorrupt,
    SnapshotError,
    SnapshotUnsupported,
    SnapshotWriteError,
)
from supervisor.group_commit import GroupCommit
from supervisor.snapshot import Snapshot, decode, encode
from supervisor.snapshot_files import (
    WRITE_STEPS,
    DirectoryLock,
    Step,
    aside_stem,
    check_reason,
    current_name,
    digest,
    duplicate,
    move_broken_aside,
    no_step,
    open_directory,
    prepare_directory,
    previous_name,
    raised,
    read_file,
    regular_or_missing,
    remove,
    set_aside,
    stage,
    why,
)

__all__ = ["SNAPSHOT_THREADS", "WRITE_STEPS", "SnapshotStorage", "SnapshotStore"]

log = structlog.get_logger("supervisor.snapshot")

SNAPSHOT_THREADS = 4
"""Worker threads of a store's own, for its reads and writes. Not anyio's default pool,
which sources and sinks share: 40 blocked in it (a reader stuck on a FIFO, a sink on a
hung mount) would otherwise stall every job's checkpoints. Writes go one batch at a time,
so one thread writes; the rest serve loads."""


class SnapshotStorage(Protocol):
    """What the daemon and a job's ledger need of a store: `SnapshotStore`, or an in-memory
    one in tests."""

    @property
    def directory(self) -> Path: ...
    async def prepare(self, *, lock: bool = False) -> None: ...
    def close(self) -> None: ...
    async def load(self, job: str) -> Snapshot | None: ...
    async def load_many(
        self, jobs: Sequence[str]
    ) -> dict[str, Snapshot | SnapshotError | None]: ...
    async def write(self, snapshot: Snapshot) -> Snapshot: ...
    async def set_aside(self, job: str, reason: str) -> Path | None: ...
    def path_for(self, job: str) -> Path: ...


class SnapshotStore:
    """The snapshots of every job in one state directory."""

    def __init__(self, directory: Path, *, on_step: Step = no_step) -> None:
        """`on_step`: called after each step of a write (`WRITE_STEPS`), in its worker
        thread; tests crash or watch there."""
        self.directory = directory
        self._on_step = on_step
        # Per job, the SHA-256 of the bytes this store last wrote or found valid at the
        # current name: a write finding exactly those there need not decode them again.
        self._verified: dict[str, bytes] = {}
        # Jobs whose prev this store has examined since it last loaded them: from then on the
        # prev name holds only what its own writes put there.
        self._previous_examined: set[str] = set()
        self._busy: set[str] = set()
        """Jobs with a call in progress (see the module's docstring)."""
        self._threads = anyio.CapacityLimiter(SNAPSHOT_THREADS)
        self._directory_lock: DirectoryLock | None = None
        """The lock on the directory, from `prepare` until `close`."""
        # Writes of different jobs that meet share one worker-thread trip and one fsync of
        # the directory: a storm of failing jobs is a storm of state writes.
        self._commits = GroupCommit(
            self._write_batch, failed=self._batch_failed, limiter=self._threads
        )

    def path_for(self, job: str) -> Path:
        """Where the current snapshot of `job` lives."""
        return self.directory / current_name(job)

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
        with self._sole_call((job,)):
            return await anyio.to_thread.run_sync(self._load, job, limiter=self._threads)

    async def load_many(self, jobs: Sequence[str]) -> dict[str, Snapshot | SnapshotError | None]:
        """`load` of each job in one worker-thread trip (for startup): per job, in order, what
        `load` would return, or the SnapshotError it would raise; one bad job stops no other.

        ValueError, before anything is read, if a name is not a valid job name.
        """
        wanted = list(dict.fromkeys(jobs))
        with self._sole_call(wanted):
            return await anyio.to_thread.run_sync(self._load_many, wanted, limiter=self._threads)

    async def write(self, snapshot: Snapshot) -> Snapshot:
        """Write `snapshot` durably, with the generation it has, and return it as written
        (with `written_at`).

        Raises SnapshotWriteError naming the path and errno; the previous
        snapshot is then intact. ValueError if the offset is not one TOML can
        hold (nothing is written).
        """
        job = snapshot.job
        with self._sole_call((job,)):
            written = replace(snapshot, written_at=datetime.now(UTC))
            await self._commits.submit(written)
        log.debug("snapshot.written", job=job, generation=written.generation, offset=written.offset)
        return written

    async def set_aside(self, job: str, reason: str) -> Path | None:
        """Rename the files of `job` aside (never deleted); the current one's new path."""
        check_reason(reason)
        with self._sole_call((job,)):
            return await anyio.to_thread.run_sync(
                self._set_aside, job, reason, limiter=self._threads
            )

    @contextlib.contextmanager
    def _sole_call(self, jobs: Iterable[str]) -> Iterator[None]:
        """Marks `jobs` busy for the length of a call, after checking their names
        (ValueError); RuntimeError if a call of one of them is already in progress."""
        jobs = tuple(jobs)
        for job in jobs:
            current_name(job)  # validates the name before anything is keyed by it or read
        if overlapping := sorted(job for job in jobs if job in self._busy):
            raise RuntimeError(
                f"snapshot store: a call for {', '.join(overlapping)} overlapped another of "
                "the same job; a job's ledger makes its calls one at a time"
            )
        self._busy.update(jobs)
        try:
            yield
        finally:
            self._busy.difference_update(jobs)

    # --- blocking parts: each runs whole in one worker thread ----------------------------

    def _prepare(self, lock: bool) -> None:
        held = prepare_directory(self.directory, lock=lock and self._directory_lock is None)
        if held is not None:
            self._directory_lock = held

    def _load(self, job: str) -> Snapshot | None:
        try:
            with open_directory(self.directory) as fd:
                return self._load_from(fd, job)
        except OSError as exc:
            raise self._unreadable(job, exc) from exc

    def _load_many(self, jobs: list[str]) -> dict[str, Snapshot | SnapshotError | None]:
        results: dict[str, Snapshot | SnapshotError | None] = {}
        try:
            with open_directory(self.directory) as fd:
                # One listing, not two failed opens (and two raised FileNotFoundErrors) for
                # each job that has no file yet: a cold start of thousands of jobs pays those.
                present = frozenset(os.listdir(fd))  # noqa: PTH208 - by descriptor
                for job in jobs:
                    try:
                        results[job] = self._load_from(fd, job, present)
                    except OSError as exc:
                        results[job] = raised(self._unreadable(job, exc), exc)
                    except SnapshotError as exc:
                        results[job] = exc
        except OSError as exc:  # the directory cannot be opened: so each job's load says
            for job in jobs:
                results.setdefault(job, raised(self._unreadable(job, exc), exc))
        except SnapshotError as exc:  # the directory is refused: each job's load is too
            for job in jobs:
                results.setdefault(job, type(exc)(*exc.args))
        return results

    def _unreadable(self, job: str, exc: OSError) -> SnapshotError:
        return SnapshotError(f"cannot read snapshot {self.path_for(job)}: {why(exc)}")

    def _load_from(
        self, fd: int, job: str, present: frozenset[str] | None = None
    ) -> Snapshot | None:
        """`load` of `job` in the directory `fd`, whose names are `present` if that was
        listed; OSError is left to the caller."""
        self._verified.pop(job, None)
        self._previous_examined.discard(job)
        if (
            present is not None
            and current_name(job) not in present
            and previous_name(job) not in present
        ):
            return None  # never checkpointed
        current = self.path_for(job)
        found = _examine(fd, job, current, verified=self._verified)
        if isinstance(found, Snapshot):
            # prev is examined by the first write, before it could replace a corrupt one:
            # a load of a valid current reads one file, not two.
            return found
        previous = self.directory / previous_name(job)
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
            move_broken_aside(fd, job, current)
        return fallback

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
                outcomes.append(raised(error, exc))
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
            with open_directory(self.directory) as fd:
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
                            f"but fsync of its directory failed: {why(exc)}; it may not survive "
                            "a power cut (the previous generation is kept)"
                        )
                    return errors
                self._on_step("directory_fsynced")
        except OSError as exc:
            return [self._cannot_write(job, exc) for job, _ in writes]
        except SnapshotError as exc:  # the directory itself was refused
            return [raised(SnapshotError(str(exc)), exc) for _ in writes]
        return errors

    def _replace_current(self, fd: int, job: str, data: bytes) -> SnapshotError | None:
        """Stage `data`, keep the current file as prev, rename the new one over it; None, or
        why not (this job's alone: the batch's other writes go on)."""
        try:
            temp = stage(fd, job, data, self._on_step)
            try:
                self._keep_previous(fd, job)
                self._on_step("previous_kept")
                os.replace(temp, current_name(job), src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                remove(fd, temp)
                raise
        except OSError as exc:
            return self._cannot_write(job, exc)
        except SnapshotError as exc:  # e.g. the current file is of a newer format: not replaced
            return exc
        self._verified[job] = digest(data)
        self._on_step("renamed")
        return None

    def _cannot_write(self, job: str, exc: OSError) -> SnapshotWriteError:
        error = SnapshotWriteError(
            f"cannot write snapshot {self.path_for(job)}: {why(exc)}; "
            "the previous snapshot is intact"
        )
        return raised(error, exc)

    def _keep_previous(self, fd: int, job: str) -> None:
        """Make ``prev`` the current generation if it is valid; keep a corrupt one aside."""
        current, previous = self.path_for(job), self.directory / previous_name(job)
        if job not in self._previous_examined:
            # Not looked at since the load: a corrupt prev is kept aside, never replaced.
            # A newer-format prev predates this current: it is rotated out.
            with contextlib.suppress(SnapshotUnsupported):
                if isinstance(_examine(fd, job, previous), SnapshotCorrupt):
                    move_broken_aside(fd, job, previous)
            self._previous_examined.add(job)
        if not regular_or_missing(fd, previous.name):
            # Planted at prev: replaced by a rename it is never followed, but keep it for a look.
            log.error("snapshot.corrupt", job=job, path=str(previous), error="not a regular file")
            move_broken_aside(fd, job, previous)
        found: bytes | Snapshot | SnapshotCorrupt | None = _read_examined(fd, job, current)
        if isinstance(found, bytes) and digest(found) != self._verified.get(job):
            found = _decode_examined(found, job, current)
        # Still bytes: what this store wrote or found valid there, so not decoded again.
        if isinstance(found, bytes | Snapshot):
            duplicate(fd, self.directory, job, current.name, previous_name(job))
        elif found is not None:  # the last good generation stays in prev; the bad file is kept
            duplicate(
                fd, self.directory, job, current.name, f"{aside_stem(fd, job, 'broken')}.toml"
            )

    def _set_aside(self, job: str, reason: str) -> Path | None:
        self._verified.pop(job, None)
        self._previous_examined.discard(job)
        return set_aside(self.directory, job, reason)


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
        verified[job] = digest(data)
    return found


def _read_examined(fd: int, job: str, path: Path) -> bytes | SnapshotCorrupt | None:
    """The bytes of `path`, None if there is no file, or why it is no snapshot (logged)."""
    try:
        return read_file(fd, path)
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

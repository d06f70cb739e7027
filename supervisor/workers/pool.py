"""`WorkerPool`: a job's processor in N worker processes, for one attempt.

Each worker is a `Program` (`supervisor.connectors.exec.program`, what the exec connector
runs its programs with): its own session, ``PR_SET_PDEATHSIG`` = SIGKILL set before
exec with a check of the parent's pid after it (no orphan, even after a kill -9 of the
daemon), reaped through a pidfd, stderr logged with the job's name, stopped by closing
its stdin, then SIGTERM, then SIGKILL.

A batch is cut into as many consecutive slices as there are workers; each worker gets
one, all at once, and the answers are put back in the batch's order. So the batch's
results are whole before they go to the sink, and the pump's order (write, then
checkpoint) holds as it does in the daemon: no batch is in flight across a checkpoint.

What fails how:

- a worker that exits or is killed fails the attempt with its exit code or signal and
  the end of its stderr (`ProgramFailed`, retried);
- a processor the worker cannot import: `PluginError` with the worker's message, fatal;
- a record that cannot be pickled to the worker, or unpickled there, or whose results
  cannot be pickled back: that record's error (`UnpicklableRecord`), for the job's
  ``[records]`` policy, as an exception raised by the processor would be.
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from supervisor.batch_calls import Done, Failed, Piece
from supervisor.connectors.exec.config import ProgramConfig
from supervisor.connectors.exec.program import Program, first_error
from supervisor.errors import PluginError, UnpicklableRecord
from supervisor.protocols import Record
from supervisor.workers.child import Setup, spread
from supervisor.workers.frames import FrameReader, frame

log = structlog.get_logger("supervisor.workers")

_PROTOCOL = pickle.HIGHEST_PROTOCOL
STOP_TIMEOUT = 5.0
"""A worker asked to stop (its stdin closed) has this long to exit, then SIGTERM, then as
long again before SIGKILL: it finishes the call in hand, which should be short."""


def worker_count(workers: int | str) -> int:
    """``workers`` as configured: a number, or ``"auto"``, the CPUs this process may use."""
    if workers == "auto":
        return len(os.sched_getaffinity(0))
    assert isinstance(workers, int)
    return workers


class WorkerPool:
    """`workers` processes running ``reference``, started by `open`, stopped by `close`."""

    def __init__(
        self, job: str, reference: str, *, batch: bool, workers: int, search: bool
    ) -> None:
        config = ProgramConfig(
            command=(sys.executable, "-m", "supervisor.workers.child"), stop_timeout=STOP_TIMEOUT
        )
        self._job = job
        self.batch = batch
        """True: answers are `Piece` lists (a batch function); False: one result a record."""
        self._workers = [
            _Worker(
                Program(
                    config,
                    job,
                    "processor",
                    where=f"processor worker {number} of {workers} ({reference})",
                    events="processor.worker",
                )
            )
            for number in range(1, workers + 1)
        ]
        self._setup = frame(Setup(reference, batch, search, list(sys.path)))

    @property
    def pids(self) -> list[int]:
        return [pid for worker in self._workers if (pid := worker.program.pid) is not None]

    async def open(self) -> None:
        """Start every worker and wait until each has imported the processor."""

        async def start(worker: _Worker) -> None:
            await worker.program.start()
            kind, value = await worker.ask(self._setup, "while importing the processor")
            if kind == "failed":
                raise PluginError(f"in a processor worker: {value}")

        await _each([functools.partial(start, worker) for worker in self._workers])

    async def process(self, records: Sequence[Record]) -> list[Any]:
        """The answers for `records`, in their order: one result (or `Failed`) per record,
        or, for a batch function, the `Piece` list."""
        count = len(self._workers)
        size = -(-len(records) // count)  # ceiling
        starts = range(0, len(records), size or 1)
        answers: list[list[Any]] = [[] for _ in starts]

        async def one(slot: int, start: int) -> None:
            answers[slot] = await self._workers[slot].run(records[start : start + size], self.batch)

        await _each([functools.partial(one, slot, start) for slot, start in enumerate(starts)])
        if not self.batch:
            results: list[Any] = []
            for start, part in zip(starts, answers, strict=True):
                results += part
                if len(part) < min(size, len(records) - start):
                    break  # stopped at a failure (policy "fail"): nothing after it is judged
            return results
        return [
            _placed(piece, start)
            for start, part in zip(starts, answers, strict=True)
            for piece in part
        ]

    async def close(self) -> None:
        try:
            if pids := self.pids:
                # What each worker weighed at its peak: what `workers` costs in memory.
                peaks = await anyio.to_thread.run_sync(_peak_rss_kib, pids)
                log.info("processor.workers_memory", job=self._job, pids=pids, peak_rss_kib=peaks)
            for worker in self._workers:
                await worker.program.close()
        finally:
            # A close cut short (the daemon's shutdown timeout) leaves no worker running.
            for worker in self._workers:
                worker.program.kill()


class _Worker:
    """One worker process, and what is read from it that is not yet a whole frame."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self._reader = FrameReader()

    async def run(self, records: Sequence[Record], batch: bool) -> list[Any]:
        """The worker's answers for `records`: see `WorkerPool.process`."""
        try:
            message = frame(("records", list(records)))
        except Exception:  # noqa: BLE001 - whatever pickling raises: send them one by one
            return await self._one_by_one(records, batch)
        kind, answers = await self.ask(message, f"with {len(records)} records unanswered")
        if kind == "unloadable":  # the list pickled, but not all of it unpickles there
            return await self._one_by_one(records, batch)
        return list(answers)

    async def _one_by_one(self, records: Sequence[Record], batch: bool) -> list[Any]:
        """Each record pickled on its own: those that cannot be are bad records here, those
        that cannot be unpickled are bad records there."""
        blobs: list[bytes] = []
        kept: list[int] = []
        bad: dict[int, Exception] = {}
        for index, record in enumerate(records):
            try:
                blobs.append(pickle.dumps(record, _PROTOCOL))
                kept.append(index)
            except Exception as exc:  # noqa: BLE001 - whatever pickling raises
                bad[index] = UnpicklableRecord(
                    f"the record cannot be pickled for the worker process: "
                    f"{type(exc).__name__}: {exc}"
                )
        kind, answers = await self.ask(
            frame(("blobs", blobs)), f"with {len(records)} records unanswered"
        )
        if kind != "done":
            raise RuntimeError(f"a processor worker answered {kind!r} to records sent one by one")
        return spread(list(answers), kept, bad, batch=batch) if bad else list(answers)

    async def ask(self, message: bytes, unanswered: str) -> tuple[str, Any]:
        """Send one frame and read the answer, with the worker's stderr logged meanwhile."""
        return await self.program.attended(lambda: self._ask(message, unanswered))

    async def _ask(self, message: bytes, unanswered: str) -> tuple[str, Any]:
        await self.program.send(message)
        while (blob := self._reader.next()) is None:
            chunk = await self.program.receive()
            if not chunk:
                raise await self.program.exit_failure(f"ended its output {unanswered}")
            self._reader.feed(chunk)
        answer: tuple[str, Any] = pickle.loads(blob)
        return answer


def _placed(piece: Piece, offset: int) -> Piece:
    """A worker's batch piece as the daemon judges it: its outputs unpickled, its records
    counted from `offset` (where the worker's slice starts). A broken contract re-raised."""
    if type(piece) is Failed:
        if isinstance(piece.error, PluginError):
            raise piece.error
        return Failed(piece.index + offset, piece.error)
    assert type(piece) is Done
    return Done(piece.start + offset, piece.count, pickle.loads(piece.outputs))


def _peak_rss_kib(pids: list[int]) -> list[int | None]:
    """Each process's peak resident memory (VmHWM, KiB); None for one already gone."""
    peaks: list[int | None] = []
    for pid in pids:
        peak = None
        try:
            status = Path(f"/proc/{pid}/status").read_text(errors="replace")
        except OSError:
            status = ""
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
        peaks.append(peak)
    return peaks


async def _each(calls: list[Callable[[], Coroutine[Any, Any, None]]]) -> None:
    """Run `calls` side by side; the first plain error is raised as itself."""
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as group:
            for call in calls:
                group.start_soon(call)
    except BaseExceptionGroup as errors:
        failure = first_error(errors)
    if failure is not None:
        raise failure

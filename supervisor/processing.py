"""Applying a job's processor to a batch, and what a rejected record does.

A processor returns a record, None (drop it) or a list (fan out; to emit a
list as one record, return it wrapped: ``[the_list]``). An exception raised
for one record is that record's error, and so is a record the source could
not decode (`Batch.rejects`); both are handled by the job's `[records]`
policy: `fail` ends the attempt, `skip` counts and logs it, `dead_letter`
appends the record and its error to the dead-letter file. More than
`max_errors` in one attempt is fatal.

A batch function (`supervisor.batch_calls`) takes the whole batch and returns its
outputs; when it raises, the records it failed on are searched for and judged the same
way. Either may run in worker processes (`supervisor.workers`): their answers are judged
here, record by record, exactly as the daemon's own calls' would be.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import anyio
import structlog

from supervisor.batch_calls import BatchCallable, Done, Failed, Piece, call_batch
from supervisor.codec import dead_letter_line
from supervisor.config.model import RecordsPolicy
from supervisor.durable import write_all
from supervisor.errors import TooManyBadRecords
from supervisor.failures import error_message
from supervisor.observe import counters as counted
from supervisor.observe.counters import JobCounters
from supervisor.plugins import load_callable
from supervisor.protocols import BatchFunction, Processor, Record, Rejected
from supervisor.safe_open import create_or_open
from supervisor.workers.pool import WorkerPool

log = structlog.get_logger("supervisor.processing")


def load_processor(reference: str) -> Processor:
    """Import the processor function named by ``pkg.mod:fn``; `PluginError` (fatal) if it
    cannot be imported or is not callable."""
    return cast(Processor, load_callable(reference, "processor"))


def load_batch_function(reference: str) -> BatchCallable:
    """Import the batch function named by ``pkg.mod:fn``; `PluginError` (fatal) if it
    cannot be imported or is not callable."""
    return cast(BatchCallable, load_callable(reference, "batch_function"))


class BatchProcessor:
    """Runs one attempt's records through the processor under the records policy."""

    def __init__(
        self,
        job: str,
        function: Processor | None,
        policy: RecordsPolicy,
        *,
        batch: BatchFunction | None = None,
        batch_function: tuple[str, BatchCallable] | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        """One of: a per-record `function`; a connector's `batch`; a `batch_function`
        (its reference, for messages, and itself); or a `pool` of workers running either."""
        self._job = job
        self._function = function
        self._batch = batch
        self._batch_function = batch_function
        self._pool = pool
        self._is_async = function is not None and inspect.iscoroutinefunction(function)
        self._policy = policy
        self.rejected = 0
        """Bad records seen in this attempt."""
        self.counters = JobCounters()
        """The job's counters; the attempt gives the processor its job's own."""

    async def open(self) -> None:
        if self._batch is not None:
            await self._batch.open()
        if self._pool is not None:
            await self._pool.open()

    async def close(self) -> None:
        if self._batch is not None:
            await self._batch.close()
        if self._pool is not None:
            await self._pool.close()

    async def process(self, records: Sequence[Record]) -> Sequence[Record]:
        if self._batch is not None:
            return await self._process_batch(records, self._batch)
        if self._pool is not None:
            answers = await self._pool.process(records)
            if self._pool.batch:
                return await self._judge_pieces(records, answers)
            return await self._judge_results(records, answers)
        if self._batch_function is not None:
            reference, batch_function = self._batch_function
            search = self._policy.on_error != "fail"
            pieces = await call_batch(batch_function, reference, records, search=search)
            return await self._judge_pieces(records, pieces)
        function = self._function
        if function is None:
            return records
        out: list[Record] = []
        dead: list[tuple[Record, BaseException]] = []
        append, extend = out.append, out.extend
        filtered = 0
        for record in records:
            try:
                result = function(record)
                if self._is_async:
                    result = await cast(Awaitable[Any], result)
            except Exception as exc:  # noqa: BLE001 - the records policy decides
                self._reject(record, exc, dead)
                continue
            if result is None:
                filtered += 1
                continue
            if type(result) is list:
                extend(result)
            else:
                append(result)
        if filtered:
            self.counters.dropped[counted.FILTERED] += filtered
        if dead:
            await self._write_dead_letters(dead)
        return out

    async def _process_batch(
        self, records: Sequence[Record], batch: BatchFunction
    ) -> Sequence[Record]:
        out: list[Record] = []
        dead: list[tuple[Record, BaseException]] = []
        for record, result in zip(records, await batch.process(records), strict=True):
            if isinstance(result, Exception):
                self._reject(record, result, dead)
            else:
                out.extend(result)
        if dead:
            await self._write_dead_letters(dead)
        return out

    async def _judge_results(
        self, records: Sequence[Record], results: Sequence[Any]
    ) -> Sequence[Record]:
        """A worker's per-record results (a result, or `Failed`), as `process` judges its
        own calls' (the loop above, kept apart so as not to slow it)."""
        out: list[Record] = []
        dead: list[tuple[Record, BaseException]] = []
        filtered = 0
        for record, result in zip(records, results, strict=False):
            if type(result) is Failed:
                self._reject(record, result.error, dead)
            elif result is None:
                filtered += 1
            elif type(result) is list:
                out.extend(result)
            else:
                out.append(result)
        if filtered:
            self.counters.dropped[counted.FILTERED] += filtered
        if dead:
            await self._write_dead_letters(dead)
        return out

    async def _judge_pieces(
        self, records: Sequence[Record], pieces: Sequence[Piece]
    ) -> Sequence[Record]:
        """A batch function's outputs, and its bad records to the policy. Outputs are not
        tied to inputs: a part that gave fewer outputs than it had records counts the
        difference as filtered."""
        out: list[Record] = []
        dead: list[tuple[Record, BaseException]] = []
        filtered = 0
        for piece in pieces:
            if type(piece) is Failed:
                self._reject(records[piece.index], piece.error, dead)
            else:
                assert type(piece) is Done
                out.extend(piece.outputs)
                filtered += max(piece.count - len(piece.outputs), 0)
        if filtered:
            self.counters.dropped[counted.FILTERED] += filtered
        if dead:
            await self._write_dead_letters(dead)
        return out

    async def reject(self, rejects: Sequence[Rejected]) -> None:
        """Judge records the source could not decode, as if the processor had raised."""
        await self._judge_rejects(rejects, counted.SOURCE)

    async def reject_at_sink(self, rejects: Sequence[Rejected]) -> None:
        """Judge records the sink cannot store or encode (its `reject_with` hook)."""
        await self._judge_rejects(rejects, counted.SINK)

    async def _judge_rejects(self, rejects: Sequence[Rejected], stage: int) -> None:
        dead: list[tuple[Record, BaseException]] = []
        for rejected in rejects:
            self._reject(rejected.raw, rejected.error, dead, stage=stage)
        if dead:
            await self._write_dead_letters(dead)

    def _reject(
        self,
        record: Record,
        error: Exception,
        dead: list[tuple[Record, BaseException]],
        *,
        stage: int = counted.PROCESSOR,
    ) -> None:
        if self._policy.on_error == "fail":
            raise error  # the attempt counts it, against its stage
        self.counters.errors[stage] += 1
        dropped = (
            counted.DEAD_LETTERED if self._policy.on_error == "dead_letter" else counted.SKIPPED
        )
        self.counters.dropped[dropped] += 1
        self.rejected += 1
        log.warning(
            "job.record_rejected",
            job=self._job,
            error=f"{type(error).__name__}: {error_message(error)}",
            policy=self._policy.on_error,
            rejected=self.rejected,
        )
        if self._policy.on_error == "dead_letter":
            dead.append((record, error))
        if self.rejected > self._policy.max_errors:
            raise TooManyBadRecords(
                f"{self.rejected} bad records in one attempt, more than "
                f"records.max_errors = {self._policy.max_errors}; last: "
                f"{type(error).__name__}: {error_message(error)}"
            ) from error

    async def _write_dead_letters(self, dead: list[tuple[Record, BaseException]]) -> None:
        path = self._policy.dead_letter
        if path is None:
            raise RuntimeError("records.on_error = 'dead_letter' without records.dead_letter")
        now = datetime.now(UTC).isoformat()
        lines = "".join(
            dead_letter_line(
                {
                    "job": self._job,
                    "at": now,
                    "error": f"{type(error).__name__}: {error_message(error)}",
                    "record": record,
                }
            )
            for record, error in dead
        )
        # Durable before the checkpoint that passes these records.
        # A lone surrogate (a record a sink could not encode) is written as the JSON escape
        # it came from: backslashreplace writes "\\ud800", which JSON reads back as it.
        data = lines.encode("utf-8", "backslashreplace")
        await anyio.to_thread.run_sync(_append_durably, path, data)


def _append_durably(path: Path, data: bytes) -> None:
    # Never through a symlink or into a FIFO: another user who can write the directory
    # could point it at any file the supervisor may write, or stall this thread.
    fd, _ = create_or_open(path, os.O_WRONLY | os.O_APPEND, role="records.dead_letter")
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)

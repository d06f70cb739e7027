"""One attempt of a job: open, read, process, write, checkpoint, close.

The checkpoint order is the product's delivery promise: the sink's `flush`
returns, and only then is the offset written to the snapshot. An attempt
reads in batches and yields to the event loop once per batch.

An attempt ends in one of three ways: the source ended (`FINISHED`), a stop
was requested (`STOPPED`, after a final checkpoint), or an exception, which
propagates to the job's owner to classify. Source and sink are closed before
`run` returns or raises, so the next attempt never overlaps this one.
"""

from __future__ import annotations

import enum
import math
import time
from typing import Protocol, cast

import anyio
import anyio.lowlevel
import structlog

from supervisor.components import DEFAULT_COMPONENTS, Components
from supervisor.config.model import JobConfig
from supervisor.failures import describe_error
from supervisor.ledger import JobLedger
from supervisor.observe import counters as counted
from supervisor.observe.counters import JobCounters
from supervisor.processing import BatchProcessor
from supervisor.protocols import Offset, Sink, Source

log = structlog.get_logger("supervisor.attempt")

MAX_BATCH = 4096
"""Records asked of the source at once: large enough that per-batch costs vanish."""

IDLE_WAIT = 3600.0
"""How long a caught-up job's read may wait: with nothing new, no checkpoint is due, so an
idle job wakes only when its source has something (or when stopped), not every interval."""


class AttemptEnd(enum.Enum):
    """How an attempt ended without an error."""

    FINISHED = "finished"
    STOPPED = "stopped"


class AttemptListener(Protocol):
    """Told, from inside the attempt's own task, the two things its owner waits for."""

    def opened(self) -> None:
        """The source opened: the attempt counts as having run."""

    def healthy(self) -> None:
        """Running `retry.reset_after` and proved by a checkpoint (or by being caught up)."""


class _Unheard:
    def opened(self) -> None:
        pass

    def healthy(self) -> None:
        pass


class Attempt:
    """A single run of a job's pipeline. Build one per attempt; `run` it once.

    Opening and health are reported by calling `listener` from the pump
    itself, not by watcher tasks: a failure storm then cancels nothing but the
    attempts (cancelled watchers left cycles of frames for the collector).
    """

    def __init__(
        self,
        job: JobConfig,
        ledger: JobLedger,
        number: int,
        components: Components = DEFAULT_COMPONENTS,
        listener: AttemptListener | None = None,
        counters: JobCounters | None = None,
    ) -> None:
        self.job = job
        self._components = components
        self.number = number
        self._ledger = ledger
        self._listener: AttemptListener = listener or _Unheard()
        self._stop_requested = False
        self._read_scope: anyio.CancelScope | None = None
        self._open_scope = anyio.CancelScope()
        """Around opening sink and source: a stop cancels an open that hangs."""
        self._abandoned = False
        self._close_scope: anyio.CancelScope | None = None
        self.opened = False
        """True once the source opened: from then on the attempt counts as having run."""
        self.records_read = 0
        self.opened_at: float | None = None
        """Event-loop time the source opened."""
        self.checkpoints = 0
        self._healthy_at = math.inf
        """Event-loop time health may be reported; inf once it has been (or before opening)."""
        self._source: Source | None = None
        self._sink: Sink | None = None
        self.counters = counters if counters is not None else JobCounters()
        """The job's counters (`supervisor.observe.counters`), added to once per batch."""
        self._stage = counted.SOURCE
        """The stage running now: an error that ends the attempt is counted against it."""
        self._bytes_counted = False

    def stop_requested(self) -> bool:
        # A call, so type checkers do not assume it is unchanged across awaits.
        return self._stop_requested

    def request_stop(self) -> None:
        """Finish the batch in hand, checkpoint, and end as STOPPED."""
        self._stop_requested = True
        if not self.opened:
            # Nothing read yet, so nothing to checkpoint: a stop wins over a hanging
            # open at once (and its start slot is freed).
            self._open_scope.cancel()
        if self._read_scope is not None:
            # Abandoning a read is safe: the offset we commit is that of the
            # last batch the sink took, and the next attempt reopens from it.
            self._read_scope.cancel()

    def source_progress(self) -> dict[str, object] | None:
        """What the source says of where it stands and how far behind it is (its optional
        `progress`, see `supervisor.protocols.Source`), or None if it says nothing."""
        progress = getattr(self._source, "progress", None)
        if not callable(progress):
            return None
        try:
            view = progress()
        # Plugin code, called for `status`: whatever it raises must not fail the command.
        except Exception as exc:  # noqa: BLE001
            return {"error": describe_error(exc)}
        return dict(view) if view else None

    def bytes_moved(self) -> tuple[int, int]:
        """Bytes read and written by this attempt's source and sink so far, for those that
        count them (an int `bytes_read` / `bytes_written`); (0, 0) once added to the job's
        counters, when the attempt closed."""
        if self._bytes_counted:
            return 0, 0
        read = getattr(self._source, "bytes_read", 0)
        written = getattr(self._sink, "bytes_written", 0)
        return (read if type(read) is int else 0), (written if type(written) is int else 0)

    def abandon(self) -> None:
        """The daemon's shutdown timeout is up: cut the closing short too (it is shielded
        from the cancellation that ends everything else, and a close may hang)."""
        self._abandoned = True
        if self._close_scope is not None:
            self._close_scope.cancel()

    async def run(self) -> AttemptEnd:
        self._stage = counted.SINK
        sink = self._sink = self._components.sink(self.job)
        source: Source | None = None
        processor: BatchProcessor | None = None
        try:
            self._stage = counted.SOURCE
            source = self._source = self._components.source(self.job)
            self._stage = counted.PROCESSOR
            processor = self._components.processor(self.job)
            processor.counters = self.counters
            reject_with = getattr(sink, "reject_with", None)
            if callable(reject_with):
                # Records the sink cannot store go to the records policy, like a
                # processor's errors, not fail the whole batch.
                reject_with(processor.reject_at_sink)
            self._stage = counted.SINK
            with self._open_scope:
                await processor.open()
                sink_offset = await sink.open()
                if self._ledger.snapshot.offset_chosen and sink_offset != self._ledger.offset:
                    # The operator chose where to begin (`offset --set`, or a FAILED job's
                    # fresh start): that wins over an offset-keeping sink's own offset.
                    log.warning(
                        "job.sink_offset_overridden",
                        job=self.job.name,
                        offset=self._ledger.offset,
                        sink_offset=sink_offset,
                    )
                    sink_offset = None
                offset = sink_offset if sink_offset is not None else self._ledger.offset
                if sink_offset is not None and sink_offset != self._ledger.offset:
                    log.info(
                        "job.sink_offset_used",
                        job=self.job.name,
                        offset=sink_offset,
                        snapshot_offset=self._ledger.offset,
                    )
                self._stage = counted.SOURCE
                await source.open(offset)
            if self.stop_requested():
                return AttemptEnd.STOPPED  # stopped while opening: nothing read
            self.opened = True
            self.opened_at = anyio.current_time()
            self._healthy_at = self.opened_at + self.job.retry.reset_after
            self._listener.opened()
            if offset is None:
                offset = await self._pin_start(source, sink)
            if getattr(source, "replayable", False):
                resume_from = getattr(sink, "resume_from", None)
                if callable(resume_from):
                    resume_from(offset)
            return await self._pump(source, sink, processor, offset)
        except Exception:
            self.counters.errors[self._stage] += 1
            raise
        finally:
            with anyio.CancelScope(shield=True) as self._close_scope:
                if self._abandoned:
                    self._close_scope.cancel()
                await _close_quietly(self.job.name, source, sink, processor)
            read, written = self.bytes_moved()
            self.counters.bytes_read += read
            self.counters.bytes_written += written
            self._bytes_counted = True

    async def _pin_start(self, source: Source, sink: Sink) -> Offset | None:
        """Checkpoint where a source with nothing to resume from began, before it reads.

        Where such a source starts depends on when it opens (the file at its path now,
        that file's end now): a retry or restart before the first checkpoint would
        otherwise start afresh, and skip a file rotated in between or the lines
        appended since. Only sources that can say (`position`, see
        `supervisor.protocols.Source`) are pinned.
        """
        position = getattr(source, "position", None)
        start = position() if callable(position) else None
        if start is not None:
            await self._checkpoint(source, sink, start)
        return cast("Offset | None", start)

    async def _pump(
        self, source: Source, sink: Sink, processor: BatchProcessor, committed: Offset | None
    ) -> AttemptEnd:
        policy = self.job.checkpoint
        offset = committed
        uncommitted = 0
        next_checkpoint_at = anyio.current_time() + policy.interval
        caught_up = False  # the last checkpoint time found nothing new: reads may wait for data
        proved = False  # a checkpoint, or caught up: with `reset_after` run, that is health
        while not self.stop_requested():
            now = anyio.current_time()
            wait = IDLE_WAIT if caught_up else max(next_checkpoint_at - now, 0.0)
            if proved:  # wake when health is due, even with nothing to read
                wait = min(wait, max(self._healthy_at - now, 0.0))
            self._stage = counted.SOURCE
            with anyio.CancelScope() as self._read_scope:
                batch = await source.read(min(MAX_BATCH, policy.every_records - uncommitted), wait)
            self._read_scope = None
            if self.stop_requested():
                break
            if batch.rejects:
                self._stage = counted.SOURCE  # records it could not decode
                await processor.reject(batch.rejects)
                uncommitted += len(batch.rejects)
            if batch.records:
                self._stage = counted.PROCESSOR
                out = await processor.process(batch.records)
                self._stage = counted.SINK
                await sink.write(out)
                uncommitted += len(batch.records)
                self.records_read += len(batch.records)
                self.counters.records_read += len(batch.records)
                self.counters.records_written += len(out)
            if batch.offset is not None:
                offset = batch.offset
            if batch.end:
                await self._checkpoint(source, sink, offset)
                self._report_health_if_due(anyio.current_time())
                return AttemptEnd.FINISHED
            now = anyio.current_time()
            if caught_up and (uncommitted or offset != committed):
                # The first news after a quiet spell: due for a checkpoint one interval on.
                caught_up = False
                next_checkpoint_at = now + policy.interval
            if uncommitted >= policy.every_records or now >= next_checkpoint_at:
                if offset != committed or uncommitted:
                    await self._checkpoint(source, sink, offset)
                    committed, uncommitted = offset, 0
                else:
                    # Nothing new to commit: the job is caught up, which proves
                    # health as well as a checkpoint does (`retry.reset_after`).
                    caught_up = True
                next_checkpoint_at = now + policy.interval
            proved = proved or caught_up or self.checkpoints > 0
            if proved:
                self._report_health_if_due(now)
            # One yield per batch keeps a fast source from starving other jobs.
            await anyio.lowlevel.checkpoint()
        if offset != committed or uncommitted:
            await self._checkpoint(source, sink, offset)
        return AttemptEnd.STOPPED

    def _report_health_if_due(self, now: float) -> None:
        """Call only once health is proved (a checkpoint, or caught up)."""
        if now >= self._healthy_at:
            self._healthy_at = math.inf
            self._listener.healthy()

    async def _checkpoint(self, source: Source, sink: Sink, offset: Offset | None) -> None:
        counters = self.counters
        started = time.perf_counter()
        try:
            self._stage = counted.SINK
            await sink.flush(offset)
            flushed = time.perf_counter()
            self._stage = counted.CHECKPOINT
            snapshot = await self._ledger.write(offset=offset)
            self.checkpoints += 1
            commit = getattr(source, "commit", None)
            if callable(commit) and offset is not None:
                # Only now may a broker forget what this checkpoint covers: the snapshot that
                # resumes past it is durable. A failure here fails the attempt (retryable);
                # what was not acknowledged comes back, within one checkpoint.
                self._stage = counted.SOURCE
                await commit(offset)
        except BaseException:
            counters.checkpoints_failed += 1
            raise
        done = time.perf_counter()
        counters.checkpoints_ok += 1
        counters.flush_seconds.observe(flushed - started)
        counters.checkpoint_seconds.observe(done - started)
        counters.last_checkpoint_at = time.time()
        log.debug(
            "job.checkpoint", job=self.job.name, offset=offset, generation=snapshot.generation
        )


async def _close_quietly(
    job: str, source: Source | None, sink: Sink, processor: BatchProcessor | None
) -> None:
    for name, component in (("source", source), ("sink", sink), ("processor", processor)):
        if component is None:
            continue  # never built
        try:
            await component.close()
        # Whatever plugin code raises (SystemExit, a CancelledError of its own, ...): it is
        # shielded, so never our cancellation, and it must not hide the attempt's real error.
        except BaseException as exc:  # noqa: BLE001
            log.warning("job.close_failed", job=job, component=name, error=describe_error(exc))

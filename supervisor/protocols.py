"""The extension protocols: what a source, a sink and a processor must provide.

A job reads batches from a `Source`, passes each record through an optional
processor, writes the results to a `Sink`, and checkpoints. The checkpoint is
always in this order: `Sink.flush(offset)` returns, then the snapshot holding
`offset` is written. So an offset is never recorded before the sink holds
every record up to it (at-least-once), and a sink that commits the offset in
its own transaction gives exactly-once.

Third-party classes are named in a job file as ``class = "package.module:Name"``
and constructed as ``Name(**options)`` with the other keys of their table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable

Record: TypeAlias = Any
"""One record: a ``str`` for line sources, a JSON value for ``jsonl`` sources."""

Offset: TypeAlias = "int | float | str | bool | list[Offset] | dict[str, Offset]"
"""A source position, as a TOML-representable value (it is stored in the snapshot)."""

ProcessorResult: TypeAlias = "Record | list[Record] | None"
Processor: TypeAlias = Callable[[Record], "ProcessorResult | Awaitable[ProcessorResult]"]
"""``record -> record | None (drop) | list (fan out)``, plain or ``async``."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the source read but could not decode; the job's `[records]` policy decides.

    ``raw`` is what was read (for a line source, the line's text); it is what a
    dead-letter file receives.
    """

    raw: Record
    error: Exception


RejectRecords: TypeAlias = Callable[[Sequence[Rejected]], Awaitable[None]]
"""What a sink hands the records it cannot store to (see `Sink`'s ``reject_with``)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Records read together, and the source position just after the last of them."""

    records: Sequence[Record]
    offset: Offset | None
    """Where to resume after these records; None only if nothing was ever read."""
    end: bool = False
    """True when a bounded source has nothing more after these records."""
    rejects: Sequence[Rejected] = ()
    """Records read (and passed by `offset`) that could not be decoded."""


class BatchFunction(Protocol):
    """A processor that takes a whole batch and lives as long as an attempt (a connector's
    ``[processor] type = ...``, such as ``exec``'s co-processes)."""

    async def open(self) -> None:
        """Start (before the sink and the source open)."""

    async def process(self, records: Sequence[Record]) -> Sequence[list[Record] | Exception]:
        """One entry per record, in order: its results (none drops it, several fan out),
        or the exception that is its error (the job's `[records]` policy decides)."""
        ...

    async def close(self) -> None:
        """Stop. Called once, even after a failure."""


@runtime_checkable
class Source(Protocol):
    """Where records come from."""

    async def open(self, offset: Offset | None) -> None:
        """Prepare to read just after `offset`, or from the configured start if None."""

    async def read(self, max_records: int, wait: float) -> Batch:
        """Return up to `max_records` records.

        Waits at most about `wait` seconds for the first record; returns an empty
        batch (with the unchanged offset) when none arrived, so the job can
        checkpoint on time. Must not block the event loop.
        """
        ...

    async def close(self) -> None:
        """Release everything `open` acquired. Called once, even after a failure."""

    # Optional, not part of the checked protocol: a source class may define
    #
    #     @staticmethod
    #     def check_offset(offset: Offset) -> None:
    #         """Raise ValueError, saying why, if `open` would refuse `offset`."""
    #
    # `supervisor offset JOB --set VALUE` calls it (in a worker thread) before storing
    # VALUE, so an offset the source cannot resume from is refused, not stored to fail
    # the job at its next start.
    #
    #     def position(self) -> Offset | None:
    #         """Where the source stands now: right after `open` with no offset, where
    #         reading begins (the file's identity and 0, or its end)."""
    #
    # A source whose start depends on when it opens should define it: the attempt
    # checkpoints that position before the first read, so a retry or a restart
    # before the first checkpoint resumes there instead of starting afresh.
    #
    #     async def commit(self, offset: Offset) -> None:
    #         """The snapshot holding `offset` is durable: acknowledge to the broker
    #         everything read up to it."""
    #
    # Called after every checkpoint, never before its snapshot is written, so a broker
    # forgets nothing the snapshot does not cover. A crash between the two leaves
    # entries read but not acknowledged: the broker delivers them again (repeats within
    # one checkpoint). An exception fails the attempt, as a read's would (retryable).
    #
    #     replayable: bool
    #
    # True when opening at the same offset again yields the same records in the same
    # order (a file, a Redis stream read by ID, a JetStream stream read by sequence);
    # not for a broker's consumer group, which hands out whatever is pending. A sink
    # may then name its records after the source position (see `Sink.resume_from`).
    #
    #     def progress(self) -> Mapping[str, object] | None:
    #         """Where the source stands and how far behind: e.g. ``{"position": ...,
    #         "lag": 12}``, from values it keeps; `status` calls it, so it must not
    #         block or await."""


@runtime_checkable
class Sink(Protocol):
    """Where records go."""

    async def open(self) -> Offset | None:
        """Prepare to write; return the offset the sink itself committed, if it keeps one.

        A returned offset wins over the snapshot's: that is how a transactional
        sink gives exactly-once delivery.
        """
        ...

    async def write(self, records: Sequence[Record]) -> None:
        """Accept records. They need not be durable until `flush` returns."""

    async def flush(self, offset: Offset | None) -> None:
        """Make every record written so far durable.

        A sink that keeps offsets commits `offset` in the same transaction.
        Only after this returns is `offset` written to the snapshot.
        """

    async def close(self) -> None:
        """Release resources without flushing. Called once, even after a failure."""

    # Optional, not part of the checked protocol: a sink class may define
    #
    #     def resume_from(self, offset: Offset | None) -> None:
    #         """The source is replayable and the attempt resumes after `offset`."""
    #
    # Called once per attempt, after the source opened and before the first write, and
    # only when the source is `replayable`. The records written after `offset` (and up to
    # the next `flush`) are then the same on every attempt that resumes there, so a sink
    # can give each a stable identity (offset, index) that a broker's duplicate
    # detection recognizes when a crash replays it.
    #
    #     def reject_with(self, reject: RejectRecords) -> None:
    #         """Hand the records this sink cannot store to `reject`."""
    #
    # Called once per attempt, before `open`, with the job's `[records]` policy. A sink
    # that finds, in `write` or `flush`, records that it cannot encode or the target
    # refuses one by one (NaN for JSON, a constraint violation, a value of the wrong
    # type) while their neighbours are fine awaits
    # ``reject([Rejected(record, error), ...])`` BEFORE it commits. The policy judges
    # them as if the processor had raised: a durable dead-letter line, or a counted
    # skip; or it raises (``on_error = "fail"``, or more than ``max_errors``), and the
    # sink must then not commit (the error fails the attempt). A sink without the
    # method fails its flush instead, and the attempt with it.

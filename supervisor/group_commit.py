"""Group commit: blocking work from many tasks, done in batches of one worker-thread trip each.

A thousand jobs failing at once each write a snapshot. One worker-thread trip
per write cost the event loop a hand-off each (a queue, a lock, a wake-up of a
pool thread that then fights the loop for the GIL), and each write fsynced the
directory on its own. Databases solve this with group commit, and so does
this: whoever submits while no batch is running *leads*, taking everything
queued into one batch for one trip; those who submit meanwhile wait for the
batch that holds their item, and the first of them leads the next.

Submitting is shielded from cancellation: an item handed to a batch may reach
the disk, so its submitter always learns how it ended, and a leader always
finishes the batch the others are waiting for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import anyio
import anyio.to_thread

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 32
"""Items in one batch at the most. Every submitter of a batch wakes in the same turn of the
event loop (each job then goes on with its checkpoint or its retry), so a large batch is a
long stall; a small one still turns a thousand writes into a few dozen trips, not a
thousand (bench/README.md, "Measurements behind the code")."""

BatchRunner = Callable[[Sequence[Item]], Sequence[Result | Exception]]
"""Runs in a worker thread: one outcome per item, in order (a result or the error it met)."""
BatchFailed = Callable[[Item, Exception], Exception]
"""The error one item of a batch gets when the whole batch raised (the argument): a new
exception each time. One object raised in several tasks at once would have its traceback
and context rewritten by each of them (and end up in several exception groups)."""


class _Entry(Generic[Item, Result]):
    __slots__ = ("done", "item", "outcome", "wake")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.outcome: Result | Exception | None = None
        self.wake = anyio.Event()


class GroupCommit(Generic[Item, Result]):
    """Runs submitted items through `run_batch` in batches of at most `max_batch`."""

    def __init__(
        self,
        run_batch: BatchRunner[Item, Result],
        *,
        max_batch: int = MAX_BATCH,
        failed: BatchFailed[Item] | None = None,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        """`limiter`: the worker threads batches run in (anyio's default pool if None)."""
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._failed = failed or _fresh_copy
        self._limiter = limiter
        self._queue: list[_Entry[Item, Result]] = []
        self._leading = False
        self.batches = 0
        """Batches run so far (for tests and benchmarks)."""

    async def submit(self, item: Item) -> Result:
        """Have `item` run in a batch; its result, or the error it met, raised here."""
        entry: _Entry[Item, Result] = _Entry(item)
        self._queue.append(entry)
        with anyio.CancelScope(shield=True):
            while not entry.done:
                if self._leading:
                    entry.wake = anyio.Event()
                    await entry.wake.wait()  # its batch ended, or it is its turn to lead
                else:
                    await self._lead()
        if isinstance(entry.outcome, Exception):
            raise entry.outcome
        return entry.outcome  # type: ignore[return-value]  # a Result once done

    async def _lead(self) -> None:
        self._leading = True
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        outcomes: Sequence[Result | Exception]
        try:
            outcomes = await anyio.to_thread.run_sync(
                self._run_checked, batch, limiter=self._limiter
            )
        except Exception as exc:  # noqa: BLE001 - the batch failed whole: each item did
            outcomes = [_chained(self._failed(entry.item, exc), exc) for entry in batch]
        finally:
            self._leading = False
            self.batches += 1
        for entry, outcome in zip(batch, outcomes, strict=True):
            entry.outcome, entry.done = outcome, True
            entry.wake.set()
        if self._queue:
            self._queue[0].wake.set()  # the longest waiter leads the next batch

    def _run_checked(self, batch: list[_Entry[Item, Result]]) -> Sequence[Result | Exception]:
        outcomes = self._run_batch([entry.item for entry in batch])
        if len(outcomes) != len(batch):
            raise RuntimeError(f"a batch of {len(batch)} items gave {len(outcomes)} outcomes")
        return outcomes


def _fresh_copy(item: object, error: Exception) -> Exception:
    """A new exception like `error` (same type and arguments), or a RuntimeError saying it
    if its type cannot be made again from its arguments."""
    try:
        return type(error)(*error.args)
    except Exception:  # noqa: BLE001 - a constructor with other parameters
        return RuntimeError(f"the batch failed: {type(error).__name__}: {error}")


def _chained(error: Exception, cause: Exception) -> Exception:
    """`error` as `raise error from cause` leaves it (unless it is `cause` itself)."""
    if error is not cause:
        error.__cause__ = cause
    return error

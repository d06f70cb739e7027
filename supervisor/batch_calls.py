"""Calling a batch function, and finding the records a failing call failed on.

``[processor] batch_function = "pkg.mod:fn"`` is called with a list of records (a batch,
or with ``workers`` one worker's consecutive slice of it) and returns a list: the output
records for the whole list, in the order they are written. Its length is free: fewer
records drop some, more fan out; a batch function is not asked which input each output
came from. It may be ``async def``. A result that is not a list (or tuple) is a bug in
the function: `PluginError`, fatal.

When the call raises, the job's ``[records]`` policy decides, as for a per-record
function:

- ``fail``: the exception fails the attempt; the function is not called again.
- ``skip`` / ``dead_letter``: the list is cut in halves and each half called again,
  down to single records. A record that raises on its own is a bad record (skipped or
  dead-lettered with its own exception, counted toward ``max_errors``); the outputs of
  every other part are kept, in order. So a batch function must give a record the same
  outputs alone as among others, and do nothing but return them (it may be called again
  with part of a list). ``k`` bad records among ``n`` cost at most about
  ``2·k·log2(n)`` more calls.

The search is a generator (`bisecting`) that says which part to call next and is told
what the call gave, so that the daemon's async driver and a worker process's plain one
share it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from supervisor.errors import PluginError
from supervisor.protocols import Record

BatchCallable: TypeAlias = Callable[
    [list[Record]], "Sequence[Record] | Awaitable[Sequence[Record]]"
]
"""``list of records -> list of records``, plain or ``async``."""


@dataclass(frozen=True, slots=True)
class Done:
    """`count` records from `start` on gave `outputs` (a list of records; in a worker's
    answer, that list pickled)."""

    start: int
    count: int
    outputs: Any


@dataclass(frozen=True, slots=True)
class Failed:
    """The record at `index` failed with `error` (with no search: the call for the part
    starting there did). Also a per-record function's failure in a worker's answer."""

    index: int
    error: Exception


Piece: TypeAlias = Done | Failed
Part: TypeAlias = tuple[int, int]
"""Records ``start`` to ``end`` (excluded) of the list: one call's input."""


def bisecting(count: int, *, search: bool) -> Generator[Part, object, list[Piece]]:
    """Yields the parts to call, in order, and is sent each call's outcome: its outputs,
    or the exception it raised. Returns the pieces, in the order of the records."""
    pieces: list[Piece] = []
    pending = [(0, count)]
    while pending:
        start, end = pending.pop()
        outcome = yield start, end
        if not isinstance(outcome, Exception):
            pieces.append(Done(start, end - start, outcome))
        elif end - start <= 1 or not search:
            pieces.append(Failed(start, outcome))
        else:
            middle = (start + end) // 2
            pending += [(middle, end), (start, middle)]  # the first half is called first
    return pieces


def checked(reference: str, result: object) -> list[Record]:
    """The call's result as a list, or `PluginError`: the function broke its contract."""
    if type(result) is list:
        return result
    if isinstance(result, list | tuple):
        return list(result)
    raise PluginError(
        f"batch_function {reference!r} returned {_a(type(result).__name__)}; expected a list "
        "of output records"
    )


async def call_batch(
    function: BatchCallable, reference: str, records: Sequence[Record], *, search: bool
) -> list[Piece]:
    """Call `function` on `records` in the daemon, searching for the bad records if it
    raises and `search` is on (the policy is not ``fail``)."""
    is_async = inspect.iscoroutinefunction(function)
    steps = bisecting(len(records), search=search)
    start, end = next(steps)
    while True:
        outcome: object
        try:
            result = function(list(records[start:end]))
            if is_async:
                result = await cast(Awaitable[Sequence[Record]], result)
        except Exception as exc:  # noqa: BLE001 - the records policy decides
            outcome = exc
        else:
            outcome = checked(reference, result)
        try:
            start, end = steps.send(outcome)
        except StopIteration as done:
            return cast(list[Piece], done.value)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"

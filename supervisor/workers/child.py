"""A processor worker process: ``python -m supervisor.workers.child``, started by the daemon.

The conversation (`supervisor.workers.frames`), on the stdin and stdout it was started
with: the daemon sends a `Setup`; the worker imports the processor and answers
``("ready", pid)``, or ``("failed", message)`` and exits. Then, for each list of records
the daemon sends, it answers ``("done", answers)``: for a per-record function, one
result per record (a record, None, a list, or a `Failed`); for a batch function, the
`Piece` list of `supervisor.batch_calls` (each `Done`'s outputs pickled on their own, so
that outputs that cannot be pickled are found by the same search as an exception). The
daemon closing stdin is the end: exit 0.

The frames keep to private copies of the pipes: stdout becomes stderr (a processor that
prints writes to the daemon's log, not into a frame) and stdin /dev/null. This module
imports little (the worker's memory is the interpreter, this, and the processor's own
modules); the daemon set the parent-death signal before exec, so it dies with the daemon.
"""

from __future__ import annotations

import inspect
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from supervisor.batch_calls import Done, Failed, Piece, bisecting, checked
from supervisor.errors import PluginError, UnpicklableRecord
from supervisor.plugins import load_callable
from supervisor.protocols import Record
from supervisor.workers.frames import read_frame, write_frame

_PROTOCOL = pickle.HIGHEST_PROTOCOL


@dataclass(frozen=True, slots=True)
class Setup:
    """What the daemon tells a worker first."""

    reference: str
    """``pkg.mod:fn``."""
    batch: bool
    """True for a ``batch_function``, False for a per-record ``function``."""
    search: bool
    """Whether a bad record is looked for (the policy is not ``fail``): a per-record
    function goes on past a failure, a batch function's failing call is bisected."""
    path: list[str]
    """The daemon's `sys.path`: the processor is imported as the daemon would."""


def main() -> None:
    frames_in, frames_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    blob = read_frame(frames_in)
    if blob is None:
        return
    setup: Setup = pickle.loads(blob)
    sys.path[:] = setup.path
    what = "batch_function" if setup.batch else "processor"
    try:
        function = load_callable(setup.reference, what)
    except PluginError as exc:
        write_frame(frames_out, pickle.dumps(("failed", str(exc)), _PROTOCOL))
        return
    call = _plain(function)
    write_frame(frames_out, pickle.dumps(("ready", os.getpid()), _PROTOCOL))
    while (blob := read_frame(frames_in)) is not None:
        kind, payload = pickle.loads(blob)
        try:
            records, kept, bad = _records(kind, payload)
        except Exception as exc:  # noqa: BLE001 - a record that cannot be unpickled here
            write_frame(frames_out, pickle.dumps(("unloadable", repr(exc)), _PROTOCOL))
            continue
        if setup.batch:
            answers: list[Any] = _call_batch(call, setup.reference, records, search=setup.search)
        else:
            answers = _call_each(call, records, search=setup.search)
        if bad:
            answers = spread(answers, kept, bad, batch=setup.batch)
        write_frame(frames_out, _answer(answers))


def _records(kind: str, payload: Any) -> tuple[list[Record], list[int], dict[int, Exception]]:
    """The records sent: a pickled list (``"records"``), or each record pickled on its own
    (``"blobs"``, after a list failed to cross), those that fail to load set aside."""
    if kind == "records":
        return payload, [], {}
    records: list[Record] = []
    kept: list[int] = []
    bad: dict[int, Exception] = {}
    for index, blob in enumerate(payload):
        try:
            records.append(pickle.loads(blob))
            kept.append(index)
        except Exception as exc:  # noqa: BLE001 - whatever unpickling raises
            bad[index] = UnpicklableRecord(
                f"the record cannot be unpickled in the worker process: {type(exc).__name__}: {exc}"
            )
    return records, kept, bad


def spread(
    answers: list[Any], kept: list[int], bad: dict[int, Exception], *, batch: bool
) -> list[Any]:
    """Answers for the records at positions `kept` of a list whose `bad` ones never reached
    the processor, as answers for the whole list (in its order)."""
    if batch:
        pieces: list[Piece] = [Failed(index, error) for index, error in bad.items()]
        for piece in answers:
            if type(piece) is Failed:
                pieces.append(Failed(kept[piece.index], piece.error))
            else:
                pieces.append(Done(kept[piece.start], piece.count, piece.outputs))
        pieces.sort(key=_first_record)
        return pieces
    results: list[Any] = []
    given = iter(answers)
    for position in range(len(kept) + len(bad)):
        if position in bad:
            results.append(Failed(position, bad[position]))
            continue
        result = next(given, _ENDED)
        if result is _ENDED:
            break  # stopped at a failure (policy "fail")
        results.append(result)
    return results


_ENDED = object()


def _first_record(piece: Piece) -> int:
    return piece.index if isinstance(piece, Failed) else piece.start


def _plain(function: Callable[..., Any]) -> Callable[[Any], Any]:
    """`function`, or for an ``async def`` one, a plain call that runs it to its end."""
    if not inspect.iscoroutinefunction(function):
        return function
    import asyncio  # only a worker that needs it pays for it

    loop = asyncio.new_event_loop()
    return lambda argument: loop.run_until_complete(function(argument))


def _call_each(call: Callable[[Any], Any], records: list[Record], *, search: bool) -> list[Any]:
    results: list[Any] = []
    append = results.append
    for index, record in enumerate(records):
        try:
            append(call(record))
        except Exception as exc:  # noqa: BLE001 - the daemon's records policy decides
            append(Failed(index, exc))
            if not search:
                break  # the attempt fails on it: the rest would be thrown away
    return results


def _call_batch(
    call: Callable[[Any], Any], reference: str, records: list[Record], *, search: bool
) -> list[Piece]:
    steps = bisecting(len(records), search=search)
    start, end = next(steps)
    while True:
        outcome: object
        try:
            result = call(records[start:end])
        except Exception as exc:  # noqa: BLE001 - the daemon's records policy decides
            outcome = exc
        else:
            try:
                outcome = pickle.dumps(checked(reference, result), _PROTOCOL)
            except PluginError as exc:
                return [Failed(start, exc)]  # re-raised by the daemon: the attempt fails
            except Exception as exc:  # noqa: BLE001 - whatever pickling raises
                outcome = _unpicklable("outputs", exc)
        try:
            start, end = steps.send(outcome)
        except StopIteration as done:
            pieces: list[Piece] = done.value
            return pieces


def _answer(answers: list[Any]) -> bytes:
    """The ``done`` frame; what cannot be pickled becomes its record's error."""
    for index, answer in enumerate(answers):
        if type(answer) is Failed:
            answers[index] = Failed(answer.index, _sendable(answer.error))
    try:
        return pickle.dumps(("done", answers), _PROTOCOL)
    except Exception:  # noqa: BLE001 - whatever pickling raises: find which
        pass
    for index, answer in enumerate(answers):
        try:
            pickle.dumps(answer, _PROTOCOL)
        except Exception as exc:  # noqa: BLE001
            answers[index] = Failed(index, _unpicklable("result", exc))
    return pickle.dumps(("done", answers), _PROTOCOL)


def _sendable(error: Exception) -> Exception:
    """`error`, if it survives a trip through pickle (one whose class takes other
    arguments than it passes to Exception does not); else a stand-in that says what it was."""
    try:
        pickle.loads(pickle.dumps(error, _PROTOCOL))
    except Exception as exc:  # noqa: BLE001
        return UnpicklableRecord(
            f"{type(error).__name__}: {error} (that exception cannot be pickled back from "
            f"the worker: {type(exc).__name__}: {exc})"
        )
    return error


def _unpicklable(what: str, exc: Exception) -> UnpicklableRecord:
    return UnpicklableRecord(
        f"the processor's {what} for this record cannot be pickled back from the worker "
        f"process: {type(exc).__name__}: {exc}"
    )


if __name__ == "__main__":
    main()

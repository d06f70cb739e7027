"""Recording an attempt's failure: its cause, as logs, `status` and the snapshot show it.

This is the one place an error is described (`describe_error`, `describe_failure`):
plugin code raised it, so describing it must never fail (a ``__str__`` that raises
gives ``<unprintable ValueError>``) and never be huge (messages are capped at
`MESSAGE_LIMIT`). Whether a failure is retried is `supervisor.retry`'s decision.
"""

from __future__ import annotations

import itertools
import linecache
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from types import CodeType, TracebackType

from supervisor.secrets import redact
from supervisor.snapshot import FailureRecord

MESSAGE_LIMIT = 4096
"""Characters of an error's message kept (snapshot, log, `status`, `events`); the rest is cut
and its length noted: a message of megabytes would otherwise go whole into every snapshot
write and log line."""

TRACEBACK_LIMIT = 16_000
"""Characters of traceback kept in the snapshot: enough to debug, not a disk hog."""

FRAME_MEMO_SIZE = 4096
"""Formatted frames remembered (by code object and instruction) before starting afresh."""

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_REPEAT_CUTOFF = 3
_frame_memo: dict[tuple[CodeType, int], tuple[str, tuple[str, int, str]]] = {}


def qualified_name(cls: type) -> str:
    """``module.QualName``, or the bare name for builtins."""
    module: object = cls.__module__  # plugin code can set a class's __module__ to anything
    if not isinstance(module, str):
        module = "?"
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def error_message(error: BaseException) -> str:
    """``str(error)``, never failing and capped at `MESSAGE_LIMIT` characters."""
    try:
        text = str(error)
    except BaseException:  # noqa: BLE001 - plugin code: whatever __str__ raises, describe it
        text = f"<unprintable {type(error).__name__}>"
    return cap_message(redact(text))


def cap_message(text: str) -> str:
    """`text`, or its first `MESSAGE_LIMIT` characters and a note of its length."""
    if len(text) <= MESSAGE_LIMIT:
        return text
    return f"{text[:MESSAGE_LIMIT]}... [{len(text):,} characters, cut]"


def describe_error(error: BaseException) -> str:
    """``Type: message``, as logs, `status` and `events` show an error: safe and capped."""
    return f"{qualified_name(type(error))}: {error_message(error)}"


def release_traceback(error: BaseException) -> None:
    """Drop the tracebacks of `error`, its causes and contexts, and any group members.

    Call it once the failure record holds the traceback text. A traceback holds
    the frames it passed through, and those frames hold the error (``error = exc``
    in the attempt task), so every failed attempt would otherwise leave a reference
    cycle of frames, sources, sinks and task objects for the cyclic garbage
    collector: in a storm of failing jobs, large collections on the event loop.
    """
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)


def describe_failure(
    error: BaseException, *, attempts: int, previous: FailureRecord | None
) -> FailureRecord:
    """The failure record for `error`, continuing the streak of `previous` if any."""
    now = datetime.now(UTC)
    try:
        text = format_traceback(error)
    except BaseException:  # noqa: BLE001 - plugin code's error may defeat the traceback module
        text = f"(the traceback could not be formatted)\n{describe_error(error)}\n"
    text = redact(text)
    if len(text) > TRACEBACK_LIMIT:
        text = "...\n" + text[-TRACEBACK_LIMIT:]
    return FailureRecord(
        attempts=attempts,
        error_type=qualified_name(type(error)),
        message=error_message(error),
        traceback=text,
        first_failure_at=previous.first_failure_at if previous else now,
        last_failure_at=now,
    )


def format_traceback(error: BaseException) -> str:
    """``"".join(traceback.format_exception(error))``, at a fraction of the cost.

    Formatting a frame (finding its column span, reading and parsing its source
    line for the ``^^^`` markers, checking the source file on disk) is slow; a storm
    of jobs failing the same way formats the same frames thousands of times on the
    event loop. Each frame's text is remembered by (code object, instruction);
    exception groups take the standard route.
    """
    # Each error with the line leading up to it from its cause or context, outermost first.
    chain: list[tuple[str | None, BaseException]] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, BaseExceptionGroup):
            return "".join(traceback.format_exception(error))
        seen.add(id(current))
        cause, context = current.__cause__, current.__context__
        link: tuple[str | None, BaseException | None] = (None, None)
        if cause is not None and id(cause) not in seen:
            link = (_CAUSE, cause)
        elif context is not None and not current.__suppress_context__ and id(context) not in seen:
            link = (_CONTEXT, context)
        chain.append((link[0], current))
        current = link[1]
    parts: list[str] = []
    for message, exc in reversed(chain):
        if message is not None:
            parts.append(message)
        if exc.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(_format_frames(exc.__traceback__))
        parts.extend(_format_exception_only(exc))
    return "".join(parts)


def _format_frames(tb: TracebackType | None) -> list[str]:
    """`traceback.StackSummary.format` of the traceback's frames (repeats folded alike)."""
    lines: list[str] = []
    last: tuple[str, int, str] | None = None
    count = 0
    while tb is not None:
        text, where = _frame_text(tb)
        if where != last:
            lines.extend(_repeated(count))
            last, count = where, 0
        count += 1
        if count <= _REPEAT_CUTOFF:
            lines.append(text)
        tb = tb.tb_next
    lines.extend(_repeated(count))
    return lines


def _repeated(count: int) -> list[str]:
    more = count - _REPEAT_CUTOFF
    if more <= 0:
        return []
    return [f"  [Previous line repeated {more} more time{'s' if more > 1 else ''}]\n"]


def _frame_text(tb: TracebackType) -> tuple[str, tuple[str, int, str]]:
    code = tb.tb_frame.f_code
    key = (code, tb.tb_lasti)
    known = _frame_memo.get(key)
    if known is not None:
        return known
    positions = (
        next(itertools.islice(code.co_positions(), tb.tb_lasti // 2, None))
        if tb.tb_lasti >= 0
        else (None, None, None, None)
    )
    lineno = positions[0] if positions[0] is not None else tb.tb_lineno
    linecache.lazycache(code.co_filename, tb.tb_frame.f_globals)
    linecache.checkcache(code.co_filename)
    summary = traceback.FrameSummary(
        code.co_filename,
        lineno,
        code.co_name,
        lookup_line=False,
        end_lineno=positions[1],
        colno=positions[2],
        end_colno=positions[3],
    )
    (text,) = traceback.StackSummary.from_list([summary]).format()
    if len(_frame_memo) >= FRAME_MEMO_SIZE:
        _frame_memo.clear()
    known = _frame_memo[key] = (text, (code.co_filename, lineno, code.co_name))
    return known


def _format_exception_only(error: BaseException) -> list[str]:
    """The standard last line(s) of a traceback, without formatting causes it will not show."""
    if isinstance(error, SyntaxError):
        return traceback.format_exception_only(error)
    try:
        shown = cap_message(str(error))
    except BaseException:  # noqa: BLE001 - as the traceback module shows it
        shown = "<exception str() failed>"
    cls = type(error)
    kind = cls.__qualname__ if cls.__module__ == "__main__" else qualified_name(cls)
    lines = [f"{kind}: {shown}\n" if shown else f"{kind}\n"]
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, Sequence):
        for note in notes:
            try:
                text = cap_message(str(note))
            except BaseException:  # noqa: BLE001 - as the traceback module shows it
                text = "<note str() failed>"
            lines.extend(f"{line}\n" for line in text.split("\n"))
    elif notes is not None:
        try:
            text = cap_message(repr(notes))
        except BaseException:  # noqa: BLE001 - as the traceback module shows it
            text = "<__notes__ repr() failed>"
        lines.append(f"{text}\n")
    return lines

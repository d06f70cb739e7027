"""Structured logging, configured once: JSON lines for journald, a console format on a TTY.

When the stream is systemd's journal (its device and inode are the ones
`$JOURNAL_STREAM` names), each line starts with a syslog priority, `<3>` for an
error, `<4>` a warning, `<6>` info, `<7>` debug: journald strips it and files the
line at that priority, so `journalctl -p err` finds the errors. Without it every
line would be info.

Lines logged on the event loop's thread are written once per turn of the loop,
all together, rather than one write (and one release of the GIL, which a busy
worker thread may then hold for a whole switch interval) per event: in a
failure storm of 1,000 jobs that was a quarter of the loop's time. Lines logged
anywhere else (before the loop starts, after it ends, from a worker thread) are
written at once, after any that are waiting; any left at exit are written then.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO

import structlog

from supervisor.config.model import LogFormat, LogLevel
from supervisor.secrets import redact

JOURNAL_PRIORITIES = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "error": 3,
    "critical": 2,
}
"""syslog(3) priority of each structlog level, as journald reads it from a `<N>` prefix."""


def journal_priority(level: str) -> int:
    """The syslog priority of a structlog level name (info for one it does not know)."""
    return JOURNAL_PRIORITIES.get(level.lower(), JOURNAL_PRIORITIES["info"])


def is_journal_stream(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True if `stream` is the journal stream systemd named in `$JOURNAL_STREAM`.

    The variable is inherited by children whose output goes elsewhere (a pipe, a
    file), so it is checked against the stream's own device and inode.
    """
    environ = os.environ if environ is None else environ
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        status = os.fstat(stream.fileno())
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):  # no file descriptor, or not "dev:ino"
        return False


class _JournalPrefix:
    """Puts `<N>` before each line the renderer makes (a console traceback has several)."""

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> str:
        prefix = f"<{journal_priority(event_dict.get('level', method_name))}>"
        rendered = str(self._renderer(logger, method_name, event_dict))
        return "\n".join(prefix + line for line in rendered.split("\n"))


class LineWriter:
    """Writes rendered log lines to `stream`, batched per event-loop turn, in order."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()
        """Held from taking the pending lines until they are written: keeps lines in order."""

    def msg(self, message: str) -> None:
        """Queue one line; it is written when this turn of the loop ends (at once off the loop)."""
        with self._pending_lock:
            self._pending.append(message)
            first = len(self._pending) == 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: nothing would come back to flush
            self.flush()
            return
        if first:
            loop.call_soon(self.flush)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def flush(self) -> None:
        """Write every queued line, in one write."""
        with self._write_lock:
            with self._pending_lock:
                lines, self._pending = self._pending, []
            if lines:
                lines.append("")
                self._stream.write("\n".join(lines))
                self._stream.flush()


class _LineWriterFactory:
    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def __call__(self, *args: Any) -> LineWriter:
        return self._writer


def _redact_secrets(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """No secret a connector read, nor a URL's password, reaches a log line
    (`supervisor.secrets`): values are searched through tables and lists."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
        elif isinstance(value, dict | list | tuple):
            event[key] = _redacted(value)
    return event


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def configure_logging(
    log_format: LogFormat = "auto",
    level: LogLevel = "info",
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Route every structlog event to `stream` (stderr by default) in the chosen format,
    with journal priorities when `stream` is systemd's journal (see `is_journal_stream`)."""
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    if is_journal_stream(stream, environ):
        renderer = _JournalPrefix(renderer)
    writer = LineWriter(stream)
    atexit.register(writer.flush)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_LineWriterFactory(writer),
        cache_logger_on_first_use=True,
    )

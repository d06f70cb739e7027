"""Structured logging, configured once: JSON lines for journald, a console format on a TTY.

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
import sys
import threading
from typing import Any, TextIO

import structlog

from supervisor.config.model import LogFormat, LogLevel


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


def configure_logging(
    log_format: LogFormat = "auto", level: LogLevel = "info", stream: TextIO | None = None
) -> None:
    """Route every structlog event to `stream` (stderr by default) in the chosen format."""
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    writer = LineWriter(stream)
    atexit.register(writer.flush)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_LineWriterFactory(writer),
        cache_logger_on_first_use=True,
    )
